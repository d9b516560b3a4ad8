# Stub for the compiled module built from ext/_records698.pyx.
# Twin: headend/_records698_py.py (docstrings and the result's layout there).
from typing import Any, Callable

def decode(buf: bytes, plans: dict[bytes, tuple[Any, ...]], meter_of: Callable[[bytes], int | None] | dict[bytes, int],
           ctx: tuple[Any, ...]) -> tuple[int, int, bytes | None, list[tuple[Any, ...]]] | None: ...

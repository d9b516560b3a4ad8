# Stub for the compiled module built from ext/_framing.pyx; C types noted beside each argument.
# Twin: protocols/_framing_py.py (docstrings, statuses and byte layout there); the signatures here are
# the twin's, word for word (tests/protocols/test_typing.py checks it).
from typing import Any

from ._framing_py import Buffer

def checksum645(buf: Buffer, start: int, stop: int) -> int: ...  # const uint8_t[::1], Py_ssize_t
def scan645(buf: Buffer, pos: int, end: int) -> tuple[int, int, int, int]: ...  # nogil scan
def address645(buf: Buffer, start: int) -> str | None: ...
def unscramble(buf: Buffer, start: int, stop: int) -> bytes: ...
def scramble(data: Buffer) -> bytes: ...
def decode645(buf: Buffer, pos: int, end: int) -> tuple[int, int, int, int, str | None, int | None,
                                                        bytes | None]: ...
def bcd_fields(data: Buffer, off: int, spec: bytes) -> list[int | None]: ...  # int64_t accumulators
def bcd_encode(value: int, nbytes: int, kind: int) -> bytes | None: ...
def bcd_values(data: Buffer, off: int, spec: bytes, templates: tuple[tuple[Any, ...], ...],
               cls: type[tuple[Any, ...]]) -> tuple[Any, ...]: ...  # builds Value tuples in C
def messages645(buf: Buffer, pos: int, end: int, ctx: tuple[Any, ...],
                out: list[Any]) -> tuple[int, int, int, int, BaseException | None]: ...  # one typed view per call, fast path in C

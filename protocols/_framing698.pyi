# Stub for the compiled module built from ext/_framing698.pyx; C types noted beside each argument.
# Twin: protocols/_framing698_py.py (docstrings and byte layout there); the signatures here are the
# twin's, word for word (tests/protocols/test_typing.py checks it).
from collections.abc import Callable
from typing import TypeVar

from ._framing_py import Buffer

_FrameT = TypeVar("_FrameT")

def crc16(buf: Buffer, start: int = 0, stop: int = -1) -> int: ...  # const uint8_t[::1]; slicing-by-8, nogil
def header_length(af: int) -> int: ...  # bytes from 68H through HCS for SA flag ``af``
def scan698(buf: Buffer, pos: int, end: int, max_frame: int) -> tuple[int, int, int, int]: ...  # nogil scan
def address_text(buf: Buffer, start: int, stop: int) -> str: ...  # SA bytes in human order, hex
def user_data(buf: Buffer, start: int, stop: int, scrambled: bool) -> bytes: ...
def scramble(data: Buffer) -> bytes: ...  # +33H per byte
def decode698(buf: Buffer, pos: int, end: int, max_frame: int) -> tuple[
        int, int, int, int, int | None, int | None, str | None, int | None, bytes | None]: ...
def encode698(length_field: int, control: int, sa: bytes, ca: int, data: bytes) -> bytes: ...  # one allocation
def new_frame(cls: Callable[..., _FrameT], server: object, client: int, control: int,
              apdu: bytes) -> _FrameT: ...  # fields set from C

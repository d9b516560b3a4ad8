# Stub for the compiled module built from ext/_axdr.pyx (twin: protocols/_axdr_py.py, which also
# defines the value classes).  C types noted beside each argument; buffers are read as bytes through
# a raw const uint8_t* (a bytearray or memoryview is copied to bytes first).  The signatures are the
# twin's, word for word, less the twin's trailing internal parameters (tests/protocols/test_typing.py
# checks it).
from typing import Any

from ._axdr_py import Data

def decode_data(buf: bytes, pos: int = 0) -> tuple[Data, int]: ...  # Py_ssize_t pos; one C pass, NamedTuples via tp_alloc
def decode_typed(tag: int, buf: bytes, pos: int = 0) -> tuple[Any, int]: ...  # tag 0..255
def decode_row(buf: bytes, pos: int, n: int) -> tuple[tuple[Data, ...], int]: ...  # Py_ssize_t n columns
def decode_rows(buf: bytes, pos: int, n: int) -> tuple[tuple[tuple[Data, ...], ...], int]: ...
def decode_length(buf: bytes, pos: int = 0) -> tuple[int, int]: ...
def encode_data(d: Data) -> bytes: ...  # shared with the twin
def encode_typed(tag: int, value: object) -> bytes: ...  # shared with the twin
def encode_length(n: int) -> bytes: ...  # shared with the twin

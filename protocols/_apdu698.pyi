# Stub for the compiled module built from ext/_apdu698.pyx (twin: protocols/_apdu698_py.py, which
# describes the services and the rule).  The APDU is read through a raw const uint8_t*; each Data by
# the A-XDR kernel's C reader (protocols._axdr._c_api); the frozen slotted dataclasses are allocated
# with tp_alloc and their object slots (Py_ssize_t offsets of the member descriptors) filled in place.
from protocols.dlt698.apdu import Apdu

def decode(buf: bytes) -> Apdu | None: ...  # bytes only; None: not a hot service or not whole
def decode_lazy(buf: bytes) -> Apdu | None: ...  # as decode; lists and record rows as LazySeq

class LazySeq:  # a validated SEQUENCE OF: bytes held, Py_ssize_t* item offsets; items decoded when read
    def to_tuple(self) -> tuple: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int | slice): ...

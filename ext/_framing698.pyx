# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled DL/T 698.45 link-layer kernels, built as ``protocols._framing698``.

Twin of ``protocols/_framing698_py.py`` — same functions, same results, bit for bit.  The docstrings
and the byte layout live there; this file only says why something is done differently in C.
"""

from libc.stdint cimport uint8_t, uint16_t
from libc.string cimport memchr
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.unicode cimport PyUnicode_DecodeASCII

# The entry points take any bytes-like object through the buffer protocol directly rather than as
# typed memoryviews: acquiring a typed memoryview costs ~0.4 µs per call, more than scanning and
# checking a typical 40-byte frame.

DEF FOUND = 0
DEF NEED_MORE = 1
DEF BAD_HCS = 2
DEF BAD_FCS = 3
DEF BAD_END = 4
DEF BAD_LENGTH = 5

cdef const char* _HEX = b"0123456789ABCDEF"

# Slicing-by-8 tables: _T[k][b] is the CRC register contribution of byte b followed by k zero bytes,
# so eight input bytes fold into the register with eight independent lookups instead of a chain of
# eight dependent ones (the chain is what limits a byte-wise table CRC to ~400 MB/s).
cdef uint16_t _T[8][256]


cdef void _init_tables() noexcept:
    cdef int i, j, k
    cdef uint16_t c
    for i in range(256):
        c = i
        for j in range(8):
            c = (c >> 1) ^ 0x8408 if c & 1 else c >> 1
        _T[0][i] = c
    for k in range(1, 8):
        for i in range(256):
            c = _T[k - 1][i]
            _T[k][i] = (c >> 8) ^ _T[0][c & 0xFF]


_init_tables()


cdef inline uint16_t _crc(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef uint16_t c = 0xFFFF
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        c ^= <uint16_t>(p[i] | (p[i + 1] << 8))
        c = (_T[7][c & 0xFF] ^ _T[6][c >> 8] ^ _T[5][p[i + 2]] ^ _T[4][p[i + 3]]
             ^ _T[3][p[i + 4]] ^ _T[2][p[i + 5]] ^ _T[1][p[i + 6]] ^ _T[0][p[i + 7]])
        i += 8
    while i < n:
        c = (c >> 8) ^ _T[0][(c ^ p[i]) & 0xFF]
        i += 1
    return c ^ 0xFFFF


def crc16(object buf, Py_ssize_t start=0, Py_ssize_t stop=-1):
    cdef Py_buffer v
    cdef uint16_t c = 0
    PyObject_GetBuffer(buf, &v, PyBUF_SIMPLE)
    try:
        # slice semantics of the twin: buf[start:stop] clamps
        stop = v.len if stop < 0 else min(stop, v.len)
        start = max(0, min(start, stop))
        if start < stop:
            with nogil:
                c = _crc(<const uint8_t*> v.buf + start, stop - start)
    finally:
        PyBuffer_Release(&v)
    return c


def header_length(int af):
    return 9 + (af & 0x0F)


cdef inline Py_ssize_t _find68(const uint8_t* b, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
    cdef const void* q
    if i >= end:
        return -1
    q = memchr(b + i, 0x68, end - i)
    if q == NULL:
        return -1
    return <const uint8_t*> q - b


cdef inline int _hcs_ok(const uint8_t* b, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
    cdef Py_ssize_t h
    if i + 5 > end:
        return -1
    h = 9 + (b[i + 4] & 0x0F)
    if i + h > end:
        return -1
    return 1 if _crc(b + i + 1, h - 3) == (b[i + h - 2] | (b[i + h - 1] << 8)) else 0


cdef inline int _candidate(const uint8_t* b, Py_ssize_t i, Py_ssize_t end, Py_ssize_t max_frame,
                           Py_ssize_t* stop, int* extra) noexcept nogil:
    cdef int ok = _hcs_ok(b, i, end), r
    cdef Py_ssize_t h, total, n, s, j, lim
    cdef unsigned int lf
    cdef uint16_t fcs
    if ok < 0:
        stop[0] = end; extra[0] = 0
        return NEED_MORE
    h = 9 + (b[i + 4] & 0x0F)
    lf = b[i + 1] | (b[i + 2] << 8)
    n = lf & 0x3FFF
    total = (n << 10 if lf & 0x4000 else n) + 2
    if ok:
        if b[i + 2] & 0x80:
            stop[0] = i + h; extra[0] = 1
            return BAD_LENGTH
        if total < h + 3:
            stop[0] = i + h; extra[0] = 0
            return BAD_LENGTH
        if total > max_frame:
            stop[0] = i + h; extra[0] = 2
            return BAD_LENGTH
        s = i + total
        if s > end:
            stop[0] = end; extra[0] = 0
            return NEED_MORE
        fcs = _crc(b + i + 1, total - 4)
        stop[0] = s
        if (b[s - 3] | (b[s - 2] << 8)) != fcs:
            extra[0] = fcs
            return BAD_FCS
        if b[s - 1] != 0x16:
            extra[0] = b[s - 1]
            return BAD_END
        extra[0] = 0
        return FOUND
    if b[i + 2] & 0x80 or total < h + 3 or total > max_frame:
        return -1
    s = i + total
    lim = s if s < end else end
    j = i + 1
    while True:
        j = _find68(b, j, lim)
        if j < 0:
            break
        if j + 5 > s:
            break
        if j + 5 > end:
            stop[0] = end; extra[0] = 0
            return NEED_MORE
        if j + 9 + (b[j + 4] & 0x0F) <= s:
            r = _hcs_ok(b, j, end)
            if r == 1:
                return -1
            if r < 0:
                stop[0] = end; extra[0] = 0
                return NEED_MORE
        j += 1
    if s > end:
        stop[0] = end; extra[0] = 0
        return NEED_MORE
    if b[s - 1] != 0x16:
        return -1
    stop[0] = s
    extra[0] = _crc(b + i + 1, h - 3)
    return BAD_HCS


cdef inline int _scan(const uint8_t* b, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t max_frame,
                      Py_ssize_t* start, Py_ssize_t* stop, int* extra) noexcept nogil:
    cdef Py_ssize_t i = pos
    cdef int status
    while True:
        i = _find68(b, i, end)
        if i < 0:
            start[0] = end; stop[0] = end; extra[0] = 0
            return NEED_MORE
        status = _candidate(b, i, end, max_frame, stop, extra)
        if status == -1:
            i += 1
            continue
        start[0] = i
        return status


def scan698(object buf, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t max_frame):
    cdef Py_ssize_t start, stop
    cdef int extra, status
    cdef Py_buffer v
    PyObject_GetBuffer(buf, &v, PyBUF_SIMPLE)
    try:
        end = min(end, v.len)
        pos = max(pos, 0)
        with nogil:
            status = _scan(<const uint8_t*> v.buf, pos, end, max_frame, &start, &stop, &extra)
    finally:
        PyBuffer_Release(&v)
    return status, start, stop, extra


cdef str _address(const uint8_t* b, Py_ssize_t start, Py_ssize_t stop):
    cdef char out[32]
    cdef Py_ssize_t k, n = stop - start
    cdef uint8_t x
    for k in range(n):
        x = b[stop - 1 - k]
        out[2 * k] = _HEX[x >> 4]
        out[2 * k + 1] = _HEX[x & 0x0F]
    return PyUnicode_DecodeASCII(out, 2 * n, NULL)


def address_text(object buf, Py_ssize_t start, Py_ssize_t stop):
    # off the hot path (decode698 calls _address directly): share the twin's code
    from gridhead.protocols._framing698_py import address_text as _py
    return _py(buf, start, stop)


cdef bytes _user_data(const uint8_t* b, Py_ssize_t start, Py_ssize_t stop, bint scrambled):
    cdef Py_ssize_t i, n = stop - start
    cdef bytes out
    cdef uint8_t* p
    if not scrambled:
        return PyBytes_FromStringAndSize(<const char*> b + start, n)
    out = PyBytes_FromStringAndSize(NULL, n)
    p = <uint8_t*> PyBytes_AS_STRING(out)
    for i in range(n):
        p[i] = <uint8_t>(b[start + i] - 0x33)
    return out


def user_data(object buf, Py_ssize_t start, Py_ssize_t stop, bint scrambled):
    cdef Py_buffer v
    PyObject_GetBuffer(buf, &v, PyBUF_SIMPLE)
    try:
        stop = min(stop, v.len)
        start = max(0, min(start, stop))
        return _user_data(<const uint8_t*> v.buf, start, stop, scrambled)
    finally:
        PyBuffer_Release(&v)


def scramble(const uint8_t[::1] data):
    cdef Py_ssize_t n = data.shape[0], i
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t* p = <uint8_t*> PyBytes_AS_STRING(out)
    for i in range(n):
        p[i] = <uint8_t>(data[i] + 0x33)
    return out


def decode698(object buf, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t max_frame):
    cdef Py_ssize_t start, stop, h, a0
    cdef int extra, status
    cdef uint8_t af, control
    cdef const uint8_t* b
    cdef Py_buffer v
    PyObject_GetBuffer(buf, &v, PyBUF_SIMPLE)
    try:
        b = <const uint8_t*> v.buf
        end = min(end, v.len)
        pos = max(pos, 0)
        with nogil:
            status = _scan(b, pos, end, max_frame, &start, &stop, &extra)
        if status != FOUND:
            return status, start, stop, extra, None, None, None, None, None
        af = b[start + 4]
        h = 9 + (af & 0x0F)
        a0 = start + 5 + (1 if af & 0x20 else 0)
        control = b[start + 3]
        return (status, start, stop, extra, control, af, _address(b, a0, start + h - 3), b[start + h - 3],
                _user_data(b, start + h, stop - 3, (control & 0x08) != 0))
    finally:
        PyBuffer_Release(&v)


def encode698(unsigned int length_field, unsigned int control, const uint8_t[::1] sa, unsigned int ca,
              const uint8_t[::1] data):
    # One allocation, both checksums over the output buffer in C.
    cdef Py_ssize_t ns = sa.shape[0], nd = data.shape[0], hl = 4 + ns + 1, n = hl + 2 + nd + 3, i
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t* p = <uint8_t*> PyBytes_AS_STRING(out)
    cdef uint16_t c
    p[0] = 0x68
    p[1] = length_field & 0xFF
    p[2] = (length_field >> 8) & 0xFF
    p[3] = control & 0xFF
    for i in range(ns):
        p[4 + i] = sa[i]
    p[hl - 1] = ca & 0xFF
    c = _crc(p + 1, hl - 1)
    p[hl] = c & 0xFF
    p[hl + 1] = c >> 8
    for i in range(nd):
        p[hl + 2 + i] = data[i]
    c = _crc(p + 1, n - 4)
    p[n - 3] = c & 0xFF
    p[n - 2] = c >> 8
    p[n - 1] = 0x16
    return out


from cpython.object cimport PyObject_GenericSetAttr




def new_frame(type cls, object server, object client, object control, object apdu):
    # A frozen dataclass's __init__ stores each field through object.__setattr__ from Python (about
    # 1 µs for a Frame); storing them with the generic setter from C is what the framer's hot path
    # needs.  Same result as cls(server, client, control, apdu).
    cdef object obj = cls.__new__(cls)
    PyObject_GenericSetAttr(obj, "server", server)
    PyObject_GenericSetAttr(obj, "client", client)
    PyObject_GenericSetAttr(obj, "control", control)
    PyObject_GenericSetAttr(obj, "apdu", apdu)
    PyObject_GenericSetAttr(obj, "fragment", None)
    PyObject_GenericSetAttr(obj, "length_in_kb", False)
    return obj

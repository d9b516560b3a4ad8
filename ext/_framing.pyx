# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled framing kernels, built as ``protocols._framing``.

Twin of ``protocols/_framing_py.py`` — same functions, same results, bit for bit.  The docstrings and
the byte layout live there; this file only says why something is done differently in C.
"""

from libc.stdint cimport uint8_t, int64_t
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

DEF FOUND = 0
DEF NEED_MORE = 1
DEF BAD_CHECKSUM = 2
DEF BAD_END = 3

cdef const char* _HEX = b"0123456789ABCDEF"


cpdef int checksum645(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t stop):
    cdef unsigned int s = 0
    cdef Py_ssize_t i
    with nogil:
        for i in range(start, stop):
            s += buf[i]
    return s & 0xFF


cdef inline int _scan(const uint8_t[::1] buf, Py_ssize_t pos, Py_ssize_t end,
                      Py_ssize_t* start, Py_ssize_t* stop, int* extra) noexcept nogil:
    cdef Py_ssize_t i = pos, j, e
    cdef unsigned int cs
    while True:
        while i < end and buf[i] != 0x68:
            i += 1
        if i >= end:
            start[0] = end; stop[0] = end; extra[0] = 0
            return NEED_MORE
        if i + 8 > end:
            start[0] = i; stop[0] = end; extra[0] = 0
            return NEED_MORE
        if buf[i + 7] != 0x68:
            i += 1
            continue
        if i + 10 > end:
            start[0] = i; stop[0] = end; extra[0] = 0
            return NEED_MORE
        e = i + 12 + buf[i + 9]
        if e > end:
            start[0] = i; stop[0] = end; extra[0] = 0
            return NEED_MORE
        cs = 0
        for j in range(i, e - 2):
            cs += buf[j]
        cs &= 0xFF
        if buf[e - 1] != 0x16:
            if buf[e - 2] == cs:
                start[0] = i; stop[0] = e; extra[0] = buf[e - 1]
                return BAD_END
            i += 1
            continue
        start[0] = i; stop[0] = e
        if buf[e - 2] != cs:
            extra[0] = cs
            return BAD_CHECKSUM
        extra[0] = 0
        return FOUND


def scan645(const uint8_t[::1] buf, Py_ssize_t pos, Py_ssize_t end):
    cdef Py_ssize_t start, stop
    cdef int extra, status
    with nogil:
        status = _scan(buf, pos, end, &start, &stop, &extra)
    return status, start, stop, extra


cdef object _address(const uint8_t[::1] buf, Py_ssize_t start):
    cdef char out[12]
    cdef int k
    cdef uint8_t b
    for k in range(6):
        b = buf[start + 5 - k]
        if b != 0xAA and ((b >> 4) > 9 or (b & 0x0F) > 9):
            return None
        out[2 * k] = _HEX[b >> 4]
        out[2 * k + 1] = _HEX[b & 0x0F]
    return out[:12].decode("ascii")


def address645(const uint8_t[::1] buf, Py_ssize_t start):
    return _address(buf, start)


cdef bytes _unscramble(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t stop):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, stop - start)
    cdef uint8_t* p = <uint8_t*> PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    for i in range(start, stop):
        p[i - start] = <uint8_t>(buf[i] - 0x33)
    return out


def unscramble(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t stop):
    return _unscramble(buf, start, stop)


def scramble(const uint8_t[::1] data):
    cdef Py_ssize_t n = data.shape[0], i
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t* p = <uint8_t*> PyBytes_AS_STRING(out)
    for i in range(n):
        p[i] = <uint8_t>(data[i] + 0x33)
    return out


def decode645(const uint8_t[::1] buf, Py_ssize_t pos, Py_ssize_t end):
    cdef Py_ssize_t start, stop
    cdef int extra, status
    with nogil:
        status = _scan(buf, pos, end, &start, &stop, &extra)
    if status != FOUND:
        return status, start, stop, extra, None, None, None
    return (status, start, stop, extra, _address(buf, start + 1), buf[start + 8],
            _unscramble(buf, start + 10, stop - 2))


def bcd_fields(const uint8_t[::1] data, Py_ssize_t off, const uint8_t[::1] spec):
    cdef list out = []
    cdef Py_ssize_t p = off, j, k, nspec = spec.shape[0]
    cdef int n, kind, hi, lo
    cdef uint8_t b
    cdef int64_t v
    cdef bint ok, neg
    for j in range(0, nspec, 2):
        n = spec[j]
        kind = spec[j + 1]
        v = 0
        ok = True
        neg = False
        if kind == 2:
            if n > 8:
                # wider than int64: fall back to Python ints (rare, only for long raw fields)
                out.append(int.from_bytes(bytes(data[p:p + n]), "little"))
                p += n
                continue
            for k in range(p + n - 1, p - 1, -1):
                v = (v << 8) | data[k]
            if n == 8 and v < 0:
                out.append(int.from_bytes(bytes(data[p:p + n]), "little"))
                p += n
                continue
        else:
            if n > 9:
                # more than 18 digits would overflow int64: use the Python path for this field
                out.append(_bcd_py(data, p, n, kind))
                p += n
                continue
            for k in range(p + n - 1, p - 1, -1):
                b = data[k]
                if kind == 1 and k == p + n - 1:
                    neg = (b & 0x80) != 0
                    b &= 0x7F
                hi = b >> 4
                lo = b & 0x0F
                if hi > 9 or lo > 9:
                    ok = False
                    break
                v = v * 100 + hi * 10 + lo
            if neg:
                v = -v
        if ok:
            out.append(v)
        else:
            out.append(None)
        p += n
    return out


cdef object _bcd_py(const uint8_t[::1] data, Py_ssize_t p, int n, int kind):
    cdef object v = 0
    cdef Py_ssize_t k
    cdef uint8_t b
    cdef bint neg = False
    for k in range(p + n - 1, p - 1, -1):
        b = data[k]
        if kind == 1 and k == p + n - 1:
            neg = (b & 0x80) != 0
            b &= 0x7F
        if (b >> 4) > 9 or (b & 0x0F) > 9:
            return None
        v = v * 100 + (b >> 4) * 10 + (b & 0x0F)
    return -v if neg else v


def bcd_values(const uint8_t[::1] data, Py_ssize_t off, const uint8_t[::1] spec, tuple templates, type cls):
    # One call per data item: decode every field and build its ``cls`` tuple (Value) in C, where
    # tuple.__new__ on the subtype costs a fraction of the NamedTuple constructor.
    cdef list raws = bcd_fields(data, off, spec)
    cdef Py_ssize_t i, n = len(templates)
    cdef tuple t
    cdef list out = [None] * n
    for i in range(n):
        t = <tuple> templates[i]
        out[i] = tuple.__new__(cls, (t[0], raws[i], t[1], t[2], t[3], t[4]))
    return tuple(out)


def bcd_encode(object value, int nbytes, int kind):
    # Encoding is off the hot path (requests are built once per command): share the twin's code.
    from protocols._framing_py import bcd_encode as _enc
    return _enc(value, nbytes, kind)

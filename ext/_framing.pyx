# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled framing kernels, built as ``protocols._framing``.

Twin of ``protocols/_framing_py.py`` — same functions, same results, bit for bit.  The docstrings and
the byte layout live there; this file only says why something is done differently in C.
"""

from libc.stdint cimport uint8_t, uint32_t, int64_t
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM

DEF FOUND = 0
DEF NEED_MORE = 1
DEF BAD_CHECKSUM = 2
DEF BAD_END = 3
DEF BAD_ADDRESS = 4
DEF BAD_MESSAGE = 5

cdef const char* _HEX = b"0123456789ABCDEF"

cdef extern from *:
    """
    /* A record (a tuple subclass without __dict__, see protocols/dlt645/_record.py) made from a plain
       tuple of its items.  Up to 3.13 the subtype's tp_alloc gives the tuple in one allocation, which
       is all tuple.__new__(cls, items) does after two more calls; from 3.14 tuples cache their hash
       in the object, so tuple's own constructor initialises it. */
    /* The cyclic garbage collector untracks a plain tuple whose items are all untracked (strings,
       ints, bytes, None...) but never a tuple subclass, so every record and Value would stay tracked
       and be traversed again at each collection: a caller that keeps 200k decoded messages in a list
       then spends 5 us per frame in the collector (measured, benchmarks/bench_dlt645.py).  A tuple
       that only holds untracked objects cannot be part of a reference cycle, so the kernel untracks
       it by the same rule as CPython's _PyTuple_MaybeUntrack. */
    static PyObject* gh_untrack_if_atomic(PyObject* o) {
        Py_ssize_t i, n = PyTuple_GET_SIZE(o);
        for (i = 0; i < n; i++) {
            PyObject* v = PyTuple_GET_ITEM(o, i);
            if (v == NULL || (PyObject_IS_GC(v) && PyObject_GC_IsTracked(v))) return o;
        }
        if (PyObject_GC_IsTracked(o)) PyObject_GC_UnTrack(o);
        return o;
    }

    static void gh_untrack(PyObject* o) {
        gh_untrack_if_atomic(o);
    }

    static PyObject* gh_record(PyObject* cls, PyObject* items) {
    #if PY_VERSION_HEX < 0x030E0000
        Py_ssize_t i, n = PyTuple_GET_SIZE(items);
        PyObject* o = ((PyTypeObject*)cls)->tp_alloc((PyTypeObject*)cls, n);
        if (o == NULL) return NULL;
        for (i = 0; i < n; i++) {
            PyObject* v = PyTuple_GET_ITEM(items, i);
            Py_INCREF(v);
            PyTuple_SET_ITEM(o, i, v);
        }
        return gh_untrack_if_atomic(o);
    #else
        PyObject* args = PyTuple_Pack(1, items);
        PyObject* o;
        if (args == NULL) return NULL;
        o = PyTuple_Type.tp_new((PyTypeObject*)cls, args, NULL);
        Py_DECREF(args);
        return o == NULL ? NULL : gh_untrack_if_atomic(o);
    #endif
    }

    /* A Value (name, raw, decimals, unit, kind, fmt) from its template (name, decimals, unit, kind,
       fmt) and the raw register: filled in place, without the intermediate tuple of gh_record. */
    static PyObject* gh_value(PyObject* cls, PyObject* t, PyObject* raw) {
    #if PY_VERSION_HEX < 0x030E0000
        Py_ssize_t i;
        PyObject* o = ((PyTypeObject*)cls)->tp_alloc((PyTypeObject*)cls, 6);
        if (o == NULL) return NULL;
        Py_INCREF(raw);
        PyTuple_SET_ITEM(o, 1, raw);
        for (i = 0; i < 5; i++) {
            PyObject* v = PyTuple_GET_ITEM(t, i);
            Py_INCREF(v);
            PyTuple_SET_ITEM(o, i ? i + 1 : 0, v);
        }
        return gh_untrack_if_atomic(o);
    #else
        PyObject* items = PyTuple_Pack(6, PyTuple_GET_ITEM(t, 0), raw, PyTuple_GET_ITEM(t, 1),
                                       PyTuple_GET_ITEM(t, 2), PyTuple_GET_ITEM(t, 3), PyTuple_GET_ITEM(t, 4));
        PyObject* o;
        if (items == NULL) return NULL;
        o = gh_record(cls, items);
        Py_DECREF(items);
        return o;
    #endif
    }
    """
    object gh_record(object cls, tuple items)
    object gh_value(object cls, tuple template, object raw)
    void gh_untrack(object o)


cdef inline const uint8_t* _ptr(bytes b):
    return <const uint8_t*> PyBytes_AS_STRING(b)


cdef inline bytes _as_bytes(object data):
    # bytes are read in place; any other buffer is copied once (the rare path: every caller in the
    # package passes bytes), which spares the per-call typed-memoryview acquisition (~0.1 µs)
    return data if type(data) is bytes else bytes(data)


cpdef int checksum645(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t stop):
    cdef unsigned int s = 0
    cdef Py_ssize_t i
    with nogil:
        for i in range(start, stop):
            s += buf[i]
    return s & 0xFF


cdef inline int _scan(const uint8_t* buf, Py_ssize_t pos, Py_ssize_t end,
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


cdef inline const uint8_t* _view_ptr(const uint8_t[::1] view, Py_ssize_t* pos, Py_ssize_t* end):
    # clamp [pos, end) to the buffer: an ``end`` past it must not read beyond (boundscheck is off)
    cdef Py_ssize_t n = view.shape[0]
    if end[0] > n:
        end[0] = n
    if pos[0] < 0:
        pos[0] = 0
    return &view[0] if n else NULL


def scan645(const uint8_t[::1] buf, Py_ssize_t pos, Py_ssize_t end):
    cdef Py_ssize_t start, stop
    cdef int extra, status
    cdef const uint8_t* b = _view_ptr(buf, &pos, &end)
    with nogil:
        status = _scan(b, pos, end, &start, &stop, &extra)
    return status, start, stop, extra


cdef object _address(const uint8_t* p):
    # six bytes, lowest digits first -> 12 characters in human order; None if a byte is neither
    # two BCD digits nor the AAH wildcard
    cdef char out[12]
    cdef int k
    cdef uint8_t b
    for k in range(6):
        b = p[5 - k]
        if b != 0xAA and ((b >> 4) > 9 or (b & 0x0F) > 9):
            return None
        out[2 * k] = _HEX[b >> 4]
        out[2 * k + 1] = _HEX[b & 0x0F]
    return out[:12].decode("ascii")


def address645(const uint8_t[::1] buf, Py_ssize_t start):
    if start < 0 or start + 6 > buf.shape[0]:
        raise IndexError("address645: six bytes from start are not all in the buffer")
    return _address(&buf[start])


cdef bytes _unscramble(const uint8_t* buf, Py_ssize_t start, Py_ssize_t stop):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, stop - start)
    cdef uint8_t* p = <uint8_t*> PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    for i in range(start, stop):
        p[i - start] = <uint8_t>(buf[i] - 0x33)
    return out


def unscramble(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t stop):
    cdef const uint8_t* b = _view_ptr(buf, &start, &stop)
    return _unscramble(b, start, stop) if stop > start else b""


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
    cdef const uint8_t* b = _view_ptr(buf, &pos, &end)
    with nogil:
        status = _scan(b, pos, end, &start, &stop, &extra)
    if status != FOUND:
        return status, start, stop, extra, None, None, None
    return (status, start, stop, extra, _address(b + start + 1), b[start + 8],
            _unscramble(b, start + 10, stop - 2))


# --- data fields ---------------------------------------------------------------------------------
cdef object _field(const uint8_t* d, int n, int kind):
    """One field of ``n`` bytes at ``d`` (lowest byte first): int, or None when not BCD."""
    cdef int64_t v = 0
    cdef int k, hi, lo
    cdef uint8_t b
    cdef bint neg = False
    if kind == 2:
        if n > 8 or (n == 8 and d[7] & 0x80):
            # wider than int64 (rare: long raw fields): Python ints
            return int.from_bytes(PyBytes_FromStringAndSize(<const char*> d, n), "little")
        for k in range(n - 1, -1, -1):
            v = (v << 8) | d[k]
        return v
    if n > 9:
        return _bcd_big(d, n, kind)     # more than 18 digits would overflow int64
    for k in range(n - 1, -1, -1):
        b = d[k]
        if kind == 1 and k == n - 1:
            neg = (b & 0x80) != 0
            b &= 0x7F
        hi = b >> 4
        lo = b & 0x0F
        if hi > 9 or lo > 9:
            return None
        v = v * 100 + hi * 10 + lo
    return -v if neg else v


cdef object _bcd_big(const uint8_t* d, int n, int kind):
    cdef object v = 0
    cdef int k
    cdef uint8_t b
    cdef bint neg = False
    for k in range(n - 1, -1, -1):
        b = d[k]
        if kind == 1 and k == n - 1:
            neg = (b & 0x80) != 0
            b &= 0x7F
        if (b >> 4) > 9 or (b & 0x0F) > 9:
            return None
        v = v * 100 + (b >> 4) * 10 + (b & 0x0F)
    return -v if neg else v


cdef Py_ssize_t _spec_size(bytes spec, Py_ssize_t off, Py_ssize_t n) except -1:
    # the bytes the fields of ``spec`` span; reading past the data would be a memory error in C
    cdef const uint8_t* s = _ptr(spec)
    cdef Py_ssize_t j, total = 0, ns = PyBytes_GET_SIZE(spec)
    for j in range(0, ns - 1, 2):
        total += s[j]
    if off < 0 or off + total > n:
        raise IndexError(f"fields of {total} bytes from offset {off} overrun {n} bytes of data")
    return total


def bcd_fields(data, Py_ssize_t off, spec):
    cdef bytes d = _as_bytes(data), sp = _as_bytes(spec)
    _spec_size(sp, off, PyBytes_GET_SIZE(d))
    cdef const uint8_t* p = _ptr(d) + off
    cdef const uint8_t* s = _ptr(sp)
    cdef Py_ssize_t j, ns = PyBytes_GET_SIZE(sp)
    cdef list out = []
    for j in range(0, ns - 1, 2):
        out.append(_field(p, s[j], s[j + 1]))
        p += s[j]
    return out


cdef tuple _values(const uint8_t* p, bytes spec, tuple templates, object cls):
    # one Value tuple per field: (name, raw, decimals, unit, kind, fmt), templates[i] = the rest
    cdef const uint8_t* s = _ptr(spec)
    cdef Py_ssize_t j, n = len(templates)
    cdef tuple out = PyTuple_New(n)
    cdef tuple t
    cdef object v
    if 2 * n > PyBytes_GET_SIZE(spec):
        raise ValueError("bcd_values: more templates than fields in spec")
    for j in range(n):
        t = <tuple> templates[j]
        if len(t) != 5:
            raise ValueError("bcd_values: a template is (name, decimals, unit, kind, fmt)")
        v = gh_value(cls, t, _field(p, s[2 * j], s[2 * j + 1]))
        Py_INCREF(v)
        PyTuple_SET_ITEM(out, j, v)
        p += s[2 * j]
    gh_untrack(out)
    return out


def bcd_values(data, Py_ssize_t off, spec, tuple templates, type cls):
    # One call per data item: decode every field and build its ``cls`` tuple (Value) in C.
    cdef bytes d = _as_bytes(data), sp = _as_bytes(spec)
    _spec_size(sp, off, PyBytes_GET_SIZE(d))
    return _values(_ptr(d) + off, sp, templates, cls)


def bcd_encode(object value, int nbytes, int kind):
    # Encoding is off the hot path (requests are built once per command): share the twin's code.
    from gridhead.protocols._framing_py import bcd_encode as _enc
    return _enc(value, nbytes, kind)


# --- whole messages ------------------------------------------------------------------------------
cdef inline uint32_t _di(const uint8_t* d) noexcept nogil:
    # DI0 first on the wire, each byte +33H
    return (<uint32_t> <uint8_t>(d[0] - 0x33) | <uint32_t> <uint8_t>(d[1] - 0x33) << 8
            | <uint32_t> <uint8_t>(d[2] - 0x33) << 16 | <uint32_t> <uint8_t>(d[3] - 0x33) << 24)


cdef object _hex_rev(const uint8_t* d, int n, bint digits):
    # n scrambled bytes, sent lowest first -> 2n hex digits, highest first (passwords, operator
    # codes, BCD times); None if ``digits`` and a nibble is not a decimal digit
    cdef char out[32]
    cdef int k
    cdef uint8_t b
    for k in range(n):
        b = <uint8_t>(d[n - 1 - k] - 0x33)
        if digits and ((b >> 4) > 9 or (b & 0x0F) > 9):
            return None
        out[2 * k] = _HEX[b >> 4]
        out[2 * k + 1] = _HEX[b & 0x0F]
    return out[:2 * n].decode("ascii")


cdef object _password(const uint8_t* d):
    # PA first, then P0 P1 P2: "PAP2P1P0" (messages._password_human)
    cdef char out[8]
    cdef int k
    cdef uint8_t b
    for k in range(4):
        b = <uint8_t>(d[0 if k == 0 else 4 - k] - 0x33)
        out[2 * k] = _HEX[b >> 4]
        out[2 * k + 1] = _HEX[b & 0x0F]
    return out[:8].decode("ascii")


def messages645(buf, Py_ssize_t pos, Py_ssize_t end, tuple ctx, list out):
    # The twin's docstring says what this does; here the per-frame work stays in C: one typed view
    # of the buffer per call, no Python-level call for the frames of the fast path.
    cdef const uint8_t[::1] view = buf
    cdef const uint8_t* b = _view_ptr(view, &pos, &end)
    cdef Py_ssize_t start = pos, stop = pos, n
    cdef int extra = 0, status
    cdef uint8_t c
    cdef uint32_t di
    cdef PyObject* hit
    cdef bytes payload, spec
    cdef object entry, addr, msg, key, when
    cdef tuple templates
    (Frame, ReadRequest, ReadResponse, ErrorResponse, WriteRequest, RemoteControlRequest, commands,
     Value, table, slow) = ctx
    if type(table) is not dict or type(commands) is not dict:
        raise TypeError("messages645: the fast table and the commands must be dicts")
    while True:
        # no ``with nogil`` here: a frame scans in ~0.1 µs, less than releasing and taking the GIL
        status = _scan(b, pos, end, &start, &stop, &extra)
        if status != FOUND:
            return status, start, stop, extra, None
        addr = _address(b + start + 1)
        if addr is None:
            return BAD_ADDRESS, start, stop, 0, None
        c = b[start + 8]
        n = stop - start - 12
        msg = None
        if c == 0x11 and n == 4:                                   # read request, DI only
            msg = gh_record(ReadRequest, (addr, _di(b + start + 10), None, None))
        elif (c == 0x91 or c == 0xB1) and n >= 4:                  # read answer (B1: follow-up)
            di = _di(b + start + 10)
            key = di
            hit = PyDict_GetItem(table, key)
            if hit is not NULL:
                entry = <object> hit
                spec = None
                if type(entry) is tuple:                           # (size, spec, templates)
                    if entry[0] == n - 4:
                        spec, templates = entry[1], entry[2]
                else:                                              # a block: {size: (spec, templates)}
                    hit = PyDict_GetItem(entry, n - 4)
                    if hit is not NULL:
                        spec, templates = (<object> hit)
                if spec is not None:
                    payload = _unscramble(b, start + 14, stop - 2)
                    msg = gh_record(ReadResponse, (addr, key, payload, c == 0xB1,
                                                   _values(_ptr(payload), spec, templates, Value), None, True))
        elif (c & 0xC0) == 0xC0 and (n == 1 or n == 2):            # abnormal answer: error word
            di = <uint8_t>(b[start + 10] - 0x33)
            if n == 2:
                di |= <uint32_t> <uint8_t>(b[start + 11] - 0x33) << 8
            msg = gh_record(ErrorResponse, (addr, c & 0x1F, di, n))
        elif c == 0x14 and n >= 12:                                # write: DI, PA P0P1P2, C0..C3, data
            msg = gh_record(WriteRequest, (addr, _di(b + start + 10), _unscramble(b, start + 22, stop - 2),
                                           _password(b + start + 14), _hex_rev(b + start + 18, 4, False)))
        elif c == 0x1C and n == 16:                                # remote control, clause 7.13
            hit = PyDict_GetItem(commands, <uint8_t>(b[start + 18] - 0x33))
            when = _hex_rev(b + start + 20, 6, True)
            if hit is not NULL and when is not None:
                msg = gh_record(RemoteControlRequest, (addr, <object> hit, when, _password(b + start + 10),
                                                       _hex_rev(b + start + 14, 4, False),
                                                       <uint8_t>(b[start + 19] - 0x33)))
        if msg is None:                                            # everything else: the Python decoder
            msg = slow(gh_record(Frame, (addr, c, _unscramble(b, start + 10, stop - 2))))
            if isinstance(msg, BaseException):
                return BAD_MESSAGE, start, stop, 0, msg
        out.append(msg)
        pos = stop

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled A-XDR kernel of DL/T 698.45, built as ``protocols._axdr``.

Twin of ``protocols/_axdr_py.py`` — same functions, same results and the same error messages.  The
value classes, the byte layouts and the rules live there; this file only says why something is done
differently in C.  Decoding walks the bytes through a raw pointer in one pass of C calls, and builds
each value object in C: the NamedTuple instances (Data, DateTime, ...) are allocated with their
type's ``tp_alloc`` and filled in place, which is what ``tuple.__new__`` does minus the argument
tuple and the Python-level call.  Encoding is shared with the twin (requests are built once each).
"""

from libc.stdint cimport uint8_t, int8_t, int16_t, int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeLatin1, PyUnicode_DecodeUTF8
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.long cimport PyLong_FromLong, PyLong_FromUnsignedLong, PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.float cimport PyFloat_FromDouble

from gridhead.protocols._axdr_py import (COMDCB, MAX_DEPTH, MAX_ELEMENTS, MS, RSD, SID, SIDMAC, TI, TYPE_NAMES,
                                BitString, Data, Date, DateTime, DateTimeS, Region, Road, ScalerUnit,
                                Selector1, Selector2, SelectorLast, SelectorRange, SelectorTime, Time,
                                encode_data, encode_length, encode_typed)
from gridhead.protocols.errors import LocalProtocolError, RemoteProtocolError

cdef extern from *:
    """
    /* an instance of the tuple subclass t (a NamedTuple) with n empty slots, filled by the caller */
    static PyObject* gh_ntuple(PyObject* t, Py_ssize_t n) {
        return ((PyTypeObject*)t)->tp_alloc((PyTypeObject*)t, n);
    }
    """
    object gh_ntuple(object t, Py_ssize_t n)

cdef int C_MAX_DEPTH = MAX_DEPTH
cdef Py_ssize_t C_MAX_ELEMENTS = MAX_ELEMENTS
cdef object _COMDCB_FIELDS = COMDCB._fields
cdef object _none = None

# type objects held as C-level references for gh_ntuple
cdef object T_DATA = Data, T_BITS = BitString, T_DT = DateTime, T_DATE = Date, T_TIME = Time
cdef object T_DTS = DateTimeS, T_ROAD = Road, T_TI = TI, T_REGION = Region, T_SU = ScalerUnit
cdef object T_RSD = RSD, T_S1 = Selector1, T_S2 = Selector2, T_ST = SelectorTime, T_SR = SelectorRange
cdef object T_SL = SelectorLast, T_MS = MS, T_SID = SID, T_SIDMAC = SIDMAC, T_COMDCB = COMDCB


cdef inline void _put(object t, Py_ssize_t i, object v):
    Py_INCREF(v)
    PyTuple_SET_ITEM(t, i, v)


cdef inline object _t2(object cls, object a, object b):
    cdef object o = gh_ntuple(cls, 2)
    _put(o, 0, a)
    _put(o, 1, b)
    return o


# --- errors: the twin's messages, word for word ----------------------------------------------------
cdef str _name(int tag):
    # only on the error path and for names: an f-string default would be built on every call
    cdef object name = TYPE_NAMES.get(tag)
    return f"tag {tag}" if name is None else name


cdef object _short(str what, Py_ssize_t pos, Py_ssize_t need, Py_ssize_t end):
    return RemoteProtocolError(f"A-XDR {what}: truncated at byte {pos} (needs {need} bytes, "
                               f"{max(end - pos, 0)} left)")


cdef object _bad(str what, Py_ssize_t pos, str why):
    return RemoteProtocolError(f"A-XDR {what}: {why} at byte {pos}")


# --- the reader ------------------------------------------------------------------------------------
cdef struct R:
    const uint8_t* p
    Py_ssize_t pos
    Py_ssize_t end


cdef inline uint32_t _be32(const uint8_t* q) noexcept nogil:
    return (<uint32_t>q[0] << 24) | (<uint32_t>q[1] << 16) | (<uint32_t>q[2] << 8) | q[3]


cdef inline uint64_t _be64(const uint8_t* q) noexcept nogil:
    return (<uint64_t>_be32(q) << 32) | _be32(q + 4)


cdef inline int _need(R* r, Py_ssize_t k, str what) except -1:
    if r.pos + k > r.end:
        raise _short(what, r.pos, k, r.end)
    return 0


cdef inline int _need_t(R* r, Py_ssize_t k, int tag) except -1:
    if r.pos + k > r.end:
        raise _short(_name(tag), r.pos, k, r.end)
    return 0


cdef Py_ssize_t _length(R* r, str what) except -1:
    cdef Py_ssize_t start = r.pos, n = 0
    cdef int k, i
    cdef uint8_t b
    if r.pos >= r.end:
        raise _short(what + " length", r.pos, 1, r.end)
    b = r.p[r.pos]
    if b < 0x80:
        r.pos += 1
        return b
    k = b & 0x7F
    if k < 1 or k > 4:
        raise _bad(what + " length", start, f"length of length {k} (1-4 allowed)")
    if r.pos + 1 + k > r.end:
        raise _short(what + " length", start, 1 + k, r.end)
    for i in range(k):
        n = (n << 8) | r.p[r.pos + 1 + i]
    if n < (0x80 if k == 1 else (<Py_ssize_t>1) << (8 * (k - 1))):
        raise _bad(what + " length", start, f"non-minimal length {n} in {k + 1} bytes")
    r.pos += 1 + k
    return n


cdef Py_ssize_t _count(R* r, str what, Py_ssize_t size) except -1:
    cdef Py_ssize_t start = r.pos
    cdef Py_ssize_t n = _length(r, what)
    if n > C_MAX_ELEMENTS:
        raise _bad(what, start, f"{n} elements (at most {MAX_ELEMENTS})")
    if n * size > r.end - r.pos:
        raise _short(what, r.pos, n * size, r.end)
    return n


cdef bytes _octets(R* r, str what):
    cdef Py_ssize_t n = _length(r, what)
    if r.pos + n > r.end:
        raise _short(what, r.pos, n, r.end)
    cdef bytes out = PyBytes_FromStringAndSize(<const char*> (r.p + r.pos), n)
    r.pos += n
    return out


cdef inline object _u8(R* r):
    cdef object v = PyLong_FromLong(r.p[r.pos])
    r.pos += 1
    return v


cdef object _dts(R* r):
    _need(r, 7, "date_time_s")
    cdef const uint8_t* q = r.p + r.pos
    cdef object o = gh_ntuple(T_DTS, 6)
    _put(o, 0, PyLong_FromLong((q[0] << 8) | q[1]))
    for i in range(1, 6):
        _put(o, i, PyLong_FromLong(q[i + 1]))
    r.pos += 7
    return o


cdef object _road(R* r):
    _need(r, 4, "ROAD")
    cdef object oad = PyLong_FromUnsignedLong(_be32(r.p + r.pos))
    r.pos += 4
    cdef Py_ssize_t n = _count(r, "ROAD", 4), i
    cdef tuple oads = PyTuple_New(n)
    for i in range(n):
        _put(oads, i, PyLong_FromUnsignedLong(_be32(r.p + r.pos)))
        r.pos += 4
    return _t2(T_ROAD, oad, oads)


cdef object _ti(R* r):
    _need(r, 3, "TI")
    cdef const uint8_t* q = r.p + r.pos
    if q[0] > 5:
        raise _bad("TI", r.pos, f"unit {q[0]} (0-5)")
    r.pos += 3
    return _t2(T_TI, PyLong_FromLong(q[0]), PyLong_FromLong((q[1] << 8) | q[2]))


cdef bytes _tsa(R* r):
    cdef Py_ssize_t start = r.pos
    cdef bytes raw = _octets(r, "TSA")
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    cdef int flag = (<uint8_t> PyBytes_AS_STRING(raw)[0]) if n else 0
    if n < 2 or n != (flag & 0x0F) + 2:
        raise _bad("TSA", start, f"length {n} for address flag {flag:#04x}")
    return raw


cdef object _region(R* r, int depth):
    _need(r, 1, "Region")
    cdef int unit = r.p[r.pos]
    if unit > 3:
        raise _bad("Region", r.pos, f"unit {unit} (0-3)")
    if depth >= C_MAX_DEPTH:
        raise _bad("Region", r.pos, f"nesting deeper than {MAX_DEPTH}")
    r.pos += 1
    cdef object a = _data(r, depth + 1)
    cdef object b = _data(r, depth + 1)
    cdef object o = gh_ntuple(T_REGION, 3)
    _put(o, 0, PyLong_FromLong(unit))
    _put(o, 1, a)
    _put(o, 2, b)
    return o


cdef int _MS_REGION[8]
_MS_REGION[:] = [0, 0, 0, 0, 0, 17, 85, 18]   # choices 5, 6, 7: unsigned, TSA, long-unsigned bounds


cdef object _ms(R* r, int depth):
    _need(r, 1, "MS")
    cdef Py_ssize_t start = r.pos, n, i, q
    cdef int c = r.p[r.pos], want
    cdef tuple out
    cdef object reg
    r.pos += 1
    if c <= 1:
        return _t2(T_MS, PyLong_FromLong(c), None)
    if c == 2:
        n = _count(r, "MS", 1)
        out = PyTuple_New(n)
        for i in range(n):
            _put(out, i, _u8(r))
    elif c == 3:
        n = _count(r, "MS", 3)
        out = PyTuple_New(n)
        for i in range(n):
            _put(out, i, _tsa(r))
    elif c == 4:
        n = _count(r, "MS", 2)
        out = PyTuple_New(n)
        for i in range(n):
            _put(out, i, PyLong_FromLong((r.p[r.pos] << 8) | r.p[r.pos + 1]))
            r.pos += 2
    elif c <= 7:
        n = _count(r, "MS", 3)
        out = PyTuple_New(n)
        want = _MS_REGION[c]
        for i in range(n):
            q = r.pos
            reg = _region(r, depth)
            if reg[1][0] != want or reg[2][0] != want:
                raise _bad("MS", q, f"region of {_name(reg[1][0])}..{_name(reg[2][0])} in choice {c} "
                                    f"({_name(want)} bounds)")
            _put(out, i, reg)
    else:
        raise _bad("MS", start, f"choice {c} (0-7)")
    return _t2(T_MS, PyLong_FromLong(c), out)


cdef object _selector2(R* r, int depth):
    _need(r, 4, "RSD")
    cdef object oad = PyLong_FromUnsignedLong(_be32(r.p + r.pos))
    r.pos += 4
    cdef object a = _data(r, depth + 1)
    cdef object b = _data(r, depth + 1)
    cdef object c = _data(r, depth + 1)
    cdef object o = gh_ntuple(T_S2, 4)
    _put(o, 0, oad)
    _put(o, 1, a)
    _put(o, 2, b)
    _put(o, 3, c)
    return o


cdef object _rsd(R* r, int depth):
    _need(r, 1, "RSD")
    cdef Py_ssize_t start = r.pos, n, i
    cdef int s = r.p[r.pos]
    cdef object v, a, b, ti, ms
    cdef tuple out
    r.pos += 1
    if depth >= C_MAX_DEPTH:
        raise _bad("RSD", start, f"nesting deeper than {MAX_DEPTH}")
    if s == 0:
        v = None
    elif s == 1:
        _need(r, 4, "RSD")
        a = PyLong_FromUnsignedLong(_be32(r.p + r.pos))
        r.pos += 4
        v = _t2(T_S1, a, _data(r, depth + 1))
    elif s == 2:
        v = _selector2(r, depth)
    elif s == 3:
        n = _count(r, "RSD", 7)
        out = PyTuple_New(n)
        for i in range(n):
            _put(out, i, _selector2(r, depth))
        v = out
    elif s <= 5:
        a = _dts(r)
        v = _t2(T_ST, a, _ms(r, depth))
    elif s <= 8:
        a = _dts(r)
        b = _dts(r)
        ti = _ti(r)
        ms = _ms(r, depth)
        v = gh_ntuple(T_SR, 4)
        _put(v, 0, a)
        _put(v, 1, b)
        _put(v, 2, ti)
        _put(v, 3, ms)
    elif s == 9:
        _need(r, 1, "RSD")
        v = _u8(r)
    elif s == 10:
        _need(r, 1, "RSD")
        a = _u8(r)
        v = _t2(T_SL, a, _ms(r, depth))
    else:
        raise _bad("RSD", start, f"selector {s} (0-10)")
    return _t2(T_RSD, PyLong_FromLong(s), v)


cdef object _csd(R* r):
    _need(r, 1, "CSD")
    cdef int c = r.p[r.pos]
    cdef object v
    if c == 0:
        r.pos += 1
        _need(r, 4, "CSD")
        v = PyLong_FromUnsignedLong(_be32(r.p + r.pos))
        r.pos += 4
        return v
    if c == 1:
        r.pos += 1
        return _road(r)
    raise _bad("CSD", r.pos, f"choice {c} (0 OAD, 1 ROAD)")


cdef object _sid(R* r):
    _need(r, 4, "SID")
    cdef object ident = PyLong_FromUnsignedLong(_be32(r.p + r.pos))
    r.pos += 4
    return _t2(T_SID, ident, _octets(r, "SID"))


cdef bint _comdcb_ok(int i, int v) noexcept nogil:
    if i == 0:
        return v <= 10 or v == 255
    if i == 1 or i == 4:
        return v <= 2
    if i == 2:
        return 5 <= v <= 8
    return 1 <= v <= 2


cdef object _comdcb(R* r):
    _need(r, 5, "COMDCB")
    cdef int i
    cdef object o = gh_ntuple(T_COMDCB, 5)
    for i in range(5):
        if not _comdcb_ok(i, r.p[r.pos + i]):
            raise _bad("COMDCB", r.pos + i, f"{_COMDCB_FIELDS[i]} {r.p[r.pos + i]}")
        _put(o, i, PyLong_FromLong(r.p[r.pos + i]))
    r.pos += 5
    return o


cdef object _float32(R* r):
    _need(r, 4, "float32")
    cdef uint32_t bits = _be32(r.p + r.pos)
    cdef uint64_t b64
    cdef float f
    cdef double d
    r.pos += 4
    if (bits & 0x7F800000u) == 0x7F800000u and (bits & 0x7FFFFFu):
        # widen a NaN by hand: the C conversion would set the quiet bit of a signalling NaN
        b64 = ((<uint64_t>(bits >> 31)) << 63) | (<uint64_t>0x7FF << 52) | ((<uint64_t>(bits & 0x7FFFFFu)) << 29)
        memcpy(&d, &b64, 8)
        return PyFloat_FromDouble(d)
    memcpy(&f, &bits, 4)
    return PyFloat_FromDouble(<double>f)


cdef object _seq(R* r, int depth, int tag):
    cdef Py_ssize_t n, i
    cdef tuple out
    if depth >= C_MAX_DEPTH:
        raise _bad(_name(tag), r.pos, f"nesting deeper than {MAX_DEPTH}")
    n = _count(r, "array" if tag == 1 else "structure", 1)
    out = PyTuple_New(n)
    for i in range(n):
        _put(out, i, _data(r, depth + 1))
    return out


cdef object _typed(R* r, int tag, int depth):
    # the common tags of meter readings first: this chain is the hot path of every Data
    cdef const uint8_t* q
    cdef Py_ssize_t start = r.pos, n
    cdef object v, o
    cdef uint64_t u64
    cdef double d
    cdef int i
    cdef bytes raw
    if tag == 6 or tag == 81 or tag == 83:             # double-long-unsigned, OAD, OMD
        _need_t(r, 4, tag)
        v = PyLong_FromUnsignedLong(_be32(r.p + r.pos))
        r.pos += 4
        return v
    if tag == 1 or tag == 2:
        return _seq(r, depth, tag)
    if tag == 5:
        _need(r, 4, "double-long")
        v = PyLong_FromLong(<int32_t>_be32(r.p + r.pos))
        r.pos += 4
        return v
    if tag == 0:
        return None
    if tag == 17 or tag == 22:                         # unsigned, enum
        _need_t(r, 1, tag)
        return _u8(r)
    if tag == 18 or tag == 80 or tag == 16:            # long-unsigned, OI, long
        _need_t(r, 2, tag)
        q = r.p + r.pos
        r.pos += 2
        if tag == 16:
            return PyLong_FromLong(<int16_t>((q[0] << 8) | q[1]))
        return PyLong_FromLong((q[0] << 8) | q[1])
    if tag == 15:
        _need(r, 1, "integer")
        v = PyLong_FromLong(<int8_t>r.p[r.pos])
        r.pos += 1
        return v
    if tag == 20 or tag == 21:
        _need_t(r, 8, tag)
        u64 = _be64(r.p + r.pos)
        r.pos += 8
        return PyLong_FromLongLong(<int64_t>u64) if tag == 20 else PyLong_FromUnsignedLongLong(u64)
    if tag == 28:
        return _dts(r)
    if tag == 25:
        _need(r, 10, "date_time")
        q = r.p + r.pos
        o = gh_ntuple(T_DT, 8)
        _put(o, 0, PyLong_FromLong((q[0] << 8) | q[1]))
        for i in range(1, 7):
            _put(o, i, PyLong_FromLong(q[i + 1]))
        _put(o, 7, PyLong_FromLong((q[8] << 8) | q[9]))
        r.pos += 10
        return o
    if tag == 9:
        return _octets(r, "octet-string")
    if tag == 3:
        _need(r, 1, "bool")
        if r.p[r.pos] > 1:
            raise _bad("bool", r.pos, f"value {r.p[r.pos]:#04x} (0 or 1)")
        v = True if r.p[r.pos] else False
        r.pos += 1
        return v
    if tag == 4:
        n = _length(r, "bit-string")
        if r.pos + ((n + 7) >> 3) > r.end:
            raise _short("bit-string", r.pos, (n + 7) >> 3, r.end)
        raw = PyBytes_FromStringAndSize(<const char*> (r.p + r.pos), (n + 7) >> 3)
        r.pos += (n + 7) >> 3
        return _t2(T_BITS, PyLong_FromLong(n), raw)
    if tag == 10 or tag == 12:
        n = _length(r, _name(tag))
        if r.pos + n > r.end:
            raise _short(_name(tag), r.pos, n, r.end)
        q = r.p + r.pos
        if tag == 10:
            v = PyUnicode_DecodeLatin1(<const char*> q, n, NULL)
        else:
            try:
                v = PyUnicode_DecodeUTF8(<const char*> q, n, NULL)
            except UnicodeDecodeError as exc:
                raise _bad("UTF8-string", start, f"invalid UTF-8 ({exc.reason})") from None
        r.pos += n
        return v
    if tag == 23:
        return _float32(r)
    if tag == 24:
        _need(r, 8, "float64")
        u64 = _be64(r.p + r.pos)
        memcpy(&d, &u64, 8)
        r.pos += 8
        return PyFloat_FromDouble(d)
    if tag == 26:
        _need(r, 5, "date")
        q = r.p + r.pos
        o = gh_ntuple(T_DATE, 4)
        _put(o, 0, PyLong_FromLong((q[0] << 8) | q[1]))
        for i in range(1, 4):
            _put(o, i, PyLong_FromLong(q[i + 1]))
        r.pos += 5
        return o
    if tag == 27:
        _need(r, 3, "time")
        q = r.p + r.pos
        o = gh_ntuple(T_TIME, 3)
        for i in range(3):
            _put(o, i, PyLong_FromLong(q[i]))
        r.pos += 3
        return o
    if tag == 82:
        return _road(r)
    if tag == 84:
        return _ti(r)
    if tag == 85:
        return _tsa(r)
    if tag == 86:
        return _octets(r, "MAC")
    if tag == 87:
        return _octets(r, "RN")
    if tag == 88:
        return _region(r, depth)
    if tag == 89:
        _need(r, 2, "Scaler_Unit")
        q = r.p + r.pos
        r.pos += 2
        return _t2(T_SU, PyLong_FromLong(<int8_t>q[0]), PyLong_FromLong(q[1]))
    if tag == 90:
        return _rsd(r, depth)
    if tag == 91:
        return _csd(r)
    if tag == 92:
        return _ms(r, depth)
    if tag == 93:
        return _sid(r)
    if tag == 94:
        v = _sid(r)
        return _t2(T_SIDMAC, v, _octets(r, "SID_MAC"))
    if tag == 95:
        return _comdcb(r)
    if tag == 96:
        n = _count(r, "RCSD", 5)
        o = PyTuple_New(n)
        for i in range(n):
            _put(o, i, _csd(r))
        return o
    raise LocalProtocolError(f"A-XDR: no type with tag {tag}")


cdef bint _known[256]
for _t in TYPE_NAMES:
    _known[_t] = True


cdef object _data(R* r, int depth):
    if r.pos >= r.end:
        raise _short("Data", r.pos, 1, r.end)
    cdef int tag = r.p[r.pos]
    if not _known[tag]:
        raise _bad("Data", r.pos, f"unknown type tag {tag}")
    r.pos += 1
    cdef object v = _typed(r, tag, depth)
    return _t2(T_DATA, PyLong_FromLong(tag), v)


# --- entry points ----------------------------------------------------------------------------------
cdef inline bytes _as_bytes(object buf):
    return buf if type(buf) is bytes else bytes(buf)


cdef inline int _start(R* r, bytes b, Py_ssize_t pos) except -1:
    if pos < 0:
        raise LocalProtocolError(f"A-XDR: negative position {pos}")
    r.p = <const uint8_t*> PyBytes_AS_STRING(b)
    r.pos = pos
    r.end = PyBytes_GET_SIZE(b)
    return 0


def decode_data(buf, Py_ssize_t pos=0):
    cdef bytes b = _as_bytes(buf)
    cdef R r
    _start(&r, b, pos)
    cdef object v = _data(&r, 0)
    return v, r.pos


def decode_typed(tag, buf, Py_ssize_t pos=0):
    if type(tag) is bool or not isinstance(tag, int) or not 0 <= tag <= 255 or not _known[tag]:
        raise LocalProtocolError(f"A-XDR: no type with tag {tag}")
    cdef bytes b = _as_bytes(buf)
    cdef R r
    _start(&r, b, pos)
    cdef object v = _typed(&r, <int>tag, 0)
    return v, r.pos


cdef tuple _row(R* r, Py_ssize_t n):
    cdef Py_ssize_t i
    if n < 0:
        raise LocalProtocolError(f"A-XDR: negative column count {n}")
    if n > r.end - r.pos:
        raise _short("record row", r.pos, n, r.end)
    cdef tuple out = PyTuple_New(n)
    for i in range(n):
        _put(out, i, _data(r, 1))
    return out


def decode_row(buf, Py_ssize_t pos, Py_ssize_t n):
    cdef bytes b = _as_bytes(buf)
    cdef R r
    _start(&r, b, pos)
    cdef tuple v = _row(&r, n)
    return v, r.pos


def decode_rows(buf, Py_ssize_t pos, Py_ssize_t n):
    cdef bytes b = _as_bytes(buf)
    cdef R r
    cdef Py_ssize_t m, i
    _start(&r, b, pos)
    m = _count(&r, "record rows", n if n > 1 else 1)
    cdef tuple out = PyTuple_New(m)
    for i in range(m):
        _put(out, i, _row(&r, n))
    return out, r.pos


def decode_length(buf, Py_ssize_t pos=0):
    cdef bytes b = _as_bytes(buf)
    cdef R r
    _start(&r, b, pos)
    cdef Py_ssize_t n = _length(&r, "length")
    return n, r.pos


# --- the readers as C functions, for the compiled APDU walk (ext/_apdu698.pyx) --------------------
from cpython.pycapsule cimport PyCapsule_New


def _c_api():
    """PyCapsules named ``gridhead._axdr.<reader>`` of the C readers, so that ``protocols._apdu698``
    reads each Data with one C call instead of a Python call and a (value, pos) tuple.  Signatures
    (R = ``struct {const uint8_t* p; Py_ssize_t pos, end}``):
    ``object _data(R*, int depth)``, ``object _typed(R*, int tag, int depth)``,
    ``Py_ssize_t _length(R*, str what) except -1``, ``Py_ssize_t _count(R*, str what, Py_ssize_t size)
    except -1``, ``tuple _row(R*, Py_ssize_t n)``."""
    return {
        "_data": PyCapsule_New(<void*> _data, "gridhead._axdr._data", NULL),
        "_typed": PyCapsule_New(<void*> _typed, "gridhead._axdr._typed", NULL),
        "_length": PyCapsule_New(<void*> _length, "gridhead._axdr._length", NULL),
        "_count": PyCapsule_New(<void*> _count, "gridhead._axdr._count", NULL),
        "_row": PyCapsule_New(<void*> _row, "gridhead._axdr._row", NULL),
        "sizeof_R": sizeof(R),
    }

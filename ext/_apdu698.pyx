# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled walk of the hot DL/T 698.45 APDUs, built as ``protocols._apdu698``.

Twin of ``protocols/_apdu698_py.py``; the services, their layouts and the rule ("decode or None")
are described there.  Why this file exists: above the A-XDR kernel, the general walk of
:mod:`protocols.dlt698.apdu` spends most of a GET or PROXY response in Python calls (one codec per
field, a frozen dataclass ``__init__`` per result).  Here the whole APDU is one C pass:

* every Data is read by the A-XDR kernel's own C reader (``protocols._axdr._c_api``), one C call
  each, so values are the very objects ``axdr.decode_data`` makes;
* the frozen slotted dataclasses (APDU classes, ResultNormal, ...) are allocated with their type's
  ``tp_alloc`` and their slots filled at the offsets of their member descriptors: what the
  dataclass ``__init__`` does through ``object.__setattr__``, minus the calls.  The classes have no
  ``__post_init__``; the offsets are checked to be object slots when the classes are first used.
"""

from libc.stdint cimport uint8_t, uint32_t
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.long cimport PyLong_FromLong, PyLong_FromUnsignedLong
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.pycapsule cimport PyCapsule_GetPointer

import dataclasses

from gridhead.protocols import _axdr
from gridhead.protocols.errors import GridheadError

cdef extern from *:
    """
    #include "structmember.h"
    static PyObject* gh_alloc(PyObject* t) {
        return ((PyTypeObject*)t)->tp_alloc((PyTypeObject*)t, 0);
    }
    /* offset of the object slot a member descriptor stands for, -1 if it is not one */
    static Py_ssize_t gh_slot_offset(PyObject* d) {
        if (Py_TYPE(d) != &PyMemberDescr_Type) return -1;
        PyMemberDef* m = ((PyMemberDescrObject*)d)->d_member;
        return m->type == T_OBJECT_EX ? m->offset : -1;
    }
    static void gh_set_slot(PyObject* o, Py_ssize_t off, PyObject* v) {
        Py_INCREF(v);
        *(PyObject**)((char*)o + off) = v;
    }
    """
    object gh_alloc(object t)
    Py_ssize_t gh_slot_offset(object d)
    void gh_set_slot(object o, Py_ssize_t off, object v)


# --- the A-XDR kernel's readers -------------------------------------------------------------------
cdef struct R:                   # the A-XDR kernel's reader, field for field
    const uint8_t* p
    Py_ssize_t pos
    Py_ssize_t end

ctypedef object (*data_f)(R*, int)
ctypedef object (*typed_f)(R*, int, int)
ctypedef Py_ssize_t (*length_f)(R*, str) except -1
ctypedef Py_ssize_t (*count_f)(R*, str, Py_ssize_t) except -1
ctypedef object (*row_f)(R*, Py_ssize_t)

_API = _axdr._c_api()
if _API["sizeof_R"] != sizeof(R):          # an A-XDR kernel built from another R: use the twin
    raise ImportError(f"gridhead.protocols._axdr reader is {_API['sizeof_R']} bytes, {sizeof(R)} expected")
cdef data_f ax_data = <data_f> PyCapsule_GetPointer(_API["_data"], "gridhead._axdr._data")
cdef typed_f ax_typed = <typed_f> PyCapsule_GetPointer(_API["_typed"], "gridhead._axdr._typed")
cdef length_f ax_length = <length_f> PyCapsule_GetPointer(_API["_length"], "gridhead._axdr._length")
cdef count_f ax_count = <count_f> PyCapsule_GetPointer(_API["_count"], "gridhead._axdr._count")
cdef row_f ax_row = <row_f> PyCapsule_GetPointer(_API["_row"], "gridhead._axdr._row")

DEF T_DATE_TIME = 25
DEF T_DATE_TIME_S = 28
DEF T_TI = 84
DEF T_TSA = 85
DEF T_RCSD = 96


class _Miss(Exception):
    """Not decodable here: the caller takes the general walk, which also words the error."""


cdef object _MISS = _Miss()


# --- frozen slotted dataclasses built in place ----------------------------------------------------
cdef struct Cls:
    PyObject* type
    Py_ssize_t n
    Py_ssize_t off[5]

cdef Cls C_RN, C_RR, C_PR, C_FR, C_TT
cdef Cls C_GN, C_GNL, C_GR, C_GRL, C_RNL, C_RRL, C_PGL, C_PGR, C_LINK
cdef list _held = []              # keeps the classes alive for the borrowed pointers above
cdef object _bound = None         # the module whose classes the slots above hold (protocols.dlt698.apdu)


cdef int _cls(Cls* c, object cls) except -1:
    names = [f.name for f in dataclasses.fields(cls)]
    if len(names) > 5:
        raise TypeError(f"{cls.__name__}: {len(names)} fields, at most 5 here")
    for i, name in enumerate(names):
        off = gh_slot_offset(cls.__dict__.get(name))
        if off < 0:
            raise TypeError(f"{cls.__name__}.{name} is not an object slot")
        c.off[i] = off
    c.n = len(names)
    c.type = <PyObject*> cls
    _held.append(cls)
    return 0


cdef int _init(object A) except -1:
    # the APDU classes come from the caller (protocols.dlt698.apdu passes itself): no import of it here
    global _bound
    _cls(&C_RN, A.ResultNormal)
    _cls(&C_RR, A.ResultRecord)
    _cls(&C_PR, A.ProxyResult)
    _cls(&C_FR, A.FollowReport)
    _cls(&C_TT, A.TimeTag)
    _cls(&C_GN, A.GetResponseNormal)
    _cls(&C_GNL, A.GetResponseNormalList)
    _cls(&C_GR, A.GetResponseRecord)
    _cls(&C_GRL, A.GetResponseRecordList)
    _cls(&C_RNL, A.ReportNotificationList)
    _cls(&C_RRL, A.ReportNotificationRecordList)
    _cls(&C_PGL, A.ProxyGetResponseList)
    _cls(&C_PGR, A.ProxyGetResponseRecord)
    _cls(&C_LINK, A.LinkRequest)
    _bound = A
    return 0


cdef object _new(Cls* c, object a, object b, object x, object y, object z):
    """An instance of c's class with its first c.n fields set to a, b, x, y, z (the rest unused)."""
    cdef object o = gh_alloc(<object> c.type)
    cdef PyObject* v[5]
    cdef Py_ssize_t i
    v[0], v[1], v[2], v[3], v[4] = <PyObject*> a, <PyObject*> b, <PyObject*> x, <PyObject*> y, <PyObject*> z
    for i in range(c.n):
        gh_set_slot(o, c.off[i], <object> v[i])
    return o


# --- fields ---------------------------------------------------------------------------------------
cdef inline int _need(R* r, Py_ssize_t k) except -1:
    if r.pos + k > r.end:
        raise _MISS
    return 0


cdef inline object _u8(R* r):
    _need(r, 1)
    r.pos += 1
    return PyLong_FromLong(r.p[r.pos - 1])


cdef inline object _u32(R* r):
    _need(r, 4)
    cdef const uint8_t* q = r.p + r.pos
    r.pos += 4
    return PyLong_FromUnsignedLong((<uint32_t> q[0] << 24) | (<uint32_t> q[1] << 16) | (<uint32_t> q[2] << 8) | q[3])


cdef inline Py_ssize_t _seq_len(R* r) except -1:
    # SEQUENCE OF: an A-XDR length, never more items than bytes left (as _codec.seq)
    cdef Py_ssize_t n = ax_length(r, "length")
    if n > r.end - r.pos:
        raise _MISS
    return n


cdef object _result_normal(R* r):
    # A-ResultNormal: OAD, Get-Result CHOICE {0 DAR, 1 Data}
    cdef object oad = _u32(r), data = None, dar = None
    _need(r, 1)
    r.pos += 1
    if r.p[r.pos - 1] == 1:
        data = ax_data(r, 0)
    elif r.p[r.pos - 1] == 0:
        dar = _u8(r)
    else:
        raise _MISS
    return _new(&C_RN, oad, data, dar, None, None)


cdef object _result_record(R* r):
    # A-ResultRecord: OAD, RCSD, CHOICE {0 DAR, 1 SEQUENCE OF A-RecordRow (one Data per column)}
    cdef object oad = _u32(r)
    cdef object rcsd = ax_typed(r, T_RCSD, 0)
    cdef object rows = None, dar = None
    cdef Py_ssize_t ncols = len(rcsd), m, i
    _need(r, 1)
    r.pos += 1
    if r.p[r.pos - 1] == 1:
        m = ax_count(r, "record rows", ncols if ncols > 1 else 1)
        rows = PyTuple_New(m)
        for i in range(m):
            row = ax_row(r, ncols)
            Py_INCREF(row)
            PyTuple_SET_ITEM(rows, i, row)
    elif r.p[r.pos - 1] == 0:
        dar = _u8(r)
    else:
        raise _MISS
    return _new(&C_RR, oad, rcsd, rows, dar, None)


ctypedef object (*item_f)(R*)


cdef tuple _seq(R* r, item_f item):
    cdef Py_ssize_t n = _seq_len(r), i
    cdef tuple out = PyTuple_New(n)
    for i in range(n):
        x = item(r)
        Py_INCREF(x)
        PyTuple_SET_ITEM(out, i, x)
    return out


cdef object _results(R* r):
    return _seq(r, _result_normal)


cdef object _records(R* r):
    return _seq(r, _result_record)


cdef object _proxy_result(R* r):
    # one meter of PROXY-Response-GetList: TSA, SEQUENCE OF A-ResultNormal
    cdef object tsa = ax_typed(r, T_TSA, 0)
    cdef object res = _seq(r, _result_normal)
    return _new(&C_PR, tsa, res, None, None, None)


cdef inline int _flag(R* r) except -1:
    # OPTIONAL: 00 absent, 01 present
    _need(r, 1)
    r.pos += 1
    if r.p[r.pos - 1] > 1:
        raise _MISS
    return r.p[r.pos - 1]


cdef object _follow(R* r):
    # FollowReport OPTIONAL: CHOICE {1 SEQUENCE OF A-ResultNormal, 2 SEQUENCE OF A-ResultRecord}
    cdef object kind, res
    if not _flag(r):
        return None
    kind = _u8(r)
    if r.p[r.pos - 1] == 1:
        res = _seq(r, _result_normal)
    elif r.p[r.pos - 1] == 2:
        res = _seq(r, _result_record)
    else:
        raise _MISS
    return _new(&C_FR, kind, res, None, None, None)


cdef object _time_tag(R* r):
    # TimeTag OPTIONAL: date_time_s, TI
    cdef object t, ti, unit, delay
    if not _flag(r):
        return None
    t = ax_typed(r, T_DATE_TIME_S, 0)
    ti = ax_typed(r, T_TI, 0)
    unit = ti[0]
    delay = ti[1]
    return _new(&C_TT, t, unit, delay, None, None)


cdef object _server(R* r, Cls* c, item_f body):
    # server APDU: PIID-ACD, the body, FollowReport OPTIONAL, TimeTag OPTIONAL
    cdef object piid = _u8(r)
    cdef object b = body(r)
    cdef object fr = _follow(r)
    cdef object tt = _time_tag(r)
    return _new(c, piid, b, fr, tt, None)


cdef object _proxy_record(R* r, item_f record):
    # PROXY-Response-GetRecord: PIID-ACD, TSA, A-ResultRecord, trailer
    cdef object piid = _u8(r)
    cdef object tsa = ax_typed(r, T_TSA, 0)
    cdef object rec = record(r)
    cdef object fr = _follow(r)
    cdef object tt = _time_tag(r)
    return _new(&C_PGR, piid, tsa, rec, fr, tt)


cdef object _link_request(R* r):
    # LINK-Request: PIID-ACD, type, heartbeat period (long-unsigned), date_time; no trailer
    cdef object piid = _u8(r)
    cdef object kind = _u8(r)
    _need(r, 2)
    cdef object hb = PyLong_FromLong((r.p[r.pos] << 8) | r.p[r.pos + 1])
    r.pos += 2
    cdef object at = ax_typed(r, T_DATE_TIME, 0)
    return _new(&C_LINK, piid, kind, hb, at, None)


cdef object _proxy_results(R* r):
    return _seq(r, _proxy_result)


# --- lazy: validate the whole APDU now, build its values on access -------------------------------
# decode_lazy(buf) walks the same services as decode() and applies every check the eager decoders
# apply, but reads each Data with a validate-only walker that builds nothing.  The bulk of an APDU —
# the A-ResultNormal items of a list, the rows of an A-ResultRecord — comes back as a LazySeq: the
# bytes object (immutable, held) and the offset of each item found while validating.  Reading an item
# decodes it there with the very readers decode() uses, so the values are the same objects.
#
# Why this cannot raise later: the validator accepts exactly what the eager readers accept.  It
# checks the common tags itself, byte for byte as protocols._axdr's _typed does, and hands every other
# tag to that _typed (building and dropping its value).  When it refuses, decode_lazy returns None and
# apdu.decode_apdu takes the eager path, which raises the eager error with its message.
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from gridhead.protocols._axdr_py import MAX_DEPTH, TYPE_NAMES

cdef int V_MAX_DEPTH = MAX_DEPTH
cdef bint _v_known[256]
for _t in TYPE_NAMES:
    _v_known[_t] = True


cdef int _v_data(R* r, int depth) except -1:
    cdef int tag
    cdef Py_ssize_t n, i
    if r.pos >= r.end:
        raise _MISS
    tag = r.p[r.pos]
    if not _v_known[tag]:
        raise _MISS
    r.pos += 1
    if tag == 6 or tag == 81 or tag == 83 or tag == 5 or tag == 23:
        return _skip(r, 4)
    if tag == 1 or tag == 2:
        if depth >= V_MAX_DEPTH:
            raise _MISS
        n = ax_count(r, "array", 1)
        for i in range(n):
            _v_data(r, depth + 1)
        return 0
    if tag == 0:
        return 0
    if tag == 17 or tag == 22 or tag == 15:
        return _skip(r, 1)
    if tag == 18 or tag == 80 or tag == 16:
        return _skip(r, 2)
    if tag == 20 or tag == 21 or tag == 24:
        return _skip(r, 8)
    if tag == 28:
        return _skip(r, 7)
    if tag == 25:
        return _skip(r, 10)
    if tag == 26:
        return _skip(r, 5)
    if tag == 27:
        return _skip(r, 3)
    if tag == 9 or tag == 10:                          # octet-string, visible-string (Latin-1: any byte)
        n = ax_length(r, "length")
        return _skip(r, n)
    if tag == 3:
        _need(r, 1)
        if r.p[r.pos] > 1:
            raise _MISS
        r.pos += 1
        return 0
    if tag == 4:
        n = ax_length(r, "length")
        return _skip(r, (n + 7) >> 3)
    ax_typed(r, tag, depth)                            # the rare tags: the eager reader itself
    return 0


cdef inline int _skip(R* r, Py_ssize_t k) except -1:
    _need(r, k)
    r.pos += k
    return 0


cdef int _v_row(R* r, Py_ssize_t ncols) except -1:
    # as the A-XDR kernel's _row: never more cells than bytes left, each Data at depth 1
    cdef Py_ssize_t i
    if ncols > r.end - r.pos:
        raise _MISS
    for i in range(ncols):
        _v_data(r, 1)
    return 0


cdef int _v_result_normal(R* r) except -1:
    _skip(r, 4)
    _need(r, 1)
    r.pos += 1
    if r.p[r.pos - 1] == 1:
        return _v_data(r, 0)
    if r.p[r.pos - 1] == 0:
        return _skip(r, 1)
    raise _MISS


DEF K_NORMAL = 0                  # items are A-ResultNormal
DEF K_ROW = 1                     # items are A-RecordRow of ncols Data

cdef bytes _cur                   # the APDU being walked by decode_lazy (held by each LazySeq)


cdef class LazySeq:
    """A validated SEQUENCE OF whose items are decoded when read: A-ResultNormal (ResultNormal) or
    A-RecordRow (a tuple of Data).  It stands for the tuple the eager decoder gives: len, indexing,
    slicing, iteration, ==, hash, repr and pickling are the tuple's.  Reading one item decodes that
    item; iterating or comparing decodes them all once and keeps the tuple."""

    cdef bytes buf
    cdef Py_ssize_t* offs
    cdef Py_ssize_t n
    cdef Py_ssize_t ncols
    cdef int kind
    cdef tuple whole

    def __dealloc__(self):
        PyMem_Free(self.offs)

    cdef object _item(self, Py_ssize_t i):
        cdef R r
        r.p = <const uint8_t*> PyBytes_AS_STRING(self.buf)
        r.end = PyBytes_GET_SIZE(self.buf)
        r.pos = self.offs[i]
        if self.kind == K_ROW:
            return ax_row(&r, self.ncols)
        return _result_normal(&r)

    cpdef tuple to_tuple(self):
        """Every item, decoded once and kept: the tuple the eager decoder gives."""
        cdef Py_ssize_t i
        cdef tuple out
        if self.whole is None:
            out = PyTuple_New(self.n)
            for i in range(self.n):
                x = self._item(i)
                Py_INCREF(x)
                PyTuple_SET_ITEM(out, i, x)
            self.whole = out
        return self.whole

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        cdef Py_ssize_t i
        if self.whole is not None or not isinstance(index, int):
            return self.to_tuple()[index]
        i = index
        if i < 0:
            i += self.n
        if i < 0 or i >= self.n:
            raise IndexError("tuple index out of range")
        return self._item(i)

    def __iter__(self):
        return iter(self.to_tuple())

    def __contains__(self, x):
        return x in self.to_tuple()

    def __richcmp__(self, other, int op):
        if isinstance(other, LazySeq):
            other = (<LazySeq> other).to_tuple()
        elif not isinstance(other, tuple):
            return NotImplemented
        mine = self.to_tuple()
        if op == 2:
            return mine == other
        if op == 3:
            return mine != other
        if op == 0:
            return mine < other
        if op == 1:
            return mine <= other
        if op == 4:
            return mine > other
        return mine >= other

    def __hash__(self):
        return hash(self.to_tuple())

    def __repr__(self):
        return repr(self.to_tuple())

    def __reduce__(self):
        return (tuple, (self.to_tuple(),))

    def count(self, x):
        return self.to_tuple().count(x)

    def index(self, x, *args):
        return self.to_tuple().index(x, *args)


cdef LazySeq _lazy(Py_ssize_t n, int kind, Py_ssize_t ncols):
    cdef LazySeq s = LazySeq.__new__(LazySeq)
    s.buf = _cur
    s.n = n
    s.kind = kind
    s.ncols = ncols
    s.offs = <Py_ssize_t*> PyMem_Malloc((n if n > 0 else 1) * sizeof(Py_ssize_t))
    if s.offs == NULL:
        raise MemoryError()
    return s


cdef object _lazy_normals(R* r):
    # SEQUENCE OF A-ResultNormal, validated, each item read on access
    cdef Py_ssize_t n = _seq_len(r), i
    cdef LazySeq s = _lazy(n, K_NORMAL, 0)
    for i in range(n):
        s.offs[i] = r.pos
        _v_result_normal(r)
    return s


cdef object _lazy_record(R* r):
    # A-ResultRecord with its rows validated and read on access (OAD, RCSD, DAR built now)
    cdef object oad = _u32(r)
    cdef object rcsd = ax_typed(r, T_RCSD, 0)
    cdef object rows = None, dar = None
    cdef Py_ssize_t ncols = len(rcsd), m, i
    cdef LazySeq s
    _need(r, 1)
    r.pos += 1
    if r.p[r.pos - 1] == 1:
        m = ax_count(r, "record rows", ncols if ncols > 1 else 1)
        s = _lazy(m, K_ROW, ncols)
        for i in range(m):
            s.offs[i] = r.pos
            _v_row(r, ncols)
        rows = s
    elif r.p[r.pos - 1] == 0:
        dar = _u8(r)
    else:
        raise _MISS
    return _new(&C_RR, oad, rcsd, rows, dar, None)


cdef object _lazy_records(R* r):
    return _seq(r, _lazy_record)


cdef object _lazy_proxy_result(R* r):
    cdef object tsa = ax_typed(r, T_TSA, 0)
    cdef object res = _lazy_normals(r)
    return _new(&C_PR, tsa, res, None, None, None)


cdef object _lazy_proxies(R* r):
    return _seq(r, _lazy_proxy_result)


cdef object _walk(R* r, bint lazy):
    # lazy: the lists and record rows validated and left as LazySeq (LINK and GET-Response-Normal,
    # one Data, are built either way)
    cdef int tag = r.p[0], choice = r.p[1]
    cdef item_f normals = _lazy_normals if lazy else _results
    cdef item_f record = _lazy_record if lazy else _result_record
    cdef item_f records = _lazy_records if lazy else _records
    if tag == 0x01:
        r.pos = 1
        return _link_request(r)
    r.pos = 2
    if tag == 0x85:
        if choice == 1:
            return _server(r, &C_GN, _result_normal)
        if choice == 2:
            return _server(r, &C_GNL, normals)
        if choice == 3:
            return _server(r, &C_GR, record)
        if choice == 4:
            return _server(r, &C_GRL, records)
    elif tag == 0x88:
        if choice == 1:
            return _server(r, &C_RNL, normals)
        if choice == 2:
            return _server(r, &C_RRL, records)
    elif tag == 0x89:
        if choice == 1:
            return _server(r, &C_PGL, _lazy_proxies if lazy else _proxy_results)
        if choice == 2:
            return _proxy_record(r, record)
    return None


cdef object _decode(bytes buf, bint lazy, object classes):
    global _cur
    cdef R r
    if classes is not _bound:
        _init(classes)
    r.p = <const uint8_t*> PyBytes_AS_STRING(buf)
    r.end = PyBytes_GET_SIZE(buf)
    if r.end < 2:
        return None
    _cur = buf
    try:
        apdu = _walk(&r, lazy)
    except (_Miss, GridheadError):
        return None
    finally:
        _cur = None
    if r.pos != r.end:
        return None
    return apdu


def decode(bytes buf, object classes):
    """The APDU ``buf`` holds if it is one of the hot services and decodes whole, else None; built from
    the classes of ``classes`` (the module ``protocols.dlt698.apdu``)."""
    return _decode(buf, False, classes)


def decode_lazy(bytes buf, object classes):
    """As :func:`decode`, with the lists and record rows of the hot services as validated
    :class:`LazySeq`; None when ``buf`` is not a hot service or does not decode whole."""
    return _decode(buf, True, classes)

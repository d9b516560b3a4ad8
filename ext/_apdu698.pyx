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

from protocols import _axdr
from protocols.errors import GridheadError

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
    raise ImportError(f"protocols._axdr reader is {_API['sizeof_R']} bytes, {sizeof(R)} expected")
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
cdef bint _ready = False


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


cdef int _init() except -1:
    global _ready
    from protocols.dlt698 import apdu as A
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
    _ready = True
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


cdef object _proxy_record(R* r):
    # PROXY-Response-GetRecord: PIID-ACD, TSA, A-ResultRecord, trailer
    cdef object piid = _u8(r)
    cdef object tsa = ax_typed(r, T_TSA, 0)
    cdef object rec = _result_record(r)
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


cdef object _walk(R* r):
    cdef int tag = r.p[0], choice = r.p[1]
    if tag == 0x01:
        r.pos = 1
        return _link_request(r)
    r.pos = 2
    if tag == 0x85:
        if choice == 1:
            return _server(r, &C_GN, _result_normal)
        if choice == 2:
            return _server(r, &C_GNL, _results)
        if choice == 3:
            return _server(r, &C_GR, _result_record)
        if choice == 4:
            return _server(r, &C_GRL, _records)
    elif tag == 0x88:
        if choice == 1:
            return _server(r, &C_RNL, _results)
        if choice == 2:
            return _server(r, &C_RRL, _records)
    elif tag == 0x89:
        if choice == 1:
            return _server(r, &C_PGL, _proxy_results)
        if choice == 2:
            return _proxy_record(r)
    return None


def decode(bytes buf):
    """The APDU ``buf`` holds if it is one of the hot services and decodes whole, else None."""
    cdef R r
    if not _ready:
        _init()
    r.p = <const uint8_t*> PyBytes_AS_STRING(buf)
    r.end = PyBytes_GET_SIZE(buf)
    if r.end < 2:
        return None
    try:
        apdu = _walk(&r)
    except (_Miss, GridheadError):
        return None
    if r.pos != r.end:
        return None
    return apdu

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled columnar decoder of DL/T 698.45 record answers, built as ``headend._records698``.

Twin of ``headend/_records698_py.py`` (which is simply ``decode_apdu`` + ``records.rows_to_batch``);
the entry point, its arguments and the rule ("the same columns, or None") are described there and in
``records.decode_record_answer``.  Why this file exists: the general path builds one ``Data`` per
value (a NamedTuple, its int, the tuples of arrays and rows) only for ``rows_to_batch`` to walk them
again into numpy columns.  Here the APDU bytes are walked once in C and each reading is written
straight into preallocated int64 columns; the only Python objects per row are the TSA bytes looked up
in the archive's map and the row's entry in ``missing`` / ``meters``.

Anything this walk does not expect — another service or RCSD, a Data type outside the few a record
row of the profile holds, a length the A-XDR kernel would refuse, trailing bytes, a TimeTag — makes it
return None, and the caller takes the general path (which also words any error).  So it is at least
as strict as ``protocols._axdr`` for what it accepts: the checks below are that kernel's, one for one.
"""

from libc.stdint cimport uint8_t, int8_t, int16_t, int32_t, int64_t, uint32_t, uint64_t
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject

import numpy as np

from gridhead.protocols._axdr_py import MAX_DEPTH, MAX_ELEMENTS

cdef int C_MAX_DEPTH = MAX_DEPTH
cdef Py_ssize_t C_MAX_ELEMENTS = MAX_ELEMENTS

DEF MAX_COLS = 16         # top-level columns of an RCSD handled here
DEF MAX_SUB = 16          # OADs of a ROAD handled here
DEF MAX_VALS = 32         # value columns of a plan

# fixed widths of the Data types a record row of the profile holds (0: not fixed / not handled)
cdef int _WIDTH[256]
for _t, _w in ((3, 1), (5, 4), (6, 4), (15, 1), (16, 2), (17, 1), (18, 2), (20, 8), (21, 8), (22, 1),
               (25, 10), (28, 7)):
    _WIDTH[_t] = _w


cdef struct Rd:
    const uint8_t* p
    Py_ssize_t pos
    Py_ssize_t end


cdef inline uint32_t _be32(const uint8_t* q) noexcept nogil:
    return (<uint32_t>q[0] << 24) | (<uint32_t>q[1] << 16) | (<uint32_t>q[2] << 8) | q[3]


cdef int _len(Rd* r, Py_ssize_t* out) noexcept nogil:
    # A-XDR length (protocols._axdr._length): short form, or 1-4 length bytes in minimal form
    cdef Py_ssize_t n = 0
    cdef int k, i
    cdef uint8_t b
    if r.pos >= r.end:
        return -1
    b = r.p[r.pos]
    if b < 0x80:
        r.pos += 1
        out[0] = b
        return 0
    k = b & 0x7F
    if k < 1 or k > 4 or r.pos + 1 + k > r.end:
        return -1
    for i in range(k):
        n = (n << 8) | r.p[r.pos + 1 + i]
    if n < (0x80 if k == 1 else (<Py_ssize_t>1) << (8 * (k - 1))):
        return -1
    r.pos += 1 + k
    out[0] = n
    return 0


cdef int _count(Rd* r, Py_ssize_t size, Py_ssize_t* out) noexcept nogil:
    # SEQUENCE OF / array count (protocols._axdr._count): at most MAX_ELEMENTS, and room for them
    if _len(r, out) < 0 or out[0] > C_MAX_ELEMENTS or out[0] * size > r.end - r.pos:
        return -1
    return 0


cdef int _skip(Rd* r, int depth) noexcept nogil:
    # step over one Data, validated as protocols._axdr._data would; -1: leave it to the general walk
    cdef int tag, w, flag
    cdef Py_ssize_t n, i
    if r.pos >= r.end:
        return -1
    tag = r.p[r.pos]
    r.pos += 1
    if tag == 0:
        return 0
    if tag == 1 or tag == 2:
        if depth >= C_MAX_DEPTH or _count(r, 1, &n) < 0:
            return -1
        for i in range(n):
            if _skip(r, depth + 1) < 0:
                return -1
        return 0
    w = _WIDTH[tag]
    if w:
        if r.pos + w > r.end:
            return -1
        if tag == 3 and r.p[r.pos] > 1:             # bool: 0 or 1
            return -1
        if tag == 21 and r.p[r.pos] & 0x80:         # long64-unsigned beyond int64: not a lake value
            return -1
        r.pos += w
        return 0
    if tag == 9 or tag == 85:                       # octet-string, TSA
        if _len(r, &n) < 0 or r.pos + n > r.end:
            return -1
        if tag == 85:
            flag = r.p[r.pos] if n else 0
            if n < 2 or n != (flag & 0x0F) + 2:
                return -1
        r.pos += n
        return 0
    return -1


cdef int _int_of(const uint8_t* p, Py_ssize_t pos, int64_t* v) noexcept nogil:
    # the integer of a (validated) Data — a structure's first member, as records._scalar; 0: none
    cdef int tag
    cdef Py_ssize_t n
    cdef Rd r
    while True:
        tag = p[pos]
        pos += 1
        if tag == 6:
            v[0] = _be32(p + pos)
        elif tag == 5:
            v[0] = <int32_t>_be32(p + pos)
        elif tag == 17 or tag == 22:
            v[0] = p[pos]
        elif tag == 18:
            v[0] = (p[pos] << 8) | p[pos + 1]
        elif tag == 16:
            v[0] = <int16_t>((p[pos] << 8) | p[pos + 1])
        elif tag == 15:
            v[0] = <int8_t>p[pos]
        elif tag == 20 or tag == 21:
            v[0] = <int64_t>((<uint64_t>_be32(p + pos) << 32) | _be32(p + pos + 4))
        elif tag == 2:
            r.p = p
            r.pos = pos
            r.end = pos + 5                        # already validated: only the count is read
            _len(&r, &n)
            if n == 0:
                return 0
            pos = r.pos
            continue
        else:
            return 0
        return 1


cdef int64_t _days(int y, int m, int d) noexcept nogil:
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)
    cdef int64_t era, yoe, doy, doe
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef int _epoch(const uint8_t* p, Py_ssize_t pos, int64_t offset_s, int64_t* out) noexcept nogil:
    # records.epoch_of of a date_time_s / date_time Data at pos: 0 when it is not a real date
    cdef int tag = p[pos], y, mo, d, h, mi, s, dim
    pos += 1
    y = (p[pos] << 8) | p[pos + 1]
    mo = p[pos + 2]
    d = p[pos + 3]
    if tag == 25:                                   # date_time: day of week skipped
        pos += 1
    h = p[pos + 4]
    mi = p[pos + 5]
    s = p[pos + 6]
    if y < 1 or y > 9999 or mo < 1 or mo > 12 or d < 1 or h > 23 or mi > 59 or s > 59:
        return 0
    if mo == 2:
        dim = 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    elif mo == 4 or mo == 6 or mo == 9 or mo == 11:
        dim = 30
    else:
        dim = 31
    if d > dim:
        return 0
    out[0] = _days(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset_s
    return 1


cdef struct Plan:
    int ncols
    int road[MAX_COLS]            # 1: a ROAD column (its cell an array of one value per OAD)
    int tsa_i, tsa_j              # -1: none
    int time_i, time_j
    int nvals
    int vi[MAX_VALS]
    int vj[MAX_VALS]
    int vidx[MAX_VALS]            # element index of an OAD like 00100201, -1: none
    int nregs[MAX_VALS]
    int regs[MAX_VALS][8]         # -1: element not stored
    int per_row                   # at most this many readings per row


cdef int _plan(object spec, Plan* pl) except -1:
    # spec (records._fast_plan): (ncols, road flags, tsa (i, j), time (i, j), ((i, j, idx, regs), ...))
    ncols, roads, tsa, tim, vals = spec
    if ncols > MAX_COLS or len(vals) > MAX_VALS:
        return 0
    pl.ncols = ncols
    for i in range(ncols):
        pl.road[i] = roads[i]
    pl.tsa_i, pl.tsa_j = tsa
    pl.time_i, pl.time_j = tim
    pl.nvals = len(vals)
    pl.per_row = 0
    for k, (i, j, idx, regs) in enumerate(vals):
        if j >= MAX_SUB or len(regs) > 8:
            return 0
        pl.vi[k], pl.vj[k], pl.vidx[k], pl.nregs[k] = i, j, idx, len(regs)
        for m, g in enumerate(regs):
            pl.regs[k][m] = g
        pl.per_row += len(regs)
    return 1


cdef class _Cols:
    # the columns of one result while they fill
    cdef int64_t[::1] meter, ts, val
    cdef int16_t[::1] reg
    cdef object a_meter, a_reg, a_ts, a_val
    cdef Py_ssize_t n

    def __init__(self, Py_ssize_t cap):
        self.a_meter = np.empty(cap, np.int64)
        self.a_reg = np.empty(cap, np.int16)
        self.a_ts = np.empty(cap, np.int64)
        self.a_val = np.empty(cap, np.int64)
        self.meter, self.reg, self.ts, self.val = self.a_meter, self.a_reg, self.a_ts, self.a_val
        self.n = 0

    cdef dict columns(self, int source, int quality, object received_utc):
        cdef Py_ssize_t n = self.n
        cols = {"meter_id": self.a_meter[:n], "register": self.a_reg[:n], "ts_utc": self.a_ts[:n],
                "value": self.a_val[:n], "quality": np.full(n, quality, np.uint8),
                "source": np.full(n, source, np.uint8)}
        if received_utc is not None:
            cols["received_utc"] = np.full(n, int(received_utc), np.int64)
        return cols


class _Miss(Exception):
    """Not handled here: the caller takes the general path."""


cdef object _MISS = _Miss()


cdef object _meter(object meter_of, bint is_dict, const uint8_t* p, Py_ssize_t n):
    cdef object key = PyBytes_FromStringAndSize(<const char*> p, n)
    cdef PyObject* hit
    if is_dict:
        hit = PyDict_GetItem(meter_of, key)
        return None if hit == NULL else <object> hit
    return meter_of(key)


cdef tuple _result(Rd* r, dict plans, object meter_of, bint is_dict, object tsa, object default_meter, tuple ctx):
    # one A-ResultRecord: (oad, rcsd key, dar, columns, missing, meters)
    cdef Plan pl
    cdef Py_ssize_t start, m, row, i, k, n, e, ne, cap, pos
    cdef Py_ssize_t off[MAX_COLS]
    cdef Py_ssize_t nsub[MAX_COLS]
    cdef Py_ssize_t sub[MAX_COLS * MAX_SUB]
    cdef int64_t ts, v, meter_id, offset_s
    cdef int g0, ng
    cdef bint has_ts
    cdef int tag
    cdef Rd er
    cdef _Cols cols
    unknown_tsa, no_time, no_data, offset, default_ts, source, quality, received_utc = ctx
    offset_s = offset
    if r.pos + 5 > r.end:
        raise _MISS
    oad = _be32(r.p + r.pos)
    r.pos += 4
    # RCSD: one of the profile's, matched by its bytes
    start = r.pos
    if _count(r, 1, &n) < 0:
        raise _MISS
    for i in range(n):
        if r.pos >= r.end:
            raise _MISS
        tag = r.p[r.pos]
        r.pos += 1
        if tag == 0:
            r.pos += 4
        elif tag == 1:
            r.pos += 4
            if r.pos > r.end or _count(r, 4, &m) < 0:
                raise _MISS
            r.pos += 4 * m
        else:
            raise _MISS
        if r.pos > r.end:
            raise _MISS
    key = PyBytes_FromStringAndSize(<const char*> (r.p + start), r.pos - start)
    spec = plans.get(key)
    if spec is None or not _plan(spec, &pl):
        raise _MISS
    if r.pos >= r.end:
        raise _MISS
    r.pos += 1
    if r.p[r.pos - 1] == 0:                          # DAR
        if r.pos >= r.end:
            raise _MISS
        r.pos += 1
        return (oad, key, r.p[r.pos - 1], None, (), ())
    if r.p[r.pos - 1] != 1:
        raise _MISS
    if pl.tsa_i < 0 and tsa is None:
        raise _MISS                                  # rows_to_batch refuses: let it say so
    if _count(r, pl.ncols if pl.ncols > 1 else 1, &m) < 0:
        raise _MISS
    cap = m * pl.per_row
    cols = _Cols(cap)
    missing, meters = [], []
    has_ts = default_ts is not None
    ts = default_ts if has_ts else 0
    for row in range(m):
        # walk the row, noting where each column's Data (and each element of a ROAD's) starts
        for i in range(pl.ncols):
            off[i] = r.pos
            nsub[i] = -1
            if pl.road[i] and r.pos < r.end and (r.p[r.pos] == 1 or r.p[r.pos] == 2):
                r.pos += 1
                if _count(r, 1, &n) < 0:
                    raise _MISS
                nsub[i] = n
                for k in range(n):
                    if k < MAX_SUB:
                        sub[i * MAX_SUB + k] = r.pos
                    if _skip(r, 2) < 0:
                        raise _MISS
            elif _skip(r, 1) < 0:
                raise _MISS
        # the meter
        meter = default_meter
        if pl.tsa_i >= 0:
            pos = _cell(off, nsub, sub, pl.tsa_i, pl.tsa_j)
            meter = None
            if pos >= 0 and r.p[pos] == 85:
                er.p, er.pos, er.end = r.p, pos + 1, r.end
                _len(&er, &n)
                meter = _meter(meter_of, is_dict, r.p + er.pos, n)
        if meter is None:
            missing.append((-1, unknown_tsa))
            continue
        # the time
        if pl.time_i >= 0:
            pos = _cell(off, nsub, sub, pl.time_i, pl.time_j)
            if pos >= 0 and (r.p[pos] == 28 or r.p[pos] == 25):
                has_ts = _epoch(r.p, pos, offset_s, &ts)
            else:
                has_ts = default_ts is not None
                ts = default_ts if has_ts else 0
        if not has_ts:
            missing.append((meter, no_time))
            continue
        meter_id = meter                              # OverflowError / TypeError: not a meter id
        n = cols.n
        for k in range(pl.nvals):
            pos = _cell(off, nsub, sub, pl.vi[k], pl.vj[k])
            if pos < 0 or r.p[pos] == 0:
                continue
            if pl.vidx[k] < 0 and r.p[pos] == 1:        # an array: element e -> register e
                er.p, er.pos, er.end = r.p, pos + 1, r.end
                _len(&er, &ne)
                g0 = 0
                ng = pl.nregs[k]
            else:                                     # one value: register idx (or the first)
                ne = 1
                er.pos = pos
                g0 = pl.vidx[k] if pl.vidx[k] >= 0 else 0
                ng = g0 + 1 if g0 < pl.nregs[k] else g0
            for e in range(ne if ne < ng - g0 else ng - g0):
                if e and _skip_to(r, &er) < 0:
                    raise _MISS
                if _int_of(r.p, er.pos, &v) and pl.regs[k][g0 + e] >= 0:
                    cols.meter[cols.n] = meter_id
                    cols.reg[cols.n] = pl.regs[k][g0 + e]
                    cols.ts[cols.n] = ts
                    cols.val[cols.n] = v
                    cols.n += 1
        if cols.n == n:
            missing.append((meter, no_data))
        else:
            meters.append(meter)
    return (oad, key, None, cols.columns(source, quality, received_utc), tuple(missing), tuple(meters))


cdef inline int _skip_to(Rd* r, Rd* er) noexcept:
    # er at an element already validated: step to the next one
    cdef Rd t
    t.p, t.pos, t.end = r.p, er.pos, r.end
    if _skip(&t, 2) < 0:
        return -1
    er.pos = t.pos
    return 0


cdef inline Py_ssize_t _cell(Py_ssize_t* off, Py_ssize_t* nsub, Py_ssize_t* sub, int i, int j) noexcept:
    # records._cell: where the Data of column i (element j of a ROAD) starts, -1 when absent
    if j < 0:
        return off[i]
    if nsub[i] < 0 or j >= nsub[i]:
        return -1
    return sub[i * MAX_SUB + j]


def decode(bytes buf, dict plans, object meter_of, tuple ctx):
    """(service tag, PIID-ACD, TSA or None, results) of a GET-Response-Record, REPORT-Notification-
    RecordList or PROXY-Response-GetRecord whose RCSDs are in ``plans``; None for anything else."""
    cdef Rd r
    cdef int tag, choice
    cdef Py_ssize_t n, i
    r.p = <const uint8_t*> PyBytes_AS_STRING(buf)
    r.end = PyBytes_GET_SIZE(buf)
    r.pos = 0
    if r.end < 4:
        return None
    tag, choice = r.p[0], r.p[1]
    piid = r.p[2]
    r.pos = 3
    is_dict = type(meter_of) is dict
    tsa = default_meter = None
    try:
        if tag == 0x85 and choice == 3 or tag == 0x88 and choice == 2:
            n = 1
            if tag == 0x88 and _count(&r, 1, &n) < 0:
                return None
        elif tag == 0x89 and choice == 2:
            start = r.pos
            if _len(&r, &n) < 0 or r.pos + n > r.end or n < 2 or n != (r.p[r.pos] & 0x0F) + 2:
                return None
            tsa = PyBytes_FromStringAndSize(<const char*> (r.p + r.pos), n)
            r.pos += n
            default_meter = _meter(meter_of, is_dict, r.p + r.pos - n, n)
            n = 1
        else:
            return None
        results = []
        for i in range(n):
            results.append(_result(&r, plans, meter_of, is_dict, tsa, default_meter, ctx))
    except (_Miss, OverflowError, TypeError):        # the general path decides (and words any error)
        return None
    # FollowReport and TimeTag absent, nothing after them
    if r.pos + 2 != r.end or r.p[r.pos] != 0 or r.p[r.pos + 1] != 0:
        return None
    return tag, piid, tsa, results

"""Decoded DL/T 698.45 record rows and DL/T 645 answers → lake batches (columns of storage.lake's READINGS).

The one place where values read from the fleet become readings.  Pure (numpy, no I/O); used by the
report handler (headend/server.py), the collection tasks (headend/collect.py) and their tests.

What a row is
    A 698 record row (A-RecordRow) is one Data per CSD of its RCSD.  A CSD that is an OAD gives one
    Data; a ROAD ``Road(oad, oads)`` gives one Data of type array (or structure) holding one value per
    associated OAD.  The row's meter is the ``202A0200`` (目标服务器地址) column when there is one,
    otherwise the caller's ``tsa=`` (a PROXY-Response-GetRecord names its one meter outside the rows).
    The row's time is the ``20210200`` (数据冻结时间) column, else ``60420200`` (采集存储时标), else the
    caller's ``ts_utc=``.  A date_time_s is China Standard Time (storage.schema.LOCAL_TZ).

    Energy arrays map element i to register ``profile.REGISTER_MAP[oad][i]``; an OAD with an element
    index (``00100201``) maps its one value to element index-1.  Maximum demand elements are
    ``structure {value, time}``: the value is stored.  Integers go into the lake unchanged (the profile's
    scalers are the lake's).

What is "missing" (for success rates and back-fill)
    A row whose values are all null (the terminal has no data for that meter and time), whose meter
    TSA is not in the archive, or whose time is absent / not specified gives no reading and is listed in
    :attr:`Batch.missing` as ``(meter_id, reason)`` (meter_id -1 when the TSA is unknown).  A
    ResultRecord answered with a DAR gives no rows at all: :func:`result_to_batch` lists the DAR.
"""

from __future__ import annotations

import datetime as _dt
import functools
from typing import Callable, Iterable, Mapping, NamedTuple

import numpy as np

from gridhead.protocols import accel
from gridhead.protocols.dlt698.axdr import Road
from gridhead.storage import schema

from . import profile as P

# the kernel, chosen once at import: the compiled _records698 unless GRIDHEAD_PUREPYTHON=1 or not built
# (its twin is bound to rows_to_batch below, whichever is chosen: the tests switch kernels at run time)
from . import _records698_py

if accel.PURE:
    _fast = _records698_py
else:
    try:
        from . import _records698 as _fast
    except ImportError:
        _fast = _records698_py  # type: ignore[misc]

# reading kind of a record, by the freeze object it comes from
KIND_OF_FREEZE = {P.OAD_DAY_FREEZE: schema.DAILY, P.OAD_MONTH_FREEZE: schema.MONTHLY,
                  P.OAD_MINUTE_FREEZE: schema.INTERVAL}

# Data tags used here (DL/T 698.45 clause 7.3.1)
_NULL, _ARRAY, _STRUCTURE, _DATE_TIME, _DATE_TIME_S, _TSA = 0, 1, 2, 25, 28, 85
_TIME_OADS = (P.OAD_FREEZE_TIME, P.OAD_COLLECT_STORE)
_EPOCH_LOCAL = _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=schema.LOCAL_OFFSET_S)

R_NO_DATA = "no data"                  # every value null: the terminal has nothing for that meter/time
R_UNKNOWN_TSA = "meter not in archive"
R_NO_TIME = "no freeze time"
R_DAR = "DAR"                          # the whole result refused: "DAR <code>"

COLUMNS = ("meter_id", "register", "ts_utc", "value", "quality", "source", "received_utc")


class Batch(NamedTuple):
    """Readings as lake columns, plus what was asked for and not obtained."""

    columns: dict           # COLUMNS -> numpy arrays (ts_utc / received_utc: int64 epoch seconds, UTC)
    missing: tuple          # ((meter_id, reason), ...): rows that gave no reading
    meters: tuple           # meter ids that gave at least one reading, in row order

    def __len__(self) -> int:
        return len(self.columns["meter_id"])


def local_to_epoch(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """Epoch seconds (UTC) of a China Standard Time wall-clock time; ValueError if it is not a date."""
    return int((_dt.datetime(year, month, day, hour, minute, second) - _EPOCH_LOCAL).total_seconds())


def epoch_of(t) -> int | None:
    """Epoch seconds of a 698 date_time_s / date_time (local) value, a datetime (naive = local) or an
    int; None when not specified (FFH fields) or not a real date."""
    if t is None:
        return None
    if isinstance(t, (int, np.integer)):
        return int(t)
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=schema.LOCAL_TZ)
        return int(t.timestamp())
    if len(t) == 8:                                   # date_time: weekday and milliseconds dropped
        t = (t[0], t[1], t[2], t[4], t[5], t[6])
    try:
        return local_to_epoch(*t[:6])
    except (ValueError, OverflowError, TypeError):      # 0xFFFF year / 0xFF fields: not specified
        return None


def tsa_index(routes) -> dict[bytes, int]:
    """TSA bytes (as a record row carries them: flag byte + address, reversed) → meter id, from
    ``Archive.meter_routes()`` (an Arrow table or a mapping of columns) or (meter_id, comm_address) pairs."""
    from gridhead.protocols.dlt698.apdu import tsa as _tsa
    if hasattr(routes, "column"):
        pairs = zip(routes.column("meter_id").to_pylist(), routes.column("comm_address").to_pylist())
    elif isinstance(routes, Mapping):
        pairs = zip(routes["meter_id"], routes["comm_address"])
    else:
        pairs = routes
    return {_tsa(str(addr)): int(mid) for mid, addr in pairs}


class _Acc:
    """Column accumulator (Python lists, one numpy conversion at the end)."""

    __slots__ = ("meter", "reg", "ts", "val", "missing", "meters")

    def __init__(self) -> None:
        self.meter, self.reg, self.ts, self.val = [], [], [], []
        self.missing: list = []
        self.meters: list = []

    def batch(self, *, source: int, quality: int, received_utc: int | None) -> Batch:
        n = len(self.meter)
        cols = {
            "meter_id": np.asarray(self.meter, np.int64), "register": np.asarray(self.reg, np.int16),
            "ts_utc": np.asarray(self.ts, np.int64), "value": np.asarray(self.val, np.int64),
            "quality": np.full(n, quality, np.uint8), "source": np.full(n, source, np.uint8),
        }
        if received_utc is not None:
            cols["received_utc"] = np.full(n, int(received_utc), np.int64)
        return Batch(cols, tuple(self.missing), tuple(self.meters))


def _registers(oad: int):
    """(registers of the array elements, element index or None) for an OAD, or None if not stored."""
    regs = P.REGISTER_MAP.get(oad)
    if regs is not None:
        return regs, None
    idx = oad & 0xFF
    if idx and (oad & ~0xFF) in P.REGISTER_MAP:
        return P.REGISTER_MAP[oad & ~0xFF], idx - 1
    return None


def _scalar(d):
    """The integer of one element (a structure's first member: maximum demand {value, time}); None if null."""
    while d is not None and d.tag == _STRUCTURE:
        d = d.value[0] if d.value else None
    if d is None or d.tag == _NULL or not isinstance(d.value, int) or isinstance(d.value, bool):
        return None
    return d.value


def _columns(rcsd) -> list:
    """Flatten an RCSD: one (top index, sub index or None, OAD) per value."""
    out = []
    for i, csd in enumerate(rcsd):
        if isinstance(csd, Road):
            out.extend((i, j, o) for j, o in enumerate(csd.oads))
        else:
            out.append((i, None, csd))
    return out


def _lookup(meter_of_tsa) -> Callable[[bytes], int | None]:
    if callable(meter_of_tsa):
        return meter_of_tsa
    return meter_of_tsa.get


def rows_to_batch(rcsd, rows, meter_of_tsa, *, source: int = schema.SRC_TASK, quality: int = schema.Q_ACTUAL,
                  received_utc: int | None = None, tsa: bytes | None = None, ts_utc=None) -> Batch:
    """Record rows (tuples of Data, one per CSD of ``rcsd``) → lake columns.

    ``meter_of_tsa``: mapping TSA bytes → meter id (:func:`tsa_index`) or a callable returning None
    for an unknown TSA.  ``tsa``: the meter of rows without a ``202A0200`` column; ``ts_utc``: the time
    of rows without a freeze time column (epoch seconds, datetime, or a date_time_s tuple).
    """
    meter_of = _lookup(meter_of_tsa)
    tsa_col, time_col, value_cols = _plan(tuple(rcsd))
    default_ts = epoch_of(ts_utc)
    default_meter = meter_of(bytes(tsa)) if tsa is not None else None
    if tsa_col is None and tsa is None:
        raise ValueError("rows_to_batch: no 202A0200 column and no tsa= for the rows' meter")
    acc = _Acc()
    meters, regs_out, tss, vals = acc.meter, acc.reg, acc.ts, acc.val
    for row in rows:
        meter = default_meter
        if tsa_col is not None:
            d = _cell(row, *tsa_col)
            meter = meter_of(bytes(d.value)) if d is not None and d.tag == _TSA else None
        if meter is None:
            acc.missing.append((-1, R_UNKNOWN_TSA))
            continue
        ts = default_ts
        if time_col is not None:
            d = _cell(row, *time_col)
            if d is not None and d.tag in (_DATE_TIME_S, _DATE_TIME):
                ts = _epoch_cached(d.value)
        if ts is None:
            acc.missing.append((meter, R_NO_TIME))
            continue
        n0 = len(meters)
        for i, j, regs, idx in value_cols:
            d = _cell(row, i, j)
            if d is None or d.tag == _NULL:
                continue
            if idx is None and d.tag == _ARRAY:
                elements = d.value
            else:
                elements = (d,)
                regs = regs[idx:idx + 1] if idx is not None else regs[:1]
            for reg, el in zip(regs, elements):
                v = el.value
                if type(v) is not int:          # noqa: E721 - bool is not a register; structures: first member
                    v = _scalar(el)
                    if v is None:
                        continue
                if reg is None:
                    continue
                meters.append(meter)
                regs_out.append(reg)
                tss.append(ts)
                vals.append(v)
        if len(meters) == n0:
            acc.missing.append((meter, R_NO_DATA))
        else:
            acc.meters.append(meter)
    return acc.batch(source=source, quality=quality, received_utc=received_utc)


@functools.lru_cache(maxsize=4096)
def _epoch_cached(t):
    """epoch_of for the few freeze times a report repeats row after row."""
    return epoch_of(t)


@functools.lru_cache(maxsize=256)
def _plan(rcsd: tuple):
    """Where a row of this RCSD keeps its meter, its time and its register values (cached per RCSD)."""
    cols = _columns(rcsd)
    tsa_col = next(((i, j) for i, j, o in cols if o == P.OAD_TARGET_TSA), None)
    time_col = next(((i, j) for t in _TIME_OADS for i, j, o in cols if o == t), None)
    value_cols = tuple((i, j) + r for i, j, o in cols if (r := _registers(o)) is not None)
    return tsa_col, time_col, value_cols


def _cell(row, i: int, j: int | None):
    """The Data at column i (element j of a ROAD's array), None when the row is shorter or null."""
    if i >= len(row):
        return None
    d = row[i]
    if j is None:
        return d
    if d is None or d.tag not in (_ARRAY, _STRUCTURE) or j >= len(d.value):
        return None
    return d.value[j]


def result_to_batch(result, meter_of_tsa, **kw) -> Batch:
    """An A-ResultRecord (GET-Response-Record, REPORT-Notification-RecordList, PROXY-Response-GetRecord):
    its rows, or — answered with a DAR — no rows and the DAR as the one missing reason."""
    if result.dar is not None:
        meter = _lookup(meter_of_tsa)(bytes(kw["tsa"])) if kw.get("tsa") is not None else None
        return Batch(_Acc().batch(source=kw.get("source", schema.SRC_TASK), quality=kw.get("quality", 0),
                                  received_utc=kw.get("received_utc")).columns,
                     ((-1 if meter is None else meter, f"{R_DAR} {result.dar}"),), ())
    return rows_to_batch(result.rcsd, result.rows or (), meter_of_tsa, **kw)


def kind_of(rcsd, record_oad: int | None = None) -> str:
    """The reading kind of a record: the freeze object of its ROAD (or the record OAD itself)."""
    for csd in rcsd:
        if isinstance(csd, Road) and csd.oad in KIND_OF_FREEZE:
            return KIND_OF_FREEZE[csd.oad]
    if record_oad in KIND_OF_FREEZE:
        return KIND_OF_FREEZE[record_oad]
    return schema.INSTANT


def concat(batches: Iterable[Batch]) -> Batch:
    """One batch from several (columns concatenated, missing and meters joined)."""
    batches = list(batches)
    if not batches:
        return _Acc().batch(source=schema.SRC_TASK, quality=0, received_utc=None)
    keys = [k for k in COLUMNS if all(k in b.columns for b in batches)]
    cols = {k: np.concatenate([b.columns[k] for b in batches]) for k in keys}
    return Batch(cols, tuple(m for b in batches for m in b.missing), tuple(m for b in batches for m in b.meters))


_records698_py.bind(rows_to_batch)


# --- the columnar fast path: record answers straight into lake columns (headend._records698) -----------
# The RCSDs the profile reads and the terminals push; any other goes the general way.
FAST_RCSDS = (P.DAILY_RCSD, P.DAILY_METER_RCSD, P.MONTHLY_METER_RCSD, P.CURVE_METER_RCSD)


class RecordAnswer(NamedTuple):
    """A record answer decoded straight into columns by :func:`decode_record_answer`."""

    tag: int                # service: 0x85 GET-Response-Record, 0x88 REPORT-Notification-RecordList, 0x89 PROXY
    piid_acd: int
    tsa: bytes | None       # the meter of a PROXY-Response-GetRecord
    results: tuple          # ((record OAD, rcsd, DAR or None, Batch), ...)

    def notification(self):
        """The REPORT-Notification-RecordList it acknowledges as, rows left out (they are the batches)."""
        from gridhead.protocols.dlt698 import apdu as A
        return A.ReportNotificationRecordList(self.piid_acd, tuple(A.ResultRecord(o, r, None, d)
                                                                   for o, r, d, _b in self.results))


def _fast_spec(rcsd: tuple) -> tuple:
    """records._plan of an RCSD in plain ints for the kernel (-1 = none)."""
    tsa_col, time_col, value_cols = _plan(rcsd)

    def ij(c):
        return (-1, -1) if c is None else (c[0], -1 if c[1] is None else c[1])
    return (len(rcsd), tuple(int(isinstance(c, Road)) for c in rcsd), ij(tsa_col), ij(time_col),
            tuple(ij((i, j)) + (-1 if idx is None else idx, tuple(-1 if g is None else g for g in regs))
                  for i, j, regs, idx in value_cols))


def _fast_plans() -> tuple[dict, dict]:
    from gridhead.protocols.dlt698.axdr import encode_typed
    keys = {encode_typed(96, r): r for r in FAST_RCSDS}     # 96: RCSD
    return {k: _fast_spec(r) for k, r in keys.items()}, keys


_FAST_PLANS, _RCSD_OF_KEY = _fast_plans()


def decode_record_answer(apdu, meter_of_tsa, *, source: int = schema.SRC_TASK, quality: int = schema.Q_ACTUAL,
                         received_utc: int | None = None, ts_utc=None) -> RecordAnswer | None:
    """The APDU bytes of a GET-Response-Record, REPORT-Notification-RecordList or PROXY-Response-GetRecord
    whose RCSDs are :data:`FAST_RCSDS` → one :class:`Batch` per result, equal to :func:`result_to_batch`
    of the decoded APDU with the same arguments (``tsa=`` the PROXY's meter); None for anything else —
    another service or RCSD, an event record, a TimeTag or FollowReport, bytes that do not decode —
    and the caller takes the general path (``decode_apdu`` + :func:`result_to_batch`)."""
    lookup = meter_of_tsa if type(meter_of_tsa) is dict else _lookup(meter_of_tsa)
    out = _fast.decode(bytes(apdu), _FAST_PLANS, lookup,
                       (R_UNKNOWN_TSA, R_NO_TIME, R_NO_DATA, schema.LOCAL_OFFSET_S, epoch_of(ts_utc),
                        source, quality, received_utc))
    if out is None:
        return None
    tag, piid, tsa, found = out
    results = []
    for oad, key, dar, cols, missing, meters in found:
        if (oad >> 16) in EVENT_OF_OI:
            return None
        rcsd = _RCSD_OF_KEY[key]
        if dar is None:
            b = Batch(cols, missing, meters)
        else:
            from gridhead.protocols.dlt698.apdu import ResultRecord
            b = result_to_batch(ResultRecord(oad, rcsd, None, dar), lookup, tsa=tsa, source=source, quality=quality,
                                received_utc=received_utc)
        results.append((oad, rcsd, dar, b))
    return RecordAnswer(tag, piid, tsa, tuple(results))


# --- DL/T 645 -------------------------------------------------------------------------------------------
def registers_645(di: int) -> tuple | None:
    """Lake registers of a 645 data identifier; 上 n 次 (DI0 = n) items map like 上1次."""
    regs = P.REGISTER_MAP_645.get(di)
    if regs is None and di & 0xFF:
        regs = P.REGISTER_MAP_645.get((di & ~0xFF) | 1)
    return regs


def raw_values_645(values) -> list:
    """The register integers (``Value.raw``, None when not BCD) of a decoded 645 answer, flattened."""
    out = []
    for v in values:
        if hasattr(v, "raw"):
            out.append(v.raw)
        else:
            out.extend(raw_values_645(v))
    return out


def answers645_to_batch(answers, *, source: int = schema.SRC_TASK, quality: int = schema.Q_ACTUAL,
                        received_utc: int | None = None) -> Batch:
    """DL/T 645 answers → lake columns.  ``answers``: iterable of ``(meter_id, di, raws, ts)`` with
    ``raws`` the register integers in field order (:func:`raw_values_645`; None = not BCD / no data,
    e.g. an all-FF freeze the meter does not have) and ``ts`` the freeze time (epoch seconds, a naive
    local datetime as the 645 freeze-time item decodes, or None = missing)."""
    acc = _Acc()
    for meter, di, raws, ts in answers:
        regs = registers_645(di)
        t = epoch_of(ts)
        if regs is None:
            raise ValueError(f"answers645_to_batch: DI {di:08X} is not in profile.REGISTER_MAP_645")
        if t is None:
            acc.missing.append((meter, R_NO_TIME))
            continue
        n0 = len(acc.meter)
        for reg, v in zip(regs, raws):
            if reg is None or v is None:
                continue
            acc.meter.append(meter)
            acc.reg.append(reg)
            acc.ts.append(t)
            acc.val.append(int(v))
        if len(acc.meter) == n0:
            acc.missing.append((meter, R_NO_DATA))
        else:
            acc.meters.append(meter)
    return acc.batch(source=source, quality=quality, received_utc=received_utc)


# --- events (事件) -------------------------------------------------------------------------------------------
EVENT_OF_OI = {oi: code for code, (_name, _zh, oi) in schema.EVENTS.items()}
TERMINAL_EVENT_OF_OI = {oi: code for code, (_name, _zh, oi) in schema.TERMINAL_EVENTS.items() if oi is not None}


def has_meter_column(rcsd) -> bool:
    """Whether a record's rows name their meter (a ``202A0200`` 目标服务器地址 column)."""
    return any(o == P.OAD_TARGET_TSA for _i, _j, o in _columns(rcsd))


def _render(d, depth: int = 0) -> str:
    """A cell of a record row, short and readable (the quarantine's detail)."""
    if d is None:
        return "?"
    v = getattr(d, "value", d)
    if getattr(d, "tag", None) in (_ARRAY, _STRUCTURE) and isinstance(v, tuple):
        return "[" + ",".join(_render(x, depth + 1) for x in v[:8]) + ("…" if len(v) > 8 else "") + "]"
    if isinstance(v, (bytes, bytearray)):
        return v.hex().upper()
    if getattr(d, "tag", None) in (_DATE_TIME_S, _DATE_TIME):
        try:
            return _dt.datetime(*v[:3], *(v[4:7] if d.tag == _DATE_TIME else v[3:6])).isoformat()
        except (TypeError, ValueError):
            return str(v)
    return "null" if v is None else str(v)


def terminal_event_columns(address: str, record_oad: int, rcsd, rows, *, received_utc: int,
                           source: int = schema.SRC_REPORT) -> list[dict]:
    """A terminal's own record (no meter column: 3106 终端停/上电, 3100 终端初始化, 3104 状态量变位,
    3105 电能表时钟超差 ...) → batches of events columns (closed events, then open ones) of
    schema.TERMINAL_EVENTS codes, one row per record row,
    meter_id -1 (it names no meter), its start (201E0200) and end (20200200) when the record has them
    (else the receive time, open), and ``detail`` = the terminal, the record OAD and the row's cells —
    for the quarantine (storage.wal ``reason=schema.TERMINAL_EVENT``).  A record without rows gives one
    row, so that it is kept too."""
    code = TERMINAL_EVENT_OF_OI.get(record_oad >> 16, 100)
    cols = _columns(rcsd)
    where = {o: (i, j) for i, j, o in cols}
    starts, ends, details = [], [], []
    for row in (rows or (None,)):
        t0 = t1 = None
        if row is not None:
            for oad, out in ((OAD_EVENT_START, "s"), (OAD_EVENT_END, "e")):
                if oad in where:
                    d = _cell(row, *where[oad])
                    t = epoch_of(d.value) if d is not None and d.tag in (_DATE_TIME_S, _DATE_TIME) else None
                    t0, t1 = (t, t1) if out == "s" else (t0, t)
            cells = " ".join(f"{o:08X}={_render(_cell(row, i, j))}" for i, j, o in cols)
        else:
            cells = "(no rows)"
        starts.append(int(received_utc) if t0 is None else t0)
        ends.append(t1 if t1 is None or t1 >= starts[-1] else None)
        details.append(f"terminal {address} {record_oad:08X} {cells}"[:1000])
    out = []
    for closed in (True, False):             # as event_rows_to_batch: open events lack the end_utc column
        sel = [k for k, e in enumerate(ends) if (e is not None) == closed]
        if not sel:
            continue
        n = len(sel)
        cols = {"meter_id": np.full(n, -1, np.int64), "event": np.full(n, code, np.int16),
                "start_utc": np.asarray([starts[k] for k in sel], np.int64), "source": np.full(n, source, np.uint8),
                "received_utc": np.full(n, int(received_utc), np.int64),
                "detail": np.asarray([details[k] for k in sel], object)}
        if closed:
            cols["end_utc"] = np.asarray([ends[k] for k in sel], np.int64)
        out.append(cols)
    return out
OAD_EVENT_START = 0x201E0200     # 事件发生时间
OAD_EVENT_END = 0x20200200       # 事件结束时间


def event_rows_to_batch(record_oad: int, rcsd, rows, meter_of_tsa, *, meter_id: int | None = None,
                        source: int = schema.SRC_REPORT, received_utc: int | None = None) -> list[dict] | None:
    """An event record (OI 3xxx of schema.EVENTS: 掉电, 开表盖...) → batches of events columns (closed
    events, then open ones), or None when the record is not an event gridhead stores.  Meter: the
    202A0200 column, else ``meter_id``; rows with no meter or no start time are skipped."""
    code = EVENT_OF_OI.get(record_oad >> 16)
    if code is None:
        return None
    meter_of = _lookup(meter_of_tsa)
    cols = _columns(rcsd)
    where = {o: (i, j) for i, j, o in cols}
    meters, starts, ends = [], [], []
    for row in rows:
        m = meter_id
        if P.OAD_TARGET_TSA in where:
            d = _cell(row, *where[P.OAD_TARGET_TSA])
            m = meter_of(bytes(d.value)) if d is not None and d.tag == _TSA else None
        d = _cell(row, *where[OAD_EVENT_START]) if OAD_EVENT_START in where else None
        start = epoch_of(d.value) if d is not None and d.tag in (_DATE_TIME_S, _DATE_TIME) else None
        if m is None or start is None:
            continue
        d = _cell(row, *where[OAD_EVENT_END]) if OAD_EVENT_END in where else None
        end = epoch_of(d.value) if d is not None and d.tag in (_DATE_TIME_S, _DATE_TIME) else None
        meters.append(m)
        starts.append(start)
        ends.append(end)
    # the events table's end_utc is null while an event is open; numpy has no null, so open and
    # closed events go in separate batches (the open one without the end_utc column)
    out = []
    for closed in (True, False):
        sel = [k for k, e in enumerate(ends) if (e is not None) == closed]
        if not sel:
            continue
        n = len(sel)
        cols = {"meter_id": np.asarray([meters[k] for k in sel], np.int64), "event": np.full(n, code, np.int16),
                "start_utc": np.asarray([starts[k] for k in sel], np.int64), "source": np.full(n, source, np.uint8)}
        if closed:
            cols["end_utc"] = np.asarray([ends[k] for k in sel], np.int64)
        if received_utc is not None:
            cols["received_utc"] = np.full(n, int(received_utc), np.int64)
        out.append(cols)
    return out

"""Collection tasks (数据采集管理): what to read when, the scheduler, back-fill (补采) and success rate.

A :class:`Task` is what the utility's function list calls a collection task: name, type, data items,
period, start/end, priority and number of back-fill retries (补采次数).  Built-in defaults
(:data:`DEFAULT_TASKS`) can be overridden or extended by a TOML file (:func:`load_tasks`)::

    [[task]]
    name = "daily-frozen"          # a default of that name is replaced, a new name is added
    type = "daily"                 # daily | monthly | curve | events
    method = "records"             # records: the concentrator's task records (profile (a)),
                                   # proxy: one PROXY request per meter (profile (b), (c) for 645 meters)
    items = ["00100200", "00200200", "00300200", "00400200"]
    period = "1d"                  # 1d | 1mo | 15min | 60min
    offset = "5min"                # run that long after the freeze
    start = 2026-06-01             # first day collected (optional; default: the first day asked for)
    end = 2026-12-31               # last day (optional)
    priority = 1                   # lower runs first when several are due
    backfill_retries = 3           # 补采次数: re-requests per missing meter-day
    backfill_delay_s = 60          # first back-fill delay; doubles per retry, with seeded jitter
    timeout_s = 10

How a daily collection runs (:meth:`Collector.collect_day`, profile (a) by default): one GET-Record of
``60120300`` per online terminal, through the head-end's throttled ``request``; the rows are decoded by
``headend.records`` and written through the durable ingest (acknowledged = fsynced); the day's run is
then recorded in the collection state (storage.collection).  Offline terminals and rows the terminal
has no data for are gaps.

Back-fill (:meth:`Collector.backfill`): the gaps are read from the lake (expected meter-days from the
archive minus the stored daily readings, after the ingest is flushed into the lake) and re-requested per
meter — ``PROXY-Request-GetRecord`` of ``50040200`` for a 698 meter, ``PROXY-Request-TransCommand``
carrying DL/T 645 reads of 上 n 次日冻结 for a 645 meter, one per item of the task (:func:`items_645`:
forward, reverse, combined reactive 1 and 2 — every register the task requires, as the first pass
brings them) — each meter-day at most ``backfill_retries``
times, attempt k after ``backfill_delay_s × 2^k × (1 + jitter)`` (jitter from the seed, the meter and
the day, so a fleet's retries spread out and a run is reproducible).  Readings obtained this way carry
``schema.Q_BACKFILLED``.  Attempts are logged in the collection state, so the bound holds across a
restart; what is still missing after the last retry stays a gap (and shows in the success rate).
A meter-day counts as collected only when every register the task requires (:func:`required_registers`)
that the meter keeps is stored — a meter-day with its forward energy but without the reactive energy
its meter delivers on other days is a gap, re-read whole.

Scheduling (:meth:`Collector.run`, :func:`due_at`): every enabled task is due at its time — the daily
freeze of D at D 00:00 + offset; the monthly settlement reading (月冻结, 结算日 the 1st) on the 1st at
00:00 + offset; load curves (15 / 60 min) and event reads as a daily batch of day D's intervals / events,
at D+1 00:00 + offset.  A 698 meter's curve is one PROXY GetRecord of ``50020200`` over [D, D+1) stepping
the period (:func:`curve_record`), its events one of each event object (``30110200`` 掉电...) over
事件发生时间 in [D, D+1) (:func:`event_record`) into the events table; a 645 meter's settlement
reading is 上 n 结算日 ``0001FF0n`` (and the other blocks of its objects, ``0002FF0n``... ``0101FF0n``)
through TransCommand on its port (:func:`reads_645`);
its curves and events are not in the profile.  Back-fill and the success rate count daily meter-days
monthly settlement readings (every meter installed at the settlement day's 00:00, the lake's
``monthly`` kind) and 698 meters' whole load curves (every interval end of the day in the ``interval``
kind; a meter-day short of one is re-read whole).  Events have no expected count, so an event gap is a
meter-day whose event read failed (no answer, terminal offline): the first pass records those as attempts
and :meth:`Collector.backfill_events` re-reads them the same way.
Links (one reading algorithm, :meth:`Collector._read_meter`, whatever carries the requests): the
collector reads meters through a *link* that only carries a meter's requests — a :class:`TerminalLink`
(the meters behind a terminal session, TCP / dial-out / MQTT alike: a 645 read inside PROXY-Request-
TransCommand, a 698 record read as PROXY-Request-GetRecord, through ``he.request``) or a :class:`BusLink`
(the meters of a ``headend.transport.MeterBus``, an RS-485 port of the head-end host, ``[[serial]]``: the
645 ``ReadRequest`` and the 698 ``GET-Request-Record`` themselves on the bus, one meter at a time).  The
same requests of the same task and day, the same answers-to-batch, the same outcome codes; the first pass
(:meth:`Collector.collect_day`), back-fill, re-read and the scheduler take every link.  A bus's runs and
attempts are recorded under ``<task>@<device>`` (its meters need not be the archive's expected meters:
its gaps are its meter-days without a whole stored reading); a bus's load curves are read by the first
pass only (no back-fill), and the concentrator's task records (``method = "records"``) are a terminal's:
a bus reads its meters one by one whatever the method.

Restart: :meth:`Collector.run_days` collects every day of a task's window that has no recorded run and
back-fills the rest — nothing is kept in memory that the lake and the state table do not also say.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import hashlib
import logging
import pathlib
import time
import tomllib

import numpy as np

from gridhead.protocols.dlt645 import ReadRequest, ReadResponse, decode_frames
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698.axdr import (COMDCB, MS, RSD, TI, Data, DateTimeS, Selector1, Selector2, SelectorRange)
from gridhead.protocols.errors import GridheadError, ProtocolError, TransportError
from gridhead.storage import collection
from gridhead.storage import lake, schema

from . import profile as P
from . import records
from .log import event
from .transport import MeterBus

log = logging.getLogger("gridhead.collect")

TYPES = ("daily", "monthly", "curve", "events")
METHODS = ("records", "proxy")
_PERIODS = {"1d": 86400, "1mo": 0, "15min": 900, "60min": 3600}
_KIND = {"daily": schema.DAILY, "monthly": schema.MONTHLY, "curve": schema.INTERVAL, "events": None}
_RECORD_OAD = {"daily": P.OAD_DAY_FREEZE, "monthly": P.OAD_MONTH_FREEZE, "curve": P.OAD_MINUTE_FREEZE}
_DEFAULT_ITEMS = {"daily": P.ENERGY_OADS, "monthly": P.ENERGY_OADS + (P.OAD_FWD_MAX_DEMAND,),
                  "curve": (P.OAD_FWD_ACTIVE, P.OAD_ACTIVE_POWER), "events": (0x30110200,)}
# RS-485 port 1 as 645 meters expect it: 2400 bit/s (enum 3), even parity, 8 data bits, 1 stop, no flow
COMDCB_645 = COMDCB(3, 2, 8, 1, 0)
EVENT_RCSD = (records.OAD_EVENT_START, records.OAD_EVENT_END)
# the kinds whose gaps storage.collection finds (a reading per meter and collection day) and back-fill closes
BACKFILL_KINDS = (schema.DAILY, schema.MONTHLY, schema.INTERVAL)
# of those, the kinds a meter bus's back-fill closes (storage.collection.stored tells a whole reading of
# them; a bus meter's load curve is read by the first pass only)
BUS_BACKFILL_KINDS = (schema.DAILY, schema.MONTHLY)


class TaskError(GridheadError):
    """A task definition that cannot be used (bad TOML, unknown type...): one line, exit code 2."""

    exit_code = 2


@dataclasses.dataclass(frozen=True)
class Task:
    """A collection task (采集任务)."""

    name: str
    type: str = "daily"
    method: str = "records"
    items: tuple = P.ENERGY_OADS
    period_s: int = 86400            # 0 = monthly (the 1st, 00:00)
    offset_s: int = 300
    start: _dt.date | None = None
    end: _dt.date | None = None
    priority: int = 1
    backfill_retries: int = 3
    backfill_delay_s: float = 60.0
    timeout_s: float = 10.0
    enabled: bool = True

    @property
    def kind(self) -> str | None:
        return _KIND[self.type]

    def rcsd(self) -> tuple:
        """The columns a meter's record is read with: freeze time, then the task's items."""
        return (P.OAD_FREEZE_TIME,) + tuple(self.items)

    def days(self, first: _dt.date, last: _dt.date) -> list[_dt.date]:
        """The collection days of [first, last] inside the task's window (the 1st of months if monthly)."""
        lo = max(first, self.start) if self.start else first
        hi = min(last, self.end) if self.end else last
        out = [lo + _dt.timedelta(days=i) for i in range((hi - lo).days + 1)]
        return [d for d in out if d.day == 1] if self.period_s == 0 else out


DEFAULT_TASKS = (
    Task("daily-frozen", "daily", "records", P.ENERGY_OADS, 86400, 300, priority=1),
    Task("monthly-settlement", "monthly", "proxy", _DEFAULT_ITEMS["monthly"], 0, 600, priority=2),
    Task("load-curve-15min", "curve", "proxy", _DEFAULT_ITEMS["curve"], 900, 120, priority=3, enabled=False),
    Task("events", "events", "proxy", _DEFAULT_ITEMS["events"], 86400, 300, priority=4, enabled=False),
)


def _duration(v, where: str) -> int:
    if isinstance(v, (int, float)):
        return int(v)
    s = str(v).strip()
    if s in _PERIODS:
        return _PERIODS[s]
    for unit, mult in (("min", 60), ("h", 3600), ("d", 86400), ("s", 1)):
        if s.endswith(unit) and s[:-len(unit)].isdigit():
            return int(s[:-len(unit)]) * mult
    raise TaskError(f"{where}: {v!r} is not a duration (e.g. 1d, 1mo, 15min, 300s)")


def _date(v, where: str) -> _dt.date | None:
    if v is None or isinstance(v, _dt.date) and not isinstance(v, _dt.datetime):
        return v
    try:
        return _dt.date.fromisoformat(str(v)[:10])
    except ValueError:
        raise TaskError(f"{where}: {v!r} is not a date (YYYY-MM-DD)") from None


def task_from_dict(d: dict, where: str = "task", base: Task | None = None) -> Task:
    """A Task from a TOML table (unknown keys and bad values raise :class:`TaskError` naming them)."""
    fields = {f.name for f in dataclasses.fields(Task)}
    alias = {"period": "period_s", "offset": "offset_s"}
    kw = dataclasses.asdict(base) if base else {}
    if "name" not in d and base is None:
        raise TaskError(f"{where}: a task needs a name")
    for k, v in d.items():
        key = alias.get(k, k)
        if key not in fields:
            raise TaskError(f"{where}: unknown key {k!r} (keys: {', '.join(sorted(fields - set(alias.values()) | set(alias)))})")
        kw[key] = v
    w = f"{where} {kw['name']!r}"
    kw.setdefault("type", "daily")
    if kw["type"] not in TYPES:
        raise TaskError(f"{w}: type {kw['type']!r} is not one of {', '.join(TYPES)}")
    if kw.get("method", "records") not in METHODS:
        raise TaskError(f"{w}: method {kw['method']!r} is not one of {', '.join(METHODS)}")
    if "items" in d:
        try:
            kw["items"] = tuple(A.parse_oad(o) if isinstance(o, str) else int(o) for o in d["items"])
        except (ProtocolError, TypeError, ValueError) as exc:
            raise TaskError(f"{w}: items: {exc}") from None
    elif base is None:
        kw["items"] = _DEFAULT_ITEMS[kw["type"]]
    for k in ("period_s", "offset_s"):
        if k in kw:
            kw[k] = _duration(kw[k], f"{w}: {k[:-2]}")
    for k in ("start", "end"):
        kw[k] = _date(kw.get(k), f"{w}: {k}")
    for k in ("priority", "backfill_retries"):
        if k in kw and (not isinstance(kw[k], int) or kw[k] < 0):
            raise TaskError(f"{w}: {k} must be an integer >= 0")
    for k in ("backfill_delay_s", "timeout_s"):
        if k in kw and (not isinstance(kw[k], (int, float)) or kw[k] < 0):
            raise TaskError(f"{w}: {k} must be a number >= 0")
    return Task(**kw)


def load_tasks(path: str | pathlib.Path | None = None, defaults=DEFAULT_TASKS) -> list[Task]:
    """The default tasks, with a TOML file's ``[[task]]`` entries replacing (by name) or added; by priority."""
    tasks = {t.name: t for t in defaults}
    if path is not None:
        p = pathlib.Path(path)
        try:
            doc = tomllib.loads(p.read_text())
        except OSError as exc:
            raise TaskError(f"{p}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise TaskError(f"{p}: {exc}") from None
        for n, d in enumerate(doc.get("task", []), 1):
            if not isinstance(d, dict):
                raise TaskError(f"{p}: [[task]] {n} is not a table")
            base = tasks.get(d.get("name"))
            t = task_from_dict(d, f"{p}: [[task]] {n}", base)
            tasks[t.name] = t
    return sorted(tasks.values(), key=lambda t: (t.priority, t.name))


# --- the scheduler inside `gridhead serve` ([collect] table) --------------------------------------------
COMPACT_RUN = "lake-compact"          # the collection state's name for the nightly compaction's runs


@dataclasses.dataclass(frozen=True)
class Schedule:
    """``gridhead serve``'s ``[collect]`` table: the collection scheduler (:meth:`Collector.run`) and the
    nightly lake compaction, in the head-end process::

        [collect]
        enabled = true            # the table's presence (or `serve --collect`) turns the scheduler on
        tasks = "tasks.toml"      # [[task]] tables over the built-in tasks (relative to this file)
        first_day = 2026-06-01    # catch up from this day (default: the day the head-end starts)
        seed = 0                  # back-off jitter
        wait_online = "60s"       # the first pass waits this long at most for every terminal to log in
        compact = true            # compact day D's partitions (readings of every kind, events) ...
        compact_offset = "4h"     # ... at D+1 00:00 + this (after the day's collection and back-fill),
        compact_days = 7          # ... and again those of the 6 days before (late back-fill, late reports)

    Compaction merges a partition's files into one and writes its pivot (storage.lake.compact), taking
    the lake's lock per partition, so the ingest keeps publishing; a partition already one file with its
    pivot costs a directory listing.  Each night's compaction is recorded in the collection state (task
    ``lake-compact``, the date of D) and not repeated.  Of a sharded head-end only shard 0 compacts (the
    lake is shared)."""

    enabled: bool = True
    tasks: str | None = None
    first_day: _dt.date | None = None
    seed: int = 0
    wait_online: str | int = "60s"
    compact: bool = True
    compact_offset: str | int = "4h"
    compact_days: int = 7

    @classmethod
    def from_dict(cls, raw: dict, where: str = "[collect]", base_dir: pathlib.Path | None = None) -> "Schedule":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - fields)
        if unknown:
            raise TaskError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
        kw = dict(raw)
        for k in ("enabled", "compact"):
            if k in kw and not isinstance(kw[k], bool):
                raise TaskError(f"{where}: {k} = {kw[k]!r} is not true or false")
        if "seed" in kw and (not isinstance(kw["seed"], int) or isinstance(kw["seed"], bool)):
            raise TaskError(f"{where}: seed = {kw['seed']!r} is not an integer")
        if "compact_days" in kw and (not isinstance(kw["compact_days"], int) or isinstance(kw["compact_days"], bool)
                                     or kw["compact_days"] < 1):
            raise TaskError(f"{where}: compact_days = {kw['compact_days']!r} is not an integer >= 1")
        if "tasks" in kw:
            if not isinstance(kw["tasks"], str):
                raise TaskError(f"{where}: tasks = {kw['tasks']!r} is not a file name")
            t = pathlib.Path(kw["tasks"])
            kw["tasks"] = str(t if t.is_absolute() or base_dir is None else base_dir / t)
        kw["first_day"] = _date(kw.get("first_day"), f"{where}: first_day")
        for k in ("compact_offset", "wait_online"):
            _duration(kw.get(k, getattr(cls, k)), f"{where}: {k}")
        if kw.get("tasks") is not None:            # read now: a bad file fails before the head-end listens
            try:
                load_tasks(kw["tasks"])
            except TaskError as exc:
                raise TaskError(f"{where}: tasks: {exc}") from None
        return cls(**kw)

    @property
    def compact_offset_s(self) -> int:
        return _duration(self.compact_offset, "[collect]: compact_offset")

    @property
    def wait_online_s(self) -> int:
        return _duration(self.wait_online, "[collect]: wait_online")

    def load_tasks(self) -> list[Task]:
        return load_tasks(self.tasks)


# --- requests (the profile's four ways, headend/profile.py) ----------------------------------------------
def _dts(day: _dt.date, hour: int = 0, minute: int = 0) -> DateTimeS:
    return DateTimeS(day.year, day.month, day.day, hour, minute, 0)


def records_request(day: _dt.date) -> A.GetRequestRecord:
    """(a) the concentrator's task records of ``day``: GET-Record 60120300, RSD 7 [D, D+1) step 1 day, all meters."""
    nxt = day + _dt.timedelta(days=1)
    rsd = RSD(7, SelectorRange(_dts(day), _dts(nxt), TI(3, 1), MS(1, None)))
    return A.get_record(P.OAD_TASK_RECORDS, rsd, P.DAILY_RCSD)


def freeze_record(task: Task, day: _dt.date) -> A.GetRecord:
    """One 698 meter's freeze of ``day`` (日冻结 50040200, 月冻结 50060200 of a monthly task): RSD 1 on
    20210200 = ``day`` 00:00, the task's columns (:meth:`Task.rcsd`) — what every link sends the meter."""
    sel = Selector1(P.OAD_FREEZE_TIME, Data(28, _dts(day)))
    return A.GetRecord(_RECORD_OAD[task.type], RSD(1, sel), task.rcsd())


def curve_record(task: Task, day: _dt.date) -> A.GetRecord:
    """One 698 meter's load curve (分钟冻结 50020200) of ``day``: every interval end in [D 00:00, D+1 00:00),
    stepping the task's period (RSD 2 on 20210200, TI in minutes)."""
    nxt = day + _dt.timedelta(days=1)
    step = Data(84, TI(1, max(1, task.period_s // 60)))
    sel = Selector2(P.OAD_FREEZE_TIME, Data(28, _dts(day)), Data(28, _dts(nxt)), step)
    return A.GetRecord(P.OAD_MINUTE_FREEZE, RSD(2, sel), task.rcsd())


def event_record(oad: int, day: _dt.date) -> A.GetRecord:
    """One meter's event records (OI 3xxx attribute 2, e.g. 30110200 掉电) that began on ``day``: RSD 2
    on 201E0200 (事件发生时间) in [D 00:00, D+1 00:00), columns start and end time."""
    nxt = day + _dt.timedelta(days=1)
    sel = Selector2(records.OAD_EVENT_START, Data(28, _dts(day)), Data(28, _dts(nxt)), Data(84, TI(0, 0)))
    return A.GetRecord(oad, RSD(2, sel), EVENT_RCSD)


def proxy_645_read(comm_address: str, di: int, port: int = P.PORT_RS485_1, timeout_s: int = 5) -> A.ProxyTransCommandRequest:
    """(c) one DL/T 645 read of ``di`` forwarded by the concentrator: PROXY-Request-TransCommand on
    ``port`` (RS-485 1 by default, 2400 bit/s 8E1: :data:`COMDCB_645`)."""
    return A.ProxyTransCommandRequest(1, port, COMDCB_645, timeout_s, 100, ReadRequest(comm_address, di).to_bytes())


def months_back_645(day: _dt.date, today: _dt.date) -> int:
    """上 n 结算日 of the settlement day ``day`` seen on ``today``: 上1 is the most recent one (the 1st of
    this month, 00:00), so n = months from ``day`` to today's month + 1."""
    return (today.year - day.year) * 12 + today.month - day.month + 1


def items_645(task: "Task") -> tuple[int, ...]:
    """The DL/T 645 items (DI0 = 01) a 645 meter is read for to give ``task``'s objects: 上1次日冻结
    items of a daily task, 上1结算日 blocks of a monthly one (profile.DAILY_645 / MONTH_645); an object
    without a 645 twin is not read from a 645 meter."""
    table = P.MONTH_645 if task.type == "monthly" else P.DAILY_645
    return tuple(dict.fromkeys(table[o] for o in task.items if o in table))


def required_registers(task: "Task") -> tuple[int, ...]:
    """The lake registers a meter-day of ``task`` needs to count as collected (storage.collection): the
    total of each of its objects that both protocols carry (forward / reverse active, combined reactive
    1 / 2, a monthly task's maximum demand); a load curve's, its forward active energy."""
    if task.type == "curve":
        return (schema.REGISTER_CODES["ae_fwd"],)
    table = P.MONTH_645 if task.type == "monthly" else P.DAILY_645
    return tuple(dict.fromkeys(P.REGISTER_MAP[o][0] for o in task.items if o in table)) or \
        (schema.REGISTER_CODES["ae_fwd"],)


def days_back_645(day: _dt.date, today: _dt.date) -> int:
    """上 n 次日冻结 of ``day`` seen on ``today`` (profile (c)): 上1次 is the most recent freeze, today's
    00:00 once it happened, so n = (today − day) + 1."""
    return (today - day).days + 1


def port_of(port_oad) -> int:
    """The concentrator port of a meter from the archive's ``port_oad`` (e.g. ``"F2090201"``, the
    carrier / PLC port); RS-485 1 when the archive names none."""
    if port_oad is None or port_oad == "":
        return P.PORT_RS485_1
    try:
        return A.parse_oad(port_oad) if isinstance(port_oad, str) else int(port_oad)
    except (ProtocolError, ValueError) as exc:
        raise TaskError(f"archive port_oad {port_oad!r}: {exc}") from None


def reads_645(task: Task, day: _dt.date, today: _dt.date) -> tuple[int, ...] | None:
    """(c) the DL/T 645 reads (data identifiers, DI0 = n) of a 645 meter's ``day`` for ``task``, the same on
    every link: a daily task's 上 n 次日冻结 — the freeze time, then each of :func:`items_645` — with n =
    :func:`days_back_645`, at most the 62 freezes a meter keeps; a monthly task's 上 n 结算日 blocks with n =
    :func:`months_back_645`, at most 12.  None when the meter does not keep ``day`` (too old, or not yet),
    or for a task whose 645 records are not in the profile (load curves 06xxxxxx, events 03xxxxxx)."""
    if task.type == "daily":
        n, last, dis = days_back_645(day, today), P.MAX_DAYS_BACK_645, (P.DI645_DAILY_TIME, *items_645(task))
    elif task.type == "monthly":
        n, last, dis = months_back_645(day, today), 12, items_645(task)
    else:
        return None
    return tuple((di & ~0xFF) | n for di in dis) if 1 <= n <= last else None


# --- answers -> lake batches -------------------------------------------------------------------------------
def epoch_645(raw: int | None) -> int | None:
    """A 645 YYMMDDhhmm freeze time (raw BCD digits as an int) → epoch seconds; None if not a time."""
    if raw is None:
        return None
    s = f"{int(raw):010d}"
    try:
        return records.local_to_epoch(2000 + int(s[0:2]), int(s[2:4]), int(s[4:6]), int(s[6:8]), int(s[8:10]))
    except ValueError:
        return None


def _answer_645(rsp) -> tuple | None:
    """The values of a TransCommand's 645 read answer (raw ints), None if there is none."""
    if not isinstance(rsp, A.ProxyTransCommandResponse) or rsp.answer is None:
        return None
    try:
        msgs = decode_frames(bytes(rsp.answer))
    except ProtocolError:
        return None
    for m in msgs:
        if type(m).__name__ == "ReadResponse":
            return m.di, records.raw_values_645(m.values)
    return None


def answers_645_batch(meter_id: int, day: _dt.date, time_answer, value_answers, **kw) -> records.Batch:
    """A 645 meter's answers to the reads of 上 n 次日冻结 — the freeze time, then the items, each
    ``(di, raw values)`` or None — → a batch of the items the meter answered (missing if the freeze time
    is absent or not ``day`` 00:00: a meter that has no freeze of that day answers another one; or if it
    answered none of the items).  Whichever link carried the reads."""
    t = time_answer
    got = [a for a in value_answers if a is not None]
    ts = epoch_645(t[1][0]) if t and t[1] else None
    want = records.local_to_epoch(day.year, day.month, day.day)
    if not got or ts != want:
        return records.Batch(records.answers645_to_batch((), **kw).columns, ((meter_id, records.R_NO_DATA),), ())
    return records.answers645_to_batch([(meter_id, di, raws, ts) for di, raws in got], **kw)


def only_day(batch: records.Batch, day: _dt.date) -> records.Batch:
    """Keep the rows frozen at ``day`` 00:00 (a terminal may answer more than was asked)."""
    want = records.local_to_epoch(day.year, day.month, day.day)
    keep = batch.columns["ts_utc"] == want
    if keep.all():
        return batch
    return records.Batch({k: v[keep] for k, v in batch.columns.items()}, batch.missing,
                         tuple(sorted(set(batch.columns["meter_id"][keep].tolist()))))


# --- back-off ---------------------------------------------------------------------------------------------
def backoff_s(task: Task, attempt: int, meter_id: int, day: _dt.date, seed: int) -> float:
    """Delay before back-fill attempt ``attempt`` (0-based) of a meter-day: base × 2^attempt × (1 + u),
    u in [0, 1) from a hash of (seed, task, meter, day, attempt) — reproducible, and spread over a fleet."""
    h = hashlib.blake2b(f"{seed}/{task.name}/{meter_id}/{day.isoformat()}/{attempt}".encode(), digest_size=8)
    u = int.from_bytes(h.digest(), "little") / 2 ** 64
    return task.backfill_delay_s * (2 ** attempt) * (1 + u)


# --- the collector -----------------------------------------------------------------------------------------
def due_at(task: Task, day: _dt.date) -> float:
    """When ``task``'s collection of ``day`` is due (epoch seconds): the daily freeze and the monthly
    settlement reading (月冻结, the 1st at 00:00) at that 00:00 + offset; a load curve and the events
    as a daily batch of the day's intervals / events, at the next 00:00 + offset, once the day is over."""
    whole_day = 86400 if task.type in ("curve", "events") else 0
    return records.local_to_epoch(day.year, day.month, day.day) + whole_day + task.offset_s


# --- links: how a request reaches meter M ----------------------------------------------------------------
class NoAnswer(Exception):
    """A link carried no answer to a request (the terminal offline or silent, a bus meter silent after
    its retries, the port closed): the read's outcome is ``storage.collection.NO_ANSWER``."""


class TerminalLink:
    """The meters the archive puts behind one terminal (a ``headend.terminal.Terminal`` session, whichever
    transport carries it: TCP, dial-out, MQTT).  A 645 read is forwarded by the concentrator in a
    PROXY-Request-TransCommand on the meter's archive port (profile (c), :func:`proxy_645_read`), a 698
    record read is a PROXY-Request-GetRecord (profile (b)); both go through the head-end's throttled
    ``request`` to the terminal, and a terminal's meters are read concurrently (the head-end bounds what is
    in flight per terminal).  Runs are recorded under the task's name (a shard's suffix added), attempts
    under the task's name."""

    concurrent = True

    def __init__(self, col: "Collector", address: str) -> None:
        self.col, self.name = col, address

    @property
    def meters(self) -> list[int]:
        return self.col.meters_of[self.name]

    def meter(self, m: int) -> tuple[str, str]:
        """(communication address, protocol "645" / "698") of meter ``m``."""
        _a, comm, proto, _port = self.col.route[m]
        return comm, proto

    def online(self) -> bool:
        return self.col._online(self.name)

    def run_name(self, task: "Task") -> str:
        return task.name + self.col.run_suffix

    def attempts_name(self, task: "Task") -> str:
        return task.name

    async def read645(self, m: int, di: int, timeout_s: float) -> tuple | None:
        """Meter ``m``'s answer to a 645 read of ``di``: (di, raw values), None if it gave none (silent
        behind the concentrator, an abnormal answer); :class:`NoAnswer` if the terminal did not answer."""
        _a, comm, _proto, port = self.col.route[m]
        rsp = await self.col._request(self.name, proxy_645_read(comm, di, port, max(1, int(timeout_s))), timeout_s)
        if rsp is None:
            raise NoAnswer(self.name)
        return _answer_645(rsp)

    async def get_record(self, m: int, rec: A.GetRecord, timeout_s: float) -> tuple | None:
        """Meter ``m``'s answer to the record read ``rec``: (ResultRecord, TSA), None if the answer is not
        a record; :class:`NoAnswer` if the terminal did not answer."""
        comm = self.col.route[m][1]
        req = A.ProxyGetRequestRecord(1, max(1, int(timeout_s)), A.tsa(comm), rec)
        rsp = await self.col._request(self.name, req, timeout_s)
        if rsp is None:
            raise NoAnswer(self.name)
        return (rsp.result, rsp.tsa) if isinstance(rsp, A.ProxyGetResponseRecord) else None


class BusLink:
    """The meters of one :class:`headend.transport.MeterBus` (an RS-485 port of the head-end host,
    ``[[serial]]``): no terminal in front, so a 645 read is the ``ReadRequest`` itself on the bus
    (``bus.request645``) and a 698 record read a ``GET-Request-Record`` (``bus.request698``), with the
    bus's own timeout and retries.  The meters are read ONE AT A TIME: the line is shared and has one
    talker.  Meter ids come from the archive (``bus.meter_id``); a meter the archive does not know is
    not read (``unknown``).  Runs and attempts are recorded under ``<task>@<device>``, per port."""

    concurrent = False

    def __init__(self, col: "Collector", bus: MeterBus) -> None:
        self.col, self.bus, self.name = col, bus, bus.name
        self.by_id: dict[int, tuple[str, str]] = {}
        self.unknown: list[str] = []
        self.address_of: dict[int, str] = {}
        for sm in bus.meters:
            mid = bus.meter_id(sm.address)
            if mid is None:
                self.unknown.append(sm.address)
            else:
                self.by_id[mid] = (sm.address, sm.protocol)

    @property
    def meters(self) -> list[int]:
        return list(self.by_id)

    def meter(self, m: int) -> tuple[str, str]:
        return self.by_id[m]

    def online(self) -> bool:
        return True                     # a closed port fails each request: NoAnswer

    def run_name(self, task: "Task") -> str:
        return f"{task.name}@{self.name}"

    attempts_name = run_name

    async def read645(self, m: int, di: int, timeout_s: float) -> tuple | None:
        self.col.counts["requests"] += 1
        try:
            msg = await self.bus.request645(ReadRequest(self.by_id[m][0], di))
        except TransportError as exc:
            self.col.counts["failed"] += 1
            raise NoAnswer(self.name) from exc
        return (msg.di, records.raw_values_645(msg.values)) if isinstance(msg, ReadResponse) else None

    async def get_record(self, m: int, rec: A.GetRecord, timeout_s: float) -> tuple | None:
        address = self.by_id[m][0]
        self.col.counts["requests"] += 1
        try:
            rsp = await self.bus.request698(address, A.GetRequestRecord(0, rec))
        except TransportError as exc:
            self.col.counts["failed"] += 1
            raise NoAnswer(self.name) from exc
        return (rsp.result, A.tsa(address)) if isinstance(rsp, A.GetResponseRecord) else None


def due_at_compaction(day: _dt.date, offset_s: int) -> float:
    """When ``day``'s partitions are compacted: the next 00:00 + ``offset_s`` (epoch seconds)."""
    return records.local_to_epoch(day.year, day.month, day.day) + 86400 + offset_s


def _collection_days(task: Task, days) -> list[_dt.date]:
    """``days`` sorted, without duplicates; of a monthly task only the settlement days (the 1st)."""
    return sorted({d for d in days if task.period_s != 0 or d.day == 1})


def refuse_days_not_begun(days, today: _dt.date | None = None) -> None:
    """One line (exit 2) if any of ``days`` is after ``today`` (default: the meters' date now): a day that
    has not begun has no freeze yet, and a run recorded for it would stand in for its real first pass when
    it comes."""
    today = today or _today_local(time.time())
    future = sorted(d for d in days if d > today)
    if future:
        more = f" (and {len(future) - 1} more)" if len(future) > 1 else ""
        raise TaskError(f"{future[0].isoformat()} has not begun{more}: today is {today.isoformat()} on the meters' "
                        f"clock (China Standard Time), and a day's readings exist from its 00:00 on")


def _today_local(now_s: float) -> _dt.date:
    return _dt.datetime.fromtimestamp(now_s, schema.LOCAL_TZ).date()


class Collector:
    """Collection tasks on a running :class:`headend.server.HeadEnd`.

    ``expected``: the archive's reachable meters (``storage.collection.expected_meters``); by default read
    from the head-end's archive.  ``seed``: the back-off jitter.  ``clock``: epoch seconds (tests).
    """

    def __init__(self, he, tasks=None, *, expected=None, seed: int = 0, clock=time.time) -> None:
        self.he = he
        self.tasks = list(tasks if tasks is not None else [t for t in DEFAULT_TASKS if t.enabled])
        self.seed = seed
        self.clock = clock
        from gridhead.storage import sql as _sql
        if expected is None:
            from gridhead.storage import archive as _archive
            with _archive.Archive(_sql.archive_path(he.config.data_dir), read_only=True) as a:
                expected = collection.expected_meters(a)
        # a head-end shard (headend.shard) collects its own terminals and records its runs under its name:
        # the lake and its state table are shared, the other shards' meters are not this one's gaps
        index, count = getattr(he.config, "shard_index", 0), getattr(he.config, "shard_count", 1)
        self.run_suffix = ""
        if count > 1:
            from .shard import shard_of
            expected = collection.of_terminals(expected, lambda a: shard_of(a, count) == index)
            self.run_suffix = f"@shard-{index:02d}-of-{count:02d}"
        self.state = collection.CollectionState(_sql.lake_root(he.config.data_dir), expected)
        cols = expected.to_pydict()
        self.meters_of: dict[str, list[int]] = {}
        self.route: dict[int, tuple] = {}
        self.period: dict[int, tuple] = {}          # meter -> (installed, removed) dates (None: open)
        for i, m in enumerate(cols["meter_id"]):
            self.meters_of.setdefault(cols["terminal_address"][i], []).append(m)
            self.period[m] = (cols["installed"][i], cols["removed"][i])
            self.route[m] = (cols["terminal_address"][i], cols["comm_address"][i], cols["meter_protocol"][i],
                             port_of(cols["port_oad"][i]))
        self.compact_offset_s: int | None = None   # nightly compaction at D+1 00:00 + this (run(); None: off)
        self.compact_days = 7                       # ... of D and the days before it
        self.compact_lake = index == 0              # of several shards, one compacts the shared lake
        self.counts = {"requests": 0, "failed": 0, "stored": 0, "backfilled": 0}
        self.on_stored = None           # fn(kind, columns) after a batch is durable (logs, tests)

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise TaskError(f"no collection task {name!r} (tasks: {', '.join(t.name for t in self.tasks)})")

    # -- plumbing ----------------------------------------------------------------------------------------
    def _online(self, address: str) -> bool:
        return self.he.sessions.get(address) is not None

    async def _request(self, address: str, req, timeout_s: float, retries: int = 0, columnar: bool = False):
        self.counts["requests"] += 1
        try:
            return await self.he.request(address, req, timeout_s=timeout_s, retries=retries, columnar=columnar)
        except (TransportError, ProtocolError) as exc:
            self.counts["failed"] += 1
            log.debug("collect: %s: %s", address, exc)
            return None

    async def _store(self, batch: records.Batch, kind: str) -> int:
        if not len(batch):
            return 0
        await self.he.ingest.readings(batch.columns, kind)
        self.counts["stored"] += len(batch)
        if self.on_stored is not None:
            self.on_stored(kind, batch.columns)
        return len(batch)

    async def publish(self) -> None:
        """Flush the ingest into the lake, so that gaps are computed over every acknowledged reading."""
        # IngestWriter.flush blocks until the log is published: off the event loop, so sessions live on
        await asyncio.to_thread(self.he.ingest.flush)

    def _gauge(self, name: str, task: Task, value: float) -> None:
        g = getattr(getattr(self.he, "metrics", None), name, None)
        if g is not None:
            g.labels(task=task.name).set(value)

    # -- links -------------------------------------------------------------------------------------------
    def meter_buses(self) -> list[MeterBus]:
        """The head-end's transports whose meters the head-end reads itself (RS-485 buses:
        headend.transport.MeterBus) — every other transport brings terminal sessions."""
        return [t for t in self.he.transports if isinstance(t, MeterBus)]

    def bus_links(self) -> list[BusLink]:
        """One :class:`BusLink` per meter bus of the head-end (its meter ids from the archive as it is now)."""
        return [BusLink(self, b) for b in self.meter_buses()]

    def links(self) -> list:
        """Every link the collector reads meters through: each terminal of the archive (its meters behind
        it), then each meter bus."""
        return [TerminalLink(self, a) for a in sorted(self.meters_of)] + self.bus_links()

    # -- first pass --------------------------------------------------------------------------------------
    async def collect_day(self, task: Task | str, day: _dt.date, *, runs=None) -> dict:
        """Collect ``day`` through every link — each terminal of the archive (offline ones are gaps) and
        each meter bus — and record the runs: the terminals' under the task's name, a bus's under
        ``<task>@<device>`` (:meth:`BusLink.run_name`).  ``runs``: only the links whose run name is in it
        (:meth:`run_days` passes those without a recorded run of ``day``).  With buses the result has
        ``buses``: per bus its meters, readings stored and the outcome of each meter by address."""
        task = self.task(task) if isinstance(task, str) else task
        t0 = self.clock()
        with_terminals = runs is None or task.name + self.run_suffix in runs
        buses = [b for b in self.bus_links() if runs is None or b.run_name(task) in runs]
        terminals = sorted(self.meters_of) if with_terminals else []
        online = [a for a in terminals if self._online(a)]
        done = [0]

        missed: dict[int, int] = {}                  # events: meter -> outcome of a read that failed

        async def one(address: str) -> int:
            link = TerminalLink(self, address)
            try:
                if task.type == "events":
                    return await self._collect_events(link, task, day, link.meters, missed)
                if task.method == "records" and task.type == "daily":
                    return await self._collect_records(address, task, day)
                return await self._collect_link(link, task, day, link.meters, backfill=False)
            finally:
                done[0] += 1
                self._gauge("collection_progress", task, done[0] / max(1, len(online)))

        async def through_terminals() -> int:
            if not with_terminals:
                return 0
            stored = sum(await asyncio.gather(*(one(a) for a in online)))
            if task.type == "events":
                # no count of events is expected, so a meter-day whose read failed is recorded as missed
                # (the first attempt of the event back-fill, backfill_events); an offline terminal's too
                for a in terminals:
                    if a not in online:
                        missed.update((m, collection.OFFLINE) for m in self._event_meters(TerminalLink(self, a), day))
                self._record_outcomes(task.name, day, missed)
            requested = sum(len(self.meters_of[a]) for a in terminals)
            self.state.record_run(task.name + self.run_suffix, day, "collect", t0, self.clock(), requested, stored)
            return stored

        # the terminals' sessions and each bus go side by side (a bus reads its own meters one at a time)
        stored, *per_bus = await asyncio.gather(through_terminals(), *(self._collect_bus(b, task, day) for b in buses))
        out = {"task": task.name, "date": day.isoformat(), "terminals": len(terminals), "online": len(online),
               "requested": sum(len(self.meters_of[a]) for a in terminals) + sum(b["meters"] for b in per_bus),
               "stored_readings": stored + sum(b["stored_readings"] for b in per_bus)}
        if buses:
            out["buses"] = per_bus
        return out

    async def _collect_bus(self, link: BusLink, task: Task, day: _dt.date) -> dict:
        """One bus's first pass of ``day`` (every meter of the port, one at a time); its run recorded."""
        t0 = self.clock()
        outcomes: dict[int, int] = {}
        if task.type == "events":
            stored = await self._collect_events(link, task, day, link.meters, outcomes, every_outcome=True)
            self._record_outcomes(link.attempts_name(task), day,
                                  {m: o for m, o in outcomes.items() if o != collection.OK})
        else:
            stored = await self._collect_link(link, task, day, link.meters, backfill=False, outcomes=outcomes)
        n = len(link.meters) + len(link.unknown)
        self.state.record_run(link.run_name(task), day, "collect", t0, self.clock(), n, stored)
        names = {link.meter(m)[0]: collection.OUTCOMES[o] for m, o in outcomes.items()}
        names.update((a, "unknown meter") for a in link.unknown)
        return {"device": link.name, "date": day.isoformat(), "meters": n, "stored_readings": stored,
                "outcomes": names}

    async def _collect_records(self, address: str, task: Task, day: _dt.date) -> int:
        # columnar: the concentrator's rows are decoded straight into lake columns (headend._records698)
        rsp = await self._request(address, records_request(day), task.timeout_s, retries=1, columnar=True)
        if isinstance(rsp, records.RecordAnswer):
            batch = rsp.results[0][3]
        elif isinstance(rsp, A.GetResponseRecord):
            batch = records.result_to_batch(rsp.result, self.he.meter_of_tsa, source=schema.SRC_TASK,
                                            received_utc=int(self.clock()))
        else:
            return 0
        return await self._store(only_day(batch, day), schema.DAILY)

    async def _collect_link(self, link, task: Task, day: _dt.date, meters, *, backfill: bool,
                            outcomes: dict | None = None) -> int:
        """Read ``meters`` of one link (profile (b), (c); :meth:`_read_meter`) — a terminal's concurrently
        (the head-end bounds what is in flight per terminal), a bus's one at a time — and store their
        readings as one batch (durable before it is counted); ``outcomes[meter]`` is filled in."""
        kw = {"source": schema.SRC_TASK, "quality": schema.Q_BACKFILLED if backfill else schema.Q_ACTUAL}
        today = _today_local(self.clock())
        if link.concurrent:
            results = await asyncio.gather(*(self._read_meter(link, task, day, m, today, kw) for m in meters))
        else:
            results = [await self._read_meter(link, task, day, m, today, kw) for m in meters]
        got = [b for _m, _o, b in results if b is not None and len(b)]
        if outcomes is not None:
            outcomes.update({m: o for m, o, _b in results})
        return await self._store(records.concat(got), task.kind) if got else 0

    async def _read_meter(self, link, task: Task, day: _dt.date, m: int, today: _dt.date, kw: dict):
        """(meter, outcome, batch or None) of one meter's reading of ``day`` through ``link`` — the one
        reading algorithm of every link (the link only carries the requests)."""
        _comm, proto = link.meter(m)
        kw = dict(kw, received_utc=int(self.clock()))
        if not link.online():
            return m, collection.OFFLINE, None
        batch = None
        if proto == "645":
            # profile (c): every item the task requires, one read each (a first pass and a back-fill
            # alike): a meter silent to the first read is not asked the rest; one that answered it is, and
            # what it answers is kept (an item still missing leaves the meter-day a gap, re-read whole)
            dis = reads_645(task, day, today)
            if dis is None:
                return m, collection.NO_DATA, None
            answers, unanswered = [], False
            for di in dis:
                try:
                    answers.append(await link.read645(m, di, task.timeout_s))
                except NoAnswer:
                    if not answers:
                        return m, collection.NO_ANSWER, None
                    answers.append(None)
                    unanswered = True
            if task.type == "daily":
                batch = answers_645_batch(m, day, answers[0], answers[1:], **kw)
            else:
                got = [a for a in answers if a is not None]
                ts = records.local_to_epoch(day.year, day.month, day.day)
                batch = records.answers645_to_batch([(m, di, raws, ts) for di, raws in got], **kw) if got else None
            if unanswered:
                return m, collection.NO_ANSWER, batch
        else:
            rec = curve_record(task, day) if task.type == "curve" else freeze_record(task, day)
            try:
                got = await link.get_record(m, rec, task.timeout_s)
            except NoAnswer:
                return m, collection.NO_ANSWER, None
            if got is not None:
                batch = records.result_to_batch(got[0], self.he.meter_of_tsa, tsa=got[1], **kw)
                if task.type in ("daily", "monthly"):
                    batch = only_day(batch, day)
        return m, (collection.OK if batch is not None and len(batch) else collection.NO_DATA), batch

    def _event_meters(self, link, day: _dt.date, meters=None) -> list[int]:
        """The meters of ``link`` whose events are read for ``day``: 698 meters installed at its start."""
        out = []
        for m in link.meters if meters is None else meters:
            installed, removed = self.period.get(m, (None, None))
            if link.meter(m)[1] != "645" and (installed is None or installed < day) and (removed is None or day <= removed):
                out.append(m)
        return out

    def _record_outcomes(self, name: str, day: _dt.date, outcomes: dict) -> None:
        if outcomes:
            ms = np.fromiter(outcomes, np.int64, len(outcomes))
            self.state.record_attempts(name, day, ms, [outcomes[m] for m in ms.tolist()], self.clock())

    async def _collect_events(self, link, task: Task, day: _dt.date, meters, missed=None, *,
                              every_outcome: bool = False) -> int:
        """Event records (OI 3xxx of the task's items) that began on ``day``, of one link's 698 meters
        (:func:`event_record`), into the events table; the number of events stored.  A 645 meter's event
        records (03xxxxxx) are not in the profile.  ``missed`` (a dict) gets meter -> outcome for each meter
        one of whose reads was not answered with records (``storage.collection.NO_ANSWER``; ``OFFLINE`` for
        all when the terminal is offline), and with ``every_outcome`` the answered ones too (``OK``: the
        back-fill's attempts); with ``missed=None`` nothing is kept."""
        received = int(self.clock())
        meters = self._event_meters(link, day, meters)
        failed = set()

        async def one(m: int, oad: int):
            try:
                got = await link.get_record(m, event_record(oad, day), task.timeout_s)
            except NoAnswer:
                got = None
            r = got[0] if got is not None else None
            if r is None or r.rows is None:
                failed.add(m)
                return []
            return records.event_rows_to_batch(r.oad, r.rcsd, r.rows, self.he.meter_of_tsa, meter_id=m,
                                               source=schema.SRC_TASK, received_utc=received) or []

        if not link.online():
            if missed is not None:
                missed.update((m, collection.OFFLINE) for m in meters)
            return 0
        reads = [(m, oad) for m in meters for oad in task.items]
        if link.concurrent:
            got = await asyncio.gather(*(one(m, oad) for m, oad in reads))
        else:
            got = [await one(m, oad) for m, oad in reads]
        if missed is not None:
            missed.update((m, collection.NO_ANSWER) for m in failed)
            if every_outcome:
                missed.update((m, collection.OK) for m in meters if m not in failed)
        groups: dict[tuple, list] = {}
        for cols in (c for lst in got for c in lst):
            groups.setdefault(tuple(sorted(cols)), []).append(cols)
        n = 0
        for parts in groups.values():          # closed events, open ones (no end_utc): one batch each
            cols = {k: np.concatenate([c[k] for c in parts]) for k in parts[0]}
            await self.he.ingest.events(cols)
            n += len(cols["meter_id"])
        self.counts["stored"] += n
        return n

    # -- back-fill ---------------------------------------------------------------------------------------
    async def backfill(self, task: Task | str, days, *, max_wait_s: float | None = None) -> dict:
        """Re-request the gaps of ``days`` until none is left or every one has used its retries.

        Each round re-reads the gaps from the lake (after publishing the ingest) — the archive's meter-days
        per terminal, and per meter bus (:meth:`_bus_gaps`) — requests the meter-days whose back-off has
        elapsed, logs the attempts, and sleeps until the next one is due.  Returns counts (a bus's under
        ``buses``); ``max_wait_s`` bounds the whole back-fill (the rest stays for a later call).
        """
        task = self.task(task) if isinstance(task, str) else task
        if task.kind not in BACKFILL_KINDS:
            raise TaskError(f"task {task.name!r}: back-fill of {task.type} tasks is not supported "
                            f"(daily, monthly and curves are)")
        days = _collection_days(task, days)
        t_start = self.clock()
        rounds = requested = 0
        buses = self.bus_links() if task.kind in BUS_BACKFILL_KINDS else []
        per_bus = {b.name: {"device": b.name, "requested": 0, "outcomes": {}} for b in buses}
        while True:
            await self.publish()
            gaps = self.state.gaps(days, task.name, task.kind, task.period_s,
                                   registers=required_registers(task)).to_pydict()
            now = self.clock()
            due: dict[tuple, list] = {}
            next_at = None
            for i, m in enumerate(gaps["meter_id"]):
                n = gaps["attempts"][i]
                if n >= task.backfill_retries:
                    continue
                day = gaps["date"][i]
                last = gaps["last_attempt_utc"][i]
                at = (last.timestamp() if last is not None else t_start) + backoff_s(task, n, m, day, self.seed)
                if n == 0 and last is None:
                    at = t_start + backoff_s(task, 0, m, day, self.seed) - task.backfill_delay_s
                if at <= now:
                    due.setdefault((gaps["terminal_address"][i], day), []).append(m)
                else:
                    next_at = at if next_at is None else min(next_at, at)
            bus_due = []
            for b in buses:
                b_due, b_next = self._bus_gaps(task, b, days, now)
                if b_due:
                    bus_due.append((b, b_due))
                if b_next is not None:
                    next_at = b_next if next_at is None else min(next_at, b_next)
            if due or bus_due:
                rounds += 1
                requested += sum(len(v) for v in due.values())
                await asyncio.gather(*(self._backfill_link(task, TerminalLink(self, a), d, ms)
                                       for (a, d), ms in due.items()),
                                     *(self._backfill_bus(task, b, b_due, per_bus[b.name]) for b, b_due in bus_due))
                continue
            if next_at is None:
                break
            if max_wait_s is not None and next_at - t_start > max_wait_s:
                break
            await asyncio.sleep(max(0.0, next_at - self.clock()))
        for d in days:
            self.state.record_run(task.name + self.run_suffix, d, "backfill", t_start, self.clock(), requested, 0)
        rate = self.state.success(days, "day", task.kind, task.period_s, registers=required_registers(task)).to_pydict()
        if rate["expected"]:
            self._gauge("collection_success", task, float(sum(rate["collected"])) / max(1, sum(rate["expected"])))
        out = {"task": task.name, "rounds": rounds, "requested": requested,
               "open_gaps": self.state.gaps(days, task.name, task.kind, task.period_s,
                                            registers=required_registers(task)).num_rows}
        if buses:
            out["buses"] = list(per_bus.values())
        return out

    def _bus_gaps(self, task: Task, link: BusLink, days, now: float) -> tuple[dict, float | None]:
        """A bus's meter-days to back-fill now ({day: [meter]}) and when the next one is due (None: none
        left).  The bus's meters need not be the archive's expected meters, so its gaps are the meter-days
        of days whose collect run of ``<task>@<device>`` is recorded and that have no whole stored reading
        (storage.collection ``stored``); attempt k is due ``backoff_s`` after the previous one (the first
        after the collect run's end), at most ``task.backfill_retries`` of them (attempts recorded under
        the bus's run name: the bound holds across a restart)."""
        name = link.run_name(task)
        finished = self.state.finished(name, "collect")
        wanted = [d for d in days if d in finished]
        if not wanted or not link.meters:
            return {}, None
        have = self.state.stored(wanted, link.meters, task.kind, registers=required_registers(task))
        tried = self.state.history(link.attempts_name(task), wanted)
        due: dict[_dt.date, list] = {}
        next_at = None
        for d in wanted:
            for m in link.meters:
                key = (d, m)
                h = tried.get(key, ())
                if key in have or len(h) >= task.backfill_retries:
                    continue
                at = (h[-1][0] if h else finished[d]) + backoff_s(task, len(h), m, d, self.seed)
                if now >= at:
                    due.setdefault(d, []).append(m)
                else:
                    next_at = at if next_at is None else min(next_at, at)
        return due, next_at

    async def _backfill_bus(self, task: Task, link: BusLink, due: dict, report: dict) -> None:
        """A bus's back-fill round: its due meter-days, day by day (the bus reads one meter at a time)."""
        outcomes: dict[tuple, int] = {}
        for d in sorted(due):
            got = await self._backfill_link(task, link, d, due[d])
            outcomes.update(((d, m), o) for m, o in got.items())
        report["requested"] += len(outcomes)
        report["outcomes"].update((f"{d.isoformat()}/{m}", collection.OUTCOMES[o]) for (d, m), o in outcomes.items())
        event(log, "serial back-fill", device=link.name, meter_days=len(outcomes),
              ok=sum(o == collection.OK for o in outcomes.values()))

    async def _backfill_link(self, task: Task, link, day: _dt.date, meters) -> dict:
        """Read ``meters`` of one link for ``day`` again (readings with ``Q_BACKFILLED``) and record the
        attempts under the link's name; their outcomes."""
        outcomes: dict[int, int] = {}
        got = await self._collect_link(link, task, day, meters, backfill=True, outcomes=outcomes)
        self.counts["backfilled"] += got
        self._record_outcomes(link.attempts_name(task), day, outcomes)
        return outcomes

    async def backfill_events(self, task: Task | str, days) -> dict:
        """Back-fill (补采) of event reads, one round: a meter-day of ``days`` whose event read failed (no
        outcome recorded for ``task`` is ``OK``: the first pass records the failures, an offline terminal's
        meters included) is read again when its back-off has elapsed, at most
        ``task.backfill_retries`` times after the first pass — through its terminal, or its bus (the
        attempts under the bus's run name).  Events already stored are not stored twice (the ingest's
        key).  The scheduler calls it at every wake-up (through :meth:`run_days`)."""
        task = self.task(task) if isinstance(task, str) else task
        want = set(_collection_days(task, days))
        now = self.clock()
        due: dict[tuple, list] = {}
        links: dict[str, object] = {}
        for link, history in self._event_histories(task, want):
            for (d, m), h in history.items():
                retries = len(h) - 1                     # the first record is the first pass's miss
                if collection.OK not in (o for _at, o in h) and retries < task.backfill_retries and \
                        now >= h[-1][0] + backoff_s(task, retries, m, d, self.seed):
                    name = link.name if link is not None else self.route[m][0]
                    links.setdefault(name, link if link is not None else TerminalLink(self, name))
                    due.setdefault((name, d), []).append(m)
        stored = 0
        for (name, d), ms in sorted(due.items()):
            link = links[name]
            outcomes: dict[int, int] = {}
            stored += await self._collect_events(link, task, d, ms, outcomes, every_outcome=True)
            self._record_outcomes(link.attempts_name(task), d, outcomes)
        left = sum(collection.OK not in (o for _at, o in h)
                   for _link, history in self._event_histories(task, want) for h in history.values())
        return {"task": task.name, "requested": sum(len(v) for v in due.values()), "stored": stored,
                "open_gaps": left}

    def _event_histories(self, task: Task, days: set) -> list[tuple]:
        """(link, {(date, meter): recorded event-read outcomes [(at, outcome)] by time}) of ``days``: the
        terminals' meters (link None: each meter's terminal) and each bus's (records of one second in no
        particular order: a meter-day is done once any of them is ``OK``)."""
        out: list[tuple] = [(None, {k: h for k, h in self.state.history(task.name, days).items() if k[1] in self.route})]
        for b in self.bus_links():
            ids = set(b.meters)
            out.append((b, {k: h for k, h in self.state.history(b.attempts_name(task), days).items() if k[1] in ids}))
        return out

    # -- targeted re-read (gridhead collect run --meters FILE) ---------------------------------------------
    async def reread(self, task: Task | str, wanted: dict) -> dict:
        """Read again only the meter-days of ``wanted`` ({date: [meter_id]}, e.g. the meters that made an
        area-day 不可算: ``gridhead lineloss --reread-out``), one request per meter whether or not the day
        was collected before, recorded as back-fill attempts; the readings still missing afterwards.  A
        meter on one of the head-end's meter buses is read through the bus (as the command layer routes
        it), any other through its archive terminal."""
        task = self.task(task) if isinstance(task, str) else task
        refuse_days_not_begun(wanted, _today_local(self.clock()))
        on_bus = {m: b for b in self.bus_links() for m in b.meters}
        unknown = sorted({m for ms in wanted.values() for m in ms if m not in self.route and m not in on_bus})
        if unknown:
            raise TaskError(f"re-read: meter {unknown[0]} is not an expected meter of the archive"
                            f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}")
        requested = 0
        for day in sorted(wanted):
            by_link: dict[str, tuple] = {}
            for m in sorted(set(wanted[day])):
                link = on_bus.get(m) or TerminalLink(self, self.route[m][0])
                by_link.setdefault(link.name, (link, []))[1].append(m)
            requested += sum(len(ms) for _l, ms in by_link.values())
            await asyncio.gather(*(self._backfill_link(task, link, day, ms) for link, ms in by_link.values()))
        await self.publish()
        gaps = self.state.gaps(sorted(wanted), task.name, task.kind, task.period_s).to_pydict()
        left = sorted((d, m) for d, m in zip(gaps["date"], gaps["meter_id"]) if m in set(wanted.get(d, ())))
        return {"task": task.name, "requested": requested, "readings_reread": self.counts["backfilled"],
                "still_missing": len(left), "missing": [{"meter_id": m, "date": d.isoformat()} for d, m in left]}

    # -- whole runs --------------------------------------------------------------------------------------
    async def run_days(self, task: Task | str, days, *, backfill: bool = True,
                       max_wait_s: float | None = None) -> dict:
        """Collect ``days`` through the links that have no recorded collect run of the day (resuming after
        a restart: the terminals' run, each bus's run), then back-fill.  A day that has not begun is refused
        before anything is read (:func:`refuse_days_not_begun`)."""
        task = self.task(task) if isinstance(task, str) else task
        days = _collection_days(task, days)
        refuse_days_not_begun(days, _today_local(self.clock()))
        terminal_run = task.name + self.run_suffix
        names = [terminal_run] + [b.run_name(task) for b in self.bus_links()]
        done = {n: set(self.state.days(n, "collect")) for n in names}
        runs = []
        for d in days:
            pending = [n for n in names if d not in done[n]]
            if pending:
                runs.append(await self.collect_day(task, d, runs=pending))
        out = {"collected": runs}
        await self.publish()
        if task.kind not in BACKFILL_KINDS:
            # events have no expected count (a meter-day may have none): they report what they stored;
            # the meter-days whose read failed are re-requested (backfill_events)
            out["stored"] = sum(r["stored_readings"] for r in runs)
            if backfill and task.backfill_retries and days:
                out["backfill"] = await self.backfill_events(task, days)
                out["stored"] += out["backfill"]["stored"]
            return out
        if task.type != "daily":
            out["stored"] = sum(r["stored_readings"] for r in runs)
        regs = required_registers(task)
        out["before"] = self.summary(days, task.kind, task.period_s, regs)
        if backfill and task.backfill_retries and days:
            out["backfill"] = await self.backfill(task, days, max_wait_s=max_wait_s)
            out["after"] = self.summary(days, task.kind, task.period_s, regs)
        return out

    def summary(self, days, kind: str = schema.DAILY, step_s: int | None = None, registers=None) -> dict:
        """Totals of ``days`` of ``kind`` (daily meter-days, monthly settlement readings, or whole load
        curves of ``step_s``): expected, collected (every one of ``registers`` the meter keeps stored,
        storage.collection), first pass, back-filled, success percentages."""
        r = self.state.success(days, "day", kind, step_s, registers=registers).to_pydict()
        exp, col, first = sum(r["expected"]), sum(r["collected"]), sum(r["first_pass"])
        return {"expected": exp, "collected": col, "first_pass": first, "backfilled": sum(r["backfilled"]),
                "missing": exp - col, "success_first_pct": round(100 * first / exp, 2) if exp else None,
                "success_pct": round(100 * col / exp, 2) if exp else None}

    async def compact_days_of(self, nights) -> dict:
        """The nightly compaction for ``nights`` (days D that are over): the ingest flushed, then every
        partition of D and of the ``compact_days - 1`` days before it, of the readings (every kind) and the
        events, merged into one file with its pivot (storage.lake.compact, off the event loop); recorded in
        the collection state as a ``lake-compact`` run per night (requested: the partitions compacted,
        stored: the files removed)."""
        nights = sorted(nights)
        dates = sorted({n - _dt.timedelta(days=k) for n in nights for k in range(self.compact_days)})
        await self.publish()
        t0 = self.clock()
        parts = removed = 0
        for table in ("readings", "events"):
            p, r = await asyncio.to_thread(lake.compact, self.state.lake_root, table, dates=dates)
            parts, removed = parts + p, removed + r
        for n in nights:
            self.state.record_run(COMPACT_RUN, n, "compact", t0, self.clock(), parts, removed)
        event(log, "lake compacted", date=nights[-1].isoformat(), first=dates[0].isoformat(), partitions=parts,
              files_removed=removed, seconds=round(self.clock() - t0, 3))
        return {"nights": [n.isoformat() for n in nights], "partitions": parts, "files_removed": removed}

    def _compaction_due(self, first: _dt.date, now: float) -> list[_dt.date]:
        """Days in [first, yesterday] whose compaction time has passed and that have no compaction run."""
        if self.compact_offset_s is None or not self.compact_lake:
            return []
        today = _today_local(now)
        done = set(self.state.days(COMPACT_RUN, "compact"))
        days = [first + _dt.timedelta(days=i) for i in range((today - first).days)]
        return [d for d in days if d not in done and now >= due_at_compaction(d, self.compact_offset_s)]

    async def wait_online(self, timeout_s: float, stop: asyncio.Event | None = None) -> int:
        """Wait until every terminal of the collector is online, ``timeout_s`` at most (or ``stop``);
        how many are online."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while loop.time() < end and not (stop is not None and stop.is_set()):
            if all(self._online(a) for a in self.meters_of):
                break
            await asyncio.sleep(0.1)
        return sum(self._online(a) for a in self.meters_of)

    async def run(self, *, first_day: _dt.date | None = None, stop: asyncio.Event | None = None) -> None:
        """The scheduler: at each task's due time (freeze + offset) collect the day, then back-fill; with
        ``compact_offset_s`` set, compact each day's partitions once it is over (:meth:`compact_days_of`).

        Starts by catching up every day since ``first_day`` (or the task's start) that has no recorded run.
        Every enabled task reads every link the same way (:meth:`run_days`): the terminals' meters and
        those of each meter bus (RS-485 ports), each link resuming from its own recorded runs.
        A task that fails is logged (``collection failed``) and tried again at the next wake-up: the
        scheduler itself does not stop until ``stop`` is set.
        """
        stop = stop or asyncio.Event()
        started = _today_local(self.clock())
        while not stop.is_set():
            now = self.clock()
            today = _today_local(now)
            for task in self.tasks:
                if not task.enabled:
                    continue            # defined, run only when asked for by name (run_days)
                first = task.start or first_day or started
                due = [d for d in task.days(first, today) if now >= due_at(task, d)]
                if due:
                    try:
                        await self.run_days(task, due, max_wait_s=0)
                    except (GridheadError, OSError) as exc:
                        event(log, "collection failed", logging.ERROR, task=task.name, error=str(exc))
            nights = self._compaction_due(first_day or started, now)
            if nights:
                try:
                    await self.compact_days_of(nights)
                except (GridheadError, OSError) as exc:
                    event(log, "lake compaction failed", logging.ERROR, date=nights[-1].isoformat(), error=str(exc))
            tomorrow = today + _dt.timedelta(days=1)
            wake = records.local_to_epoch(tomorrow.year, tomorrow.month, tomorrow.day) + min(
                (t.offset_s for t in self.tasks), default=300)
            if self.compact_offset_s is not None and self.compact_lake:
                # yesterday's compaction if it is still ahead (a small hour), else today's
                nxt = due_at_compaction(today - _dt.timedelta(days=1), self.compact_offset_s)
                wake = min(wake, nxt if nxt > now else due_at_compaction(today, self.compact_offset_s))
            # wake for the next freeze, or sooner to give pending back-fill its turn
            delay = min(wake - self.clock(), min((t.backfill_delay_s for t in self.tasks), default=60))
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(1.0, delay))
            except asyncio.TimeoutError:
                pass

    def close(self) -> None:
        self.state.close()

"""Collection bookkeeping (数据采集管理): expected meter-days, gaps, attempts and success rate (采集成功率).

Everything here is derived from what is on disk, so a head-end that restarts (or is killed) knows where
collection stands without having kept anything in memory:

* the **archive** says which meter-days a collection day expects: every meter behind a concentrator that
  is installed at the day's 00:00 freeze (``point_meters``: installed before the day, removed on or after
  it — the 00:00 reading of the removal day still belongs to the old meter, storage.archive);
* the **lake** says which of them are stored: daily frozen (日冻结) rows of the meter in the day's
  partition of every register the task requires (:data:`REQUIRED` by default: forward and reverse
  active, combined reactive 1 and 2) that the meter keeps — ``ae_fwd`` always, the others if it
  delivers them on any day asked about (a household meter has no reactive registers); their quality says
  whether they came on the first pass (0) or by back-fill (``schema.Q_BACKFILLED``, 补采);
* the **state table** ``<lake>/collection/`` says what the head-end did: ``runs/`` one row per task run
  (task, day, phase, when, how many requested and stored) and ``attempts/`` one row per meter re-request
  of back-fill (task, day, meter, when, outcome).  Both are append-only Parquet files written aside,
  fsynced and renamed, so a crash leaves each file whole or absent.

A gap is an expected meter-day with no stored reading; its back-fill attempts are counted from
``attempts/`` (bounded retries survive a restart).  The success rate of a day is stored / expected,
before back-fill (first pass only) and after; ``gridhead sql`` shows it as the ``collection`` view
(:func:`view_statements`) and ``gridhead collect status`` prints it.
"""

from __future__ import annotations

import datetime as _dt
import os
import pathlib
import time
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gridhead.protocols.errors import StorageError

from . import duck, lake, schema
from .duck import arrow_table
from . import paths

if TYPE_CHECKING:
    from .archive import Archive

# the days of a query (a list, a set, or a tuple of datetime.date)
Dates = Collection[_dt.date]

STATE_DIR = "collection"
PHASES = ("collect", "backfill", "compact")   # compact: the head-end's nightly lake compaction
# outcome of one request for one meter-day
OK, NO_ANSWER, OFFLINE, NO_DATA = 1, 2, 3, 4
OUTCOMES = {OK: "ok", NO_ANSWER: "no answer", OFFLINE: "terminal offline", NO_DATA: "no data"}
BY = ("day", "terminal", "area")

RUNS_SCHEMA = pa.schema([
    pa.field("task", pa.string(), nullable=False),
    pa.field("date", pa.date32(), nullable=False),
    pa.field("phase", pa.string(), nullable=False),          # one of PHASES
    pa.field("started_utc", lake.TS, nullable=False),
    pa.field("finished_utc", lake.TS, nullable=False),
    pa.field("requested", pa.int64(), nullable=False),       # meter-days asked for (compact: partitions)
    pa.field("stored", pa.int64(), nullable=False),          # readings acknowledged (compact: files removed)
])
ATTEMPTS_SCHEMA = pa.schema([
    pa.field("task", pa.string(), nullable=False),
    pa.field("date", pa.date32(), nullable=False),
    pa.field("meter_id", pa.int64(), nullable=False),
    pa.field("at_utc", lake.TS, nullable=False),
    pa.field("outcome", pa.uint8(), nullable=False),         # one of OUTCOMES
])

# Which meters a day expects, from the archive tables named with prefix {p} ("archive." when attached).
_EXPECTED = """
SELECT m.meter_id, m.comm_address, m.protocol AS meter_protocol, m.port_oad, m.concentrator_id,
       c.terminal_address, c.area_id, pm.installed, pm.removed
FROM {p}meters m
JOIN {p}concentrators c ON c.concentrator_id = m.concentrator_id
LEFT JOIN (SELECT meter_id, min(valid_from) AS installed,
                  CASE WHEN bool_or(valid_to IS NULL) THEN NULL ELSE max(valid_to) END AS removed
           FROM {p}point_meters GROUP BY meter_id) pm ON pm.meter_id = m.meter_id"""

_DAY_JOIN = """(SELECT d.date, x.* FROM ({days}) d JOIN ({expected}) x
    ON (x.installed IS NULL OR x.installed < d.date) AND (x.removed IS NULL OR d.date <= x.removed))"""

# stored daily frozen readings of those days: one row per (meter, day) that has its forward active total
# and every other required register ({regs}) the meter keeps — every one it delivers on any day of the
# scan (a household meter without reactive registers never delivers re_fwd, a 力调 customer's always
# does); quality bits OR-ed over those rows.  Registers as bits of a mask (codes < 63): 2.7x the old
# ae_fwd-only query for 320,000 meters x 2 days, measured, where count(DISTINCT) and a window took 8x
_STORED = """(WITH g AS (
        SELECT meter_id, date, bit_or(quality) AS quality, bit_or(CAST(1 AS BIGINT) << register) AS mask
        FROM ({daily}) WHERE register IN ({regs}) AND date IN (SELECT date FROM ({days})) GROUP BY meter_id, date)
    SELECT g.meter_id, g.date, g.quality FROM g
    JOIN (SELECT meter_id, bit_or(mask) AS keeps FROM g GROUP BY meter_id) k ON k.meter_id = g.meter_id
    WHERE g.mask = k.keeps AND g.mask & (CAST(1 AS BIGINT) << {reg}) <> 0)"""
# the registers a meter-day of a kind needs by default: those of the built-in tasks (headend.collect's
# required_registers of daily-frozen and monthly-settlement; a test keeps them equal)
_R = schema.REGISTER_CODES
REQUIRED = {schema.DAILY: (_R["ae_fwd"], _R["ae_rev"], _R["re_fwd"], _R["re_rev"]),
            schema.MONTHLY: (_R["ae_fwd"], _R["ae_rev"], _R["re_fwd"], _R["re_rev"], _R["md_fwd"]),
            schema.INTERVAL: (_R["ae_fwd"],)}

# stored load curves (负荷曲线) of those days: a meter-day counts once every interval end of the step
# (ts_utc on the step's grid in local time) has an ae_fwd row
_CURVE_STORED = """(SELECT meter_id, date, bit_or(quality) AS quality FROM ({scan})
    WHERE register = {reg} AND date IN (SELECT date FROM ({days}))
      AND (epoch(ts_utc)::BIGINT + {off}) % {step} = 0
    GROUP BY meter_id, date HAVING count(DISTINCT ts_utc) >= {n})"""

_GROUP = {"day": ("e.date",), "terminal": ("e.date", "e.concentrator_id", "e.terminal_address", "e.area_id"),
          "area": ("e.date", "e.area_id")}


def _rate_sql(by: str, e: str, s: str) -> str:
    keys = ", ".join(_GROUP[by])
    # rates as exact decimals (percent with 2 places): a rate is a ratio of counts, not a measurement
    return f"""SELECT {keys}, count(*) AS expected,
       count(s.meter_id) FILTER (WHERE s.quality & {schema.Q_BACKFILLED} = 0) AS first_pass,
       count(s.meter_id) FILTER (WHERE s.quality & {schema.Q_BACKFILLED} <> 0) AS backfilled,
       count(s.meter_id) AS collected,
       count(*) - count(s.meter_id) AS missing,
       CAST(round(100 * count(s.meter_id) FILTER (WHERE s.quality & {schema.Q_BACKFILLED} = 0)
                  / count(*), 2) AS DECIMAL(5, 2)) AS success_first_pct,
       CAST(round(100 * count(s.meter_id) / count(*), 2) AS DECIMAL(5, 2)) AS success_pct
FROM {e} e LEFT JOIN {s} s ON s.meter_id = e.meter_id AND s.date = e.date
GROUP BY {keys} ORDER BY {keys}"""


def state_root(lake_root: lake.StrPath) -> pathlib.Path:
    return pathlib.Path(lake_root) / STATE_DIR


def _daily_files(lake_root: lake.StrPath, dates: Dates, kind: str = schema.DAILY) -> list[str]:
    """The published files of ``kind`` (daily frozen by default) of ``dates`` (one consistent listing
    per partition)."""
    root = pathlib.Path(lake_root).resolve()
    out = []
    for d in sorted(set(dates)):
        day_dir = root / "readings" / f"kind={kind}" / f"date={d.isoformat()}"
        for b in lake.scan_dir(str(day_dir)):
            if b.is_dir() and b.name.startswith("bucket="):
                out += [os.path.join(b.path, n) for n in lake.file_names(b.path)
                        if n.startswith("part-") and n.endswith(".parquet")]
    return sorted(out)


def _scan_files(files: list[str]) -> str:
    if not files:
        return ("SELECT CAST(NULL AS BIGINT) AS meter_id, CAST(NULL AS SMALLINT) AS register, "
                "CAST(NULL AS UTINYINT) AS quality, CAST(NULL AS DATE) AS date WHERE false")
    return _daily_scan("[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]")


def _ts_scan(files: list[str]) -> str:
    """Like :func:`_scan_files`, with ts_utc (the curve's interval ends)."""
    if not files:
        return ("SELECT CAST(NULL AS BIGINT) AS meter_id, CAST(NULL AS SMALLINT) AS register, "
                "CAST(NULL AS UTINYINT) AS quality, CAST(NULL AS TIMESTAMPTZ) AS ts_utc, "
                "CAST(NULL AS DATE) AS date WHERE false")
    files_sql = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
    return (f"SELECT meter_id, register, quality, ts_utc, CAST(date AS DATE) AS date "
            f"FROM read_parquet({files_sql}, hive_partitioning = true)")


def _daily_scan(files_sql: str) -> str:
    # the date comes from the Hive path; cast rather than hive_types, whose type names would bind to
    # the outer query's "date" column inside a correlated subquery
    return (f"SELECT meter_id, register, quality, CAST(date AS DATE) AS date "
            f"FROM read_parquet({files_sql}, hive_partitioning = true)")


def _regs_sql(registers: Iterable[int] | None, kind: str) -> str:
    regs = sorted({int(r) for r in (registers or REQUIRED.get(kind, REQUIRED[schema.DAILY]))}
                  | {schema.REGISTER_CODES["ae_fwd"]})
    if not (0 <= regs[0] and regs[-1] < 63):
        raise StorageError(f"collection: required registers {regs} are not codes 0..62")
    return ", ".join(map(str, regs))


def _days_sql(dates: Dates) -> str:
    if not dates:
        return "SELECT CAST(NULL AS DATE) AS date WHERE false"
    return " UNION ALL ".join(f"SELECT DATE '{d.isoformat()}' AS date" for d in sorted(set(dates)))


def expected_meters(archive: Archive) -> pa.Table:
    """Every meter a collection can reach, with its route and installation period (an Arrow table).

    ``archive``: a ``storage.archive.Archive``.  Columns: meter_id, comm_address, meter_protocol,
    port_oad, concentrator_id, terminal_address, area_id, installed, removed (dates; NULL = open).
    """
    return archive.query(_EXPECTED.format(p="") + " ORDER BY m.meter_id")


def of_terminals(expected: pa.Table, keep: Callable[[str], object]) -> pa.Table:
    """The rows of an :func:`expected_meters` table whose terminal address satisfies ``keep(address)``
    (a head-end shard's own terminals)."""
    mask = [bool(keep(a)) for a in expected.column("terminal_address").to_pylist()]
    return expected.filter(pa.array(mask, pa.bool_()))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class CollectionState:
    """The collection state of one lake: runs and attempts, and the queries over lake + archive.

    ``expected``: the table :func:`expected_meters` returns (read once from the archive, so this class
    never holds the archive database open).
    """

    def __init__(self, lake_root: lake.StrPath, expected: pa.Table) -> None:
        self.lake_root = pathlib.Path(lake_root)
        self.root = state_root(lake_root)
        self.expected = expected
        self.db = duck.connect()
        self.db.execute("SET TimeZone = 'UTC'")
        self.db.register("expected", expected)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> CollectionState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the state table ---------------------------------------------------------------------------
    def _append(self, sub: str, tbl: pa.Table) -> None:
        if not tbl.num_rows:
            return
        d = self.root / sub
        lake.mkdirs(d)
        path = d / lake.new_file_name()
        tmp = path.with_name("." + path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                pq.write_table(tbl, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
            lake.fsync_dir(d)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"collection state: cannot write {path}: {exc.strerror or exc}") from None

    def record_run(self, task: str, date: _dt.date, phase: str, started_utc: float, finished_utc: float,
                   requested: int, stored: int) -> None:
        if phase not in PHASES:
            raise StorageError(f"collection state: phase {phase!r} is not one of {', '.join(PHASES)}")
        self._append("runs", pa.table({
            "task": [task], "date": pa.array([date], pa.date32()), "phase": [phase],
            "started_utc": pa.array([int(started_utc)], pa.int64()).cast(lake.TS),
            "finished_utc": pa.array([int(finished_utc)], pa.int64()).cast(lake.TS),
            "requested": [int(requested)], "stored": [int(stored)]}, schema=RUNS_SCHEMA))

    def record_attempts(self, task: str, date: _dt.date, meter_ids: npt.ArrayLike, outcomes: npt.ArrayLike, at_utc: float | None = None) -> None:
        """One row per meter re-requested: ``outcomes`` one of :data:`OUTCOMES` per meter (or one for all)."""
        m = np.asarray(meter_ids, np.int64)
        o = np.broadcast_to(np.asarray(outcomes, np.uint8), m.shape)
        at = int(time.time() if at_utc is None else at_utc)
        self._append("attempts", pa.table({
            "task": pa.array([task] * len(m), pa.string()), "date": pa.array([date] * len(m), pa.date32()),
            "meter_id": m, "at_utc": pa.array(np.full(len(m), at, np.int64)).cast(lake.TS),
            "outcome": pa.array(o, pa.uint8())}, schema=ATTEMPTS_SCHEMA))

    def _read(self, sub: str, sch: pa.Schema) -> pa.Table:
        d = self.root / sub
        files = sorted(n for n in lake.file_names(str(d)) if n.startswith("part-") and n.endswith(".parquet"))
        if not files:
            return sch.empty_table()
        try:
            return pa.concat_tables([pq.read_table(d / n, schema=sch) for n in files])
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"collection state {d}: {_first_line(exc)}") from None

    def runs(self) -> pa.Table:
        return self._read("runs", RUNS_SCHEMA)

    def attempts(self) -> pa.Table:
        return self._read("attempts", ATTEMPTS_SCHEMA)

    def finished(self, task: str, phase: str = "collect") -> dict[_dt.date, float]:
        """Day -> when its last run of ``task`` in ``phase`` finished (epoch seconds)."""
        r = self.runs()
        r = r.filter(pc.and_(pc.equal(r["task"], task), pc.equal(r["phase"], phase))).to_pydict()
        out: dict[_dt.date, float] = {}
        for d, f in zip(r["date"], r["finished_utc"]):
            out[d] = max(out.get(d, 0.0), f.timestamp())
        return out

    def history(self, task: str, dates: Dates | None = None) -> dict[tuple[_dt.date, int], list[tuple[float, int]]]:
        """(date, meter) -> the recorded attempts of ``task`` [(epoch seconds, outcome)], by time (records
        of one second in no particular order), of ``dates`` only if given."""
        t = self.attempts()
        t = t.filter(pc.equal(t["task"], task)).to_pydict()
        want = None if dates is None else set(dates)
        out: dict[tuple[_dt.date, int], list[tuple[float, int]]] = {}
        for d, m, at, o in zip(t["date"], t["meter_id"], t["at_utc"], t["outcome"]):
            if want is None or d in want:
                out.setdefault((d, m), []).append((at.timestamp(), o))
        for h in out.values():
            h.sort()
        return out

    def days(self, task: str | None = None, phase: str | None = None) -> list[_dt.date]:
        """The days some run (of ``task``, of ``phase``) has collected, sorted."""
        r = self.runs()
        keep = np.ones(r.num_rows, bool)
        if task is not None:
            keep &= r.column("task").to_numpy(zero_copy_only=False) == task
        if phase is not None:
            keep &= r.column("phase").to_numpy(zero_copy_only=False) == phase
        return sorted(set(r.column("date").filter(pa.array(keep)).to_pylist()))

    # --- queries -------------------------------------------------------------------------------------
    def _q(self, sql: str) -> pa.Table:
        try:
            return arrow_table(self.db.execute(sql))
        except duckdb.Error as exc:
            raise StorageError(f"collection query: {_first_line(exc)}") from None

    def _sources(self, dates: Dates, kind: str = schema.DAILY, step_s: int | None = None,
                 registers: Iterable[int] | None = None) -> tuple[str, str]:
        days = _days_sql(dates)
        e = _DAY_JOIN.format(days=days, expected="SELECT * FROM expected")
        if kind == schema.INTERVAL:
            if not step_s or 86400 % step_s:
                raise StorageError(f"collection: a load curve's step {step_s!r} s does not divide a day")
            # a 645 meter's curve (06xxxxxx) is not in the profile (headend.collect): 698 meters only
            e = f"(SELECT * FROM {e} WHERE meter_protocol IS DISTINCT FROM '645')"
            s = _CURVE_STORED.format(scan=_ts_scan(_daily_files(self.lake_root, dates, kind)), days=days,
                                     reg=schema.REGISTER_CODES["ae_fwd"], off=schema.LOCAL_OFFSET_S,
                                     step=int(step_s), n=86400 // int(step_s))
            return e, s
        s = _STORED.format(daily=_scan_files(_daily_files(self.lake_root, dates, kind)), days=days,
                           reg=schema.REGISTER_CODES["ae_fwd"], regs=_regs_sql(registers, kind))
        return e, s

    def gaps(self, dates: Dates, task: str, kind: str = schema.DAILY, step_s: int | None = None,
             registers: Iterable[int] | None = None) -> pa.Table:
        """Expected meter-days of ``dates`` with no stored reading of ``kind``, with their back-fill attempts.

        ``kind``: ``schema.DAILY`` (日冻结, a reading per meter-day) or ``schema.MONTHLY`` (月冻结: the
        settlement reading of each meter installed at the settlement day's 00:00, ``dates`` being the
        settlement days).  Stored means rows of the meter in the day's partition of ``kind`` of every one
        of ``registers`` (the task's, :data:`REQUIRED` of the kind by default) the meter keeps — ``ae_fwd``
        always; of ``schema.INTERVAL`` (负荷曲线, 698 meters), an ``ae_fwd`` row at every interval end of
        the day, ``step_s`` apart.

        Columns: date, meter_id, comm_address, meter_protocol, port_oad, concentrator_id,
        terminal_address, area_id, attempts (back-fill tries of ``task`` so far), last_attempt_utc.
        """
        e, s = self._sources(dates, kind, step_s, registers)
        self.db.register("attempts_now", self.attempts())
        try:
            return self._q(f"""
                SELECT e.date, e.meter_id, e.comm_address, e.meter_protocol, e.port_oad, e.concentrator_id,
                       e.terminal_address, e.area_id, coalesce(a.n, 0) AS attempts, a.last_utc AS last_attempt_utc
                FROM {e} e
                LEFT JOIN (SELECT date, meter_id, count(*) AS n, max(at_utc) AS last_utc FROM attempts_now
                           WHERE task = '{task.replace("'", "''")}' GROUP BY date, meter_id) a
                       ON a.date = e.date AND a.meter_id = e.meter_id
                WHERE NOT EXISTS (SELECT 1 FROM {s} s WHERE s.meter_id = e.meter_id AND s.date = e.date)
                ORDER BY e.date, e.concentrator_id, e.meter_id""")
        finally:
            self.db.unregister("attempts_now")

    def success(self, dates: Dates, by: str = "day", kind: str = schema.DAILY, step_s: int | None = None,
                registers: Iterable[int] | None = None) -> pa.Table:
        """Success rate (采集成功率) of ``dates`` per day, or per day and terminal / area.

        Columns: the keys, expected, first_pass, backfilled, collected, missing, success_first_pct
        (before back-fill), success_pct (after), the percentages as DECIMAL(5, 2).
        """
        if by not in BY:
            raise StorageError(f"collection: --by {by!r} is not one of {', '.join(BY)}")
        e, s = self._sources(dates, kind, step_s, registers)
        return self._q(_rate_sql(by, e, s))

    def stored(self, dates: Dates, meter_ids: Iterable[int], kind: str = schema.DAILY,
               registers: Iterable[int] | None = None) -> set[tuple[_dt.date, int]]:
        """(date, meter) of ``meter_ids`` whose reading of ``kind`` on ``dates`` is stored whole (every one
        of ``registers`` the meter keeps, as :meth:`gaps` counts) — for meters outside the expected table
        (the head-end host's serial meters)."""
        ids = sorted({int(m) for m in meter_ids})
        if not ids or not dates:
            return set()
        s = _STORED.format(daily=_scan_files(_daily_files(self.lake_root, dates, kind)), days=_days_sql(dates),
                           reg=schema.REGISTER_CODES["ae_fwd"], regs=_regs_sql(registers, kind))
        t = self._q(f"SELECT date, meter_id FROM {s} s WHERE meter_id IN ({', '.join(map(str, ids))})").to_pydict()
        return set(zip(t["date"], t["meter_id"]))

    def expected_count(self, dates: Dates) -> int:
        e, _ = self._sources(dates)
        return int(self._q(f"SELECT count(*) AS n FROM {e} e").column("n")[0].as_py())


def view_statements(data: paths.Data) -> list[str]:
    """The ``collection`` view of ``gridhead sql``: success per day and terminal over every collected day.

    Needs the archive attached as ``archive`` (storage.sql does that); days are those of the runs table.
    """
    root = paths.lake_root(data).resolve()
    runs = state_root(root) / "runs"
    has_runs = any(runs.glob("part-*.parquet"))
    days = (f"SELECT DISTINCT date FROM read_parquet('{paths.sql_path(runs / 'part-*.parquet')}')" if has_runs
            else _days_sql(()))
    g = root / "readings" / f"kind={schema.DAILY}" / "date=*" / "bucket=*" / "part-*.parquet"
    has = any((root / "readings" / f"kind={schema.DAILY}").glob("date=*/bucket=*/part-*.parquet"))
    daily = _daily_scan(f"'{paths.sql_path(g)}'") if has else _scan_files([])
    e = _DAY_JOIN.format(days=days, expected=_EXPECTED.format(p="archive."))
    s = _STORED.format(daily=daily, days=days, reg=schema.REGISTER_CODES["ae_fwd"],
                       regs=_regs_sql(None, schema.DAILY))
    return [f"CREATE OR REPLACE VIEW collection AS {_rate_sql('terminal', e, s)}"]

"""The bill run on disk (电费核算): read the lake and the archive into columns, write the bills partition.

Layout under the data directory (``storage.sql.data_dir``)::

    bills/period=2026-10/bills.parquet       one row per customer: energies, demand, money, status
    bills/period=2026-10/bill_items.parquet  the line items, bill after bill, adding up to each total
    bills/period=2026-10/summary.json        the run summary (counts, totals, holds by reason, seconds)
    bills/period=2026-10/reviews.jsonl       releases of held bills (who, when, note), one per line

Publication: a run builds the whole partition aside in ``bills/.staging-<uuid>/`` (files fsynced) and
then renames it into place — or swaps it with the live one in one ``renameat2(RENAME_EXCHANGE)``
(:func:`storage.lake.exchange_dirs`) — so a reader sees the old period, or the new one, never a part.
A crash leaves at most a ``.staging-*`` directory that no reader globs and the next run removes.  A
release rewrites the partition the same way.  Writers of one data directory serialise on
``bills/.lock``.

Memory: computed bills are held as *parts* (:class:`Parts`: the whole run, the chunks of a run over more
than :data:`CHUNK` customers, or the tasks of ``billing_core.jobs.dist``), spilled as Arrow IPC files under
``bills/.spill-<uuid>/`` when there are several, and merged in customer order :data:`ROW_GROUP` bills at a
time into the two Parquet files — so 10M bills are written in ~6 GB, and the files do not depend on how the
bills were split (byte for byte: tested).  The chunks and the tasks get their archive rows from one pass
(:func:`prepare`).

What the run reads (see :class:`billing_core.run.RunInput` for the columns):

* the monthly settlement readings (月冻结) at the period's first day and the next month's first day,
  00:00 local — and the daily frozen reading (日冻结) of the same instant where the monthly one is missing;
* segments of each customer point: the meter history (``point_meters``: 换表 with install and removal
  readings) intersected with the multiplier history (``point_multipliers``), each segment read from
  its start to its end by the daily frozen reading of the day a change takes effect;
* the customer's tariff assignment and its changes in the period (``customer_tariffs``), and the frozen
  reading of every day the month may be split on (those changes and new versions of the customer's
  tariffs, :func:`_split_days`);
* earlier bills (this directory): the annual-tier cumulative of the previous period of the same year,
  and the last three periods' issued energy for the jump check.

Bills are deterministic: a re-run of the same period on the same data writes the same rows (no clock
in a bill; the run's time is in ``summary.json``).  A re-run keeps a release whose bill did not change.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import fcntl
import json
import os
import pathlib
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import IO, Any, Protocol, Union

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from gridhead.billing_core import run as R
from gridhead.billing_core.tariff import BASIC_KINDS, TariffSet, TariffTable
from gridhead.protocols.errors import BillingError, GridheadError, StorageError
from gridhead.storage import archive, duck, lake, lakefs, schema
from gridhead.storage.duck import arrow_table
from gridhead.storage.paths import Data, archive_path, data_dir, lake_root
from gridhead.storage.paths import sql_path as _q
from gridhead.storage.results import BILLS, ITEMS, bills_root

STATUS = ("issued", "held", "released")
_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_REGS = R.REGS
Tick = Callable[[str], object]          # progress(step)


class _Executes(Protocol):
    """A DuckDB connection, or a :class:`_Con` over one."""

    def execute(self, sql: str, params: Any = None, /) -> duckdb.DuckDBPyConnection: ...


# days of a lake partition set: date -> the buckets read that day
Buckets = Union[dict[dt.date, set[int]], set[int]]      # a set: the same buckets every date


@dataclasses.dataclass(frozen=True)
class _Period:
    start: dt.date
    end: dt.date


class _Span(Protocol):
    """The period of a run: [start, end)."""

    @property
    def start(self) -> dt.date: ...
    @property
    def end(self) -> dt.date: ...


def period_bounds(period: str) -> tuple[dt.date, dt.date]:
    """``"2026-10"`` → (2026-10-01, 2026-11-01): the period [start, end), settlement at 00:00 of each."""
    m = _PERIOD.match(period or "")
    if not m:
        raise BillingError(f"period {period!r}: expected YYYY-MM, e.g. 2026-10")
    y, mo = int(m.group(1)), int(m.group(2))
    return dt.date(y, mo, 1), dt.date(y + mo // 12, mo % 12 + 1, 1)


def partition(data: Data, period: str) -> pathlib.Path:
    period_bounds(period)
    return bills_root(data) / f"period={period}"


def bill_id(period: str, customer_id: npt.ArrayLike) -> np.ndarray:
    """Bill number: YYYYMM × 10^11 + customer id (customer ids stay below 10^11)."""
    y, m = period.split("-")
    return np.int64(int(y) * 100 + int(m)) * np.int64(10 ** 11) + np.asarray(customer_id, np.int64)


# --- reading the lake and the archive -------------------------------------------------------------------

def _read(con: _Executes, sql: str, params: Mapping[str, object] | None = None) -> dict[str, np.ndarray]:
    cur = con.execute(sql, params or [])
    t = arrow_table(cur)
    return {n: t.column(n).to_numpy(zero_copy_only=False) for n in t.column_names}


def pivot_files(pivots: Sequence[str], files: Sequence[str] = ()) -> str:
    """Per (meter, date) one row, registers as columns (the rule of storage.sql: the last received wins).
    ``pivots``: materialised per-partition pivots (storage.lake.pivot_of, the same rule), read as they are;
    ``files``: part files of partitions without one, grouped here."""
    regs = (*_REGS, "md_fwd")
    out: list[str] = []
    if pivots:
        lst = ", ".join(f"'{_q(f)}'" for f in pivots)
        out.append(f"SELECT meter_id, date, {', '.join(regs)}, quality FROM read_parquet([{lst}], "
                   f"hive_partitioning = true, hive_types = {{'date': DATE, 'bucket': INTEGER}}) @FILTER@")
    if files:
        lst = ", ".join(f"'{_q(f)}'" for f in files)
        out.append(_pivot_source(f"read_parquet([{lst}], hive_partitioning = true, "
                                 f"hive_types = {{'date': DATE, 'bucket': INTEGER}})"))
    if not out:
        cols = ", ".join(f"CAST(NULL AS BIGINT) AS {r}" for r in regs)
        return (f"SELECT CAST(NULL AS BIGINT) AS meter_id, CAST(NULL AS DATE) AS date, {cols}, "
                f"CAST(NULL AS UTINYINT) AS quality WHERE false")
    return "\nUNION ALL\n".join(out)


def _pivot_source(source: str) -> str:
    cols = ",\n ".join(f"arg_max(value, received_utc) FILTER (WHERE register = {schema.REGISTER_CODES[r]}) AS {r}"
                       for r in (*_REGS, "md_fwd"))
    return f"SELECT meter_id, date, {cols}, bit_or(quality) AS quality FROM {source} @FILTER@ GROUP BY meter_id, date"


def _readings(con: duckdb.DuckDBPyConnection, lfs: lakefs.Lake | None, root: pathlib.Path, kind: str,
              dates: Iterable[dt.date], buckets: Buckets | None, name: str) -> str:
    """The pivot SELECT of ``kind``'s readings on ``dates`` (of ``buckets``, when given), with ``@FILTER@``
    where a ``r SEMI JOIN ...`` restricting the rows goes.  A local lake's files are read by DuckDB itself,
    a partition's materialised pivot where it has one; a lake behind a URI (storage.lakefs) through
    pyarrow.fs, its rows handed to DuckDB as the Arrow table ``name`` and grouped."""
    if lfs is None:
        return pivot_files(*settlement_files(root, kind, dates, buckets))
    tables = []
    for d in sorted(set(dates)):
        files = lfs.files(f"readings/kind={kind}/date={d}")
        if buckets is not None:
            bs = buckets.get(d, set()) if isinstance(buckets, dict) else buckets
            files = [f for f in files if any(f"/bucket={b:02d}/" in f for b in bs)]
        if files:
            t = lfs.read(files, ["meter_id", "register", "value", "received_utc", "quality"])
            tables.append(t.append_column("date", pa.array(np.full(t.num_rows, d, "datetime64[D]"), pa.date32())))
    if not tables:
        return pivot_files([])
    con.register(name, pa.concat_tables(tables))
    return _pivot_source(name)


def settlement_files(root: pathlib.Path, kind: str, dates: Iterable[dt.date], buckets: Buckets | None = None
                     ) -> tuple[list[str], list[str]]:
    """(pivots, part files) of ``kind`` on ``dates`` (of the ``buckets`` only, when given: a set, or per
    date a set): a partition with one part file and its pivot gives the pivot (storage.lake.pivot_snapshot's
    rule, :func:`storage.lake.partition_pivot`), any other its part files."""
    dirs: list[pathlib.Path] = []
    for d in sorted(set(dates)):
        day = root / "readings" / f"kind={kind}" / f"date={d}"
        bs = buckets.get(d, set()) if isinstance(buckets, dict) else buckets
        dirs += sorted(day.glob("bucket=*")) if bs is None else [day / f"bucket={b:02d}" for b in sorted(bs)]
    pivots: list[str] = []
    parts: list[str] = []
    for part_dir in dirs:
        try:
            p, f = lake.partition_pivot(str(part_dir), os.listdir(part_dir))
        except FileNotFoundError:
            continue
        pivots += p
        parts += f
    return pivots, parts


def extract(data: Data, period: str, tariffs: TariffSet | None = None, customers: npt.ArrayLike | None = None,
            prepared: dict[str, Any] | None = None, lake_uri: str | None = None) -> tuple[R.RunInput, pa.Table]:
    """The period's columns (:class:`billing_core.run.RunInput`) and the customers' text columns.

    ``customers`` (customer ids) restricts the run to those customers — one task of the distributed run
    (``billing_core.jobs.dist``): then only the lake buckets of their meters are read, and of those only the rows of
    their meters, so the columns are exactly the single-node run's rows of those customers.
    ``prepared`` (one task's entry of :func:`prepare`: its customers' archive rows already joined, its home
    buckets and its meters' monthly readings outside them) stands in for the archive file, which is then
    not opened, and limits the monthly partitions read to the home buckets.  The readings come from
    ``lake_uri`` or ``$GRIDHEAD_LAKE`` through pyarrow.fs when either is set (storage.lakefs), else from
    ``<data>/lake``.
    """
    start, end = period_bounds(period)
    arch = archive_path(data)
    if prepared is None and not arch.exists():
        raise StorageError(f"{arch}: no archive (run `gridhead archive import` first)")
    root = lake_root(data)
    con = duck.connect()
    try:
        if prepared is None:
            con.execute(f"ATTACH '{_q(arch.resolve())}' AS a (READ_ONLY)")
        else:
            customers = prepared["cust"].column("customer_id")
            for name in ("cust", "seg", "yseg", "cchg", "cday", "foreign"):
                con.register(f"_prepared_{name}", prepared[name])
        if customers is not None:
            con.register("own_arrow", pa.table({"customer_id": pa.array(np.asarray(customers, np.int64))}))
            con.execute("CREATE TEMP TABLE own AS SELECT DISTINCT customer_id FROM own_arrow")
        return _extract(con, data, root, period, start, end, own=customers is not None,
                        lfs=lakefs.configured(lake_uri), home=None if prepared is None else prepared["home"],
                        tariffs=tariffs or TariffSet.load())
    except duckdb.Error as exc:
        raise StorageError(f"bill run {period}: reading {data_dir(data)}: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()


class _Con:
    """A DuckDB connection that passes only the named parameters a statement uses (DuckDB refuses extras)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, params: dict[str, object]) -> None:
        self.con, self.params = con, params

    def execute(self, sql: str, params: Mapping[str, object] | None = None, /) -> duckdb.DuckDBPyConnection:
        given = {**self.params, **(params or {})}
        return self.con.execute(sql, {k: v for k, v in given.items() if f"${k}" in sql})


def _archive_phase(con: _Con, period: str, own: bool, tariffs: TariffSet | None = None) -> None:
    """The temp tables ``cust`` (a row per bill: the customer, its tariff assignment and change, its
    first point's transformer and charges) and ``seg`` (its segments: meter history × multiplier history
    of each customer point, clipped to the period) from the attached archive ``a``."""
    sql = _CUST_SQL.replace("@OWN@", "WHERE c.customer_id IN (SELECT customer_id FROM own)" if own else "")
    # an archive made before the optional columns (storage.archive.Col.optional) were added, attached read-only:
    # those columns are NULL throughout
    have = {(t, c) for t, c in con.execute("SELECT table_name, column_name FROM duckdb_columns() "
                                           "WHERE database_name = 'a'").fetchall()}
    for alias, table in (("c", "customers"), ("pt", "points")):
        for col in (x for x in archive.BY_NAME[table].cols if x.optional and (table, x.name) not in have):
            sql = sql.replace(f"{alias}.{col.name}", f"CAST(NULL AS {col.type})")
    con.execute(sql)
    bad = con.execute("SELECT customer_id, customer_no FROM cust WHERE tariff_code IS NULL ORDER BY 1 LIMIT 1"
                      ).fetchone()
    if bad:
        raise BillingError(f"customer {bad[1]} (id {bad[0]}): no tariff assignment (customer_tariffs) in "
                           f"{period}; nothing was billed")
    # the assignment changes inside the period (any number), and the days the month may be split on
    con.execute("""CREATE TEMP TABLE cchg AS
        SELECT c.bill, t.valid_from AS change_date, t.tariff_code
        FROM cust c JOIN a.customer_tariffs t ON t.customer_id = c.customer_id
        WHERE t.valid_from > $s AND t.valid_from < $e ORDER BY c.bill, t.valid_from""")
    _split_days(con, period, tariffs)
    con.execute(_SEG_SQL)
    con.execute(_YSEG_SQL)


def _split_days(con: _Con, period: str, tariffs: TariffSet | None) -> None:
    """The temp table ``cday`` (bill, date): the days inside the period on which a bill may be split, whose
    frozen readings the run needs (DOMAIN.md: a mid-period tariff change is split at the effective date by
    that day's frozen reading) — each assignment change, and each day a version of a tariff the customer is
    assigned in the period starts (the tariff the assignment chooses,
    :meth:`~billing_core.tariff.TariffSet.price_from_tariff_assignment`).  Which of them split the bill is
    the run's decision (:func:`billing_core.run.mid_period_tariff_changes`)."""
    start, end = period_bounds(period)
    rows = []
    if tariffs is not None:
        pairs = con.execute("""SELECT DISTINCT tariff_code, category FROM (
                                   SELECT tariff_code, category FROM cust
                                   UNION ALL SELECT h.tariff_code, c.category FROM cchg h JOIN cust c USING (bill))
                               WHERE tariff_code IS NOT NULL""").fetchall()
        for code, cat in pairs:
            try:
                key = tariffs.price_from_tariff_assignment(code, cat)
            except GridheadError:
                continue                     # no tariff for it: the run refuses it with its own message
            rows += [(code, cat, v.effective) for v in tariffs.tariff(key).versions if start < v.effective < end]
    con.con.register("_versions", pa.table({"tariff_code": pa.array([r[0] for r in rows], pa.string()),
                                            "category": pa.array([r[1] for r in rows], pa.string()),
                                            "version_day": pa.array([r[2] for r in rows], pa.date32())}))
    con.execute("""CREATE TEMP TABLE cday AS
        SELECT DISTINCT bill, date FROM (
            SELECT bill, change_date AS date FROM cchg
            UNION ALL SELECT c.bill, v.version_day FROM cust c JOIN _versions v
                      ON v.tariff_code = c.tariff_code AND v.category = c.category
            UNION ALL SELECT h.bill, v.version_day FROM cchg h JOIN cust c USING (bill) JOIN _versions v
                      ON v.tariff_code = h.tariff_code AND v.category = c.category) x
        ORDER BY bill, date""")


_CUST_SQL = """CREATE TEMP TABLE cust AS
        WITH ct AS (SELECT customer_id, tariff_code, valid_from,
                           row_number() OVER (PARTITION BY customer_id ORDER BY valid_from) AS k
                    FROM a.customer_tariffs WHERE valid_from < $e AND (valid_to IS NULL OR valid_to > $s)),
             pt AS (SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY point_id) AS k
                    FROM a.points WHERE role = 'customer')
        SELECT n.bill, c.customer_id, c.customer_no, c.name,
               c.category, c.voltage_v, t1.tariff_code, t2.tariff_code AS new_tariff_code,
               CASE WHEN t1.valid_from > $s THEN t1.valid_from ELSE t2.valid_from END AS change_date,
               pt.point_id, coalesce(pt.hv_metered_lv, false) AS hv_lv,
               coalesce(pt.tx_capacity_kva, -1) AS tx_capacity_kva, coalesce(pt.tx_p0_w, -1) AS tx_p0_w,
               coalesce(pt.tx_pk_w, -1) AS tx_pk_w, coalesce(pt.tx_loss_rate_bp, -1) AS tx_loss_rate_bp,
               coalesce(pt.line_loss_rate_bp, -1) AS line_loss_rate_bp,
               coalesce(pt.tx_i0_x100, -1) AS tx_i0_x100, coalesce(pt.tx_uk_x100, -1) AS tx_uk_x100,
               coalesce(pt.tx_q_loss_rate_bp, -1) AS tx_q_loss_rate_bp,
               -- the annual tiers' year-to-date starts at the go-live's opening value in its year, else at
               -- the tier year's first day with nothing (ruling: year_to_date_from_readings)
               CASE WHEN c.opening_ytd_date IS NOT NULL AND year(c.opening_ytd_date) = year($s)
                         AND c.opening_ytd_date <= $s THEN c.opening_ytd_date
                    ELSE make_date(year($s), 1, 1) END AS ytd_from,
               CASE WHEN c.opening_ytd_date IS NOT NULL AND year(c.opening_ytd_date) = year($s)
                         AND c.opening_ytd_date <= $s THEN c.opening_ytd_kwh_x100 ELSE 0 END AS ytd_opening,
               coalesce(pt.contract_demand_kw, -1) AS contract_kw, coalesce(pt.basic_charge, 'none') AS basic,
               coalesce(pt.pf_standard_x100, 0) AS pf_std_x100
        FROM a.customers c
        -- bills numbered in customer order over the narrow id column (a window over the wide joined rows
        -- sorted them all: 8 of 16 s at 10M customers)
        JOIN (SELECT customer_id, row_number() OVER (ORDER BY customer_id) - 1 AS bill FROM a.customers c @OWN@) n
             ON n.customer_id = c.customer_id
        LEFT JOIN ct t1 ON t1.customer_id = c.customer_id AND t1.k = 1
        LEFT JOIN ct t2 ON t2.customer_id = c.customer_id AND t2.k = 2
        LEFT JOIN pt ON pt.customer_id = c.customer_id AND pt.k = 1"""
_SEG_SQL = """CREATE TEMP TABLE seg AS
        SELECT c.bill, pm.meter_id, m.register_digits AS digits, mu.ct_ratio AS ct, mu.pt_ratio AS pt,
               greatest(pm.valid_from, mu.valid_from, $s) AS seg_from,
               least(coalesce(pm.valid_to, $e), coalesce(mu.valid_to, $e), $e) AS seg_to,
               pm.valid_from AS meter_from, pm.valid_to AS meter_to,
               pm.install_reading_x100 AS install, pm.removal_reading_x100 AS removal
        FROM cust c
        JOIN a.points po ON po.customer_id = c.customer_id AND po.role = 'customer'
        JOIN a.point_meters pm ON pm.point_id = po.point_id AND pm.valid_from < $e
             AND (pm.valid_to IS NULL OR pm.valid_to > $s)
        JOIN a.point_multipliers mu ON mu.point_id = po.point_id AND mu.valid_from < least(coalesce(pm.valid_to, $e), $e)
             AND (mu.valid_to IS NULL OR mu.valid_to > greatest(pm.valid_from, $s))
        JOIN a.meters m ON m.meter_id = pm.meter_id
        WHERE greatest(pm.valid_from, mu.valid_from, $s) < least(coalesce(pm.valid_to, $e), coalesce(mu.valid_to, $e), $e)
        """


# the segments of the year-to-date before the period: [ytd_from, $s) of each bill (meter x multiplier)
_YSEG_SQL = """CREATE TEMP TABLE yseg AS
        SELECT c.bill, pm.meter_id, m.register_digits AS digits, mu.ct_ratio AS ct, mu.pt_ratio AS pt,
               greatest(pm.valid_from, mu.valid_from, c.ytd_from) AS seg_from,
               least(coalesce(pm.valid_to, $s), coalesce(mu.valid_to, $s), $s) AS seg_to,
               pm.valid_from AS meter_from, pm.valid_to AS meter_to, c.ytd_from,
               pm.install_reading_x100 AS install, pm.removal_reading_x100 AS removal
        FROM cust c
        JOIN a.points po ON po.customer_id = c.customer_id AND po.role = 'customer'
        JOIN a.point_meters pm ON pm.point_id = po.point_id AND pm.valid_from < $s
             AND (pm.valid_to IS NULL OR pm.valid_to > c.ytd_from)
        JOIN a.point_multipliers mu ON mu.point_id = po.point_id AND mu.valid_from < least(coalesce(pm.valid_to, $s), $s)
             AND (mu.valid_to IS NULL OR mu.valid_to > greatest(pm.valid_from, c.ytd_from))
        JOIN a.meters m ON m.meter_id = pm.meter_id
        WHERE c.ytd_from < $s
          AND greatest(pm.valid_from, mu.valid_from, c.ytd_from) < least(coalesce(pm.valid_to, $s), coalesce(mu.valid_to, $s), $s)
        """


def _segment_readings(segs: str, mon: str, day: str, span_from: str, span_to: str, regs: Sequence[str]) -> str:
    """The SELECT of each segment of the table ``segs`` with its readings, in (bill, start) order: ``seg_bill``,
    ``meter_id``, ``digits``, ``ct``, ``pt``, ``days``, ``prev_<r>`` / ``now_<r>`` of the registers ``regs``
    (−1 none), ``prev_quality``, ``now_quality``, ``md`` (maximum demand at the end, −1 none), ``tou_check``.

    A segment of the span [``span_from``, ``span_to``) (SQL expressions: the period's, or the year-to-date's)
    starts on the install reading where its meter was installed inside the span (a meter installed at 0 has
    every register at 0), else on the 00:00 reading of its first day; it ends on the removal reading where its
    meter was removed inside the span (the total register only), else on the 00:00 reading of its end day.
    A 00:00 reading is the monthly settlement one (``mon``) where it has the total, else the daily freeze
    (``day``).  Serves the month's segments and the year-to-date's (:func:`_year_to_date`)."""
    def pick(alias: str, reg: str) -> str:
        return f"CASE WHEN {alias}m.ae_fwd IS NOT NULL THEN {alias}m.{reg} ELSE {alias}d.{reg} END"

    installed = f"s.seg_from = s.meter_from AND s.seg_from > {span_from}"
    # NULL where the meter is still in place (meter_to NULL): not removed
    removed = f"coalesce(s.seg_to = s.meter_to AND s.seg_to < {span_to}, false)"
    prev = [f"coalesce(CASE WHEN {installed} THEN s.install ELSE {pick('p', r)} END, -1) AS prev_{r}" if r == "ae_fwd"
            else f"coalesce(CASE WHEN {installed} THEN (CASE WHEN s.install = 0 THEN 0 END) "
                 f"ELSE {pick('p', r)} END, -1) AS prev_{r}" for r in regs]
    now = [f"coalesce(CASE WHEN {removed} THEN coalesce(s.removal, {pick('n', r)}) ELSE {pick('n', r)} END, -1) "
           f"AS now_{r}" if r == "ae_fwd" else f"coalesce({pick('n', r)}, -1) AS now_{r}" for r in regs]
    return f"""
        SELECT s.bill AS seg_bill, s.meter_id, s.digits, s.ct, s.pt, (s.seg_to - s.seg_from) AS days,
               {", ".join(prev + now)},
               CASE WHEN {installed} THEN 0 ELSE coalesce({pick('p', 'quality')}, 0) END AS prev_quality,
               coalesce({pick('n', 'quality')}, 0) AS now_quality,
               coalesce(nm.md_fwd, -1) AS md,
               -- the TOU check (billing_core.energy.tou_registers_do_not_add_up) is skipped only where the
               -- segment ends on a meter's removal reading (a CT/PT change of a meter in place is checked)
               NOT {removed} AS tou_check
        FROM {segs} s
        LEFT JOIN {mon} pm ON pm.meter_id = s.meter_id AND pm.date = s.seg_from
        LEFT JOIN {day} pd ON pd.meter_id = s.meter_id AND pd.date = s.seg_from
        LEFT JOIN {mon} nm ON nm.meter_id = s.meter_id AND nm.date = s.seg_to
        LEFT JOIN {day} nd ON nd.meter_id = s.meter_id AND nd.date = s.seg_to
        ORDER BY s.bill, s.seg_from"""


def _year_to_date(con: _Executes, raw: duckdb.DuckDBPyConnection, lfs: lakefs.Lake | None, root: pathlib.Path,
                  start: dt.date) -> None:
    """The temp table ``ytd`` (bill, ytd, ytd_known): the year-to-date metered energy before the period,
    from the readings of ``yseg`` (see :func:`billing_core.run.year_to_date_from_readings`)."""
    # the readings at each segment's ends: the install / removal reading of a meter changed in the span,
    # else the 00:00 frozen reading of that day (monthly settlement on the 1st, else the daily freeze)
    con.execute("""CREATE TEMP TABLE yneed AS
        SELECT DISTINCT meter_id, date FROM (
            SELECT meter_id, seg_from AS date FROM yseg WHERE NOT (seg_from = meter_from AND seg_from > ytd_from)
            UNION ALL SELECT meter_id, seg_to FROM yseg WHERE NOT (seg_to = meter_to AND seg_to < $s
                                                                  AND removal IS NOT NULL)) x""")
    need = _read(con, "SELECT DISTINCT date, meter_id FROM yneed ORDER BY ALL")
    if len(need["meter_id"]):
        days = np.asarray(need["date"], "datetime64[D]")
        b = lake.buckets_of(np.asarray(need["meter_id"], np.int64)).astype(np.int64)
        buckets: dict[dt.date, set[int]] = {}
        for d, k in np.unique(np.stack([days.astype(np.int64), b]), axis=1).T:
            buckets.setdefault(dt.date(1970, 1, 1) + dt.timedelta(days=int(d)), set()).add(int(k))
        firsts = [d for d in buckets if d.day == 1]
        mon = _readings(raw, lfs, root, schema.MONTHLY, firsts, {d: buckets[d] for d in firsts}, "_lake_ymon")
        day = _readings(raw, lfs, root, schema.DAILY, list(buckets), buckets, "_lake_yday")
        flt = "r SEMI JOIN yneed n ON r.meter_id = n.meter_id AND r.date = n.date"
        con.execute(f"CREATE TEMP TABLE ymon AS {mon.replace('@FILTER@', flt)}")
        con.execute(f"CREATE TEMP TABLE yday AS {day.replace('@FILTER@', flt)}")
    else:
        empty = pivot_files([])
        con.execute(f"CREATE TEMP TABLE ymon AS {empty}")
        con.execute(f"CREATE TEMP TABLE yday AS {empty}")
    ys = _read(con, _segment_readings("yseg", "ymon", "yday", "s.ytd_from", "$s", ("ae_fwd",)))
    n = _count(raw, "cust")
    bill = con.execute("SELECT bill, ytd_opening FROM cust ORDER BY bill").fetchnumpy()
    ytd, known = R.year_to_date_from_readings(
        n, np.asarray(bill["ytd_opening"], np.int64), np.asarray(ys["seg_bill"], np.int64),
        np.asarray(ys["prev_ae_fwd"], np.int64), np.asarray(ys["now_ae_fwd"], np.int64),
        np.asarray(ys["ct"], np.int64) * np.asarray(ys["pt"], np.int64), np.asarray(ys["digits"], np.int64) + 2)
    raw.register("_ytd", pa.table({"bill": np.arange(n, dtype=np.int64), "ytd": ytd, "ytd_known": known}))
    raw.execute("CREATE TEMP TABLE ytd AS SELECT * FROM _ytd")


def _extract(con: duckdb.DuckDBPyConnection, data: Data, root: pathlib.Path, period: str, start: dt.date,
             end: dt.date, own: bool = False, lfs: lakefs.Lake | None = None, home: set[int] | None = None,
             tariffs: TariffSet | None = None) -> tuple[R.RunInput, pa.Table]:
    raw, dcon = con, _Con(con, {"s": start, "e": end})
    if home is None:
        _archive_phase(dcon, period, own, tariffs)
    else:                   # prepared by the driver (prepare): its rows as DuckDB tables
        raw.execute("CREATE TEMP TABLE cust AS SELECT * FROM _prepared_cust")
        raw.execute("CREATE TEMP TABLE seg AS SELECT * FROM _prepared_seg")
        raw.execute("CREATE TEMP TABLE yseg AS SELECT * FROM _prepared_yseg")
        raw.execute("CREATE TEMP TABLE cchg AS SELECT * FROM _prepared_cchg")
        raw.execute("CREATE TEMP TABLE cday AS SELECT * FROM _prepared_cday")
    buckets: set[int] | None = None
    mine = ""
    if own:     # one task of billing_core.jobs.dist: the buckets of its meters, the rows of its meters
        metered = np.asarray(_read(dcon, "SELECT DISTINCT meter_id FROM seg")["meter_id"], np.int64)
        buckets = {int(b) for b in lake.buckets_of(metered)}
        mine = "r SEMI JOIN (SELECT DISTINCT meter_id FROM seg) sm ON r.meter_id = sm.meter_id"
        if home is not None:        # the other buckets' rows came from the driver (_prepared_foreign)
            buckets &= set(home)
    mon = _readings(raw, lfs, root, schema.MONTHLY, (start, end), buckets, "_lake_mon").replace("@FILTER@", mine)
    if home is not None:
        mon = f"{mon}\nUNION ALL\nSELECT * FROM _prepared_foreign {mine}"
    dcon.execute(f"CREATE TEMP TABLE mon AS {mon}")
    # the daily frozen readings needed: change days, removals, and where the monthly one is missing
    dcon.execute("""CREATE TEMP TABLE need AS
        SELECT DISTINCT meter_id, date FROM (
            SELECT meter_id, seg_from AS date FROM seg WHERE NOT (seg_from = meter_from AND seg_from > $s)
            UNION ALL SELECT meter_id, seg_to FROM seg
            UNION ALL SELECT s.meter_id, c.date FROM cday c JOIN seg s ON s.bill = c.bill
                      AND c.date >= s.seg_from AND c.date < s.seg_to
        ) x WHERE NOT EXISTS (SELECT 1 FROM mon WHERE mon.meter_id = x.meter_id AND mon.date = x.date
                                                  AND mon.ae_fwd IS NOT NULL)""")
    dates = [r[0] for r in dcon.execute("SELECT DISTINCT date FROM need").fetchall()]
    # of a day, only the buckets holding a needed reading (a replaced meter's swap day is in one or two)
    need = _read(dcon, "SELECT DISTINCT date, meter_id FROM need ORDER BY ALL")
    pairs = np.unique(np.stack([np.asarray(need["date"], "datetime64[D]").astype(np.int64),
                                lake.buckets_of(np.asarray(need["meter_id"], np.int64)).astype(np.int64)]), axis=1)
    day_buckets: dict[dt.date, set[int]] = {}
    for d, b in pairs.T:
        day_buckets.setdefault(dt.date(1970, 1, 1) + dt.timedelta(days=int(d)), set()).add(int(b))
    daily = _readings(raw, lfs, root, schema.DAILY, dates, day_buckets, "_lake_day")
    dcon.execute(f"CREATE TEMP TABLE day AS {daily.replace('@FILTER@', 'r SEMI JOIN need n ON r.meter_id = n.meter_id AND r.date = n.date')}")

    seg = _read(dcon, _segment_readings("seg", "mon", "day", "$s", "$e", _REGS))
    # the annual tiers' year-to-date, from readings (never from a chain of earlier bills)
    _year_to_date(dcon, raw, lfs, root, start)
    # earlier bills: the history for the jump check
    prev_files = earlier_bills(data, period)
    if prev_files:
        lst = ", ".join(f"'{_q(f)}'" for f in prev_files)
        dcon.execute(f"""CREATE TEMP TABLE hist AS
            SELECT customer_id,
                   sum(CASE WHEN status <> 'held' AND rk <= 3 THEN e_metered_kwh_x100 END) AS hist_e,
                   sum(CASE WHEN status <> 'held' AND rk <= 3 THEN days END) AS hist_days
            FROM (SELECT *, dense_rank() OVER (ORDER BY period DESC) AS rk FROM read_parquet([{lst}]))
            {"WHERE customer_id IN (SELECT customer_id FROM own)" if own else ""}
            GROUP BY customer_id""")
    else:
        dcon.execute("CREATE TEMP TABLE hist (customer_id BIGINT, hist_e BIGINT, hist_days BIGINT)")
    t = arrow_table(dcon.execute("""
        SELECT c.*, EXISTS (SELECT 1 FROM seg s WHERE s.bill = c.bill) AS has_point,
               y.ytd AS cum_prev, y.ytd_known, coalesce(h.hist_e, 0) AS hist_e,
               coalesce(h.hist_days, 0) AS hist_days,
               coalesce(datediff('day', DATE '1970-01-01', c.change_date), -1) AS change_date_days
        FROM cust c
        LEFT JOIN hist h ON h.customer_id = c.customer_id
        JOIN ytd y ON y.bill = c.bill
        ORDER BY c.bill"""))
    # the assignment changes, and the frozen reading on each day the month may be split on (of the segment
    # holding that day)
    changes = arrow_table(dcon.execute("""SELECT bill, datediff('day', DATE '1970-01-01', change_date) AS days,
                                           tariff_code FROM cchg ORDER BY bill, change_date"""))
    frozen = _read(dcon, _frozen_sql())
    cat = t.column("category").combine_chunks().dictionary_encode()
    codes = pa.chunked_array([t.column("tariff_code"), t.column("new_tariff_code"),
                              changes.column("tariff_code")]).combine_chunks().dictionary_encode()
    n = t.num_rows
    code_idx = codes.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    def num(name: str) -> np.ndarray:
        col: np.ndarray = t.column(name).to_numpy(zero_copy_only=False)
        return col

    bill = {
        "category_idx": cat.indices.to_numpy(zero_copy_only=False).astype(np.int64),
        "voltage_v": num("voltage_v").astype(np.int64),
        "change_date_days": num("change_date_days").astype(np.int64),
        "has_point": num("has_point").astype(bool), "hv_lv": num("hv_lv").astype(bool),
        "cum_prev": num("cum_prev").astype(np.int64), "hist_e": num("hist_e").astype(np.int64),
        "hist_days": num("hist_days").astype(np.int64), "pf_std_x100": num("pf_std_x100").astype(np.int64),
        "ytd_known": num("ytd_known").astype(bool),
        # the tariff assignment at the period start and its change (into inp.tariff_codes; −1 none)
        "tariff_code_idx": code_idx[:n], "new_tariff_code_idx": code_idx[n:2 * n],
    }
    chg = {"bill": changes.column("bill").to_numpy(zero_copy_only=False).astype(np.int64),
           "days": changes.column("days").to_numpy(zero_copy_only=False).astype(np.int64), "code_idx": code_idx[2 * n:]}
    frz = {k: np.asarray(v).astype(np.int64) for k, v in frozen.items()}
    # the kernel's code of each basic-charge method (BASIC_KINDS), mapped once per distinct name
    basic = t.column("basic").combine_chunks().dictionary_encode()
    codes_of = np.array([BASIC_KINDS.get(v, 0) for v in basic.dictionary.to_pylist()] or [0], np.int64)
    bill["basic_idx"] = codes_of[basic.indices.to_numpy(zero_copy_only=False)] if n else np.zeros(0, np.int64)
    for k in ("tx_capacity_kva", "tx_p0_w", "tx_pk_w", "tx_loss_rate_bp", "line_loss_rate_bp", "contract_kw",
              "tx_i0_x100", "tx_uk_x100", "tx_q_loss_rate_bp"):
        bill[k] = num(k).astype(np.int64)
    segcols = {k: np.asarray(v) for k, v in seg.items()}
    for k in segcols:
        if k == "tou_check":
            segcols[k] = segcols[k].astype(bool)
        elif k.endswith("quality"):
            segcols[k] = segcols[k].astype(np.uint8)
        else:
            segcols[k] = segcols[k].astype(np.int64)
    inp = R.RunInput(start, end, [str(x) for x in cat.dictionary.to_pylist()], [str(x) for x in codes.dictionary.to_pylist()],
                     bill, segcols, chg, frz)
    text = t.select(["customer_id", "customer_no", "name", "category", "voltage_v", "tariff_code", "new_tariff_code",
                     "point_id"])
    return inp, text


def _frozen_sql() -> str:
    """The frozen reading (monthly settlement where it has the total, else the daily freeze) of each ``cday``
    row, of the segment holding that day: ``bill``, ``days`` (since 1970-01-01), a column per register."""
    regs = ",\n".join(f"coalesce(CASE WHEN dm.ae_fwd IS NOT NULL THEN dm.{r} ELSE dd.{r} END, -1) AS {r}"
                      for r in _REGS)
    return f"""
        SELECT c.bill, datediff('day', DATE '1970-01-01', c.date) AS days, {regs}
        FROM cday c
        LEFT JOIN (SELECT DISTINCT ON (c2.bill, c2.date) c2.bill, c2.date, s2.meter_id FROM cday c2
                   JOIN seg s2 ON s2.bill = c2.bill AND c2.date >= s2.seg_from AND c2.date < s2.seg_to
                   ORDER BY c2.bill, c2.date, s2.seg_from) cs ON cs.bill = c.bill AND cs.date = c.date
        LEFT JOIN mon dm ON dm.meter_id = cs.meter_id AND dm.date = c.date
        LEFT JOIN day dd ON dd.meter_id = cs.meter_id AND dd.date = c.date
        ORDER BY c.bill, c.date"""


def prepare(data: Data, period: str, tasks: Mapping[int, tuple[Iterable[int], np.ndarray]],
            lake_uri: str | None = None, tariffs: TariffSet | None = None) -> dict[int, dict[str, Any]]:
    """What each task of a split bill run needs besides the lake, made in one pass over the archive for all
    of them (a task that queried the archive itself would scan all of it for its share):

    ``cust`` and ``seg`` — its rows of :func:`_extract`'s temp tables (bills numbered within the task);
    ``home`` — its lake buckets; ``foreign`` — the monthly readings (``mon`` rows) of its meters outside
    them: replaced meters whose new meter hashed elsewhere, ~1 % a month, read once for every task so that
    a task scans only its home buckets' monthly partitions.

    ``tasks``: key → (home buckets, customer ids); every customer of the archive in exactly one.  A customer
    without a tariff assignment fails here, before any task runs.  Returns key → that dict."""
    start, end = period_bounds(period)
    keys = sorted(tasks)
    ids = np.concatenate([np.asarray(tasks[k][1], np.int64) for k in keys]) if keys else np.zeros(0, np.int64)
    task = np.concatenate([np.full(len(tasks[k][1]), i, np.int64) for i, k in enumerate(keys)]) if keys else ids
    con = archive_con(data)
    try:
        _archive_phase(_Con(con, {"s": start, "e": end}), period, own=False, tariffs=tariffs)
        # sorted by task in DuckDB (parallel), then bills renumbered within each task (still customer order)
        con.register("own", pa.table({"customer_id": ids, "_task": task}))
        cust = arrow_table(con.execute("SELECT o._task, c.* FROM cust c JOIN own o USING (customer_id) "
                                  "ORDER BY o._task, c.bill"))
        seg = arrow_table(con.execute("SELECT o._task, s.* FROM seg s JOIN cust c USING (bill) "
                                 "JOIN own o USING (customer_id) ORDER BY o._task, s.bill, s.seg_from"))
        yseg = arrow_table(con.execute("SELECT o._task, s.* FROM yseg s JOIN cust c USING (bill) "
                                  "JOIN own o USING (customer_id) ORDER BY o._task, s.bill, s.seg_from"))
        by_bill = {name: arrow_table(con.execute(f"SELECT o._task, x.* FROM {name} x JOIN cust c USING (bill) "
                                            f"JOIN own o USING (customer_id) ORDER BY o._task, x.bill, x.{col}"))
                   for name, col in (("cchg", "change_date"), ("cday", "date"))}
        n_cust = _count(con, "cust")
        if cust.num_rows != n_cust:
            raise StorageError(f"bill run {period}: {n_cust - cust.num_rows} customer(s) in no task; nothing was billed")
        t_of = cust.column("_task").to_numpy()
        c_lo = np.searchsorted(t_of, np.arange(len(keys) + 1))
        new_bill = np.arange(len(t_of)) - np.repeat(c_lo[:-1], np.diff(c_lo))
        new_of_old = np.empty(len(t_of), np.int64)
        new_of_old[cust.column("bill").to_numpy()] = new_bill
        m_task = seg.column("_task").to_numpy()
        s_lo = np.searchsorted(m_task, np.arange(len(keys) + 1))
        cust = _with_bill(cust.drop_columns(["_task"]), new_bill)
        seg = _with_bill(seg.drop_columns(["_task"]), new_of_old[seg.column("bill").to_numpy()])
        y_task = yseg.column("_task").to_numpy()
        y_lo = np.searchsorted(y_task, np.arange(len(keys) + 1))
        yseg = _with_bill(yseg.drop_columns(["_task"]), new_of_old[yseg.column("bill").to_numpy()])
        lo_of: dict[str, np.ndarray] = {}
        for name, tb in by_bill.items():
            lo_of[name] = np.searchsorted(tb.column("_task").to_numpy(), np.arange(len(keys) + 1))
            by_bill[name] = _with_bill(tb.drop_columns(["_task"]), new_of_old[tb.column("bill").to_numpy()])
        # meters outside the task's home buckets, and their monthly readings in one pass
        meter = seg.column("meter_id").to_numpy()
        home = np.zeros((len(keys), schema.N_BUCKETS), bool)
        for i, k in enumerate(keys):
            home[i, sorted(tasks[k][0])] = True
        b = lake.buckets_of(meter).astype(np.int64)
        away = ~home[m_task, b] if len(meter) else np.zeros(0, bool)
        con.register("fm", pa.table({"meter_id": np.unique(meter[away])}))
        sel = _readings(con, lakefs.configured(lake_uri), lake_root(data), schema.MONTHLY, (start, end),
                        {int(x) for x in b[away]}, "_lake_fm")
        rows = arrow_table(con.execute(sel.replace("@FILTER@", "r SEMI JOIN fm ON r.meter_id = fm.meter_id")))
    except duckdb.Error as exc:
        raise StorageError(f"bill run {period}: reading {data_dir(data)}: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    rm = rows.column("meter_id").to_numpy()
    out: dict[int, dict[str, Any]] = {}
    for i, k in enumerate(keys):
        mine = meter[s_lo[i]:s_lo[i + 1]][away[s_lo[i]:s_lo[i + 1]]]
        out[k] = {"cust": cust.slice(c_lo[i], c_lo[i + 1] - c_lo[i]).combine_chunks(),
                  "seg": seg.slice(s_lo[i], s_lo[i + 1] - s_lo[i]).combine_chunks(),
                  "yseg": yseg.slice(y_lo[i], y_lo[i + 1] - y_lo[i]).combine_chunks(),
                  **{name: tb.slice(lo_of[name][i], lo_of[name][i + 1] - lo_of[name][i]).combine_chunks()
                     for name, tb in by_bill.items()},
                  "home": set(tasks[k][0]), "foreign": rows.filter(pa.array(np.isin(rm, mine)))}
    return out


def _with_bill(t: pa.Table, bill: np.ndarray) -> pa.Table:
    return t.set_column(t.schema.get_field_index("bill"), "bill", pa.array(bill, t.schema.field("bill").type))


def earlier_bills(data: Data, period: str) -> list[str]:
    root = bills_root(data)
    out: list[str] = []
    for d in sorted(root.glob("period=*")):
        p = d.name.split("=", 1)[1]
        if p < period and (d / "bills.parquet").exists():
            out.append(str(d / "bills.parquet"))
    return out[-12:]


# --- the run ----------------------------------------------------------------------------------------------
class _Lock:
    def __init__(self, root: pathlib.Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.f = open(root / ".lock", "a+")

    def __enter__(self) -> _Lock:
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def _clean(root: pathlib.Path) -> None:
    """Remove what a crashed run left: staging and spill directories (never visible to readers; a spill
    directory only once its run is gone, see :class:`Parts`)."""
    for d in root.glob(".staging-*"):
        shutil.rmtree(d, ignore_errors=True)
    _clean_spills(root)


def _dict_col(indices: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    # a dictionary with repeated values (the tariff keys of the basic/力调 variants, the units of the line
    # items) is made unique first: pyarrow's Parquet writer sizes the dictionary page by the values but
    # writes each distinct one once, leaving stray bytes — the same bills would not give the same file
    first: dict[str, int] = {}
    remap = np.array([first.setdefault(v, len(first)) for v in values], np.int32)
    if len(first) < len(values):
        indices, values = remap[np.asarray(indices, np.int64)], list(first)
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(values, pa.string()))


def build_tables(period: str, inp: _Span, text: pa.Table, out: dict[str, np.ndarray], items: dict[str, np.ndarray],
                 table: TariffTable) -> tuple[pa.Table, pa.Table]:
    """The bills and bill_items Arrow tables of a computed period (deterministic: no clock)."""
    ids = bill_id(period, text.column("customer_id").to_numpy())
    n = len(ids)
    ridx, rtexts = R.reason_text(out["flags"])
    zidx, ztexts = R.reason_text(out["flags"], zh=True)
    keys = table.keys
    rows = out["tariff_row"]
    tk = [f"{c} {v} {e} {s}" for c, v, e, s in keys]
    days = (inp.end - inp.start).days
    cols = {
        "bill_id": pa.array(ids, pa.int64()), "period": pa.array(np.full(n, period), pa.string()),
        "customer_id": text.column("customer_id"), "customer_no": text.column("customer_no"),
        "name": text.column("name"), "category": text.column("category"), "voltage_v": text.column("voltage_v"),
        "tariff_code": text.column("tariff_code"), "new_tariff_code": text.column("new_tariff_code"),
        "point_id": text.column("point_id"),
        "tariff": _dict_col(rows % len(keys), tk),
        "new_tariff": pa.array(np.where(out["new_row"] >= 0, np.array(tk, object)[np.maximum(out["new_row"], 0) % len(keys)],
                                        None), pa.string()),
        "change_day": pa.array(out["change_day"].astype(np.int16)),
        "days": pa.array(np.full(n, days, np.int16)),
        "segments": pa.array(out["segments"].astype(np.int16)), "parts": pa.array(out["parts"].astype(np.int16)),
    }
    for c in R.PERIOD_COLS:
        cols[f"{c}_kwh_x100"] = pa.array(out[c])
    cols.update({
        "e_total_kwh_x100": pa.array(out["e_total"]), "e_metered_kwh_x100": pa.array(out["e_metered"]),
        "loss_kwh_x100": pa.array(out["loss_p"]), "q_kvarh_x100": pa.array(out["q"]),
        "reverse_kwh_x100": pa.array(out["rev"]), "demand_kw_x1e4": pa.array(out["demand"]),
        "cum_after_kwh_x100": pa.array(out["cum_after"]),
        "tier2_kwh_x100": pa.array(out["tier2_kwh_x100"]), "tier3_kwh_x100": pa.array(out["tier3_kwh_x100"]),
        "billing_demand": pa.array(out["billing_demand"]),
        "pf_x100": pa.array(out["pf_x100"]), "pf_bp": pa.array(out["pf_bp"]),
    })
    for k in ("energy_sharp_fen", "energy_peak_fen", "energy_flat_fen", "energy_valley_fen", "tier2_fen",
              "tier3_fen", "basic_fen", "pf_adjust_fen", "funds_fen", "total_fen"):
        cols[k] = pa.array(out[k])
    held = out["held"]
    cols.update({
        "flags": pa.array(out["flags"].astype(np.int32)),
        "status": _dict_col(np.where(held, 1, 0), list(STATUS)),
        "reasons": _dict_col(ridx, rtexts), "reasons_zh": _dict_col(zidx, ztexts),
        "released_by": pa.nulls(n, pa.string()), "released_at": pa.nulls(n, pa.string()),
        "release_note": pa.nulls(n, pa.string()),
    })
    bills = pa.table(cols)
    code = items["code"].astype(np.int32)
    it = pa.table({
        "bill_id": pa.array(ids[items["bill"]]), "period": _dict_col(np.zeros(len(code), np.int32), [period]),
        "customer_no": text.column("customer_no").take(pa.array(items["bill"])),
        "seq": pa.array(items["seq"]),
        "code": _dict_col(code, [c[0] for c in R.ITEM_CODES]),
        "label_zh": _dict_col(code, [c[1] for c in R.ITEM_CODES]),
        "label_en": _dict_col(code, [c[2] for c in R.ITEM_CODES]),
        "quantity": pa.array(items["quantity"]),
        "quantity_unit": _dict_col(code, [c[3] for c in R.ITEM_CODES]),
        "quantity_decimals": pa.array(np.array([c[4] for c in R.ITEM_CODES], np.int8)[code]),
        "unit_price": pa.array(items["unit_price"].astype(np.int64)),
        "amount_fen": pa.array(items["amount_fen"]),
    })
    return bills, it


def _read_pq(path: lake.StrPath, columns: list[str] | None = None) -> pa.Table:
    """One file as written (no Hive inference from the ``period=`` directory name)."""
    return pq.ParquetFile(path).read(columns=columns)


def _publish(root: pathlib.Path, period: str, files: Mapping[str, bytes | str], staging: pathlib.Path) -> pathlib.Path:
    """Add ``files`` (name → bytes or str) to ``staging`` (:func:`_new_staging`, already holding the Parquet
    files), fsync, and swap it in as the whole partition, atomically."""
    for name, content in files.items():
        with open(staging / name, "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode())
            f.flush()
            os.fsync(f.fileno())
    lake.fsync_dir(staging)
    live = root / f"period={period}"
    if live.exists():
        lake.exchange_dirs(staging, live)
        lake.fsync_dir(root)
        shutil.rmtree(staging, ignore_errors=True)
    else:
        os.rename(staging, live)
        lake.fsync_dir(root)
    return live


def _new_staging(root: pathlib.Path) -> pathlib.Path:
    staging = root / f".staging-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    return staging


def _releases(live: pathlib.Path) -> tuple[pa.Table | None, bytes]:
    """The released bills of the live partition (bill_id, total_fen, flags and who/when/note; None when there
    are none) and its reviews log: a re-run keeps the release of a bill whose content did not change (same
    total and reasons)."""
    old_path = live / "bills.parquet"
    reviews = (live / "reviews.jsonl").read_bytes() if (live / "reviews.jsonl").exists() else b""
    if not old_path.exists():
        return None, b""
    old = _read_pq(old_path, columns=["bill_id", "total_fen", "flags", "status", "released_by",
                                           "released_at", "release_note"])
    rel = old.filter(pa.compute.equal(old.column("status").cast(pa.string()), "released"))
    return (rel if rel.num_rows else None), reviews


def _keep_releases(bills: pa.Table, rel: pa.Table | None) -> pa.Table:
    """``bills`` (bill_id ascending) with the releases of ``rel`` (:func:`_releases`) whose bill is among them."""
    if rel is None or bills.num_rows == 0:
        return bills
    bid = bills.column("bill_id").to_numpy()
    rid = rel.column("bill_id").to_numpy()
    hit = (rid >= bid[0]) & (rid <= bid[-1])
    if not hit.any():
        return bills
    sub = rel.filter(pa.array(hit))
    return _apply_release(bills, sub.column("bill_id").to_numpy(), sub, match=True)


def _apply_release(bills: pa.Table, ids: np.ndarray, rel: pa.Table, match: bool = False) -> pa.Table:
    """Set status 'released' and who/when/note of bills ``ids`` from the rows of ``rel`` (same order)."""
    bid = bills.column("bill_id").to_numpy()
    pos = np.searchsorted(bid, ids)
    pos = np.minimum(pos, len(bid) - 1) if len(bid) else pos
    ok = (bid[pos] == ids) if len(bid) else np.zeros(len(ids), bool)
    if match:
        ok &= bills.column("total_fen").to_numpy()[pos] == rel.column("total_fen").to_numpy()
        ok &= bills.column("flags").to_numpy()[pos] == rel.column("flags").to_numpy()
    status = bills.column("status").combine_chunks()       # a dictionary as read back: indices by its values
    remap = np.array([STATUS.index(v) for v in status.dictionary.to_pylist()] or [0], np.int32)
    idx = remap[status.indices.to_numpy(zero_copy_only=False)]
    idx[pos[ok]] = STATUS.index("released")
    cols = {}
    for c in ("released_by", "released_at", "release_note"):
        vals = bills.column(c).to_pylist()
        new = rel.column(c).to_pylist()
        for j in np.flatnonzero(ok):
            vals[pos[j]] = new[j]
        cols[c] = pa.array(vals, pa.string())
    out = bills.set_column(bills.schema.get_field_index("status"), "status", _dict_col(idx, list(STATUS)))
    for c, v in cols.items():
        out = out.set_column(out.schema.get_field_index(c), c, v)
    return out


# --- computed bills in parts, merged into the published files a row group at a time -------------------------
ROW_GROUP = 1 << 20         # bills per row group of bills.parquet (bill_items: the items of those bills)
CHUNK = 2_000_000           # customers per part of a single-node run (bounds its memory: ~2.2 GB per million)
_OUT = "o:"                 # prefix of the computed columns beside the text columns in a part's table


class Parts:
    """The computed bills of one period as parts — each part's bills in customer order, the parts disjoint
    (one part: the whole run; several: the chunks of a large single-node run, or the tasks of billing_core.jobs.dist)
    — held in memory or spilled to Arrow IPC files under ``bills/.spill-<uuid>/``, then merged in customer
    order :data:`ROW_GROUP` bills at a time (:meth:`groups`), so writing 10M bills never holds them all.

    A part is two tables: the customers' text columns with the computed per-bill columns (prefixed
    ``o:``), and the line items (``bill`` = the bill's position in its part).  A spill directory carries a
    ``lock`` file this process holds (flock) while it runs; :func:`_clean` removes only directories whose
    lock it can take — those of a run that died."""

    def __init__(self, root: pathlib.Path, spill: bool) -> None:
        self.root, self.spill = root, spill
        self.parts: list[tuple[pa.Table, pa.Table]] = []
        self.dir: pathlib.Path | None = None
        self._lock: IO[str] | None = None

    def add(self, text: pa.Table, out: dict[str, np.ndarray], items: dict[str, np.ndarray]) -> None:
        b, it = part_tables(text, out, items)
        if self.spill:
            b, it = (_read_ipc(write_ipc(self.spill_dir(), t)) for t in (b, it))
        self.parts.append((b, it))

    def adopt(self, bills_file: str, items_file: str) -> None:
        """A part another process wrote into :meth:`spill_dir` (:func:`part_tables`, :func:`write_ipc`)."""
        for f in (bills_file, items_file):      # resolved: a relative data directory names it differently
            if self.dir is None or pathlib.Path(f).resolve().parent != self.dir.resolve():
                raise StorageError(f"{f}: not in this run's spill directory {self.dir}")
        self.parts.append((_read_ipc(bills_file), _read_ipc(items_file)))

    def spill_dir(self) -> pathlib.Path:
        """The run's spill directory, made (and locked) on first use."""
        if self.dir is None:            # made aside with its lock held, then renamed: see _clean_spills
            self.root.mkdir(parents=True, exist_ok=True)
            name = uuid.uuid4().hex
            tmp = self.root / f".spilltmp-{name}"
            tmp.mkdir()
            self._lock = open(tmp / "lock", "w")
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            os.rename(tmp, self.root / f".spill-{name}")
            self.dir = self.root / f".spill-{name}"
        return self.dir

    def __len__(self) -> int:
        return sum(b.num_rows for b, _ in self.parts)

    def groups(self) -> Iterator[tuple[pa.Table, dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """(text, out, items) of :data:`ROW_GROUP` bills at a time in customer order (items' ``bill``: the
        position in the group), every bill once."""
        ids = [b.column("customer_id").to_numpy() for b, _ in self.parts]
        bills_of = [it.column("bill").to_numpy() for _, it in self.parts]
        every = np.sort(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
        if len(every) > 1 and (every[1:] == every[:-1]).any():
            raise StorageError(f"customer {int(every[1:][every[1:] == every[:-1]][0])}: billed by two parts")
        for g0 in range(0, len(every), ROW_GROUP):
            first, last = every[g0], every[min(g0 + ROW_GROUP, len(every)) - 1]
            bs: list[pa.Table] = []
            its: list[tuple[pa.Table, int]] = []
            base = 0
            for (b, it), pid, ib in zip(self.parts, ids, bills_of):
                lo, hi = np.searchsorted(pid, first), np.searchsorted(pid, last, side="right")
                if hi == lo:
                    continue
                ilo, ihi = np.searchsorted(ib, lo), np.searchsorted(ib, hi)
                bs.append(b.slice(lo, hi - lo))
                its.append((it.slice(ilo, ihi - ilo), base - lo))
                base += hi - lo
            yield _merge_group(bs, its)

    def close(self) -> None:
        self.parts = []
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self._lock is not None:           # set with the directory (spill_dir)
                self._lock.close()
            self.dir = None


def part_tables(text: pa.Table, out: Mapping[str, npt.ArrayLike], items: Mapping[str, npt.ArrayLike]
                ) -> tuple[pa.Table, pa.Table]:
    """A computed part as its two tables (see :class:`Parts`)."""
    cols = {**{n: text.column(n) for n in text.column_names},
            **{_OUT + k: pa.array(np.asarray(v)) for k, v in out.items()}}
    return pa.table(cols), pa.table({k: pa.array(np.asarray(v)) for k, v in items.items()})


def write_ipc(directory: lake.StrPath, t: pa.Table) -> str:
    """``t`` as a new Arrow IPC file in ``directory`` (written aside, then renamed: a reader never sees a
    part of one; a task re-run after its worker died writes a new file)."""
    path = pathlib.Path(directory) / f"{uuid.uuid4().hex}.arrow"
    tmp = path.with_suffix(".tmp")
    with pa.OSFile(str(tmp), "wb") as f, pa.ipc.new_file(f, t.schema) as w:
        w.write_table(t, max_chunksize=ROW_GROUP)
    os.rename(tmp, path)
    return str(path)


def _read_ipc(path: lake.StrPath) -> pa.Table:
    """An IPC file memory-mapped (its pages are the page cache's, not this process's heap)."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def _empty_group(parts: Parts) -> tuple[pa.Table, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The (text, out, items) of no bills, typed like the parts' (a run over an archive without customers)."""
    if not parts.parts:
        raise BillingError("no customers to bill; nothing was published")
    b, it = parts.parts[0]
    return _merge_group([b.slice(0, 0)], [(it.slice(0, 0), 0)])


def _merge_group(bs: list[pa.Table], its: list[tuple[pa.Table, int]]
                 ) -> tuple[pa.Table, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Slices of parts (bills, and items with the shift of their bill index) → one group in customer order,
    in one chunk per column (the Parquet writer's pages must not depend on how the parts were cut)."""
    b = pa.concat_tables(bs).combine_chunks()
    cid = b.column("customer_id").to_numpy()
    order = None if len(cid) < 2 or (cid[1:] > cid[:-1]).all() else np.argsort(cid, kind="stable")
    if order is not None:
        b = b.take(pa.array(order))
    names = [n for n in b.column_names if not n.startswith(_OUT)]
    out = {n[len(_OUT):]: b.column(n).to_numpy() for n in b.column_names if n.startswith(_OUT)}
    bill = np.concatenate([t.column("bill").to_numpy().astype(np.int64) + shift for t, shift in its])
    bill_dtype = its[0][0].column("bill").to_numpy().dtype
    it = pa.concat_tables([t for t, _ in its]).combine_chunks()
    items = {n: it.column(n).to_numpy() for n in it.column_names if n != "bill"}
    if order is not None:                       # bill after bill in the new order; each bill's items keep theirs
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        bill = rank[bill]
        io = np.argsort(bill, kind="stable")
        bill = bill[io]
        items = {k: v[io] for k, v in items.items()}
    items["bill"] = bill.astype(bill_dtype)
    return b.select(names), out, items


def _clean_spills(root: pathlib.Path) -> None:
    """Remove the spill directories of runs that are gone: a ``.spill-*`` directory is renamed into place
    with its lock file held, so one whose lock can be taken has no live run; a ``.spilltmp-*`` left by a
    crash before that rename goes after an hour."""
    for d in root.glob(".spill-*"):
        try:
            fd = os.open(d / "lock", os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)          # held while its run is alive
            shutil.rmtree(d, ignore_errors=True)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
    for d in root.glob(".spilltmp-*"):
        try:
            if time.time() - d.stat().st_mtime > 3600:
                shutil.rmtree(d, ignore_errors=True)
        except FileNotFoundError:
            pass


def readings_seen(inp: R.RunInput) -> np.ndarray:
    """(customers, segments read at the period start, segments read at its end) of one extract."""
    seg = inp.seg
    return np.array([inp.n, int((seg["prev_ae_fwd"] >= 0).sum()), int((seg["now_ae_fwd"] >= 0).sum())], np.int64)


def refuse_unread_period(period: str, seen: Iterable[int]) -> None:
    """A period without any settlement reading at its start or its end is refused, not billed.

    Billing everyone as held "0 kWh" would publish a period that was simply never read:
    one line naming the period and the missing readings, exit status 1 (the operation cannot be done yet —
    collect or import the readings first); nothing is published.
    """
    customers, at_start, at_end = (int(x) for x in seen)
    if customers == 0 or (at_start and at_end):
        return
    start, end = period_bounds(period)
    missing = [f"{d} 00:00" for d, k in ((start, at_start), (end, at_end)) if k == 0]
    raise BillingError(f"period {period}: no settlement reading (月冻结 or 日冻结) at {' nor at '.join(missing)} "
                       f"for any of the {customers:,} customers' meters; collect or import them first — "
                       f"nothing was published")


def assign(data: Data, period: str, n_buckets: int = schema.N_BUCKETS) -> dict[int, np.ndarray]:
    """bucket → the sorted customer ids its task bills (the rule is in the docstring of ``jobs.dist``)."""
    start, end = period_bounds(period)
    arch = archive_path(data)
    con = archive_con(data)
    try:
        t = con.execute("""
            WITH pt AS (SELECT customer_id, point_id, row_number() OVER (PARTITION BY customer_id ORDER BY point_id) AS k
                        FROM a.points WHERE role = 'customer'),
                 hm AS (SELECT pt.customer_id, pm.meter_id, row_number() OVER (
                               PARTITION BY pt.customer_id ORDER BY pm.valid_from, pm.meter_id) AS j
                        FROM pt JOIN a.point_meters pm ON pm.point_id = pt.point_id AND pt.k = 1
                        WHERE pm.valid_from < $e AND (pm.valid_to IS NULL OR pm.valid_to > $s))
            SELECT c.customer_id, coalesce(hm.meter_id, -1) AS meter_id
            FROM a.customers c LEFT JOIN hm ON hm.customer_id = c.customer_id AND hm.j = 1
            ORDER BY c.customer_id""", {"s": start, "e": end}).fetchnumpy()
    except duckdb.Error as exc:
        raise StorageError(f"bill run {period}: reading {arch}: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    cid = np.asarray(t["customer_id"], np.int64)
    meter = np.asarray(t["meter_id"], np.int64)
    home = np.where(meter >= 0, meter, cid)
    b = lake.buckets_of(home, n_buckets)
    return {int(k): cid[b == k] for k in np.unique(b)}


def run(data: Data, period: str, tariffs_dir: str | os.PathLike[str] | None = None, progress: Tick | None = None,
        kernel: ModuleType | None = None, chunk: int = CHUNK) -> dict[str, Any]:
    """Compute and publish every bill of ``period``; the run summary (also written as summary.json).

    Up to ``chunk`` customers are computed at once; a larger archive is billed in chunks of whole lake
    buckets (the tasks of billing_core.jobs.dist, run one after another here) spilled to disk, so memory stays
    bounded — the bills are the same either way, and so are the files.  ``progress(step)`` is called
    after each of the steps (read, price, write, publish).  Raises a :class:`~protocols.errors.GridheadError`
    (one line) on bad input; then nothing is published.
    """
    tick = progress or (lambda _s: None)
    t0 = time.perf_counter()
    tariffs = TariffSet.load(tariffs_dir)
    tariffs.table()
    start, end = period_bounds(period)
    # (home buckets, customer ids); None: every customer at once
    chunks: Sequence[tuple[set[int] | None, np.ndarray | None]] = [(None, None)]
    prepared: dict[int, dict[str, Any]] = {}
    if chunk and _count_customers(data) > chunk:
        plan = assign(data, period)
        planned: list[tuple[list[int], list[np.ndarray]]] = []
        n = chunk
        for b in sorted(plan):
            if n + len(plan[b]) > chunk:
                planned.append(([], []))
                n = 0
            planned[-1][0].append(b)
            planned[-1][1].append(plan[b])
            n += len(plan[b])
        chunked = [(set(bs), np.sort(np.concatenate(ids))) for bs, ids in planned]
        chunks = chunked
        prepared = prepare(data, period, dict(enumerate(chunked)), tariffs=tariffs)
    parts = Parts(bills_root(data), spill=len(chunks) > 1)
    seen = np.zeros(3, np.int64)
    try:
        t_read, t_price = time.perf_counter() - t0, 0.0     # read: with the assignment and prepare of chunks
        t_prepare = t_read
        for i, (_home, ids) in enumerate(chunks):
            t1 = time.perf_counter()
            inp, text = extract(data, period, tariffs, customers=ids, prepared=prepared.pop(i, None))
            missing = sorted(set(inp.categories) - set(tariffs.tariffs))
            if missing:
                raise BillingError(f"category {missing[0]!r}: no tariff file in "
                                   f"{tariffs_dir or 'billing_core/tariffs'}; nothing was billed")
            seen += readings_seen(inp)
            t2 = time.perf_counter()
            out, items, table = R.compute(inp, tariffs, kernel)
            R.check_items(out, items)
            del inp
            parts.add(text, out, items)
            del out, items, text
            t_read += t2 - t1
            t_price += time.perf_counter() - t2
            if len(chunks) > 1:
                tick(f"chunk {len(parts.parts)}/{len(chunks)}")
        refuse_unread_period(period, seen)
        tick("read")
        tick("price")
        s = publish_run(data, period, (start, end), parts, table, t0, t_read, t_price, tick)
        s["seconds"]["prepare"] = round(t_prepare, 3)   # of "read": tariffs, and the chunks' assign + prepare
        return s
    finally:
        parts.close()


def archive_con(data: Data) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the data directory's archive attached read-only as ``a``."""
    arch = archive_path(data)
    if not arch.exists():
        raise StorageError(f"{arch}: no archive (run `gridhead archive import` first)")
    con = duck.connect()
    try:
        con.execute(f"ATTACH '{_q(arch.resolve())}' AS a (READ_ONLY)")
    except duckdb.Error as exc:
        con.close()
        raise StorageError(f"{arch}: {str(exc).splitlines()[0]}") from None
    return con


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None                       # count(*) gives one row
    return int(row[0])


def _count_customers(data: Data) -> int:
    con = archive_con(data)
    try:
        return _count(con, "a.customers")
    except duckdb.Error as exc:
        raise StorageError(f"{archive_path(data)}: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()


def publish_run(data: Data, period: str, span: tuple[dt.date, dt.date], parts: Parts, table: TariffTable | None,
                t0: float, t_read: float, t_price: float, tick: Tick) -> dict[str, Any]:
    """Write the computed ``parts`` as the period's partition and publish it (the last steps of :func:`run`,
    shared with the distributed run of ``billing_core.jobs.dist``, so both write the same files the same way): the
    bills merged in customer order a row group at a time, each group's tables built
    (:func:`build_tables`), releases kept, and both files written as they come (staging, then swap)."""
    inp = _Period(span[0], span[1])
    root = bills_root(data)
    with _Lock(root):
        _clean(root)
        rel, reviews = _releases(root / f"period={period}")
        staging = _new_staging(root)
        tick("write")
        totals = []
        wb: pq.ParquetWriter | None = None
        wi: pq.ParquetWriter | None = None
        with open(staging / "bills.parquet", "wb") as fb, open(staging / "bill_items.parquet", "wb") as fi, \
                concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                for text, out, items in parts.groups():
                    assert table is not None             # given whenever there are bills
                    bills, it = build_tables(period, inp, text, out, items, table)
                    bills = _keep_releases(bills, rel)
                    if wb is None:
                        wb = pq.ParquetWriter(fb, bills.schema, compression="zstd")
                        wi = pq.ParquetWriter(fi, it.schema, compression="zstd")
                    # the two files encode and compress side by side (Arrow releases the GIL while writing)
                    assert wi is not None                # made with wb
                    done = pool.submit(wi.write_table, it, row_group_size=ROW_GROUP)
                    wb.write_table(bills, row_group_size=ROW_GROUP)
                    done.result()
                    totals.append(bills.select(["status", "total_fen", "flags", "e_total_kwh_x100"]))
                    del bills, it
                if wb is None:          # no customers: the empty tables' schema
                    text, out, items = _empty_group(parts)
                    assert table is not None             # given whenever there are bills
                    bills, it = build_tables(period, inp, text, out, items, table)
                    pq.write_table(bills, fb, compression="zstd")
                    pq.write_table(it, fi, compression="zstd")
                    totals.append(bills)
            finally:
                for w in (wb, wi):
                    if w is not None:
                        w.close()
            for f in (fb, fi):
                f.flush()
                os.fsync(f.fileno())
        summary = _summary(period, pa.concat_tables([t.select(["status", "total_fen", "flags", "e_total_kwh_x100"])
                                                     for t in totals]))
        summary["seconds"] = {"read": round(t_read, 3), "price": round(t_price, 3)}
        files: dict[str, bytes | str] = {"reviews.jsonl": reviews} if reviews else {}
        files["summary.json"] = json.dumps(summary, ensure_ascii=False, indent=1)
        _publish(root, period, files, staging)
    summary["seconds"]["total"] = round(time.perf_counter() - t0, 3)
    tick("publish")
    return summary


def _summary(period: str, bills: pa.Table) -> dict[str, Any]:
    status = bills.column("status").to_numpy(zero_copy_only=False).astype(str) if bills.num_rows else np.zeros(0, str)
    total = bills.column("total_fen").to_numpy()
    flags = bills.column("flags").to_numpy()
    held = status == "held"
    by_reason = {R.REASONS[b]: int(((flags & b) != 0).sum()) for b in R.REASONS if ((flags & b) != 0).any()}
    return {"period": period, "bills": int(len(total)), "issued": int((status == "issued").sum()),
            "held": int(held.sum()), "released": int((status == "released").sum()),
            "total_fen": int(total.sum()), "issued_fen": int(total[~held].sum()),
            "energy_kwh_x100": int(bills.column("e_total_kwh_x100").to_numpy().sum()),
            "held_by_reason": by_reason}


def summary(data: Data, period: str) -> dict[str, Any]:
    """The billing summary of a published period (for ``gridhead demo``): counts, money, holds by reason.

    Keys: period, bills, issued, held, released, total_fen, issued_fen, energy_kwh_x100,
    held_by_reason ({reason: count}).  Recomputed from bills.parquet, so releases are counted.
    """
    p = partition(data, period) / "bills.parquet"
    if not p.exists():
        raise BillingError(f"period {period}: no bills (run `gridhead bill run --period {period}` first)")
    return _summary(period, _read_pq(p))


# --- review and show -----------------------------------------------------------------------------------
def read_bills(data: Data, period: str | None = None, filter_sql: str = "") -> pa.Table:
    root = bills_root(data)
    parts = [partition(data, period)] if period else sorted(root.glob("period=*"))
    files = [str(d / "bills.parquet") for d in parts if (d / "bills.parquet").exists()]
    if not files:
        raise BillingError(f"no bills{' for ' + period if period else ''} in {root}")
    con = duck.connect()
    try:
        lst = ", ".join(f"'{_q(f)}'" for f in files)
        return arrow_table(con.execute(f"SELECT * FROM read_parquet([{lst}]) {filter_sql} ORDER BY bill_id"))
    finally:
        con.close()


def held(data: Data, period: str | None = None) -> pa.Table:
    """Held bills (status 'held'), with their reasons."""
    return read_bills(data, period, "WHERE status = 'held'").select(
        ["bill_id", "period", "customer_no", "name", "category", "e_total_kwh_x100", "total_fen", "reasons",
         "reasons_zh"])


def release(data: Data, bill_ids: Iterable[int], by: str, note: str = "") -> dict[str, Any]:
    """Release held bills (核算审核 passed): status 'released', who, when and note recorded.

    Idempotent: a bill already released keeps its first release.  Unknown ids raise (nothing changes).
    Returns ``{"released": [...], "already": [...]}``.
    """
    if not by or not by.strip():
        raise BillingError("release: --by NAME is required (who released the bills)")
    ids = sorted({int(b) for b in bill_ids})
    by_period: dict[str, list[int]] = {}
    for b in ids:
        yyyymm = b // 10 ** 11
        by_period.setdefault(f"{yyyymm // 100:04d}-{yyyymm % 100:02d}", []).append(b)
    root = bills_root(data)
    done, already = [], []
    with _Lock(root):
        _clean(root)
        plans = []
        for period, pids in by_period.items():
            live = root / f"period={period}"
            if not (live / "bills.parquet").exists():
                raise BillingError(f"bill {pids[0]}: no bills for period {period}")
            bills = _read_pq(live / "bills.parquet", columns=["bill_id", "status"])
            bid = bills.column("bill_id").to_numpy()
            status = bills.column("status").to_numpy(zero_copy_only=False).astype(str)
            pos = np.searchsorted(bid, pids)
            for b, j in zip(pids, pos):
                if j >= len(bid) or bid[j] != b:
                    raise BillingError(f"bill {b}: no such bill in period {period}")
                if status[j] == "issued":
                    raise BillingError(f"bill {b}: not held (status issued), nothing to release")
            todo = [b for b, j in zip(pids, pos) if status[j] == "held"]
            already += [b for b, j in zip(pids, pos) if status[j] == "released"]
            plans.append((period, live, todo))
        when = dt.datetime.now(dt.timezone.utc).astimezone(schema.LOCAL_TZ).isoformat(timespec="seconds")
        for period, live, todo in plans:
            if not todo:
                continue
            todo_ids = np.array(todo, np.int64)
            rel = pa.table({"released_by": pa.array([by] * len(todo)), "released_at": pa.array([when] * len(todo)),
                            "release_note": pa.array([note] * len(todo))})
            reviews = (live / "reviews.jsonl").read_bytes() if (live / "reviews.jsonl").exists() else b""
            reviews += "".join(json.dumps({"bill_id": b, "action": "release", "by": by, "at": when, "note": note},
                                          ensure_ascii=False) + "\n" for b in todo).encode()
            staging = _new_staging(root)
            # the bills a row group at a time (memory bounded by one group); the items do not change: linked
            totals = []
            src = pq.ParquetFile(live / "bills.parquet")
            with open(staging / "bills.parquet", "wb") as f:
                with pq.ParquetWriter(f, src.schema_arrow, compression="zstd") as w:
                    for g in range(src.num_row_groups):
                        t = src.read_row_group(g)
                        bid = t.column("bill_id").to_numpy()
                        hit = (todo_ids >= bid[0]) & (todo_ids <= bid[-1]) if len(bid) else todo_ids < 0
                        if hit.any():
                            t = _apply_release(t, todo_ids[hit], rel.filter(pa.array(hit)))
                        w.write_table(t, row_group_size=ROW_GROUP)
                        totals.append(t.select(["status", "total_fen", "flags", "e_total_kwh_x100"]))
                f.flush()
                os.fsync(f.fileno())
            os.link(live / "bill_items.parquet", staging / "bill_items.parquet")
            s = json.loads((live / "summary.json").read_text())
            new = pa.concat_tables(totals) if totals else _read_pq(live / "bills.parquet").slice(0, 0)
            s.update({k: v for k, v in _summary(period, new).items() if k != "seconds"})
            _publish(root, period, {"reviews.jsonl": reviews,
                                    "summary.json": json.dumps(s, ensure_ascii=False, indent=1)}, staging)
            done += todo
    return {"released": done, "already": already}


def show(data: Data, customer: str, period: str) -> dict[str, Any]:
    """One bill with its line items, by customer number (户号) or customer id."""
    live = partition(data, period)
    if not (live / "bills.parquet").exists():
        raise BillingError(f"period {period}: no bills (run `gridhead bill run --period {period}` first)")
    con = duck.connect()
    try:
        b = arrow_table(con.execute(f"SELECT * FROM read_parquet('{_q(live / 'bills.parquet')}') "
                               f"WHERE customer_no = $c OR CAST(customer_id AS VARCHAR) = $c", {"c": str(customer)}))
        if b.num_rows == 0:
            raise BillingError(f"customer {customer}: no bill in period {period}")
        bill = b.to_pylist()[0]
        it = arrow_table(con.execute(f"SELECT * FROM read_parquet('{_q(live / 'bill_items.parquet')}') WHERE bill_id = $b "
                                f"ORDER BY seq", {"b": bill["bill_id"]}))
    finally:
        con.close()
    return {"bill": bill, "items": it.to_pylist()}


# --- SQL views (storage.sql) ------------------------------------------------------------------------------
_VIEW_TYPES = None


def yuan(fen: int) -> str:
    """Integer fen as yuan with 2 decimals, exactly (no float)."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


__all__ = ["run", "summary", "held", "release", "show", "extract", "period_bounds", "yuan",
           "GridheadError"]


def _dec(value: int, places: int) -> str:
    if places == 0:
        return str(value)
    sign = "-" if value < 0 else ""
    s = str(abs(value)).rjust(places + 1, "0")
    return f"{sign}{s[:-places]}.{s[-places:]}"


def _tariff_changes(b: dict[str, Any]) -> str:
    """The tariff line's tail for a split month: two parts — the one change; more — the first change, the new
    assignment (whichever day it starts) and the number of parts (each priced by its own tariff row)."""
    if b["parts"] <= 1:
        return ""
    if b["parts"] == 2:
        return f" → {b['new_tariff_code'] or b['tariff_code']} ({b['new_tariff']}) from day {b['change_day']}"
    moved = f"; assignment → {b['new_tariff_code']}" if b["new_tariff_code"] else ""
    return f" → ({b['new_tariff']}) from day {b['change_day']}{moved}; {b['parts']} parts (分段计费)"


def render(shown: dict[str, Any]) -> str:
    """A bill as the customer reads it (电费通知单): Chinese beside English, yuan from integer fen."""
    b, items = shown["bill"], shown["items"]
    status = {"issued": "已发行 issued", "held": "暂挂 held", "released": "审核放行 released"}[b["status"]]
    lines = [f"电费账单 Electricity bill  {b['period']}   账单号 bill {b['bill_id']}",
             f"户号 customer {b['customer_no']}  户名 name {b['name']}  类别 {b['category']}  {b['voltage_v']} V",
             f"电价 tariff {b['tariff_code']} ({b['tariff']})" + _tariff_changes(b),
             f"电量 energy {_dec(b['e_total_kwh_x100'], 2)} kWh: 尖 sharp {_dec(b['e_sharp_kwh_x100'], 2)}, "
             f"峰 peak {_dec(b['e_peak_kwh_x100'], 2)}, 平 flat {_dec(b['e_flat_kwh_x100'], 2)}, "
             f"谷 valley {_dec(b['e_valley_kwh_x100'], 2)}"
             + (f"  (损耗 losses {_dec(b['loss_kwh_x100'], 2)})" if b["loss_kwh_x100"] else "")
             + (f"  [{b['segments']} segments 换表/倍率]" if b["segments"] > 1 else ""),
             f"状态 status {status}" + (f": {b['reasons_zh']} ({b['reasons']})" if b["reasons"] else "")
             + (f"  by {b['released_by']} at {b['released_at']} {b['release_note'] or ''}" if b["released_by"] else ""),
             "-" * 78]
    for it in items:
        qty = ""
        if it["code"] == "pf_adjust":
            qty = f"cosφ {_dec(it['quantity'], 2) if it['quantity'] >= 0 else '—'}  {_dec(it['unit_price'], 2)}%"
        elif it["code"] == "basic" and it["quantity_unit"] == "kW":
            qty = f"{_dec(it['quantity'], 4)} kW/kVA × {_dec(it['unit_price'], 6)}" if it["unit_price"] >= 0 else \
                f"{_dec(it['quantity'], 4)}"
        elif it["code"] != "total":
            price = f" × {_dec(it['unit_price'], 6)} 元" if it["unit_price"] >= 0 else " (分段 split)"
            qty = f"{_dec(it['quantity'], 2)} kWh{price}"
        label = f"{it['label_zh']} ({it['label_en']})"
        if it["code"] == "total":
            lines.append("-" * 78)
        lines.append(f"{label:<34} {qty:<32} {yuan(it['amount_fen']):>12} 元")
    return "\n".join(lines)

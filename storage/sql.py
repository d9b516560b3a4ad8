"""SQL for analysts: DuckDB views over the lake and the archive, and where the data lives.

A data directory (``--data DIR``, else ``$GRIDHEAD_DATA``, else ``./gridhead-data``) holds::

    archive.duckdb      the archive (storage.archive)
    lake/               the readings lake (storage.lake): readings/, events/, quarantine/

Views (all plain SQL over plain files, so nothing locks the data in)::

    readings            every reading, with the Hive keys kind, date, bucket
    daily_frozen        one row per meter and day (日冻结): a column per register, named as in
                        storage.schema.REGISTERS (ae_fwd, ae_fwd_t1..t4, ae_rev, re_fwd, re_rev, md_fwd)
    monthly_settlement  the same for the settlement readings (月冻结)
    load_curve          interval readings (负荷曲线) with the register's name
    events              device events with their names (event_name, event_name_zh)
    quarantine          rejected rows with their reason
    line_loss           daily line loss (线损) per area and feeder (billing_core.jobs.lineloss)
    audit               the audit list (稽查), each item with its latest check result (billing_core.jobs.audit)
    bills, bill_items   the published bill runs (billing_core.jobs.bills): one row per bill / per line item
    collection          collection success rate (采集成功率) per day and terminal (storage.collection)
    audit_log           operators' commands (遥控/召测/保电/对时): who, what, target, outcome, read-back,
                        refusals (rejected); a line that is not a record shows as broken (storage.control_log)
    ledger, balances    the ledger's entries (电费收缴: receivables, payments, refunds, adjustments,
    arrears             prepayment deductions) and per-customer balances / those in arrears (billing_core.jobs.ledger)
    <archive tables>    customers, meters, points, ... (storage.archive.TABLES), read-only

``gridhead sql --print-views`` prints the statements; ``duckdb -init views.sql`` (or pasting them into
any DuckDB) opens the same views with no gridhead installed.

The pivots keep, per (meter, day, register), the value received last (``arg_max(value, received_utc)``):
the lake's ingest deduplicates on (meter, register, timestamp), but the bulk writer of trusted data does
not, and should a re-delivered reading sit beside the old one, the newer delivery wins — the rule
back-fill follows.  A partition holding one file usually carries its pivot, computed with that rule when
the file was written (storage.lake.pivot_of); the views read it instead of grouping every reading
(10M readings: 0.1-0.3 s instead of 3 s, benchmarks/bench_sql.py).  ``gridhead lake compact`` (or the
head-end's nightly compaction, ``serve --collect``) gives every partition one file and its pivot; it dedups bulk-written copies by the same rule (received last), so the
pivots show the same values before and after (``quality`` then ORs the flags of the copies kept only).

A Session's views read the files listed when it opened (a snapshot: ``storage.lake.published_files``),
so a query never silently misses a partition a compaction swapped meanwhile: it fails with "run it
again" and the Session re-lists.  The ``--print-views`` script uses globs instead (new dates appear
without re-printing it), with the caveat that DuckDB skips a file swapped away under a running query.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gridhead.protocols.errors import GridheadError, StorageError

from . import archive as _archive
from . import duck
from . import collection, control_log, lake, results, schema
from .duck import arrow_table
from .paths import DEFAULT_DATA_DIR, archive_path, data_dir, lake_root, sql_path as _q

FORMATS = ("table", "csv", "json", "parquet")
PIVOT_REGISTERS = lake.PIVOT_REGISTERS


class SqlError(StorageError):
    """A query DuckDB refused (syntax, unknown column...): one line, exit code 2 (bad input)."""

    exit_code = 2


_DUCK_TYPES = {pa.int64(): "BIGINT", pa.int16(): "SMALLINT", pa.uint8(): "UTINYINT", pa.string(): "VARCHAR",
               lake.TS: "TIMESTAMPTZ"}


def _empty(table: str) -> str:
    """A typed, empty SELECT for a lake table that has no file yet (read_parquet refuses an empty glob)."""
    cols = [f"CAST(NULL AS {_DUCK_TYPES[f.type]}) AS \"{f.name}\"" for f in lake.SCHEMAS[table]]
    if table == "readings":
        cols += ["CAST(NULL AS VARCHAR) AS kind"]
    if table != "quarantine":
        cols += ["CAST(NULL AS DATE) AS date", "CAST(NULL AS INTEGER) AS bucket"]
    else:
        cols += ["CAST(NULL AS DATE) AS date"]
    return "SELECT " + ", ".join(cols) + " WHERE false"


_HIVE = {True: "{'date': DATE, 'bucket': INTEGER}", False: "{'date': DATE}"}


def _scan(files: str | list[str], table: str) -> str:
    """SELECT * over ``files``: a glob (plain duckdb's script) or a snapshot list (a Session's views)."""
    if not files:
        return _empty(table)
    src = f"'{_q(files)}'" if isinstance(files, str) else "[" + ", ".join(f"'{_q(f)}'" for f in files) + "]"
    return (f"SELECT * FROM read_parquet({src}, hive_partitioning = true, "
            f"hive_types = {_HIVE[table != 'quarantine']})")


def _pivot(src: str, registers: Sequence[str] = PIVOT_REGISTERS) -> str:
    cols = ",\n       ".join(
        f"arg_max(value, received_utc) FILTER (WHERE register = {schema.REGISTER_CODES[n]}) AS {n}" for n in registers)
    return (f"SELECT meter_id, date, min(ts_utc) AS ts_utc,\n       {cols},\n"
            f"       bit_or(quality) AS quality, max(received_utc) AS received_utc\n"
            f"FROM ({src})\nGROUP BY meter_id, date")


def pivot_view(root: pathlib.Path, kind: str, snapshot: bool = True) -> str:
    """The pivot view of ``kind``: from the snapshot, partitions with a materialised pivot read it (one
    row per meter already, storage.lake.pivot_of: the same rule), the others are grouped here."""
    if not snapshot:      # plain duckdb: one kind's directory only, so DuckDB never opens the other kinds'
        g = str(root / "readings" / f"kind={kind}" / "date=*" / "bucket=*" / "part-*.parquet")
        has = any((root / "readings" / f"kind={kind}").glob("date=*/bucket=*/part-*.parquet"))
        return _pivot(_scan(g if has else [], "readings"))
    pivots, parts = lake.pivot_snapshot(root, kind)
    out = []
    if pivots:
        lst = ", ".join(f"'{_q(f)}'" for f in pivots)
        out.append(f"SELECT meter_id, date, ts_utc, {', '.join(PIVOT_REGISTERS)}, quality, received_utc "
                   f"FROM read_parquet([{lst}], hive_partitioning = true, hive_types = {_HIVE[True]})")
    if parts or not pivots:
        out.append(_pivot(_scan(parts, "readings")))
    return "\nUNION ALL\n".join(out)


def view_statements(data: str | os.PathLike[str] | None = None, *, snapshot: bool = True) -> list[str]:
    """The CREATE VIEW (and ATTACH) statements that open the data directory in any DuckDB.

    ``snapshot`` (a Session's views): the lake's views read the files listed now
    (:func:`storage.lake.published_files`), so a compaction running meanwhile makes a query fail loudly
    ("No files found" / cannot open: run it again) and never return a short count; the pivots read the
    materialised per-partition pivots where they exist.  Without (the script for plain ``duckdb``): globs,
    which see files published later but silently skip a file a concurrent compaction swapped away.
    """
    root = lake_root(data).resolve()
    # timestamps display in China Standard Time, the time of every meter and tariff (storage.schema)
    out = ["SET TimeZone = 'Asia/Shanghai'"]
    arch = archive_path(data).resolve()
    if arch.exists():
        out.append(f"ATTACH IF NOT EXISTS '{_q(arch)}' AS archive (READ_ONLY)")
        out += [f"CREATE OR REPLACE VIEW {t.name} AS SELECT * FROM archive.{t.name}" for t in _archive.TABLES]
        out += collection.view_statements(data)   # success rate (采集成功率) per day and terminal

    listings: dict[str, list[str]] = {}      # one listing per table for all its views

    def files(table: str, under: str = "") -> str | list[str]:
        if table not in listings:
            listings[table] = lake.published_files(root, table)
        listed = listings[table]
        listed = [f for f in listed if f"{os.sep}{under}{os.sep}" in f] if under else listed
        if snapshot or not listed:
            return listed
        return lake.published_glob(root, table).replace("kind=*", under) if under else lake.published_glob(root, table)

    out.append(f"CREATE OR REPLACE VIEW readings AS {_scan(files('readings'), 'readings')}")
    for view, kind in (("daily_frozen", schema.DAILY), ("monthly_settlement", schema.MONTHLY)):
        out.append(f"CREATE OR REPLACE VIEW {view} AS\n{pivot_view(root, kind, snapshot)}")
    names = " ".join(f"WHEN {c} THEN '{r.name}'" for c, r in schema.REGISTERS.items())
    lc = _scan(files("readings", f"kind={schema.INTERVAL}"), "readings")
    out.append(f"CREATE OR REPLACE VIEW load_curve AS SELECT meter_id, date, ts_utc, CASE register {names} END "
               f"AS register_name, register, value, quality, source, received_utc FROM ({lc})")
    ev_names = " ".join(f"WHEN {c} THEN '{n}'" for c, (n, _zh, _oi) in schema.EVENTS.items())
    ev_zh = " ".join(f"WHEN {c} THEN '{zh}'" for c, (_n, zh, _oi) in schema.EVENTS.items())
    out.append(f"CREATE OR REPLACE VIEW events AS SELECT *, CASE event {ev_names} END AS event_name, "
               f"CASE event {ev_zh} END AS event_name_zh FROM ({_scan(files('events'), 'events')})")
    out.append(f"CREATE OR REPLACE VIEW quarantine AS {_scan(files('quarantine'), 'quarantine')}")
    if (data_dir(data) / "bills").is_dir():   # like the archive views: once a bill run has made bills/
        out += results.bill_views(data)          # bills and bill_items (the bill run's output)
    out += results.analysis_views(root)          # line_loss and audit, once written
    out += control_log.view_statements(data_dir(data))   # operators' commands (遥控), append-only
    if archive_path(data).exists():               # the ledger in the archive, once written to
        out += results.ledger_views(data)
    return out


def views_script(data: str | os.PathLike[str] | None = None) -> str:
    """The statements as one script for plain ``duckdb`` (``duckdb -init FILE``)."""
    head = ("-- gridhead views: open the lake and the archive in plain DuckDB, e.g.\n"
            "--   gridhead sql --print-views > views.sql && duckdb -init views.sql\n"
            "-- Re-print after new dates appear: an empty table's view is a typed empty SELECT.\n"
            "-- Caveat: these views glob the lake's files; a query that runs while `gridhead lake compact`\n"
            "-- swaps a partition may silently miss it (gridhead sql reads a snapshot and fails loudly).\n")
    return head + "".join(s + ";\n" for s in view_statements(data, snapshot=False))


class Session:
    """An in-memory DuckDB with the views of a data directory."""

    def __init__(self, data: str | os.PathLike[str] | None = None, *, threads: int | None = None) -> None:
        self.data = data_dir(data)
        self.db = duck.connect()
        if threads:
            self.db.execute(f"SET threads = {int(threads)}")
        self.refresh()

    def refresh(self) -> None:
        """(Re)create the views from a new snapshot of the lake's files."""
        try:
            for s in view_statements(self.data):
                self.db.execute(s)
        except duckdb.Error as exc:
            raise StorageError(f"opening {self.data}: {_first_line(exc)}") from None

    def _error(self, exc: duckdb.Error) -> SqlError:
        """A query's error; if a file of the snapshot is gone (a compaction swapped its partition), the
        views are refreshed and the message says to run the query again: loud, never a short answer."""
        if isinstance(exc, duckdb.IOException) and ("No such file" in str(exc) or "No files found" in str(exc)):
            self.refresh()
            return SqlError(f"sql: the lake changed during the query (a compaction?): run it again "
                            f"({_first_line(exc)})")
        return SqlError(f"sql: {_first_line(exc)}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, sql: str, params: Sequence[object] | Mapping[str, object] | None = None) -> pa.Table | None:
        """Run one statement; its result as an Arrow table (None for a statement without rows)."""
        try:
            cur = self.db.execute(sql, params or [])
            if cur.description is None:
                return None
            return arrow_table(cur)
        except duckdb.Error as exc:
            raise self._error(exc) from None

    def select(self, sql: str, params: Sequence[object] | Mapping[str, object] | None = None) -> pa.Table:
        """:meth:`query` of a statement that returns rows (a SELECT): its Arrow table, never None."""
        tbl = self.query(sql, params)
        if tbl is None:
            raise SqlError(f"sql: {sql.split(None, 1)[0] if sql.strip() else 'the statement'} returns no rows")
        return tbl

    def render_table(self, sql: str, params: Sequence[object] | None = None) -> str:
        """DuckDB's own box rendering of a query (what the shell and ``--format table`` print)."""
        try:
            rel = self.db.sql(sql, params=params)
            return "ok" if rel is None else str(rel)
        except duckdb.Error as exc:
            raise self._error(exc) from None


def write_result(tbl: pa.Table, fmt: str, out: str | os.PathLike[str] | None) -> None:
    """Write a result as csv / json (one object per line) / parquet to ``out`` (or stdout)."""
    if fmt == "parquet":
        if out is None:
            raise GridheadError("--format parquet needs --out FILE")
        pq.write_table(tbl, out, compression="zstd")
        return
    sink = open(out, "wb") if out else sys.stdout.buffer
    try:
        if fmt == "csv":
            pacsv.write_csv(tbl, sink)
        elif fmt == "json":
            for row in tbl.to_pylist():
                sink.write(json.dumps(row, ensure_ascii=False, default=str).encode() + b"\n")
        else:
            raise GridheadError(f"format {fmt!r}: one of {', '.join(FORMATS)}")
        sink.flush()
    finally:
        if out:
            sink.close()


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split("\n")[:1]).strip()



"""The archive (档案): who is metered where, by which meter, behind which concentrator — in DuckDB.

One DuckDB database file holds the master data that billing, line loss and the
head-end read.  Tables, in reference order (each refers only to tables above it)::

    feeders             10 kV feeders (10kV线路)
    areas               transformer areas (台区): feeder, urban/rural (loss thresholds), PV capacity
    concentrators       terminals (集中器 / 专变终端): address, protocol, communication mode, area
    meters              electricity meters (电能表): asset number, communication address, protocol,
                        concentrator and port (the OAD of its RS-485 / carrier port), register digits
    customers           customers (用户): 户号, name, category, voltage level, prepayment (预付费)
    customer_tariffs    tariff assignment with effective dates (电价变更 keeps the old row)
    points              metering points (计量点): a customer's point, an area's check meter (考核表),
                        a feeder's outgoing meter, or a PV generation point; 高供低计 transformer
                        parameters, contract demand and basic-charge method, power-factor standard
    point_multipliers   CT × PT ratios with effective dates (倍率变更)
    point_meters        which meter sits at which point when (换表): install and removal readings

History tables hold effective-dated rows: ``valid_from`` (inclusive) .. ``valid_to`` (exclusive, NULL =
open).  Rows of one key may not overlap.  A meter replaced on day R: the old row ends ``valid_to = R``
with its removal reading, the new row starts ``valid_from = R`` with its install reading; the 00:00
frozen reading of day R still belongs to the old meter.

Why a point's check meter is not a column of ``areas``: the check meter is itself a metering point
(its multiplier and meter history are those of any point), and a column would make the references
circular.  ``role = 'area_check'`` with ``area_id`` says it; at most one per area is enforced on import.

Energy is integer with its scale in the name (``install_reading_x100``: 0.01 kWh, the register
resolution); rates are basis points (``_bp``, 1/10000); power-factor standards are hundredths.

Import validates *everything* before it writes (types, ranges, keys, references across the files and
against the database, overlapping dates) and writes all files in one transaction; bad rows raise
:class:`ImportRefused` listing each (up to :data:`MAX_ERRORS`) with file, row (1-based data row, header
not counted), column and reason — a CSV the reader cannot parse (an unterminated quote, a row with the
wrong number of fields) names its file, row and column the same way.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Union

import duckdb
import numpy as np
import pyarrow as pa

from gridhead.protocols.errors import ArchiveError, StorageError

from . import duck
from .paths import sql_path as _q

# a query's parameters: positional ($1, ?) or named ($name)
Params = Union[Sequence[object], Mapping[str, object], None]

CATEGORIES = ("residential", "general_commercial", "large_industrial", "agricultural")
VOLTAGES_V = (220, 380, 10_000, 20_000, 35_000, 110_000)
METER_PROTOCOLS = ("645", "698")
TERMINAL_PROTOCOLS = ("698", "376.1")           # DL/T 698.45, Q/GDW 1376.1
COMM_MODES = ("gprs", "4g", "5g", "ethernet", "fiber", "plc", "230mhz")
ROLES = ("customer", "area_check", "feeder_out", "pv")
BASIC_CHARGE = ("none", "capacity", "contract_demand", "actual_demand")   # 发改办价格〔2016〕1583号
PF_STANDARDS = (0, 80, 85, 90)                  # (83)水电财字第215号; 0 = not assessed
AREA_TYPES = ("urban", "rural")


def _one_of(values: Iterable[object]) -> tuple[str, str]:
    lits = ", ".join(f"'{v}'" if isinstance(v, str) else str(v) for v in values)
    return f"{{c}} IN ({lits})", "not one of " + ", ".join(map(str, values))


@dataclass(frozen=True)
class Col:
    name: str
    type: str                       # DuckDB type
    null: bool = False              # NULL allowed
    check: tuple[str, str] | None = None    # (SQL over {c}, reason when false)
    ref: str | None = None          # "table.column"
    optional: bool = False          # may be absent from an import file (then NULL); added to older archives


@dataclass(frozen=True)
class Table:
    name: str
    cols: tuple[Col, ...]
    key: tuple[str, ...]
    unique: tuple[tuple[str, ...], ...] = ()
    checks: tuple[tuple[str, str, str], ...] = ()   # (SQL over the row, column to blame, reason)
    history: tuple[str, ...] = ()   # keys whose [valid_from, valid_to) periods must not overlap
    doc: str = ""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cols]


_ID = "BIGINT"
_pos = ("{c} > 0", "must be > 0")
_nonneg = ("{c} >= 0", "must be >= 0")
_HIST = (Col("valid_from", "DATE"), Col("valid_to", "DATE", null=True))
_HIST_CHECK = ("valid_to IS NULL OR valid_to > valid_from", "valid_to", "must be after valid_from")

TABLES: tuple[Table, ...] = (
    Table("feeders", (
        Col("feeder_id", _ID, check=_pos),
        Col("name", "VARCHAR"),
        Col("voltage_kv", "INTEGER", check=_one_of((10, 20, 35))),
    ), key=("feeder_id",), doc="10 kV feeders; the outgoing meter is the point with role feeder_out"),
    Table("areas", (
        Col("area_id", _ID, check=_pos),
        Col("name", "VARCHAR"),
        Col("feeder_id", _ID, ref="feeders.feeder_id"),
        Col("area_type", "VARCHAR", check=_one_of(AREA_TYPES)),
        Col("transformer_kva", "INTEGER", check=_pos),
        Col("pv_capacity_kw", "INTEGER", check=_nonneg),
    ), key=("area_id",), doc="transformer areas (台区); the check meter is the point with role area_check"),
    Table("concentrators", (
        Col("concentrator_id", _ID, check=_pos),
        Col("terminal_address", "VARCHAR",
            check=("regexp_full_match({c}, '[0-9A-Fa-f]{{4,16}}')", "not 4 to 16 hex digits")),
        Col("protocol", "VARCHAR", check=_one_of(TERMINAL_PROTOCOLS)),
        Col("comm_mode", "VARCHAR", check=_one_of(COMM_MODES)),
        Col("area_id", _ID, null=True, ref="areas.area_id"),
    ), key=("concentrator_id",), unique=(("terminal_address",),)),
    Table("meters", (
        Col("meter_id", _ID, check=_pos),
        Col("asset_no", "VARCHAR", check=("length({c}) BETWEEN 1 AND 32", "empty or longer than 32")),
        Col("comm_address", "VARCHAR", check=("regexp_full_match({c}, '[0-9]{{12}}')", "not 12 decimal digits")),
        Col("protocol", "VARCHAR", check=_one_of(METER_PROTOCOLS)),
        Col("concentrator_id", _ID, null=True, ref="concentrators.concentrator_id"),
        # the port as the terminal names it: OAD F201 02 01 (RS-485 1), F209 02 01 (carrier), 698.45 A.6
        Col("port_oad", "VARCHAR", null=True,
            check=("regexp_full_match({c}, '[0-9A-F]{{8}}')", "not an OAD of 8 upper-case hex digits")),
        Col("register_digits", "INTEGER", check=("{c} BETWEEN 4 AND 8", "integer digits not in 4..8")),
    ), key=("meter_id",), unique=(("asset_no",), ("concentrator_id", "comm_address")),
        checks=(("port_oad IS NULL OR concentrator_id IS NOT NULL", "port_oad", "a port needs a concentrator"),),
        doc="register_digits: integer digits of the energy registers (2 decimals): rollover at 10^digits kWh"),
    Table("customers", (
        Col("customer_id", _ID, check=_pos),
        Col("customer_no", "VARCHAR", check=("regexp_full_match({c}, '[0-9]{{10,16}}')", "户号 not 10-16 digits")),
        Col("name", "VARCHAR"),
        Col("category", "VARCHAR", check=_one_of(CATEGORIES)),
        Col("voltage_v", "INTEGER", check=_one_of(VOLTAGES_V)),
        Col("prepaid", "BOOLEAN"),
        # the annual tiers' year-to-date at go-live (上线时年累计电量): energy of the tier year (calendar
        # year) before 00:00 of opening_ytd_date, 0.01 kWh; billing adds the readings from that day on
        Col("opening_ytd_kwh_x100", "BIGINT", null=True, check=_nonneg, optional=True),
        Col("opening_ytd_date", "DATE", null=True, optional=True),
    ), key=("customer_id",), unique=(("customer_no",),), checks=(
        ("(opening_ytd_kwh_x100 IS NULL) = (opening_ytd_date IS NULL)", "opening_ytd_date",
         "an opening year-to-date needs both its energy and its date"),
    )),
    Table("customer_tariffs", (
        Col("customer_id", _ID, ref="customers.customer_id"),
        *_HIST,
        Col("tariff_code", "VARCHAR", check=("regexp_full_match({c}, '[A-Za-z0-9_.-]{{1,32}}')",
                                             "not a tariff code (1-32 of A-Z a-z 0-9 _ . -)")),
    ), key=("customer_id", "valid_from"), checks=(_HIST_CHECK,), history=("customer_id",)),
    Table("points", (
        Col("point_id", _ID, check=_pos),
        Col("role", "VARCHAR", check=_one_of(ROLES)),
        Col("customer_id", _ID, null=True, ref="customers.customer_id"),
        Col("area_id", _ID, null=True, ref="areas.area_id"),
        Col("feeder_id", _ID, null=True, ref="feeders.feeder_id"),
        Col("hv_metered_lv", "BOOLEAN"),                    # 高供低计
        Col("tx_capacity_kva", "INTEGER", null=True, check=_pos),
        Col("tx_p0_w", "INTEGER", null=True, check=_nonneg),     # no-load loss P0
        Col("tx_pk_w", "INTEGER", null=True, check=_nonneg),     # short-circuit (load) loss Pk
        Col("tx_loss_rate_bp", "INTEGER", null=True, check=("{c} BETWEEN 0 AND 2000", "not in 0..2000 bp")),
        Col("line_loss_rate_bp", "INTEGER", null=True, check=("{c} BETWEEN 0 AND 2000", "not in 0..2000 bp")),
        # transformer nameplate, 0.01 %: no-load current I0 and impedance voltage Uk (GB/T 6451, GB 20052),
        # for the reactive loss ΔQ = Q0·T + Qk·β²·T; an agreed reactive loss rate (default: tx_loss_rate_bp)
        Col("tx_i0_x100", "INTEGER", null=True, check=("{c} BETWEEN 0 AND 1000", "not in 0..1000 (0..10 %)"),
            optional=True),
        Col("tx_uk_x100", "INTEGER", null=True, check=("{c} BETWEEN 0 AND 2500", "not in 0..2500 (0..25 %)"),
            optional=True),
        Col("tx_q_loss_rate_bp", "INTEGER", null=True, check=("{c} BETWEEN 0 AND 5000", "not in 0..5000 bp"),
            optional=True),
        Col("contract_demand_kw", "INTEGER", null=True, check=_pos),
        Col("basic_charge", "VARCHAR", check=_one_of(BASIC_CHARGE)),
        Col("pf_standard_x100", "INTEGER", check=_one_of(PF_STANDARDS)),
    ), key=("point_id",), checks=(
        ("role <> 'customer' OR customer_id IS NOT NULL", "customer_id", "a customer point needs a customer"),
        ("role NOT IN ('area_check', 'feeder_out') OR customer_id IS NULL", "customer_id",
         "a check or outgoing meter belongs to no customer"),
        ("role <> 'area_check' OR area_id IS NOT NULL", "area_id", "an area check meter needs its area"),
        ("role <> 'feeder_out' OR feeder_id IS NOT NULL", "feeder_id", "a feeder outgoing meter needs its feeder"),
        ("area_id IS NOT NULL OR feeder_id IS NOT NULL", "area_id", "a point needs an area or a feeder"),
        ("NOT hv_metered_lv OR tx_capacity_kva IS NOT NULL", "tx_capacity_kva",
         "高供低计 needs the transformer capacity"),
        ("NOT hv_metered_lv OR (tx_p0_w IS NOT NULL AND tx_pk_w IS NOT NULL) OR tx_loss_rate_bp IS NOT NULL",
         "tx_p0_w", "高供低计 needs P0 and Pk or an agreed loss rate"),
        ("(tx_i0_x100 IS NULL) = (tx_uk_x100 IS NULL)", "tx_uk_x100", "I0 and Uk go together (the nameplate)"),
        ("basic_charge <> 'contract_demand' OR contract_demand_kw IS NOT NULL", "contract_demand_kw",
         "basic charge by contract demand needs contract_demand_kw"),
        ("basic_charge <> 'capacity' OR tx_capacity_kva IS NOT NULL", "tx_capacity_kva",
         "basic charge by capacity needs tx_capacity_kva"),
    ), doc="metering points (计量点)"),
    Table("point_multipliers", (
        Col("point_id", _ID, ref="points.point_id"),
        *_HIST,
        Col("ct_ratio", "INTEGER", check=_pos),     # e.g. 200/5 A -> 40
        Col("pt_ratio", "INTEGER", check=_pos),     # e.g. 10 kV/100 V -> 100
    ), key=("point_id", "valid_from"), checks=(_HIST_CHECK,), history=("point_id",)),
    Table("point_meters", (
        Col("point_id", _ID, ref="points.point_id"),
        Col("meter_id", _ID, ref="meters.meter_id"),
        *_HIST,
        Col("install_reading_x100", "BIGINT", check=_nonneg),
        Col("removal_reading_x100", "BIGINT", null=True, check=_nonneg),
    ), key=("point_id", "valid_from"), checks=(
        _HIST_CHECK,
        ("removal_reading_x100 IS NULL OR valid_to IS NOT NULL", "removal_reading_x100",
         "a removal reading needs valid_to"),
    ), history=("point_id", "meter_id")),
)
BY_NAME = {t.name: t for t in TABLES}


def ddl() -> str:
    """CREATE TABLE statements with primary keys, unique, foreign keys and CHECK constraints."""
    out = []
    for t in TABLES:
        parts = []
        for c in t.cols:
            s = f"{c.name} {c.type}" + ("" if c.null else " NOT NULL")
            if c.check:
                s += f" CHECK ({c.check[0].format(c=c.name)})"
            if c.ref:
                rt, rc = c.ref.split(".")
                s += f" REFERENCES {rt}({rc})"
            parts.append(s)
        parts.append(f"PRIMARY KEY ({', '.join(t.key)})")
        parts += [f"UNIQUE ({', '.join(u)})" for u in t.unique]
        parts += [f"CHECK ({expr})" for expr, _col, _why in t.checks]
        out.append(f"CREATE TABLE IF NOT EXISTS {t.name} (\n    " + ",\n    ".join(parts) + "\n);")
        # an archive made before an optional column existed gets it (NULL throughout)
        out += [f"ALTER TABLE {t.name} ADD COLUMN IF NOT EXISTS {c.name} {c.type};" for c in t.cols if c.optional]
    return "\n".join(out)


@dataclass
class _Staged:
    table: Table
    path: pathlib.Path
    rows: int = 0
    raw: str = ""       # temp table of VARCHAR columns + _row
    typed: str = ""     # temp table of typed columns + _row
    extra: dict[str, object] = field(default_factory=dict)


MAX_ERRORS = 50                # bad rows listed per import (each check stops at this many)


class ImportRefused(ArchiveError):
    """Bad rows: ``errors`` one line each ("<file>, row <n>, column <c>: <reason>"), at most
    :data:`MAX_ERRORS`; the message is the first with how many more.  Bad input: exit 2."""

    exit_code = 2

    def __init__(self, errors: list[str], more: bool = False) -> None:
        self.errors = errors[:MAX_ERRORS]
        more = more or len(errors) > MAX_ERRORS
        n = len(self.errors)
        self.summary = f"more than {n} bad rows (the first {n} listed)" if more else f"{n} bad row(s)"
        rest = f" (and {'more than ' if more else ''}{n - 1} more)" if n > 1 or more else ""
        super().__init__(f"{self.errors[0]}{rest}; nothing was imported")


class _HeaderBad(Exception):
    """A file whose header (or whose CSV syntax) is wrong: its rows cannot be checked."""


def _where(st: _Staged, row: object, col: str, why: str) -> str:
    where = f"row {row}" if row is not None else "header"
    return f"{st.path.name}, {where}, column {col}: {why}"


def _csv_problems(p: pathlib.Path, limit: int) -> list[tuple[int, str, str]]:
    """(row, column, reason) of the rows Python's csv reader (strict) cannot take or that have the wrong
    number of fields — why DuckDB refused the file, in the import's terms.  Rows as the import counts
    them: data rows from 1, blank lines not counted."""
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = next(reader, None) or []
    out: list[tuple[int, str, str]] = []
    row, start = 0, reader.line_num + 1
    while len(out) < limit:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row += 1
            field_no, why = _bad_field("\n".join(text.splitlines()[start - 1:]))
            col = header[min(field_no, len(header) - 1)] if header and field_no is not None else "?"
            out.append((row, col, f"{why or f'cannot be parsed ({exc})'} (line {start})"))
            break
        if rec:
            row += 1
            if len(rec) != len(header):
                col = header[-1] if len(rec) > len(header) else header[len(rec)] if header else "?"
                out.append((row, col, f"{len(rec)} fields, the header has {len(header)} (line {start})"))
        start = reader.line_num + 1
    return out


def _bad_field(text: str) -> tuple[int | None, str | None]:
    """The field of the record starting ``text`` that breaks csv's quoting rules (a quote opens a field
    only at its start; "" inside is a quote; a closing quote is followed by a comma or the line's end),
    and why."""
    field_no, in_q, at_start, i = 0, False, True, 0
    while i < len(text):
        ch = text[i]
        if in_q:
            if ch == '"':
                if text[i + 1:i + 2] == '"':
                    i += 1
                else:
                    in_q = False
                    nxt = text[i + 1:i + 2]
                    if nxt not in ("", ",", "\n", "\r"):
                        return field_no, (f"the quoted value is followed by {nxt!r}: a quote left open "
                                          f"(or a stray quote) in this value")
        elif ch == '"' and at_start:
            in_q = True
        elif ch == ",":
            field_no += 1
            at_start = True
            i += 1
            continue
        elif ch == "\n":
            return None, None
        at_start = False
        i += 1
    return (field_no, "unterminated quote: the value runs to the end of the file") if in_q else (None, None)


def _lit(v: object) -> str:
    return "NULL" if v is None else repr(str(v))[:60]


class Archive:
    """The archive database.  ``Archive(path)`` creates the tables if the file is new.

    Read methods return Arrow tables (``columns()`` gives numpy arrays); nothing outside storage/
    needs duckdb.  Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | pathlib.Path, *, read_only: bool = False) -> None:
        self.path = pathlib.Path(path)
        try:
            if not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = duck.connect(str(self.path), read_only=read_only)
            if not read_only:
                self.db.execute(ddl())
        except duckdb.Error as exc:
            raise StorageError(f"archive {self.path}: {str(exc).splitlines()[0]}") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading -------------------------------------------------------------------------------------
    def query(self, sql: str, params: Params = None) -> pa.Table:
        """Run SQL against the archive; an Arrow table."""
        try:
            return duck.arrow_table(self.db.execute(sql, params or []))
        except duckdb.Error as exc:
            raise StorageError(f"archive query: {str(exc).splitlines()[0]}") from None

    def columns(self, sql: str, params: Params = None) -> dict[str, np.ndarray]:
        """Run SQL; each column as a numpy array (integers stay integers; NULLs need a COALESCE)."""
        t = self.query(sql, params)
        return {n: t.column(n).to_numpy(zero_copy_only=False) for n in t.column_names}

    def table(self, name: str) -> pa.Table:
        if name not in BY_NAME:
            raise ArchiveError(f"no archive table {name!r} (tables: {', '.join(BY_NAME)})")
        return self.query(f"SELECT * FROM {name} ORDER BY {', '.join(BY_NAME[name].key)}")

    def counts(self) -> dict[str, int]:
        return {t.name: self._count(t.name) for t in TABLES}

    def _count(self, table: str) -> int:
        row = self.db.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None                   # count(*) gives one row
        return int(row[0])

    def known_meter_ids(self) -> np.ndarray:
        """Every meter id in the archive, sorted (int64): the lake's "unknown meter" test."""
        return self.columns("SELECT meter_id FROM meters ORDER BY meter_id")["meter_id"].astype(np.int64)

    def meter_routes(self) -> pa.Table:
        """How to reach each meter: its address and protocol, its concentrator and port."""
        return self.query("""
            SELECT m.meter_id, m.comm_address, m.protocol AS meter_protocol, m.concentrator_id,
                   c.terminal_address, c.protocol AS terminal_protocol, c.comm_mode, m.port_oad
            FROM meters m LEFT JOIN concentrators c USING (concentrator_id)
            ORDER BY m.meter_id""")

    def points_on(self, day: dt.date) -> pa.Table:
        """Every metering point as it stood on ``day`` (a date): meter, multiplier, tariff, parameters.

        One row per point that has a meter installed that day; what billing and line loss
        join readings with.  ``multiplier = ct_ratio * pt_ratio``.
        """
        return self.query("""
            SELECT p.*, cu.category, cu.voltage_v, cu.prepaid, pm.meter_id, m.register_digits,
                   mu.ct_ratio, mu.pt_ratio, mu.ct_ratio * mu.pt_ratio AS multiplier, ct.tariff_code
            FROM points p
            JOIN point_meters pm ON pm.point_id = p.point_id AND pm.valid_from <= $d
                 AND (pm.valid_to IS NULL OR pm.valid_to > $d)
            JOIN meters m ON m.meter_id = pm.meter_id
            LEFT JOIN point_multipliers mu ON mu.point_id = p.point_id AND mu.valid_from <= $d
                 AND (mu.valid_to IS NULL OR mu.valid_to > $d)
            LEFT JOIN customers cu ON cu.customer_id = p.customer_id
            LEFT JOIN customer_tariffs ct ON ct.customer_id = p.customer_id AND ct.valid_from <= $d
                 AND (ct.valid_to IS NULL OR ct.valid_to > $d)
            ORDER BY p.point_id""", {"d": day})

    def history(self, table: str, start: dt.date, end: dt.date) -> pa.Table:
        """Rows of a history table whose period overlaps [start, end): changes within a billing period."""
        if table not in BY_NAME or not BY_NAME[table].history:
            raise ArchiveError(f"{table!r} is not a history table")
        return self.query(f"""SELECT * FROM {table} WHERE valid_from < $e AND (valid_to IS NULL OR valid_to > $s)
                              ORDER BY {', '.join(BY_NAME[table].key)}""", {"s": start, "e": end})

    # --- export --------------------------------------------------------------------------------------
    def export(self, out_dir: str | pathlib.Path, fmt: str = "csv") -> list[pathlib.Path]:
        """Write one file per table (``customers.csv`` ...) that :meth:`import_files` accepts."""
        if fmt not in ("csv", "parquet"):
            raise ArchiveError(f"export format {fmt!r}: csv or parquet")
        out = pathlib.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        opts = "(FORMAT csv, HEADER)" if fmt == "csv" else "(FORMAT parquet, COMPRESSION zstd)"
        paths = []
        for t in TABLES:
            p = out / f"{t.name}.{fmt}"
            self.db.execute(f"COPY (SELECT * FROM {t.name} ORDER BY {', '.join(t.key)}) TO '{_q(p)}' {opts}")
            paths.append(p)
        return paths

    # --- import --------------------------------------------------------------------------------------
    def import_files(self, paths: Iterable[str | os.PathLike[str]],
                     progress: Callable[[str], object] | None = None) -> dict[str, int]:
        """Validate every row of every file, then insert all of them in one transaction.

        ``paths``: files named after their table (``customers.csv``, ``meters.parquet``).  Raises
        :class:`ArchiveError` ``"<file>, row <n>, column <c>: <reason>"`` on the first bad row and
        then nothing is written.  Returns rows imported per table.  ``progress(step_name)`` is called
        between steps (a CLI progress bar).
        """
        tick = progress or (lambda _name: None)
        staged: dict[str, _Staged] = {}
        for p in map(pathlib.Path, paths):
            stem, suffix = p.name.split(".", 1)[0], p.suffix.lower()
            if stem not in BY_NAME:
                raise ArchiveError(f"{p.name}: not an archive table file (expected <table>.csv or .parquet, "
                                   f"tables: {', '.join(BY_NAME)})")
            if suffix not in (".csv", ".parquet"):
                raise ArchiveError(f"{p.name}: not a .csv or .parquet file")
            if not p.is_file():
                raise ArchiveError(f"{p}: no such file")
            if stem in staged:
                raise ArchiveError(f"{p.name}: a second file for table {stem} ({staged[stem].path.name})")
            staged[stem] = _Staged(BY_NAME[stem], p)
        self._errors: list[str] = []
        self._more = False
        try:
            for t in TABLES:                       # types and per-column checks, file by file
                if t.name in staged:
                    try:
                        self._stage(staged[t.name])
                    except _HeaderBad:
                        pass
                    tick(f"checked {t.name}")
            self._refuse()
            for t in TABLES:                       # keys, references, row checks, overlaps
                if t.name in staged:
                    self._check_relations(staged[t.name], staged)
                    tick(f"cross-checked {t.name}")
            self._check_cross_table(staged)
            self._refuse()
            return self._insert(staged)
        finally:
            for st in staged.values():
                for tmp in (st.raw, st.typed):
                    if tmp:
                        self.db.execute(f"DROP TABLE IF EXISTS {tmp}")

    def _first(self, sql: str) -> tuple[Any, ...] | None:
        try:
            return self.db.execute(sql).fetchone()
        except duckdb.Error as exc:
            raise StorageError(f"archive import: {str(exc).splitlines()[0]}") from None

    def _bad(self, st: _Staged, sql: str, col: str | Callable[[tuple[Any, ...]], str],
             why: str | Callable[[tuple[Any, ...]], str]) -> bool:
        """Record every row ``sql`` finds (``_row`` first, ``LIMIT 1`` widened to the error budget) as a bad
        row of ``st`` at ``col`` (a name, or a function of the row) for ``why`` (text or a function of the
        row); True if there was one.  The functions are called here, before this returns (a lambda of the
        caller's loop variables sees this iteration's values)."""
        room = MAX_ERRORS - len(self._errors)
        if room <= 0:
            self._more = True
            return bool(self._first(sql))
        try:
            head, _, tail = sql.rpartition("LIMIT 1")
            rows = self.db.execute(f"{head}LIMIT {room + 1}{tail}").fetchall()
        except duckdb.Error as exc:
            raise StorageError(f"archive import: {str(exc).splitlines()[0]}") from None
        if len(rows) > room:
            rows, self._more = rows[:room], True
        for r in rows:
            self._errors.append(_where(st, r[0], col(r) if callable(col) else col, why(r) if callable(why) else why))
        return bool(rows)

    def _header(self, st: _Staged, col: str, why: str) -> NoReturn:
        self._errors.append(_where(st, None, col, why))
        raise _HeaderBad

    def _refuse(self) -> None:
        if self._errors:
            raise ImportRefused(self._errors, self._more)

    def _stage(self, st: _Staged) -> None:
        t, p = st.table, st.path
        st.raw, st.typed = f"_raw_{t.name}", f"_in_{t.name}"
        try:
            if p.suffix.lower() == ".csv":
                src = (f"SELECT *, row_number() OVER () AS _row FROM read_csv('{_q(p)}', header=true, "
                       f"all_varchar=true, delim=',', quote='\"', escape='\"', auto_detect=false, "
                       f"columns={_csv_columns(p)})")
            else:
                src = (f"SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS _row "
                       f"FROM read_parquet('{_q(p)}', file_row_number=true)")
            self.db.execute(f"CREATE OR REPLACE TEMP TABLE {st.raw} AS {src}")
        except duckdb.Error as exc:
            found = _csv_problems(p, MAX_ERRORS) if p.suffix.lower() == ".csv" else []
            for row, col, why in found:
                self._errors.append(_where(st, row, col, why))
            if not found:
                self._errors.append(f"{p.name}: cannot be read ({str(exc).splitlines()[0]})")
            raise _HeaderBad from None
        have = [r[0] for r in self.db.execute(f"DESCRIBE {st.raw}").fetchall() if r[0] != "_row"]
        missing = [c for c in t.names if c not in have and not next(x for x in t.cols if x.name == c).optional]
        if missing:
            self._header(st, missing[0], "missing (columns: " + ", ".join(t.names) + ")")
        extra = [c for c in have if c not in t.names]
        if extra:
            self._header(st, extra[0], "not a column of " + t.name)
        for c in t.cols:
            if c.optional and c.name not in have:      # an older file: the column is NULL throughout
                self.db.execute(f"ALTER TABLE {st.raw} ADD COLUMN {c.name} VARCHAR")
        st.rows = self._count(st.raw)
        bad = False
        for c in t.cols:
            v = f"CAST({c.name} AS VARCHAR)"
            if not c.null:
                bad |= self._bad(st, f"SELECT _row FROM {st.raw} WHERE {c.name} IS NULL ORDER BY _row LIMIT 1",
                                 c.name, "missing value")
            bad |= self._bad(st, f"SELECT _row, {v} FROM {st.raw} WHERE {c.name} IS NOT NULL AND "
                                 f"TRY_CAST({v} AS {c.type}) IS NULL ORDER BY _row LIMIT 1",
                             c.name, lambda r: f"{_lit(r[1])} is not {c.type.lower()}")
        cast = "TRY_CAST" if bad else "CAST"       # the value checks below still run on the other values
        sel = ", ".join(f"{cast}(CAST({c.name} AS VARCHAR) AS {c.type}) AS {c.name}" for c in t.cols)
        self.db.execute(f"CREATE OR REPLACE TEMP TABLE {st.typed} AS SELECT {sel}, _row FROM {st.raw}")
        for c in t.cols:
            if c.check:
                cond, reason = c.check[0].format(c=c.name), c.check[1]
                self._bad(st, f"SELECT _row, {c.name} FROM {st.typed} WHERE {c.name} IS NOT NULL "
                              f"AND NOT ({cond}) ORDER BY _row LIMIT 1",
                          c.name, lambda r: f"{_lit(r[1])} {reason}")

    def _check_relations(self, st: _Staged, staged: dict[str, _Staged]) -> None:
        t, tmp = st.table, st.typed
        for expr, col, why in t.checks:
            self._bad(st, f"SELECT _row FROM {tmp} WHERE NOT ({expr}) ORDER BY _row LIMIT 1", col, why)
        for key in (t.key, *t.unique):
            cols = ", ".join(key)
            notnull = " AND ".join(f"{k} IS NOT NULL" for k in key)
            self._bad(st, f"SELECT _row FROM {tmp} WHERE {notnull} QUALIFY row_number() OVER "
                          f"(PARTITION BY {cols} ORDER BY _row) > 1 ORDER BY _row LIMIT 1",
                      key[-1], f"duplicate ({cols}) within the file")
            self._bad(st, f"SELECT _row FROM {tmp} i WHERE {notnull} AND EXISTS (SELECT 1 FROM {t.name} d "
                          f"WHERE " + " AND ".join(f"d.{k} = i.{k}" for k in key) + ") ORDER BY _row LIMIT 1",
                      key[-1], f"({cols}) already in the archive")
        for c in t.cols:
            if not c.ref:
                continue
            rt, rc = c.ref.split(".")
            pool = f"SELECT {rc} FROM {rt}"
            if rt in staged:
                pool += f" UNION ALL SELECT {rc} FROM {staged[rt].typed}"
            self._bad(st, f"SELECT _row, {c.name} FROM {tmp} WHERE {c.name} IS NOT NULL AND {c.name} NOT IN "
                          f"({pool}) ORDER BY _row LIMIT 1",
                      c.name, lambda r: f"{r[1]} is not in {rt}.{rc} (neither in the files nor the archive)")
        for hk in t.history:
            self._check_overlap(st, hk)

    def _check_overlap(self, st: _Staged, hk: str) -> None:
        t = st.table
        self._bad(st, f"""
            WITH u AS (SELECT {hk}, valid_from, valid_to, _row FROM {st.typed}
                       UNION ALL SELECT {hk}, valid_from, valid_to, NULL FROM {t.name}),
                 o AS (SELECT *, lag(valid_to) OVER w AS prev_to, lag(_row) OVER w AS prev_row,
                              lag(valid_from) OVER w AS prev_from
                       FROM u WINDOW w AS (PARTITION BY {hk} ORDER BY valid_from, _row NULLS FIRST))
            SELECT coalesce(_row, prev_row), {hk}, prev_from, valid_from, _row IS NULL OR prev_row IS NULL
            FROM o WHERE prev_from IS NOT NULL AND (prev_to IS NULL OR prev_to > valid_from)
                   AND (_row IS NOT NULL OR prev_row IS NOT NULL)
            ORDER BY 1 LIMIT 1""", "valid_from",
                  lambda r: f"{hk} {r[1]}: period from {r[3]} overlaps "
                            f"{'a period in the archive' if r[4] else 'another row of the file'} (from {r[2]})")

    def _check_cross_table(self, staged: dict[str, _Staged]) -> None:
        if "points" in staged:
            st = staged["points"]
            for role, col in (("area_check", "area_id"), ("feeder_out", "feeder_id")):
                self._bad(st, f"""
                    WITH u AS (SELECT {col}, _row FROM {st.typed} WHERE role = '{role}'
                               UNION ALL SELECT {col}, NULL FROM points WHERE role = '{role}')
                    SELECT _row, {col} FROM u QUALIFY count(*) OVER (PARTITION BY {col}) > 1
                           AND _row IS NOT NULL ORDER BY _row DESC LIMIT 1""",
                          col, lambda r: f"{col} {r[1]} has a second {role} point")
        if "point_meters" in staged:
            st = staged["point_meters"]
            meters = "SELECT meter_id, register_digits FROM meters"
            if "meters" in staged:
                meters += f" UNION ALL SELECT meter_id, register_digits FROM {staged['meters'].typed}"
            for col in ("install_reading_x100", "removal_reading_x100"):
                self._bad(st, f"""SELECT i._row, i.{col}, m.register_digits FROM {st.typed} i JOIN ({meters}) m
                                  USING (meter_id) WHERE i.{col} >= CAST(10 AS HUGEINT) ** (m.register_digits + 2)
                                  ORDER BY i._row LIMIT 1""",
                          col, lambda r: f"{r[1]} does not fit the meter's {r[2]} integer digits")

    def _insert(self, staged: dict[str, _Staged]) -> dict[str, int]:
        done = {}
        try:
            self.db.execute("BEGIN TRANSACTION")
            for t in TABLES:
                if t.name in staged:
                    cols = ", ".join(t.names)
                    self.db.execute(f"INSERT INTO {t.name} ({cols}) SELECT {cols} FROM {staged[t.name].typed} "
                                    f"ORDER BY _row")
                    done[t.name] = staged[t.name].rows
            self.db.execute("COMMIT")
        except duckdb.Error as exc:
            self.db.execute("ROLLBACK")
            # the checks above should have caught it; the database's own constraints are the backstop
            raise ArchiveError(f"archive import refused by the database, nothing imported: "
                               f"{str(exc).splitlines()[0]}") from None
        return done


def import_into(path: str | os.PathLike[str], files: Iterable[str | os.PathLike[str]],
                progress: Callable[[str], object] | None = None) -> dict[str, int]:
    """:meth:`Archive.import_files` into the archive at ``path``, made if it is not there; rows per table.

    A refused import leaves nothing behind: an archive this call created is removed with its WAL and
    the directories it made, so no later command takes an empty ``archive.duckdb`` for a fleet of 0
    customers; an existing archive is unchanged (one transaction)."""
    path = pathlib.Path(path)
    fresh = not path.exists()
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    try:
        with Archive(path) as a:
            return a.import_files(files, progress=progress)
    except BaseException:
        if fresh:
            import shutil
            for p in (path, path.with_name(path.name + ".wal")):
                p.unlink(missing_ok=True)
            if made:
                shutil.rmtree(made[-1], ignore_errors=True)
        raise


def _csv_columns(p: pathlib.Path) -> str:
    """A DuckDB struct literal naming the CSV header's columns as VARCHAR (keeps them in file order)."""
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{p.name}: cannot be read ({exc})") from None
    if not header:
        raise ArchiveError(f"{p.name}, header: empty file (the first line names the columns)")
    names = [h.strip() for h in header]
    for n in names:
        if not n.replace("_", "").isalnum():
            raise ArchiveError(f"{p.name}, header, column {n!r}: not a column name")
    return "{" + ", ".join(f"'{n}': 'VARCHAR'" for n in names) + "}"

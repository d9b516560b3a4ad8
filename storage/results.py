"""Where the batch jobs' results live in a data directory, their Arrow schemas and their SQL views.

The bill run, line loss, the audit list and the ledger (``gridhead.billing_core.jobs``) write here; the
SQL views of ``gridhead sql`` (``storage.sql``) read here.  Keeping the layout in storage lets the views
be built without importing the jobs: storage stays below ``billing_core``.
"""

from __future__ import annotations

import os
import pathlib

import pyarrow as pa

from .paths import data_dir, sql_path

__all__ = [
    "BILLS", "ITEMS", "bills_root", "bill_views",
    "LINE_LOSS_TABLE", "LINE_LOSS_SCHEMA", "MISSING_TABLE", "MISSING_SCHEMA", "line_loss_glob",
    "AUDIT_ITEMS_SCHEMA", "AUDIT_MARKS_SCHEMA", "analysis_views",
    "LEDGER_TABLE", "LEDGER_ALLOC", "BALANCES_SQL", "ledger_lock_path", "ledger_views",
]

# -- bills (the bill run) ------------------------------------------------------------------------------
BILLS = "bills"
ITEMS = "bill_items"


def bills_root(data: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """The published bills of a data directory, one ``period=YYYY-MM`` folder per period."""
    return data_dir(data) / BILLS


def bill_views(data: str | os.PathLike[str] | None) -> list[str]:
    """``bills`` and ``bill_items`` views over every published period (typed empty views before a run)."""
    root = bills_root(data).resolve()
    out = []
    for view, name in (("bills", "bills.parquet"), ("bill_items", "bill_items.parquet")):
        if any(root.glob(f"period=*/{name}")):
            out.append(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet('{sql_path(root)}/period=*/{name}', "
                       f"hive_partitioning = false, union_by_name = true)")
        else:
            cols = ("bill_id BIGINT, period VARCHAR, customer_no VARCHAR, total_fen BIGINT, status VARCHAR"
                    if view == "bills" else
                    "bill_id BIGINT, period VARCHAR, customer_no VARCHAR, seq TINYINT, code VARCHAR, amount_fen BIGINT")
            sel = ", ".join(f"CAST(NULL AS {c.split()[1]}) AS {c.split()[0]}" for c in cols.split(", "))
            out.append(f"CREATE OR REPLACE VIEW {view} AS SELECT {sel} WHERE false")
    return out


# -- line loss and the audit list ----------------------------------------------------------------------
LINE_LOSS_TABLE = "line_loss"
LINE_LOSS_SCHEMA = pa.schema([
    ("level", pa.string()), ("unit_id", pa.int64()), ("unit_type", pa.string()),
    ("supply_kwh_x100", pa.int64()), ("sales_kwh_x100", pa.int64()), ("loss_kwh_x100", pa.int64()),
    ("rate_bp", pa.int64()), ("category", pa.string()), ("category_zh", pa.string()), ("flags", pa.int16()),
])
MISSING_TABLE = "line_loss_missing"
MISSING_SCHEMA = pa.schema([("area_id", pa.int64()), ("meter_id", pa.int64()), ("point_id", pa.int64()),
                            ("role", pa.string()), ("reading_date", pa.date32())])
AUDIT_ITEMS_SCHEMA = pa.schema([
    ("item_id", pa.string()), ("rank", pa.int32()), ("level", pa.string()), ("customer_id", pa.int64()),
    ("point_id", pa.int64()), ("meter_id", pa.int64()), ("area_id", pa.int64()), ("score", pa.float64()),
    ("kinds", pa.string()), ("evidence", pa.string()),
])
AUDIT_MARKS_SCHEMA = pa.schema([("item_id", pa.string()), ("result", pa.string()), ("checked_by", pa.string()),
                                ("note", pa.string()), ("checked_utc", pa.timestamp("us", tz="UTC"))])


def line_loss_glob(lake_root: str | os.PathLike[str]) -> str:
    """Every daily (and monthly) line-loss file of a lake."""
    return str(pathlib.Path(lake_root).resolve() / LINE_LOSS_TABLE / "date=*" / "part-*.parquet")


def analysis_views(lake_root: str | os.PathLike[str]) -> list[str]:
    """``line_loss``, ``line_loss_missing`` and ``audit`` views (for storage.sql), once the lake has a
    line loss or an audit directory."""
    root = pathlib.Path(lake_root).resolve()
    out: list[str] = []
    if not (root / LINE_LOSS_TABLE).is_dir() and not (root / "audit").is_dir():
        return out
    if any(root.glob(f"{LINE_LOSS_TABLE}/date=*/part-*.parquet")):
        src = (f"SELECT * FROM read_parquet('{sql_path(line_loss_glob(root))}', hive_partitioning = true, "
               f"hive_types = {{'date': DATE}})")
    else:
        src = _empty(LINE_LOSS_SCHEMA, "CAST(NULL AS DATE) AS date")
    out.append(f"CREATE OR REPLACE VIEW line_loss AS {src}")
    # per 不可算 area-day, the meters whose readings are missing (line loss's missing_table)
    if any(root.glob(f"{MISSING_TABLE}/date=*/part-*.parquet")):
        miss = (f"SELECT * FROM read_parquet('{sql_path(root / MISSING_TABLE / 'date=*' / 'part-*.parquet')}', "
                f"hive_partitioning = true, hive_types = {{'date': DATE}})")
    else:
        miss = _empty(MISSING_SCHEMA, "CAST(NULL AS DATE) AS date")
    out.append(f"CREATE OR REPLACE VIEW {MISSING_TABLE} AS SELECT date, area_id, meter_id, point_id, role, "
               f"reading_date FROM ({miss})")
    if any(root.glob("audit/month=*/part-*.parquet")):
        items = (f"SELECT * FROM read_parquet('{sql_path(root / 'audit' / 'month=*' / 'part-*.parquet')}', "
                 f"hive_partitioning = true, hive_types = {{'month': VARCHAR}})")
    else:
        items = _empty(AUDIT_ITEMS_SCHEMA, "CAST(NULL AS VARCHAR) AS month")
    if any(root.glob("audit_marks/part-*.parquet")):
        marks = f"SELECT * FROM read_parquet('{sql_path(root / 'audit_marks' / 'part-*.parquet')}')"
    else:
        marks = _empty(AUDIT_MARKS_SCHEMA)
    out.append(f"CREATE OR REPLACE VIEW audit AS SELECT i.*, m.result, m.checked_by, m.note, m.checked_utc "
               f"FROM ({items}) i LEFT JOIN (SELECT * FROM ({marks}) QUALIFY row_number() OVER "
               f"(PARTITION BY item_id ORDER BY checked_utc DESC) = 1) m USING (item_id)")
    return out


_DUCK = {pa.date32(): "DATE", pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.int32(): "INTEGER",
         pa.int16(): "SMALLINT", pa.float64(): "DOUBLE", pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ"}


def _empty(sch: pa.Schema, *extra: str) -> str:
    cols = [f"CAST(NULL AS {_DUCK[f.type]}) AS {f.name}" for f in sch] + list(extra)
    return "SELECT " + ", ".join(cols) + " WHERE false"


# -- the ledger (accounts) -----------------------------------------------------------------------------
LEDGER_TABLE = "ledger_entries"
LEDGER_ALLOC = "ledger_allocations"
BALANCES_SQL = """
SELECT c.customer_id, c.customer_no, c.name, c.category, c.prepaid,
       coalesce(sum(e.debit_fen), 0)::BIGINT AS receivable_fen, coalesce(sum(e.credit_fen), 0)::BIGINT AS received_fen,
       coalesce(sum(e.debit_fen) - sum(e.credit_fen), 0)::BIGINT AS balance_fen
FROM {c} c LEFT JOIN {e} e USING (customer_id)
GROUP BY ALL ORDER BY c.customer_id"""


def ledger_lock_path(data: str | os.PathLike[str] | None) -> pathlib.Path:
    """The ledger's writer lock; its existence also says the ledger was written to."""
    return data_dir(data) / "ledger.lock"


def ledger_views(data: str | os.PathLike[str] | None) -> list[str]:
    """``ledger``, ``balances`` and ``arrears`` views for ``gridhead sql`` (once the ledger was written to;
    the archive is attached as ``archive``).  ``arrears`` there is Σ outstanding per customer (no FIFO
    detail, no late fee: ``gridhead ledger arrears`` gives those)."""
    if not ledger_lock_path(data).exists():
        return []
    return [
        f"CREATE OR REPLACE VIEW ledger AS SELECT * FROM archive.{LEDGER_TABLE}",
        "CREATE OR REPLACE VIEW balances AS " + BALANCES_SQL.format(e=f"archive.{LEDGER_TABLE}", c="archive.customers"),
        "CREATE OR REPLACE VIEW arrears AS SELECT * FROM balances WHERE balance_fen > 0",
    ]

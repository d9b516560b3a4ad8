"""DuckDB connections as gridhead opens them: without DuckDB's own progress bar.

DuckDB draws its progress bar on *stdout* once a query runs over two seconds — into the CSV or JSON a
command writes there (``gridhead sql --csv > out.csv``).  Commands show their own bars on stderr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    import pyarrow as pa


def connect(database: str = ":memory:", read_only: bool = False) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(database, read_only=read_only)
    con.execute("SET enable_progress_bar = false")
    return con


def arrow_table(cur: duckdb.DuckDBPyConnection) -> pa.Table:
    """A result as an Arrow table (``to_arrow_table`` from DuckDB 1.4 on; ``fetch_arrow_table`` before)."""
    return cur.to_arrow_table() if hasattr(cur, "to_arrow_table") else cur.fetch_arrow_table()

"""DuckDB connections as gridhead opens them: without DuckDB's own progress bar.

DuckDB draws its progress bar on *stdout* once a query runs over two seconds — into the CSV or JSON a
command writes there (``gridhead sql --csv > out.csv``).  Commands show their own bars on stderr.
"""

from __future__ import annotations

import duckdb


def connect(database: str = ":memory:", read_only: bool = False) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(database, read_only=read_only)
    con.execute("SET enable_progress_bar = false")
    return con

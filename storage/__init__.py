"""Storage: the Parquet lake, the write-ahead log, the archive (DuckDB), the SQL views, collection state and
where the batch jobs' results live.  Imports neither ``billing_core`` nor ``headend``.
"""

# the public API: these modules; the compiled kernels (_X) and their twins (_X_py) are private
__all__ = [
    "archive", "collection", "control_log", "duck", "generator", "lake", "lakefs", "paths",
    "results", "samples", "schema", "shell", "sql", "validate", "wal",
]

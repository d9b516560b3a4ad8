"""Storage: the Parquet lake, the write-ahead log, the archive (DuckDB), the SQL views, collection state and
where the batch jobs' results live.  Imports neither ``billing_core`` nor ``headend``.
"""

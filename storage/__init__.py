"""The only package that imports duckdb / pyarrow: lake writer, WAL, archive, SQL views."""

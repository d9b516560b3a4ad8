"""Where a data directory keeps its parts: the lake, the archive and the results of the batch jobs.

The bottom of ``gridhead.storage``: it imports nothing of ours, so every module (and every layer above)
can ask for a path without importing the module that writes there.
"""

from __future__ import annotations

import os
import pathlib
from typing import Union

__all__ = ["DEFAULT_DATA_DIR", "Data", "data_dir", "archive_path", "lake_root", "sql_path"]

DEFAULT_DATA_DIR = "gridhead-data"
# a data directory as the commands take it (None: $GRIDHEAD_DATA, else ./gridhead-data)
Data = Union[str, "os.PathLike[str]", None]


def data_dir(path: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """The data directory: ``path``, else ``$GRIDHEAD_DATA``, else ``./gridhead-data``."""
    return pathlib.Path(path or os.environ.get("GRIDHEAD_DATA") or DEFAULT_DATA_DIR)


def archive_path(data: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """The archive (DuckDB database file) of a data directory."""
    return data_dir(data) / "archive.duckdb"


def lake_root(data: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """The Parquet lake of a data directory."""
    return data_dir(data) / "lake"


def sql_path(p: str | os.PathLike[str]) -> str:
    """A path as the inside of a single-quoted SQL string literal (quotes doubled)."""
    return str(p).replace("'", "''")

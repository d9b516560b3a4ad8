"""The lake behind one URI: a local directory or object storage (S3), read through pyarrow.fs.

::

    GRIDHEAD_LAKE=file:///srv/gridhead/lake
    GRIDHEAD_LAKE=s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1

An S3 URI takes pyarrow's S3 options in its query (``endpoint_override``, ``scheme``, ``region``, …); the
credentials come from the usual AWS chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``), never from
the URI.  Unset, the lake is ``<data>/lake`` on the local disk and DuckDB reads its files directly, as
before.  Set, the read paths of the bill run (:mod:`billing_core.jobs.bills`, :mod:`billing_core.jobs.dist`) and of line loss
(:func:`billing_core.jobs.lineloss.read_frozen`) list and read the Parquet files through ``pyarrow.fs`` and hand
Arrow tables to DuckDB where SQL is needed (DuckDB's httpfs extension is not needed, and cannot be
installed offline).  The layout under the URI is the local lake's (``readings/kind=K/date=D/bucket=B/
part-*.parquet``).  Writers — the head-end's ingest, compaction, the ``line_loss`` results — still write a
local lake (publication by directory swap needs a POSIX filesystem); a lake on S3 is uploaded from one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from gridhead.protocols.errors import StorageError

if TYPE_CHECKING:
    import pyarrow.compute as pc

ENV = "GRIDHEAD_LAKE"


@dataclass(frozen=True)
class Lake:
    """A lake on a pyarrow filesystem: ``fs`` and the ``base`` path inside it."""

    uri: str
    fs: pafs.FileSystem
    base: str

    def files(self, rel: str) -> list[str]:
        """The published ``part-*.parquet`` files under ``rel`` (any depth), sorted by path."""
        sel = pafs.FileSelector(f"{self.base}/{rel}".rstrip("/"), allow_not_found=True, recursive=True)
        try:
            infos = self.fs.get_file_info(sel)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"lake {self.uri}: cannot list {rel}: {exc}") from None
        return sorted(i.path for i in infos if i.type == pafs.FileType.File
                      and i.base_name.startswith("part-") and i.base_name.endswith(".parquet"))

    def read(self, files: list[str], columns: list[str], filter: pc.Expression | None = None) -> pa.Table:
        """``columns`` of ``files`` (no partition columns are inferred from the paths)."""
        try:
            return ds.dataset(files, filesystem=self.fs, format="parquet").to_table(columns=columns, filter=filter)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"lake {self.uri}: cannot read {files[0] if files else ''}: {exc}") from None


def open_lake(uri: str) -> Lake:
    """The :class:`Lake` of ``uri`` (``file:///…``, ``s3://bucket/prefix?…``)."""
    try:
        fs, base = pafs.FileSystem.from_uri(uri)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise StorageError(f"lake {uri}: not a usable lake URI ({exc})") from None
    return Lake(uri, fs, base.rstrip("/"))


def configured(lake_root: str | os.PathLike[str] | None = None) -> Lake | None:
    """The lake to read through pyarrow.fs: ``lake_root`` if it is a URI, else ``$GRIDHEAD_LAKE``; None
    (read the local directory directly) when neither is set."""
    if isinstance(lake_root, str) and "://" in lake_root:
        return open_lake(lake_root)
    uri = os.environ.get(ENV)
    return open_lake(uri) if uri else None


def uri() -> str | None:
    """``$GRIDHEAD_LAKE`` as set in this process (what a driver hands its tasks)."""
    return os.environ.get(ENV) or None


def check_local_write(local_root: str | os.PathLike[str]) -> None:
    """Refuse (one line) to write results into the local lake ``local_root`` while the readers use another
    lake behind ``$GRIDHEAD_LAKE``: the results would land where the readers do not look."""
    lk = configured()
    if lk is None:
        return
    here = os.path.realpath(local_root)
    if not (isinstance(lk.fs, pafs.LocalFileSystem) and os.path.realpath(lk.base) == here):
        raise StorageError(f"{ENV}={lk.uri}: results are written to the local lake {here}, not there; "
                           f"use --no-save, or point {ENV} at that lake")

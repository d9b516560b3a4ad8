"""The readings lake on disk: Arrow schemas, partitioning, atomic Parquet files, dedup and compaction.

The layout and codes are :mod:`storage.schema`'s; this module writes and reads the files.

Writers
    * :func:`write_readings` / :func:`write_events` — the bulk writer for *trusted* data (the fleet
      generator, imports): partition, sort, write aside, rename into place.  No validation, no dedup
      (the caller vouches for its rows): a bulk batch, or a second bulk write into a partition, may hold
      two copies of a (meter, register, ts).  storage.sql's pivots take the copy received last, and a
      partition's materialised pivot is computed with that same rule, so duplicates there are handled,
      not assumed away.  Compaction dedups them by that same rule (the ingest's own duplicates never
      reach the files: :class:`Publisher`), so it does not change what the pivots show.
    * ``storage.wal.IngestWriter`` — the durable ingest of the head-end: validation, quarantine, the
      write-ahead log, dedup; it publishes through :func:`publish_rows` here.

How a reader sees a consistent set of files (the publication rule)
    A file is *published* when it has its final name ``part-*.parquet`` inside a partition directory
    ``<table>/.../bucket=NN/``.  Files are written aside as ``.part-*.parquet.tmp`` (fsynced) and renamed
    into place (then the directory is fsynced), so a file appears whole or not at all.  A rewrite of a
    partition (compaction, or a dedup where a better copy replaces a published one) builds the whole new
    partition directory aside under ``<root>/_staging/`` and swaps it with the live one in ONE
    ``renameat2(RENAME_EXCHANGE)`` call: a reader listing the partition sees the old set of files or the
    new set, never both and never neither.  The old directory is parked under ``<root>/_trash/`` and
    removed after ``TRASH_GRACE_S`` by a later writer, so a reader that was listing or reading the old
    directory at the moment of the swap still finds all of it.  (A reader that *listed* the old set but
    opens a file after the swap gets "file not found" and must re-run its query: a transient error,
    never a wrong answer.)  Writers of one lake serialise on an ``fcntl`` lock of ``<root>/.lock``.

    Readers: :func:`published_files` is a snapshot (each partition listed through one directory handle,
    so all old or all new), to hand to ``read_parquet([...])``; use it (``storage.sql``'s views should)
    whenever a compaction may run at the same time.  :func:`published_glob` matches the same files (never
    a ``.tmp``, nothing under ``_staging``/``_trash``/``_wal``) and is what plain ``duckdb`` uses, but a
    glob is no snapshot: DuckDB silently skips a listed file that a swap took away meanwhile.

Sort order and encodings (why a reading costs a few bytes at rest)
    Within a file rows are sorted by (meter_id, register, ts_utc).  ``meter_id`` then rises slowly
    (DELTA_BINARY_PACKED: ~0 bits), ``register`` and ``quality``/``source`` repeat (dictionary + RLE),
    ``ts_utc`` is one value per daily partition and a regular step on load curves (delta), and
    ``received_utc`` takes few distinct values per file (one per collection round: dictionary).  zstd
    then squeezes what is left; see ``benchmarks/bench_ingest.py`` for the measured bytes per reading.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import errno
import fcntl
import os
import pathlib
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Iterable, Mapping, Union

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from gridhead.protocols.errors import StorageError

from . import schema

# a directory or file given as a path (a lake's root, a partition, a file)
StrPath = Union[str, "os.PathLike[str]"]
# rows handed to the writers: an Arrow Table or RecordBatch, or a mapping of column name -> array
Rows = Union["pa.Table", "pa.RecordBatch", Mapping[str, Any]]

# --- Arrow schemas ------------------------------------------------------------------------------------
# Partition keys (kind, date, bucket) live in the path, not in the file; DuckDB / pyarrow give them back
# as columns with hive partitioning.  Timestamps are whole seconds, UTC.
TS = pa.timestamp("s", tz="UTC")

READINGS_SCHEMA = pa.schema([
    pa.field("meter_id", pa.int64(), nullable=False),
    pa.field("register", pa.int16(), nullable=False),
    pa.field("ts_utc", TS, nullable=False),
    pa.field("value", pa.int64(), nullable=False),
    pa.field("quality", pa.uint8(), nullable=False),
    pa.field("source", pa.uint8(), nullable=False),
    pa.field("received_utc", TS, nullable=False),
])

EVENTS_SCHEMA = pa.schema([
    pa.field("meter_id", pa.int64(), nullable=False),
    pa.field("event", pa.int16(), nullable=False),        # a code of schema.EVENTS
    pa.field("start_utc", TS, nullable=False),
    pa.field("end_utc", TS, nullable=True),               # null while the event is still open
    pa.field("detail", pa.string(), nullable=True),
    pa.field("source", pa.uint8(), nullable=False),
    pa.field("received_utc", TS, nullable=False),
])

# A rejected row keeps everything it came with, plus why.  ``table`` says which table it was meant for;
# for an event, ``register`` holds the event code, ``ts_utc`` its start and ``end_utc``/``detail`` the rest.
QUARANTINE_SCHEMA = pa.schema([
    pa.field("table", pa.string(), nullable=False),       # "readings" or "events"
    pa.field("kind", pa.string(), nullable=True),         # the reading kind (null for events)
    pa.field("meter_id", pa.int64(), nullable=False),
    pa.field("register", pa.int16(), nullable=False),
    pa.field("ts_utc", TS, nullable=False),
    pa.field("value", pa.int64(), nullable=True),
    pa.field("quality", pa.uint8(), nullable=False),
    pa.field("source", pa.uint8(), nullable=False),
    pa.field("received_utc", TS, nullable=False),
    pa.field("end_utc", TS, nullable=True),
    pa.field("detail", pa.string(), nullable=True),
    pa.field("reason", pa.string(), nullable=False),      # one of the REASON_* texts of storage.validate
])

SCHEMAS = {"readings": READINGS_SCHEMA, "events": EVENTS_SCHEMA, "quarantine": QUARANTINE_SCHEMA}
TABLES = tuple(SCHEMAS)

ROW_GROUP_ROWS = 1 << 20          # ~1M rows: a row group is a unit of scan, big enough to amortise
# per-column encodings (see the module docstring); dictionary for the rest
_ENCODINGS = {
    "readings": {"meter_id": "DELTA_BINARY_PACKED", "value": "DELTA_BINARY_PACKED"},
    "events": {"meter_id": "DELTA_BINARY_PACKED"},
    "quarantine": {},
}
ZSTD_LEVEL = 3

_S_PER_DAY = 86400
_EPOCH_DAY = np.datetime64("1970-01-01", "D")


# --- bucket hash, vectorised ----------------------------------------------------------------------------
def buckets_of(meter_ids: npt.ArrayLike, n_buckets: int = schema.N_BUCKETS) -> np.ndarray:
    """:func:`storage.schema.bucket_of` of a whole column (same numbers; uint64 arithmetic wraps mod 2**64)."""
    z = np.asarray(meter_ids).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z % np.uint64(n_buckets)).astype(np.int16)


def local_days(ts_s: np.ndarray) -> np.ndarray:
    """Partition day (days since 1970-01-01, China Standard Time) of UTC epoch seconds."""
    return (ts_s + schema.LOCAL_OFFSET_S) // _S_PER_DAY


def day_str(day: int) -> str:
    return str(_EPOCH_DAY + np.timedelta64(int(day), "D"))


# --- columns in, columns out ------------------------------------------------------------------------------
def seconds(col: Any) -> np.ndarray:
    """Epoch seconds (int64) of a timestamp column given as Arrow, numpy datetime64 or integers."""
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("s", tz=col.type.tz), safe=False)
            secs: np.ndarray = col.to_numpy(zero_copy_only=False).astype("datetime64[s]").astype(np.int64)
            return secs
        col = col.to_numpy(zero_copy_only=False)
    a = np.asarray(col)
    if a.dtype.kind == "M":
        return a.astype("datetime64[s]").astype(np.int64)
    if a.dtype.kind in "iu":
        return a.astype(np.int64, copy=False)
    raise StorageError(f"lake: a timestamp column must be datetime64 or epoch seconds, not {a.dtype}")


def to_table(data: Rows, table: str = "readings") -> pa.Table:
    """An Arrow table of ``table``'s schema from a Table, RecordBatch or mapping of column -> array.

    Timestamp columns may be datetime64, Arrow timestamps of any unit, or int epoch seconds; integer
    columns are cast to the schema's width (a value that does not fit is a :class:`StorageError`).
    """
    sch = SCHEMAS[table]
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        if data.schema.equals(sch, check_metadata=False):
            return data
        data = {name: data.column(name) for name in data.column_names}
    if not isinstance(data, Mapping):
        raise StorageError(f"lake: {table} rows must be an Arrow table/batch or a mapping of columns")
    missing = [f.name for f in sch if not f.nullable and f.name not in data]
    if missing:
        raise StorageError(f"lake: {table} rows lack column(s) {', '.join(missing)}")
    n: int | None = None
    arrays: list[Any] = []
    for f in sch:
        col = data.get(f.name)
        if col is None:
            arrays.append(pa.nulls(n or 0, f.type) if n is not None else None)
            continue
        if pa.types.is_timestamp(f.type):
            if isinstance(col, (pa.Array, pa.ChunkedArray)) and col.null_count:
                arr = col.cast(f.type, safe=False)
            else:
                arr = pa.array(seconds(col), pa.int64()).view(f.type)     # same layout: no copy, no cast
        else:
            try:
                if isinstance(col, (pa.Array, pa.ChunkedArray)):
                    arr = col if col.type == f.type else col.cast(f.type)
                else:
                    arr = _from_numpy(col, f.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
                raise StorageError(f"lake: {table} column {f.name}: {exc}") from None
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if n is None:
            n = len(arr)
        elif len(arr) != n:
            raise StorageError(f"lake: {table} column {f.name} has {len(arr)} rows, others {n}")
        arrays.append(arr)
    arrays = [a if a is not None else pa.nulls(n or 0, f.type) for a, f in zip(arrays, sch)]
    return pa.Table.from_arrays(arrays, schema=sch)


_NP_INT: dict[Any, np.dtype[Any]] = {pa.int8(): np.dtype(np.int8), pa.int16(): np.dtype(np.int16), pa.int32(): np.dtype(np.int32),
           pa.int64(): np.dtype(np.int64), pa.uint8(): np.dtype(np.uint8), pa.uint16(): np.dtype(np.uint16)}


def _from_numpy(col: npt.ArrayLike, typ: pa.DataType) -> pa.Array:
    """An Arrow array of ``typ`` from array-like ``col``; a value that does not fit raises (no wrap-around)."""
    a = np.asarray(col)
    want = _NP_INT.get(typ)
    if want is not None and a.dtype.kind in "iu" and a.dtype != want:
        info = np.iinfo(want)
        if len(a) and (a.min() < info.min or a.max() > info.max):
            raise ValueError(f"values outside {want} range")
        a = a.astype(want)
    return pa.array(a, typ)


# --- sort order -------------------------------------------------------------------------------------------
def _bits(span: int) -> int:
    return max(int(span).bit_length(), 0)


def sort_order(*keys: np.ndarray) -> np.ndarray:
    """Indices that sort rows by ``keys`` (most significant first), stable.

    When the keys' ranges fit in 63 bits together (the usual case: bucket, meter, register and seconds of
    the day) they are packed into one int64 and sorted once — about 5x faster than ``np.lexsort``.
    """
    if not keys or len(keys[0]) == 0:
        return np.arange(len(keys[0]) if keys else 0)
    lows = [int(k.min()) for k in keys]
    spans = [int(k.max()) - lo for k, lo in zip(keys, lows)]
    widths = [_bits(s) for s in spans]
    if sum(widths) <= 63:
        packed = np.zeros(len(keys[0]), np.int64)
        for k, lo, w in zip(keys, lows, widths):
            if w:
                packed <<= w
                packed |= k.astype(np.int64) - lo
        return np.argsort(packed, kind="stable")
    return np.lexsort(tuple(reversed(keys)))


def _runs(sorted_part: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal values in a sorted array."""
    if len(sorted_part) == 0:
        return []
    edges = np.flatnonzero(sorted_part[1:] != sorted_part[:-1]) + 1
    bounds = np.concatenate(([0], edges, [len(sorted_part)]))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


# --- paths ------------------------------------------------------------------------------------------------
def partition_dir(root: StrPath, table: str, day: int, bucket: int | None = None, kind: str | None = None) -> pathlib.Path:
    """The Hive directory of one partition (storage.schema's layout)."""
    p = pathlib.Path(root) / table
    if table == "readings":
        p = p / f"kind={kind}"
    p = p / f"date={day_str(day)}"
    if bucket is not None:
        p = p / f"bucket={bucket:02d}"
    return p


_DEPTH = {"readings": 3, "events": 2, "quarantine": 1}      # partition directory levels under a table


def published_glob(root: StrPath, table: str = "readings") -> str:
    """A glob of the published Parquet files of ``table`` (never a ``.tmp``, staging or trash file).

    Good for plain ``duckdb`` (``read_parquet('<glob>', hive_partitioning = true)``) and for any reader
    while no compaction runs.  A glob is not a snapshot, though: DuckDB lists a directory, then stats each
    name, and silently skips a name that a concurrent compaction just swapped away (measured: a whole
    partition missing from a count).  Readers that may run during compaction use :func:`published_files`.
    """
    if table not in _DEPTH:
        raise StorageError(f"lake: no table {table!r} (tables: {', '.join(TABLES)})")
    depth = {"readings": "kind=*/date=*/bucket=*", "events": "date=*/bucket=*", "quarantine": "date=*"}
    return str(pathlib.Path(root).resolve() / table / depth[table] / "part-*.parquet")


def published_files(root: StrPath, table: str = "readings") -> list[str]:
    """A consistent snapshot of the published files of ``table``, sorted.

    Each partition directory is listed once, through one open directory handle, so a partition's files
    are all of its old set or all of its new set (old sets stay listable for ``TRASH_GRACE_S``).  Hand
    the list to DuckDB — ``read_parquet([...], hive_partitioning = true)`` — which then fails loudly
    ("cannot open file", retry the query) rather than skipping a file a later compaction removed.
    """
    return sorted(os.path.join(d, n) for d, names in partition_listing(root, table)
                  for n in names if _is_part(n))


def partition_listing(root: StrPath, table: str = "readings", under: str = "") -> list[tuple[str, list[str]]]:
    """(partition directory, its entry names) of ``table`` (below ``under``, e.g. ``kind=daily``), each
    directory listed once: the snapshot :func:`published_files` and :func:`pivot_snapshot` are made of."""
    if table not in _DEPTH:
        raise StorageError(f"lake: no table {table!r} (tables: {', '.join(TABLES)})")
    level = [str(pathlib.Path(root).resolve() / table / under) if under else
             str(pathlib.Path(root).resolve() / table)]
    for _ in range(_DEPTH[table] - (1 if under else 0)):
        level = [os.path.join(d, e.name) for d in level for e in scan_dir(d) if e.is_dir() and "=" in e.name]
    return [(d, file_names(d)) for d in level]


def _is_part(name: str) -> bool:
    return name.startswith("part-") and name.endswith(".parquet")


def scan_dir(d: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(d) as it:
            return list(it)
    except FileNotFoundError:
        return []


def file_names(d: str) -> list[str]:
    try:
        return os.listdir(d)
    except FileNotFoundError:
        return []


# --- atomic files -----------------------------------------------------------------------------------------
def fsync_dir(path: StrPath) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mkdirs(path: pathlib.Path) -> None:
    """Create ``path`` and fsync each new directory's parent, so the new entries survive a crash."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def write_parquet(table: pa.Table, path: pathlib.Path, name: str, *, sync_dir: bool = True) -> pathlib.Path:
    """Write ``table`` (of schema ``SCHEMAS[name]``) to ``path`` atomically: aside, fsync, rename, fsync dir."""
    mkdirs(path.parent)
    tmp = path.with_name("." + path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(
                table, f, row_group_size=ROW_GROUP_ROWS, compression="zstd", compression_level=ZSTD_LEVEL,
                use_dictionary=[c for c in table.column_names if c not in _ENCODINGS[name]],
                column_encoding=_ENCODINGS[name] or None, write_statistics=True,
                coerce_timestamps="ms", allow_truncated_timestamps=False)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"lake: cannot write {path}: {exc.strerror or exc}") from None
    if sync_dir:
        fsync_dir(path.parent)
    return path


def new_file_name() -> str:
    return f"part-{uuid.uuid4().hex}.parquet"


def read_file(path: StrPath, table: str, columns: Iterable[str] | None = None) -> pa.Table:
    """Read one published file of ``table`` in its schema; a corrupt file is a StorageError naming it."""
    try:
        tbl = pq.ParquetFile(path).read(columns=list(columns) if columns is not None else None)
        sch = SCHEMAS[table]
        return tbl.cast(pa.schema([sch.field(n) for n in tbl.column_names]))
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"lake: corrupt or unreadable Parquet file {path}: {exc}") from None


# --- the lake lock ---------------------------------------------------------------------------------------
class LakeLock:
    """An exclusive ``fcntl`` lock on ``<root>/.lock``: writers of one lake publish one at a time.

    Re-entrant within one object (a writer holding it may call helpers that take it again).
    """

    def __init__(self, root: StrPath) -> None:
        self.root = pathlib.Path(root)
        self._fd: int | None = None
        self._depth = 0

    def __enter__(self) -> "LakeLock":
        if self._depth == 0:
            mkdirs(self.root)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# --- partitions and keys -------------------------------------------------------------------------------
_CODE_COL = {"readings": "register", "events": "event"}
_TIME_COL = {"readings": "ts_utc", "events": "start_utc"}


def split_partitions(tbl: pa.Table, table: str
                     ) -> Iterator[tuple[tuple[int, int | None], np.ndarray, np.ndarray | None]]:
    """Yield ((day, bucket), row indices, keys) per partition of ``tbl``, rows sorted within it.

    Readings and events sort by (meter, code, time) and carry their dedup key: one int64
    ``meter << 27 | code << 17 | second of the local day`` (schema.MAX_METER_ID and MAX_REGISTER_CODE bound
    the fields).  Quarantine rows partition by their receive day, in arrival order, with no key.
    """
    if table == "quarantine":
        days = local_days(seconds(tbl.column("received_utc")))
        order = np.argsort(days, kind="stable")
        for lo, hi in _runs(days[order]):
            yield (int(days[order[lo]]), None), order[lo:hi], None
        return
    meter = tbl.column("meter_id").to_numpy()
    ts = seconds(tbl.column(_TIME_COL[table]))
    code = tbl.column(_CODE_COL[table]).to_numpy().astype(np.int64)
    days = local_days(ts)
    sec = ts + schema.LOCAL_OFFSET_S - days * _S_PER_DAY
    part = days * schema.N_BUCKETS + buckets_of(meter)
    order = sort_order(part, meter, code, sec)
    keys = (meter << 27) | (code << 17) | sec
    for lo, hi in _runs(part[order]):
        idx = order[lo:hi]
        p = int(part[idx[0]])
        yield (p // schema.N_BUCKETS, p % schema.N_BUCKETS), idx, keys[idx]


def _keys_of(tbl: pa.Table, table: str) -> np.ndarray:
    """Dedup keys of rows all in one partition (see :func:`split_partitions`)."""
    meter = tbl.column("meter_id").to_numpy()
    ts = seconds(tbl.column(_TIME_COL[table]))
    code = tbl.column(_CODE_COL[table]).to_numpy().astype(np.int64)
    sec = (ts + schema.LOCAL_OFFSET_S) % _S_PER_DAY
    keys: np.ndarray = (meter << 27) | (code << 17) | sec
    return keys


# --- which copy wins -------------------------------------------------------------------------------------
def _rank_columns(tbl: pa.Table, table: str, last_received: bool = False) -> list[np.ndarray]:
    """Columns ordering the copies of one reading / event, best first (the dedup rule).

    Readings (same meter, register, ts):
      1. an actual copy beats an estimated one (估抄 is replaced when the real reading arrives);
      2. a copy not flagged suspect beats a suspect one;
      3. then the first received wins (earliest ``received_utc``): a retry or back-fill of a reading we
         already hold changes nothing, so re-delivery is idempotent;
      4. ties (same second) go to the smallest (value, quality, source): arbitrary but total, so any
         interleaving of deliveries gives the same final set.
    Events (same meter, event, start): a closed copy (with ``end_utc``) beats an open one, then first
    received, then smallest (end, source, detail).
    ``last_received`` (readings, compaction): the copy received last wins, the rule of storage.sql's
    pivots, so compacting duplicates a bulk writer left never changes what the views show.
    """
    if table == "readings" and last_received:
        q = tbl.column("quality").to_numpy()
        return [-seconds(tbl.column("received_utc")), tbl.column("value").to_numpy(), q,
                tbl.column("source").to_numpy()]
    if table == "readings":
        q = tbl.column("quality").to_numpy()
        return [(q & schema.Q_ESTIMATED) != 0, (q & schema.Q_SUSPECT) != 0,
                seconds(tbl.column("received_utc")), tbl.column("value").to_numpy(), q,
                tbl.column("source").to_numpy()]
    end = tbl.column("end_utc")
    detail = tbl.column("detail").fill_null("").to_numpy(zero_copy_only=False).astype(str)
    return [end.is_null().to_numpy(zero_copy_only=False), seconds(tbl.column("received_utc")),
            seconds(end.fill_null(0)), tbl.column("source").to_numpy(), detail]


def dedup(tbl: pa.Table, table: str, keys: np.ndarray | None = None, *, last_received: bool = False) -> pa.Table:
    """Keep the best copy (:func:`_rank_columns`) of each key; ``tbl`` rows are of one partition.

    Row order is kept.  Only the rows of keys that occur more than once are ranked, so a table without
    duplicates costs one sort of its keys.
    """
    if table == "quarantine" or tbl.num_rows < 2:
        return tbl
    keys = _keys_of(tbl, table) if keys is None else keys
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    dup = k[1:] == k[:-1]
    if not dup.any():
        return tbl
    grouped = np.zeros(len(k), bool)
    grouped[1:] |= dup
    grouped[:-1] |= dup
    rows = order[grouped]
    ranks = _rank_columns(tbl.take(pa.array(rows)), table, last_received)
    by_rank = np.lexsort(tuple(reversed([keys[rows], *ranks])))
    gk = keys[rows][by_rank]
    best = np.ones(len(gk), bool)
    best[1:] = gk[1:] != gk[:-1]
    keep = np.sort(np.concatenate([order[~grouped], rows[by_rank][best]]))
    return tbl.take(pa.array(keep))


def _sorted(tbl: pa.Table, table: str) -> pa.Table:
    for _, idx, _keys in split_partitions(tbl, table):
        if len(idx) != tbl.num_rows:
            raise StorageError(f"lake: rows of several partitions given as one ({table})")
        return tbl.take(pa.array(idx))
    return tbl


# --- replacing a partition atomically ---------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_renameat2: Callable[..., int] | None
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
except (AttributeError, OSError):      # not Linux / old glibc: fall back to two renames
    _renameat2 = None


def exchange_dirs(a: pathlib.Path, b: pathlib.Path) -> None:
    """Swap two directories in one step (``renameat2(RENAME_EXCHANGE)``, Linux >= 3.15).

    Where the call is missing, falls back to two renames, with a moment in which ``b`` does not exist
    (a reader then sees the partition empty): the one place the publication rule is weaker.
    """
    if _renameat2 is not None:
        if _renameat2(-100, os.fsencode(a), -100, os.fsencode(b), _RENAME_EXCHANGE) == 0:   # AT_FDCWD
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise StorageError(f"lake: cannot swap {a} with {b}: {os.strerror(err)}")
    aside = a.with_name(a.name + ".old")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def replace_partition(root: StrPath, live: pathlib.Path, tbl: pa.Table, table: str) -> pathlib.Path:
    """Make ``tbl`` the whole content of partition directory ``live``, atomically for readers."""
    root = pathlib.Path(root)
    staging = root / "_staging" / uuid.uuid4().hex
    path = write_parquet(tbl, staging / new_file_name(), table)
    if table == "readings" and _pivots(live):
        write_pivot(tbl, path)
    if live.exists():
        exchange_dirs(staging, live)
        fsync_dir(live.parent)
        # The old set goes to _trash, not away: a reader that opened the old directory just before the
        # swap is still listing it, and must see all of it (measured: an immediate rmtree made a
        # concurrent DuckDB glob miss a whole partition).  Swept after TRASH_GRACE_S.
        trash = root / "_trash"
        mkdirs(trash)
        os.rename(staging, trash / f"{time.time_ns()}-{staging.name}")
        sweep_trash(root)
    else:
        mkdirs(live.parent)
        os.rename(staging, live)
        fsync_dir(live.parent)
    fsync_dir(staging.parent)
    return live / path.name


TRASH_GRACE_S = 60.0


def sweep_trash(root: StrPath, grace_s: float = TRASH_GRACE_S) -> None:
    """Delete replaced partition directories parked in ``_trash`` more than ``grace_s`` ago."""
    trash = pathlib.Path(root) / "_trash"
    if not trash.exists():
        return
    cutoff = time.time_ns() - int(grace_s * 1e9)
    for d in os.listdir(trash):
        if int(d.split("-", 1)[0]) < cutoff:
            shutil.rmtree(trash / d, ignore_errors=True)


def clean(root: StrPath) -> None:
    """Remove what a crashed writer left: staging directories and ``.tmp`` files (never published)."""
    import glob
    root = pathlib.Path(root)
    shutil.rmtree(root / "_staging", ignore_errors=True)
    sweep_trash(root)
    for table in TABLES:
        for pattern in (".part-*.tmp", ".pivot-*.tmp"):
            for tmp in glob.glob(str(root / table / "**" / pattern), recursive=True):
                os.unlink(tmp)


# --- publishing with dedup --------------------------------------------------------------------------------
class Publisher:
    """Publishes rows into the lake, deduplicated against themselves and the partition's published files.

    Keeps the dedup keys of recently touched partitions in memory (checked against the directory listing
    on every use, so files added or compacted by another writer are noticed), at most ``max_cached_keys``.
    Call under a :class:`LakeLock` (the ingest writer's roller does).
    """

    def __init__(self, root: StrPath, max_cached_keys: int = 16 << 20) -> None:
        self.root = pathlib.Path(root)
        self.max_cached_keys = max_cached_keys
        self._cache: dict[pathlib.Path, tuple[frozenset[str], np.ndarray]] = {}

    def _files(self, d: pathlib.Path) -> frozenset[str]:
        try:
            return frozenset(n for n in os.listdir(d) if n.startswith("part-") and n.endswith(".parquet"))
        except FileNotFoundError:
            return frozenset()

    def _existing_keys(self, d: pathlib.Path, table: str) -> tuple[frozenset[str], np.ndarray]:
        files = self._files(d)
        hit = self._cache.pop(d, None)
        if hit is not None and hit[0] == files:
            self._cache[d] = hit        # most recently used last
            return hit
        parts = [_keys_of(read_file(d / n, table, ["meter_id", _CODE_COL[table], _TIME_COL[table]]), table)
                 for n in sorted(files)]
        keys = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        return self._remember(d, files, keys)

    def _remember(self, d: pathlib.Path, files: frozenset[str], keys: np.ndarray
                  ) -> tuple[frozenset[str], np.ndarray]:
        self._cache[d] = (files, keys)
        total = sum(len(v[1]) for v in self._cache.values())
        while total > self.max_cached_keys and len(self._cache) > 1:
            old = next(iter(self._cache))
            total -= len(self._cache.pop(old)[1])
        return files, keys

    def publish(self, data: Rows, table: str = "readings", kind: str | None = None, *,
                name: str | None = None) -> int:
        """Publish rows; returns how many rows became visible (new keys or better copies).

        ``name`` (quarantine only) fixes the file name, so that publishing the same WAL segment twice
        replaces the file instead of adding a second copy.
        """
        tbl = to_table(data, table)
        if table == "readings" and kind not in schema.KINDS:
            raise StorageError(f"lake: unknown reading kind {kind!r} (kinds: {', '.join(schema.KINDS)})")
        added = 0
        for (day, bucket), idx, keys in split_partitions(tbl, table):
            d = partition_dir(self.root, table, day, bucket, kind)
            sub = tbl.take(pa.array(idx))
            if table == "quarantine":
                write_parquet(sub, d / (name or new_file_name()), table)
                added += sub.num_rows
                continue
            assert keys is not None              # split_partitions keys every table but quarantine
            added += self._publish_partition(d, sub, keys, table)
        return added

    def _publish_partition(self, d: pathlib.Path, sub: pa.Table, keys: np.ndarray, table: str) -> int:
        if len(keys) > 1 and (keys[1:] == keys[:-1]).any():        # duplicates within the batch
            sub = dedup(sub, table, keys)
            keys = _keys_of(sub, table)
        files, existing = self._existing_keys(d, table)
        pos = np.searchsorted(existing, keys)
        hit = np.zeros(len(keys), bool)
        inside = pos < len(existing)
        hit[inside] = existing[pos[inside]] == keys[inside]
        if hit.any():
            old = pa.concat_tables([read_file(d / n, table) for n in sorted(files)])
            better = _changed_rows(old, dedup(pa.concat_tables([old, sub.filter(pa.array(hit))]), table), table)
            if better:
                # a better copy of a published row (e.g. actual over estimated): rewrite the partition
                replace_partition(self.root, d, _sorted(dedup(pa.concat_tables([old, sub]), table), table), table)
                self._cache.pop(d, None)
                return int((~hit).sum()) + better
            sub, keys = sub.filter(pa.array(~hit)), keys[~hit]
        if not len(keys):
            return 0
        path = write_parquet(sub, d / new_file_name(), table)
        self._remember(d, files | {path.name}, np.sort(np.concatenate([existing, keys])))
        return len(keys)


def _changed_rows(old: pa.Table, new: pa.Table, table: str) -> int:
    """How many rows of ``new`` differ from ``old`` (both deduplicated, of one partition, same keys)."""
    a, b = _sorted(old, table), _sorted(new, table)
    if a.num_rows != b.num_rows:
        raise StorageError(f"lake: dedup changed the number of {table} keys ({a.num_rows} -> {b.num_rows})")
    differ = np.zeros(a.num_rows, bool)
    for name in a.column_names:
        x, y = a.column(name), b.column(name)
        differ |= ~pa.compute.fill_null(pa.compute.equal(x, y), False).to_numpy(zero_copy_only=False) \
            & ~(x.is_null().to_numpy(zero_copy_only=False) & y.is_null().to_numpy(zero_copy_only=False))
    return int(differ.sum())


# --- the materialised daily pivot ---------------------------------------------------------------------------
# storage.sql's daily_frozen / monthly_settlement are one row per (meter, day) with a column per register.
# Computing that with a GROUP BY over every reading costs a hash table of all meter-days (measured: 3.4 s
# per 10M readings on this 2-core machine, DuckDB's own PIVOT 5.7 s, while scanning the same columns takes
# 0.1 s).  So a partition of those kinds that holds exactly ONE part file may carry its pivot beside it:
# ``pivot-<id>.pivot`` (Parquet; not ``*.parquet``, so no reading glob picks it up) for ``part-<id>.parquet``,
# computed from exactly that file with the view's rule.  Files never change once published, so the pair is
# consistent by name: a reader that lists the directory and finds one part file and its pivot reads the
# pivot; any other listing (several part files, a pivot not yet written) falls back to the GROUP BY.
# Written by the bulk writer (a partition's first file), every partition rewrite (compaction, a better copy:
# inside the staging directory, so it is swapped in with its part file) and by compaction for a single-file
# partition lacking one.  Not by the ingest roll (it keeps the durable path as measured in bench_ingest):
# `gridhead lake compact`, or the head-end's nightly compaction (`serve --collect`, headend.collect.Schedule),
# gives those partitions their pivot.
PIVOT_KINDS = (schema.DAILY, schema.MONTHLY)
PIVOT_REGISTERS = tuple(schema.REGISTERS[c].name
                        for c in (*schema.ENERGY_REGISTERS, schema.REGISTER_CODES["md_fwd"]))
# values of different meters side by side: no dictionary (BYTE_STREAM_SPLIT would be 11 % smaller, but
# DuckDB 1.5 reads it for floats only); receive times rise with the meter within a concentrator (delta).
# Measured on an 18,750-meter daily pivot: 422 kB, against 631 kB with the readings' encodings.
_ENCODINGS["pivot"] = {"meter_id": "DELTA_BINARY_PACKED", "received_utc": "DELTA_BINARY_PACKED",
                       **{n: "PLAIN" for n in PIVOT_REGISTERS}}
PIVOT_SCHEMA = pa.schema([pa.field("meter_id", pa.int64(), nullable=False), pa.field("ts_utc", TS, nullable=False),
                          *[pa.field(n, pa.int64()) for n in PIVOT_REGISTERS],
                          pa.field("quality", pa.uint8(), nullable=False),
                          pa.field("received_utc", TS, nullable=False)])


def pivot_name(part_name: str) -> str:
    return "pivot-" + part_name[len("part-"):-len(".parquet")] + ".pivot"


def pivot_of(tbl: pa.Table) -> pa.Table:
    """The pivot of the readings of one partition: per meter the first ``ts_utc``, per register of
    :data:`PIVOT_REGISTERS` the value received last (of equal receive times, the last row given),
    ``quality`` OR-ed and ``received_utc`` the latest over all the meter's rows — storage.sql's rule."""
    meter = tbl.column("meter_id").to_numpy()
    reg = tbl.column("register").to_numpy().astype(np.int64)
    recv = seconds(tbl.column("received_utc"))
    order = sort_order(meter, reg, recv)
    m, r = meter[order], reg[order]
    n = len(m)
    if n == 0:
        return PIVOT_SCHEMA.empty_table()
    new_meter = np.ones(n, bool)
    new_meter[1:] = m[1:] != m[:-1]
    starts = np.flatnonzero(new_meter)
    group = np.cumsum(new_meter) - 1
    last = np.ones(n, bool)                       # the last received copy of each (meter, register)
    last[:-1] = new_meter[1:] | (r[1:] != r[:-1])
    value = tbl.column("value").to_numpy()[order]
    cols = {"meter_id": m[starts],
            "ts_utc": np.minimum.reduceat(seconds(tbl.column("ts_utc"))[order], starts),
            "quality": np.bitwise_or.reduceat(tbl.column("quality").to_numpy()[order], starts),
            "received_utc": np.maximum.reduceat(recv[order], starts)}
    for name in PIVOT_REGISTERS:
        at = last & (r == schema.REGISTER_CODES[name])
        out = np.zeros(len(starts), np.int64)
        out[group[at]] = value[at]
        has = np.zeros(len(starts), bool)
        has[group[at]] = True
        cols[name] = pa.array(out, pa.int64(), mask=~has)
    return pa.Table.from_arrays(
        [cols[f.name] if isinstance(cols[f.name], pa.Array) else
         pa.array(cols[f.name], pa.int64()).view(f.type) if f.type == TS else pa.array(cols[f.name], f.type)
         for f in PIVOT_SCHEMA], schema=PIVOT_SCHEMA)


def _pivots(d: pathlib.Path) -> bool:
    """Whether partition directory ``d`` is of a kind that carries a pivot (readings/kind=daily/date=/bucket=)."""
    kind = pathlib.Path(d).parent.parent
    return kind.name in {f"kind={k}" for k in PIVOT_KINDS} and kind.parent.name == "readings"


def write_pivot(tbl: pa.Table, part: pathlib.Path) -> pathlib.Path:
    """Publish the pivot of part file ``part`` (whose rows are ``tbl``) beside it."""
    return write_parquet(pivot_of(tbl), part.with_name(pivot_name(part.name)), "pivot")


def partition_pivot(d: str, names: Iterable[str]) -> tuple[list[str], list[str]]:
    """What to read of one partition directory ``d`` listing ``names``: ([its pivot], []) when it holds one
    part file and that file's pivot, else ([], its part files).  See the comment above :data:`PIVOT_KINDS`."""
    mine = sorted(n for n in names if _is_part(n))
    if len(mine) == 1 and pivot_name(mine[0]) in names:
        return [os.path.join(d, pivot_name(mine[0]))], []
    return [], [os.path.join(d, n) for n in mine]


def pivot_snapshot(root: StrPath, kind: str) -> tuple[list[str], list[str]]:
    """One listing of ``kind``'s partitions: (pivot files of the partitions that have one, the part files
    of the partitions that do not), both sorted (:func:`partition_pivot`)."""
    pivots, parts = [], []
    for d, names in partition_listing(root, "readings", f"kind={kind}"):
        p, f = partition_pivot(d, names)
        pivots += p
        parts += f
    return sorted(pivots), sorted(parts)


# --- compaction --------------------------------------------------------------------------------------------
def partition_dirs(root: StrPath, table: str = "readings") -> list[pathlib.Path]:
    """Every partition directory of ``table`` holding at least one published file."""
    return sorted({pathlib.Path(f).parent for f in published_files(root, table)})


def compact(root: StrPath, table: str = "readings", *, min_files: int = 2,
            dates: Iterable[dt.date] | None = None) -> tuple[int, int]:
    """Merge each partition holding ``min_files`` or more files into one file, deduplicated and sorted
    (and give a single-file partition of a pivot kind its missing pivot).

    ``dates``: only the partitions of those days (``datetime.date``s; the head-end's nightly compaction of
    the day before).  Atomic per partition (:func:`replace_partition`); the lake's lock is taken per
    partition and the partition listed again under it, so a live ingest publishes between partitions
    rather than waiting for the whole table.  Returns (partitions compacted, files removed).
    Rows still in a write-ahead log are not seen: ``storage.wal.compact`` replays the WAL first.
    """
    want = None if dates is None else {f"date={d.isoformat()}" for d in dates}
    done = removed = 0
    lock = LakeLock(root)
    for d in partition_dirs(root, table):
        if want is not None and not want.intersection(d.parts):
            continue
        with lock:
            names = file_names(str(d))
            files = sorted(n for n in names if _is_part(n))
            if len(files) == 1 and table == "readings" and _pivots(d) and pivot_name(files[0]) not in names:
                write_pivot(read_file(d / files[0], table), d / files[0])
            if len(files) < min_files:
                continue
            tbl = pa.concat_tables([read_file(d / n, table) for n in files])
            # readings: the ingest never publishes a key twice (Publisher), so the duplicates met here are
            # a bulk writer's, and the views' rule (received last) decides, as it did before compaction
            tbl = _sorted(dedup(tbl, table, last_received=True), table) if table != "quarantine" else tbl
            replace_partition(root, d, tbl, table)
            done += 1
            removed += len(files) - 1
    return done, removed


# --- bulk writer -------------------------------------------------------------------------------------------
def write_table(root: StrPath, data: Rows, table: str = "readings", kind: str | None = None) -> list[pathlib.Path]:
    """Bulk-write trusted rows of ``table`` into the lake: one new file per partition touched.

    Rows are split by (date, bucket), sorted by (meter, register/event, time) and each partition's rows
    written aside and renamed into place (:func:`write_parquet`).  Nothing is validated or deduplicated:
    for head-end data use ``storage.wal.IngestWriter``.  Returns the published paths.
    """
    if table == "readings" and kind not in schema.KINDS:
        raise StorageError(f"lake: unknown reading kind {kind!r} (kinds: {', '.join(schema.KINDS)})")
    tbl = to_table(data, table)
    out = []
    with LakeLock(root):
        for (day, bucket), idx, _keys in split_partitions(tbl, table):
            d = partition_dir(root, table, day, bucket, kind)
            first = table == "readings" and _pivots(d) and not any(_is_part(n) for n in file_names(str(d)))
            sub = tbl.take(pa.array(idx))
            out.append(write_parquet(sub, d / new_file_name(), table))
            if first:       # the partition's only file: its pivot beside it (see PIVOT_KINDS)
                write_pivot(sub, out[-1])
    return out


def write_readings(root: StrPath, table_or_columns: Rows, kind: str) -> list[pathlib.Path]:
    """Bulk-write trusted readings of one ``kind`` (see :func:`write_table`)."""
    return write_table(root, table_or_columns, "readings", kind)


def write_events(root: StrPath, table_or_columns: Rows) -> list[pathlib.Path]:
    """Bulk-write trusted events (see :func:`write_table`)."""
    return write_table(root, table_or_columns, "events")


# --- what is where ---------------------------------------------------------------------------------------
def info(root: StrPath) -> list[dict[str, Any]]:
    """Per table (and reading kind): partitions, published files, rows, bytes, and the pivots beside them
    (rows from each file's Parquet footer; one snapshot listing per table)."""
    out = []
    for table in TABLES:
        groups: dict[str | None, list[tuple[str, list[str]]]] = {}
        for d, names in partition_listing(root, table):
            kind = pathlib.Path(d).parent.parent.name.split("=", 1)[1] if table == "readings" else None
            groups.setdefault(kind, []).append((d, names))
        for kind, dirs in sorted(groups.items(), key=lambda kv: kv[0] or ""):
            row: dict[str, Any] = dict(table=table, kind=kind, partitions=0, files=0, rows=0, bytes=0, pivots=0, pivot_bytes=0)
            for d, names in dirs:
                parts = [n for n in names if _is_part(n)]
                row["partitions"] += bool(parts)
                for n in parts:
                    try:
                        row["rows"] += pq.ParquetFile(os.path.join(d, n)).metadata.num_rows
                        row["bytes"] += os.path.getsize(os.path.join(d, n))
                    except FileNotFoundError:      # swapped away meanwhile: counted in its new set
                        continue
                    except (OSError, pa.ArrowException) as exc:
                        raise StorageError(f"lake: corrupt or unreadable Parquet file {d}/{n}: {exc}") from None
                    row["files"] += 1
                pv = [n for n in names if n.startswith("pivot-") and n.endswith(".pivot")]
                row["pivots"] += len(pv)
                row["pivot_bytes"] += sum(os.path.getsize(os.path.join(d, n)) for n in pv
                                          if os.path.exists(os.path.join(d, n)))
            out.append(row)
    return out

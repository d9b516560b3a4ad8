"""Durable ingest: validation, a group-committed write-ahead log, and its roll into the Parquet lake.

The durability contract
    :meth:`IngestWriter.append` returns (and :meth:`AsyncIngest.append` resolves) only after the batch —
    its valid readings and its quarantined rows — is in the write-ahead log and the log is fsynced.  Many
    batches share one fsync (group commit): a committer thread writes everything submitted since its last
    fsync in one ``writev``, fsyncs once, then releases every batch in that group.  A crash after the
    acknowledgement loses nothing: on the next start the log is replayed into the lake.

The log (``<root>/_wal/<segment>.wal``)
    A segment starts with a 24-byte header: ``b"GHWAL\\x00\\x01\\x00"``, u64 segment number, u64 random
    nonce (which names the segment's quarantine files); then records, each::

        0   u32  magic 0x52574847 ("GHWR")
        4   u32  payload length n
        8   u32  CRC-32 of bytes 12 .. 16+n (type, kind, reserved, payload)
        12  u8   type: 1 readings, 2 events, 3 quarantine
        13  u8   reading kind: index in schema.KINDS (255 for events / quarantine)
        14  u16  reserved, 0
        16  n bytes: one Arrow IPC stream (schema + record batches) of storage.lake's schema for the type

    A segment is sealed when it reaches ``segment_bytes`` (or ``roll_interval_s`` passes, or on
    :meth:`IngestWriter.flush`/``close``) — only after its last fsync — and a new one begins.  A roller
    thread publishes each sealed segment into the lake (``storage.lake.Publisher``: dedup on (meter,
    register, ts), files written aside, fsynced, renamed, directory fsynced) and then deletes it, under the
    lake lock.  A crash between publishing and deleting replays the segment again, which dedup (and, for
    quarantine, a file name fixed by the segment number) makes harmless.

    Replay reads every segment in order.  Only the newest segment can end in a torn record (a crash in the
    middle of a write: bad magic, a length past the end of file, or a CRC mismatch); it was never
    acknowledged, so the tail is truncated from that record on, never replayed.  A bad record in an older,
    sealed segment is corruption of acknowledged data and raises :class:`StorageError` naming the file and
    the offset.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pathlib
import queue
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pyarrow as pa

from gridhead.protocols.errors import StorageError

from . import lake, schema, validate

SEGMENT_MAGIC = b"GHWAL\x00\x01\x00"
_SEG_HEADER = struct.Struct("<8sQQ")
_REC = struct.Struct("<IIIBBH")
REC_MAGIC = 0x52574847
T_READINGS, T_EVENTS, T_QUARANTINE = 1, 2, 3
_TYPE_TABLE = {T_READINGS: "readings", T_EVENTS: "events", T_QUARANTINE: "quarantine"}
_NO_KIND = 255

DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_ROLL_INTERVAL_S = 60.0

# a piece of a record handed to ``os.writev``: a header, an Arrow payload, or what is left of one after a
# partial write
WalBuffer: TypeAlias = "bytes | memoryview | pa.Buffer"
# one logged record: (type, reading kind, table)
Record: TypeAlias = "tuple[int, int, pa.Table]"
# a batch as the committer takes it: (seq, its buffers, its records)
_Pending: TypeAlias = "tuple[int, list[WalBuffer], list[Record]]"
# what the committer hands the roller: a sealed segment (quarantine name, path, records, last seq), a
# flush mark (a seq), or None to stop
_Roll: TypeAlias = "tuple[str, pathlib.Path, list[Record], int] | int | None"


# --- records ------------------------------------------------------------------------------------------------
def encode_record(rtype: int, kind: int, tbl: pa.Table) -> list[WalBuffer]:
    """The buffers of one WAL record (header, payload), ready for ``writev``."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, tbl.schema) as w:
        w.write_table(tbl)
    payload = sink.getvalue()
    tail = struct.pack("<BBH", rtype, kind, 0)
    crc = zlib.crc32(payload, zlib.crc32(tail))
    return [_REC.pack(REC_MAGIC, payload.size, crc, rtype, kind, 0), payload]


def scan_segment(path: pathlib.Path, *, last: bool) -> tuple[str, list[tuple[int, int, pa.Table]]]:
    """The segment's quarantine file name and its records as (type, kind, table).

    If ``last`` (the newest segment), a torn tail is truncated off the file; otherwise a bad record is a
    :class:`StorageError` naming the file and offset.
    """
    data = path.read_bytes()
    if len(data) < _SEG_HEADER.size or data[:8] != SEGMENT_MAGIC:
        if last:
            _truncate(path, 0, "bad segment header")
            return "", []
        raise StorageError(f"wal: corrupt segment header in {path} at offset 0")
    _, number, nonce = _SEG_HEADER.unpack_from(data, 0)
    out: list[Record] = []
    pos = _SEG_HEADER.size
    view = memoryview(data)
    while pos < len(data):
        why = None
        if len(data) - pos < _REC.size:
            why = "short record header"
        else:
            magic, n, crc, rtype, kind, _ = _REC.unpack_from(data, pos)
            end = pos + _REC.size + n
            if magic != REC_MAGIC:
                why = "bad record magic"
            elif end > len(data):
                why = "record longer than the file"
            elif zlib.crc32(view[pos + 12:end]) != crc:
                why = "CRC mismatch"
            elif rtype not in _TYPE_TABLE:
                why = f"unknown record type {rtype}"
        if why is not None:
            if last:
                _truncate(path, pos, why)
                break
            raise StorageError(f"wal: corrupt record in {path} at offset {pos}: {why}")
        try:
            tbl = pa.ipc.open_stream(view[pos + _REC.size:end]).read_all()
        except pa.ArrowException as exc:
            raise StorageError(f"wal: undecodable record in {path} at offset {pos}: {exc}") from None
        out.append((rtype, kind, tbl))
        pos = end
    return _quarantine_name(number, nonce), out


def _quarantine_name(number: int, nonce: int) -> str:
    return f"part-w{number:016d}-{nonce:016x}.parquet"


def _truncate(path: pathlib.Path, offset: int, why: str) -> None:
    """Cut a torn tail (never acknowledged) off the newest segment, durably."""
    with open(path, "r+b") as f:
        f.truncate(offset)
        os.fsync(f.fileno())


def _segments(wal_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(wal_dir.glob("*.wal"))


def _seg_path(wal_dir: pathlib.Path, number: int) -> pathlib.Path:
    return wal_dir / f"{number:016d}.wal"


# --- publishing a segment -----------------------------------------------------------------------------------
def publish_segment(publisher: lake.Publisher, name: str, records: Iterable[Record]) -> int:
    """Publish one segment's records: concatenated per (type, kind), one publication each."""
    groups: dict[tuple[int, int], list[pa.Table]] = {}
    for rtype, kind, tbl in records:
        groups.setdefault((rtype, kind), []).append(tbl)
    added = 0
    for (rtype, kind), tables in sorted(groups.items()):
        tbl = pa.concat_tables(tables)
        if not tbl.num_rows:
            continue
        table = _TYPE_TABLE[rtype]
        kind_name = schema.KINDS[kind] if rtype == T_READINGS else None
        added += publisher.publish(tbl, table, kind_name, name=name if rtype == T_QUARANTINE else None)
    return added


def _wal_lock(wal_dir: pathlib.Path, *, wait: bool) -> int | None:
    """The WAL's owner lock: one live writer per lake.  None if ``wait`` is False and it is held."""
    lake.mkdirs(wal_dir)
    fd = os.open(wal_dir / ".owner", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _replay(root: pathlib.Path, wal_dir: pathlib.Path, publisher: lake.Publisher) -> int:
    """Publish and delete every segment left in ``wal_dir`` (the caller owns the WAL).  Returns their number."""
    segs = _segments(wal_dir)
    with lake.LakeLock(root):
        lake.clean(root)
        for i, seg in enumerate(segs):
            name, records = scan_segment(seg, last=(i == len(segs) - 1))
            publish_segment(publisher, name, records)
            seg.unlink()
        lake.fsync_dir(wal_dir)
    return len(segs)


def replay(root: lake.StrPath) -> int:
    """Replay a lake's WAL left by a writer that is gone (the live writer replays its own at start).

    Raises :class:`StorageError` if a live :class:`IngestWriter` owns the WAL.
    """
    root = pathlib.Path(root)
    n = 0
    for extra in sorted(p for p in root.glob("_wal-*") if p.is_dir()):    # head-end shards' logs
        fd = _wal_lock(extra, wait=False)
        if fd is None:
            raise StorageError(f"wal: {root} is being written by a live ingest writer ({extra.name})")
        try:
            n += _replay(root, extra, lake.Publisher(root))
        finally:
            os.close(fd)
    fd = _wal_lock(root / "_wal", wait=False)
    if fd is None:
        raise StorageError(f"wal: {root} is being written by a live ingest writer")
    try:
        return n + _replay(root, root / "_wal", lake.Publisher(root))
    finally:
        os.close(fd)


def compact(root: lake.StrPath, table: str = "readings", *, min_files: int = 2) -> tuple[int, int]:
    """Compact ``table`` (``storage.lake.compact``), first replaying a WAL no live writer owns."""
    root = pathlib.Path(root)
    fd = _wal_lock(root / "_wal", wait=False)
    try:
        if fd is not None:
            _replay(root, root / "_wal", lake.Publisher(root))
        return lake.compact(root, table, min_files=min_files)
    finally:
        if fd is not None:
            os.close(fd)


# --- the writer -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ticket:
    """A submitted batch: its commit sequence number and how many rows were accepted or quarantined."""

    seq: int
    accepted: int
    quarantined: int


class IngestWriter:
    """The head-end's durable writer of readings and events into the lake at ``root``.

    ``known_meters``: the archive's meter ids (array-like) or a callable ``ids -> bool mask``.
    Thread-safe: any number of threads may call :meth:`append`; their batches share fsyncs.
    Batches are columnar: an Arrow table / record batch or a mapping of column name -> numpy array, with
    ``storage.lake.READINGS_SCHEMA``'s columns (timestamps as datetime64, Arrow timestamps or epoch seconds;
    ``received_utc`` may be omitted: the writer stamps its clock).
    """

    def __init__(self, root: lake.StrPath, known_meters: validate.Known, *,
                 future_tolerance_s: int = validate.DEFAULT_FUTURE_TOLERANCE_S,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES, roll_interval_s: float | None = DEFAULT_ROLL_INTERVAL_S,
                 clock: Callable[[], float] = time.time, sync: bool = True, wal_name: str = "_wal") -> None:
        # wal_name: one log per writer; head-end shards (headend.shard) each own "_wal-shard-NN" and
        # publish into the same lake under its LakeLock
        if not wal_name.startswith("_wal"):
            raise StorageError(f"wal: log directory name {wal_name!r} must start with '_wal'")
        self.root = pathlib.Path(root)
        self.wal_dir = self.root / wal_name
        self.known = validate.KnownMeters.of(known_meters)
        self.tolerance_s = future_tolerance_s
        self.segment_bytes = segment_bytes
        self.roll_interval_s = roll_interval_s
        self.clock = clock
        # sync=False: benchmarks' baseline only
        self._sync: Callable[[int], None] = os.fdatasync if sync else (lambda fd: None)
        self._owner = _wal_lock(self.wal_dir, wait=False)
        if self._owner is None:
            raise StorageError(f"wal: {self.root} already has a live ingest writer")
        self.publisher = lake.Publisher(self.root)
        try:
            self.replayed = _replay(self.root, self.wal_dir, self.publisher)
        except BaseException:
            os.close(self._owner)          # a corrupt log: release the lake, say where (StorageError)
            raise
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []     # (seq, buffers, (type, kind, table))
        self._next_seq = 1
        self._durable = 0
        self._waiters: list[tuple[int, Callable[[BaseException | None], None]]] = []
        self._error: BaseException | None = None
        self._closing = False
        self._seal_asked = 0          # flush: publish everything up to this seq
        self._seal_done = 0           # the highest seal request handled by the committer
        self._segment = int(time.time() * 1e6)             # segment numbers rise across restarts
        self._rolled = 0              # highest seq published into the lake
        self._rolled_cond = threading.Condition()
        self._rolls: queue.Queue[_Roll] = queue.Queue(maxsize=2)   # back-pressure: at most 2 sealed segments queued
        self._open_segment()
        self._committer = threading.Thread(target=self._commit_loop, name="wal-commit", daemon=True)
        self._roller = threading.Thread(target=self._roll_loop, name="wal-roll", daemon=True)
        self._committer.start()
        self._roller.start()

    # -- submitting ----------------------------------------------------------------------------------
    def submit(self, batch: lake.Rows, kind: str) -> Ticket:
        """Validate and queue a batch of readings of ``kind``; not yet durable (see :meth:`wait`)."""
        if kind not in schema.KINDS:
            raise StorageError(f"ingest: unknown reading kind {kind!r} (kinds: {', '.join(schema.KINDS)})")
        now = int(self.clock())
        tbl = self._stamp(batch, "readings", now)
        meter = tbl.column("meter_id").to_numpy()
        ok, reasons, idx = validate.check_readings(
            meter, tbl.column("register").to_numpy(), lake.seconds(tbl.column("ts_utc")),
            tbl.column("value").to_numpy(), tbl.column("quality").to_numpy(), tbl.column("source").to_numpy(),
            known=self.known, now_s=now, tolerance_s=self.tolerance_s)
        return self._queue(T_READINGS, schema.KINDS.index(kind), tbl, ok, reasons, idx, kind)

    def submit_events(self, batch: lake.Rows, reason: str | None = None) -> Ticket:
        """Validate and queue a batch of events (``storage.lake.EVENTS_SCHEMA`` columns); with ``reason``
        the whole batch goes to quarantine with that reason (a terminal's own events: no meter)."""
        now = int(self.clock())
        tbl = self._stamp(batch, "events", now)
        if reason is not None:
            n = tbl.num_rows
            return self._queue(T_EVENTS, _NO_KIND, tbl, np.zeros(n, bool), [reason], np.zeros(n, np.int64), None)
        end = tbl.column("end_utc")
        end_s = lake.seconds(end.fill_null(0))
        end_s[end.is_null().to_numpy(zero_copy_only=False)] = validate.OPEN_END
        ok, reasons, idx = validate.check_events(
            tbl.column("meter_id").to_numpy(), tbl.column("event").to_numpy(), lake.seconds(tbl.column("start_utc")),
            end_s, tbl.column("source").to_numpy(), known=self.known, now_s=now, tolerance_s=self.tolerance_s)
        return self._queue(T_EVENTS, _NO_KIND, tbl, ok, reasons, idx, None)

    def _stamp(self, batch: lake.Rows, table: str, now: int) -> pa.Table:
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        if isinstance(batch, pa.Table) and "received_utc" not in batch.column_names:
            batch = batch.append_column("received_utc", pa.array(np.full(batch.num_rows, now, np.int64)))
        elif isinstance(batch, dict) and "received_utc" not in batch:
            n = len(next(iter(batch.values()))) if batch else 0
            batch = {**batch, "received_utc": np.full(n, now, np.int64)}
        return lake.to_table(batch, table)

    def _queue(self, rtype: int, kind: int, tbl: pa.Table, ok: np.ndarray, reasons: list[str], idx: np.ndarray,
               kind_name: str | None) -> Ticket:
        n_ok = int(ok.sum())
        records: list[Record] = []
        if n_ok:
            good = tbl if n_ok == tbl.num_rows else tbl.filter(pa.array(ok))
            records.append((rtype, kind, good))
        if n_ok < tbl.num_rows:
            records.append((T_QUARANTINE, _NO_KIND, _quarantine_rows(tbl, ~ok, reasons, idx, rtype, kind_name)))
        buffers = [b for r in records for b in encode_record(*r)]
        with self._cond:
            if self._error is not None:
                raise StorageError(f"ingest: the writer has failed: {self._error}")
            if self._closing:
                raise StorageError("ingest: the writer is closed")
            seq = self._next_seq
            self._next_seq += 1
            self._pending.append((seq, buffers, records))
            self._cond.notify_all()
        return Ticket(seq, n_ok, tbl.num_rows - n_ok)

    # -- waiting ------------------------------------------------------------------------------------
    def wait(self, ticket: Ticket, timeout: float | None = None) -> Ticket:
        """Block until the ticket's batch is fsynced in the WAL."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._durable >= ticket.seq or self._error is not None, timeout):
                raise StorageError(f"ingest: batch {ticket.seq} not durable after {timeout} s")
            if self._durable < ticket.seq:
                raise StorageError(f"ingest: batch {ticket.seq} not logged: {self._error}")
        return ticket

    def append(self, batch: lake.Rows, kind: str) -> Ticket:
        """Validate, log and fsync a batch of readings; returns once it is durable (the acknowledgement)."""
        return self.wait(self.submit(batch, kind))

    def append_events(self, batch: lake.Rows) -> Ticket:
        """Validate, log and fsync a batch of events; returns once it is durable."""
        return self.wait(self.submit_events(batch))

    def when_durable(self, seq: int, callback: Callable[[BaseException | None], None]) -> None:
        """Call ``callback(None)`` (from the committer thread) once ``seq`` is durable, or with the error."""
        with self._cond:
            if self._durable >= seq or self._error is not None:
                err = None if self._durable >= seq else self._error
            else:
                self._waiters.append((seq, callback))
                return
        callback(err)

    def flush(self, timeout: float | None = None) -> None:
        """Seal the current segment and wait until everything submitted so far is published in the lake."""
        with self._cond:
            target = self._next_seq - 1
            self._seal_asked = max(self._seal_asked, target)
            self._cond.notify_all()
        with self._rolled_cond:
            if not self._rolled_cond.wait_for(lambda: self._rolled >= target or self._error is not None, timeout):
                raise StorageError(f"ingest: not published after {timeout} s")
        if self._error is not None:
            raise StorageError(f"ingest: the writer has failed: {self._error}")

    def close(self) -> None:
        """Publish everything (:meth:`flush`), stop the threads and release the WAL."""
        if self._owner is None:
            return
        try:
            self.flush()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._committer.join()
            self._rolls.put(None)
            self._roller.join()
            os.close(self._fd)
            if not self._seg_records and self._error is None:     # nothing in it: leave no segment behind
                self._seg_path.unlink()
                lake.fsync_dir(self.wal_dir)
            os.close(self._owner)
            self._owner = None

    def __enter__(self) -> "IngestWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the committer -----------------------------------------------------------------------------
    def _open_segment(self) -> None:
        self._segment += 1
        self._seg_path = _seg_path(self.wal_dir, self._segment)
        self._fd = os.open(self._seg_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        nonce = int.from_bytes(os.urandom(8), "little")
        self._seg_name = _quarantine_name(self._segment, nonce)
        os.write(self._fd, _SEG_HEADER.pack(SEGMENT_MAGIC, self._segment, nonce))
        os.fsync(self._fd)
        lake.fsync_dir(self.wal_dir)
        self._seg_bytes = _SEG_HEADER.size
        self._seg_records: list[Record] = []
        self._seg_last_seq = 0
        self._seg_started = time.monotonic()

    def _commit_loop(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(self._has_work, self._timeout())
                    group, self._pending = self._pending, []
                    closing = self._closing and not group
                if group:
                    self._write_group(group)
                if self._should_seal():
                    self._seal()
                if self._seal_asked > self._seal_done:    # a flush: everything is sealed by now
                    self._seal_done = self._seal_asked
                    self._rolls.put(self._seal_done)     # the roller marks it after what precedes it
                if closing:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported to every waiter and caller
            self._fail(exc)

    def _has_work(self) -> bool:
        return bool(self._pending) or self._closing or self._seal_asked > self._seal_done

    def _timeout(self) -> float | None:
        if self.roll_interval_s is None or not self._seg_records:
            return None
        return max(0.0, self._seg_started + self.roll_interval_s - time.monotonic())

    def _write_group(self, group: list[_Pending]) -> None:
        buffers = [b for _, bufs, _ in group for b in bufs]
        total = sum(memoryview(b).nbytes for b in buffers)
        written = 0
        while written < total:           # writev may write part; go on from where it stopped
            n = os.writev(self._fd, buffers)
            written += n
            if written < total:
                buffers = _skip(buffers, n)
        self._sync(self._fd)             # the group commit: one fsync for every batch in the group
        self._seg_bytes += total
        for seq, _, records in group:
            self._seg_records.extend(records)
        self._seg_last_seq = group[-1][0]
        with self._cond:
            self._durable = group[-1][0]
            ready = [w for w in self._waiters if w[0] <= self._durable]
            self._waiters = [w for w in self._waiters if w[0] > self._durable]
            self._cond.notify_all()
        for _, cb in ready:
            cb(None)

    def _should_seal(self) -> bool:
        if not self._seg_records:
            return False
        if self._seg_bytes >= self.segment_bytes or self._closing or self._seal_asked > self._seal_done:
            return True
        return self.roll_interval_s is not None and time.monotonic() - self._seg_started >= self.roll_interval_s

    def _seal(self) -> None:
        os.close(self._fd)
        sealed = (self._seg_name, self._seg_path, self._seg_records, self._seg_last_seq)
        self._open_segment()
        self._rolls.put(sealed)          # blocks while two segments wait: back-pressure on acks

    # -- the roller --------------------------------------------------------------------------------
    def _roll_loop(self) -> None:
        try:
            while True:
                item = self._rolls.get()
                if item is None:
                    return
                if isinstance(item, int):                  # a flush mark
                    self._mark_rolled(item)
                    continue
                name, path, records, last_seq = item
                with lake.LakeLock(self.root):
                    publish_segment(self.publisher, name, records)
                    path.unlink()
                    lake.fsync_dir(self.wal_dir)
                self._mark_rolled(last_seq)
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)

    def _mark_rolled(self, seq: int) -> None:
        with self._rolled_cond:
            self._rolled = max(self._rolled, seq)
            self._rolled_cond.notify_all()

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            self._error = exc
            waiters, self._waiters = self._waiters, []
            self._cond.notify_all()
        with self._rolled_cond:
            self._rolled_cond.notify_all()
        for _, cb in waiters:
            cb(exc)


def _skip(buffers: list[WalBuffer], n: int) -> list[WalBuffer]:
    """``buffers`` without their first ``n`` bytes (after a partial ``writev``)."""
    out: list[WalBuffer] = []
    for b in buffers:
        mv = memoryview(b).cast("B")
        if n >= len(mv):
            n -= len(mv)
            continue
        out.append(mv[n:])
        n = 0
    return out


def _quarantine_rows(tbl: pa.Table, bad: np.ndarray, reasons: list[str], idx: np.ndarray, rtype: int,
                     kind: str | None) -> pa.Table:
    rows = tbl.filter(pa.array(bad))
    n = rows.num_rows
    why = np.asarray(reasons, dtype=object)[idx[bad]]
    if rtype == T_READINGS:
        cols = {"table": ["readings"] * n, "kind": [kind] * n, **{c: rows.column(c) for c in
                ("meter_id", "register", "ts_utc", "value", "quality", "source", "received_utc")}}
    else:
        cols = {"table": ["events"] * n, "kind": pa.nulls(n, pa.string()), "meter_id": rows.column("meter_id"),
                "register": rows.column("event"), "ts_utc": rows.column("start_utc"),
                "value": pa.nulls(n, pa.int64()), "quality": np.zeros(n, np.uint8), "source": rows.column("source"),
                "received_utc": rows.column("received_utc"), "end_utc": rows.column("end_utc"),
                "detail": rows.column("detail")}
    cols["reason"] = pa.array(why, pa.string())
    return lake.to_table(cols, "quarantine")


# --- asyncio --------------------------------------------------------------------------------------------
class AsyncIngest:
    """The head-end's view of an :class:`IngestWriter`: ``await append(batch, kind)``.

    Validation and encoding run in the caller's event loop (columnar, so cheap); the coroutine then awaits
    the group fsync without holding a thread: the committer thread resolves its future through
    ``loop.call_soon_threadsafe``.
    """

    def __init__(self, writer: IngestWriter) -> None:
        self.writer = writer

    async def _durable(self, ticket: Ticket) -> Ticket:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def done(err: BaseException | None, fut: asyncio.Future[None] = fut) -> None:
            loop.call_soon_threadsafe(_resolve, fut, err)

        self.writer.when_durable(ticket.seq, done)
        await fut
        return ticket

    async def append(self, batch: lake.Rows, kind: str) -> Ticket:
        return await self._durable(self.writer.submit(batch, kind))

    async def append_events(self, batch: lake.Rows, reason: str | None = None) -> Ticket:
        return await self._durable(self.writer.submit_events(batch, reason))


def _resolve(fut: asyncio.Future[None], err: BaseException | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(StorageError(f"ingest: batch not logged: {err}"))

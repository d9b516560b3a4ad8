"""The durable ingest: acknowledgement after fsync, group commit, replay, torn tails, quarantine, asyncio."""

from __future__ import annotations

import asyncio
import threading

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from gridhead.protocols.errors import StorageError
from gridhead.storage import lake, samples, schema, validate, wal

DAY = 20758
METERS = np.arange(1, 1001)
NOW = samples.local_midnight_utc(DAY + 1) + 6 * 3600       # the next night, when load curves come in


def _writer(root, **kw):
    return wal.IngestWriter(root, METERS, clock=lambda: NOW, **kw)


def _count(root, table="readings", what="count(*)"):
    files = lake.published_files(root, table)
    if not files:
        return 0
    return duckdb.sql(f"SELECT {what} FROM read_parquet({files!r}, hive_partitioning = true)").fetchone()[0]


def _slice(cols, lo, hi):
    return {k: v[lo:hi] for k, v in cols.items()}


class CountingSync:
    """Counts the writer's fsyncs; with ``gate``, the first one waits until the gate is set (so what is
    submitted meanwhile must share the next fsync, whatever the host's load)."""

    def __init__(self, writer, gate: threading.Event | None = None):
        self.n = 0
        self._inner = writer._sync
        self._gate = gate
        writer._sync = self

    def __call__(self, fd):
        if self._gate is not None and self.n == 0:
            self._gate.wait(30)
        self.n += 1
        self._inner(fd)


def test_acknowledged_batches_are_published_once_after_flush(tmp_path):
    cols = samples.daily_frozen(METERS, DAY)
    n = len(cols["meter_id"])
    with _writer(tmp_path) as w:
        t = w.append(cols, schema.DAILY)
        assert (t.accepted, t.quarantined) == (n, 0)
        assert _count(tmp_path) == 0, "not published before the roll"
        w.flush()
        assert _count(tmp_path) == n
        w.append(_slice(cols, 0, n // 2), schema.DAILY)          # a retry of half of it
    assert _count(tmp_path, what="count(DISTINCT (meter_id, register, ts_utc))") == _count(tmp_path) == n
    assert not list((tmp_path / "_wal").glob("*.wal")), "closing leaves no segment"


def test_concurrent_batches_share_fsyncs(tmp_path):
    cols = samples.load_curve(METERS, DAY)
    n = len(cols["meter_id"])
    w = _writer(tmp_path)
    syncs = CountingSync(w)
    step = n // 64
    threads = [threading.Thread(target=w.append, args=(_slice(cols, lo, lo + step), schema.INTERVAL))
               for lo in range(0, n, step)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert syncs.n < len(threads), f"{syncs.n} fsyncs for {len(threads)} batches: no group commit"
    assert _count(tmp_path) == n


def test_asyncio_wrapper_awaits_the_group_fsync(tmp_path):
    cols = samples.daily_frozen(METERS, DAY)
    n = len(cols["meter_id"])
    w = _writer(tmp_path)
    gate = threading.Event()
    syncs = CountingSync(w, gate)
    ingest = wal.AsyncIngest(w)

    async def main():
        step = n // 50
        tasks = [asyncio.ensure_future(ingest.append(_slice(cols, lo, lo + step), schema.DAILY))
                 for lo in range(0, n, step)]
        await asyncio.sleep(0)       # every task ran to its await: every batch is submitted, none durable
        gate.set()                   # the first fsync (held until now) lets the committer group the rest
        return await asyncio.gather(*tasks)

    tickets = asyncio.run(main())
    assert sum(t.accepted for t in tickets) == n
    assert syncs.n < len(tickets)
    w.close()
    assert _count(tmp_path) == n


def test_segments_roll_by_size_and_interval(tmp_path):
    cols = samples.daily_frozen(METERS, DAY)
    n = len(cols["meter_id"])
    w = _writer(tmp_path, segment_bytes=20_000, roll_interval_s=0.05)
    for lo in range(0, n, 500):
        w.append(_slice(cols, lo, lo + 500), schema.DAILY)
    w.flush()
    assert len(lake.published_files(tmp_path)) > schema.N_BUCKETS, "several rolls"
    assert _count(tmp_path) == n
    w.close()
    assert lake.compact(tmp_path)[0] == schema.N_BUCKETS
    assert _count(tmp_path) == n


def test_quarantine_gets_every_bad_row_with_its_reason(tmp_path):
    cols = samples.daily_frozen(METERS[:10], DAY)
    n = len(cols["meter_id"])
    bad = {k: v.copy() for k, v in cols.items()}
    bad["meter_id"][0] = 99_999                         # unknown meter
    bad["register"][1] = 17                             # no such register
    bad["value"][2] = -1                                # energy below zero
    bad["value"][3] = 10 ** 10                          # more digits than the register has
    bad["ts_utc"][4] = NOW + 3600                       # an hour in the future
    bad["quality"][5] = 0x80                            # unknown quality bit
    bad["source"][6] = 9                                # unknown source
    bad["meter_id"][7] = -5
    with _writer(tmp_path) as w:
        t = w.append(bad, schema.DAILY)
        assert (t.accepted, t.quarantined) == (n - 8, 8)
    got = duckdb.sql(f"SELECT meter_id, register, value, reason, \"table\", kind FROM read_parquet("
                     f"{lake.published_files(tmp_path, 'quarantine')!r}) ORDER BY reason, meter_id").fetchall()
    reasons = sorted(r[3] for r in got)
    assert reasons == sorted([validate.UNKNOWN_METER, validate.UNKNOWN_METER, validate.UNKNOWN_REGISTER,
                              validate.OUT_OF_RANGE, validate.OUT_OF_RANGE, validate.FUTURE,
                              validate.BAD_CODES, validate.BAD_CODES])
    assert all(r[4] == "readings" and r[5] == "daily" for r in got)
    assert _count(tmp_path) == n - 8
    # no bad row became a reading
    assert _count(tmp_path, what="count(*) FILTER (WHERE meter_id IN (99999, -5) OR value < 0 OR register = 17)") == 0


def test_signed_registers_take_negative_values(tmp_path):
    n = 4
    cols = {"meter_id": METERS[:n], "register": np.array([33, 36, 38, 30], np.int16),
            "ts_utc": np.full(n, NOW - 60), "value": np.array([-1500, -20000, -950, -1]),
            "quality": np.zeros(n, np.uint8), "source": np.full(n, schema.SRC_OPERATOR, np.uint8)}
    with _writer(tmp_path) as w:
        t = w.append(cols, schema.INSTANT)
    assert (t.accepted, t.quarantined) == (3, 1), "current, power, pf may be negative; voltage may not"


def test_events_and_their_quarantine(tmp_path):
    start = NOW - 7200
    ev = {"meter_id": np.array([1, 2, 3, 77777]), "event": np.array([1, 2, 99, 1], np.int16),
          "start_utc": np.full(4, start), "end_utc": pa.array([start + 60, None, start, start]).cast(lake.TS),
          "detail": pa.array(["", None, "x", None]), "source": np.full(4, schema.SRC_REPORT, np.uint8)}
    with _writer(tmp_path) as w:
        t = w.append_events(ev)
        assert (t.accepted, t.quarantined) == (2, 2)
    assert _count(tmp_path, "events") == 2
    got = duckdb.sql(f"SELECT register, reason, \"table\" FROM read_parquet("
                     f"{lake.published_files(tmp_path, 'quarantine')!r}) ORDER BY 1").fetchall()
    assert got == [(1, validate.UNKNOWN_METER, "events"), (99, validate.UNKNOWN_REGISTER, "events")]


def test_one_live_writer_per_lake(tmp_path):
    with _writer(tmp_path):
        with pytest.raises(StorageError, match="already has a live ingest writer"):
            _writer(tmp_path)
        with pytest.raises(StorageError, match="live ingest writer"):
            wal.replay(tmp_path)


def test_bad_input_is_a_storage_error(tmp_path):
    with _writer(tmp_path) as w:
        with pytest.raises(StorageError, match="unknown reading kind"):
            w.append(samples.daily_frozen(METERS[:2], DAY), "hourly")
        with pytest.raises(StorageError, match="lack column"):
            w.append({"meter_id": METERS[:2]}, schema.DAILY)


# --- the log on disk --------------------------------------------------------------------------------
def _segment(path, records, nonce=7):
    with open(path, "wb") as f:
        f.write(wal._SEG_HEADER.pack(wal.SEGMENT_MAGIC, int(path.stem), nonce))
        for rtype, kind, tbl in records:
            for b in wal.encode_record(rtype, kind, tbl):
                f.write(b)


def _batches(k, rows=100):
    cols = samples.daily_frozen(METERS, DAY)
    return [lake.to_table(_slice(cols, i * rows, (i + 1) * rows)) for i in range(k)]


@pytest.mark.parametrize("tail", ["half a record", "garbage", "zeros", "bad crc", "short header"])
def test_torn_tail_is_truncated_never_replayed(tmp_path, tail):
    batches = _batches(4)
    wal_dir = tmp_path / "_wal"
    wal_dir.mkdir(parents=True)
    seg = wal_dir / "0000000000000001.wal"
    _segment(seg, [(wal.T_READINGS, 0, b) for b in batches[:3]])
    good_size = seg.stat().st_size
    rec = b"".join(bytes(b) for b in wal.encode_record(wal.T_READINGS, 0, batches[3]))
    torn = {"half a record": rec[: len(rec) // 2], "garbage": b"\x13\x37" * 500, "zeros": b"\0" * 4096,
            "bad crc": rec[:-1] + bytes([rec[-1] ^ 1]), "short header": rec[:7]}[tail]
    with open(seg, "ab") as f:
        f.write(torn)
    _name, records = wal.scan_segment(seg, last=True)
    assert len(records) == 3 and seg.stat().st_size == good_size
    with open(seg, "ab") as f:
        f.write(torn)
    _writer(tmp_path).close()
    assert _count(tmp_path) == 300


def test_corrupt_sealed_segment_names_file_and_offset(tmp_path):
    batches = _batches(3)
    wal_dir = tmp_path / "_wal"
    wal_dir.mkdir(parents=True)
    first, second = wal_dir / "0000000000000001.wal", wal_dir / "0000000000000002.wal"
    _segment(first, [(wal.T_READINGS, 0, b) for b in batches])
    _segment(second, [(wal.T_READINGS, 0, batches[0])])
    data = bytearray(first.read_bytes())
    second_record = wal._SEG_HEADER.size + wal._REC.size + wal._REC.unpack_from(data, wal._SEG_HEADER.size)[1]
    data[second_record + 40] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(StorageError, match=f"corrupt record in {first} at offset {second_record}: CRC mismatch"):
        _writer(tmp_path)


def test_replaying_a_published_segment_again_changes_nothing(tmp_path):
    """A crash between publishing a segment and deleting it replays it: dedup and the quarantine file's
    fixed name make that harmless."""
    good = _batches(2)
    quarantine = wal._quarantine_rows(good[0], np.ones(good[0].num_rows, bool), ["r"],
                                      np.zeros(good[0].num_rows, np.int8), wal.T_READINGS, "daily")
    records = [(wal.T_READINGS, 0, good[0]), (wal.T_READINGS, 0, good[1]), (wal.T_QUARANTINE, 255, quarantine)]
    pub = lake.Publisher(tmp_path)
    for _ in range(2):
        wal.publish_segment(pub, "part-w1-x.parquet", records)
    wal.publish_segment(lake.Publisher(tmp_path), "part-w1-x.parquet", records)
    assert _count(tmp_path) == 200
    assert _count(tmp_path, "quarantine") == 100

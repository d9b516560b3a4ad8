"""kill -9 of an ingesting process, many times: no acknowledged reading lost, none doubled, no bad file.

A subprocess ingests deterministic batches through ``AsyncIngest`` (8 in flight, so group commits form),
re-delivering an earlier batch one time in five (retries, back-fill — across restarts too), with tiny WAL
segments so that rolls into Parquet happen all the time, and prints ``ACK <id>`` for each acknowledged
batch.  The test SIGKILLs it at a random moment — while it ingests, rolls, or replays the previous
crash's log at start — then reopens the lake and checks.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time

import duckdb
import numpy as np
import pyarrow.parquet as pq

from gridhead.storage import lake, schema, validate, wal

from tests.conftest import ROOT

KILLS = 24
KNOWN = np.arange(1, 501)
T0 = 1_790_000_000                 # 2026-09-21 UTC: every reading's time is before the clock
ROWS = 200

CHILD = textwrap.dedent(f"""
    import asyncio, sys
    import numpy as np
    sys.path.insert(0, {str(ROOT)!r})
    from gridhead.storage import wal
    from tests.storage.test_crash import batch, KNOWN

    root, first, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    writer = wal.IngestWriter(root, KNOWN, segment_bytes=64 << 10, roll_interval_s=0.02)
    ingest = wal.AsyncIngest(writer)
    print("READY", flush=True)
    rng = np.random.default_rng(seed)

    async def one(i, sem):
        async with sem:
            await ingest.append(batch(i), "instant")
            print(f"ACK {{i}}", flush=True)

    async def main():
        sem = asyncio.Semaphore(8)
        tasks = []
        for j in range(first, first + 100000):
            i = j if j == 0 or rng.random() > 0.2 else int(rng.integers(0, j))   # a re-delivery
            tasks.append(asyncio.ensure_future(one(i, sem)))
            await asyncio.sleep(0)
            tasks = [t for t in tasks if not t.done()]
            while len(tasks) > 16:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                tasks = [t for t in tasks if not t.done()]

    asyncio.run(main())
""")


def batch(i: int) -> dict:
    """Batch ``i``: ROWS readings (active power p) of distinct meters at time T0 + 60 i, and 2 rows that
    must be quarantined: an unknown meter, and a value with more digits than the register has."""
    rng = np.random.default_rng(i)
    meters = np.sort(rng.choice(KNOWN, ROWS, replace=False))
    meters = np.concatenate([meters, [10_000 + i, meters[0]]])                # unknown meter; bad value
    n = len(meters)
    value = _value(i, meters)
    value[-1] = 10 ** 9                                                       # > p's 8 digits
    return {"meter_id": meters, "register": np.full(n, 36, np.int16), "ts_utc": np.full(n, T0 + 60 * i),
            "value": value, "quality": np.zeros(n, np.uint8), "source": np.full(n, schema.SRC_TASK, np.uint8),
            "received_utc": np.full(n, T0 + 60 * i + 5)}


def _value(i, meters):
    return (i * 1000 + meters) % 50_000_000


def _run_child(root, first, seed, rnd):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(first), str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    if rnd.random() < 0.25:
        time.sleep(rnd.uniform(0.2, 0.6))          # often still replaying the last crash's WAL
    else:
        line = proc.stdout.readline()
        assert line.strip() == "READY", proc.stderr.read()
        time.sleep(rnd.uniform(0.02, 0.5))
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err
    return {int(x.split()[1]) for x in out.split("\n") if x.startswith("ACK ")}


def _lake_rows(root):
    files = lake.published_files(root)
    for f in files:
        pq.ParquetFile(f).read()                    # every published file opens and decodes whole
    if not files:
        return np.zeros((0, 3), np.int64)
    return duckdb.sql(f"SELECT meter_id, epoch(ts_utc)::BIGINT, value FROM read_parquet({files!r})").fetchnumpy()


def test_kill_9_loses_no_acknowledged_reading(tmp_path):
    rnd = random.Random(4242)
    acked: set[int] = set()
    started = time.monotonic()
    for run in range(KILLS):
        acked |= _run_child(tmp_path, run * 1000, run, rnd)
        assert not any(f.endswith(".tmp") for f in lake.published_files(tmp_path))
    assert len(acked) > KILLS, "the children acknowledged almost nothing: the test proves nothing"

    wal.IngestWriter(tmp_path, KNOWN).close()        # replay the last crash's log
    assert not list(tmp_path.rglob("*.tmp")) and not list((tmp_path / "_wal").glob("*.wal"))

    rows = _lake_rows(tmp_path)
    cols = list(rows.values())
    meter, ts, value = (np.asarray(c) for c in cols)
    key = meter * 10 ** 9 + (ts - T0)
    assert len(np.unique(key)) == len(key), "a reading is in the lake twice"
    batch_of = (ts - T0) // 60
    assert ((ts - T0) % 60 == 0).all()
    assert (value == _value(batch_of, meter)).all(), "a row in the lake that no batch contained"
    present = set(zip(meter.tolist(), batch_of.tolist()))
    for i in acked:
        b = batch(i)
        good = b["meter_id"][:ROWS]
        missing = [m for m in good.tolist() if (m, i) not in present]
        assert not missing, f"acknowledged batch {i} lost meters {missing[:5]}"

    q = duckdb.sql(f"SELECT meter_id, epoch(ts_utc)::BIGINT, value, reason FROM read_parquet("
                   f"{lake.published_files(tmp_path, 'quarantine')!r})").fetchall()
    bad = {(m, t, v, r) for m, t, v, r in q}
    for i in acked:
        b = batch(i)
        t = T0 + 60 * i
        assert (10_000 + i, t, int(b["value"][-2]), validate.UNKNOWN_METER) in bad
        assert (int(b["meter_id"][-1]), t, 10 ** 9, validate.OUT_OF_RANGE) in bad
    assert time.monotonic() - started < 120

"""Ingest throughput through the WAL into Parquet, and bytes per reading at rest, vs plain write_dataset.

    python benchmarks/bench_ingest.py [--quick] [--json OUT] [--profile]

One seeded set of realistic readings (``storage.samples``): a night's daily frozen registers (日冻结) of
M meters — ae_fwd total + 4 TOU registers, and for C&I also reverse and reactive — and the day's
96-point load curve of M/10 meters; delivered as the head-end does, one concentrator's upload (200
meters) per batch.  Measured in one process, best of N with ``time.perf_counter``:

  (a) ours, durable: ``AsyncIngest.append`` of every batch, 64 in flight (validation, WAL record, group
      fsync, acknowledgement), then ``flush()`` — every segment rolled into the lake (sorted, deduplicated
      against what is there, zstd Parquet written aside, fsynced, renamed, directory fsynced).  The clock
      stops when every reading is acknowledged AND published.
  (b) ours, the same with fsync off (``sync=False``): what the durability costs.
  (c) baseline: ``pyarrow.dataset.write_dataset`` of the same rows as one Arrow table, Hive-partitioned by
      kind/date/bucket (columns computed before the clock starts), zstd, no sort, no validation, no
      dedup, no fsync, no atomic publication.

Bytes per reading at rest are the Parquet bytes in the lake over the readings.  Exit status 1 if (a) and
(c) do not hold the same readings (compared through DuckDB), which is what CI checks with ``--quick``.

Then the head-end's nightly compaction (``serve --collect``: ``storage.lake.compact(dates=[D])``):

  (d) ours: the same readings ingested in 4 rolls (as a night's uploads arriving over the roll interval
      leave them: 4 files per partition), then the day compacted — per partition, under the lake lock:
      read the files, deduplicate (received last), sort, write one file and the daily pivot aside, fsync,
      swap the directory in.
  (e) floor: per partition, ``pyarrow.parquet.read_table`` of its files and ``write_table`` of them as one
      zstd file — no dedup, no sort, no pivot, no fsync, no atomic swap.

Exit status 1 too if the compacted lake does not hold the same readings as (c).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from gridhead.storage import lake, samples, schema, wal  # noqa: E402

SEED = 2026
DAY = 20758                          # 2026-11-01
TARGETS = {"readings_per_s": 1_000_000, "bytes_per_reading": 8.0}
IN_FLIGHT = 64


def make_batches(meters: int) -> list[tuple[str, dict]]:
    """One concentrator's upload per batch: its meters' daily frozen registers, then load curves."""
    ids = np.arange(1, meters + 1)
    daily = samples.daily_frozen(ids, DAY, SEED)
    curve = samples.load_curve(ids[: meters // 10], DAY, SEED)
    out = []
    for kind, cols in ((schema.DAILY, daily), (schema.INTERVAL, curve)):
        conc = cols["meter_id"] // samples.METERS_PER_CONCENTRATOR
        order = np.argsort(conc, kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
        conc = conc[order]
        edges = np.flatnonzero(np.diff(conc)) + 1
        for lo, hi in zip(np.r_[0, edges], np.r_[edges, len(conc)]):
            out.append((kind, {k: v[lo:hi] for k, v in cols.items()}))
    return out


def lake_bytes(root: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*.parquet"))


def run_ours(root: pathlib.Path, batches, known, *, sync: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process — every thread) to acknowledge and publish all."""
    shutil.rmtree(root, ignore_errors=True)
    now = samples.local_midnight_utc(DAY + 2)
    writer = wal.IngestWriter(root, known, clock=lambda: now, sync=sync, roll_interval_s=None)
    ingest = wal.AsyncIngest(writer)

    async def main():
        sem = asyncio.Semaphore(IN_FLIGHT)

        async def one(kind, cols):
            async with sem:
                await ingest.append(cols, kind)

        await asyncio.gather(*(one(k, c) for k, c in batches))

    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    asyncio.run(main())
    writer.flush()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    writer.close()
    return elapsed, cpu


def run_compaction(root: pathlib.Path, batches, known, rolls: int = 4) -> tuple[float, float, int, int]:
    """(d): ingest in ``rolls`` rolls, then compact the day; (seconds, CPU seconds, partitions, files before)."""
    shutil.rmtree(root, ignore_errors=True)
    now = samples.local_midnight_utc(DAY + 2)
    writer = wal.IngestWriter(root, known, clock=lambda: now, sync=True, roll_interval_s=None)
    for k in range(rolls):
        for kind, cols in batches[k::rolls]:
            writer.append(cols, kind)
        writer.flush()
    writer.close()
    files = len(lake.published_files(root))
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    # day D and D+1 (a load curve's last interval ends at D+1 00:00)
    parts, _removed = lake.compact(root, dates=[dt.date.fromisoformat(lake.day_str(d)) for d in (DAY, DAY + 1)])
    return time.perf_counter() - t0, time.process_time() - c0, parts, files


def run_compaction_floor(src: pathlib.Path, dst: pathlib.Path) -> float:
    """(e): read each partition's files and write them as one file (copies of (d)'s lake before compaction)."""
    shutil.rmtree(dst, ignore_errors=True)
    groups: dict[pathlib.Path, list[str]] = {}
    for f in lake.published_files(src):
        groups.setdefault(pathlib.Path(f).parent, []).append(f)
    gc.collect()
    t0 = time.perf_counter()
    for d, fs in groups.items():
        out = dst / d.relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables([pq.read_table(f) for f in fs]), out / "one.parquet", compression="zstd")
    return time.perf_counter() - t0


def baseline_table(batches) -> pa.Table:
    tables = []
    for kind, cols in batches:
        t = lake.to_table(cols)
        days = lake.local_days(lake.seconds(t.column("ts_utc")))
        t = t.append_column("kind", pa.array([kind] * t.num_rows))
        t = t.append_column("date", pa.array([lake.day_str(d) for d in np.unique(days)])
                            .take(pa.array(np.searchsorted(np.unique(days), days))))
        t = t.append_column("bucket", pa.array(lake.buckets_of(t.column("meter_id").to_numpy())))
        tables.append(t)
    return pa.concat_tables(tables)


def run_baseline(root: pathlib.Path, table: pa.Table) -> float:
    shutil.rmtree(root, ignore_errors=True)
    gc.collect()
    t0 = time.perf_counter()
    ds.write_dataset(table, root, format="parquet", partitioning=["kind", "date", "bucket"],
                     partitioning_flavor="hive",
                     file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
                     existing_data_behavior="overwrite_or_ignore")
    return time.perf_counter() - t0


def fingerprint(files: list[str]) -> tuple:
    """Count and order-free checksums of every reading, through DuckDB."""
    return duckdb.sql(
        f"SELECT count(*), sum(hash(meter_id, register, epoch(ts_utc), value, quality, source, "
        f"epoch(received_utc))) FROM read_parquet({files!r})").fetchone()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20k meters, best of 2 — what CI runs")
    ap.add_argument("--json", type=pathlib.Path)
    ap.add_argument("--profile", action="store_true", help="cProfile one durable run")
    ap.add_argument("--cores", type=int, default=1,
                    help="pin the process (all its threads, Arrow's pool too) to this many CPUs (default 1: "
                         "the target is per core); 0 leaves it free")
    args = ap.parse_args()
    if args.cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    meters, repeat = (20_000, 2) if args.quick else (200_000, 3)
    batches = make_batches(meters)
    n = sum(len(c["meter_id"]) for _, c in batches)
    known = np.arange(1, meters + 1)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_ingest_", dir=os.environ.get("BENCH_TMP")))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{n:,} readings in {len(batches):,} batches ({meters:,} meters: daily frozen + 1/10 load curves); "
          f"best of {repeat}; {cpus} CPU(s); lake in {tmp}")
    try:
        if args.profile:
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.enable()
            run_ours(tmp / "ours", batches, known, sync=True)
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        t_ours, cpu_ours = min(run_ours(tmp / "ours", batches, known, sync=True) for _ in range(repeat))
        b_ours = lake_bytes(tmp / "ours")
        t_nosync, _ = min(run_ours(tmp / "nosync", batches, known, sync=False) for _ in range(repeat))
        table = baseline_table(batches)
        t_base = min(run_baseline(tmp / "base", table) for _ in range(repeat))
        b_base = lake_bytes(tmp / "base")
        ours_fp = fingerprint(lake.published_files(tmp / "ours"))
        base_fp = fingerprint(sorted(str(p) for p in (tmp / "base").rglob("*.parquet")))
        files_ours = len(lake.published_files(tmp / "ours"))
        # (e) first, on (d)'s lake as ingested (before it is compacted); then (d), best of repeat
        run_compaction(tmp / "compact", batches, known)
        t_floor = min(run_compaction_floor(tmp / "compact", tmp / "floor") for _ in range(repeat))
        t_comp, cpu_comp, parts_comp, files_comp = min(run_compaction(tmp / "compact", batches, known)
                                                       for _ in range(repeat))
        comp_fp = fingerprint(lake.published_files(tmp / "compact"))
        pivots = len(lake.pivot_snapshot(tmp / "compact", schema.DAILY)[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [("(a) ours: WAL + group fsync + roll to Parquet", t_ours, b_ours),
            ("(b) ours, fsync off", t_nosync, None),
            ("(c) pyarrow.dataset.write_dataset", t_base, b_base)]
    print(f"\n| measurement | seconds | readings/s | bytes/reading at rest |\n|---|---:|---:|---:|")
    for name, t, b in rows:
        print(f"| {name} | {t:.3f} | {n / t:,.0f} | {'' if b is None else f'{b / n:.2f}'} |")
    print(f"\n(a) used {cpu_ours:.3f} CPU-seconds (all threads): {n / cpu_ours:,.0f} readings per CPU-second "
          f"(the per-core rate, whatever else the machine runs)")
    print(f"ratios: (a)/(c) throughput {t_base / t_ours:.2f}x; (a)/(b) durability costs "
          f"{(t_ours / t_nosync - 1) * 100:.0f} %; bytes at rest (a)/(c) {b_ours / b_base:.2f}; "
          f"files: ours {files_ours}")
    verdicts = {"readings_per_s": n / t_ours >= TARGETS["readings_per_s"],
                "bytes_per_reading": b_ours / n <= TARGETS["bytes_per_reading"]}
    for k, ok in verdicts.items():
        print(f"target {k} {TARGETS[k]:,}: {'PASS' if ok else 'MISS'}")
    print(f"\nnightly compaction of the day ({files_comp} files from 4 rolls -> {parts_comp} partitions, "
          f"{pivots} daily pivots):")
    print(f"| measurement | seconds | readings/s |\n|---|---:|---:|")
    print(f"| (d) ours: lake.compact(dates=[D]) | {t_comp:.3f} | {n / t_comp:,.0f} |")
    print(f"| (e) floor: read + write one file per partition | {t_floor:.3f} | {n / t_floor:,.0f} |")
    print(f"ratio (d)/(e) time {t_comp / t_floor:.2f}x; (d) used {cpu_comp:.3f} CPU-seconds")
    agree = ours_fp == base_fp
    print(f"ours and baseline hold the same readings: {'yes' if agree else f'NO {ours_fp} vs {base_fp}'}")
    comp_agree = comp_fp == base_fp and parts_comp > 0 and pivots > 0
    print(f"the compacted lake holds the same readings: {'yes' if comp_fp == base_fp else f'NO {comp_fp} vs {base_fp}'}")
    agree = agree and comp_agree
    if args.json:
        args.json.write_text(json.dumps({
            "readings": n, "cpu_seconds_ours": cpu_ours,
            "seconds": {"ours": t_ours, "ours_nosync": t_nosync, "baseline": t_base,
                        "compaction": t_comp, "compaction_floor": t_floor},
            "bytes_per_reading": {"ours": b_ours / n, "baseline": b_base / n}, "verdicts": verdicts,
            "agree": agree}, indent=1))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())

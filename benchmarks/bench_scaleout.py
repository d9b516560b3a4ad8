"""The bill run on a Dask LocalCluster (billing_core.jobs.dist, one task per lake bucket) vs the single-node run.

    python benchmarks/bench_scaleout.py [--quick] [--customers N] [--workers W] [--cache DIR]
                                        [--archive-modes] [--no-lineloss]

Full mode bills N customers (default 1M; the issue's figure is --customers 10000000) for 2026-06 from the
same generated fleet as bench_bill_run.py (cached in /tmp/gridhead-bench-billrun-<N>).  In one process it
times the single-node run (the baseline; above billing_core.jobs.bills.CHUNK customers it bills chunks of whole
buckets one after another, spilled to disk), the cluster's start, 16 no-op tasks (the scheduler's own
per-task cost), and the distributed run on W worker processes (threads_per_worker=1) on 127.0.0.1 with the
driver shipping each task its archive rows (--archive-modes: also with tasks querying the archive file
themselves, the design before).  Prints times, CPU seconds (driver + workers), peak resident memory (the
driver's anonymous RSS sampled during each run; each worker's VmHWM), the speed-up,
the scaling efficiency (speed-up / W), the per-task overhead (the tasks' summed read+price time minus the
single node's, per task); then (unless --no-lineloss) line loss of one day single node vs one task per
feeder set.  Exits 1 unless the published bills and items are byte-identical to the single-node run's and
the line-loss rows identical.  --quick: 5k customers in a temp dir.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pathlib
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.bench_bill_run import PERIOD, fleet_dir  # noqa: E402
from gridhead.storage import archive  # noqa: E402
from gridhead.billing_core.jobs import bills, dist, lineloss  # noqa: E402

FILES = ("bills.parquet", "bill_items.parquet")


def _noop(i):
    return i


class _AnonPeak:
    """The peak of this process's anonymous resident memory (RssAnon, sampled every 20 ms by a thread):
    what must fit in RAM — unlike VmHWM, it leaves out the page cache behind the memory-mapped spill files."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _status("RssAnon"))

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return max(self.peak, _status("RssAnon")) / 1024


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def _worker_peak_mb(c) -> list:
    """Each worker's VmHWM (its own process's high-water mark since it started)."""
    return sorted(round(v / 1024) for v in c.run(_status, "VmHWM").values())


def _worker_cpu(c) -> float:
    """User + system CPU seconds of the cluster's worker processes so far."""
    return sum(c.run(lambda: sum(os.times()[:2])).values())


def _lineloss(d: pathlib.Path, c) -> bool:
    """Line loss of one day (the period's 15th): single node in this process vs one task per feeder set."""
    day = dt.date(int(PERIOD[:4]), int(PERIOD[5:7]), 15)
    t0, c0 = time.perf_counter(), time.process_time()
    with archive.Archive(d / "archive.duckdb", read_only=True) as ar:
        ref = lineloss.compute(ar, d / "lake", day, day)
    t_single, cpu_single = time.perf_counter() - t0, time.process_time() - c0
    w0, c0, t0 = _worker_cpu(c), time.process_time(), time.perf_counter()
    res, tasks = dist.lineloss_run(d, day, day, c, save=False)
    t_dist, cpu_drv, cpu_w = time.perf_counter() - t0, time.process_time() - c0, _worker_cpu(c) - w0
    same = lineloss.day_table(res, day).equals(lineloss.day_table(ref, day))
    print(f"line loss of {day} ({len(ref.area_id):,} areas, {len(ref.feeder_id)} feeders): single node "
          f"{t_single:.2f} s ({cpu_single:.2f} CPU s); {tasks['count']} feeder-set tasks {t_dist:.2f} s (CPU: driver "
          f"{cpu_drv:.2f} s + workers {cpu_w:.2f} s); speed-up {t_single / t_dist:.2f}x; identical rows: {same}")
    return same


def _published(d: pathlib.Path) -> dict:
    return {f: (d / "bills" / f"period={PERIOD}" / f).read_bytes() for f in FILES}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--customers", type=int)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", type=pathlib.Path)
    ap.add_argument("--archive-modes", action="store_true", help="also run tasks that query the archive file")
    ap.add_argument("--no-lineloss", action="store_true")
    a = ap.parse_args()
    n = a.customers or (5_000 if a.quick else 1_000_000)
    with fleet_dir(n, a.quick, a.cache, "gridhead-bench-scaleout-") as d:
        mem = _AnonPeak()
        t0, c0 = time.perf_counter(), time.process_time()
        single = bills.run(d, PERIOD)
        t_single, cpu_single = time.perf_counter() - t0, time.process_time() - c0
        peak_single = mem.stop()
        ref = _published(d)
        print(f"customers {n:,}: single node {t_single:.2f} s (read {single['seconds']['read']:.2f} of which "
              f"assign+prepare {single['seconds']['prepare']:.2f}, "
              f"price {single['seconds']['price']:.2f}, write+publish "
              f"{t_single - single['seconds']['read'] - single['seconds']['price']:.2f}; "
              f"{-(-n // bills.CHUNK)} chunk(s) or more), CPU {cpu_single:.2f} s, peak anonymous RSS {peak_single:,.0f} MB",
              flush=True)
        t0 = time.perf_counter()
        with dist.client(workers=a.workers) as c:
            t_start = time.perf_counter() - t0
            t0 = time.perf_counter()
            c.gather(c.map(_noop, range(16), pure=False))
            t_noop = time.perf_counter() - t0
            runs = {}
            modes = (("tasks query the archive", False),) if a.archive_modes else ()
            for mode, ship in (*modes, ("archive rows shipped", True)):
                mem = _AnonPeak()
                w0, c0, t0 = _worker_cpu(c), time.process_time(), time.perf_counter()
                s = dist.run(d, PERIOD, c, ship_rows=ship)
                runs[mode] = (time.perf_counter() - t0, time.process_time() - c0, _worker_cpu(c) - w0, s,
                              _published(d) == ref, mem.stop())
            peaks = _worker_peak_mb(c)
            ll = True if a.no_lineloss else _lineloss(d, c)
        print(f"LocalCluster {a.workers} workers: start {t_start:.2f} s; scheduler round trip of a no-op task "
              f"{t_noop / 16 * 1000:.1f} ms")
        # the single node's chunk phase: its read + price without the assignment and prepare of chunks,
        # which the distributed run does once in the driver too (outside the tasks)
        work = single["seconds"]["read"] + single["seconds"]["price"] - single["seconds"]["prepare"]
        for mode, (t_dist, cpu_drv, cpu_w, s, same, peak) in runs.items():
            tasks = s["tasks"]
            speed = t_single / t_dist
            over = (tasks["read_s"] + tasks["price_s"] - work) / tasks["count"]
            print(f"[{mode}] distributed run {t_dist:.2f} s (driver's assign+prepare {s['seconds']['prepare']:.2f}, "
                  f"tasks done at {s['seconds']['read']:.2f}, merge+write+publish {t_dist - s['seconds']['read']:.2f}); "
                  f"CPU: driver {cpu_drv:.2f} s + workers {cpu_w:.2f} s = {cpu_drv + cpu_w:.2f} s "
                  f"(single node {cpu_single:.2f} s); driver's peak anonymous RSS {peak:,.0f} MB")
            print(f"  speed-up {speed:.2f}x, scaling efficiency {speed / a.workers:.0%} (cores on this host: "
                  f"{os.cpu_count()}, shared); tasks {tasks['count']}: summed read {tasks['read_s']:.2f} s + price "
                  f"{tasks['price_s']:.2f} s vs single-node read+price without its prepare {work:.2f} s; per-task overhead "
                  f"{over * 1000:.0f} ms; CPU overhead per task (distributed CPU - single CPU) / tasks "
                  f"{(cpu_drv + cpu_w - cpu_single) / tasks['count'] * 1000:.0f} ms; byte-identical: {same}")
        print(f"workers' peak RSS (VmHWM, whole session) {peaks} MB; single node's peak anonymous RSS "
              f"{peak_single:,.0f} MB", flush=True)
        same = all(r[4] for r in runs.values()) and ll
        print(f"bills byte-identical to the single-node run: {all(r[4] for r in runs.values())}")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

"""(d) `gridhead bill run` end to end from the lake: read, price, write, publish — with peak memory.

    python benchmarks/bench_bill_run.py [--quick] [--customers N] [--cache DIR]

Full mode bills 1M customers for 2026-06 from a generated fleet (generated once into --cache, default
/tmp/gridhead-bench-billrun-<N>; ~60 s or more the first time); --quick uses 5k customers in a temp dir.
Prints the end-to-end time (best of the runs; target < 30 s for 1M), its split (read lake + archive,
price, write + publish), the same columns priced by the kernel alone and by its numpy twin (the
baseline in this process), and the peak resident memory (resource.getrusage).  Exits 1 if the compiled
kernel and the twin disagree on any fen, or the published bills disagree with the in-memory ones.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from gridhead.billing_core import _billing_py, run as R  # noqa: E402
from gridhead.billing_core.tariff import TariffSet  # noqa: E402
from gridhead.protocols import accel  # noqa: E402
from gridhead.storage import archive, generator  # noqa: E402
from gridhead.billing_core.jobs import bills  # noqa: E402

PERIOD = "2026-06"


def _fleet(d: pathlib.Path, n: int) -> None:
    if (d / "archive.duckdb").exists() and (d / "ground_truth" / "summary.json").exists():
        return
    shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    fsync, os.fsync = os.fsync, lambda fd: None      # generated input: its durability is not measured here
    try:
        generator.generate(d, n, 30, seed=6, curve_fraction=0.0)
    finally:
        os.fsync = fsync
    with archive.Archive(d / "archive.duckdb") as a:
        a.import_files(sorted((d / "archive-files").glob("*.csv")))
    print(f"generated {n:,} customers in {time.perf_counter() - t0:.1f} s into {d}")


@contextlib.contextmanager
def fleet_dir(n: int, quick: bool, cache: pathlib.Path | None, prefix: str):
    """The generated fleet of ``n`` customers, made if missing: ``cache``, else (``--quick``) a temporary
    directory removed afterwards, else /tmp/gridhead-bench-billrun-<n> kept for the billing benchmarks."""
    tmp = tempfile.mkdtemp(prefix=prefix) if quick and not cache else None
    d = pathlib.Path(tmp) if tmp else (cache or pathlib.Path(f"/tmp/gridhead-bench-billrun-{n}"))
    try:
        _fleet(d, n)
        yield d
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--customers", type=int)
    ap.add_argument("--cache", type=pathlib.Path)
    ap.add_argument("--runs", type=int)
    a = ap.parse_args()
    n = a.customers or (5_000 if a.quick else 1_000_000)
    with fleet_dir(n, a.quick, a.cache, "bench-billrun-") as d:
        mb0 = _peak_mb()
        runs = a.runs or (2 if a.quick else 2)
        best, summary, cpu = None, None, None
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            s = bills.run(d, PERIOD)
            t = time.perf_counter() - t0
            if best is None or t < best:
                best, summary, cpu = t, s, time.process_time() - c0
        peak = _peak_mb()
        sec = summary["seconds"]
        print(f"(d) bill run {PERIOD}, {summary['bills']:,} bills ({summary['held']:,} held): {best:.2f} s end to end "
              f"(read {sec['read']:.2f}, price {sec['price']:.2f}, write+publish {best - sec['read'] - sec['price']:.2f})"
              + (f"  target < 30 s for 1M: {'PASS' if best < 30 else 'MISS'}" if n >= 1_000_000 else ""))
        print(f"    CPU {cpu:.2f} s (all threads of the process, the best run) — the figure to compare on a loaded host")
        print(f"    peak resident memory {peak:,.0f} MB (before the runs {mb0:,.0f} MB)")
        # baseline in the same process: the pricing of the same columns, compiled and twin
        ts = TariffSet.load()
        inp, _text = bills.extract(d, PERIOD)
        ok = True
        kern = accel.load("gridhead.billing_core._billing", "compiled") if accel.is_compiled("gridhead.billing_core._billing") else None
        R.compute(inp, ts, kern)            # warm-up: the first call pays the page faults of its allocations

        def timed(k):
            out, t = None, float("inf")
            for _ in range(2):
                t0 = time.perf_counter()
                out, _, _ = R.compute(inp, ts, k)
                t = min(t, time.perf_counter() - t0)
            return out, t

        out_c, t_c = timed(kern)
        out_p, t_p = timed(_billing_py)
        print(f"    compute() alone (best of 2 after a warm-up): compiled kernel {t_c:.2f} s, numpy twin {t_p:.2f} s; "
              f"end to end = {best / t_c:.1f}× the pricing")
        for k in ("total_fen", "pf_adjust_fen", "basic_fen", "tier2_fen", "tier3_fen"):
            if not np.array_equal(out_c[k], out_p[k]):
                print(f"DISAGREE: compiled and twin differ in {k}")
                ok = False
        pub = bills._read_pq(bills.partition(d, PERIOD) / "bills.parquet", ["total_fen"]).column("total_fen").to_numpy()
        if not np.array_equal(pub, out_c["total_fen"]):
            print("DISAGREE: published bills differ from the in-memory computation")
            ok = False
        if ok:
            print("    compiled == twin == published on every bill")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

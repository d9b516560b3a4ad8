"""Billing kernel throughput: compiled vs numpy twin vs the memory-bandwidth floor vs PySAM per bill.

    python benchmarks/bench_billing.py [--quick] [--n N]

(a) the kernel on N accounts (10M; --quick 200k) from in-memory columns: 4 TOU registers, annual tiers
    for residential, 力调 and basic charge for the C&I share (20 %), and the time to copy the same input
    bytes (the memory-bandwidth floor); (b) compiled vs numpy twin on the same columns; (c) per-bill time
    against PySAM Utilityrate5 (one execute = 12 monthly bills of one customer).
Exits 1 if compiled and twin disagree on any fen.
"""

from __future__ import annotations

import argparse
import datetime as dt
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from gridhead.billing_core import _billing_py, engine  # noqa: E402
from gridhead.billing_core.tariff import TariffSet  # noqa: E402
from gridhead.protocols import accel  # noqa: E402


def columns(n: int, seed: int = 6):
    ts = TariffSet.load()
    rng = np.random.default_rng(seed)
    ci = rng.random(n) < 0.2
    cat = np.where(ci, np.where(rng.random(n) < 0.5, "large_industrial", "general_commercial"), "residential")
    rows = ts.rows(cat, np.where(cat == "residential", "under_1kV", "1-10kV"), dt.date(2026, 10, 1))
    big = np.where(ci, 1000, 1)
    e = [rng.integers(0, 10_000, n) * big for _ in range(4)]
    return ts.table(), engine.ChargeRows.of(
        n, tariff_row=rows, e_sharp=e[0], e_peak=e[1], e_flat=e[2], e_valley=e[3],
        q=rng.integers(0, 15_000, n) * big, cum_prev=rng.integers(0, 600_000, n),
        demand=rng.integers(0, 2_000, n) * big * 10, contract_kw=np.where(ci, 1000, 0), days=31, period_days=31)


def best(f, reps):
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    return min(t)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int)
    a = ap.parse_args()
    n = a.n or (200_000 if a.quick else 10_000_000)
    reps = 3 if a.quick else 5
    table, rows = columns(n)
    cols = engine._check(rows, table)
    nbytes = sum(c.nbytes for c in cols)
    compiled = accel.load("gridhead.billing_core._billing", "compiled") if accel.is_compiled("gridhead.billing_core._billing") else None
    ok = True
    print(f"{n:,} accounts, {nbytes / 1e6:.0f} MB of input columns")
    t_copy = best(lambda: [c.copy() for c in cols], reps)
    print(f"(a) copy of the input bytes (floor): {t_copy:.3f} s")
    if compiled:
        t_c = best(lambda: engine.price(rows, table, compiled), reps)
        print(f"(a) compiled kernel: {t_c:.3f} s  ({n / t_c / 1e6:.1f} M bills/s, {t_c / t_copy:.1f}× the copy floor)"
              f"  target < 2 s for 10M: {'PASS' if t_c * 1e7 / n < 2 else 'MISS'}")
    t_p = best(lambda: engine.price(rows, table, _billing_py), max(1, reps - 2))
    print(f"(b) numpy twin: {t_p:.3f} s" + (f"; compiled / twin = {t_p / t_c:.1f}× (target ≥ 3×)" if compiled else ""))
    if compiled:
        x, y = engine.price(rows, table, compiled), engine.price(rows, table, _billing_py)
        bad = [k for k in engine.ITEMS if not np.array_equal(x[k], y[k])]
        if bad:
            print(f"DISAGREE: compiled and twin differ in {bad}")
            ok = False
        else:
            print("compiled == twin on every line of every bill")
    try:
        from tests.billing_core import test_billing_oracle as O  # the oracle set-up of the tests
        import tempfile
        d = pathlib.Path(tempfile.mkdtemp())
        (d / "o.toml").write_text(O.TOML)
        ots = TariffSet.load(d)
        v = ots.tariff("oracle_commercial").versions[0]
        load = np.round(np.random.default_rng(1).uniform(2, 4, 8760), 2)
        t_sam = best(lambda: O._pysam(load, v, ots.table().params[1], True, True), 3) / 12
        per_bill = (t_c if compiled else t_p) / n
        print(f"(c) PySAM: {t_sam * 1e3:.2f} ms per bill; ours {per_bill * 1e9:.0f} ns per bill → "
              f"{t_sam / per_bill:,.0f}× (target ≥ 1000×)")
    except ImportError as exc:
        print(f"(c) skipped: {exc}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

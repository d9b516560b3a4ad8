"""Benchmark: daily line loss (线损) from the lake, and the monthly audit ranking (稽查).

1. Daily line loss of N meters in A areas: two daily freezes (ae_fwd, ae_rev) written to a real lake
   with storage.lake (the bulk writer puts each partition's materialised pivot beside its part file),
   then ours (billing_core.jobs.lineloss.read_frozen + billing_core.lineloss.interval_energy + area_balance) from
   the pivots and from the raw part files, vs one DuckDB SQL (join of the two freezes, join to the point
   table, GROUP BY area) over the raw files and over the pivots, in the same process.  Supply and sales
   must agree to the 0.01 kWh for every area, all four ways (exit 1 if not).
2. Audit ranking of C customers over 30 days (billing_core.audit.signals, vectorised) vs the same
   statistics as a per-customer Python loop, timed on a sample and extrapolated; the sample must agree.

``--quick`` (CI): 200k meters / 2k areas and 20k customers.  Full: 10M meters / 100k areas, 1M customers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time

import duckdb
import numpy as np

from gridhead.billing_core import audit as au
from gridhead.billing_core import lineloss as ll
from gridhead.storage import lake, schema
from gridhead.billing_core.jobs import lineloss as sl


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def best(f, n=3):
    """(best wall s, CPU s of that round — all threads, result): the 2 cores are shared, so both."""
    t = []
    for _ in range(n):
        t0, c0 = time.perf_counter(), _cpu()
        out = f()
        t.append((time.perf_counter() - t0, _cpu() - c0))
    return (*min(t), out)


def make_lake(root, n_meters: int, n_areas: int, rng):
    """Meter i: area i % A; the first A meters are check meters (multiplier 40 × 1), the rest customers."""
    d0 = dt.date(2026, 6, 1)
    start = rng.integers(0, 10**7, n_meters)
    inc = rng.integers(0, 2_000, n_meters)
    inc[:n_areas] = 0
    area = np.arange(n_meters) % n_areas
    cust_sum = np.bincount(area[n_areas:], weights=inc[n_areas:], minlength=n_areas)
    inc[:n_areas] = np.rint(cust_sum * 1.05 / 40).astype(np.int64)       # 5 % loss through a CT of 40
    ids = np.arange(1, n_meters + 1, dtype=np.int64)
    for k, day in enumerate((d0, d0 + dt.timedelta(days=1))):
        ts = (day - dt.date(1970, 1, 1)).days * 86400 - schema.LOCAL_OFFSET_S
        m = np.concatenate([ids, ids])
        reg = np.concatenate([np.full(n_meters, 1, np.int16), np.full(n_meters, 6, np.int16)])
        val = np.concatenate([start + k * inc, np.zeros(n_meters, np.int64)])
        lake.write_readings(root, {"meter_id": m, "register": reg, "ts_utc": np.full(len(m), ts),
                                   "value": val, "quality": np.zeros(len(m), np.uint8),
                                   "source": np.full(len(m), schema.SRC_IMPORT, np.uint8),
                                   "received_utc": np.full(len(m), ts + 3600)}, schema.DAILY)
    kind = np.where(np.arange(n_meters) < n_areas, ll.K_CHECK, ll.K_CUSTOMER).astype(np.int8)
    mult = np.where(kind == ll.K_CHECK, 40, 1).astype(np.int64)
    return d0, ids, area, kind, mult


def ours_daily(root, d0, ids, area, kind, mult, n_areas, pivots=True):
    r = sl.read_frozen(root, [d0, d0 + dt.timedelta(days=1)], ids, pivots=pivots)
    fwd, fl = ll.interval_energy(r["ae_fwd"], 10**10, 1)
    rev, _ = ll.interval_energy(r["ae_rev"], 10**10, 1)
    m = mult[:, None]
    return ll.area_balance(kind, area, n_areas, fwd * m, rev * m, fl, np.full(n_areas, 700), np.zeros(n_areas, np.int64))


def duckdb_pivot_daily(con, root, d0):
    """The same SQL over the materialised pivots (what storage.sql's daily_frozen reads)."""
    g = lambda d: f"{root}/readings/kind=daily/date={d.isoformat()}/bucket=*/pivot-*.pivot"  # noqa: E731
    return con.execute(f"""
        WITH e AS (SELECT b.meter_id, (b.ae_fwd - a.ae_fwd) * p.mult AS f, (b.ae_rev - a.ae_rev) * p.mult AS r,
                          p.area, p.kind
                   FROM read_parquet('{g(d0)}') a JOIN read_parquet('{g(d0 + dt.timedelta(days=1))}') b USING (meter_id)
                   JOIN pts p ON p.meter_id = a.meter_id)
        SELECT area, sum(f) FILTER (WHERE kind = {ll.K_CHECK}) AS supply,
               coalesce(sum(f) FILTER (WHERE kind = {ll.K_CUSTOMER}), 0)
               + coalesce(sum(r) FILTER (WHERE kind = {ll.K_CHECK}), 0) AS sales
        FROM e GROUP BY area ORDER BY area""").fetchnumpy()


def duckdb_daily(con, root, d0):
    g = lambda d: f"{root}/readings/kind=daily/date={d.isoformat()}/bucket=*/part-*.parquet"  # noqa: E731
    return con.execute(f"""
        WITH a AS (SELECT meter_id, register, value FROM read_parquet('{g(d0)}') WHERE register IN (1, 6)),
             b AS (SELECT meter_id, register, value FROM read_parquet('{g(d0 + dt.timedelta(days=1))}') WHERE register IN (1, 6)),
             e AS (SELECT a.meter_id, a.register, (b.value - a.value) * p.mult AS e, p.area, p.kind
                   FROM a JOIN b USING (meter_id, register) JOIN pts p ON p.meter_id = a.meter_id)
        SELECT area, sum(e) FILTER (WHERE kind = {ll.K_CHECK} AND register = 1) AS supply,
               coalesce(sum(e) FILTER (WHERE (kind = {ll.K_CUSTOMER} AND register = 1)
                                         OR (kind = {ll.K_CHECK} AND register = 6)), 0) AS sales
        FROM e GROUP BY area ORDER BY area""").fetchnumpy()


def audit_inputs(n: int, rng, D=30):
    areas = max(1, n // 150)
    area = np.arange(n) % areas
    e = rng.lognormal(np.log(700), 0.15, (n, D)).round().astype(np.int64)
    thief = rng.random(n) < 0.01
    start = rng.integers(3, D - 3, n)
    cut = thief[:, None] & (np.arange(D)[None, :] >= start[:, None])
    e = np.where(cut, e // 2, e)
    sales = ll.group_sum(area, areas, e)
    loss = sales // 20 + ll.group_sum(area, areas, np.where(cut, e, 0))
    ok = np.ones((areas, D), bool)
    return (e, np.zeros_like(e), np.zeros(e.shape, bool), area, sales, loss, ok, ~ok, {}, np.ones(n, np.int64),
            np.ones(n, np.int64)), thief


def loop_t(x_row, ok_row):
    """The theft t statistic of one customer, split by split (the per-customer baseline)."""
    D, best_t = len(x_row), 0.0
    for s in range(1, D):
        b, a = x_row[:s][ok_row[:s]], x_row[s:][ok_row[s:]]
        if len(b) < au.MIN_SIDE or len(a) < au.MIN_SIDE:
            continue
        ss = ((b - b.mean()) ** 2).sum() + ((a - a.mean()) ** 2).sum()
        sd = np.sqrt(ss / (len(b) + len(a) - 2))
        if sd > 0:
            best_t = max(best_t, (b.mean() - a.mean()) / (sd * np.sqrt(1 / len(b) + 1 / len(a))))
    return best_t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_m, n_a, n_c = (200_000, 2_000, 20_000) if args.quick else (10_000_000, 100_000, 1_000_000)
    rng = np.random.default_rng(1)
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        d0, ids, area, kind, mult = make_lake(tmp, n_m, n_a, rng)
        print(f"lake: {n_m:,} meters × 2 freezes × 2 registers written in {time.perf_counter() - t0:.1f} s")
        t_ours, c_ours, bal = best(lambda: ours_daily(tmp, d0, ids, area, kind, mult, n_a))
        t_raw, c_raw, bal_raw = best(lambda: ours_daily(tmp, d0, ids, area, kind, mult, n_a, pivots=False))
        con = duckdb.connect()
        import pyarrow as pa
        con.register("pts", pa.table({"meter_id": ids, "area": area, "kind": kind, "mult": mult}))
        t_duck, c_duck, ref = best(lambda: duckdb_daily(con, tmp, d0))
        t_dpiv, c_dpiv, ref_p = best(lambda: duckdb_pivot_daily(con, tmp, d0))
        same = all(np.array_equal(b_sup, r["supply"].astype(np.int64)) and np.array_equal(b_sal, r["sales"].astype(np.int64))
                   for b_sup, b_sal in ((bal.supply[:, 0], bal.sales[:, 0]), (bal_raw.supply[:, 0], bal_raw.sales[:, 0]))
                   for r in (ref, ref_p))
        bad += not same
        print(f"daily line loss, {n_m:,} meters in {n_a:,} areas (best of 3, wall s / CPU s):\n"
              f"  ours, pivots      {t_ours:.2f} / {c_ours:.2f}\n"
              f"  ours, raw files   {t_raw:.2f} / {c_raw:.2f}\n"
              f"  DuckDB SQL self-join + GROUP BY, raw files {t_duck:.2f} / {c_duck:.2f} ({t_duck / t_ours:.2f}x ours)\n"
              f"  DuckDB SQL join + GROUP BY, pivots         {t_dpiv:.2f} / {c_dpiv:.2f} ({t_dpiv / t_ours:.2f}x ours)\n"
              f"  all four agree: {same}; rates {np.median(bal.rate_bp):.0f} bp median")
    inputs, thief = audit_inputs(n_c, rng)
    t_vec, c_vec, sig = best(lambda: au.signals(*inputs), n=2)
    sample = np.arange(0, n_c, max(1, n_c // 300))
    e, area_c, sales = inputs[0], inputs[3], inputs[4]
    share = e / sales[area_c]
    t0 = time.perf_counter()
    loop = np.array([loop_t(share[i], np.ones(e.shape[1], bool)) for i in sample])
    t_loop = (time.perf_counter() - t0) * n_c / len(sample)
    agree = np.allclose(loop, np.maximum(sig["t_stat"][sample], 0), rtol=1e-6, atol=1e-6)
    bad += not agree
    order = np.argsort(-sig["score"], kind="stable")
    pr = au.precision_recall(order[sig["score"][order] > 0].tolist(), np.flatnonzero(thief).tolist())
    print(f"audit ranking, {n_c:,} customers × 30 days: vectorised {t_vec:.2f} s ({c_vec:.2f} CPU s), per-customer loop "
          f"{t_loop:.1f} s (extrapolated from {len(sample)}), ratio {t_loop / t_vec:.0f}x; agree: {agree}; "
          f"precision@k {pr['precision_at_k']:.3f}, recall {pr['recall']:.3f} (k = {pr['k']} injected)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

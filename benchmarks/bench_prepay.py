"""Prepayment and ledger: the daily prepay run and a bank-file payment import, at scale.

    python benchmarks/bench_prepay.py [--quick] [--customers N] [--cache DIR]

Full mode uses 1M customers, every one made a prepayment customer (``UPDATE customers SET prepaid``
on a copy of the generated archive; the lake is the generated one, shared read-only).  The fleet is
generated once into --cache (default /tmp/gridhead-bench-billrun-<N>, the bill-run benchmark's cache);
--quick uses 3k customers in a temp dir.  Measured, in one process:

(a) ``gridhead pay import`` of a bank CSV with one payment per customer (parse, validate every row,
    duplicate references, one transaction with running balances) — target < 10 s for 1M rows — against
    the baseline of row-by-row INSERT of a sample (one statement per payment), extrapolated;
(b) ``gridhead prepay run`` of one day (lake → daily energy → bill kernel → ledger entries → thresholds
    → events and outbox, one transaction) — target < 10 s for 1M — against the baseline of a
    per-customer loop (price one row, INSERT one entry) over a sample, extrapolated.

Exits 1 if the sample's per-customer charges differ from the run's entries by one fen, if the import
did not post every row, or if ``ledger check`` fails.
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402

from benchmarks.bench_bill_run import _fleet  # noqa: E402  (one cached generated fleet for the billing benchmarks)
from billing_core import engine, prepay as P  # noqa: E402
from billing_core.run import voltage_level  # noqa: E402
from billing_core.tariff import TariffSet  # noqa: E402
from storage import ledger, prepay  # noqa: E402

DAY = dt.date(2026, 6, 10)


def _work(src: pathlib.Path, work: pathlib.Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "archive.duckdb", work / "archive.duckdb")
    (work / "lake").symlink_to((src / "lake").resolve())
    with duckdb.connect(str(work / "archive.duckdb")) as con:
        con.execute("UPDATE customers SET prepaid = true")


def _bank_file(work: pathlib.Path, nos: list[str]) -> pathlib.Path:
    f = work / "bank.csv"
    amounts = (np.arange(len(nos)) % 9000 + 1000)
    with open(f, "w") as fh:
        fh.write("ref,customer_no,amount_yuan,paid_on\n")
        fh.writelines(f"BK{i:09d},{no},{a // 100}.{a % 100:02d},2026-06-05\n" for i, (no, a) in enumerate(zip(nos, amounts)))
    return f


def _baseline_insert(work: pathlib.Path, sample: int, nos) -> float:
    """Row-by-row: one INSERT per payment, each its own statement (autocommit), on a scratch table."""
    with duckdb.connect(str(work / "baseline.duckdb")) as con:
        con.execute(ledger.DDL.replace(ledger.TABLE, "t"))
        t0 = time.perf_counter()
        bal = {}
        for i in range(sample):
            cid = i + 1
            bal[cid] = bal.get(cid, 0) - 1000
            con.execute("INSERT INTO t VALUES (?, ?, 'payment', 0, 1000, ?, '2026-06', DATE '2026-06-05', ?, 'b', "
                        "now(), NULL, 'x')", [i + 1, cid, bal[cid], f"bank:S{i}"])
        return (time.perf_counter() - t0) / sample


def _baseline_prepay(work: pathlib.Path, sample: int) -> tuple[float, dict]:
    """Per customer: its readings (the day, the next, the year-to-date start), the kernel on one row, one
    INSERT (on a scratch table)."""
    tariffs = TariffSet.load()
    with ledger.Writer(work) as w:
        c = prepay._customers(w, DAY)
        pick = np.linspace(0, len(c["customer_id"]) - 1, sample).astype(np.int64)
        cum, start = prepay._year_start(w, work, c["customer_id"][pick].astype(np.int64), DAY)
        starts = sorted({d for d in start.astype(dt.date) if d < DAY})
        prev, now, *firsts = prepay._readings(w, work, c["meter_id"][pick].astype(np.int64), DAY, starts)
        first_of = dict(zip(starts, firsts))
    month_days = calendar.monthrange(DAY.year, DAY.month)[1]
    out = {}
    with duckdb.connect(str(work / "baseline.duckdb")) as con:
        con.execute(ledger.DDL.replace(ledger.TABLE, "p"))
        t0 = time.perf_counter()
        for j, i in enumerate(pick):
            e, ok = P.daily_energy({r: prev[r][j:j + 1] for r in P.REGISTERS}, {r: now[r][j:j + 1] for r in P.REGISTERS},
                                   c["ct"][i:i + 1], c["pt"][i:i + 1], c["digits"][i:i + 1])
            # annual tiers: the year before the day, from the bills' cum_after and the reading at its start
            ytd = int(cum[j])
            s0 = first_of.get(start[j].astype(dt.date))
            if s0 is not None:
                e0, ok0 = P.daily_energy({r: s0[r][j:j + 1] for r in P.REGISTERS},
                                         {r: prev[r][j:j + 1] for r in P.REGISTERS},
                                         c["ct"][i:i + 1], c["pt"][i:i + 1], c["digits"][i:i + 1])
                ytd += int(e0["e_total"][0]) if ok0[0] and c["meter_id"][i] >= 0 else 0
            row = tariffs.rows([str(c["category"][i])], [voltage_level(int(c["voltage_v"][i]))], DAY)
            fen = int(engine.price(engine.ChargeRows.of(1, tariff_row=row, e_sharp=e["e_sharp"], e_peak=e["e_peak"],
                                                        e_flat=e["e_flat"], e_valley=e["e_valley"], cum_prev=ytd,
                                                        days=1, period_days=month_days), tariffs.table()
                                   ).columns["total_fen"][0]) if ok[0] else 0
            out[int(c["customer_id"][i])] = fen
            con.execute("INSERT INTO p VALUES (?, ?, 'prepay_charge', ?, 0, 0, '2026-06', ?, ?, 'b', now(), NULL, 'x')",
                        [j + 1, int(c["customer_id"][i]), fen, DAY, f"prepay:{int(c['customer_id'][i])}:{DAY}"])
        return (time.perf_counter() - t0) / sample, out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--customers", type=int)
    ap.add_argument("--cache", type=pathlib.Path)
    a = ap.parse_args()
    n = a.customers or (3_000 if a.quick else 1_000_000)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gridhead-bench-prepay-"))
    try:
        src = a.cache or (tmp / "fleet" if a.quick else pathlib.Path(f"/tmp/gridhead-bench-billrun-{n}"))
        _fleet(src, n)
        work = tmp / "work"
        _work(src, work)
        with ledger.Writer(work) as w:
            nos = [str(x) for x in w.columns("SELECT customer_no FROM customers ORDER BY customer_id")["customer_no"]]
        bank = _bank_file(work, nos)
        sample = 300 if a.quick else 2_000
        t0 = time.perf_counter()
        r = ledger.import_payments(work, bank, "bench")
        t_import = time.perf_counter() - t0
        base_row = _baseline_insert(work, sample, nos)
        print(f"(a) pay import {r['rows']:,} rows: {t_import:.2f} s ({r['rows'] / t_import:,.0f} rows/s); "
              f"row-by-row INSERT {base_row * 1e6:.0f} µs/row -> {base_row * len(nos):.1f} s extrapolated; "
              f"ratio {base_row * len(nos) / t_import:.1f}x")
        bad = r["rows"] != len(nos)
        t0 = time.perf_counter()
        s = prepay.run(work, DAY)
        t_run = time.perf_counter() - t0
        per_row, expect = _baseline_prepay(work, sample)
        print(f"(b) prepay run {s['customers']:,} customers ({s['read']:,} read, {s['charged_fen'] / 100:,.2f} yuan, "
              f"{s['reminders']:,} reminders, {s['trips']:,} trips): {t_run:.2f} s; per-customer loop "
              f"{per_row * 1e6:.0f} µs/customer -> {per_row * s['customers']:.1f} s extrapolated; "
              f"ratio {per_row * s['customers'] / t_run:.1f}x")
        with ledger.Reader(work) as rd:
            got = dict(rd.con.execute("SELECT customer_id, debit_fen FROM ledger_entries WHERE kind = 'prepay_charge'"
                                      ).fetchall())
        diff = [c for c, fen in expect.items() if got.get(c, 0) != fen]
        if diff:
            print(f"DISAGREE: customer {diff[0]}: run {got.get(diff[0], 0)} fen, per-customer {expect[diff[0]]} fen")
        t0 = time.perf_counter()
        ledger.check(work)
        print(f"ledger check over {len(nos):,} customers: {time.perf_counter() - t0:.2f} s")
        targets = t_import < 10 and t_run < 10
        print(f"targets (< 10 s each): {'met' if targets else 'NOT met'}")
        return 1 if (diff or bad) else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

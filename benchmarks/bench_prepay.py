"""Prepayment and ledger: the daily prepay run and a bank-file payment import, at scale.

    python benchmarks/bench_prepay.py [--quick] [--customers N] [--cache DIR]

Full mode uses 1M customers, every one made a prepayment customer (``UPDATE customers SET prepaid``
on a copy of the generated archive; the lake is the generated one, shared read-only).  The fleet is
generated once into --cache (default /tmp/gridhead-bench-billrun-<N>, the bill-run benchmark's cache);
--quick uses 3k customers in a temp dir.  Measured, in one process:

(a) ``gridhead pay import`` of a bank CSV with one payment per customer (parse, validate every row,
    duplicate references, one transaction with running balances) — target < 10 s for 1M rows — against
    the baseline of row-by-row INSERT of a sample (one statement per payment), extrapolated;
(c) sending 1,000 trip commands from the outbox through the real sender (headend.prepay_control, HTTP
    on 127.0.0.1 to a stub answering ``ok`` — the head-end's own work is not measured here) — target < 3 s —
    against the baseline of one transaction per command (how outcomes were recorded before issue 17);
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
from gridhead.billing_core import engine, prepay as P  # noqa: E402
from gridhead.billing_core.run import voltage_level  # noqa: E402
from gridhead.billing_core.tariff import TariffSet  # noqa: E402
from gridhead.billing_core.jobs import ledger, prepay  # noqa: E402

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
            con.execute("INSERT INTO t (entry_id, customer_id, kind, debit_fen, credit_fen, balance_after_fen, period, value_date, key, who, ts_utc, note, batch) VALUES (?, ?, 'payment', 0, 1000, ?, '2026-06', DATE '2026-06-05', ?, 'b', "
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
            con.execute("INSERT INTO p (entry_id, customer_id, kind, debit_fen, credit_fen, balance_after_fen, period, value_date, key, who, ts_utc, note, batch) VALUES (?, ?, 'prepay_charge', ?, 0, 0, '2026-06', ?, ?, 'b', now(), NULL, 'x')",
                        [j + 1, int(c["customer_id"][i]), fen, DAY, f"prepay:{int(c['customer_id'][i])}:{DAY}"])
        return (time.perf_counter() - t0) / sample, out


_STUB = """
import http.server, json, sys

class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        out = json.dumps({"outcome": "ok", "client_id": body["client_id"], "readback": {"relay_open": True}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def _stub_api():
    """A stub of the control API on 127.0.0.1, in its own process as the head-end is, answering every
    command ``ok``; returns (process, url)."""
    import subprocess
    p = subprocess.Popen([sys.executable, "-c", _STUB], stdout=subprocess.PIPE, text=True)
    return p, f"http://127.0.0.1:{p.stdout.readline().strip()}"


def _outbox(work: pathlib.Path, n: int, tag: str) -> None:
    """``n`` trip commands in the outbox (the first n customers), as a run writes them."""
    with prepay._open(work) as w:
        w.con.execute(f"""INSERT INTO prepay_commands SELECT 'bench-{tag}-' || customer_id, customer_id, customer_id,
                          'disconnect', 'bench', DATE '2026-06-10', now() FROM customers ORDER BY customer_id LIMIT {n}""")


def _dispatch(work: pathlib.Path, n: int) -> tuple[float, float, float, float]:
    """(c): seconds (wall, CPU) to send n commands now, per command one transaction each (the old way,
    extrapolated from 50), and n commands with the head-end down (all recorded unreachable)."""
    from gridhead.headend.prepay_control import sender
    srv, url = _stub_api()
    try:
        send = sender(url, "bench")
        _outbox(work, n, "new")
        t0, c0 = time.perf_counter(), time.process_time()
        out = prepay.dispatch(work, send)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert out == {"ok": n}, out
        _outbox(work, n, "down")                       # the head-end down: connection refused, all stay pending
        import socket
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
        sock.close()
        t0 = time.perf_counter()
        out = prepay.dispatch(work, sender(f"http://127.0.0.1:{closed}", "bench"))
        down = time.perf_counter() - t0
        assert out == {"unreachable": n}, out
        with prepay._open(work) as w:                   # (not left pending for the old-way loop below)
            w.con.execute("INSERT INTO prepay_events SELECT now(), NULL, customer_id, 'command_abandoned', NULL, 'bench', "
                          "command_id, NULL FROM prepay_commands WHERE command_id LIKE 'bench-down-%'")
        _outbox(work, 50, "old")                        # the old loop: send, then open + one transaction each
        t0 = time.perf_counter()
        for cmd in prepay.pending(work):
            send({"command_id": cmd["command_id"], "action": "disconnect", "target": str(cmd["meter_id"]),
                  "reason": "bench"})
            prepay._record(work, [cmd], [{"outcome": "ok"}], P.PrepayThresholds(), {})
        old = (time.perf_counter() - t0) / 50 * n
        return wall, cpu, old, down
    finally:
        srv.terminate()
        srv.wait()


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
        t0, c0 = time.perf_counter(), time.process_time()
        r = ledger.import_payments(work, bank, "bench")
        t_import, cpu_import = time.perf_counter() - t0, time.process_time() - c0
        base_row = _baseline_insert(work, sample, nos)
        print(f"(a) pay import {r['rows']:,} rows: {t_import:.2f} s, {cpu_import:.2f} CPU-s "
              f"({r['rows'] / t_import:,.0f} rows/s); "
              f"row-by-row INSERT {base_row * 1e6:.0f} µs/row -> {base_row * len(nos):.1f} s extrapolated; "
              f"ratio {base_row * len(nos) / t_import:.1f}x")
        bad = r["rows"] != len(nos)
        t0, c0 = time.perf_counter(), time.process_time()
        s = prepay.run(work, DAY)
        t_run, cpu_run = time.perf_counter() - t0, time.process_time() - c0
        per_row, expect = _baseline_prepay(work, sample)
        print(f"(b) prepay run {s['customers']:,} customers ({s['read']:,} read, {s['charged_fen'] / 100:,.2f} yuan, "
              f"{s['reminders']:,} reminders, {s['trips']:,} trips): {t_run:.2f} s, {cpu_run:.2f} CPU-s; per-customer loop "
              f"{per_row * 1e6:.0f} µs/customer -> {per_row * s['customers']:.1f} s extrapolated; "
              f"ratio {per_row * s['customers'] / t_run:.1f}x")
        with ledger.Reader(work) as rd:
            got = dict(rd.con.execute("SELECT customer_id, debit_fen FROM ledger_entries WHERE kind = 'prepay_charge'"
                                      ).fetchall())
        diff = [c for c, fen in expect.items() if got.get(c, 0) != fen]
        t_send, cpu_send, old_send, t_down = _dispatch(work, 1_000)
        print(f"(c) 1,000 trip commands sent over HTTP and recorded: {t_send:.2f} s ({cpu_send:.2f} CPU-s in this "
              f"process); one transaction per command -> {old_send:.1f} s extrapolated; ratio {old_send / t_send:.1f}x; "
              f"head-end down (connection refused, all kept pending): {t_down:.2f} s")
        if diff:
            print(f"DISAGREE: customer {diff[0]}: run {got.get(diff[0], 0)} fen, per-customer {expect[diff[0]]} fen")
        t0 = time.perf_counter()
        ledger.check(work)
        print(f"ledger check over {len(nos):,} customers: {time.perf_counter() - t0:.2f} s")
        targets = t_import < 10 and t_run < 10 and t_send < 3
        print(f"targets (< 10 s import and run, < 3 s for 1,000 commands): {'met' if targets else 'NOT met'}")
        return 1 if (diff or bad) else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

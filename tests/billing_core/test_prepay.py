"""Prepayment (预付费): daily deduction by the bill kernel, idempotent per date, the monthly true-up,
thresholds (reminder, trip after the grace period, never 保电, reconnect on payment), SIGKILL atomicity."""

import datetime as dt
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from gridhead.billing_core import prepay as P
from gridhead.billing_core.jobs import bills, ledger, prepay

from tests.conftest import generated

ROOT = pathlib.Path(__file__).resolve().parents[2]
JUNE = [dt.date(2026, 6, d) for d in range(1, 31)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    d = tmp_path_factory.mktemp("prepay")
    generated(d, 40, 31, seed=9)
    bills.run(d, "2026-06")
    return d


def _copy(fleet, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(fleet, d)
    return d


def _prepaid(d):
    return [x for x in ledger.balances(d).to_pylist() if x["prepaid"]]


def _count(d, sql):
    with ledger.Reader(d) as r:
        return r.con.execute(sql).fetchone()


def test_decide_thresholds_by_hand():
    t = P.PrepayThresholds(warn_fen=500, grace_days=2, reconnect_fen=0)
    day = 100
    credit = [1000, 400, -1, -1, -1, 50, -5]
    since = [P.NO_DAY, P.NO_DAY, P.NO_DAY, 98, 98, P.NO_DAY, 90]
    warned = [False, False, True, True, True, True, True]
    tripped = [False, False, False, False, False, True, True]
    prot = [False, False, False, False, True, False, False]
    d = P.decide(credit, since, warned, tripped, prot, day, t)
    assert d["remind"].tolist() == [False, True, False, False, False, False, False]
    assert d["below_since"].tolist() == [P.NO_DAY, P.NO_DAY, 100, 98, 98, P.NO_DAY, 90]
    assert d["trip"].tolist() == [False, False, False, True, False, False, False]
    assert d["trip_protected"].tolist() == [False, False, False, False, True, False, False]
    assert d["close"].tolist() == [False, False, False, False, False, True, False]


def test_daily_deduction_is_the_kernel_on_the_day_energy_and_idempotent(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    pre = _prepaid(d)
    first = prepay.run(d, JUNE[0])
    assert first["customers"] == len(pre) and first["read"] > 0 and first["charged_fen"] > 0
    entries = _count(d, "SELECT count(*), sum(debit_fen) FROM ledger_entries WHERE kind = 'prepay_charge'")
    assert entries[1] == first["charged_fen"]
    again = prepay.run(d, JUNE[0])
    assert again["repeated"] and again["charged_fen"] == first["charged_fen"]
    assert _count(d, "SELECT count(*), sum(debit_fen) FROM ledger_entries WHERE kind = 'prepay_charge'") == entries
    # one residential flat-rate day by hand: energy of the two daily freezes × price, rounded once
    r = _count(d, "SELECT customer_id, debit_fen FROM ledger_entries WHERE kind = 'prepay_charge' ORDER BY 1 LIMIT 1")
    assert r[1] > 0
    ledger.check(d)


def test_month_true_up_reverses_deductions_against_the_bill(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    for day in JUNE:
        prepay.run(d, day)
    charged = _count(d, "SELECT sum(debit_fen) FROM ledger_entries WHERE kind = 'prepay_charge'")[0]
    r = ledger.post_bills(d, "2026-06")
    assert r["trueup_fen"] == -charged
    b = bills.read_bills(d, "2026-06").to_pylist()
    total = {x["customer_id"]: x["total_fen"] for x in b if x["status"] != "held"}
    for x in _prepaid(d):
        assert x["balance_fen"] == total.get(x["customer_id"], 0)       # the month costs the bill, no more
    # the month-end estimate is close to the bill for prepaid customers (same kernel; tiers are annual)
    est = _count(d, "SELECT sum(-debit_fen) FROM ledger_entries WHERE kind = 'prepay_trueup'")[0]
    bill_sum = sum(total[x["customer_id"]] for x in _prepaid(d) if x["customer_id"] in total)
    assert abs(est - bill_sum) <= 0.05 * bill_sum
    # a day of an already posted month is not deducted again
    assert prepay.run(d, dt.date(2026, 6, 30))["repeated"]
    ledger.check(d)


def test_reminder_trip_after_grace_and_reconnect_on_payment(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    pre = _prepaid(d)
    rich, poor = pre[0], pre[1]
    ledger.add_entry(d, rich["customer_no"], "payment", 1_000_000, "cashier")
    ledger.add_entry(d, poor["customer_no"], "payment", 2_100, "cashier")     # just above the 20 yuan warning
    t = P.PrepayThresholds(warn_fen=2_000, grace_days=1)
    sent = []

    def send(spec):                                   # what the control API answers for a meter online
        sent.append(spec)
        return {"outcome": "ok", "readback": {"relay": "open" if spec["action"] == "disconnect" else "closed"}}

    days = iter(JUNE)
    while True:
        day = next(days)
        prepay.run(d, day, t, send=send)
        st = {x["customer_no"]: x for x in prepay.status(d)["customers"].to_pylist()}
        if st[poor["customer_no"]]["tripped"]:
            break
    assert not st[rich["customer_no"]]["tripped"] and not st[rich["customer_no"]]["reminded"]
    with ledger.Reader(d) as r:
        ev = r.con.execute("SELECT event, day, credit_fen, who FROM prepay_events WHERE customer_id = $c "
                           "ORDER BY ts_utc", {"c": poor["customer_id"]}).fetchall()
    kinds = [e[0] for e in ev]
    assert kinds.index("reminder") < kinds.index("trip")
    trip = ev[kinds.index("trip")]
    below = st[poor["customer_no"]]["below_zero_since"]
    assert (trip[1] - below).days >= t.grace_days and trip[2] < 0 and trip[3] == prepay.SYSTEM
    assert [s["action"] for s in sent if s["customer_no"] == poor["customer_no"]] == ["disconnect"]
    assert sent[-1]["reason"] == "prepayment balance exhausted"
    assert prepay.pending(d) == []
    # the payment brings the credit back: reconnect at once
    owed = -st[poor["customer_no"]]["credit_fen"]
    ledger.add_entry(d, poor["customer_no"], "payment", owed + 5_000, "cashier")
    r = prepay.after_payment(d, [poor["customer_id"]], t, send=send)
    assert r["closes"] == 1 and r["dispatched"] == {"ok": 1}
    assert sent[-1]["action"] == "reconnect" and sent[-1]["command_id"] != sent[-2]["command_id"]
    st = {x["customer_no"]: x for x in prepay.status(d)["customers"].to_pylist()}
    assert not st[poor["customer_no"]]["tripped"]


def test_protected_trip_refused_and_commands_wait_without_a_head_end(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    t = P.PrepayThresholds(warn_fen=2_000, grace_days=0)
    r = prepay.run(d, JUNE[0], t)                      # no head-end: every trip waits in the outbox
    assert r["trips"] > 0 and len(prepay.pending(d)) == r["trips"]
    out = prepay.dispatch(d, lambda spec: {"outcome": "refused", "error": "meter protected (保电)"})
    assert out == {"refused": r["trips"]} and prepay.pending(d) == []
    st = prepay.status(d)["customers"].to_pylist()
    assert not any(x["tripped"] for x in st)               # a refused trip leaves the customer untripped


_RUN = """
import sys, datetime as dt
from gridhead.billing_core.jobs import prepay
print("go", flush=True)
for day in range(1, 31):
    prepay.run(sys.argv[1], dt.date(2026, 6, day))
print("done", flush=True)
"""


def test_sigkill_during_prepay_runs_leaves_whole_days(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    rng = random.Random(3)
    for attempt in range(3):
        p = subprocess.Popen([sys.executable, "-c", _RUN, str(d)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "go"
        time.sleep(rng.uniform(0.2, 2.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
        with ledger.Reader(d) as r:
            if not r.con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'prepay_runs'").fetchone()[0]:
                continue
            runs = r.con.execute("SELECT day, charged_fen FROM prepay_runs ORDER BY day").fetchall()
            per_day = dict(r.con.execute("SELECT value_date, sum(debit_fen) FROM ledger_entries "
                                         "WHERE kind = 'prepay_charge' GROUP BY 1").fetchall())
        for day, charged in runs:                     # every recorded day has all its entries, no other day any
            assert per_day.get(day, 0) == charged
        assert set(per_day) <= {day for day, _ in runs}
        ledger.check(d)
    for day in JUNE:                                  # the rest runs; days done are not deducted again
        prepay.run(d, day)
    with ledger.Reader(d) as r:
        assert r.con.execute("SELECT count(DISTINCT day), count(*) FROM prepay_runs").fetchone() == (30, 30)
        assert r.con.execute("SELECT count(*) FROM (SELECT key FROM ledger_entries WHERE key IS NOT NULL "
                             "GROUP BY key HAVING count(*) > 1)").fetchone()[0] == 0
    ledger.check(d)


def test_cli_prepay_run_and_status(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    cli = [sys.executable, "-m", "gridhead.cli"]
    r = subprocess.run(cli + ["prepay", "run", "--date", "2026-06-01", "--json", "--data", str(d)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r2 = subprocess.run(cli + ["prepay", "run", "--date", "2026-06-01", "--data", str(d)], cwd=ROOT,
                        capture_output=True, text=True)
    assert r2.returncode == 0 and "(already run)" in r2.stdout
    s = subprocess.run(cli + ["prepay", "status", "--json", "--data", str(d)], cwd=ROOT, capture_output=True, text=True)
    assert s.returncode == 0 and '"last_run": "2026-06-01"' in s.stdout
    bad = subprocess.run(cli + ["prepay", "run", "--date", "2026-06-01", "--warn-yuan", "x", "--data", str(d)],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_annual_tiers_count_the_year_before_the_day(fleet, tmp_path):
    """With annual tiers (年阶梯) small enough to be crossed in June, each day is priced on the energy of
    the year before it (billing_core.jobs.prepay._year_to_date: the previous bill's cum_after — none here — plus
    June 1 to the day), so the month's daily estimates add up to the June bill within a fen or two per
    day; priced from zero every day, they would miss the tier increments by yuan."""
    d = _copy(fleet, tmp_path)
    tariffs = tmp_path / "tariffs"
    shutil.copytree(ROOT / "billing_core" / "tariffs", tariffs)
    t = (tariffs / "residential.toml").read_text()
    assert "tier_limits_kwh = [2760, 4800]" in t
    (tariffs / "residential.toml").write_text(t.replace("tier_limits_kwh = [2760, 4800]", "tier_limits_kwh = [20, 40]"))
    shutil.rmtree(d / "bills")
    bills.run(d, "2026-06", tariffs_dir=tariffs)
    for day in JUNE:
        prepay.run(d, day, tariffs_dir=tariffs)
    est = dict(_count_all(d, "SELECT customer_id, sum(debit_fen) FROM ledger_entries WHERE kind = 'prepay_charge' "
                             "GROUP BY 1"))
    b = [x for x in bills.read_bills(d, "2026-06").to_pylist()
         if x["category"] == "residential" and x["customer_id"] in est and x["status"] != "held"]
    crossed = [x for x in b if x["tier3_fen"] > 0]
    assert crossed, "no prepaid residential customer crossed the tiers: the test shows nothing"
    for x in b:
        assert abs(est[x["customer_id"]] - x["total_fen"]) <= 2 * len(JUNE), (x["customer_id"], est[x["customer_id"]],
                                                                             x["total_fen"], x["tier3_fen"])


def _count_all(d, sql):
    with ledger.Reader(d) as r:
        return r.con.execute(sql).fetchall()


def test_year_to_date_starts_from_the_latest_bill_of_the_year(fleet, tmp_path):
    """On July 1 the year before the day is exactly the June bill's cum_after (its period ends there)."""
    d = _copy(fleet, tmp_path)
    day = dt.date(2026, 7, 1)
    with prepay._open(d) as w:
        c = prepay._customers(w, day)
        cum, start = prepay._year_start(w, d, c["customer_id"].astype("int64"), day)
        now, _ = prepay._readings(w, d, c["meter_id"].astype("int64"), day)
        ytd = prepay._year_to_date(c, cum, start, {}, now)
    assert set(start.tolist()) == {day}                              # the June bill's period ends today
    june = {x["customer_id"]: x["cum_after_kwh_x100"] for x in bills.read_bills(d, "2026-06").to_pylist()}
    got = dict(zip(c["customer_id"].tolist(), ytd.tolist()))
    assert any(june.get(k, 0) > 0 for k in got)
    assert got == {k: june.get(k, 0) for k in got}


def test_a_broken_earlier_bill_is_one_line_and_nothing_is_deducted(fleet, tmp_path):
    """The year-to-date reads the year's earlier bills: a corrupt one stops the day before any write."""
    d = _copy(fleet, tmp_path)
    bad = d / "bills" / "period=2026-05" / "bills.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not parquet")
    r = subprocess.run([sys.executable, "-m", "gridhead.cli", "prepay", "run", "--date", "2026-06-10", "--data", str(d)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.count("\n") <= 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: prepay 2026-06-10: reading ") and "period=2026-05" in r.stderr
    assert _count(d, "SELECT count(*) FROM ledger_entries WHERE kind = 'prepay_charge'")[0] == 0
    assert _count(d, "SELECT count(*) FROM prepay_runs")[0] == 0


# --- issue 17 -------------------------------------------------------------------------------------------
def _closed_port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                         # nothing listens there: connection refused
    return port


def test_a_trip_that_never_reached_the_head_end_is_retried_then_alarmed(fleet, tmp_path):
    """Defect 2: with the control API unreachable the trips stay pending (not "tripped"), are sent again
    by the next run, and after `send_attempts` failures raise an alarm; the next run orders them again.
    Only a trip the head-end confirmed makes the customer "tripped"."""
    from gridhead.headend.prepay_control import sender
    d = _copy(fleet, tmp_path)
    t = P.PrepayThresholds(warn_fen=2_000, grace_days=0, send_attempts=3)
    down = sender(f"http://127.0.0.1:{_closed_port()}", "token", timeout_s=2)
    r = prepay.run(d, JUNE[0], t, send=down)
    n = r["trips"]
    assert n > 0 and r["dispatched"] == {"unreachable": n}
    st = prepay.status(d)["customers"].to_pylist()
    assert not any(x["tripped"] for x in st) and sum(x["trip_pending"] for x in st) == n
    assert len(prepay.pending(d)) == n and {x["attempts"] for x in prepay.pending(d)} == {1}
    r = prepay.run(d, JUNE[1], t, send=down)            # the next run sends them again (and decides no new trip)
    assert r["trips"] == 0 and r["dispatched"] == {"unreachable": n}
    r = prepay.run(d, JUNE[2], t, send=down)            # third failure: abandoned, alarmed
    assert r["dispatched"] == {"unreachable": n, "abandoned": n}
    assert prepay.pending(d) == [] and prepay.status(d)["alarms"] == n
    sent = []

    def up(spec):
        sent.append(spec)
        return {"outcome": "ok", "readback": {"relay_open": True}}

    r = prepay.run(d, JUNE[3], t, send=up)              # ordered again, and now confirmed
    assert r["trips"] == n and r["dispatched"] == {"ok": n}
    assert all(s["command_id"].startswith(f"prepay-{JUNE[3]}-disconnect-") for s in sent)
    st = prepay.status(d)["customers"].to_pylist()
    assert sum(x["tripped"] for x in st) == n and not any(x["trip_pending"] for x in st)


def test_a_trip_the_meter_did_not_answer_is_ordered_again(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    t = P.PrepayThresholds(warn_fen=2_000, grace_days=0)
    r = prepay.run(d, JUNE[0], t, send=lambda spec: {"outcome": "failed", "error": "no answer from the meter"})
    assert r["trips"] > 0 and r["dispatched"] == {"failed": r["trips"]}
    assert not any(x["tripped"] or x["trip_pending"] for x in prepay.status(d)["customers"].to_pylist())
    assert prepay.run(d, JUNE[1], t)["trips"] == r["trips"]          # not forgotten: ordered the next day


def test_dispatch_writes_outcomes_per_chunk_not_per_command(fleet, tmp_path, monkeypatch):
    """Defect 3: one transaction per command made 429 commands take 53 s; outcomes are now written a
    chunk at a time (the time for 1,000 commands is in benchmarks/bench_prepay.py)."""
    d = _copy(fleet, tmp_path)
    t = P.PrepayThresholds(warn_fen=2_000, grace_days=0)
    n = prepay.run(d, JUNE[0], t)["trips"]
    assert n > 3
    opened = []
    real = prepay._open
    monkeypatch.setattr(prepay, "_open", lambda data: opened.append(1) or real(data))
    out = prepay.dispatch(d, lambda spec: {"outcome": "ok"}, t, chunk=max(1, n // 2))
    assert out == {"ok": n} and len(opened) <= 1 + 3        # the outbox read, then ≤ 3 chunks (not 1 + n)


def test_cli_asks_before_sending_many_trips(fleet, tmp_path):
    """Defect 5: more trips than --confirm-above are summarised and need a yes; declined, nothing is sent."""
    import json as _json
    d = _copy(fleet, tmp_path)
    url = f"http://127.0.0.1:{_closed_port()}"
    from click.testing import CliRunner

    from gridhead.cli import cli as group
    cli = ["prepay", "run", "--grace-days", "0", "--confirm-above", "1", "--api", url,
           "--data", str(d)]

    def run(args, **kw):                               # in process: no interpreter start per call
        x = CliRunner(env={"GRIDHEAD_TOKEN": "x"}).invoke(group, args, **kw)
        return subprocess.CompletedProcess(args, x.exit_code, x.stdout, x.stderr)
    r = run(cli + ["--date", "2026-06-01"], input="n\n")
    assert r.returncode == 1, r.stderr
    assert "trip commands are waiting to be sent" in r.stderr and "stay in the outbox" in r.stderr
    assert prepay.pending(d) and all(x["attempts"] == 0 for x in prepay.pending(d))       # nothing was sent
    r = run(cli + ["--date", "2026-06-02", "--yes", "--json"])
    assert r.returncode == 0, r.stderr
    assert _json.loads(r.stdout)["dispatched"]["unreachable"] == len(prepay.pending(d))
    s = run(["prepay", "status", "--limit", "2", "--data", str(d)])
    assert s.returncode == 0 and s.stdout.startswith("last run 2026-06-02;") and "trips not yet confirmed" in s.stdout
    assert "more (--limit 0 lists all)" in s.stdout

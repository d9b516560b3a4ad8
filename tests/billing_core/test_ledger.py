"""The ledger (电费收缴及账务): posting bills, payments, refunds, adjustments; the balance identity; arrears
with 第九十八条 late fees; all-or-nothing bank import, also under SIGKILL; the finance export; the CLI."""

import csv
import datetime as dt
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gridhead.billing_core import ledger as L
from gridhead.billing_core.jobs import bills, ledger

from tests.conftest import generated

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """60 customers, June 2026 billed (a prepayment flag on half the residential ones)."""
    d = tmp_path_factory.mktemp("ledger")
    generated(d, 60, 31, seed=5)
    bills.run(d, "2026-06")
    return d


def _copy(fleet, tmp_path) -> pathlib.Path:
    d = tmp_path / "d"
    shutil.copytree(fleet, d)
    return d


def _nos(d) -> list[str]:
    return ledger.balances(d).column("customer_no").to_pylist()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "gridhead.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


# --- array rules by hand -------------------------------------------------------------------------------
def test_running_balance_by_hand():
    out = L.running_balance([7, 3, 7, 3, 7], [100, 50, -30, 5, 1], [10, 0, 10, 0, 10])
    assert out.tolist() == [110, 50, 80, 55, 81]


def test_outstanding_fifo_pays_the_oldest_first():
    out = L.outstanding_fifo([1, 1, 1, 2], [100, 200, 300, 50], [250, 250, 250, 0])
    assert out.tolist() == [0, 50, 300, 50]


def test_late_fee_rule_98_by_hand():
    due = L.days_of(dt.date(2026, 12, 20))
    asof = L.days_of(dt.date(2027, 1, 10))           # 11 days in 2026 (21..31 Dec), 10 days in 2027
    # residential 1‰ a day throughout: 10000 × 21 / 1000 = 210 fen
    assert L.late_fee([10_000], [due], asof, [True]).tolist() == [210]
    # others: 2‰ × 11 days + 3‰ × 10 days = 52‰ of 10000 = 520 fen
    assert L.late_fee([10_000], [due], asof, [False]).tolist() == [520]
    # rounded once, half away from zero: 333 × 1‰ × 3 = 0.999 → 1 fen; 166 × 3 ‰ = 0.498 → 0
    assert L.late_fee([333, 166], [due, due], due + 3, [True, True]).tolist() == [1, 0]
    assert L.late_fee([10_000], [due], due, [False]).tolist() == [0]      # due today: not late


def test_aging_buckets_and_amounts():
    assert L.aging_bucket([0, 1, 30, 31, 365, 366]).tolist() == [-1, 0, 0, 1, 3, 4]
    assert [L.yuan_to_fen(s) for s in ("12", "12.3", "12.30", "0.05", "1.234", "-1", "1e3", "")] == \
        [1200, 1230, 1230, 5, None, None, None, None]


# --- posting and the identity ----------------------------------------------------------------------------
def test_posting_is_idempotent_and_check_proves_the_identity(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    first = ledger.post_bills(d, "2026-06", "alice")
    issued = bills.summary(d, "2026-06")
    assert first["posted"] == issued["issued"] + issued["released"]
    assert first["receivable_fen"] == issued["issued_fen"]
    again = ledger.post_bills(d, "2026-06", "alice")
    assert again["posted"] == 0 and again["skipped"] == first["posted"]
    no = _nos(d)[0]
    paid = {x["customer_no"]: x for x in ledger.balances(d).to_pylist()}[no]["balance_fen"] + 5_000
    ledger.add_entry(d, no, "payment", paid, "bob", ref="R-1")
    with pytest.raises(ledger.LedgerError, match="already posted"):
        ledger.add_entry(d, no, "payment", paid, "bob", ref="R-1")
    ledger.add_entry(d, no, "refund", 700, "bob", note="overpaid", payment="R-1")     # 50 yuan in hand
    ledger.add_entry(d, no, "adjust", -300, "carol", note="meter test credit")
    r = ledger.check(d)
    assert r["ok"] and r["bills_checked"] == first["posted"]
    b = {x["customer_no"]: x for x in ledger.balances(d).to_pylist()}
    assert b[no]["balance_fen"] == b[no]["receivable_fen"] - b[no]["received_fen"]
    assert b[no]["received_fen"] == paid - 700


def test_check_names_the_customer_whose_balance_is_wrong(fleet, tmp_path):
    import duckdb
    d = _copy(fleet, tmp_path)
    ledger.post_bills(d, "2026-06")
    with duckdb.connect(str(d / "archive.duckdb")) as con:      # tamper with the file as an intruder would
        cid, no = con.execute("SELECT e.customer_id, c.customer_no FROM ledger_entries e JOIN customers c "
                              "USING (customer_id) ORDER BY entry_id LIMIT 1").fetchone()
        con.execute("UPDATE ledger_entries SET debit_fen = debit_fen + 1 WHERE customer_id = $c", {"c": cid})
    with pytest.raises(ledger.LedgerError, match=f"customer {no} "):
        ledger.check(d)
    r = _cli("ledger", "check", "--data", str(d))
    assert r.returncode == 1 and f"customer {no}" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["bill", "payment", "refund", "adjust"]), st.integers(0, 9),
                              st.integers(1, 10 ** 7)), min_size=1, max_size=25))
def test_balance_identity_after_random_sequences(fleet, tmp_path_factory, ops):
    d = tmp_path_factory.mktemp("prop")
    shutil.copy(fleet / "archive.duckdb", d / "archive.duckdb")
    nos = _nos(d)[:10]
    model, refs = {}, {}
    with ledger.Writer(d) as w:
        ids = w.customer_ids(nos)
    for k, (kind, who, amount) in enumerate(ops):
        no = nos[who]
        if kind == "bill":                        # a receivable as post_bills writes it (same append path)
            with ledger.Writer(d) as w:
                w.append({"customer_id": np.array([ids[who]]), "kind": "bill", "debit_fen": np.array([amount]),
                          "credit_fen": np.array([0]), "period": "2026-06", "value_date": dt.date(2026, 7, 16),
                          "key": np.array([f"bill:test{k}"], dtype=object), "note": None}, "prop", f"b{k}")
            delta = amount
        elif kind == "adjust":
            ledger.add_entry(d, no, "adjust", amount if k % 2 else -amount, "prop", note="property")
            delta = amount if k % 2 else -amount
        elif kind == "refund":                    # of the customer's last payment; refused above the credit in hand
            last = refs.get(no)
            try:
                ledger.add_entry(d, no, "refund", amount, "prop", note="p", payment=last or "none")
                delta = amount
                assert last is not None and model.get(no, 0) + amount <= 0
            except ledger.LedgerError:
                delta = 0
                assert last is None or model.get(no, 0) + amount > 0 or amount > paid_left(d, last)
        else:
            ledger.add_entry(d, no, kind, amount, "prop", ref=f"r{k}", note="p")
            refs[no] = f"r{k}"
            delta = -amount
        model[no] = model.get(no, 0) + delta
    ledger.check(d)
    got = {x["customer_no"]: x["balance_fen"] for x in ledger.balances(d).to_pylist()}
    for no in nos:
        assert got[no] == model.get(no, 0)


def paid_left(d, ref) -> int:
    """What is left of a payment to return, by sums over the raw rows (paid − refunded − settled)."""
    with ledger.Reader(d) as r:
        pid, paid = r.con.execute("SELECT entry_id, credit_fen FROM ledger_entries WHERE key = $k",
                                  {"k": f"counter:{ref}"}).fetchone()
        back = r.con.execute("SELECT coalesce(-sum(credit_fen), 0) FROM ledger_entries WHERE ref_entry_id = $p "
                             "AND kind = 'refund'", {"p": pid}).fetchone()[0]
        used = r.con.execute("SELECT coalesce(sum(amount_fen), 0) FROM ledger_allocations WHERE credit_entry_id = $p",
                             {"p": pid}).fetchone()[0]
    return paid - back - used


# --- arrears --------------------------------------------------------------------------------------------
def test_arrears_fifo_late_fees_and_prepaid_where_they_owe(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    ledger.post_bills(d, "2026-06")
    bal = [x for x in ledger.balances(d).to_pylist() if x["balance_fen"] > 0]
    res = next(x for x in bal if x["category"] == "residential" and not x["prepaid"])
    other = next(x for x in bal if x["category"] != "residential")
    ledger.add_entry(d, res["customer_no"], "payment", res["balance_fen"] - 1000, "bob",    # 10 yuan left
                     on=dt.date(2026, 7, 10))
    asof = dt.date(2026, 8, 15)                       # due 2026-07-16: 30 days late
    rows = {r["customer_no"]: r for r in ledger.arrears(d, asof).to_pylist()}
    assert rows[res["customer_no"]]["arrears_fen"] == 1000
    assert rows[res["customer_no"]]["days_late"] == 30 and rows[res["customer_no"]]["aging"] == "1-30"
    # 1000 × 1‰ × 30 = 30 fen, less than the 1 yuan minimum per overdue bill (总额不足1元者按1元收取)
    assert int(L.late_fee([1000], [L.days_of(dt.date(2026, 7, 16))], L.days_of(asof), [True])[0]) == 30
    assert rows[res["customer_no"]]["late_fee_fen"] == 100
    o = rows[other["customer_no"]]
    assert o["late_fee_fen"] == max(100, int(L.late_fee([other["balance_fen"]], [L.days_of(dt.date(2026, 7, 16))],
                                                        L.days_of(asof), [False])[0]))
    prepaid = {x["customer_no"] for x in bal if x["prepaid"]}
    assert prepaid and prepaid <= set(rows)           # prepayment customers owe their unpaid bills too
    assert all(rows[no]["prepaid"] for no in prepaid)
    assert not ledger.arrears(d, dt.date(2026, 7, 16)).num_rows          # nothing is late on the due date
    r = _cli("ledger", "arrears", "--as-of", "2026-08-15", "--csv", "--data", str(d))
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith('"customer_id"')
    assert len(r.stdout.splitlines()) == len(rows) + 1


def test_arrears_as_of_a_past_date_counts_payments_made_by_then(fleet, tmp_path):
    """Defect 4: a customer who paid on 07-25 is in arrears on 07-20 (and owes the late fee of 07-17..25)."""
    d = _copy(fleet, tmp_path)
    ledger.post_bills(d, "2026-06")
    c = next(x for x in ledger.balances(d).to_pylist() if x["balance_fen"] > 0 and not x["prepaid"])
    ledger.add_entry(d, c["customer_no"], "payment", c["balance_fen"], "bob", on=dt.date(2026, 7, 25))
    on20 = {r["customer_no"]: r for r in ledger.arrears(d, dt.date(2026, 7, 20)).to_pylist()}
    assert on20[c["customer_no"]]["arrears_fen"] == c["balance_fen"] and on20[c["customer_no"]]["days_late"] == 4
    on30 = {r["customer_no"]: r for r in ledger.arrears(d, dt.date(2026, 7, 30)).to_pylist()}
    late = on30[c["customer_no"]]                     # paid late: no arrears left, the late fee is still owed
    exact = L.late_fee([c["balance_fen"]], [L.days_of(dt.date(2026, 7, 16))], L.days_of(dt.date(2026, 7, 25)),
                       [c["category"] == "residential"])[0]
    assert late["arrears_fen"] == 0 and late["late_fee_fen"] == max(100, int(exact))


# --- bank import ----------------------------------------------------------------------------------------
def _bank(path, rows):
    path.write_text("ref,customer_no,amount_yuan,paid_on\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def test_bank_import_all_or_nothing_with_per_row_errors(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    nos = _nos(d)
    good = _bank(tmp_path / "good.csv", [(f"B{i}", nos[i], f"{i + 1}.5", "2026-07-20") for i in range(5)])
    bad = _bank(tmp_path / "bad.csv", [("X1", nos[0], "10", "2026-07-20"), ("X2", "9999999999", "10", "2026-07-20"),
                                       ("X3", nos[1], "1.234", "2026-07-20"), ("X1", nos[2], "3", "2026-13-01")])
    r = _cli("pay", "import", str(bad), "--data", str(d))
    assert r.returncode == 2          # bad input (README; issue 19)
    err = r.stderr.splitlines()
    assert f"{bad}:2: customer_no: '9999999999' is not a 户号 in the archive" in err
    assert f"{bad}:3: amount_yuan: '1.234' is not a positive amount in yuan with at most 2 decimals" in err
    assert f"{bad}:4: paid_on: '2026-13-01' is not a date YYYY-MM-DD" in err
    assert f"{bad}:4: ref: 'X1' repeated in the file" in err
    with ledger.Reader(d) as rd:
        assert not rd.has or rd.con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0] == 0
    r = _cli("pay", "import", str(good), "--json", "--data", str(d))
    assert r.returncode == 0, r.stderr
    assert '"rows": 5' in r.stdout and '"amount_fen": 1750' in r.stdout
    before = ledger.balances(d).to_pylist()
    r = _cli("pay", "import", str(good), "--data", str(d))
    assert r.returncode == 2 and f"{good}:1: ref: 'B0' already posted" in r.stderr
    assert ledger.balances(d).to_pylist() == before
    ledger.check(d)


_IMPORT = """
import sys
from gridhead.billing_core.jobs import ledger
print("go", flush=True)
ledger.import_payments(sys.argv[1], sys.argv[2], "crash-test")
print("done", flush=True)
"""


def test_sigkill_during_bank_import_leaves_all_or_nothing(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    nos = _nos(d)
    n = 30_000
    f = _bank(tmp_path / "big.csv", [(f"K{i}", nos[i % len(nos)], "1.01", "2026-07-20") for i in range(n)])
    rng = random.Random(7)
    outcomes = set()
    for attempt in range(4):
        p = subprocess.Popen([sys.executable, "-c", _IMPORT, str(d), str(f)], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)
        assert p.stdout.readline().strip() == "go"
        time.sleep(rng.uniform(0.0, 1.2))
        p.send_signal(signal.SIGKILL)
        p.wait()
        with ledger.Reader(d) as rd:
            cnt = rd.con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0] if rd.has else 0
        assert cnt in (0, n)
        outcomes.add(cnt)
        ledger.check(d)
        if cnt == n:
            break
    r = _cli("pay", "import", str(f), "--data", str(d))     # finish (or be refused whole if it had committed)
    with ledger.Reader(d) as rd:
        assert rd.con.execute("SELECT count(*), sum(credit_fen) FROM ledger_entries").fetchone() == (n, n * 101)
    assert r.returncode in (0, 2)       # 2: refused whole as already posted (bad input, issue 19)
    ledger.check(d)


def test_finance_export_adds_up(fleet, tmp_path):
    import pyarrow.parquet as pq
    d = _copy(fleet, tmp_path)
    ledger.post_bills(d, "2026-06")
    no = _nos(d)[3]
    ledger.add_entry(d, no, "payment", 1234, "bob", on=dt.date(2026, 6, 20))
    r = _cli("ledger", "export", "--period", "2026-06", "--out", str(tmp_path / "f.parquet"), "--format", "parquet",
             "--data", str(d))
    assert r.returncode == 0, r.stderr
    t = pq.read_table(tmp_path / "f.parquet").to_pydict()
    b = ledger.balances(d).to_pydict()
    assert sum(t["receivable_fen"]) == sum(b["receivable_fen"]) == bills.summary(d, "2026-06")["issued_fen"]
    assert sum(t["received_fen"]) == 1234
    assert sum(t["outstanding_fen"]) == sum(b["balance_fen"])
    assert sum(t["customers"]) == 60


# --- issue 17 -------------------------------------------------------------------------------------------
def _run(*args):
    """The CLI in this process (CliRunner): the same commands, exit codes and stderr lines as `_cli`,
    without an interpreter start per call."""
    import types

    from click.testing import CliRunner

    from gridhead.cli import cli
    r = CliRunner().invoke(cli, list(args))
    return types.SimpleNamespace(returncode=r.exit_code, stdout=r.stdout, stderr=r.stderr)


def test_impossible_dates_are_refused_not_rolled_over(fleet, tmp_path):
    """Defect 1: 2026-06-31 and 2026-02-30 are one line each naming file, row and column; nothing posted."""
    d = _copy(fleet, tmp_path)
    nos = _nos(d)
    f = _bank(tmp_path / "dates.csv", [("D1", nos[0], "10", "2026-06-30"), ("D2", nos[1], "10", "2026-06-31"),
                                       ("D3", nos[2], "10", "2026-02-30"), ("D4", nos[3], "10", "2024-02-29")])
    r = _run("pay", "import", str(f), "--data", str(d))
    assert r.returncode == 2
    assert f"{f}:2: paid_on: '2026-06-31' is not a date YYYY-MM-DD" in r.stderr.splitlines()
    assert f"{f}:3: paid_on: '2026-02-30' is not a date YYYY-MM-DD" in r.stderr.splitlines()
    assert ":1:" not in r.stderr and ":4:" not in r.stderr           # 06-30 and a leap day are dates
    with ledger.Reader(d) as rd:
        assert not rd.has or rd.con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0] == 0


def test_negative_adjustment_on_the_command_line(fleet, tmp_path):
    """Defect 6: `ledger adjust CUST -10.00` is a credit, as --help says."""
    d = _copy(fleet, tmp_path)
    no = _nos(d)[0]
    r = _run("ledger", "adjust", no, "-10.00", "--by", "carol", "--note", "meter test credit", "--json", "--data", str(d))
    assert r.returncode == 0, r.stderr
    assert '"amount_fen": -1000' in r.stdout and '"balance_fen": -1000' in r.stdout
    bad = _run("ledger", "adjust", no, "-1.234", "--by", "carol", "--note", "x", "--data", str(d))
    assert bad.returncode == 2 and "-1.234" in bad.stderr


def test_refunds_are_linked_and_never_above_the_credit_in_hand(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    ledger.post_bills(d, "2026-06")
    c = next(x for x in ledger.balances(d).to_pylist() if x["balance_fen"] > 0 and not x["prepaid"])
    p = ledger.add_entry(d, c["customer_no"], "payment", c["balance_fen"] + 2_000, "bob", on=dt.date(2026, 7, 1))
    assert p["receipt_no"] == f"R20260701-{p['entry_id']:08d}"
    with pytest.raises(ledger.LedgerError, match="credit on hand|left to return"):
        ledger.add_entry(d, c["customer_no"], "refund", 2_001, "bob", note="overpaid", payment=p["receipt_no"])
    with pytest.raises(ledger.LedgerError, match="names the payment"):
        ledger.add_entry(d, c["customer_no"], "refund", 100, "bob", note="overpaid")
    r = ledger.add_entry(d, c["customer_no"], "refund", 2_000, "bob", note="overpaid", payment=p["receipt_no"])
    assert r["balance_fen"] == 0
    with ledger.Reader(d) as rd:
        assert rd.con.execute("SELECT ref_entry_id, who, note FROM ledger_entries WHERE kind = 'refund'").fetchone() \
            == (p["entry_id"], "bob", "overpaid")
    with pytest.raises(ledger.LedgerError, match="credit on hand|left to return"):
        ledger.add_entry(d, c["customer_no"], "refund", 1, "bob", note="again", payment=p["receipt_no"])
    # a single payment above the limit is refused, at the counter and in a bank file
    with pytest.raises(ledger.LedgerError, match="single-payment limit"):
        ledger.add_entry(d, c["customer_no"], "payment", 99_999_999_999_999, "bob")
    f = _bank(tmp_path / "big.csv", [("H1", c["customer_no"], "999999999999.99", "2026-07-02")])
    r = _run("pay", "import", str(f), "--data", str(d))
    assert r.returncode == 2 and f"{f}:1: amount_yuan: '999999999999.99' is above the single-payment limit" in r.stderr


def test_late_fees_posted_allocated_first_and_waived(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    ledger.post_bills(d, "2026-06")
    c = next(x for x in ledger.balances(d).to_pylist()
             if x["balance_fen"] > 10_000 and x["category"] == "residential" and not x["prepaid"])
    other = next(x for x in ledger.balances(d).to_pylist() if x["balance_fen"] > 0 and not x["prepaid"]
                 and x["customer_no"] != c["customer_no"])
    ledger.add_entry(d, other["customer_no"], "payment", other["balance_fen"], "bob", on=dt.date(2026, 7, 26))
    r = ledger.post_late_fees(d, dt.date(2026, 8, 15), "finance")
    assert ledger.post_late_fees(d, dt.date(2026, 8, 15), "finance")["posted"] == 0        # idempotent
    with ledger.Reader(d) as rd:
        fees = dict(rd.con.execute("SELECT customer_id, debit_fen FROM ledger_entries WHERE kind = 'late_fee'").fetchall())
    assert len(fees) == r["posted"] and sum(fees.values()) == r["amount_fen"]
    assert fees[c["customer_id"]] == max(100, int(L.late_fee([c["balance_fen"]], [L.days_of(dt.date(2026, 7, 16))],
                                                             L.days_of(dt.date(2026, 8, 15)), [True])[0]))
    # paid late (07-26, ten days): owes the fee of those ten days
    assert fees[other["customer_id"]] == max(100, int(L.late_fee(
        [other["balance_fen"]], [L.days_of(dt.date(2026, 7, 16))], L.days_of(dt.date(2026, 7, 26)),
        [other["category"] == "residential"])[0]))
    # a payment of just the fee settles the fee first (late fee before its bill), stored as such
    fee = fees[c["customer_id"]]
    p = ledger.add_entry(d, c["customer_no"], "payment", fee, "bob", on=dt.date(2026, 8, 16))
    with ledger.Reader(d) as rd:
        got = rd.con.execute("SELECT e.kind, a.amount_fen FROM ledger_allocations a JOIN ledger_entries e "
                             "ON e.entry_id = a.debit_entry_id WHERE a.credit_entry_id = $p", {"p": p["entry_id"]}).fetchall()
    assert got == [("late_fee", fee)]
    # a waiver (减免) names who and why, is limited to the fee, and reduces what is owed
    oe = ledger.arrears(d, dt.date(2026, 8, 16), customer=other["customer_no"]).to_pylist()
    fee_row = next(x for x in oe if x["kind"] == "late_fee")
    with pytest.raises(ledger.LedgerError, match="not yet waived"):
        ledger.add_entry(d, other["customer_no"], "waiver", fee_row["arrears_fen"] + 1, "manager",
                         note="hardship", fee_entry=fee_row["entry_id"])
    with pytest.raises(ledger.LedgerError, match="needs its reason"):
        ledger.add_entry(d, other["customer_no"], "waiver", 50, "manager", fee_entry=fee_row["entry_id"])
    w = ledger.add_entry(d, other["customer_no"], "waiver", fee_row["arrears_fen"], "manager", note="hardship",
                         fee_entry=fee_row["entry_id"], on=dt.date(2026, 8, 16))
    assert w["balance_fen"] == 0
    assert not ledger.arrears(d, dt.date(2026, 8, 16), customer=other["customer_no"]).num_rows
    ledger.check(d)


def test_bank_files_as_banks_send_them(fleet, tmp_path):
    """GBK/GB18030 text, a batch header and trailer checked, a header-only file, the return file (回盘)."""
    d = _copy(fleet, tmp_path)
    nos = _nos(d)
    body = "ref,customer_no,amount_yuan,paid_on\n" + "".join(f"G{i},{nos[i]},{i + 1}.50,2026-07-20\n" for i in range(3))
    bad = tmp_path / "trailer.csv"
    bad.write_bytes(("H,批次20260720,3,7.50\n" + body + "T,3,9.00\n").encode("gbk"))
    r = _run("pay", "import", str(bad), "--data", str(d))
    assert r.returncode == 2 and f"{bad}:trailer: total 9.00, the rows add up to 7.50 yuan; nothing was imported" \
        in r.stderr
    cnt = tmp_path / "count.csv"
    cnt.write_bytes(("H,批次20260720,4,7.50\n" + body).encode("gbk"))
    r = _run("pay", "import", str(cnt), "--data", str(d))
    assert r.returncode == 2 and f"{cnt}:header: count 4, the file has 3 payment rows" in r.stderr
    with ledger.Reader(d) as rd:
        assert not rd.has or rd.con.execute("SELECT count(*) FROM ledger_entries").fetchone()[0] == 0
    good = tmp_path / "good.csv"
    good.write_bytes(("H,批次20260720,3,7.50\n" + body.replace("G0,", "G0,") + "T,3,7.50\n").encode("gb18030"))
    back = tmp_path / "good.ret"
    r = _run("pay", "import", str(good), "--return-file", str(back), "--json", "--data", str(d))
    assert r.returncode == 0, r.stderr
    assert '"rows": 3' in r.stdout and '"amount_fen": 750' in r.stdout and "批次20260720" in r.stdout
    ret = list(csv.reader(back.read_bytes().decode("gb18030").splitlines()))
    assert ret[0] == ["ref", "customer_no", "amount_yuan", "paid_on", "result", "receipt_no", "reason"]
    assert len(ret) == 4 and all(x[4] == "applied" and x[5].startswith("R20260720-") for x in ret[1:])
    # a refused file: the return file says per line what was refused and why, the rest not applied
    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes(("H,批次20260721,2,10.00\nref,customer_no,amount_yuan,paid_on\nM1,%s,5,2026-07-21\nM2,9999999999,5,2026-07-21\n"
                       % nos[5]).encode("gbk"))
    r = _run("pay", "import", str(mixed), "--return-file", str(tmp_path / "mixed.ret"), "--data", str(d))
    assert r.returncode == 2
    ret = list(csv.reader((tmp_path / "mixed.ret").read_bytes().decode("gbk").splitlines()))
    assert ret[1][4] == "not applied" and ret[2][4] == "refused" and "户号" in ret[2][6]
    # header only: "0 payments", nothing written
    empty = tmp_path / "empty.csv"
    empty.write_bytes("H,批次20260721,0,0\nref,customer_no,amount_yuan,paid_on\nT,0,0.00\n".encode("gbk"))
    r = _run("pay", "import", str(empty), "--data", str(d))
    assert r.returncode == 0 and "0 payments" in r.stdout
    # the receipt of the last payment
    r = _run("pay", "show", nos[2], "--data", str(d))
    assert r.returncode == 0 and "receipt R20260720-" in r.stdout and "3.50 yuan" in r.stdout
    ledger.check(d)


def test_cli_late_fees_waive_refund_and_arrears_summary(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    ledger.post_bills(d, "2026-06")
    c = next(x for x in ledger.balances(d).to_pylist() if x["balance_fen"] > 0 and not x["prepaid"])
    r = _run("ledger", "late-fees", "--as-of", "2026-08-15", "--late-fee-min-yuan", "2", "--json", "--data", str(d))
    assert r.returncode == 0, r.stderr
    with ledger.Reader(d) as rd:
        fee_id, fee = rd.con.execute("SELECT entry_id, debit_fen FROM ledger_entries WHERE kind = 'late_fee' "
                                     "AND customer_id = $c", {"c": c["customer_id"]}).fetchone()
        assert rd.con.execute("SELECT min(debit_fen) FROM ledger_entries WHERE kind = 'late_fee'").fetchone()[0] >= 200
    r = _run("ledger", "waive", c["customer_no"], ledger._yuan(fee), "--fee", str(fee_id), "--by", "manager-wang",
             "--note", "hardship", "--data", str(d))
    assert r.returncode == 0, r.stderr
    r = _run("pay", "add", c["customer_no"], ledger._yuan(c["balance_fen"] + 1_000), "--by", "counter1", "--data", str(d))
    assert r.returncode == 0 and "receipt R" in r.stdout
    receipt = r.stdout.split("receipt ")[1].split(",")[0]
    r = _run("pay", "refund", c["customer_no"], "10.01", "--payment", receipt, "--by", "counter1", "--note", "x",
             "--data", str(d))
    assert r.returncode == 1 and "10.00 yuan left to return" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _run("pay", "refund", c["customer_no"], "10.00", "--payment", receipt, "--by", "counter1", "--note", "x",
             "--data", str(d))
    assert r.returncode == 0 and "balance 0.00" in r.stdout, r.stderr
    r = _run("pay", "show", c["customer_no"], "--data", str(d))
    assert r.returncode == 0 and receipt in r.stdout and "refunded   10.00 yuan" in r.stdout and "settles    bill" in r.stdout
    r = _run("ledger", "arrears", "--as-of", "2026-08-20", "--limit", "3", "--data", str(d))
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[0].startswith("2026-08-20: ") and "owe" in lines[0]
    assert len(lines) == 1 + 1 + 3 + 1 and lines[-1].startswith("... ")
    assert c["customer_no"] in r.stdout                # on 08-20 it had not paid yet (it paid today)
    r = _run("ledger", "arrears", "--customer", c["customer_no"], "--data", str(d))
    first = r.stdout.splitlines()[0]                  # paid today, late: no arrears, the late fee since 08-15 is owed
    assert r.returncode == 0 and " owe 0.00 yuan on 1 receivables" in first and "not yet posted 0.00" not in first
    r = _run("ledger", "arrears", "--as-of", "2026-08-20", "--customer", "nobody", "--data", str(d))
    assert r.returncode == 1 and "nobody" in r.stderr


def test_a_ledger_from_before_allocations_is_settled_once_on_first_use(fleet, tmp_path):
    import duckdb
    d = _copy(fleet, tmp_path)
    c = ledger.balances(d).to_pylist()[0]
    with duckdb.connect(str(d / "archive.duckdb")) as con:      # the table as issue 9 wrote it: 13 columns
        con.execute("""CREATE TABLE ledger_entries (entry_id BIGINT NOT NULL, customer_id BIGINT NOT NULL,
            kind VARCHAR NOT NULL, debit_fen BIGINT NOT NULL, credit_fen BIGINT NOT NULL,
            balance_after_fen BIGINT NOT NULL, period VARCHAR NOT NULL, value_date DATE NOT NULL, key VARCHAR,
            who VARCHAR NOT NULL, ts_utc TIMESTAMPTZ NOT NULL, note VARCHAR, batch VARCHAR NOT NULL)""")
        con.execute("INSERT INTO ledger_entries VALUES (1, $c, 'bill', 5000, 0, 5000, '2026-06', DATE '2026-07-16', "
                    "'bill:x', 'b', now(), NULL, 'b1'), (2, $c, 'payment', 0, 3000, 2000, '2026-07', DATE '2026-07-10', "
                    "'counter:OLD', 'cashier', now(), NULL, 'p1')", {"c": c["customer_id"]})
    (d / "ledger.lock").touch()
    rows = ledger.arrears(d, dt.date(2026, 8, 1), customer=c["customer_no"]).to_pylist()
    assert [r["arrears_fen"] for r in rows] == [2000]
    rc = ledger.receipt(d, c["customer_no"])
    assert rc["receipt_no"] == "R20260710-00000002" and rc["settled"][0]["amount_fen"] == 3000

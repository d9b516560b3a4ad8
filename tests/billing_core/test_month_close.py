"""Issue 17's done-criterion: a month's close as a finance department runs it, end to end, with every
balance checked against sums over the raw ledger rows (SQL here, independent of billing_core.jobs.ledger's arrays).

bill (the demo fleet's last month) → post → a bank file (GBK, batch header and trailer) → late fees →
a refund → arrears as of three dates → prepayment with the head-end down, then a real `gridhead serve`
and the simulated fleet on 127.0.0.1 up: the trip that never reached the head-end is sent again and the
meter's relay is read open."""

from __future__ import annotations

import datetime as dt
import json
import socket

import pytest

from gridhead.billing_core import ledger as L
from gridhead.billing_core import prepay as P
from gridhead.headend.sim import demo
from gridhead.headend.prepay_control import sender
from gridhead.storage import control_log as CL
from gridhead.billing_core.jobs import bills, ledger, prepay

from tests.headend.test_control import call, start, stop, wait_online
from tests.billing_core.test_prepay_e2e import _meter_of, relay_open

TERMINALS, METERS = 2, 4


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _raw(d, sql, params=None):
    with ledger.Reader(d) as r:
        return r.con.execute(sql, params or {}).fetchall()


def _owed_by_raw_rows(d, as_of) -> dict:
    """customer_id → what it owes on ``as_of`` by the raw rows: receivables (bills, late fees, debit
    adjustments) dated on or before it less everything received by then (payments net of refunds,
    credits, waivers), never below 0."""
    return dict(_raw(d, """
        SELECT customer_id, greatest(0, sum(CASE WHEN kind IN ('bill', 'late_fee') OR (kind = 'adjust' AND debit_fen > 0)
                                                 THEN debit_fen ELSE 0 END)
                                      - sum(CASE WHEN kind IN ('payment', 'refund') THEN credit_fen
                                                 WHEN kind IN ('adjust', 'waiver') AND debit_fen < 0 THEN -debit_fen
                                                 ELSE 0 END))::BIGINT
        FROM ledger_entries WHERE value_date <= $d GROUP BY 1""", {"d": as_of}))


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    d = tmp_path_factory.mktemp("month-close") / "data"
    s = demo.run(d, terminals=TERMINALS, meters_per_terminal=METERS, days=2, faults={}, wait_s=20,
                 steps=[x for x in demo.STEPS if x.name in ("archive", "collect", "bill")])
    assert s["collect"]["after"]["missing"] == 0
    return {"dir": d, "period": s["archive"]["period"], "days": [dt.date.fromisoformat(x) for x in s["collect"]["recent_days"]]}


def test_month_close(month, tmp_path):
    d, period = month["dir"], month["period"]
    due = bills.period_bounds(period)[1] + dt.timedelta(days=L.DUE_DAYS)
    # 1. post the month's bills
    posted = ledger.post_bills(d, period, "finance")
    assert posted["posted"] == bills.summary(d, period)["issued"] + bills.summary(d, period)["released"] > 0
    bal = {x["customer_no"]: x for x in ledger.balances(d).to_pylist()}
    post = [x for x in bal.values() if not x["prepaid"] and x["balance_fen"] > 0]
    pre = [x for x in bal.values() if x["prepaid"]]
    assert len(post) >= 3 and len(pre) >= 2
    ontime, late, half = post[0], post[1], post[2]
    who, others = pre[0], pre[1:]
    # 2. the bank's file: GBK, batch header and trailer; on time (+50 yuan), late, half; prepaid pay ahead
    rows = [("B1", ontime["customer_no"], ontime["balance_fen"] + 5_000, due - dt.timedelta(days=5)),
            ("B2", late["customer_no"], late["balance_fen"], due + dt.timedelta(days=10)),
            ("B3", half["customer_no"], half["balance_fen"] // 2, due - dt.timedelta(days=1))]
    rows += [(f"P{i}", x["customer_no"], max(x["balance_fen"], 0) + 50_000, month["days"][0]) for i, x in enumerate(others)]
    total = sum(r[2] for r in rows)
    f = tmp_path / "银行代收.csv"
    f.write_bytes((f"H,代收批次{period},{len(rows)},{ledger._yuan(total)}\nref,customer_no,amount_yuan,paid_on\n"
                   + "".join(f"{r},{no},{ledger._yuan(a)},{day}\n" for r, no, a, day in rows)
                   + f"T,{len(rows)},{ledger._yuan(total)}\n").encode("gbk"))
    imp = ledger.import_payments(d, f, "bank", return_file=tmp_path / "回盘.csv")
    assert imp["rows"] == len(rows) and imp["amount_fen"] == total and imp["encoding"] == "gb18030"
    # 3. late fees to due + 20 (posted that day), then 4. a refund of the on-time customer's surplus
    fees = ledger.post_late_fees(d, due + dt.timedelta(days=20), "finance", today=due + dt.timedelta(days=20))
    fee_rows = dict(_raw(d, "SELECT customer_id, sum(debit_fen) FROM ledger_entries WHERE kind = 'late_fee' GROUP BY 1"))
    assert fees["amount_fen"] == sum(fee_rows.values()) and ontime["customer_id"] not in fee_rows
    res = {x["customer_id"]: x["category"] == "residential" for x in bal.values()}

    def fee(c, amount, until):                        # 第九十八条, 1 yuan minimum per overdue bill
        return max(100, int(L.late_fee([amount], [L.days_of(due)], [L.days_of(until)], [res[c["customer_id"]]])[0]))
    # paid 10 days late: owes those ten days' fee; half open for 20 days: that half's
    assert fee_rows[late["customer_id"]] == fee(late, late["balance_fen"], due + dt.timedelta(days=10))
    assert fee_rows[half["customer_id"]] == fee(half, half["balance_fen"] - half["balance_fen"] // 2,
                                                due + dt.timedelta(days=20))
    with pytest.raises(ledger.LedgerError):
        ledger.add_entry(d, ontime["customer_no"], "refund", 5_001, "cashier", note="surplus", payment="B1")
    ledger.add_entry(d, ontime["customer_no"], "refund", 3_000, "cashier", note="surplus", payment="B1",
                     on=due + dt.timedelta(days=21))
    # 5. arrears as of three dates, customer by customer against the raw rows
    for day in (due + dt.timedelta(days=5), due + dt.timedelta(days=15), due + dt.timedelta(days=25)):
        tbl = ledger.arrears(d, day).to_pylist()
        got = {}
        for r in tbl:
            got[r["customer_id"]] = got.get(r["customer_id"], 0) + r["arrears_fen"]
        want = {c: v for c, v in _owed_by_raw_rows(d, day).items() if v > 0}
        assert {c: v for c, v in got.items() if v > 0} == want, day
        assert who["customer_id"] in want                 # a prepayment customer owes its bill: listed
    early = {r["customer_id"]: r for r in ledger.arrears(d, due + dt.timedelta(days=5)).to_pylist()}
    assert early[late["customer_id"]]["arrears_fen"] == late["balance_fen"]      # its payment came on due + 10
    # every balance is the raw rows' Σ debit − Σ credit
    raw = dict(_raw(d, "SELECT customer_id, (sum(debit_fen) - sum(credit_fen))::BIGINT FROM ledger_entries GROUP BY 1"))
    assert {x["customer_id"]: x["balance_fen"] for x in ledger.balances(d).to_pylist() if x["customer_id"] in raw} == raw
    assert raw[ontime["customer_id"]] == -2_000
    ledger.check(d)

    # 6. prepayment: the head-end is down (nothing listens on its control port yet) ...
    port = _free_port()
    api = f"http://127.0.0.1:{port}"
    store = CL.TokenStore(CL.tokens_path(d))
    token, viewer = store.add(prepay.SYSTEM, "operator")[1], store.add("viewer", "viewer")[1]
    t = P.PrepayThresholds(grace_days=1)
    send = sender(api, token, timeout_s=5)
    r1 = prepay.run(d, month["days"][0], t, send=send)
    r2 = prepay.run(d, month["days"][1], t, send=send)
    assert r1["trips"] == 0 and r2["trips"] == 1 and r2["dispatched"] == {"unreachable": 1}
    st = {x["customer_id"]: x for x in prepay.status(d)["customers"].to_pylist()}
    assert st[who["customer_id"]]["trip_pending"] and not st[who["customer_id"]]["tripped"]
    # ... then up: a real `gridhead serve` with the simulated fleet; the pending trip goes through
    cfg = d / "he.toml"
    cfg.write_text(f'listen_port = 0\ndata_dir = "{d}"\nrequest_timeout_s = 5\n[control]\nport = {port}\n'
                   f'command_timeout_s = 5\n')
    he = start(["serve", "--config", str(cfg)])
    fleet = None
    try:
        ready = json.loads(he.stdout.readline())
        assert ready["api"].rstrip("/") == api
        fleet = demo.start_fleet(d, ready["port"], seed=1, faults={}, heartbeat_s=2)
        wait_online(api, viewer, TERMINALS)
        live = {"api": api, "tokens": {"viewer": viewer}}
        meter = str(_meter_of(d, who["customer_id"]))
        assert relay_open(live, meter) is False
        assert prepay.dispatch(d, send, t) == {"ok": 1}
        assert relay_open(live, meter) is True
        st = {x["customer_id"]: x for x in prepay.status(d)["customers"].to_pylist()}
        assert st[who["customer_id"]]["tripped"] and not st[who["customer_id"]]["trip_pending"]
        assert not any(st[x["customer_id"]]["tripped"] for x in others)
        s, a = call(api, "GET", f"/v1/audit?target={meter}&limit=20", None, viewer)
        final = [x for x in a["records"] if x["command"] == "disconnect" and x["outcome"] != "pending"]
        assert [(x["outcome"], x["who"], x["client_id"]) for x in final] == \
            [("ok", prepay.SYSTEM, f"prepay-{month['days'][1]}-disconnect-{who['customer_id']}")]
    finally:
        if fleet is not None:
            demo.stop_process(fleet)
        stop(he)
    ev = [e for (e,) in _raw(d, "SELECT event FROM prepay_events WHERE customer_id = $c ORDER BY ts_utc",
                             {"c": who["customer_id"]})]
    assert ev[-3:] == ["trip", "command_unreachable", "command_ok"]
    raw = dict(_raw(d, "SELECT customer_id, (sum(debit_fen) - sum(credit_fen))::BIGINT FROM ledger_entries GROUP BY 1"))
    st = {x["customer_id"]: x for x in prepay.status(d)["customers"].to_pylist()}
    assert all(st[c]["credit_fen"] == -raw.get(c, 0) for c in st)
    ledger.check(d)

"""Issue 9 end to end with real processes: a prepayment customer runs out, is tripped through the
head-end's control path, pays, and is reconnected — confirmed each time by the relay state read back
from the simulated meter over the control API, and by the audit log.

Processes on 127.0.0.1: `gridhead serve` (head-end with its control API) and the simulated fleet
(``python -m gridhead.headend.sim.demo fleet``); the lake holds readings the head-end collected from that fleet
(the demo's archive and collect steps, small sizes, no faults).  The loop itself is driven here through
the library: billing_core.jobs.prepay.run / billing_core.jobs.ledger.add_entry / billing_core.jobs.prepay.after_payment with
headend.prepay_control.sender as the control path."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from gridhead.headend.sim import demo
from gridhead.headend.prepay_control import sender
from gridhead.storage import control_log as CL
from gridhead.storage import sql
from gridhead.billing_core.jobs import ledger, prepay

from tests.headend.test_control import call, start, stop, wait_online

TERMINALS, METERS = 2, 4


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    d = tmp_path_factory.mktemp("prepay-e2e") / "data"
    summary = demo.run(d, terminals=TERMINALS, meters_per_terminal=METERS, days=2, faults={}, wait_s=20,
                       steps=[s for s in demo.STEPS if s.name in ("archive", "collect")])
    assert summary["collect"]["after"]["missing"] == 0
    store = CL.TokenStore(CL.tokens_path(d))
    tokens = {"system": store.add(prepay.SYSTEM, "operator")[1], "viewer": store.add("viewer", "viewer")[1]}
    cfg = d / "he.toml"
    cfg.write_text(f'listen_port = 0\ndata_dir = "{d}"\nrequest_timeout_s = 5\n[control]\nport = 0\n'
                   f'command_timeout_s = 5\n')
    he = start(["serve", "--config", str(cfg)])
    fleet = None
    try:
        ready = json.loads(he.stdout.readline())
        fleet = demo.start_fleet(d, ready["port"], seed=1, faults={}, heartbeat_s=2)
        wait_online(ready["api"], tokens["viewer"], TERMINALS)
        yield {"dir": d, "api": ready["api"], "tokens": tokens, "days": summary["collect"]["recent_days"]}
    finally:
        if fleet is not None:
            demo.stop_process(fleet)
        stop(he)


def relay_open(live, meter: str) -> bool:
    """The relay state read from the meter now (a plain read through the API, not a command's read-back):
    698 继电器输出状态 80000300 (bit-string, first bit = relay 1, 1 = open); 645 status word 3 04000503
    (bit 4 = relay open)."""
    s, r = call(live["api"], "POST", "/v1/read", {"target": meter, "registers": ["relay"]}, live["tokens"]["viewer"])
    assert s == 200 and r["outcome"] == "ok", r
    v = r["values"][0]
    if v.get("oad") == "80000300":
        return bool(int(v["value"]["hex"][:2], 16) & 0x80)
    word = v["values"][0]
    return bool((word["raw"] if "raw" in word else int(word["value"], 16)) & 0x10)


def test_runs_out_tripped_pays_reconnected(live):
    d, api, days = live["dir"], live["api"], [dt.date.fromisoformat(x) for x in live["days"]]
    pre = [r for r in ledger.balances(d).to_pylist() if r["prepaid"]]
    assert len(pre) >= 2, "the fleet needs two prepayment customers"
    who, others = pre[0], pre[1:]
    for r in others:                               # the others stay well above the warning level
        ledger.add_entry(d, r["customer_no"], "payment", 50_000, "cashier")
    meter = str(_meter_of(d, who["customer_id"]))
    other_meters = [str(_meter_of(d, r["customer_id"])) for r in others]
    assert relay_open(live, meter) is False
    send = sender(api, live["tokens"]["system"])

    # day 1: the day's charge takes the customer below zero — a reminder, no trip yet (grace 1 day)
    r1 = prepay.run(d, days[0], send=send)
    assert r1["charged_fen"] > 0 and r1["reminders"] == 1 and r1["trips"] == 0 and r1["dispatched"] == {}
    assert _status(d, who)["credit_fen"] < 0 and relay_open(live, meter) is False
    # day 2: below zero past the grace period — tripped through the head-end, the meter's relay opens
    r2 = prepay.run(d, days[1], send=send)
    assert r2["trips"] == 1 and r2["dispatched"] == {"ok": 1}, r2
    assert _status(d, who)["tripped"] is True
    assert relay_open(live, meter) is True
    assert not any(relay_open(live, m) for m in other_meters)
    # the customer pays what is owed and more: reconnected at once, the relay closes
    owed = -_status(d, who)["credit_fen"]
    ledger.add_entry(d, who["customer_no"], "payment", owed + 3_000, "cashier", ref="e2e-1")
    back = prepay.after_payment(d, [who["customer_id"]], send=send)
    assert back == {"closes": 1, "dispatched": {"ok": 1}}
    assert _status(d, who)["tripped"] is False and _status(d, who)["credit_fen"] == 3_000
    assert relay_open(live, meter) is False
    # a repeated day decides nothing again and sends nothing again
    assert prepay.run(d, days[1], send=send)["dispatched"] == {}
    assert relay_open(live, meter) is False

    # every step in the audit log: through the API, and in the audit_log view
    s, a = call(api, "GET", f"/v1/audit?target={meter}&limit=50", None, live["tokens"]["viewer"])
    assert s == 200
    final = [x for x in a["records"] if x["outcome"] != "pending" and x["command"] in ("disconnect", "reconnect")]
    assert [(x["command"], x["outcome"], x["who"]) for x in final] == \
        [("disconnect", "ok", prepay.SYSTEM), ("reconnect", "ok", prepay.SYSTEM)]
    readback = [json.loads(x["readback"]) if isinstance(x["readback"], str) else x["readback"] for x in final]
    assert final[0]["reason"] == prepay.REASON and readback[0]["relay_open"] is True
    assert readback[1]["relay_open"] is False
    assert final[0]["client_id"] == f"prepay-{days[1]}-disconnect-{who['customer_id']}"
    with sql.Session(d) as q:
        rows = q.query(f"SELECT command, outcome, who, reason FROM audit_log WHERE target = 'meter:{meter}' "
                       "AND command IN ('disconnect', 'reconnect') AND outcome <> 'pending' ORDER BY seq").to_pylist()
    assert [(x["command"], x["outcome"], x["who"]) for x in rows] == \
        [(x["command"], x["outcome"], x["who"]) for x in final]
    assert not any(x["target"] in {f"meter:{m}" for m in other_meters} for x in a["records"])
    # ... and the prepayment side: reminder, trip, its outcome, reconnect, its outcome
    with ledger.Reader(d) as r:
        ev = r.columns("SELECT event FROM prepay_events WHERE customer_id = $c ORDER BY ts_utc",
                       {"c": who["customer_id"]})["event"].tolist()
    assert ev == ["reminder", "trip", "command_ok", "reconnect", "command_ok"]


def _status(d, who) -> dict:
    return [x for x in prepay.status(d)["customers"].to_pylist() if x["customer_id"] == who["customer_id"]][0]


def _meter_of(d, customer_id) -> int:
    with ledger.Reader(d) as r:
        return int(r.columns("SELECT pm.meter_id FROM points p JOIN point_meters pm USING (point_id) "
                             "WHERE p.customer_id = $c AND p.role = 'customer' AND pm.valid_to IS NULL",
                             {"c": customer_id})["meter_id"][0])

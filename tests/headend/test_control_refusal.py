"""A meter that refuses a trip on its own (issue 8): protection (保电) set on the meter itself, outside the
control API, so the head-end's protection registry (built from the audit log) does not know of it.

`gridhead serve` runs as a process; the fleet is a Simulator in a thread of the test process on its own
loop, dialling the head-end over 127.0.0.1, started with one 698 and one 645 meter already protected —
as a meter set by a hand-held terminal on site.  The trip goes to the meter (the head-end has no reason
to refuse it), the meter refuses it (698 DAR, 645 error word), and the API answers 409 with the meter's
reason and the relay state read after the refusal; the audit log on disk holds the same record."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

import pytest

from gridhead.headend.sim import model as sim_model, simulator
from gridhead.storage import control_log as CL

from tests.conftest import ROOT
from tests.headend.test_control import call, make_fleet, start, stop, wait_online


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("refusal")
    routes = make_fleet(d, terminals=2, meters=4)
    op = CL.TokenStore(CL.tokens_path(d)).add("operator", "operator")[1]
    cfg = d / "he.toml"
    cfg.write_text(f'listen_port = 0\ndata_dir = "{d}"\nrequest_timeout_s = 5\n'
                   f'[control]\nport = 0\ncommand_timeout_s = 5\n')
    protected = {p: next(r for r in routes if r["meter_protocol"] == p) for p in ("698", "645")}
    he = start(["serve", "--config", str(cfg)])
    sim = thread = None
    try:
        ready = json.loads(he.stdout.readline())
        fleet = sim_model.load_gen_dir(d)
        sim = simulator.Simulator(fleet, seed=1, connect=("127.0.0.1", ready["port"]), heartbeat_s=5, report=False)
        for r in protected.values():                 # 保电 on the meter itself, before it comes online
            sim.answers.control.protected[fleet.address.index(r["comm_address"])] = True
        thread = threading.Thread(target=lambda: asyncio.run(sim.run()), daemon=True)
        thread.start()
        wait_online(ready["api"], op, 2)
        yield {"api": ready["api"], "op": op, "dir": d, "protected": protected, "routes": routes}
    finally:
        if sim is not None and sim.loop is not None:
            sim.stop()
        if thread is not None:
            thread.join(20)
        stop(he)


@pytest.mark.parametrize("protocol,reason", [("698", "trip: the meter answered DAR 3 (read/write denied)"),
                                             ("645", "refused 1CH: other error")])
def test_meter_refuses_trip_head_end_did_not_know(site, protocol, reason):
    api, op = site["api"], site["op"]
    m = str(site["protected"][protocol]["meter_id"])
    s, r = call(api, "POST", "/v1/disconnect", {"target": m, "reason": "arrears 2026-06", "client_id": f"r{protocol}"}, op)
    assert s == 409 and r["outcome"] == "refused", r
    assert reason in r["error"] and "保电" not in r["error"], r["error"]      # the meter's words, not the head-end's rule
    assert r["readback"]["relay_open"] is False, r                              # still supplied
    if protocol == "698":
        assert r["readback"]["protected"] is True, r                            # and why: 80010200 says 保电 on
    s, rr = call(api, "POST", "/v1/read", {"target": m, "registers": ["relay"]}, op)
    assert s == 200 and rr["outcome"] == "ok"
    # the same record in the audit log on disk (fsynced before the API answered) and through the API
    on_disk = [json.loads(x) for x in CL.audit_path(site["dir"]).read_text().splitlines() if x.strip()]
    mine = [a for a in on_disk if a.get("client_id") == f"r{protocol}"]
    assert [a["outcome"] for a in mine] == ["pending", "refused"], mine
    assert mine[-1]["error"] == r["error"] and mine[-1]["who"] == "operator" and mine[-1]["reason"] == "arrears 2026-06"
    assert json.loads(mine[-1]["readback"])["relay_open"] is False
    s, audit = call(api, "GET", f"/v1/audit?target={m}&limit=10", None, op)
    assert s == 200 and any(a["command_id"] == r["command_id"] and a["outcome"] == "refused" for a in audit["records"])
    # a repeated submission is the first outcome, not a second trip
    s2, again = call(api, "POST", "/v1/disconnect", {"target": m, "reason": "arrears 2026-06", "client_id": f"r{protocol}"}, op)
    assert s2 == 409 and again["duplicate"] is True and again["command_id"] == r["command_id"]


def test_unprotected_neighbour_still_trips(site):
    """The refusal is the meter's, not a blanket one: a meter next to it trips and reads back open."""
    api, op = site["api"], site["op"]
    taken = {r["meter_id"] for r in site["protected"].values()}
    m = next(r for r in site["routes"] if r["meter_protocol"] == "698" and r["meter_id"] not in taken)
    s, r = call(api, "POST", "/v1/disconnect", {"target": str(m["meter_id"]), "reason": "arrears"}, op)
    assert s == 200 and r["readback"]["relay_open"] is True and r["confirmed"], r


@pytest.mark.parametrize("table,words", [
    ("[control]\nbogus = 1\n", "[control]: unknown key(s) bogus"),
    ("[control]\ntimesync_645 = \"shout\"\n", "[control]: timesync_645 is write or broadcast"),
    ("[control]\n[[control.direct_645]]\naddress = \"000012345678\"\n", "[control]: direct_645 needs address, host, port"),
    ("listen_port = 0\nbogus = 1\n", "unknown key(s) bogus"),
    ("[collect]\nbogus = 1\n", "[collect]: unknown key(s) bogus"),
    ("[collect]\ncompact_offset = \"soon\"\n", "[collect]: compact_offset: 'soon' is not a duration"),
    ("[collect]\ncompact_days = 0\n", "[collect]: compact_days = 0 is not an integer >= 1"),
    ("[collect]\ntasks = \"no-such-tasks.toml\"\n", "no-such-tasks.toml: No such file or directory"),
    ("listen_port = [\n", "he.toml: "),
])
def test_config_errors_are_one_line(tmp_path, table, words):
    """headend.config.read_toml / check_keys for the head-end's keys, the [control] and [collect] tables alike
    (a [collect] tasks file that cannot be read fails before the head-end listens)."""
    cfg = tmp_path / "he.toml"
    cfg.write_text(table)
    r = subprocess.run([sys.executable, "-m", "gridhead.cli", "serve", "--config", str(cfg)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and words in r.stderr and str(cfg) in r.stderr, r.stderr

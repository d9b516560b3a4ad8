"""The operators' control API (issue 8) with real parts: `gridhead serve` and `gridhead sim` as processes on
127.0.0.1, the API over real HTTP, the audit log on disk, and the interop peers (PyPI ``dlt645`` meter
server reached directly over TCP, PyPI ``dlt698`` terminal dialled out) answering reads and time syncs.

Fleet: 3 concentrators × 4 meters (698 and 645 meters behind them, headend.sim.model.standalone)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from gridhead.headend.sim import model as sim_model
from gridhead.storage import control_log as CL
from gridhead.storage.archive import Archive

from tests.conftest import ROOT

ROLES = ("viewer", "operator", "admin")
PEER645 = "000012345678"
PEER698 = "201605190907"


def make_fleet(d, terminals=3, meters=4):
    sim_model.write_standalone_archive(d, terminals, meters, 5, dt.date(2026, 6, 1))
    # the dlt698 peer terminal is dialled out to: the archive must know it (a dial-out is no exception)
    with open(d / "archive-files" / "concentrators.csv", "a") as f:
        f.write(f"{terminals + 1},{PEER698},698,4g,\n")
    with Archive(d / "archive.duckdb") as a:
        a.import_files(sorted((d / "archive-files").glob("*.csv")))
        return a.meter_routes().to_pylist()


def start(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "gridhead.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def call(api, method, path, body=None, token=None, *, wait=True):
    """(status, JSON); a 429 is waited out (its Retry-After) unless ``wait`` is False."""
    while True:
        req = urllib.request.Request(api + path, data=None if body is None else json.dumps(body).encode(),
                                     method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 429 and wait:
                time.sleep(float(exc.headers["Retry-After"]))
                continue
            return exc.code, json.loads(exc.read() or b"{}")


def wait_online(api, token, n, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        s, r = call(api, "GET", "/v1/status", token=token)
        if s == 200 and r["online"] >= n:
            return r
        time.sleep(0.2)
    raise AssertionError(f"{n} terminals not online: {r}")


class Peers:
    """The interop peers, started before the head-end (its config names them)."""

    def __init__(self):
        self.m645 = self.t698 = None

    def start(self):
        try:
            import dlt645
            from dlt645 import MeterServerService
            from dlt645.model.types.dlt645_type import PasswordManager
            dlt645.disable_logging()
            m = MeterServerService.new_tcp_server("127.0.0.1", 0)
            m.set_address(bytes.fromhex(PEER645)[::-1])
            m.password_manager = PasswordManager()
            m.set_password("02000000")
            m.set_00(0x00010000, 2718.28)
            m.set_04(0x04000101, "26060101")
            m.set_04(0x04000102, "000000")
            assert m.start()
            self.m645 = m
        except ImportError:
            pass
        try:
            from dlt698 import _native as n, app
            from gridhead.headend import profile as P
            from gridhead.protocols.dlt698.axdr import Data, DateTimeS
            from tests.strategies698 import _p_oad, to_peer
            sa = n.ServerAddress()
            sa.bytes = bytes.fromhex(PEER698)[::-1]
            session = n.SessionOptions()
            session.server = sa
            session.client_address = 0x10
            options = n.ServerOptions()
            options.protocol = session
            t = app.Server(options=options)
            t.set(_p_oad(P.OAD_DATETIME), to_peer(Data(28, DateTimeS(2024, 6, 1, 12, 0, 0))))
            t.set(_p_oad(P.OAD_FWD_ACTIVE), to_peer(Data(1, tuple(Data(6, v) for v in (123456, 1, 2, 3, 4)))))
            t.start_tcp("127.0.0.1", 0)
            self.t698 = t
        except ImportError:
            pass

    def toml(self) -> str:
        out = ""
        if self.t698 is not None:
            out += f'[[dial_out]]\nhost = "127.0.0.1"\nport = {self.t698.local_port}\naddress = "{PEER698}"\n'
        if self.m645 is not None:
            out += f'[[control.direct_645]]\naddress = "{PEER645}"\nhost = "127.0.0.1"\nport = {self.m645.server.port}\n'
        return out

    def close(self):
        if self.m645 is not None:
            self.m645.stop()
        if self.t698 is not None:
            self.t698.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Head-end and fleet as processes; tokens of every role."""
    d = tmp_path_factory.mktemp("control")
    routes = make_fleet(d)
    store = CL.TokenStore(CL.tokens_path(d))
    tokens = {r: store.add(r, r)[1] for r in ROLES}
    tokens["bulk"] = store.add("bulk", "operator")[1]
    tokens["admin2"] = store.add("admin2", "admin")[1]          # the second admin of the two-person rule
    peers = Peers()
    peers.start()
    cfg = d / "he.toml"
    cfg.write_text(f'listen_port = 0\ndata_dir = "{d}"\nrequest_timeout_s = 5\n'
                   f'[control]\nport = 0\ncontrol_per_s = 2\ncontrol_burst = 5\ncommand_timeout_s = 5\n'
                   + peers.toml())
    he = start(["serve", "--config", str(cfg)])
    sim = None
    try:
        ready = json.loads(he.stdout.readline())
        sim = start(["sim", "--data", str(d), "--connect", f"127.0.0.1:{ready['port']}", "--no-report",
                     "--stats-every", "0", "--heartbeat", "5"])
        api = ready["api"]
        wait_online(api, tokens["viewer"], 3 + (peers.t698 is not None))
        yield {"api": api, "tokens": tokens, "routes": routes, "dir": d, "peers": peers}
    finally:
        if sim is not None:
            stop(sim)
        stop(he)
        peers.close()


def meter(live, protocol, k=0):
    return [r for r in live["routes"] if r["meter_protocol"] == protocol][k]


# --- authorisation: every role × every command ---------------------------------------------------------
def test_every_role_and_command(live):
    api, tok = live["api"], live["tokens"]
    m698, m645 = meter(live, "698", 0), meter(live, "645", 0)
    term = m698["terminal_address"]
    cases = {   # command: (method, path, body, lowest role)
        "status": ("GET", "/v1/status", None, "viewer"),
        "audit": ("GET", "/v1/audit?limit=5", None, "viewer"),
        "read": ("POST", "/v1/read", {"target": str(m698["meter_id"]), "registers": ["energy"]}, "viewer"),
        "timesync": ("POST", "/v1/timesync", {"target": term}, "operator"),
        "disconnect": ("POST", "/v1/disconnect", {"target": str(m645["meter_id"]), "reason": "arrears"}, "operator"),
        "reconnect": ("POST", "/v1/reconnect", {"target": str(m645["meter_id"])}, "operator"),
        "protect": ("POST", "/v1/protect", {"target": str(meter(live, "698", 3)["meter_id"]), "on": True}, "admin"),
        "tokens": ("GET", "/v1/tokens", None, "admin"),
    }
    seen = {}
    for name, (method, path, body, need) in cases.items():
        assert call(api, method, path, body)[0] == 401, name
        assert call(api, method, path, body, "gh_nothere_secret")[0] == 401, name
        for role in ROLES:
            status, r = call(api, method, path, body, tok[role])
            allowed = ROLES.index(role) >= ROLES.index(need)
            seen[(name, role)] = status
            assert status == (200 if allowed else 403), (name, role, r)
            if allowed and name not in ("status", "audit", "tokens"):
                assert r["outcome"] == "ok" and r["who"] == role and r["confirmed"] is True, r
    assert len(seen) == len(cases) * len(ROLES)


# --- the commands, with read-back, on 698 and 645 meters ---------------------------------------------------
@pytest.mark.parametrize("protocol", ["698", "645"])
def test_trip_close_readback_and_protected_refused(live, protocol):
    api, op, admin = live["api"], live["tokens"]["operator"], live["tokens"]["admin"]
    m = str(meter(live, protocol, 1)["meter_id"])
    s, r = call(api, "POST", "/v1/disconnect", {"target": m}, op)
    assert s == 400 and "reason" in r["error"]                   # a trip needs its reason
    s, r = call(api, "POST", "/v1/disconnect", {"target": m, "reason": "arrears 2026-06"}, op)
    assert s == 200 and r["readback"]["relay_open"] is True and r["reason"] == "arrears 2026-06"
    s, r = call(api, "POST", "/v1/reconnect", {"target": m, "mode": "allowed"}, op)
    assert s == 200 and r["readback"]["trip_command"] is False and r["readback"]["relay_open"] is True
    s, r = call(api, "POST", "/v1/reconnect", {"target": m, "mode": "direct"}, op)
    assert s == 200 and r["readback"]["relay_open"] is False
    s, r = call(api, "POST", "/v1/protect", {"target": m, "on": True}, admin)
    assert s == 200 and r["confirmed"]
    s, r = call(api, "POST", "/v1/disconnect", {"target": m, "reason": "arrears"}, op)
    assert s == 409 and r["outcome"] == "refused" and "保电" in r["error"]
    s, r = call(api, "POST", "/v1/read", {"target": m, "registers": ["relay"]}, op)
    assert s == 200
    s, r = call(api, "POST", "/v1/protect", {"target": m, "on": False}, admin)
    assert s == 202 and r["outcome"] == "pending_approval"          # 保电 off: a second admin approves (issue 16)
    s, r = call(api, "POST", f"/v1/jobs/{r['job']}/approve", {}, live["tokens"]["admin2"])
    assert s == 200 and r["outcome"] == "ok" and r["approved_by"] == "admin2"
    s, audit = call(api, "GET", f"/v1/audit?target={m}&limit=50", None, op)
    assert s == 200, audit
    refused = [a for a in audit["records"] if a["command"] == "disconnect" and a["outcome"] == "refused"]
    assert len(refused) == 1 and refused[0]["who"] == "operator" and refused[0]["reason"] == "arrears"


def test_read_and_timesync_of_meters_and_terminal(live):
    api, op = live["api"], live["tokens"]["operator"]
    for proto in ("698", "645"):
        m = meter(live, proto, 2)
        s, r = call(api, "POST", "/v1/read", {"target": m["comm_address"], "registers": ["energy", "clock"]}, op)
        assert s == 200 and r["outcome"] == "ok" and len(r["values"]) == (2 if proto == "698" else 3), r["error"]
        s, r = call(api, "POST", "/v1/timesync", {"target": str(m["meter_id"])}, op)
        assert s == 200 and r["set"] and abs(r["readback"]["skew_s"]) <= 2, r
    s, r = call(api, "POST", "/v1/read", {"target": "1", "registers": ["nonsense"]}, op)
    assert s == 400
    s, r = call(api, "POST", "/v1/read", {"target": "999999", "registers": ["energy"]}, op)
    assert s == 404


# --- idempotency, rate limit, offline -------------------------------------------------------------------
def test_idempotent_client_id(live):
    api, op = live["api"], live["tokens"]["admin"]
    m = str(meter(live, "698", 2)["meter_id"])
    body = {"target": m, "reason": "x", "client_id": "trip-once-1"}
    s1, r1 = call(api, "POST", "/v1/disconnect", body, op)
    s2, r2 = call(api, "POST", "/v1/disconnect", body, op)
    assert s1 == s2 == 200 and r2["duplicate"] is True and r2["command_id"] == r1["command_id"]
    s, audit = call(api, "GET", "/v1/audit?limit=1000", None, op)
    mine = [a for a in audit["records"] if a.get("client_id") == "trip-once-1"]
    assert [a["outcome"] for a in mine] == ["pending", "ok"]             # acted once
    s, r = call(api, "POST", "/v1/reconnect", {"target": m, "client_id": "trip-once-1"}, op)
    assert s == 409                                                      # the id names another command
    call(api, "POST", "/v1/reconnect", {"target": m}, op)


def test_bulk_rate_limited_with_progress(live, tmp_path):
    api, tok = live["api"], live["tokens"]["bulk"]
    ids = [str(r["meter_id"]) for r in live["routes"]][:7]
    # the burst of 5 passes, the 6th is refused with Retry-After
    codes = [call(api, "POST", "/v1/timesync", {"target": i, "min_skew_s": 3600}, tok, wait=False)[0] for i in ids]
    assert codes[:5] == [200] * 5 and 429 in codes[5:]
    f = tmp_path / "meters.txt"
    f.write_text("\n".join(ids[:3]) + "\n# comment\n")
    env = dict(os.environ, GRIDHEAD_API=api, GRIDHEAD_TOKEN=tok)
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "gridhead.cli", "timesync", "--file", str(f), "--min-skew", "3600", "--json"],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o["target"] for o in out] == [f"meter:{i}" for i in ids[:3]] and all(o["outcome"] == "ok" for o in out)
    assert time.time() - t0 >= 0.5                    # waited for the bucket (2 commands/s)
    assert "3/3" in r.stderr                          # the progress bar


def test_cli_disconnect_confirms_and_one_line_errors(live):
    api = live["api"]
    m = str(meter(live, "645", 3)["meter_id"])
    env = dict(os.environ, GRIDHEAD_API=api, GRIDHEAD_TOKEN=live["tokens"]["operator"])
    r = subprocess.run([sys.executable, "-m", "gridhead.cli", "disconnect", m, "--reason", "test"], cwd=ROOT, input="n\n",
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and "Cut the power of 1 meter" in r.stderr
    r = subprocess.run([sys.executable, "-m", "gridhead.cli", "protect", m, "on"], cwd=ROOT, capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and "403" in r.stderr
    r = subprocess.run([sys.executable, "-m", "gridhead.cli", "status", "--json"], cwd=ROOT, capture_output=True, text=True,
                       env=dict(env, GRIDHEAD_TOKEN="gh_bad_token"), timeout=60)
    assert r.returncode == 3 and "401" in r.stderr
    r = subprocess.run([sys.executable, "-m", "gridhead.cli", "status"], cwd=ROOT, capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0 and "terminals" in r.stdout and "quality" in r.stdout


def test_audit_log_sql_view(live):
    r = subprocess.run([sys.executable, "-m", "gridhead.cli", "sql", "--data", str(live["dir"]), "--format", "json",
                        "SELECT command, outcome, who FROM audit_log WHERE outcome = 'refused'"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert {"command": "disconnect", "outcome": "refused", "who": "operator"} in rows


# --- interop peers ---------------------------------------------------------------------------------------
def test_dlt645_peer_meter_read_and_timesync(live):
    if live["peers"].m645 is None:
        pytest.skip("dlt645 (test-only peer) not installed")
    api, op = live["api"], live["tokens"]["operator"]
    s, r = call(api, "POST", "/v1/read", {"target": PEER645, "registers": ["00010000"]}, op)
    assert s == 200 and r["path"] == "direct-645" and r["values"][0]["values"][0]["value"] == "2718.28"
    s, r = call(api, "POST", "/v1/timesync", {"target": PEER645}, op)
    assert s == 200 and r["set"] and r["skew_before_s"] < -3600 and abs(r["readback"]["skew_s"]) <= 2, r


def test_dlt645_peer_refusing_block_reads(live):
    """Issue 19 item 4: the peer refuses 0001FF00; `energy` is read item by item (outcome ok), and a
    register it refuses outright is the command's failure (409 refused, `gridhead read` exit 1)."""
    if live["peers"].m645 is None:
        pytest.skip("dlt645 (test-only peer) not installed")
    api, op = live["api"], live["tokens"]["operator"]
    s, r = call(api, "POST", "/v1/read", {"target": PEER645, "registers": ["energy"]}, op)
    assert s == 200 and r["outcome"] == "ok" and r["values"][0]["items"][0] == "00010000", r
    assert r["values"][0]["values"][0]["value"] == "2718.28"
    s, r = call(api, "POST", "/v1/read", {"target": PEER645, "registers": ["05060101"]}, op)
    assert s == 409 and r["outcome"] == "refused" and "05060101" in r["error"], r
    p = subprocess.run([sys.executable, "-m", "gridhead.cli", "read", PEER645, "05060101"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, GRIDHEAD_API=api, GRIDHEAD_TOKEN=op))
    assert p.returncode == 1 and "refused" in p.stdout, (p.stdout, p.stderr)


def test_dlt698_peer_terminal_read_and_timesync(live):
    if live["peers"].t698 is None:
        pytest.skip("dlt698 (test-only peer) not installed")
    api, op = live["api"], live["tokens"]["operator"]
    s, r = call(api, "POST", "/v1/read", {"target": PEER698, "registers": ["energy", "clock"]}, op)
    assert s == 200 and r["path"] == "direct-698"
    assert r["values"][0]["value"]["total"]["raw"] == 123456 and r["values"][1]["value"] == "2024-06-01T12:00:00"
    s, r = call(api, "POST", "/v1/timesync", {"target": PEER698}, op)
    # the peer answers the clock read, and in its default configuration refuses writes of 40000200 with
    # DAR 3 (拒绝读写): the command is refused, audited with the device's reason
    assert s == 409 and r["outcome"] == "refused" and "DAR 3" in r["error"], r
    s, audit = call(api, "GET", f"/v1/audit?target={PEER698}", None, op)
    assert [a["outcome"] for a in audit["records"] if a["command"] == "timesync"] == ["pending", "refused"]

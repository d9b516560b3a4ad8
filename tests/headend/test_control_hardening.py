"""The control API tried as a hostile client would (issue 16), against a running `gridhead serve` on
127.0.0.1 with real sockets: slow clients are cut at the configured deadline with a 408, oversized
and malformed requests get a 4xx JSON answer and one log line (never a traceback), a header flood does
not grow the server, chunked bodies are read, every refusal is audited on disk, failed logins are
throttled, tokens expire and rotate, a second admin approves bulk disconnects and 保电 off.

The limits are set small in the head-end's TOML ([control] keys) so that the tests are quick; the
defaults are the ones ControlConfig documents."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from gridhead.storage import control_log as CL

from tests.conftest import ROOT
from tests.headend.test_control import call, make_fleet, stop, wait_online

LIMITS = dict(head_timeout_s=1.0, body_timeout_s=1.0, max_connections=40, max_connections_per_client=12,
              max_registers=4, max_bulk_targets=50, bulk_approval=3, auth_free_failures=2, auth_delay_s=2.0,
              auth_max_delay_s=30.0)


def serve(d, extra_toml="", *args, log_name="serve.log"):
    """`gridhead serve` with its stderr in a file (a pipe nobody reads would fill); -> (process, ready, log path)."""
    cfg = d / "he.toml"
    limits = "".join(f"{k} = {v}\n" for k, v in LIMITS.items())
    cfg.write_text(f'listen_port = 0\ndata_dir = "{d}"\nrequest_timeout_s = 5\n[control]\nport = 0\n'
                   f'control_per_s = 50\ncontrol_burst = 50\ncommand_timeout_s = 5\n{limits}{extra_toml}')
    err = d / log_name
    p = subprocess.Popen([sys.executable, "-m", "gridhead.cli", "serve", "--config", str(cfg), *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=open(err, "w"), text=True)
    line = p.stdout.readline()
    if not line:
        p.wait(20)
        return p, None, err
    return p, json.loads(line), err


def cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "gridhead.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env, **kw)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("hardening")
    routes = make_fleet(d, terminals=2, meters=4)
    store = CL.TokenStore(CL.tokens_path(d))
    tokens = {n: store.add(n, r)[1] for n, r in (("viewer", "viewer"), ("operator", "operator"),
                                                  ("admin", "admin"), ("admin2", "admin"))}
    he, ready, err = serve(d)
    sim = None
    try:
        host, port = ready["api"].split("//", 1)[1].rsplit(":", 1)
        sim = subprocess.Popen([sys.executable, "-m", "gridhead.cli", "sim", "--data", str(d), "--connect",
                                f"127.0.0.1:{ready['port']}", "--no-report", "--stats-every", "0", "--heartbeat", "5"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_online(ready["api"], tokens["viewer"], 2)
        yield {"dir": d, "api": ready["api"], "addr": (host, int(port)), "tokens": tokens, "routes": routes,
               "pid": he.pid, "log": err}
    finally:
        if sim is not None:
            stop(sim)
        stop(he)
    text = err.read_text()
    assert "Traceback" not in text, text[-3000:]          # no bad request ever made one


def raw(addr, data: bytes, *, timeout=15.0, source=None) -> tuple[bytes, float]:
    """Send bytes, read until the server closes: (everything it answered, seconds until then)."""
    s = socket.create_connection(addr, timeout, source_address=source)
    t0 = time.monotonic()
    out = b""
    try:
        if data:
            s.sendall(data)
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                break
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    return out, time.monotonic() - t0


def answer(out: bytes) -> tuple[int, dict]:
    head, _, body = out.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def audit(site) -> list[dict]:
    return CL.read_records(CL.audit_path(site["dir"]))


def meter_ids(site):
    return [str(r["meter_id"]) for r in site["routes"]]


# --- 1. slow clients, limits, malformed requests ------------------------------------------------------
@pytest.mark.parametrize("what,data", [
    ("nothing at all", b""),
    ("a partial request line", b"GET /v1/sta"),
    ("headers that never end", b"GET /v1/status HTTP/1.1\r\nHost: x\r\n"),
])
def test_slow_head_cut_at_the_deadline(site, what, data):
    out, took = raw(site["addr"], data)
    status, body = answer(out)
    assert status == 408 and "head" in body["error"], (what, out)
    assert took < LIMITS["head_timeout_s"] + 5, (what, took)            # default 10 s; here 1 s


def test_one_header_line_every_so_often_is_cut(site):
    """Slow-loris: each line arrives in time for a per-read timeout, the whole head does not."""
    s = socket.create_connection(site["addr"], 15)
    t0 = time.monotonic()
    s.sendall(b"GET /v1/status HTTP/1.1\r\n")
    out = b""
    try:
        for i in range(40):
            time.sleep(0.25)
            s.sendall(f"X-Slow-{i}: y\r\n".encode())
    except (BrokenPipeError, ConnectionResetError):
        pass
    took = time.monotonic() - t0
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    s.close()
    assert answer(out)[0] == 408 and took < 9, took


def test_body_shorter_than_its_length_is_cut(site):
    tok = site["tokens"]["viewer"]
    out, took = raw(site["addr"], f"POST /v1/read HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                                  f"Content-Length: 100\r\n\r\n{{\"target\"".encode())
    status, body = answer(out)
    assert status == 408 and "body" in body["error"] and took < LIMITS["body_timeout_s"] + 5


@pytest.mark.parametrize("name,data,want", [
    ("request line 9 KiB", b"GET /v1/status?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (414,)),
    ("one header 9 KiB", b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", (431,)),
    ("headers 70 KiB in all", b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 7000)
                                                                     for i in range(10)) + b"\r\n", (431,)),
    ("120 header lines", b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-N%d: 1\r\n" % i for i in range(120))
     + b"\r\n", (400, 431)),
    ("Content-Length -1", b"POST /v1/read HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", (400,)),
    ("Content-Length abc", b"POST /v1/read HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", (400,)),
    ("body over 1 MiB", b"POST /v1/read HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n", (413,)),
    ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", (400,)),
    ("gzip transfer coding", b"POST /v1/read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", (400, 501)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_requests_get_a_json_4xx(site, name, data, want):
    out, _took = raw(site["addr"], data)
    status, body = answer(out)
    assert status in want and body["error"], (name, out[:300])


def test_json_bombs_and_bounds(site):
    api, tok = site["api"], site["tokens"]["operator"]
    m = meter_ids(site)[0]
    out, _ = raw(site["addr"], b"POST /v1/read HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n"
                 + b"[" * 100000)
    assert answer(out)[0] == 400 and "nested" in answer(out)[1]["error"]
    deep = {"target": m, "registers": ["energy"], "x": json.loads("[" * 40 + "]" * 40)}
    s, r = call(api, "POST", "/v1/read", deep, tok)
    assert s == 400 and "nested" in r["error"]
    s, r = call(api, "POST", "/v1/read", {"target": m, "registers": ["energy"] * 300}, tok)
    assert s == 413 and "at most 4" in r["error"]
    s, r = call(api, "POST", "/v1/bulk", {"command": "disconnect", "targets": [m] * 51, "reason": "x"}, tok)
    assert s == 413 and "at most 50" in r["error"]


def test_chunked_body_is_read(site):
    tok = site["tokens"]["viewer"]
    m = meter_ids(site)[1]
    body = json.dumps({"target": m, "registers": ["energy"]}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
    out, _ = raw(site["addr"], f"POST /v1/read HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                               f"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode() + chunks + b"0\r\n\r\n")
    status, r = answer(out)
    assert status == 200 and r["outcome"] == "ok" and r["values"], r
    big = b"".join(b"10000\r\n" + b" " * 0x10000 + b"\r\n" for _ in range(17))     # 1.06 MiB, chunked
    out, _ = raw(site["addr"], b"POST /v1/read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                               b"Connection: close\r\n\r\n" + big + b"0\r\n\r\n")
    assert answer(out)[0] == 413


def _rss_kb(pid) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmRSS"))


def _flood(addr, line: bytes, lines: int, conns: int = 3) -> None:
    """`conns` connections each sending a request line, then `lines` copies of `line`; each must be
    answered 431."""
    socks = []
    for _ in range(conns):
        s = socket.create_connection(addr, 10)
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    for s in socks:
        try:
            for _ in range(lines):
                s.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            pass
    for s in socks:
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        s.close()
        assert out.startswith(b"HTTP/1.") and out[8:13] == b" 431 ", out[:100]


def test_header_flood_memory_bounded(site):
    """Header floods (no token needed), repeated: three connections each sending 24 header lines of 1 MiB
    (over max_field_bytes: the parser refuses the first) and one sending 1536 lines of 4 KiB (each line
    allowed: the 64 KiB head budget cuts it).  Every connection is answered 431, and the server keeps
    none of what was sent: after a warm-up round, three more rounds (≈ 234 MiB) grow it by < 10 MiB."""
    big = b"X-Flood: " + b"a" * (1 << 20) + b"\r\n"
    small = b"X-Flood: " + b"a" * 4085 + b"\r\n"
    rounds = []
    for _ in range(4):
        _flood(site["addr"], big, 24)
        _flood(site["addr"], small, 1536, conns=1)
        time.sleep(0.2)
        rounds.append(_rss_kb(site["pid"]))
    assert rounds[-1] - rounds[0] < 10 * 1024, rounds


def idle(addr, source=None):
    """A connection left idle between requests (keep-alive: no head deadline runs on it)."""
    s = socket.create_connection(addr, 10, source_address=source)
    s.sendall(b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    out = b""
    while b"\r\n\r\n" not in out or len(out.split(b"\r\n\r\n", 1)[1]) < int(
            out.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0]):
        out += s.recv(65536)
    assert out.startswith(b"HTTP/1.1 404"), out[:100]
    return s


def test_connection_caps(site):
    """Past max_connections_per_client a new connection is answered 429 and closed; others still work."""
    host, port = site["addr"]
    held = [idle((host, port)) for _ in range(LIMITS["max_connections_per_client"])]
    try:
        out, _ = raw(site["addr"], b"")
        assert answer(out)[0] == 429 and "too many connections" in answer(out)[1]["error"]
        # another client address (127.0.0.2 is loopback too) is not affected
        c = http.client.HTTPConnection(host, port, timeout=10, source_address=("127.0.0.2", 0))
        c.request("GET", "/v1/status", headers={"Authorization": f"Bearer {site['tokens']['viewer']}"})
        assert c.getresponse().status == 200
        c.close()
    finally:
        for s in held:
            s.close()


def test_bad_requests_logged_once_without_traceback(site):
    out, _ = raw(site["addr"], b"POST /v1/read HTTP/1.1\r\nHost: x\r\nContent-Length: xyz\r\n\r\n")
    assert answer(out)[0] == 400
    time.sleep(0.2)
    lines = [json.loads(x) for x in site["log"].read_text().splitlines() if x.startswith("{")]
    bad = [x for x in lines if x["event"] == "api bad request"]
    assert bad and all("status" in x and "client" in x for x in bad)
    assert "Traceback" not in site["log"].read_text()
    # a refused command: one line each (a failed login says so, and no second line)
    for t in (None, "gh_00000000_once", site["tokens"]["viewer"]):
        call(site["api"], "POST", "/v1/disconnect", {"target": f"once-{t}", "reason": "r"}, t)
    time.sleep(0.2)
    lines = [json.loads(x) for x in site["log"].read_text().splitlines() if x.startswith("{")]
    for t in (None, "gh_00000000_once", site["tokens"]["viewer"]):
        mine = [x for x in lines if x.get("target") == f"once-{t}"]
        assert len(mine) == 1 and mine[0]["status"] in (401, 403, 429), mine


# --- 2. every refusal audited -----------------------------------------------------------------------------
def test_every_refusal_audited(site):
    api, tok = site["api"], site["tokens"]
    m = meter_ids(site)[2]
    cases = [   # (method, path, body, token, status, command)
        ("POST", "/v1/disconnect", {"target": m, "reason": "r"}, None, 401, "disconnect"),
        ("POST", "/v1/disconnect", {"target": m, "reason": "r"}, "gh_00000000_nope", 401, "disconnect"),
        ("POST", "/v1/disconnect", {"target": m, "reason": "r"}, tok["viewer"], 403, "disconnect"),
        ("POST", "/v1/disconnect", {"target": "999999", "reason": "r"}, tok["operator"], 404, "disconnect"),
        ("POST", "/v1/disconnect", {"target": m}, tok["operator"], 400, "disconnect"),
        ("POST", "/v1/protect", {"target": m, "on": "yes"}, tok["admin"], 400, "protect"),
        ("DELETE", "/v1/tokens/nothere", None, tok["admin"], 400, "tokens"),
        ("GET", "/v1/tokens", None, tok["operator"], 403, "tokens"),
    ]
    before = len(audit(site))
    for method, path, body, t, want, _cmd in cases:
        s, r = call(api, method, path, body, t)
        assert s == want, (path, s, r)
    # a client id reused for another command: 409
    s, r = call(api, "POST", "/v1/read", {"target": m, "registers": ["energy"], "client_id": "hard-1"}, tok["operator"])
    assert s == 200
    s, r = call(api, "POST", "/v1/timesync", {"target": m, "client_id": "hard-1"}, tok["operator"])
    assert s == 409
    new = [r for r in audit(site)[before:] if r["outcome"] == "rejected"]
    got = [(r["command"], r["http_status"]) for r in new]
    for _m, _p, _b, _t, want, cmd in cases:
        assert (cmd, want) in got, (cmd, want, got)
    assert ("timesync", 409) in got
    for r in new:
        assert r["who"] and r["client_addr"] == "127.0.0.1" and r["error"]
    anon = [r for r in new if r["http_status"] == 401]
    assert {r["who"] for r in anon} == {"anonymous"} and all(r["target"] == f"{m}" for r in anon)
    forbidden = next(r for r in new if r["http_status"] == 403 and r["command"] == "disconnect")
    assert forbidden["who"] == "viewer" and forbidden["token_id"]


def test_token_ids_for_admins_only(site):
    api, tok = site["api"], site["tokens"]
    _s, v = call(api, "GET", "/v1/audit?limit=50", None, tok["viewer"])
    _s, a = call(api, "GET", "/v1/audit?limit=50", None, tok["admin"])
    assert not any("token_id" in r for r in v["records"])
    assert any(r.get("token_id") for r in a["records"])


# --- 4. authentication ----------------------------------------------------------------------------------
def test_brute_force_throttled_per_address_and_per_token_id(site):
    host, port = site["addr"]
    ids = CL.TokenStore(CL.tokens_path(site["dir"])).list()
    victim = next(e["id"] for e in ids if e["name"] == "admin2")

    def attempt(source, token):
        c = http.client.HTTPConnection(host, port, timeout=10, source_address=(source, 0))
        c.request("GET", "/v1/status", headers={"Authorization": f"Bearer {token}"})
        r = c.getresponse()
        out = r.status, r.getheader("Retry-After"), json.loads(r.read())
        c.close()
        return out
    # per address: two free failures, then 429 with Retry-After, the secret not even tried
    codes = [attempt("127.0.0.3", f"gh_{victim}_guess{i}")[0] for i in range(2)]
    s, retry, body = attempt("127.0.0.3", f"gh_{victim}_guess3")
    assert codes == [401, 401] and s == 429 and int(retry) >= 1 and "failed logins" in body["error"]
    # per token id: another address guessing the same id is delayed too
    s, _retry, _ = attempt("127.0.0.4", f"gh_{victim}_guess4")
    assert s == 429
    # a token already proven keeps working from the throttled address (no lock-out of its owner)
    assert attempt("127.0.0.3", site["tokens"]["viewer"])[0] == 200
    # the delay grows: after it passes, the next failure waits twice as long
    time.sleep(float(retry) + 0.2)
    assert attempt("127.0.0.3", f"gh_{victim}_guess5")[0] == 401
    s, retry2, _ = attempt("127.0.0.3", f"gh_{victim}_guess6")
    assert s == 429 and int(retry2) > int(retry)
    time.sleep(0.2)
    events = [json.loads(x) for x in site["log"].read_text().splitlines() if x.startswith("{")]
    assert sum(e["event"] == "api login failed" and e.get("client") == "127.0.0.3" for e in events) >= 3
    assert any(e["event"] == "api login throttled" for e in events)
    rej = [r for r in audit(site) if r.get("client_addr") == "127.0.0.3" and r["outcome"] == "rejected"]
    assert {r["http_status"] for r in rej} >= {401, 429}


def test_expiry_and_rotation(site):
    api, d = site["api"], site["dir"]
    store = CL.TokenStore(CL.tokens_path(d))
    _tid, short = store.add("shortlived", "viewer", expires_days=1 / 86400)
    time.sleep(1.2)
    s, r = call(api, "GET", "/v1/status", None, short)
    assert s == 401 and "expired" in r["error"]
    # rotation: the new token works, the old one ends (overlap 0)
    _tid, old = store.add("rotating", "viewer")
    r = cli("token", "rotate", "rotating", "--overlap", "0", "--data", str(d), "--json")
    assert r.returncode == 0, r.stderr
    new = json.loads(r.stdout)["token"]
    assert call(api, "GET", "/v1/status", None, new)[0] == 200
    assert call(api, "GET", "/v1/status", None, old)[0] == 401
    # token add defaults to 90 days and says when
    r = cli("token", "add", "ninety", "--role", "viewer", "--data", str(d), "--json")
    e = json.loads(r.stdout)
    assert e["expires_utc"][:10] == time.strftime("%Y-%m-%d", time.gmtime(time.time() + 90 * 86400))
    recs = audit(site)
    assert any(x["command"] == "token-add" and x["target"] == f"token:{e['id']}" and x["who"].startswith("local:")
               for x in recs)
    assert any(x["command"] == "token-rotate" for x in recs)
    r = cli("token", "revoke", "ninety", "--data", str(d))
    assert r.returncode == 0 and any(x["command"] == "token-revoke" for x in audit(site))
    for p in (CL.audit_path(d), CL.tokens_path(d)):
        assert oct(os.stat(p).st_mode & 0o777) == "0o600", p


def test_token_never_from_argv(site, tmp_path):
    env = dict(os.environ, GRIDHEAD_API=site["api"])
    env.pop("GRIDHEAD_TOKEN", None)
    r = cli("status", "--token", site["tokens"]["viewer"], env=env)
    assert r.returncode == 2 and "ps" in r.stderr and r.stderr.count("\n") == 1
    f = tmp_path / "tok"
    f.write_text(site["tokens"]["viewer"] + "\n")
    f.chmod(0o600)
    r = cli("status", "--token-file", str(f), "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["online"] == 2, r.stderr
    r = cli("status", "--json", env=dict(env, GRIDHEAD_TOKEN=site["tokens"]["viewer"]))
    assert r.returncode == 0
    assert "--token " not in cli("status", "--help").stdout


# --- 6. two-person rule -------------------------------------------------------------------------------------
def test_bulk_disconnect_waits_for_a_second_admin(site, tmp_path):
    api, tok = site["api"], site["tokens"]
    ids = meter_ids(site)[4:8]                        # 4 > bulk_approval = 3
    f = tmp_path / "meters.txt"
    f.write_text("\n".join(ids) + "\n")
    env = dict(os.environ, GRIDHEAD_API=api, GRIDHEAD_TOKEN=tok["admin"])
    r = cli("disconnect", "--file", str(f), "--reason", "arrears 2026-07", "--yes", "--json", env=env)
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["state"] == "pending_approval" and job["targets"] == 4
    jid = job["job"]
    # nothing acted yet: the relays are closed
    s, rd = call(api, "POST", "/v1/read", {"target": ids[0], "registers": ["relay"]}, tok["viewer"])
    assert s == 200 and "relay_open': True" not in str(rd["values"])
    # the one who asked, and an operator, may not approve
    assert call(api, "POST", f"/v1/jobs/{jid}/approve", {}, tok["admin"])[0] == 403
    assert call(api, "POST", f"/v1/jobs/{jid}/approve", {}, tok["operator"])[0] == 403
    r = cli("approve", jid, "--json", env=dict(env, GRIDHEAD_TOKEN=tok["admin2"]))
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(out) == 4 and all(o["outcome"] == "ok" for o in out), out
    recs = audit(site)
    mine = [x for x in recs if x.get("job") == jid]
    assert [x["outcome"] for x in mine if x["command"] == "job-disconnect"] == ["pending_approval", "ok"]
    assert any(x["command"] == "approve" and x["who"] == "admin2" for x in mine)
    trips = [x for x in mine if x["command"] == "disconnect" and x["outcome"] == "ok"]
    assert len(trips) == 4 and all(x["approved_by"] == "admin2" and x["who"] == "admin" for x in trips)
    assert sum(x["command"] == "approve" and x["outcome"] == "rejected" and x["target"] == f"job:{jid}"
               for x in recs) == 2
    # a small bulk (≤ bulk_approval) runs at once
    s, r = call(api, "POST", "/v1/bulk", {"command": "reconnect", "targets": ids[:3]}, tok["operator"])
    assert s == 202 and r["state"] == "running"
    for x in ids:
        call(api, "POST", "/v1/reconnect", {"target": x}, tok["operator"])


def test_protection_off_waits_for_a_second_admin(site):
    api, tok = site["api"], site["tokens"]
    m = meter_ids(site)[3]
    assert call(api, "POST", "/v1/protect", {"target": m, "on": True}, tok["admin"])[0] == 200
    s, r = call(api, "POST", "/v1/protect", {"target": m, "on": False}, tok["admin"])
    assert s == 202 and r["outcome"] == "pending_approval"
    jid = r["job"]
    s, r = call(api, "POST", "/v1/disconnect", {"target": m, "reason": "still protected"}, tok["operator"])
    assert s == 409 and "保电" in r["error"]
    s, r = call(api, "GET", "/v1/jobs", None, tok["viewer"])
    assert any(j["job"] == jid and j["state"] == "pending_approval" for j in r["jobs"])
    s, r = call(api, "POST", f"/v1/jobs/{jid}/approve", {}, tok["admin2"])
    assert s == 200 and r["outcome"] == "ok" and r["approved_by"] == "admin2" and r["who"] == "admin"
    assert call(api, "POST", f"/v1/jobs/{jid}/approve", {}, tok["admin2"])[0] == 409       # once
    s, r = call(api, "POST", "/v1/disconnect", {"target": m, "reason": "now allowed"}, tok["operator"])
    assert s == 200
    call(api, "POST", "/v1/reconnect", {"target": m}, tok["operator"])


# --- 3. tamper evidence ---------------------------------------------------------------------------------------
def _history(d):
    """An audit log with 保电 on for meter 1 among other records, as a running head-end leaves it."""
    log = CL.AuditLog(CL.audit_path(d), CL.audit_key(d))
    for i, rec in enumerate([
            {"command": "read", "target": "meter:2", "outcome": "ok"},
            {"command": "protect", "target": "meter:1", "outcome": "ok", "params": json.dumps({"on": True})},
            {"command": "disconnect", "target": "meter:2", "outcome": "rejected", "http_status": 403},
            {"command": "timesync", "target": "meter:2", "outcome": "ok"}]):
        log.append_sync({"who": "admin", "role": "admin", "command_id": f"c{i}", **rec})
    log.close()
    return CL.audit_path(d)


def test_tampered_log_detected_and_start_refused(tmp_path):
    d = tmp_path
    make_fleet(d, 1, 2)
    path = _history(d)
    assert CL.verify(path, CL.audit_key(d))["ok"]
    lines = path.read_bytes().split(b"\n")
    # someone lifts the protection of meter 1 by editing the file, and garbles a later line
    lines[1] = lines[1].replace(b'\\"on\\": true', b'\\"on\\": false')
    lines[3] = b'{"seq": 4, "command": "timesync", "outcome": "ok"'
    path.write_bytes(b"\n".join(lines))
    r = cli("control-log", "verify", "--data", str(d))
    assert r.returncode == 1 and "line 2 (seq 2): MAC mismatch" in r.stderr, r.stderr
    # the SQL view shows the garbled line instead of skipping it
    r = cli("sql", "--data", str(d), "--format", "json", "SELECT line_no, seq, broken, raw FROM audit_log ORDER BY line_no")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 4 and rows[3]["broken"] == "not a JSON record" and rows[3]["raw"].startswith('{"seq": 4')
    # the head-end does not rebuild its 保电 list from it: one line, exit 1
    he, ready, err = serve(d, log_name="refused.log")
    assert ready is None and he.returncode == 1
    text = err.read_text().strip()
    assert text.count("\n") == 0 and "audit log chain broken: line 2 (seq 2)" in text and "--accept-audit-break" in text
    # told to accept it, it starts and records the acceptance with the breaks it accepted
    he, ready, err = serve(d, "", "--accept-audit-break", log_name="accepted.log")
    try:
        assert ready is not None, err.read_text()
    finally:
        stop(he)
    acc = [x for x in CL.read_records(path) if x.get("command") == "accept-audit-break"]
    assert len(acc) == 1 and [b["line"] for b in json.loads(acc[0]["params"])["breaks"]] == [2, 3, 4, 5][:len(
        json.loads(acc[0]["params"])["breaks"])] and acc[0]["who"].startswith("local:")
    # an accepted break does not stop the next start; verify still names it
    r = CL.verify(path, CL.audit_key(d))
    assert not r["unaccepted"] and r["accepted"][0]["line"] == 2
    r = cli("control-log", "verify", "--data", str(d))
    assert r.returncode == 1 and "line 2 (seq 2)" in r.stderr and "accepted" in r.stderr


def test_removed_and_reordered_records_named(tmp_path):
    path = _history(tmp_path)
    key = CL.audit_key(tmp_path)
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:1] + lines[2:]))                    # seq 2 (the 保电 record) removed
    r = CL.verify(path, key)
    assert r["breaks"][0]["line"] == 2 and "seq 2 removed" in r["breaks"][0]["problem"]
    path.write_bytes(b"\n".join([lines[0], lines[2], lines[1]] + lines[3:]))   # 2 and 3 swapped
    r = CL.verify(path, key)
    assert r["breaks"][0]["line"] == 2 and r["breaks"][0]["seq"] == 3
    path.write_bytes(b"\n".join(lines))
    assert CL.verify(path, key)["ok"]
    assert not CL.verify(path, b"another key")["ok"]                   # forged with another key: detected


# --- 5. TLS -----------------------------------------------------------------------------------------------------
def _pki(d):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made here (cryptography)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def make(cn, issuer=None, issuer_key=None, ca=False, san=None, usage=None):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(issuer.subject if issuer else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if ca:
            b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                              content_commitment=False, key_encipherment=False, data_encipherment=False,
                                              key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        cert = b.sign(issuer_key or key, hashes.SHA256())
        return cert, key

    def write(name, cert, key):
        (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    ca, ca_key = make("gridhead test CA", ca=True)
    write("ca", ca, ca_key)
    write("server", *make("127.0.0.1", ca, ca_key, san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                          usage=ExtendedKeyUsageOID.SERVER_AUTH))
    write("client", *make("operator-laptop-7", ca, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH))


def test_tls_required_off_loopback_and_mutual_tls(tmp_path):
    import ssl
    import urllib.error
    import urllib.request
    d = tmp_path
    make_fleet(d, 1, 2)
    tok = CL.TokenStore(CL.tokens_path(d)).add("viewer", "viewer")[1]
    # a non-loopback address without TLS: refused before anything starts, one line
    he, ready, err = serve(d, 'host = "0.0.0.0"\n', log_name="plain.log")
    assert ready is None and he.returncode == 2
    assert err.read_text().count("\n") == 1 and "not a loopback address and no TLS" in err.read_text()
    _pki(d)
    he, ready, err = serve(d, f'tls_cert = "{d}/server.pem"\ntls_key = "{d}/server.key"\n'
                              f'tls_client_ca = "{d}/ca.pem"\n', log_name="tls.log")
    try:
        assert ready is not None and ready["api"].startswith("https://127.0.0.1:"), err.read_text()
        url = ready["api"] + "/v1/status"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {tok}"})
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        with pytest.raises(OSError):                   # no client certificate: the handshake fails
            urllib.request.urlopen(req, context=ctx, timeout=10).read()
        ctx.load_cert_chain(str(d / "client.pem"), str(d / "client.key"))
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            assert r.status == 200
        env = dict(os.environ, GRIDHEAD_API=ready["api"], GRIDHEAD_TOKEN=tok)
        r = cli("status", "--json", "--cafile", str(d / "ca.pem"), "--client-cert", str(d / "client.pem"),
                "--client-key", str(d / "client.key"), env=env)
        # known: the fleet's terminal and the dlt698 peer terminal make_fleet adds to the archive
        assert r.returncode == 0 and json.loads(r.stdout)["known"] == 2, r.stderr
        req = urllib.request.Request(ready["api"] + "/v1/tokens", headers={"Authorization": f"Bearer {tok}"})
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, context=ctx, timeout=10)
        assert exc.value.code == 403
    finally:
        stop(he)
    rej = [x for x in CL.read_records(CL.audit_path(d)) if x["outcome"] == "rejected"]
    assert rej and rej[-1]["client_cert"] == "operator-laptop-7" and rej[-1]["http_status"] == 403


def test_total_connection_cap(site):
    """Past max_connections in all (whatever the addresses) a connection is answered 503 and closed."""
    host, port = site["addr"]
    held = []
    try:
        for k in range(LIMITS["max_connections"]):
            src = f"127.0.1.{1 + k // LIMITS['max_connections_per_client']}"
            held.append(idle((host, port), (src, 0)))
        out, _ = raw(site["addr"], b"", source=("127.0.2.1", 0))
        assert answer(out)[0] == 503 and "too many connections" in answer(out)[1]["error"]
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert call(site["api"], "GET", "/v1/status", None, site["tokens"]["viewer"])[0] == 200


def test_insecure_flag_allows_a_proxy_setup():
    from gridhead.headend.control import ConfigError, ControlConfig
    ControlConfig(host="127.0.0.1").check_listen()
    ControlConfig(host="::1").check_listen()
    ControlConfig(host="0.0.0.0", insecure=True).check_listen()
    with pytest.raises(ConfigError, match="not a loopback address"):
        ControlConfig(host="10.1.2.3").check_listen()


def test_pending_job_survives_a_restart(tmp_path):
    d = tmp_path
    make_fleet(d, 1, 2)
    store = CL.TokenStore(CL.tokens_path(d))
    a1, a2 = store.add("a1", "admin")[1], store.add("a2", "admin")[1]
    he, ready, err = serve(d, log_name="one.log")
    try:
        s, r = call(ready["api"], "POST", "/v1/protect", {"target": "1", "on": False}, a1)
        assert s == 202 and r["outcome"] == "pending_approval"
        jid = r["job"]
    finally:
        stop(he)
    he, ready, err = serve(d, log_name="two.log")
    try:
        s, r = call(ready["api"], "GET", f"/v1/jobs/{jid}", None, a2)
        assert s == 200 and r["state"] == "pending_approval" and r["requested_by"] == "a1"
        assert call(ready["api"], "POST", f"/v1/jobs/{jid}/approve", {}, a1)[0] == 403
        s, r = call(ready["api"], "POST", f"/v1/jobs/{jid}/approve", {}, a2)
        # approved and run: the meter's concentrator is offline, so the command is refused (and recorded)
        assert s == 409 and r["outcome"] == "refused" and "offline" in r["error"] and r["approved_by"] == "a2"
    finally:
        stop(he)


def test_limits_are_config_keys_with_safe_defaults():
    from gridhead.headend.control import ConfigError, ControlConfig
    c = ControlConfig()
    assert (c.max_line_bytes, c.max_field_bytes, c.max_head_bytes, c.max_body_bytes) == (8192, 8192, 65536, 1 << 20)
    assert (c.head_timeout_s, c.body_timeout_s, c.bulk_approval) == (10.0, 30.0, 100)
    assert ControlConfig.from_dict({"max_body_bytes": 4096, "bulk_approval": 0}).max_body_bytes == 4096
    for bad in ({"max_body_bytes": 0}, {"head_timeout_s": -1}, {"max_registers": "x"}, {"max_conections": 3}):
        with pytest.raises(ConfigError):
            ControlConfig.from_dict(bad)

"""Control API durability and the offline queue, with real processes: a head-end killed with SIGKILL
loses no audit record of a command it answered; commands to an offline terminal are refused or queued,
a queued one expires (recorded) or runs when the terminal logs in (with its read-back)."""

from __future__ import annotations

import json
import signal
import threading
import time

from gridhead.storage import control_log as CL

from tests.headend.test_control import call, make_fleet, start, stop, wait_online


def _serve(d):
    cfg = d / "he.toml"
    cfg.write_text(f'listen_port = 0\ndata_dir = "{d}"\nrequest_timeout_s = 5\n[control]\nport = 0\n'
                   f'control_per_s = 1000\ncontrol_burst = 1000\n')
    p = start(["serve", "--config", str(cfg)])
    return p, json.loads(p.stdout.readline())


def test_kill9_loses_no_answered_audit_record(tmp_path):
    make_fleet(tmp_path, 2, 3)
    tok = CL.TokenStore(CL.tokens_path(tmp_path)).add("op", "admin")[1]
    he, ready = _serve(tmp_path)
    sim = start(["sim", "--data", str(tmp_path), "--connect", f"127.0.0.1:{ready['port']}", "--no-report",
                 "--stats-every", "0"])
    api = ready["api"]
    answered, stop_flag = [], threading.Event()
    try:
        wait_online(api, tok, 2)

        def worker(k):
            i = 0
            while not stop_flag.is_set():
                i += 1
                try:
                    s, r = call(api, "POST", "/v1/timesync", {"target": str(1 + (k + i) % 6), "client_id": f"w{k}-{i}"},
                                tok)
                except OSError:
                    return
                if s == 200:
                    answered.append(r)
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        he.send_signal(signal.SIGKILL)               # mid-stream: requests in flight
        he.wait(10)
        stop_flag.set()
        for t in threads:
            t.join(10)
    finally:
        stop(sim)
        stop(he)
    assert len(answered) >= 5
    on_disk = {(r["command_id"], r["outcome"], r["seq"]) for r in CL.read_records(CL.audit_path(tmp_path))}
    missing = [r for r in answered if (r["command_id"], r["outcome"], r["seq"]) not in on_disk]
    assert not missing, f"{len(missing)} answered commands without their audit record"


def test_offline_refused_queued_expired_and_run_on_login(tmp_path):
    routes = make_fleet(tmp_path, 1, 2)
    tok = CL.TokenStore(CL.tokens_path(tmp_path)).add("op", "admin")[1]
    he, ready = _serve(tmp_path)
    api, sim = ready["api"], None
    m = str(routes[0]["meter_id"])
    try:
        s, r = call(api, "POST", "/v1/disconnect", {"target": m, "reason": "arrears"}, tok)
        assert s == 409 and r["outcome"] == "refused" and "offline" in r["error"]
        s, r = call(api, "POST", "/v1/disconnect", {"target": m, "reason": "arrears", "offline": "queue",
                                                   "expires_s": 1}, tok)
        assert s == 202 and r["outcome"] == "queued"
        short = r["command_id"]
        s, r = call(api, "POST", "/v1/disconnect", {"target": m, "reason": "arrears", "offline": "queue",
                                                   "expires_s": 600, "client_id": "q-1"}, tok)
        assert s == 202
        long_id = r["command_id"]
        s, r2 = call(api, "POST", "/v1/disconnect", {"target": m, "reason": "arrears", "offline": "queue",
                                                    "expires_s": 600, "client_id": "q-1"}, tok)
        assert s == 202 and r2["duplicate"] and r2["command_id"] == long_id        # queued once
        time.sleep(1.5)
        sim = start(["sim", "--data", str(tmp_path), "--connect", f"127.0.0.1:{ready['port']}", "--no-report",
                     "--stats-every", "0"])
        wait_online(api, tok, 1)
        end = time.time() + 15
        while time.time() < end:
            recs = CL.read_records(CL.audit_path(tmp_path))
            if any(x["command_id"] == long_id and x["outcome"] == "ok" for x in recs):
                break
            time.sleep(0.2)
        by = {}
        for x in recs:
            by.setdefault(x["command_id"], []).append(x["outcome"])
        assert by[short] == ["queued", "expired"]
        assert by[long_id] == ["queued", "pending", "ok"]
        done = [x for x in recs if x["command_id"] == long_id][-1]
        assert json.loads(done["readback"])["relay_open"] is True
    finally:
        if sim is not None:
            stop(sim)
        stop(he)


def test_sigterm_with_keepalive_clients_closes_them_quietly(tmp_path):
    """A stop with operators' keep-alive connections open (idle, between requests): each sees EOF, the
    head-end exits 0 and writes no traceback (Python 3.11's stream callback raised on a cancelled
    connection handler)."""
    import socket
    make_fleet(tmp_path, 1, 2)
    tok = CL.TokenStore(CL.tokens_path(tmp_path)).add("op", "viewer")[1]
    he, ready = _serve(tmp_path)
    host, port = ready["api"].split("//", 1)[1].rsplit(":", 1)
    socks = []
    try:
        for _ in range(3):
            s = socket.create_connection((host, int(port)), 5)
            s.sendall(f"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(65536)
            assert head.startswith(b"HTTP/1.1 200") and b"Connection: keep-alive" in head, head[:200]
            socks.append(s)
        he.send_signal(signal.SIGTERM)
        assert he.wait(20) == 0
        for s in socks:                                # the rest of the answer, then EOF (no reset)
            while s.recv(65536):
                pass
    finally:
        for s in socks:
            s.close()
        stop(he)
    err = he.stderr.read()
    assert "Traceback" not in err and "Exception in callback" not in err, err[-2000:]

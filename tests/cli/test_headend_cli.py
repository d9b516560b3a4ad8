"""`gridhead serve` as a real process: config file, archive from the generator, a terminal of the archive
logs in over 127.0.0.1 and pushes a report, /metrics scraped, SIGTERM stops it gracefully (report in the
Parquet lake), and a broken config is one line with exit code."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from gridhead.headend import profile as P
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698.axdr import Data, DateTimeS
from gridhead.protocols.dlt698.frame import Frame, Framer, ServerAddress
from gridhead.storage import generator
from gridhead.storage.archive import Archive

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    generator.generate(d / "gen", 60, 1, seed=3, write_lake=False)
    with Archive(d / "archive.duckdb") as a:
        a.import_files(sorted((d / "gen" / "archive-files").glob("*.csv")))
        routes = a.meter_routes().to_pylist()
    return d, routes


def _recv_apdu(sock, framer):
    while True:
        f = framer.next_frame()
        if f is not None:
            return A.decode_apdu(f.apdu)
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        framer.feed(data)


def test_serve_process_login_report_metrics_and_graceful_stop(data_dir, tmp_path):
    d, routes = data_dir
    term = next(r for r in routes if r["terminal_address"] and r["terminal_protocol"] == "698")
    meter = term["comm_address"]
    cfg = tmp_path / "headend.toml"
    cfg.write_text(f'listen_port = 0\nmetrics_port = 0\ndata_dir = "{d}"\nheartbeat_multiple = 2\n')
    proc = subprocess.Popen([sys.executable, "-m", "gridhead.cli", "serve", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        sock = socket.create_connection(("127.0.0.1", ready["port"]), timeout=10)
        sa = ServerAddress(term["terminal_address"])
        sock.sendall(Frame(sa, 0x10, 0x81, A.LinkRequest(1, 0, 60, (2024, 6, 1, 6, 0, 0, 0, 0)).to_bytes()).to_bytes())
        framer = Framer()
        assert _recv_apdu(sock, framer).outcome == 0
        t = Data(28, DateTimeS(2024, 6, 1, 0, 0, 0))
        row = (Data(85, A.tsa(meter)), t, t, t, Data(1, (t, Data(1, (Data(6, 4242),)), Data(0, None), Data(0, None),
                                                             Data(0, None))))
        note = A.ReportNotificationRecordList(3, (A.ResultRecord(P.OAD_TASK_RECORDS, P.DAILY_RCSD, (row,)),))
        sock.sendall(Frame(sa, 0x10, 0x83, note.to_bytes()).to_bytes())
        assert _recv_apdu(sock, framer).piid == 3
        body = urllib.request.urlopen(f"http://127.0.0.1:{ready['metrics_port']}/metrics", timeout=5).read().decode()
        assert "gridhead_sessions_online 1.0" in body and "gridhead_readings_total 1.0" in body
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert json.loads(out.splitlines()[-1]) == {"stopped": True, "readings": 1, "reports": 1}
        events = [json.loads(line)["event"] for line in err.splitlines()]
        assert events[0] == "started" and "login" in events and events[-1] == "stopped"
        import duckdb
        got = duckdb.sql(f"SELECT value FROM read_parquet('{d}/lake/readings/**/*.parquet')").fetchall()
        assert got == [(4242,)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_bad_config_is_one_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("listen_port = 'x'\nwhatever = 1\n")
    r = subprocess.run([sys.executable, "-m", "gridhead.cli", "serve", "--config", str(cfg)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "unknown key(s) whatever" in r.stderr
    r = subprocess.run([sys.executable, "-m", "gridhead.cli", "serve", "--data", str(tmp_path / "none"), "--port", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no archive" in r.stderr and "Traceback" not in r.stderr


def test_a_second_sigterm_during_the_stop_does_not_skip_the_flush(data_dir, tmp_path):
    """Issue 19 item 6: the first SIGTERM starts the graceful stop; a second one while it waits (here for
    the collection scheduler, stuck on a terminal that never answers) shortens the wait but the ingest is
    still flushed: exit 0, the acknowledged report's reading is in the lake without a WAL replay."""
    import datetime as dt
    import shutil
    d, routes = data_dir
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(d / "archive.duckdb", data / "archive.duckdb")
    term = next(r for r in routes if r["terminal_address"] and r["terminal_protocol"] == "698")
    cfg = tmp_path / "headend.toml"
    first = (dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date() - dt.timedelta(days=1)).isoformat()
    cfg.write_text(f'listen_port = 0\ndata_dir = "{data}"\nrequest_timeout_s = 60\nrequest_retries = 0\n'
                   f'[collect]\nfirst_day = {first}\nwait_online = "1s"\ncompact = false\n')
    proc = subprocess.Popen([sys.executable, "-m", "gridhead.cli", "serve", "--config", str(cfg), "--no-api"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        sock = socket.create_connection(("127.0.0.1", ready["port"]), timeout=30)
        sa = ServerAddress(term["terminal_address"])
        sock.sendall(Frame(sa, 0x10, 0x81, A.LinkRequest(1, 0, 60, (2024, 6, 1, 6, 0, 0, 0, 0)).to_bytes()).to_bytes())
        framer = Framer()
        assert _recv_apdu(sock, framer).outcome == 0
        t = Data(28, DateTimeS(2024, 6, 1, 0, 0, 0))
        row = (Data(85, A.tsa(term["comm_address"])), t, t, t,
               Data(1, (t, Data(1, (Data(6, 777),)), Data(0, None), Data(0, None), Data(0, None))))
        note = A.ReportNotificationRecordList(3, (A.ResultRecord(P.OAD_TASK_RECORDS, P.DAILY_RCSD, (row,)),))
        sock.sendall(Frame(sa, 0x10, 0x83, note.to_bytes()).to_bytes())
        assert _recv_apdu(sock, framer).piid == 3                     # acknowledged: durable in the WAL
        req = _recv_apdu(sock, framer)                                 # the scheduler's GET-Record: never answered
        assert isinstance(req, A.GetRequestRecord)
        proc.send_signal(signal.SIGTERM)
        for line in proc.stderr:                                       # the stop has begun ...
            if '"event": "stopping"' in line:
                break
        proc.send_signal(signal.SIGTERM)                               # ... and is hurried
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["stopped"] is True
        events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
        assert "stop hurried" in events and events[-1] == "stopped"
        sock.close()
        import duckdb
        got = duckdb.sql(f"SELECT value FROM read_parquet('{data}/lake/readings/**/*.parquet')").fetchall()
        assert got == [(777,)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

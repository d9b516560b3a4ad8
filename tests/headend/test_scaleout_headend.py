"""Two `gridhead serve` processes, each owning a shard of the terminal addresses (headend.shard), one lake:
a simulated fleet whose terminals dial their own shard pushes its daily REPORTs and the lake holds every
meter's daily frozen reading exactly once; each shard logged in only its own terminals and wrote through
its own WAL; a terminal dialling the wrong shard is refused with LINK result 2."""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import subprocess
import sys

import duckdb
import pytest

from gridhead.headend.sim import demo, model as sim_model
from gridhead.headend.shard import shard_of
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698.frame import Frame, Framer, ServerAddress
from gridhead.storage import archive, sql

from tests.conftest import ROOT

N_TERMINALS, N_METERS, SEED = 24, 4, 5

SIM = """
import datetime as dt, json, sys
from gridhead.headend import shard
from gridhead.headend.sim import model as sim_model, simulator
data, p0, p1, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fleet = sim_model.load_gen_dir(data, None)
sim = simulator.ShardedSimulator(fleet, shards=[("127.0.0.1", p0), ("127.0.0.1", p1)], seed=5, heartbeat_s=60,
                             start=dt.datetime.fromisoformat(start), speed=1.0, report_window_s=1.0,
                             report_retry_s=2.0)
simulator.run(sim, duration_s=float(sys.argv[5]), stats_every_s=0)
print(json.dumps(sim.summary()))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    first = demo.today_local() - dt.timedelta(days=3)
    sim_model.write_standalone_archive(d, N_TERMINALS, N_METERS, SEED, first)
    with archive.Archive(sql.archive_path(d)) as a:
        a.import_files(sorted((d / "archive-files").glob("*.csv")))
        terminals = a.columns("SELECT terminal_address FROM concentrators")["terminal_address"].tolist()
    return d, terminals


def _serve(d, tmp_path, index):
    cfg = tmp_path / f"shard{index}.toml"
    cfg.write_text(f'listen_port = 0\ndata_dir = "{d}"\nshard_index = {index}\nshard_count = 2\n')
    p = subprocess.Popen([sys.executable, "-m", "gridhead.cli", "serve", "--config", str(cfg), "--no-api"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p, json.loads(p.stdout.readline())["port"]


def _login(port, address) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(Frame(ServerAddress(address), 0x10, 0x81,
                        A.LinkRequest(1, 0, 60, (2024, 6, 1, 6, 0, 0, 0, 0)).to_bytes()).to_bytes())
        framer = Framer()
        while True:
            f = framer.next_frame()
            if f is not None:
                return A.decode_apdu(f.apdu).outcome
            framer.feed(s.recv(65536))


def test_two_shards_collect_the_fleet_completely_and_exactly_once(data, tmp_path):
    d, terminals = data
    mine = {i: {a for a in terminals if shard_of(a, 2) == i} for i in (0, 1)}
    assert mine[0] and mine[1]
    procs = [_serve(d, tmp_path, i) for i in (0, 1)]
    try:
        ports = [p for _, p in procs]
        # the wrong shard refuses (illegal device 非法设备), the right one accepts
        a0 = sorted(mine[0])[0]
        assert _login(ports[1], a0) == 2
        assert _login(ports[0], a0) == 0
        # the fleet starts 3 s before midnight (yesterday, so the frozen readings are in the past): every
        # terminal reports today's daily freeze to its own shard
        start = dt.datetime.combine(demo.today_local(), dt.time()) - dt.timedelta(seconds=3)
        sim = subprocess.run([sys.executable, "-c", SIM, str(d), str(ports[0]), str(ports[1]), start.isoformat(),
                              "9"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert sim.returncode == 0, sim.stderr[-2000:]
        summary = json.loads(sim.stdout.strip().splitlines()[-1])
        assert summary["reports_acked"] == N_TERMINALS, summary
    finally:
        outs = []
        for p, _ in procs:
            p.send_signal(signal.SIGTERM)
            outs.append(p.communicate(timeout=30))
    for i, (p, _) in enumerate(procs):
        assert p.returncode == 0, outs[i][1][-2000:]
        logins = {json.loads(line).get("address") for line in outs[i][1].splitlines()
                  if json.loads(line).get("event") == "login"}
        assert logins == mine[i]                 # every own terminal, no other
        assert json.loads(outs[i][0].splitlines()[-1])["reports"] >= len(mine[i])
    lake = d / "lake"
    assert (lake / "_wal-shard-00").is_dir() and (lake / "_wal-shard-01").is_dir()
    assert not list(lake.glob("_wal-shard-*/*.wal"))           # both logs published and retired
    con = duckdb.connect()
    rows = con.execute(f"""SELECT meter_id, register, epoch(ts_utc), count(*) AS n FROM
                           read_parquet('{lake}/readings/kind=daily/**/*.parquet') GROUP BY ALL""").fetchall()
    assert rows and max(r[3] for r in rows) == 1                     # exactly once
    day = con.execute(f"SELECT count(DISTINCT meter_id), count(DISTINCT ts_utc) FROM "
                      f"read_parquet('{lake}/readings/kind=daily/**/*.parquet')").fetchone()
    # completely: every meter of the fleet (its terminals' meters plus the archive's area meters), today's freeze
    assert day == (sim_model.load_gen_dir(d, None).n_meters, 1) and summary["meters"] == day[0]

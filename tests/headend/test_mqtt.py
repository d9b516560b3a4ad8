"""MQTT transport against a real mosquitto broker started here on a free port of 127.0.0.1.

The head-end (one MQTT client, headend.transport_mqtt.MqttBridge) and the simulated fleet (one MQTT
client per terminal, ``Simulator(mqtt=...)``) share one event loop; the broker is its own process.
Checked: login over the topics, a daily collection equal to the same fleet's over TCP and to the
simulator's register model, a broker restart followed by clean reconnects and a resumed collection, a
QoS 1 redelivered REPORT deduplicated by the lake, the Last Will taking a vanished terminal offline, and
a terminal speaking on another terminal's topic refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
import time

import pytest

from gridhead.headend.sim import demo, model as sim_model
from gridhead.headend.collect import Collector
from gridhead.headend.config import Config, MqttBroker
from gridhead.headend.server import HeadEnd
from gridhead.headend.transport_mqtt import MqttBridge
from gridhead.headend.sim.simulator import Simulator
from gridhead.storage import archive, sql
from tests.headend.test_fleet import _fresh

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if shutil.os.path.exists("/usr/sbin/mosquitto") else None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (.ci/run installs it)")

N_TERMINALS, N_METERS, SEED, DAYS = 6, 4, 5, 2


# --- the broker ----------------------------------------------------------------------------------------
class Broker:
    """A mosquitto process on 127.0.0.1:<port>, restartable on the same port."""

    def __init__(self, tmp, port: int | None = None) -> None:
        self.port = port or demo._free_port()
        self.conf = tmp / f"mosquitto-{self.port}.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        import socket
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mqttfleet")
    start = demo.today_local() - dt.timedelta(days=DAYS + 1)
    sim_model.write_standalone_archive(d, N_TERMINALS, N_METERS, SEED, start)
    with archive.Archive(sql.archive_path(d)) as a:
        a.import_files(sorted((d / "archive-files").glob("*.csv")))
    return d, [start + dt.timedelta(days=i) for i in range(1, DAYS + 1)]


# --- running a fleet and a head-end in one loop -------------------------------------------------------
class Rig:
    """Head-end + simulated fleet, over TCP (``broker`` None) or MQTT."""

    def __init__(self, data, broker_port: int | None, **sim_kw) -> None:
        mq = MqttBroker(port=broker_port, reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5) \
            if broker_port else None
        self.he = HeadEnd(Config(data_dir=str(data), listen_port=0, request_timeout_s=2, mqtt=mq))
        self.data, self.broker_port, self.sim_kw = data, broker_port, sim_kw
        self.sim = self.task = None

    async def __aenter__(self) -> "Rig":
        await self.he.start()
        fleet = sim_model.load_gen_dir(self.data)
        where = dict(mqtt=("127.0.0.1", self.broker_port)) if self.broker_port else \
            dict(connect=("127.0.0.1", self.he.port))
        kw = dict(seed=SEED, heartbeat_s=30, report=False, login_timeout_s=1.0)
        kw.update(self.sim_kw)
        self.sim = Simulator(fleet, **where, **kw)
        self.task = asyncio.get_running_loop().create_task(self.sim.run())
        await self.online(N_TERMINALS)
        return self

    async def online(self, n: int, within_s: float = 15.0) -> None:
        deadline = time.monotonic() + within_s
        while len(self.he.sessions) < n:
            assert time.monotonic() < deadline, f"{len(self.he.sessions)}/{n} terminals online"
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc) -> None:
        self.sim.stop()
        await asyncio.wait_for(self.task, 10)
        await self.he.stop()


def _daily_rows(data):
    with sql.Session(data) as s:
        return s.query("SELECT meter_id, date, ae_fwd, ae_fwd_t1, ae_fwd_t2, ae_fwd_t3, ae_fwd_t4 "
                       "FROM daily_frozen ORDER BY meter_id, date").to_pylist()


async def _collect(rig: Rig, days) -> dict:
    col = Collector(rig.he, seed=7)
    try:
        return await col.run_days("daily-frozen", days)
    finally:
        col.close()


def test_collection_over_mqtt_equals_tcp_and_the_model(fleet_dir, tmp_path, broker):
    src, days = fleet_dir
    tcp, mq = _fresh(src, tmp_path / "tcp"), _fresh(src, tmp_path / "mqtt")

    async def go():
        async with Rig(tcp, None) as r:
            out_tcp = await _collect(r, days)
        async with Rig(mq, broker.port) as r:
            t = r.he.sessions.get(sim_model.terminal_address(0))
            assert t is not None and t.peer.startswith("mqtt:gridhead/")      # logged in over the topics
            out_mqtt = await _collect(r, days)
            bridge = next(t for t in r.he.transports if isinstance(t, MqttBridge))
            assert bridge.connects == 1 and len(bridge.links) == N_TERMINALS
        return out_tcp, out_mqtt

    out_tcp, out_mqtt = asyncio.run(go())
    for out in (out_tcp, out_mqtt):
        assert out["before"]["success_first_pct"] == 100.0, out
    rows = _daily_rows(mq)
    assert len(rows) >= N_TERMINALS * N_METERS * DAYS          # (a replaced meter adds its successor)
    assert rows == _daily_rows(tcp)
    fleet = sim_model.load_gen_dir(mq)
    idx = {int(m): i for i, m in enumerate(fleet.meter_id)}
    for r in rows:
        i = idx[r["meter_id"]]
        want = fleet.model.frozen([i], fleet.model.day_of(r["date"]))[0][:5]
        if fleet.is645[i]:
            want = want % 10 ** 8
        assert [r["ae_fwd"], r["ae_fwd_t1"], r["ae_fwd_t2"], r["ae_fwd_t3"], r["ae_fwd_t4"]] == want.tolist()


def test_broker_restart_reconnects_and_collection_resumes(fleet_dir, tmp_path, broker):
    src, days = fleet_dir
    data = _fresh(src, tmp_path / "d")

    async def go():
        async with Rig(data, broker.port) as r:
            first = await _collect(r, days[:1])
            bridge = next(t for t in r.he.transports if isinstance(t, MqttBridge))
            broker.stop()                                       # every link drops with the broker
            deadline = time.monotonic() + 5
            while len(r.he.sessions) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(r.he.sessions) == 0 and not bridge.connected
            await asyncio.sleep(0.5)                            # a few failed reconnects (back-off)
            broker.start()
            await bridge.wait_connected(10)
            await r.online(N_TERMINALS, 20)                    # the terminals reconnect and log in again
            second = await _collect(r, days)                   # resumes: only the day not yet collected
            return first, second, bridge.connects

    first, second, connects = asyncio.run(go())
    assert first["before"]["success_first_pct"] == 100.0
    assert [c["date"] for c in second["collected"]] == [days[1].isoformat()]
    assert second["before"]["success_first_pct"] == 100.0 and connects == 2
    assert len(_daily_rows(data)) >= N_TERMINALS * N_METERS * DAYS


def test_redelivered_report_is_deduplicated_by_the_lake(fleet_dir, tmp_path, broker):
    """QoS 1 is at-least-once: the same REPORT frame published twice is acknowledged twice and stored once."""
    import aiomqtt

    from gridhead.headend.transport_mqtt import topic
    src, days = fleet_dir
    data = _fresh(src, tmp_path / "d")
    fleet = sim_model.load_gen_dir(data)

    async def go():
        async with Rig(data, broker.port) as r:
            sim = r.sim
            t = sim.terminals[0]
            day = days[0]
            frame = sim._frame(t, 0x83, sim.answers.report(t.meters, fleet.model.day_of(day), 9, sim.now()), 0)
            acks = []
            r.he.on_report.append(lambda term, n, batches: acks.append(sum(len(b) for _k, b in batches)))
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="redeliver") as c:
                for _ in range(2):
                    await c.publish(topic("gridhead", t.address, "up"), frame, qos=1)
            deadline = time.monotonic() + 5
            while len(acks) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return acks, len(t.meters)

    acks, meters = asyncio.run(go())
    assert len(acks) == 2 and acks[0] == acks[1] > 0          # both copies stored durably and acknowledged
    rows = _daily_rows(data)
    assert len(rows) == meters and len({(r["meter_id"], r["date"]) for r in rows}) == meters


def test_last_will_takes_a_vanished_terminal_offline_and_foreign_topics_are_refused(fleet_dir, tmp_path, broker):
    import aiomqtt

    from gridhead.headend.transport_mqtt import topic
    src, _days = fleet_dir
    data = _fresh(src, tmp_path / "d")

    async def go():
        async with Rig(data, broker.port) as r:
            a0, a1 = sim_model.terminal_address(0), sim_model.terminal_address(1)
            t0 = r.sim.by_address[a0]
            r.sim.loop.call_soon(lambda: t0.conn.transport.abort())      # power lost: no DISCONNECT
            t0.stopped = True                                           # and it does not come back
            deadline = time.monotonic() + 10
            while r.he.sessions.get(a0) is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            gone = r.he.sessions.get(a0) is None
            # a login of terminal 1's address published on terminal 0's uplink topic
            sim = r.sim
            t1 = sim.by_address[a1]
            from gridhead.protocols.dlt698 import apdu as A
            from gridhead.protocols.dlt698.session import date_time
            login = sim._frame(t1, 0x81, A.LinkRequest(1, A.LINK_LOGIN, 30, date_time(sim.now())), 0)
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="spoof") as c:
                await c.publish(topic("gridhead", a0, "up"), login, qos=1)
            await asyncio.sleep(0.5)
            still = r.he.sessions.get(a1)
            return gone, still is not None and still.peer.endswith(f"/{a1}/up"), r.he.metrics.refused.get("wrong topic", 0)

    gone, t1_untouched, refused = asyncio.run(go())
    assert gone
    assert t1_untouched and refused >= 1


def test_serve_mqtt_flag_takes_the_fleet_through_the_broker(fleet_dir, tmp_path, broker):
    """`gridhead serve --mqtt HOST:PORT` (no config file) and `gridhead sim --mqtt` as real processes: every
    terminal comes online through mosquitto (the head-end's /metrics count them), nothing dials TCP;
    a bad --mqtt is one usage line."""
    import json
    import signal
    import sys
    import urllib.request

    from tests.conftest import ROOT
    d = _fresh(fleet_dir[0], tmp_path / "d")
    where = f"127.0.0.1:{broker.port}"
    he = subprocess.Popen([sys.executable, "-m", "gridhead.cli", "serve", "--data", str(d), "--port", "0", "--metrics-port",
                           "0", "--no-api", "--mqtt", where, "--mqtt-prefix", "gridhead"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sim = None
    try:
        ready = json.loads(he.stdout.readline())
        sim = subprocess.Popen([sys.executable, "-m", "gridhead.cli", "sim", "--data", str(d), "--mqtt", where, "--seed",
                                str(SEED), "--no-report", "--stats-every", "0"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline, online = time.monotonic() + 30, None
        while time.monotonic() < deadline:
            body = urllib.request.urlopen(f"http://127.0.0.1:{ready['metrics_port']}/metrics", timeout=5).read()
            online = next((float(line.split()[1]) for line in body.decode().splitlines()
                           if line.startswith("gridhead_sessions_online ")), None)
            if online == N_TERMINALS:
                break
            time.sleep(0.2)
        assert online == N_TERMINALS, f"{online} of {N_TERMINALS} terminals online through the broker"
        he.send_signal(signal.SIGTERM)
        _out, err = he.communicate(timeout=30)
        assert he.returncode == 0, err[-2000:]
    finally:
        for p in (sim, he):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    bad = subprocess.run([sys.executable, "-m", "gridhead.cli", "serve", "--data", str(d), "--port", "0", "--mqtt", "nohost"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--mqtt" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "gridhead.cli", "serve", "--data", str(d), "--port", "0", "--mqtt-prefix", "x"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--mqtt-prefix needs --mqtt" in bad.stderr and "Traceback" not in bad.stderr

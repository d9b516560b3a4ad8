"""Transports: MQTT through a real mosquitto vs TCP (same fleet, same daily collection, one process), and
RS-485 over a socat pty pair at 9600 baud (requests/s against the bus-time floor, bytes × 11 bits / baud).

    python -m benchmarks.bench_transports [--quick] [--terminals N] [--meters M] [--serial-requests K]

Exit 1 when the MQTT lake differs from the TCP lake or a serial request goes unanswered.  MQTT is
skipped (said so) when mosquitto is not installed, serial when socat is not.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

from gridhead.headend.sim import demo, model as sim_model
from gridhead.headend import profile as P
from gridhead.headend.collect import Collector
from gridhead.headend.config import Config, MqttBroker, SerialMeter, SerialPort
from gridhead.headend.server import HeadEnd
from gridhead.headend.sim.rs485 import SerialMeters
from gridhead.headend.sim.simulator import Simulator
from gridhead.headend.transport_serial import bus_time_s
from gridhead.protocols.dlt645 import ReadRequest
from gridhead.protocols.dlt698 import apdu as A
from gridhead.storage import archive, sql

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if pathlib.Path("/usr/sbin/mosquitto").exists() else None)


def make_fleet(root: pathlib.Path, terminals: int, meters: int, seed: int = 3):
    start = demo.today_local() - dt.timedelta(days=2)
    sim_model.write_standalone_archive(root, terminals, meters, seed, start)
    with archive.Archive(sql.archive_path(root)) as a:
        a.import_files(sorted((root / "archive-files").glob("*.csv")))
    return start + dt.timedelta(days=1)


def copy_fleet(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    dst.mkdir()
    shutil.copy(sql.archive_path(src), sql.archive_path(dst))
    for d in ("archive-files", "ground_truth"):
        shutil.copytree(src / d, dst / d)
    return dst


async def collect_once(data: pathlib.Path, day, terminals: int, broker_port: int | None, seed: int = 3) -> dict:
    mq = MqttBroker(port=broker_port, reconnect_min_s=0.1) if broker_port else None
    he = HeadEnd(Config(data_dir=str(data), listen_port=0, request_timeout_s=5, mqtt=mq))
    await he.start()
    where = dict(mqtt=("127.0.0.1", broker_port)) if broker_port else dict(connect=("127.0.0.1", he.port))
    sim = Simulator(sim_model.load_gen_dir(data), seed=seed, heartbeat_s=60, report=False, **where)
    task = asyncio.get_running_loop().create_task(sim.run())
    try:
        deadline = time.monotonic() + 60
        while len(he.sessions) < terminals and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        col = Collector(he, seed=1)
        t0 = time.perf_counter()
        out = await col.collect_day("daily-frozen", day)
        secs = time.perf_counter() - t0
        col.close()
    finally:
        sim.stop()
        await asyncio.wait_for(task, 20)
        await he.stop()
    with sql.Session(data) as s:
        rows = s.query("SELECT meter_id, date, ae_fwd, ae_fwd_t1, ae_fwd_t2, ae_fwd_t3, ae_fwd_t4 FROM daily_frozen "
                       "ORDER BY meter_id, date").to_pylist()
    return {"stored": out["stored_readings"], "seconds": secs, "rows": rows}


def start_broker(tmp: pathlib.Path):
    port = demo._free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    p = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import socket
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("mosquitto did not start")


def socat_pair():
    p = subprocess.Popen(["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"], stderr=subprocess.PIPE, text=True)
    names, line = [], ""
    while len(names) < 2:
        line = p.stderr.readline()
        m = re.search(r"PTY is (\S+)", line)
        if m:
            names.append(m.group(1))
    while "starting data transfer" not in line:
        line = p.stderr.readline()
    return p, names


async def serial_run(data: pathlib.Path, ptys, n_requests: int, baud: int = 9600) -> dict:
    from gridhead.headend.transport_serial import SerialBus
    fleet = sim_model.load_gen_dir(data)
    i645 = [i for i in range(fleet.n_meters) if fleet.is645[i]][:2]
    i698 = [i for i in range(fleet.n_meters) if not fleet.is645[i]][:2]
    idx = i645 + i698
    meters = tuple(SerialMeter("645" if fleet.is645[i] else "698", fleet.address[i]) for i in idx)
    sim = SerialMeters(fleet, idx, ptys[1], baud=baud)
    await sim.start()
    he = HeadEnd(Config(listen_port=0), terminals=(), meter_of_tsa={}, writer=None)
    he.loop = asyncio.get_running_loop()
    bus = SerialBus(he, SerialPort(device=ptys[0], baud=baud, timeout_s=1.0, retries=1, meters=meters))
    await bus.start()
    ok = 0
    t0 = time.perf_counter()
    try:
        for k in range(n_requests):
            m = meters[k % len(meters)]
            if m.protocol == "645":
                r = await bus.request645(ReadRequest(m.address, P.DI645_FWD_ACTIVE))
            else:
                r = await bus.request698(m.address, A.get(0x00100200))
            ok += r is not None
        secs = time.perf_counter() - t0
    finally:
        await bus.stop()
        await sim.stop()
    c = bus.counters
    floor_s = bus_time_s(c["bytes_out"] + c["bytes_in"], baud)
    return {"requests": n_requests, "answered": ok, "seconds": secs, "floor_s": floor_s, "gap_s": bus.gap_s,
            "bytes": c["bytes_out"] + c["bytes_in"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--terminals", type=int)
    ap.add_argument("--meters", type=int)
    ap.add_argument("--serial-requests", type=int)
    a = ap.parse_args(argv)
    terms = a.terminals or (4 if a.quick else 40)
    meters = a.meters or (4 if a.quick else 16)
    n_serial = a.serial_requests or (40 if a.quick else 400)
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        src = tmp / "fleet"
        src.mkdir()
        day = make_fleet(src, terms, meters)
        if MOSQUITTO is None:
            print("mqtt: skipped (mosquitto is not installed)")
        else:
            broker, port = start_broker(tmp)
            try:
                tcp = asyncio.run(collect_once(copy_fleet(src, tmp / "tcp"), day, terms, None))
                mq = asyncio.run(collect_once(copy_fleet(src, tmp / "mqtt"), day, terms, port))
            finally:
                broker.terminate()
                broker.wait(5)
            r_tcp, r_mq = tcp["stored"] / tcp["seconds"], mq["stored"] / mq["seconds"]
            print(f"collection of {terms} terminals x {meters} meters, one day (daily-frozen, records):")
            print(f"  tcp   {tcp['stored']:6d} readings in {tcp['seconds']:.3f} s = {r_tcp:9.0f} readings/s")
            print(f"  mqtt  {mq['stored']:6d} readings in {mq['seconds']:.3f} s = {r_mq:9.0f} readings/s "
                  f"(mosquitto; {r_mq / r_tcp:.2f}x tcp)")
            same = tcp["rows"] == mq["rows"] and len(tcp["rows"]) > 0
            print(f"  lakes equal: {same} ({len(mq['rows'])} rows)")
            bad += not same
        if shutil.which("socat") is None:
            print("serial: skipped (socat is not installed)")
        else:
            p, ptys = socat_pair()
            try:
                s = asyncio.run(serial_run(src, ptys, n_serial))
            finally:
                p.terminate()
                p.wait(5)
            rate = s["requests"] / s["seconds"]
            floor = s["requests"] / s["floor_s"]
            with_gap = s["requests"] / (s["floor_s"] + s["requests"] * s["gap_s"])
            print(f"serial 9600 baud over a pty, 4 meters (645 + 698), {s['requests']} requests one at a time:")
            print(f"  measured {rate:7.1f} requests/s ({s['answered']} answered; a pty does not pace at the baud rate)")
            print(f"  bus-time floor {s['bytes']} bytes x 11 / 9600 = {s['floor_s']:.3f} s -> {floor:7.1f} requests/s"
                  f"; with the {s['gap_s'] * 1000:.0f} ms inter-frame gap {with_gap:7.1f} requests/s")
            print(f"  measured / floor-with-gap: {rate / with_gap:.2f}")
            bad += s["answered"] != s["requests"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

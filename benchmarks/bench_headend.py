"""Head-end benchmark: a fleet of simulated concentrators against the head-end, in separate processes.

    python benchmarks/bench_headend.py            # 10,000 terminals × 32 meters (full)
    python benchmarks/bench_headend.py --quick    # 200 terminals (CI: seconds)
    python benchmarks/bench_headend.py --reports-only   # steps 3 and 5 alone, in process

Processes (each raises RLIMIT_NOFILE to the hard limit): this orchestrator; the head-end (``--role
headend``: HeadEnd + Collector, uvloop); the fleet (``python -m gridhead.headend.sim.demo fleet``); a blaster for the
I/O floor.  What is measured, all in the head-end process:

1. **sessions**: every terminal logged in and heartbeating; RSS delta / sessions (memory per session,
   from /proc/self/statm before the fleet dials and once all are online) and CPU while idle (utime +
   stime from /proc/self/stat over a window, as a share of one core);
2. **daily collection**: one GET-Record 60120300 per terminal for yesterday's freeze (profile (a)),
   decoded and written through the durable ingest: seconds for all meters, frames/s, readings/s;
3. **report ingest**: REPORT-Notification-RecordList frames of 32 meters (as terminals push them) →
   framer → ``records.decode_record_answer`` (the compiled columnar decoder the server uses) → durable
   ingest (WAL, group fsync), one core, in process; and the same through the general path
   (``decode_apdu`` + ``records.result_to_batch``, what the server did before) in the same run;
4. **I/O floor**: a bare uvloop server in the same process that only frames bytes
   (``protocols.dlt698.Framer``), fed by a blaster process with the same response frames as step 2:
   frames/s; the collection's frames/s is reported as a ratio to it;
5. **report decode**: the columnar decoder alone (REPORT APDU → lake columns) against the peer's bare
   ``dlt698._native.decode_apdu`` and our ``decode_apdu`` to Python values, on the same APDUs.

Exit status non-zero if the collection did not store every meter's reading (``--quick`` runs in CI).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import pathlib
import resource
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft
    return hard


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def cpu_s(pid: str = "self") -> float:
    """utime + stime of a process (this one by default), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the head-end process ------------------------------------------------------------------------------------
async def headend_role(data: pathlib.Path, port: int, n_terminals: int, idle_s: float, floor_port: int) -> dict:
    from gridhead.headend import collect as C
    from gridhead.headend.config import Config
    from gridhead.headend.server import HeadEnd
    from gridhead.storage import schema

    he = HeadEnd(Config(data_dir=str(data), listen_port=port, global_in_flight=4000, requests_per_s=0,
                        request_timeout_s=60, login_timeout_s=120, ingest_queue_bound=4096))
    await he.start()
    col = C.Collector(he, [C.Task("daily-frozen", timeout_s=60, backfill_retries=0)])
    import gc
    gc.collect()
    rss0 = rss_bytes()
    print(json.dumps({"ready": he.port}), flush=True)
    t0 = time.perf_counter()
    while len(he.sessions) < n_terminals and time.perf_counter() - t0 < 120:
        await asyncio.sleep(0.1)
    online_s = time.perf_counter() - t0
    sessions = len(he.sessions)
    await asyncio.sleep(1.0)
    gc.collect()
    rss1 = rss_bytes()
    c0, w0 = cpu_s(), time.perf_counter()
    await asyncio.sleep(idle_s)
    idle_cpu = (cpu_s() - c0) / (time.perf_counter() - w0)
    # daily collection of yesterday's freeze
    day = dt.datetime.now(schema.LOCAL_TZ).date() - dt.timedelta(days=1)
    f_in0 = sum(he.metrics.frames_in.values())
    print(json.dumps({"collecting": True}), flush=True)      # the orchestrator reads the fleet's CPU
    c0, t0 = cpu_s(), time.perf_counter()
    run = await col.collect_day("daily-frozen", day)
    acked_s = time.perf_counter() - t0                        # every reading durably acknowledged (WAL)
    await col.publish()                                        # ... and published into the lake
    coll_s = time.perf_counter() - t0
    coll_cpu = cpu_s() - c0
    print(json.dumps({"collected": True}), flush=True)
    frames = sum(he.metrics.frames_in.values()) - f_in0
    summary = col.summary([day])
    col.close()
    await he.stop()
    out = {"sessions": sessions, "online_s": round(online_s, 2), "rss_per_session_bytes": (rss1 - rss0) / max(1, sessions),
           "idle_cpu_share": idle_cpu, "collection_s": coll_s, "collection_acked_s": acked_s, "collection_cpu_s": coll_cpu,
           "collection_frames": frames, "readings": run["stored_readings"], "meters_expected": summary["expected"],
           "meters_collected": summary["collected"]}
    out["report"] = report_ingest(data, n_terminals)
    out["report_general"] = report_ingest(data, n_terminals, "general")
    out["report_decode"] = report_decode(data, n_terminals)
    out["floor"] = await floor(floor_port, data)
    return out


def _report_frames(data: pathlib.Path, n_meters: int, count: int) -> tuple[list[bytes], int]:
    """``count`` REPORT-Notification-RecordList frames of ``n_meters`` meters each, from the fleet's model."""
    from gridhead.headend.sim import model as sim_model, simulator
    from gridhead.protocols.dlt698.frame import Frame, ServerAddress
    fleet = sim_model.load_gen_dir(data)
    sim = simulator.Simulator(fleet, connect=("127.0.0.1", 1))
    day = fleet.model.day_of(dt.date.today()) - 1
    frames = []
    for k in range(count):
        t = sim.terminals[k % len(sim.terminals)]
        rep = sim.answers.report(t.meters[:n_meters], day, (k % 63) + 1, sim.now())
        frames.append(Frame(ServerAddress(t.address), 0x10, 0x83, rep.to_bytes()).to_bytes())
    return frames, day


def report_ingest(data: pathlib.Path, n_terminals: int, path: str = "columnar") -> dict:
    """Framer → APDU → records → durable ingest for pushed reports, one thread of work + the WAL's.
    ``path``: "columnar" — what the server does (records.decode_record_answer, the compiled columnar
    decoder, general path only when it declines); "general" — decode_apdu + result_to_batch (before)."""
    from gridhead.headend import records
    from gridhead.protocols.dlt698 import apdu as A
    from gridhead.protocols.dlt698.frame import Framer
    from gridhead.storage import archive, schema, sql, wal
    with archive.Archive(sql.archive_path(data), read_only=True) as a:
        routes = a.meter_routes()
        known = a.known_meter_ids()
    idx = records.tsa_index(routes)
    frames, _day = _report_frames(data, 32, min(400, n_terminals))
    stream = b"".join(frames)
    reps = max(1, 200_000 // (len(frames) * 32 * 6))
    with tempfile.TemporaryDirectory() as tmp:
        w = wal.IngestWriter(tmp, known, roll_interval_s=None)
        n = 0
        tickets = []
        c0, t0 = cpu_s(), time.perf_counter()
        for r in range(reps):
            fr = Framer()
            fr.feed(stream)
            while (f := fr.next_frame()) is not None:
                raw = f.apdu if hasattr(f, "apdu") else f.data
                fast = records.decode_record_answer(raw, idx, source=schema.SRC_REPORT,
                                                    received_utc=int(time.time()) + r) if path == "columnar" else None
                if fast is not None:
                    batches = [res[3] for res in fast.results]
                else:
                    batches = [records.result_to_batch(res, idx, source=schema.SRC_REPORT,
                                                       received_utc=int(time.time()) + r)
                               for res in A.decode_apdu(raw).results]
                for b in batches:
                    tickets.append(w.submit(b.columns, schema.DAILY))
                    n += len(b)
            if tickets:
                w.wait(tickets[-1])
                tickets.clear()
        secs = time.perf_counter() - t0
        cpu = cpu_s() - c0
        w.close()
    return {"readings": n, "seconds": secs, "readings_per_s": n / secs, "cpu_s": cpu,
            "readings_per_cpu_s": n / cpu if cpu else None}


def report_decode(data: pathlib.Path, n_terminals: int, rounds: int = 7) -> dict:
    """The columnar decoder alone (REPORT APDU → lake columns + missing rows) against the peer's bare
    decode (``dlt698._native.decode_apdu``, its C++ objects) and ours to Python values (decode_apdu),
    on the same REPORT APDUs; CPU seconds per report, best of ``rounds`` in which they take turns."""
    from gridhead.headend import records
    from gridhead.protocols.dlt698 import apdu as A
    from gridhead.protocols.dlt698.frame import Framer
    from gridhead.storage import archive, schema, sql
    with archive.Archive(sql.archive_path(data), read_only=True) as a:
        idx = records.tsa_index(a.meter_routes())
    fr = Framer()
    fr.feed(b"".join(_report_frames(data, 32, min(100, n_terminals))[0]))
    apdus = []
    while (f := fr.next_frame()) is not None:
        apdus.append(bytes(f.apdu))
    fns = {"columnar": lambda b: records.decode_record_answer(b, idx, source=schema.SRC_REPORT, received_utc=0),
           "ours_values": A.decode_apdu}
    try:
        import dlt698._native as peer
        fns["peer_bare"] = peer.decode_apdu
    except ImportError:
        pass
    assert all(fns["columnar"](b) is not None for b in apdus), "the columnar decoder declined a report"
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            c0 = time.process_time()
            for _rep in range(20):
                for b in apdus:
                    fn(b)
            best[k] = min(best[k], (time.process_time() - c0) / (20 * len(apdus)))
    out = {f"{k}_us": v * 1e6 for k, v in best.items()}
    out["bytes"] = sum(map(len, apdus)) / len(apdus)
    if "peer_bare" in best:
        out["columnar_vs_peer_bare"] = best["peer_bare"] / best["columnar"]
    return out


async def floor(port: int, data: pathlib.Path) -> dict:
    """A bare uvloop server that only frames bytes, fed by a blaster process with response frames."""
    from gridhead.protocols.dlt698.frame import Framer
    done = asyncio.get_running_loop().create_future()
    stats = {"frames": 0, "bytes": 0}

    class Bare(asyncio.Protocol):
        def connection_made(self, tr):
            self.fr = Framer()
            self.t0 = time.perf_counter()
            self.c0 = cpu_s()

        def data_received(self, chunk):
            self.fr.feed(chunk)
            stats["bytes"] += len(chunk)
            while self.fr.next_frame() is not None:
                stats["frames"] += 1

        def connection_lost(self, exc):
            if not done.done():
                done.set_result((time.perf_counter() - self.t0, cpu_s() - self.c0))

    srv = await asyncio.get_running_loop().create_server(Bare, "127.0.0.1", port)
    print(json.dumps({"floor_ready": port}), flush=True)
    secs, cpu = await asyncio.wait_for(done, 120)
    srv.close()
    return {"frames": stats["frames"], "bytes": stats["bytes"], "seconds": secs, "frames_per_s": stats["frames"] / secs,
            "cpu_s": cpu}


def blaster_role(data: pathlib.Path, port: int, megabytes: int) -> None:
    """Send GET-Response-Record-sized frames (a 32-meter report's bytes) to the floor server."""
    frames, _ = _report_frames(data, 32, 50)
    chunk = b"".join(frames)
    total = megabytes << 20
    with socket.create_connection(("127.0.0.1", port)) as s:
        sent = 0
        while sent < total:
            s.sendall(chunk)
            sent += len(chunk)


# --- orchestration ---------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 terminals (CI)")
    ap.add_argument("--terminals", type=int, default=None)
    ap.add_argument("--meters", type=int, default=32)
    ap.add_argument("--idle", type=float, default=None, help="idle window, seconds")
    ap.add_argument("--reports-only", action="store_true", help="only the pushed-report ingest and decode parts")
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--floor-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--mb", type=int, default=64, help=argparse.SUPPRESS)
    a = ap.parse_args()
    raise_nofile()
    n = a.terminals or (200 if a.quick else 10_000)
    # the idle window spans more than one heartbeat period, so every session heartbeats in it
    heartbeat_s = 2 if a.quick else 30
    idle = a.idle if a.idle is not None else heartbeat_s + 5.0
    if a.reports_only:
        return reports_only(min(n, 400), a.meters)
    if a.role == "headend":
        from gridhead.headend.sim.simulator import new_loop
        with asyncio.Runner(loop_factory=new_loop) as r:
            out = r.run(headend_role(pathlib.Path(a.data), a.port, n, idle, a.floor_port))
        print(json.dumps({"result": out}), flush=True)
        return 0
    if a.role == "blaster":
        blaster_role(pathlib.Path(a.data), a.port, a.mb)
        return 0

    from gridhead.headend.sim import demo, model as sim_model
    from gridhead.storage import archive, sql
    with tempfile.TemporaryDirectory() as tmp:
        data = pathlib.Path(tmp)
        t0 = time.perf_counter()
        start = demo.today_local() - dt.timedelta(days=2)
        sim_model.write_standalone_archive(data, n, a.meters, 1, start)
        with archive.Archive(sql.archive_path(data)) as arc:
            arc.import_files(sorted((data / "archive-files").glob("*.csv")))
        print(f"fleet {n} terminals x {a.meters} meters generated in {time.perf_counter() - t0:.1f} s", flush=True)
        port, fport = free_port(), free_port()
        me = [sys.executable, str(pathlib.Path(__file__).resolve()), "--terminals", str(n), "--idle", str(idle),
              "--data", str(data)]
        he = subprocess.Popen(me + ["--role", "headend", "--port", str(port), "--floor-port", str(fport)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = json.loads(he.stdout.readline())
        assert "ready" in line, line
        fleet = demo.start_fleet(data, port, seed=1, faults={}, heartbeat_s=heartbeat_s)
        try:
            result = None
            fleet_cpu = {}
            for raw in he.stdout:
                msg = json.loads(raw)
                for k in ("collecting", "collected"):
                    if k in msg:
                        fleet_cpu[k] = cpu_s(str(fleet.pid))
                if "floor_ready" in msg:
                    subprocess.run(me + ["--role", "blaster", "--port", str(fport), "--mb", "16" if a.quick else "128"],
                                   cwd=ROOT, check=True)
                if "result" in msg:
                    result = msg["result"]
                    if len(fleet_cpu) == 2:      # the simulator's share of the collection
                        result["fleet_collection_cpu_s"] = fleet_cpu["collected"] - fleet_cpu["collecting"]
            he.wait(60)
        finally:
            demo.stop_process(fleet)
            demo.stop_process(he)
    if result is None:
        print("head-end gave no result", file=sys.stderr)
        return 1
    r = result
    coll_fps = r["collection_frames"] / r["collection_s"]
    print(f"sessions            {r['sessions']}/{n} online in {r['online_s']} s; "
          f"{r['rss_per_session_bytes'] / 1024:.2f} KB RSS per session (target < 5 KB)")
    print(f"idle                {100 * r['idle_cpu_share']:.2f} % of a core over {idle:.0f} s while {r['sessions']} "
          f"terminals heartbeat every {heartbeat_s} s (target < 5 %)")
    print(f"daily collection    {r['meters_collected']}/{r['meters_expected']} meters in {r['collection_s']:.2f} s "
          f"({r['meters_collected'] / r['collection_s']:,.0f} meters/s, {r['readings'] / r['collection_s']:,.0f} readings/s, "
          f"{coll_fps:,.0f} frames/s, {r['collection_cpu_s']:.2f} CPU s head-end, "
          f"{r.get('fleet_collection_cpu_s', float('nan')):.2f} CPU s fleet; all acknowledged after "
          f"{r.get('collection_acked_s', float('nan')):.2f} s, then published); target 320,000 meters < 60 s")
    print_reports(r)
    fl = r["floor"]
    print(f"I/O floor           bare uvloop framing server {fl['frames_per_s']:,.0f} frames/s "
          f"({fl['bytes'] / fl['seconds'] / 1e6:,.0f} MB/s); collection frames/s = {coll_fps / fl['frames_per_s']:.4f} x floor")
    ok = r["meters_collected"] == r["meters_expected"] and r["sessions"] == n
    if not ok:
        print("FAIL: not every terminal online or not every meter collected", file=sys.stderr)
    return 0 if ok else 1


def print_reports(r: dict) -> None:
    for key, what in (("report", "columnar"), ("report_general", "general (before)")):
        rep = r[key]
        print(f"report ingest       {what}: {rep['readings']:,} readings in {rep['seconds']:.2f} s: "
              f"{rep['readings_per_s']:,.0f} readings/s ({rep['readings_per_cpu_s']:,.0f} per CPU s; "
              f"target >= 300k/s on one core)")
    d = r["report_decode"]
    print(f"report decode       {d['bytes']:.0f}-byte REPORT of 32 meters: columnar {d['columnar_us']:.1f} us, "
          f"ours to values {d['ours_values_us']:.1f} us, peer bare {d.get('peer_bare_us', float('nan')):.1f} us "
          f"per report (CPU); columnar vs peer bare {d.get('columnar_vs_peer_bare', float('nan')):.2f} x")


def reports_only(n: int, meters: int) -> int:
    """--reports-only: the report parts alone, on a generated archive (no fleet, no sockets)."""
    from gridhead.headend.sim import demo, model as sim_model
    from gridhead.storage import archive, sql
    with tempfile.TemporaryDirectory() as tmp:
        data = pathlib.Path(tmp)
        sim_model.write_standalone_archive(data, n, meters, 1, demo.today_local() - dt.timedelta(days=2))
        with archive.Archive(sql.archive_path(data)) as arc:
            arc.import_files(sorted((data / "archive-files").glob("*.csv")))
        r = {"report": report_ingest(data, n), "report_general": report_ingest(data, n, "general"),
             "report_decode": report_decode(data, n)}
    print_reports(r)
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())

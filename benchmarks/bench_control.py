"""Remote control (召测, 跳闸) through the control API of a running head-end, with a fleet online.

    python benchmarks/bench_control.py            # 10,000 terminals × 32 meters (full)
    python benchmarks/bench_control.py --quick    # 200 terminals (CI: seconds)

Processes on 127.0.0.1, each raising RLIMIT_NOFILE to its hard limit: this orchestrator (the API's
clients); ``gridhead serve`` (head-end + control API); ``gridhead sim`` with the whole fleet dialled in;
and, for the baseline, ``gridhead sim --listen`` with one terminal of 32 meters.  Measured:

1. **reads** (召测 ``energy``, 698 meters by PROXY-GetList, 645 meters by PROXY-TransCommand, as the
   archive routes them) at a steady offered rate (open loop: a request is sent on schedule whether or
   not the earlier ones have answered) and at saturation (``--concurrency`` clients back to back):
   p50 / p99 of the API round trip (HTTP request → JSON answer, what an operator's tool sees) and of the
   head-end's request alone (``request_ms`` in the answer: the exchange with the concentrator, without
   HTTP, auth and the audit fsync); commands/s;
2. **trips** (跳闸 with the relay read back, each on a different meter) the same two ways; a saturation
   phase that runs out of untripped meters ends early and says so (the rate is over its own time);
3. **I/O floor**: the same read as a bare 698 PROXY-GetList frame over a raw socket to one simulated
   terminal, one at a time: p50 / p99 and requests/s; and the **audit floor**: one audit-sized line
   appended and fsynced on the data directory's disk (every command's record is, before the answer).

Every read is checked against the simulator's register model (the forward active total of that meter
between the model's value just before the request and just after the answer); every trip must answer
200 with the relay read back open.  Exit status 1 on any wrong or missing answer.  CPU seconds of each
process and the load average are printed beside wall time: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import pathlib
import random
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_headend import cpu_s, free_port, raise_nofile  # noqa: E402

_CST = dt.timezone(dt.timedelta(hours=8))       # the simulated terminals keep China Standard Time


def pct(xs, q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


# --- a keep-alive HTTP/1.1 client (the API's own Client opens a connection per call) ----------------------
class Conn:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self.r = self.w = None

    async def post(self, path: str, body: dict) -> tuple[int, dict]:
        reused = self.w is not None
        if self.w is None:
            self.r, self.w = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        self.w.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.token}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        first = await self.r.readline()
        if not first and reused:
            # the server closed the connection while it was idle (its keep-alive timeout, [control]
            # keepalive_s): the request was not read; send it again on a new one, as HTTP clients do
            self.close()
            self.r = self.w = None
            return await self.post(path, body)
        status = int(first.split()[1])
        n = 0
        while (h := await self.r.readline()) not in (b"\r\n", b""):
            k, _, v = h.decode("latin-1").partition(":")
            if k.strip().lower() == "content-length":
                n = int(v)
        return status, json.loads(await self.r.readexactly(n))

    def close(self) -> None:
        if self.w is not None:
            self.w.close()


class Checker:
    """What a read must answer: the model's forward active total (0.01 kWh) of that meter between the
    moments the request left and the answer came back (simulated time = China Standard Time)."""

    def __init__(self, data: pathlib.Path) -> None:
        from gridhead.headend.sim import model as sim_model
        self.fleet = sim_model.load_gen_dir(data)
        self.index = {a: i for i, a in enumerate(self.fleet.address)}
        self.bad: list[str] = []
        self.later: list[tuple] = []        # reads checked after their phase: the clients' CPU stays on load

    def check(self) -> None:
        for args in self.later:
            self._read(*args)
        self.later = []

    def _total(self, i: int, when: dt.datetime) -> int:
        m = self.fleet.model
        return int(m.at([i], m.day_of(when.date()), when.hour * 3600 + when.minute * 60 + when.second)[0][0])

    def read(self, route: dict, t0: dt.datetime, t1: dt.datetime, status: int, r: dict) -> None:
        self.later.append((route, t0, t1, status, r))

    def _read(self, route: dict, t0: dt.datetime, t1: dt.datetime, status: int, r: dict) -> None:
        addr = route["comm_address"]
        try:
            v = energy_of(r) if status == 200 and r.get("outcome") == "ok" else None
        except (KeyError, IndexError, TypeError, ValueError):
            v = None
        if v is None:
            self.bad.append(f"read {addr}: HTTP {status} {str(r)[:300]}")
            return
        i = self.index[addr]
        lo, hi = self._total(i, t0 - dt.timedelta(seconds=1)), self._total(i, t1 + dt.timedelta(seconds=1))
        if route["meter_protocol"] == "645":       # six BCD digits before the point: the register wraps
            lo, hi = lo % 100_000_000, hi % 100_000_000
        if not lo <= v <= hi:
            self.bad.append(f"read {addr}: {v} not in the model's [{lo}, {hi}]")

    def trip(self, route: dict, status: int, r: dict) -> None:
        rb = r.get("readback") or {}
        if status != 200 or r.get("outcome") != "ok" or rb.get("relay_open") is not True:
            self.bad.append(f"trip {route['comm_address']}: HTTP {status} {str(r)[:300]}")


def energy_of(r: dict) -> int:
    """The forward active total (0.01 kWh) out of a read answer (698 rendered value or 645 values)."""
    v = r["values"][0]
    if "di" in v:                                     # 645: {"di", "values": [{"raw", "scale": -2}, ...]}
        x = v["values"][0]
        return int(x["raw"]) * 10 ** (x["scale"] + 2)
    t = v["value"]["total"]                          # 698: rendered 00100200, raw at scaler -2
    return int(t["raw"]) * 10 ** (t["scaler"] + 2)


def now_cst() -> dt.datetime:
    return dt.datetime.now(_CST).replace(tzinfo=None)


# --- load ----------------------------------------------------------------------------------------------------
class Load:
    def __init__(self, host, port, token, routes, checker, concurrency) -> None:
        self.host, self.port, self.token = host, port, token
        self.routes, self.checker = routes, checker
        self.idle: list[Conn] = [Conn(host, port, token) for _ in range(concurrency)]
        self.fresh = iter(random.Random(7).sample(routes, len(routes)))   # trips: each on a new meter

    async def one(self, kind: str, conn: Conn, out: dict) -> bool:
        """One command; False (nothing sent) when a trip finds every meter already tripped."""
        if kind == "read":
            route = random.choice(self.routes)
            body = {"target": str(route["meter_id"]), "registers": ["energy"]}
            path = "/v1/read"
        else:
            route = next(self.fresh, None)
            if route is None:
                out["exhausted"] = True
                return False
            body = {"target": str(route["meter_id"]), "reason": "bench_control trip"}
            path = "/v1/disconnect"
        t_model0 = now_cst()
        t0 = time.perf_counter()
        try:
            status, r = await conn.post(path, body)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            conn.close()
            conn.r = conn.w = None
            self.checker.bad.append(f"{kind} {route['comm_address']}: {type(exc).__name__} {exc}")
            return True
        out["rtt"].append((time.perf_counter() - t0) * 1000)
        if "request_ms" in r:
            out["req"].append(r["request_ms"])
        out["path"].setdefault(r.get("path", "?"), []).append(out["rtt"][-1])
        if kind == "read":
            self.checker.read(route, t_model0, now_cst(), status, r)
        else:
            self.checker.trip(route, status, r)
        return True

    async def steady(self, kind: str, rate: float, seconds: float) -> dict:
        """Open loop: one command every 1/rate s; a command finding no idle connection opens one."""
        out = {"rtt": [], "req": [], "path": {}, "late": 0}
        tasks = []
        t_start = time.perf_counter()
        n = int(rate * seconds)
        if kind == "trip" and n > len(self.routes):
            raise SystemExit(f"{n} steady trips need as many meters, the fleet has {len(self.routes)}: "
                             "shorten --seconds or lower --trip-rate")

        async def run(conn):
            try:
                await self.one(kind, conn, out)
            finally:
                self.idle.append(conn)
        for k in range(n):
            delay = t_start + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05:
                out["late"] += 1
            conn = self.idle.pop() if self.idle else Conn(self.host, self.port, self.token)
            tasks.append(asyncio.ensure_future(run(conn)))
        await asyncio.gather(*tasks)
        out["seconds"] = time.perf_counter() - t_start
        out["n"] = n
        return out

    async def saturate(self, kind: str, concurrency: int, seconds: float) -> dict:
        out = {"rtt": [], "req": [], "path": {}, "late": 0}
        end = time.perf_counter() + seconds
        count = [0]

        async def worker():
            conn = self.idle.pop() if self.idle else Conn(self.host, self.port, self.token)
            try:
                while time.perf_counter() < end:
                    if not await self.one(kind, conn, out):
                        break                          # every meter tripped: the phase ends early
                    count[0] += 1
            finally:
                self.idle.append(conn)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        out["seconds"] = time.perf_counter() - t0
        out["n"] = count[0]
        return out


# --- the I/O floor: the same read as a bare frame over a raw socket -------------------------------------------
def floor(port: int, terminal: str, meter: str, seconds: float) -> dict:
    from gridhead.headend import profile as P
    from gridhead.protocols.dlt698 import apdu as A
    from gridhead.protocols.dlt698.frame import Frame, Framer, ServerAddress
    from gridhead.protocols.dlt698.session import C_REQUEST
    apdu = A.ProxyGetRequestList(1, 11, (A.ProxyTarget(A.tsa(meter), 10, (P.OAD_FWD_ACTIVE,)),))
    raw = Frame(ServerAddress(terminal), 0x10, C_REQUEST, apdu.to_bytes()).to_bytes()
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fr = Framer()
    rtt, bad = [], 0
    end = time.perf_counter() + seconds
    t_start = time.perf_counter()
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        s.sendall(raw)
        f = None
        while f is None:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("floor: the simulated terminal closed the connection")
            fr.feed(chunk)
            f = fr.next_frame()
        rtt.append((time.perf_counter() - t0) * 1000)
        rsp = A.decode_apdu(f.apdu)
        res = getattr(rsp, "results", None)
        if not res or res[0].results[0].dar is not None:
            bad += 1
    s.close()
    return {"rtt": rtt, "seconds": time.perf_counter() - t_start, "n": len(rtt), "bad": bad}


def fsync_floor(directory: pathlib.Path, n: int = 300) -> list[float]:
    """ms per append + fsync of one audit-sized line (400 bytes) in the head-end's data directory: what a
    command's audit record costs at least before the API may answer (a trip writes two)."""
    path = directory / "fsync-floor.tmp"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 399 + b"\n")
            os.fsync(fd)
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return out


# --- orchestration -------------------------------------------------------------------------------------------
def make_fleet(data: pathlib.Path, n: int, meters: int) -> list[dict]:
    from gridhead.headend.sim import demo, model as sim_model
    from gridhead.storage import archive, sql
    sim_model.write_standalone_archive(data, n, meters, 1, demo.today_local() - dt.timedelta(days=2))
    with archive.Archive(sql.archive_path(data)) as arc:
        arc.import_files(sorted((data / "archive-files").glob("*.csv")))
        return arc.meter_routes().to_pylist()


def cli_proc(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gridhead.cli", *args], cwd=ROOT, **kw)


def wait_online(api: str, token: str, n: int, timeout_s: float) -> float:
    from gridhead.headend.control import Client
    c = Client(api, token, timeout_s=30)
    t0 = time.perf_counter()
    online = 0
    while time.perf_counter() - t0 < timeout_s:
        online = c.call("GET", "/v1/status")[1]["online"]
        if online >= n:
            return time.perf_counter() - t0
        time.sleep(0.5)
    raise SystemExit(f"only {online}/{n} terminals online after {timeout_s:.0f} s")


def line(name: str, r: dict, cpu: dict) -> str:
    rate = r["n"] / r["seconds"]
    req = f"head-end request p50 {pct(r['req'], 50):.2f} / p99 {pct(r['req'], 99):.2f} ms" if r["req"] else ""
    cpus = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
    late = f", {r['late']} sent late" if r.get("late") else ""
    late += "; ended early: every meter tripped" if r.get("exhausted") else ""
    return (f"{name:<28} {r['n']:>6} in {r['seconds']:6.2f} s = {rate:8,.1f}/s; API p50 {pct(r['rtt'], 50):.2f} / "
            f"p99 {pct(r['rtt'], 99):.2f} ms; {req}; CPU s {cpus}{late}")


async def run_load(a, api_host, api_port, token, routes, checker, procs) -> dict:
    """The phases in order; prints a line each (and one per path); returns each phase's samples."""
    load = Load(api_host, api_port, token, routes, checker, a.concurrency)
    results = {}

    def cpu_now():
        return {k: cpu_s(str(p)) for k, p in procs.items()} | {"clients": cpu_s()}

    phases = [("reads, one at a time", "read", "saturate", 1),
              ("reads, steady", "read", "steady", a.read_rate),
              ("reads, saturation", "read", "saturate", a.concurrency),
              ("trips+read-back, steady", "trip", "steady", a.trip_rate),
              ("trips+read-back, saturation", "trip", "saturate", a.concurrency)]
    await load.saturate("read", 4, 1.0)              # warm-up: connections, caches (not reported, checked)
    checker.check()
    for name, kind, how, x in phases:
        c0, la = cpu_now(), os.getloadavg()[0]
        r = await (load.steady(kind, x, a.seconds) if how == "steady" else load.saturate(kind, x, a.seconds))
        c1 = cpu_now()
        checker.check()                             # after the phase: the model's sums cost CPU
        label = f"{x:g}/s" if how == "steady" else f"{x} client" + ("s" if x > 1 else "")
        print(line(f"{name} ({label})", r, {k: c1[k] - c0[k] for k in c0}) + f"; load {la:.1f}", flush=True)
        for p, xs in sorted(r["path"].items()):
            print(f"    {p:<12} {len(xs):>6}  API p50 {pct(xs, 50):.2f} / p99 {pct(xs, 99):.2f} ms", flush=True)
        results[name] = r
    for c in load.idle:
        c.close()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 terminals, short phases (CI)")
    ap.add_argument("--terminals", type=int, default=None)
    ap.add_argument("--meters", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=None, help="length of each phase")
    ap.add_argument("--read-rate", type=float, default=None, help="steady offered reads/s")
    ap.add_argument("--trip-rate", type=float, default=None, help="steady offered trips/s")
    ap.add_argument("--concurrency", type=int, default=32, help="clients at saturation")
    a = ap.parse_args()
    raise_nofile()
    n = a.terminals or (200 if a.quick else 10_000)
    a.seconds = a.seconds or (3.0 if a.quick else 20.0)
    a.read_rate = a.read_rate or (50.0 if a.quick else 100.0)
    a.trip_rate = a.trip_rate or (20.0 if a.quick else 50.0)
    from gridhead.storage import control_log as CL
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = pathlib.Path(tmp) / "fleet"
        data.mkdir()
        t0 = time.perf_counter()
        routes = make_fleet(data, n, a.meters)
        print(f"fleet {n} terminals x {a.meters} meters generated in {time.perf_counter() - t0:.1f} s "
              f"(load {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)", flush=True)
        token = CL.TokenStore(CL.tokens_path(data)).add("bench", "operator")[1]
        cfg = data / "he.toml"
        cfg.write_text(f'listen_port = 0\ndata_dir = "{data}"\nrequest_timeout_s = 10\nrequests_per_s = 0\n'
                       f'global_in_flight = 20000\n[control]\nport = 0\ncommand_timeout_s = 10\n'
                       f'control_per_s = 1e6\ncontrol_burst = 1e6\nreads_per_s = 1e6\nreads_burst = 1e6\n'
                       # one client address stands for many operators' tools here (issue 16 caps them)
                       f'max_connections = 4096\nmax_connections_per_client = 4096\n')
        try:
            he = cli_proc("serve", "--config", str(cfg), "--log-level", "warning", stdout=subprocess.PIPE, text=True)
            procs.append(he)
            ready = json.loads(he.stdout.readline())
            sim = cli_proc("sim", "--data", str(data), "--connect", f"127.0.0.1:{ready['port']}", "--no-report",
                           "--stats-every", "0", "--heartbeat", "60", stdout=subprocess.DEVNULL)
            procs.append(sim)
            online_s = wait_online(ready["api"], token, n, 120 + n / 20)
            print(f"{n} terminals online {online_s:.1f} s after the fleet started", flush=True)
            checker = Checker(data)
            api = ready["api"].split("//", 1)[1]
            host, port = api.rsplit(":", 1)
            results = asyncio.run(run_load(a, host, int(port), token, routes, checker,
                                         {"head-end": he.pid, "fleet": sim.pid}))
            # the I/O floor: one terminal of 32 meters in listen mode, a raw socket, the same read
            from gridhead.headend.sim import model as sim_model
            from gridhead.headend.sim.simulator import Simulator
            fport = free_port()
            one = sim_model.standalone(1, a.meters, 1, Simulator.default_start().date())
            m698 = next(one.address[i] for i in one.meters_of[0] if not one.is645[i])
            fsim = cli_proc("sim", "--terminals", "1", "--meters-per-terminal", str(a.meters), "--seed", "1",
                            "--listen", f"127.0.0.1:{fport}", "--no-report", "--stats-every", "0",
                            stdout=subprocess.DEVNULL)
            procs.append(fsim)
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", fport), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            c0, la = cpu_s(str(fsim.pid)), os.getloadavg()[0]
            fl = floor(fport, one.terminals[0], m698, min(a.seconds, 5.0))
            fl_cpu = cpu_s(str(fsim.pid)) - c0
            print(f"{'I/O floor (raw 698 GET)':<28} {fl['n']:>6} in {fl['seconds']:6.2f} s = "
                  f"{fl['n'] / fl['seconds']:8,.1f}/s; p50 {pct(fl['rtt'], 50):.3f} / p99 {pct(fl['rtt'], 99):.3f} ms "
                  f"one at a time; CPU s terminal {fl_cpu:.2f}; load {la:.1f}", flush=True)
            one_r = results["reads, one at a time"]
            print(f"ratio to the floor (p50, one at a time): API round trip {pct(one_r['rtt'], 50) / pct(fl['rtt'], 50):.1f}x, "
                  f"head-end request {pct(one_r['req'], 50) / pct(fl['rtt'], 50):.1f}x; reads/s {one_r['n'] / one_r['seconds'] / (fl['n'] / fl['seconds']):.3f}x")
            fs = fsync_floor(data)
            print(f"{'audit floor (write+fsync)':<28} {len(fs):>6} lines; p50 {pct(fs, 50):.3f} / p99 {pct(fs, 99):.3f} ms "
                  f"on the data directory's disk", flush=True)
            if fl["bad"]:
                checker.bad.append(f"floor: {fl['bad']} reads answered with a DAR")
        finally:
            for p in reversed(procs):
                from gridhead.headend.sim.demo import stop_process
                stop_process(p, 20)
    if checker.bad:
        print(f"FAIL: {len(checker.bad)} wrong or missing answers, e.g.:", *checker.bad[:5], sep="\n  ", file=sys.stderr)
        return 1
    print("every read equal to the model, every trip read back open")
    return 0


if __name__ == "__main__":
    sys.exit(main())

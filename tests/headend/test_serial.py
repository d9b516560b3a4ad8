"""RS-485 transport on a real pty pair (socat): the head-end's bus master on one end, simulated meters
(headend.sim.rs485, the fleet's register model) or the PyPI ``dlt645`` package's RTU meter server on the other.

Checked: daily frozen readings of 645 and 698 meters collected into the lake equal to the model; reads,
remote control (trip refused while 保电), broadcast and 698 time sync; one request at a time with the
inter-frame gap on the line; a meter answering nothing or garbage times out after its retries and the
port goes on serving the others; noise before an answer is skipped; an independent meter server answers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
import subprocess
import time

import pytest

from gridhead.headend.sim import demo, model as sim_model
from gridhead.headend import collect as c
from gridhead.headend import profile as P
from gridhead.headend.config import Config, SerialMeter, SerialPort
from gridhead.headend.server import HeadEnd
from gridhead.headend.sim.rs485 import SerialMeters
from gridhead.headend.terminal import AnswerTimeout
from gridhead.headend.transport_serial import SerialBus, bus_time_s, gap_s
from gridhead.protocols.dlt645 import (BroadcastTimeSync, ErrorResponse, ReadRequest, ReadResponse, RemoteCommand,
                              RemoteControlRequest, RemoteControlResponse)
from gridhead.protocols.dlt698 import apdu as A
from gridhead.storage import archive, sql
from tests.headend.test_fleet import _fresh

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed (.ci/run installs it)")

N_TERMINALS, N_METERS, SEED, DAYS = 2, 4, 9, 2


@pytest.fixture
def pty_pair():
    """Two linked ptys by socat: (head-end end, meter end)."""
    p = subprocess.Popen(["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"], stderr=subprocess.PIPE, text=True)
    names = []
    deadline = time.monotonic() + 10
    while len(names) < 2 and time.monotonic() < deadline:
        line = p.stderr.readline()
        m = re.search(r"PTY is (\S+)", line)
        if m:
            names.append(m.group(1))
    while "starting data transfer" not in line and time.monotonic() < deadline:
        line = p.stderr.readline()
    assert len(names) == 2, "socat made no pty pair"
    yield names
    p.terminate()
    p.wait(5)


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("serialfleet")
    start = demo.today_local() - dt.timedelta(days=DAYS + 1)
    sim_model.write_standalone_archive(d, N_TERMINALS, N_METERS, SEED, start)
    with archive.Archive(sql.archive_path(d)) as a:
        a.import_files(sorted((d / "archive-files").glob("*.csv")))
    return d, [start + dt.timedelta(days=i) for i in range(1, DAYS + 1)]


def _bus_meters(fleet, n645=2, n698=2):
    idx645 = [i for i in range(fleet.n_meters) if fleet.is645[i]][:n645]
    idx698 = [i for i in range(fleet.n_meters) if not fleet.is645[i]][:n698]
    assert len(idx645) == n645 and len(idx698) == n698
    meters = tuple(SerialMeter("645" if fleet.is645[i] else "698", fleet.address[i]) for i in idx645 + idx698)
    return idx645 + idx698, meters


class Rig:
    def __init__(self, data, ptys, *, timeout_s=0.3, retries=1, baud=9600) -> None:
        self.fleet = sim_model.load_gen_dir(data)
        self.idx, meters = _bus_meters(self.fleet)
        self.port = SerialPort(device=ptys[0], baud=baud, timeout_s=timeout_s, retries=retries, meters=meters)
        self.he = HeadEnd(Config(data_dir=str(data), listen_port=0, serial=(self.port,)))
        self.meters = SerialMeters(self.fleet, self.idx, ptys[1], seed=SEED, baud=baud)

    async def __aenter__(self) -> "Rig":
        await self.meters.start()
        await self.he.start()
        self.bus: SerialBus = next(t for t in self.he.transports if isinstance(t, SerialBus))
        return self

    async def __aexit__(self, *exc) -> None:
        await self.he.stop()
        await self.meters.stop()


def test_daily_frozen_of_serial_meters_lands_in_the_lake_equal_to_the_model(fleet_dir, tmp_path, pty_pair):
    src, days = fleet_dir
    data = _fresh(src, tmp_path / "d")

    async def go():
        async with Rig(data, pty_pair) as r:
            col = c.Collector(r.he, [c.DEFAULT_TASKS[0]])
            try:
                outs = [await col.collect_day("daily-frozen", d) for d in days]
            finally:
                col.close()
            return r.idx, outs

    idx, outs = asyncio.run(go())
    for out in outs:
        assert out["online"] == 0                            # no concentrator: only the bus answered
        [bus] = out["buses"]
        assert bus["meters"] == 4 and set(bus["outcomes"].values()) == {"ok"}, out
    fleet = sim_model.load_gen_dir(src)
    with sql.Session(data) as s:
        rows = s.query("SELECT meter_id, date, ae_fwd, ae_fwd_t1, ae_fwd_t2, ae_fwd_t3, ae_fwd_t4 "
                       "FROM daily_frozen ORDER BY meter_id, date").to_pylist()
    assert len(rows) == len(idx) * DAYS
    by_id = {int(fleet.meter_id[i]): i for i in idx}
    for row in rows:
        i = by_id[row["meter_id"]]
        want = fleet.model.frozen([i], fleet.model.day_of(row["date"]))[0][:5]
        if fleet.is645[i]:
            want = want % 10 ** 8
        assert [row[k] for k in ("ae_fwd", "ae_fwd_t1", "ae_fwd_t2", "ae_fwd_t3", "ae_fwd_t4")] == want.tolist()


def test_monthly_settlement_of_serial_meters_equals_the_model(tmp_path, pty_pair):
    """The collector reads a bus's meters for every task, the monthly settlement (月冻结) too: a 645 meter's
    上1结算日 blocks and a 698 meter's 50060200 record, straight on the bus, equal to the register model
    as the concentrator path gives them (tests/headend/test_collect_tasks.py)."""
    from gridhead.storage import schema
    R = schema.REGISTER_CODES
    energy = ("ae_fwd", "ae_fwd_t1", "ae_fwd_t2", "ae_fwd_t3", "ae_fwd_t4", "ae_rev", "re_fwd", "re_rev")
    data = tmp_path / "m"
    today = demo.today_local()
    settle = today.replace(day=1)
    start = min(settle, today - dt.timedelta(days=1)) - dt.timedelta(days=2)
    sim_model.write_standalone_archive(data, N_TERMINALS, N_METERS, SEED, start)
    with archive.Archive(sql.archive_path(data)) as a:
        a.import_files(sorted((data / "archive-files").glob("*.csv")))
    task = c.Task("monthly-settlement", "monthly", "proxy", c.DEFAULT_TASKS[1].items, 0, 0, timeout_s=2)

    async def go():
        async with Rig(data, pty_pair) as r:
            col = c.Collector(r.he, [task])
            try:
                out = await col.collect_day(task, settle)
                await col.publish()
            finally:
                col.close()
            return r.idx, out

    idx, out = asyncio.run(go())
    [bus] = out["buses"]
    assert set(bus["outcomes"].values()) == {"ok"}, out
    f = sim_model.load_gen_dir(data)
    m = f.model
    with sql.Session(data) as s:
        rows = s.query("SELECT meter_id, register, epoch(ts_utc)::BIGINT AS t, value FROM readings "
                       "WHERE kind = 'monthly'").to_pylist()
    got: dict[int, dict] = {}
    midnight = int(dt.datetime(settle.year, settle.month, settle.day, tzinfo=schema.LOCAL_TZ).timestamp())
    for row in rows:
        assert row["t"] == midnight
        got.setdefault(row["meter_id"], {})[row["register"]] = row["value"]
    assert set(got) == {int(f.meter_id[i]) for i in idx}
    d, prev = m.day_of(settle), m.day_of((settle - dt.timedelta(days=1)).replace(day=1))
    for i in idx:
        want = m.frozen([i], d)[0]
        exp = {R[n]: int(want[k]) for k, n in enumerate(energy) if k < 6 or m.reactive[i]}
        exp[R["md_fwd"]] = int(m.max_demand_x1e4([i], prev, d)[0][0])
        if f.is645[i]:            # energy the low 8 digits of its register, demand XX.XXXX
            exp = {r: v % 10 ** (6 if r == R["md_fwd"] else 8) for r, v in exp.items()}
        assert got[int(f.meter_id[i])] == exp, i


def test_reads_remote_control_and_time_sync(fleet_dir, tmp_path, pty_pair):
    src, _days = fleet_dir

    async def go():
        async with Rig(src, pty_pair) as r:
            fleet, bus, sim = r.fleet, r.bus, r.meters
            m645, m698 = r.idx[0], r.idx[2]
            a645, a698 = fleet.address[m645], fleet.address[m698]
            rd = await bus.request645(ReadRequest(a645, P.DI645_FWD_ACTIVE))
            assert isinstance(rd, ReadResponse) and rd.address == a645
            now = sim.model_host.now()
            want = fleet.model.at([m645], fleet.model.day_of(now.date()),
                                  now.hour * 3600 + now.minute * 60 + now.second)[0][0] % 10 ** 8
            assert abs(rd.values[0].raw - int(want)) <= 1          # the register moves between two reads
            until = dt.datetime.now() + dt.timedelta(minutes=5)
            rc = await bus.request645(RemoteControlRequest.build(a645, RemoteCommand.TRIP, until))
            assert isinstance(rc, RemoteControlResponse) and sim.relay[a645] == "open"
            await bus.request645(RemoteControlRequest.build(a645, RemoteCommand.CLOSE_ALLOWED, until))
            await bus.request645(RemoteControlRequest.build(a645, RemoteCommand.PROTECT_ON, until))
            refused = await bus.request645(RemoteControlRequest.build(a645, RemoteCommand.TRIP, until))
            assert isinstance(refused, ErrorResponse) and sim.relay[a645] == "closed"
            await bus.broadcast645(BroadcastTimeSync.at(now + dt.timedelta(seconds=120)))
            await bus.request645(ReadRequest(a645, P.DI645_FWD_ACTIVE))      # the bus serves on after a broadcast
            assert sim.broadcasts == 1 and abs(sim.meters[a645].drift_s - 120) < 5
            g = await bus.request698(a698, A.get(0x00100200))
            data, _dar = sim.model_host.answers.instant(0x00100200, m698, sim.model_host.now())
            assert isinstance(g, A.GetResponseNormal) and g.result.data.value[0].value // 100 == \
                data.value[0].value // 100
            target = now + dt.timedelta(seconds=-300)
            from gridhead.protocols.dlt698.axdr import Data
            from gridhead.protocols.dlt698.session import date_time
            s = await bus.request698(a698, A.SetRequestNormal(1, 0x40000200, Data(25, date_time(target))))
            assert isinstance(s, A.SetResponseNormal) and s.dar == 0
            assert abs(sim.meters[a698].drift_s + 300) < 5

    asyncio.run(go())


def test_one_request_at_a_time_with_the_gap(fleet_dir, pty_pair):
    src, _days = fleet_dir

    async def go():
        async with Rig(src, pty_pair) as r:
            arrivals = []
            orig = r.meters._burst

            def burst():
                arrivals.append(time.monotonic())
                orig()
            r.meters._burst = burst
            addrs = [m.address for m in r.port.meters]
            reqs = [r.bus.request645(ReadRequest(a, P.DI645_FWD_ACTIVE)) if m.protocol == "645" else
                    r.bus.request698(a, A.get(0x00100200)) for _ in range(3) for a, m in zip(addrs, r.port.meters)]
            answers = await asyncio.gather(*reqs)                 # issued at once: the bus serialises them
            return arrivals, answers, r.bus

    arrivals, answers, bus = asyncio.run(go())
    assert len(answers) == 12 and all(a is not None for a in answers)
    assert len(arrivals) == 12                                    # every request a burst of its own
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert min(gaps) >= gap_s(9600) * 0.9, gaps
    assert bus.counters["requests"] == 12 and bus.counters["timeouts"] == 0


def test_silent_or_garbage_meters_time_out_and_the_port_serves_on(fleet_dir, pty_pair):
    src, _days = fleet_dir

    async def go():
        async with Rig(src, pty_pair, timeout_s=0.2, retries=2) as r:
            sim, bus = r.meters, r.bus
            mute, good, garbled = (m.address for m in r.port.meters[:3])     # 645, 645, 698
            sim.mute.add(mute)
            sim.garble.add(garbled)
            t0 = time.monotonic()
            with pytest.raises(AnswerTimeout):
                await bus.request645(ReadRequest(mute, P.DI645_FWD_ACTIVE))
            took = time.monotonic() - t0
            with pytest.raises(AnswerTimeout):
                await bus.request698(garbled, A.get(0x00100200))
            sim.noise = bytes(range(0x20, 0x60))                  # line noise before every answer
            ok = await bus.request645(ReadRequest(good, P.DI645_FWD_ACTIVE))
            assert isinstance(ok, ReadResponse) and ok.address == good
            with pytest.raises(AnswerTimeout):
                await bus.request698("999999999999", A.get(0x00100200))   # nobody has that address
            return took, dict(bus.counters)

    took, c = asyncio.run(go())
    assert 0.6 <= took < 2.0                         # 3 tries × 0.2 s (+ bus time, gaps), not forever
    assert c["timeouts"] == 3 and c["retries"] == 6 and c["answers"] == 1


def test_the_dlt645_package_rtu_meter_answers_over_the_pty(pty_pair):
    peer = pytest.importorskip("dlt645", reason="the interop peer is a test-only dependency: pip install dlt645")
    from dlt645 import MeterServerService
    peer.disable_logging()
    addr = "000012345678"
    meter = MeterServerService.new_rtu_server(pty_pair[1], 8, 1, 9600, "N", 0.05)   # a pty refuses parity
    meter.set_address(bytes.fromhex(addr)[::-1])                  # the peer takes the wire order
    meter.set_00(0x00010000, 123456.78)
    meter.set_00(0x00020000, 42.01)
    import threading
    th = threading.Thread(target=meter.start, daemon=True)
    th.start()

    async def go():
        he = HeadEnd(Config(listen_port=0), terminals=(), meter_of_tsa={}, writer=_NoWriter())
        he.loop = asyncio.get_running_loop()
        bus = SerialBus(he, SerialPort(device=pty_pair[0], baud=9600, timeout_s=1.0, retries=1))
        await bus.start()
        try:
            fwd = await bus.request645(ReadRequest(addr, 0x00010000))
            rev = await bus.request645(ReadRequest(addr, 0x00020000))
            return fwd, rev, dict(bus.counters)
        finally:
            await bus.stop()

    try:
        fwd, rev, counters = asyncio.run(go())
    finally:
        meter.stop()
    assert isinstance(fwd, ReadResponse) and fwd.values[0].raw == 12345678
    assert isinstance(rev, ReadResponse) and rev.values[0].raw == 4201
    # the peer's meter thread may still be opening the pty when the first request goes out: that request
    # is then sent again, and the bus time must count every frame that went on the wire, retries included
    assert counters["retries"] <= 1
    sent = 2 + counters["retries"]
    assert counters["bus_s"] == pytest.approx(sent * bus_time_s(len(ReadRequest(addr, 0x00010000).to_bytes()), 9600))


class _NoWriter:
    def flush(self, timeout=None):
        pass


def test_scheduler_collects_serial_meters_daily(fleet_dir, tmp_path, pty_pair):
    """``Collector.run`` reads the serial meters' daily freeze on the daily task's schedule (nobody calls
    ``collect_day``), records the run per port (``<task>@<device>``, as before the links were one loop),
    and a second pass over the same days (``run_days``: resuming) reads nothing again."""
    src, days = fleet_dir
    data = _fresh(src, tmp_path / "d")
    task = c.Task("daily-frozen", "daily", "records", start=days[0], end=days[-1], offset_s=0, timeout_s=1)

    async def go():
        async with Rig(data, pty_pair) as r:
            col = c.Collector(r.he, [task], seed=1)
            name = f"daily-frozen@{r.port.device}"
            try:
                calls = []
                real = col.collect_day

                async def counted(task, day, *, runs=None):
                    if runs is None or name in runs:
                        calls.append(day)
                    return await real(task, day, runs=runs)

                col.collect_day = counted
                stop = asyncio.Event()
                sched = asyncio.create_task(col.run(stop=stop))
                t0 = time.monotonic()
                while col.state.days(name, "collect") != days and time.monotonic() - t0 < 30:
                    await asyncio.sleep(0.1)
                stop.set()
                await sched
                sent = r.bus.counters["requests"]
                again = await col.run_days(task, days, backfill=False)      # resumed: every day has its run
                assert again["collected"] == [] and r.bus.counters["requests"] == sent
                await col.publish()
                return r.idx, calls, col.state.days(name, "collect")
            finally:
                col.close()

    idx, calls, ran = asyncio.run(go())
    assert ran == days and calls == days
    fleet = sim_model.load_gen_dir(src)
    with sql.Session(data) as s:
        rows = s.query("SELECT meter_id, date, ae_fwd FROM daily_frozen ORDER BY meter_id, date").to_pylist()
    by_id = {int(fleet.meter_id[i]): i for i in idx}
    assert {(r["meter_id"], r["date"]) for r in rows} == {(m, d) for m in by_id for d in days}
    for row in rows:
        i = by_id[row["meter_id"]]
        want = int(fleet.model.frozen([i], fleet.model.day_of(row["date"]))[0][0])
        assert row["ae_fwd"] == (want % 10 ** 8 if fleet.is645[i] else want)


def test_serial_backfill_rereads_a_missed_meter_day_within_its_retries(fleet_dir, tmp_path, pty_pair):
    """A meter that did not answer on the collection day is read again by ``Collector.backfill`` once its
    back-off has elapsed: the reading lands with Q_BACKFILLED, the attempt is recorded under the port's
    run name; a meter still silent is tried at most ``backfill_retries`` times; a stored day is not read."""
    from gridhead.storage import schema

    src, days = fleet_dir
    data = _fresh(src, tmp_path / "d")
    day = days[-1]
    task = c.Task("daily-frozen", "daily", "records", offset_s=0, timeout_s=1, backfill_retries=2,
                  backfill_delay_s=0)

    async def go():
        async with Rig(data, pty_pair) as r:
            col = c.Collector(r.he, [task], seed=1)
            try:
                late, dead = r.port.meters[0].address, r.port.meters[2].address      # a 645 and a 698 meter
                r.meters.mute.update({late, dead})
                first = await col.collect_day(task, day)
                assert first["buses"][0]["outcomes"][late] == "no answer"
                r.meters.mute.discard(late)                  # the line is back for one of them
                reports = [await col.backfill(task, [day]) for _ in range(2)]
                await col.publish()
                name = f"daily-frozen@{r.port.device}"
                att = col.state.attempts().to_pylist()
                return r.idx, reports, [a for a in att if a["task"] == name], late, dead
            finally:
                col.close()

    idx, reports, att, late, dead = asyncio.run(go())
    fleet = sim_model.load_gen_dir(src)
    mid = {fleet.address[i]: int(fleet.meter_id[i]) for i in idx}
    tried = [(a["meter_id"], a["outcome"]) for a in att]
    assert tried.count((mid[late], 1)) == 1                              # read once, ok
    assert [o for m, o in tried if m == mid[dead]] == [2, 2]             # no answer, twice: then left
    assert {m for m, _ in tried} == {mid[late], mid[dead]}               # the others were stored
    assert reports[0]["buses"][0]["requested"] == 3 and reports[-1]["buses"][0]["requested"] == 0
    with sql.Session(data) as s:
        rows = s.query(f"SELECT meter_id, quality, ae_fwd FROM daily_frozen WHERE date = DATE '{day}'").to_pylist()
    got = {r["meter_id"]: r for r in rows}
    assert set(got) == set(mid.values()) - {mid[dead]}
    assert got[mid[late]]["quality"] & schema.Q_BACKFILLED
    i = next(i for i in idx if fleet.address[i] == late)
    want = int(fleet.model.frozen([i], fleet.model.day_of(day))[0][0])
    assert got[mid[late]]["ae_fwd"] == (want % 10 ** 8 if fleet.is645[i] else want)
    assert all(got[m]["quality"] == 0 for m in got if m != mid[late])


def test_serial_state_resumes_and_bounds_backfill_across_a_restart(fleet_dir, tmp_path, pty_pair):
    """The bus's runs and attempts persist under ``<task>@<device>`` (the run names serial collection
    always used), so a new head-end and collector on the same data resume: the collected day is not read
    again, the meter-day stored by back-fill is not re-read, and the silent meter gets only the attempts
    its task's ``backfill_retries`` leave (1 before the restart, at most 2 in all)."""
    src, days = fleet_dir
    data = _fresh(src, tmp_path / "d")
    day = days[-1]
    once = c.Task("daily-frozen", "daily", "records", offset_s=0, timeout_s=1, backfill_retries=1,
                  backfill_delay_s=0)
    twice = c.Task("daily-frozen", "daily", "records", offset_s=0, timeout_s=1, backfill_retries=2,
                   backfill_delay_s=0)

    async def process(task, first: bool):
        async with Rig(data, pty_pair) as r:
            col = c.Collector(r.he, [task], seed=1)
            late, dead = r.port.meters[0].address, r.port.meters[2].address      # a 645 and a 698 meter
            try:
                r.meters.mute.add(dead)
                if first:
                    r.meters.mute.add(late)
                    await col.collect_day(task, day)
                    r.meters.mute.discard(late)
                out = await col.run_days(task, [day])
                again = await col.backfill(task, [day])
                name = f"daily-frozen@{r.port.device}"
                att = [a for a in col.state.attempts().to_pylist() if a["task"] == name]
                return out, again, dict(r.bus.counters), att, late, dead, r.idx
            finally:
                col.close()

    out1, again1, _c1, att1, late, dead, idx = asyncio.run(process(once, True))
    out2, again2, c2, att2, *_ = asyncio.run(process(twice, False))
    fleet = sim_model.load_gen_dir(src)
    mid = {fleet.address[i]: int(fleet.meter_id[i]) for i in idx}
    assert out1["collected"] == [] and out1["backfill"]["buses"][0]["requested"] == 2
    assert sorted((a["meter_id"], a["outcome"]) for a in att1) == sorted([(mid[late], 1), (mid[dead], 2)])
    assert again1["buses"][0]["requested"] == 0                         # the bound: one retry each
    # the new process: nothing collected again, one more try of the silent meter only, then nothing
    assert out2["collected"] == [] and out2["backfill"]["buses"][0]["outcomes"] == {f"{day.isoformat()}/{mid[dead]}": "no answer"}
    assert again2["buses"][0]["requested"] == 0 and c2["requests"] == 1
    assert sorted((a["meter_id"], a["outcome"]) for a in att2) == sorted([(mid[late], 1), (mid[dead], 2), (mid[dead], 2)])


def test_one_collect_day_reads_a_bus_and_a_concentrator_with_the_same_batches(fleet_dir, tmp_path, pty_pair):
    """One ``collect_day`` of a per-meter daily task: the concentrators' meters through PROXY requests over
    TCP (a simulated fleet in its own process) and the same four meters also wired to the head-end's
    RS-485 port, through the bus.  Both links give each shared meter the same readings (register, freeze
    time, value, quality, source) — one reading algorithm; only the carrier differs."""
    src, days = fleet_dir
    data = _fresh(src, tmp_path / "d")
    day = days[-1]
    task = c.Task("daily-proxy", "daily", "proxy", offset_s=0, timeout_s=5, backfill_retries=0)

    async def go():
        async with Rig(data, pty_pair, timeout_s=1.0) as r:
            fleet_p = demo.start_fleet(data, r.he.port, seed=SEED, heartbeat_s=30)
            col = c.Collector(r.he, [task], seed=1)
            try:
                t0 = time.monotonic()
                while len(r.he.sessions) < N_TERMINALS and time.monotonic() - t0 < 30:
                    await asyncio.sleep(0.05)
                batches = []
                col.on_stored = lambda kind, cols: batches.append({k: v.copy() for k, v in cols.items()})
                out = await col.collect_day(task, day)
                return r.idx, out, batches, sum(len(ms) for ms in col.meters_of.values())
            finally:
                col.close()
                demo.stop_process(fleet_p)

    idx, out, batches, in_archive = asyncio.run(go())
    fleet = sim_model.load_gen_dir(src)
    shared = {int(fleet.meter_id[i]) for i in idx}
    assert out["online"] == N_TERMINALS and out["requested"] == in_archive + len(shared)
    assert set(out["buses"][0]["outcomes"].values()) == {"ok"}
    # one stored batch per terminal and one of the bus: each shared meter is in two of them (its terminal's
    # and the bus's), with the same rows in both
    assert len(batches) == N_TERMINALS + 1
    keys = ("register", "ts_utc", "value", "quality", "source")
    per_meter: dict[int, list] = {}
    for b in batches:
        ids = b["meter_id"]
        for m in shared & set(ids.tolist()):
            per_meter.setdefault(m, []).append(sorted(tuple(int(b[k][j]) for k in keys) for j in (ids == m).nonzero()[0]))
    assert set(per_meter) == shared
    for m, (one, other) in per_meter.items():
        assert one and one == other, m
    from gridhead.storage import schema
    assert all(schema.REGISTER_CODES["ae_fwd"] in {r[0] for r in rows[0]} for rows in per_meter.values())
    assert any(fleet.is645[i] for i in idx) and not all(fleet.is645[i] for i in idx)   # both protocols


# --- issue 19 item 13: 召测 and remote control reach meters on the head-end's own RS-485 ports ------------
def test_read_and_remote_control_route_to_a_serial_meter_dlt645_peer(tmp_path, pty_pair):
    """The PyPI dlt645 meter server (RTU, on the pty) wired to the head-end's [[serial]] port: the command
    layer resolves its address to the serial route and reads it there — item by item, as it refuses
    block reads; its refusal of a remote control (it does not implement 1CH) is the command's failure."""
    peer = pytest.importorskip("dlt645", reason="the interop peer is a test-only dependency: pip install dlt645")
    from dlt645 import MeterServerService
    from gridhead.headend import commands as K
    from gridhead.headend.config import SerialMeter as SM
    from gridhead.headend.control import ControlConfig
    peer.disable_logging()
    addr = "000012345678"
    meter = MeterServerService.new_rtu_server(pty_pair[1], 8, 1, 9600, "N", 0.05)
    meter.set_address(bytes.fromhex(addr)[::-1])
    meter.set_00(0x00010000, 2718.28)
    meter.set_00(0x00020000, 3.14)
    import threading
    threading.Thread(target=meter.start, daemon=True).start()

    async def go():
        port = SerialPort(device=pty_pair[0], baud=9600, timeout_s=1.0, retries=2, meters=(SM("645", addr),))
        he = HeadEnd(Config(listen_port=0, data_dir=str(tmp_path), serial=(port,)), terminals=(), meter_of_tsa={},
                     writer=_NoWriter())
        await he.start()
        try:
            target = K.Routes(serial=K.serial_routes(he)).resolve(addr)
            assert target.path == "serial-645" and target.serial == pty_pair[0]
            cmds = K.Commands(he, ControlConfig(command_timeout_s=2))
            cmds.link(target).check_online()
            got = await cmds.read(target, ["energy", "reverse"])
            with pytest.raises(K.Refused, match="remote control trip"):
                await cmds.disconnect(target)
            return got, dict(next(t for t in he.transports if isinstance(t, SerialBus)).counters)
        finally:
            await he.stop()

    try:
        got, counters = asyncio.run(asyncio.wait_for(go(), 60))
    finally:
        meter.stop()
    energy, reverse = got["values"]
    assert energy["items"][0] == "00010000" and energy["values"][0]["value"] == "2718.28"
    assert reverse["values"][0]["value"] == "3.14"
    assert counters["answers"] >= 2 + 5 + 1 + 5                   # every frame went over the bus


def test_control_api_reads_and_trips_a_serial_meter(fleet_dir, tmp_path, pty_pair):
    """The control API of a head-end with [[serial]] meters: POST /v1/read and /v1/disconnect of a 645
    meter on the bus (by meter id, though the archive puts it behind a concentrator that is offline) go
    over the RS-485 port; the trip is confirmed by the status word read back, audited with path serial-645."""
    import json
    import urllib.request

    from gridhead.headend import control
    from gridhead.storage import control_log as CL

    src, _days = fleet_dir
    data = _fresh(src, tmp_path / "d")
    token = CL.TokenStore(CL.tokens_path(data)).add("op", "operator")[1]

    def call(api, path, body):
        req = urllib.request.Request(api + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    async def go():
        async with Rig(data, pty_pair) as r:
            ctl = control.mount(r.he, control.ControlConfig(port=0, command_timeout_s=3))
            await asyncio.sleep(0.2)
            i645 = r.idx[0]
            mid = str(int(r.fleet.meter_id[i645]))
            read = await asyncio.to_thread(call, ctl.url, "/v1/read", {"target": mid, "registers": ["energy"]})
            trip = await asyncio.to_thread(call, ctl.url, "/v1/disconnect", {"target": mid, "reason": "test"})
            relay = r.meters.relay[r.fleet.address[i645]]
            ctl.task.cancel()
            await asyncio.gather(ctl.task, return_exceptions=True)
            return read, trip, relay

    (s1, read), (s2, trip), relay = asyncio.run(asyncio.wait_for(go(), 90))
    assert s1 == 200 and read["outcome"] == "ok" and read["path"] == "serial-645", read
    assert read["values"][0]["di"] == "0001FF00" and read["values"][0]["values"]
    assert s2 == 200 and trip["outcome"] == "ok" and trip["confirmed"] is True and trip["path"] == "serial-645", trip
    assert relay == "open"

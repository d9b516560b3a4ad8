"""The fleet simulator (headend/sim/simulator.py) against a small master built on ClientSession, over real
sockets on 127.0.0.1: logins and heartbeats, the collection profile's answers equal to the register
model (and the model consistent with storage.generator), REPORTs re-sent until acknowledged, faults at
their rates, determinism, listen mode, and 500 terminals in a subprocess."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from gridhead.headend import profile as P
from gridhead.headend.sim import model as sm
from gridhead.headend.sim import simulator as S
from gridhead.headend.sim.answers import PreEncoded
from gridhead.protocols.dlt645 import Framer as Framer645
from gridhead.protocols.dlt645 import ReadRequest, decode_message
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698 import session as CS
from gridhead.protocols.dlt698.axdr import MS, RSD, TI, Data, DateTime, DateTimeS, Selector1, SelectorRange
from gridhead.storage import generator as gen

START = dt.date(2026, 6, 1)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Master:
    """A minimal head-end: accepts every login, acknowledges reports unless told not to, keeps events."""

    def __init__(self, ack_reports_after: int = 0):
        self.logins, self.heartbeats, self.reports, self.responses = [], [], [], asyncio.Queue()
        self.links: dict[str, tuple] = {}       # terminal address -> (session, writer)
        self.raw: list[bytes] = []
        self.ack_after = ack_reports_after      # ignore this many reports of each terminal first
        self._seen: dict[str, int] = {}

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer):
        s = CS.ClientSession()
        while data := await reader.read(65536):
            self.raw.append(data)
            s.receive_data(data, dt.datetime.now())
            while True:
                try:
                    ev = s.next_event()
                except Exception:           # noqa: BLE001 - garbage on the wire: the framer resyncs
                    continue
                if ev is CS.NEED_DATA:
                    break
                self._event(s, writer, ev)

    def _event(self, s, writer, ev):
        now = time.monotonic()
        if isinstance(ev, CS.LinkRequested):
            addr = ev.server.address
            if ev.request.type == A.LINK_LOGIN:
                self.logins.append((addr, now))
                self.links[addr] = (s, writer)
            elif ev.request.type == A.LINK_HEARTBEAT:
                self.heartbeats.append((addr, now))
            writer.write(s.send(CS.AcceptLink(ev), dt.datetime.now()))
        elif isinstance(ev, CS.Report):
            addr = ev.server.address
            self.reports.append((addr, now, ev.notification))
            n = self._seen[addr] = self._seen.get(addr, 0) + 1
            if n > self.ack_after:
                writer.write(s.send(CS.AcknowledgeReport(ev), dt.datetime.now()))
        elif isinstance(ev, CS.Response):
            self.responses.put_nowait(ev.response)

    def request(self, addr: str, apdu) -> None:
        s, w = self.links[addr]
        w.write(s.send(apdu, dt.datetime.now()))

    async def ask(self, addr: str, apdu, timeout: float = 5.0):
        self.request(addr, apdu)
        return await asyncio.wait_for(self.responses.get(), timeout)

    async def wait(self, cond, timeout: float = 10.0):
        t0 = time.monotonic()
        while not cond():
            if time.monotonic() - t0 > timeout:
                raise AssertionError("timed out waiting")
            await asyncio.sleep(0.02)


def _fleet(n=3, m=6, seed=5):
    return sm.standalone(n, m, seed, START)


async def _with_sim(fleet, master, body, **kw):
    port = await master.start()
    kw.setdefault("start", dt.datetime(2026, 6, 5, 10, 0, 0))
    sim = S.Simulator(fleet, seed=kw.pop("seed", 5), connect=("127.0.0.1", port), **kw)
    task = asyncio.create_task(sim.run())
    try:
        await master.wait(lambda: len({a for a, _ in master.logins}) == len(fleet.terminals))
        return await body(sim)
    finally:
        sim.stop()
        await asyncio.wait_for(task, 5)
        master.server.close()


def _daily_request(d0: dt.date, d1: dt.date, ms=MS(1, None)):
    sel = SelectorRange(DateTimeS(d0.year, d0.month, d0.day, 0, 0, 0), DateTimeS(d1.year, d1.month, d1.day, 0, 0, 0),
                        TI(3, 1), ms)
    return A.get_record(P.OAD_TASK_RECORDS, RSD(7, sel), P.DAILY_RCSD)


def _proxy_day(address: str, day: dt.date):
    when = Data(28, DateTimeS(day.year, day.month, day.day, 0, 0, 0))
    return A.ProxyGetRequestRecord(1, 30, A.tsa(address), A.GetRecord(
        P.OAD_DAY_FREEZE, RSD(1, Selector1(P.OAD_FREEZE_TIME, when)), P.DAILY_METER_RCSD))


def _values(arr) -> list[int]:
    return [x.value for x in arr.value]


# --- the model -------------------------------------------------------------------------------------------
def test_model_tou_sums_and_generator_day0():
    """Every meter's TOU registers sum to its total on every day; day 0 equals storage.generator's
    first frozen readings of the same seed; increments follow the generator's season × weekday."""
    f = sm.standalone(40, 10, 9, START)
    m = f.model
    idx = np.arange(len(m))
    for d in (0, 1, 7, 45):
        r = m.frozen(idx, d)                       # (a rollover meter's registers wrap: sums are modulo)
        np.testing.assert_array_equal(r[:, 1:5].sum(axis=1) % m.modulus, r[:, 0])
        a = m.at(idx, d, 13 * 3600 + 1234)
        np.testing.assert_array_equal(a[:, 1:5].sum(axis=1) % m.modulus, a[:, 0])
        # the day's partial increment lies between the two freezes (modulo the register's rollover)
        mod, nxt = m.modulus, m.frozen(idx, d + 1)[:, 0]
        np.testing.assert_array_equal((a[:, 0] - r[:, 0]) % mod + (nxt - a[:, 0]) % mod, (nxt - r[:, 0]) % mod)
    g = gen.FleetGenerator(gen.GenConfig(400, 1, 9, START))
    daily = g.day(0)["daily"]
    r0 = m.frozen(idx, 0)
    for k, name in enumerate(gen.ENERGY_REGS):
        sel = daily["register"] == gen.schema.REGISTER_CODES[name]
        np.testing.assert_array_equal(daily["value"][sel], r0[daily["meter_id"][sel] - 1, k])
    # a residential weekday vs weekend: the ratio the generator's season_weekday gives
    res = np.flatnonzero(m.cat == gen.RES)
    fri, sat = m.increments(res, [4]), m.increments(res, [5])      # 2026-06-05 Fri, 06-06 Sat
    ratio = sat.sum() / fri.sum()
    want = gen.season_weekday(START + dt.timedelta(days=5))[0] / gen.season_weekday(START + dt.timedelta(days=4))[0]
    assert abs(ratio / want - 1) < 0.05


def test_standalone_archive_round_trip(tmp_path):
    """write_standalone_archive + load_gen_dir (through a real Archive import) give the same fleet."""
    f = sm.standalone(7, 5, 3, START)
    sm.write_standalone_archive(tmp_path, 7, 5, 3, START)
    g = sm.load_gen_dir(tmp_path)
    assert g.terminals == f.terminals
    assert all(np.array_equal(a, b) for a, b in zip(g.meters_of, f.meters_of))
    assert g.address == f.address and np.array_equal(g.is645, f.is645)
    idx = np.arange(len(f.model))
    np.testing.assert_array_equal(g.model.frozen(idx, 4), f.model.frozen(idx, 4))


# --- link ----------------------------------------------------------------------------------------------
def test_login_and_heartbeat_period():
    fleet = _fleet(4, 3)
    master = Master()

    async def body(sim):
        await asyncio.sleep(3.3)
        for addr in fleet.terminals:
            ts = [t for a, t in master.heartbeats if a == addr]
            assert len(ts) >= 2
            gaps = np.diff(ts)
            assert np.all(np.abs(gaps - 1.0) < 0.35), gaps
        assert sim.stats.online == 4

    asyncio.run(_with_sim(fleet, master, body, heartbeat_s=1))
    assert sorted({a for a, _ in master.logins}) == fleet.terminals


# --- the collection profile's answers ---------------------------------------------------------------------
def test_answers_equal_model():
    fleet = _fleet(2, 8)
    master = Master()
    m = fleet.model

    async def body(sim):
        t = fleet.terminals[0]
        meters = fleet.meters_of[0]
        # (a) GET-Record of 60120300, days 06-02 .. 06-04
        r = await master.ask(t, _daily_request(dt.date(2026, 6, 2), dt.date(2026, 6, 5)))
        rows = r.result.rows
        assert len(rows) == 3 * len(meters)
        for row in rows:
            tsa, _s, _ok, store, freeze = row
            i = fleet.address.index(bytes(tsa.value[1:])[::-1].hex())
            d = m.day_of(dt.date(*store.value[:3]))
            want = m.frozen([i], d)[0]
            cols = freeze.value
            fwd = _values(cols[1])
            assert fwd == list(want[:5]) and sum(fwd[1:]) == fwd[0]
            assert _values(cols[2]) == [want[5]]
        # (b) PROXY GetRequestRecord of one meter's day freeze
        i = int(meters[3])
        r = await master.ask(t, _proxy_day(fleet.address[i], dt.date(2026, 6, 4)))
        (row,) = r.result.rows
        assert tuple(row[0].value) == (2026, 6, 4, 0, 0, 0)
        assert _values(row[1]) == list(m.frozen([i], 3)[0][:5])
        # (c) a DL/T 645 meter through TransCommand on the archive's port: 上 n 次日冻结 with
        # n = (today − D) + 1 — 上1次 is today's 00:00 freeze, 上2次 yesterday's
        j = int(next(x for x in meters if fleet.is645[x]))
        port = int(fleet.port[j])
        today = sim.today()

        async def read645(di, n, on_port=port):
            cmd = ReadRequest(fleet.address[j], di & ~0xFF | n).to_bytes()
            return await master.ask(t, A.ProxyTransCommandRequest(1, on_port, (3, 2, 8, 1, 0), 10, 100, cmd))

        for n in (1, 2):
            fr = Framer645()
            fr.feed((await read645(P.DI645_DAILY_FWD, n)).answer)
            msg = decode_message(fr.next_frame())
            assert [v.raw for v in msg.values] == [int(x) % 10**8 for x in m.frozen([j], today + 1 - n)[0][:5]]
        fr = Framer645()
        fr.feed((await read645(P.DI645_DAILY_TIME, 1)).answer)
        assert decode_message(fr.next_frame()).values[0].raw == int(sim.now().strftime("%y%m%d0000"))
        # the wrong port: a port the concentrator has but the meter is not on times out (DAR 33),
        # a port it does not have does not exist (DAR 6)
        other = P.PORT_RS485_1 if port != P.PORT_RS485_1 else P.PORT_CARRIER
        r = await read645(P.DI645_DAILY_FWD, 1, other)
        assert r.answer is None and r.dar == (33 if other in sim.terminals[0].ports else 6)
        r = await read645(P.DI645_DAILY_FWD, 1, 0xF2020201)
        assert r.answer is None and r.dar == 6
        # GET 40000200 and SET it (对时): the drift goes
        r = await master.ask(t, A.get(P.OAD_DATETIME))
        got = dt.datetime(*r.result.data.value[:3], *r.result.data.value[4:7])
        assert abs((got - sim.now()).total_seconds()) < 2
        now = sim.now() + dt.timedelta(seconds=100)
        dtv = DateTime(now.year, now.month, now.day, 0, now.hour, now.minute, now.second, 0)
        r = await master.ask(t, A.set_(P.OAD_DATETIME, Data(25, dtv)))
        assert r.dar == 0 and 95 < sim.terminals[0].drift_s < 101
        # PROXY GetRequestList of the energy and instantaneous OADs
        oads = (P.OAD_FWD_ACTIVE, P.OAD_VOLTAGE, P.OAD_ACTIVE_POWER)
        r = await master.ask(t, A.proxy_get_list({A.tsa(fleet.address[i]): oads}))
        res = r.results[0].results
        assert [x.oad for x in res] == list(oads) and all(x.dar is None for x in res)
        fwd = _values(res[0].data)
        assert sum(fwd[1:]) == fwd[0] and fwd[0] >= m.frozen([i], 4)[0][0]

    asyncio.run(_with_sim(fleet, master, body))


def test_report_pushed_after_midnight_and_resent_until_acked():
    fleet = _fleet(2, 4)
    master = Master(ack_reports_after=2)

    async def body(sim):
        await master.wait(lambda: sim.stats.reports_acked == 2, timeout=8)
        await asyncio.sleep(0.5)

    asyncio.run(_with_sim(fleet, master, body, start=dt.datetime(2026, 6, 5, 23, 59, 59), report_window_s=0.5,
                          report_retry_s=0.3))
    for addr in fleet.terminals:
        mine = [n for a, _, n in master.reports if a == addr]
        assert len(mine) == 3                           # two ignored, the third acknowledged, no more
        assert mine[0].to_bytes() == mine[2].to_bytes()  # re-sent as it was
        (res,) = mine[0].results
        assert res.oad == P.OAD_TASK_RECORDS and res.rcsd == P.DAILY_RCSD
        assert {tuple(r[3].value) for r in res.rows} == {(2026, 6, 6, 0, 0, 0)}
        assert len(res.rows) == len(fleet.meters_of[fleet.terminals.index(addr)])


# --- faults ---------------------------------------------------------------------------------------------
def test_fault_rates_and_ground_truth():
    fleet = _fleet(2, 40, seed=11)
    master = Master()
    faults = S.Faults(drop=0.2, garbage=0.2, missing=0.3, missing_late=0.0, meter_missing=0.05)
    n = 150

    async def body(sim):
        t = fleet.terminals[0]
        got = 0
        for _ in range(n // 50):                      # 50 at a time: 64 PIIDs, the dropped ones never free theirs
            for _ in range(50):
                master.request(t, A.get(P.OAD_DATETIME))
            try:
                while True:
                    await asyncio.wait_for(master.responses.get(), 0.5)
                    got += 1
            except asyncio.TimeoutError:
                pass
            s, _w = master.links[t]
            s.expire(dt.datetime.now() + dt.timedelta(days=1))
            while s.next_event() is not CS.NEED_DATA:   # the Timeouts of the dropped ones
                pass
        dropped = sim.stats.dropped
        assert got + dropped == n
        assert 0.2 * n - 3 * (0.16 * n) ** 0.5 < dropped < 0.2 * n + 3 * (0.16 * n) ** 0.5
        assert sim.stats.garbage > 0
        days = (dt.date(2026, 6, 1), dt.date(2026, 6, 5))
        for _attempt in range(20):                     # the answer may be dropped too: ask again
            try:
                r = await master.ask(t, _daily_request(*days), timeout=1.0)
                break
            except asyncio.TimeoutError:
                pass
        meters = fleet.meters_of[0]
        present = {(bytes(row[0].value[1:])[::-1].hex(), tuple(row[3].value)) for row in r.result.rows}
        share = 1 - len(present) / (4 * len(meters))
        assert 0.2 < share < 0.45                     # 1 - 0.95 × 0.7 ≈ 0.335
        return present

    present = asyncio.run(_with_sim(fleet, master, body, faults=faults))


def test_ground_truth_lists_missing_and_events():
    fleet = _fleet(2, 40, seed=11)
    sim = S.Simulator(fleet, seed=11, connect=("127.0.0.1", 9), start=dt.datetime(2026, 6, 5, 10),
                      faults=S.Faults(missing=0.3, missing_late=0.5, meter_missing=0.05, clock_drift=0.5))
    truth = sim.ground_truth()
    kinds = {k: sum(1 for x in truth["missing"] if x["kind"] == k) for k in ("meter", "never", "late")}
    total = len(fleet.model) * 5                          # days 06-01 .. 06-05
    assert abs(kinds["meter"] / total - 0.05) < 0.02
    assert abs((kinds["never"] + kinds["late"]) / total - 0.3 * 0.95) < 0.04
    # every listed meter-day is indeed unavailable in the concentrator's records at 06-05 10:00
    now = dt.datetime(2026, 6, 5, 10)
    for x in truth["missing"][:200]:
        i = x["meter_id"] - 1
        d = fleet.model.day_of(dt.date.fromisoformat(x["date"]))
        late_ok = x["kind"] == "late" and now >= dt.datetime.combine(fleet.model.date(d), dt.time()) + dt.timedelta(hours=1)
        assert sim.record_available(i, d, now) == late_ok
    assert json.loads(json.dumps(truth))["seed"] == 11
    assert len(truth["clock_drift_s"]) >= 1 and all(60 <= abs(v) <= 600 for v in truth["clock_drift_s"].values())


def test_offline_spells_reconnect_and_log_in_again():
    fleet = _fleet(3, 2, seed=2)
    master = Master()

    async def body(sim):
        await master.wait(lambda: sim.stats.offline_spells >= 2 and len(master.logins) >= 5, timeout=12)
        offline = [e for e in sim.events if e["kind"] == "offline"]
        assert all(0.1 <= e["duration_s"] <= 0.6 for e in offline)

    asyncio.run(_with_sim(fleet, master, body, heartbeat_s=1, faults=S.Faults(offline=0.5, offline_s=0.4)))


# --- determinism and listen mode -------------------------------------------------------------------------
def test_same_seed_same_bytes():
    async def once():
        fleet = _fleet(1, 10, seed=21)
        master = Master()

        async def body(sim):
            t = fleet.terminals[0]
            for d in (2, 3, 4):
                await master.ask(t, _daily_request(dt.date(2026, 6, d), dt.date(2026, 6, d + 1)))
            for i in fleet.meters_of[0][:4]:
                try:
                    await master.ask(t, _proxy_day(fleet.address[int(i)], dt.date(2026, 6, 3)), timeout=1)
                except asyncio.TimeoutError:
                    pass
            await asyncio.sleep(0.2)

        await _with_sim(fleet, master, body, seed=21, faults=S.Faults(drop=0.2, garbage=0.3, missing=0.2),
                        heartbeat_s=600)
        raw = b"".join(master.raw)
        link = b"\x68\x1e\x00\x81"                     # LINK-Request frames carry the wall-clock time:
        return raw[raw.index(link) + 32:raw.rindex(link)]  # from after the login to before the logout

    a, b = asyncio.run(once()), asyncio.run(once())
    assert a == b and len(a) > 1000


def test_listen_mode_one_port():
    fleet = _fleet(3, 3)

    async def main():
        sim = S.Simulator(fleet, seed=5, listen=("127.0.0.1", 0, None), start=dt.datetime(2026, 6, 5, 10))
        up = asyncio.Event()
        task = asyncio.create_task(sim.run(ready=up.set))
        await up.wait()
        port = sim._servers[0].sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        out = []
        for addr in fleet.terminals[::2]:
            s = CS.ClientSession(CS.ServerAddress(addr))
            writer.write(s.send(A.get(P.OAD_DATETIME), dt.datetime.now()))
            while True:
                s.receive_data(await asyncio.wait_for(reader.read(4096), 5), dt.datetime.now())
                ev = s.next_event()
                if ev is not CS.NEED_DATA:
                    out.append((addr, ev))
                    break
        writer.close()
        sim.stop()
        await task
        return out

    out = asyncio.run(main())
    assert [a for a, _ in out] == fleet.terminals[::2]
    assert all(isinstance(ev, CS.Response) and ev.server.address == a for a, ev in out)


# --- scale: a subprocess ---------------------------------------------------------------------------------
def test_500_terminals_in_a_subprocess_log_in():
    master = Master()

    async def main():
        port = await master.start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gridhead.cli", "sim", "--terminals", "500", "--meters-per-terminal", "2", "--seed", "4",
            "--connect", f"127.0.0.1:{port}", "--heartbeat", "2", "--duration", "6", "--stats-every", "0",
            "--json", cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        master.server.close()
        return proc.returncode, out, err

    rc, out, err = asyncio.run(main())
    assert rc == 0, err.decode()[-2000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert len({a for a, _ in master.logins}) == 500
    assert summary["logins"] == 500 and summary["terminals"] == 500
    assert len(master.heartbeats) >= 500


def test_cli_errors_are_one_line():
    r = subprocess.run([sys.executable, "-m", "gridhead.cli", "sim", "--terminals", "1", "--connect", "127.0.0.1:x"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "HOST:PORT" in r.stderr
    with pytest.raises(sm.SimulatorError):
        S.Faults.parse(["drop=2"])


def test_replaced_meters_answer_the_days_the_archive_expects(tmp_path):
    """换表: the simulator has a freeze of a meter exactly on the days storage.collection expects it — the
    old meter up to its removal day's 00:00, the new one from the day after its install day."""
    from gridhead.storage import archive, collection
    gen.generate(tmp_path, customers=300, days=6, seed=4, start=START, write_lake=False,
                 rates={"replacement": 0.2})
    with archive.Archive(tmp_path / "archive.duckdb") as a:
        a.import_files(sorted((tmp_path / "archive-files").glob("*.csv")))
        exp = collection.expected_meters(a)
    fleet = sm.load_gen_dir(tmp_path)
    sim = S.Simulator(fleet, seed=5, connect=("127.0.0.1", 1))
    st = collection.CollectionState(tmp_path / "lake", exp)
    now = dt.datetime(2026, 6, 8, 12, 0)
    replaced = 0
    for d in range(0, 7):
        day = START + dt.timedelta(days=d)
        want = set(st.gaps([day], "t").column("meter_id").to_pylist())
        have = {int(fleet.meter_id[i]) for i in range(len(fleet.meter_id)) if sim.record_available(i, d, now)}
        assert have == want, (day, sorted(have ^ want)[:10])
        rows = sim.answers.task_rows(np.arange(len(fleet.meter_id)), [d], P.DAILY_RCSD, now)
        assert len(rows) == len(want)
        replaced += int((fleet.model.first_freeze > np.iinfo(np.int64).min).sum())
    st.close()
    assert replaced > 0


def test_pre_encoded_task_records_equal_the_data_path():
    """The daily 60120300 answer written straight to bytes is the Data path's encoding, byte for byte
    (reactive nulls, several days, an MS of chosen meters), and a non-profile RCSD takes the Data path."""
    fleet = _fleet(6, 9)
    sim = S.Simulator(fleet, seed=5, connect=("127.0.0.1", 1), start=dt.datetime(2026, 6, 5, 10, 0, 0))
    a, now = sim.answers, sim.now()
    reqs = [_daily_request(dt.date(2026, 6, 2), dt.date(2026, 6, 5)), _daily_request(dt.date(2026, 6, 4), dt.date(2026, 6, 5))]
    t0 = sim.terminals[0]
    some = tuple(A.tsa(fleet.address[int(i)]) for i in t0.meters[:3])
    reqs.append(_daily_request(dt.date(2026, 6, 3), dt.date(2026, 6, 4), MS(3, some)))
    n_pre = 0
    for req in reqs:
        for t in sim.terminals:
            got = a.get_record_response(t, 7, req.record, now)
            n_pre += isinstance(got, PreEncoded)
            assert got.to_bytes() == A.GetResponseRecord(7, a.get_record(t, req.record, now)).to_bytes()
    assert n_pre == len(reqs) * len(sim.terminals)
    other = A.GetRecord(P.OAD_TASK_RECORDS, reqs[0].record.rsd, P.DAILY_RCSD_HEAD)
    assert isinstance(a.get_record_response(t0, 7, other, now), A.GetResponseRecord)

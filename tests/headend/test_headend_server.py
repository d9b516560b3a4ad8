"""The head-end server over real sockets on 127.0.0.1: sessions, requests, reports, back-pressure, metrics.

The terminals here are small in-test concentrators written with the protocols codec (frames and APDUs
built and parsed by protocols.dlt698), talking through asyncio streams to a real HeadEnd with a real
IngestWriter on a tmp lake.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import urllib.request

import pytest

from gridhead.headend import profile as P
from gridhead.headend import records as rec
from gridhead.headend.config import Config
from gridhead.headend.server import HeadEnd, AnswerTimeout, TerminalOffline
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698.axdr import Data, DateTimeS
from gridhead.protocols.dlt698.frame import Frame, Framer, ServerAddress
from gridhead.storage import schema, wal

GOOD, OTHER, UNKNOWN = "201605190907", "201605190908", "999999999999"
METERS = {A.tsa("000000000001"): 11, A.tsa("000000000002"): 12}
C_LINK, C_REPORT, C_RESPONSE = 0x81, 0x83, 0xC3


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class FakeTerminal:
    """A concentrator that dials in: log in, beat, answer GETs (by ``answer``), push reports."""

    def __init__(self, address: str, port: int, *, answer=None) -> None:
        self.address = ServerAddress(address)
        self.port = port
        self.answer = answer            # request Apdu -> response Apdu | None (drop) | coroutine
        self.framer = Framer()
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.requests: list = []
        self.reader = self.writer = None
        self.task = None
        self.piid = 0

    async def connect(self) -> "FakeTerminal":
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.task = asyncio.get_running_loop().create_task(self._read())
        return self

    def send(self, control: int, apdu: A.Apdu) -> None:
        self.writer.write(Frame(self.address, 0x10, control, apdu.to_bytes()).to_bytes())

    def link(self, kind: int, heartbeat_s: int = 60) -> A.LinkRequest:
        self.piid = (self.piid + 1) % 64
        now = dt.datetime.now()
        req = A.LinkRequest(self.piid, kind, heartbeat_s,
                            (now.year, now.month, now.day, (now.weekday() + 1) % 7, now.hour, now.minute,
                             now.second, now.microsecond // 1000))
        self.send(C_LINK, req)
        return req

    async def login(self, heartbeat_s: int = 60) -> A.LinkResponse:
        self.link(A.LINK_LOGIN, heartbeat_s)
        return await self.next(A.LinkResponse)

    async def next(self, cls=None, timeout: float = 5.0):
        while True:
            apdu = await asyncio.wait_for(self.inbox.get(), timeout)
            if apdu is None:
                raise ConnectionError("closed by the head-end")
            if cls is None or isinstance(apdu, cls):
                return apdu

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.framer.feed(data)
                while (f := self.framer.next_frame()) is not None:
                    apdu = A.decode_apdu(f.apdu)
                    if apdu.TAG in (0x05, 0x06, 0x07, 0x09):          # a request from the master
                        self.requests.append(apdu)
                        asyncio.get_running_loop().create_task(self._serve(apdu))
                    else:
                        self.inbox.put_nowait(apdu)
        except (ConnectionError, OSError):
            pass
        self.inbox.put_nowait(None)

    async def _serve(self, req) -> None:
        rsp = self.answer(req) if self.answer else None
        if asyncio.iscoroutine(rsp):
            rsp = await rsp
        if rsp is not None and not self.writer.is_closing():
            self.send(C_RESPONSE, rsp)

    async def closed(self, timeout: float = 5.0) -> bool:
        await asyncio.wait_for(self.task, timeout)
        return True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def clock_answer(req):
    """GET 40000200 → the terminal's clock (date_time_s), the same PIID."""
    if isinstance(req, A.GetRequestNormal):
        return A.GetResponseNormal(req.piid, A.ResultNormal(req.oad, Data(28, DateTimeS(2024, 6, 1, 12, 0, 0))))
    return None


def config(tmp_path, **kw) -> Config:
    base = dict(listen_port=0, data_dir=str(tmp_path), request_timeout_s=2.0, request_retries=0)
    base.update(kw)
    return Config(**base)


class Env:
    """A head-end on 127.0.0.1 with a real IngestWriter on tmp_path/lake."""

    def __init__(self, tmp_path, writer_cls=wal.IngestWriter, **kw) -> None:
        self.writer = writer_cls(tmp_path / "lake", [11, 12])
        self.he = HeadEnd(config(tmp_path, **kw), terminals={GOOD, OTHER}, meter_of_tsa=METERS, writer=self.writer)

    async def __aenter__(self) -> HeadEnd:
        await self.he.start()
        return self.he

    async def __aexit__(self, *exc) -> None:
        await self.he.stop()
        self.writer.close()


async def until(pred, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


# --- sessions ------------------------------------------------------------------------------------------------
def test_login_answered_with_three_timestamps_and_registered(tmp_path):
    async def main():
        async with Env(tmp_path) as he:
            t = await FakeTerminal(GOOD, he.port).connect()
            req = A.LinkRequest(5, A.LINK_LOGIN, 60, (2024, 6, 1, 6, 12, 0, 0, 0))
            t.send(C_LINK, req)
            rsp = await t.next(A.LinkResponse)
            assert rsp.piid == 5 and rsp.outcome == 0 and rsp.clock_trusted
            assert rsp.requested_at == req.requested_at
            assert rsp.received_at[0] >= 2024 and rsp.responded_at >= rsp.received_at
            await until(lambda: GOOD in he.sessions)
            info = he.sessions.get(GOOD).info()
            assert info["peer"].startswith("127.0.0.1:") and info["heartbeat_s"] == 60 and info["login_utc"]
            t.link(A.LINK_HEARTBEAT)
            assert (await t.next(A.LinkResponse)).outcome == 0
            t.link(A.LINK_LOGOUT)
            assert (await t.next(A.LinkResponse)).outcome == 0
            assert await t.closed()
            await until(lambda: GOOD not in he.sessions)
            assert he.metrics.closed["logout"] == 1
    run(main())


def test_unknown_address_refused_with_illegal_device_and_closed(tmp_path):
    async def main():
        async with Env(tmp_path) as he:
            t = await FakeTerminal(UNKNOWN, he.port).connect()
            rsp = await t.login()
            assert rsp.outcome == 2                       # 非法设备
            assert await t.closed()
            assert UNKNOWN not in he.sessions and he.metrics.refused["illegal device"] == 1
    run(main())


def test_second_login_replaces_the_stale_session(tmp_path):
    async def main():
        async with Env(tmp_path) as he:
            a = await FakeTerminal(GOOD, he.port, answer=clock_answer).connect()
            await a.login()
            b = await FakeTerminal(GOOD, he.port, answer=clock_answer).connect()
            assert (await b.login()).outcome == 0
            assert await a.closed()
            assert he.sessions.get(GOOD).peer.endswith(str(b.writer.get_extra_info("sockname")[1]))
            rsp = await he.request(GOOD, A.get(P.OAD_DATETIME))
            assert rsp.result.data.value == DateTimeS(2024, 6, 1, 12, 0, 0) and len(b.requests) == 1
            assert he.metrics.closed["replaced"] == 1
    run(main())


def test_missed_heartbeats_close_the_session(tmp_path):
    async def main():
        async with Env(tmp_path, heartbeat_multiple=2) as he:
            t = await FakeTerminal(GOOD, he.port).connect()
            await t.login(heartbeat_s=1)
            t0 = time.monotonic()
            await asyncio.sleep(1.0)
            t.link(A.LINK_HEARTBEAT, 1)                   # one beat, then silence
            await t.next(A.LinkResponse)
            assert await t.closed(6)
            took = time.monotonic() - t0
            assert 2.9 <= took <= 4.5, took               # 1 s + 2 periods of 1 s (+ wheel resolution, load)
            assert he.metrics.closed["heartbeat"] == 1 and GOOD not in he.sessions
    run(main())


# --- requests ------------------------------------------------------------------------------------------------
def test_requests_matched_by_piid_with_several_in_flight(tmp_path):
    async def main():
        async with Env(tmp_path, max_in_flight=4) as he:
            async def answer(req):
                # answer the first request last: responses come back out of order
                await asyncio.sleep(0.3 if req.oad == 0x00100200 else 0.05 * (req.oad & 0xFF))
                return A.GetResponseNormal(req.piid, A.ResultNormal(req.oad, Data(6, req.oad & 0xFF)))
            t = await FakeTerminal(GOOD, he.port, answer=answer).connect()
            await t.login()
            oads = [0x00100200 + i for i in range(8)]
            peak = 0

            async def watch():
                nonlocal peak
                while True:
                    peak = max(peak, he.sessions.get(GOOD).in_flight)
                    await asyncio.sleep(0.005)
            w = asyncio.get_running_loop().create_task(watch())
            rsps = await asyncio.gather(*(he.request(GOOD, A.get(o)) for o in oads))
            w.cancel()
            assert [r.result.oad for r in rsps] == oads
            assert [r.result.data.value for r in rsps] == list(range(8))
            c = he.sessions.get(GOOD).counters
            assert (c["requests_out"], c["responses_in"], c["links_in"], c["in_flight"]) == (8, 8, 1, 0)
            assert c["frames_out"] == 9 and c["bytes_in"] > 0 and c["errors"] == 0
            assert peak == 4                                  # the per-terminal limit held
            assert len({r.piid & 0x3F for r in t.requests[:4]}) == 4
    run(main())


def test_timeout_then_retry_and_unmatched_late_answer_dropped(tmp_path):
    async def main():
        async with Env(tmp_path) as he:
            seen = []

            async def answer(req):
                seen.append(req)
                if len(seen) == 1:
                    await asyncio.sleep(0.8)              # late: after the first attempt timed out
                return clock_answer(req)
            t = await FakeTerminal(GOOD, he.port, answer=answer).connect()
            await t.login()
            t0 = time.monotonic()
            rsp = await he.request(GOOD, A.get(P.OAD_DATETIME), timeout_s=0.5, retries=1)
            assert 0.5 <= time.monotonic() - t0 < 1.5
            assert rsp.service_number == seen[1].service_number and len(seen) == 2
            assert he.metrics.requests["retry"] == 1 and he.metrics.requests["ok"] == 1
            await until(lambda: he.metrics.unmatched == 1)    # the late answer to the first attempt
            with pytest.raises(AnswerTimeout):
                t.answer = lambda req: None
                await he.request(GOOD, A.get(P.OAD_DATETIME), timeout_s=0.3, retries=1)
            assert len(t.requests) == 4
            with pytest.raises(TerminalOffline):
                await he.request(OTHER, A.get(P.OAD_DATETIME))
    run(main())


# --- reports -------------------------------------------------------------------------------------------------
def daily_rows(day=(2024, 6, 1)):
    def e(*v):
        return Data(1, tuple(Data(6, x) for x in v))
    t = Data(28, DateTimeS(*day, 0, 0, 0))
    rows = []
    for addr, base in (("000000000001", 1000), ("000000000002", 2000)):
        rows.append((Data(85, A.tsa(addr)), t, t, t, Data(1, (t, e(base, 1, 2, 3, base - 6), e(5), e(7), e(8)))))
    return rows


def wal_rows(root):
    """(meter, register, value) logged in the write-ahead log (fsynced) or published in the lake."""
    import duckdb
    out = set()
    for seg in sorted((root / "_wal").glob("*.wal")):
        _, recs = wal.scan_segment(seg, last=False)
        for rtype, _kind, tbl in recs:
            if rtype == wal.T_READINGS:
                out |= set(zip(*(tbl.column(c).to_pylist() for c in ("meter_id", "register", "value"))))
    files = list((root / "readings").rglob("*.parquet"))
    if files:
        out |= set(duckdb.sql(f"SELECT meter_id, register, value FROM read_parquet('{root}/readings/**/*.parquet')")
                   .fetchall())
    return out


def test_report_is_durable_in_the_lake_before_it_is_acknowledged(tmp_path):
    async def main():
        async with Env(tmp_path) as he:
            t = await FakeTerminal(GOOD, he.port).connect()
            await t.login()
            note = A.ReportNotificationRecordList(7, (A.ResultRecord(P.OAD_TASK_RECORDS, P.DAILY_RCSD, daily_rows()),))
            assert wal_rows(tmp_path / "lake") == set()
            t.send(C_REPORT, note)
            ack = await t.next(A.ReportResponseRecordList)
            # the moment the terminal holds the acknowledgement, the readings are in storage
            got = wal_rows(tmp_path / "lake")
            assert ack.piid == 7 and ack.oads == (P.OAD_TASK_RECORDS,)
            assert (11, schema.REGISTER_CODES["ae_fwd"], 1000) in got and (12, schema.REGISTER_CODES["re_rev"], 8) in got
            assert len(got) == 16 and he.metrics.readings == 16 and he.metrics.reports == 1
        # after the graceful stop, everything is published in the Parquet lake
        assert len(list((tmp_path / "lake" / "readings" / "kind=daily").rglob("*.parquet"))) >= 1
    run(main())


class SlowWriter(wal.IngestWriter):
    """A real IngestWriter whose fsync acknowledgements arrive late while ``slow`` is set (a slow disk)."""

    slow = threading.Event()

    def when_durable(self, seq, callback):
        if self.slow.is_set():
            def later(err):
                threading.Timer(0.5, callback, (err,)).start()
            return super().when_durable(seq, later)
        return super().when_durable(seq, callback)


def test_slow_ingest_pauses_reading_until_it_catches_up(tmp_path):
    async def main():
        SlowWriter.slow.set()
        async with Env(tmp_path, writer_cls=SlowWriter, ingest_queue_bound=2) as he:
            t = await FakeTerminal(GOOD, he.port).connect()
            await t.login()
            for i in range(6):
                t.send(C_REPORT, A.ReportNotificationRecordList(i, (A.ResultRecord(
                    P.OAD_TASK_RECORDS, P.DAILY_RCSD, daily_rows((2024, 6, 1 + i))),)))
            await until(lambda: he.paused, 3)
            term = he.sessions.get(GOOD)
            assert term.paused and not term.transport.is_reading()
            await asyncio.sleep(0.2)
            assert term.reports_in == 3                  # reading stopped once above the bound of 2
            SlowWriter.slow.clear()
            acks = [await t.next(A.ReportResponseRecordList, 10) for _ in range(6)]
            assert sorted(a.piid for a in acks) == list(range(6))
            assert not he.paused and term.transport.is_reading()
            assert he.metrics.readings == 6 * 16
    run(main())


# --- misbehaving terminals -------------------------------------------------------------------------------------
def test_garbage_slowloris_and_flood_cost_only_their_own_session(tmp_path):
    async def main():
        async with Env(tmp_path, login_timeout_s=0.5, max_buffer=4096, max_frames_per_s=50) as he:
            good = await FakeTerminal(GOOD, he.port, answer=clock_answer).connect()
            await good.login()
            garbage = await FakeTerminal(OTHER, he.port).connect()
            garbage.writer.write(bytes(range(256)) * 40)        # no frame in 10 KB
            slow = await FakeTerminal(OTHER, he.port).connect()
            slow.writer.write(b"\x68\x17")                       # a frame start, then nothing
            flood = await FakeTerminal(OTHER, he.port).connect()
            await flood.login()
            for _ in range(200):
                flood.link(A.LINK_HEARTBEAT)
            damaged = await FakeTerminal(OTHER, he.port).connect()
            frame = bytearray(Frame(damaged.address, 0x10, C_LINK, A.LinkRequest(
                1, 1, 60, (2024, 6, 1, 6, 0, 0, 0, 0)).to_bytes()).to_bytes())
            frame[-3] ^= 0xFF                                    # FCS wrong
            damaged.writer.write(bytes(frame) * 20)
            for t in (garbage, slow, flood, damaged):
                assert await t.closed(3)
            m = he.metrics.closed
            assert m["garbage"] == 2 and m["login timeout"] == 1 and m["flood"] == 1
            # the good one never noticed
            assert GOOD in he.sessions
            rsp = await he.request(GOOD, A.get(P.OAD_DATETIME))
            assert rsp.result.data.value.year == 2024
            assert he.metrics.decode_errors >= 9
    run(main())


def test_half_open_link_closed_after_idle_timeout(tmp_path):
    async def main():
        async with Env(tmp_path, idle_timeout_s=0.6) as he:
            t = await FakeTerminal(GOOD, he.port).connect()
            await t.login(heartbeat_s=0)                      # no heartbeat period: only the idle rule
            assert await t.closed(3)
            assert he.metrics.closed["idle"] == 1
    run(main())


# --- metrics ---------------------------------------------------------------------------------------------------
def test_metrics_endpoint_scraped(tmp_path):
    async def main():
        async with Env(tmp_path, metrics_port=0) as he:
            t = await FakeTerminal(GOOD, he.port, answer=clock_answer).connect()
            await t.login()
            await he.request(GOOD, A.get(P.OAD_DATETIME))
            he.metrics.collection_success.labels("daily").set(0.97)
            url = f"http://127.0.0.1:{he.metrics_port}/metrics"
            body = await asyncio.get_running_loop().run_in_executor(
                None, lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        lines = set(body.splitlines())
        assert "gridhead_sessions_online 1.0" in lines
        assert 'gridhead_frames_in_total{type="LINK-Request"} 1.0' in lines
        assert 'gridhead_frames_out_total{type="GET-Request"} 1.0' in lines
        assert 'gridhead_frames_in_total{type="GET-Response"} 1.0' in lines
        assert 'gridhead_requests_total{outcome="ok"} 1.0' in lines
        assert 'gridhead_collection_success{task="daily"} 0.97' in lines
        assert "gridhead_requests_in_flight 0.0" in lines
    run(main())


def test_event_report_goes_to_the_events_table_before_its_ack(tmp_path):
    async def main():
        async with Env(tmp_path) as he:
            t = await FakeTerminal(GOOD, he.port).connect()
            await t.login()
            rcsd = (P.OAD_TARGET_TSA, rec.OAD_EVENT_START, rec.OAD_EVENT_END)
            rows = ((Data(85, A.tsa("000000000002")), Data(28, DateTimeS(2024, 6, 1, 3, 0, 0)),
                     Data(28, DateTimeS(2024, 6, 1, 3, 7, 0))),)
            t.send(C_REPORT, A.ReportNotificationRecordList(9, (A.ResultRecord(0x30110200, rcsd, rows),)))
            await t.next(A.ReportResponseRecordList)
            logged = []
            for seg in sorted((tmp_path / "lake" / "_wal").glob("*.wal")):
                logged += [tbl.to_pylist() for rtype, _, tbl in wal.scan_segment(seg, last=False)[1]
                           if rtype == wal.T_EVENTS]
            assert len(logged) == 1 and logged[0][0]["meter_id"] == 12
            assert logged[0][0]["event"] == schema.EVENT_CODES["power_down"]
            assert (logged[0][0]["end_utc"] - logged[0][0]["start_utc"]).total_seconds() == 420
    run(main())


def test_under_uvloop_login_request_report(tmp_path):
    uvloop = pytest.importorskip("uvloop")

    async def main():
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        async with Env(tmp_path) as he:
            t = await FakeTerminal(GOOD, he.port, answer=clock_answer).connect()
            await t.login()
            rsps = await asyncio.gather(*(he.request(GOOD, A.get(P.OAD_DATETIME)) for _ in range(10)))
            assert all(r.result.data.value.year == 2024 for r in rsps)
            t.send(C_REPORT, A.ReportNotificationRecordList(1, (A.ResultRecord(P.OAD_TASK_RECORDS, P.DAILY_RCSD,
                                                                               daily_rows()),)))
            await t.next(A.ReportResponseRecordList)
            assert he.metrics.readings == 16
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        r.run(asyncio.wait_for(main(), 30))


def test_idle_sessions_cost_under_5_kb_each(tmp_path):
    """500 logged-in idle terminals: Python heap growth per session (tracemalloc, asyncio's own
    transports included) stays under the 5 KB target."""
    import gc
    import socket
    import tracemalloc
    n = 500

    async def main():
        async with Env(tmp_path) as he:
            he._terminals = lambda a: True
            loop = asyncio.get_running_loop()
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            socks = []
            for i in range(n):
                s = socket.socket()
                s.setblocking(False)
                await loop.sock_connect(s, ("127.0.0.1", he.port))
                await loop.sock_sendall(s, Frame(ServerAddress(f"{i:012d}"), 0x10, C_LINK, A.LinkRequest(
                    1, 0, 60, (2024, 6, 1, 6, 0, 0, 0, 0)).to_bytes()).to_bytes())
                socks.append(s)
            await until(lambda: len(he.sessions) == n, 20)
            await asyncio.sleep(0.2)
            gc.collect()
            grown = sum(st.size_diff for st in tracemalloc.take_snapshot().compare_to(before, "filename")
                        if "test_headend" not in st.traceback[0].filename)
            tracemalloc.stop()
            for s in socks:
                s.close()
            return grown / n
    per_session = run(main(), 60)
    print(f"python heap per idle session: {per_session:.0f} B")
    assert per_session < 5000, per_session


# --- issue 19 item 2: a terminal's own event reports are acknowledged --------------------------------------
class _Raw:
    """APDU bytes encoded by the independent peer (PyPI dlt698), sent as they are."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def to_bytes(self) -> bytes:
        return self.raw


def _terminal_report(piid: int, results) -> _Raw:
    """REPORT-Notification-RecordList built and encoded by the dlt698 peer: ``results`` = [(record OAD,
    columns, rows of our Data)]."""
    peer = pytest.importorskip("dlt698._native")
    from tests.strategies698 import _p_csd, to_peer
    payload = [peer.RecordResult(attribute=_p_csd(oad), columns=[_p_csd(c) for c in cols],
                                 result=[[to_peer(x) for x in row] for row in rows]) for oad, cols, rows in results]
    return _Raw(peer.encode_apdu(peer.ReportNotification(piid_acd=piid, payload=payload)))


def test_terminal_event_reports_are_kept_and_acknowledged(tmp_path):
    """A terminal reports 3106 (终端停/上电) and 3104 / 3100 — records without a 202A meter column — and
    a report mixing its own 3105 with meters' task records: every report gets its REPORT-Response, the
    meters' readings are stored, the terminal's events are in the quarantine table with the reason and
    the terminal named (before: never acknowledged, logged "report not stored" at each resend)."""
    t_down = Data(28, DateTimeS(2024, 6, 1, 3, 0, 0))
    t_up = Data(28, DateTimeS(2024, 6, 1, 3, 20, 0))
    ev_cols = (0x20220200, 0x201E0200, 0x20200200)                 # 事件记录序号, 发生时间, 结束时间
    power = [(0x31060200, ev_cols, [(Data(6, 7), t_down, t_up)])]
    others = [(0x31040200, (0x20220200, 0x201E0200), [(Data(6, 1), t_down)]),
              (0x31000200, (0x20220200,), [(Data(6, 2),)])]
    t = Data(28, DateTimeS(2024, 6, 1, 0, 0, 0))
    meter_row = (Data(85, A.tsa("000000000001")), t, t, t,
                 Data(1, (t, Data(1, (Data(6, 4242),)), Data(0, None), Data(0, None), Data(0, None))))
    mixed = [(0x31050200, ev_cols, [(Data(6, 3), t_down, Data(0, None))]),
             (P.OAD_TASK_RECORDS, P.DAILY_RCSD, [meter_row])]

    async def main():
        async with Env(tmp_path) as he:
            term = await FakeTerminal(GOOD, he.port).connect()
            await term.login()
            acks = []
            for piid, results in ((5, power), (6, others), (7, mixed)):
                term.send(C_REPORT, _terminal_report(piid, results))
                acks.append(await term.next(A.ReportResponseRecordList))
            term.close()
            return acks, he

    acks, he = run(main())
    assert [a.piid for a in acks] == [5, 6, 7]
    assert [a.oads for a in acks] == [(0x31060200,), (0x31040200, 0x31000200), (0x31050200, P.OAD_TASK_RECORDS)]
    assert he.metrics.reports == 3 and he.metrics.decode_errors == 0
    import duckdb
    lake = tmp_path / "lake"
    q = duckdb.sql(f"SELECT register, epoch(ts_utc)::BIGINT AS s, epoch(end_utc)::BIGINT AS e, reason, detail "
                   f"FROM read_parquet('{lake}/quarantine/**/*.parquet') ORDER BY register").fetchall()
    codes = {name: c for c, (name, _zh, _oi) in schema.TERMINAL_EVENTS.items()}
    assert [r[0] for r in q] == sorted([codes["terminal_power"], codes["terminal_state_change"],
                                        codes["terminal_init"], codes["meter_clock_skew"]])
    assert {r[3] for r in q} == {schema.TERMINAL_EVENT}
    assert all(r[4].startswith(f"terminal {GOOD} 31") for r in q)
    power_row = next(r for r in q if r[0] == codes["terminal_power"])
    cst = dt.timezone(dt.timedelta(hours=8))
    assert power_row[1:3] == (int(dt.datetime(2024, 6, 1, 3, 0, tzinfo=cst).timestamp()),
                              int(dt.datetime(2024, 6, 1, 3, 20, tzinfo=cst).timestamp()))
    got = duckdb.sql(f"SELECT meter_id, value FROM read_parquet('{lake}/readings/**/*.parquet')").fetchall()
    assert got == [(11, 4242)]

"""Interop: the PyPI dlt698 package's terminal (dlt698.app.Server, C++) collected by our head-end in
dial-out mode — it listens on 127.0.0.1, we connect, answer its LINK login, open the application
association (CONNECT) and read its clock and energy with GET."""

from __future__ import annotations

import asyncio

import pytest

from gridhead.headend import profile as P
from gridhead.headend.config import Config, DialOut
from gridhead.headend.server import HeadEnd
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698.axdr import Data, DateTimeS
from gridhead.protocols.errors import TransportError
from gridhead.storage import wal

n = pytest.importorskip("dlt698._native")
app = pytest.importorskip("dlt698.app")
from tests.strategies698 import _p_oad, to_peer  # noqa: E402

ADDRESS = "201605190907"
CLOCK = Data(28, DateTimeS(2024, 6, 1, 12, 0, 0))
ENERGY = Data(1, tuple(Data(6, v) for v in (123456, 1000, 50000, 40000, 32456)))


@pytest.fixture
def peer_terminal():
    sa = n.ServerAddress()
    sa.bytes = bytes.fromhex(ADDRESS)[::-1]          # SA on the wire: reading order reversed
    session = n.SessionOptions()
    session.server = sa
    session.client_address = 0x10                    # the master's CA it answers (ours: Config.client_address)
    options = n.ServerOptions()
    options.protocol = session
    server = app.Server(options=options)
    server.set(_p_oad(P.OAD_DATETIME), to_peer(CLOCK))
    server.set(_p_oad(P.OAD_FWD_ACTIVE), to_peer(ENERGY))
    server.start_tcp("127.0.0.1", 0)
    yield server
    server.close()


def test_dlt698_terminal_collected_in_dial_out_mode(tmp_path, peer_terminal):
    async def main():
        cfg = Config(listen_port=0, data_dir=str(tmp_path), request_timeout_s=5.0,
                     dial_out=(DialOut("127.0.0.1", peer_terminal.local_port, ADDRESS),))
        with wal.IngestWriter(tmp_path / "lake", [1]) as w:
            he = HeadEnd(cfg, terminals={ADDRESS}, meter_of_tsa={}, writer=w)
            await he.start()
            try:
                t = await he.wait_online(ADDRESS, timeout_s=10)
                assert t.dial is not None and t.heartbeat_s == 5       # it logged in (LINK) with its period
                clock = await he.request(ADDRESS, A.get(P.OAD_DATETIME))
                energy = await he.request(ADDRESS, A.get(P.OAD_FWD_ACTIVE))
                both = await he.request(ADDRESS, A.get_list([P.OAD_DATETIME, P.OAD_FWD_ACTIVE]))
            finally:
                await he.stop()
        assert clock.result.value() == CLOCK
        assert energy.result.value() == ENERGY
        assert [r.value() for r in both.results] == [CLOCK, ENERGY]
        assert he.metrics.frames_in["CONNECT-Response"] == 1
    asyncio.run(asyncio.wait_for(main(), 30))


def test_dial_out_reconnects_after_the_terminal_restarts(tmp_path, peer_terminal):
    async def main():
        port = peer_terminal.local_port
        cfg = Config(listen_port=0, data_dir=str(tmp_path), request_timeout_s=5.0,
                     dial_out=(DialOut("127.0.0.1", port, ADDRESS, reconnect_s=0.3),))
        with wal.IngestWriter(tmp_path / "lake", [1]) as w:
            he = HeadEnd(cfg, terminals={ADDRESS}, meter_of_tsa={}, writer=w)
            await he.start()
            try:
                first = await he.wait_online(ADDRESS, timeout_s=10)
                await asyncio.to_thread(peer_terminal.stop)
                await asyncio.to_thread(peer_terminal.start_tcp, "127.0.0.1", port)
                for _ in range(100):
                    t = he.sessions.get(ADDRESS)
                    if t is not None and t is not first:
                        break
                    await asyncio.sleep(0.1)
                assert first.closed and he.sessions.get(ADDRESS) is not first
                clock = await he.request(ADDRESS, A.get(P.OAD_DATETIME))
            finally:
                await he.stop()
        assert clock.result.value() == CLOCK
        assert he.metrics.frames_in["CONNECT-Response"] == 2
    asyncio.run(asyncio.wait_for(main(), 40))


def test_dial_out_to_a_terminal_not_in_the_archive_is_refused(tmp_path, peer_terminal):
    """A [[dial_out]] address the archive lacks is refused as its dial-in login would be: never dialled,
    never online, counted as an illegal device (issue 19, item 3)."""
    async def main():
        cfg = Config(listen_port=0, data_dir=str(tmp_path), request_timeout_s=5.0,
                     dial_out=(DialOut("127.0.0.1", peer_terminal.local_port, ADDRESS, reconnect_s=0.2),))
        with wal.IngestWriter(tmp_path / "lake", [1]) as w:
            he = HeadEnd(cfg, terminals={"000000000001"}, meter_of_tsa={}, writer=w)
            await he.start()
            try:
                with pytest.raises(TransportError):
                    await he.wait_online(ADDRESS, timeout_s=1.5)
                assert he.sessions.get(ADDRESS) is None and not he.links
            finally:
                await he.stop()
        assert he.metrics.refused["illegal device"] == 1
        assert he.metrics.frames_in["CONNECT-Response"] == 0
    asyncio.run(asyncio.wait_for(main(), 30))

"""Issue 19 item 5: every time sent to a meter is on the meters' clock (China Standard Time, the
``meter_tz`` setting), made by one function (headend.terminal.local_now) — never the host's zone.

`gridhead frame encode 645` runs with the host on UTC (and on New York time); the head-end's 645 remote
control goes to a meter over a real socket on 127.0.0.1 with ``meter_tz`` set, and the frame's
命令有效截止时间 is read back from the bytes on the wire."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys

import pytest

from gridhead.headend import commands as K
from gridhead.headend.config import Config
from gridhead.headend.control import ControlConfig
from gridhead.headend.server import HeadEnd
from gridhead.headend.terminal import CST, local_now, meter_time, meter_tz
from gridhead.protocols.dlt645 import (BroadcastTimeSync, Framer, RemoteCommand, RemoteControlRequest,
                              RemoteControlResponse, decode_message)
from gridhead.protocols.errors import ConfigError

from tests.conftest import ROOT

SLACK = dt.timedelta(minutes=2)          # a slow machine between the clock read and the frame


def _encode(*args, tz_env="UTC"):
    env = dict(os.environ, TZ=tz_env, PYTHONPATH=ROOT)
    env.pop("GRIDHEAD_METER_TZ", None)
    r = subprocess.run([sys.executable, "-m", "gridhead.cli", "frame", "encode", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    fr = Framer()
    fr.feed(bytes.fromhex(r.stdout.strip()))
    return decode_message(fr.next_frame())


def _digits_time(s: str) -> dt.datetime:
    return dt.datetime.strptime(s, "%y%m%d%H%M%S")


@pytest.mark.parametrize("host_tz", ["UTC", "America/New_York"])
def test_frame_encode_time_sync_and_remote_control_use_china_standard_time(host_tz):
    now_cst = dt.datetime.now(CST).replace(tzinfo=None)
    ts = _encode("645", "time-sync", tz_env=host_tz)
    assert isinstance(ts, BroadcastTimeSync)
    assert abs(_digits_time(ts.time) - now_cst) < SLACK
    rc = _encode("645", "remote-control", "-a", "000012345678", "--command", "trip", "--valid-minutes", "10",
                 tz_env=host_tz)
    assert isinstance(rc, RemoteControlRequest)
    assert abs(_digits_time(rc.valid_until) - (now_cst + dt.timedelta(minutes=10))) < SLACK


def test_frame_encode_converts_a_time_with_an_offset_and_takes_the_meter_tz_setting():
    ts = _encode("645", "time-sync", "--time", "2026-01-01T00:00:00Z")
    assert _digits_time(ts.time) == dt.datetime(2026, 1, 1, 8, 0, 0)
    ts = _encode("--meter-tz", "+05:00", "645", "time-sync", "--time", "2026-01-01T00:00:00+00:00")
    assert _digits_time(ts.time) == dt.datetime(2026, 1, 1, 5, 0, 0)
    ts = _encode("645", "time-sync", "--time", "2026-01-01T12:34:56")        # no offset: meter time as given
    assert _digits_time(ts.time) == dt.datetime(2026, 1, 1, 12, 34, 56)


def test_meter_tz_setting():
    assert meter_tz(None) is CST and meter_tz("+08:00").utcoffset(None) == dt.timedelta(hours=8)
    assert meter_tz("Asia/Shanghai").utcoffset(dt.datetime(2026, 7, 1)) == dt.timedelta(hours=8)
    assert meter_time(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)) == dt.datetime(2026, 1, 1, 8)
    assert abs(local_now() - dt.datetime.now(CST).replace(tzinfo=None)) < SLACK
    with pytest.raises(ConfigError, match="meter_tz 'Mars/Olympus'"):
        Config(meter_tz="Mars/Olympus")


def test_headend_remote_control_valid_until_on_the_meters_clock(tmp_path):
    """The head-end's 645 trip carries now + valid_minutes_645 on the meters' clock (``meter_tz``)."""
    seen = []

    async def main():
        async def meter(reader, writer):
            fr = Framer()
            while True:
                fr.feed(await reader.read(4096))
                f = fr.next_frame()
                if f is not None:
                    break
            msg = decode_message(f)
            seen.append(msg)
            writer.write(RemoteControlResponse(msg.address).to_bytes())
            await writer.drain()
            writer.close()

        srv = await asyncio.start_server(meter, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        he = HeadEnd(Config(data_dir=str(tmp_path), listen_port=0, meter_tz="+05:00"), terminals=(),
                     meter_of_tsa={}, writer=object())
        cmds = K.Commands(he, ControlConfig(valid_minutes_645=7, command_timeout_s=5))
        target = K.Routes(direct={"000012345678": ("127.0.0.1", port)}).resolve("000012345678")
        await cmds._act645(target, RemoteCommand.TRIP)
        srv.close()
        await srv.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 30))
    want = dt.datetime.now(dt.timezone(dt.timedelta(hours=5))).replace(tzinfo=None) + dt.timedelta(minutes=7)
    assert isinstance(seen[0], RemoteControlRequest) and abs(_digits_time(seen[0].valid_until) - want) < SLACK

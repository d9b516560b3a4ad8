"""Issue 19 item 4: 召测 of a DL/T 645 meter that refuses block reads — the PyPI ``dlt645`` meter server
(an independent implementation, over TCP on 127.0.0.1) answers 0001FF00 with 无请求数据 — falls back to the
block's single items; a register the meter refuses outright is a failure (Refused: the control API's
outcome "refused", `gridhead read` exit 1), not an error tucked inside an "ok"."""

from __future__ import annotations

import asyncio

import pytest

from gridhead.headend import commands as K
from gridhead.headend.config import Config
from gridhead.headend.control import ControlConfig
from gridhead.headend.server import HeadEnd

dlt645 = pytest.importorskip("dlt645", reason="the interop peer is a test-only dependency: pip install dlt645")

ADDR = "000012345678"


@pytest.fixture(scope="module")
def peer():
    from dlt645 import MeterServerService
    dlt645.disable_logging()
    m = MeterServerService.new_tcp_server("127.0.0.1", 0)
    m.set_address(bytes.fromhex(ADDR)[::-1])                # the peer takes the wire order
    m.set_00(0x00010000, 2718.28)
    m.set_00(0x00010100, 1000.00)
    m.set_00(0x00020000, 12.34)
    assert m.start()
    yield m
    m.stop()


def _read(tmp_path, port, registers):
    async def main():
        he = HeadEnd(Config(data_dir=str(tmp_path), listen_port=0), terminals=(), meter_of_tsa={}, writer=object())
        cmds = K.Commands(he, ControlConfig(command_timeout_s=5))
        target = K.Routes(direct={ADDR: ("127.0.0.1", port)}).resolve(ADDR)
        return await cmds.read(target, registers)
    return asyncio.run(asyncio.wait_for(main(), 30))


def test_a_refused_block_is_read_item_by_item(tmp_path, peer):
    r = _read(tmp_path, peer.server.port, ["energy", "reverse"])
    energy, reverse = r["values"]
    assert energy["di"] == "0001FF00" and energy["items"] == ["00010000", "00010100", "00010200", "00010300",
                                                               "00010400"]
    assert [v["value"] for v in energy["values"]][:2] == ["2718.28", "1000.00"]
    assert reverse["di"] == "0002FF00" and reverse["values"][0]["value"] == "12.34"
    assert all("error" not in v for v in r["values"])


def test_a_register_the_meter_refuses_is_a_failure(tmp_path, peer):
    with pytest.raises(K.Refused, match="05060101") as exc:
        _read(tmp_path, peer.server.port, ["energy", "05060101"])
    values = exc.value.readback["values"]                  # what was read stays in the audit record
    assert values[0]["values"][0]["value"] == "2718.28" and "error" in values[1]

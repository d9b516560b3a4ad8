"""A simulated RS-485 bus of meters (DL/T 645-2007 and 698.45) on a serial device — the far end of a pty pair.

The meters answer from the fleet's register model (headend.sim.model) through the same
:class:`headend.sim.answers.Answerer` and :class:`headend.sim.simulator.Simulator` answers as the TCP fleet:
645 reads (current energy, 上 n 次日冻结 time and energy, month freezes), 645 remote control (1CH:
trip / close / 保电, acknowledged, relay state kept in :attr:`SerialMeters.relay`) and broadcast time
sync (08H, no answer), 698 GET / GET-List / SET 40000200 (对时) and GET-Record of a meter freeze.
A Simulator that is never run is the clock and model host (``Simulator.now()``, ``meter_has`` ...).

Framing as a meter's UART does it: bytes collect until the line has been quiet for ``quiet_s``, then
the burst is read as 645 frames, else as 698 frames; garbage is dropped.  A request for an address not on
the bus gets no answer — as on a real bus, where only the addressed meter talks.

Faults for tests: ``mute`` (addresses that never answer), ``garble`` (addresses that answer noise),
``noise`` (bytes sent before every answer).

    bus = SerialMeters(fleet, [0, 1, 2], "/dev/pts/7", seed=1)
    await bus.start(); ...; await bus.stop()
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import time

import numpy as np

from gridhead.protocols.dlt645 import BroadcastTimeSync, ErrorResponse, RemoteCommand, RemoteControlRequest, RemoteControlResponse
from gridhead.protocols.dlt645 import Framer as Framer645
from gridhead.protocols.dlt645 import ReadRequest, ReadResponse, decode_message
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698.frame import Frame as Frame698
from gridhead.protocols.dlt698.frame import Framer as Framer698
from gridhead.protocols.errors import ProtocolError

from .model import Fleet
from .simulator import C_RESPONSE, Simulator, SimTerminal
from gridhead.headend.transport_serial import frames

DI_STATUS3 = 0x04000503


class SerialMeters(asyncio.Protocol):
    """The meters ``meters`` (indices into ``fleet``) wired to serial device ``device``."""

    def __init__(self, fleet: Fleet, meters, device: str, *, seed: int = 1, baud: int = 9600,
                 quiet_s: float = 0.005) -> None:
        self.fleet = fleet
        self.device, self.baud, self.quiet_s = device, baud, quiet_s
        self.model_host = Simulator(fleet, seed=seed, connect=("127.0.0.1", 1))   # never run: clock + model
        self.meters = {fleet.address[m]: SimTerminal(int(m), fleet.address[m], np.array([m]), fleet, seed)
                       for m in meters}
        self.relay = {a: "closed" for a in self.meters}
        self.protected: set = set()
        self.mute: set = set()
        self.garble: set = set()
        self.noise = b""
        self.requests = self.answers = self.broadcasts = 0
        self.buf = bytearray()
        self.transport = None
        self._timer = None

    async def start(self) -> None:
        import serial_asyncio
        loop = asyncio.get_running_loop()
        self.model_host.loop = loop
        self.model_host.t0 = time.monotonic()
        self.transport, _ = await serial_asyncio.create_serial_connection(loop, lambda: self, self.device,
                                                                          baudrate=self.baud)

    async def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --- the UART -------------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.quiet_s, self._burst)

    def _burst(self) -> None:
        self._timer = None
        data, self.buf = bytes(self.buf), bytearray()
        for f in frames(Framer645(), data):
            self._on645(f)
            return
        for f in frames(Framer698(), data):
            self._on698(f)
            return

    def _send(self, address: str, data: bytes) -> None:
        if address in self.garble:
            data = bytes((b * 7 + 3) & 0xFF for b in data)
        if self.transport is not None:
            self.answers += 1
            self.transport.write(self.noise + data)

    # --- DL/T 645 -------------------------------------------------------------------------------------------
    def _on645(self, frame) -> None:
        try:
            req = decode_message(frame)
        except ProtocolError:
            return
        self.requests += 1
        if isinstance(req, BroadcastTimeSync):
            self.broadcasts += 1
            sim = self.model_host
            when = _dt.datetime.strptime(req.time, "%y%m%d%H%M%S")
            for t in self.meters.values():
                if self.fleet.is645[t.meters[0]]:
                    t.drift_s = (when - sim.now()).total_seconds()
            return
        t = self.meters.get(req.address)
        if t is None or req.address in self.mute:
            return
        if isinstance(req, RemoteControlRequest):
            c = req.command
            if c == RemoteCommand.PROTECT_ON:
                self.protected.add(req.address)
            elif c == RemoteCommand.PROTECT_OFF:
                self.protected.discard(req.address)
            elif c == RemoteCommand.TRIP:
                if req.address in self.protected:
                    return self._send(req.address, ErrorResponse(req.address, 0x1C, 0x01).to_bytes())
                self.relay[req.address] = "open"
            elif c in (RemoteCommand.CLOSE_ALLOWED, RemoteCommand.CLOSE_DIRECT):
                self.relay[req.address] = "closed"
            return self._send(req.address, RemoteControlResponse(req.address).to_bytes())
        if isinstance(req, ReadRequest) and req.di == DI_STATUS3:
            # 电表运行状态字3: bit 4 relay open, bit 6 trip command (what the head-end reads back)
            word = 0x50 if self.relay.get(req.address) == "open" else 0      # as the fleet simulator answers
            return self._send(req.address, ReadResponse.of(req.address, req.di, [word]).to_bytes())
        if isinstance(req, ReadRequest):
            answer = self.model_host.answers.trans_645(t, req.to_bytes(b""), self.model_host.now())
            if answer is not None:
                self._send(req.address, answer)

    # --- DL/T 698.45 ----------------------------------------------------------------------------------------
    def _on698(self, frame) -> None:
        if frame.from_server:
            return
        address = str(frame.server.address).upper()
        t = self.meters.get(address)
        if t is None or address in self.mute:
            return
        try:
            req = A.decode_apdu(frame.apdu)
        except ProtocolError:
            return
        self.requests += 1
        sim = self.model_host
        if isinstance(req, A.GetRequestRecord):
            rsp = A.GetResponseRecord(req.piid, sim.answers.meter_record(int(t.meters[0]), req.record, sim.now()))
        else:
            rsp = sim.respond(t, req)
        self._send(address, Frame698(t.sa, frame.client, C_RESPONSE, rsp.to_bytes()).to_bytes())


__all__ = ["SerialMeters"]

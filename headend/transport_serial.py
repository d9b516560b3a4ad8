"""RS-485 transport (pyserial-asyncio): meters wired directly to the head-end host, DL/T 645-2007 and 698.45.

One :class:`SerialBus` per port (``[[serial]]`` of the head-end's TOML, :class:`headend.config.SerialPort`)
is the bus master with the discipline of a real half-duplex line:

* one request at a time per port (a lock): a multi-drop bus has one talker;
* before each request the line must have been quiet for the inter-frame gap, 3.5 character times
  (11 bits a character: start, 8 data, even parity, stop) and never under 20 ms — what a meter's UART
  needs to see the end of one frame before the next (the Modbus-RTU rule that RS-485 meters follow);
* DL/T 645 requests carry four FEH wake-up bytes (DL/T 645-2007 clause 4.2: 前导字节) and 698.45
  requests too (clause 5.2 allows them on serial links), which a framer skips;
* a request waits ``timeout_s`` after its last byte left the wire (its bus time, bytes × 11 / baud,
  added), then is sent again up to ``retries`` times; bytes left from an earlier request (a late
  answer, noise) are discarded before each send, so they cannot be taken for this answer;
* whatever the bus answers — garbage, a damaged frame, another meter's frame, nothing — the framers
  resynchronise and the request ends in an answer or :class:`AnswerTimeout`: the port never wedges.

Collection: the bus only carries requests.  The collector (``headend.collect.BusLink``) reads its
meters with the same algorithm as meters behind a concentrator — a 645 meter's ``上 n 次日冻结`` time and
the task's items as ``ReadRequest`` on :meth:`SerialBus.request645` (the DIs profile (c) forwards), a
698 meter's freeze record as ``GET-Request-Record`` on :meth:`SerialBus.request698` (profile (b)'s record,
sent directly) — one meter at a time, into the same lake as readings collected over TCP.  Meter ids
come from the archive (:meth:`SerialBus.meter_id`, ``he.meter_of_tsa``).

Public API::

    bus = SerialBus(he, SerialPort(device="/dev/ttyUSB0", baud=2400, meters=(SerialMeter("645", "000012345678"),)))
    await bus.start()                                 # HeadEnd.start() does this for Config.serial
    msg = await bus.request645(ReadRequest("000012345678", 0x00010000))    # -> ReadResponse | ErrorResponse
    rsp = await bus.request698("000000000001", A.get(0x00100200))          # -> the response Apdu
    await bus.broadcast645(BroadcastTimeSync.at(now))                     # no answer expected
    bus.counters                                      # requests, retries, timeouts, garbage bytes, bus_s
    await bus.stop()
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
import os
import termios
import time

from gridhead.protocols.dlt645 import Framer as Framer645
from gridhead.protocols.dlt645 import decode_message
from gridhead.protocols.dlt645.frame import PREAMBLE
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698.frame import Frame as Frame698
from gridhead.protocols.dlt698.frame import Framer as Framer698
from gridhead.protocols.dlt698.frame import ServerAddress
from gridhead.protocols.errors import ProtocolError, TransportError

from .config import SerialPort
from .log import event, get_logger
from .terminal import AnswerTimeout
from .transport import MeterBus

log = get_logger("serial")

BITS_PER_CHAR = 11                  # start + 8 data + parity + stop
MIN_GAP_S = 0.020
C_REQUEST_698 = 0x43                # client request, DL/T 698.45 clause 5.2 control field


def char_s(baud: int) -> float:
    return BITS_PER_CHAR / baud


def bus_time_s(n_bytes: int, baud: int) -> float:
    """Time ``n_bytes`` take on the wire at ``baud``: the floor of any request/answer exchange."""
    return n_bytes * BITS_PER_CHAR / baud


def gap_s(baud: int) -> float:
    return max(MIN_GAP_S, 3.5 * char_s(baud))


def frames(framer, data) -> Iterator:
    """The whole frames in ``data``; damaged ones skipped (the framer resynchronises past them)."""
    framer.feed(bytes(data))
    while True:
        try:
            f = framer.next_frame()
        except ProtocolError:
            continue
        if f is None:
            return
        yield f


class _Line(asyncio.Protocol):
    """The port's receive side: bytes accumulate until the master takes them."""

    def __init__(self, bus: "SerialBus") -> None:
        self.bus = bus
        self.buf = bytearray()
        self.arrived = asyncio.Event()
        self.last_rx = 0.0
        self.transport = None
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.bus.counters["bytes_in"] += len(data)
        self.last_rx = time.monotonic()
        self.arrived.set()

    def connection_lost(self, exc) -> None:
        self.lost = True
        self.arrived.set()


class SerialBus(MeterBus):
    """The bus master of one RS-485 port; see the module docstring.  A headend.transport.MeterBus: the
    collector reads its meters through it (``meters``, ``meter_id``, ``request645``, ``request698``)."""

    def __init__(self, he, port: SerialPort, *, gap: float | None = None) -> None:
        self.he = he
        self.port = port
        self.name = port.device
        self.meters = list(port.meters)
        self.gap_s = gap_s(port.baud) if gap is None else gap
        self.lock = asyncio.Lock()
        self.line: _Line | None = None
        self.last_tx_end = 0.0
        self.piid = 0
        self.counters = {"requests": 0, "answers": 0, "retries": 0, "timeouts": 0, "garbage_bytes": 0,
                         "bytes_out": 0, "bytes_in": 0, "bus_s": 0.0}

    # --- life cycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        import serial
        import serial_asyncio
        p = self.port
        parity = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}[p.parity]
        loop = asyncio.get_running_loop()
        try:
            try:
                tr, self.line = await serial_asyncio.create_serial_connection(
                    loop, lambda: _Line(self), p.device, baudrate=p.baud, parity=parity, bytesize=8, stopbits=1)
            except termios.error:
                # a pty (the test bench, a virtual port) carries no parity bit and Linux refuses PARENB on it
                if not os.path.realpath(p.device).startswith("/dev/pts/"):
                    raise
                tr, self.line = await serial_asyncio.create_serial_connection(
                    loop, lambda: _Line(self), p.device, baudrate=p.baud, bytesize=8, stopbits=1)
        except (OSError, serial.SerialException, termios.error) as exc:
            raise TransportError(f"serial {p.device}: cannot open ({exc})") from None
        self.line.transport = tr
        event(log, "serial port open", device=p.device, baud=p.baud, parity=p.parity, meters=len(p.meters))

    async def stop(self) -> None:
        if self.line is not None and self.line.transport is not None:
            self.line.transport.close()
        self.line = None

    # --- one exchange -----------------------------------------------------------------------------------------
    async def _exchange(self, data: bytes, match, *, expect: bool = True, timeout_s: float | None = None,
                        retries: int | None = None):
        """Send ``data`` (under the bus lock, after the gap) and return ``match(buffer)``'s first non-None
        result; ``match`` consumes what it decoded and may raise nothing.  Retried on timeout."""
        p = self.port
        timeout_s = p.timeout_s if timeout_s is None else timeout_s
        retries = p.retries if retries is None else retries
        async with self.lock:
            for attempt in range(retries + 1):
                line = self.line
                if line is None or line.lost:
                    raise TransportError(f"serial {p.device}: port closed")
                quiet = max(self.last_tx_end, line.last_rx) + self.gap_s - time.monotonic()
                if quiet > 0:
                    await asyncio.sleep(quiet)
                if line.buf:                                  # a late answer, noise: not this request's
                    self.counters["garbage_bytes"] += len(line.buf)
                    line.buf.clear()
                line.arrived.clear()
                self.counters["requests" if attempt == 0 else "retries"] += 1
                self.counters["bytes_out"] += len(data)
                tx = bus_time_s(len(data), p.baud)
                self.counters["bus_s"] += tx
                line.transport.write(data)
                self.last_tx_end = time.monotonic() + tx
                if not expect:
                    return None
                deadline = self.last_tx_end + timeout_s
                while True:
                    got = match(line.buf)
                    if got is not None:
                        self.counters["answers"] += 1
                        return got
                    left = deadline - time.monotonic()
                    if left <= 0 or line.lost:
                        break
                    line.arrived.clear()
                    try:
                        await asyncio.wait_for(line.arrived.wait(), left)
                    except asyncio.TimeoutError:
                        pass
            self.counters["timeouts"] += 1
            raise AnswerTimeout(f"serial {p.device}: no answer after {retries + 1} tries")

    # --- DL/T 645 -------------------------------------------------------------------------------------------
    async def request645(self, msg, **kw):
        """Send a DL/T 645 request; the meter's answer (normal or abnormal ErrorResponse message)."""
        want_addr, fn = msg.address, msg.function

        def match(buf: bytearray):
            for f in frames(Framer645(), buf):
                if f.address == want_addr and f.control & 0x80 and f.control & 0x1F == fn:
                    try:
                        out = decode_message(f)
                    except ProtocolError:
                        continue
                    buf.clear()                  # half duplex: whatever followed the answer is noise
                    return out
            return None
        return await self._exchange(msg.to_bytes(PREAMBLE), match, **kw)

    async def broadcast645(self, msg) -> None:
        """A request no meter answers (08H broadcast time sync): sent, then the line is left quiet."""
        await self._exchange(msg.to_bytes(PREAMBLE), None, expect=False)

    # --- DL/T 698.45 --------------------------------------------------------------------------------------------
    async def request698(self, address: str, apdu: A.Apdu, *, client: int | None = None, **kw) -> A.Apdu:
        """Send one 698.45 request APDU to the meter at ``address``; its response APDU."""
        self.piid = (self.piid + 1) % 64
        if hasattr(apdu, "piid"):
            apdu = dataclasses.replace(apdu, piid=self.piid)
        ca = self.he.config.client_address if client is None else client
        data = Frame698(ServerAddress(address), ca, C_REQUEST_698, apdu.to_bytes()).to_bytes(PREAMBLE)
        want = address.upper()

        def match(buf: bytearray):
            for f in frames(Framer698(), buf):
                if not f.from_server or str(f.server.address).upper() != want:
                    continue
                try:
                    rsp = A.decode_apdu(f.apdu)
                except ProtocolError:
                    continue
                if getattr(rsp, "piid", self.piid) & 0x3F != self.piid:
                    continue                                  # a late answer to an earlier request
                buf.clear()
                return rsp
            return None
        return await self._exchange(data, match, **kw)

    # --- the archive's meters ----------------------------------------------------------------------------------
    def meter_id(self, address: str) -> int | None:
        """The archive's meter id of the meter at ``address`` (``he.meter_of_tsa``), None if unknown."""
        m = self.he.meter_of_tsa
        return m.get(A.tsa(address)) if m is not None else None


__all__ = ["SerialBus", "bus_time_s", "gap_s", "char_s", "BITS_PER_CHAR"]

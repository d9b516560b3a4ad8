"""Operators' commands on meters and terminals (遥控): what goes on the wire, how the answer is read back.

Targets (:class:`Routes.resolve`): a terminal address (集中器 / a meter logged in as its own terminal),
a meter id of the archive, or a meter's communication address.  A meter is reached as its archive
row says (``meter_routes``: protocol column 645 / 698, concentrator, port):

========================  ======================================================================
path                       requests
========================  ======================================================================
``direct-698``             the target is logged in as a terminal: GET-Request-NormalList, SET-Request-
                           Normal, ACTION-Request-Normal
``proxy-698``              a 698 meter behind its concentrator: PROXY-Request-GetList / SetList /
                           ActionList (7.4.8) to the meter's TSA
``trans-645``              a 645 meter behind its concentrator: PROXY-Request-TransCommand carrying the
                           DL/T 645 frame on the meter's port (RS-485 1 by default)
``direct-645``             a 645 meter reached over TCP (``[[control.direct_645]]`` host/port): the
                           frame itself (the PyPI ``dlt645`` meter server, a serial-to-TCP gateway)
``serial-645``             a meter on one of the head-end host's own RS-485 ports (``[[serial]]``,
``serial-698``             headend.transport_serial): the frame on that bus, one request at a time
                           with the bus's gap, timeout and retries (:func:`serial_routes`)
========================  ======================================================================

Commands and their objects (DL/T 698.45 class 8 control interface, objects 8000 遥控 and 8001 保电;
DL/T 645-2007 clause 7.13 remote control 1CH, 7.1 time sync 08H, 7.2 read 11H, 7.4 write 14H):

* ``read`` (召测): the named registers (:data:`REGISTERS`, or OADs / DIs in hex) now.
* ``disconnect`` (跳闸): 698 ACTION 8000 method 129 {relay F2050201, alarm delay 0, cut time 0 =
  until closed, no auto close}; 645 1CH N1 = 1AH.  Refused by the head-end while the meter is
  protected (保电), and by a protected meter itself.
* ``reconnect`` (合闸): 8000 method 130 {relay, 0 合闸允许 close allowed | 1 直接合闸 direct}; 645 1BH / 1CH.
* ``protect`` (保电): 8001 method 127 on / 128 off; 645 3AH / 3BH.
* ``timesync`` (对时): read the clock (40000200; 645 04000101 + 04000102), set it (SET 40000200;
  645 write 14H of 04000101 and 04000102 with the level-02 password — a write is acknowledged, unlike a
  broadcast 08H, which ``timesync_645 = "broadcast"`` selects), read it again.

Read-back after a relay command confirms the state: 698 ``80000300`` relay output state (bit-string,
first bit = relay 1, 1 = open/tripped), ``80000500`` command state, ``80010200`` protection state (enum
0 off, 1 on); 645 ``04000503`` status word 3 (bit 4 relay open, bit 6 trip command).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt

from gridhead.protocols.dlt645 import (BroadcastTimeSync, ErrorResponse, Framer, ReadRequest, ReadResponse,
                              RemoteCommand, RemoteControlRequest, WriteRequest, decode_message)
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698 import control as control698
from gridhead.protocols.dlt698 import dar as _dar
from gridhead.protocols.dlt698 import render
from gridhead.protocols.dlt698.axdr import COMDCB, BitString, Data, DateTimeS
from gridhead.protocols.errors import GridheadError, TransportError

from . import profile as P
from .collect import port_of
from .terminal import local_now as _meter_now
OAD_RELAY_STATE = 0x80000300     # 继电器输出状态
OAD_COMMAND_STATE = 0x80000500   # 命令状态
OAD_PROTECT_STATE = 0x80010200   # 保电状态
DI_DATE, DI_TIME, DI_STATUS3 = 0x04000101, 0x04000102, 0x04000503
STATUS3_RELAY_OPEN, STATUS3_TRIP_COMMAND = 1 << 4, 1 << 6
COMDCB_645 = COMDCB(3, 2, 8, 1, 0)              # 2400 bit/s, even, 8, 1, none (as headend.collect)

# register name -> (698 OAD, 645 DIs)
REGISTERS = {
    "energy": (P.OAD_FWD_ACTIVE, (P.DI645_FWD_ACTIVE,)),
    "reverse": (P.OAD_REV_ACTIVE, (0x0002FF00,)),
    "voltage": (P.OAD_VOLTAGE, (0x0201FF00,)),
    "current": (P.OAD_CURRENT, (0x0202FF00,)),
    "power": (P.OAD_ACTIVE_POWER, (0x02030000,)),
    "pf": (P.OAD_POWER_FACTOR, (0x02060000,)),
    "frequency": (P.OAD_FREQUENCY, (0x02800002,)),
    "clock": (P.OAD_DATETIME, (DI_DATE, DI_TIME)),
    "relay": (OAD_RELAY_STATE, (DI_STATUS3,)),
    "protect": (OAD_PROTECT_STATE, ()),
}


# a block (数据块, DI1 or DI0 = FF) → its items, read one by one when a meter refuses block reads (many
# do: DL/T 645-2007 leaves blocks optional; the PyPI dlt645 meter answers 无请求数据): total and tariffs
# 1..4 of an energy block, phases A..C of a voltage / current block
BLOCK_ITEMS_645 = {
    P.DI645_FWD_ACTIVE: tuple(0x00010000 | t << 8 for t in range(5)),
    0x0002FF00: tuple(0x00020000 | t << 8 for t in range(5)),
    0x0201FF00: (0x02010100, 0x02010200, 0x02010300),
    0x0202FF00: (0x02020100, 0x02020200, 0x02020300),
}


class CommandError(GridheadError):
    """A command that cannot be carried out as asked (unknown target or register, ...): HTTP 400."""

    exit_code = 2


class Offline(TransportError):
    """The target's terminal is not online (or the direct link does not connect)."""


class Refused(GridheadError):
    """The meter (or the head-end's own rule, e.g. 保电) refused the command.  ``readback``: the relay
    state read after a meter's refusal of a trip (why it refused, e.g. protected: true), or None."""

    readback: dict | None = None


@dataclasses.dataclass(frozen=True)
class Target:
    text: str                      # as the operator wrote it
    kind: str                      # meter | terminal
    protocol: str                  # 698 | 645
    address: str                   # the meter's (or terminal's) communication address
    meter_id: int | None = None
    terminal: str | None = None    # concentrator address; None when reached directly
    port: int = P.PORT_RS485_1
    direct: tuple | None = None    # (host, port) of a direct 645 link
    serial: str | None = None      # the head-end's RS-485 port (device) the meter is wired to

    @property
    def path(self) -> str:
        if self.serial is not None:
            return f"serial-{self.protocol}"
        if self.direct is not None:
            return "direct-645"
        if self.terminal is None:
            return "direct-698"
        return "trans-645" if self.protocol == "645" else "proxy-698"

    @property
    def key(self) -> str:
        """How the audit log and the protection registry name the target."""
        return f"meter:{self.meter_id}" if self.meter_id is not None else f"{self.kind}:{self.address}"

    def json(self) -> dict:
        return {"target": self.key, "address": self.address, "protocol": self.protocol, "path": self.path,
                "terminal": self.terminal}


def serial_routes(he) -> dict:
    """Meters on the head-end's own RS-485 ports (``Config.serial``): address -> (device, protocol)."""
    return {str(m.address).upper(): (p.device, m.protocol) for p in getattr(he.config, "serial", ()) for m in p.meters}


def serial_bus(he, device: str):
    """The running :class:`headend.transport_serial.SerialBus` of ``device``, None if it is not open."""
    for tr in getattr(he, "transports", ()):
        port = getattr(tr, "port", None)
        if getattr(port, "device", None) == device and hasattr(tr, "request645"):
            return tr
    return None


class Routes:
    """Resolve what an operator names: ``terminals`` (addresses), ``routes`` (archive ``meter_routes()``
    as a dict of columns), ``direct`` (address -> (host, port) of direct 645 meters), ``serial`` (address
    -> (device, protocol) of meters on the head-end's RS-485 ports, :func:`serial_routes`).  A meter wired
    to the head-end host is reached there, whatever concentrator the archive also gives it."""

    def __init__(self, terminals=(), routes=None, direct=None, serial=None) -> None:
        self.terminals = {str(t).upper() for t in terminals}
        self.direct = {str(a).upper(): hp for a, hp in (direct or {}).items()}
        self.serial = {str(a).upper(): dp for a, dp in (serial or {}).items()}
        self.by_id: dict[int, Target] = {}
        self.by_addr: dict[str, Target] = {}
        r = routes or {}
        for i, mid in enumerate(r.get("meter_id", ())):
            addr = str(r["comm_address"][i]).upper()
            ports = r.get("port_oad")
            # 645 frames go out of the port the archive names (carrier, RS-485 ...), as collection sends them
            t = Target(str(mid), "meter", str(r["meter_protocol"][i]), addr, int(mid),
                       str(r["terminal_address"][i]).upper() if r["terminal_address"][i] else None,
                       port_of(ports[i] if ports is not None else None))
            self.by_id[int(mid)] = t
            self.by_addr[addr] = t

    def resolve(self, text: str, online=()) -> Target:
        s = str(text).strip().upper()
        # a meter id or address of a meter wired to the head-end host: its RS-485 port
        addr = self.by_id[int(s)].address if s.isdigit() and len(s) < 12 and int(s) in self.by_id else s
        if addr in self.serial:
            base = self.by_addr.get(addr)
            device, proto = self.serial[addr]
            return Target(text, "meter", proto, addr, base.meter_id if base else None, None, serial=device)
        if s in self.direct:
            base = self.by_addr.get(s)
            return Target(text, "meter", "645", s, base.meter_id if base else None, None, direct=self.direct[s])
        if s in self.terminals or s in online:
            return Target(text, "terminal", "698", s)
        if s.isdigit() and int(s) in self.by_id and len(s) < 12:
            return dataclasses.replace(self.by_id[int(s)], text=text)
        if s in self.by_addr:
            return dataclasses.replace(self.by_addr[s], text=text)
        raise CommandError(f"target {text!r}: not a terminal address, meter id or meter address of the archive")


def registers_of(target: Target, names) -> list:
    """The OADs (698) or DIs (645) for register names or hex codes."""
    out = []
    for n in names:
        k = str(n).strip().lower()
        if k in REGISTERS:
            oad, dis = REGISTERS[k]
            if target.protocol == "698":
                out.append(oad)
            elif dis:
                out.extend(dis)
            else:
                raise CommandError(f"register {n!r}: not readable from a DL/T 645 meter")
            continue
        h = k[3:] if k.startswith(("di:", "oad")) else k
        if len(h) == 8 and all(c in "0123456789abcdef" for c in h):
            out.append(int(h, 16))
            continue
        raise CommandError(f"register {n!r}: one of {', '.join(REGISTERS)} or 8 hex digits (an OAD / a DI)")
    if not out:
        raise CommandError("no register to read")
    return out


def local_now(he=None) -> _dt.datetime:
    """Now on the meters' clocks (the head-end's ``meter_tz``, China Standard Time): headend.terminal's
    clock, the one every meter time is made by."""
    return he.meter_now() if he is not None and hasattr(he, "meter_now") else _meter_now()


def dts(t: _dt.datetime) -> Data:
    return Data(28, DateTimeS(t.year, t.month, t.day, t.hour, t.minute, t.second))


def clock_of(data) -> _dt.datetime | None:
    try:
        v = data.value
        if data.tag == 25:
            return _dt.datetime(v[0], v[1], v[2], v[4], v[5], v[6])
        return _dt.datetime(*v[:6])
    except (AttributeError, TypeError, ValueError, IndexError):
        return None


# --- the links -------------------------------------------------------------------------------------------
class Link:
    """One way to a target: 698 ``get / set / action`` or a 645 ``exchange``.  ``he`` the HeadEnd."""

    def __init__(self, he, target: Target, timeout_s: float) -> None:
        self.he, self.t, self.timeout_s = he, target, timeout_s

    def check_online(self) -> None:
        if self.t.serial is not None:
            bus = serial_bus(self.he, self.t.serial)
            if bus is None or bus.line is None or bus.line.lost:
                raise Offline(f"serial port {self.t.serial} is not open")
            return
        if self.t.direct is not None:
            return
        addr = self.t.terminal or self.t.address
        if self.he.sessions.get(addr) is None:
            raise Offline(f"terminal {addr} is not online")

    async def _req(self, apdu):
        addr = self.t.terminal or self.t.address
        try:
            return await self.he.request(addr, apdu, timeout_s=self.timeout_s, retries=0, priority=True)
        except TransportError as exc:
            if self.he.sessions.get(addr) is None:
                raise Offline(str(exc)) from None
            raise

    def _tsa(self) -> bytes:
        return A.tsa(self.t.address)

    def _bus(self):
        bus = serial_bus(self.he, self.t.serial)
        if bus is None:
            raise Offline(f"serial port {self.t.serial} is not open")
        return bus

    async def _req_serial(self, apdu):
        # the bus's own timeout and retries (its baud rate and meters set them: [[serial]])
        return await self._bus().request698(self.t.address, apdu)

    # 698 -------------------------------------------------------------------------------------------
    async def get(self, oads) -> list:
        if self.t.serial is not None:
            rsp = await self._req_serial(A.get_list(oads))
            return list(getattr(rsp, "results", ()))
        if self.t.path == "direct-698":
            rsp = await self._req(A.get_list(oads))
            return list(getattr(rsp, "results", ()))
        rsp = await self._req(A.ProxyGetRequestList(1, int(self.timeout_s) + 1, (
            A.ProxyTarget(self._tsa(), max(1, int(self.timeout_s)), tuple(oads)),)))
        res = getattr(rsp, "results", None)
        if not res:
            raise TransportError(f"{self.t.address}: no proxy answer ({type(rsp).__name__})")
        return list(res[0].results)

    async def set(self, oad: int, data) -> int:
        if self.t.serial is not None:
            return getattr(await self._req_serial(A.set_(oad, data)), "dar", 255)
        if self.t.path == "direct-698":
            rsp = await self._req(A.set_(oad, data))
            return getattr(rsp, "dar", 255)
        rsp = await self._req(A.ProxySetRequestList(1, int(self.timeout_s) + 1, (
            A.ProxyTarget(self._tsa(), max(1, int(self.timeout_s)), (A.SetItem(oad, data),)),)))
        res = getattr(rsp, "results", None)
        return res[0].results[0].dar if res and res[0].results else 255

    async def action(self, omd: int, data) -> int:
        if self.t.serial is not None:
            return getattr(await self._req_serial(A.action(omd, data)), "dar", 255)
        if self.t.path == "direct-698":
            rsp = await self._req(A.action(omd, data))
            return getattr(rsp, "dar", 255)
        rsp = await self._req(A.ProxyActionRequestList(1, int(self.timeout_s) + 1, (
            A.ProxyTarget(self._tsa(), max(1, int(self.timeout_s)), (A.ActionItem(omd, data),)),)))
        res = getattr(rsp, "results", None)
        return res[0].results[0].dar if res and res[0].results else 255

    # 645 -------------------------------------------------------------------------------------------
    async def exchange(self, msg, *, answer: bool = True):
        """Send a 645 message; its decoded answer (None: none expected or none came)."""
        raw = msg.to_bytes()
        if self.t.serial is not None:
            bus = self._bus()
            if not answer:
                return await bus.broadcast645(msg)
            return await bus.request645(msg)
        if self.t.direct is not None:
            return await self._direct(raw, answer)
        rsp = await self._req(A.ProxyTransCommandRequest(1, self.t.port, COMDCB_645, max(1, int(self.timeout_s)),
                                                        100, raw))
        if not isinstance(rsp, A.ProxyTransCommandResponse) or rsp.answer is None:
            if not answer:
                return None
            raise TransportError(f"meter {self.t.address}: no answer through {self.t.terminal} "
                                 f"({_dar.name_of(getattr(rsp, 'dar', None) or 255)})")
        return _decode645(bytes(rsp.answer))

    async def _direct(self, raw: bytes, answer: bool):
        host, port = self.t.direct
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            raise Offline(f"meter {self.t.address} at {host}:{port}: {exc}") from None
        try:
            writer.write(raw)
            await writer.drain()
            if not answer:
                return None
            fr = Framer()
            loop = asyncio.get_running_loop()
            end = loop.time() + self.timeout_s
            while True:
                f = fr.next_frame()
                if f is not None:
                    return decode_message(f)
                left = end - loop.time()
                if left <= 0:
                    raise TransportError(f"meter {self.t.address}: no answer within {self.timeout_s} s")
                try:
                    chunk = await asyncio.wait_for(reader.read(4096), left)
                except asyncio.TimeoutError:
                    raise TransportError(f"meter {self.t.address}: no answer within {self.timeout_s} s") from None
                if not chunk:
                    raise TransportError(f"meter {self.t.address}: connection closed without an answer")
                fr.feed(chunk)
        finally:
            writer.close()


def _decode645(raw: bytes):
    fr = Framer()
    fr.feed(raw)
    f = fr.next_frame()
    if f is None:
        raise TransportError("645 answer: no whole frame")
    return decode_message(f)


def _check645(rsp, what: str):
    if isinstance(rsp, ErrorResponse):
        raise Refused(f"{what}: {rsp.exception()}")
    return rsp


# --- the commands ----------------------------------------------------------------------------------------
class Commands:
    """The operations of :mod:`headend.control` on a running head-end.  Each returns a JSON-able dict;
    a refusal raises :class:`Refused`, an offline target :class:`Offline`, a silent one TransportError.

    ``cfg``: :class:`headend.control.ControlConfig` (timeouts, 645 password / operator code)."""

    def __init__(self, he, cfg) -> None:
        self.he, self.cfg = he, cfg

    def link(self, target: Target) -> Link:
        return Link(self.he, target, self.cfg.command_timeout_s)

    # reads ----------------------------------------------------------------------------------------------
    async def read(self, target: Target, registers) -> dict:
        """召测: the registers' values now.  A 645 block the meter refuses is read item by item
        (:data:`BLOCK_ITEMS_645`; ``items`` names them); a register the meter still refuses (645 error
        word, 698 DAR) makes the read :class:`Refused` — a failure, with what was read in its readback."""
        codes = registers_of(target, registers)
        link = self.link(target)
        refused = []
        if target.protocol == "698":
            results = await link.get(codes)
            values = [render.result_normal_json(r) for r in results]
            refused = [f"{r.oad:08X}: DAR {r.dar} ({_dar.name_of(r.dar)})" for r in results
                       if getattr(r, "dar", None) is not None]
        else:
            values = []
            for di in codes:
                rsp = await link.exchange(ReadRequest(target.address, di))
                if isinstance(rsp, ErrorResponse) and di in BLOCK_ITEMS_645:
                    got = await self._read_items645(link, target, BLOCK_ITEMS_645[di])
                    if got is not None:
                        values.append({"di": f"{di:08X}", "values": got[0], "items": got[1]})
                        continue
                if isinstance(rsp, ErrorResponse):
                    values.append({"di": f"{di:08X}", "error": str(rsp.exception())})
                    refused.append(f"{di:08X}: {rsp.exception()}")
                elif isinstance(rsp, ReadResponse):
                    values.append({"di": f"{di:08X}", "values": [v.to_json() for v in rsp.values]})
        if refused:
            exc = Refused(f"read: the meter refused {'; '.join(refused)}")
            exc.readback = {"values": values}
            raise exc
        return {"values": values}

    async def _read_items645(self, link, target: Target, items) -> tuple[list, list] | None:
        """The items of a refused block, one read each: (values, the DIs answered), None when the meter
        refuses the first (the total / phase A) too; items after it it lacks (a single-rate meter's
        tariffs) are left out."""
        values, answered = [], []
        for k, di in enumerate(items):
            rsp = await link.exchange(ReadRequest(target.address, di))
            if isinstance(rsp, ReadResponse):
                values += [v.to_json() for v in rsp.values]
                answered.append(f"{di:08X}")
            elif k == 0:
                return None
        return values, answered

    async def relay_state(self, target: Target) -> dict:
        """The read-back: relay open?, trip command?, protected? (None where the meter does not say)."""
        link = self.link(target)
        if target.protocol == "698":
            res = await link.get([OAD_RELAY_STATE, OAD_COMMAND_STATE, OAD_PROTECT_STATE])
            bits = [_first_bit(r) for r in res[:2]]
            prot = res[2].data.value if len(res) > 2 and res[2].dar is None and res[2].data is not None else None
            return {"relay_open": bits[0], "trip_command": bits[1] if len(bits) > 1 else None,
                    "protected": None if prot is None else bool(prot)}
        rsp = _check645(await link.exchange(ReadRequest(target.address, DI_STATUS3)), "status word 3")
        word = int(rsp.values[0].raw) if isinstance(rsp, ReadResponse) and rsp.values else None
        if word is None:
            return {"relay_open": None, "trip_command": None, "protected": None}
        return {"relay_open": bool(word & STATUS3_RELAY_OPEN), "trip_command": bool(word & STATUS3_TRIP_COMMAND),
                "protected": None, "status_word_3": f"{word:04X}"}

    # relay ----------------------------------------------------------------------------------------------
    async def _act645(self, target: Target, command: RemoteCommand) -> None:
        until = local_now(self.he) + _dt.timedelta(minutes=self.cfg.valid_minutes_645)
        msg = RemoteControlRequest.build(target.address, command, until, self.cfg.password_645,
                                         self.cfg.operator_645)
        _check645(await self.link(target).exchange(msg), f"remote control {command.name.lower()}")

    async def _act698(self, target: Target, omd: int, data, what: str) -> None:
        dar = await self.link(target).action(omd, data)
        if dar != 0:
            raise Refused(f"{what}: the meter answered DAR {dar} ({_dar.name_of(dar)})")

    async def disconnect(self, target: Target) -> dict:
        try:
            if target.protocol == "645":
                await self._act645(target, RemoteCommand.TRIP)
            else:
                await self._act698(target, *control698.trip(), "trip")
        except Refused as exc:
            # the meter said no (保电 set on the meter itself, ...): its state goes into the audit record
            try:
                exc.readback = await self.relay_state(target)
            except GridheadError:                 # silent after refusing: the refusal stands without it
                pass
            raise
        back = await self.relay_state(target)
        return {"readback": back, "confirmed": back.get("relay_open") is True}

    async def reconnect(self, target: Target, direct: bool) -> dict:
        if target.protocol == "645":
            await self._act645(target, RemoteCommand.CLOSE_DIRECT if direct else RemoteCommand.CLOSE_ALLOWED)
        else:
            await self._act698(target, *control698.close(direct=direct), "close")
        back = await self.relay_state(target)
        ok = back.get("relay_open") is False if direct else back.get("trip_command") is False
        return {"readback": back, "confirmed": ok}

    async def protect(self, target: Target, on: bool) -> dict:
        if target.protocol == "645":
            await self._act645(target, RemoteCommand.PROTECT_ON if on else RemoteCommand.PROTECT_OFF)
            back = await self.relay_state(target)
            # status word 3 carries no protection bit: the meter's acknowledgement is the confirmation
            return {"readback": back, "confirmed": True}
        await self._act698(target, *control698.protect(on), "protect " + ("on" if on else "off"))
        back = await self.relay_state(target)
        return {"readback": back, "confirmed": back.get("protected") is on}

    # clock ----------------------------------------------------------------------------------------------
    async def clock(self, target: Target) -> _dt.datetime | None:
        link = self.link(target)
        if target.protocol == "698":
            res = await link.get([P.OAD_DATETIME])
            return clock_of(res[0].data) if res and res[0].dar is None else None
        d = _check645(await link.exchange(ReadRequest(target.address, DI_DATE)), "clock date")
        t = _check645(await link.exchange(ReadRequest(target.address, DI_TIME)), "clock time")
        try:
            ds = f"{int(d.values[0].raw):08d}"
            ts = f"{int(t.values[0].raw):06d}"
            return _dt.datetime(2000 + int(ds[:2]), int(ds[2:4]), int(ds[4:6]), int(ts[:2]), int(ts[2:4]), int(ts[4:6]))
        except (AttributeError, IndexError, ValueError, TypeError):
            return None

    async def timesync(self, target: Target, min_skew_s: float = 0.0) -> dict:
        """对时: read the clock, set it when off by more than ``min_skew_s``, read it again."""
        before = await self.clock(target)
        now = local_now(self.he)
        skew = None if before is None else round((before - now).total_seconds(), 3)
        out = {"clock_before": before and before.isoformat(), "skew_before_s": skew, "set": False}
        if skew is not None and abs(skew) <= min_skew_s:
            out.update(readback={"clock": out["clock_before"], "skew_s": skew}, confirmed=True)
            return out
        link = self.link(target)
        now = local_now(self.he)
        if target.protocol == "698":
            dar = await link.set(P.OAD_DATETIME, dts(now))
            if dar != 0:
                raise Refused(f"set clock: the meter answered DAR {dar} ({_dar.name_of(dar)})")
        elif self.cfg.timesync_645 == "broadcast":
            await link.exchange(BroadcastTimeSync.at(now, target.address), answer=False)
        else:
            pw, op = self.cfg.password_645, self.cfg.operator_645
            wd = (now.isoweekday() % 7)
            _check645(await link.exchange(WriteRequest.of(target.address, DI_DATE, [now.strftime("%y%m%d") + f"{wd:02d}"],
                                                          pw, op)), "write date")
            _check645(await link.exchange(WriteRequest.of(target.address, DI_TIME, [(now + _dt.timedelta(
                milliseconds=500)).time().replace(microsecond=0)], pw, op)), "write time")
        out["set"] = True
        after = await self.clock(target)
        skew_after = None if after is None else round((after - local_now(self.he)).total_seconds(), 3)
        out["readback"] = {"clock": after and after.isoformat(), "skew_s": skew_after}
        out["confirmed"] = skew_after is not None and abs(skew_after) <= self.cfg.timesync_tolerance_s
        return out


def _first_bit(r) -> bool | None:
    if r.dar is not None or r.data is None or r.data.tag != 4:
        return None
    bs = r.data.value
    return bool(bs.data[0] & 0x80) if isinstance(bs, BitString) and bs.data else None


__all__ = ["Commands", "Routes", "Target", "Link", "REGISTERS", "CommandError", "Offline", "Refused",
           "registers_of", "local_now", "serial_routes", "serial_bus"]

"""DL/T 645-2007 messages: every function of the standard, request and response, both directions.

Each message is an immutable record (a tuple subclass, see ``_record``) built from intent
(``ReadRequest("000012345678", 0x00010000)``) and turned into a :class:`~protocols.dlt645.frame.Frame` with ``to_frame()`` / bytes with ``to_bytes()``.
``decode_message(frame)`` finds the class through ``MESSAGES``, keyed by the control word without its
follow-up bit.  Clause numbers refer to DL/T 645-2007 chapter 7 ("数据传输").

Conventions for fields that are several bytes on the wire, all given here in human order:

* ``di``: the data identifier as an int ``0xDI3DI2DI1DI0`` (sent DI0 first);
* ``password``: 8 hex digits ``PA P2 P1 P0`` — level first, e.g. ``"02123456"`` is level 02, code 123456
  (sent PA, P0, P1, P2);
* ``operator``: 8 hex digits ``C3 C2 C1 C0`` (sent C0 first);
* times: digits in the order of their format name (``YYMMDDhhmmss``), or a ``datetime`` when built.
"""

from __future__ import annotations

import datetime as _dt
import enum
from typing import Any, ClassVar, Self

from ..errors import GridheadError, LocalProtocolError, RemoteProtocolError
from . import frame as _frame_mod
from . import registry
from ._record import field, record
from .device_errors import Dlt645DeviceError, errors_of
from .formats import Field, Value
from .frame import (ABNORMAL_BIT, BROADCAST, DIR_BIT, FOLLOW_BIT, PREAMBLE, WILDCARD, Frame,
                    check_address)

_TIME6 = Field("time", "YYMMDDhhmmss")
_TIME5 = Field("time", "YYMMDDhhmm")


def _hex8(v: str | int, what: str) -> str:
    s = f"{v:08X}" if isinstance(v, int) else str(v).upper()
    if len(s) != 8 or any(c not in "0123456789ABCDEF" for c in s):
        raise LocalProtocolError(f"{what} {v!r} must be 8 hex digits")
    return s


def _wire8(s: str) -> bytes:
    return bytes.fromhex(s)[::-1]


def _password_wire(pw: str) -> bytes:
    # PA is sent first, then P0 P1 P2 (lowest first)
    return bytes((int(pw[:2], 16),)) + bytes.fromhex(pw[2:])[::-1]


def _password_human(b: bytes) -> str:
    return f"{b[0]:02X}" + b[1:4][::-1].hex().upper()


def _di_wire(di: int) -> bytes:
    if not 0 <= di <= 0xFFFFFFFF:
        raise LocalProtocolError(f"data identifier {di!r} is not 4 bytes")
    return di.to_bytes(4, "little")


def _time_digits(t: object, fmt_field: Field) -> str:
    if isinstance(t, str):
        if len(t) != 2 * fmt_field.nbytes or not t.isdigit():
            raise LocalProtocolError(f"time {t!r} is not {fmt_field.fmt}")
        return t
    return _hex_digits(fmt_field.encode(t))


def _hex_digits(wire: bytes) -> str:
    return wire[::-1].hex().upper()


def _need(frame: Frame, n: int, what: str, exact: bool = True) -> None:
    size = len(frame.data)
    if (size != n) if exact else (size < n):
        raise RemoteProtocolError(
            f"{frame.function_name} {'response' if frame.from_meter else 'request'} from/to "
            f"{frame.address}: {what} needs {'' if exact else 'at least '}{n} data bytes, got {size}")


def _bcd_time(digits_wire: bytes, frame: Frame, what: str) -> str:
    d = _hex_digits(digits_wire)
    if not d.isdigit():
        raise RemoteProtocolError(f"{frame.function_name} from/to {frame.address}: {what} {d} is not BCD")
    return d


def time_of(digits: str, fmt: str = "YYMMDDhhmmss") -> _dt.datetime | _dt.date | _dt.time | str | None:
    """A datetime from BCD digits, or ``None`` if the calendar says no."""
    from .formats import digits_to_datetime
    return digits_to_datetime(digits, fmt)


class Message(tuple[Any, ...]):
    """Base of all DL/T 645 messages: immutable records (see :mod:`._record`), built by hand from intent
    or by the framing kernel straight from the wire."""

    __slots__ = ()
    function: ClassVar[int]
    response: ClassVar[bool] = False
    name: ClassVar[str]
    address: str  # every message's first field (a field of each record subclass, not of this base)

    @property
    def control(self) -> int:
        c = self.function | (DIR_BIT if self.response else 0)
        if getattr(self, "follow_up", False):
            c |= FOLLOW_BIT
        return c

    def data(self) -> bytes:  # overridden
        return b""

    def to_frame(self) -> Frame:
        return Frame(check_address(self.address), self.control, self.data())

    def to_bytes(self, preamble: bytes = PREAMBLE) -> bytes:
        return self.to_frame().to_bytes(preamble)

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 0, cls.name)
        return cls(frame.address)

    def to_json(self) -> dict[str, Any]:
        return {"function": self.name, "direction": "response" if self.response else "request",
                "address": self.address}


def _reg(*classes: type[Message]) -> type[Message]:
    for c in classes:
        MESSAGES[c.function | (DIR_BIT if c.response else 0)] = c
    return classes[-1]


MESSAGES: dict[int, type[Message]] = {}


# --- 08H broadcast time sync (clause 7.1): data ss mm hh DD MM YY, no answer -------------------------
@record
class BroadcastTimeSync(Message):
    time: str                       # YYMMDDhhmmss
    address: str = BROADCAST
    function: ClassVar[int] = 0x08
    name: ClassVar[str] = "broadcast_time_sync"

    @classmethod
    def at(cls, when: _dt.datetime, address: str = BROADCAST) -> "BroadcastTimeSync":
        return cls(_time_digits(when, _TIME6), address)

    def data(self) -> bytes:
        return _TIME6.encode(_time_digits(self.time, _TIME6))

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 6, "ssmmhhDDMMYY")
        return cls(_bcd_time(frame.data, frame, "time"), frame.address)

    def to_json(self) -> dict[str, Any]:
        t = time_of(self.time)
        return {**Message.to_json(self), "time_digits": self.time, "time": t.isoformat() if isinstance(t, (_dt.date, _dt.time)) else None}


# --- 11H read data (clause 7.2) ---------------------------------------------------------------------
@record
class ReadRequest(Message):
    address: str
    di: int
    # the field shadows tuple.count (a record is a tuple underneath), which mypy reports as an override
    count: int | None = None  # type: ignore[assignment]  # N: load-record blocks (负荷记录块数), DI3 = 06
    start: str | None = None         # YYMMDDhhmm of the first load record
    function: ClassVar[int] = 0x11
    name: ClassVar[str] = "read"

    def data(self) -> bytes:
        out = _di_wire(self.di)
        if self.count is not None:
            if not 0 <= self.count <= 99:
                raise LocalProtocolError(f"block count {self.count} is not 0..99")
            out += bytes(((self.count // 10) << 4 | self.count % 10,))
            if self.start is not None:
                out += _TIME5.encode(_time_digits(self.start, _TIME5))
        elif self.start is not None:
            raise LocalProtocolError("a load-record start time needs a block count")
        return out

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        d = frame.data
        if len(d) not in (4, 5, 10):
            raise RemoteProtocolError(
                f"read request to {frame.address}: data is {len(d)} bytes; expected DI (4), DI+N (5) "
                f"or DI+N+time (10)")
        di = int.from_bytes(d[:4], "little")
        count = start = None
        if len(d) >= 5:
            n = d[4]
            if (n >> 4) > 9 or (n & 15) > 9:
                raise RemoteProtocolError(f"read request to {frame.address}: block count {n:02X} is not BCD")
            count = (n >> 4) * 10 + (n & 15)
        if len(d) == 10:
            start = _bcd_time(d[5:10], frame, "load-record time")
        return cls(frame.address, di, count, start)

    def to_json(self) -> dict[str, Any]:
        item = registry.lookup(self.di)
        out = {**Message.to_json(self), "di": f"{self.di:08X}", "di_name": item.name if item else None}
        if self.count is not None:
            out["count"] = self.count
        if self.start is not None:
            out["start"] = self.start
        return out


def _decode_payload(di: int, payload: bytes,
                    frame: Frame) -> tuple[tuple[Value, ...], dict[str, Any] | None, bool]:
    """Values (and the load record, for DI3 = 06) of a read response; raises RemoteProtocolError."""
    item = registry.lookup(di)
    if item is None:
        return (), None, False
    if di >> 24 == 0x06 and not item.fields and not item.members:
        return (), registry.decode_load_record(payload), True
    try:
        return item.decode(payload), None, True
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"read response from {frame.address}: {exc}") from None


@record
class ReadResponse(Message):
    address: str
    di: int
    payload: bytes                   # the data after the DI, unscrambled
    follow_up: bool = False          # B1H: more data follows, ask with ReadFollowUpRequest
    values: tuple[Value, ...] = field(default=(), compare=False)
    record: dict[str, Any] | None = field(default=None, compare=False)
    known: bool = field(default=True, compare=False)
    function: ClassVar[int] = 0x11
    response: ClassVar[bool] = True
    name: ClassVar[str] = "read"

    @classmethod
    def of(cls, address: str, di: int, values: object, follow_up: bool = False) -> "ReadResponse":
        """Build a meter's answer from register values (one per field, in order)."""
        item = registry.lookup(di)
        if item is None:
            raise LocalProtocolError(f"unknown data identifier {di:08X}")
        payload = item.encode(values)
        return cls(address, di, payload, follow_up, item.decode(payload))

    def data(self) -> bytes:
        return _di_wire(self.di) + self.payload

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 4, "DI", exact=False)
        d = frame.data
        di = int.from_bytes(d[:4], "little")
        payload = d[4:]
        values, record, known = _decode_payload(di, payload, frame)
        return cls(frame.address, di, payload, frame.follow_up, values, record, known)

    def to_json(self) -> dict[str, Any]:
        return _response_json(self)


def _response_json(m: ReadResponse | ReadFollowUpResponse) -> dict[str, Any]:
    item = registry.lookup(m.di)
    out: dict[str, Any] = {**Message.to_json(m), "di": f"{m.di:08X}", "di_name": item.name if item else None}
    if item is not None and item.name_zh:
        out["di_name_zh"] = item.name_zh
    seq = getattr(m, "seq", None)
    if seq is not None:
        out["seq"] = seq
    if m.follow_up:
        out["follow_up"] = True
    out["values"] = [v.to_json() for v in m.values]
    if 0x04000501 <= m.di <= 0x04000507 and m.values and m.values[0].raw is not None:
        # meter run status words 1-7 (电表运行状态字): name the bits that are set (relay, protect...)
        out["values"][0]["flags"] = sorted(registry.status_flags(m.di & 0xFF, m.values[0].raw))
    if m.record is not None:
        out["record"] = m.record
    if not m.known:
        out["payload_hex"] = m.payload.hex().upper()
    return out


# --- 12H read follow-up (clause 7.3) -----------------------------------------------------------------
@record
class ReadFollowUpRequest(Message):
    address: str
    di: int
    seq: int                          # frame sequence number SEQ (1..255)
    function: ClassVar[int] = 0x12
    name: ClassVar[str] = "read_follow_up"

    def data(self) -> bytes:
        if not 0 <= self.seq <= 255:
            raise LocalProtocolError(f"sequence number {self.seq} is not one byte")
        return _di_wire(self.di) + bytes((self.seq,))

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 5, "DI + SEQ")
        return cls(frame.address, int.from_bytes(frame.data[:4], "little"), frame.data[4])

    def to_json(self) -> dict[str, Any]:
        return {**Message.to_json(self), "di": f"{self.di:08X}", "seq": self.seq}


@record
class ReadFollowUpResponse(Message):
    address: str
    di: int
    payload: bytes
    seq: int
    follow_up: bool = False
    values: tuple[Value, ...] = field(default=(), compare=False)
    record: dict[str, Any] | None = field(default=None, compare=False)
    known: bool = field(default=True, compare=False)
    function: ClassVar[int] = 0x12
    response: ClassVar[bool] = True
    name: ClassVar[str] = "read_follow_up"

    def data(self) -> bytes:
        return _di_wire(self.di) + self.payload + bytes((self.seq,))

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 5, "DI + SEQ", exact=False)
        d = frame.data
        di = int.from_bytes(d[:4], "little")
        payload = d[4:-1]
        # follow-up frames carry a part of a long answer: decode only if it stands alone
        try:
            values, record, known = _decode_payload(di, payload, frame)
        except RemoteProtocolError:
            values, record, known = (), None, False
        return cls(frame.address, di, payload, d[-1], frame.follow_up, values, record, known)

    def to_json(self) -> dict[str, Any]:
        return _response_json(self)


# --- 13H read address (clause 7.4) -------------------------------------------------------------------
@record
class ReadAddressRequest(Message):
    address: str = WILDCARD
    function: ClassVar[int] = 0x13
    name: ClassVar[str] = "read_address"


@record
class ReadAddressResponse(Message):
    address: str
    function: ClassVar[int] = 0x13
    response: ClassVar[bool] = True
    name: ClassVar[str] = "read_address"

    def data(self) -> bytes:
        return bytes.fromhex(check_address(self.address))[::-1]

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 6, "address")
        a = _hex_digits(frame.data)
        if not a.isdigit():
            raise RemoteProtocolError(f"read-address response carries {a}, not a BCD address")
        return cls(a)


# --- 14H write data (clause 7.5): DI, PA P0 P1 P2, C0..C3, data --------------------------------------
@record
class WriteRequest(Message):
    address: str
    di: int
    payload: bytes                    # the data item's bytes (unscrambled), see ``of``
    password: str = "02000000"
    operator: str = "00000000"
    function: ClassVar[int] = 0x14
    name: ClassVar[str] = "write"

    @classmethod
    def of(cls, address: str, di: int, value: object, password: str = "02000000",
           operator: str = "00000000") -> "WriteRequest":
        """Write ``value`` (one per field, or a mapping) to data item ``di``, encoded by the registry."""
        item = registry.lookup(di)
        if item is None:
            raise LocalProtocolError(f"unknown data identifier {di:08X}")
        if "w" not in item.access:
            raise LocalProtocolError(f"data item {di:08X} ({item.name}) is not writable")
        return cls(address, di, item.encode(value), _hex8(password, "password"), _hex8(operator, "operator code"))

    def data(self) -> bytes:
        return (_di_wire(self.di) + _password_wire(_hex8(self.password, "password"))
                + _wire8(_hex8(self.operator, "operator code")) + self.payload)

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 12, "DI + password + operator", exact=False)
        d = frame.data
        return cls(frame.address, int.from_bytes(d[:4], "little"), d[12:], _password_human(d[4:8]),
                   _hex_digits(d[8:12]))

    def to_json(self) -> dict[str, Any]:
        item = registry.lookup(self.di)
        out = {**Message.to_json(self), "di": f"{self.di:08X}", "di_name": item.name if item else None,
               "password": self.password, "operator": self.operator, "payload_hex": self.payload.hex().upper()}
        if item is not None and not item.members:
            try:
                out["values"] = [v.to_json() for v in item.decode(self.payload)]
            except RemoteProtocolError as exc:
                out["error"] = str(exc)
        return out


# --- 15H write address (clause 7.6) ------------------------------------------------------------------
@record
class WriteAddressRequest(Message):
    new_address: str
    address: str = WILDCARD
    function: ClassVar[int] = 0x15
    name: ClassVar[str] = "write_address"

    def data(self) -> bytes:
        return bytes.fromhex(check_address(self.new_address))[::-1]

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 6, "new address")
        a = _hex_digits(frame.data)
        if not a.isdigit():
            raise RemoteProtocolError(f"write-address request carries {a}, not a BCD address")
        return cls(a, frame.address)

    def to_json(self) -> dict[str, Any]:
        return {**Message.to_json(self), "new_address": self.new_address}


# --- 16H freeze (clause 7.7): mm hh DD MM, 99 = any ------------------------------------------------
@record
class FreezeRequest(Message):
    address: str
    when: str = "99999999"            # MMDDhhmm; "99999999" = freeze now (瞬时冻结)
    function: ClassVar[int] = 0x16
    name: ClassVar[str] = "freeze"

    def data(self) -> bytes:
        w = str(self.when)
        if len(w) != 8 or not w.isdigit():
            raise LocalProtocolError(f"freeze time {self.when!r} must be 8 digits MMDDhhmm (99 = any)")
        return bytes.fromhex(w)[::-1]

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 4, "freeze time")
        return cls(frame.address, _bcd_time(frame.data, frame, "freeze time"))

    def to_json(self) -> dict[str, Any]:
        return {**Message.to_json(self), "when": self.when}


# --- 17H change baud rate (clause 7.8): feature word Z -------------------------------------------
BAUD_BITS = {600: 1, 1200: 2, 2400: 3, 4800: 4, 9600: 5, 19200: 6}


def _baud_of(z: int) -> int | None:
    for baud, bit in BAUD_BITS.items():
        if z == 1 << bit:
            return baud
    return None


@record
class ChangeBaudRequest(Message):
    address: str
    baud: int
    function: ClassVar[int] = 0x17
    name: ClassVar[str] = "change_baud_rate"

    def data(self) -> bytes:
        if self.baud not in BAUD_BITS:
            raise LocalProtocolError(f"baud rate {self.baud} is not one of {sorted(BAUD_BITS)}")
        return bytes((1 << BAUD_BITS[self.baud],))

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 1, "baud feature word")
        baud = _baud_of(frame.data[0])
        if baud is None:
            raise RemoteProtocolError(f"baud feature word {frame.data[0]:02X} names no single rate")
        return cls(frame.address, baud)

    def to_json(self) -> dict[str, Any]:
        return {**Message.to_json(self), "baud": self.baud}


@record
class ChangeBaudResponse(ChangeBaudRequest):
    response: ClassVar[bool] = True


# --- 18H change password (clause 7.9): DI 04000C0x, old PA P0P1P2, new PA P0P1P2 ------------------
@record
class ChangePasswordRequest(Message):
    address: str
    old: str
    new: str
    di: int | None = None             # 04000C0x, x = level of the new password; derived if None
    function: ClassVar[int] = 0x18
    name: ClassVar[str] = "change_password"

    def __new__(cls, address: str, old: str, new: str, di: int | None = None) -> Self:
        if di is None:  # 04000C01..0A hold the passwords of levels 0..9
            di = 0x04000C00 + int(_hex8(new, "new password")[:2], 16) + 1
        return tuple.__new__(cls, (address, old, new, di))

    def data(self) -> bytes:
        assert self.di is not None  # __new__ derives it
        return (_di_wire(self.di) + _password_wire(_hex8(self.old, "old password"))
                + _password_wire(_hex8(self.new, "new password")))

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 12, "DI + old + new password")
        d = frame.data
        return cls(frame.address, _password_human(d[4:8]), _password_human(d[8:12]),
                   int.from_bytes(d[:4], "little"))

    def to_json(self) -> dict[str, Any]:
        return {**Message.to_json(self), "old": self.old, "new": self.new, "di": f"{self.di:08X}"}


@record
class ChangePasswordResponse(Message):
    address: str
    password: str
    function: ClassVar[int] = 0x18
    response: ClassVar[bool] = True
    name: ClassVar[str] = "change_password"

    def data(self) -> bytes:
        return _password_wire(_hex8(self.password, "password"))

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 4, "new password")
        return cls(frame.address, _password_human(frame.data))

    def to_json(self) -> dict[str, Any]:
        return {**Message.to_json(self), "password": self.password}


# --- 19H/1AH/1BH resets (clauses 7.10-7.12): PA P0P1P2, C0..C3 [, DI for 1BH] --------------------
@record
class DemandResetRequest(Message):
    address: str
    password: str = "02000000"
    operator: str = "00000000"
    function: ClassVar[int] = 0x19
    name: ClassVar[str] = "demand_reset"

    def data(self) -> bytes:
        return _password_wire(_hex8(self.password, "password")) + _wire8(_hex8(self.operator, "operator code"))

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 8, "password + operator")
        return cls(frame.address, _password_human(frame.data[:4]), _hex_digits(frame.data[4:8]))

    def to_json(self) -> dict[str, Any]:
        return {**Message.to_json(self), "password": self.password, "operator": self.operator}


@record
class MeterResetRequest(DemandResetRequest):
    function: ClassVar[int] = 0x1A
    name: ClassVar[str] = "meter_reset"


@record
class EventResetRequest(Message):
    address: str
    event_di: int = 0xFFFFFFFF         # FFFFFFFF = every event; DI3 DI2 DI1 FF = one event type
    password: str = "02000000"
    operator: str = "00000000"
    function: ClassVar[int] = 0x1B
    name: ClassVar[str] = "event_reset"

    def data(self) -> bytes:
        return (_password_wire(_hex8(self.password, "password")) + _wire8(_hex8(self.operator, "operator code"))
                + _di_wire(self.event_di))

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 12, "password + operator + DI")
        d = frame.data
        return cls(frame.address, int.from_bytes(d[8:12], "little"), _password_human(d[:4]), _hex_digits(d[4:8]))

    def to_json(self) -> dict[str, Any]:
        return {**Message.to_json(self), "event_di": f"{self.event_di:08X}", "password": self.password,
                "operator": self.operator}


# --- 1CH remote control (clause 7.13 and the 2013 amendment): PA P0P1P2 C0..C3 N1 N2 N3..N8 --------
class RemoteCommand(enum.IntEnum):
    """N1 of a remote-control request (拉闸/合闸/报警/保电)."""

    TRIP = 0x1A                 # 跳闸 拉闸
    CLOSE_ALLOWED = 0x1B        # 合闸允许
    CLOSE_DIRECT = 0x1C         # 直接合闸
    ALARM = 0x2A                # 报警
    ALARM_RELEASE = 0x2B        # 报警解除
    PROTECT_ON = 0x3A           # 保电
    PROTECT_OFF = 0x3B          # 保电解除


@record
class RemoteControlRequest(Message):
    address: str
    command: RemoteCommand
    valid_until: str                   # YYMMDDhhmmss: the command is void after this time
    password: str = "02000000"
    operator: str = "00000000"
    n2: int = 0                        # reserved by the standard, sent as 00
    function: ClassVar[int] = 0x1C
    name: ClassVar[str] = "remote_control"

    @classmethod
    def build(cls, address: str, command: int, valid_until: object, password: str = "02000000",
              operator: str = "00000000") -> Self:
        """Intent: ``build("000012345678", RemoteCommand.TRIP, datetime(...), "02123456", "00000001")``."""
        try:
            command = RemoteCommand(command)
        except ValueError:
            raise LocalProtocolError(f"remote-control command {command!r} is not one of "
                                     f"{', '.join(f'{c.name}={c.value:02X}' for c in RemoteCommand)}") from None
        return cls(address, command, _time_digits(valid_until, _TIME6), _hex8(password, "password"),
                   _hex8(operator, "operator code"))

    def data(self) -> bytes:
        return (_password_wire(_hex8(self.password, "password")) + _wire8(_hex8(self.operator, "operator code"))
                + bytes((int(self.command), self.n2)) + _TIME6.encode(_time_digits(self.valid_until, _TIME6)))

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 16, "password + operator + N1 + N2 + valid-until")
        d = frame.data
        try:
            cmd = RemoteCommand(d[8])
        except ValueError:
            raise RemoteProtocolError(f"remote control to {frame.address}: command N1={d[8]:02X} is not "
                                      f"defined by the standard") from None
        return cls(frame.address, cmd, _bcd_time(d[10:16], frame, "valid-until time"),
                   _password_human(d[:4]), _hex_digits(d[4:8]), d[9])

    def to_json(self) -> dict[str, Any]:
        t = time_of(self.valid_until)
        return {**Message.to_json(self), "command": self.command.name.lower(), "command_code": f"{self.command:02X}",
                "valid_until_digits": self.valid_until, "valid_until": t.isoformat() if isinstance(t, (_dt.date, _dt.time)) else None,
                "password": self.password, "operator": self.operator}


# --- 1DH multi-function terminal output (clause 7.14): Z ----------------------------------------------
TERMINAL_OUTPUTS = {0: "clock_second_pulse", 1: "demand_period", 2: "time_switch"}


@record
class TerminalOutputRequest(Message):
    address: str
    output: int
    function: ClassVar[int] = 0x1D
    name: ClassVar[str] = "terminal_output"

    def data(self) -> bytes:
        if self.output not in TERMINAL_OUTPUTS:
            raise LocalProtocolError(f"terminal output {self.output} is not one of {sorted(TERMINAL_OUTPUTS)}")
        return bytes((self.output,))

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        _need(frame, 1, "output selector")
        return cls(frame.address, frame.data[0])

    def to_json(self) -> dict[str, Any]:
        return {**Message.to_json(self), "output": TERMINAL_OUTPUTS.get(self.output, self.output)}


@record
class TerminalOutputResponse(TerminalOutputRequest):
    response: ClassVar[bool] = True


# --- acknowledgements with an empty data field ------------------------------------------------------
@record
class WriteResponse(Message):
    """Meter's normal answer to write (14H), empty data field."""

    address: str
    function: ClassVar[int] = 0x14
    response: ClassVar[bool] = True
    name: ClassVar[str] = "write"


@record
class WriteAddressResponse(Message):
    """Meter's normal answer to write_address (15H), empty data field."""

    address: str
    function: ClassVar[int] = 0x15
    response: ClassVar[bool] = True
    name: ClassVar[str] = "write_address"


@record
class FreezeResponse(Message):
    """Meter's normal answer to freeze (16H), empty data field."""

    address: str
    function: ClassVar[int] = 0x16
    response: ClassVar[bool] = True
    name: ClassVar[str] = "freeze"


@record
class DemandResetResponse(Message):
    """Meter's normal answer to demand_reset (19H), empty data field."""

    address: str
    function: ClassVar[int] = 0x19
    response: ClassVar[bool] = True
    name: ClassVar[str] = "demand_reset"


@record
class MeterResetResponse(Message):
    """Meter's normal answer to meter_reset (1AH), empty data field."""

    address: str
    function: ClassVar[int] = 0x1A
    response: ClassVar[bool] = True
    name: ClassVar[str] = "meter_reset"


@record
class EventResetResponse(Message):
    """Meter's normal answer to event_reset (1BH), empty data field."""

    address: str
    function: ClassVar[int] = 0x1B
    response: ClassVar[bool] = True
    name: ClassVar[str] = "event_reset"


@record
class RemoteControlResponse(Message):
    """Meter's normal answer to remote_control (1CH), empty data field."""

    address: str
    function: ClassVar[int] = 0x1C
    response: ClassVar[bool] = True
    name: ClassVar[str] = "remote_control"


# --- abnormal responses (C = D1H...DDH): the error word ---------------------------------------------
@record
class ErrorResponse(Message):
    address: str
    # an instance field here, the class constant of every other message
    function: int  # type: ignore[misc]  # the function code the abnormal answer names
    error: int                        # ERR; for a 2-byte error word, the whole word
    size: int = 1
    response: ClassVar[bool] = True
    name: ClassVar[str] = "error"

    @property
    def control(self) -> int:
        return self.function | DIR_BIT | ABNORMAL_BIT

    @property
    def errors(self) -> list[type[Dlt645DeviceError]]:
        """The :class:`~protocols.errors.DeviceError` classes named by the error word."""
        return errors_of(self.error, 8 * self.size)

    def exception(self) -> Dlt645DeviceError:
        """One DeviceError for the lowest set bit (the message lists them all)."""
        errs = self.errors
        text = ", ".join(f"{e.name} ({e.name_zh})" for e in errs) or "no error bit set"
        cls = errs[0] if errs else errors_of(1)[0]
        return cls(f"meter {self.address} refused {self.function:02X}H: {text}", code=self.error)

    def data(self) -> bytes:
        return self.error.to_bytes(self.size, "little")

    @classmethod
    def from_frame(cls, frame: Frame) -> Self:
        if len(frame.data) not in (1, 2):
            raise RemoteProtocolError(f"abnormal response from {frame.address}: error word is "
                                      f"{len(frame.data)} bytes, expected 1 or 2")
        return cls(frame.address, frame.function, int.from_bytes(frame.data, "little"), len(frame.data))

    def to_json(self) -> dict[str, Any]:
        from .frame import FUNCTIONS
        return {"function": FUNCTIONS.get(self.function, f"{self.function:02X}"), "direction": "response",
                "address": self.address, "abnormal": True, "error_word": f"{self.error:0{2 * self.size}X}",
                "errors": [{"name": e.name, "name_zh": e.name_zh, "bit": e.bit} for e in self.errors]}


_reg(BroadcastTimeSync, ReadRequest, ReadResponse, ReadFollowUpRequest, ReadFollowUpResponse,
     ReadAddressRequest, ReadAddressResponse, WriteRequest, WriteResponse, WriteAddressRequest,
     WriteAddressResponse, FreezeRequest, FreezeResponse, ChangeBaudRequest, ChangeBaudResponse,
     ChangePasswordRequest, ChangePasswordResponse, DemandResetRequest, DemandResetResponse,
     MeterResetRequest, MeterResetResponse, EventResetRequest, EventResetResponse,
     RemoteControlRequest, RemoteControlResponse, TerminalOutputRequest, TerminalOutputResponse)


def decode_message(frame: Frame) -> Message:
    """The message a frame carries; a frame the standard does not define raises RemoteProtocolError."""
    c = frame.control
    if c & ABNORMAL_BIT:
        if not c & DIR_BIT:
            raise RemoteProtocolError(f"control word {c:02X}: the abnormal bit is set on a master request")
        return ErrorResponse.from_frame(frame)
    cls = MESSAGES.get(c & ~FOLLOW_BIT)
    if cls is None:
        raise RemoteProtocolError(f"control word {c:02X} ({'meter' if c & DIR_BIT else 'master'}, function "
                                  f"{c & 0x1F:02X}H) is not defined by DL/T 645-2007")
    if c & FOLLOW_BIT and cls not in (ReadResponse, ReadFollowUpResponse):
        raise RemoteProtocolError(f"control word {c:02X}: follow-up bit set on {cls.name}")
    return cls.from_frame(frame)


# --- the streaming fast path (Framer.messages) -----------------------------------------------------
# DI -> how its read answer decodes in the kernel, learnt from the first answer the Python decoder
# took: (size, spec, templates) for a plain item, {size: (spec, templates)} for a block.  Items the
# kernel cannot do alone (ASCII, fields over 8 bytes, load records, unknown DIs) never enter.
FAST_ANSWERS: dict[int, Any] = {}


def _learn(di: int) -> None:
    item = registry.lookup(di)
    if item is None:
        return
    if item.members:
        if item._prefixes:
            FAST_ANSWERS[di] = item._prefixes
    elif item._fast and item.fields:
        FAST_ANSWERS[di] = (item.size, item._spec, item._templates)


def decode_or_error(frame: Frame) -> Message | GridheadError:
    """:func:`decode_message`, returning the project error that refuses the frame instead of raising."""
    try:
        m = decode_message(frame)
    except GridheadError as exc:
        return exc
    if m.__class__ is ReadResponse and m.known and m.record is None and m.di not in FAST_ANSWERS:
        _learn(m.di)
    return m


_frame_mod.STREAM_CONTEXT = (Frame, ReadRequest, ReadResponse, ErrorResponse, WriteRequest,
                             RemoteControlRequest, {int(c): c for c in RemoteCommand}, Value, FAST_ANSWERS,
                             decode_or_error)

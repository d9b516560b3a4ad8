"""DL/T 645-2007 link layer: frames, the control word, addresses, and a streaming framer.

Frame layout (DL/T 645-2007 clause 4.1 "帧格式")::

    FE FE FE FE | 68 | A0 A1 A2 A3 A4 A5 | 68 | C | L | DATA (L bytes, each +33H) | CS | 16
    wake-up     |    | address, BCD,     |    |   |   | 数据域 scrambled          |    |
    (optional)  |    | A0 = lowest digits|    |   |   |                           |    |
                |<------------------- CS = sum of these bytes mod 256 --------->|

Control word C (clause 4.1.3)::

    bit 7  D  direction: 0 master -> meter, 1 meter -> master
    bit 6  abnormal response (异常应答) from the meter
    bit 5  follow-up frame (后续帧) exists
    bits 4-0 function code (08 broadcast time sync, 11 read, 12 read follow-up, 13 read address,
           14 write, 15 write address, 16 freeze, 17 baud rate, 18 password, 19 demand reset,
           1A meter reset, 1B event reset, 1C remote control, 1D multi-function terminal output)

Addresses are 12 BCD digits; on the wire the lowest two digits come first.  AAH in a byte is a
wildcard (缩位寻址), 999999999999 is broadcast.  Here an address is always the 12-character string in
human order, e.g. ``"000012345678"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import accel
from ..errors import ChecksumError, FrameError, LocalProtocolError
from ._record import record

if TYPE_CHECKING:
    from .._framing_py import Buffer

# the kernel, chosen once at import: the compiled _framing unless GRIDHEAD_PUREPYTHON=1 or not built
if accel.PURE:
    from .. import _framing_py as _k
else:
    try:
        # the stub _framing.pyi has the twin's signatures, but mypy cannot bind one name to either of
        # two modules: the name keeps the twin's type
        from .. import _framing as _k  # type: ignore[no-redef]
    except ImportError:
        from .. import _framing_py as _k

FOUND, NEED_MORE, BAD_CHECKSUM, BAD_END, BAD_ADDRESS, BAD_MESSAGE = 0, 1, 2, 3, 4, 5  # kernel statuses
MAX_FRAME = 12 + 255
PREAMBLE = b"\xFE\xFE\xFE\xFE"
BROADCAST = "999999999999"
WILDCARD = "AAAAAAAAAAAA"

DIR_BIT, ABNORMAL_BIT, FOLLOW_BIT, FUNC_MASK = 0x80, 0x40, 0x20, 0x1F

FUNCTIONS = {
    0x08: "broadcast_time_sync",
    0x11: "read",
    0x12: "read_follow_up",
    0x13: "read_address",
    0x14: "write",
    0x15: "write_address",
    0x16: "freeze",
    0x17: "change_baud_rate",
    0x18: "change_password",
    0x19: "demand_reset",
    0x1A: "meter_reset",
    0x1B: "event_reset",
    0x1C: "remote_control",
    0x1D: "terminal_output",
}


def check_address(address: str) -> str:
    """Validate a 12-digit address string (digits, or AA wildcard bytes); return it upper-cased."""
    a = str(address).upper()
    if len(a) != 12:
        raise LocalProtocolError(f"meter address {address!r} must be 12 digits")
    for i in range(0, 12, 2):
        b = a[i:i + 2]
        if not (b.isdigit() or b == "AA"):
            raise LocalProtocolError(f"meter address {address!r}: {b!r} is neither BCD nor the AA wildcard")
    return a


def address_to_wire(address: str) -> bytes:
    """``"000012345678"`` -> ``78 56 34 12 00 00`` (lowest digits first)."""
    return bytes.fromhex(check_address(address))[::-1]


@record
class Frame(tuple[Any, ...]):
    """One whole DL/T 645 frame; ``data`` is already unscrambled (the +33H removed)."""

    address: str
    control: int
    data: bytes

    @property
    def function(self) -> int:
        return self.control & FUNC_MASK

    @property
    def from_meter(self) -> bool:
        return bool(self.control & DIR_BIT)

    @property
    def abnormal(self) -> bool:
        return bool(self.control & ABNORMAL_BIT)

    @property
    def follow_up(self) -> bool:
        return bool(self.control & FOLLOW_BIT)

    @property
    def function_name(self) -> str:
        return FUNCTIONS.get(self.function, f"unknown_{self.function:02X}")

    def to_bytes(self, preamble: bytes = PREAMBLE) -> bytes:
        """Encode with the wake-up bytes (4×FE by default; pass ``b""`` for none)."""
        if len(self.data) > 255:
            raise LocalProtocolError(f"data field of {len(self.data)} bytes exceeds 255")
        if not 0 <= self.control <= 0xFF:
            raise LocalProtocolError(f"control word {self.control!r} is not one byte")
        body = b"\x68" + address_to_wire(self.address) + bytes((0x68, self.control, len(self.data))) \
            + _k.scramble(self.data)
        return preamble + body + bytes((sum(body) & 0xFF, 0x16))


def _frame_error(status: int, buf: Buffer, start: int, stop: int, extra: int, base: int = 0,
                 stream: str = "") -> FrameError:
    where = f"at {stream}byte {base + start}"
    if status == BAD_CHECKSUM:
        return ChecksumError(
            f"checksum mismatch: frame says {buf[stop - 2]:02X}, computed {extra:02X} ({where})",
            received=buf[stop - 2], computed=extra)
    if status == BAD_ADDRESS:
        return FrameError(f"address {bytes(buf[start + 1:start + 7])[::-1].hex().upper()} is not BCD ({where})")
    return FrameError(f"frame {where} ends with {extra:02X}, not 16")


def decode(buffer: Buffer, pos: int = 0) -> tuple[int, Frame | None]:
    """Framer in the h11 style: ``(used, frame | None)``.

    ``used`` bytes of ``buffer[pos:]`` may be dropped (garbage, wake-up bytes, the frame).  With
    ``frame is None`` and ``used`` short of the end, more data is needed.  A candidate that has the
    shape of a frame but a wrong checksum or end byte raises :class:`FrameError`/:class:`ChecksumError`
    with ``err.used`` set so the caller can skip one byte past its start and resynchronise.
    """
    end = len(buffer)
    status, start, stop, extra, address, control, data = _k.decode645(buffer, pos, end)
    if status == FOUND and address is not None:
        assert control is not None and data is not None  # FOUND: the kernel split the frame
        return stop - pos, Frame(address, control, data)
    if status == NEED_MORE:
        return start - pos, None
    err = _frame_error(BAD_ADDRESS if status == FOUND else status, buffer, start, stop, extra)
    err.used = start + 1 - pos
    raise err


# set by .messages when it is imported: what the kernel's messages645 needs to build messages
# (Frame, ReadRequest, ReadResponse, ErrorResponse, Value, fast table, fallback decoder)
STREAM_CONTEXT: tuple[Any, ...] | None = None


_tuple_new = tuple.__new__


class Framer:
    """Streaming framer: feed chunks of any size, take whole frames or decoded messages out.

    ``feed(chunk)`` appends.  Then either ``next_frame()`` — the next :class:`Frame`, ``None`` when
    more bytes are needed — or ``messages()``, which yields every whole frame's message already
    decoded (the fast path: one kernel call per chunk, see ``_framing_py.messages645``); use one or the
    other.  A damaged frame raises a :class:`FrameError` *after* the framer skipped past it, so the
    next call resynchronises.  Memory is bounded: garbage is dropped as soon as it is scanned and a
    frame can never exceed 267 bytes.  Iterating yields frames until more bytes are needed.
    """

    __slots__ = ("_buf", "_pos", "_pending", "consumed", "frames", "errors")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._pending: tuple[Iterator[Any], BaseException | None, int] | None = None  # (iterator over messages not yet yielded, error to raise after, bytes fed)
        self.consumed = 0  # bytes dropped so far (for error offsets in the stream)
        self.frames = 0
        self.errors = 0

    def feed(self, chunk: bytes) -> None:
        if self._pos:
            del self._buf[:self._pos]
            self.consumed += self._pos
            self._pos = 0
        self._buf += chunk

    @property
    def pending(self) -> int:
        """Bytes held that did not make a frame yet."""
        return len(self._buf) - self._pos

    def next_frame(self) -> Frame | None:
        if self._pending is not None:
            raise LocalProtocolError("next_frame() called while messages() still holds decoded messages")
        buf = self._buf
        status, start, stop, extra, address, control, data = _k.decode645(buf, self._pos, len(buf))
        if status == FOUND and address is not None:
            self._pos = stop
            self.frames += 1
            frame: Frame = _tuple_new(Frame, (address, control, data))   # the record's fields, in order
            return frame
        if status == NEED_MORE:
            self._pos = start
            return None
        self.errors += 1
        self._pos = start + 1
        raise _frame_error(BAD_ADDRESS if status == FOUND else status, buf, start, stop, extra,
                           self.consumed, "stream ")

    def messages(self) -> Iterator[Any]:
        """Yield the message of every whole frame held, decoded (``messages.decode_message``'s result).

        A damaged frame raises its FrameError, a frame the standard does not define (or whose data
        does not fit its format) the decoder's RemoteProtocolError — after the messages before it and
        with the framer already past it, so calling ``messages()`` again carries on.  Messages decoded
        but not yet taken when a loop stops early are kept for the next call.
        """
        while True:
            if self._pending is None:
                out: list[Any] = []
                self._pending = (iter(out), self._decode_into(out), self.consumed + len(self._buf))
            it, err, fed = self._pending
            yield from it
            self._pending = None
            if err is not None:
                raise err
            if fed == self.consumed + len(self._buf):   # nothing fed since the kernel ran: all done
                return

    def _decode_into(self, out: list[Any]) -> BaseException | None:
        """Run the kernel over the buffer; the error that stopped it, or None when it needs more bytes."""
        ctx = STREAM_CONTEXT
        # set once the package is imported: protocols.dlt645's __init__ imports .messages, which sets it,
        # before any module of the package can be used
        assert ctx is not None, "protocols.dlt645.messages sets STREAM_CONTEXT on import"
        buf = self._buf
        status, start, stop, extra, exc = _k.messages645(buf, self._pos, len(buf), ctx, out)
        self.frames += len(out)
        if status == NEED_MORE:
            self._pos = start
            return None
        if status == BAD_MESSAGE:          # a whole frame the decoder refused: step over all of it
            self.frames += 1
            self._pos = stop
            return exc
        self.errors += 1
        self._pos = start + 1
        return _frame_error(status, buf, start, stop, extra, self.consumed, "stream ")

    def __iter__(self) -> Iterator[Frame]:
        while True:
            f = self.next_frame()
            if f is None:
                return
            yield f

"""DL/T 698.45 link layer: frames, control word, server and client address, fragments, a streaming framer.

Frame layout (DL/T 698.45-2017 clause 5.3 "帧结构", 5.3.3-5.3.9 the fields)::

    68 | L0 L1 | C | AF SA(1-16 bytes) CA | HCS0 HCS1 | link user data     | FCS0 FCS1 | 16
       |<-- length field L counts every byte but 68H and 16H ---------------------->|
       |<------------- HCS covers ------->|
       |<------------------------- FCS covers (HCS included) ---------->|

    L   (2 bytes, low first)  bits 13-0 length, bit 14 unit (0 byte, 1 kilobyte), bit 15 reserved
    C   control word          bit 7 DIR   0 sent by the client (master), 1 by the server (meter, terminal)
                              bit 6 PRM   start flag: 1 the client started this exchange, 0 the server did
                                          (43H request, C3H its response; 81H/83H LINK / REPORT from the
                                          server, 01H the client's answer)
                              bit 5       fragmentation (分帧): user data starts with a fragment header
                              bit 4       reserved
                              bit 3 SC    scrambling code (扰码): user data sent with 33H added to each byte
                              bits 2-0    function: 1 link management (LINK), 3 user data (everything else)
    AF  SA flag byte          bits 7-6 type: 0 single, 1 wildcard (通配, nibble A), 2 group, 3 broadcast
                              bit 5 an extended logical address (2-255) is the first SA byte
                              bit 4 logical address 0 or 1 (without the extension)
                              bits 3-0 SA length in bytes minus 1 (the extension byte counts)
    SA  server address        BCD, lowest byte first on the wire; shown here in human order
    CA  client address        one byte, the master's client number
    HCS, FCS                  CRC-16/X.25 (init FFFFH, poly 1021H reflected, xorout FFFFH), low byte first

Fragment header (分帧格式域, clause 5.3.8), two bytes low first at the start of the user data when C
bit 5 is set: bits 11-0 index (0-4095, cyclic), bits 13-12 reserved, bits 15-14 type: 00 first, 01 last,
10 confirm (确认帧, carries no APDU fragment), 11 middle.  The receiver confirms each first and middle
fragment; the last one completes the APDU (figures 16/17 of the standard).

The frame keeps the APDU as bytes: decoding it is :mod:`protocols.dlt698.apdu`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import accel
from ..dlt645.frame import Framer as _StreamFramer
from ..errors import ChecksumError, FrameError, LocalProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from .._framing_py import Buffer

# the kernel, chosen once at import: the compiled _framing698 unless GRIDHEAD_PUREPYTHON=1 or not built
if accel.PURE:
    from .. import _framing698_py as _k
else:
    try:
        # the stub _framing698.pyi has the twin's signatures, but mypy cannot bind one name to either of
        # two modules: the name keeps the twin's type
        from .. import _framing698 as _k  # type: ignore[no-redef]
    except ImportError:
        from .. import _framing698_py as _k

FOUND, NEED_MORE, BAD_HCS, BAD_FCS, BAD_END, BAD_LENGTH = 0, 1, 2, 3, 4, 5
MAX_FRAME = 0x3FFF + 2      # largest frame with a byte-unit length field (the peer's default too)
PREAMBLE = b"\xFE\xFE\xFE\xFE"

DIR_BIT, PRM_BIT, FRAG_BIT, RESERVED_BIT, SC_BIT, FUNC_MASK = 0x80, 0x40, 0x20, 0x10, 0x08, 0x07
LINK_MANAGEMENT, USER_DATA = 1, 3
EXT_LOGICAL_BIT, LOGICAL_BIT = 0x20, 0x10
LENGTH_KB_BIT = 0x4000


class AddressType(IntEnum):
    """SA flag byte bits 7-6."""

    SINGLE = 0
    WILDCARD = 1
    GROUP = 2
    BROADCAST = 3


class FragmentType(IntEnum):
    """Fragment header bits 15-14."""

    FIRST = 0
    LAST = 1
    CONFIRM = 2
    MIDDLE = 3


class Fragment(NamedTuple):
    """A fragment header: ``index`` 0-4095 and its ``type``."""

    # the field shadows tuple.index (a NamedTuple is a tuple), which mypy reports as an override
    index: int  # type: ignore[assignment]
    type: FragmentType

    def to_bytes(self) -> bytes:
        v = (self.index & 0x0FFF) | int(self.type) << 14
        return bytes((v & 0xFF, v >> 8))


def _hex_ok(text: str) -> bool:
    return len(text) % 2 == 0 and all(c in "0123456789ABCDEF" for c in text)


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """The server address SA with its flag byte.

    ``address`` is the SA as hex digits in human order (BCD digits, ``A`` for a wildcard nibble), e.g.
    ``"201605190907"``; ``logical`` is 0 or 1 (AF bit 4) or 2-255 (sent as the extended logical address
    byte, AF bit 5).
    """

    address: str
    type: AddressType = AddressType.SINGLE
    logical: int = 0

    def to_bytes(self) -> bytes:
        """AF followed by the SA bytes, as on the wire."""
        a = str(self.address).upper()
        if not _hex_ok(a) or not a:
            raise LocalProtocolError(f"server address {self.address!r} must be an even number of hex digits")
        raw = bytes.fromhex(a)[::-1]
        if not 0 <= self.logical <= 255:
            raise LocalProtocolError(f"logical address {self.logical} is not 0-255")
        if self.logical >= 2:
            raw = bytes((self.logical,)) + raw
            flag = EXT_LOGICAL_BIT
        else:
            flag = LOGICAL_BIT if self.logical else 0
        if len(raw) > 16:
            raise LocalProtocolError(f"server address {self.address!r} is longer than 16 bytes on the wire")
        return bytes((int(AddressType(self.type)) << 6 | flag | (len(raw) - 1),)) + raw

    def __str__(self) -> str:
        kind = "" if self.type == AddressType.SINGLE else f" ({self.type.name.lower()})"
        logical = f" logical {self.logical}" if self.logical else ""
        return f"{self.address}{kind}{logical}"


@dataclass(frozen=True, slots=True)
class Frame:
    """One whole DL/T 698.45 frame.

    ``apdu`` is the APDU (or, for a fragment, its piece of it) with the +33H scrambling already
    removed; ``fragment`` is the fragment header when the control word's bit 5 is set.
    ``length_in_kb`` reproduces a length field sent in kilobytes (bit 14).
    """

    server: ServerAddress
    client: int
    control: int
    apdu: bytes
    fragment: Fragment | None = None
    length_in_kb: bool = False

    @property
    def from_server(self) -> bool:
        """DIR: sent by the server (meter, terminal) rather than the client (master)."""
        return bool(self.control & DIR_BIT)

    @property
    def client_started(self) -> bool:
        """PRM: the exchange was started by the client (a request or its response)."""
        return bool(self.control & PRM_BIT)

    @property
    def scrambled(self) -> bool:
        """SC: the user data is sent +33H."""
        return bool(self.control & SC_BIT)

    @property
    def function(self) -> int:
        """1 link management, 3 user data."""
        return self.control & FUNC_MASK

    def to_bytes(self, preamble: bytes = b"") -> bytes:
        """Encode, with ``preamble`` (e.g. :data:`PREAMBLE`, four FEH) in front if given."""
        c = self.control
        if not 0 <= c <= 0xFF or c & RESERVED_BIT or c & FUNC_MASK not in (LINK_MANAGEMENT, USER_DATA):
            raise LocalProtocolError(f"control word {c!r} is not a DL/T 698.45 control byte (function 1 or 3)")
        if not 0 <= self.client <= 0xFF:
            raise LocalProtocolError(f"client address {self.client!r} is not one byte")
        data = bytes(self.apdu)
        if bool(c & FRAG_BIT) != (self.fragment is not None):
            raise LocalProtocolError("a fragment header goes with control bit 5 (fragmentation) and only then")
        if self.fragment is not None:
            idx, typ = self.fragment
            if not 0 <= idx <= 0x0FFF:
                raise LocalProtocolError(f"fragment index {idx} is not 0-4095")
            if (typ == FragmentType.CONFIRM) != (not data):
                raise LocalProtocolError("a confirm fragment carries no data, the others some")
            data = self.fragment.to_bytes() + data
        if c & SC_BIT:
            data = _k.scramble(data)
        sa = self.server.to_bytes()
        total = 1 + 2 + 1 + len(sa) + 1 + 2 + len(data) + 2 + 1
        if self.length_in_kb:
            # L counts the frame without 68H and 16H; in kilobytes it must come out whole
            if (total - 2) % 1024 or total - 2 > 0x3FFF << 10:
                raise LocalProtocolError(f"a {total}-byte frame cannot have its length in kilobytes")
            length_field = LENGTH_KB_BIT | ((total - 2) >> 10)
        else:
            if total - 2 > 0x3FFF:
                raise LocalProtocolError(f"frame of {total} bytes is too long for a byte-unit length field")
            length_field = total - 2
        return bytes(preamble) + _k.encode698(length_field, c, sa, self.client, data)


def _server(af: int, address: str, ext: int) -> ServerAddress:
    if af & EXT_LOGICAL_BIT:
        logical = ext
    else:
        logical = 1 if af & LOGICAL_BIT else 0
    return ServerAddress(address, AddressType(af >> 6), logical)


def _check(buf: Buffer, start: int, stop: int, control: int, af: int, data: bytes,
           where: str) -> tuple[Fragment | None, bytes, int]:
    """The header and fragment rules the checksums cannot see; returns ``(fragment, apdu, ext)``."""
    if control & RESERVED_BIT or control & FUNC_MASK not in (LINK_MANAGEMENT, USER_DATA):
        raise FrameError(f"control word {control:02X} has a reserved bit or function (at {where})")
    ext = 0
    if af & EXT_LOGICAL_BIT:
        ext = buf[start + 5]
        if af & LOGICAL_BIT or (af & 0x0F) < 1 or ext < 2:
            raise FrameError(f"SA flag {af:02X} with extended logical address {ext} is not allowed (at {where})")
    if not control & FRAG_BIT:
        return None, data, ext
    if len(data) < 2:
        raise FrameError(f"fragmented frame without its fragment header (at {where})")
    v = data[0] | data[1] << 8
    if v & 0x3000:
        raise FrameError(f"fragment header {v:04X} has reserved bits 12-13 set (at {where})")
    frag = Fragment(v & 0x0FFF, FragmentType(v >> 14))
    if (frag.type == FragmentType.CONFIRM) != (len(data) == 2):
        raise FrameError(f"{frag.type.name.lower()} fragment {frag.index} with {len(data) - 2} data bytes "
                         f"(a confirm carries none, the others some) (at {where})")
    return frag, data[2:], ext


def _frame_error(status: int, buf: Buffer, start: int, stop: int, extra: int, where: str) -> FrameError:
    if status == BAD_HCS:
        h = _k.header_length(buf[start + 4])
        got = buf[start + h - 2] | buf[start + h - 1] << 8
        return ChecksumError(f"HCS mismatch: frame says {got:04X}, computed {extra:04X} (frame at {where})",
                             received=got, computed=extra)
    if status == BAD_FCS:
        got = buf[stop - 3] | buf[stop - 2] << 8
        return ChecksumError(f"FCS mismatch: frame says {got:04X}, computed {extra:04X} (frame at {where})",
                             received=got, computed=extra)
    if status == BAD_END:
        return FrameError(f"frame at {where} ends with {extra:02X}, not 16")
    lf = buf[start + 1] | buf[start + 2] << 8
    why = ("shorter than its header", "has reserved bit 15 set", "exceeds the frame size bound")[extra]
    return FrameError(f"length field {lf:04X} {why} (frame at {where})")


# control bytes whose frame takes the fast path: no reserved bit, no fragment header, function 1 or 3
_PLAIN = tuple(not c & (RESERVED_BIT | FRAG_BIT) and c & FUNC_MASK in (LINK_MANAGEMENT, USER_DATA) for c in range(256))
_SERVERS: dict[tuple[int, str], ServerAddress] = {}        # (af, address) -> ServerAddress for decode(); a link talks to few servers


def _make(buf: Buffer, start: int, stop: int, control: int, af: int, address: str, ca: int, data: bytes,
          servers: dict[tuple[int, str], ServerAddress], base: int, what: str) -> Frame:
    """The Frame of a FOUND candidate, or FrameError (at ``what`` ``base + start``) for what the
    checksums cannot see."""
    if _PLAIN[control] and not af & EXT_LOGICAL_BIT and not buf[start + 2] & 0x40:
        server = servers.get((af, address))
        if server is None:
            if len(servers) > 1024:
                servers.clear()
            server = servers[(af, address)] = _server(af, address, 0)
        return _k.new_frame(Frame, server, ca, control, data)
    frag, apdu, ext = _check(buf, start, stop, control, af, data, f"{what} {base + start}")
    return Frame(_server(af, address, ext), ca, control, apdu, frag, bool(buf[start + 2] & 0x40))


def decode(buffer: Buffer, pos: int = 0, max_frame: int = MAX_FRAME) -> tuple[int, Frame | None]:
    """Framer in the h11 style: ``(used, frame | None)``.

    ``used`` bytes of ``buffer[pos:]`` may be dropped (garbage, FEH preambles, the frame).  With
    ``frame is None`` more data is needed.  A damaged frame raises :class:`FrameError` /
    :class:`ChecksumError` with ``err.used`` set so that the caller skips one byte past its start.
    """
    status, start, stop, extra, control, af, address, ca, data = _k.decode698(buffer, pos, len(buffer), max_frame)
    if status == NEED_MORE:
        return start - pos, None
    try:
        if status != FOUND:
            raise _frame_error(status, buffer, start, stop, extra, f"byte {start}")
        # FOUND: the kernel split the frame
        assert control is not None and af is not None and address is not None and ca is not None \
            and data is not None
        return stop - pos, _make(buffer, start, stop, control, af, address, ca, data, _SERVERS, 0, "byte")
    except FrameError as err:
        err.used = start + 1 - pos
        raise


def decode_frame(data: bytes, max_frame: int = MAX_FRAME) -> Frame:
    """Exactly one frame (FEH preamble allowed, nothing after it), or :class:`FrameError`."""
    used, frame = decode(data, 0, max_frame)
    if frame is None:
        raise FrameError(f"no whole DL/T 698.45 frame in {len(data)} bytes")
    if used != len(data):
        raise FrameError(f"{len(data) - used} bytes after the frame (at byte {used})")
    return frame


class Framer(_StreamFramer):
    """Streaming framer: feed chunks of any size, take whole frames out.

    Same contract as :class:`protocols.dlt645.frame.Framer` (whose ``feed``, ``pending`` and iteration
    it inherits): ``feed(chunk)`` appends; ``next_frame()`` returns the next :class:`Frame`, ``None``
    when more bytes are needed, or raises a :class:`FrameError` for a damaged frame *after* skipping
    past its first byte, so the next call resynchronises.  Memory is bounded: garbage is dropped as
    soon as it is scanned and a candidate is never waited for beyond ``max_frame`` bytes.
    """

    __slots__ = ("_max", "_servers")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        super().__init__()
        self._max = max_frame
        self._servers: dict[tuple[int, str], ServerAddress] = {}  # (af, address) -> ServerAddress: a link talks to few servers

    # the 645 Framer is reused for its buffer handling, not as a supertype: its frames are 645 frames
    def next_frame(self) -> Frame | None:  # type: ignore[override]
        buf = self._buf
        status, start, stop, extra, control, af, address, ca, data = _k.decode698(buf, self._pos, len(buf), self._max)
        if status == NEED_MORE:
            self._pos = start
            return None
        try:
            if status != FOUND:
                raise _frame_error(status, buf, start, stop, extra, f"stream byte {self.consumed + start}")
            # FOUND: the kernel split the frame
            assert control is not None and af is not None and address is not None and ca is not None \
                and data is not None
            frame = _make(buf, start, stop, control, af, address, ca, data, self._servers, self.consumed,
                          "stream byte")
        except FrameError:
            self.errors += 1
            self._pos = start + 1
            raise
        self._pos = stop
        self.frames += 1
        return frame


# --- link-layer fragmentation (分帧, clause 5.3.8 and figures 16/17) ------------------------------------
def _confirm_for(frame: Frame, frag: Fragment) -> Frame:
    """The confirm frame answering ``frame``: same addresses, direction reversed, no data."""
    return Frame(frame.server, frame.client, (frame.control ^ DIR_BIT) & ~SC_BIT, b"",
                 Fragment(frag.index, FragmentType.CONFIRM))


class Reassembler:
    """Put a fragmented APDU back together, in order, with a size bound and a deadline.

    ``accept(frame, now)`` takes each fragment frame as it arrives and returns ``(apdu, confirm)``:
    ``apdu`` is the whole APDU once the last fragment is in (else ``None``); ``confirm`` is the confirm
    frame to send back for a first or middle fragment (also for a repeated one, whose confirm may have
    been lost), else ``None``.  ``now`` is the caller's clock in seconds (sans-I/O): a transfer with
    no fragment for ``timeout_s`` is dropped.  A new first fragment restarts the transfer (the sender
    gave up on the old one).  Out-of-order fragments and an APDU over ``max_apdu`` bytes raise
    :class:`RemoteProtocolError` and drop the transfer.
    """

    __slots__ = ("max_apdu", "timeout_s", "_parts", "_size", "_last", "deadline")

    def __init__(self, max_apdu: int = 1 << 20, timeout_s: float = 30.0) -> None:
        self.max_apdu = max_apdu
        self.timeout_s = timeout_s
        self.reset()

    def reset(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._last: Fragment | None = None
        self.deadline: float | None = None

    @property
    def active(self) -> bool:
        """A transfer is under way."""
        return self._last is not None

    def expire(self, now: float) -> bool:
        """Drop the transfer if its deadline has passed; True if one was dropped."""
        if self.deadline is not None and now > self.deadline:
            self.reset()
            return True
        return False

    def accept(self, frame: Frame, now: float) -> tuple[bytes | None, Frame | None]:
        frag = frame.fragment
        if frag is None or frag.type == FragmentType.CONFIRM:
            raise LocalProtocolError("Reassembler.accept takes first, middle and last fragments only")
        self.expire(now)
        if frag.type == FragmentType.FIRST:
            if self._last == frag:                      # repeated: our confirm was lost
                return None, _confirm_for(frame, frag)
            self.reset()
        elif self._last is None:
            raise RemoteProtocolError(f"{frag.type.name.lower()} fragment {frag.index} without a first one")
        elif self._last == frag:                        # repeated middle fragment
            return None, _confirm_for(frame, frag)
        elif frag.index != (self._last.index + 1) & 0x0FFF:
            expected = (self._last.index + 1) & 0x0FFF
            self.reset()
            raise RemoteProtocolError(f"fragment {frag.index} out of order (expected {expected})")
        if self._size + len(frame.apdu) > self.max_apdu:
            self.reset()
            raise RemoteProtocolError(f"fragmented APDU exceeds {self.max_apdu} bytes")
        self._parts.append(frame.apdu)
        self._size += len(frame.apdu)
        if frag.type == FragmentType.LAST:
            apdu = b"".join(self._parts)
            self.reset()
            return apdu, None
        self._last = frag
        self.deadline = now + self.timeout_s
        return None, _confirm_for(frame, frag)


class Fragmenter:
    """Send one long APDU as fragment frames, each first and middle one waiting for its confirm.

    ``template`` gives the addresses and control word (bit 5 is set here); ``max_data`` bounds the
    APDU bytes per fragment.  ``current()`` is the frame to send now (call it again to retransmit);
    ``confirm(frame)`` takes the peer's confirm and moves on; ``done`` is true once the last fragment
    has been handed out and so needs no confirm.
    """

    __slots__ = ("_template", "_pieces", "_i", "_first_index", "done")

    def __init__(self, template: Frame, apdu: bytes, max_data: int, first_index: int = 0) -> None:
        if max_data < 1:
            raise LocalProtocolError("a fragment must carry at least one APDU byte")
        if len(apdu) <= max_data:
            raise LocalProtocolError(f"an APDU of {len(apdu)} bytes fits one frame: no fragmentation")
        self._template = template
        self._pieces = [bytes(apdu[i:i + max_data]) for i in range(0, len(apdu), max_data)]
        self._i = 0
        self._first_index = first_index & 0x0FFF
        self.done = False

    def __len__(self) -> int:
        return len(self._pieces)

    def _index(self, i: int) -> int:
        return (self._first_index + i) & 0x0FFF

    def current(self) -> Frame:
        i, t = self._i, self._template
        typ = FragmentType.FIRST if i == 0 else FragmentType.LAST if i == len(self._pieces) - 1 \
            else FragmentType.MIDDLE
        if typ == FragmentType.LAST:
            self.done = True
        return Frame(t.server, t.client, t.control | FRAG_BIT, self._pieces[i], Fragment(self._index(i), typ),
                     t.length_in_kb)

    def confirm(self, frame: Frame) -> None:
        frag = frame.fragment
        if frag is None or frag.type != FragmentType.CONFIRM:
            raise RemoteProtocolError("expected a fragment confirm frame")
        if self.done or frag.index != self._index(self._i):
            raise RemoteProtocolError(f"confirm of fragment {frag.index}, but fragment "
                                      f"{self._index(self._i)} is outstanding")
        self._i += 1


def fragment(frame: Frame, max_data: int, first_index: int = 0) -> list[Frame]:
    """All fragment frames of ``frame`` at once (for tests and for links that do not confirm)."""
    fr = Fragmenter(Frame(frame.server, frame.client, frame.control, b""), frame.apdu, max_data, first_index)
    out = []
    for _ in range(len(fr)):
        out.append(fr.current())
        fr._i += 1
    return out

"""Pure-Python twin of ``ext/_framing698.pyx`` (compiled as ``protocols._framing698``).

Both modules expose the same functions with the same results, bit for bit; ``protocols.accel`` picks
one.  Keep the two files in step: the test suite runs every link-layer test against both.

DL/T 698.45 link frame (DL/T 698.45-2017 clause 5.3 "帧结构"; byte diagram in protocols/dlt698/frame.py)::

    68 | L0 L1 | C | AF SA... CA | HCS0 HCS1 | user data | FCS0 FCS1 | 16
         |<------- HCS covers ---->|
         |<------------------------ FCS covers -------------->|

``L`` counts every byte but the 68H and the 16H.  HCS and FCS are CRC-16/X.25, low byte first.

``scan698`` statuses (the values are part of the kernel contract):
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ._framing_py import Buffer

_FrameT = TypeVar("_FrameT")

FOUND = 0        # frame at [start, stop)
NEED_MORE = 1    # no whole frame yet; bytes before ``start`` are garbage that may be dropped
BAD_HCS = 2      # candidate at [start, stop) ends in 16H but its HCS != computed (extra)
BAD_FCS = 3      # HCS right, FCS != computed (extra)
BAD_END = 4      # HCS and FCS right, no 16H at the end (extra = byte seen)
BAD_LENGTH = 5   # HCS right, length field impossible (extra: 0 too short, 1 reserved bit 15, 2 over max)

SC_MASK = 0x08   # control word bit 3: user data scrambled (+33H)
EXT_LOGICAL = 0x20  # AF bit 5: the first SA byte is an extended logical address


def _table() -> list[int]:
    """CRC-16/X.25 table: polynomial 1021H reflected (8408H), one entry per byte value."""
    out: list[int] = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x8408 if c & 1 else c >> 1
        out.append(c)
    return out


_T = _table()


def crc16(buf: Buffer, start: int = 0, stop: int = -1) -> int:
    """CRC-16/X.25 of ``buf[start:stop]`` (``stop=-1``: to the end): init FFFFH, reflected, xorout FFFFH."""
    n = len(buf)
    stop = n if stop < 0 else min(stop, n)
    start = max(0, min(start, stop))
    c = 0xFFFF
    t = _T
    for b in bytes(buf[start:stop]):
        c = (c >> 8) ^ t[(c ^ b) & 0xFF]
    return c ^ 0xFFFF


def header_length(af: int) -> int:
    """Bytes from 68H up to and including HCS for the SA flag byte ``af`` (1 + 2 + 1 + 1 + SA + 1 + 2)."""
    return 8 + (af & 0x0F) + 1


def scan698(buf: Buffer, pos: int, end: int, max_frame: int) -> tuple[int, int, int, int]:
    """Find the next DL/T 698.45 frame in ``buf[pos:end]``.

    Returns ``(status, start, stop, extra)``; see the module docstring for the statuses.  ``max_frame``
    bounds a frame's total size (68H to 16H) so memory stays bounded.

    The header checksum decides what a 68H is: with a right HCS the candidate is a frame, and any later
    fault (length, FCS, end byte) is reported.  With a wrong HCS it is a frame with a damaged header
    only if its length brings us to a 16H *and* no header with a right HCS lies inside its span;
    otherwise it is noise and skipped.  Both tests look at the span's bytes alone, so they give the
    same answer however the bytes are chunked; a real frame behind a noise 68H is found as soon as its
    header is in, not after the noise's claimed length.
    """
    end = min(end, len(buf))
    i = max(pos, 0)
    while True:
        i = _find68(buf, i, end)
        if i < 0:
            return NEED_MORE, end, end, 0
        status, stop, extra = _candidate(buf, i, end, max_frame)
        if status == -1:                     # noise: step over this 68H
            i += 1
            continue
        return status, i, stop, extra


def _find68(buf: Buffer, i: int, end: int) -> int:
    if isinstance(buf, (bytes, bytearray)):
        return buf.find(b"\x68", i, end)
    while i < end:
        if buf[i] == 0x68:
            return i
        i += 1
    return -1


def _hcs_ok(buf: Buffer, i: int, end: int) -> int:
    """1 if a header with a right HCS starts at ``i``, 0 if not, -1 if its bytes are not all here."""
    if i + 5 > end:
        return -1
    h = header_length(buf[i + 4])
    if i + h > end:
        return -1
    return 1 if crc16(buf, i + 1, i + h - 2) == buf[i + h - 2] | buf[i + h - 1] << 8 else 0


def _length(buf: Buffer, i: int) -> int:
    """Total frame size from the length field at ``i + 1`` (bit 14: unit is 1024 bytes)."""
    lf = buf[i + 1] | buf[i + 2] << 8
    n = lf & 0x3FFF
    return (n << 10 if lf & 0x4000 else n) + 2


def _candidate(buf: Buffer, i: int, end: int, max_frame: int) -> tuple[int, int, int]:
    """``(status, stop, extra)`` for the 68H at ``i``; status -1 = noise, skip it."""
    ok = _hcs_ok(buf, i, end)
    if ok < 0:
        return NEED_MORE, end, 0
    h = header_length(buf[i + 4])
    total = _length(buf, i)
    if ok:
        if buf[i + 2] & 0x80:
            return BAD_LENGTH, i + h, 1
        if total < h + 3:                    # header + FCS(2) + 16H
            return BAD_LENGTH, i + h, 0
        if total > max_frame:
            return BAD_LENGTH, i + h, 2
        stop = i + total
        if stop > end:
            return NEED_MORE, end, 0
        fcs = crc16(buf, i + 1, stop - 3)
        if buf[stop - 3] | buf[stop - 2] << 8 != fcs:
            return BAD_FCS, stop, fcs
        if buf[stop - 1] != 0x16:
            return BAD_END, stop, buf[stop - 1]
        return FOUND, stop, 0
    # wrong HCS: a damaged frame, or a 68H inside noise or inside another frame's bytes
    if buf[i + 2] & 0x80 or total < h + 3 or total > max_frame:
        return -1, 0, 0
    stop = i + total
    j = i + 1
    while True:                               # a real header lying inside the span wins
        j = _find68(buf, j, min(stop, end))
        if j < 0:
            break
        if j + 5 > stop:                      # its header cannot lie inside the span
            break
        if j + 5 > end:
            return NEED_MORE, end, 0
        if j + header_length(buf[j + 4]) <= stop:
            r = _hcs_ok(buf, j, end)
            if r == 1:
                return -1, 0, 0
            if r < 0:
                return NEED_MORE, end, 0
        j += 1
    if stop > end:
        return NEED_MORE, end, 0
    if buf[stop - 1] != 0x16:
        return -1, 0, 0
    return BAD_HCS, stop, crc16(buf, i + 1, i + h - 2)


def address_text(buf: Buffer, start: int, stop: int) -> str:
    """SA bytes ``buf[start:stop]`` (lowest first on the wire) as hex digits in human order, upper case."""
    return bytes(buf[start:stop])[::-1].hex().upper()


def user_data(buf: Buffer, start: int, stop: int, scrambled: bool) -> bytes:
    """The link user data ``buf[start:stop]``, with the +33H removed when ``scrambled``."""
    stop = min(stop, len(buf))
    start = max(0, min(start, stop))
    if scrambled:
        return bytes((b - 0x33) & 0xFF for b in buf[start:stop])
    return bytes(buf[start:stop])


def scramble(data: Buffer) -> bytes:
    """Add 33H to each byte (user data on the wire when the control word's SC bit is set)."""
    return bytes((b + 0x33) & 0xFF for b in data)


def decode698(buf: Buffer, pos: int, end: int, max_frame: int) -> tuple[
        int, int, int, int, int | None, int | None, str | None, int | None, bytes | None]:
    """Scan and, when found, split the frame in one go.

    Returns ``(status, start, stop, extra, control, af, address, ca, data)``; the last five are ``None``
    unless ``status == FOUND``.  ``address`` is the SA without its extended logical address byte (AF
    bit 5), in human order; ``data`` is the user data (fragment header included), unscrambled.
    """
    status, start, stop, extra = scan698(buf, pos, end, max_frame)
    if status != FOUND:
        return status, start, stop, extra, None, None, None, None, None
    af = buf[start + 4]
    h = header_length(af)
    a0 = start + 5 + (1 if af & EXT_LOGICAL else 0)
    control = buf[start + 3]
    return (status, start, stop, extra, control, af, address_text(buf, a0, start + h - 3), buf[start + h - 3],
            user_data(buf, start + h, stop - 3, bool(control & SC_MASK)))


def encode698(length_field: int, control: int, sa: bytes, ca: int, data: bytes) -> bytes:
    """Assemble a frame from its parts: ``sa`` is AF + SA bytes as on the wire, ``data`` the user data
    already scrambled if it must be.  HCS and FCS are computed here."""
    head = bytes((0x68, length_field & 0xFF, length_field >> 8, control)) + bytes(sa) + bytes((ca,))
    hcs = crc16(head, 1, len(head))
    body = head + bytes((hcs & 0xFF, hcs >> 8)) + bytes(data)
    fcs = crc16(body, 1, len(body))
    return body + bytes((fcs & 0xFF, fcs >> 8, 0x16))


def new_frame(cls: Callable[..., _FrameT], server: object, client: int, control: int,
              apdu: bytes) -> _FrameT:
    """``cls(server, client, control, apdu)`` — a Frame without fragment, byte-unit length."""
    return cls(server, client, control, apdu)

"""Pure-Python twin of ``ext/_framing.pyx`` (compiled as ``protocols._framing``).

Both modules expose the same functions with the same results, bit for bit; ``protocols.accel`` picks
one.  Keep the two files in step: the test suite runs every codec test against both.

DL/T 645-2007 frame (clause 4.1 of the standard)::

    FE FE FE FE   68  A0 A1 A2 A3 A4 A5  68  C   L   DATA(L bytes, each +33H)  CS  16
    wake-up (opt) |<------------------- CS = sum mod 256 ------------------>|
                      address: BCD, A0 = lowest two digits

``scan645`` statuses (the values are part of the kernel contract):
"""

from __future__ import annotations

from typing import Any

# what the kernels read: bytes, or a bytearray / memoryview of bytes (the compiled twin takes any
# C-contiguous buffer of unsigned bytes)
Buffer = bytes | bytearray | memoryview

FOUND = 0        # frame at [start, stop)
NEED_MORE = 1    # no whole frame yet; bytes before ``start`` are garbage that may be dropped
BAD_CHECKSUM = 2  # candidate at [start, stop) has the right shape but CS != computed (extra)
BAD_END = 3      # candidate at [start, stop) has a matching CS but no 16H end byte (extra = byte seen)
BAD_ADDRESS = 4  # messages645 only: whole frame at [start, stop) whose address is neither BCD nor AAH
BAD_MESSAGE = 5  # messages645 only: whole frame at [start, stop) that the decoder refused (5th item)

MAX_DATA_645 = 255


def checksum645(buf: Buffer, start: int, stop: int) -> int:
    """Sum of ``buf[start:stop]`` modulo 256 (DL/T 645 CS)."""
    return sum(buf[start:stop]) & 0xFF


def scan645(buf: Buffer, pos: int, end: int) -> tuple[int, int, int, int]:
    """Find the next DL/T 645 frame in ``buf[pos:end]``.

    Returns ``(status, start, stop, extra)``; see the module docstring for the statuses.  A candidate
    that has neither a matching checksum nor the end byte is taken for noise and skipped silently.
    """
    i = max(pos, 0)
    end = min(end, len(buf))
    while True:
        i = buf.find(b"\x68", i, end) if isinstance(buf, (bytes, bytearray)) else _find68(buf, i, end)
        if i < 0:
            return NEED_MORE, end, end, 0
        if i + 8 > end:
            return NEED_MORE, i, end, 0
        if buf[i + 7] != 0x68:
            i += 1
            continue
        if i + 10 > end:
            return NEED_MORE, i, end, 0
        stop = i + 12 + buf[i + 9]
        if stop > end:
            return NEED_MORE, i, end, 0
        cs = sum(buf[i:stop - 2]) & 0xFF
        if buf[stop - 1] != 0x16:
            if buf[stop - 2] == cs:
                return BAD_END, i, stop, buf[stop - 1]
            i += 1
            continue
        if buf[stop - 2] != cs:
            return BAD_CHECKSUM, i, stop, cs
        return FOUND, i, stop, 0


def _find68(buf: Buffer, i: int, end: int) -> int:
    while i < end:
        if buf[i] == 0x68:
            return i
        i += 1
    return -1


def address645(buf: Buffer, start: int) -> str | None:
    """Six address bytes at ``buf[start:start+6]`` (lowest first) as 12 characters, highest digit first.

    Each byte must be two BCD digits or the wildcard AAH; otherwise ``None``.
    """
    if start < 0 or start + 6 > len(buf):
        raise IndexError("address645: six bytes from start are not all in the buffer")
    a = bytes(buf[start:start + 6])
    if a.translate(None, _ADDRESS_BYTES):   # something left once every valid byte is deleted
        return None
    return a[::-1].hex().upper()


# bytes allowed in an address: two BCD digits, or AAH (wildcard, 缩位寻址)
_ADDRESS_BYTES = bytes(b for b in range(256) if b == 0xAA or ((b >> 4) <= 9 and (b & 0x0F) <= 9))


def unscramble(buf: Buffer, start: int, stop: int) -> bytes:
    """Subtract 33H from each byte of ``buf[start:stop]`` (the wire form of DL/T 645 DATA)."""
    start = max(start, 0)
    return bytes((b - 0x33) & 0xFF for b in buf[start:stop])


def scramble(data: Buffer) -> bytes:
    """Add 33H to each byte (DL/T 645 DATA on the wire)."""
    return bytes((b + 0x33) & 0xFF for b in data)


def decode645(buf: Buffer, pos: int, end: int) -> tuple[int, int, int, int, str | None, int | None,
                                                        bytes | None]:
    """Scan for a frame and, when found, split it in one go.

    Returns ``(status, start, stop, extra, address, control, data)``; the last three are ``None``
    unless ``status == FOUND``.  ``address`` is ``None`` when it is not BCD/wildcard; ``data`` is
    unscrambled.
    """
    status, start, stop, extra = scan645(buf, pos, end)
    if status != FOUND:
        return status, start, stop, extra, None, None, None
    return (status, start, stop, extra, address645(buf, start + 1), buf[start + 8],
            unscramble(buf, start + 10, stop - 2))


def bcd_fields(data: Buffer, off: int, spec: bytes) -> list[int | None]:
    """Decode consecutive little-endian fields of ``data`` starting at ``off``.

    ``spec`` holds pairs ``(nbytes, kind)``: kind 0 = unsigned BCD, 1 = BCD whose highest bit is the
    sign (DL/T 645 "最高位表示方向"), 2 = unsigned binary (little-endian).  Returns a list with one int per
    field, or ``None`` for a field whose digits are not BCD.  Fields that overrun ``data`` raise
    IndexError (the caller checks the length first).
    """
    total = sum(spec[0:len(spec) - 1:2])
    if off < 0 or off + total > len(data):
        raise IndexError(f"fields of {total} bytes from offset {off} overrun {len(data)} bytes of data")
    out: list[int | None] = []
    p = off
    for j in range(0, len(spec), 2):
        n = spec[j]
        kind = spec[j + 1]
        v = 0
        ok = True
        if kind == 2:
            for k in range(p + n - 1, p - 1, -1):
                v = (v << 8) | data[k]
        else:
            neg = False
            for k in range(p + n - 1, p - 1, -1):
                b = data[k]
                if kind == 1 and k == p + n - 1:
                    neg = bool(b & 0x80)
                    b &= 0x7F
                hi = b >> 4
                lo = b & 0x0F
                if hi > 9 or lo > 9:
                    ok = False
                    break
                v = v * 100 + hi * 10 + lo
            if neg:
                v = -v
        out.append(v if ok else None)
        p += n
    return out


def bcd_values(data: Buffer, off: int, spec: bytes, templates: tuple[tuple[Any, ...], ...],
               cls: type[tuple[Any, ...]]) -> tuple[Any, ...]:
    """``bcd_fields`` and build one ``cls`` tuple per field: ``(name, raw, *template[1:])``.

    ``templates[i]`` is ``(name, decimals, unit, kind, fmt)``; ``cls`` is a tuple subclass (Value).
    """
    if 2 * len(templates) > len(spec):
        raise ValueError("bcd_values: more templates than fields in spec")
    raws = bcd_fields(data, off, spec)
    new = tuple.__new__
    return tuple(new(cls, (t[0], r, t[1], t[2], t[3], t[4])) for t, r in zip(templates, raws))


def bcd_encode(value: int, nbytes: int, kind: int) -> bytes | None:
    """Inverse of one ``bcd_fields`` field; ``None`` if ``value`` does not fit."""
    if kind == 2:
        if value < 0 or value >= 1 << (8 * nbytes):
            return None
        return value.to_bytes(nbytes, "little")
    neg = value < 0
    if neg and kind != 1:
        return None
    v = -value if neg else value
    out = bytearray(nbytes)
    for k in range(nbytes):
        v, r = divmod(v, 100)
        out[k] = (r // 10) << 4 | (r % 10)
    if v:
        return None
    if kind == 1:
        if out[-1] & 0x80:
            return None
        if neg:
            out[-1] |= 0x80
    return bytes(out)


def _di(buf: Buffer, i: int) -> int:
    # DI0 first on the wire, each byte +33H
    return ((buf[i] - 0x33) & 0xFF | ((buf[i + 1] - 0x33) & 0xFF) << 8
            | ((buf[i + 2] - 0x33) & 0xFF) << 16 | ((buf[i + 3] - 0x33) & 0xFF) << 24)


def _hex(buf: Buffer, i: int, n: int) -> str:
    # n scrambled bytes, sent lowest first -> 2n hex digits, highest first
    return bytes((b - 0x33) & 0xFF for b in buf[i:i + n])[::-1].hex().upper()


def _hex_rev(buf: Buffer, i: int, n: int, digits: bool) -> str | None:
    # n scrambled bytes, sent lowest first -> 2n hex digits, highest first; None if ``digits`` and a
    # nibble is not a decimal digit
    h = _hex(buf, i, n)
    return None if digits and not h.isdigit() else h


def _password(buf: Buffer, i: int) -> str:
    # PA first, then P0 P1 P2: "PAP2P1P0"
    return f"{(buf[i] - 0x33) & 0xFF:02X}" + _hex(buf, i + 1, 3)


def messages645(buf: Buffer, pos: int, end: int, ctx: tuple[Any, ...],
                out: list[Any]) -> tuple[int, int, int, int, BaseException | None]:
    """Decode every whole frame of ``buf[pos:end]`` into its message, appended to ``out``.

    ``ctx`` is ``(Frame, ReadRequest, ReadResponse, ErrorResponse, WriteRequest, RemoteControlRequest,
    commands, Value, table, slow)``: the record classes (tuple subclasses, filled in field order),
    ``commands`` maps a remote-control N1 byte to its RemoteCommand, ``table`` maps a DI to how its answer decodes —
    ``(size, spec, templates)`` for an item, ``{size: (spec, templates)}`` for a block (the
    ``bcd_values`` arguments) — and ``slow(frame)`` decodes any other frame, returning the message or
    the exception that refuses it.  Decoded here, without a Python call per frame: read requests with
    a DI alone, read answers (91H, B1H) whose DI is in ``table`` with a length that fits, abnormal
    answers with a 1- or 2-byte error word, write requests, remote-control requests with a known
    command and a BCD time.  The results equal ``slow``'s for the same frame.

    Stops at the first frame it cannot deliver and returns ``(status, start, stop, extra, exc)``:
    NEED_MORE (bytes before ``start`` may be dropped), BAD_CHECKSUM and BAD_END as from
    :func:`scan645`, BAD_ADDRESS, or BAD_MESSAGE with ``exc`` from ``slow``.
    """
    (Frame, ReadRequest, ReadResponse, ErrorResponse, WriteRequest, RemoteControlRequest, commands,
     Value, table, slow) = ctx
    if type(table) is not dict or type(commands) is not dict:
        raise TypeError("messages645: the fast table and the commands must be dicts")
    new = tuple.__new__
    while True:
        status, start, stop, extra = scan645(buf, pos, end)
        if status != FOUND:
            return status, start, stop, extra, None
        addr = address645(buf, start + 1)
        if addr is None:
            return BAD_ADDRESS, start, stop, 0, None
        c = buf[start + 8]
        n = stop - start - 12
        msg = None
        if c == 0x11 and n == 4:
            msg = new(ReadRequest, (addr, _di(buf, start + 10), None, None))
        elif (c == 0x91 or c == 0xB1) and n >= 4:
            di = _di(buf, start + 10)
            entry = table.get(di)
            if entry is not None:
                hit = (entry[1:] if entry[0] == n - 4 else None) if type(entry) is tuple else entry.get(n - 4)
                if hit is not None:
                    payload = unscramble(buf, start + 14, stop - 2)
                    msg = new(ReadResponse, (addr, di, payload, c == 0xB1,
                                             bcd_values(payload, 0, hit[0], hit[1], Value), None, True))
        elif (c & 0xC0) == 0xC0 and (n == 1 or n == 2):
            err = (buf[start + 10] - 0x33) & 0xFF
            if n == 2:
                err |= ((buf[start + 11] - 0x33) & 0xFF) << 8
            msg = new(ErrorResponse, (addr, c & 0x1F, err, n))
        elif c == 0x14 and n >= 12:
            msg = new(WriteRequest, (addr, _di(buf, start + 10), unscramble(buf, start + 22, stop - 2),
                                     _password(buf, start + 14), _hex_rev(buf, start + 18, 4, False)))
        elif c == 0x1C and n == 16:
            command = commands.get((buf[start + 18] - 0x33) & 0xFF)
            when = _hex_rev(buf, start + 20, 6, True)
            if command is not None and when is not None:
                msg = new(RemoteControlRequest, (addr, command, when, _password(buf, start + 10),
                                                 _hex_rev(buf, start + 14, 4, False), (buf[start + 19] - 0x33) & 0xFF))
        if msg is None:
            msg = slow(new(Frame, (addr, c, unscramble(buf, start + 10, stop - 2))))
            if isinstance(msg, BaseException):
                return BAD_MESSAGE, start, stop, 0, msg
        out.append(msg)
        pos = stop

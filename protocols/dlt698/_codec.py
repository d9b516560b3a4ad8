"""Field codecs the APDU classes are assembled from (DL/T 698.45 clause 7.3 and appendix A, A-XDR).

A :class:`Codec` is a pair ``dec(buf, pos) -> (value, new_pos)`` / ``enc(value, out: bytearray)``.
``group = n`` marks a codec whose value spreads over n consecutive dataclass fields.  Data and RSD are walked by
the kernel ``protocols._apdu698`` (compiled, or its pure twin ``protocols._apdu698_py``); this module holds
the fixed-layout fields of the APDU headers (PIID, OAD, OMD, TSA, date_time, TI, COMDCB, RCSD...).
"""

from __future__ import annotations

import struct

from .. import _apdu698_py as _twin
from .. import accel
from ..errors import LocalProtocolError

accel.bind(globals(), "_k", "protocols._apdu698")


# the pure kernel's A-XDR primitives serve the headers too; its error is a ValueError naming the offset
DecodeError = _twin.AxdrError
dec_len = _twin.dec_len


def short(pos: int) -> DecodeError:
    return DecodeError(f"truncated at offset {pos}")


def bad(pos: int, what: str) -> DecodeError:
    return DecodeError(f"offset {pos}: {what}")


class Codec:
    __slots__ = ("dec", "enc", "group")

    def __init__(self, dec, enc, group: int = 0):
        self.dec = dec
        self.enc = enc
        self.group = group


class _Absent:
    """An OPTIONAL Data that is not there (distinct from a present ``null``)."""

    __slots__ = ()

    def __repr__(self):
        return "ABSENT"

    def __bool__(self):
        return False

    def __reduce__(self):
        return "ABSENT"


ABSENT = _Absent()


# --- A-XDR length (variable-length integer of SEQUENCE OF and strings); decoding refuses non-minimal
# forms so that every decoded APDU re-encodes to the same bytes ------------------------------------------
def enc_len(n, out):
    if n < 0:
        raise LocalProtocolError(f"negative length {n}")
    if n < 0x80:
        out.append(n)
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        if len(b) > 4:
            raise LocalProtocolError(f"length {n} too large")
        out.append(0x80 | len(b))
        out += b


def _uint(n, fmt, name):
    st = struct.Struct(fmt)
    hi = 1 << (8 * n)

    def dec(buf, pos):
        end = pos + n
        if end > len(buf):
            raise short(pos)
        return st.unpack_from(buf, pos)[0], end

    def enc(v, out):
        if not (0 <= v < hi):
            raise LocalProtocolError(f"{name} {v} out of range 0..{hi - 1}")
        out += st.pack(v)

    return Codec(dec, enc)


U8 = _uint(1, ">B", "unsigned")
U16 = _uint(2, ">H", "long-unsigned")
U32 = _uint(4, ">I", "double-long-unsigned")
OAD = _uint(4, ">I", "OAD")
OMD = _uint(4, ">I", "OMD")
DAR = _uint(1, ">B", "DAR")


def _dec_bool(buf, pos):
    if pos >= len(buf):
        raise short(pos)
    b = buf[pos]
    if b > 1:
        # any non-zero is true in A-XDR, but only 0/1 re-encode to the same byte
        raise bad(pos, f"boolean {b:#04x} (00 or 01)")
    return bool(b), pos + 1


BOOL = Codec(_dec_bool, lambda v, out: out.append(1 if v else 0))


def fixed(n: int) -> Codec:
    """n raw bytes (the fixed-size visible-strings of FactoryVersion, conformance bit-strings)."""

    def dec(buf, pos):
        end = pos + n
        if end > len(buf):
            raise short(pos)
        return bytes(buf[pos:end]), end

    def enc(v, out):
        if len(v) != n:
            raise LocalProtocolError(f"field of {n} bytes given {len(v)}")
        out += v

    return Codec(dec, enc)


_dec_octets = _twin._bytes


def _enc_octets(v, out):
    enc_len(len(v), out)
    out += v


OCTETS = Codec(_dec_octets, _enc_octets)


def _dec_visible(buf, pos):
    b, pos = _dec_octets(buf, pos)
    return b.decode("latin-1"), pos


VISIBLE = Codec(_dec_visible, lambda v, out: _enc_octets(v.encode("latin-1"), out))


def _dec_tsa(buf, pos):
    # TSA = octet-string whose first byte is the address flag (AF: type, logical address, length-1)
    b, end = _dec_octets(buf, pos)
    if not b:
        raise bad(pos, "empty TSA")
    return b, end


def _enc_tsa(v, out):
    if not v:
        raise LocalProtocolError("empty TSA")
    _enc_octets(v, out)


TSA = Codec(_dec_tsa, _enc_tsa)


def _dec_date_time(buf, pos):
    # date_time: year(2) month day weekday hour minute second milliseconds(2)
    end = pos + 10
    if end > len(buf):
        raise short(pos)
    y, mo, d, wd, h, mi, s, ms = struct.unpack_from(">HBBBBBBH", buf, pos)
    return (y, mo, d, wd, h, mi, s, ms), end


def _enc_date_time(v, out):
    try:
        out += struct.pack(">HBBBBBBH", *v)
    except (struct.error, TypeError) as exc:
        raise LocalProtocolError(f"date_time {v!r}: {exc}") from None


DATE_TIME = Codec(_dec_date_time, _enc_date_time)


def _dec_date_time_s(buf, pos):
    end = pos + 7
    if end > len(buf):
        raise short(pos)
    return struct.unpack_from(">HBBBBB", buf, pos), end


def _enc_date_time_s(v, out):
    try:
        out += struct.pack(">HBBBBB", *v)
    except (struct.error, TypeError) as exc:
        raise LocalProtocolError(f"date_time_s {v!r}: {exc}") from None


DATE_TIME_S = Codec(_dec_date_time_s, _enc_date_time_s)


def date_time_s_text(v) -> str:
    y, mo, d, h, mi, s = v
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"


def date_time_text(v) -> str:
    y, mo, d, _wd, h, mi, s, ms = v
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{ms:03d}"


def _dec_ti(buf, pos):
    end = pos + 3
    if end > len(buf):
        raise short(pos)
    return (buf[pos], buf[pos + 1] << 8 | buf[pos + 2]), end


def _enc_ti(v, out):
    unit, n = v
    U8.enc(unit, out)
    U16.enc(n, out)


TI = Codec(_dec_ti, _enc_ti, group=0)


def _dec_comdcb(buf, pos):
    # COMDCB: baud rate, parity, data bits, stop bits, flow control — five enums
    end = pos + 5
    if end > len(buf):
        raise short(pos)
    return tuple(buf[pos:end]), end


def _enc_comdcb(v, out):
    if len(v) != 5:
        raise LocalProtocolError(f"COMDCB needs 5 enums, got {len(v)}")
    for x in v:
        U8.enc(x, out)


COMDCB = Codec(_dec_comdcb, _enc_comdcb)


def _dec_sid(buf, pos):
    ident, pos = U32.dec(buf, pos)
    extra, pos = _dec_octets(buf, pos)
    return (ident, extra), pos


def _enc_sid(v, out):
    U32.enc(v[0], out)
    _enc_octets(v[1], out)


SID = Codec(_dec_sid, _enc_sid)


# --- CSD / RCSD: columns of a record (7.3: CSD ::= CHOICE {0 OAD, 1 ROAD}) ---------------------------
def _dec_csd(buf, pos):
    if pos >= len(buf):
        raise short(pos)
    c = buf[pos]
    if c == 0:
        return OAD.dec(buf, pos + 1)
    if c == 1:
        oad, pos = OAD.dec(buf, pos + 1)
        n, pos = dec_len(buf, pos)
        subs = []
        for _ in range(n):
            s, pos = OAD.dec(buf, pos)
            subs.append(s)
        return (oad, tuple(subs)), pos
    raise bad(pos, f"CSD choice {c} (0 OAD or 1 ROAD)")


def _enc_csd(v, out):
    if isinstance(v, int):
        out.append(0)
        OAD.enc(v, out)
    else:
        out.append(1)
        OAD.enc(v[0], out)
        enc_len(len(v[1]), out)
        for s in v[1]:
            OAD.enc(s, out)


CSD = Codec(_dec_csd, _enc_csd)


def _dec_rcsd(buf, pos):
    n, pos = dec_len(buf, pos)
    cols = []
    for _ in range(n):
        c, pos = _dec_csd(buf, pos)
        cols.append(c)
    return tuple(cols), pos


def _enc_rcsd(v, out):
    enc_len(len(v), out)
    for c in v:
        _enc_csd(c, out)


RCSD = Codec(_dec_rcsd, _enc_rcsd)


def seq(item: Codec) -> Codec:
    """SEQUENCE OF item: an A-XDR length then the items; decoded to a tuple."""
    d, e = item.dec, item.enc

    def dec(buf, pos):
        n, pos = dec_len(buf, pos)
        if n > len(buf) - pos:          # every item takes at least one byte: refuse absurd counts early
            raise bad(pos, f"{n} items announced, {len(buf) - pos} bytes left")
        out = []
        for _ in range(n):
            v, pos = d(buf, pos)
            out.append(v)
        return tuple(out), pos

    def enc(v, out):
        enc_len(len(v), out)
        for x in v:
            e(x, out)

    return Codec(dec, enc)


def opt(item: Codec, absent=None) -> Codec:
    """OPTIONAL item: 00 absent (``absent``), 01 then the item."""
    d, e = item.dec, item.enc

    def dec(buf, pos):
        if pos >= len(buf):
            raise short(pos)
        f = buf[pos]
        if f == 0:
            return absent, pos + 1
        if f == 1:
            return d(buf, pos + 1)
        raise bad(pos, f"OPTIONAL flag {f:#04x} (00 or 01)")

    def enc(v, out):
        if v is absent:
            out.append(0)
        else:
            out.append(1)
            e(v, out)

    return Codec(dec, enc)


def pair(a: Codec, b: Codec) -> Codec:
    def dec(buf, pos):
        x, pos = a.dec(buf, pos)
        y, pos = b.dec(buf, pos)
        return (x, y), pos

    def enc(v, out):
        a.enc(v[0], out)
        b.enc(v[1], out)

    return Codec(dec, enc)


def _dec_opt_mac_choice(buf, pos):
    # SECURITY-Response 数据验证信息 OPTIONAL: CHOICE {0 MAC}
    if pos >= len(buf):
        raise short(pos)
    if buf[pos] == 0:
        return None, pos + 1
    if buf[pos] != 1:
        raise bad(pos, f"OPTIONAL flag {buf[pos]:#04x}")
    if pos + 1 >= len(buf):
        raise short(pos + 1)
    if buf[pos + 1] != 0:
        raise bad(pos + 1, f"verification choice {buf[pos + 1]} (0 MAC)")
    return _dec_octets(buf, pos + 2)


def _enc_opt_mac_choice(v, out):
    if v is None:
        out.append(0)
    else:
        out += b"\x01\x00"
        _enc_octets(v, out)


OPT_MAC_CHOICE = Codec(_dec_opt_mac_choice, _enc_opt_mac_choice)


# --- Data and RSD: the A-XDR walk of the kernel ------------------------------------------------------
def dec_data(buf, pos):
    return _k.decode_data(buf, pos)


def enc_data(v, out):
    try:
        _k.encode_data(v, out)
    except (ValueError, TypeError, OverflowError, AttributeError, IndexError, struct.error) as exc:
        raise LocalProtocolError(f"cannot encode Data {v!r:.60}: {exc}") from None


def dec_rows(buf, pos, nrows, ncols):
    """``nrows`` A-RecordRows of ``ncols`` Data each (the hot loop of record reports)."""
    if nrows * max(ncols, 1) > len(buf) - pos:
        raise bad(pos, f"{nrows} rows of {ncols} columns announced, {len(buf) - pos} bytes left")
    return _k.decode_rows(buf, pos, nrows, ncols)


DATA = Codec(dec_data, enc_data)


OPT_DATA = opt(DATA, ABSENT)


def _dec_rsd(buf, pos):
    try:
        return _k.decode_rsd(buf, pos)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None


def _enc_rsd(v, out):
    try:
        _k.encode_rsd(v, out)
    except (ValueError, TypeError, OverflowError, AttributeError, IndexError, struct.error) as exc:
        raise LocalProtocolError(f"cannot encode RSD {v!r:.60}: {exc}") from None


RSD = Codec(_dec_rsd, _enc_rsd)

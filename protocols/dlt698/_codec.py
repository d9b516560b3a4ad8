"""Field codecs the APDU classes are assembled from (DL/T 698.45 clause 7.3 and appendix A, A-XDR).

A :class:`Codec` is a pair ``dec(buf, pos) -> (value, new_pos)`` / ``enc(value, out: bytearray)``.
``group = n`` marks a codec whose value spreads over n consecutive dataclass fields.  Every A-XDR type
(Data, RSD, RCSD, TSA, date_time, TI, COMDCB...) is the A-XDR layer's (:mod:`protocols.dlt698.axdr`);
this module adds the combinators (SEQUENCE OF, OPTIONAL, CHOICE helpers) and the few fixed fields.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from ..errors import LocalProtocolError
from . import axdr
from .axdr import Data, Tag


class DecodeError(ValueError):
    """Internal: turned into a RemoteProtocolError naming the APDU by ``decode_apdu``."""


def short(pos: int) -> DecodeError:
    return DecodeError(f"truncated at offset {pos}")


def bad(pos: int, what: str) -> DecodeError:
    return DecodeError(f"offset {pos}: {what}")


# a field's decoder and encoder; the values are whatever the field holds (an int, a tuple of Data, an
# APDU...): the combinators below do not know, so they are Any
Dec = Callable[[bytes, int], tuple[Any, int]]
Enc = Callable[[Any, bytearray], None]


class Codec:
    __slots__ = ("dec", "enc", "group")

    def __init__(self, dec: Dec, enc: Enc, group: int = 0) -> None:
        self.dec = dec
        self.enc = enc
        self.group = group


class _Absent:
    """An OPTIONAL Data that is not there (distinct from a present ``null``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


dec_len = axdr.decode_length


def enc_len(n: int, out: bytearray) -> None:
    out += axdr.encode_length(n)


def bare(tag: int) -> Codec:
    """The bare (untagged) A-XDR type ``tag`` as a field codec."""

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        return axdr.decode_typed(tag, buf, pos)

    def enc(v: Any, out: bytearray) -> None:
        out += axdr.encode_typed(tag, v)

    return Codec(dec, enc)


def _uint(n: int, fmt: str, name: str) -> Codec:
    st = struct.Struct(fmt)
    hi = 1 << (8 * n)

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        end = pos + n
        if end > len(buf):
            raise short(pos)
        return st.unpack_from(buf, pos)[0], end

    def enc(v: Any, out: bytearray) -> None:
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


def _dec_bool(buf: bytes, pos: int) -> tuple[bool, int]:
    if pos >= len(buf):
        raise short(pos)
    b = buf[pos]
    if b > 1:
        # any non-zero is true in A-XDR, but only 0/1 re-encode to the same byte
        raise bad(pos, f"boolean {b:#04x} (00 or 01)")
    return bool(b), pos + 1


def _enc_bool(v: object, out: bytearray) -> None:
    out.append(1 if v else 0)


BOOL = Codec(_dec_bool, _enc_bool)


def fixed(n: int) -> Codec:
    """n raw bytes (the fixed-size visible-strings of FactoryVersion, conformance bit-strings)."""

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        end = pos + n
        if end > len(buf):
            raise short(pos)
        return bytes(buf[pos:end]), end

    def enc(v: Any, out: bytearray) -> None:
        if len(v) != n:
            raise LocalProtocolError(f"field of {n} bytes given {len(v)}")
        out += v

    return Codec(dec, enc)


OCTETS = bare(Tag.OCTET_STRING)
VISIBLE = bare(Tag.VISIBLE_STRING)
TSA = bare(Tag.TSA)
DATE_TIME = bare(Tag.DATE_TIME)
DATE_TIME_S = bare(Tag.DATE_TIME_S)
TI = bare(Tag.TI)
COMDCB = bare(Tag.COMDCB)
SID = bare(Tag.SID)
RSD = bare(Tag.RSD)
RCSD = bare(Tag.RCSD)


def date_time_s_text(v: tuple[int, int, int, int, int, int]) -> str:
    y, mo, d, h, mi, s = v
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"


def date_time_text(v: tuple[int, int, int, int, int, int, int, int]) -> str:
    y, mo, d, _wd, h, mi, s, ms = v
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{ms:03d}"


def seq(item: Codec) -> Codec:
    """SEQUENCE OF item: an A-XDR length then the items; decoded to a tuple."""
    d, e = item.dec, item.enc

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        n, pos = dec_len(buf, pos)
        if n > len(buf) - pos:          # every item takes at least one byte: refuse absurd counts early
            raise bad(pos, f"{n} items announced, {len(buf) - pos} bytes left")
        out: list[Any] = []
        for _ in range(n):
            v, pos = d(buf, pos)
            out.append(v)
        return tuple(out), pos

    def enc(v: Any, out: bytearray) -> None:
        enc_len(len(v), out)
        for x in v:
            e(x, out)

    return Codec(dec, enc)


def opt(item: Codec, absent: object = None) -> Codec:
    """OPTIONAL item: 00 absent (``absent``), 01 then the item."""
    d, e = item.dec, item.enc

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        if pos >= len(buf):
            raise short(pos)
        f = buf[pos]
        if f == 0:
            return absent, pos + 1
        if f == 1:
            return d(buf, pos + 1)
        raise bad(pos, f"OPTIONAL flag {f:#04x} (00 or 01)")

    def enc(v: Any, out: bytearray) -> None:
        if v is absent:
            out.append(0)
        else:
            out.append(1)
            e(v, out)

    return Codec(dec, enc)


def pair(a: Codec, b: Codec) -> Codec:
    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        x, pos = a.dec(buf, pos)
        y, pos = b.dec(buf, pos)
        return (x, y), pos

    def enc(v: Any, out: bytearray) -> None:
        a.enc(v[0], out)
        b.enc(v[1], out)

    return Codec(dec, enc)


def _dec_opt_mac_choice(buf: bytes, pos: int) -> tuple[bytes | None, int]:
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
    return OCTETS.dec(buf, pos + 2)


def _enc_opt_mac_choice(v: bytes | None, out: bytearray) -> None:
    if v is None:
        out.append(0)
    else:
        out += b"\x01\x00"
        OCTETS.enc(v, out)


OPT_MAC_CHOICE = Codec(_dec_opt_mac_choice, _enc_opt_mac_choice)


# --- Data ----------------------------------------------------------------------------------------------
def dec_data(buf: bytes, pos: int) -> tuple[Data, int]:
    return axdr.decode_data(buf, pos)


def enc_data(v: Data, out: bytearray) -> None:
    out += axdr.encode_data(v)


def dec_rows(buf: bytes, pos: int, ncols: int) -> tuple[tuple[tuple[Data, ...], ...], int]:
    """SEQUENCE OF A-RecordRow of ``ncols`` Data each (the hot loop of record reports)."""
    return axdr.decode_rows(buf, pos, ncols)


DATA = Codec(dec_data, enc_data)
OPT_DATA = opt(DATA, ABSENT)

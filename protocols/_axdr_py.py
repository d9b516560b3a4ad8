"""Pure-Python twin of ``ext/_axdr.pyx`` (compiled as ``protocols._axdr``): the A-XDR data types of
DL/T 698.45-2017 clause 7.3 (数据类型定义) and their value classes.

Both modules expose the same functions with the same results; ``protocols.accel`` picks one and
``protocols.dlt698.axdr`` is the public face (read its docstring first).  The value classes live here
only, and the compiled module imports them, so a value has one class whichever kernel built it.

Encoding rules (A-XDR as DL/T 698.45 uses it):
  * integers big-endian, two's complement; float32/float64 IEEE 754 big-endian;
  * a length (element count, byte count, bit count) is one byte 0..7FH, or 8nH followed by n = 1..4
    bytes big-endian — and must be minimal (81 05 for 5 is refused, as by the dlt698 peer), since a
    decoded value has to re-encode to the same bytes;
  * ``Data ::= CHOICE`` is a one-byte type tag followed by the bare encoding of that type; inside the
    structured types (ROAD, RSD, MS, ...) and in APDUs the types are bare, without a tag.

Kernel functions (the contract both modules keep):
  decode_data(buf, pos) -> (Data, end)          one tagged Data
  decode_typed(tag, buf, pos) -> (value, end)   the bare form of type ``tag``
  decode_row(buf, pos, n) -> (tuple[Data], end)     n Data with no count (A-RecordRow)
  decode_rows(buf, pos, n) -> (tuple[tuple[Data]], end)   SEQUENCE OF A-RecordRow of n columns
  decode_length(buf, pos) -> (n, end)
  encode_data(Data) -> bytes;  encode_typed(tag, value) -> bytes;  encode_length(n) -> bytes
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from .errors import LocalProtocolError, RemoteProtocolError

# --- tags (DL/T 698.45-2017 clause 7.3.1, Data ::= CHOICE); T_ where a value class has the name ----
NULL, ARRAY, STRUCTURE, BOOL, BIT_STRING, DOUBLE_LONG, DOUBLE_LONG_UNSIGNED = 0, 1, 2, 3, 4, 5, 6
OCTET_STRING, VISIBLE_STRING, UTF8_STRING = 9, 10, 12
INTEGER, LONG, UNSIGNED, LONG_UNSIGNED, LONG64, LONG64_UNSIGNED, ENUM = 15, 16, 17, 18, 20, 21, 22
FLOAT32, FLOAT64, DATE_TIME, DATE, TIME, DATE_TIME_S = 23, 24, 25, 26, 27, 28
OI, OAD, ROAD, OMD, T_TI, TSA, MAC, RN, REGION, SCALER_UNIT = 80, 81, 82, 83, 84, 85, 86, 87, 88, 89
T_RSD, CSD, T_MS, T_SID, SID_MAC, T_COMDCB, RCSD = 90, 91, 92, 93, 94, 95, 96

TYPE_NAMES = {
    0: "null", 1: "array", 2: "structure", 3: "bool", 4: "bit-string", 5: "double-long",
    6: "double-long-unsigned", 9: "octet-string", 10: "visible-string", 12: "UTF8-string",
    15: "integer", 16: "long", 17: "unsigned", 18: "long-unsigned", 20: "long64",
    21: "long64-unsigned", 22: "enum", 23: "float32", 24: "float64", 25: "date_time", 26: "date",
    27: "time", 28: "date_time_s", 80: "OI", 81: "OAD", 82: "ROAD", 83: "OMD", 84: "TI", 85: "TSA",
    86: "MAC", 87: "RN", 88: "Region", 89: "Scaler_Unit", 90: "RSD", 91: "CSD", 92: "MS", 93: "SID",
    94: "SID_MAC", 95: "COMDCB", 96: "RCSD",
}

# Bounds against hostile frames.  Every element takes at least one byte, so a count is also checked
# against the bytes left: nothing allocates more than a few words per input byte.
MAX_DEPTH = 32            # nesting of Data in Data (array, structure, Region, RSD): the peer's limit too
MAX_ELEMENTS = 65536      # elements of one SEQUENCE OF / array / structure

# A decoder reads the bare value of one type at ``buf[pos]`` (``depth``: Data nesting so far) and
# returns it with the position after it; an encoder checks a value handed in by a caller (anything: it
# is checked at run time, hence Any) and appends its bytes to ``out``.
class Decoder(Protocol):
    def __call__(self, buf: bytes, pos: int, depth: int = 0, /) -> tuple[Any, int]: ...


Encoder = Callable[[Any, list[bytes], int], None]


# --- value classes ---------------------------------------------------------------------------------
class Data(NamedTuple):
    """A tagged value: ``tag`` is the type (DL/T 698.45 clause 7.3.1), ``value`` its Python form."""

    tag: int
    value: object

    def __repr__(self) -> str:
        return f"Data({TYPE_NAMES.get(self.tag, self.tag)}, {self.value!r})"


class BitString(NamedTuple):
    """bit-string: ``bits`` long, ``data`` = ceil(bits/8) bytes, first bit = MSB of the first byte."""

    bits: int
    data: bytes


class DateTime(NamedTuple):
    """date_time (10 bytes).  FFH (FFFFH for year and millisecond) = field not specified."""

    year: int
    month: int
    day: int
    weekday: int      # day_of_week, 0 = Sunday
    hour: int
    minute: int
    second: int
    millisecond: int


class Date(NamedTuple):
    """date (5 bytes): year (FFFFH unspecified), month, day, weekday (FFH unspecified)."""

    year: int
    month: int
    day: int
    weekday: int


class Time(NamedTuple):
    """time (3 bytes)."""

    hour: int
    minute: int
    second: int


class DateTimeS(NamedTuple):
    """date_time_s (7 bytes): no weekday, no milliseconds."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int


class Road(NamedTuple):
    """ROAD: an OAD (int) and the associated OADs (tuple of int)."""

    oad: int
    oads: tuple[int, ...]


class TI(NamedTuple):
    """TI time interval: unit 0 s, 1 min, 2 h, 3 day, 4 month, 5 year; interval long-unsigned."""

    unit: int
    interval: int


class Region(NamedTuple):
    """Region: unit 0 [start, end), 1 (start, end], 2 [start, end], 3 (start, end); bounds are Data."""

    unit: int
    start: Data
    end: Data


class ScalerUnit(NamedTuple):
    """Scaler_Unit: value = raw × 10^scaler, unit code of the standard's unit enumeration."""

    scaler: int
    unit: int


class RSD(NamedTuple):
    """RSD row selector: ``selector`` 0-10 and its value —
    0 None; 1 Selector1; 2 Selector2; 3 tuple of Selector2; 4, 5 SelectorTime; 6, 7, 8 SelectorRange;
    9 int (the n-th last record); 10 SelectorLast."""

    selector: int
    value: object


class Selector1(NamedTuple):
    """RSD selector 1: records whose column ``oad`` equals ``value`` (Data)."""

    oad: int
    value: Data


class Selector2(NamedTuple):
    """RSD selector 2: records whose column ``oad`` is in [start, end) stepping ``interval`` (all Data)."""

    oad: int
    start: Data
    end: Data
    interval: Data


class SelectorTime(NamedTuple):
    """RSD selectors 4 (collection start time) and 5 (collection store time): a date_time_s and an MS."""

    time: DateTimeS
    ms: "MS"


class SelectorRange(NamedTuple):
    """RSD selectors 6, 7, 8 (start / store / success time range): two date_time_s, a TI, an MS."""

    start: DateTimeS
    end: DateTimeS
    interval: TI
    ms: "MS"


class SelectorLast(NamedTuple):
    """RSD selector 10: the last ``last`` records of the meters in ``ms``."""

    last: int
    ms: "MS"


class MS(NamedTuple):
    """MS meter set: ``choice`` 0 none, 1 all (value None); 2 user types (tuple of int);
    3 addresses (tuple of TSA bytes); 4 configuration numbers (tuple of int); 5, 6, 7 regions of
    user type, address, number (tuple of Region)."""

    choice: int
    value: object


class SID(NamedTuple):
    """SID security identifier: double-long-unsigned identifier and octet-string additional data."""

    identifier: int
    additional: bytes


class SIDMAC(NamedTuple):
    """SID_MAC: a SID and a MAC (bytes)."""

    sid: SID
    mac: bytes


class COMDCB(NamedTuple):
    """COMDCB serial settings (enums): baud 0-10 (300..115200 bps) or 255 auto; parity 0 none, 1 odd,
    2 even; data_bits 5-8; stop_bits 1-2; flow_control 0 none, 1 hardware, 2 software."""

    baud: int
    parity: int
    data_bits: int
    stop_bits: int
    flow_control: int


# --- errors ----------------------------------------------------------------------------------------
def _name(tag: int) -> str:
    return TYPE_NAMES.get(tag, f"tag {tag}")


def _short(what: str, pos: int, need: int, buf: bytes) -> RemoteProtocolError:
    return RemoteProtocolError(f"A-XDR {what}: truncated at byte {pos} (needs {need} bytes, "
                               f"{max(len(buf) - pos, 0)} left)")


def _bad(what: str, pos: int, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"A-XDR {what}: {why} at byte {pos}")


def _local(what: str, why: str) -> LocalProtocolError:
    return LocalProtocolError(f"A-XDR {what}: cannot encode {why}")


# --- decoding --------------------------------------------------------------------------------------
def decode_length(buf: bytes, pos: int = 0, what: str = "length") -> tuple[int, int]:
    """A-XDR length at ``buf[pos]``: one byte < 80H, or 8nH + n (1..4) bytes big-endian, minimal."""
    if pos < 0:
        raise LocalProtocolError(f"A-XDR: negative position {pos}")
    if pos >= len(buf):
        raise _short(what + " length", pos, 1, buf)
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    k = b & 0x7F
    if not 1 <= k <= 4:
        raise _bad(what + " length", pos, f"length of length {k} (1-4 allowed)")
    if pos + 1 + k > len(buf):
        raise _short(what + " length", pos, 1 + k, buf)
    n = int.from_bytes(buf[pos + 1:pos + 1 + k], "big")
    if n < (0x80 if k == 1 else 1 << (8 * (k - 1))):
        raise _bad(what + " length", pos, f"non-minimal length {n} in {k + 1} bytes")
    return n, pos + 1 + k


def _count(buf: bytes, pos: int, what: str, size: int) -> tuple[int, int]:
    """A SEQUENCE OF count whose elements take at least ``size`` bytes each."""
    n, p = decode_length(buf, pos, what)
    if n > MAX_ELEMENTS:
        raise _bad(what, pos, f"{n} elements (at most {MAX_ELEMENTS})")
    if n * size > len(buf) - p:
        raise _short(what, p, n * size, buf)
    return n, p


def _octets(buf: bytes, pos: int, what: str) -> tuple[bytes, int]:
    n, p = decode_length(buf, pos, what)
    if p + n > len(buf):
        raise _short(what, p, n, buf)
    return buf[p:p + n], p + n


def _fixed(fmt: str, tag: int) -> Decoder:
    st = struct.Struct(fmt)
    unpack, size, what = st.unpack_from, st.size, _name(tag)

    def dec(buf: bytes, pos: int, depth: int = 0) -> tuple[Any, int]:
        if pos + size > len(buf):
            raise _short(what, pos, size, buf)
        return unpack(buf, pos)[0], pos + size
    return dec


def _record(cls: Any, fmt: str, tag: int) -> Decoder:
    st = struct.Struct(fmt)
    unpack, size, what = st.unpack_from, st.size, _name(tag)

    def dec(buf: bytes, pos: int, depth: int = 0) -> tuple[Any, int]:
        if pos + size > len(buf):
            raise _short(what, pos, size, buf)
        return cls._make(unpack(buf, pos)), pos + size
    return dec


def _dec_null(buf: bytes, pos: int, depth: int = 0) -> tuple[None, int]:
    return None, pos


def _dec_seq(buf: bytes, pos: int, depth: int = 0, tag: int = ARRAY) -> tuple[tuple[Data, ...], int]:
    if depth >= MAX_DEPTH:
        raise _bad(_name(tag), pos, f"nesting deeper than {MAX_DEPTH}")
    n, p = _count(buf, pos, _name(tag), 1)
    out: list[Data] = []
    for _ in range(n):
        v, p = decode_data(buf, p, depth + 1)
        out.append(v)
    return tuple(out), p


def _dec_structure(buf: bytes, pos: int, depth: int = 0) -> tuple[tuple[Data, ...], int]:
    return _dec_seq(buf, pos, depth, STRUCTURE)


def _dec_bool(buf: bytes, pos: int, depth: int = 0) -> tuple[bool, int]:
    if pos >= len(buf):
        raise _short("bool", pos, 1, buf)
    b = buf[pos]
    if b > 1:
        # clause 7.3: bool is FALSE (0) or TRUE (1); anything else could not re-encode identically
        raise _bad("bool", pos, f"value {b:#04x} (0 or 1)")
    return b == 1, pos + 1


def _dec_bit_string(buf: bytes, pos: int, depth: int = 0) -> tuple[BitString, int]:
    bits, p = decode_length(buf, pos, "bit-string")
    nb = (bits + 7) >> 3
    if p + nb > len(buf):
        raise _short("bit-string", p, nb, buf)
    return BitString(bits, buf[p:p + nb]), p + nb


def _dec_octet_string(buf: bytes, pos: int, depth: int = 0) -> tuple[bytes, int]:
    return _octets(buf, pos, "octet-string")


def _dec_visible_string(buf: bytes, pos: int, depth: int = 0) -> tuple[str, int]:
    # Latin-1 maps every byte to one character and back: devices pad with 00H or put GBK text in
    # visible-strings, and a decoded value must re-encode to the same bytes.
    raw, p = _octets(buf, pos, "visible-string")
    return raw.decode("latin-1"), p


def _dec_utf8_string(buf: bytes, pos: int, depth: int = 0) -> tuple[str, int]:
    raw, p = _octets(buf, pos, "UTF8-string")
    try:
        return raw.decode("utf-8"), p
    except UnicodeDecodeError as exc:
        raise _bad("UTF8-string", pos, f"invalid UTF-8 ({exc.reason})") from None


_F32 = struct.Struct(">f")
_U32 = struct.Struct(">I")
_F64 = struct.Struct(">d")
_U64 = struct.Struct(">Q")


def _dec_float32(buf: bytes, pos: int, depth: int = 0) -> tuple[float, int]:
    if pos + 4 > len(buf):
        raise _short("float32", pos, 4, buf)
    bits = _U32.unpack_from(buf, pos)[0]
    if bits & 0x7F800000 == 0x7F800000 and bits & 0x7FFFFF:
        # a NaN: widen by hand, since the C conversion float -> double sets the quiet bit of a
        # signalling NaN and the value would not re-encode to the same 4 bytes
        b64 = ((bits >> 31) << 63) | (0x7FF << 52) | ((bits & 0x7FFFFF) << 29)
        return _F64.unpack(_U64.pack(b64))[0], pos + 4
    return _F32.unpack_from(buf, pos)[0], pos + 4


def _dec_road(buf: bytes, pos: int, depth: int = 0) -> tuple[Road, int]:
    if pos + 4 > len(buf):
        raise _short("ROAD", pos, 4, buf)
    oad = _U32.unpack_from(buf, pos)[0]
    n, p = _count(buf, pos + 4, "ROAD", 4)
    return Road(oad, struct.unpack_from(f">{n}I", buf, p)), p + 4 * n


def _dec_ti(buf: bytes, pos: int, depth: int = 0) -> tuple[TI, int]:
    if pos + 3 > len(buf):
        raise _short("TI", pos, 3, buf)
    unit = buf[pos]
    if unit > 5:
        raise _bad("TI", pos, f"unit {unit} (0-5)")
    return TI(unit, (buf[pos + 1] << 8) | buf[pos + 2]), pos + 3


def _dec_tsa(buf: bytes, pos: int, depth: int = 0) -> tuple[bytes, int]:
    raw, p = _octets(buf, pos, "TSA")
    # TSA ::= octet-string(SIZE(2..17)): flag byte (bits 0-3 = address length - 1) + address
    if len(raw) < 2 or len(raw) != (raw[0] & 0x0F) + 2:
        raise _bad("TSA", pos, f"length {len(raw)} for address flag "
                               f"{raw[0] if raw else 0:#04x}")
    return raw, p


def _dec_mac(buf: bytes, pos: int, depth: int = 0) -> tuple[bytes, int]:
    return _octets(buf, pos, "MAC")


def _dec_rn(buf: bytes, pos: int, depth: int = 0) -> tuple[bytes, int]:
    return _octets(buf, pos, "RN")


def _dec_region(buf: bytes, pos: int, depth: int = 0) -> tuple[Region, int]:
    if pos >= len(buf):
        raise _short("Region", pos, 1, buf)
    unit = buf[pos]
    if unit > 3:
        raise _bad("Region", pos, f"unit {unit} (0-3)")
    if depth >= MAX_DEPTH:
        raise _bad("Region", pos, f"nesting deeper than {MAX_DEPTH}")
    start, p = decode_data(buf, pos + 1, depth + 1)
    end, p = decode_data(buf, p, depth + 1)
    return Region(unit, start, end), p


def _dec_scaler_unit(buf: bytes, pos: int, depth: int = 0) -> tuple[ScalerUnit, int]:
    if pos + 2 > len(buf):
        raise _short("Scaler_Unit", pos, 2, buf)
    s = buf[pos]
    return ScalerUnit(s - 256 if s > 127 else s, buf[pos + 1]), pos + 2


# MS choices 5, 6, 7 are regions of user types (unsigned), addresses (TSA), configuration numbers
# (long-unsigned): the bounds of each Region have that type (clause 7.3, MS)
_MS_REGION = {5: UNSIGNED, 6: TSA, 7: LONG_UNSIGNED}


def _dec_ms(buf: bytes, pos: int, depth: int = 0) -> tuple[MS, int]:
    if pos >= len(buf):
        raise _short("MS", pos, 1, buf)
    c = buf[pos]
    p = pos + 1
    if c <= 1:
        return MS(c, None), p
    if c == 2:
        n, p = _count(buf, p, "MS", 1)
        return MS(2, tuple(buf[p:p + n])), p + n
    if c == 3:
        n, p = _count(buf, p, "MS", 3)
        out = []
        for _ in range(n):
            t, p = _dec_tsa(buf, p)
            out.append(t)
        return MS(3, tuple(out)), p
    if c == 4:
        n, p = _count(buf, p, "MS", 2)
        return MS(4, struct.unpack_from(f">{n}H", buf, p)), p + 2 * n
    if c <= 7:
        n, p = _count(buf, p, "MS", 3)
        regions: list[Region] = []
        want = _MS_REGION[c]
        for _ in range(n):
            q = p
            r, p = _dec_region(buf, p, depth)
            if r.start.tag != want or r.end.tag != want:
                raise _bad("MS", q, f"region of {_name(r.start.tag)}..{_name(r.end.tag)} in choice {c} "
                                    f"({_name(want)} bounds)")
            regions.append(r)
        return MS(c, tuple(regions)), p
    raise _bad("MS", pos, f"choice {c} (0-7)")


_dts = _record(DateTimeS, ">HBBBBB", DATE_TIME_S)


def _dec_selector2(buf: bytes, pos: int, depth: int) -> tuple[Selector2, int]:
    if pos + 4 > len(buf):
        raise _short("RSD", pos, 4, buf)
    oad = _U32.unpack_from(buf, pos)[0]
    a, p = decode_data(buf, pos + 4, depth + 1)
    b, p = decode_data(buf, p, depth + 1)
    c, p = decode_data(buf, p, depth + 1)
    return Selector2(oad, a, b, c), p


def _dec_rsd(buf: bytes, pos: int, depth: int = 0) -> tuple[RSD, int]:
    if pos >= len(buf):
        raise _short("RSD", pos, 1, buf)
    s = buf[pos]
    p = pos + 1
    if depth >= MAX_DEPTH:
        raise _bad("RSD", pos, f"nesting deeper than {MAX_DEPTH}")
    if s == 0:
        return RSD(0, None), p
    if s == 1:
        if p + 4 > len(buf):
            raise _short("RSD", p, 4, buf)
        v, e = decode_data(buf, p + 4, depth + 1)
        return RSD(1, Selector1(_U32.unpack_from(buf, p)[0], v)), e
    if s == 2:
        sel, p = _dec_selector2(buf, p, depth)
        return RSD(2, sel), p
    if s == 3:
        n, p = _count(buf, p, "RSD", 7)
        out = []
        for _ in range(n):
            sel, p = _dec_selector2(buf, p, depth)
            out.append(sel)
        return RSD(3, tuple(out)), p
    if s <= 5:
        t, p = _dts(buf, p)
        ms, p = _dec_ms(buf, p, depth)
        return RSD(s, SelectorTime(t, ms)), p
    if s <= 8:
        a, p = _dts(buf, p)
        b, p = _dts(buf, p)
        ti, p = _dec_ti(buf, p)
        ms, p = _dec_ms(buf, p, depth)
        return RSD(s, SelectorRange(a, b, ti, ms)), p
    if s == 9:
        if p >= len(buf):
            raise _short("RSD", p, 1, buf)
        return RSD(9, buf[p]), p + 1
    if s == 10:
        if p >= len(buf):
            raise _short("RSD", p, 1, buf)
        ms, e = _dec_ms(buf, p + 1, depth)
        return RSD(10, SelectorLast(buf[p], ms)), e
    raise _bad("RSD", pos, f"selector {s} (0-10)")


def _dec_csd(buf: bytes, pos: int, depth: int = 0) -> tuple[int | Road, int]:
    if pos >= len(buf):
        raise _short("CSD", pos, 1, buf)
    c = buf[pos]
    if c == 0:
        if pos + 5 > len(buf):
            raise _short("CSD", pos + 1, 4, buf)
        return _U32.unpack_from(buf, pos + 1)[0], pos + 5
    if c == 1:
        return _dec_road(buf, pos + 1)
    raise _bad("CSD", pos, f"choice {c} (0 OAD, 1 ROAD)")


def _dec_sid(buf: bytes, pos: int, depth: int = 0) -> tuple[SID, int]:
    if pos + 4 > len(buf):
        raise _short("SID", pos, 4, buf)
    extra, p = _octets(buf, pos + 4, "SID")
    return SID(_U32.unpack_from(buf, pos)[0], extra), p


def _dec_sid_mac(buf: bytes, pos: int, depth: int = 0) -> tuple[SIDMAC, int]:
    sid, p = _dec_sid(buf, pos)
    mac, p = _octets(buf, p, "SID_MAC")
    return SIDMAC(sid, mac), p


# each field's enumeration (DL/T 698.45 clause 7.3, COMDCB)
_COMDCB_OK = (frozenset([*range(11), 255]), frozenset(range(3)), frozenset(range(5, 9)),
              frozenset((1, 2)), frozenset(range(3)))


def _dec_comdcb(buf: bytes, pos: int, depth: int = 0) -> tuple[COMDCB, int]:
    if pos + 5 > len(buf):
        raise _short("COMDCB", pos, 5, buf)
    v = COMDCB._make(buf[pos:pos + 5])
    for i, ok in enumerate(_COMDCB_OK):
        if v[i] not in ok:
            raise _bad("COMDCB", pos + i, f"{COMDCB._fields[i]} {v[i]}")
    return v, pos + 5


def _dec_rcsd(buf: bytes, pos: int, depth: int = 0) -> tuple[tuple[int | Road, ...], int]:
    n, p = _count(buf, pos, "RCSD", 5)
    out = []
    for _ in range(n):
        v, p = _dec_csd(buf, p)
        out.append(v)
    return tuple(out), p


_DEC: dict[int, Decoder] = {
    NULL: _dec_null, ARRAY: _dec_seq, STRUCTURE: _dec_structure, BOOL: _dec_bool,
    BIT_STRING: _dec_bit_string, DOUBLE_LONG: _fixed(">i", DOUBLE_LONG),
    DOUBLE_LONG_UNSIGNED: _fixed(">I", DOUBLE_LONG_UNSIGNED), OCTET_STRING: _dec_octet_string,
    VISIBLE_STRING: _dec_visible_string, UTF8_STRING: _dec_utf8_string, INTEGER: _fixed(">b", INTEGER),
    LONG: _fixed(">h", LONG), UNSIGNED: _fixed(">B", UNSIGNED), LONG_UNSIGNED: _fixed(">H", LONG_UNSIGNED),
    LONG64: _fixed(">q", LONG64), LONG64_UNSIGNED: _fixed(">Q", LONG64_UNSIGNED), ENUM: _fixed(">B", ENUM),
    FLOAT32: _dec_float32, FLOAT64: _fixed(">d", FLOAT64),
    DATE_TIME: _record(DateTime, ">HBBBBBBH", DATE_TIME), DATE: _record(Date, ">HBBB", DATE),
    TIME: _record(Time, ">BBB", TIME), DATE_TIME_S: _dts,
    OI: _fixed(">H", OI), OAD: _fixed(">I", OAD), ROAD: _dec_road, OMD: _fixed(">I", OMD), T_TI: _dec_ti,
    TSA: _dec_tsa, MAC: _dec_mac, RN: _dec_rn, REGION: _dec_region, SCALER_UNIT: _dec_scaler_unit,
    T_RSD: _dec_rsd, CSD: _dec_csd, T_MS: _dec_ms, T_SID: _dec_sid, SID_MAC: _dec_sid_mac, T_COMDCB: _dec_comdcb,
    RCSD: _dec_rcsd,
}


def _as_bytes(buf: bytes, pos: int) -> bytes:
    if pos < 0:
        raise LocalProtocolError(f"A-XDR: negative position {pos}")
    return buf if type(buf) is bytes else bytes(buf)


def decode_data(buf: bytes, pos: int = 0, depth: int = 0) -> tuple[Data, int]:
    """One tagged Data at ``buf[pos]``: ``(Data, end)``."""
    if depth == 0:
        buf = _as_bytes(buf, pos)
    if pos >= len(buf):
        raise _short("Data", pos, 1, buf)
    tag = buf[pos]
    dec = _DEC.get(tag)
    if dec is None:
        raise _bad("Data", pos, f"unknown type tag {tag}")
    v, p = dec(buf, pos + 1, depth)
    return Data(tag, v), p


def decode_typed(tag: int, buf: bytes, pos: int = 0) -> tuple[Any, int]:
    """The bare (untagged) value of type ``tag`` at ``buf[pos]``: ``(value, end)``."""
    dec = _DEC.get(tag) if type(tag) is not bool and isinstance(tag, int) else None
    if dec is None:
        raise LocalProtocolError(f"A-XDR: no type with tag {tag}")
    return dec(_as_bytes(buf, pos), pos, 0)


def decode_row(buf: bytes, pos: int, n: int) -> tuple[tuple[Data, ...], int]:
    """``n`` Data one after the other, without a count (A-RecordRow): ``(tuple, end)``."""
    buf = _as_bytes(buf, pos)
    if n < 0:
        raise LocalProtocolError(f"A-XDR: negative column count {n}")
    if n > len(buf) - pos:
        raise _short("record row", pos, n, buf)
    out = []
    for _ in range(n):
        v, pos = decode_data(buf, pos, 1)
        out.append(v)
    return tuple(out), pos


def decode_rows(buf: bytes, pos: int, n: int) -> tuple[tuple[tuple[Data, ...], ...], int]:
    """SEQUENCE OF A-RecordRow of ``n`` columns each: ``(tuple of rows, end)``."""
    buf = _as_bytes(buf, pos)
    m, p = _count(buf, pos, "record rows", max(n, 1))
    out = []
    for _ in range(m):
        row, p = decode_row(buf, p, n)
        out.append(row)
    return tuple(out), p


# --- encoding --------------------------------------------------------------------------------------
def encode_length(n: int) -> bytes:
    """The A-XDR length of ``n``: minimal, one byte below 80H."""
    if not isinstance(n, int) or n < 0 or n > 0xFFFFFFFF:
        raise _local("length", f"{n!r} (0..4294967295)")
    if n < 0x80:
        return bytes((n,))
    k = (n.bit_length() + 7) >> 3
    return bytes((0x80 | k,)) + n.to_bytes(k, "big")


def _int(v: object, lo: int, hi: int, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise _local(what, f"{type(v).__name__} {v!r} (an int is needed)")
    if not lo <= v <= hi:
        raise _local(what, f"{v} (range {lo}..{hi})")
    return v


def _bytes(v: object, what: str) -> bytes:
    if not isinstance(v, (bytes, bytearray, memoryview)):
        raise _local(what, f"{type(v).__name__} (bytes needed)")
    return bytes(v)


def _int_encoder(fmt: str, tag: int) -> Encoder:
    st = struct.Struct(fmt)
    pack, what = st.pack, _name(tag)
    size = st.size
    signed = fmt[-1].islower() and fmt[-1] != "d"
    lo, hi = (-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if signed else (0, (1 << (8 * size)) - 1)

    def enc(v: Any, out: list[bytes], depth: int) -> None:
        out.append(pack(_int(v, lo, hi, what)))
    return enc


def _tuple_encoder(cls: Any, fmt: str, tag: int) -> Encoder:
    st = struct.Struct(fmt)
    pack, what = st.pack, _name(tag)
    codes = fmt[1:]
    ranges = [(0, 0xFFFF) if c == "H" else (0, 0xFF) for c in codes]

    def enc(v: Any, out: list[bytes], depth: int) -> None:
        if not isinstance(v, tuple) or len(v) != len(codes):
            raise _local(what, f"{v!r} (a {cls.__name__} of {len(codes)} fields is needed)")
        out.append(pack(*(_int(x, lo, hi, f"{what} {f}") for x, (lo, hi), f in zip(v, ranges, cls._fields))))
    return enc


def _seq(v: object, what: str) -> tuple[Any, ...] | list[Any]:
    if not isinstance(v, (tuple, list)):
        raise _local(what, f"{type(v).__name__} (a tuple or list is needed)")
    if len(v) > MAX_ELEMENTS:
        raise _local(what, f"{len(v)} elements (at most {MAX_ELEMENTS})")
    return v


def _enc_null(v: Any, out: list[bytes], depth: int) -> None:
    if v is not None:
        raise _local("null", f"{v!r} (None is needed)")


def _enc_seq_of(what: str) -> Encoder:
    def enc(v: Any, out: list[bytes], depth: int) -> None:
        if depth >= MAX_DEPTH:
            raise _local(what, f"nesting deeper than {MAX_DEPTH}")
        v = _seq(v, what)
        out.append(encode_length(len(v)))
        for x in v:
            _enc_data(x, out, depth + 1)
    return enc


def _enc_bool(v: Any, out: list[bytes], depth: int) -> None:
    if v is not True and v is not False and v not in (0, 1):
        raise _local("bool", f"{v!r} (True or False)")
    out.append(b"\x01" if v else b"\x00")


def _enc_bit_string(v: Any, out: list[bytes], depth: int) -> None:
    if not isinstance(v, tuple) or len(v) != 2:
        raise _local("bit-string", f"{v!r} (a BitString is needed)")
    bits, data = v
    data = _bytes(data, "bit-string")
    if not isinstance(bits, int) or bits < 0 or len(data) != (bits + 7) >> 3:
        raise _local("bit-string", f"{bits!r} bits in {len(data)} bytes")
    out.append(encode_length(bits))
    out.append(data)


def _octets_encoder(what: str, lo: int = 0, hi: int = 0xFFFFFFFF) -> Encoder:
    def enc(v: Any, out: list[bytes], depth: int) -> None:
        b = _bytes(v, what)
        if not lo <= len(b) <= hi:
            raise _local(what, f"{len(b)} bytes ({lo}..{hi})")
        out.append(encode_length(len(b)))
        out.append(b)
    return enc


def _string_encoder(what: str, codec: str) -> Encoder:
    def enc(v: Any, out: list[bytes], depth: int) -> None:
        if not isinstance(v, str):
            raise _local(what, f"{type(v).__name__} (str needed)")
        try:
            b = v.encode(codec)
        except UnicodeEncodeError as exc:
            raise _local(what, f"{v[exc.start:exc.end]!r} in {codec}") from None
        out.append(encode_length(len(b)))
        out.append(b)
    return enc


def _enc_float32(v: Any, out: list[bytes], depth: int) -> None:
    if not isinstance(v, (float, int)) or isinstance(v, bool):
        raise _local("float32", f"{type(v).__name__} (float needed)")
    v = float(v)
    if math.isnan(v):
        # the bits a decoded float32 NaN was widened to, narrowed back (see _dec_float32); a NaN whose
        # payload lies only in the low 29 bits becomes the quiet NaN of its sign
        b64 = _U64.unpack(_F64.pack(v))[0]
        m = (b64 >> 29) & 0x7FFFFF or 0x400000
        out.append(_U32.pack(((b64 >> 63) << 31) | 0x7F800000 | m))
        return
    try:
        out.append(_F32.pack(v))
    except OverflowError:
        raise _local("float32", f"{v!r} (beyond float32)") from None


def _enc_float64(v: Any, out: list[bytes], depth: int) -> None:
    if not isinstance(v, (float, int)) or isinstance(v, bool):
        raise _local("float64", f"{type(v).__name__} (float needed)")
    out.append(_F64.pack(float(v)))


def _enc_road(v: Any, out: list[bytes], depth: int) -> None:
    if not isinstance(v, tuple) or len(v) != 2:
        raise _local("ROAD", f"{v!r} (a Road is needed)")
    oad, oads = v
    oads = _seq(oads, "ROAD")
    out.append(_U32.pack(_int(oad, 0, 0xFFFFFFFF, "ROAD OAD")))
    out.append(encode_length(len(oads)))
    for x in oads:
        out.append(_U32.pack(_int(x, 0, 0xFFFFFFFF, "ROAD OAD")))


def _fields(v: object, cls: Any, what: str) -> tuple[Any, ...]:
    if not isinstance(v, tuple) or len(v) != len(cls._fields):
        raise _local(what, f"{v!r} (a {cls.__name__} is needed)")
    return v


def _enc_ti(v: Any, out: list[bytes], depth: int) -> None:
    unit, interval = _fields(v, TI, "TI")
    out.append(bytes((_int(unit, 0, 5, "TI unit"),)) + _int(interval, 0, 0xFFFF, "TI interval").to_bytes(2, "big"))


def _enc_tsa(v: Any, out: list[bytes], depth: int) -> None:
    b = _bytes(v, "TSA")
    if len(b) < 2 or len(b) != (b[0] & 0x0F) + 2:
        raise _local("TSA", f"{b.hex()} (flag byte + (flag & 0FH) + 1 address bytes)")
    out.append(encode_length(len(b)))
    out.append(b)


def _enc_region(v: Any, out: list[bytes], depth: int) -> None:
    unit, start, end = _fields(v, Region, "Region")
    if depth >= MAX_DEPTH:
        raise _local("Region", f"nesting deeper than {MAX_DEPTH}")
    out.append(bytes((_int(unit, 0, 3, "Region unit"),)))
    _enc_data(start, out, depth + 1)
    _enc_data(end, out, depth + 1)


def _enc_scaler_unit(v: Any, out: list[bytes], depth: int) -> None:
    s, u = _fields(v, ScalerUnit, "Scaler_Unit")
    out.append(bytes((_int(s, -128, 127, "Scaler_Unit scaler") & 0xFF, _int(u, 0, 255, "Scaler_Unit unit"))))


def _enc_ms(v: Any, out: list[bytes], depth: int) -> None:
    c, val = _fields(v, MS, "MS")
    _int(c, 0, 7, "MS choice")
    out.append(bytes((c,)))
    if c <= 1:
        if val is not None:
            raise _local("MS", f"choice {c} with a value {val!r} (None)")
        return
    val = _seq(val, "MS")
    out.append(encode_length(len(val)))
    for x in val:
        if c == 2:
            out.append(bytes((_int(x, 0, 255, "MS user type"),)))
        elif c == 3:
            _enc_tsa(x, out, depth)
        elif c == 4:
            out.append(_int(x, 0, 0xFFFF, "MS number").to_bytes(2, "big"))
        else:
            _enc_region(x, out, depth)
            if x[1][0] != _MS_REGION[c] or x[2][0] != _MS_REGION[c]:
                raise _local("MS", f"region {x!r} in choice {c} ({_name(_MS_REGION[c])} bounds)")


_enc_dts = _tuple_encoder(DateTimeS, ">HBBBBB", DATE_TIME_S)


def _enc_selector2(v: Any, out: list[bytes], depth: int) -> None:
    oad, a, b, c = _fields(v, Selector2, "RSD selector 2")
    out.append(_U32.pack(_int(oad, 0, 0xFFFFFFFF, "RSD OAD")))
    for x in (a, b, c):
        _enc_data(x, out, depth + 1)


def _enc_rsd(v: Any, out: list[bytes], depth: int) -> None:
    s, val = _fields(v, RSD, "RSD")
    _int(s, 0, 10, "RSD selector")
    if depth >= MAX_DEPTH:
        raise _local("RSD", f"nesting deeper than {MAX_DEPTH}")
    out.append(bytes((s,)))
    if s == 0:
        if val is not None:
            raise _local("RSD", f"selector 0 with a value {val!r} (None)")
    elif s == 1:
        oad, d = _fields(val, Selector1, "RSD selector 1")
        out.append(_U32.pack(_int(oad, 0, 0xFFFFFFFF, "RSD OAD")))
        _enc_data(d, out, depth + 1)
    elif s == 2:
        _enc_selector2(val, out, depth)
    elif s == 3:
        val = _seq(val, "RSD selector 3")
        out.append(encode_length(len(val)))
        for x in val:
            _enc_selector2(x, out, depth)
    elif s <= 5:
        t, ms = _fields(val, SelectorTime, f"RSD selector {s}")
        _enc_dts(t, out, depth)
        _enc_ms(ms, out, depth)
    elif s <= 8:
        a, b, ti, ms = _fields(val, SelectorRange, f"RSD selector {s}")
        _enc_dts(a, out, depth)
        _enc_dts(b, out, depth)
        _enc_ti(ti, out, depth)
        _enc_ms(ms, out, depth)
    elif s == 9:
        out.append(bytes((_int(val, 0, 255, "RSD selector 9"),)))
    else:
        last, ms = _fields(val, SelectorLast, "RSD selector 10")
        out.append(bytes((_int(last, 0, 255, "RSD selector 10"),)))
        _enc_ms(ms, out, depth)


def _enc_csd(v: Any, out: list[bytes], depth: int) -> None:
    if isinstance(v, int) and not isinstance(v, bool):
        out.append(b"\x00" + _U32.pack(_int(v, 0, 0xFFFFFFFF, "CSD OAD")))
    else:
        out.append(b"\x01")
        _enc_road(v, out, depth)


def _enc_sid(v: Any, out: list[bytes], depth: int) -> None:
    ident, extra = _fields(v, SID, "SID")
    out.append(_U32.pack(_int(ident, 0, 0xFFFFFFFF, "SID identifier")))
    _ENC[OCTET_STRING](extra, out, depth)


def _enc_sid_mac(v: Any, out: list[bytes], depth: int) -> None:
    sid, mac = _fields(v, SIDMAC, "SID_MAC")
    _enc_sid(sid, out, depth)
    _ENC[OCTET_STRING](mac, out, depth)


def _enc_comdcb(v: Any, out: list[bytes], depth: int) -> None:
    v = _fields(v, COMDCB, "COMDCB")
    for x, ok, f in zip(v, _COMDCB_OK, COMDCB._fields):
        if not isinstance(x, int) or x not in ok:
            raise _local("COMDCB", f"{f} {x!r}")
    out.append(bytes(v))


def _enc_rcsd(v: Any, out: list[bytes], depth: int) -> None:
    v = _seq(v, "RCSD")
    out.append(encode_length(len(v)))
    for x in v:
        _enc_csd(x, out, depth)


_ENC: dict[int, Encoder] = {
    NULL: _enc_null, ARRAY: _enc_seq_of("array"), STRUCTURE: _enc_seq_of("structure"), BOOL: _enc_bool,
    BIT_STRING: _enc_bit_string, DOUBLE_LONG: _int_encoder(">i", DOUBLE_LONG),
    DOUBLE_LONG_UNSIGNED: _int_encoder(">I", DOUBLE_LONG_UNSIGNED),
    OCTET_STRING: _octets_encoder("octet-string"), VISIBLE_STRING: _string_encoder("visible-string", "latin-1"),
    UTF8_STRING: _string_encoder("UTF8-string", "utf-8"), INTEGER: _int_encoder(">b", INTEGER),
    LONG: _int_encoder(">h", LONG), UNSIGNED: _int_encoder(">B", UNSIGNED),
    LONG_UNSIGNED: _int_encoder(">H", LONG_UNSIGNED), LONG64: _int_encoder(">q", LONG64),
    LONG64_UNSIGNED: _int_encoder(">Q", LONG64_UNSIGNED), ENUM: _int_encoder(">B", ENUM),
    FLOAT32: _enc_float32, FLOAT64: _enc_float64,
    DATE_TIME: _tuple_encoder(DateTime, ">HBBBBBBH", DATE_TIME), DATE: _tuple_encoder(Date, ">HBBB", DATE),
    TIME: _tuple_encoder(Time, ">BBB", TIME), DATE_TIME_S: _enc_dts,
    OI: _int_encoder(">H", OI), OAD: _int_encoder(">I", OAD), ROAD: _enc_road, OMD: _int_encoder(">I", OMD),
    T_TI: _enc_ti, TSA: _enc_tsa, MAC: _octets_encoder("MAC"), RN: _octets_encoder("RN"), REGION: _enc_region,
    SCALER_UNIT: _enc_scaler_unit, T_RSD: _enc_rsd, CSD: _enc_csd, T_MS: _enc_ms, T_SID: _enc_sid,
    SID_MAC: _enc_sid_mac, T_COMDCB: _enc_comdcb, RCSD: _enc_rcsd,
}


def _enc_data(d: object, out: list[bytes], depth: int) -> None:
    if not isinstance(d, tuple) or len(d) != 2:
        raise _local("Data", f"{d!r} (a Data(tag, value) is needed)")
    tag, v = d
    enc = _ENC.get(tag) if isinstance(tag, int) else None
    if enc is None:
        raise _local("Data", f"unknown type tag {tag!r}")
    out.append(bytes((tag,)))
    enc(v, out, depth)


def encode_data(d: Data) -> bytes:
    """The bytes of one tagged Data (tag + bare encoding)."""
    out: list[bytes] = []
    _enc_data(d, out, 0)
    return b"".join(out)


def encode_typed(tag: int, value: object) -> bytes:
    """The bare (untagged) encoding of ``value`` as type ``tag``."""
    enc = _ENC.get(tag)
    if enc is None:
        raise LocalProtocolError(f"A-XDR: no type with tag {tag!r}")
    out: list[bytes] = []
    enc(value, out, 0)
    return b"".join(out)

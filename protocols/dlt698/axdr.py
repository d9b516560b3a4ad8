"""DL/T 698.45 data types (数据类型, clause 7.3 of DL/T 698.45-2017) in A-XDR: every type, both levels.

Two levels, as the APDUs use them:

* **Data** — the tagged CHOICE that GET-Response, REPORT-Notification, SET-Request... carry: one tag
  byte (:class:`Tag`) then the type's encoding.  Decoded as ``Data(tag, value)`` (a NamedTuple).
* **bare types** — an OAD in a GET-Request, the RSD and RCSD of a GET-Record, a TSA, a DAR (enum),
  a PIID (unsigned)...: the same encoding without the tag.  ``decode_<type>`` / ``encode_<type>``.

API (stable; ``buf`` is bytes, bytearray or memoryview, ``pos`` an index into it, ``end`` the index
just after what was decoded)::

    decode_data(buf, pos=0) -> (Data, end)          encode_data(data) -> bytes
    decode_row(buf, pos, n) -> (tuple[Data, ...], end)        n Data without a count (A-RecordRow)
    decode_rows(buf, pos, n) -> (tuple[tuple[Data, ...], ...], end)   SEQUENCE OF A-RecordRow
    decode_typed(tag, buf, pos=0) -> (value, end)   encode_typed(tag, value) -> bytes
    decode_<type>(buf, pos=0) -> (value, end)       encode_<type>(value) -> bytes
        <type> in: null array structure bool bit_string double_long double_long_unsigned
        octet_string visible_string utf8_string integer long unsigned long_unsigned long64
        long64_unsigned enum float32 float64 date_time date time date_time_s oi oad road omd ti tsa
        mac rn region scaler_unit rsd csd ms sid sid_mac comdcb rcsd, plus dar (= enum), piid (=
        unsigned)
    decode_length(buf, pos=0) -> (n, end)           encode_length(n) -> bytes
    to_json(data) -> JSON-able dict                 scaled(raw, scaler) -> exact decimal str
    make_oad(oi, attribute, index=0) -> int         split_oad(oad) -> (oi, attribute, index)

Python form of each value (a decoded value re-encodes to the same bytes; the tag travels with it):

    null None · array, structure: tuple of Data · bool bool · bit-string BitString(bits, data)
    integers (double-long ... long64-unsigned, enum, OI) int · float32, float64 float (a float32 NaN
    keeps its payload) · octet-string, MAC, RN, TSA (flag byte + address) bytes · visible-string str
    (Latin-1, one char per byte) · UTF8-string str · date_time DateTime(year, month, day, weekday,
    hour, minute, second, millisecond) · date Date(year, month, day, weekday) · time Time(hour,
    minute, second) · date_time_s DateTimeS(year, month, day, hour, minute, second) — FFH / FFFFH
    fields ("not specified") stay as they are · OAD, OMD int (OI << 16 | attribute << 8 | index) ·
    ROAD Road(oad, oads) · TI TI(unit, interval) · Region Region(unit, start: Data, end: Data) ·
    Scaler_Unit ScalerUnit(scaler, unit) · RSD RSD(selector, value) with value None (0),
    Selector1(oad, value) (1), Selector2(oad, start, end, interval) (2), tuple of Selector2 (3),
    SelectorTime(time, ms) (4, 5), SelectorRange(start, end, interval, ms) (6-8), int (9),
    SelectorLast(last, ms) (10) · MS MS(choice, value): None (0 none, 1 all), tuple of int (2 user
    types, 4 numbers), tuple of TSA bytes (3), tuple of Region (5-7) · CSD int (an OAD) or Road ·
    RCSD tuple of CSD · SID SID(identifier, additional) · SID_MAC SIDMAC(sid, mac) · COMDCB
    COMDCB(baud, parity, data_bits, stop_bits, flow_control).

Errors: bytes the standard does not allow (truncated, unknown tag, bad length, enum out of its
range, invalid UTF-8, nesting deeper than MAX_DEPTH, more than MAX_ELEMENTS in one sequence) raise
:class:`~protocols.errors.RemoteProtocolError` naming the type and the byte offset; a value that cannot
be encoded raises :class:`~protocols.errors.LocalProtocolError`.

The work is done by the kernel ``protocols._axdr`` (ext/_axdr.pyx) or its pure twin
``protocols._axdr_py``, chosen by :mod:`protocols.accel`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any, Protocol

from .. import accel
from .._axdr_py import (COMDCB, MAX_DEPTH, MAX_ELEMENTS, MS, RSD, SID, SIDMAC, TI, TYPE_NAMES, BitString,
                        Data, Date, DateTime, DateTimeS, Region, Road, ScalerUnit, Selector1, Selector2,
                        SelectorLast, SelectorRange, SelectorTime, Time)
from ..errors import LocalProtocolError

__all__ = [
    "Tag", "TYPE_NAMES", "MAX_DEPTH", "MAX_ELEMENTS",
    "Data", "BitString", "DateTime", "Date", "Time", "DateTimeS", "Road", "TI", "Region", "ScalerUnit",
    "RSD", "Selector1", "Selector2", "SelectorTime", "SelectorRange", "SelectorLast", "MS", "SID", "SIDMAC",
    "COMDCB",
    "decode_data", "encode_data", "decode_row", "decode_rows", "decode_typed", "encode_typed",
    "decode_length", "encode_length", "to_json", "scaled", "make_oad", "split_oad",
]

# the kernel, chosen once at import: the compiled _axdr unless GRIDHEAD_PUREPYTHON=1 or not built
if accel.PURE:
    from .. import _axdr_py as _k
else:
    try:
        # the stub _axdr.pyi has the twin's signatures, but mypy cannot bind one name to either of
        # two modules: the name keeps the twin's type
        from .. import _axdr as _k  # type: ignore[no-redef]
    except ImportError:
        from .. import _axdr_py as _k


class Tag(enum.IntEnum):
    """Data type tags, DL/T 698.45-2017 clause 7.3.1 (``Data ::= CHOICE``)."""

    NULL = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOL = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DATE_TIME_S = 28
    OI = 80
    OAD = 81
    ROAD = 82
    OMD = 83
    TI = 84
    TSA = 85
    MAC = 86
    RN = 87
    REGION = 88
    SCALER_UNIT = 89
    RSD = 90
    CSD = 91
    MS = 92
    SID = 93
    SID_MAC = 94
    COMDCB = 95
    RCSD = 96


# --- the two levels --------------------------------------------------------------------------------
def decode_data(buf: bytes, pos: int = 0) -> tuple[Data, int]:
    """One tagged Data at ``buf[pos]``: ``(Data, end)``."""
    return _k.decode_data(buf, pos)


def encode_data(data: Data) -> bytes:
    """The bytes of one tagged Data."""
    return _k.encode_data(data)  # noqa: F821


def decode_row(buf: bytes, pos: int, n: int) -> tuple[tuple[Data, ...], int]:
    """``n`` Data in a row with no count before them (A-RecordRow of an RCSD with ``n`` columns)."""
    return _k.decode_row(buf, pos, n)  # noqa: F821


def decode_rows(buf: bytes, pos: int, n: int) -> tuple[tuple[tuple[Data, ...], ...], int]:
    """SEQUENCE OF A-RecordRow: a count, then that many rows of ``n`` Data each."""
    return _k.decode_rows(buf, pos, n)  # noqa: F821


def decode_typed(tag: int, buf: bytes, pos: int = 0) -> tuple[Any, int]:
    """The bare value of type ``tag`` (no tag byte in ``buf``): ``(value, end)``."""
    return _k.decode_typed(tag, buf, pos)  # noqa: F821


def encode_typed(tag: int, value: object) -> bytes:
    """The bare encoding (no tag byte) of ``value`` as type ``tag``."""
    return _k.encode_typed(tag, value)  # noqa: F821


def decode_length(buf: bytes, pos: int = 0) -> tuple[int, int]:
    """An A-XDR length (element, byte or bit count): ``(n, end)``."""
    return _k.decode_length(buf, pos)  # noqa: F821


def encode_length(n: int) -> bytes:
    """The minimal A-XDR encoding of the length ``n``."""
    return _k.encode_length(n)  # noqa: F821


class BareDecoder(Protocol):
    """``decode_<type>(buf, pos=0) -> (value, end)``."""

    def __call__(self, buf: bytes, pos: int = 0, /) -> tuple[Any, int]: ...


def _bare(tag: int) -> tuple[BareDecoder, Callable[[object], bytes]]:
    def dec(buf: bytes, pos: int = 0) -> tuple[Any, int]:
        return _k.decode_typed(tag, buf, pos)  # noqa: F821

    def enc(value: object) -> bytes:
        return _k.encode_typed(tag, value)  # noqa: F821

    name = TYPE_NAMES[tag]
    dec.__doc__ = f"The bare {name} at ``buf[pos]``: ``(value, end)``."
    enc.__doc__ = f"The bare encoding of a {name}."
    return dec, enc


decode_null, encode_null = _bare(Tag.NULL)
decode_array, encode_array = _bare(Tag.ARRAY)
decode_structure, encode_structure = _bare(Tag.STRUCTURE)
decode_bool, encode_bool = _bare(Tag.BOOL)
decode_bit_string, encode_bit_string = _bare(Tag.BIT_STRING)
decode_double_long, encode_double_long = _bare(Tag.DOUBLE_LONG)
decode_double_long_unsigned, encode_double_long_unsigned = _bare(Tag.DOUBLE_LONG_UNSIGNED)
decode_octet_string, encode_octet_string = _bare(Tag.OCTET_STRING)
decode_visible_string, encode_visible_string = _bare(Tag.VISIBLE_STRING)
decode_utf8_string, encode_utf8_string = _bare(Tag.UTF8_STRING)
decode_integer, encode_integer = _bare(Tag.INTEGER)
decode_long, encode_long = _bare(Tag.LONG)
decode_unsigned, encode_unsigned = _bare(Tag.UNSIGNED)
decode_long_unsigned, encode_long_unsigned = _bare(Tag.LONG_UNSIGNED)
decode_long64, encode_long64 = _bare(Tag.LONG64)
decode_long64_unsigned, encode_long64_unsigned = _bare(Tag.LONG64_UNSIGNED)
decode_enum, encode_enum = _bare(Tag.ENUM)
decode_float32, encode_float32 = _bare(Tag.FLOAT32)
decode_float64, encode_float64 = _bare(Tag.FLOAT64)
decode_date_time, encode_date_time = _bare(Tag.DATE_TIME)
decode_date, encode_date = _bare(Tag.DATE)
decode_time, encode_time = _bare(Tag.TIME)
decode_date_time_s, encode_date_time_s = _bare(Tag.DATE_TIME_S)
decode_oi, encode_oi = _bare(Tag.OI)
decode_oad, encode_oad = _bare(Tag.OAD)
decode_road, encode_road = _bare(Tag.ROAD)
decode_omd, encode_omd = _bare(Tag.OMD)
decode_ti, encode_ti = _bare(Tag.TI)
decode_tsa, encode_tsa = _bare(Tag.TSA)
decode_mac, encode_mac = _bare(Tag.MAC)
decode_rn, encode_rn = _bare(Tag.RN)
decode_region, encode_region = _bare(Tag.REGION)
decode_scaler_unit, encode_scaler_unit = _bare(Tag.SCALER_UNIT)
decode_rsd, encode_rsd = _bare(Tag.RSD)
decode_csd, encode_csd = _bare(Tag.CSD)
decode_ms, encode_ms = _bare(Tag.MS)
decode_sid, encode_sid = _bare(Tag.SID)
decode_sid_mac, encode_sid_mac = _bare(Tag.SID_MAC)
decode_comdcb, encode_comdcb = _bare(Tag.COMDCB)
decode_rcsd, encode_rcsd = _bare(Tag.RCSD)
# DAR ::= ENUMERATED and PIID / PIID-ACD ::= unsigned (clause 7.3): the same bytes, named for the APDUs
decode_dar, encode_dar = decode_enum, encode_enum
decode_piid, encode_piid = decode_unsigned, encode_unsigned


# --- helpers ---------------------------------------------------------------------------------------
def make_oad(oi: int, attribute: int, index: int = 0) -> int:
    """The OAD ``oi``-``attribute``-``index`` as the int the codec uses (e.g. 0x00100200)."""
    if not (0 <= oi <= 0xFFFF and 0 <= attribute <= 0xFF and 0 <= index <= 0xFF):
        raise LocalProtocolError(f"OAD: cannot encode oi={oi!r} attribute={attribute!r} index={index!r}")
    return (oi << 16) | (attribute << 8) | index


def split_oad(oad: int) -> tuple[int, int, int]:
    """``(oi, attribute, index)`` of an OAD; the attribute byte keeps its feature bits 5-7."""
    return oad >> 16, (oad >> 8) & 0xFF, oad & 0xFF


def scaled(raw: int, scaler: int | ScalerUnit) -> str:
    """``raw`` × 10^``scaler`` as an exact decimal string: ``scaled(123456, -2) == "1234.56"``.

    ``scaler`` is an int or a :class:`ScalerUnit`.  Integer arithmetic only (energy is never a float
    here): a negative scaler places the decimal point, a positive one appends zeros.
    """
    if isinstance(scaler, ScalerUnit):
        scaler = scaler.scaler
    if scaler >= 0:
        return str(raw * 10 ** scaler)
    digits = str(abs(raw)).rjust(-scaler + 1, "0")
    sign = "-" if raw < 0 else ""
    return f"{sign}{digits[:scaler]}.{digits[scaler:]}"


_TI_UNITS = ("s", "min", "h", "day", "month", "year")
_REGION_UNITS = ("[start,end)", "(start,end]", "[start,end]", "(start,end)")


def _hex(b: bytes) -> str:
    return bytes(b).hex().upper()


def _f(x: int, width: int) -> str:
    # FFH / FFFFH is "not specified" in the date types: shown as such, not as a number
    return "F" * width if x == (1 << (4 * width)) - 1 else f"{x:0{width}d}"


def _float(x: float) -> float | str:
    return x if math.isfinite(x) else repr(x)


def _road(r: Road) -> dict[str, Any]:
    return {"oad": f"{r.oad:08X}", "oads": [f"{o:08X}" for o in r.oads]}


def _csd(c: int | Road) -> object:
    return f"{c:08X}" if isinstance(c, int) else _road(c)


def _dts(t: DateTimeS) -> str:
    return f"{_f(t.year, 4)}-{_f(t.month, 2)}-{_f(t.day, 2)} {_f(t.hour, 2)}:{_f(t.minute, 2)}:{_f(t.second, 2)}"


def _ms(m: MS) -> dict[str, Any]:
    out: dict[str, Any] = {"choice": m.choice}
    value: Any = m.value  # its type depends on the choice (clause 7.3, MS)
    if m.choice in (3,):
        out["value"] = [_hex(t) for t in value]
    elif m.choice >= 5:
        out["value"] = [_region(r) for r in value]
    elif value is not None:
        out["value"] = list(value)
    return out


def _region(r: Region) -> dict[str, Any]:
    return {"unit": r.unit, "interval": _REGION_UNITS[r.unit], "start": to_json(r.start), "end": to_json(r.end)}


def _rsd(r: RSD) -> dict[str, Any]:
    v: Any  # its type depends on the selector (clause 7.3, RSD)
    s, v = r
    out: dict[str, Any] = {"selector": s}
    if s == 1:
        out.update(oad=f"{v.oad:08X}", value=to_json(v.value))
    elif s == 2:
        out.update(_sel2(v))
    elif s == 3:
        out["ranges"] = [_sel2(x) for x in v]
    elif s in (4, 5):
        out.update(time=_dts(v.time), ms=_ms(v.ms))
    elif s in (6, 7, 8):
        out.update(start=_dts(v.start), end=_dts(v.end), interval=_ti(v.interval), ms=_ms(v.ms))
    elif s == 9:
        out["last"] = v
    elif s == 10:
        out.update(last=v.last, ms=_ms(v.ms))
    return out


def _sel2(v: Selector2) -> dict[str, Any]:
    return {"oad": f"{v.oad:08X}", "start": to_json(v.start), "end": to_json(v.end),
            "interval": to_json(v.interval)}


def _ti(t: TI) -> dict[str, Any]:
    return {"unit": _TI_UNITS[t.unit], "interval": t.interval}


def _json_value(tag: int, v: Any) -> object:  # v: the value of a Data of type tag
    if tag in (Tag.ARRAY, Tag.STRUCTURE):
        return [to_json(x) for x in v]
    if tag in (Tag.OCTET_STRING, Tag.MAC, Tag.RN, Tag.TSA):
        return _hex(v)
    if tag == Tag.BIT_STRING:
        return "".join(f"{b:08b}" for b in v.data)[:v.bits]
    if tag in (Tag.FLOAT32, Tag.FLOAT64):
        return _float(v)
    if tag == Tag.DATE_TIME:
        return (f"{_f(v.year, 4)}-{_f(v.month, 2)}-{_f(v.day, 2)} {_f(v.hour, 2)}:{_f(v.minute, 2)}:"
                f"{_f(v.second, 2)}.{'FFFF' if v.millisecond == 0xFFFF else f'{v.millisecond:03d}'}")
    if tag == Tag.DATE:
        return f"{_f(v.year, 4)}-{_f(v.month, 2)}-{_f(v.day, 2)}"
    if tag == Tag.TIME:
        return f"{_f(v.hour, 2)}:{_f(v.minute, 2)}:{_f(v.second, 2)}"
    if tag == Tag.DATE_TIME_S:
        return _dts(v)
    if tag == Tag.OI:
        return f"{v:04X}"
    if tag in (Tag.OAD, Tag.OMD):
        return f"{v:08X}"
    if tag == Tag.ROAD:
        return _road(v)
    if tag == Tag.TI:
        return _ti(v)
    if tag == Tag.REGION:
        return _region(v)
    if tag == Tag.SCALER_UNIT:
        return {"scaler": v.scaler, "unit": v.unit}
    if tag == Tag.RSD:
        return _rsd(v)
    if tag == Tag.CSD:
        return _csd(v)
    if tag == Tag.RCSD:
        return [_csd(c) for c in v]
    if tag == Tag.MS:
        return _ms(v)
    if tag == Tag.SID:
        return {"identifier": f"{v.identifier:08X}", "additional": _hex(v.additional)}
    if tag == Tag.SID_MAC:
        return {"identifier": f"{v.sid.identifier:08X}", "additional": _hex(v.sid.additional),
                "mac": _hex(v.mac)}
    if tag == Tag.COMDCB:
        return v._asdict()
    return v   # None, bool, int, str


def to_json(data: Data) -> dict[str, Any]:
    """A decoded Data as JSON-able Python: ``{"type": "double-long-unsigned", "value": 123456}``.

    Integers stay integers (scale them with :func:`scaled`), byte strings are upper-case hex, dates
    are ``YYYY-MM-DD hh:mm:ss`` with ``FF`` for unspecified fields, OADs are 8 hex digits.
    """
    v: Any  # its type depends on the tag
    tag, v = data
    out: dict[str, Any] = {"type": TYPE_NAMES.get(tag, str(tag)), "value": _json_value(tag, v)}
    if tag == Tag.DATE_TIME or tag == Tag.DATE:
        out["weekday"] = v.weekday
    return out

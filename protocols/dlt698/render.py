"""DL/T 698.45 APDUs as plain JSON: OADs named from the object registry, numbers scaled exactly.

A number whose attribute has a scaler (换算, DL/T 698.45 appendix E) is shown as
``{"value": "1234.56", "raw": 123456, "scaler": -2, "unit": "kWh"}``: the decimal string is exact (an
integer shifted by the scaler, never a float), the raw integer and its scaler are kept beside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import dar as _dar
from . import objects
from ._codec import ABSENT, date_time_s_text, date_time_text

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from .apdu import Apdu, ResultNormal, ResultRecord
    from .axdr import Road

_INT_TAGS = frozenset((5, 6, 15, 16, 17, 18, 20, 21))
TYPE_NAMES = {
    0: "null", 1: "array", 2: "structure", 3: "bool", 4: "bit-string", 5: "double-long",
    6: "double-long-unsigned", 9: "octet-string", 10: "visible-string", 12: "UTF8-string", 15: "integer",
    16: "long", 17: "unsigned", 18: "long-unsigned", 20: "long64", 21: "long64-unsigned", 22: "enum",
    23: "float32", 24: "float64", 25: "date_time", 26: "date", 27: "time", 28: "date_time_s", 80: "OI",
    81: "OAD", 82: "ROAD", 83: "OMD", 84: "TI", 85: "TSA", 86: "MAC", 87: "RN", 88: "Region",
    89: "Scaler_Unit", 90: "RSD", 91: "CSD", 92: "MS", 93: "SID", 94: "SID_MAC", 95: "COMDCB", 96: "RCSD",
}


def scaled_text(raw: int, scaler: int) -> str:
    """``raw × 10^scaler`` as an exact decimal string: (123456, -2) -> "1234.56"."""
    if scaler >= 0:
        return str(raw * 10 ** scaler)
    q, r = divmod(abs(raw), 10 ** -scaler)
    return f"{'-' if raw < 0 else ''}{q}.{r:0{-scaler}d}"


def oad_text(oad: int) -> str:
    return f"{oad:08X}"


def describe_oad(oad: int) -> dict[str, Any]:
    return objects.describe(oad >> 16, (oad >> 8) & 0xFF, oad & 0xFF)


def tsa_text(tsa: bytes) -> str:
    """A TSA's address in reading order: its octets after the AF flag byte are laid out like the frame's
    server address SA (clause 5.3), lowest byte first."""
    return tsa[1:][::-1].hex().upper() if tsa else ""


def data_json(d: tuple[int, Any], scaler: int | None = None, unit: str = "") -> object:
    """Data ``(tag, content)`` as JSON; integers under a scaler become exact decimals with their unit."""
    v: Any  # its type depends on the tag
    t, v = d
    if t in _INT_TAGS:
        if scaler is None:
            return v
        out: dict[str, Any] = {"value": scaled_text(v, scaler), "raw": v, "scaler": scaler}
        if unit:
            out["unit"] = unit
        return out
    if t == 1 or t == 2:
        return [data_json(x, scaler, unit) for x in v]
    if t == 0:
        return None
    if t in (9, 85, 86, 87):
        return v.hex().upper()
    if t == 28:
        return date_time_s_text(v)
    if t == 25:
        return date_time_text(v)
    if t in (81, 83):
        return oad_text(v)
    if t == 4:
        return {"bits": v[0], "hex": v[1].hex().upper()}
    if t in (3, 10, 12, 22, 23, 24, 80):
        return v if not isinstance(v, bytes) else v.hex().upper()
    return {"type": TYPE_NAMES.get(t, str(t)), "value": _plain(v)}


def _plain(v: object) -> object:
    if isinstance(v, bytes):
        return v.hex().upper()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _attr_of(oad: int) -> objects.Attribute | None:
    return objects.attribute(oad >> 16, (oad >> 8) & 0xFF)


def _named_value(oad: int, d: tuple[int, Any]) -> dict[str, Any]:
    """An OAD and its value, named and scaled from the registry; array elements named by layout."""
    out = describe_oad(oad)
    a = _attr_of(oad)
    scaler = a.scaler if a is not None else None
    unit = a.unit if a is not None else ""
    index = oad & 0xFF
    if a is not None and a.layout in ("total_tariffs", "phases", "total_phases") and not index and d[0] == 1:
        out["value"] = {a.element_name(i): data_json(x, scaler, unit) for i, x in enumerate(d[1], 1)}
    else:
        out["value"] = data_json(d, scaler, unit)
    return out


def result_normal_json(r: ResultNormal) -> dict[str, Any]:
    if r.dar is not None:
        out = describe_oad(r.oad)
        out["dar"] = r.dar
        out["error"] = _dar.name_of(r.dar)
        return out
    return _named_value(r.oad, r.data)


def _csd_json(c: int | Road) -> dict[str, Any]:
    if isinstance(c, int):
        return describe_oad(c)
    return {**describe_oad(c[0]), "columns": [describe_oad(s) for s in c[1]]}


def _cell_json(col: int | Road, cell: tuple[int, Any]) -> dict[str, Any]:
    if isinstance(col, int):
        return _named_value(col, cell)
    oad, subs = col
    out = describe_oad(oad)
    if cell[0] == 1 and len(cell[1]) == len(subs):
        out["values"] = [_named_value(s, x) for s, x in zip(subs, cell[1])]
    else:
        out["value"] = data_json(cell)
    return out


def result_record_json(r: ResultRecord) -> dict[str, Any]:
    out = describe_oad(r.oad)
    out["columns"] = [_csd_json(c) for c in r.rcsd]
    if r.dar is not None:
        out["dar"] = r.dar
        out["error"] = _dar.name_of(r.dar)
    else:
        rows = r.rows
        assert rows is not None  # no DAR: the rows are there
        out["rows"] = [[_cell_json(c, x) for c, x in zip(r.rcsd, row)] for row in rows]
    return out


# the parts of an APDU with a JSON of their own (A-ResultNormal, A-ResultRecord, TimeTag, FollowReport):
# class -> its renderer, filled in by protocols.dlt698.apdu as it is imported (so this module imports no
# APDU module)
PART_JSON: dict[type, Callable[[Any], object]] = {}


def follow_report_json(v: Any) -> list[object]:
    """A FollowReport (跟随上报信息域): its results."""
    return [_value_json("", x) for x in v.results]


def _value_json(name: str, v: Any) -> object:  # v: a field of an APDU, its type by name
    if v is None:
        return None
    if v is ABSENT:
        return "absent"
    part = PART_JSON.get(type(v))
    if part is not None:
        return part(v)
    if name in ("oad", "get_oad", "port") and isinstance(v, int):
        return describe_oad(v)
    if name in ("omd",) and isinstance(v, int):
        return _omd_json(v)
    if name in ("tsa",) and isinstance(v, bytes):
        return tsa_text(v)
    if name in ("requested_at", "received_at", "responded_at"):
        return date_time_text(v)
    if name in ("connected_at", "server_time"):
        return date_time_s_text(v)
    if name in ("dar", "get_dar") and isinstance(v, int):
        return {"code": v, "name": _dar.name_of(v)}
    if name in ("oads", "items") and isinstance(v, tuple) and all(isinstance(x, int) for x in v):
        return [describe_oad(x) for x in v]
    if name == "rcsd":
        return [_csd_json(c) for c in v]
    if dataclasses.is_dataclass(v):
        return _fields_json(v)
    if isinstance(v, tuple):
        if len(v) == 2 and isinstance(v[0], int) and v[0] in TYPE_NAMES and name in ("data", "get_data", "body"):
            return data_json(v)
        return [_value_json(name, x) for x in v]
    if isinstance(v, bytes):
        return v.hex().upper()
    return v


def _omd_json(omd: int) -> dict[str, Any]:
    oi, method, mode = omd >> 16, (omd >> 8) & 0xFF, omd & 0xFF
    out: dict[str, Any] = {"omd": f"{omd:08X}"}
    o = objects.lookup(oi)
    if o is not None:
        out["object"] = o.name
        if method in o.methods:
            out["method"] = o.methods[method]
    out["mode"] = mode
    return out


def _fields_json(obj: DataclassInstance | type[DataclassInstance]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    items = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    # a data item paired with an OAD is shown named and scaled
    names = dict(items)
    for name, v in items:
        if name in ("data", "get_data") and isinstance(v, tuple):   # (ABSENT is not a tuple)
            key = "oad" if name == "data" else "get_oad"
            if key in names and isinstance(names[key], int):
                out[name] = _named_value(names[key], v)
                continue
        out[name] = _value_json(name, v)
    return out


def apdu_json(apdu: Apdu) -> dict[str, Any]:
    out: dict[str, Any] = {"apdu": apdu.NAME, "service": apdu.SERVICE}
    body = _fields_json(apdu)
    for k in ("piid", "piid_acd"):
        if k in body:
            p = body.pop(k)
            out["piid"] = p & 0xFF
            out["priority_high"] = bool(p & 0x80)
            if k == "piid_acd":
                out["acd"] = bool(p & 0x40)
    trusted = getattr(apdu, "clock_trusted", None)      # a LINK-Response's result bit 7
    if trusted is not None:
        out["clock_trusted"] = trusted
    out.update(body)
    return out

"""Data formats of DL/T 645-2007 data items (数据标识的数据格式), decoded to typed values with units.

A data item (数据项) is named by its 4-byte identifier DI3 DI2 DI1 DI0 (sent DI0 first) and carries
fields written in the standard's notation (appendix A, "数据格式"):

    XXXXXX.XX     BCD, 8 digits, 2 decimals (4 bytes, lowest byte first)
    ±XXX.XXX      BCD whose highest bit is the sign ("最高位表示方向")
    YYMMDDhhmm    BCD date-time, the digits in that order (5 bytes; on the wire mm first)
    YYMMDDWW      date and day of week (WW: 0 = Sunday)
    hhmmss, MMDDhhmm, DDhh, YYMMDDhhmmss
    NNNN          binary/bit field, 2 bytes little-endian (status words, feature words)
    A32           32 ASCII characters (e.g. asset number); stored reversed like every other field
    S12           a string of 12 BCD digits kept with its leading zeros (address, meter number)

Values stay exact: a numeric value is the register's integer plus its number of decimals, never a
float.  ``Value.text`` renders it as a decimal string.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field as _dc_field
from decimal import Decimal
from typing import NamedTuple

from .. import accel
from ..errors import LocalProtocolError, RemoteProtocolError

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

# field kinds; 0-2 are the kernel's own codes (see _framing_py.bcd_fields)
UNSIGNED, SIGNED, BINARY, ASCII, DATETIME, DIGITS = 0, 1, 2, 3, 4, 5

_DATE_PATTERNS = {
    "YYMMDDhhmmss", "YYMMDDhhmm", "YYMMDDWW", "YYMMDD", "hhmmss", "hhmm", "MMDDhhmm", "DDhh",
    "MMDD", "mmhhDDMM",
}
_NUM_RE = re.compile(r"^(±)?(X+)(?:\.(X+))?$")


class Value(NamedTuple):
    """One decoded field: ``raw`` is the register integer (``None`` when the digits are not BCD)."""

    name: str
    raw: int | None
    decimals: int
    unit: str
    kind: int
    fmt: str

    @property
    def value(self) -> Decimal | _dt.datetime | _dt.date | _dt.time | str | int | None:
        """Decimal for numbers, datetime/date/time for dates, str for text, int for bit fields."""
        if self.raw is None:
            return None
        if self.kind == DATETIME:
            return digits_to_datetime(self.digits, self.fmt)
        if self.kind == ASCII:
            return ascii_from_int(self.raw, len(self.fmt) and int(self.fmt[1:]))
        if self.kind == BINARY:
            return self.raw
        if self.kind == DIGITS:
            return self.digits
        return Decimal(self.raw).scaleb(-self.decimals)

    @property
    def digits(self) -> str:
        """The BCD digits in the order of the format string (dates: ``YYMMDDhhmm``...)."""
        if self.raw is None:
            return ""
        width = int(self.fmt[1:]) if self.kind == DIGITS else len(self.fmt.lstrip("±").replace(".", ""))
        return str(self.raw).zfill(width)

    @property
    def text(self) -> str | None:
        """Exact rendering for people and JSON: ``"1234.56"``, ``"2025-11-02T12:34"``, ``"0x0010"``."""
        if self.raw is None:
            return None
        if self.kind == DATETIME:
            v = digits_to_datetime(self.digits, self.fmt)
            return v if v is None or isinstance(v, str) else v.isoformat()
        if self.kind == ASCII:
            return ascii_from_int(self.raw, len(self.fmt) and int(self.fmt[1:]))
        if self.kind == DIGITS:
            return self.digits
        if self.kind == BINARY:
            return f"0x{self.raw:0{2 * (len(self.fmt) // 2)}X}"
        return format_scaled(self.raw, self.decimals)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "value": self.text}
        if self.unit:
            out["unit"] = self.unit
        if self.kind in (UNSIGNED, SIGNED):
            out["raw"] = self.raw
            out["scale"] = -self.decimals
        elif self.kind == DATETIME:
            out["digits"] = self.digits
            if self.raw is not None and self.value is None:
                out["error"] = f"not a valid {self.fmt}"
        if self.raw is None:
            out["error"] = "digits are not BCD"
        return out


def format_scaled(raw: int, decimals: int) -> str:
    """``123456, 2 -> "1234.56"``; exact, no float on the way."""
    if decimals == 0:
        return str(raw)
    sign = "-" if raw < 0 else ""
    s = str(abs(raw)).zfill(decimals + 1)
    return f"{sign}{s[:-decimals]}.{s[-decimals:]}"


def ascii_from_int(raw: int, n: int) -> str:
    # ASCII fields are sent lowest byte first like numbers; raw is the little-endian integer
    # padding (NUL or space) may sit on either side depending on the meter: strip both
    return raw.to_bytes(n, "little")[::-1].decode("ascii", "replace").strip("\x00 ")


def digits_to_datetime(digits: str, fmt: str) -> _dt.datetime | _dt.date | _dt.time | str | None:
    """Interpret BCD digits by pattern; ``None`` if the calendar says no (e.g. month 34)."""
    parts: dict[str, int] = {}
    for i in range(0, len(fmt), 2):
        parts[fmt[i:i + 2]] = int(digits[i:i + 2])
    try:
        if "YY" in parts:
            d = _dt.date(2000 + parts["YY"], parts.get("MM", 1), parts.get("DD", 1))
            if "hh" in parts:
                return _dt.datetime(d.year, d.month, d.day, parts["hh"], parts.get("mm", 0), parts.get("ss", 0))
            return d
        if "hh" in parts and "MM" not in parts and "DD" not in parts:
            return _dt.time(parts["hh"], parts.get("mm", 0), parts.get("ss", 0))
        # patterns without a year (MMDDhhmm, DDhh, MMDD): return the parts, the year is not known
        if parts.get("MM", 1) not in range(1, 13) or parts.get("DD", 1) not in range(1, 32):
            return None
        if parts.get("hh", 0) > 23 or parts.get("mm", 0) > 59:
            return None
        return "-".join(f"{parts[p]:02d}" for p in ("MM", "DD") if p in parts) + (
            f"T{parts['hh']:02d}" + (f":{parts['mm']:02d}" if "mm" in parts else "") if "hh" in parts else "")
    except ValueError:
        return None


def datetime_to_digits(value: object, fmt: str) -> str:
    """The inverse of :func:`digits_to_datetime` for a datetime/date/time."""
    vals: dict[str, int] = {}
    if isinstance(value, (_dt.date, _dt.datetime)):
        vals.update(YY=value.year % 100, MM=value.month, DD=value.day, WW=(value.isoweekday() % 7))
    if isinstance(value, (_dt.datetime, _dt.time)):
        vals.update(hh=value.hour, mm=value.minute, ss=value.second)
    try:
        return "".join(f"{vals[fmt[i:i + 2]]:02d}" for i in range(0, len(fmt), 2))
    except KeyError as exc:
        raise LocalProtocolError(f"{value!r} does not fill format {fmt}") from exc


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a data item, in the standard's notation (see the module docstring)."""

    name: str
    fmt: str
    unit: str = ""
    kind: int = _dc_field(init=False)
    nbytes: int = _dc_field(init=False)
    decimals: int = _dc_field(init=False)

    def __post_init__(self) -> None:
        fmt = self.fmt
        m = _NUM_RE.match(fmt)
        if m:
            digits = len(m.group(2)) + len(m.group(3) or "")
            if digits % 2:
                raise ValueError(f"format {fmt}: odd number of digits")
            kind, nbytes, dec = (SIGNED if m.group(1) else UNSIGNED), digits // 2, len(m.group(3) or "")
        elif fmt in _DATE_PATTERNS:
            kind, nbytes, dec = DATETIME, len(fmt) // 2, 0
        elif fmt and set(fmt) == {"N"} and len(fmt) % 2 == 0:
            kind, nbytes, dec = BINARY, len(fmt) // 2, 0
        elif fmt.startswith("A") and fmt[1:].isdigit():
            kind, nbytes, dec = ASCII, int(fmt[1:]), 0
        elif fmt.startswith("S") and fmt[1:].isdigit() and int(fmt[1:]) % 2 == 0:
            kind, nbytes, dec = DIGITS, int(fmt[1:]) // 2, 0
        else:
            raise ValueError(f"unknown data format {fmt!r}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "nbytes", nbytes)
        object.__setattr__(self, "decimals", dec)

    @property
    def kernel_kind(self) -> int:
        return {UNSIGNED: 0, SIGNED: 1, DATETIME: 0, BINARY: 2, ASCII: 2, DIGITS: 0}[self.kind]

    def encode(self, value: object) -> bytes:
        """Wire bytes (before +33H) of ``value``: int (register integer), Decimal/str, or date-time."""
        if self.kind == DATETIME:
            if isinstance(value, str):
                digits = value
            else:
                digits = datetime_to_digits(value, self.fmt)
            if len(digits) != 2 * self.nbytes or not digits.isdigit():
                raise LocalProtocolError(f"{self.name}: {value!r} is not {self.fmt}")
            return bytes.fromhex(digits)[::-1]
        if self.kind == ASCII:
            try:
                b = str(value).encode("ascii")
            except UnicodeEncodeError:
                raise LocalProtocolError(f"{self.name}: {value!r} is not ASCII") from None
            if len(b) > self.nbytes:
                raise LocalProtocolError(f"{self.name}: {value!r} longer than {self.nbytes} characters")
            return b.rjust(self.nbytes, b"\x00")[::-1]
        if isinstance(value, (str, Decimal)):
            try:
                d = Decimal(value).scaleb(self.decimals)
            except ArithmeticError:  # decimal.InvalidOperation for "abc"
                raise LocalProtocolError(f"{self.name}: {value!r} is not a number") from None
            if not d.is_finite():
                raise LocalProtocolError(f"{self.name}: {value!r} is not a finite number")
            if d != d.to_integral_value():
                raise LocalProtocolError(f"{self.name}: {value} has more than {self.decimals} decimals")
            value = int(d)
        if not isinstance(value, int):
            raise LocalProtocolError(f"{self.name}: {value!r} is not an integer register value")
        out = _k.bcd_encode(value, self.nbytes, self.kernel_kind)
        if out is None:
            raise LocalProtocolError(f"{self.name}: {value} does not fit {self.fmt}")
        return out


@dataclass(frozen=True, slots=True)
class DataItem:
    """A data identifier and what its data field holds.

    ``fields`` are decoded in order.  A block item (DI with FFH in a byte, 数据块) holds ``members``
    instead: the meter sends as many members as it has (e.g. total + 4 tariffs of 0001FF00), so a
    block decodes member after member until the data ends.
    """

    di: int
    name: str
    name_zh: str = ""
    fields: tuple[Field, ...] = ()
    members: tuple["DataItem", ...] = ()
    access: str = "r"
    request_extra: str = ""   # what a read request appends after the DI (e.g. "N" or "N+YYMMDDhhmm")
    _spec: bytes = _dc_field(init=False, repr=False, compare=False)
    _fast: bool = _dc_field(init=False, repr=False, compare=False)
    _templates: tuple[tuple[str, int, str, int, str], ...] = _dc_field(init=False, repr=False, compare=False)
    _prefixes: dict[int, tuple[bytes, tuple[tuple[str, int, str, int, str], ...]]] = _dc_field(
        init=False, repr=False, compare=False)
    size: int = _dc_field(init=False, compare=False)

    def __post_init__(self) -> None:
        spec = bytes(b for f in self.fields for b in (f.nbytes, f.kernel_kind))
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_fast", all(f.nbytes <= 8 and f.kind != ASCII for f in self.fields))
        object.__setattr__(self, "size", sum(f.nbytes for f in self.fields))
        object.__setattr__(self, "_templates",
                           tuple((f.name, f.decimals, f.unit, f.kind, f.fmt) for f in self.fields))
        # a block of plain members decodes in one kernel call: data length -> the members it holds
        prefixes: dict[int, tuple[bytes, tuple[tuple[str, int, str, int, str], ...]]] = {}
        if self.members and all(m._fast and not m.members for m in self.members):
            size = 0
            templates: tuple[tuple[str, int, str, int, str], ...] = ()
            spec = b""
            for m in self.members:
                size, spec, templates = size + m.size, spec + m._spec, templates + m._templates
                prefixes[size] = (spec, templates)
        object.__setattr__(self, "_prefixes", prefixes)

    @property
    def is_block(self) -> bool:
        return bool(self.members)

    def decode(self, data: bytes, off: int = 0, end: int | None = None) -> tuple[Value, ...]:
        """Values of this item in ``data[off:end]``; a length that does not fit is a RemoteProtocolError."""
        end = len(data) if end is None else end
        if self.members:
            pre = self._prefixes.get(end - off)
            if pre is not None:
                return _k.bcd_values(data, off, pre[0], pre[1], Value)
            out: list[Value] = []
            p = off
            for m in self.members:
                if p >= end:
                    break
                if p + m.size > end:
                    raise RemoteProtocolError(
                        f"DI {self.di:08X}: {end - p} bytes left, member {m.di:08X} needs {m.size}")
                out.extend(m.decode(data, p, p + m.size))
                p += m.size
            if p != end:
                raise RemoteProtocolError(f"DI {self.di:08X}: {end - p} bytes beyond the last member")
            return tuple(out)
        if end - off != self.size:
            raise RemoteProtocolError(
                f"DI {self.di:08X} ({self.name}): data is {end - off} bytes, the format needs {self.size}")
        if self._fast:
            return _k.bcd_values(data, off, self._spec, self._templates, Value)
        raws: list[int | None] = []
        p = off
        for f in self.fields:
            if f.kind == ASCII or f.nbytes > 8:
                raws.append(int.from_bytes(data[p:p + f.nbytes], "little"))
            else:
                raws.extend(_k.bcd_fields(data, p, bytes((f.nbytes, f.kernel_kind))))
            p += f.nbytes
        return tuple(Value(f.name, r, f.decimals, f.unit, f.kind, f.fmt) for f, r in zip(self.fields, raws))

    def encode(self, values: object) -> bytes:
        """Wire bytes (before +33H) for a write: one value per field, in order (or a mapping by name)."""
        if self.members:
            # a block answer: the first k members, their fields' values in order (a meter simulator's view)
            values = list(values) if isinstance(values, (list, tuple)) else [values]
            out: list[bytes] = []
            i = 0
            for m in self.members:
                if i >= len(values):
                    break
                n = len(m.fields)
                if i + n > len(values) or m.members:
                    raise LocalProtocolError(f"DI {self.di:08X}: {len(values)} values do not fill whole members")
                out.append(m.encode(values[i:i + n]))
                i += n
            if i != len(values):
                raise LocalProtocolError(f"DI {self.di:08X}: {len(values) - i} values beyond the last member")
            return b"".join(out)
        if isinstance(values, dict):
            try:
                values = [values[f.name] for f in self.fields]
            except KeyError as exc:
                raise LocalProtocolError(f"DI {self.di:08X}: missing field {exc.args[0]}") from None
        elif not isinstance(values, (list, tuple)):
            values = [values]
        if len(values) != len(self.fields):
            raise LocalProtocolError(
                f"DI {self.di:08X} has {len(self.fields)} field(s), {len(values)} value(s) given")
        return b"".join(f.encode(v) for f, v in zip(self.fields, values))


def F(name: str, fmt: str, unit: str = "") -> Field:
    """Shorthand used by the registry tables."""
    return Field(name, fmt, unit)

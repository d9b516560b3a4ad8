"""The meter's own error word (错误信息字 ERR) of a DL/T 645-2007 abnormal response.

DL/T 645-2007 clause 4.2 / table "错误信息字 ERR": one bit per error.  Each bit is a
:class:`~protocols.errors.DeviceError` subclass, written out from the table below, so a caller can
``except Unauthorized:``.
"""

from __future__ import annotations

from ..errors import DeviceError

# (bit, class name, English, 中文)
_TABLE: list[tuple[int, str, str, str]] = [
    (0, "OtherError", "other error", "其他错误"),
    (1, "NoRequestedData", "no requested data", "无请求数据"),
    (2, "Unauthorized", "password wrong or not authorized", "密码错/未授权"),
    (3, "BaudRateNotChangeable", "baud rate cannot be changed", "通信速率不能更改"),
    (4, "TooManyYearZones", "annual time zone count exceeded", "年时区数超"),
    (5, "TooManyDayPeriods", "daily time period count exceeded", "日时段数超"),
    (6, "TooManyTariffs", "tariff count exceeded", "费率数超"),
]


class Dlt645DeviceError(DeviceError):
    """A bit of the DL/T 645 error word."""

    bit: int = -1
    name_zh: str = ""


# One class per row of _TABLE, written out so that readers and type checkers see every name
# (tests/protocols/test_typing.py checks each class against its row).
class OtherError(Dlt645DeviceError):
    """ERR bit 0: other error (其他错误)."""

    bit = 0
    code = 0x01
    name = "other error"
    name_zh = "其他错误"


class NoRequestedData(Dlt645DeviceError):
    """ERR bit 1: no requested data (无请求数据)."""

    bit = 1
    code = 0x02
    name = "no requested data"
    name_zh = "无请求数据"


class Unauthorized(Dlt645DeviceError):
    """ERR bit 2: password wrong or not authorized (密码错/未授权)."""

    bit = 2
    code = 0x04
    name = "password wrong or not authorized"
    name_zh = "密码错/未授权"


class BaudRateNotChangeable(Dlt645DeviceError):
    """ERR bit 3: baud rate cannot be changed (通信速率不能更改)."""

    bit = 3
    code = 0x08
    name = "baud rate cannot be changed"
    name_zh = "通信速率不能更改"


class TooManyYearZones(Dlt645DeviceError):
    """ERR bit 4: annual time zone count exceeded (年时区数超)."""

    bit = 4
    code = 0x10
    name = "annual time zone count exceeded"
    name_zh = "年时区数超"


class TooManyDayPeriods(Dlt645DeviceError):
    """ERR bit 5: daily time period count exceeded (日时段数超)."""

    bit = 5
    code = 0x20
    name = "daily time period count exceeded"
    name_zh = "日时段数超"


class TooManyTariffs(Dlt645DeviceError):
    """ERR bit 6: tariff count exceeded (费率数超)."""

    bit = 6
    code = 0x40
    name = "tariff count exceeded"
    name_zh = "费率数超"


ERROR_BITS: dict[int, type[Dlt645DeviceError]] = {cls.bit: cls for cls in (
    OtherError, NoRequestedData, Unauthorized, BaudRateNotChangeable, TooManyYearZones,
    TooManyDayPeriods, TooManyTariffs,
)}


class ReservedBit(Dlt645DeviceError):
    """ERR bit 7 (reserved by the standard) or an unknown bit of a longer error word."""

    name = "reserved error bit"
    name_zh = "保留"


def errors_of(word: int, nbits: int = 8) -> list[type[Dlt645DeviceError]]:
    """The error classes whose bits are set in ``word``, lowest bit first."""
    return [ERROR_BITS.get(b, ReservedBit) for b in range(nbits) if word >> b & 1]

"""The meter's own error word (错误信息字 ERR) of a DL/T 645-2007 abnormal response.

DL/T 645-2007 clause 4.2 / table "错误信息字 ERR": one bit per error.  Each bit is a
:class:`~protocols.errors.DeviceError` subclass, generated from the table below, so a caller can
``except Unauthorized:``.
"""

from __future__ import annotations

from ..errors import DeviceError

# (bit, class name, English, 中文)
_TABLE = [
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


ERROR_BITS: dict[int, type[Dlt645DeviceError]] = {}
for _bit, _cls, _en, _zh in _TABLE:
    ERROR_BITS[_bit] = type(_cls, (Dlt645DeviceError,), {
        "bit": _bit, "code": 1 << _bit, "name": _en, "name_zh": _zh,
        "__doc__": f"ERR bit {_bit}: {_en} ({_zh}).", "__module__": __name__,
    })
    globals()[_cls] = ERROR_BITS[_bit]
del _bit, _cls, _en, _zh


class ReservedBit(Dlt645DeviceError):
    """ERR bit 7 (reserved by the standard) or an unknown bit of a longer error word."""

    name = "reserved error bit"
    name_zh = "保留"


def errors_of(word: int, nbits: int = 8) -> list[type[Dlt645DeviceError]]:
    """The error classes whose bits are set in ``word``, lowest bit first."""
    return [ERROR_BITS.get(b, ReservedBit) for b in range(nbits) if word >> b & 1]

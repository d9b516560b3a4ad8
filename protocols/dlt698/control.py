"""Remote control of a DL/T 698.45 meter's relay (遥控, OI 8000) and power protection (保电, OI 8001).

The methods and their parameters, written once for every caller (the head-end's commands, ``gridhead
frame encode 698 action``):

    8000 method 129 跳闸  array of structure {继电器 OAD, 告警延时 unsigned (min), 限电时间 long-unsigned
                          (min, 0 = until closed), 自动合闸 bool}
    8000 method 130 合闸  array of structure {继电器 OAD, 命令 enum (0 合闸允许, 1 直接合闸)}
    8001 method 127 投入保电, method 128 解除保电   no parameter (NULL)
"""

from __future__ import annotations

from . import apdu as A
from .axdr import Data

OAD_RELAY_1 = 0xF2050201         # 继电器输出 1
OMD_TRIP, OMD_CLOSE = A.omd(0x8000, 129), A.omd(0x8000, 130)
OMD_PROTECT_ON, OMD_PROTECT_OFF = A.omd(0x8001, 127), A.omd(0x8001, 128)


def trip(relay: int = OAD_RELAY_1, alarm_delay_min: int = 0, duration_min: int = 0) -> tuple[int, Data]:
    """(OMD, parameter) of a trip (拉闸) of ``relay``, no automatic close."""
    return OMD_TRIP, Data(1, (Data(2, (Data(81, relay), Data(17, alarm_delay_min), Data(18, duration_min),
                                       Data(3, False))),))


def close(relay: int = OAD_RELAY_1, direct: bool = False) -> tuple[int, Data]:
    """(OMD, parameter) of a close: 合闸允许 (the customer closes at the meter), or 直接合闸 with ``direct``."""
    return OMD_CLOSE, Data(1, (Data(2, (Data(81, relay), Data(22, 1 if direct else 0))),))


def protect(on: bool) -> tuple[int, Data]:
    """(OMD, parameter) of switching power protection (保电) on or off."""
    return (OMD_PROTECT_ON if on else OMD_PROTECT_OFF), Data(0, None)


__all__ = ["OAD_RELAY_1", "OMD_TRIP", "OMD_CLOSE", "OMD_PROTECT_ON", "OMD_PROTECT_OFF", "trip", "close", "protect"]

"""Data identifiers of DL/T 645-2007 (数据标识, appendix A) and what their data fields hold.

A data identifier is four bytes DI3 DI2 DI1 DI0, written here as one int (``0x00010000`` = DI3 00,
DI2 01, DI1 00, DI0 00; sent DI0 first).  DI3 names the class::

    00 energy (电能量)           DI2 kind, DI1 00 total / 01..3F tariff n, DI0 00 now / 01..0C 上n结算日
    01 max demand + time (最大需量及发生时间)   same layout as energy, no DI2 00
    02 instantaneous variables (变量)          DI2 quantity, DI1 phase (00 total, 01..03 A/B/C)
    03 events, 2007 text (事件记录)            DI2 event, DI1 sub-event, DI0 00 count / 01..0A 上n次
    04 parameters (参变量)
    05 frozen data (冻结量)                    DI2 freeze, DI1 content, DI0 上n次
    06 load records (负荷记录)
    10..1E events of the 2010 filing (备案文件): DI2 phase, DI1 field, DI0 上n次

Tariffs 1..4 are, in State Grid practice, sharp/peak/flat/valley (尖/峰/平/谷): see TARIFF_NAMES.

Blocks (数据块): an FFH byte where the standard allows it asks for every member in order, e.g.
0001FF00 = forward active total + tariffs 1..63 (the meter sends total + as many tariffs as it has),
000100FF = forward active total now and at the last 12 settlement days.

About 24,000 items exist; the big regular families (tariff x settlement of DI3 00/01, frozen data,
curves) are built on first use and kept, so importing takes ~20 ms and :func:`lookup` of an item
seen before is one dict get (~40 ns).

Sources and confidence.  Layouts follow DL/T 645-2007 appendix A and the 2010 filing (备案文件) of
the smart-meter additions (0280000B step price, DI3 10..1E events, 0506 daily freeze, 0610 curves,
status-word bits 8..15).  Record layouts that could not be established field by field are left out
rather than guessed; the comment above each family says what is certain.  In particular:

* 0505 / 0507 (switch freezes of the 2010 filing) and the whole-record blocks 05xxFF01 are left out;
  there is no "monthly freeze" in 645: the month's settlement reading is DI0 = 01 of DI3 00/01.
* Time-zone and day tables (0401/0402), display lists (0404), price and step tables (0405/0406),
  programming records 03300501/03300601/03300801 (hundreds of bytes), harmonics (020A/020B) and the
  2007-text phase-event records (03010101...) are left out.
* Event records of the 2010 filing (DI3 10..1C) expose only count, cumulative time, start and end
  time; the energies between them are not laid out here.
"""

from __future__ import annotations

import threading
from functools import partial
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import RemoteProtocolError
from .formats import DataItem, F, Field, Value

__all__ = [
    "lookup", "items", "by_name", "decode_load_record", "status_flags",
    "STATUS_WORD_BITS", "STATUS_WORD_BITS_ZH", "TARIFF_NAMES",
]

TARIFF_NAMES = {1: ("sharp", "尖"), 2: ("peak", "峰"), 3: ("flat", "平"), 4: ("valley", "谷")}

_TABLE: dict[int, DataItem] = {}      # every item built so far, blocks included
_BY_NAME: dict[str, DataItem] = {}
# Families built on first use (keyed by DI3 DI2), so that importing stays fast; lookup() of a
# built item is one dict get.  The tariff x settlement families of DI3 00/01 are built per item.
_LAZY: dict[int, Callable[[], None]] = {}
_BUILD_LOCK = threading.RLock()
_PHASES = ((1, "a", "A"), (2, "b", "B"), (3, "c", "C"))


def _add(item: DataItem) -> DataItem:
    if item.di in _TABLE:
        raise AssertionError(f"registry defines DI {item.di:08X} twice")   # a bug in this file
    if item.name in _BY_NAME:
        raise AssertionError(f"registry defines name {item.name} twice")
    _TABLE[item.di] = item
    _BY_NAME[item.name] = item
    return item


def _one(di: int, name: str, zh: str, fmt: str, unit: str = "", access: str = "r",
         request_extra: str = "") -> DataItem:
    """An item with one field named like the item (so block members stay distinguishable)."""
    return _add(DataItem(di, name, zh, (F(name, fmt, unit),), access=access, request_extra=request_extra))


def _rec(di: int, name: str, zh: str, fields: Iterable[Field], access: str = "r") -> DataItem:
    return _add(DataItem(di, name, zh, tuple(fields), access=access))


def _block(di: int, name: str, zh: str, members: Iterable[DataItem]) -> DataItem:
    return _add(DataItem(di, name, zh, members=tuple(members)))


def _settle(di0: int) -> tuple[str, str]:
    """Name suffix and Chinese prefix of a settlement index: 0 now, 1..12 上n结算日."""
    return ("", "(当前)") if di0 == 0 else (f"_settle_{di0}", f"(上{di0}结算日)")


# --- 00 energy (电能量) and 01 maximum demand (最大需量及发生时间) -------------------------------------
# (DI2, key, 中文, energy unit, demand unit, signed).  Combined active/reactive are sums with signs
# chosen by the combination words (04000601..03), so they may be negative: the highest bit is the
# sign (最高位表示方向).  Demand has no DI2 00.
_KINDS = (
    (0x00, "combined_active", "组合有功", "kWh", None, True),
    (0x01, "forward_active", "正向有功", "kWh", "kW", False),
    (0x02, "reverse_active", "反向有功", "kWh", "kW", False),
    (0x03, "combined_reactive_1", "组合无功1", "kvarh", "kvar", True),
    (0x04, "combined_reactive_2", "组合无功2", "kvarh", "kvar", True),
    (0x05, "quadrant_1_reactive", "第一象限无功", "kvarh", "kvar", False),
    (0x06, "quadrant_2_reactive", "第二象限无功", "kvarh", "kvar", False),
    (0x07, "quadrant_3_reactive", "第三象限无功", "kvarh", "kvar", False),
    (0x08, "quadrant_4_reactive", "第四象限无功", "kvarh", "kvar", False),
    (0x09, "forward_apparent", "正向视在", "kVAh", "kVA", False),
    (0x0A, "reverse_apparent", "反向视在", "kVAh", "kVA", False),
)
_KIND = {k[0]: k for k in _KINDS}
# per-phase registers: DI2 = base + (kind DI2 - 1) for kinds 01..0A; DI1 = 00 only (no tariffs)
_PHASE_BASE = {1: 0x15, 2: 0x29, 3: 0x3D}
# fundamental / harmonic / loss-compensation totals (DI2 81..86; per phase base + 0x14 per phase).
# 0080 (关联总电能) and its phase twins are left out: its unit and sign are not established.
_EXTRA_ENERGY = (
    (0x81, "forward_active_fundamental", "正向有功基波"),
    (0x82, "reverse_active_fundamental", "反向有功基波"),
    (0x83, "forward_active_harmonic", "正向有功谐波"),
    (0x84, "reverse_active_harmonic", "反向有功谐波"),
    (0x85, "copper_loss_active_compensation", "铜损有功电能补偿量"),
    (0x86, "iron_loss_active_compensation", "铁损有功电能补偿量"),
)
_SETTLEMENTS = range(13)     # DI0 00 now, 01..0C last 1..12 settlement days
_TARIFFS = range(64)         # DI1 00 total, 01..3F tariff 1..63


def _energy_fmt(signed: bool) -> str:
    return "±XXXXXX.XX" if signed else "XXXXXX.XX"


def _demand_fields(name: str, signed: bool, unit: str | None) -> tuple[Field, Field]:
    assert unit is not None  # every kind with a demand has its unit (_KINDS)
    return (F(name, "±XX.XXXX" if signed else "XX.XXXX", unit), F(name + "_time", "YYMMDDhhmm"))


def _tariff(di1: int) -> tuple[str, str]:
    return ("total", "总") if di1 == 0 else (f"tariff_{di1}", f"费率{di1}")


def _kind_item(di: int) -> DataItem | None:
    """Build the DI3 00/01 item ``di`` of the tariff x settlement families (17,000 of them, made on
    first use so that importing stays fast); None if ``di`` is not one of them."""
    di3, di2, di1, di0 = di >> 24, di >> 16 & 0xFF, di >> 8 & 0xFF, di & 0xFF
    kind = _KIND.get(di2)
    if di3 > 1 or kind is None or (di3 == 1 and kind[4] is None):
        return None
    _d2, key, zh, eu, du, signed = kind
    what, whatz = ("energy", "电能") if di3 == 0 else ("max_demand", "最大需量及发生时间")
    if di1 == 0xFF and di0 in _SETTLEMENTS:
        s, sz = _settle(di0)
        return DataItem(di, f"{key}_{what}_block{s}", f"{sz}{zh}{whatz}数据块",
                        members=tuple(_member(di & ~0xFF00 | t << 8) for t in _TARIFFS))
    if di1 not in _TARIFFS:
        return None
    t, tz = _tariff(di1)
    if di0 == 0xFF:
        return DataItem(di, f"{key}_{what}_{t}_settle_block", f"{zh}{tz}{whatz}数据块(当前及上1~12结算日)",
                        members=tuple(_member(di & ~0xFF | s) for s in _SETTLEMENTS))
    if di0 not in _SETTLEMENTS:
        return None
    s, sz = _settle(di0)
    name = f"{key}_{what}_{t}{s}"
    if di3 == 0:
        return DataItem(di, name, f"{sz}{zh}{tz}电能", (F(name, _energy_fmt(signed), eu),))
    return DataItem(di, name, f"{sz}{zh}{tz}最大需量及发生时间", _demand_fields(name, signed, du))


def _member(di: int) -> DataItem:
    """:func:`_get` for a block's member, which this file defines."""
    item = _get(di)
    if item is None:
        raise AssertionError(f"registry: block member {di:08X} is not defined")   # a bug in this file
    return item


def _get(di: int) -> DataItem | None:
    """:func:`lookup` that also builds (and keeps) generated items: a whole lazy family on first
    use of one of its identifiers, or one energy/demand item."""
    item = _TABLE.get(di)
    if item is None and (di >> 16 in _LAZY or di >> 25 == 0):     # a lazy family, or DI3 00/01
        with _BUILD_LOCK:
            item = _TABLE.get(di)
            if item is None:
                build = _LAZY.pop(di >> 16, None)
                if build is not None:
                    build()
                    return _TABLE.get(di)
                item = _kind_item(di)
                if item is not None:
                    _TABLE[di] = item
                    _BY_NAME[item.name] = item
    return item


def _build_all() -> None:
    global _ALL_BUILT
    if _ALL_BUILT:
        return
    with _BUILD_LOCK:
        while _LAZY:
            _LAZY.popitem()[1]()
    for di3 in (0x00, 0x01):
        for di2 in _KIND:
            for di1 in (*_TARIFFS, 0xFF):
                for di0 in (*_SETTLEMENTS, 0xFF):
                    _get(di3 << 24 | di2 << 16 | di1 << 8 | di0)
    _ALL_BUILT = True


_ALL_BUILT = False

for _ph, _p, _pz in _PHASES:
    for _di2, _key, _zh, _eu, _du, _sg in _KINDS[1:]:
        _d2 = _PHASE_BASE[_ph] + _di2 - 1
        for _di0 in _SETTLEMENTS:
            _s, _sz = _settle(_di0)
            _one(0x00000000 | _d2 << 16 | _di0, f"phase_{_p}_{_key}_energy{_s}", f"{_sz}{_pz}相{_zh}电能",
                 _energy_fmt(_sg), _eu)
            _name = f"phase_{_p}_{_key}_max_demand{_s}"
            _rec(0x01000000 | _d2 << 16 | _di0, _name, f"{_sz}{_pz}相{_zh}最大需量及发生时间",
                 _demand_fields(_name, _sg, _du))

for _di2, _key, _zh in _EXTRA_ENERGY:
    for _di0 in _SETTLEMENTS:
        _s, _sz = _settle(_di0)
        _one(_di2 << 16 | _di0, f"{_key}_energy_total{_s}", f"{_sz}{_zh}总电能", "XXXXXX.XX", "kWh")
        for _ph, _p, _pz in _PHASES:
            _one((_di2 + 0x14 * _ph) << 16 | _di0, f"phase_{_p}_{_key}_energy{_s}",
                 f"{_sz}{_pz}相{_zh}电能", "XXXXXX.XX", "kWh")

# prepayment registers of the 2010 filing (费控表): remaining / overdrawn energy and money
_one(0x00900100, "remaining_energy", "(当前)剩余电量", "XXXXXX.XX", "kWh")
_one(0x00900101, "overdraft_energy", "(当前)透支电量", "XXXXXX.XX", "kWh")
_one(0x00900200, "remaining_money", "(当前)剩余金额", "XXXXXX.XX", "yuan")
_one(0x00900201, "overdraft_money", "(当前)透支金额", "XXXXXX.XX", "yuan")

# --- 02 instantaneous variables (变量) --------------------------------------------------------------
# Currents, powers and power factors carry their direction in the highest bit.
_VARIABLES = (
    # DI2, key, 中文 (per phase), fmt, unit, 中文 of the total (DI1 00) where there is one
    (0x01, "voltage", "电压", "XXX.X", "V", None),
    (0x02, "current", "电流", "±XXX.XXX", "A", None),
    (0x03, "active_power", "有功功率", "±XX.XXXX", "kW", "瞬时总有功功率"),
    (0x04, "reactive_power", "无功功率", "±XX.XXXX", "kvar", "瞬时总无功功率"),
    (0x05, "apparent_power", "视在功率", "±XX.XXXX", "kVA", "瞬时总视在功率"),
    (0x06, "power_factor", "功率因数", "±X.XXX", "", "总功率因数"),
    (0x07, "phase_angle", "相角", "XXX.X", "°", None),
    (0x08, "voltage_distortion", "电压波形失真度", "XX.XX", "%", None),
    (0x09, "current_distortion", "电流波形失真度", "XX.XX", "%", None),
)
for _di2, _key, _zh, _fmt, _unit, _tot in _VARIABLES:
    _members = []
    if _tot:
        _members.append(_one(0x02000000 | _di2 << 16, f"{_key}_total", _tot, _fmt, _unit))
    for _ph, _p, _pz in _PHASES:
        _members.append(_one(0x02000000 | _di2 << 16 | _ph << 8, f"phase_{_p}_{_key}", f"{_pz}相{_zh}", _fmt, _unit))
    _block(0x02000000 | _di2 << 16 | 0xFF00, f"{_key}_block", f"{_zh}数据块", _members)

_one(0x02800001, "neutral_current", "零线电流", "±XXX.XXX", "A")
_one(0x02800002, "grid_frequency", "电网频率", "XX.XX", "Hz")
_one(0x02800003, "active_power_avg_1min", "一分钟有功总平均功率", "±XX.XXXX", "kW")
_one(0x02800004, "current_active_demand", "当前有功需量", "±XX.XXXX", "kW")
_one(0x02800005, "current_reactive_demand", "当前无功需量", "±XX.XXXX", "kvar")
_one(0x02800006, "current_apparent_demand", "当前视在需量", "±XX.XXXX", "kVA")
_one(0x02800007, "meter_temperature", "表内温度", "±XXX.X", "℃")
_one(0x02800008, "clock_battery_voltage", "时钟电池电压(内部)", "XX.XX", "V")
_one(0x02800009, "reading_battery_voltage", "停电抄表电池电压(外部)", "XX.XX", "V")
_one(0x0280000A, "internal_battery_work_time", "内部电池工作时间", "XXXXXXXX", "min")
_one(0x0280000B, "current_step_price", "当前阶梯电价", "XXXX.XXXX", "yuan/kWh")   # 2010 filing


# --- 03 events of the 2007 text (事件记录) -----------------------------------------------------------
_T6 = "YYMMDDhhmmss"
_OP = ("operator_code", "NNNNNNNN")          # 操作者代码 C0..C3, kept as the 4 raw bytes
_ENERGY6 = (                                 # the six totals most records snapshot
    ("forward_active_energy_total", "kWh"), ("reverse_active_energy_total", "kWh"),
    ("quadrant_1_reactive_energy_total", "kvarh"), ("quadrant_2_reactive_energy_total", "kvarh"),
    ("quadrant_3_reactive_energy_total", "kvarh"), ("quadrant_4_reactive_energy_total", "kvarh"),
)


def _energy24(prefix: str) -> list[Field]:
    """Totals, then phase A, B, C: forward/reverse active and quadrant I..IV reactive (24 values)."""
    out = [F(f"{prefix}{n}", "XXXXXX.XX", u) for n, u in _ENERGY6]
    for _ph, p, _pz in _PHASES:
        out.append(F(f"{prefix}phase_{p}_forward_active_energy", "XXXXXX.XX", "kWh"))
        out.append(F(f"{prefix}phase_{p}_reverse_active_energy", "XXXXXX.XX", "kWh"))
        out += [F(f"{prefix}phase_{p}_quadrant_{q}_reactive_energy", "XXXXXX.XX", "kvarh") for q in (1, 2, 3, 4)]
    return out


def _demand24(prefix: str) -> list[Field]:
    """Same order as :func:`_energy24`, each a demand and its time (24 x 8 bytes)."""
    names = [(n.replace("_energy", "_max_demand"), "kW" if u == "kWh" else "kvar") for n, u in _ENERGY6]
    for _ph, p, _pz in _PHASES:
        names += [(f"phase_{p}_forward_active_max_demand", "kW"), (f"phase_{p}_reverse_active_max_demand", "kW")]
        names += [(f"phase_{p}_quadrant_{q}_reactive_max_demand", "kvar") for q in (1, 2, 3, 4)]
    out: list[Field] = []
    for n, u in names:
        out += [F(prefix + n, "XX.XXXX", u), F(prefix + n + "_time", "YYMMDDhhmm")]
    return out


def _counted(di_count: int, key: str, zh: str, record_fields: list[Field] | None = None, records: int = 10,
             count_fmt: str = "XXXXXX") -> None:
    """A count item (DI0 00) and records 01..records (上n次), as most 0330xx / 0311xx events."""
    _one(di_count, f"{key}_count", f"{zh}总次数", count_fmt, "")
    if record_fields is not None:
        for n in range(1, records + 1):
            _rec(di_count + n, f"{key}_record_{n}", f"(上{n}次){zh}记录", record_fields)


def _count_time(prefix_name: str, zh: str) -> list[Field]:
    return [F(f"{prefix_name}count", "XXXXXX"), F(f"{prefix_name}cumulative_time", "XXXXXX", "min")]


# 2007-text phase events: one item holds count and cumulative time of A, B, C (3 x 6 bytes)
for _di2, _key, _zh in ((0x01, "loss_of_voltage", "失压"), (0x02, "undervoltage", "欠压"),
                        (0x03, "overvoltage", "过压"), (0x04, "phase_failure", "断相"),
                        (0x0B, "loss_of_current", "失流"), (0x0C, "overcurrent", "过流"),
                        (0x0D, "current_cut", "断流"), (0x0E, "reverse_power", "潮流反向"),
                        (0x0F, "overload", "过载")):
    _rec(0x03000000 | _di2 << 16, f"{_key}_totals_abc", f"A、B、C相{_zh}总次数及总累计时间",
         sum((_count_time(f"phase_{p}_", _zh) for _ph, p, _pz in _PHASES), []))
for _di2, _key, _zh in ((0x05, "total_loss_of_voltage", "全失压"), (0x06, "auxiliary_power_loss", "辅助电源失电"),
                        (0x07, "voltage_reverse_sequence", "电压逆相序"),
                        (0x08, "current_reverse_sequence", "电流逆相序"),
                        (0x09, "voltage_unbalance", "电压不平衡"), (0x0A, "current_unbalance", "电流不平衡")):
    _rec(0x03000000 | _di2 << 16, f"{_key}_totals", f"{_zh}总次数及总累计时间", _count_time("", _zh))
for _n in range(1, 11):
    _rec(0x03050000 + _n, f"total_loss_of_voltage_record_{_n}", f"(上{_n}次)全失压记录",
         [F("start_time", _T6), F("current", "XXX.XXX", "A"), F("end_time", _T6)])
    _rec(0x03060000 + _n, f"auxiliary_power_loss_record_{_n}", f"(上{_n}次)辅助电源失电记录",
         [F("start_time", _T6), F("end_time", _T6)])

_counted(0x03110000, "power_down", "掉电", [F("start_time", _T6), F("end_time", _T6)])
_counted(0x03300000, "programming", "编程",
         [F("time", _T6), F(*_OP)] + [F(f"programmed_di_{k}", "NNNNNNNN") for k in range(1, 11)])
_counted(0x03300100, "meter_reset", "电表清零", [F("time", _T6), F(*_OP)] + _energy24("before_"))
_counted(0x03300200, "demand_reset", "需量清零", [F("time", _T6), F(*_OP)] + _demand24("before_"))
_counted(0x03300300, "event_reset", "事件清零", [F("time", _T6), F(*_OP), F("cleared_di", "NNNNNNNN")])
_counted(0x03300400, "clock_set", "校时", [F(*_OP), F("time_before", _T6), F("time_after", _T6)])
_counted(0x03300500, "day_table_programming", "时段表编程")        # record: 2 x 8 day tables, left out
_counted(0x03300600, "time_zone_programming", "时区表编程")        # record: 2 x 14 zones, left out
_counted(0x03300700, "weekly_rest_programming", "周休日编程",
         [F("time", _T6), F(*_OP), F("previous_day_table", "XX")])
_counted(0x03300800, "holiday_programming", "节假日编程")           # record: 254 holidays, left out
_counted(0x03300900, "active_combination_programming", "有功组合方式编程",
         [F("time", _T6), F(*_OP), F("previous_word", "NN")])
_counted(0x03300A00, "reactive_combination_1_programming", "无功组合方式1编程",
         [F("time", _T6), F(*_OP), F("previous_word", "NN")])
_counted(0x03300B00, "reactive_combination_2_programming", "无功组合方式2编程",
         [F("time", _T6), F(*_OP), F("previous_word", "NN")])
_counted(0x03300C00, "settlement_day_programming", "结算日编程",
         [F("time", _T6), F(*_OP)] + [F(f"previous_settlement_day_{k}", "DDhh") for k in (1, 2, 3)])
_COVER = [F("start_time", _T6), F("end_time", _T6)] + [F(f"before_{n}", "XXXXXX.XX", u) for n, u in _ENERGY6] \
    + [F(f"after_{n}", "XXXXXX.XX", u) for n, u in _ENERGY6]
_counted(0x03300D00, "meter_cover_open", "开表盖", _COVER)
_counted(0x03300E00, "terminal_cover_open", "开端钮盒", _COVER)


# --- 10..1E events of the 2010 filing -----------------------------------------------------------------
# DI2 = phase (00 = the meter as a whole), DI1 = field, DI0 = 上n次 (01..0A).  DI1 01 is the start
# time; the end time sits after the start-time snapshot, at DI1 25 (voltage events), 21 (current
# events) or 12 (power events), as read by concentrators of several vendors.  The snapshot fields
# in between are not laid out here.
_PHASE_EVENTS = (
    (0x10, "loss_of_voltage", "失压", 0x25),
    (0x11, "undervoltage", "欠压", 0x25),
    (0x12, "overvoltage", "过压", 0x25),
    (0x13, "phase_failure", "断相", 0x25),
    (0x18, "loss_of_current", "失流", 0x21),
    (0x19, "overcurrent", "过流", 0x21),
    (0x1A, "current_cut", "断流", 0x21),
    (0x1B, "reverse_power", "潮流反向", 0x12),
    (0x1C, "overload", "过载", 0x12),
)
for _di3, _key, _zh, _end in _PHASE_EVENTS:
    for _ph, _p, _pz in _PHASES:
        _base = _di3 << 24 | _ph << 16
        _one(_base | 0x0001, f"phase_{_p}_{_key}_count", f"{_pz}相{_zh}总次数", "XXXXXX")
        _one(_base | 0x0002, f"phase_{_p}_{_key}_cumulative_time", f"{_pz}相{_zh}总累计时间", "XXXXXX", "min")
        for _n in range(1, 11):
            _one(_base | 0x0100 | _n, f"phase_{_p}_{_key}_start_time_{_n}", f"(上{_n}次){_pz}相{_zh}发生时刻", _T6)
            _one(_base | _end << 8 | _n, f"phase_{_p}_{_key}_end_time_{_n}", f"(上{_n}次){_pz}相{_zh}结束时刻", _T6)
_one(0x10000001, "loss_of_voltage_count", "失压总次数", "XXXXXX")
_one(0x10000002, "loss_of_voltage_cumulative_time", "失压总累计时间", "XXXXXX", "min")
_one(0x10000101, "loss_of_voltage_last_start_time", "最近1次失压发生时刻", _T6)
_one(0x10000201, "loss_of_voltage_last_end_time", "最近1次失压结束时刻", _T6)
for _di3, _key, _zh in ((0x14, "voltage_reverse_sequence", "电压逆相序"),
                        (0x15, "current_reverse_sequence", "电流逆相序"),
                        (0x16, "voltage_unbalance", "电压不平衡"), (0x17, "current_unbalance", "电流不平衡")):
    _one(_di3 << 24 | 0x0001, f"{_key}_count", f"{_zh}总次数", "XXXXXX")
    _one(_di3 << 24 | 0x0002, f"{_key}_cumulative_time", f"{_zh}总累计时间", "XXXXXX", "min")
    for _n in range(1, 11):
        _one(_di3 << 24 | 0x0100 | _n, f"{_key}_start_time_{_n}", f"(上{_n}次){_zh}发生时刻", _T6)

# relay trip (跳闸, 1D) and close (合闸, 1E): DI1 01 time, 02 operator code (FFFFFFFF when the meter
# acted on its own), 03..08 the six energy totals at the moment.  DI1 = FF is the whole record
# (34 bytes), DI0 = FF one field over the last 10 records (1D0001FF, 1D0002FF are what
# concentrators read for 拉合闸 read-back).  DI1 01/02 are confirmed by concentrator code; 03..08 are
# the filing's order (eight fields per record), not yet checked against a capture.
for _di3, _key, _zh in ((0x1D, "trip", "跳闸"), (0x1E, "close", "合闸")):
    _one(_di3 << 24 | 0x0001, f"{_key}_count", f"{_zh}总次数", "XXXXXX")
    _fields = [("time", "发生时刻", _T6, ""), ("operator_code", "操作者代码", "NNNNNNNN", "")] + [
        (n, f"{_zh}时{z}", "XXXXXX.XX", u) for (n, u), z in zip(
            _ENERGY6, ("正向有功总电能", "反向有功总电能", "第一象限无功总电能", "第二象限无功总电能",
                       "第三象限无功总电能", "第四象限无功总电能"))]
    for _di1, (_f, _fz, _fmt, _unit) in enumerate(_fields, start=1):
        _col = []
        for _n in range(1, 11):
            _col.append(_one(_di3 << 24 | _di1 << 8 | _n, f"{_key}_{_f}_{_n}", f"(上{_n}次){_zh}{_fz}", _fmt, _unit))
        _block(_di3 << 24 | _di1 << 8 | 0xFF, f"{_key}_{_f}_last_10_block", f"(上1~10次){_zh}{_fz}数据块", _col)
    for _n in range(1, 11):
        _block(_di3 << 24 | 0xFF00 | _n, f"{_key}_record_{_n}", f"(上{_n}次){_zh}记录",
               [_TABLE[_di3 << 24 | d1 << 8 | _n] for d1 in range(1, 9)])


# --- 04 parameters (参变量) ---------------------------------------------------------------------------
_one(0x04000101, "date_and_week", "日期及星期(其中0代表星期天)", "YYMMDDWW", access="rw")
_one(0x04000102, "time", "时间", "hhmmss", access="rw")
_one(0x04000103, "demand_period", "最大需量周期", "XX", "min", "rw")
_one(0x04000104, "demand_slip_time", "滑差时间", "XX", "min", "rw")
_one(0x04000105, "calibration_pulse_width", "校表脉冲宽度", "XXXX", "ms", "rw")
_one(0x04000106, "time_zone_table_switch_time", "两套时区表切换时间", "YYMMDDhhmm", access="rw")
_one(0x04000107, "day_table_switch_time", "两套日时段表切换时间", "YYMMDDhhmm", access="rw")
_one(0x04000108, "tariff_price_switch_time", "两套费率电价切换时间", "YYMMDDhhmm", access="rw")   # 2010
_one(0x04000109, "step_price_switch_time", "两套阶梯电价切换时间", "YYMMDDhhmm", access="rw")     # 2010
_one(0x04000201, "time_zone_count", "年时区数p", "XX", access="rw")
_one(0x04000202, "day_table_count", "日时段表数q", "XX", access="rw")
_one(0x04000203, "day_segment_count", "日时段数(每日切换数)m", "XX", access="rw")
_one(0x04000204, "tariff_count", "费率数k", "XX", access="rw")
_one(0x04000205, "holiday_count", "公共假日数n", "XXXX", access="rw")
_one(0x04000206, "harmonic_analysis_order", "谐波分析次数", "XX", access="rw")
_one(0x04000207, "step_count", "阶梯数", "XX", access="rw")                                  # 2010
_one(0x04000301, "auto_display_screens", "自动循环显示屏数", "XX", access="rw")
_one(0x04000302, "display_time_per_screen", "每屏显示时间", "XX", "s", "rw")
_one(0x04000303, "display_energy_decimals", "显示电能小数位数", "XX", access="rw")
_one(0x04000304, "display_power_decimals", "显示功率(最大需量)小数位数", "XX", access="rw")
_one(0x04000305, "key_display_screens", "按键循环显示屏数", "XX", access="rw")
_one(0x04000306, "ct_ratio", "电流互感器变比", "XXXXXX", access="rw")                       # 2010
_one(0x04000307, "pt_ratio", "电压互感器变比", "XXXXXX", access="rw")                       # 2010
_one(0x04000401, "comm_address", "通信地址", "S12", access="rw")   # written with 15H
_one(0x04000402, "meter_number", "表号", "S12", access="rw")
_one(0x04000403, "asset_code", "资产管理编码(ASCII码)", "A32", access="rw")
_one(0x04000404, "rated_voltage", "额定电压(ASCII码)", "A6")
_one(0x04000405, "rated_current", "额定电流/基本电流(ASCII码)", "A6")
_one(0x04000406, "max_current", "最大电流(ASCII码)", "A6")
_one(0x04000407, "active_accuracy_class", "有功准确度等级(ASCII码)", "A4")
_one(0x04000408, "reactive_accuracy_class", "无功准确度等级(ASCII码)", "A4")
_one(0x04000409, "active_constant", "电表有功常数", "XXXXXX", "imp/kWh")
_one(0x0400040A, "reactive_constant", "电表无功常数", "XXXXXX", "imp/kvarh")
_one(0x0400040B, "meter_model", "电表型号(ASCII码)", "A10")
_one(0x0400040C, "production_date", "生产日期(ASCII码)", "A10")
_one(0x0400040D, "protocol_version", "协议版本号(ASCII码)", "A16")

# Run status words (电表运行状态字).  Bit n is set when the named condition holds; multi-bit fields
# are split so that each value gets its own bit (power supply 01 = auxiliary, 10 = battery; meter
# type 01 = energy prepaid, 10 = money prepaid).  Word 3 drives disconnect read-back: bit 4 is the
# relay as it is (继电器状态), bit 6 the last command (继电器命令状态), bit 7 the pre-trip alarm,
# bit 12 protection (保电).  Bits 8..15 of words 1 and 3 come from the 2010/2013 smart-meter specs
# (reserved in the 2007 text); cross-read against the status-word tables of several meter firmwares
# and master stations, which agree.  Vendor extras (word 1 bit 0, bits 6..7; word 4..6 bits 14..15)
# are left out.
STATUS_WORD_BITS: dict[int, dict[int, str]] = {
    1: {1: "demand_interval_mode", 2: "clock_battery_low", 3: "reading_battery_low",
        4: "active_power_reverse", 5: "reactive_power_reverse", 8: "control_circuit_error",
        9: "esam_error", 12: "internal_program_error", 13: "memory_fault", 14: "overdraft",
        15: "clock_fault"},
    2: {0: "phase_a_active_power_reverse", 1: "phase_b_active_power_reverse",
        2: "phase_c_active_power_reverse", 4: "phase_a_reactive_power_reverse",
        5: "phase_b_reactive_power_reverse", 6: "phase_c_reactive_power_reverse"},
    3: {0: "second_day_table_set", 1: "power_supply_auxiliary", 2: "power_supply_battery",
        3: "programming_enabled", 4: "relay_open", 5: "second_time_zone_set", 6: "relay_command_open",
        7: "pre_trip_alarm", 8: "prepaid_energy_type", 9: "prepaid_money_type",
        10: "second_tariff_price_set", 11: "second_step_price_set", 12: "protected",
        13: "identity_authenticated", 14: "local_account_not_opened", 15: "remote_account_not_opened"},
    7: {0: "voltage_reverse_sequence", 1: "current_reverse_sequence", 2: "voltage_unbalance",
        3: "current_unbalance", 4: "auxiliary_power_loss", 5: "power_down", 6: "demand_over_limit",
        7: "power_factor_below_limit", 8: "current_severe_unbalance", 9: "meter_cover_open",
        10: "terminal_cover_open"},
}
STATUS_WORD_BITS_ZH: dict[int, dict[int, str]] = {
    1: {1: "需量积算方式(0滑差,1区间)", 2: "时钟电池(0正常,1欠压)", 3: "停电抄表电池(0正常,1欠压)",
        4: "有功功率方向(0正向,1反向)", 5: "无功功率方向(0正向,1反向)", 8: "控制回路错误",
        9: "ESAM错误", 12: "内部程序错误", 13: "存储器故障或损坏", 14: "透支状态", 15: "时钟故障"},
    2: {0: "A相有功功率方向(0正向,1反向)", 1: "B相有功功率方向(0正向,1反向)", 2: "C相有功功率方向(0正向,1反向)",
        4: "A相无功功率方向(0正向,1反向)", 5: "B相无功功率方向(0正向,1反向)", 6: "C相无功功率方向(0正向,1反向)"},
    3: {0: "当前运行时段(0第一套,1第二套)", 1: "供电方式:辅助电源(01)", 2: "供电方式:电池供电(10)",
        3: "编程允许/红外认证(0禁止,1许可)", 4: "继电器状态(0通,1断)", 5: "当前运行时区(0第一套,1第二套)",
        6: "继电器命令状态(0通,1断)", 7: "预跳闸报警状态(0无,1有)", 8: "电能表类型:电量型预付费(01)",
        9: "电能表类型:电费型预付费(10)", 10: "当前运行分时费率(0第一套,1第二套)",
        11: "当前阶梯(0第一套,1第二套)", 12: "保电状态(0非保电,1保电)", 13: "身份认证状态(0失效,1有效)",
        14: "本地开户(0开户,1未开户)", 15: "远程开户(0开户,1未开户)"},
    7: {0: "电压逆相序", 1: "电流逆相序", 2: "电压不平衡", 3: "电流不平衡", 4: "辅助电源失电", 5: "掉电",
        6: "需量超限", 7: "总功率因数超下限", 8: "电流严重不平衡", 9: "开表盖", 10: "开端钮盒"},
}
for _w, (_p, _pz) in zip((4, 5, 6), (("a", "A"), ("b", "B"), ("c", "C"))):   # 4/5/6: phase A/B/C faults
    _faults = ("loss_of_voltage", "undervoltage", "overvoltage", "loss_of_current", "overcurrent",
               "overload", "reverse_power", "phase_failure", "current_cut")
    _faults_zh = ("失压", "欠压", "过压", "失流", "过流", "过载", "潮流反向", "断相", "断流")
    STATUS_WORD_BITS[_w] = {b: f"phase_{_p}_{n}" for b, n in enumerate(_faults)}
    STATUS_WORD_BITS_ZH[_w] = {b: f"{_pz}相{n}" for b, n in enumerate(_faults_zh)}
STATUS_WORD_BITS = dict(sorted(STATUS_WORD_BITS.items()))
STATUS_WORD_BITS_ZH = dict(sorted(STATUS_WORD_BITS_ZH.items()))

_one(0x04000501, "status_word_1", "电表运行状态字1", "NNNN")
_one(0x04000502, "status_word_2", "电表运行状态字2", "NNNN")
_one(0x04000503, "status_word_3", "电表运行状态字3(操作类)", "NNNN")
_one(0x04000504, "status_word_4", "电表运行状态字4(A相故障状态)", "NNNN")
_one(0x04000505, "status_word_5", "电表运行状态字5(B相故障状态)", "NNNN")
_one(0x04000506, "status_word_6", "电表运行状态字6(C相故障状态)", "NNNN")
_one(0x04000507, "status_word_7", "电表运行状态字7(合相故障状态)", "NNNN")
_block(0x040005FF, "status_word_block", "电表运行状态字数据块", [_TABLE[0x04000500 + k] for k in range(1, 8)])


def status_flags(word: int, raw: int) -> frozenset[str]:
    """Names of the conditions set in status word ``word`` (1..7) with value ``raw`` (0..0xFFFF)."""
    bits = STATUS_WORD_BITS.get(word, {})
    return frozenset(name for bit, name in bits.items() if raw >> bit & 1)


_one(0x04000601, "active_combination_word", "有功组合方式特征字", "NN", access="rw")
_one(0x04000602, "reactive_combination_1_word", "无功组合方式1特征字", "NN", access="rw")
_one(0x04000603, "reactive_combination_2_word", "无功组合方式2特征字", "NN", access="rw")
_one(0x04000701, "ir_modulated_baud_word", "调制型红外光口通信速率特征字", "NN", access="rw")
_one(0x04000702, "ir_contact_baud_word", "接触式红外光口通信速率特征字", "NN", access="rw")
_one(0x04000703, "port_1_baud_word", "通信口1通信速率特征字", "NN", access="rw")
_one(0x04000704, "port_2_baud_word", "通信口2通信速率特征字", "NN", access="rw")
_one(0x04000705, "port_3_baud_word", "通信口3通信速率特征字", "NN", access="rw")
_one(0x04000801, "weekly_rest_word", "周休日特征字", "NN", access="rw")
_one(0x04000802, "weekly_rest_day_table", "周休日采用的日时段表号", "XX", access="rw")
_one(0x04000901, "load_record_mode_word", "负荷记录模式字", "NN", access="rw")
_one(0x04000902, "timed_freeze_mode_word", "定时冻结数据模式字(2007: 冻结数据模式字)", "NN", access="rw")
_one(0x04000903, "instant_freeze_mode_word", "瞬时冻结数据模式字", "NN", access="rw")          # 2010
_one(0x04000904, "agreed_freeze_mode_word", "约定冻结数据模式字", "NN", access="rw")           # 2010
_one(0x04000905, "hourly_freeze_mode_word", "整点冻结数据模式字", "NN", access="rw")           # 2010
_one(0x04000906, "daily_freeze_mode_word", "日冻结数据模式字", "NN", access="rw")              # 2010
_one(0x04000A01, "load_record_start_time", "负荷记录起始时间", "MMDDhhmm", access="rw")
for _k in range(1, 7):
    _one(0x04000A01 + _k, f"load_record_interval_class_{_k}", f"第{_k}类负荷记录间隔时间", "XXXX", "min", "rw")
for _k in range(1, 4):
    _one(0x04000B00 + _k, f"settlement_day_{_k}", f"每月第{_k}结算日", "DDhh", access="rw")
for _k in range(10):
    # write-only: the first byte is the level, the other three the password (written with 18H)
    _one(0x04000C01 + _k, f"password_level_{_k}", f"{_k}级密码", "NNNNNNNN", access="w")
_one(0x04000E01, "forward_active_power_limit", "正向有功功率上限值", "XX.XXXX", "kW", "rw")
_one(0x04000E02, "reverse_active_power_limit", "反向有功功率上限值", "XX.XXXX", "kW", "rw")
_one(0x04000E03, "voltage_upper_limit", "电压上限值", "XXX.X", "V", "rw")
_one(0x04000E04, "voltage_lower_limit", "电压下限值", "XXX.X", "V", "rw")
# prepayment limits of the 2010 filing (费控)
_one(0x04000F01, "alarm_energy_limit_1", "报警电量1限值", "XXXXXX.XX", "kWh", "rw")
_one(0x04000F02, "alarm_energy_limit_2", "报警电量2限值", "XXXXXX.XX", "kWh", "rw")
_one(0x04000F03, "hoard_energy_limit", "囤积电量限值", "XXXXXX.XX", "kWh", "rw")
_one(0x04000F04, "overdraft_energy_limit", "透支电量限值", "XXXXXX.XX", "kWh", "rw")
_one(0x04001001, "alarm_money_limit_1", "报警金额1限值", "XXXXXX.XX", "yuan", "rw")
_one(0x04001002, "alarm_money_limit_2", "报警金额2限值", "XXXXXX.XX", "yuan", "rw")
_one(0x04001003, "overdraft_money_limit", "透支金额限值", "XXXXXX.XX", "yuan", "rw")
_one(0x04001004, "hoard_money_limit", "囤积金额限值", "XXXXXX.XX", "yuan", "rw")
_one(0x04001005, "close_allowed_money_limit", "合闸允许金额限值", "XXXXXX.XX", "yuan", "rw")
for _k in range(1, 255):
    # 公共假日: YYMMDDNN = date then day-table number; on the wire NN comes first
    _rec(0x04030000 + _k, f"holiday_{_k}", f"第{_k}公共假日日期及日时段表号",
         [F("day_table", "XX"), F("date", "YYMMDD")], access="rw")
_one(0x04800001, "vendor_software_version", "厂家软件版本号(ASCII码)", "A32")
_one(0x04800002, "vendor_hardware_version", "厂家硬件版本号(ASCII码)", "A32")
_one(0x04800003, "vendor_number", "厂家编号(ASCII码)", "A32")


# --- 05 frozen data (冻结量) --------------------------------------------------------------------------
# DI2 freeze, DI1 content, DI0 上n次.  Energy and demand contents are "total + each tariff" of the
# meter (XXXXXX.XX x (M+1)), so they are members-items built from the current registers: a
# 4-tariff meter sends 5 values, a single-rate meter 1.  05xx10xx (variables) is a fixed record of
# active power total/A/B/C then reactive power total/A/B/C.
_FREEZES = (
    (0x00, "timed_freeze", "定时冻结", 12),
    (0x01, "instant_freeze", "瞬时冻结", 3),
    (0x02, "zone_table_switch_freeze", "两套时区表切换冻结", 2),
    (0x03, "day_table_switch_freeze", "两套日时段表切换冻结", 2),
    (0x06, "daily_freeze", "日冻结", 62),
)
_FROZEN_VARIABLES = tuple(
    F(n, "±XX.XXXX", u) for n, u in
    (("active_power_total", "kW"), ("phase_a_active_power", "kW"), ("phase_b_active_power", "kW"),
     ("phase_c_active_power", "kW"), ("reactive_power_total", "kvar"), ("phase_a_reactive_power", "kvar"),
     ("phase_b_reactive_power", "kvar"), ("phase_c_reactive_power", "kvar")))


def _build_freeze(di2: int, key: str, zh: str, count: int) -> None:
    for n in range(1, count + 1):
        base = 0x05000000 | di2 << 16 | n
        _one(base, f"{key}_time_{n}", f"(上{n}次){zh}时间", "YYMMDDhhmm")
        for d2 in range(1, 9):
            k = _KIND[d2]
            _add(DataItem(base | d2 << 8, f"{key}_{k[1]}_energy_{n}", f"(上{n}次){zh}{k[2]}电能数据",
                          members=tuple(_member(d2 << 16 | t << 8) for t in _TARIFFS)))
        for d1, d2 in ((0x09, 0x01), (0x0A, 0x02)):
            k = _KIND[d2]
            _add(DataItem(base | d1 << 8, f"{key}_{k[1]}_max_demand_{n}", f"(上{n}次){zh}{k[2]}最大需量及发生时间数据",
                          members=tuple(_member(0x01000000 | d2 << 16 | t << 8) for t in _TARIFFS)))
        _rec(base | 0x1000, f"{key}_variables_{n}", f"(上{n}次){zh}变量数据", _FROZEN_VARIABLES)


def _build_hourly_freeze() -> None:
    for n in range(1, 255):
        # 整点冻结 keeps only the two active totals
        _one(0x05040000 + n, f"hourly_freeze_time_{n}", f"(上{n}次)整点冻结时间", "YYMMDDhhmm")
        _one(0x05040100 + n, f"hourly_freeze_forward_active_energy_{n}", f"(上{n}次)整点冻结正向有功总电能",
             "XXXXXX.XX", "kWh")
        _one(0x05040200 + n, f"hourly_freeze_reverse_active_energy_{n}", f"(上{n}次)整点冻结反向有功总电能",
             "XXXXXX.XX", "kWh")


for _freeze in _FREEZES:
    _LAZY[0x0500 | _freeze[0]] = partial(_build_freeze, *_freeze)
_LAZY[0x0504] = _build_hourly_freeze


# --- 06 load records (负荷记录) -----------------------------------------------------------------------
# 060000xx answer with the variable-layout record of decode_load_record (fields and members empty:
# the caller routes them there).  The request appends NN (number of records) and, for 06000001,
# the start time.
_add(DataItem(0x06000000, "load_record_earliest", "最早记录块", request_extra="N"))
_add(DataItem(0x06000001, "load_record_at_time", "给定时间记录块", request_extra="N+YYMMDDhhmm"))
_add(DataItem(0x06000002, "load_record_latest", "最近一个记录块", request_extra="N"))

# Per-quantity curves of the 2010 filing (0610xxxx): request DI + NN points + start time
# (mmhhDDMMYY on the wire); the answer is the start time then the points in the quantity's own
# format, oldest first.  Modelled as members so that a short answer decodes: start time, point 1..
_CURVE_POINTS = 96     # one day of 15-minute points; a longer answer is a RemoteProtocolError
_CURVES = [
    (0x0101, "phase_a_voltage", "A相电压", "XXX.X", "V"), (0x0102, "phase_b_voltage", "B相电压", "XXX.X", "V"),
    (0x0103, "phase_c_voltage", "C相电压", "XXX.X", "V"),
    (0x0201, "phase_a_current", "A相电流", "±XXX.XXX", "A"), (0x0202, "phase_b_current", "B相电流", "±XXX.XXX", "A"),
    (0x0203, "phase_c_current", "C相电流", "±XXX.XXX", "A"),
    (0x0300, "active_power_total", "总有功功率", "±XX.XXXX", "kW"),
    (0x0400, "reactive_power_total", "总无功功率", "±XX.XXXX", "kvar"),
    (0x0500, "power_factor_total", "总功率因数", "±X.XXX", ""),
    (0x0601, "forward_active_energy_total", "正向有功总电能", "XXXXXX.XX", "kWh"),
    (0x0602, "reverse_active_energy_total", "反向有功总电能", "XXXXXX.XX", "kWh"),
    (0x0603, "combined_reactive_1_energy_total", "组合无功1总电能", "±XXXXXX.XX", "kvarh"),
    (0x0604, "combined_reactive_2_energy_total", "组合无功2总电能", "±XXXXXX.XX", "kvarh"),
    (0x0701, "quadrant_1_reactive_energy_total", "第一象限无功总电能", "XXXXXX.XX", "kvarh"),
    (0x0702, "quadrant_2_reactive_energy_total", "第二象限无功总电能", "XXXXXX.XX", "kvarh"),
    (0x0703, "quadrant_3_reactive_energy_total", "第三象限无功总电能", "XXXXXX.XX", "kvarh"),
    (0x0704, "quadrant_4_reactive_energy_total", "第四象限无功总电能", "XXXXXX.XX", "kvarh"),
    (0x0801, "current_active_demand", "当前有功需量", "±XX.XXXX", "kW"),
    (0x0802, "current_reactive_demand", "当前无功需量", "±XX.XXXX", "kvar"),
]
for _d2, _key, _zh in ((0x03, "active_power", "有功功率"), (0x04, "reactive_power", "无功功率"),
                       (0x05, "power_factor", "功率因数")):
    _fmt, _unit = {0x03: ("±XX.XXXX", "kW"), 0x04: ("±XX.XXXX", "kvar"), 0x05: ("±X.XXX", "")}[_d2]
    _CURVES += [(_d2 << 8 | _ph, f"phase_{_p}_{_key}", f"{_pz}相{_zh}", _fmt, _unit) for _ph, _p, _pz in _PHASES]


def _build_curves() -> None:
    for low, key, zh, fmt, unit in sorted(_CURVES):
        di = 0x06100000 | low
        members = [DataItem(di, f"curve_{key}_start", "曲线起始时间", (F("start_time", "YYMMDDhhmm"),))]
        members += [DataItem(di, f"curve_{key}_point_{k}", f"第{k}点", (F(f"{key}_{k}", fmt, unit),))
                    for k in range(1, _CURVE_POINTS + 1)]
        _add(DataItem(di, f"curve_{key}", f"{zh}曲线", members=tuple(members), request_extra="N+YYMMDDhhmm"))


_LAZY[0x0610] = _build_curves


# --- load record (负荷记录块, clause A.6 of the 2007 text) ---------------------------------------------
_SECTIONS = (
    ("voltage_current_frequency", DataItem(0x06000000, "voltage_current_frequency", "电压、电流、频率", (
        F("phase_a_voltage", "XXX.X", "V"), F("phase_b_voltage", "XXX.X", "V"), F("phase_c_voltage", "XXX.X", "V"),
        F("phase_a_current", "±XXX.XXX", "A"), F("phase_b_current", "±XXX.XXX", "A"),
        F("phase_c_current", "±XXX.XXX", "A"), F("grid_frequency", "XX.XX", "Hz")))),
    ("power", DataItem(0x06000000, "power", "有、无功功率", _FROZEN_VARIABLES)),
    ("power_factor", DataItem(0x06000000, "power_factor", "功率因数", (
        F("power_factor_total", "±X.XXX"), F("phase_a_power_factor", "±X.XXX"),
        F("phase_b_power_factor", "±X.XXX"), F("phase_c_power_factor", "±X.XXX")))),
    ("energy", DataItem(0x06000000, "energy", "有、无功总电能", (
        F("forward_active_energy_total", "XXXXXX.XX", "kWh"), F("reverse_active_energy_total", "XXXXXX.XX", "kWh"),
        F("combined_reactive_1_energy_total", "±XXXXXX.XX", "kvarh"),
        F("combined_reactive_2_energy_total", "±XXXXXX.XX", "kvarh")))),
    ("quadrant_reactive_energy", DataItem(0x06000000, "quadrant_reactive_energy", "四象限无功总电能", tuple(
        F(f"quadrant_{q}_reactive_energy_total", "XXXXXX.XX", "kvarh") for q in (1, 2, 3, 4)))),
    ("demand", DataItem(0x06000000, "demand", "当前需量", (
        F("current_active_demand", "±XX.XXXX", "kW"), F("current_reactive_demand", "±XX.XXXX", "kvar")))),
)
_RECORD_TIME = F("time", "YYMMDDhhmm")
_RECORD_MIN = 2 + 1 + 5 + 6 + 1 + 2       # header, length, time, six empty sections, CS, end


def decode_load_record(data: bytes) -> dict[str, Any]:
    """Parse the answer to 06000000/01/02: one or more load records (负荷记录块), back to back.

    Layout of one record (every section optional: a class the meter does not record is just its
    AAH separator)::

        A0 A0  L  time(5)  [V A,B,C 2x3 | I A,B,C 3x3 | Hz 2] AA  [P tot,A,B,C 3x4 | Q tot,A,B,C 3x4] AA
                  [PF tot,A,B,C 2x4] AA  [+P, -P, Q1 comb, Q2 comb totals 4x4] AA
                  [quadrant I..IV reactive totals 4x4] AA  [current P, Q demand 3x2] AA  CS  E5 E5

    L (one binary byte) counts from the time to the last AAH; CS is the sum of every byte from
    the first A0H to the last AAH, modulo 256; the time is YYMMDDhhmm (minute first on the wire).
    Section sizes are 17, 24, 8, 16, 16, 6 bytes.  Returns ``{"records": [record, ...]}``, each
    record ``{"time": ISO text, "time_digits": "YYMMDDhhmm", "sections": {name: [value JSON]}}``
    with only the sections present.  Anything else is a :class:`RemoteProtocolError`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RemoteProtocolError(f"load record: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    records = []
    pos = 0
    while pos < len(data):
        record, pos = _load_record_at(data, pos)
        records.append(record)
    if not records:
        raise RemoteProtocolError("load record: no data")
    return {"records": records}


def _load_record_at(data: bytes, start: int) -> tuple[dict[str, Any], int]:
    n = len(data)
    where = f"load record at byte {start}"
    if n - start < _RECORD_MIN:
        raise RemoteProtocolError(f"{where}: {n - start} bytes, a record needs at least {_RECORD_MIN}")
    if data[start] != 0xA0 or data[start + 1] != 0xA0:
        raise RemoteProtocolError(f"{where}: starts {data[start]:02X} {data[start + 1]:02X}, expected A0 A0")
    length = data[start + 2]
    body = start + 3                      # first byte of the time
    cs_at = body + length
    if cs_at + 3 > n:
        raise RemoteProtocolError(f"{where}: length byte says {length} bytes, only {n - body - 3} before CS/E5 E5")
    cs = sum(data[start:cs_at]) & 0xFF
    if data[cs_at] != cs:
        raise RemoteProtocolError(f"{where}: checksum {data[cs_at]:02X}, computed {cs:02X}")
    if data[cs_at + 1] != 0xE5 or data[cs_at + 2] != 0xE5:
        raise RemoteProtocolError(f"{where}: ends {data[cs_at + 1]:02X} {data[cs_at + 2]:02X}, expected E5 E5")
    if length < 5 + 6:
        raise RemoteProtocolError(f"{where}: length {length} cannot hold the time and six separators")
    digits = data[body:body + 5][::-1].hex()
    t = Value("time", int(digits) if digits.isdigit() else None, 0, "", _RECORD_TIME.kind, _RECORD_TIME.fmt)
    if t.raw is None or t.value is None:
        raise RemoteProtocolError(f"{where}: time {digits.upper()} is not a valid YYMMDDhhmm")
    p = body + 5
    sections = {}
    for name, item in _SECTIONS:
        if p >= cs_at:
            raise RemoteProtocolError(f"{where}: section {name} missing before the checksum")
        if data[p] != 0xAA:
            end = p + item.size
            if end >= cs_at or data[end] != 0xAA:
                raise RemoteProtocolError(
                    f"{where}: section {name} at byte {p} is not {item.size} bytes followed by AA")
            sections[name] = [v.to_json() for v in item.decode(data, p, end)]
            p = end
        p += 1                            # the AAH separator
    if p != cs_at:
        raise RemoteProtocolError(f"{where}: {cs_at - p} bytes after the last section, before the checksum")
    return {"time": t.text, "time_digits": t.digits, "sections": sections}, cs_at + 3


# --- public ------------------------------------------------------------------------------------------
def lookup(di: int) -> DataItem | None:
    """The data item for identifier ``di`` (DI3 DI2 DI1 DI0 as one int), blocks included; None if unknown."""
    item = _TABLE.get(di)
    if item is None and type(di) is int and 0 <= di <= 0xFFFFFFFF:
        return _get(di)             # first use of a generated item, or an unknown DI
    return item


def items() -> Iterator[DataItem]:
    """Every non-block item the registry knows (generated families included), in DI order."""
    global _SORTED
    if _SORTED is None:
        _build_all()
        _SORTED = tuple(sorted((i for i in _TABLE.values() if not _is_block_di(i.di)), key=lambda i: i.di))
    return iter(_SORTED)


def by_name(name: str) -> DataItem:
    """The item called ``name`` (blocks included); KeyError if there is none."""
    item = _BY_NAME.get(name)
    if item is None:
        _build_all()
        item = _BY_NAME.get(name)
        if item is None:
            raise KeyError(f"no DL/T 645 data item named {name!r}")
    return item


def _is_block_di(di: int) -> bool:
    """Blocks are exactly the identifiers with an FFH byte (no plain item here has one)."""
    return 0xFF in di.to_bytes(4, "big")


_SORTED: tuple[DataItem, ...] | None = None

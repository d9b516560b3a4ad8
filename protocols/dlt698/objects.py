"""DL/T 698.45 object registry (对象标识 OI) with the scaler and unit of each value attribute.

An object is named by its OI (2 bytes); an attribute by OAD = OI, attribute number (bits 0-4; bits 5-7
are the attribute feature), element index (0 = the whole attribute).  Attribute 2 of the
measurement classes is the value; its scaler/unit (换算及单位, attribute 3) is fixed by the standard
(DL/T 698.45 appendix E), so a head-end knows that 00100200 = array of double-long-unsigned × 10^-2 kWh
without asking the meter.

Layouts of array attributes (what element i means):
  ``total_tariffs``  total, tariff 1 (尖), 2 (峰), 3 (平), 4 (谷), ...     energy 0000-00A3, demand 1010-10A3
  ``phases``         phase A, B, C                                        voltage 2000, current 2001
  ``total_phases``   total, phase A, B, C                                 power 2004-2006, power factor 200A
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# unit enumeration (DL/T 698.45 appendix: 单位 enum), the codes a Scaler_Unit carries
UNITS: dict[int, str] = {
    1: "a", 2: "mo", 3: "wk", 4: "d", 5: "h", 6: "min", 7: "s", 8: "°", 9: "℃", 10: "currency",
    11: "m", 12: "m/s", 13: "m³", 14: "m³", 15: "m³/h", 16: "m³/h", 17: "m³/d", 18: "m³/d", 19: "l",
    20: "kg", 21: "N", 22: "Nm", 23: "Pa", 24: "bar", 25: "J", 26: "J/h",
    27: "W", 28: "kW", 29: "VA", 30: "kVA", 31: "var", 32: "kvar", 33: "kWh", 34: "kVAh", 35: "kvarh",
    36: "A", 37: "C", 38: "V", 39: "V/m", 40: "F", 41: "Ω", 42: "Ωm²/m", 43: "Wb", 44: "T", 45: "A/m",
    46: "H", 47: "Hz", 48: "1/(Wh)", 49: "1/(varh)", 50: "1/(VAh)", 51: "%", 52: "byte", 53: "dBm",
    54: "yuan/kWh", 55: "Ah", 56: "ms", 254: "other", 255: "",
}
UNIT_CODES = {v: k for k, v in reversed(UNITS.items())}


@dataclass(frozen=True, slots=True)
class Attribute:
    """An attribute's meaning: ``scaler`` (value = raw × 10^scaler) and ``unit`` apply to numbers in it."""

    number: int
    name: str
    name_zh: str = ""
    scaler: int | None = None
    unit: str = ""
    layout: str = ""          # total_tariffs / phases / total_phases / record / "" (a single value)
    type: str = ""            # the type of the attribute (or of its elements, for arrays)

    def element_name(self, index: int) -> str:
        """The name of element ``index`` (1-based) of an array attribute, e.g. ``tariff_2``."""
        if self.layout == "total_tariffs":
            return "total" if index == 1 else f"tariff_{index - 1}"
        if self.layout == "phases":
            return "abc"[index - 1] if 1 <= index <= 3 else f"element_{index}"
        if self.layout == "total_phases":
            return ("total", "a", "b", "c")[index - 1] if 1 <= index <= 4 else f"element_{index}"
        return f"element_{index}"


@dataclass(frozen=True, slots=True)
class ObjectDef:
    oi: int
    name: str
    name_zh: str
    class_id: int
    attributes: dict[int, Attribute] = field(default_factory=dict)   # number -> Attribute
    methods: dict[int, str] = field(default_factory=dict)            # number -> name

    def attribute(self, number: int) -> Attribute | None:
        return self.attributes.get(number)


_OBJECTS: dict[int, ObjectDef] = {}
_LOGICAL_NAME = Attribute(1, "logical_name", "逻辑名", type="octet-string")
_SCALER_UNIT = Attribute(3, "scaler_unit", "换算及单位", type="Scaler_Unit")


def _add(oi: int, name: str, name_zh: str, class_id: int, *attrs: Attribute,
         methods: dict[int, str] | None = None) -> None:
    a = {1: _LOGICAL_NAME}
    for x in attrs:
        a[x.number] = x
    _OBJECTS[oi] = ObjectDef(oi, name, name_zh, class_id, a, methods or {})


# --- energy (class 1), appendix E.1: attr 2 total + tariffs ×10^-2, attr 4 extended precision ×10^-4 --
_ENERGY = [
    (0x0000, "combined_active_energy", "组合有功电能", "kWh", True),
    (0x0010, "forward_active_energy", "正向有功电能", "kWh", False),
    (0x0020, "reverse_active_energy", "反向有功电能", "kWh", False),
    (0x0030, "combined_reactive_1_energy", "组合无功1电能", "kvarh", True),
    (0x0040, "combined_reactive_2_energy", "组合无功2电能", "kvarh", True),
    (0x0050, "quadrant_1_reactive_energy", "第一象限无功电能", "kvarh", False),
    (0x0060, "quadrant_2_reactive_energy", "第二象限无功电能", "kvarh", False),
    (0x0070, "quadrant_3_reactive_energy", "第三象限无功电能", "kvarh", False),
    (0x0080, "quadrant_4_reactive_energy", "第四象限无功电能", "kvarh", False),
    (0x0090, "forward_apparent_energy", "正向视在电能", "kVAh", False),
    (0x00A0, "reverse_apparent_energy", "反向视在电能", "kVAh", False),
]
_PHASES = [(0, "", "", "total_tariffs"), (1, "_a", "A相", "total_tariffs"), (2, "_b", "B相", "total_tariffs"),
           (3, "_c", "C相", "total_tariffs")]
for _oi, _n, _zh, _u, _signed in _ENERGY:
    for _k, _sfx, _pzh, _lay in _PHASES:
        _add(_oi + _k, _n + _sfx, _pzh + _zh, 1,
             Attribute(2, "energy", "总及费率电能量", -2, _u, _lay, "double-long" if _signed else "double-long-unsigned"),
             _SCALER_UNIT,
             Attribute(4, "energy_extended", "高精度总及费率电能量", -4, _u, _lay, "long64" if _signed else "long64-unsigned"),
             Attribute(5, "scaler_unit_extended", "高精度换算及单位", type="Scaler_Unit"))
        # maximum demand (class 2), appendix E.2: array of structure {double-long(-unsigned) ×10^-4, date_time_s}
        if _oi:
            _dn = _n.replace("_energy", "_max_demand")
            _du = {"kWh": "kW", "kvarh": "kvar", "kVAh": "kVA"}[_u]
            # the standard's table E.2 names quadrant demand 第一象限最大需量 (no 无功)
            _add(0x1000 + _oi + _k, _dn + _sfx, _pzh + _zh.replace("无功电能", "最大需量").replace("电能", "最大需量"), 2,
                 Attribute(2, "max_demand", "总及费率最大需量", -4, _du, _lay, "structure{demand,time}"),
                 _SCALER_UNIT)

# --- variables (classes 3, 4, 6), appendix E.3 -------------------------------------------------------
_add(0x2000, "voltage", "电压", 3, Attribute(2, "value", "数值组", -1, "V", "phases", "long-unsigned"), _SCALER_UNIT)
_add(0x2001, "current", "电流", 3, Attribute(2, "value", "数值组", -3, "A", "phases", "double-long"), _SCALER_UNIT,
     Attribute(4, "neutral_current", "零线电流", -3, "A", "", "double-long"))
_add(0x2002, "voltage_phase_angle", "电压相角", 3, Attribute(2, "value", "数值组", -1, "°", "phases", "long-unsigned"),
     _SCALER_UNIT)
_add(0x2003, "voltage_current_phase_angle", "电压电流相角", 3,
     Attribute(2, "value", "数值组", -1, "°", "phases", "long-unsigned"), _SCALER_UNIT)
_add(0x2004, "active_power", "有功功率", 4, Attribute(2, "value", "数值组", -1, "W", "total_phases", "double-long"),
     _SCALER_UNIT)
_add(0x2005, "reactive_power", "无功功率", 4,
     Attribute(2, "value", "数值组", -1, "var", "total_phases", "double-long"), _SCALER_UNIT)
_add(0x2006, "apparent_power", "视在功率", 4,
     Attribute(2, "value", "数值组", -1, "VA", "total_phases", "double-long"), _SCALER_UNIT)
_add(0x2007, "one_minute_active_power", "一分钟平均有功功率", 4,
     Attribute(2, "value", "数值组", -1, "W", "total_phases", "double-long"), _SCALER_UNIT)
_add(0x200A, "power_factor", "功率因数", 4, Attribute(2, "value", "数值组", -3, "", "total_phases", "long"),
     _SCALER_UNIT)
_add(0x200B, "voltage_distortion", "电压波形失真度", 3, Attribute(2, "value", "数值组", -2, "%", "phases", "long"),
     _SCALER_UNIT)
_add(0x200C, "current_distortion", "电流波形失真度", 3, Attribute(2, "value", "数值组", -2, "%", "phases", "long"),
     _SCALER_UNIT)
_add(0x200F, "grid_frequency", "电网频率", 6, Attribute(2, "value", "数值", -2, "Hz", "", "long-unsigned"), _SCALER_UNIT)
_add(0x2010, "meter_temperature", "表内温度", 6, Attribute(2, "value", "数值", -1, "℃", "", "long"), _SCALER_UNIT)
_add(0x2011, "clock_battery_voltage", "时钟电池电压", 6, Attribute(2, "value", "数值", -2, "V", "", "long-unsigned"),
     _SCALER_UNIT)
_add(0x2013, "clock_battery_working_time", "时钟电池工作时间", 6,
     Attribute(2, "value", "数值", 0, "min", "", "double-long-unsigned"), _SCALER_UNIT)
_add(0x2014, "meter_status_words", "电能表运行状态字", 6,
     Attribute(2, "value", "运行状态字1～7", None, "", "status_words", "bit-string"), _SCALER_UNIT)
_add(0x2015, "follow_report_status_word", "电能表跟随上报状态字", 6,
     Attribute(2, "value", "跟随上报状态字", None, "", "", "bit-string"), _SCALER_UNIT)
_add(0x2017, "active_demand", "当前有功需量", 6, Attribute(2, "value", "数值", -4, "kW", "", "double-long"), _SCALER_UNIT)
_add(0x2018, "reactive_demand", "当前无功需量", 6, Attribute(2, "value", "数值", -4, "kvar", "", "double-long"),
     _SCALER_UNIT)
_add(0x2019, "apparent_demand", "当前视在需量", 6, Attribute(2, "value", "数值", -4, "kVA", "", "double-long"),
     _SCALER_UNIT)
_add(0x201A, "current_price", "当前电价", 6, Attribute(2, "value", "数值", -4, "yuan/kWh", "", "double-long-unsigned"),
     _SCALER_UNIT)
_add(0x201B, "current_tariff_price", "当前费率电价", 6,
     Attribute(2, "value", "数值", -4, "yuan/kWh", "", "double-long-unsigned"), _SCALER_UNIT)
_add(0x201C, "current_step_price", "当前阶梯电价", 6,
     Attribute(2, "value", "数值", -4, "yuan/kWh", "", "double-long-unsigned"), _SCALER_UNIT)
_add(0x201E, "event_start_time", "事件发生时间", 8, Attribute(2, "value", "事件发生时间", type="date_time_s"))
_add(0x2020, "event_end_time", "事件结束时间", 8, Attribute(2, "value", "事件结束时间", type="date_time_s"))
_add(0x2021, "freeze_time", "数据冻结时间", 8, Attribute(2, "value", "数据冻结时间", type="date_time_s"))
_add(0x2022, "event_record_number", "事件记录序号", 8,
     Attribute(2, "value", "事件记录序号", 0, "", "", "double-long-unsigned"))
_add(0x2023, "freeze_record_number", "冻结记录序号", 8,
     Attribute(2, "value", "冻结记录序号", 0, "", "", "double-long-unsigned"))
_add(0x2024, "event_source", "事件发生源", 8, Attribute(2, "value", "事件发生源"))
_add(0x2026, "voltage_unbalance", "电压不平衡率", 6, Attribute(2, "value", "数值", -2, "%", "", "long-unsigned"),
     _SCALER_UNIT)
_add(0x2027, "current_unbalance", "电流不平衡率", 6, Attribute(2, "value", "数值", -2, "%", "", "long-unsigned"),
     _SCALER_UNIT)
_add(0x202C, "remaining_money", "当前钱包文件", 8, Attribute(2, "value", "剩余金额及购电次数"))
_add(0x202D, "overdraft_money", "当前透支金额", 6, Attribute(2, "value", "数值", -2, "currency", "", "double-long-unsigned"),
     _SCALER_UNIT)
_add(0x2031, "month_energy_used", "月度用电量", 6,
     Attribute(2, "value", "数值", -2, "kWh", "", "double-long-unsigned"), _SCALER_UNIT)
_add(0x2032, "step_settlement_energy_used", "阶梯结算用电量", 6,
     Attribute(2, "value", "数值", -2, "kWh", "", "double-long-unsigned"), _SCALER_UNIT)
for _k, _p in enumerate("abc"):
    _add(0x2131 + _k, f"voltage_qualification_{_p}", f"{_p.upper()}相电压合格率", 6,
         Attribute(2, "value", "电压合格率数据"))

# --- events (classes 7 and 24), 7.3.7 and appendix E.4: attribute 2 is the event record table -------------
_EVENTS = [
    (0x3000, "loss_of_voltage", "失压", 24), (0x3001, "undervoltage", "欠压", 24),
    (0x3002, "overvoltage", "过压", 24), (0x3003, "phase_failure", "断相", 24),
    (0x3004, "loss_of_current", "失流", 24), (0x3005, "overcurrent", "过流", 24),
    (0x3006, "current_break", "断流", 24), (0x3007, "power_reverse", "功率反向", 24),
    (0x3008, "overload", "过载", 24), (0x3009, "forward_demand_overrun", "正向有功需量超限", 7),
    (0x300A, "reverse_demand_overrun", "反向有功需量超限", 7), (0x300B, "reactive_demand_overrun", "无功需量超限", 24),
    (0x300C, "power_factor_low", "功率因数超下限", 7), (0x300D, "total_loss_of_voltage", "全失压", 7),
    (0x300E, "auxiliary_power_loss", "辅助电源掉电", 7), (0x300F, "voltage_reverse_sequence", "电压逆相序", 7),
    (0x3010, "current_reverse_sequence", "电流逆相序", 7), (0x3011, "power_down", "电能表掉电", 7),
    (0x3012, "programming", "编程", 7), (0x3013, "meter_reset", "电能表清零", 7),
    (0x3014, "demand_reset", "需量清零", 7), (0x3015, "event_reset", "事件清零", 7),
    (0x3016, "clock_set", "校时", 7), (0x3017, "period_table_programming", "时段表编程", 7),
    (0x3018, "zone_table_programming", "时区表编程", 7), (0x3019, "weekly_rest_programming", "周休日编程", 7),
    (0x301A, "settlement_day_programming", "结算日编程", 7), (0x301B, "meter_cover_open", "开表盖", 7),
    (0x301C, "terminal_cover_open", "开端钮盒", 7), (0x301D, "voltage_unbalance", "电压不平衡", 7),
    (0x301E, "current_unbalance", "电流不平衡", 7), (0x301F, "relay_trip", "跳闸", 7),
    (0x3020, "relay_close", "合闸", 7), (0x3021, "holiday_programming", "节假日编程", 7),
    (0x3022, "active_combination_programming", "有功组合方式编程", 7),
    (0x3023, "reactive_combination_programming", "无功组合方式编程", 7),
    (0x3024, "tariff_table_programming", "费率参数表编程", 7), (0x3025, "step_table_programming", "阶梯表编程", 7),
    (0x3026, "key_update", "密钥更新", 7), (0x3027, "abnormal_card", "异常插卡", 7),
    (0x3028, "purchase", "购电记录", 7), (0x3029, "refund", "退费记录", 7),
    (0x302A, "magnetic_interference", "恒定磁场干扰", 7), (0x302B, "load_switch_misoperation", "负荷开关误动作", 7),
    (0x302C, "power_supply_abnormal", "电源异常", 7), (0x302D, "severe_current_unbalance", "电流严重不平衡", 7),
    (0x302E, "clock_fault", "时钟故障", 7), (0x302F, "metering_chip_fault", "计量芯片故障", 7),
    (0x3100, "terminal_init", "终端初始化", 7), (0x3101, "terminal_version_change", "终端版本变更", 7),
    (0x3104, "terminal_status_change", "终端状态量变位", 7), (0x3105, "meter_clock_overshoot", "电能表时钟超差", 7),
    (0x3106, "terminal_power_down", "终端停/上电", 7), (0x3109, "terminal_auth_error", "终端消息认证错误", 7),
    (0x310A, "device_fault", "设备故障记录", 7), (0x310B, "meter_energy_decline", "电能表示度下降", 7),
    (0x310C, "energy_overrun", "电能量超差", 7), (0x310D, "meter_fly", "电能表飞走", 7),
    (0x310E, "meter_stopped", "电能表停走", 7), (0x310F, "meter_reading_failure", "终端抄表失败", 7),
    (0x3110, "monthly_traffic_over", "月通信流量超限", 7), (0x3111, "unknown_meter_found", "发现未知电能表", 7),
    (0x3112, "cross_area_meter", "跨台区电能表", 7), (0x3114, "terminal_clock_set", "终端对时", 7),
    (0x3115, "remote_control_trip", "遥控跳闸记录", 7), (0x3116, "energy_difference_overrun", "有功总电能量差动越限", 7),
    (0x3117, "output_loop_change", "输出回路接入状态变位", 7), (0x3118, "terminal_programming", "终端编程记录", 7),
    (0x3119, "current_loop_abnormal", "终端电流回路异常", 7), (0x311A, "meter_online_change", "电能表在网状态切换", 7),
    (0x311B, "terminal_meter_time_sync", "终端对电表校时", 7), (0x311C, "meter_data_change", "电能表数据变更监控", 7),
    (0x3200, "power_control_trip", "功控跳闸记录", 7), (0x3201, "energy_control_trip", "电控跳闸记录", 7),
    (0x3202, "purchase_parameter_set", "购电参数设置记录", 7), (0x3203, "energy_control_alarm", "电控告警事件", 7),
]
for _oi, _n, _zh, _cls in _EVENTS:
    _add(_oi, _n + "_event", _zh + "事件", _cls,
         Attribute(2, "records" if _cls == 7 else "total_records", "事件记录表", layout="record", type="array"),
         Attribute(3, "associated_oads", "关联对象属性表", type="array OAD"),
         Attribute(4, "current_value" if _cls == 7 else "current_values", "当前值记录表"),
         Attribute(5, "max_records", "最大记录数", type="long-unsigned"),
         methods={1: "reset", 2: "execute", 3: "trigger", 4: "add_associated_oad", 5: "remove_associated_oad"})

# --- parameters (class 8), appendix E.5 ------------------------------------------------------------
_PARAMS = [
    (0x4000, "date_time", "日期时间", "date_time_s"), (0x4001, "comm_address", "通信地址", "octet-string"),
    (0x4002, "meter_number", "表号", "octet-string"), (0x4003, "customer_number", "客户编号", "octet-string"),
    (0x4004, "location", "设备地理坐标", "structure"), (0x4005, "group_address", "组地址", "array octet-string"),
    (0x4006, "clock_source", "时钟源", "structure"), (0x4007, "lcd_parameters", "LCD参数", "structure"),
    (0x400C, "zone_period_counts", "时区时段数", "structure"), (0x400D, "step_count", "阶梯数", "unsigned"),
    (0x400E, "harmonic_count", "谐波分析次数", "unsigned"), (0x4010, "metering_elements", "计量元件数", "unsigned"),
    (0x4011, "public_holidays", "公共假日表", "array"), (0x4012, "weekly_rest_word", "周休日特征字", "bit-string"),
    (0x4014, "current_zone_table", "当前套时区表", "array"), (0x4016, "current_period_tables", "当前套日时段表", "array"),
    (0x4018, "current_tariff_prices", "当前套费率电价", "array"), (0x401A, "current_step_prices", "当前套阶梯电价", "structure"),
    (0x401C, "ct_ratio", "电流互感器变比", "double-long-unsigned"),
    (0x401D, "pt_ratio", "电压互感器变比", "double-long-unsigned"),
    (0x401E, "money_limits", "金额限值", "structure"), (0x4030, "voltage_qualification_parameters", "电压合格率参数", "structure"),
    (0x4100, "max_demand_period", "最大需量周期", "unsigned"), (0x4101, "slip_time", "滑差时间", "unsigned"),
    (0x4102, "pulse_width", "校表脉冲宽度", "unsigned"), (0x4103, "asset_code", "资产管理编码", "visible-string"),
    (0x4104, "rated_voltage", "额定电压", "visible-string"), (0x4105, "rated_current", "额定电流/基本电流", "visible-string"),
    (0x4106, "max_current", "最大电流", "visible-string"), (0x4107, "active_accuracy", "有功准确度等级", "visible-string"),
    (0x4108, "reactive_accuracy", "无功准确度等级", "visible-string"),
    (0x4109, "active_constant", "电能表有功常数", "double-long-unsigned"),
    (0x410A, "reactive_constant", "电能表无功常数", "double-long-unsigned"),
    (0x410B, "meter_model", "电能表型号", "visible-string"), (0x4111, "software_record", "软件备案号", "visible-string"),
    (0x4112, "active_combination_word", "有功组合方式特征字", "bit-string"),
    (0x4116, "settlement_days", "结算日", "array structure"), (0x4300, "device", "电气设备", "structure"),
    (0x4400, "application_connection", "应用连接", "structure"), (0x4500, "gprs_module", "公网通信模块1", "structure"),
    (0x4510, "ethernet", "以太网通信模块1", "structure"),
]
for _oi, _n, _zh, _t in _PARAMS:
    _scale = {0x4100: (0, "min"), 0x4101: (0, "min")}.get(_oi, (None, ""))
    _add(_oi, _n, _zh, 8, Attribute(2, "value", _zh, _scale[0], _scale[1], "", _t),
         methods={127: "broadcast_time_sync"} if _oi == 0x4000 else None)

# --- frozen data (class 9), 7.3.9: attribute 2 is the frozen record table, attribute 3 the OADs frozen -----
_FROZEN = [
    (0x5000, "instant_freeze", "瞬时冻结"), (0x5001, "second_freeze", "秒冻结"), (0x5002, "minute_freeze", "分钟冻结"),
    (0x5003, "hour_freeze", "小时冻结"), (0x5004, "day_freeze", "日冻结"), (0x5005, "settlement_day_freeze", "结算日冻结"),
    (0x5006, "month_freeze", "月冻结"), (0x5007, "year_freeze", "年冻结"),
    (0x5008, "zone_table_switch_freeze", "时区表切换冻结"), (0x5009, "period_table_switch_freeze", "日时段表切换冻结"),
    (0x500A, "tariff_price_switch_freeze", "费率电价切换冻结"), (0x500B, "step_switch_freeze", "阶梯切换冻结"),
    (0x5011, "step_settlement_freeze", "阶梯结算冻结"),
]
for _oi, _n, _zh in _FROZEN:
    _add(_oi, _n, _zh, 9, Attribute(2, "records", "冻结数据表", layout="record", type="array"),
         Attribute(3, "associated_oads", "关联对象属性表", type="array structure{period, OAD, depth}"),
         methods={1: "reset", 3: "trigger", 4: "add_associated_oad", 5: "remove_associated_oad",
                  7: "add_associated_oads", 8: "clear_associated_oads"})

# --- collection management (classes 10, 11), 数据采集管理 --------------------------------------------------
_COLLECT = [
    (0x6000, "meter_archive", "采集档案配置表", 11), (0x6002, "meter_search", "搜表", 11),
    (0x6012, "task_config", "任务配置表", 10), (0x6014, "normal_scheme", "普通采集方案集", 11),
    (0x6016, "event_scheme", "事件采集方案集", 11), (0x6018, "transparent_scheme", "透明方案集", 11),
    (0x601A, "transparent_results", "透明方案结果集", 11), (0x601C, "report_scheme", "上报方案集", 11),
    (0x601E, "collection_rules", "采集规则库", 11), (0x6032, "collection_states", "采集状态集", 11),
    (0x6034, "task_monitor", "采集任务监控集", 11), (0x6040, "collection_start_time", "采集启动时标", 8),
    (0x6041, "collection_success_time", "采集成功时标", 8), (0x6042, "collection_store_time", "采集存储时标", 8),
]
for _oi, _n, _zh, _cls in _COLLECT:
    _add(_oi, _n, _zh, _cls, Attribute(2, "value", _zh, layout="record" if _oi == 0x6012 else "", type="array"),
         methods={127: "add", 128: "delete", 129: "clear"} if _cls in (10, 11) else None)

# --- control (classes 8, 13), 遥控 and 保电 -----------------------------------------------------------
_add(0x8000, "remote_control", "遥控", 8,
     Attribute(2, "configuration", "配置参数", type="structure"),
     Attribute(3, "relay_output_state", "继电器输出状态", type="bit-string"),
     Attribute(4, "alarm_state", "告警状态", type="bit-string"),
     Attribute(5, "command_state", "命令状态", type="bit-string"),
     methods={127: "trigger_alarm", 128: "release_alarm", 129: "trip", 130: "close"})
_add(0x8001, "protect", "保电", 8, Attribute(2, "state", "保电状态", type="enum"),
     Attribute(3, "no_comm_time", "允许与主站最大无通信时长", 0, "min", "", "long-unsigned"),
     Attribute(4, "power_on_auto_protect_time", "上电自动保电时长", 0, "min", "", "long-unsigned"),
     methods={127: "protect_on", 128: "protect_off", 129: "auto_protect_off"})
_add(0x8002, "arrears_alarm", "催费告警", 8, Attribute(2, "state", "催费告警状态", type="enum"),
     methods={127: "alarm_on", 128: "alarm_off"})

# --- input/output devices (class 22), appendix E.13: ports a concentrator forwards through -------------
for _oi, _n, _zh in [(0xF200, "rs232", "RS-232"), (0xF201, "rs485", "RS-485"), (0xF202, "infrared", "红外"),
                     (0xF205, "relay_output", "继电器输出"), (0xF209, "carrier", "载波/微功率无线接口")]:
    _add(_oi, _n, _zh, 22, Attribute(2, "ports", "设备对象列表", type="array"),
         Attribute(3, "count", "设备对象数量", type="unsigned"),
         methods={127: "configure_port"})
_add(0xF101, "security_mode", "安全模式参数", 8, Attribute(2, "enabled", "安全模式选择", type="enum"))


def lookup(oi: int) -> ObjectDef | None:
    """The object ``oi``, or None."""
    return _OBJECTS.get(oi)


def objects() -> list[ObjectDef]:
    """Every object the registry knows, by OI."""
    return [_OBJECTS[k] for k in sorted(_OBJECTS)]


def attribute(oi: int, number: int) -> Attribute | None:
    """Attribute ``number`` (bits 0-4 of the OAD attribute byte) of object ``oi``."""
    o = _OBJECTS.get(oi)
    return None if o is None else o.attributes.get(number & 0x1F)


def describe(oi: int, attr: int, index: int = 0) -> dict[str, Any]:
    """Names, scaler and unit of an OAD, for JSON output; unknown parts are left out, never invented."""
    o = _OBJECTS.get(oi)
    out: dict[str, Any] = {"oad": f"{oi:04X}{attr:02X}{index:02X}"}
    if o is None:
        return out
    out["object"] = o.name
    out["object_zh"] = o.name_zh
    a = o.attributes.get(attr & 0x1F)
    if a is not None:
        out["attribute"] = a.name
        if a.scaler is not None:
            out["scaler"] = a.scaler
        if a.unit:
            out["unit"] = a.unit
        if index:
            out["element"] = a.element_name(index)
    return out

"""The DL/T 645-2007 data-identifier registry (数据标识): lookups, decoding, load records, interop.

Byte strings are DATA after the DI, already unscrambled (-33H), lowest byte first as on the wire.
Every test runs against the compiled kernels and their pure twin (the ``kernels`` fixture).
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gridhead.protocols.dlt645 import registry
from gridhead.protocols.dlt645.formats import ASCII, BINARY, DATETIME, DIGITS, SIGNED, UNSIGNED, F
from gridhead.protocols.errors import LocalProtocolError, RemoteProtocolError


@pytest.fixture(autouse=True)
def _each_kernel(kernels):
    yield kernels


# the kernels fixture only switches module bindings: sharing it across examples is fine
_FUZZ = settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])


def fields(di):
    item = registry.lookup(di)
    assert item is not None, f"{di:08X} unknown"
    return [(f.name, f.fmt, f.unit) for f in item.fields]


# --- lookups ------------------------------------------------------------------------------------------
# (DI, name, [(field fmt, unit)...], size in bytes)
REPRESENTATIVE = [
    (0x00000000, "combined_active_energy_total", [("±XXXXXX.XX", "kWh")], 4),
    (0x00010000, "forward_active_energy_total", [("XXXXXX.XX", "kWh")], 4),
    (0x00010100, "forward_active_energy_tariff_1", [("XXXXXX.XX", "kWh")], 4),
    (0x00010401, "forward_active_energy_tariff_4_settle_1", [("XXXXXX.XX", "kWh")], 4),
    (0x00023F0C, "reverse_active_energy_tariff_63_settle_12", [("XXXXXX.XX", "kWh")], 4),
    (0x00030000, "combined_reactive_1_energy_total", [("±XXXXXX.XX", "kvarh")], 4),
    (0x00040000, "combined_reactive_2_energy_total", [("±XXXXXX.XX", "kvarh")], 4),
    (0x00080000, "quadrant_4_reactive_energy_total", [("XXXXXX.XX", "kvarh")], 4),
    (0x00090000, "forward_apparent_energy_total", [("XXXXXX.XX", "kVAh")], 4),
    (0x00150000, "phase_a_forward_active_energy", [("XXXXXX.XX", "kWh")], 4),
    (0x00170000, "phase_a_combined_reactive_1_energy", [("±XXXXXX.XX", "kvarh")], 4),
    (0x002A0001, "phase_b_reverse_active_energy_settle_1", [("XXXXXX.XX", "kWh")], 4),
    (0x00400000, "phase_c_combined_reactive_2_energy", [("±XXXXXX.XX", "kvarh")], 4),
    (0x00900200, "remaining_money", [("XXXXXX.XX", "yuan")], 4),
    (0x01010000, "forward_active_max_demand_total", [("XX.XXXX", "kW"), ("YYMMDDhhmm", "")], 8),
    (0x01030101, "combined_reactive_1_max_demand_tariff_1_settle_1", [("±XX.XXXX", "kvar"), ("YYMMDDhhmm", "")], 8),
    (0x010A0000, "reverse_apparent_max_demand_total", [("XX.XXXX", "kVA"), ("YYMMDDhhmm", "")], 8),
    (0x01150000, "phase_a_forward_active_max_demand", [("XX.XXXX", "kW"), ("YYMMDDhhmm", "")], 8),
    (0x02010100, "phase_a_voltage", [("XXX.X", "V")], 2),
    (0x02020300, "phase_c_current", [("±XXX.XXX", "A")], 3),
    (0x02030000, "active_power_total", [("±XX.XXXX", "kW")], 3),
    (0x02040100, "phase_a_reactive_power", [("±XX.XXXX", "kvar")], 3),
    (0x02050000, "apparent_power_total", [("±XX.XXXX", "kVA")], 3),
    (0x02060000, "power_factor_total", [("±X.XXX", "")], 2),
    (0x02070100, "phase_a_phase_angle", [("XXX.X", "°")], 2),
    (0x02080100, "phase_a_voltage_distortion", [("XX.XX", "%")], 2),
    (0x02800001, "neutral_current", [("±XXX.XXX", "A")], 3),
    (0x02800002, "grid_frequency", [("XX.XX", "Hz")], 2),
    (0x02800007, "meter_temperature", [("±XXX.X", "℃")], 2),
    (0x0280000A, "internal_battery_work_time", [("XXXXXXXX", "min")], 4),
    (0x0280000B, "current_step_price", [("XXXX.XXXX", "yuan/kWh")], 4),
    (0x03110000, "power_down_count", [("XXXXXX", "")], 3),
    (0x03110001, "power_down_record_1", [("YYMMDDhhmmss", ""), ("YYMMDDhhmmss", "")], 12),
    (0x03300000, "programming_count", [("XXXXXX", "")], 3),
    (0x03300401, "clock_set_record_1", [("NNNNNNNN", ""), ("YYMMDDhhmmss", ""), ("YYMMDDhhmmss", "")], 16),
    (0x13010001, "phase_a_phase_failure_count", [("XXXXXX", "")], 3),
    (0x13030002, "phase_c_phase_failure_cumulative_time", [("XXXXXX", "min")], 3),
    (0x13010101, "phase_a_phase_failure_start_time_1", [("YYMMDDhhmmss", "")], 6),
    (0x13012501, "phase_a_phase_failure_end_time_1", [("YYMMDDhhmmss", "")], 6),
    (0x1B02120A, "phase_b_reverse_power_end_time_10", [("YYMMDDhhmmss", "")], 6),
    (0x1D000001, "trip_count", [("XXXXXX", "")], 3),
    (0x1D000101, "trip_time_1", [("YYMMDDhhmmss", "")], 6),
    (0x1E000201, "close_operator_code_1", [("NNNNNNNN", "")], 4),
    (0x04000101, "date_and_week", [("YYMMDDWW", "")], 4),
    (0x04000102, "time", [("hhmmss", "")], 3),
    (0x04000103, "demand_period", [("XX", "min")], 1),
    (0x04000105, "calibration_pulse_width", [("XXXX", "ms")], 2),
    (0x04000401, "comm_address", [("S12", "")], 6),
    (0x04000403, "asset_code", [("A32", "")], 32),
    (0x04000404, "rated_voltage", [("A6", "")], 6),
    (0x04000407, "active_accuracy_class", [("A4", "")], 4),
    (0x04000409, "active_constant", [("XXXXXX", "imp/kWh")], 3),
    (0x0400040D, "protocol_version", [("A16", "")], 16),
    (0x04000503, "status_word_3", [("NNNN", "")], 2),
    (0x04000B01, "settlement_day_1", [("DDhh", "")], 2),
    (0x04000C01, "password_level_0", [("NNNNNNNN", "")], 4),
    (0x04000E01, "forward_active_power_limit", [("XX.XXXX", "kW")], 3),
    (0x05060001, "daily_freeze_time_1", [("YYMMDDhhmm", "")], 5),
    (0x0506003E, "daily_freeze_time_62", [("YYMMDDhhmm", "")], 5),
    (0x05061001, "daily_freeze_variables_1", [("±XX.XXXX", "kW")] * 4 + [("±XX.XXXX", "kvar")] * 4, 24),
    (0x050401FE, "hourly_freeze_forward_active_energy_254", [("XXXXXX.XX", "kWh")], 4),
]


@pytest.mark.parametrize("di, name, fmts, size", REPRESENTATIVE, ids=[f"{r[0]:08X}" for r in REPRESENTATIVE])
def test_representative_items(di, name, fmts, size):
    item = registry.lookup(di)
    assert item is not None
    assert (item.di, item.name, item.size) == (di, name, size)
    assert [(f.fmt, f.unit) for f in item.fields] == fmts
    assert item.name_zh and not item.members
    assert registry.by_name(name) is item


def test_chinese_names_follow_the_standard():
    assert registry.lookup(0x00010000).name_zh == "(当前)正向有功总电能"
    assert registry.lookup(0x00010401).name_zh == "(上1结算日)正向有功费率4电能"
    assert registry.lookup(0x01010000).name_zh == "(当前)正向有功总最大需量及发生时间"
    assert registry.lookup(0x03300D01).name_zh == "(上1次)开表盖记录"
    assert registry.lookup(0x05060101).name_zh == "(上1次)日冻结正向有功电能数据"


def test_demand_value_comes_before_its_time():
    assert fields(0x01010000) == [("forward_active_max_demand_total", "XX.XXXX", "kW"),
                                  ("forward_active_max_demand_total_time", "YYMMDDhhmm", "")]


def test_there_is_no_combined_active_demand():
    assert registry.lookup(0x01000000) is None        # DI2 00 exists for energy only
    assert registry.lookup(0x00000000) is not None


@pytest.mark.parametrize("di", [0x00000000 | 0x40 << 8, 0x0001000D, 0x0001FFFF, 0x000B0000, 0x01010D00 | 0x0D,
                                0x02010400, 0x03110000 | 0x0B, 0x1D000900 | 1, 0x06100106, 0x07000000,
                                0xFFFFFFFF, 0x05060000 | 0x3F, -1, 1 << 32])
def test_unknown_identifiers(di):
    assert registry.lookup(di) is None


def test_access_marks():
    assert registry.lookup(0x00010000).access == "r"
    assert registry.lookup(0x04000101).access == "rw"
    assert registry.lookup(0x04000B01).access == "rw"
    assert registry.lookup(0x04000C05).access == "w"
    assert registry.lookup(0x04000503).access == "r"


def test_request_extras_of_load_records_and_curves():
    assert registry.lookup(0x06000000).request_extra == "N"
    assert registry.lookup(0x06000001).request_extra == "N+YYMMDDhhmm"
    assert registry.lookup(0x06000002).request_extra == "N"
    assert registry.lookup(0x06100101).request_extra == "N+YYMMDDhhmm"
    for di in (0x06000000, 0x06000001, 0x06000002):     # routed to decode_load_record
        item = registry.lookup(di)
        assert item.fields == () and item.members == ()


# --- blocks --------------------------------------------------------------------------------------------
def test_energy_block_over_tariffs():
    block = registry.lookup(0x0001FF00)
    assert block.is_block and block.name == "forward_active_energy_block"
    assert [m.di for m in block.members[:3]] == [0x00010000, 0x00010100, 0x00010200]
    assert len(block.members) == 64
    assert block.members[0] is registry.lookup(0x00010000)       # members are the registry's items
    assert registry.lookup(0x0001FF01).members[1] is registry.lookup(0x00010101)


def test_energy_block_over_settlement_periods():
    block = registry.lookup(0x000100FF)
    assert [m.di for m in block.members] == [0x00010000 + k for k in range(13)]
    assert registry.lookup(0x010104FF).members[12].name == "forward_active_max_demand_tariff_4_settle_12"


def test_other_blocks():
    assert [m.di for m in registry.lookup(0x0201FF00).members] == [0x02010100, 0x02010200, 0x02010300]
    assert [m.di for m in registry.lookup(0x0203FF00).members] == [0x02030000, 0x02030100, 0x02030200, 0x02030300]
    assert [m.di for m in registry.lookup(0x040005FF).members] == [0x04000501 + k for k in range(7)]
    assert [m.di for m in registry.lookup(0x1D00FF01).members] == [0x1D000101 + (k << 8) for k in range(8)]
    assert [m.di for m in registry.lookup(0x1E0002FF).members] == [0x1E000201 + k for k in range(10)]


def test_decode_block_with_five_and_with_two_members():
    block = registry.lookup(0x0001FF00)
    data = bytes.fromhex("56341200" "00010000" "00020000" "00030000" "00040000")
    values = block.decode(data)
    assert [v.name for v in values] == ["forward_active_energy_total"] + [
        f"forward_active_energy_tariff_{k}" for k in (1, 2, 3, 4)]
    assert [v.text for v in values] == ["1234.56", "1.00", "2.00", "3.00", "4.00"]
    values = block.decode(data[:8])
    assert [(v.name, v.raw) for v in values] == [("forward_active_energy_total", 123456),
                                                 ("forward_active_energy_tariff_1", 100)]
    with pytest.raises(RemoteProtocolError):
        block.decode(data[:6])                          # half a member


def test_decode_status_word_block():
    values = registry.lookup(0x040005FF).decode(bytes.fromhex("0000" "0000" "1010" "0000" "0000" "0000" "0002"))
    assert [v.name for v in values] == [f"status_word_{k}" for k in range(1, 8)]
    assert values[2].raw == 0x1010
    assert registry.status_flags(3, values[2].raw) == {"relay_open", "protected"}
    assert registry.status_flags(7, values[6].raw) == {"meter_cover_open"}


# --- decoding known byte strings ------------------------------------------------------------------------
def test_decode_forward_active_total():
    (v,) = registry.lookup(0x00010000).decode(bytes([0x56, 0x34, 0x12, 0x00]))
    assert (v.raw, v.decimals, v.text, v.unit, v.value) == (123456, 2, "1234.56", "kWh", Decimal("1234.56"))


def test_decode_negative_combined_energy():
    (v,) = registry.lookup(0x00000000).decode(bytes([0x56, 0x34, 0x12, 0x80]))
    assert (v.raw, v.text) == (-123456, "-1234.56")


def test_decode_signed_power_factor():
    item = registry.lookup(0x02060000)
    (v,) = item.decode(bytes([0x50, 0x89]))             # sign bit set, digits 0950
    assert (v.raw, v.text, v.unit) == (-950, "-0.950", "")
    (v,) = item.decode(bytes([0x99, 0x09]))
    assert v.text == "0.999"


def test_decode_signed_current_and_power():
    (v,) = registry.lookup(0x02020100).decode(bytes([0x00, 0x15, 0x80]))
    assert (v.text, v.unit) == ("-1.500", "A")
    (v,) = registry.lookup(0x02030000).decode(bytes([0x34, 0x12, 0x05]))
    assert (v.text, v.unit) == ("5.1234", "kW")


def test_decode_voltage_and_frequency():
    assert registry.lookup(0x02010100).decode(bytes([0x01, 0x22]))[0].text == "220.1"
    assert registry.lookup(0x02800002).decode(bytes([0x00, 0x50]))[0].text == "50.00"


def test_decode_demand_and_time():
    # 12.3456 kW at 2025-11-02 12:34: value first, then mm hh DD MM YY
    value, when = registry.lookup(0x01010000).decode(bytes.fromhex("563412" "3412021125"))
    assert (value.name, value.text, value.unit) == ("forward_active_max_demand_total", "12.3456", "kW")
    assert (when.name, when.value) == ("forward_active_max_demand_total_time", dt.datetime(2025, 11, 2, 12, 34))


def test_decode_demand_block_with_two_members():
    values = registry.lookup(0x0101FF00).decode(bytes.fromhex("563412" "3412021125" "000100" "0008010125"))
    assert [v.text for v in values] == ["12.3456", "2025-11-02T12:34:00", "0.0100", "2025-01-01T08:00:00"]


def test_decode_date_time_and_settlement_day():
    (v,) = registry.lookup(0x04000101).decode(bytes.fromhex("00021125"))   # WW 00 = Sunday, 2025-11-02
    assert v.value == dt.date(2025, 11, 2)
    (v,) = registry.lookup(0x04000102).decode(bytes.fromhex("563412"))
    assert v.value == dt.time(12, 34, 56)
    (v,) = registry.lookup(0x04000B01).decode(bytes.fromhex("0001"))       # 1st, 00:00
    assert v.digits == "0100"


def test_decode_clock_set_record():
    data = bytes.fromhex("78563412" "000000021125" "300000021125")
    op, before, after = registry.lookup(0x03300401).decode(data)
    assert (op.name, op.raw, op.text) == ("operator_code", 0x12345678, "0x12345678")
    assert before.value == dt.datetime(2025, 11, 2, 0, 0, 0)
    assert after.value == dt.datetime(2025, 11, 2, 0, 0, 30)


def test_decode_meter_cover_record():
    item = registry.lookup(0x03300D01)
    assert item.size == 60
    data = bytes.fromhex("000000021125" "000500021125") + bytes.fromhex("00010000") * 6 + bytes.fromhex("00020000") * 6
    values = item.decode(data)
    assert values[1].value == dt.datetime(2025, 11, 2, 0, 5)
    assert [(values[k].name, values[k].text) for k in (2, 8, 13)] == [
        ("before_forward_active_energy_total", "1.00"), ("after_forward_active_energy_total", "2.00"),
        ("after_quadrant_4_reactive_energy_total", "2.00")]


def test_decode_trip_record_block():
    data = bytes.fromhex("000012021125" "FFFFFFFF") + bytes.fromhex("56341200") * 6
    values = registry.lookup(0x1D00FF01).decode(data)
    assert [v.name for v in values] == ["trip_time_1", "trip_operator_code_1", "trip_forward_active_energy_total_1",
                                        "trip_reverse_active_energy_total_1"] + [
        f"trip_quadrant_{q}_reactive_energy_total_1" for q in (1, 2, 3, 4)]
    assert values[0].value == dt.datetime(2025, 11, 2, 12, 0, 0)
    assert values[1].raw == 0xFFFFFFFF                   # the meter acted on its own
    assert [v.text for v in values[2:]] == ["1234.56"] * 6


def test_a_bcd_time_that_is_not_a_time_decodes_with_an_error():
    (v,) = registry.lookup(0x1D000101).decode(bytes.fromhex("000030021125"))    # hour 30
    assert v.digits == "251102300000" and v.value is None
    assert v.to_json()["error"] == "not a valid YYMMDDhhmmss"


def test_non_bcd_digits_decode_to_none_not_an_exception():
    (v,) = registry.lookup(0x00010000).decode(b"\xff\xff\xff\xff")
    assert v.raw is None and v.to_json()["error"] == "digits are not BCD"


def test_wrong_length_is_a_remote_protocol_error():
    with pytest.raises(RemoteProtocolError, match="needs 4"):
        registry.lookup(0x00010000).decode(b"\x00\x00\x00")


def test_decode_asset_code_of_full_length():
    item = registry.lookup(0x04000403)
    code = "G2025110200000000000000000000001"
    (v,) = item.decode(code.encode()[::-1])            # ASCII goes lowest byte first, like numbers
    assert v.value == code


def test_short_ascii_round_trip():
    item = registry.lookup(0x04000404)
    assert item.decode(item.encode(["220V"]))[0].value == "220V"


def test_holiday_is_date_then_day_table():
    day_table, date = registry.lookup(0x04030001).decode(bytes.fromhex("02010125"))
    assert (day_table.raw, date.value) == (2, dt.date(2025, 1, 1))


# --- frozen data and curves ------------------------------------------------------------------------------
def test_daily_freeze_energy_is_total_plus_each_tariff():
    item = registry.lookup(0x05060101)
    assert item.name == "daily_freeze_forward_active_energy_1"
    assert item.members[0] is registry.lookup(0x00010000)
    values = item.decode(bytes.fromhex("56341200" "00010000" "00020000" "00030000" "00040000"))
    assert [v.name for v in values] == ["forward_active_energy_total"] + [
        f"forward_active_energy_tariff_{k}" for k in (1, 2, 3, 4)]
    assert values[0].text == "1234.56"
    assert len(item.decode(bytes.fromhex("56341200"))) == 1           # a single-rate meter


def test_daily_freeze_demand_and_variables():
    values = registry.lookup(0x05060A3E).decode(bytes.fromhex("563412" "3412021125"))
    assert values[0].name == "reverse_active_max_demand_total" and values[1].value == dt.datetime(2025, 11, 2, 12, 34)
    data = bytes.fromhex("000100" "000180" + "000000" * 6)
    values = registry.lookup(0x05001001).decode(data)
    assert [(v.name, v.text, v.unit) for v in values[:2]] == [("active_power_total", "0.0100", "kW"),
                                                              ("phase_a_active_power", "-0.0100", "kW")]
    assert (values[4].name, values[4].unit) == ("reactive_power_total", "kvar")


def test_frozen_families():
    assert registry.lookup(0x0500010C).name == "timed_freeze_forward_active_energy_12"
    assert registry.lookup(0x0500010D) is None
    assert registry.lookup(0x05010203).name == "instant_freeze_reverse_active_energy_3"
    assert registry.lookup(0x05040101).size == 4
    assert registry.lookup(0x05050101) is None and registry.lookup(0x0506FF01) is None   # left out


def test_curve_is_start_time_then_points():
    item = registry.lookup(0x06100101)
    values = item.decode(bytes.fromhex("1512021125" "0122" "0222" "0322"))
    assert values[0].value == dt.datetime(2025, 11, 2, 12, 15)
    assert [(v.name, v.text, v.unit) for v in values[1:]] == [
        ("phase_a_voltage_1", "220.1", "V"), ("phase_a_voltage_2", "220.2", "V"), ("phase_a_voltage_3", "220.3", "V")]
    with pytest.raises(RemoteProtocolError):
        item.decode(bytes.fromhex("1512021125" "0122" "02"))


# --- the whole table ----------------------------------------------------------------------------------------
def test_items_are_unique_named_and_not_blocks():
    all_items = list(registry.items())
    assert len(all_items) > 20000
    assert len({i.di for i in all_items}) == len(all_items)
    assert len({i.name for i in all_items}) == len(all_items)
    assert all(i.di.to_bytes(4, "big").count(0xFF) == 0 for i in all_items)
    assert [i.di for i in all_items] == sorted(i.di for i in all_items)
    name = re.compile(r"^[a-z][a-z0-9_]*$")
    for item in all_items:
        assert name.match(item.name), item.name
        assert item.name_zh, item.name
        assert item.access in ("r", "rw", "w")
        assert registry.lookup(item.di) is item


def test_family_sizes():
    all_items = list(registry.items())
    by_class = {}
    for item in all_items:
        by_class[item.di >> 24] = by_class.get(item.di >> 24, 0) + 1
    # 11 kinds x 64 tariffs x 13 periods, + phase registers, + loss/harmonic totals, + prepayment
    assert by_class[0x00] == 11 * 64 * 13 + 3 * 10 * 13 + 6 * 4 * 13 + 4
    assert by_class[0x01] == 10 * 64 * 13 + 3 * 10 * 13


def test_units_are_from_a_known_set():
    units = {f.unit for i in registry.items() for f in i.fields}
    assert units <= {"", "kWh", "kvarh", "kVAh", "kW", "kvar", "kVA", "V", "A", "Hz", "°", "%", "℃", "min",
                     "ms", "s", "yuan", "yuan/kWh", "imp/kWh", "imp/kvarh"}


def test_field_names_unique_within_each_item():
    for item in registry.items():
        names = [f.name for f in item.fields] if item.fields else [f.name for m in item.members for f in m.fields]
        assert len(set(names)) == len(names), item.name


def test_by_name():
    assert registry.by_name("forward_active_energy_tariff_17_settle_3").di == 0x00011103
    assert registry.by_name("forward_active_energy_block").di == 0x0001FF00
    with pytest.raises(KeyError):
        registry.by_name("no_such_item")


def test_status_word_bits_that_drive_disconnect_read_back():
    bits = registry.STATUS_WORD_BITS
    assert bits[3][4] == "relay_open"                   # 继电器状态 0 通 1 断
    assert bits[3][6] == "relay_command_open"           # 继电器命令状态
    assert bits[3][7] == "pre_trip_alarm"               # 预跳闸报警状态
    assert bits[3][12] == "protected"                   # 保电状态
    assert sorted(bits) == [1, 2, 3, 4, 5, 6, 7]
    assert bits[4][7] == "phase_a_phase_failure" and bits[6][0] == "phase_c_loss_of_voltage"
    assert all(set(bits[w]) == set(registry.STATUS_WORD_BITS_ZH[w]) for w in bits)
    assert registry.status_flags(3, 0x0050) == {"relay_open", "relay_command_open"}
    assert registry.status_flags(3, 0x0000) == set()


def test_tariff_names():
    assert registry.TARIFF_NAMES[1] == ("sharp", "尖") and registry.TARIFF_NAMES[4] == ("valley", "谷")


# --- load records (负荷记录块) ------------------------------------------------------------------------------
def _record(time_digits, sections):
    body = bytes.fromhex(time_digits)[::-1]
    for section in sections:
        body += (section or b"") + b"\xAA"
    head = b"\xA0\xA0" + bytes([len(body)])
    return head + body + bytes([sum(head + body) & 0xFF]) + b"\xE5\xE5"


S1 = bytes.fromhex("0122" "0222" "0322" "235100" "001580" "000000" "0050")     # V, I (B negative), Hz
S2 = bytes.fromhex("341205" "000100" "000100" "000180" "000000" "000000" "000000" "500080")
S3 = bytes.fromhex("0009" "9909" "5089" "0010")
S4 = bytes.fromhex("56341200" "00010000" "00000080" "01000000")
S5 = bytes.fromhex("00010000" "00020000" "00030000" "00040000")
S6 = bytes.fromhex("341205" "001000")
FULL = _record("2411051215", [S1, S2, S3, S4, S5, S6])


def test_decode_full_load_record():
    assert FULL[:3] == bytes([0xA0, 0xA0, 5 + 17 + 24 + 8 + 16 + 16 + 6 + 6]) and FULL[-2:] == b"\xE5\xE5"
    out = registry.decode_load_record(FULL)
    (rec,) = out["records"]
    assert (rec["time"], rec["time_digits"]) == ("2024-11-05T12:15:00", "2411051215")
    s = rec["sections"]
    assert list(s) == ["voltage_current_frequency", "power", "power_factor", "energy",
                       "quadrant_reactive_energy", "demand"]
    assert [(v["name"], v["value"]) for v in s["voltage_current_frequency"]] == [
        ("phase_a_voltage", "220.1"), ("phase_b_voltage", "220.2"), ("phase_c_voltage", "220.3"),
        ("phase_a_current", "5.123"), ("phase_b_current", "-1.500"), ("phase_c_current", "0.000"),
        ("grid_frequency", "50.00")]
    assert s["voltage_current_frequency"][0]["unit"] == "V"
    assert [v["value"] for v in s["power"]] == ["5.1234", "0.0100", "0.0100", "-0.0100", "0.0000", "0.0000",
                                                "0.0000", "-0.0050"]
    assert [v["value"] for v in s["power_factor"]] == ["0.900", "0.999", "-0.950", "1.000"]
    assert [v["value"] for v in s["energy"]] == ["1234.56", "1.00", "0.00", "0.01"]     # 00000080: -0
    assert s["energy"][2]["raw"] == 0 and s["energy"][3]["unit"] == "kvarh"
    assert [v["value"] for v in s["quadrant_reactive_energy"]] == ["1.00", "2.00", "3.00", "4.00"]
    assert [(v["name"], v["value"]) for v in s["demand"]] == [("current_active_demand", "5.1234"),
                                                             ("current_reactive_demand", "0.1000")]


def test_decode_load_record_with_missing_classes_and_two_records():
    sparse = _record("2411051230", [S1, None, None, S4, None, None])
    assert len(sparse) == 3 + 5 + 17 + 16 + 6 + 3
    out = registry.decode_load_record(FULL + sparse)
    first, second = out["records"]
    assert second["time"] == "2024-11-05T12:30:00"
    assert list(second["sections"]) == ["voltage_current_frequency", "energy"]
    assert first["sections"]["demand"][0]["value"] == "5.1234"
    empty = registry.decode_load_record(_record("2411051245", [None] * 6))
    assert empty["records"][0]["sections"] == {}


def _corrupt(at, value):
    b = bytearray(FULL)
    b[at] = value
    return bytes(b)


@pytest.mark.parametrize("data, message", [
    (b"", "no data"),
    (FULL[:-1], "only"),
    (b"\xA0\xA1" + FULL[2:], "expected A0 A0"),
    (_corrupt(len(FULL) - 3, (FULL[-3] + 1) & 0xFF), "checksum"),
    (FULL[:-1] + b"\x16", "expected E5 E5"),
    (FULL + b"\x00", "needs at least"),
    (_record("2413051215", [S1, S2, S3, S4, S5, S6]), "not a valid YYMMDDhhmm"),
    (_record("24110512FF", [S1, S2, S3, S4, S5, S6]), "not a valid YYMMDDhhmm"),
    (_record("2411051215", [S1[:-1], S2, S3, S4, S5, S6]), "voltage_current_frequency"),
    (_record("2411051215", [S1, S2, S3, S4, S5]), "demand missing"),
    (_record("2411051215", [S1, S2, S3, S4, S5, S6, None]), "after the last section"),
])
def test_malformed_load_records(data, message):
    with pytest.raises(RemoteProtocolError, match=message):
        registry.decode_load_record(data)


def test_load_record_needs_bytes():
    with pytest.raises(RemoteProtocolError):
        registry.decode_load_record(5)                  # bytes(5) would be five zero bytes
    assert registry.decode_load_record(bytearray(FULL)) == registry.decode_load_record(memoryview(FULL))


@_FUZZ
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_give_a_record_or_remote_protocol_error(data):
    try:
        out = registry.decode_load_record(data)
    except RemoteProtocolError:
        return
    assert isinstance(out, dict) and out["records"]


@_FUZZ
@given(st.integers(0, len(FULL) - 1), st.integers(0, 255), st.binary(max_size=4))
def test_fuzz_near_valid_records(at, value, tail):
    # one byte changed (the checksum then usually fails; when it is the CS itself or compensates,
    # the deeper structure checks run) plus some trailing garbage
    data = _corrupt(at, value) + tail
    try:
        out = registry.decode_load_record(data)
    except RemoteProtocolError:
        return
    assert isinstance(out["records"], list)


_SECTION_FIELDS = {
    "voltage_current_frequency": ["XXX.X"] * 3 + ["±XXX.XXX"] * 3 + ["XX.XX"],
    "power": ["±XX.XXXX"] * 8, "power_factor": ["±X.XXX"] * 4,
    "energy": ["XXXXXX.XX"] * 2 + ["±XXXXXX.XX"] * 2, "quadrant_reactive_energy": ["XXXXXX.XX"] * 4,
    "demand": ["±XX.XXXX"] * 2,
}


@st.composite
def _records(draw):
    time = draw(st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2099, 12, 31, 23, 59)))
    present = draw(st.lists(st.booleans(), min_size=6, max_size=6))
    sections, expected = [], {}
    for keep, (name, fmts) in zip(present, _SECTION_FIELDS.items()):
        if not keep:
            sections.append(None)
            continue
        raws = []
        for fmt in fmts:
            f = F("v", fmt)
            limit = 10 ** (2 * f.nbytes - (1 if f.kind == SIGNED else 0)) - 1
            raws.append(draw(st.integers(-limit if f.kind == SIGNED else 0, limit)))
        sections.append(b"".join(F("v", fmt).encode(r) for fmt, r in zip(fmts, raws)))
        expected[name] = raws
    return time, sections, expected


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_records(), min_size=1, max_size=3))
def test_load_records_round_trip(recs):
    data = b"".join(_record(t.strftime("%y%m%d%H%M"), sections) for t, sections, _ in recs)
    out = registry.decode_load_record(data)["records"]
    assert len(out) == len(recs)
    for got, (t, _s, expected) in zip(out, recs):
        assert got["time"] == t.replace(second=0, microsecond=0).isoformat()
        assert {k: [v["raw"] for v in vs] for k, vs in got["sections"].items()} == expected


# --- interop: the dlt645 package's DI tables ---------------------------------------------------------------
_NUMBER = re.compile(r"^[XN]+(?:\.([XN]+))?$")

# Units the dlt645 package gets wrong (size and decimals agree; only its unit string is off):
UNIT_EXCLUSIONS = {
    # 功率因数 is a ratio; the package labels it kW
    0x02060000: "power factor is dimensionless", 0x02060100: "idem", 0x02060200: "idem", 0x02060300: "idem",
    # 波形失真度 is a percentage; the package labels voltage distortion V and current distortion A
    0x02080100: "distortion is in %", 0x02080200: "idem", 0x02080300: "idem",
    0x02090100: "distortion is in %", 0x02090200: "idem", 0x02090300: "idem",
}
# The package writes some units in Chinese or as a description of the format; map or ignore them.
_PKG_UNITS = {"分": "min", "毫秒": "ms", "秒": "s", "年月日星期": None, "时分秒": None, "年月日时分": None,
              "个": None, "次": None, "位": None}


@pytest.fixture(scope="module")
def dlt645_map():
    pytest.importorskip("dlt645.model")                 # builds DIMap on import
    from dlt645.model.data.define import DIMap
    return DIMap


def _package_formats(di, entry):
    entries = entry if isinstance(entry, list) else [entry]
    fmts = [f for e in entries for f in e.data_format.split(",")]
    if di >> 24 == 0x01 and not isinstance(entry, list):
        fmts.append("YYMMDDhhmm")    # the package keeps the demand time in its Demand value, not the format
    return entries, fmts


def test_sizes_and_decimals_agree_with_the_dlt645_package(dlt645_map):
    compared = 0
    problems = []
    for di, entry in dlt645_map.items():
        item = registry.lookup(di)
        if item is None or not item.fields:
            continue
        entries, fmts = _package_formats(di, entry)
        size = sum(len(f.replace(".", "")) // 2 for f in fmts)
        if size != item.size:
            problems.append(f"{di:08X}: package {size} bytes {fmts}, registry {item.size}")
            continue
        if len(fmts) == len(item.fields):
            for fmt, field in zip(fmts, item.fields):
                m = _NUMBER.match(fmt)
                if m and field.kind in (UNSIGNED, SIGNED) and len(m.group(1) or "") != field.decimals:
                    problems.append(f"{di:08X} {field.name}: package {fmt}, registry {field.fmt}")
        compared += 1
    assert not problems, "\n".join(problems)
    assert compared > 19000             # energy, demand, variables, parameters and events overlap


def test_units_agree_with_the_dlt645_package(dlt645_map):
    compared = 0
    problems = []
    for di, entry in dlt645_map.items():
        item = registry.lookup(di)
        if item is None or not item.fields or di in UNIT_EXCLUSIONS:
            continue
        entries, _ = _package_formats(di, entry)
        if len(entries) != 1:
            continue
        unit = entries[0].unit.strip()
        unit = _PKG_UNITS.get(unit, unit)
        if unit:
            compared += 1
            if unit != item.fields[0].unit:
                problems.append(f"{di:08X}: package {unit!r}, registry {item.fields[0].unit!r}")
    assert not problems, "\n".join(problems)
    assert compared > 18000


def test_unit_exclusions_are_still_needed(dlt645_map):
    # if the package fixes its units, drop the exclusion
    for di in UNIT_EXCLUSIONS:
        assert dlt645_map[di].unit.strip() != registry.lookup(di).fields[0].unit


def test_every_field_kind_is_covered():
    kinds = {f.kind for i in registry.items() for f in i.fields}
    assert kinds == {UNSIGNED, SIGNED, BINARY, ASCII, DATETIME, DIGITS}


def test_address_keeps_its_leading_zeros():
    item = registry.lookup(0x04000401)
    (v,) = item.decode(item.encode(["000012345678"]))
    assert v.text == "000012345678" == v.value


@pytest.mark.parametrize("di, value", [(0x04000404, "二二〇V"), (0x04000103, "abc"), (0x04000103, "NaN")])
def test_bad_values_to_encode_are_local_protocol_errors(di, value):
    with pytest.raises(LocalProtocolError):
        registry.lookup(di).encode([value])


@pytest.mark.parametrize("fmt, digits, text", [("MMDDhhmm", "11051230", "11-05T12:30"), ("MMDD", "1105", "11-05"),
                                               ("DDhh", "0512", "05T12")])
def test_text_of_a_date_without_year(fmt, digits, text):
    # a date-time format without a year decodes to text (the year is not known): .text and .to_json give
    # that text (they raised AttributeError calling .isoformat() on it)
    from gridhead.protocols.dlt645.formats import Value
    v = Value("t", int(digits), 0, "", DATETIME, fmt)
    assert v.value == text
    assert v.text == text
    assert v.to_json()["value"] == text

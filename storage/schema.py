"""The shape of the readings lake: kinds, registers, quality and source codes, partitioning.

This module is the contract between everything that writes the lake (the head-end's ingest, the
synthetic fleet generator, back-fill) and everything that reads it (billing, line loss, SQL views).
It imports nothing but the standard library so that ``billing_core`` and ``headend`` can use the codes
without pulling in pyarrow.

Layout (Hive partitioning, one directory level per key)::

    <root>/readings/kind=<kind>/date=<YYYY-MM-DD>/bucket=<NN>/part-<uuid>.parquet
    <root>/events/date=<YYYY-MM-DD>/bucket=<NN>/part-<uuid>.parquet
    <root>/quarantine/date=<YYYY-MM-DD>/part-<uuid>.parquet

* ``kind``: one of :data:`KINDS` (daily frozen 日冻结, monthly settlement 月冻结/结算日, load-curve
  interval 负荷曲线, instantaneous 瞬时量).
* ``date``: the *local* (China Standard Time, UTC+8, the time every meter and tariff uses) calendar date
  of the reading's timestamp ``ts_utc``.  A daily frozen reading taken at 00:00 local on 1 November is
  ``date=2026-11-01``.
* ``bucket``: :func:`bucket_of` ``(meter_id)``: a stable hash of the meter mod :data:`N_BUCKETS`, so one
  billing task owns one bucket (the scale-out runs a task per bucket).

Every reading row (see ``storage.lake`` for the Arrow schema) has:

=============  =========================================================================================
meter_id       int64, the archive's metering id of the meter (档案 meter id)
register       int16, a code of :data:`REGISTERS`
ts_utc         the instant the value is for (freeze time, interval end, read time), UTC
value          int64, the register as an integer in units of 10^-decimals of the register's unit
quality        uint8 bit flags :data:`Q_BACKFILLED` | :data:`Q_ESTIMATED` | :data:`Q_SUSPECT`; 0 = actual
source         uint8, one of :data:`SOURCES`
received_utc   when the head-end received it, UTC
=============  =========================================================================================

Money and energy are integers with a declared scale; a register's scale is its ``decimals``: forward
active energy ``value = 123456`` with 2 decimals is 1234.56 kWh (the DL/T 645 / 698.45 register
resolution).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

# --- kinds of reading --------------------------------------------------------------------------------
DAILY = "daily"             # 日冻结: registers frozen at 00:00 local each day
MONTHLY = "monthly"         # 月冻结 / 结算日: registers frozen on the settlement day
INTERVAL = "interval"       # 负荷曲线: load-curve values at 15/60-minute interval ends
INSTANT = "instant"         # 瞬时量 and operator reads (召测) of anything at any time
KINDS = (DAILY, MONTHLY, INTERVAL, INSTANT)

# --- quality flags (bit set; 0 = an actual reading as the meter sent it) -------------------------------
Q_ACTUAL = 0
Q_BACKFILLED = 1            # 补采: collected later than its time by a back-fill task
Q_ESTIMATED = 2             # 估抄: not read; estimated by the utility
Q_SUSPECT = 4               # flagged by a plausibility check (jump, reverse, TOU mismatch)
QUALITY_NAMES = {Q_BACKFILLED: "backfilled", Q_ESTIMATED: "estimated", Q_SUSPECT: "suspect"}

# --- sources ------------------------------------------------------------------------------------------
SRC_TASK = 1                # a collection task of the head-end (GET / GET-Record)
SRC_REPORT = 2              # pushed by a terminal (REPORT-Notification)
SRC_OPERATOR = 3            # an operator's remote read (召测)
SRC_IMPORT = 4              # imported from a file (migration, manual reading 抄表, the generator)
SOURCES = {SRC_TASK: "task", SRC_REPORT: "report", SRC_OPERATOR: "operator", SRC_IMPORT: "import"}

# --- partitioning -------------------------------------------------------------------------------------
N_BUCKETS = 16
# meter ids are archive ids in [0, 2**36): the lake packs (meter, register, second of the day) into one
# int64 sort/dedup key; ingest quarantines any other id as "meter id out of range".
MAX_METER_ID = (1 << 36) - 1
LOCAL_TZ = _dt.timezone(_dt.timedelta(hours=8), "CST")   # China Standard Time, no DST
LOCAL_OFFSET_S = 8 * 3600

_M64 = (1 << 64) - 1


def bucket_of(meter_id: int, n_buckets: int = N_BUCKETS) -> int:
    """Stable bucket of a meter: splitmix64 finaliser of the id, mod ``n_buckets``.

    The numpy form used for whole columns is ``storage.lake.buckets_of``; both give the same numbers
    (a test checks this).  The mixing keeps consecutive ids (one concentrator's meters) spread out.
    """
    z = (int(meter_id) + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    z ^= z >> 31
    return z % n_buckets


def local_date(ts_utc: _dt.datetime) -> _dt.date:
    """The partition date of an instant: its calendar date in China Standard Time."""
    return ts_utc.astimezone(LOCAL_TZ).date()


# --- registers ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Register:
    code: int          # int16 stored in the lake
    name: str          # column name in the daily_frozen / monthly_settlement pivots
    unit: str
    decimals: int      # value = register / 10**decimals unit
    cumulative: bool   # an accumulating register (energy), as opposed to a sampled quantity
    max_value: int     # largest legal integer value (register digits); larger is rejected
    description: str
    min_value: int = 0  # smallest legal value: 0 for energy; -max for signed quantities (DL/T 645
    #                     sends current, power and power factor with a sign bit, appendix A formats)


_E = 10 ** 8 - 1       # XXXXXX.XX: 6 integer + 2 decimal digits, the usual energy register
_E8 = 10 ** 10 - 1     # 8 integer digits (large C&I meters)

REGISTERS: dict[int, Register] = {r.code: r for r in (
    # energy, cumulative; DL/T 645 DI 0001xx00 / 698.45 OI 0010
    Register(1, "ae_fwd", "kWh", 2, True, _E8, "forward active energy, total (正向有功总)"),
    Register(2, "ae_fwd_t1", "kWh", 2, True, _E8, "forward active energy, tariff 1 sharp (尖)"),
    Register(3, "ae_fwd_t2", "kWh", 2, True, _E8, "forward active energy, tariff 2 peak (峰)"),
    Register(4, "ae_fwd_t3", "kWh", 2, True, _E8, "forward active energy, tariff 3 flat (平)"),
    Register(5, "ae_fwd_t4", "kWh", 2, True, _E8, "forward active energy, tariff 4 valley (谷)"),
    Register(6, "ae_rev", "kWh", 2, True, _E8, "reverse active energy, total (反向有功总)"),
    Register(7, "re_fwd", "kvarh", 2, True, _E8, "combined reactive 1 (import, Q1+Q2), total (正向无功)"),
    Register(8, "re_rev", "kvarh", 2, True, _E8, "combined reactive 2 (export, Q3+Q4), total (反向无功)"),
    # maximum demand of the period (the value; its time is an instant reading's ts)
    Register(20, "md_fwd", "kW", 4, False, 10 ** 8 - 1, "forward active maximum demand (正向有功最大需量)"),
    # instantaneous quantities
    Register(30, "u_a", "V", 1, False, 9999, "phase A voltage"),
    Register(31, "u_b", "V", 1, False, 9999, "phase B voltage"),
    Register(32, "u_c", "V", 1, False, 9999, "phase C voltage"),
    Register(33, "i_a", "A", 3, False, 999999, "phase A current", -999999),
    Register(34, "i_b", "A", 3, False, 999999, "phase B current", -999999),
    Register(35, "i_c", "A", 3, False, 999999, "phase C current", -999999),
    Register(36, "p", "kW", 4, False, 10 ** 8 - 1, "total active power (interval mean on load curves)", -(10 ** 8 - 1)),
    Register(37, "q", "kvar", 4, False, 10 ** 8 - 1, "total reactive power", -(10 ** 8 - 1)),
    Register(38, "pf", "", 3, False, 1000, "total power factor", -1000),
    Register(39, "freq", "Hz", 2, False, 9999, "grid frequency"),
)}
REGISTER_CODES = {r.name: r.code for r in REGISTERS.values()}
ENERGY_REGISTERS = tuple(c for c, r in REGISTERS.items() if r.cumulative)
MAX_REGISTER_CODE = 1023   # register and event codes stay below 2**10 (the lake packs them into a sort key)

# --- events (事件) -------------------------------------------------------------------------------------
# event codes stored in the events table; names follow DL/T 698.45 OI 3xxx / DL/T 645 DI 03xxxxxx
EVENTS = {
    1: ("power_down", "掉电", 0x3011),
    2: ("cover_open", "开表盖", 0x301B),
    3: ("terminal_cover_open", "开端钮盒", 0x301C),
    4: ("clock_change", "校时", 0x3016),
    5: ("phase_failure", "断相", 0x3003),
    6: ("voltage_loss", "失压", 0x3000),
    7: ("current_loss", "失流", 0x3004),
    8: ("reverse_energy", "潮流反向", 0x3007),
    9: ("relay_trip", "跳闸", 0x301F),
    10: ("relay_close", "合闸", 0x3020),
    11: ("magnetic_interference", "恒定磁场干扰", 0x302A),
    12: ("meter_reset", "电表清零", 0x3013),
}
EVENT_CODES = {name: code for code, (name, _zh, _oi) in EVENTS.items()}
# a terminal's own events (终端事件, DL/T 698.45 OI 31xx): they name no meter, so the events table (one row
# per meter) has no place for them; the head-end keeps them in the quarantine table (table "events",
# register = the code, detail = the terminal and its record) with the reason TERMINAL_EVENT, and
# acknowledges the report.  Code 100: any other record a terminal reports without a meter column.
TERMINAL_EVENTS = {
    100: ("terminal_record", "终端记录", None),
    101: ("terminal_init", "终端初始化", 0x3100),
    102: ("terminal_version_change", "终端版本变更", 0x3101),
    103: ("terminal_state_change", "终端状态量变位", 0x3104),
    104: ("meter_clock_skew", "电能表时钟超差", 0x3105),
    105: ("terminal_power", "终端停/上电", 0x3106),
    106: ("terminal_dc_out_of_limit", "终端直流模拟量越上限", 0x3107),
    107: ("terminal_message_auth_error", "终端消息认证错误", 0x3109),
    108: ("device_fault", "设备故障记录", 0x310A),
    109: ("terminal_clock_set", "终端对时", 0x3114),
    110: ("remote_control_trip", "遥控跳闸记录", 0x3115),
}
TERMINAL_EVENT = "terminal event: no meter"   # the quarantine reason of a terminal's own record

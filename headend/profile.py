"""The collection profile: which DL/T 698.45 objects and DL/T 645 identifiers gridhead reads, and how
they map onto the lake's registers (storage/schema.py).

This is the contract between the head-end's collection tasks (headend/collect.py), the pushed-report
handler (headend/server.py) and the fleet simulator (headend/sim/simulator.py): the simulator answers exactly
these requests, the head-end sends exactly these.  Pure data, no I/O.

Daily frozen registers of day D (日冻结, freeze time D 00:00 China Standard Time) are obtained four ways:

(a) **the concentrator's own task records** (it collected its meters itself, per its task 6012 / normal
    scheme 6014): ``GET-Request-Record`` of OAD ``60120300`` (task record unit, 记录单元) with
    RSD selector 7 (采集存储时标 in [D 00:00, D+1 00:00), interval TI = 1 day, MS = all meters (choice 1)
    or a group of TSAs (choice 3)) and RCSD :data:`DAILY_RCSD`.  Answer: ``GET-Response-Record``, one
    row per meter.
(b) **per-meter proxy read** (补采 of one meter, or a meter the concentrator missed):
    ``PROXY-Request-GetRequestRecord`` to the meter's TSA, OAD ``50040200`` (day freeze, 日冻结), RSD
    selector 1 (``20210200`` data freeze time = D 00:00:00, a date_time_s) and RCSD
    :data:`DAILY_METER_RCSD`.
(c) **DL/T 645 meters behind the concentrator**: ``PROXY-Request-TransCommandRequest`` on the port
    the archive gives the meter (``meters.port_oad``: :data:`PORT_RS485_1`, or e.g. ``F2090201`` the
    carrier / PLC port; COMDCB 2400 bit/s, even parity, 8 data bits, 1 stop bit, no flow control)
    carrying DL/T 645 reads of :data:`DI645_DAILY_TIME` (the freeze time) and of the items of the
    task's objects (:data:`DAILY_645`: forward, reverse, combined reactive 1 and 2) with n = (today − D)
    + 1 (上 n 次日冻结, DI0 = n, 1..62: 上1次 is the most recent freeze, today's 00:00 once it happened —
    DL/T 645-2007 appendix A).  A port the concentrator lacks
    answers DAR 6 (对象不存在); a port the meter is not on, DAR 33 (请求超时).
(d) **pushed by the terminal** after its daily collection: ``REPORT-Notification-RecordList`` with
    OAD ``60120300``, RCSD :data:`DAILY_RCSD` and one row per meter; the head-end stores the rows
    durably, then answers ``REPORT-Response-RecordList``.

Monthly settlement readings use OAD ``50060200`` (月冻结) with :data:`MONTHLY_METER_RCSD` (adds the
maximum demand ``10100200``); load curves use ``50020200`` (分钟冻结) with :data:`CURVE_METER_RCSD`
at 15-minute freeze times.

Every energy value in these objects is double-long-unsigned with scaler −2 kWh / kvarh (DL/T 698.45
appendix, class 1 energy), which is the lake's 0.01 kWh: the integer goes into the lake unchanged.
Maximum demand is double-long-unsigned, scaler −4 kW, the lake's 0.0001 kW.
"""

from __future__ import annotations

from gridhead.protocols.dlt698.axdr import Road
from gridhead.storage import schema

# --- object attribute descriptors (OAD = OI << 16 | attribute << 8 | index) -------------------------
OAD_TASK_RECORDS = 0x60120300     # 任务配置单元 记录表: the concentrator's collected records
OAD_TARGET_TSA = 0x202A0200       # 目标服务器地址: the meter a record row belongs to
OAD_COLLECT_START = 0x60400200    # 采集启动时标
OAD_COLLECT_SUCCESS = 0x60410200  # 采集成功时标
OAD_COLLECT_STORE = 0x60420200    # 采集存储时标
OAD_FREEZE_TIME = 0x20210200      # 数据冻结时间
OAD_DAY_FREEZE = 0x50040200       # 日冻结
OAD_MONTH_FREEZE = 0x50060200     # 月冻结
OAD_MINUTE_FREEZE = 0x50020200    # 分钟冻结 (load curve)
OAD_FWD_ACTIVE = 0x00100200       # 正向有功电能 [total, tariff 1..4]
OAD_REV_ACTIVE = 0x00200200       # 反向有功电能
OAD_REACTIVE_1 = 0x00300200       # 组合无功1电能
OAD_REACTIVE_2 = 0x00400200       # 组合无功2电能
OAD_FWD_MAX_DEMAND = 0x10100200   # 正向有功最大需量 [total, tariffs] of structure {value, time}
OAD_VOLTAGE = 0x20000200
OAD_CURRENT = 0x20010200
OAD_ACTIVE_POWER = 0x20040200
OAD_POWER_FACTOR = 0x200A0200
OAD_FREQUENCY = 0x200F0200
OAD_DATETIME = 0x40000200         # 日期时间 (对时 reads and sets this)
OMD_REMOTE_CONTROL = 0x80000000   # 遥控 object 8000; methods 127 trip / 129 close...
PORT_RS485_1 = 0xF2010201         # RS-485 port 1 of the concentrator (transparent 645 forwarding)
PORT_CARRIER = 0xF2090201         # 载波/微功率无线 port: where the archive puts most customers' meters

# the frozen-energy columns read from a meter, in this order
ENERGY_OADS = (OAD_FWD_ACTIVE, OAD_REV_ACTIVE, OAD_REACTIVE_1, OAD_REACTIVE_2)
# RCSD: a tuple of CSD; an int is an OAD, a Road(oad, oads) a ROAD (protocols.dlt698.axdr)
DAILY_METER_RCSD = (OAD_FREEZE_TIME,) + ENERGY_OADS
MONTHLY_METER_RCSD = DAILY_METER_RCSD + (OAD_FWD_MAX_DEMAND,)
CURVE_METER_RCSD = (OAD_FREEZE_TIME, OAD_FWD_ACTIVE, OAD_ACTIVE_POWER)
# the concentrator's record rows: which meter, when collected, then the day-freeze columns as a ROAD
DAILY_RCSD_HEAD = (OAD_TARGET_TSA, OAD_COLLECT_START, OAD_COLLECT_SUCCESS, OAD_COLLECT_STORE)
DAILY_RCSD = DAILY_RCSD_HEAD + (Road(OAD_DAY_FREEZE, DAILY_METER_RCSD),)

# --- 698 value → lake registers -----------------------------------------------------------------------
# For an array attribute, element i of the array goes to register REGISTER_MAP[oad][i] (None = not
# stored).  Scalers are those of the lake's registers, so the integer is stored unchanged.
R = schema.REGISTER_CODES
REGISTER_MAP: dict[int, tuple] = {
    OAD_FWD_ACTIVE: (R["ae_fwd"], R["ae_fwd_t1"], R["ae_fwd_t2"], R["ae_fwd_t3"], R["ae_fwd_t4"]),
    OAD_REV_ACTIVE: (R["ae_rev"],),
    OAD_REACTIVE_1: (R["re_fwd"],),
    OAD_REACTIVE_2: (R["re_rev"],),
    OAD_FWD_MAX_DEMAND: (R["md_fwd"],),               # element: structure {value, date_time_s}
    OAD_VOLTAGE: (R["u_a"], R["u_b"], R["u_c"]),       # long-unsigned, scaler −1 V
    OAD_CURRENT: (R["i_a"], R["i_b"], R["i_c"]),       # double-long, scaler −3 A
    OAD_ACTIVE_POWER: (R["p"],),                       # double-long, scaler −1 W = 0.0001 kW
    OAD_POWER_FACTOR: (R["pf"],),                      # long, scaler −3
    OAD_FREQUENCY: (R["freq"],),                       # long-unsigned, scaler −2 Hz
}

# --- DL/T 645-2007 equivalents (meters behind a concentrator, or on RS-485 directly) -----------------
DI645_DAILY_TIME = 0x05060001      # 上1次日冻结时间 (DI0 = n for 上 n 次)
DI645_DAILY_FWD = 0x05060101       # 上1次日冻结正向有功电能数据 [total, tariff 1..4]
DI645_DAILY_REV = 0x05060201       # 上1次日冻结反向有功电能数据
DI645_DAILY_RE1 = 0x05060301       # 上1次日冻结组合无功1电能数据
DI645_DAILY_RE2 = 0x05060401       # 上1次日冻结组合无功2电能数据
DI645_FWD_ACTIVE = 0x0001FF00      # 当前正向有功电能数据块
DI645_FWD_TOTAL = 0x00010000       # 当前正向有功总电能 (and 0001 01..04 00 费率1..4: the block's items)
DI645_MONTH_FWD = 0x0001FF01       # 上1结算日正向有功电能数据块 (DI0 = n for 上 n 结算日)
DI645_MONTH_REV = 0x0002FF01       # 上1结算日反向有功电能数据块
DI645_MONTH_RE1 = 0x0003FF01       # 上1结算日组合无功1电能数据块
DI645_MONTH_RE2 = 0x0004FF01       # 上1结算日组合无功2电能数据块
DI645_MONTH_MD = 0x0101FF01        # 上1结算日正向有功最大需量及发生时间数据块 (XX.XXXX kW, YYMMDDhhmm)
REGISTER_MAP_645: dict[int, tuple] = {
    DI645_DAILY_FWD: REGISTER_MAP[OAD_FWD_ACTIVE],
    DI645_DAILY_REV: (R["ae_rev"],),
    DI645_DAILY_RE1: (R["re_fwd"],),
    DI645_DAILY_RE2: (R["re_rev"],),
    DI645_FWD_ACTIVE: REGISTER_MAP[OAD_FWD_ACTIVE],
    DI645_MONTH_FWD: REGISTER_MAP[OAD_FWD_ACTIVE],
    DI645_MONTH_REV: (R["ae_rev"],),
    DI645_MONTH_RE1: (R["re_fwd"],),
    DI645_MONTH_RE2: (R["re_rev"],),
    DI645_MONTH_MD: (R["md_fwd"],),    # the block's first member: the total's demand (0.0001 kW)
}
# the DL/T 645 item that carries a task's 698 item (DI0 = n for 上 n 次日冻结 / 上 n 结算日): what a
# 645 meter is read for when a collection task names the 698 object (headend.collect)
DAILY_645: dict[int, int] = {OAD_FWD_ACTIVE: DI645_DAILY_FWD, OAD_REV_ACTIVE: DI645_DAILY_REV,
                             OAD_REACTIVE_1: DI645_DAILY_RE1, OAD_REACTIVE_2: DI645_DAILY_RE2}
MONTH_645: dict[int, int] = {OAD_FWD_ACTIVE: DI645_MONTH_FWD, OAD_REV_ACTIVE: DI645_MONTH_REV,
                             OAD_REACTIVE_1: DI645_MONTH_RE1, OAD_REACTIVE_2: DI645_MONTH_RE2,
                             OAD_FWD_MAX_DEMAND: DI645_MONTH_MD}
MAX_DAYS_BACK_645 = 62             # a 645 meter keeps 62 daily freezes (上1..上62次)

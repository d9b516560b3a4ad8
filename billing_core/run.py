"""The bill run over columns (电费核算): segments of readings in, bills and line items out.

Pure orchestration of :mod:`billing_core.energy` and :mod:`billing_core.engine` over 1-D numpy columns;
``billing_core.jobs.bills`` reads the lake and the archive into a :class:`RunInput` and writes what
:func:`compute` returns.  No I/O, no per-account Python loop: every step is a numpy expression over all
bills (or all segments) at once; Python loops run over registers, line-item codes and distinct tariffs.

A *segment* is a stretch of the period metered by one meter with one multiplier (CT × PT).  A meter
replacement (换表) or a multiplier change (倍率变更) gives a bill two or more segments; their energies add
up per bill (:func:`billing_core.energy.sum_by_bill`).  Readings are in the register's scale (0.01 kWh,
−1 = no reading); ``tou_check`` is False where the end reading of the TOU registers is not taken at the
same instant as the total (a removal reading is recorded for the total only: the TOU registers end at
the last daily freeze and the remainder is billed as 平, 平段取差).

Which tariff prices a bill: the tariff file the customer's tariff assignment chooses
(:meth:`billing_core.tariff.TariffSet.price_from_tariff_assignment`: the file listing its code, else the
category's default) at the customer's voltage level, in the version and season in force on the period's
first day.  Every change of the customer's tariff assignment (``customer_tariffs``) and every new
version of the tariff in force inside the period splits the bill at that day
(:func:`mid_period_tariff_changes`: as many parts as changes, :func:`billing_core.engine.split_at_changes`)
by the day's frozen reading, else pro rata by days.  The metering point's basic-charge method and 力调
standard (the archive's ``points.basic_charge`` / ``pf_standard_x100``) override the tariff file's — the
customer chose them (1583号 lets a two-part customer choose capacity or demand); a single-rate tariff
never gets a basic charge.

Bill review (核算审核): a bill is *held* (not issued) when any review flag is set — the energy flags of
:mod:`billing_core.energy` (missing or estimated reading, negative energy, register rollover, TOU
mismatch — per segment, :func:`billing_core.energy.tou_registers_do_not_add_up` —, zero consumption) and
``R_JUMP`` (daily energy over 3× or under ⅓ of the customer's history,
when the history averages at least 1 kWh a day), ``R_REVERSE`` (reverse active energy registered: a
reverse-running meter), ``R_NO_POINT`` (a customer without a metering point in the period),
``R_NO_REACTIVE`` (力调 without a reactive reading, :func:`hold_without_reactive`) and ``R_NO_YTD`` (annual
tiers whose year-to-date cannot be established, :func:`year_to_date_from_readings`).  Held bills
are priced anyway (negative period energies as 0) so that the reviewer sees the amounts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import numpy.typing as npt

from gridhead.billing_core import _billing_py as K
from gridhead.billing_core import energy, engine
from gridhead.billing_core.energy import (F_ESTIMATED, F_MISSING, F_NEGATIVE, F_ROLLOVER, F_TOU_MISMATCH,  # noqa: F401
                                 F_ZERO)
from gridhead.billing_core.powerfactor import (NO_ADJUSTMENT, STANDARDS, monthly_average_power_factor,
                                      reactive_energy_for_power_factor)
from gridhead.billing_core.rounding import round_div
from gridhead.billing_core.tariff import BASIC_KINDS, Fund, TableKey, TariffSet, TariffTable
from gridhead.protocols.errors import BillingError

R_JUMP = 64
R_REVERSE = 128
R_NO_POINT = 256
R_NO_REACTIVE = 512             # 力调 customer without a reactive reading (缺无功)
R_NO_YTD = 1024                 # annual tiers: the year-to-date cannot be established (年累计电量不明)
REASONS = {**energy.FLAG_NAMES, R_JUMP: "consumption jump vs history", R_REVERSE: "reverse energy registered",
           R_NO_POINT: "no metering point", R_NO_REACTIVE: "no reactive reading for the power-factor adjustment",
           R_NO_YTD: "year-to-date energy unknown for the annual tiers"}
REASONS_ZH = {F_MISSING: "缺抄", F_ESTIMATED: "估抄", F_NEGATIVE: "负电量", F_ROLLOVER: "表码翻转",
              F_TOU_MISMATCH: "分时电量不平", F_ZERO: "零电量", R_JUMP: "电量突变", R_REVERSE: "反向电量",
              R_NO_POINT: "无计量点", R_NO_REACTIVE: "缺无功", R_NO_YTD: "年累计电量不明"}
JUMP_RATIO = 3
JUMP_MIN_DAILY = 100            # 0.01 kWh a day: a history below 1 kWh/day is not judged
REVERSE_MIN = 100               # 0.01 kWh: a reverse register moving 1 kWh or more

ACTIVE = ("ae_fwd", "ae_fwd_t1", "ae_fwd_t2", "ae_fwd_t3", "ae_fwd_t4")
REGS = energy.ENERGY_NAMES      # ae_fwd, ae_fwd_t1..t4, ae_rev, re_fwd, re_rev

# line items: (code, 中文, English, quantity unit, quantity decimals)
ITEM_CODES = (
    ("energy_sharp", "电度电费 尖", "energy charge, sharp", "kWh", 2),
    ("energy_peak", "电度电费 峰", "energy charge, peak", "kWh", 2),
    ("energy_flat", "电度电费 平", "energy charge, flat", "kWh", 2),
    ("energy_valley", "电度电费 谷", "energy charge, valley", "kWh", 2),
    ("tier2", "阶梯加价 第2档", "tier 2 increment", "kWh", 2),
    ("tier3", "阶梯加价 第3档", "tier 3 increment", "kWh", 2),
    ("basic", "基本电费", "basic charge", "kW", 4),
    ("pf_adjust", "力调电费", "power-factor adjustment", "cosφ", 2),
    ("funds", "政府性基金及附加", "government funds and surcharges", "kWh", 2),
    ("total", "合计", "total", "", 0),
)
PERIOD_COLS = ("e_sharp", "e_peak", "e_flat", "e_valley")


@dataclasses.dataclass
class RunInput:
    """Columns of one period.  Per bill (length N, one bill per customer, in customer order):

    ``category_idx`` (into ``categories``), ``voltage_v``, ``tariff_code_idx``/``new_tariff_code_idx``
    (into ``tariff_codes``; new = −1 when the assignment does not change), ``change_date_days``
    (days since 1970-01-01 of the new assignment, −1 none), ``has_point``, ``hv_lv``, ``tx_capacity_kva``,
    ``tx_p0_w``, ``tx_pk_w``, ``tx_loss_rate_bp``, ``line_loss_rate_bp`` (−1 = none), ``contract_kw``,
    ``basic_idx`` (into ``tariff.BASIC_KINDS`` order), ``pf_std_x100`` (0 none, 80, 85, 90), ``cum_prev``
    (annual tiers: the year-to-date before the period, :func:`year_to_date_from_readings`, with ``ytd_known``),
    ``tx_i0_x100``/``tx_uk_x100``/``tx_q_loss_rate_bp`` (−1 none), ``hist_e`` and ``hist_days`` (earlier
    bills' energy and days, 0 = no history), ``chg_<reg>`` (the frozen reading on the change day, −1).

    Per segment (length S): ``seg_bill``, ``ct``, ``pt``, ``digits`` (integer digits of the register),
    ``days``, ``prev_<reg>`` / ``now_<reg>`` for every register of ``REGS``, ``prev_quality``,
    ``now_quality``, ``md`` (maximum demand at the meter, 0.0001 kW, −1 none), ``tou_check``.

    Long format (any number per bill, in bill order; ``None``: from the bill columns above, at most one
    change each): ``changes`` — the tariff assignment changes inside the period: ``bill``, ``days`` (days
    since 1970-01-01 the new assignment starts), ``code_idx`` (its tariff code, into ``tariff_codes``);
    ``frozen`` — the daily frozen reading (日冻结, 00:00) of the bill's meter on each day the month may be
    split (assignment changes and tariff versions starting in the period): ``bill``, ``days``, and a column
    per register of ``REGS`` (−1 none).
    """

    start: dt.date
    end: dt.date
    categories: list[str]
    tariff_codes: list[str]
    bill: dict[str, np.ndarray]
    seg: dict[str, np.ndarray]
    changes: dict[str, np.ndarray] | None = None
    frozen: dict[str, np.ndarray] | None = None

    @property
    def n(self) -> int:
        return len(self.bill["category_idx"])


def voltage_level(voltage_v: int) -> str:
    """The tariff files' voltage level of a supply voltage (V): 不满1千伏, 1-10千伏, 20/35/110千伏."""
    if voltage_v < 1000:
        return "under_1kV"
    if voltage_v <= 10_000:
        return "1-10kV"
    return f"{voltage_v // 1000}kV"


def _variants(table: TariffTable) -> TariffTable:
    """The table repeated for each (basic kind, 力调 standard) a metering point may override."""
    R = len(table.params)
    blocks: list[np.ndarray] = []
    keys: list[TableKey] = []
    funds: dict[int, tuple[Fund, ...]] = {}
    for b in range(len(BASIC_KINDS)):
        for p in range(len(STANDARDS) + 1):
            blk = table.params.copy()
            two_part = blk[:, K.P_BASIC_KIND] != K.BASIC_NONE
            blk[:, K.P_BASIC_KIND] = np.where(two_part & (b != K.BASIC_NONE), b, blk[:, K.P_BASIC_KIND])
            blk[:, K.P_PF_STD] = p - 1
            off = len(blocks) * R
            blocks.append(blk)
            keys += list(table.keys)
            funds.update({off + r: f for r, f in table.funds.items()})
    return TariffTable(np.ascontiguousarray(np.vstack(blocks)), tuple(keys), table.index, funds)


def _variant_offset(inp: RunInput, R: int, assess: np.ndarray) -> np.ndarray:
    b = inp.bill["basic_idx"].astype(np.int64)
    std = np.full(inp.n, 0, np.int64)                       # 0 = no 力调 (NO_ADJUSTMENT + 1)
    for k, s in enumerate(STANDARDS):
        std[assess & (inp.bill["pf_std_x100"] == s)] = k + 1
    assert NO_ADJUSTMENT == -1
    return (b * (len(STANDARDS) + 1) + std) * R


def _rows_on(inp: RunInput, tariffs: TariffSet, day: dt.date, sel: np.ndarray, key_idx: np.ndarray,
             keys: list[str], where: np.ndarray | None = None) -> np.ndarray:
    """Base tariff row of the bills ``sel`` on ``day``, of their tariffs ``key_idx[where]`` (default
    ``key_idx[sel]``; into ``keys``: keys of ``tariffs.tariffs``), looked up once per distinct (tariff, voltage)."""
    table = tariffs.table()
    ki = key_idx[sel if where is None else where].astype(np.int64)
    volts = inp.bill["voltage_v"][sel]
    key = ki * 1_000_000 + volts // 1000
    uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
    look = np.array([table.row(keys[int(ki[i])], voltage_level(int(volts[i])), day, tariffs) for i in first],
                    dtype=np.int64)
    return look[inv.reshape(-1)] if len(uniq) else np.zeros(0, np.int64)


def _tariff_keys(inp: RunInput, tariffs: TariffSet
                 ) -> tuple[list[str], np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(keys, key of the assignment at the period start per bill, the assignment changes inside the period
    as (bill, days since 1970-01-01, key)): :meth:`billing_core.tariff.TariffSet.price_from_tariff_assignment`
    once per distinct (code, category).  Keys index ``keys`` (keys of ``tariffs.tariffs``)."""
    bill = inp.bill
    n = inp.n
    ch = changes_of(inp)
    keys: list[str] = []
    index: dict[str, int] = {}

    def key_of(codes: npt.ArrayLike, cats: npt.ArrayLike) -> np.ndarray:
        pair = np.asarray(codes, np.int64) * 1_000 + np.asarray(cats, np.int64)
        uniq, inv = np.unique(pair, return_inverse=True)
        look: list[int] = []
        for u in uniq:
            c, cat = int(u) // 1_000, int(u) % 1_000
            k = tariffs.price_from_tariff_assignment(inp.tariff_codes[c] if c >= 0 else None, inp.categories[cat])
            look.append(index.setdefault(k, len(index)))
            if len(keys) < len(index):
                keys.append(k)
        return np.array(look, np.int64)[inv.reshape(-1)] if len(pair) else np.zeros(0, np.int64)

    cats = bill["category_idx"].astype(np.int64)
    key0 = key_of(bill.get("tariff_code_idx", np.full(n, -1, np.int64)), cats)
    key_chg = key_of(ch["code_idx"], cats[ch["bill"]])
    return keys, key0, (ch["bill"], ch["days"], key_chg)


def changes_of(inp: RunInput) -> dict[str, np.ndarray]:
    """The tariff assignment changes of :attr:`RunInput.changes`, or from the one-change bill columns
    (``change_date_days``, ``new_tariff_code_idx``; a change to no new code keeps the code)."""
    if inp.changes is not None:
        return {k: np.asarray(inp.changes[k], np.int64) for k in ("bill", "days", "code_idx")}
    bill = inp.bill
    n = inp.n
    days = np.asarray(bill.get("change_date_days", np.full(n, -1)), np.int64)
    new = np.asarray(bill.get("new_tariff_code_idx", np.full(n, -1)), np.int64)
    idx = np.flatnonzero(days >= 0)
    old = np.asarray(bill.get("tariff_code_idx", np.full(n, -1)), np.int64)
    return {"bill": idx, "days": days[idx], "code_idx": np.where(new[idx] >= 0, new[idx], old[idx])}


def frozen_of(inp: RunInput) -> dict[str, np.ndarray]:
    """The frozen readings of :attr:`RunInput.frozen`, or from the one-change bill columns (``chg_<reg>`` on
    ``change_date_days``)."""
    if inp.frozen is not None:
        return {k: np.asarray(v, np.int64) for k, v in inp.frozen.items()}
    days = np.asarray(inp.bill.get("change_date_days", np.full(inp.n, -1)), np.int64)
    idx = np.flatnonzero(days >= 0)
    out = {"bill": idx, "days": days[idx]}
    for r in REGS:
        out[r] = np.asarray(inp.bill.get(f"chg_{r}", np.full(inp.n, -1)), np.int64)[idx]
    return out


def mid_period_tariff_changes(inp: RunInput, tariffs: TariffSet, keys: list[str], key0: np.ndarray,
                              chg_bill: npt.ArrayLike, chg_days: npt.ArrayLike, chg_key: npt.ArrayLike,
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each bill's month is split: ``(bill, day, key)`` of every change, in (bill, day) order — ``day``
    the 1-based day of the period from which the tariff ``key`` (into ``keys``) prices the bill.

    DOMAIN.md "Mid-period tariff change: split at the effective date" and the ruling "A customer's tariff
    assignment (with its history) chooses the price": the month is split on every day a tariff assignment
    (``customer_tariffs``) starts inside it, and on every day a new version of the tariff in force on that
    stretch starts — as many parts as there are such days (an assignment change and a new price version in
    one month: three parts).  Each part is priced by its own tariff row; the energy is split by those days'
    frozen readings else by days (:func:`_energy_before`), and the lines are added exactly and rounded once
    (:func:`billing_core.engine.split_at_changes`, :meth:`billing_core.engine.LineItems.by_bill`).
    """
    N = inp.n
    period_days = (inp.end - inp.start).days
    start_days = (inp.start - dt.date(1970, 1, 1)).days
    chg_bill, chg_days, chg_key = (np.asarray(x, np.int64) for x in (chg_bill, chg_days, chg_key))
    inside = (chg_days > start_days) & (chg_days < start_days + period_days)
    # the assignment stretches: from day 1 with the period's first assignment, then one per change
    s_bill = np.concatenate([np.arange(N, dtype=np.int64), chg_bill[inside]])
    s_day = np.concatenate([np.ones(N, np.int64), chg_days[inside] - start_days + 1])
    s_key = np.concatenate([np.asarray(key0, np.int64), chg_key[inside]])
    order = np.lexsort((np.arange(len(s_bill)), s_day, s_bill))
    s_bill, s_day, s_key = s_bill[order], s_day[order], s_key[order]
    keep = np.ones(len(s_bill), bool)        # two assignments from the same day: the later one holds
    keep[:-1] = (s_bill[1:] != s_bill[:-1]) | (s_day[1:] != s_day[:-1])
    s_bill, s_day, s_key = s_bill[keep], s_day[keep], s_key[keep]
    s_to = np.full(len(s_bill), period_days + 1, np.int64)
    same = s_bill[1:] == s_bill[:-1]
    s_to[:-1] = np.where(same, s_day[1:], period_days + 1)
    # a new version of the stretch's tariff starting inside the stretch
    c_bills, c_days, c_keys = [s_bill[s_day > 1]], [s_day[s_day > 1]], [s_key[s_day > 1]]
    for ki, k in enumerate(keys):
        for v in tariffs.tariff(k).versions:
            if inp.start < v.effective < inp.end:
                d = (v.effective - inp.start).days + 1
                hit = (s_key == ki) & (s_day < d) & (d < s_to)
                c_bills.append(s_bill[hit])
                c_days.append(np.full(int(hit.sum()), d, np.int64))
                c_keys.append(s_key[hit])
    c_bill, c_day, c_key = (np.concatenate(x) for x in (c_bills, c_days, c_keys))
    order = np.lexsort((c_day, c_bill))
    return c_bill[order], c_day[order], c_key[order]


def compute(inp: RunInput, tariffs: TariffSet, kernel: ModuleType | None = None,
            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], TariffTable]:
    """Every bill of the period: ``(bills, items, table)`` as dicts of numpy columns.

    ``bills`` has one entry per customer (energies, demand, money of ``engine.ITEMS``, ``flags``,
    ``cum_after``, ``segments``, ``parts``); ``items`` the line items (``bill`` index, ``seq``,
    ``code`` index into ITEM_CODES, ``quantity`` (basic: 0.0001 kW or kVA), ``unit_price`` (µyuan; 力调: the
    rate in basis points; −1 where a tariff change gives the parts different prices),
    ``amount_fen``), bill after bill.  ``table`` is the tariff table the rows refer to.
    """
    N, S = inp.n, len(inp.seg["seg_bill"])
    seg, bill = inp.seg, inp.bill
    period_days = (inp.end - inp.start).days
    # --- energy per segment, then per bill --------------------------------------------------------
    digits = seg["digits"].astype(np.int64) + 2
    e, f8 = energy.segment_energy({r: seg[f"prev_{r}"] for r in ACTIVE}, {r: seg[f"now_{r}"] for r in ACTIVE},
                                  seg["ct"], seg["pt"], digits, seg["prev_quality"], seg["now_quality"])
    f = np.where(seg["tou_check"], f8, f8 & ~np.uint8(F_TOU_MISMATCH)).astype(np.uint16)
    mult = seg["ct"].astype(np.int64) * seg["pt"].astype(np.int64)
    rev, _ = energy.register_energy(seg["prev_ae_rev"], seg["now_ae_rev"], mult, digits)
    q_imp, fq = energy.register_energy(seg["prev_re_fwd"], seg["now_re_fwd"], mult, digits)
    # exported reactive energy where the meter registers it (both readings of re_rev present)
    q_exp, fqe = energy.register_energy(seg["prev_re_rev"], seg["now_re_rev"], mult, digits)
    half_exp = (seg["prev_re_rev"] >= 0) != (seg["now_re_rev"] >= 0)
    fq = fq | np.where(half_exp, F_MISSING, 0).astype(np.uint8) | (fqe & np.uint8(F_NEGATIVE | F_ROLLOVER))
    # a 力调 customer whose meter has no reactive reading at all is held (缺无功, ruling
    # hold_without_reactive); one reactive reading missing is a missing reading
    has_q = np.zeros(N, bool)
    has_q[seg["seg_bill"][(seg["prev_re_fwd"] >= 0) | (seg["now_re_fwd"] >= 0)]] = True
    assessed = bill["pf_std_x100"] > 0
    f |= np.where((assessed & has_q)[seg["seg_bill"]], fq & (F_MISSING | F_NEGATIVE | F_ROLLOVER), 0
                  ).astype(np.uint16)
    sums = energy.sum_by_bill(seg["seg_bill"], N, {
        "e_sharp": e["ae_fwd_t1"], "e_peak": e["ae_fwd_t2"], "e_flat": e["flat_billed"], "e_valley": e["ae_fwd_t4"],
        "e_total": e["ae_fwd"], "q_imp": q_imp, "q_exp": q_exp, "rev": rev, "flags": f,
        "segments": np.ones(S, np.int64)})
    flags = sums.pop("flags").astype(np.uint16)
    flags |= hold_without_reactive(assessed, has_q)
    demand = np.zeros(N, np.int64)
    np.maximum.at(demand, seg["seg_bill"], np.where(seg["md"] >= 0, seg["md"] * mult, 0))
    flags |= np.where(sums["rev"] >= REVERSE_MIN, R_REVERSE, 0).astype(np.uint16)
    flags |= np.where(~bill["has_point"], R_NO_POINT | F_MISSING, 0).astype(np.uint16)
    flags |= np.where((sums["e_total"] == 0) & (flags & F_MISSING == 0) & bill["has_point"], F_ZERO, 0
                      ).astype(np.uint16)
    hist = bill["hist_e"] * period_days
    judged = bill["hist_days"] > 0
    judged &= bill["hist_e"] >= JUMP_MIN_DAILY * bill["hist_days"]
    cur = sums["e_total"] * np.maximum(bill["hist_days"], 1)
    jump = judged & ((cur > JUMP_RATIO * hist) | (JUMP_RATIO * cur < hist))
    flags |= np.where(jump & (sums["e_total"] > 0), R_JUMP, 0).astype(np.uint16)

    # --- 高供低计 losses ----------------------------------------------------------------------------
    periods = tuple(np.maximum(sums[c], 0) for c in PERIOD_COLS)
    a_p = sum(periods)
    # the month's imported and exported reactive energy, each added over the segments (signed), then
    # |imported| + |exported| (not per segment: a backward step of one segment is not energy of the month)
    a_q = reactive_energy_for_power_factor(sums["q_imp"], sums["q_exp"])
    hv = bill["hv_lv"]
    formula = hv & (bill["tx_p0_w"] >= 0) & (bill["tx_pk_w"] >= 0)
    method = np.where(formula, 1, np.where(hv & (bill["tx_loss_rate_bp"] >= 0), 2, 0))
    method = np.where(hv & (method == 0) & (bill["line_loss_rate_bp"] > 0), 2, method)
    zeros = np.zeros(N, np.int64)
    rate_p = np.maximum(bill["tx_loss_rate_bp"], 0)
    q_rate = bill.get("tx_q_loss_rate_bp", np.full(N, -1, np.int64))
    loss_p, loss_q = energy.transformer_loss(
        method, a_p, a_q, period_days * 24, np.maximum(bill["tx_capacity_kva"], 1), bill["tx_p0_w"],
        bill["tx_pk_w"], np.maximum(bill.get("tx_i0_x100", zeros), 0), np.maximum(bill.get("tx_uk_x100", zeros), 0),
        rate_p, zeros, zeros, np.maximum(bill["line_loss_rate_bp"], 0), np.where(q_rate >= 0, q_rate, rate_p))
    periods, demand = energy.split_loss_over_tou(loss_p, periods, demand)
    a_q = a_q + loss_q
    # 力调: the month's one power factor of each assessed metering point (the kernel reads it only there)
    pf_month = np.full(N, engine.PF_FROM_ROW, np.int64)
    judge = np.flatnonzero(assessed & has_q)
    pf_month[judge] = monthly_average_power_factor((a_p + loss_p)[judge], a_q[judge])

    # --- tariff rows (the assignment chooses the tariff), the mid-period change, pricing ------------
    base = tariffs.table()
    table = _variants(base)
    R = len(base.params)
    off = _variant_offset(inp, R, assessed & has_q)
    keys, key0, change = _tariff_keys(inp, tariffs)
    everyone = np.arange(N)
    row0 = _rows_on(inp, tariffs, inp.start, everyone, key0, keys) + off
    # the parts of the month: every assignment change and every new version of the tariff in force
    cut_bill, cut_day, cut_key = mid_period_tariff_changes(inp, tariffs, keys, key0, *change)
    cut_row = np.zeros(len(cut_bill), np.int64)
    for d in np.unique(cut_day):
        sel = np.flatnonzero(cut_day == d)
        cut_row[sel] = _rows_on(inp, tariffs, inp.start + dt.timedelta(days=int(d) - 1), cut_bill[sel], cut_key,
                                keys, where=sel) + off[cut_bill[sel]]
    parts = np.bincount(cut_bill, minlength=N).astype(np.int64) + 1
    first_cut = np.full(N, -1, np.int64)
    first_cut[cut_bill[::-1]] = np.arange(len(cut_bill))[::-1]
    new_row = np.where(first_cut >= 0, cut_row[np.maximum(first_cut, 0)] if len(cut_row) else -1, -1)
    change_day = np.where(first_cut >= 0, cut_day[np.maximum(first_cut, 0)] if len(cut_day) else 0, 0)
    # annual tiers in any part need the year-to-date (a later part continues it)
    annual = table.params[row0, K.P_TIER_KIND] == K.TIER_ANNUAL
    np.logical_or.at(annual, cut_bill, table.params[cut_row, K.P_TIER_KIND] == K.TIER_ANNUAL)
    ytd_known = bill.get("ytd_known", np.ones(N, bool))
    flags |= np.where(annual & ~ytd_known, R_NO_YTD, 0).astype(np.uint16)
    cum_prev = np.where(ytd_known, bill["cum_prev"], 0)
    rows = engine.ChargeRows.of(
        N, tariff_row=row0, e_sharp=periods[0], e_peak=periods[1], e_flat=periods[2], e_valley=periods[3],
        q=a_q, cum_prev=cum_prev, demand=demand, capacity_kva=np.maximum(bill["tx_capacity_kva"], 0),
        contract_kw=np.maximum(bill["contract_kw"], 0), days=period_days, period_days=period_days,
        pf_x100=pf_month)
    if len(cut_bill):
        e_before = _energy_before(inp, sums, periods, cut_bill, cut_day, loss_p, period_days)
        rows = engine.split_at_changes(rows, cut_bill, cut_day, cut_row.astype(np.int32), e_before)
    priced = engine.price(rows, table, kernel)
    items = priced.by_bill(rows.bill, N, table)
    # the basic charge's kind on the bill: the first part's that has one (a version may start two-part)
    basic_kind = table.params[row0, K.P_BASIC_KIND].copy()
    if rows.bill is not None:
        kinds = table.params[rows.tariff_row, K.P_BASIC_KIND]
        has = np.flatnonzero(kinds != K.BASIC_NONE)
        firsts = np.full(N, K.BASIC_NONE, np.int64)
        firsts[rows.bill[has][::-1]] = kinds[has][::-1]
        basic_kind = firsts

    out = {"e_total": a_p, "e_metered": sums["e_total"], "q": a_q, "rev": sums["rev"], "loss_p": loss_p,
           "e_settled": a_p + loss_p,
           "demand": demand, "segments": sums["segments"], "parts": parts, "flags": flags,
           "tariff_row": row0, "pf_not_assessed": assessed & ~has_q, "new_row": new_row,
           "change_day": change_day, "basic_kind": basic_kind}
    for c, p in zip(PERIOD_COLS, periods):
        out[c] = p
    for k in engine.ITEMS:
        out[k] = items[k]
    out["cum_after"] = np.where(annual, cum_prev + a_p, 0)
    out["held"] = flags != 0
    return out, line_items(out, table), table


def year_to_date_from_readings(n: int, opening: npt.ArrayLike, seg_bill: npt.ArrayLike, prev: npt.ArrayLike,
                               now: npt.ArrayLike, multiplier: npt.ArrayLike, digits: npt.ArrayLike,
                               ) -> tuple[np.ndarray, np.ndarray]:
    """The annual tiers' year-to-date before the period, 0.01 kWh, and whether it is known, per bill.

    Ruling "Annual tiers: the year-to-date is the metered energy since the tier year's start, from
    readings (or an opening year-to-date imported at go-live), never from a chain of earlier bills; if it
    cannot be established the bill is held with that reason" (DOMAIN.md, 发改价格〔2011〕2617号).  The tier
    year is the calendar year.  ``opening``: the imported year-to-date at go-live when the span starts
    there, else 0; the segments (``seg_bill``, ``prev``/``now`` total-register readings, −1 none, CT × PT
    ``multiplier``, register ``digits`` incl. decimals) cover the span from the tier year's start (or the
    go-live) to the period start, by meter (换表) and multiplier (倍率) history, as the month's segments do.
    A missing or backwards reading leaves the year-to-date unknown (the bill is held, ``R_NO_YTD``).
    """
    e, f = energy.register_energy(prev, now, multiplier, digits)
    bad = (f & (F_MISSING | F_NEGATIVE)) != 0
    sums = energy.sum_by_bill(np.asarray(seg_bill, np.intp), n, {"e": np.where(bad, 0, e), "bad": bad.astype(np.int64)})
    known = sums["bad"] == 0
    return np.where(known, np.asarray(opening, np.int64) + sums["e"], 0), known


def hold_without_reactive(assessed: np.ndarray, has_reactive: np.ndarray) -> np.ndarray:
    """Flag ``R_NO_REACTIVE`` for the bills to hold: under 力调 without any reactive reading.

    Ruling "A customer under 力调 without a reactive reading is held (缺无功), not issued unadjusted"
    (DOMAIN.md).  The held bill shows no 力调 line (no power factor can be computed) until reviewed.
    """
    return np.where(np.asarray(assessed) & ~np.asarray(has_reactive), R_NO_REACTIVE, 0).astype(np.uint16)


def _energy_before(inp: RunInput, sums: dict[str, np.ndarray], periods: Sequence[np.ndarray],
                   cut_bill: npt.ArrayLike, cut_day: npt.ArrayLike, loss_p: np.ndarray, period_days: int,
                   ) -> tuple[np.ndarray, ...]:
    """The four period energies of each bill from the period start up to each of its changes (``cut_bill``,
    ``cut_day``: 1-based day): by that day's frozen reading (:attr:`RunInput.frozen`) where the bill has one
    segment, no loss, and the reading is clean (no missing, backwards, rolled-over or TOU-mismatched
    register) and within the month's energies; else pro rata by days, rounded half away from zero."""
    cut_bill = np.asarray(cut_bill, np.int64)
    days1 = np.asarray(cut_day, np.int64) - 1
    pro = [round_div(p[cut_bill] * days1, period_days) for p in periods]
    seg, bill = inp.seg, inp.bill
    one = (sums["segments"] == 1) & (loss_p == 0)
    use = np.flatnonzero(one[cut_bill])
    if not len(use):
        return tuple(pro)
    # the frozen reading of each change day, looked up by (bill, day)
    frz = frozen_of(inp)
    start_days = (inp.start - dt.date(1970, 1, 1)).days
    fkey = frz["bill"] * 1_000_000 + (frz["days"] - start_days + 1)
    order = np.argsort(fkey, kind="stable")
    fkey = fkey[order]
    want = cut_bill[use] * 1_000_000 + days1[use] + 1
    pos = np.minimum(np.searchsorted(fkey, want), max(len(fkey) - 1, 0))
    found = (fkey[pos] == want) if len(fkey) else np.zeros(len(use), bool)
    use, at = use[found], order[pos[found]]
    # the one segment of each single-segment bill, from its prev reading to the change day's freeze
    s_idx = np.full(inp.n, -1, np.int64)
    s_idx[seg["seg_bill"]] = np.arange(len(seg["seg_bill"]))
    s = s_idx[cut_bill[use]]
    e, f = energy.segment_energy({r: seg[f"prev_{r}"][s] for r in ACTIVE}, {r: frz[r][at] for r in ACTIVE},
                                 seg["ct"][s], seg["pt"][s], seg["digits"][s].astype(np.int64) + 2)
    before = [e["ae_fwd_t1"], e["ae_fwd_t2"], e["flat_billed"], e["ae_fwd_t4"]]
    ok = (f & (F_MISSING | F_NEGATIVE | F_ROLLOVER | F_TOU_MISMATCH)) == 0
    for k in range(4):
        ok &= (before[k] >= 0) & (before[k] <= periods[k][cut_bill[use]])
    out = [p.copy() for p in pro]
    for k in range(4):
        out[k][use[ok]] = before[k][ok]
    return tuple(out)


def line_items(b: dict[str, np.ndarray], table: TariffTable) -> dict[str, np.ndarray]:
    """The line items of every bill, long format, bill after bill (codes of ITEM_CODES in order)."""
    N = len(b["total_fen"])
    par = table.params[b["tariff_row"]]
    mixed = b["parts"] > 1
    cols: dict[str, list[np.ndarray]] = {
        "bill": [], "seq": [], "code": [], "quantity": [], "unit_price": [], "amount_fen": []}

    def add(k: int, mask: npt.ArrayLike, qty: npt.ArrayLike, price: npt.ArrayLike, amount: npt.ArrayLike,
            split_price: npt.ArrayLike = -1) -> None:
        idx = np.flatnonzero(mask)
        cols["bill"].append(idx)
        cols["code"].append(np.full(len(idx), k, np.int8))
        cols["quantity"].append(np.asarray(qty, np.int64)[idx] if np.ndim(qty) else np.full(len(idx), qty, np.int64))
        price = np.broadcast_to(np.asarray(price, np.int64), (N,))
        cols["unit_price"].append(np.where(mixed, split_price, price)[idx])
        cols["amount_fen"].append(np.asarray(amount, np.int64)[idx])

    for k, p in enumerate(PERIOD_COLS):
        amount = b[f"energy_{p[2:]}_fen"]
        qty = quantity_beside_price(b, p)
        add(k, (qty != 0) | (amount != 0), qty, par[:, K.P_PRICE_SHARP + k], amount)
    add(4, b["tier2_kwh_x100"] != 0, quantity_beside_price(b, "tier2"), par[:, K.P_INC2], b["tier2_fen"])
    add(5, b["tier3_kwh_x100"] != 0, quantity_beside_price(b, "tier3"), par[:, K.P_INC3], b["tier3_fen"])
    # the basic line where any part has a basic charge (its kind: the first such part's)
    kind = b["basic_kind"] if "basic_kind" in b else par[:, K.P_BASIC_KIND]
    add(6, kind != K.BASIC_NONE, np.where(kind == K.BASIC_CAPACITY, b["billing_demand"] * 10_000, b["billing_demand"]),
        np.where(kind == K.BASIC_CAPACITY, par[:, K.P_PRICE_KVA], par[:, K.P_PRICE_KW]), b["basic_fen"])
    add(7, par[:, K.P_PF_STD] >= 0, b["pf_x100"], b["pf_bp"], b["pf_adjust_fen"], b["pf_bp"])
    add(8, np.ones(N, bool), quantity_beside_price(b, "funds"), par[:, K.P_FUNDS], b["funds_fen"])
    add(9, np.ones(N, bool), 0, 0, b["total_fen"])
    out = {k: np.concatenate(v) for k, v in cols.items() if v}
    order = np.argsort(out["bill"], kind="stable")
    out = {k: v[order] for k, v in out.items()}
    # seq: position within the bill
    starts = np.searchsorted(out["bill"], out["bill"], side="left")
    out["seq"] = (np.arange(len(out["bill"])) - starts).astype(np.int8)
    return out


def quantity_beside_price(b: dict[str, np.ndarray], line: str) -> np.ndarray:
    """The quantity printed beside a per-kWh price: the energy that price multiplies (0.01 kWh).

    Ruling "The quantity printed beside a per-kWh price is the quantity that price multiplies" (DOMAIN.md):
    the TOU lines their period's settlement energy, the tier lines their tier energy, and the funds line
    the settlement energy — on 高供低计 bills the metered energy plus the losses, as the funds amount is.
    """
    if line in PERIOD_COLS:
        return b[line]
    if line in ("tier2", "tier3"):
        return b[f"{line}_kwh_x100"]
    if line == "funds":
        return b["e_settled"]
    raise BillingError(f"line {line!r} has no per-kWh price")


def check_items(bills: dict[str, np.ndarray], items: dict[str, np.ndarray]) -> None:
    """Guard: every bill's line items (all but the total) add up to its total."""
    n = len(bills["total_fen"])
    acc = np.zeros(n, np.int64)
    not_total = items["code"] != len(ITEM_CODES) - 1
    np.add.at(acc, items["bill"][not_total], items["amount_fen"][not_total])
    bad = np.flatnonzero(acc != bills["total_fen"])
    if len(bad):
        raise BillingError(f"bill {int(bad[0])}: line items do not add up to the total")


def reason_text(flags: np.ndarray, zh: bool = False) -> tuple[np.ndarray, list[str]]:
    """Distinct flag sets as text: ``(index per bill, texts)`` (one string per distinct set, not per bill)."""
    uniq, inv = np.unique(np.asarray(flags), return_inverse=True)
    names = REASONS_ZH if zh else REASONS
    texts = ["; ".join(t for bit, t in names.items() if int(u) & bit) for u in uniq]
    return inv.reshape(-1), texts

"""The bill kernel, numpy twin of ``ext/_billing.pyx`` (built as ``billing_core._billing``).

One call prices every charge row (an account-period, or an account-period segment after a tariff
change) at once, from 1-D columns.  Both implementations give the same fen, bit for bit; the
rounding of each line is the one in :mod:`billing_core.rounding`.

Inputs, one entry per charge row (all 1-D, C-contiguous):

=================  =======  ====================================================================
tariff_row         int32    row of ``params`` (a compiled tariff: category × voltage × version × season)
e_sharp .. e_valley int64   settlement energy per TOU period (尖/峰/平/谷), 0.01 kWh, losses included
q                  int64    reactive energy, 0.01 kvarh: cosφ of a row whose ``pf_x100`` is −2 (a whole month)
pf_x100            int64    the month's power factor for 力调 (0..100, −1 none, −2 from the row's P and Q):
                            :func:`billing_core.powerfactor.monthly_average_power_factor` — every part of
                            a split month carries the month's value
cum_prev           int64    annual tiers: energy billed earlier in the tier year, 0.01 kWh
demand             int64    maximum demand, 0.0001 kW (losses included for 高供低计)
capacity_kva       int64    transformer capacity, kVA (basic charge by capacity)
contract_kw        int64    contract demand, kW (basic charge by contract demand)
days, period_days  int32    days of this row / days of the billing period (pro rata; equal if whole)
=================  =======  ====================================================================

When ``out`` has N_OUT rows (not N_ROUNDED), besides the rounded line items the kernel writes the exact
amount of each line before its one rounding (``O_N_*``: energy, tiers and funds over 10^6; basic over
period_days × 10^4 (capacity) or × 10^8 (demand)), so that the parts of a split month can be added exactly
and rounded once (:func:`billing_core.rounding.round_line_item_once`).

``params`` is an (R, N_PARAMS) int64 array, columns ``P_*`` below; ``pf_table`` the (3, 101) table of
:mod:`billing_core.powerfactor`; ``out`` an (N_OUT, N) int64 array the kernel fills, rows ``O_*``.
"""

from __future__ import annotations

import numpy as np

from gridhead.billing_core.powerfactor import pf_x100 as pf_from_energy
from gridhead.billing_core.rounding import BP_DIV, CAPACITY_DIV, DEMAND_DIV, ENERGY_DIV, round_div

# params columns
(P_PRICE_SHARP, P_PRICE_PEAK, P_PRICE_FLAT, P_PRICE_VALLEY, P_TIER_KIND, P_LIM2, P_LIM3, P_INC2, P_INC3,
 P_FUNDS, P_BASIC_KIND, P_PRICE_KVA, P_PRICE_KW, P_PF_STD) = range(14)
N_PARAMS = 14
TIER_NONE, TIER_MONTHLY, TIER_ANNUAL = 0, 1, 2
BASIC_NONE, BASIC_CAPACITY, BASIC_CONTRACT, BASIC_ACTUAL = 0, 1, 2, 3

# out rows
(O_SHARP, O_PEAK, O_FLAT, O_VALLEY, O_TIER2, O_TIER3, O_BASIC, O_PF, O_FUNDS, O_TOTAL,
 O_PF_X100, O_PF_BP, O_TIER2_E, O_TIER3_E, O_BILLING_DEMAND,
 O_N_SHARP, O_N_PEAK, O_N_FLAT, O_N_VALLEY, O_N_TIER2, O_N_TIER3, O_N_BASIC, O_N_FUNDS) = range(23)
N_OUT = 23
N_ROUNDED = O_N_SHARP          # the rows without the exact amounts


def bill_kernel(tariff_row: np.ndarray, e_sharp: np.ndarray, e_peak: np.ndarray, e_flat: np.ndarray,
                e_valley: np.ndarray, q: np.ndarray, pf_x100: np.ndarray, cum_prev: np.ndarray, demand: np.ndarray,
                capacity_kva: np.ndarray, contract_kw: np.ndarray, days: np.ndarray, period_days: np.ndarray,
                params: np.ndarray, pf_table: np.ndarray, out: np.ndarray) -> None:
    """Fill ``out`` with every line item of every charge row (see the module docstring)."""
    par = [params[:, j][tariff_row] for j in range(N_PARAMS)]       # gather per column, not per row
    exact = len(out) > O_N_FUNDS
    days = days.astype(np.int64)                                     # int32 × 10^8 would wrap
    period_days = period_days.astype(np.int64)
    e = (e_sharp, e_peak, e_flat, e_valley)
    lines = 0
    for k in range(4):                                               # energy charge per TOU period
        num = e[k] * par[P_PRICE_SHARP + k]
        if exact:
            out[O_N_SHARP + k] = num
        out[O_SHARP + k] = round_div(num, ENERGY_DIV)
        lines = lines + out[O_SHARP + k]
    total_e = e_sharp + e_peak + e_flat + e_valley

    # 阶梯 (发改价格〔2011〕2617号): tier energy of this row from the cumulative before and after it;
    # monthly limits are pro-rated by days for a partial period, annual limits are not.
    kind = par[P_TIER_KIND]
    monthly = kind == TIER_MONTHLY
    lim2 = np.where(monthly, round_div(par[P_LIM2] * days, period_days), par[P_LIM2])
    lim3 = np.where(monthly, round_div(par[P_LIM3] * days, period_days), par[P_LIM3])
    c0 = np.where(kind == TIER_ANNUAL, cum_prev, 0)
    c1 = c0 + total_e
    width = lim3 - lim2
    t2 = np.clip(c1 - lim2, 0, width) - np.clip(c0 - lim2, 0, width)
    t3 = np.maximum(c1 - lim3, 0) - np.maximum(c0 - lim3, 0)
    t2 = np.where(kind == TIER_NONE, 0, t2)
    t3 = np.where(kind == TIER_NONE, 0, t3)
    out[O_TIER2_E] = t2
    out[O_TIER3_E] = t3
    if exact:
        out[O_N_TIER2] = t2 * par[P_INC2]
        out[O_N_TIER3] = t3 * par[P_INC3]
    out[O_TIER2] = round_div(t2 * par[P_INC2], ENERGY_DIV)
    out[O_TIER3] = round_div(t3 * par[P_INC3], ENERGY_DIV)
    lines = lines + out[O_TIER2] + out[O_TIER3]

    # 两部制 basic charge (发改办价格〔2016〕1583号), by days for a partial period
    bkind = par[P_BASIC_KIND]
    c105 = contract_kw * 10500                                      # 1.05 C in 0.0001 kW
    by_contract = np.where(demand <= c105, contract_kw * 10000, 2 * demand - c105)
    bd = np.where(bkind == BASIC_CONTRACT, by_contract, np.where(bkind == BASIC_ACTUAL, demand, 0))
    n_demand = bd * par[P_PRICE_KW] * days
    n_capacity = capacity_kva * par[P_PRICE_KVA] * days
    if exact:
        out[O_N_BASIC] = np.where(bkind == BASIC_CAPACITY, n_capacity, np.where(bkind == BASIC_NONE, 0, n_demand))
    by_demand = round_div(n_demand, period_days * DEMAND_DIV)
    by_capacity = round_div(n_capacity, period_days * CAPACITY_DIV)
    out[O_BASIC] = np.where(bkind == BASIC_CAPACITY, by_capacity, np.where(bkind == BASIC_NONE, 0, by_demand))
    out[O_BILLING_DEMAND] = np.where(bkind == BASIC_CAPACITY, capacity_kva, bd)
    lines = lines + out[O_BASIC]

    # 力调 ((83)水电财字第215号) on basic + energy lines, only where the tariff has a standard
    std = par[P_PF_STD]
    pf = np.where(std >= 0, pf_x100, -1)
    own = np.flatnonzero((std >= 0) & (pf_x100 == -2))            # a whole month: cosφ from its P and Q
    pf[own] = pf_from_energy(total_e[own], q[own])
    bp = np.where(pf >= 0, pf_table.reshape(-1)[np.maximum(std, 0) * 101 + np.maximum(pf, 0)], 0)
    out[O_PF_X100] = pf
    out[O_PF_BP] = bp
    out[O_PF] = round_div(lines * bp, BP_DIV)

    if exact:
        out[O_N_FUNDS] = total_e * par[P_FUNDS]
    out[O_FUNDS] = round_div(total_e * par[P_FUNDS], ENERGY_DIV)             # 政府性基金及附加, outside 力调
    out[O_TOTAL] = lines + out[O_PF] + out[O_FUNDS]

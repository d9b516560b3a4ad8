"""Scales and the one rounding rule of every line item — written down once, here.

Scales (integers everywhere; never a float on the money path):

==========================  ===================  ==============================================
quantity                    unit of the integer  name suffix / example
==========================  ===================  ==============================================
energy                      0.01 kWh (kvarh)     ``*_kwh_x100`` — the register resolution (XXXXXX.XX)
maximum demand              0.0001 kW            ``*_kw_x1e4`` — the md_fwd register (storage.schema)
contract demand             1 kW                 ``contract_kw`` (contracts are signed in whole kW)
transformer capacity        1 kVA                ``capacity_kva``
energy price, funds         1e-6 yuan / kWh      ``*_uyuan`` (micro-yuan; published prices have ≤ 6 decimals,
                                                 e.g. 重大水利工程建设基金 0.0019625 is refused: 7 decimals)
demand / capacity price     1e-6 yuan / kW·month ``*_uyuan``
power factor                0.01                 ``pf_x100`` (cosφ rounded to 0.01 as (83)水电财字第215号 reads it)
力调 rate                   0.01 %               ``pf_bp`` (basis points: −1.1 % = −110)
money                       fen (0.01 yuan)      ``*_fen``
==========================  ===================  ==============================================

Rounding: **half away from zero (四舍五入) applied once per line item**, on the exact integer product
of that line, to the fen.  Nothing is rounded before it (no rounded unit price, no rounded kWh); the bill
total is the sum of the rounded lines, so the lines always add up to the total (供电营业规则 第八十三条:
电费按抄见电量 × 电价 计收; the fen rounding is the billing practice of the State Grid marketing system).

================  ======================================================  =============================
line item         exact amount before the one rounding                    divisor to fen
================  ======================================================  =============================
energy, period p  E_p[0.01 kWh] × price_p[µyuan]                          10^6
tier t increment  T_t[0.01 kWh] × inc_t[µyuan]                            10^6
basic, capacity   kVA × price[µyuan] × days                                10^4 × period_days
basic, demand     billing demand[1e-4 kW] × price[µyuan] × days            10^8 × period_days
力调              (Σ rounded energy + tier + basic lines)[fen] × pf_bp     10^4
funds             E_total[0.01 kWh] × Σ fund prices[µyuan]                 10^6
违约金 late fee   arrears[fen] × rate[‰ per day] × days late                10^3 (per mille)
================  ======================================================  =============================

The 力调 line is computed from the already-rounded lines it adjusts, as the bill prints them
((83)水电财字第215号: 按调整率增减 "基本电费 + 电度电费").  Pro-rating by days (tariff change, 1583号
basic charge by days) happens inside the same single rounding, never as a second one.

The late fee (违约金, 《供电营业规则》第九十八条, rates in :mod:`billing_core.ledger`) is rounded once per
receivable in arrears, on the exact product over all its days (the two rates of a cross-year arrears
added before the one rounding).

Derived quantities that are not money use the same rule: cosφ to 0.01, transformer and line loss to
0.01 kWh, pro-rated tier limits to 0.01 kWh.
"""

from __future__ import annotations

from typing import Any, overload

import numpy as np
import numpy.typing as npt

FEN_PER_YUAN = 100
ENERGY_SCALE = 100            # 0.01 kWh
DEMAND_SCALE = 10_000         # 0.0001 kW
PRICE_SCALE = 1_000_000       # µyuan

# divisors from a line's exact product to fen (see the table above)
ENERGY_DIV = ENERGY_SCALE * PRICE_SCALE // FEN_PER_YUAN          # 10^6
DEMAND_DIV = DEMAND_SCALE * PRICE_SCALE // FEN_PER_YUAN          # 10^8
CAPACITY_DIV = PRICE_SCALE // FEN_PER_YUAN                       # 10^4
BP_DIV = 10_000                                                  # basis points
LATE_FEE_DIV = 1_000                                             # ‰ per day (违约金)


@overload
def round_div(num: int, den: int) -> int: ...
@overload
def round_div(num: npt.NDArray[Any], den: npt.NDArray[Any] | int) -> npt.NDArray[np.int64]: ...
@overload
def round_div(num: npt.NDArray[Any] | int, den: npt.NDArray[Any]) -> npt.NDArray[np.int64]: ...


def round_div(num: npt.NDArray[Any] | int, den: npt.NDArray[Any] | int) -> npt.NDArray[np.int64] | int:
    """``num / den`` rounded half away from zero, exactly, for ints or int64 arrays (``den > 0``).

    This is the one rounding rule of the billing engine; the kernels inline the same expression.
    """
    if isinstance(num, np.ndarray) or isinstance(den, np.ndarray):
        a = np.abs(np.asarray(num, dtype=np.int64))
        den = np.asarray(den, dtype=np.int64)
        q = a // den
        q += (2 * (a - q * den) >= den)          # remainder < den, so 2·remainder cannot overflow
        signed_q: npt.NDArray[np.int64] = np.where(np.asarray(num) < 0, -q, q)
        return signed_q
    signed = int(num)
    n, d = abs(signed), int(den)
    r = n // d + (2 * (n % d) >= d)
    return -r if signed < 0 else r


@overload
def round_line_item_once(numerator: int, denominator: int) -> int: ...
@overload
def round_line_item_once(numerator: npt.NDArray[Any], denominator: npt.NDArray[Any] | int) -> npt.NDArray[Any]: ...


def round_line_item_once(numerator: npt.NDArray[Any] | int,
                         denominator: npt.NDArray[Any] | int) -> npt.NDArray[Any] | int:
    """A printed line item of a bill: its exact amount ``numerator / denominator`` rounded to the fen once.

    Ruling "One rounding per printed line item" (DOMAIN.md): the parts of a split month (a tariff change
    or a new price version inside the period) are added exactly — their exact numerators over the common
    denominator of the table above — and the sum is rounded once, half away from zero.  Works on Python
    ints and on object arrays of Python ints (sums of two int64 products may pass 2^63).
    """
    if isinstance(numerator, np.ndarray) and numerator.dtype == object:
        rounded: npt.NDArray[Any] = np.frompyfunc(round_div, 2, 1)(numerator, denominator)  # object ints
        return rounded
    return round_div(numerator, denominator)

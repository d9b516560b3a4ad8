"""Hand-worked cases of the billing rules, each with its numbers worked from the published document.

Run under the compiled kernel and its numpy twin (the ``kernels`` fixture).
"""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import numpy as np
import pytest

from gridhead.billing_core import energy, engine
from gridhead.billing_core.powerfactor import PF_TABLE, STANDARDS, pf_x100, pf_x100_exact
from gridhead.billing_core.rounding import round_div
from gridhead.billing_core.tariff import TariffSet

TARIFFS = TariffSet.load()
TABLE = TARIFFS.table()


def row(cat, volt, day):
    return TABLE.row(cat, volt, day, TARIFFS)


def price1(tariff_row, **cols):
    rows = engine.ChargeRows.of(1, tariff_row=tariff_row, **cols)
    items = engine.price(rows, TABLE)
    return {k: int(v[0]) for k, v in items.columns.items()}


# --- 力调: the tables of (83)水电财字第215号, transcribed band by band (percent) ---------------------------
# standard 0.90 (160 kVA and above industry, 3200 kVA+ large industry): above it −0.15 % per 0.01 to −0.75 %
TABLE_090 = {100: -0.75, 99: -0.75, 98: -0.75, 97: -0.75, 96: -0.75, 95: -0.75, 94: -0.60, 93: -0.45,
             92: -0.30, 91: -0.15, 90: 0.0, 89: 0.5, 88: 1.0, 87: 1.5, 86: 2.0, 85: 2.5, 84: 3.0, 83: 3.5,
             82: 4.0, 81: 4.5, 80: 5.0, 79: 5.5, 78: 6.0, 77: 6.5, 76: 7.0, 75: 7.5, 74: 8.0, 73: 8.5,
             72: 9.0, 71: 9.5, 70: 10.0, 69: 11.0, 68: 12.0, 67: 13.0, 66: 14.0, 65: 15.0}
# standard 0.85 (100 kVA and above others): −0.1 % per 0.01 to 0.90, then −0.65/−0.80/−0.95, −1.1 from 0.94
TABLE_085 = {100: -1.1, 99: -1.1, 98: -1.1, 97: -1.1, 96: -1.1, 95: -1.1, 94: -1.1, 93: -0.95, 92: -0.80,
             91: -0.65, 90: -0.5, 89: -0.4, 88: -0.3, 87: -0.2, 86: -0.1, 85: 0.0, 84: 0.5, 83: 1.0,
             82: 1.5, 81: 2.0, 80: 2.5, 79: 3.0, 78: 3.5, 77: 4.0, 76: 4.5, 75: 5.0, 74: 5.5, 73: 6.0,
             72: 6.5, 71: 7.0, 70: 7.5, 69: 8.0, 68: 8.5, 67: 9.0, 66: 9.5, 65: 10.0, 64: 11.0, 63: 12.0,
             62: 13.0, 61: 14.0, 60: 15.0}
# standard 0.80 (100 kVA and above agriculture, 趸售): −0.1 % per 0.01 to 0.90, −1.15 at 0.91, −1.3 from 0.92
TABLE_080 = {100: -1.3, 99: -1.3, 98: -1.3, 97: -1.3, 96: -1.3, 95: -1.3, 94: -1.3, 93: -1.3, 92: -1.3,
             91: -1.15, 90: -1.0, 89: -0.9, 88: -0.8, 87: -0.7, 86: -0.6, 85: -0.5, 84: -0.4, 83: -0.3,
             82: -0.2, 81: -0.1, 80: 0.0, 79: 0.5, 78: 1.0, 77: 1.5, 76: 2.0, 75: 2.5, 74: 3.0, 73: 3.5,
             72: 4.0, 71: 4.5, 70: 5.0, 69: 5.5, 68: 6.0, 67: 6.5, 66: 7.0, 65: 7.5, 64: 8.0, 63: 8.5,
             62: 9.0, 61: 9.5, 60: 10.0, 59: 11.0, 58: 12.0, 57: 13.0, 56: 14.0, 55: 15.0}


@pytest.mark.parametrize("std,published", [(90, TABLE_090), (85, TABLE_085), (80, TABLE_080)])
def test_pf_table_every_band(std, published):
    code = STANDARDS.index(std)
    for pf, percent in published.items():
        assert PF_TABLE[code, pf] == round(percent * 100), (std, pf)
    # "自 s−0.26 及以下, 每降低 0.01 电费增加 2%": 0.64 → 17 % for s = 0.90
    low = std - 25
    for pf in range(0, low):
        assert PF_TABLE[code, pf] == 1500 + 200 * (low - pf)
    assert PF_TABLE[STANDARDS.index(90), 64] == 1700


@pytest.mark.parametrize("std,published", [(90, TABLE_090), (85, TABLE_085), (80, TABLE_080)])
def test_pf_adjustment_on_a_bill_every_band(kernels, std, published):
    """A bill with basic + energy = 10 000.00 yuan at each tabled cosφ gets exactly the table's rate."""
    cat = {90: "large_industrial", 85: "general_commercial", 80: "agricultural"}[std]
    tr = row(cat, "1-10kV", dt.date(2026, 3, 1))
    for pf, percent in published.items():
        # P = 100·pf, Q = 100·√(1 − pf²) is irrational; instead pick Q so that cosφ rounds to pf exactly:
        # Q² = P²(1/c² − 1) with c = pf/100, P = 10^7 (100 000 kWh) — rounded Q still lands on pf
        p = 10 ** 7
        q = 0 if pf == 100 else int(p * (1 / (pf / 100) ** 2 - 1) ** 0.5)
        assert pf_x100_exact(p, q) == pf
        out = price1(tr, e_flat=p, q=q, contract_kw=0, capacity_kva=0)
        lines = out["total_fen"] - out["pf_adjust_fen"] - out["funds_fen"]
        assert out["pf_x100"] == pf and out["pf_bp"] == round(percent * 100)
        assert out["pf_adjust_fen"] == round_div(lines * round(percent * 100), 10_000)


def test_pf_085_at_094_is_minus_1_1_percent(kernels):
    tr = row("general_commercial", "1-10kV", dt.date(2026, 3, 1))
    # P 940 000 kWh, Q 341 000 kvarh: cosφ = 0.94007 → 0.94; energy 940000 × 0.6318 = 593 892.00 yuan
    out = price1(tr, e_flat=94_000_000, q=34_100_000)
    assert out["pf_x100"] == 94 and out["pf_bp"] == -110
    assert out["energy_flat_fen"] == 59_389_200
    assert out["pf_adjust_fen"] == -653_281           # −1.1 % of 593 892.00 = −6 532.812 yuan


def test_pf_exact_at_the_half():
    # 3-4-5: cosφ = 0.6 exactly; 0.605 = 121/200: P = 121, S = 200 → Q² = 200² − 121² = 25359 (not square),
    # so scale: P = 121·k, Q = √(40000 − 14641)·k is irrational — use the exact test on integers instead
    assert pf_x100_exact(3, 4) == 60
    assert pf_x100_exact(1, 0) == 100 and pf_x100_exact(0, 5) == -1
    # a tie: P/S = 0.995 exactly when P = 199, S = 200 → Q² = 399, Q = √399 not an integer; take the
    # squares directly: (2k−1)² S² ≤ 40000 P² at k = 100 is 199² · 40000 = 40000 · 199² → ties go up
    p, q = 199 * 10 ** 6, None
    # brute check against Fraction arithmetic on a grid, including near-ties
    for p in range(1, 60):
        for q in range(0, 60):
            exact = Fraction(p * p, p * p + q * q)     # cos²φ
            k = max(k for k in range(0, 101) if k == 0 or Fraction((2 * k - 1) ** 2, 40000) <= exact)
            assert pf_x100_exact(p, q) == k
    ps = np.arange(1, 3000, dtype=np.int64)
    qs = (ps * 7) % 1999
    assert list(pf_x100(ps, qs)) == [pf_x100_exact(a, b) for a, b in zip(ps, qs)]
    # values beyond 64-bit squares (P = 10^11 × 0.01 kWh)
    big = np.array([10 ** 11, 3 * 10 ** 11], dtype=np.int64)
    assert list(pf_x100(big, big // 3)) == [pf_x100_exact(a, b) for a, b in zip(big, big // 3)]


# --- a whole large-industrial bill ---------------------------------------------------------------------
def test_large_industrial_bill_worked(kernels):
    """October 2026, 1–10 kV, version of 2026-07-01 (峰 0.8844, 平 0.5896, 谷 0.2948, 38.4 yuan/kW).

    峰 120 000 kWh × 0.8844 = 106 128.00;  平 150 000 × 0.5896 = 88 440.00;  谷 90 000 × 0.2948 = 26 532.00.
    Contract 1 000 kW, max demand 1 100 kW > 1 050 → billing 1.05·1000 + 2·(1100 − 1050) = 1 150 kW
    (1583号) → 1 150 × 38.4 = 44 160.00.  cosφ = 360 000 / √(360 000² + 150 000²) = 0.923 → 0.92 →
    −0.30 % of 265 260.00 = −795.78.  Funds 360 000 × 0.027575 = 9 927.00.  Total 274 391.22 yuan.
    """
    tr = row("large_industrial", "1-10kV", dt.date(2026, 10, 1))
    out = price1(tr, e_peak=12_000_000, e_flat=15_000_000, e_valley=9_000_000, q=15_000_000,
                 demand=1100 * 10_000, contract_kw=1000, days=31, period_days=31)
    assert (out["energy_peak_fen"], out["energy_flat_fen"], out["energy_valley_fen"]) == (10_612_800, 8_844_000, 2_653_200)
    assert out["billing_demand"] == 1150 * 10_000 and out["basic_fen"] == 4_416_000
    assert out["pf_x100"] == 92 and out["pf_bp"] == -30 and out["pf_adjust_fen"] == -79_578
    assert out["funds_fen"] == 992_700
    assert out["total_fen"] == 27_439_122


@pytest.mark.parametrize("demand_kw,billing_kw,basic_fen", [
    (800, 1000, 3_840_000),       # below C: C is billed (1 000 × 38.4)
    (1050, 1000, 3_840_000),      # exactly 105 %: still C
    (1051, 1052, 4_039_680),      # 1 kW over: 1050 + 2·1 = 1052 kW × 38.4 = 40 396.80
    (1200, 1350, 5_184_000),      # 1050 + 2·150 = 1350 kW
])
def test_contract_demand_105_rule(kernels, demand_kw, billing_kw, basic_fen):
    tr = row("large_industrial", "1-10kV", dt.date(2026, 10, 1))
    out = price1(tr, demand=demand_kw * 10_000, contract_kw=1000)
    assert out["billing_demand"] == billing_kw * 10_000
    assert out["basic_fen"] == basic_fen


# --- 阶梯: annual cumulative tiers ------------------------------------------------------------------------
def test_annual_tiers_across_the_limits(kernels):
    """Residential < 1 kV: 峰 0.5583, 谷 0.3583; tiers at 2 760 / 4 800 kWh a year, +0.05 / +0.30.

    Year to date 2 600 kWh, this month 峰 200 + 谷 100: cumulative 2 900 → 140 kWh in tier 2.
    200 × 0.5583 = 111.66; 100 × 0.3583 = 35.83; 140 × 0.05 = 7.00; funds 300 × 0.009575 = 2.8725 → 2.87.
    Then 4 700 → 5 000 with 谷 300: tier 2 gets 100 kWh (to 4 800), tier 3 200 kWh: 107.49 + 5.00 + 60.00 + 2.87.
    """
    tr = row("residential", "under_1kV", dt.date(2026, 11, 1))
    a = price1(tr, e_peak=20_000, e_valley=10_000, cum_prev=260_000)
    assert (a["tier2_kwh_x100"], a["tier3_kwh_x100"]) == (14_000, 0)
    assert (a["energy_peak_fen"], a["energy_valley_fen"], a["tier2_fen"], a["funds_fen"]) == (11_166, 3_583, 700, 287)
    assert a["total_fen"] == 15_736
    b = price1(tr, e_valley=30_000, cum_prev=470_000)
    assert (b["tier2_kwh_x100"], b["tier3_kwh_x100"]) == (10_000, 20_000)
    assert (b["energy_valley_fen"], b["tier2_fen"], b["tier3_fen"], b["funds_fen"]) == (10_749, 500, 6_000, 287)
    assert b["total_fen"] == 17_536


def test_annual_tiers_over_a_year_match_the_formula(kernels):
    """Twelve monthly bills: tier energies sum to the annual split of the year's total (DOMAIN formula)."""
    tr = row("residential", "under_1kV", dt.date(2026, 1, 1))
    monthly = np.array([310, 280, 260, 240, 300, 520, 780, 810, 450, 260, 270, 390], dtype=np.int64) * 100
    cum = np.concatenate([[0], np.cumsum(monthly)[:-1]])
    rows = engine.ChargeRows.of(12, tariff_row=tr, e_flat=monthly, cum_prev=cum)
    out = engine.price(rows, TABLE)
    year = int(monthly.sum())                                  # 4 870 kWh
    assert int(out["tier2_kwh_x100"].sum()) == (4800 - 2760) * 100
    assert int(out["tier3_kwh_x100"].sum()) == year - 480_000
    # cumulative 310 590 850 1090 1390 1910 2690 | 3500 3950 4210 4480 | 4870 kWh: all tier 1 to July;
    # August crosses 2 760 (740 kWh in tier 2); December crosses 4 800 (320 in tier 2, 70 in tier 3)
    assert (out["tier2_kwh_x100"][:7] == 0).all()
    assert list(out["tier2_kwh_x100"][7:] // 100) == [740, 450, 260, 270, 320]
    assert list(out["tier3_kwh_x100"] // 100) == [0] * 11 + [70]


# --- energy from registers ---------------------------------------------------------------------------
def test_rollover_and_negative():
    """prev 999 990.00, now 5.00 on an XXXXXX.XX register: wrapped, 15.00 kWh × CT 40 = 600.00 kWh."""
    e, f = energy.register_energy([99_999_000, 100_000, 100_000, -1], [500, 90_000, 100_000, 5], 40, digits=8)
    assert list(e) == [60_000, -400_000, 0, 0]
    assert list(f) == [energy.F_ROLLOVER, energy.F_NEGATIVE, 0, energy.F_MISSING]


def test_meter_replacement_segments():
    """换表: old meter CT 200/5 from 12 000.00 to its removal 12 500.00 → 500 × 40 = 20 000 kWh;
    new meter CT 300/5 from its install reading 0.50 to 300.50 → 300 × 60 = 18 000 kWh; bill 38 000 kWh."""
    prev = {"ae_fwd": [1_200_000, 50, 10_000]}
    now = {"ae_fwd": [1_250_000, 30_050, 20_000]}
    e, flags = energy.segment_energy(prev, now, ct=[40, 60, 1], pt=1)
    bills = energy.sum_by_bill([0, 0, 1], 2, {"ae_fwd": e["ae_fwd"], "flags": flags})
    assert list(bills["ae_fwd"]) == [3_800_000, 10_000]
    assert list(bills["flags"]) == [0, 0]


def test_tou_mismatch_and_flat_by_difference():
    prev = {"ae_fwd": [1000, 1000], "ae_fwd_t1": [0, -1], "ae_fwd_t2": [300, -1], "ae_fwd_t3": [400, -1],
            "ae_fwd_t4": [300, -1]}
    now = {"ae_fwd": [2000, 3000], "ae_fwd_t1": [100, -1], "ae_fwd_t2": [700, -1], "ae_fwd_t3": [600, -1],
           "ae_fwd_t4": [500, -1]}
    e, flags = energy.segment_energy(prev, now, ct=1, pt=1)
    # row 0: 100 + 400 + 200 + 200 = 900 ≠ 1000 → mismatch; 平 billed = 1000 − 100 − 400 − 200 = 300
    assert flags[0] & energy.F_TOU_MISMATCH and e["flat_billed"][0] == 300
    # row 1: single-rate meter, no TOU reading: all 平, not flagged
    assert flags[1] == 0 and e["flat_billed"][1] == 2000 and e["ae_fwd_t2"][1] == 0


def test_high_supply_low_metering_losses(kernels):
    """高供低计, S11-400 kVA: P0 570 W, Pk 4 520 W, I0 0.8 %, Uk 4 %; T = 720 h; A_P 100 000 kWh, A_Q 75 000.

    β = 125 000 / (400 · 720) = 0.43403;  ΔA = 0.57·720 + 4.52·β²·720 = 410.40 + 613.0642 = 1 023.46 kWh;
    ΔQ = 0.008·400·720 + 0.04·400·β²·720 = 2 304 + 2 170.139 = 4 474.14 kvarh;
    agreed line loss 1 % of (100 000 + 1 023.46) = 1 010.23 kWh → 2 033.69 kWh added in all.
    """
    lp, lq = energy.transformer_loss([1, 0], [10_000_000, 5], [7_500_000, 5], 720, 400, 570, 4520, 80, 400,
                                     0, 0, 0, [100, 0])
    assert list(lp) == [203_369, 0] and list(lq) == [447_414, 0]
    ap = Fraction(100_000); beta2 = Fraction(125_000, 400 * 720) ** 2
    assert round(100 * (Fraction(570, 1000) * 720 + Fraction(4520, 1000) * beta2 * 720)) == 102_346
    # the loss is split over the periods by their share and counts in demand: 峰 40 000, 平 60 000 kWh
    # → 峰 gets 203 369 × 0.4 = 81 347.6 → 81 348 (half away from zero), 平 the rest; demand 300 kW ×
    # 102 033.69 / 100 000
    (s, p, f, v), d = energy.split_loss_over_tou(lp, ([0, 0], [4_000_000, 2], [6_000_000, 3], [0, 0]),
                                                 [3_000_000, 7])
    assert p[0] == 4_000_000 + 81_348 and f[0] == 6_000_000 + 203_369 - 81_348 and s[0] == v[0] == 0
    assert d[0] == round_div(3_000_000 * (10_000_000 + 203_369), 10_000_000) == 3_061_011
    # agreed rate (2 %) and agreed fixed energy (table) methods
    lp2, lq2 = energy.transformer_loss([2, 3], [1_000_000, 1_000_000], [500_000, 500_000], 720, 400, 0, 0, 0, 0,
                                       200, [0, 12_000], [0, 48_000], 0)
    assert list(lp2) == [20_000, 12_000] and list(lq2) == [10_000, 48_000]
    # the losses count in energy charge and power factor: price the augmented energy
    tr = row("large_industrial", "1-10kV", dt.date(2026, 10, 1))
    out = price1(tr, e_peak=p[0], e_flat=f[0], q=7_500_000 + lq[0], demand=d[0], contract_kw=250)
    assert out["energy_peak_fen"] == 3_609_544            # 40 813.48 kWh × 0.8844 = 36 095.44
    assert out["pf_x100"] == pf_x100_exact(10_000_000 + 203_369, 7_500_000 + 447_414) == 79


def test_mid_period_tariff_change_pro_rata(kernels):
    """Period 2026-06-16..07-15 (30 days), new version from 07-01 (day 16): 15 days on each side.

    Before (version 2026-01-01, June = other season): 峰 15 000 × 0.8767 = 13 150.50, 平 15 000 × 0.5845 =
    8 767.50, 谷 15 000 × 0.2923 = 4 384.50; basic 500 kW × 38.4 × 15/30 = 9 600.00; cosφ 1.00 → −0.75 %
    of 35 902.50 = −269.27 (−269.26875); funds 45 000 × 0.027575 = 1 240.875 → 1 240.88.
    After (version 2026-07-01, summer): 13 266.00 + 8 844.00 + 4 422.00 + 9 600.00 = 36 132.00 → −270.99;
    funds 1 240.88.
    """
    before = row("large_industrial", "1-10kV", dt.date(2026, 6, 16))
    after = row("large_industrial", "1-10kV", dt.date(2026, 7, 1))
    rows = engine.ChargeRows.of(1, tariff_row=before, e_peak=3_000_000, e_flat=3_000_000, e_valley=3_000_000,
                                demand=4_000_000, contract_kw=500)
    split = engine.split_at_change(rows, change_day=16, new_row=after)
    assert list(split.bill) == [0, 0] and list(split.days) == [15, 15]
    parts = engine.price(split, TABLE)
    assert list(parts["energy_peak_fen"]) == [1_315_050, 1_326_600]
    assert list(parts["energy_flat_fen"]) == [876_750, 884_400]
    assert list(parts["energy_valley_fen"]) == [438_450, 442_200]
    assert list(parts["basic_fen"]) == [960_000, 960_000]
    assert list(parts["pf_adjust_fen"]) == [-26_927, -27_099]
    assert list(parts["funds_fen"]) == [124_088, 124_088]
    # the bill: the parts added exactly, each line rounded once (ruling: one rounding per printed line) —
    # funds 90 000 kWh × 0.027575 = 2 481.75 (not 1 240.88 × 2 = 2 481.76); 力调 at the month's one rate
    # −0.75 % of (35 902.50 + 36 132.00) = −540.25875 → −540.26
    bill = parts.by_bill(split.bill, 1)
    assert int(bill["funds_fen"][0]) == 248_175 and int(bill["pf_adjust_fen"][0]) == -54_026
    assert int(bill["total_fen"][0]) == (1_315_050 + 876_750 + 438_450 + 960_000
                                         + 1_326_600 + 884_400 + 442_200 + 960_000 - 54_026 + 248_175)
    lines = engine.bill_lines(bill, 0, TABLE)
    assert sum(a for c, _, a in lines if c != "total") == int(bill["total_fen"][0])


def test_mid_period_change_by_frozen_reading(kernels):
    """With 07-01's frozen reading: 峰 10 000 kWh before, 20 000 after — the split follows the reading."""
    before = row("large_industrial", "1-10kV", dt.date(2026, 6, 16))
    after = row("large_industrial", "1-10kV", dt.date(2026, 7, 1))
    rows = engine.ChargeRows.of(1, tariff_row=before, e_peak=3_000_000)
    split = engine.split_at_change(rows, 16, after, e_before=([0], [1_000_000], [0], [0]))
    assert list(split.e_peak) == [1_000_000, 2_000_000]
    parts = engine.price(split, TABLE)
    assert list(parts["energy_peak_fen"]) == [876_700, 1_768_800]     # 10 000 × 0.8767; 20 000 × 0.8844

"""Independent oracle: NREL PySAM Utilityrate5 prices the same customers; every line agrees to the fen.

Sampled customers get a year of hourly load (0.01 kWh resolution).  Our side turns it into what the
meter's registers would give per month — energy per TOU period (from the tariff's hours), and the
maximum (hourly) demand — and prices it with the kernel.  PySAM gets the 8760 hourly load, the 12×24
TOU schedule built from the same tariff file, the energy rate table (period × tier) and a flat monthly
demand charge.  PySAM splits tier energy across TOU periods in proportion to their share, which is the
rule of DOMAIN.md; our kernel uses the equivalent increment-per-tier form.  Lines compared:

* energy per TOU period: PySAM run with the base prices only (tier increments zero);
* tier increments: PySAM run with the increments only (base prices zero) — its tier energies,
  each tier line from them, and the month's increment charge;
* basic charge by actual demand: PySAM's flat demand charge;
* and PySAM's full tariff (base + increments) equals the sum of the two runs (the equivalence).
"""

from __future__ import annotations

import datetime as dt
import decimal

import numpy as np
import pytest

from gridhead.billing_core import engine
from gridhead.billing_core.rounding import round_div
from gridhead.billing_core.tariff import TariffSet, hour_periods

ur = pytest.importorskip("PySAM.Utilityrate5")

YEAR = 2026
TOML = """
category = "oracle_commercial"
name = "TOU + monthly tiers + demand"
[[version]]
effective = 2026-01-01
basic = "actual_demand"
pf_standard = "none"
tiers = "monthly"
tier_limits_kwh = [900, 1500]
tier_increments = ["0.05", "0.3"]
[version.prices."1-10kV"]
sharp = "1.2276"
peak = "1.023"
flat = "0.6318"
valley = "0.2527"
demand = "38.4"
[[version.season]]
name = "summer"
months = [6, 7, 8]
weekday = "vvvvvvvvfppfffffpsspppff"
[[version.season]]
name = "other"
months = [1, 2, 3, 4, 5, 9, 10, 11, 12]
weekday = "vvvvvvvvfppfffffpppppfff"
"""


def _fen(yuan: float) -> int:
    """PySAM's float dollars to fen by the engine's rule (half away from zero)."""
    return int((decimal.Decimal(repr(yuan)) * 100).quantize(decimal.Decimal(1), decimal.ROUND_HALF_UP))


def _pysam(load_kw, version, table_row, base: bool, incs: bool):
    m = ur.new()
    m.Lifetime.analysis_period = 1
    m.Lifetime.system_use_lifetime_output = 0
    m.Lifetime.inflation_rate = 0
    m.SystemOutput.gen = [0.0] * 8760
    m.SystemOutput.degradation = [0]
    m.Load.load = [float(x) for x in load_kw]
    m.Load.load_escalation = [0]
    er = m.ElectricityRates
    er.en_electricity_rates = 1
    er.rate_escalation = [0]
    er.ur_metering_option = 4
    er.ur_monthly_fixed_charge = 0
    er.ur_monthly_min_charge = 0
    er.ur_annual_min_charge = 0
    # 12×24 schedule of TOU periods (PySAM numbers them from 1); same on weekends (no holidays here)
    sched = [[version.season_of(mo).weekday[h] + 1 for h in range(24)] for mo in range(1, 13)]
    er.ur_ec_sched_weekday = sched
    er.ur_ec_sched_weekend = sched
    prices = [int(table_row[k]) / 1e6 for k in range(4)]     # plain floats: PySAM wants Python numbers
    lim = [x for x in version.tier_limits_kwh] + [1e38]
    inc = [0.0] + [x / 1e6 for x in version.tier_increments_uyuan]
    er.ur_ec_tou_mat = [[p + 1, t + 1, lim[t], 0, (prices[p] if base else 0) + (inc[t] if incs else 0), 0]
                        for p in range(4) for t in range(3)]
    er.ur_dc_enable = 1
    er.ur_dc_flat_mat = [[mo, 1, 1e38, int(table_row[12]) / 1e6 if base else 0.0] for mo in range(12)]
    er.ur_dc_sched_weekday = [[1] * 24] * 12
    er.ur_dc_sched_weekend = [[1] * 24] * 12
    er.ur_dc_tou_mat = [[1, 1, 1e38, 0]]
    m.execute(0)
    return m          # keep the model: its Outputs group does not keep it alive (use after free)


@pytest.fixture(scope="module")
def oracle_tariffs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tariffs")
    (d / "oracle.toml").write_text(TOML)
    return TariffSet.load(d)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pysam_oracle_zero_fen(kernels, oracle_tariffs, seed):
    rng = np.random.default_rng(seed)
    hours = np.arange(8760)
    scale = rng.uniform(2.5, 4.0)          # 1 800 – 2 900 kWh a month: across both tier limits
    daily = 1.0 + 0.8 * np.sin((hours % 24 - 6) / 24 * 2 * np.pi)
    load_x100 = np.round(100 * scale * daily * rng.uniform(0.5, 1.5, 8760)).astype(np.int64)  # 0.01 kWh/h
    load_kw = load_x100 / 100
    ts = oracle_tariffs
    version = ts.tariff("oracle_commercial").versions[0]
    periods = hour_periods(version, YEAR)
    month_of_hour = np.array([(dt.date(YEAR, 1, 1) + dt.timedelta(days=int(h) // 24)).month - 1 for h in hours])
    e = np.zeros((4, 12), dtype=np.int64)
    np.add.at(e, (periods, month_of_hour), load_x100)
    demand = np.array([load_x100[month_of_hour == m].max() for m in range(12)]) * 100   # 0.0001 kW
    days = np.array([sum(month_of_hour == m) // 24 for m in range(12)], dtype=np.int32)
    rows_ = np.array([ts.table().row("oracle_commercial", "1-10kV", dt.date(YEAR, m + 1, 1), ts)
                      for m in range(12)], dtype=np.int32)
    rows = engine.ChargeRows.of(12, tariff_row=rows_, e_sharp=e[0], e_peak=e[1], e_flat=e[2], e_valley=e[3],
                                demand=demand, days=days, period_days=days)
    ours = engine.price(rows, ts.table())

    par = ts.table().params[rows_[0]]
    base_m = _pysam(load_kw, version, par, base=True, incs=False)
    incs_m = _pysam(load_kw, version, par, base=False, incs=True)
    full_m = _pysam(load_kw, version, par, base=True, incs=True)
    base, incs, full = base_m.Outputs, incs_m.Outputs, full_m.Outputs
    names = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    for m, mon in enumerate(names):
        cb = np.array(getattr(base, f"charge_wo_sys_ec_{mon}_tp"))     # rows: header, periods..., totals
        ci = np.array(getattr(incs, f"charge_wo_sys_ec_{mon}_tp"))
        for p in range(4):
            r = [i for i in range(1, cb.shape[0] - 1) if int(cb[i, 0]) == p + 1]
            pysam_p = float(cb[r[0], 1:-1].sum()) if r else 0.0     # last column: row total
            assert _fen(pysam_p) == ours[f"energy_{engine.ITEMS[p][7:-4]}_fen"][m], (mon, p)
        # tiers: PySAM's tier energies (last row of its energy matrix) to the 0.01 kWh, then each tier
        # line; its charge matrix spreads the increment charges over the cells in a way of its own, so the
        # charges are checked as the month's sum (exact to 1e-6 yuan), not cell by cell
        te = np.array(getattr(incs, f"energy_wo_sys_ec_{mon}_tp"))[-1, 1:-1]
        for t, inc in ((2, version.tier_increments_uyuan[0]), (3, version.tier_increments_uyuan[1])):
            kwh_x100 = int(round(float(te[t - 1]) * 100))
            assert kwh_x100 == ours[f"tier{t}_kwh_x100"][m], (mon, t)
            # the line from the oracle's energy (at register resolution: its floats carry 1e-12 noise)
            assert round_div(kwh_x100 * inc, 10 ** 6) == ours[f"tier{t}_fen"][m], (mon, t)
        exact = (int(ours["tier2_kwh_x100"][m]) * version.tier_increments_uyuan[0]
                 + int(ours["tier3_kwh_x100"][m]) * version.tier_increments_uyuan[1]) / 1e8
        assert abs(ci[-1, 1:-1].sum() - exact) < 1e-6, mon
        assert _fen(base.year1_monthly_dc_fixed_without_system[m]) == ours["basic_fen"][m], mon
        assert abs(full.year1_monthly_ec_charge_without_system[m] - base.year1_monthly_ec_charge_without_system[m]
                   - incs.year1_monthly_ec_charge_without_system[m]) < 1e-6
    assert (ours["tier2_fen"] > 0).all() and ours["tier3_fen"].sum() > 0   # the sample does reach the tiers

"""Issue 15: the billing edges, one regression test per defect, each worked out by hand in its docstring.

Bills are computed by :func:`billing_core.run.compute` from hand-made columns (one customer at a time, the
readings written out), or — where the defect lives in what the run reads (year-to-date, a month without
readings) — by ``billing_core.jobs.bills.run`` over a hand-made archive and lake.  Prices are those of
``billing_core/tariffs`` (June 2026: general_commercial under 1 kV flat 0.6518, peak 1.0430; large_industrial
1-10 kV flat 0.5845, peak 0.8767, demand 38.4 yuan/kW·month; residential under 1 kV flat 0.5583 with annual
tiers 2760 / 4800 kWh at +0.05 / +0.30; funds 0.027575 yuan/kWh, residential 0.009575).
"""

from __future__ import annotations

import datetime as dt
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from gridhead.billing_core import run as R
from gridhead.billing_core.tariff import BASIC_KINDS, TariffSet
from gridhead.protocols.errors import BillingError
from gridhead.storage import archive, lake, schema
from gridhead.billing_core.jobs import bills

TS = TariffSet.load()
JUNE = (dt.date(2026, 6, 1), dt.date(2026, 7, 1))
CATS = ["residential", "general_commercial", "large_industrial", "agricultural"]


def _days(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days


def compute(bill: dict, segs: list[dict], span=JUNE, codes=("RES-TIER", "COM-TOU", "COM-TOU-2021", "IND-TOU-2PART")):
    """One bill from hand-made columns.  ``bill``: category, voltage_v, code, new_code / change (date) for a
    change of tariff assignment with ``chg`` (the change day's frozen readings), hv_lv and transformer
    fields, pf_std, basic, contract_kw, cum_prev / ytd_known.  ``segs``: prev / now readings (register name →
    0.01 kWh, absent = no reading), ct, pt, md (0.0001 kW)."""
    n = 1
    b = {
        "category_idx": np.array([CATS.index(bill["category"])]), "voltage_v": np.array([bill["voltage_v"]]),
        "tariff_code_idx": np.array([codes.index(bill["code"])]),
        "new_tariff_code_idx": np.array([codes.index(bill["new_code"]) if bill.get("new_code") else -1]),
        "change_date_days": np.array([_days(bill["change"]) if bill.get("change") else -1]),
        "has_point": np.array([True]), "hv_lv": np.array([bill.get("hv_lv", False)]),
        "pf_std_x100": np.array([bill.get("pf_std", 0)]),
        "basic_idx": np.array([BASIC_KINDS[bill.get("basic", "none")]]),
        "cum_prev": np.array([bill.get("cum_prev", 0)]), "ytd_known": np.array([bill.get("ytd_known", True)]),
        "hist_e": np.zeros(n, np.int64), "hist_days": np.zeros(n, np.int64),
    }
    for k in ("tx_capacity_kva", "tx_p0_w", "tx_pk_w", "tx_loss_rate_bp", "line_loss_rate_bp", "contract_kw",
              "tx_i0_x100", "tx_uk_x100", "tx_q_loss_rate_bp"):
        b[k] = np.array([bill.get(k, -1)], np.int64)
    for r in R.REGS:
        b[f"chg_{r}"] = np.array([bill.get("chg", {}).get(r, -1)], np.int64)
    s = {"seg_bill": np.zeros(len(segs), np.int64), "ct": np.array([x.get("ct", 1) for x in segs]),
         "pt": np.array([x.get("pt", 1) for x in segs]), "digits": np.full(len(segs), 8),
         "days": np.full(len(segs), (span[1] - span[0]).days), "prev_quality": np.zeros(len(segs), np.uint8),
         "now_quality": np.zeros(len(segs), np.uint8), "md": np.array([x.get("md", -1) for x in segs]),
         "tou_check": np.ones(len(segs), bool)}
    for r in R.REGS:
        s[f"prev_{r}"] = np.array([x["prev"].get(r, -1) for x in segs], np.int64)
        s[f"now_{r}"] = np.array([x["now"].get(r, -1) for x in segs], np.int64)
    for k, v in list(b.items()) + list(s.items()):
        if v.dtype != bool and k not in ("prev_quality", "now_quality"):
            (b if k in b else s)[k] = v.astype(np.int64)
    frozen = None
    if "frozen" in bill:             # the frozen readings of several days (long format), not just ``chg``
        days = sorted(bill["frozen"])
        frozen = {"bill": np.zeros(len(days), np.int64), "days": np.array([_days(x) for x in days], np.int64),
                  **{r: np.array([bill["frozen"][x].get(r, -1) for x in days], np.int64) for r in R.REGS}}
    out, items, table = R.compute(R.RunInput(span[0], span[1], CATS, list(codes), b, s, frozen=frozen), TS)
    R.check_items(out, items)
    return {k: (int(v[0]) if np.ndim(v) else v) for k, v in out.items()}, items


def flat(prev, now, **more):
    """A single-rate meter's readings (no TOU registers): everything is billed as 平."""
    return {"prev": {"ae_fwd": prev, **{k: v[0] for k, v in more.items()}},
            "now": {"ae_fwd": now, **{k: v[1] for k, v in more.items()}}}


# --- 1. 力调 in a split month -------------------------------------------------------------------------
def test_split_month_uses_one_monthly_power_factor(kernels):
    """General commercial, 力调 standard 0.85; June 2026, the assignment changes COM-TOU → COM-TOU-2021 on
    06-16 (day 16), the day's frozen reading gives 1 000 kWh before and 9 000 after; the month's reactive
    energy is 4 843 kvarh.

    Monthly average power factor: 10 000 / √(10 000² + 4 843²) = 10 000 / 11 110.98 = 0.90000 → 0.90:
    −0.5 % (0.85 standard: −0.1 % per 0.01 above).  Energy (flat 0.6518 in both tariffs): 1 000 × 0.6518 =
    651.80 and 9 000 × 0.6518 = 5 866.20, the line 6 518.00; 力调 −0.5 % × 6 518.00 = −32.59; funds
    10 000 × 0.027575 = 275.75; total 6 761.16.
    Before the fix each part had its own cosφ with the reactive energy apportioned by days (2 421.5 kvarh
    each): 1 000 / √(1 000² + 2 421.5²) = 0.38 (+59 %) on the first part and 0.97 (−1.1 %) on the second.
    """
    out, _ = compute({"category": "general_commercial", "voltage_v": 380, "code": "COM-TOU", "new_code": "COM-TOU-2021",
                      "change": dt.date(2026, 6, 16), "pf_std": 85, "chg": {"ae_fwd": 200_000}},
                     [flat(100_000, 1_100_000, re_fwd=(0, 484_300))])
    assert out["parts"] == 2 and out["pf_x100"] == 90 and out["pf_bp"] == -50
    assert out["energy_flat_fen"] == 651_800
    assert out["pf_adjust_fen"] == -3_259
    assert out["funds_fen"] == 27_575
    assert out["total_fen"] == 651_800 - 3_259 + 27_575 == 676_116


# --- 2. one rounding per printed line ------------------------------------------------------------------
def test_split_month_rounds_each_line_once(kernels):
    """General commercial, no 力调; the assignment changes on 06-16 and the frozen reading splits June's
    30 000 kWh into 15 000 + 15 000 (peak register: 尖 0, 峰 30 000, 谷 0).

    Peak: 15 000 × 1.0430 + 15 000 × 1.0937 (COM-TOU-2021) = 15 645.00 + 16 405.50 = 32 050.50 — exact.
    Funds: 30 000 × 0.027575 = 827.25 — once; rounding each part first gave 413.625 → 413.63 twice = 827.26.
    Total 32 050.50 + 827.25 = 32 877.75.
    """
    tou = {"ae_fwd_t1": 0, "ae_fwd_t2": 0, "ae_fwd_t3": 0, "ae_fwd_t4": 0}
    seg = {"prev": {"ae_fwd": 0, **tou},
           "now": {"ae_fwd": 3_000_000, **tou, "ae_fwd_t2": 3_000_000}}
    out, _ = compute({"category": "general_commercial", "voltage_v": 380, "code": "COM-TOU", "new_code": "COM-TOU-2021",
                      "change": dt.date(2026, 6, 16), "chg": {"ae_fwd": 1_500_000, **tou, "ae_fwd_t2": 1_500_000}},
                     [seg])
    assert out["parts"] == 2 and out["e_peak"] == 3_000_000
    assert out["energy_peak_fen"] == 1_564_500 + 1_640_550
    assert out["funds_fen"] == 82_725
    assert out["total_fen"] == 3_205_050 + 82_725


# --- 3. loss split over TOU periods ----------------------------------------------------------------------
def test_loss_split_over_tou_rounds_half_away_from_zero(kernels):
    """高供低计 large industrial with an agreed loss rate of 3 %: metered 峰 100.20, 平 99.90, 谷 99.90 kWh
    (300.00 kWh), loss 9.00 kWh.

    峰 9.00 × 100.20 / 300 = 3.006 → 3.01 (half away from zero; the floor gave 3.00); 谷 9.00 × 99.90 / 300
    = 2.997 → 3.00 (floor 2.99); 平 the remainder 9.00 − 3.01 − 3.00 = 2.99.  Settlement 峰 103.21,
    平 102.89, 谷 102.90 = 309.00 kWh.
    """
    tou0 = {"ae_fwd_t1": 0, "ae_fwd_t2": 0, "ae_fwd_t3": 0, "ae_fwd_t4": 0}
    seg = {"prev": {"ae_fwd": 0, **tou0, "re_fwd": 0},
           "now": {"ae_fwd": 30_000, "ae_fwd_t1": 0, "ae_fwd_t2": 10_020, "ae_fwd_t3": 9_990, "ae_fwd_t4": 9_990,
                   "re_fwd": 10_000}, "md": 100}
    out, _ = compute({"category": "large_industrial", "voltage_v": 10_000, "code": "IND-TOU-2PART", "hv_lv": True,
                      "tx_capacity_kva": 400, "tx_loss_rate_bp": 300, "basic": "contract_demand",
                      "contract_kw": 100, "pf_std": 90}, [seg])
    assert out["loss_p"] == 900
    assert (out["e_sharp"], out["e_peak"], out["e_flat"], out["e_valley"]) == (0, 10_321, 10_289, 10_290)


# --- 4. exported reactive energy and the nameplate reactive loss --------------------------------------
def test_power_factor_counts_exported_reactive_energy(kernels):
    """General commercial, 力调 0.85: 10 000 kWh, imported reactive 3 000 kvarh, exported (倒送) 2 000 kvarh.

    215号: Q = |3 000| + |2 000| = 5 000; cosφ = 10 000 / √(10 000² + 5 000²) = 0.8944 → 0.89: −0.4 %.
    Energy 10 000 × 0.6518 = 6 518.00, 力调 −26.07 (−26.072).  Ignoring the export gave cosφ 0.96 (−1.1 %).
    """
    out, _ = compute({"category": "general_commercial", "voltage_v": 380, "code": "COM-TOU", "pf_std": 85},
                     [flat(0, 1_000_000, re_fwd=(0, 300_000), re_rev=(50_000, 250_000))])
    assert out["q"] == 500_000 and out["pf_x100"] == 89 and out["pf_bp"] == -40
    assert out["pf_adjust_fen"] == -2_607


def test_nameplate_loss_adds_reactive_loss(kernels):
    """高供低计 by nameplate, S11-400 kVA: P0 570 W, Pk 4 520 W, I0 0.8 %, Uk 4 %; June: T = 720 h;
    A_P 100 000 kWh, A_Q 75 000 kvarh.

    β² = (100 000² + 75 000²) / (400 · 720)² = 0.188380; ΔA = 0.57·720 + 4.52·β²·720 = 410.40 + 613.06 =
    1 023.46 kWh; ΔQ = Q0·T + Qk·β²·T with Q0 = 0.8 % × 400 = 3.2 kvar, Qk = 4 % × 400 = 16 kvar:
    2 304 + 2 170.14 = 4 474.14 kvarh (the agreed-rate method already added reactive loss; the nameplate
    method added none).  cosφ = 101 023.46 / √(101 023.46² + 79 474.14²) = 0.7859 → 0.79.
    """
    tou0 = {"ae_fwd_t1": 0, "ae_fwd_t2": 0, "ae_fwd_t3": 0, "ae_fwd_t4": 0}
    seg = {"prev": {"ae_fwd": 0, **tou0, "re_fwd": 0},
           "now": {"ae_fwd": 10_000_000, **tou0, "ae_fwd_t3": 10_000_000, "re_fwd": 7_500_000}, "md": 2_000_000}
    out, _ = compute({"category": "large_industrial", "voltage_v": 10_000, "code": "IND-TOU-2PART", "hv_lv": True,
                      "tx_capacity_kva": 400, "tx_p0_w": 570, "tx_pk_w": 4_520, "tx_i0_x100": 80, "tx_uk_x100": 400,
                      "basic": "contract_demand", "contract_kw": 300, "pf_std": 90}, [seg])
    assert out["loss_p"] == 102_346
    assert out["q"] == 7_500_000 + 447_414
    assert out["pf_x100"] == 79


# --- 6. the tariff assignment chooses the price --------------------------------------------------------
def test_tariff_code_chooses_the_price(kernels):
    """A general commercial customer assigned COM-TOU-2021 all month (no change): priced by
    general_commercial_2021.toml (peak 1.0937), not by its category's default (peak 1.0430).

    1 000 kWh of 峰: 1 000 × 1.0937 = 1 093.70; funds 1 000 × 0.027575 = 27.575 → 27.58; total 1 121.28.
    """
    tou = {"ae_fwd_t1": 0, "ae_fwd_t2": 0, "ae_fwd_t3": 0, "ae_fwd_t4": 0}
    out, _ = compute({"category": "general_commercial", "voltage_v": 380, "code": "COM-TOU-2021"},
                     [{"prev": {"ae_fwd": 0, **tou}, "now": {"ae_fwd": 100_000, **tou, "ae_fwd_t2": 100_000}}])
    assert out["energy_peak_fen"] == 109_370
    assert out["total_fen"] == 109_370 + 2_758


# --- 7. 力调 without a reactive reading ------------------------------------------------------------------
def test_power_factor_customer_without_reactive_reading_is_held(kernels):
    """General commercial under 力调 0.85 whose meter has no reactive register (neither reading has re_fwd):
    no power factor can be computed, so the bill is held (缺无功) — it was issued unadjusted.
    The held bill still shows its amounts: 1 000 kWh × 0.6518 = 651.80 + funds 27.58 = 679.38, no 力调 line."""
    out, items = compute({"category": "general_commercial", "voltage_v": 380, "code": "COM-TOU", "pf_std": 85},
                         [flat(0, 100_000)])
    assert out["flags"] & R.R_NO_REACTIVE and out["held"]
    assert out["total_fen"] == 65_180 + 2_758 and out["pf_adjust_fen"] == 0
    _, texts = R.reason_text(np.array([out["flags"]]), zh=True)
    assert "缺无功" in texts[0]


# --- 8. the funds quantity of a 高供低计 bill -------------------------------------------------------------
def test_funds_quantity_includes_the_loss(kernels):
    """高供低计 with an agreed loss of 2 %: metered 1 000.00 kWh (平), loss 20.00 kWh, settlement 1 020.00.

    Funds 1 020.00 × 0.027575 = 28.1265 → 28.13: the line prints 1 020.00 kWh beside 0.027575 (it printed
    the metered 1 000.00, which × 0.027575 = 27.58, not the 28.13 charged)."""
    tou0 = {"ae_fwd_t1": 0, "ae_fwd_t2": 0, "ae_fwd_t3": 0, "ae_fwd_t4": 0}
    seg = {"prev": {"ae_fwd": 0, **tou0, "re_fwd": 0},
           "now": {"ae_fwd": 100_000, **tou0, "ae_fwd_t3": 100_000, "re_fwd": 30_000}, "md": 10_000}
    out, items = compute({"category": "large_industrial", "voltage_v": 10_000, "code": "IND-TOU-2PART", "hv_lv": True,
                          "tx_capacity_kva": 400, "tx_loss_rate_bp": 200, "basic": "contract_demand",
                          "contract_kw": 100, "pf_std": 90}, [seg])
    assert out["loss_p"] == 2_000 and out["funds_fen"] == 2_813
    funds = [i for i in range(len(items["code"])) if R.ITEM_CODES[items["code"][i]][0] == "funds"]
    assert len(funds) == 1
    assert items["quantity"][funds[0]] == 102_000 and items["unit_price"][funds[0]] == 27_575
    assert items["amount_fen"][funds[0]] == 2_813


# --- 5 and 9: what the run reads — a hand-made archive and lake ---------------------------------------
def _site(d: pathlib.Path, readings: dict, opening=None, daily=None, cts=None) -> pathlib.Path:
    """One residential customer (id 1, meter 1, CT 1) on annual tiers, with monthly settlement readings
    ``readings`` (date → ae_fwd, 0.01 kWh; 尖峰平谷 all 平 — or date → {register: value}, TOU registers not
    given 0), archive imported into ``d``.  ``cts``: the multiplier history [(valid_from, CT), ...]."""
    files = d / "archive-files"
    files.mkdir(parents=True)
    tables = {
        "feeders": {"feeder_id": [1], "name": ["10kV 1线"], "voltage_kv": [10]},
        "areas": {"area_id": [1], "name": ["台区1"], "feeder_id": [1], "area_type": ["urban"], "transformer_kva": [400],
                  "pv_capacity_kw": [0]},
        "concentrators": {"concentrator_id": [1], "terminal_address": ["320100000001"], "protocol": ["698"],
                          "comm_mode": ["4g"], "area_id": [1]},
        "meters": {"meter_id": [1], "asset_no": ["A1"], "comm_address": ["000000000001"], "protocol": ["645"],
                   "concentrator_id": [1], "port_oad": ["F2090201"], "register_digits": [6]},
        "customers": {"customer_id": [1], "customer_no": ["3100000001"], "name": ["张三"], "category": ["residential"],
                      "voltage_v": [220], "prepaid": [False]},
        "customer_tariffs": {"customer_id": [1], "valid_from": [dt.date(2020, 1, 1)], "valid_to": pa.nulls(1, pa.date32()),
                             "tariff_code": ["RES-TIER"]},
        "points": {"point_id": [1], "role": ["customer"], "customer_id": [1], "area_id": [1],
                   "feeder_id": pa.nulls(1, pa.int64()), "hv_metered_lv": [False],
                   **{k: pa.nulls(1, pa.int64()) for k in ("tx_capacity_kva", "tx_p0_w", "tx_pk_w", "tx_loss_rate_bp",
                                                            "line_loss_rate_bp", "contract_demand_kw")},
                   "basic_charge": ["none"], "pf_standard_x100": [0]},
        "point_multipliers": {"point_id": [1], "valid_from": [dt.date(2020, 1, 1)], "valid_to": pa.nulls(1, pa.date32()),
                              "ct_ratio": [1], "pt_ratio": [1]},
        **({"point_multipliers": {"point_id": [1] * len(cts), "valid_from": [f for f, _ in cts],
                                  "valid_to": pa.array([f for f, _ in cts[1:]] + [None], pa.date32()),
                                  "ct_ratio": [c for _, c in cts], "pt_ratio": [1] * len(cts)}} if cts else {}),
        "point_meters": {"point_id": [1], "meter_id": [1], "valid_from": [dt.date(2020, 1, 1)],
                         "valid_to": pa.nulls(1, pa.date32()), "install_reading_x100": [0],
                         "removal_reading_x100": pa.nulls(1, pa.int64())},
    }
    if opening is not None:
        tables["customers"]["opening_ytd_kwh_x100"] = [opening[1]]
        tables["customers"]["opening_ytd_date"] = [opening[0]]
    for name, cols in tables.items():
        pacsv.write_csv(pa.table(cols), files / f"{name}.csv")
    with archive.Archive(d / "archive.duckdb") as a:
        a.import_files(sorted(files.glob("*.csv")))
    for kind, day, value in ([(schema.MONTHLY, k, v) for k, v in readings.items()]
                             + [(schema.DAILY, k, v) for k, v in (daily or {}).items()]):
        ts = (day - dt.date(1970, 1, 1)).days * 86_400 - schema.LOCAL_OFFSET_S
        regs = ({"ae_fwd_t1": 0, "ae_fwd_t2": 0, "ae_fwd_t4": 0, **value} if isinstance(value, dict) else
                {"ae_fwd": value, "ae_fwd_t1": 0, "ae_fwd_t2": 0, "ae_fwd_t3": value, "ae_fwd_t4": 0})
        cols = {"meter_id": np.ones(len(regs), np.int64),
                "register": np.array([schema.REGISTER_CODES[r] for r in regs], np.int16),
                "ts_utc": np.full(len(regs), ts, np.int64), "value": np.array(list(regs.values()), np.int64),
                "quality": np.zeros(len(regs), np.uint8), "source": np.full(len(regs), schema.SRC_IMPORT, np.uint8),
                "received_utc": np.full(len(regs), ts + 3600, np.int64)}
        lake.write_readings(d / "lake", cols, kind)
    return d


def test_annual_tiers_year_to_date_from_readings_across_a_skipped_month(tmp_path):
    """Annual tiers (2760 / 4800 kWh, +0.05 / +0.30): the meter read 1 000.00 kWh on 2026-01-01, 3 500.00 on
    06-01, 4 100.00 on 07-01, 4 700.00 on 08-01 and 5 300.00 on 09-01.  June is billed, July is not (a
    skipped month), then August.

    August's year-to-date before the period = 4 700 − 1 000 = 3 700 kWh (from the readings), so its 600 kWh
    run from 3 700 to 4 300: all tier 2 → +0.05 × 600 = 30.00; energy 600 × 0.5583 = 334.98; funds
    600 × 0.009575 = 5.745 → 5.75; total 370.73.  From the chain of bills (no July bill) it restarted at 0:
    no tier at all, 340.73.
    """
    d = _site(tmp_path, {dt.date(2026, 1, 1): 100_000, dt.date(2026, 6, 1): 350_000, dt.date(2026, 7, 1): 410_000,
                         dt.date(2026, 8, 1): 470_000, dt.date(2026, 9, 1): 530_000})
    bills.run(d, "2026-06")
    bills.run(d, "2026-08")
    b = bills.read_bills(d, "2026-08").to_pylist()[0]
    assert b["status"] == "issued"
    assert b["tier2_kwh_x100"] == 60_000 and b["tier2_fen"] == 3_000
    assert b["energy_flat_fen"] == 33_498 and b["funds_fen"] == 575 and b["total_fen"] == 37_073
    assert b["cum_after_kwh_x100"] == 430_000


def test_annual_tiers_from_the_opening_year_to_date_at_go_live(tmp_path):
    """Go-live on 2026-06-01 with an opening year-to-date of 2 700.00 kWh (imported with the archive); the
    lake starts there: 06-01 0.00, 07-01 300.00 kWh.  June's 300 kWh run from 2 700 to 3 000: 60 kWh in
    tier 1, 240 kWh in tier 2 → +0.05 × 240 = 12.00.  Without the opening value (and no reading on
    January 1) the year-to-date cannot be established: the bill is held (年累计电量不明), not priced from 0."""
    d = _site(tmp_path / "a", {dt.date(2026, 6, 1): 0, dt.date(2026, 7, 1): 30_000},
              opening=(dt.date(2026, 6, 1), 270_000))
    bills.run(d, "2026-06")
    b = bills.read_bills(d, "2026-06").to_pylist()[0]
    assert b["status"] == "issued" and b["tier2_kwh_x100"] == 24_000 and b["tier2_fen"] == 1_200
    d2 = _site(tmp_path / "b", {dt.date(2026, 6, 1): 0, dt.date(2026, 7, 1): 30_000})
    bills.run(d2, "2026-06")
    b2 = bills.read_bills(d2, "2026-06").to_pylist()[0]
    assert b2["status"] == "held" and b2["flags"] & R.R_NO_YTD and "年累计电量不明" in b2["reasons_zh"]


def test_month_without_readings_is_refused(tmp_path):
    """The lake holds 06-01 and 07-01 only: July 2026 has no reading at 08-01.  The run refuses with one
    line naming the period and the missing instant; nothing is published (it billed everyone held, 0 kWh)."""
    d = _site(tmp_path, {dt.date(2026, 1, 1): 0, dt.date(2026, 6, 1): 100_000, dt.date(2026, 7, 1): 130_000})
    with pytest.raises(BillingError) as e:
        bills.run(d, "2026-07")
    msg = str(e.value)
    assert "\n" not in msg and "2026-07" in msg and "2026-08-01" in msg and "nothing was published" in msg
    assert not (d / "bills" / "period=2026-07").exists()
    # the command: one line on stderr, exit status 1 (the readings are not collected yet: a failed operation)
    from click.testing import CliRunner

    from gridhead.cli import cli
    r = CliRunner().invoke(cli, ["bill", "run", "--period", "2026-07", "--data", str(d)])
    assert r.exit_code == 1
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "2026-07" in lines[0] and "2026-08-01" in lines[0]
    assert not (d / "bills" / "period=2026-07").exists()


def test_flags_of_two_segments_are_united_not_added(kernels):
    """A meter replacement gives two segments, both missing their end reading (F_MISSING = 1 each): the bill
    holds for "missing reading" (1 | 1 = 1) — the flags were added (1 + 1 = 2 = "estimated reading").
    Found by the reference biller (tests/billing_reference.py)."""
    out, _ = compute({"category": "residential", "voltage_v": 220, "code": "RES-TIER"},
                     [{"prev": {"ae_fwd": 0}, "now": {}}, {"prev": {"ae_fwd": 0}, "now": {}}])
    assert out["flags"] & R.F_MISSING and not out["flags"] & R.F_ESTIMATED



def test_reactive_energy_of_two_segments_is_the_months_not_each_segments(kernels):
    """高供低计 large industrial, agreed loss rate 3 % (reactive rate: the same), 力调 0.90; June 2026 has two
    segments (CT change 1 → 2 on the same meter).  Segment 1 (CT 1): active 0 → 10 000.00 kWh, imported
    reactive 0 → 3 000.00 kvarh, exported reactive 2 000.00 → 1 000.00 kvarh (a re-sent reading: a backward
    step of −1 000 kvarh); segment 2 (CT 2): active +5 000 × 2 = 10 000 kWh, imported +1 000 × 2 = 2 000 kvarh,
    exported +500 × 2 = +1 000 kvarh.

    215号 (ruling "Reactive energy for cosφ"): the month's |imported| + |exported| = |3 000 + 2 000| +
    |−1 000 + 1 000| = 5 000 kvarh; ΔQ = 3 % × 5 000 = 150 → Q = 5 150.00 kvarh.  A_P = 20 000 + ΔA 600 =
    20 600 kWh; cosφ = 20 600 / √(20 600² + 5 150²) = 0.9701 → 0.97 (−0.75 %).  The run took the absolute
    values per segment: 3 000 + |−1 000| + 2 000 + 1 000 = 7 000 kvarh, ΔQ 210, Q 7 210.00 kvarh, cosφ
    0.9439 → 0.94 (−0.60 %).  The bill is held for the negative step (F_NEGATIVE) either way.
    Found by the reference biller (property test: which=1, seed=94883, July 2026 customer 38, q_kvarh_x100
    5 504 409 expected, 5 527 952 printed).
    """
    seg1 = flat(0, 1_000_000, re_fwd=(0, 300_000), re_rev=(200_000, 100_000))
    seg2 = {**flat(1_000_000, 1_500_000, re_fwd=(300_000, 400_000), re_rev=(100_000, 150_000)), "ct": 2}
    out, _ = compute({"category": "large_industrial", "voltage_v": 10_000, "code": "IND-TOU-2PART", "hv_lv": True,
                      "tx_capacity_kva": 400, "tx_loss_rate_bp": 300, "pf_std": 90}, [seg1, seg2])
    assert out["segments"] == 2 and out["e_metered"] == 2_000_000 and out["loss_p"] == 60_000
    assert out["q"] == 500_000 + 15_000
    assert out["pf_x100"] == 97 and out["pf_bp"] == -75
    assert out["flags"] & R.F_NEGATIVE

def test_an_archive_made_before_the_optional_columns_still_bills(tmp_path, monkeypatch):
    """An archive file made before I0/Uk, the reactive loss rate and the opening year-to-date existed (the
    bill run attaches it read-only, so nothing adds them): those columns count as NULL.  June from the
    January reading: year-to-date 1 000 kWh, 300 kWh in June, all tier 1: 300 × 0.5583 = 167.49, funds
    300 × 0.009575 = 2.8725 → 2.87, total 170.36."""
    import dataclasses
    old = tuple(dataclasses.replace(t, cols=tuple(c for c in t.cols if not c.optional),
                                    checks=tuple(k for k in t.checks if "opening" not in k[0] and "tx_i0" not in k[0]))
                for t in archive.TABLES)
    with monkeypatch.context() as mp:            # the archive as the code before issue 15 made it
        mp.setattr(archive, "TABLES", old)
        mp.setattr(archive, "BY_NAME", {t.name: t for t in old})
        d = _site(tmp_path, {dt.date(2026, 1, 1): 0, dt.date(2026, 6, 1): 100_000, dt.date(2026, 7, 1): 130_000})
    bills.run(d, "2026-06")
    b = bills.read_bills(d, "2026-06").to_pylist()[0]
    assert b["status"] == "issued" and b["total_fen"] == 16_749 + 287


def test_year_to_date_needed_by_the_second_part_of_a_split_month(kernels, tmp_path):
    """A tariff change into annual tiers in mid-June (the new code's file has tiers = "annual"; the old one
    none) with the year-to-date unknown: the bill is held (年累计电量不明), not priced from 0.  Found by the
    reference biller."""
    import shutil
    d = tmp_path / "tariffs"
    shutil.copytree(pathlib.Path(R.__file__).with_name("tariffs"), d)
    f = d / "general_commercial_2021.toml"
    f.write_text(f.read_text().replace('tiers = "none"',
                                       'tiers = "annual"\ntier_limits_kwh = [2760, 4800]\ntier_increments = ["0.05", "0.30"]'))
    global TS
    saved, TS = TS, TariffSet.load(d)
    try:
        out, _ = compute({"category": "general_commercial", "voltage_v": 380, "code": "COM-TOU", "new_code": "COM-TOU-2021",
                          "change": dt.date(2026, 6, 16), "ytd_known": False, "chg": {"ae_fwd": 50_000}},
                         [flat(0, 100_000)])
    finally:
        TS = saved
    assert out["parts"] == 2 and out["flags"] & R.R_NO_YTD and out["held"]


def test_new_tariff_version_splits_by_that_days_frozen_reading(tmp_path):
    """The residential tariff gets a new version from 2026-06-11 (all periods 0.6000, 谷 0.4000); the meter read
    0.00 on 01-01 and 06-01, 50.00 kWh on 06-11 (daily freeze) and 300.00 on 07-01 (all 平).

    Split by the 06-11 reading: 50 × 0.5583 + 250 × 0.6000 = 27.915 + 150.000 = 177.915 → 177.92 (one
    rounding); funds 300 × 0.009575 = 2.8725 → 2.87; total 180.79.  (By days it was 100 + 200 kWh: 175.83.)
    Found by the reference biller."""
    import shutil
    tdir = tmp_path / "tariffs"
    shutil.copytree(pathlib.Path(R.__file__).with_name("tariffs"), tdir)
    f = tdir / "residential.toml"
    text = f.read_text()
    new = text[text.index("[[version]]"):].replace("effective = 2026-01-01", "effective = 2026-06-11")
    new = new.replace('sharp = "0.5583"\npeak = "0.5583"\nflat = "0.5583"\nvalley = "0.3583"',
                      'sharp = "0.6000"\npeak = "0.6000"\nflat = "0.6000"\nvalley = "0.4000"')
    assert '"0.6000"' in new
    f.write_text(text + "\n" + new)
    d = _site(tmp_path / "site", {dt.date(2026, 1, 1): 0, dt.date(2026, 6, 1): 0, dt.date(2026, 7, 1): 30_000},
              daily={dt.date(2026, 6, 11): 5_000})
    bills.run(d, "2026-06", tdir)
    b = bills.read_bills(d, "2026-06").to_pylist()[0]
    assert b["parts"] == 2 and b["change_day"] == 11
    assert b["energy_flat_fen"] == 17_792 and b["funds_fen"] == 287 and b["total_fen"] == 18_079


def test_basic_line_when_only_the_second_part_is_two_part(kernels, tmp_path):
    """The large-industrial tariff is single-rate until its 2026-07-01 version, two-part (contract demand)
    from then; a period 2026-06-16..07-15 (30 days) splits at day 16.  Contract 500 kW, maximum demand
    400 kW (≤ 1.05 C): basic 500 kW × 38.4 × 15/30 = 9 600.00 on the second part only — printed as the basic
    line (500.0000 kW, split price), so the lines add up to the total (the run failed: "line items do not
    add up").  Found by the reference biller."""
    import shutil
    d = tmp_path / "tariffs"
    shutil.copytree(pathlib.Path(R.__file__).with_name("tariffs"), d)
    f = d / "large_industrial.toml"
    text = f.read_text()
    f.write_text(text.replace('basic = "contract_demand"', 'basic = "none"', 1))
    global TS
    saved, TS = TS, TariffSet.load(d)
    try:
        tou0 = {"ae_fwd_t1": 0, "ae_fwd_t2": 0, "ae_fwd_t3": 0, "ae_fwd_t4": 0}
        out, items = compute({"category": "large_industrial", "voltage_v": 10_000, "code": "IND-TOU-2PART",
                              "basic": "contract_demand", "contract_kw": 500},
                             [{"prev": {"ae_fwd": 0, **tou0}, "now": {"ae_fwd": 900_000, **tou0, "ae_fwd_t3": 900_000},
                               "md": 4_000_000}], span=(dt.date(2026, 6, 16), dt.date(2026, 7, 16)))
    finally:
        TS = saved
    assert out["parts"] == 2 and out["basic_fen"] == 960_000 and out["billing_demand"] == 5_000_000
    basic = [i for i in range(len(items["code"])) if R.ITEM_CODES[items["code"][i]][0] == "basic"]
    assert len(basic) == 1 and items["amount_fen"][basic[0]] == 960_000
    assert items["quantity"][basic[0]] == 5_000_000 and items["unit_price"][basic[0]] == -1


def test_tou_sum_is_checked_per_segment_before_the_multiplier_at_a_ct_change(tmp_path):
    """A CT change 1 → 2 on 2026-06-16 (the meter stays): June has two segments, read at 06-01 and 07-01
    (monthly) and at the 06-16 00:00 daily freeze (every register).

    (a) 06-01 total 1 000.00 kWh, 平 1 000.00; 06-16 total 1 100.00, 平 1 090.00; 07-01 total 1 200.00,
        平 1 190.03.  Segment 1 (CT 1): total 100.00 kWh, TOU 90.00 — 10.00 kWh apart, beyond the 0.04 kWh
        tolerance: held, "TOU registers do not add up to the total" (分时电量不平).  The run skipped the check
        on a segment ending at a CT change of a meter still in place (its ``tou_check`` came out NULL → False)
        and issued the bill.  Found by the property test (which=1, seed=25022711: July customer 38).
    (b) the same with 06-16 平 1 100.00 and 07-01 平 1 200.03: segment 1 adds up; segment 2 (CT 2) total
        100.00, TOU 100.03 kWh at the meter — 0.03 kWh apart, within the tolerance (0.06 kWh after CT × 2,
        which is not what is checked): issued; energy 100 + 2 × 100 = 300.00 kWh.
    """
    cts = [(dt.date(2020, 1, 1), 1), (dt.date(2026, 6, 16), 2)]

    def june(d, t3_mid, t3_end):
        _site(d, {dt.date(2026, 1, 1): 0, dt.date(2026, 6, 1): 100_000,
                  dt.date(2026, 7, 1): {"ae_fwd": 120_000, "ae_fwd_t3": t3_end}},
              cts=cts, daily={dt.date(2026, 6, 16): {"ae_fwd": 110_000, "ae_fwd_t3": t3_mid}})
        bills.run(d, "2026-06")
        return bills.read_bills(d, "2026-06").to_pylist()[0]

    b = june(tmp_path / "a", 109_000, 119_003)
    assert b["segments"] == 2 and b["status"] == "held"
    assert b["flags"] == R.F_TOU_MISMATCH and b["reasons_zh"] == "分时电量不平"
    b = june(tmp_path / "b", 110_000, 120_003)
    assert b["segments"] == 2 and b["status"] == "issued" and b["flags"] == 0
    assert b["e_total_kwh_x100"] == 30_000 and b["e_flat_kwh_x100"] == 30_000


def test_assignment_change_and_new_version_split_the_month_in_three(kernels, tmp_path):
    """General commercial (peak register only), June 2026: the default file gets a version from 06-11 with peak
    1.2000 (under 1 kV; 1.0430 before), and the customer moves COM-TOU → COM-TOU-2021 (peak 1.0937) on
    06-21.  The meter reads 峰 0 on 06-01, 50.00 kWh on 06-11 and 200.00 on 06-21 (daily freezes), 300.00 on
    07-01.

    Three parts: 50 × 1.0430 + 150 × 1.2000 + 100 × 1.0937 = 52.15 + 180.00 + 109.37 = 341.52 (one rounding);
    funds 300 × 0.027575 = 8.2725 → 8.27; total 349.79.  The run split in two at 06-21 and priced 06-01..20
    at the old version: 200 × 1.0430 + 109.37 = 317.97.  Without the 06-11 reading that cut goes by days
    (300 × 10/30 = 100 kWh) while the 06-21 one still follows its reading: 104.30 + 120.00 + 109.37 = 333.67.
    """
    import shutil
    d = tmp_path / "tariffs"
    shutil.copytree(pathlib.Path(R.__file__).with_name("tariffs"), d)
    f = d / "general_commercial.toml"
    text = f.read_text()
    new = text[text.index("[[version]]"):].replace("effective = 2026-01-01", "effective = 2026-06-11")
    new = new.replace('peak = "1.0430"', 'peak = "1.2000"', 1)
    assert '"1.2000"' in new
    f.write_text(text + "\n" + new)
    tou = {"ae_fwd_t1": 0, "ae_fwd_t3": 0, "ae_fwd_t4": 0}

    def peak(kwh_x100):
        return {"ae_fwd": kwh_x100, "ae_fwd_t2": kwh_x100, **tou}

    global TS
    saved, TS = TS, TariffSet.load(d)
    try:
        bill = {"category": "general_commercial", "voltage_v": 380, "code": "COM-TOU", "new_code": "COM-TOU-2021",
                "change": dt.date(2026, 6, 21)}
        out, _ = compute({**bill, "frozen": {dt.date(2026, 6, 11): peak(5_000), dt.date(2026, 6, 21): peak(20_000)}},
                         [{"prev": peak(0), "now": peak(30_000)}])
        by_days, _ = compute({**bill, "frozen": {dt.date(2026, 6, 21): peak(20_000)}},
                             [{"prev": peak(0), "now": peak(30_000)}])
    finally:
        TS = saved
    assert out["parts"] == 3 and out["change_day"] == 11
    assert out["energy_peak_fen"] == 5_215 + 18_000 + 10_937 == 34_152
    assert out["funds_fen"] == 827 and out["total_fen"] == 34_979
    assert by_days["parts"] == 3 and by_days["energy_peak_fen"] == 10_430 + 12_000 + 10_937

"""Synthetic fleet generator: a consistent archive (档案), a lake of readings, and the ground truth.

``generate(out_dir, customers=N, days=D, seed=S)`` writes::

    <out>/archive-files/<table>.csv     files that ``gridhead archive import`` accepts (storage.archive)
    <out>/lake/readings/...             daily frozen (日冻结), monthly settlement (月冻结), load curves
    <out>/lake/events/...               device events (power down, cover opened, reverse energy)
    <out>/ground_truth/anomalies.csv    every injected anomaly: which meter / area, what, from when
    <out>/ground_truth/areas.csv        each area's true technical loss rate, PV, theft flag
    <out>/ground_truth/summary.json     the configuration, rates and counts

The model, per customer and day (vectorised over customers; one pass per day, seeded per day):

* true energy = base(customer) × season(category, day of year) × weekday(category) × noise.  Shapes by
  category: residential evening peak with summer/winter heating-cooling bumps, general commercial
  daytime, large industrial three-shift with a Spring Festival dip, agricultural pumping season
  (summer, at night).  The day's energy is split over 尖/峰/平/谷 by the category's hourly shape under
  a provincial TOU schedule (发改价格〔2021〕1093号: 尖峰 in the peak months); the three first registers
  are floored and 谷 takes the remainder, so the four TOU increments sum to the total increment exactly.
* registers are cumulative integers in 0.01 kWh at the meter (secondary side): increment = true energy /
  (CT × PT), and roll over at 10^(digits+2).  Commercial and industrial meters keep reactive registers
  (tanφ from a per-customer power factor 0.80–0.98).
* each transformer area's check meter (考核表) records supply = Σ customers' true energy / (1 − r) − PV,
  with r the area's technical loss rate (urban 2–5 %, rural 3–7 %, ground_truth/areas.csv); a village PV
  station (role ``pv``) in some rural areas records its generation on its forward register.  A feeder's
  outgoing meter records what its check meters take + dedicated-transformer customers (with their
  transformer loss ΔA = P0·T + Pk·β²·T, which a 高供高计 customer's high-side meter registers too) + a
  2 % line loss.
* anomalies at exact, recorded rates (``ANOMALY_RATES``; a rate is a share of its population, rounded):
  missing reads (share of meter-days), register rollover (residential meters started near 10^digits),
  meter replacement (换表: archive history rows, removal and install readings), reverse running
  (consumption goes to the reverse register, forward stops; a 潮流反向 event), stopped meter (registers
  freeze), theft-like under-registration (a share of the customers of some areas register 30–70 %).
  Meters carry at most one anomaly besides missing reads.
* area anomalies, drawn from a stream of their own (the draws above stay the same for a seed) among the
  areas without theft, one per area: a check-meter fault (考核表 stops or registers 30–70 % for 3–7 days:
  supply < sales, 负损) and an area outage (停运: the transformer is out for 3–4 days, so the check meter,
  the customers and the PV station register nothing; at 1 % missing reads a one-day outage is nearly
  always smeared by some meter's spread gap, the middle days of a longer one are not).  ground_truth/anomalies.csv has one row per
  affected area-day (the check meter's point); areas.csv says which areas carry them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import pathlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, SupportsInt, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from gridhead.protocols.errors import StorageError

from . import archive as _archive
from . import lake, schema

ANOMALY_RATES = {
    "missing_read": 0.01,       # of meter-days, every meter
    "rollover": 0.002,          # of residential meters
    "replacement": 0.003,       # of customer points
    "reverse_running": 0.001,   # of customer meters
    "stopped_meter": 0.002,     # of customer meters
    "theft_area": 0.05,         # of areas
    "theft_customer": 0.10,     # of the low-voltage customers of a theft area
    "tariff_change": 0.05,      # of general commercial customers
    "multiplier_change": 0.10,  # of large industrial points
    "check_meter_fault": 0.02,  # of areas (at least one in a fleet of >= 4 areas): 考核表 under-registers
    "area_outage": 0.01,        # of areas (at least one in a fleet of >= 4 areas): no energy for 3-4 days
    # billing edges (their own random stream: the draws above stay the same for a seed)
    "no_reactive": 0.02,        # of general commercial points (力调 0.85): a meter without reactive registers
    "exported_reactive": 0.2,   # of points with reactive registers: 10-40 % of the import exported (倒送无功)
    "agreed_loss": 0.3,         # of 高供低计 points: an agreed loss rate instead of the nameplate (P0, Pk, I0, Uk)
    "agreed_reactive_loss": 0.5,  # of those: an agreed reactive loss rate of its own
    "agreed_line_loss": 0.2,    # of 高供低计 points: an agreed line loss rate (线损)
    "demand_at_105": 0.3,       # of contract-demand points: monthly maximum demand at exactly 1.05 C (or 1 above)
    "no_opening_ytd": 0.01,     # of residential customers: no opening year-to-date at go-live (held bills)
}
AREA_MIN_FLEET = 4              # an area anomaly with a rate > 0 hits at least one area from this many areas
CATEGORY_SHARE = {"residential": 0.86, "general_commercial": 0.09, "large_industrial": 0.02, "agricultural": 0.03}
CUSTOMERS_PER_AREA = 150
AREAS_PER_FEEDER = 25
RES, COM, IND, AGR = range(4)

# hourly load shape by category (hour starting 0..23), relative
_SHAPES = np.array([
    [.50, .40, .35, .35, .35, .40, .60, .90, .80, .70, .70, .75, .80, .75, .70, .70, .80, 1.0, 1.3, 1.6, 1.7, 1.5, 1.1, .70],
    [.30, .30, .30, .30, .30, .30, .30, .50, .90, 1.2, 1.3, 1.3, 1.2, 1.2, 1.3, 1.3, 1.2, 1.1, 1.0, .90, .80, .60, .40, .30],
    [.85, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, .85, 1.0, 1.0, 1.0, .95, 1.0, 1.0, 1.0, .85, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    [1.4, 1.4, 1.4, 1.4, 1.4, 1.4, 1.4, 1.2, .70, .70, .70, .70, .70, .70, .70, .70, .70, .70, .50, .50, .50, .50, .80, 1.3],
])
_SHAPES = _SHAPES / _SHAPES.sum(axis=1, keepdims=True)
HOURLY_SHAPES = _SHAPES            # public: (category, hour) share of a day's energy, rows sum to 1
# TOU period of each hour: 1 尖, 2 峰, 3 平, 4 谷 (register ae_fwd_t1..t4); 尖 only in SHARP_MONTHS
_TOU_HOURS = np.array([4] * 8 + [2] * 3 + [3] * 6 + [2, 2, 1, 1] + [3] * 3)
SHARP_MONTHS = (1, 7, 8, 12)
_BASE_KWH = {RES: (7.0, 0.55), COM: (60.0, 0.9), IND: (6000.0, 0.8), AGR: (25.0, 0.7)}   # median, sigma
# S11 10 kV oil-immersed transformers (GB/T 6451-2015 table 1; the S11 level of GB 20052): kVA, no-load loss
# P0 W, load loss Pk W, no-load current I0 and impedance voltage Uk in 0.01 %
_S11 = np.array([[315, 480, 3650, 90, 400], [500, 680, 5150, 80, 400], [800, 980, 7500, 60, 450],
                 [1000, 1150, 10300, 60, 450], [1250, 1360, 12000, 50, 450], [1600, 1640, 14500, 50, 450],
                 [2000, 1940, 18300, 40, 500]])
_REG = schema.REGISTER_CODES
ENERGY_REGS = ("ae_fwd", "ae_fwd_t1", "ae_fwd_t2", "ae_fwd_t3", "ae_fwd_t4", "ae_rev", "re_fwd", "re_rev")
_DAY_S = 86400

# a table as columns: name -> numpy array, list, or Arrow array (what ``pa.array`` / ``lake.to_table`` take)
Columns: TypeAlias = "dict[str, Any]"


@dataclasses.dataclass
class GenConfig:
    customers: int
    days: int
    seed: int = 1
    start: _dt.date = _dt.date(2026, 6, 1)
    curve_fraction: float = 0.01        # share of customer meters with 15-minute load curves
    rates: dict[str, float] = dataclasses.field(default_factory=lambda: dict(ANOMALY_RATES))

    def __post_init__(self) -> None:
        if self.customers < 1 or self.days < 1:
            raise StorageError(f"generator: need at least 1 customer and 1 day, got {self.customers}, {self.days}")
        bad = [k for k in self.rates if k not in ANOMALY_RATES]
        if bad:
            raise StorageError(f"generator: unknown anomaly {bad[0]!r} (known: {', '.join(ANOMALY_RATES)})")
        for k, v in self.rates.items():
            if not 0 <= v <= 1:
                raise StorageError(f"generator: rate {k}={v} is not in 0..1")
        self.rates = {**ANOMALY_RATES, **self.rates}


def _pick(rng: np.random.Generator, pool: np.ndarray, rate: float) -> np.ndarray:
    """Exactly round(rate × len(pool)) members of ``pool``, sorted (rates are exact, not Bernoulli)."""
    k = int(round(rate * len(pool)))
    return np.sort(rng.choice(pool, k, replace=False)) if k else pool[:0]


def _bump(doy: float, centre: float, width: float) -> float:
    return math.exp(-((doy - centre) / width) ** 2) + math.exp(-((doy - centre + 365) / width) ** 2) \
        + math.exp(-((doy - centre - 365) / width) ** 2)


def season_weekday(day: _dt.date) -> np.ndarray:
    """Per-category multiplier of the median daily energy on ``day`` (season × weekday)."""
    doy = day.timetuple().tm_yday
    summer, winter = _bump(doy, 200, 35), _bump(doy, 15, 30)
    weekend = day.weekday() >= 5
    return np.array([
        (1 + 0.45 * summer + 0.30 * winter) * (1.08 if weekend else 1.0),
        (1 + 0.35 * summer + 0.10 * winter) * (0.80 if weekend else 1.0),
        (1 - 0.25 * _bump(doy, 40, 7)) * (0.85 if weekend else 1.0),       # Spring Festival dip
        0.15 + 1.6 * _bump(doy, 190, 45),                                  # pumping season
    ])


def tou_shares(month: int) -> np.ndarray:
    """(category, 4) share of a day's energy in 尖/峰/平/谷 under the TOU hours of ``month``."""
    hours = _TOU_HOURS if month in SHARP_MONTHS else np.where(_TOU_HOURS == 1, 2, _TOU_HOURS)
    return np.stack([_SHAPES[:, hours == t].sum(axis=1) for t in (1, 2, 3, 4)], axis=1)


class _Fleet:
    """The archive, as numpy columns; meters indexed 0..M-1 (meter_id = index + 1)."""

    def __init__(self, cfg: GenConfig, rng: np.random.Generator) -> None:
        n = cfg.customers
        cats = np.array(list(CATEGORY_SHARE.values()))
        self.cat = rng.choice(4, n, p=cats / cats.sum()).astype(np.int8)
        lv = np.flatnonzero(self.cat != IND)
        ind = np.flatnonzero(self.cat == IND)
        self.n_areas = na = max(1, math.ceil(len(lv) / CUSTOMERS_PER_AREA))
        self.n_feeders = nf = max(1, math.ceil(na / AREAS_PER_FEEDER))
        self.area_of_customer = np.zeros(n, np.int64)                 # 0 = none; area ids 1..na
        self.area_of_customer[lv] = np.arange(len(lv)) * na // max(1, len(lv)) + 1
        self.area_feeder = np.arange(na) * nf // na + 1
        self.feeder_of_ind = rng.integers(1, nf + 1, len(ind))
        self.area_rural = rng.random(na) < 0.4
        self.area_loss = np.where(self.area_rural, rng.uniform(0.03, 0.07, na), rng.uniform(0.02, 0.05, na))
        self.area_pv = self.area_rural & (rng.random(na) < 0.2)
        # metering points: customers 1..n, area checks n+1..n+na, feeder outs, PV stations
        self.pv_areas = np.flatnonzero(self.area_pv) + 1
        self.n_points = n + na + nf + len(self.pv_areas)
        self.role = np.array(["customer"] * n + ["area_check"] * na + ["feeder_out"] * nf + ["pv"] * len(self.pv_areas))
        self.p_area = np.concatenate([self.area_of_customer, np.arange(1, na + 1), np.zeros(nf, np.int64), self.pv_areas])
        self.p_feeder = np.zeros(self.n_points, np.int64)
        self.p_feeder[ind] = self.feeder_of_ind
        self.p_feeder[n + na:n + na + nf] = np.arange(1, nf + 1)
        self.p_cat = np.concatenate([self.cat, np.full(self.n_points - n, -1, np.int8)])
        self.ind = ind
        # multipliers: LV customers direct (some commercial through CTs), industrial CT×PT or CT on the low side
        P = self.n_points
        self.ct = np.ones(P, np.int64)
        self.pt = np.ones(P, np.int64)
        com = np.flatnonzero(self.cat == COM)
        self.ct[com[rng.random(len(com)) < 0.2]] = 20
        self.hv_lv = np.zeros(P, bool)
        self.hv_lv[ind] = rng.random(len(ind)) < 0.5                  # 高供低计
        tx = _S11[rng.integers(0, len(_S11), len(ind))]
        self.tx_kva = np.zeros(P, np.int64)
        self.tx_p0 = np.zeros(P, np.int64)
        self.tx_pk = np.zeros(P, np.int64)
        self.tx_kva[ind], self.tx_p0[ind], self.tx_pk[ind] = tx[:, 0], tx[:, 1], tx[:, 2]
        self.tx_i0 = np.zeros(P, np.int64)
        self.tx_uk = np.zeros(P, np.int64)
        self.tx_i0[ind], self.tx_uk[ind] = tx[:, 3], tx[:, 4]
        self.ct[ind] = np.where(self.hv_lv[ind], tx[:, 0] // 5, rng.choice([10, 20, 30, 40], len(ind)))
        self.pt[ind] = np.where(self.hv_lv[ind], 1, 100)
        self.ct[n:n + na] = rng.choice([40, 60, 80, 100], na)
        self.ct[n + na:n + na + nf] = 120
        self.pt[n + na:n + na + nf] = 100
        # meters: one per point (meter_id = point_id) plus the replacements added by _Anomalies
        # register integer digits: 6 (999999.99 kWh) for low-voltage customers, 8 for the rest
        self.digits = np.concatenate([np.where(self.cat == IND, 8, 6), np.full(P - n, 8)]).astype(np.int64)
        self.reactive = np.concatenate([(self.cat == COM) | (self.cat == IND), np.ones(P - n, bool)])
        self.reactive[P - len(self.pv_areas):] = False
        self.pf = rng.uniform(0.80, 0.98, P)
        med = np.array([_BASE_KWH[c][0] for c in range(4)])
        sig = np.array([_BASE_KWH[c][1] for c in range(4)])
        self.base_kwh = np.zeros(P)
        self.base_kwh[:n] = med[self.cat] * np.exp(sig[self.cat] * rng.standard_normal(n))
        # industrial demand must fit the transformer: at most 60 % mean load
        self.base_kwh[ind] = np.minimum(self.base_kwh[ind], 0.6 * 24 * self.tx_kva[ind] * 0.9)
        pv_kw = rng.choice([100, 200, 300], len(self.pv_areas))
        self.pv_kw = np.zeros(na + 1, np.int64)
        self.pv_kw[self.pv_areas] = pv_kw


def generate(out_dir: lake.StrPath, customers: int, days: int, seed: int = 1, *, start: _dt.date | None = None,
             curve_fraction: float = 0.01, rates: dict[str, float] | None = None, write_lake: bool = True,
             progress: Callable[[int], object] | None = None) -> dict[str, Any]:
    """Generate the fleet into ``out_dir`` (see the module docstring).  Returns the summary dict.

    ``progress(n_days_done)`` is called after each day is written (a CLI progress bar).
    """
    cfg = GenConfig(customers, days, seed, start or GenConfig.start, curve_fraction, dict(rates or {}))
    t0 = time.perf_counter()
    out = pathlib.Path(out_dir)
    gen = FleetGenerator(cfg)
    gen.write_archive(out / "archive-files")
    t_archive = time.perf_counter() - t0
    lake_root = out / "lake"
    counts = {"daily": 0, "monthly": 0, "interval": 0, "events": 0}
    for d in range(cfg.days + 1):
        batches = gen.day(d)
        if write_lake:
            for kind, cols in batches.items():
                if kind == "events":
                    if len(cols["meter_id"]):
                        lake.write_events(lake_root, cols)
                elif len(cols["meter_id"]):
                    lake.write_readings(lake_root, cols, kind)
        for kind, cols in batches.items():
            counts[kind] += len(cols["meter_id"])
        if progress:
            progress(d + 1)
    summary = gen.write_truth(out / "ground_truth")
    summary["rows"] = counts
    summary["seconds"] = {"archive": round(t_archive, 3), "total": round(time.perf_counter() - t0, 3)}
    (out / "ground_truth" / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


class FleetGenerator:
    def __init__(self, cfg: GenConfig) -> None:
        self.cfg = cfg
        self.ss = np.random.SeedSequence(cfg.seed)
        rng = np.random.default_rng(self.ss.spawn(1)[0])
        f = self.fleet = _Fleet(cfg, rng)
        n, P, r = cfg.customers, f.n_points, cfg.rates
        self.truth: list[dict[str, object]] = []
        D = cfg.days
        # meters: index i < P is the original meter of point i; replacements appended
        cust = np.arange(n)
        pool = rng.permutation(cust)
        def take(rate: float, among: np.ndarray) -> np.ndarray:
            # round(rate x population) members of ``among`` not yet given an anomaly
            nonlocal pool
            cand = pool[np.isin(pool, among)]
            k = min(len(cand), int(round(rate * len(among))))
            chosen = np.sort(rng.choice(cand, k, replace=False))
            pool = pool[~np.isin(pool, chosen)]
            return chosen
        # theft areas first: their customers are taken out of the pool for other anomalies
        lv_areas = np.arange(1, f.n_areas + 1)
        self.theft_areas = _pick(rng, lv_areas, r["theft_area"])
        in_theft = np.flatnonzero(np.isin(f.area_of_customer, self.theft_areas))
        theft_c = []
        for a in self.theft_areas:
            members = in_theft[f.area_of_customer[in_theft] == a]
            theft_c.append(_pick(rng, members, r["theft_customer"]))
        self.theft = np.concatenate(theft_c) if theft_c else cust[:0]
        pool = pool[~np.isin(pool, self.theft)]
        self.rollover = take(r["rollover"], np.flatnonzero(f.cat == RES))
        self.replaced = take(r["replacement"], cust)
        self.reverse = take(r["reverse_running"], cust)
        self.stopped = take(r["stopped_meter"], cust)
        self.theft_factor = rng.uniform(0.3, 0.7, len(self.theft))
        lo, hi = (1, D) if D > 1 else (0, 1)
        self.theft_from = rng.integers(lo, hi, len(self.theft))
        self.reverse_from = rng.integers(lo, hi, len(self.reverse))
        self.stopped_from = rng.integers(lo, hi, len(self.stopped))
        self.replace_day = rng.integers(lo, hi, len(self.replaced))     # consumption day of the swap
        self.replace_frac = rng.uniform(0.3, 0.7, len(self.replaced))
        self.M = P + len(self.replaced)
        self.new_meter = P + np.arange(len(self.replaced))              # meter index of the replacement
        self.point_of_meter = np.concatenate([np.arange(P), self.replaced])
        # tariff and multiplier changes (history rows only)
        self.tariff_change = _pick(rng, np.flatnonzero(f.cat == COM), r["tariff_change"])
        self.tariff_change_day = rng.integers(lo, hi, len(self.tariff_change))
        self.mult_change = _pick(rng, f.ind, r["multiplier_change"])
        self.mult_change_day = rng.integers(lo, hi, len(self.mult_change))
        self.mult_change_ct = f.ct[self.mult_change] * 2              # CT upgraded to twice the ratio
        # register state (M, 8) in 0.01 kWh at the meter; initial values
        modulus = 10 ** (f.digits.astype(np.int64) + 2)
        self.modulus = np.concatenate([modulus, modulus[self.replaced]])
        self.digits = np.concatenate([f.digits, f.digits[self.replaced]])
        age_days = rng.uniform(100, 3000, P)
        daily_reg = f.base_kwh * 100 / (f.ct * f.pt)
        total0 = np.minimum(daily_reg * age_days, 0.5 * modulus).astype(np.int64)
        roll = self.rollover
        total0[roll] = modulus[roll] - (daily_reg[roll] * rng.uniform(0.5, max(0.6, D - 1.0), len(roll))).astype(np.int64) - 1
        total0[n:] = (daily_reg[n:] * age_days[n:] * 0.2).astype(np.int64) % (modulus[n:] // 2)
        self.reg = np.zeros((self.M, 8), np.int64)
        self.reg[:P, 0] = total0
        self.reg[:P, 1:5] = split_tou(total0, tou_shares(cfg.start.month)[np.maximum(f.p_cat, 0)])
        tan = np.tan(np.arccos(f.pf))
        self.reg[:P, 6] = np.where(f.reactive, (total0 * tan), 0).astype(np.int64) % modulus
        self.reg[:P, 7] = np.where(f.reactive, total0 * 0.01, 0).astype(np.int64)
        self.reg[:P, 1:] %= modulus[:, None]
        self.tan = np.concatenate([tan, tan[self.replaced]])
        self.removal = np.zeros(len(self.replaced), np.int64)
        self.curve_meters = np.sort(np.random.default_rng(self.ss.spawn(2)[1]).choice(
            n, max(1, int(round(cfg.curve_fraction * n))), replace=False)) if cfg.curve_fraction > 0 else cust[:0]
        self.md_month = np.zeros(self.M)                                 # max 15-min demand this month, kW
        self.missing_days = 0
        self.missing: list[tuple[_dt.date, np.ndarray]] = []
        self.received_slot = np.random.default_rng(self.ss.spawn(3)[2]).integers(600, 600 + 5 * 3600, f.n_areas + 1)
        self._area_anomalies(lv_areas)
        self._billing_edges()

    def _billing_edges(self) -> None:
        """The billing edges of ``ANOMALY_RATES`` (a stream of their own): meters without reactive registers,
        exported reactive energy, agreed transformer and line losses, demand at 105 % of the contract, and
        the opening year-to-date of the annual tiers at go-live (the first 1st on or after ``cfg.start``; the
        tier year is the calendar year, so the value is the energy from January 1 to the day before)."""
        cfg, r, f = self.cfg, self.cfg.rates, self.fleet
        rng = np.random.default_rng([cfg.seed, 3_000_017])
        n, P = cfg.customers, f.n_points
        com_pts = np.flatnonzero(f.p_cat == COM)
        self.no_reactive = _pick(rng, com_pts, r["no_reactive"])
        f.reactive[self.no_reactive] = False
        react_pts = np.flatnonzero(f.reactive[:n])
        self.exporting = _pick(rng, react_pts, r["exported_reactive"])
        share = np.full(P, 0.01)
        share[self.exporting] = rng.uniform(0.10, 0.40, len(self.exporting))
        self.q_export_share = np.concatenate([share, share[self.replaced]])
        hv = np.flatnonzero(f.hv_lv)
        self.agreed_loss = _pick(rng, hv, r["agreed_loss"])
        self.loss_rate_bp = np.full(P, -1, np.int64)
        self.loss_rate_bp[self.agreed_loss] = rng.integers(100, 400, len(self.agreed_loss))
        self.q_loss_rate_bp = np.full(P, -1, np.int64)
        own_q = _pick(rng, self.agreed_loss, r["agreed_reactive_loss"])
        self.q_loss_rate_bp[own_q] = rng.integers(300, 1200, len(own_q))
        self.line_loss = _pick(rng, hv, r["agreed_line_loss"])
        self.line_loss_bp = np.full(P, -1, np.int64)
        self.line_loss_bp[self.line_loss] = rng.integers(50, 300, len(self.line_loss))
        # contract demand C (kW): 70 % of the transformer; for the 105 % points a C for which 1.05 C is a
        # whole number of the meter's 0.0001 kW (10 500·C divisible by CT × PT), so the register can show it
        ind = f.ind
        self.contract_kw = np.zeros(P, np.int64)
        self.contract_kw[ind] = (f.tx_kva[ind] * 7) // 10
        contract = ind[(ind % 2) == 1]                  # basic charge by contract demand: see write_archive
        steady = contract[~np.isin(contract, np.concatenate([self.mult_change, self.replaced]))]
        self.at_105 = _pick(rng, steady, r["demand_at_105"])
        mult = f.ct[self.at_105] * f.pt[self.at_105]
        g = mult // np.gcd(10_500, mult)
        self.contract_kw[self.at_105] = np.maximum(g, np.rint(self.contract_kw[self.at_105] / g).astype(np.int64) * g)
        self.md_105 = 10_500 * self.contract_kw[self.at_105] // mult
        # opening year-to-date (上线时年累计电量) at go-live — the first settlement day (the 1st) on or after
        # cfg.start, whose monthly reading starts the year-to-date — from the customer's median daily energy
        res = np.flatnonzero(f.cat == RES)
        self.no_opening = _pick(rng, res, r["no_opening_ytd"])
        s0 = cfg.start
        self.go_live = s0 if s0.day == 1 else _dt.date(s0.year + s0.month // 12, s0.month % 12 + 1, 1)
        days_before = (self.go_live - _dt.date(self.go_live.year, 1, 1)).days
        self.opening_ytd = np.rint(f.base_kwh[:n] * days_before * rng.uniform(0.8, 1.2, n) * 100).astype(np.int64)

    def _area_anomalies(self, lv_areas: np.ndarray) -> None:
        """Check-meter faults and outages: areas without theft, each at most one; (area, day) masks."""
        cfg, r = self.cfg, self.cfg.rates
        rng = np.random.default_rng([cfg.seed, 2_000_003])           # its own stream: see the docstring
        free = np.setdiff1d(lv_areas, self.theft_areas)
        D = cfg.days
        out = []
        for kind, (lo_len, hi_len) in (("check_meter_fault", (3, 7)), ("area_outage", (3, 4))):
            k = int(round(r[kind] * len(lv_areas)))
            if r[kind] > 0 and len(lv_areas) >= AREA_MIN_FLEET:
                k = max(k, 1)
            chosen = np.sort(rng.choice(free, min(k, len(free)), replace=False))
            free = np.setdiff1d(free, chosen)
            length = rng.integers(lo_len, hi_len + 1, len(chosen))
            start = rng.integers(0, np.maximum(D - length, 0) + 1)  # inside the generated days
            out.append((chosen, start, np.minimum(start + length, D)))
        (self.fault_areas, self.fault_from, self.fault_to), (self.outage_areas, self.outage_from, self.outage_to) = out
        # what a faulty check meter registers: half stop (0), the rest 30-70 % of the supply
        self.fault_factor = np.where(rng.random(len(self.fault_areas)) < 0.5, 0.0,
                                     rng.uniform(0.3, 0.7, len(self.fault_areas)))

    # --- archive files ---------------------------------------------------------------------------------
    def write_archive(self, out: pathlib.Path) -> None:
        f, cfg, n = self.fleet, self.cfg, self.cfg.customers
        out.mkdir(parents=True, exist_ok=True)
        P, na, nf = f.n_points, f.n_areas, f.n_feeders
        d0 = cfg.start
        dates: Callable[[Iterable[SupportsInt]], pa.Array] = lambda k: pa.array(  # noqa: E731
            [d0 + _dt.timedelta(days=int(x)) for x in k], pa.date32())
        nind = len(f.ind)
        t: dict[str, Columns] = {}
        t["feeders"] = {"feeder_id": np.arange(1, nf + 1), "name": [f"10kV {i}线" for i in range(1, nf + 1)],
                        "voltage_kv": np.full(nf, 10)}
        t["areas"] = {"area_id": np.arange(1, na + 1), "name": [f"台区{i:06d}" for i in range(1, na + 1)],
                      "feeder_id": f.area_feeder, "area_type": np.where(f.area_rural, "rural", "urban"),
                      "transformer_kva": np.where(f.area_rural, 200, 400), "pv_capacity_kw": f.pv_kw[1:]}
        # concentrators: one per area (id = area id), one 专变终端 per industrial customer, one per feeder
        nc = na + nind + nf
        conc_area = np.concatenate([np.arange(1, na + 1), np.zeros(nind + nf, np.int64)])
        t["concentrators"] = {
            "concentrator_id": np.arange(1, nc + 1), "terminal_address": [f"3201{i:08d}" for i in range(1, nc + 1)],
            "protocol": np.where(np.arange(nc) % 3 == 0, "376.1", "698"),
            "comm_mode": np.where(np.arange(nc) < na, "4g", "ethernet"),
            "area_id": pa.array(conc_area, pa.int64(), mask=conc_area == 0)}
        t["meters"] = self.meter_columns()
        cat_names = np.array(list(CATEGORY_SHARE))
        volt = np.where(f.cat == IND, 10_000, np.where(f.cat == RES, 220, 380))
        cid = np.arange(1, n + 1)
        t["customers"] = {"customer_id": cid, "customer_no": [f"{3100000000 + i}" for i in cid],
                          "name": [f"用户{i:07d}" for i in cid], "category": cat_names[f.cat],
                          "voltage_v": volt, "prepaid": (f.cat == RES) & (cid % 2 == 0)}
        has_opening = np.ones(n, bool)
        has_opening[self.no_opening] = False
        t["customers"]["opening_ytd_kwh_x100"] = pa.array(self.opening_ytd, pa.int64(), mask=~has_opening)
        t["customers"]["opening_ytd_date"] = pa.array([self.go_live if h else None for h in has_opening], pa.date32())
        tariff = np.array(["RES-TIER", "COM-TOU", "IND-TOU-2PART", "AGR"])[f.cat]
        tc = self.tariff_change
        old_from = d0 - _dt.timedelta(days=2000)
        valid_to = np.full(n, -1, np.int64)
        valid_to[tc] = self.tariff_change_day
        t["customer_tariffs"] = {
            "customer_id": np.concatenate([cid, cid[tc]]),
            "valid_from": pa.array([old_from] * n + [d0 + _dt.timedelta(days=int(x)) for x in self.tariff_change_day],
                                   pa.date32()),
            "valid_to": pa.array([None if v < 0 else d0 + _dt.timedelta(days=int(v)) for v in valid_to]
                                 + [None] * len(tc), pa.date32()),
            "tariff_code": np.concatenate([tariff, np.full(len(tc), "COM-TOU-2021")])}
        ind_mask = np.zeros(P, bool)
        ind_mask[f.ind] = True
        basic = np.where(ind_mask, np.where(np.arange(P) % 2 == 0, "capacity", "contract_demand"), "none")
        # 力调: industrial 0.90, commercial 0.85; the small agricultural pumps (no reactive registers) none
        pfs = np.where(ind_mask, 90, np.where(f.p_cat == COM, 85, 0))
        nul: Callable[[np.ndarray, np.ndarray], pa.Array] = (  # noqa: E731
            lambda a, m: pa.array(a, pa.int64(), mask=~m))
        nameplate = f.hv_lv & (self.loss_rate_bp < 0)
        pid = np.arange(1, P + 1)
        t["points"] = {
            "point_id": pid, "role": f.role,
            "customer_id": nul(np.where(pid <= n, pid, 0), pid <= n),
            "area_id": nul(f.p_area, f.p_area > 0), "feeder_id": nul(f.p_feeder, f.p_feeder > 0),
            "hv_metered_lv": f.hv_lv, "tx_capacity_kva": nul(f.tx_kva, ind_mask),
            "tx_p0_w": nul(f.tx_p0, nameplate), "tx_pk_w": nul(f.tx_pk, nameplate),
            "tx_loss_rate_bp": nul(self.loss_rate_bp, self.loss_rate_bp >= 0),
            "line_loss_rate_bp": nul(self.line_loss_bp, self.line_loss_bp >= 0),
            "tx_i0_x100": nul(f.tx_i0, nameplate), "tx_uk_x100": nul(f.tx_uk, nameplate),
            "tx_q_loss_rate_bp": nul(self.q_loss_rate_bp, self.q_loss_rate_bp >= 0),
            "contract_demand_kw": nul(self.contract_kw, basic == "contract_demand"),
            "basic_charge": basic, "pf_standard_x100": pfs}
        mc = self.mult_change
        mto = np.full(P, -1, np.int64)
        mto[mc] = self.mult_change_day
        install = d0 - _dt.timedelta(days=1500)
        t["point_multipliers"] = {
            "point_id": np.concatenate([pid, pid[mc]]),
            "valid_from": pa.array([install] * P + [d0 + _dt.timedelta(days=int(x)) for x in self.mult_change_day],
                                   pa.date32()),
            "valid_to": pa.array([None if v < 0 else d0 + _dt.timedelta(days=int(v)) for v in mto] + [None] * len(mc),
                                 pa.date32()),
            "ct_ratio": np.concatenate([f.ct, self.mult_change_ct]),
            "pt_ratio": np.concatenate([f.pt, f.pt[mc]])}
        rp, rd = self.replaced, self.replace_day
        pto = np.full(P, -1, np.int64)
        pto[rp] = rd
        removal = nul(np.zeros(P, np.int64), np.zeros(P, bool))
        t["point_meters"] = {
            "point_id": np.concatenate([pid, pid[rp]]), "meter_id": np.concatenate([pid, P + 1 + np.arange(len(rp))]),
            "valid_from": pa.array([install] * P + [d0 + _dt.timedelta(days=int(x)) for x in rd], pa.date32()),
            "valid_to": pa.array([None if v < 0 else d0 + _dt.timedelta(days=int(v)) for v in pto] + [None] * len(rp),
                                 pa.date32()),
            "install_reading_x100": np.zeros(P + len(rp), np.int64),
            "removal_reading_x100": removal}          # filled in by the day loop: see write_truth
        self._tables = t
        self._dates = dates
        self._archive_out = out
        # the removal readings are known only once the day loop has run; write point_meters last
        for name in t:
            if name != "point_meters":
                _write_csv(out / f"{name}.csv", name, t[name])

    def meter_columns(self) -> Columns:
        """The archive's ``meters`` table as columns (meter_id = index + 1); also what the fleet
        simulator (headend/sim/model.py) routes by."""
        f, n = self.fleet, self.cfg.customers
        P, na, nf, nind = f.n_points, f.n_areas, f.n_feeders, len(f.ind)
        conc = np.zeros(P, np.int64)
        lv = f.p_area > 0
        conc[lv] = f.p_area[lv]
        conc[f.ind] = na + 1 + np.arange(nind)
        conc[n + na:n + na + nf] = na + nind + 1 + np.arange(nf)
        conc_m = np.concatenate([conc, conc[self.replaced]])
        mid = np.arange(1, self.M + 1)
        port = np.where(np.concatenate([f.role, f.role[self.replaced]]) == "customer", "F2090201", "F2010201")
        port[np.concatenate([f.p_cat, f.p_cat[self.replaced]]) == IND] = "F2010201"
        return {"meter_id": mid, "asset_no": [f"33{i:020d}" for i in mid],
                "comm_address": [f"{i:012d}" for i in mid],
                "protocol": np.where((mid % 10 < 3) | (mid > P), "698", "645"),
                "concentrator_id": conc_m, "port_oad": port, "register_digits": self.digits}

    def meter_model(self) -> dict[str, np.ndarray]:
        """Per-meter columns of the register model before day 0's consumption, for the fleet simulator
        (headend/sim/model.py), which advances them with this module's shapes: ``category`` (RES..AGR,
        -1 for area / feeder / PV meters), ``base_kwh`` (median daily energy; area and feeder meters get
        the sum of what they supply), ``multiplier`` (CT × PT), ``registers`` (M, 8) in
        :data:`ENERGY_REGS` order, ``modulus``, ``reactive``, ``tan_phi``, ``replaced_day`` (the
        consumption day an original meter is swapped out, -1 never) and ``installed_day`` (the day a
        replacement meter starts, 0 for the originals)."""
        f, n = self.fleet, self.cfg.customers
        na = f.n_areas
        base = f.base_kwh.copy()
        lv = np.flatnonzero(f.area_of_customer > 0)
        area_sales = np.bincount(f.area_of_customer[lv], weights=base[lv], minlength=na + 1)[1:]
        base[n:n + na] = area_sales / (1 - f.area_loss)
        base[n + na:n + na + f.n_feeders] = np.bincount(f.area_feeder, weights=base[n:n + na],
                                                        minlength=f.n_feeders + 1)[1:] / 0.98
        base[n + na + f.n_feeders:] = f.pv_kw[f.pv_areas] * 3.0
        pm = self.point_of_meter
        replaced_day = np.full(self.M, -1, np.int64)
        replaced_day[self.replaced] = self.replace_day
        installed = np.zeros(self.M, np.int64)
        installed[self.new_meter] = self.replace_day
        return {"meter_id": np.arange(1, self.M + 1), "category": f.p_cat[pm].astype(np.int8),
                "base_kwh": base[pm], "multiplier": (f.ct * f.pt)[pm], "registers": self.reg.copy(),
                "modulus": self.modulus.copy(), "reactive": f.reactive[pm].copy(), "tan_phi": self.tan.copy(),
                "replaced_day": replaced_day, "installed_day": installed}

    # --- one day -------------------------------------------------------------------------------------
    def day(self, d: int) -> dict[str, Columns]:
        """Readings of freeze ``d`` (00:00 of start + d days) and the consumption of day d-1."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 1_000_003, d])     # one stream per day: same data in any chunking
        date = cfg.start + _dt.timedelta(days=d)
        out: dict[str, Columns] = {"events": _empty_events()}
        curve = None
        if d > 0:
            curve = self._consume(d - 1, rng, out)
        # which meters are installed at this freeze: the original until its replacement day (inclusive),
        # the replacement from the day after
        active = np.ones(self.M, bool)
        active[self.replaced[self.replace_day < d]] = False       # removed during an earlier day
        active[self.new_meter[self.replace_day >= d]] = False     # not yet installed at this freeze
        k_miss = int(round(self.cfg.rates["missing_read"] * active.sum()))
        missing = np.sort(rng.choice(np.flatnonzero(active), k_miss, replace=False)) if k_miss else np.zeros(0, np.int64)
        self.missing_days += len(missing)
        self.missing.append((date, missing))
        present = active.copy()
        present[missing] = False
        ts = _midnight_utc(date)
        out["daily"] = self._frozen(present, ts, rng)
        if date.day == 1:                    # settlement day (结算日): the 1st, 00:00
            out["monthly"] = self._frozen(active, ts, rng, demand=d > 0)
            self.md_month[:] = 0
        if curve is not None:
            out["interval"] = curve
        return out

    def _consume(self, j: int, rng: np.random.Generator, out: dict[str, Columns]) -> dict[str, np.ndarray] | None:
        """Add day j's consumption (between freezes j and j+1) to the registers; return its load curve."""
        cfg, f = self.cfg, self.fleet
        n, P, na = cfg.customers, f.n_points, f.n_areas
        date = cfg.start + _dt.timedelta(days=j)
        sw = season_weekday(date)
        true_kwh = np.zeros(P)
        true_kwh[:n] = f.base_kwh[:n] * sw[f.cat] * rng.lognormal(0, 0.15, n)
        # area outage (停运): nothing flows to the area's customers (no draw is skipped: the stream stays)
        out_now = self.outage_areas[(self.outage_from <= j) & (j < self.outage_to)]
        if len(out_now):
            true_kwh[:n][np.isin(f.area_of_customer, out_now)] = 0.0
        # customers' energy at their point; anomalies change what the meter registers, not what flows
        mult = (f.ct * f.pt).astype(np.float64)
        mc_on = self.mult_change[self.mult_change_day <= j]
        ct_now = f.ct.copy()
        ct_now[mc_on] = self.mult_change_ct[self.mult_change_day <= j]
        mult = (ct_now * f.pt).astype(np.float64)
        registered = true_kwh.copy()
        th = self.theft_from <= j
        registered[self.theft[th]] *= self.theft_factor[th]
        # areas: check meter = Σ true / (1 - loss) - PV
        lv = np.flatnonzero(f.area_of_customer > 0)
        area_sales = np.bincount(f.area_of_customer[lv], weights=true_kwh[lv], minlength=na + 1)
        loss = f.area_loss * rng.uniform(0.9, 1.1, na)
        supply = area_sales[1:] / (1 - loss)
        pv_gen = np.zeros(na + 1)
        doy = date.timetuple().tm_yday
        pv_gen[f.pv_areas] = f.pv_kw[f.pv_areas] * (3.0 + 1.5 * _bump(doy, 172, 80)) * rng.uniform(0.3, 1.1, len(f.pv_areas))
        pv_gen[1:] = np.minimum(pv_gen[1:], 0.5 * supply)                # never exports through the check meter
        true_kwh[n:n + na] = supply - pv_gen[1:]
        true_kwh[n + na + f.n_feeders:] = pv_gen[f.pv_areas]
        # dedicated transformers: ΔA = P0·T + Pk·β²·T (T = 24 h, β = mean load / (kVA × 0.9))
        ind = f.ind
        beta = true_kwh[ind] / 24 / (f.tx_kva[ind] * 0.9)
        tx_loss = (f.tx_p0[ind] * 24 + f.tx_pk[ind] * beta ** 2 * 24) / 1000
        # 高供高计: the meter on the transformer's high side registers its loss with the load (高供低计: billing
        # adds it); the feeder's outgoing meter carries what the check meters take (PV offsets it inside
        # the area) and every dedicated transformer with its loss
        hv_hv = ~f.hv_lv[ind]
        registered[ind[hv_hv]] += tx_loss[hv_hv]
        feeder_in = np.bincount(f.area_feeder, weights=supply - pv_gen[1:], minlength=f.n_feeders + 1) \
            + np.bincount(f.feeder_of_ind, weights=true_kwh[ind] + tx_loss, minlength=f.n_feeders + 1)
        true_kwh[n + na:n + na + f.n_feeders] = feeder_in[1:] / 0.98
        registered[n:] = true_kwh[n:]
        # check-meter fault: the 考核表 stops or under-registers; what flows through the feeder is unchanged
        on = (self.fault_from <= j) & (j < self.fault_to)
        registered[n + self.fault_areas[on] - 1] *= self.fault_factor[on]
        inc_p = np.rint(registered * 100 / mult).astype(np.int64)        # 0.01 kWh at the meter
        # meter-level increments: replacement splits the swap day between old and new meter
        inc = np.concatenate([inc_p, np.zeros(len(self.replaced), np.int64)])
        rd = self.replace_day
        old, new = self.replaced, self.new_meter
        part = np.rint(inc_p[old] * self.replace_frac).astype(np.int64)
        inc[new] = np.where(rd < j, inc_p[old], np.where(rd == j, inc_p[old] - part, 0))
        inc[old] = np.where(rd > j, inc_p[old], np.where(rd == j, part, 0))
        # reverse running: energy to the reverse register; stopped: nothing registers
        rev = np.zeros(self.M, np.int64)
        on = self.reverse[self.reverse_from <= j]
        rev[on], inc[on] = inc[on], 0
        inc[self.stopped[self.stopped_from <= j]] = 0
        # events: the day an anomaly starts
        ev = []
        for ids, start, code in ((self.reverse, self.reverse_from, 8), (self.theft, self.theft_from, 2)):
            s = ids[start == j]
            if code == 2:
                s = s[s % 2 == 0]            # half the thieves open the cover; the rest leave no event
            ev.append((s, code))
        pdn = rng.choice(n, rng.binomial(n, 0.001), replace=False) if n else np.zeros(0, np.int64)
        ev.append((pdn, 1))
        out["events"] = _events(ev, _midnight_utc(date), rng)
        # TOU split of the day's increment; reactive from tanφ
        month_shares = tou_shares(date.month)
        pcat = np.concatenate([f.p_cat, f.p_cat[self.replaced]])
        shares = month_shares[np.maximum(pcat, 0)] * rng.uniform(0.9, 1.1, (self.M, 4))
        shares /= shares.sum(axis=1, keepdims=True)
        tou = split_tou(inc, shares)
        react = np.concatenate([f.reactive, f.reactive[self.replaced]])
        q = np.where(react, np.rint((inc + rev) * self.tan), 0).astype(np.int64)
        r = self.reg
        r[:, 0] += inc
        r[:, 1:5] += tou
        r[:, 5] += rev
        r[:, 6] += q
        r[:, 7] += np.where(react, np.rint((inc + rev) * self.q_export_share), 0).astype(np.int64)
        r %= self.modulus[:, None]
        sw_day = rng.uniform(0.9, 1.1, self.M)
        self.md_month = np.maximum(self.md_month, (inc / 100 / 24) * 1.8 * sw_day)
        sw_idx = rd == j
        self.removal[sw_idx] = r[old[sw_idx], 0]
        # 15-minute load curve (p, register 36, 0.0001 kW at the meter) for the chosen customers
        cm = self.curve_meters
        if not len(cm):
            return None
        shape = np.repeat(_SHAPES[f.cat[cm]], 4, axis=1) / 4                      # (k, 96), rows sum to 1
        p_kw = (registered[cm] / mult[cm])[:, None] * shape * 4 * rng.uniform(0.85, 1.15, (len(cm), 96))
        p = np.minimum(np.rint(p_kw * 10_000), schema.REGISTERS[36].max_value).astype(np.int64)
        t0 = _midnight_utc(date)
        ts = t0 + 900 * np.arange(1, 97, dtype=np.int64)
        k = len(cm) * 96
        return {"meter_id": np.repeat(cm + 1, 96).astype(np.int64), "register": np.full(k, 36, np.int16),
                "ts_utc": np.tile(ts, len(cm)), "value": p.ravel(), "quality": np.zeros(k, np.uint8),
                "source": np.full(k, schema.SRC_IMPORT, np.uint8),
                "received_utc": np.full(k, t0 + _DAY_S + 3600, np.int64)}

    def _frozen(self, present: np.ndarray, ts: int, rng: np.random.Generator, demand: bool = False
                ) -> dict[str, np.ndarray]:
        idx = np.flatnonzero(present)
        react = np.concatenate([self.fleet.reactive, self.fleet.reactive[self.replaced]])[idx]
        cols_m, cols_r, cols_v = [], [], []
        for k, name in enumerate(ENERGY_REGS):
            sel = idx if k < 6 else idx[react]
            cols_m.append(sel + 1)
            cols_r.append(np.full(len(sel), _REG[name], np.int16))
            cols_v.append(self.reg[sel, k])
        if demand:
            sel = idx[react]
            cols_m.append(sel + 1)
            cols_r.append(np.full(len(sel), _REG["md_fwd"], np.int16))
            md = np.minimum(np.rint(self.md_month[sel] * 10_000), schema.REGISTERS[20].max_value).astype(np.int64)
            # 两部制 at the edge: the month's maximum demand at exactly 1.05 C (even months) or 0.0001 kW above
            month = (_dt.datetime.fromtimestamp(ts + schema.LOCAL_OFFSET_S, _dt.timezone.utc).date()
                     - _dt.timedelta(days=1)).month
            pos = np.searchsorted(sel, self.at_105)
            ok = (pos < len(sel)) & (sel[np.minimum(pos, len(sel) - 1)] == self.at_105) if len(sel) else pos < 0
            md[pos[ok]] = self.md_105[ok] + (month % 2)
            cols_v.append(md)
        m = np.concatenate(cols_m).astype(np.int64)
        area = np.concatenate([self.fleet.p_area, self.fleet.p_area[self.replaced]])
        recv = ts + self.received_slot[area[m - 1]] + (m % 200) // 4
        return {"meter_id": m, "register": np.concatenate(cols_r), "ts_utc": np.full(len(m), ts, np.int64),
                "value": np.concatenate(cols_v), "quality": np.zeros(len(m), np.uint8),
                "source": np.full(len(m), schema.SRC_IMPORT, np.uint8), "received_utc": recv}

    # --- ground truth --------------------------------------------------------------------------------
    def write_truth(self, out: pathlib.Path) -> dict[str, Any]:
        cfg, f = self.cfg, self.fleet
        d0 = cfg.start
        day: Callable[[SupportsInt], _dt.date] = lambda j: d0 + _dt.timedelta(days=int(j))  # noqa: E731
        rows: dict[str, list[object]] = {"anomaly": [], "meter_id": [], "point_id": [], "area_id": [], "date": [],
                                         "detail": []}

        def add(kind: str, meter_idx: np.ndarray, point_idx: np.ndarray, dates: Iterable[_dt.date | None],
                details: Iterable[str]) -> None:
            rows["anomaly"] += [kind] * len(meter_idx)
            rows["meter_id"] += (np.asarray(meter_idx) + 1).tolist()
            rows["point_id"] += (np.asarray(point_idx) + 1).tolist()
            rows["area_id"] += f.p_area[np.asarray(point_idx, np.int64)].tolist()
            rows["date"] += list(dates)
            rows["detail"] += list(details)

        rd = self.replace_day
        add("replacement", self.replaced, self.replaced, [day(j) for j in rd],
            [f"new meter {m + 1}, removal reading {r}, install reading 0" for m, r in zip(self.new_meter, self.removal)])
        add("rollover", self.rollover, self.rollover, [None] * len(self.rollover),
            [f"register digits {self.digits[m]}" for m in self.rollover])
        add("reverse_running", self.reverse, self.reverse, [day(j) for j in self.reverse_from], [""] * len(self.reverse))
        add("stopped_meter", self.stopped, self.stopped, [day(j) for j in self.stopped_from], [""] * len(self.stopped))
        add("theft", self.theft, self.theft, [day(j) for j in self.theft_from],
            [f"registers {x:.2f} of consumption" for x in self.theft_factor])
        for kind, areas, frm, to, what in (
                ("check_meter_fault", self.fault_areas, self.fault_from, self.fault_to,
                 [f"check meter registers {x:.2f} of supply" for x in self.fault_factor]),
                ("area_outage", self.outage_areas, self.outage_from, self.outage_to,
                 ["no energy in the area"] * len(self.outage_areas))):
            for a, j0, j1, text in zip(areas, frm, to, what):      # one row per area-day
                chk = np.full(j1 - j0, cfg.customers + a - 1)          # the area's check-meter point
                add(kind, chk, chk, [day(j) for j in range(j0, j1)], [text] * len(chk))
        for date, miss in self.missing:
            add("missing_read", miss, self.point_of_meter[miss], [date] * len(miss), [""] * len(miss))
        out.mkdir(parents=True, exist_ok=True)
        pacsv.write_csv(pa.table({k: pa.array(v, pa.date32() if k == "date" else None) for k, v in rows.items()}),
                        out / "anomalies.csv")
        na = f.n_areas
        pacsv.write_csv(pa.table({
            "area_id": np.arange(1, na + 1), "area_type": np.where(f.area_rural, "rural", "urban"),
            "technical_loss_bp": np.rint(f.area_loss * 10_000).astype(np.int64),
            "pv_kw": f.pv_kw[1:], "theft": np.isin(np.arange(1, na + 1), self.theft_areas),
            "check_meter_fault": np.isin(np.arange(1, na + 1), self.fault_areas),
            "outage": np.isin(np.arange(1, na + 1), self.outage_areas)}), out / "areas.csv")
        # the removal readings are now known: the archive's point_meters file
        t = self._tables["point_meters"]
        P = f.n_points
        rem = np.zeros(P + len(self.replaced), np.int64)
        rem[self.replaced] = self.removal
        mask = np.zeros(len(rem), bool)
        mask[self.replaced] = True
        t["removal_reading_x100"] = pa.array(rem, pa.int64(), mask=~mask)
        _write_csv(self._archive_out / "point_meters.csv", "point_meters", t)
        pops = {"missing_read": self.missing_days, "rollover": len(self.rollover), "replacement": len(self.replaced),
                "reverse_running": len(self.reverse), "stopped_meter": len(self.stopped),
                "theft_area": len(self.theft_areas), "theft_customer": len(self.theft),
                "tariff_change": len(self.tariff_change), "multiplier_change": len(self.mult_change),
                "check_meter_fault": len(self.fault_areas), "area_outage": len(self.outage_areas),
                "no_reactive": len(self.no_reactive), "exported_reactive": len(self.exporting),
                "agreed_loss": len(self.agreed_loss), "agreed_reactive_loss": int((self.q_loss_rate_bp >= 0).sum()),
                "agreed_line_loss": len(self.line_loss), "demand_at_105": len(self.at_105),
                "no_opening_ytd": len(self.no_opening)}
        return {"customers": cfg.customers, "days": cfg.days, "seed": cfg.seed, "start": str(d0),
                "areas": na, "feeders": f.n_feeders, "points": P, "meters": self.M,
                "curve_meters": len(self.curve_meters), "rates": cfg.rates, "injected": pops}


def split_tou(total: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Split integer ``total`` (n,) by ``shares`` (n, 4): floor the first three, the last takes the rest."""
    out = np.empty((len(total), 4), np.int64)
    out[:, :3] = np.floor(total[:, None] * shares[:, :3]).astype(np.int64)
    out[:, 3] = total - out[:, :3].sum(axis=1)
    return out


def _midnight_utc(date: _dt.date) -> int:
    return (date - _dt.date(1970, 1, 1)).days * _DAY_S - schema.LOCAL_OFFSET_S


def _empty_events() -> Columns:
    return _events([], 0, None)


def _events(groups: Sequence[tuple[np.ndarray, int]], t0: int, rng: np.random.Generator | None) -> Columns:
    m = np.concatenate([g[0] for g in groups]).astype(np.int64) + 1 if groups else np.zeros(0, np.int64)
    code = np.concatenate([np.full(len(g[0]), g[1], np.int16) for g in groups]) if groups else np.zeros(0, np.int16)
    start = t0 + (rng.integers(0, _DAY_S, len(m)) if rng is not None else np.zeros(0, np.int64))
    return {"meter_id": m, "event": code, "start_utc": start, "end_utc": start + 600,
            "detail": pa.nulls(len(m), pa.string()), "source": np.full(len(m), schema.SRC_IMPORT, np.uint8),
            "received_utc": start + 900}


def _write_csv(path: pathlib.Path, name: str, cols: Columns) -> None:
    spec = _archive.BY_NAME[name]
    arrays = []
    for c in spec.cols:
        v = cols[c.name]
        arrays.append(v if isinstance(v, pa.Array) else pa.array(v))
    pacsv.write_csv(pa.Table.from_arrays(arrays, names=spec.names), path)

"""Realistic reading batches for the lake's tests and ``benchmarks/bench_ingest.py``.

Not the fleet generator (``storage.generator`` builds a consistent archive and anomalies); this makes the
columns a head-end hands to the ingest writer, shaped like a collection round so that sizes at rest and
throughput are measured on plausible data:

* daily frozen (日冻结): every meter freezes ae_fwd total + 4 TOU registers at 00:00 local; one in five
  (C&I) also reverse active and both reactive totals.  Registers are cumulative, 0.01 kWh, rising by a
  residential ~8 kWh/day with spread; TOU registers sum to the total (as meters do).
* load curve (负荷曲线): 96 quarter-hour values of active power p (0.0001 kW) per meter.
* received times: meters are read concentrator by concentrator (200 meters each) during the night's
  collection window, a few seconds apart within one concentrator.
"""

from __future__ import annotations

import numpy as np

from . import schema

_DAY_S = 86400
_WINDOW_START_S = 10 * 60           # collection starts 00:10 local
_WINDOW_S = 5 * 3600                # and ends by 05:10 local
METERS_PER_CONCENTRATOR = 200
_TOU_SHARE = np.array([0.08, 0.30, 0.37, 0.25])   # 尖 峰 平 谷 share of the day's energy


def local_midnight_utc(day: int) -> int:
    """Epoch seconds (UTC) of 00:00 China Standard Time of ``day`` (days since 1970-01-01 local)."""
    return day * _DAY_S - schema.LOCAL_OFFSET_S


def daily_frozen(meter_ids: np.ndarray, day: int, seed: int = 0, *, base: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
    """One day's frozen registers of ``meter_ids`` (columns for ``storage.lake.READINGS_SCHEMA``).

    ``base`` (per meter, 0.01 kWh) is the total register at the start; by default a seeded 0..50,000 kWh.
    The freeze of day d is the register at 00:00 of day d, i.e. after ``day`` days of use from ``base``.
    """
    rng = np.random.default_rng([seed, day])
    meter_ids = np.asarray(meter_ids, np.int64)
    n = len(meter_ids)
    if base is None:
        base = np.random.default_rng(seed).integers(0, 5_000_000, n)
    daily = np.random.default_rng(seed + 1).gamma(2.0, 400.0, n)          # mean 8 kWh/day, by meter
    total = base + (daily * (day % 3650) * rng.uniform(0.9, 1.1, n)).astype(np.int64)
    tou = np.floor(total[:, None] * _TOU_SHARE[None, :]).astype(np.int64)
    tou[:, 2] += total - tou.sum(axis=1)                                     # remainder to flat: sum exact
    ci = (meter_ids % 5) == 0
    regs = [(1, total), (2, tou[:, 0]), (3, tou[:, 1]), (4, tou[:, 2]), (5, tou[:, 3])]
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("meter_id", "register", "value")}
    for code, vals in regs:
        cols["meter_id"].append(meter_ids)
        cols["register"].append(np.full(n, code, np.int16))
        cols["value"].append(vals)
    for code, frac in ((6, 0.01), (7, 0.35), (8, 0.05)):
        cols["meter_id"].append(meter_ids[ci])
        cols["register"].append(np.full(int(ci.sum()), code, np.int16))
        cols["value"].append((total[ci] * frac).astype(np.int64))
    out = {k: np.concatenate(v) for k, v in cols.items()}
    m = len(out["meter_id"])
    midnight = local_midnight_utc(day)
    out["ts_utc"] = np.full(m, midnight, np.int64)
    out["received_utc"] = midnight + _received_offsets(out["meter_id"], rng)
    out["quality"] = np.zeros(m, np.uint8)
    out["source"] = np.full(m, schema.SRC_TASK, np.uint8)
    return out


def load_curve(meter_ids: np.ndarray, day: int, seed: int = 0, interval_s: int = 900) -> dict[str, np.ndarray]:
    """One day of interval-end active power p (register 36, 0.0001 kW) for ``meter_ids``."""
    rng = np.random.default_rng([seed, day, 1])
    meter_ids = np.asarray(meter_ids, np.int64)
    n, k = len(meter_ids), _DAY_S // interval_s
    hour = (np.arange(1, k + 1) * interval_s / 3600.0) % 24
    shape = 0.4 + 0.6 * np.exp(-((hour - 20.0) ** 2) / 6.0) + 0.3 * np.exp(-((hour - 12.0) ** 2) / 4.0)
    scale = np.random.default_rng(seed + 2).gamma(2.0, 0.5, n)              # kW, by meter
    p = scale[:, None] * shape[None, :] * rng.uniform(0.7, 1.3, (n, k))
    midnight = local_midnight_utc(day)
    ts = midnight + interval_s * np.arange(1, k + 1, dtype=np.int64)
    out = {
        "meter_id": np.repeat(meter_ids, k),
        "register": np.full(n * k, 36, np.int16),
        "ts_utc": np.tile(ts, n),
        "value": (p * 10_000).astype(np.int64).ravel(),
        "quality": np.zeros(n * k, np.uint8),
        "source": np.full(n * k, schema.SRC_TASK, np.uint8),
    }
    # the concentrator uploads the day's curve the next night
    out["received_utc"] = midnight + _DAY_S + _received_offsets(out["meter_id"], rng)
    return out


def _received_offsets(meter_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Seconds after midnight each meter's reading arrived: its concentrator's slot plus a few seconds."""
    conc = meter_ids // METERS_PER_CONCENTRATOR
    n_conc = int(conc.max()) + 1 if len(conc) else 0
    slot = rng.integers(_WINDOW_START_S, _WINDOW_START_S + _WINDOW_S, n_conc)
    offsets: np.ndarray = slot[conc] + (meter_ids % METERS_PER_CONCENTRATOR) // 4
    return offsets

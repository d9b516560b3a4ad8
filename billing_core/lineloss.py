"""Statistical line loss (统计线损) of transformer areas (台区) and 10 kV feeders, as array code.

Per area and day (or month)::

    supply = Σ check meter (考核表) forward × multiplier + Σ PV generation points inside the area
    sales  = Σ customer meters forward × multiplier + check meter reverse × multiplier
    rate   = (supply − sales) / supply

Per feeder: supply = outgoing meter (出线表) forward × multiplier; sales = Σ public-transformer check
meters (forward − reverse) + Σ dedicated-transformer customers (专变) + their transformer loss (变损,
高供低计, :func:`billing_core.energy.transformer_loss`).

Scales.  Energy is integer 0.01 kWh (the register resolution) at the primary side (× CT × PT).  The rate
is integer basis points (``rate_bp``, 1/10000): ``round_div((supply − sales) · 10000, supply)``, rounded
half away from zero (:func:`billing_core.rounding.round_div`, the one rounding rule).  A rate exists
only where the unit is computable and ``supply > 0``.

Daily energy of a meter (:func:`interval_energy`).  Readings are the daily frozen values (日冻结, all of
the same 00:00 freeze), one column per freeze.  Where a boundary reading is missing, the difference
between the nearest readings either side spans the gap; if the gap is at most ``max_gap`` days that
energy is spread evenly over the days it covers (floor, the last day takes the remainder, so the sum is
exact) and flagged :data:`LF_SPREAD`; otherwise the day is missing (:data:`LF_MISSING`) and any unit it
belongs to is 不可算 that day.  Rollover as in billing (:func:`billing_core.energy.register_energy`).

Categories (:data:`CATEGORY_NAMES`): 合格 ok, 高损 high (rate > ``high_bp`` of the unit's type), 负损
negative (rate < ``negative_bp``, or sales with no supply), 不可算 not computable, 停运 outage (no
supply and no sales).  Thresholds per area type (urban, rural, feeder ...) from a TOML document
(:func:`parse_thresholds`; the file is ``billing_core/lineloss.toml``).

Aggregation over units is ``np.bincount`` over a flattened (unit, day) index with float64 weights; every
partial sum is an integer below 2**53 (checked), so the sums are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gridhead.billing_core.rounding import round_div
from gridhead.protocols.errors import ConfigError

RATE_SCALE = 10_000                       # rate_bp: basis points

OK, HIGH, NEGATIVE, NOT_COMPUTABLE, OUTAGE = range(5)
CATEGORY_NAMES = ("ok", "high", "negative", "not_computable", "outage")
CATEGORY_ZH = ("合格", "高损", "负损", "不可算", "停运")

LF_SPREAD = 1          # some energy of the unit-day was spread over a multi-day gap
LF_MISSING = 2         # a boundary reading is missing and no multi-day difference spans it
LF_ROLLOVER = 4        # a register rolled over past 10^digits
LF_NEGATIVE = 8        # a meter ran backwards (a real negative difference)
LF_REPLACED = 16       # a meter was replaced (换表) that day: energy in two segments
FLAG_NAMES = {LF_SPREAD: "spread", LF_MISSING: "missing", LF_ROLLOVER: "rollover", LF_NEGATIVE: "negative",
              LF_REPLACED: "replaced"}

# what a period's energies were taken from (Balance.basis): the monthly settlement readings (月冻结) at
# both ends of every meter, the daily frozen ones (日冻结, spread over gaps), or some of each
B_DAILY, B_MONTHLY, B_MIXED = range(3)
BASIS_NAMES = ("daily", "monthly", "mixed")

# point kinds as the area balance sees them
K_CUSTOMER, K_CHECK, K_PV, K_FEEDER_OUT, K_DEDICATED = range(5)
_EXACT = float(2 ** 53)


@dataclass(frozen=True)
class Band:
    """Loss-rate band of one unit type, basis points: 合格 when negative_bp <= rate <= high_bp."""

    high_bp: int
    negative_bp: int = 0


# The audit's rules for an area's month (稽查, billing_core.jobs.audit): each one that fires lists the area and is
# named in the item.  Keys of the ``[rules]`` table of the thresholds file; a key set to -1 turns it off.
RULES = {
    "high_days": 5,               # 高损 on at least this many days of the month
    "negative_days": 3,           # 负损 on at least this many days, or the month 负损: check meter (考核表) / wiring
    "month_over_month_bp": 150,   # 月环比: the month's rate above the previous month's by at least this
    "year_over_year_bp": 150,     # 同比: above the same month last year's by at least this
    "over_technical_bp": 150,     # above the area's technical loss (理论线损) by at least this, where known
}


@dataclass(frozen=True)
class LossThresholds:
    bands: dict[str, Band]
    rules: dict[str, int] = field(default_factory=lambda: dict(RULES))

    def __post_init__(self) -> None:
        if self.rules is None:                  # given as None: the defaults
            object.__setattr__(self, "rules", dict(RULES))

    def band(self, unit_type: str) -> Band:
        try:
            return self.bands[unit_type]
        except KeyError:
            raise ConfigError(f"line loss thresholds: no band for unit type {unit_type!r} "
                              f"(have: {', '.join(self.bands)})") from None

    def arrays(self, unit_types: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(high_bp, negative_bp) per unit, from an array of type names."""
        unit_types = np.asarray(unit_types)
        high = np.zeros(len(unit_types), np.int64)
        neg = np.zeros(len(unit_types), np.int64)
        for name in np.unique(unit_types):          # a handful of types, not units
            b = self.band(str(name))
            high[unit_types == name], neg[unit_types == name] = b.high_bp, b.negative_bp
        return high, neg


def parse_thresholds(doc: dict[str, Any], source: str = "thresholds") -> LossThresholds:
    """``{"band": {"urban": {"high_bp": 700, "negative_bp": 0}, ...}, "rules": {...}}`` (a parsed TOML
    document; ``rules`` (:data:`RULES`) optional, each key defaulting)."""
    bands = doc.get("band")
    if not isinstance(bands, dict) or not bands:
        raise ConfigError(f"{source}: needs [band.<type>] tables (e.g. [band.urban] high_bp = 700)")
    out: dict[str, Band] = {}
    for name, b in bands.items():
        if not isinstance(b, dict) or set(b) - {"high_bp", "negative_bp"} or "high_bp" not in b:
            raise ConfigError(f"{source}, band.{name}: keys are high_bp (required) and negative_bp")
        hi, neg = b["high_bp"], b.get("negative_bp", 0)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (hi, neg)):
            raise ConfigError(f"{source}, band.{name}: high_bp and negative_bp are integers (basis points)")
        if not -RATE_SCALE <= neg < hi <= RATE_SCALE:
            raise ConfigError(f"{source}, band.{name}: need -10000 <= negative_bp < high_bp <= 10000, "
                              f"got {neg} and {hi}")
        out[str(name)] = Band(hi, neg)
    rules = doc.get("rules", {})
    if not isinstance(rules, dict) or set(rules) - set(RULES):
        raise ConfigError(f"{source}, rules: keys are {', '.join(RULES)}")
    for k, v in rules.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < -1:
            raise ConfigError(f"{source}, rules.{k}: an integer >= 0 (or -1: off), got {v!r}")
    return LossThresholds(out, {**RULES, **rules})


def interval_energy(readings: np.ndarray, modulus: npt.ArrayLike, max_gap: int = 3,
                    blocked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Energy of each meter over each interval between consecutive freezes, gaps spread.

    ``readings`` (n, T) int64 register values, -1 where missing; ``modulus`` (n,) or scalar, 10^(digits+2)
    (the register's range in its 0.01 kWh scale).  ``blocked`` (n, T-1) bool: intervals that take no share
    of a spread gap (the area's outage days, 停运: nothing flowed, so nothing is spread into them); a gap
    made only of blocked intervals is spread as usual.  Returns (energy (n, T-1) int64 in register units,
    flags (n, T-1) uint8 of LF_*).  No Python loop over meters or days.
    """
    r = np.asarray(readings, dtype=np.int64)
    n, T = r.shape
    if T < 2:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.uint8)
    # Rows with every reading (nearly all): the difference of neighbours, no gap search.  Only the rows
    # with a missing reading take the general path below.  Same numbers either way (tests).
    mod = np.asarray(modulus, dtype=np.int64)
    full = r[:, 0] >= 0                     # column by column: numpy's all(axis=1) over short rows is 10x slower
    for t in range(1, T):
        full &= r[:, t] >= 0
    if full.all():
        return _direct_energy(r, mod)
    if full.any():
        energy = np.empty((n, T - 1), np.int64)
        flags = np.empty((n, T - 1), np.uint8)
        gap = ~full
        energy[full], flags[full] = _direct_energy(r[full], mod[full] if mod.ndim else mod)
        energy[gap], flags[gap] = _gap_energy(r[gap], mod[gap] if mod.ndim else mod, max_gap,
                                              None if blocked is None else np.asarray(blocked, bool)[gap])
        return energy, flags
    return _gap_energy(r, mod, max_gap, blocked)


def _gap_energy(r: np.ndarray, modulus: np.ndarray, max_gap: int, blocked: npt.ArrayLike | None = None,
                ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`interval_energy` of any rows: per interval the nearest readings either side, gaps spread."""
    n, T = r.shape
    present = r >= 0
    idx = np.arange(T, dtype=np.int64)
    prev = np.maximum.accumulate(np.where(present, idx, -1), axis=1)[:, :-1]       # last reading <= t
    nxt = np.minimum.accumulate(np.where(present, idx, T)[:, ::-1], axis=1)[:, ::-1][:, 1:]   # first >= t+1
    ok = (prev >= 0) & (nxt < T) & (nxt - prev <= max_gap)
    p = np.where(ok, prev, 0)
    q = np.where(ok, nxt, 0)
    span = np.maximum(q - p, 1)
    rp = np.take_along_axis(r, p, axis=1)
    rq = np.take_along_axis(r, q, axis=1)
    mod = np.broadcast_to(np.asarray(modulus, dtype=np.int64).reshape(-1, 1) if np.ndim(modulus) else
                          np.int64(modulus), (n, T - 1))
    delta = rq - rp
    wrapped = (delta < 0) & (-delta > mod // 2)
    delta = np.where(wrapped, delta + mod, delta)
    if blocked is None or not np.any(blocked):
        share = np.floor_divide(delta, span)
        last = (idx[1:][None, :] == q)                  # the interval ending at q takes the remainder
        energy = np.where(last, delta - share * (span - 1), share)
    else:
        # only the open intervals of a gap share it: U[t] = open intervals before t, so the gap [p, q)
        # has U[q] - U[p] of them and interval t is the (U[t] - U[p])-th; the last open one takes the rest
        free = ~np.asarray(blocked, bool)
        U = np.zeros((n, T), np.int64)
        np.cumsum(free, axis=1, out=U[:, 1:])
        up, uq = np.take_along_axis(U, p, axis=1), np.take_along_axis(U, q, axis=1)
        cnt = uq - up
        use = cnt > 0                                   # a gap of blocked intervals only: spread as usual
        span_b = np.where(use, np.maximum(cnt, 1), span)
        k = np.where(use, U[:, :-1] - up, idx[:-1][None, :] - p)
        share = np.floor_divide(delta, span_b)
        energy = np.where(k == span_b - 1, delta - share * (span_b - 1), share)
        energy = np.where(use & ~free, 0, energy)
    energy = np.where(ok, energy, 0)
    flags = (np.where(ok & (span > 1), LF_SPREAD, 0) | np.where(~ok, LF_MISSING, 0)
             | np.where(ok & wrapped, LF_ROLLOVER, 0) | np.where(ok & (delta < 0), LF_NEGATIVE, 0)).astype(np.uint8)
    return energy, flags


def _direct_energy(r: np.ndarray, mod: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`interval_energy` of rows without a missing reading: each interval is one difference."""
    delta = r[:, 1:] - r[:, :-1]
    mod = mod.reshape(-1, 1) if mod.ndim else mod
    neg = delta < 0
    wrapped = neg & (-delta > mod // 2)
    if wrapped.any():
        delta += np.where(wrapped, mod, 0)
        neg = delta < 0
    flags = (wrapped.view(np.uint8) * np.uint8(LF_ROLLOVER)) | (neg.view(np.uint8) * np.uint8(LF_NEGATIVE))
    return delta, flags


def group_sum(index: npt.ArrayLike, n_groups: int, values: npt.ArrayLike) -> np.ndarray:
    """Σ ``values`` (m, D) into (n_groups, D) by row ``index`` (m,), exactly, with one bincount."""
    values = np.asarray(values)
    m, D = values.shape
    if m == 0:
        return np.zeros((n_groups, D), np.int64)
    index = np.asarray(index, np.int64)
    flat = index if D == 1 else (index[:, None] * D + np.arange(D)).ravel()
    w = values.ravel().astype(np.float64)
    # exact when Σ|w| < 2**53; max|w| · m bounds it without a pass of abs (the sum only when that is too big)
    if max(-w.min(), w.max()) * m >= _EXACT and np.abs(w).sum() >= _EXACT:
        raise ConfigError("line loss: energies too large to add exactly (sum of |energy| >= 2**53 × 0.01 kWh)")
    return np.rint(np.bincount(flat, weights=w, minlength=n_groups * D)).astype(np.int64).reshape(n_groups, D)


def group_or(index: npt.ArrayLike, n_groups: int, flags: npt.ArrayLike) -> np.ndarray:
    """Bitwise OR of ``flags`` (m, D) uint8 into (n_groups, D), one bincount per bit over the flagged
    cells only (flags are rare); rows with a negative ``index`` are left out."""
    flags = np.asarray(flags, np.uint8)
    m, D = flags.shape
    out = np.zeros((n_groups, D), np.uint8)
    f = flags.ravel()
    nz = np.flatnonzero(f)
    flat = np.asarray(index, np.int64)[nz // D] * D + nz % D
    f = f[nz][flat >= 0]
    flat = flat[flat >= 0]
    for bit in FLAG_NAMES:
        hit = np.bincount(flat[(f & bit) != 0], minlength=n_groups * D).reshape(n_groups, D)
        out |= np.where(hit > 0, bit, 0).astype(np.uint8)
    return out


@dataclass
class Balance:
    """Per unit (rows) and period (columns): energies in 0.01 kWh, rate_bp, category, flags."""

    supply: np.ndarray
    sales: np.ndarray
    flags: np.ndarray
    rate_bp: np.ndarray          # int64; meaningful where has_rate
    has_rate: np.ndarray
    category: np.ndarray         # int8 codes of CATEGORY_NAMES
    # int8 codes of BASIS_NAMES (B_DAILY unless a period says otherwise); the default, None, is replaced
    # by __post_init__ with an array of the category's shape (a default computed from another field)
    basis: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.basis is None:
            self.basis = np.zeros(self.category.shape, np.int8)

    @property
    def loss(self) -> np.ndarray:
        loss: np.ndarray = self.supply - self.sales
        return loss


def outage_days(unit_idx: npt.ArrayLike, n_units: int, energy: npt.ArrayLike, flags: npt.ArrayLike,
                active: npt.ArrayLike) -> np.ndarray:
    """(n_units, D) bool: the unit-days of an outage (停运) as its meters show it — every meter read on
    both sides of the day (no gap) registered exactly nothing, and they are at least half of the unit's
    meters in service that day.  A stopped check meter is not an outage (the customers still register),
    nor is a day whose readings are mostly missing.  ``unit_idx`` (m,) (-1: no unit), ``energy``/``flags``
    (m, D) of :func:`interval_energy`, ``active`` (m, D) bool: the meter is in service that day."""
    unit_idx = np.asarray(unit_idx, np.int64)
    sel = unit_idx >= 0
    ui, e, f, act = unit_idx[sel], np.asarray(energy)[sel], np.asarray(flags)[sel], np.asarray(active, bool)[sel]
    direct = act & ((f & (LF_SPREAD | LF_MISSING)) == 0)
    n_direct = group_sum(ui, n_units, direct.astype(np.int64))
    n_active = group_sum(ui, n_units, act.astype(np.int64))
    moving = group_sum(ui, n_units, (direct & (e != 0)).astype(np.int64))
    outage: np.ndarray = (n_direct >= 1) & (2 * n_direct >= n_active) & (moving == 0)
    return outage


def classify(supply: npt.ArrayLike, sales: npt.ArrayLike, flags: npt.ArrayLike, high_bp: npt.ArrayLike,
             negative_bp: npt.ArrayLike) -> Balance:
    """Rate and category of (unit, period) arrays; ``high_bp``/``negative_bp`` per unit (rows)."""
    supply = np.asarray(supply, np.int64)
    sales = np.asarray(sales, np.int64)
    flags = np.asarray(flags, np.uint8)
    computable = (flags & LF_MISSING) == 0
    pos = supply > 0
    has_rate = computable & pos
    rate = np.where(has_rate, round_div((supply - sales) * RATE_SCALE, np.where(pos, supply, 1)), 0)
    hi = np.asarray(high_bp, np.int64).reshape(-1, 1)
    neg = np.asarray(negative_bp, np.int64).reshape(-1, 1)
    cat = np.full(supply.shape, OK, np.int8)
    cat[has_rate & (rate > hi)] = HIGH
    cat[(has_rate & (rate < neg)) | (computable & ~pos & (sales > 0))] = NEGATIVE
    cat[computable & ~pos & (sales <= 0)] = OUTAGE
    cat[~computable] = NOT_COMPUTABLE
    return Balance(supply, sales, flags, rate.astype(np.int64), has_rate, cat)


def area_balance(kind: npt.ArrayLike, area_idx: npt.ArrayLike, n_areas: int, fwd: npt.ArrayLike, rev: np.ndarray,
                 flags: npt.ArrayLike, high_bp: npt.ArrayLike, negative_bp: npt.ArrayLike) -> Balance:
    """Line loss of every area over every period column, vectorised over points.

    ``kind`` (P,) K_* codes, ``area_idx`` (P,) row of the point's area (ignored for points of no area:
    pass -1), ``fwd``/``rev`` (P, D) primary energy in 0.01 kWh, ``flags`` (P, D) LF_*.
    """
    kind = np.asarray(kind)
    area_idx = np.asarray(area_idx, np.int64)
    fwd = np.asarray(fwd)
    inside = area_idx >= 0
    check = inside & (kind == K_CHECK)
    # forward energy is supply (check meter, PV) or sales (customer): one bincount over slot 2·area + role,
    # no copy of the selected rows; every other point adds 0 to slot 0
    # (built in place: a fresh 10M-row temporary costs more in page faults than its arithmetic)
    supplies = (kind == K_CHECK) | (kind == K_PV)
    use = inside & (supplies | (kind == K_CUSTOMER))
    slot = area_idx * 2
    slot += ~supplies
    if not use.all():
        slot[~use] = 0
        fwd = np.where(use[:, None], fwd, 0)
    both = group_sum(slot, 2 * n_areas, fwd)
    supply, sales = both[0::2], both[1::2]
    sales = sales + group_sum(area_idx[check], n_areas, rev[check])
    fl = group_or(np.where(inside & (kind != K_DEDICATED), area_idx, -1), n_areas, flags)
    # an area without its check meter has no supply reading at all: 不可算, not 停运
    has_check = np.bincount(area_idx[check], minlength=n_areas) > 0
    fl[~has_check] |= LF_MISSING
    return classify(supply, sales, fl, high_bp, negative_bp)


def feeder_balance(kind: npt.ArrayLike, feeder_idx: npt.ArrayLike, n_feeders: int, fwd: np.ndarray, rev: np.ndarray,
                   flags: np.ndarray, tx_loss: np.ndarray, high_bp: npt.ArrayLike, negative_bp: npt.ArrayLike,
                   ) -> Balance:
    """Line loss of every 10 kV feeder: outgoing meter vs check meters (net) + dedicated customers + 变损.

    ``feeder_idx`` (P,) row of the point's feeder (-1: none); for a check meter, its area's feeder.
    ``tx_loss`` (P, D) transformer loss of 高供低计 dedicated customers (0 elsewhere).
    """
    kind = np.asarray(kind)
    fi = np.asarray(feeder_idx, np.int64)
    on = fi >= 0
    out = on & (kind == K_FEEDER_OUT)
    chk = on & (kind == K_CHECK)
    ded = on & (kind == K_DEDICATED)
    supply = group_sum(fi[out], n_feeders, fwd[out])
    sales = (group_sum(fi[chk], n_feeders, fwd[chk] - rev[chk])
             + group_sum(fi[ded], n_feeders, fwd[ded] + tx_loss[ded]))
    use = out | chk | ded
    fl = group_or(fi[use], n_feeders, flags[use])
    fl[np.bincount(fi[out], minlength=n_feeders) == 0] |= LF_MISSING
    return classify(supply, sales, fl, high_bp, negative_bp)

"""力调 — power-factor adjustment of the bill ((83)水电财字第215号 《功率因数调整电费办法》).

The monthly power factor is cosφ = P / √(P² + Q²) from the period's active energy P and reactive
energy Q, rounded to 0.01 (the 办法 reads the table at two decimals).  It is computed exactly in
integers: cosφ rounds to k/100 (half up) exactly when

    (2k − 1)² · (P² + Q²)  ≤  40000 · P²        (i.e. P/S ≥ (k − ½)/100)

and k is the largest such integer — no square root, no float rounding trap at x.xx5.

The adjustment rate (增减率) for the three standards, in basis points (0.01 %), from the 办法's table:

* below the standard s: +0.5 % per 0.01 down to s − 0.20 (+10 %), then +1 % per 0.01 down to
  s − 0.25 (+15 %), then +2 % per 0.01 below that;
* above s = 0.90: −0.15 % per 0.01, capped at −0.75 % from 0.95;
* above s = 0.85: −0.1 % per 0.01 to 0.90 (−0.5 %), then −0.65 / −0.80 / −0.95 % at 0.91 / 0.92 / 0.93,
  −1.1 % from 0.94;
* above s = 0.80: −0.1 % per 0.01 to 0.90 (−1.0 %), −1.15 % at 0.91, −1.3 % from 0.92.

The rate applies to basic charge + energy charge, never to government funds (see ``rounding``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

STANDARDS = (90, 85, 80)        # pf_x100 of the three standards; their index is the kernel's pf_std code
NO_ADJUSTMENT = -1              # pf_std code of a tariff without 力调


def _rate_bp(std: int, pf: int) -> int:
    """Adjustment in basis points for ``pf`` (0..100, i.e. 0.00..1.00) under standard ``std``."""
    if pf < std:
        down = std - pf
        if down <= 20:
            return 50 * down
        if down <= 25:
            return 1000 + 100 * (down - 20)
        return 1500 + 200 * (down - 25)
    up = pf - std
    if std == 90:
        return -15 * min(up, 5)
    if std == 85:
        if pf <= 90:
            return -10 * up
        return {91: -65, 92: -80, 93: -95}.get(pf, -110)
    if std == 80:
        if pf <= 90:
            return -10 * up
        return -115 if pf == 91 else -130
    raise ValueError(std)


# PF_TABLE[code, pf_x100] -> basis points; the kernels read it as a flat (3, 101) int64 array
PF_TABLE = np.array([[_rate_bp(s, pf) for pf in range(101)] for s in STANDARDS], dtype=np.int64)


def pf_x100_exact(p: int, q: int) -> int:
    """cosφ of active ``p`` and reactive ``q`` energy (any common scale) to 0.01, exactly; −1 if p ≤ 0."""
    p, q = int(p), abs(int(q))
    if p <= 0:
        return -1
    s2, p2 = p * p + q * q, 40000 * p * p
    k = 100
    while k > 0 and (2 * k - 1) ** 2 * s2 > p2:
        k -= 1
    return k


def pf_x100(p: npt.ArrayLike, q: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Vectorised :func:`pf_x100_exact`: a float estimate, re-checked exactly where it is ambiguous.

    The float quotient is within ~1e-13 of the true 100·P/S, so it decides every value whose fractional
    part is not within 1e-9 of ½; those few (exact x.xx5 ties or near ties) are settled with
    :func:`pf_x100_exact` on Python integers.
    """
    p = np.asarray(p, dtype=np.int64)
    q = np.abs(np.asarray(q, dtype=np.int64))
    pf = p.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = 100.0 * pf / np.hypot(pf, q.astype(np.float64))
    k = np.floor(x + 0.5)
    out = np.where(p > 0, k, -1).astype(np.int64)
    frac = x - np.floor(x)
    ambiguous = np.flatnonzero((p > 0) & (np.abs(frac - 0.5) < 1e-9))
    for i in ambiguous:                       # rare: ties and near-ties only, not a per-account loop
        out[i] = pf_x100_exact(p[i], q[i])
    return out


def reactive_energy_for_power_factor(q_imported: npt.ArrayLike,
                                     q_exported: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Reactive energy that enters cosφ, 0.01 kvarh: |imported| + |exported|.

    Ruling "Reactive energy for cosφ" (DOMAIN.md, (83)水电财字第215号: 倒送的无功电量与实用的无功电量两者的
    绝对值之和): where the meter registers exported reactive energy (re_rev), its absolute value adds to
    the imported (re_fwd); a meter without an export register passes 0.  Pass the month's quantities (each
    register's energy added over the month's segments, signed), not one segment's: the absolute values are
    taken of the month's two energies, so a CT change or meter replacement does not change the result.
    """
    return np.abs(np.asarray(q_imported, np.int64)) + np.abs(np.asarray(q_exported, np.int64))


def monthly_average_power_factor(p_month: npt.ArrayLike, q_month: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """The metering point's monthly average power factor (月平均功率因数), 0.01, −1 where P ≤ 0.

    Ruling "力调 uses ONE monthly average power factor per metering point" (DOMAIN.md, 215号): from the
    month's total active energy ``p_month`` and reactive energy ``q_month`` (losses included, exported
    reactive added by :func:`reactive_energy_for_power_factor`), also when the month is split by a tariff
    or price change — every part of a split month is adjusted at this one power factor's rate.
    """
    return pf_x100(p_month, q_month)

"""Prepayment (预付费) over columns: the daily estimated charge and the balance thresholds.

No I/O: :mod:`billing_core.jobs.prepay` reads a day's frozen readings, balances and states into columns.

**Daily charge (日结).**  A prepayment customer's day D costs what the bill engine
(:func:`billing_core.engine.price`, the kernel of the monthly bill) says for the day's energy: the
difference of the daily frozen readings (日冻结) at 00:00 of D+1 and of D, per TOU register, times the
multiplier, priced as a one-day row of a period of the month's days (monthly tier limits and a basic
charge pro-rated by days, as the kernel does for a partial period).  Annual tiers take the year's
cumulative before the day (``cum_prev``) when the caller knows it.  The estimate is trued up by the
monthly bill: the month's deductions are reversed against the issued bill's receivable.

**Thresholds (control parameters, :class:`PrepayThresholds`).**  With ``credit`` the customer's money in hand
(−balance of :mod:`billing_core.ledger`):

* ``credit < warn_fen``: a low-balance reminder (催费), once until the credit is back at or above it;
* ``credit < 0`` for more than ``grace_days`` days: a trip (跳闸), unless the meter is protected (保电);
* tripped and ``credit >= reconnect_fen``: a close (合闸) — also right after a payment, not only daily.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from types import ModuleType

import numpy as np
import numpy.typing as npt

from gridhead.billing_core import energy, engine
from gridhead.billing_core.tariff import TariffSet

REGISTERS = ("ae_fwd", "ae_fwd_t1", "ae_fwd_t2", "ae_fwd_t3", "ae_fwd_t4")
NO_DAY = -1                  # below_since: not below zero


@dataclasses.dataclass(frozen=True)
class PrepayThresholds:
    """Control parameters of prepayment (预付费控制参数), money in fen, the grace period in days."""

    warn_fen: int = 2_000             # 报警金额: remind below 20 yuan
    grace_days: int = 1               # days below zero before the trip
    reconnect_fen: int = 0            # 合闸金额: close when the credit is back at or above this
    send_attempts: int = 5            # a command that cannot reach the head-end this many times: alarm
    confirm_trips_above: int = 100    # `gridhead prepay run` asks before sending more trips than this


def daily_energy(prev: Mapping[str, npt.ArrayLike], now: Mapping[str, npt.ArrayLike], ct: npt.ArrayLike,
                 pt: npt.ArrayLike, digits: npt.ArrayLike) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One day's TOU energies from two daily frozen readings (0.01 kWh, −1 = no reading).

    Returns ``({e_sharp, e_peak, e_flat, e_valley, e_total}, ok)``; ``ok`` is False where a reading is
    missing or the energy is negative (no charge is estimated for such a day; the bill trues it up).
    """
    e, f = energy.segment_energy({r: prev[r] for r in REGISTERS}, {r: now[r] for r in REGISTERS}, ct, pt,
                                 np.asarray(digits, np.int64) + 2)
    ok = (f & (energy.F_MISSING | energy.F_NEGATIVE)) == 0
    out = {"e_sharp": e["ae_fwd_t1"], "e_peak": e["ae_fwd_t2"], "e_flat": e["flat_billed"],
           "e_valley": e["ae_fwd_t4"], "e_total": e["ae_fwd"]}
    return {k: np.where(ok, np.maximum(v, 0), 0) for k, v in out.items()}, ok


def daily_charge(tariffs: TariffSet, tariff_row: np.ndarray, e: Mapping[str, npt.ArrayLike], month_days: int,
                 cum_prev: npt.ArrayLike = 0, kernel: ModuleType | None = None) -> np.ndarray:
    """The day's charge in fen per customer, by the bill kernel (one-day rows of a ``month_days`` period)."""
    n = len(tariff_row)
    if n == 0:
        return np.zeros(0, np.int64)
    rows = engine.ChargeRows.of(n, tariff_row=tariff_row, e_sharp=e["e_sharp"], e_peak=e["e_peak"],
                                e_flat=e["e_flat"], e_valley=e["e_valley"], cum_prev=cum_prev,
                                days=1, period_days=month_days)
    return engine.price(rows, tariffs.table(), kernel).columns["total_fen"]


def decide(credit: npt.ArrayLike, below_since: npt.ArrayLike, warned: npt.ArrayLike, tripped: npt.ArrayLike,
           protected: npt.ArrayLike, day: int, t: PrepayThresholds) -> dict[str, np.ndarray]:
    """The day's control decisions per customer (all arrays of one length; ``day`` in days since 1970).

    ``below_since``: the first day of the current stretch below zero (NO_DAY = not below);
    ``warned``: a reminder was sent since the credit last was at or above ``warn_fen``.
    Returns the new ``below_since`` and ``warned`` and boolean ``remind``, ``trip``, ``close``,
    ``trip_protected`` (a trip withheld because the meter is protected).
    """
    credit = np.asarray(credit, np.int64)
    below = credit < 0
    since = np.where(below, np.where(np.asarray(below_since) == NO_DAY, day, below_since), NO_DAY)
    low = credit < t.warn_fen
    remind = low & ~np.asarray(warned, bool)
    tripped = np.asarray(tripped, bool)
    due = below & (day - since >= t.grace_days) & ~tripped
    protected = np.asarray(protected, bool)
    close = tripped & (credit >= t.reconnect_fen)
    return {"below_since": since.astype(np.int64), "warned": low, "remind": remind, "trip": due & ~protected,
            "trip_protected": due & protected, "close": close}

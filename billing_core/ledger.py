"""Accounts over columns (电费收缴及账务): running balances, arrears by FIFO, late fees, aging buckets.

No I/O: :mod:`billing_core.jobs.ledger` reads the ledger into 1-D columns and writes what these return.

**The ledger's arithmetic.**  Every entry has a ``debit_fen`` (a receivable: a bill, a prepayment
deduction, an adjustment; negative for a true-up or a credit adjustment) and a ``credit_fen`` (received:
a payment; negative for a refund).  A customer's balance is ``Σ debit − Σ credit`` — positive means the
customer owes (欠费), negative means money in hand (a prepayment customer's 余额 is its negation).  Each
entry stores the customer's balance after it (:func:`running_balance`), so the identity can be proved
entry by entry (``gridhead ledger check``).

**Arrears (欠费) and late fees (违约金).**  Receivables are settled oldest first (FIFO, by due date and
then entry): :func:`outstanding_fifo`.  The outstanding part of a receivable past its due date is in
arrears; its late fee follows 《供电营业规则》第九十八条 (:data:`LATE_FEE_RULES`): residential customers
1‰ per day of the arrears from the day after the due date; other customers 2‰ per day for the days
within the year of the due date and 3‰ per day for the days in later years (跨年度).  The fee of one
receivable is rounded once, half away from zero to the fen, on the exact product (the rule of
:mod:`billing_core.rounding`, row 违约金 of its table).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import numpy.typing as npt

from gridhead.billing_core.rounding import LATE_FEE_DIV, round_div

EPOCH = dt.date(1970, 1, 1)
# 交费期限: a bill of period P is due DUE_DAYS after the period's end (the settlement day); a prepayment
# deduction or an adjustment is due on its value date.
DUE_DAYS = 15

# 《供电营业规则》(1996) 第九十八条: 违约金 per day, in ‰ of the arrears (LATE_FEE_DIV = 1000 per mille)
LATE_FEE_RULES = {
    "residential": (1, 1),            # 居民用户: 每日千分之一 (no distinction across years)
    "other": (2, 3),                  # 其他用户: 当年欠费部分 每日千分之二, 跨年度欠费部分 每日千分之三
}

# aging buckets (账龄) by days past the due date: (label, first day, last day or None)
AGING = (("1-30", 1, 30), ("31-90", 31, 90), ("91-180", 91, 180), ("181-365", 181, 365), (">365", 366, None))


def days_of(d: dt.date) -> int:
    """Days since 1970-01-01 of a date (the integer day columns use)."""
    return (d - EPOCH).days


def running_balance(customer: npt.ArrayLike, delta: npt.ArrayLike, prev: npt.ArrayLike) -> np.ndarray:
    """Balance after each entry of a batch: ``prev[i] + Σ delta`` of the customer's entries up to ``i``.

    ``customer`` and ``delta`` are in entry order; ``prev[i]`` is entry ``i``'s customer's balance before
    the batch.  No per-customer loop: a stable sort by customer and one cumulative sum.
    """
    customer = np.asarray(customer, np.int64)
    delta = np.asarray(delta, np.int64)
    n = len(customer)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(customer, kind="stable")
    c, d = customer[order], delta[order]
    cs = np.cumsum(d)
    start = np.ones(n, bool)
    start[1:] = c[1:] != c[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))  # index of the group's first entry
    within = cs - (cs[first] - d[first])
    out = np.empty(n, np.int64)
    out[order] = within
    return out + np.asarray(prev, np.int64)


def outstanding_fifo(customer: npt.ArrayLike, amount: npt.ArrayLike, pool: npt.ArrayLike) -> np.ndarray:
    """The unpaid part of each receivable when each customer's ``pool`` pays them in the given order.

    ``customer``/``amount``: receivables (amount > 0) sorted by customer, then by the order they are
    settled in (oldest first); ``pool[i]``: the customer's money available to receivables (payments net
    of refunds, plus credit adjustments), repeated on each of its receivables.
    """
    customer = np.asarray(customer, np.int64)
    amount = np.asarray(amount, np.int64)
    n = len(customer)
    if n == 0:
        return np.zeros(0, np.int64)
    cs = np.cumsum(amount)
    start = np.ones(n, bool)
    start[1:] = customer[1:] != customer[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    cum = cs - (cs[first] - amount[first])                   # cumulative within the customer, this one included
    unpaid: npt.NDArray[np.int64] = np.clip(cum - np.asarray(pool, np.int64), 0, amount)
    return unpaid


@dataclasses.dataclass(frozen=True)
class Policy:
    """The accounts' configurable rules, in one place (DOMAIN.md "Accounts"); money in fen.

    ``late_fee_min_fen``: 违约金 总额不足1元者按1元收取 — per overdue bill, on its whole accrued fee;
    ``late_fee_first``: a payment settles a bill's late fee before the bill itself (else the bill first);
    ``max_payment_fen``: the largest single payment taken (counter or bank line) — anything above is a
    keying error, refused.
    """

    late_fee_min_fen: int = 100
    late_fee_first: bool = True
    max_payment_fen: int = 1_000_000_000          # 10,000,000.00 yuan


def late_fee_exact(arrears_fen: npt.ArrayLike, due_days: npt.ArrayLike, until_days: npt.ArrayLike,
                   residential: npt.ArrayLike) -> np.ndarray:
    """The exact product of :func:`late_fee` before its rounding (fen × ‰): the parts of one bill's fee
    (paid late in instalments, the rest still open) are added exactly, then rounded once."""
    arrears = np.asarray(arrears_fen, np.int64)
    due = np.asarray(due_days, np.int64)
    late: npt.NDArray[np.int64] = np.maximum(np.asarray(until_days, np.int64) - due, 0)
    year_end = _year_end_days(due)
    in_year: npt.NDArray[np.int64] = np.minimum(late, np.maximum(year_end - due, 0))
    later = late - in_year
    res = np.asarray(residential, bool)
    r1: npt.NDArray[np.int64] = np.where(res, LATE_FEE_RULES["residential"][0], LATE_FEE_RULES["other"][0])
    r2: npt.NDArray[np.int64] = np.where(res, LATE_FEE_RULES["residential"][1], LATE_FEE_RULES["other"][1])
    return arrears * (r1 * in_year + r2 * later)


def late_fee_charged(exact: npt.ArrayLike, policy: Policy) -> np.ndarray:
    """The fee of one bill from the sum of its exact parts: rounded once (half away from zero), and at
    least ``policy.late_fee_min_fen`` when there is any fee at all (供电营业规则: 不足1元者按1元收取)."""
    fee = round_div(np.asarray(exact, np.int64), LATE_FEE_DIV)
    charged: npt.NDArray[np.int64] = np.where(np.asarray(exact) > 0, np.maximum(fee, policy.late_fee_min_fen), 0)
    return charged


def fifo_allocate(r_cust: npt.ArrayLike, r_amt: npt.ArrayLike, c_cust: npt.ArrayLike, c_amt: npt.ArrayLike,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which credit settles which receivable, oldest first on both sides: ``(r_index, c_index, amount)``.

    ``r_cust``/``r_amt``: open receivables sorted by customer, then in the order they are settled;
    ``c_cust``/``c_amt``: unallocated credits sorted by customer, then in the order they were received.
    Each customer's receivables and credits are laid end to end on one line from the customer's own base
    (bases far enough apart that customers never meet); every stretch between two consecutive ends lies
    in one receivable and one credit, and is that pair's allocation.  No per-customer loop.
    """
    r_cust, c_cust = np.asarray(r_cust, np.int64), np.asarray(c_cust, np.int64)
    r_amt, c_amt = np.asarray(r_amt, np.int64), np.asarray(c_amt, np.int64)
    empty = (np.zeros(0, np.int64),) * 3
    if not len(r_cust) or not len(c_cust):
        return empty
    custs = np.sort(np.concatenate([r_cust, c_cust]))       # distinct by a sort (np.union1d hashes: slower)
    custs = custs[np.concatenate(([True], custs[1:] != custs[:-1]))]
    tot_r = np.bincount(np.searchsorted(custs, r_cust), r_amt, len(custs)).astype(np.int64)
    tot_c = np.bincount(np.searchsorted(custs, c_cust), c_amt, len(custs)).astype(np.int64)
    span = np.maximum(tot_r, tot_c) + 1
    base = np.cumsum(span) - span

    def ends(cust: np.ndarray, amt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cs = np.cumsum(amt)
        start = np.ones(len(cust), bool)
        start[1:] = cust[1:] != cust[:-1]
        first = np.maximum.accumulate(np.where(start, np.arange(len(cust)), 0))
        end = base[np.searchsorted(custs, cust)] + cs - (cs[first] - amt[first])
        return end - amt, end

    r_lo, r_hi = ends(r_cust, r_amt)
    c_lo, c_hi = ends(c_cust, c_amt)
    pts = np.unique(np.concatenate([r_lo, r_hi, c_lo, c_hi]))
    lo, hi = pts[:-1], pts[1:]
    ri = np.searchsorted(r_hi, lo, "right")
    ci = np.searchsorted(c_hi, lo, "right")
    ok = (ri < len(r_hi)) & (ci < len(c_hi))
    ri, ci, lo, hi = ri[ok], ci[ok], lo[ok], hi[ok]
    ok = (r_lo[ri] <= lo) & (c_lo[ci] <= lo) & (r_cust[ri] == c_cust[ci])
    return ri[ok], ci[ok], (hi - lo)[ok]


def late_fee(arrears_fen: npt.ArrayLike, due_days: npt.ArrayLike, as_of_days: npt.ArrayLike,
             residential: npt.ArrayLike) -> np.ndarray:
    """违约金 of each receivable in arrears on ``as_of`` (第九十八条; see the module docstring).

    Days count from the day after the due date to ``as_of`` inclusive (arrears due on the 15th are one
    day late on the 16th).  For a non-residential customer, the days up to 31 December of the due
    date's year are at 2‰ and later days at 3‰.
    """
    arrears = np.asarray(arrears_fen, np.int64)
    due = np.asarray(due_days, np.int64)
    late: npt.NDArray[np.int64] = np.maximum(np.asarray(as_of_days, np.int64) - due, 0)
    year_end = _year_end_days(due)                           # days number of 31 Dec of the due year
    in_year: npt.NDArray[np.int64] = np.minimum(late, np.maximum(year_end - due, 0))
    later = late - in_year
    res = np.asarray(residential, bool)
    r1: npt.NDArray[np.int64] = np.where(res, LATE_FEE_RULES["residential"][0], LATE_FEE_RULES["other"][0])
    r2: npt.NDArray[np.int64] = np.where(res, LATE_FEE_RULES["residential"][1], LATE_FEE_RULES["other"][1])
    return round_div(arrears * (r1 * in_year + r2 * later), LATE_FEE_DIV)


def _year_end_days(days: np.ndarray) -> np.ndarray:
    years = (days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970)
    return (years + 1 - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64) - 1


def aging_bucket(days_late: npt.ArrayLike) -> np.ndarray:
    """Index into :data:`AGING` of each arrears' days past due (−1: not yet due)."""
    d = np.asarray(days_late, np.int64)
    out = np.full(len(d), -1, np.int64)
    for k, (_, lo, hi) in enumerate(AGING):
        out[(d >= lo) & ((d <= hi) if hi is not None else True)] = k
    return out


def yuan_to_fen(text: str) -> int | None:
    """An amount in yuan as written in a bank file or on the command line ("12", "12.3", "12.30") to fen;
    None when it is not a non-negative amount with at most 2 decimals (never through a float)."""
    s = text.strip()
    whole, _, frac = s.partition(".")
    if not whole.isdigit() or len(frac) > 2 or (frac and not frac.isdigit()) or len(whole) > 12:
        return None
    return int(whole) * 100 + int(frac.ljust(2, "0") or 0)

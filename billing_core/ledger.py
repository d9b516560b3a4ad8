"""Accounts over columns (电费收缴及账务): running balances, arrears by FIFO, late fees, aging buckets.

No I/O: :mod:`storage.ledger` reads the ledger into 1-D columns and writes what these return.

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

import datetime as dt

import numpy as np

from billing_core.rounding import LATE_FEE_DIV, round_div

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


def days_of(d) -> int:
    """Days since 1970-01-01 of a date (the integer day columns use)."""
    return (d - EPOCH).days


def running_balance(customer, delta, prev) -> np.ndarray:
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


def outstanding_fifo(customer, amount, pool) -> np.ndarray:
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
    return np.clip(cum - np.asarray(pool, np.int64), 0, amount)


def late_fee(arrears_fen, due_days, as_of_days, residential) -> np.ndarray:
    """违约金 of each receivable in arrears on ``as_of`` (第九十八条; see the module docstring).

    Days count from the day after the due date to ``as_of`` inclusive (arrears due on the 15th are one
    day late on the 16th).  For a non-residential customer, the days up to 31 December of the due
    date's year are at 2‰ and later days at 3‰.
    """
    arrears = np.asarray(arrears_fen, np.int64)
    due = np.asarray(due_days, np.int64)
    late = np.maximum(np.asarray(as_of_days, np.int64) - due, 0)
    year_end = _year_end_days(due)                           # days number of 31 Dec of the due year
    in_year = np.minimum(late, np.maximum(year_end - due, 0))
    later = late - in_year
    res = np.asarray(residential, bool)
    r1 = np.where(res, LATE_FEE_RULES["residential"][0], LATE_FEE_RULES["other"][0])
    r2 = np.where(res, LATE_FEE_RULES["residential"][1], LATE_FEE_RULES["other"][1])
    return round_div(arrears * (r1 * in_year + r2 * later), LATE_FEE_DIV)


def _year_end_days(days: np.ndarray) -> np.ndarray:
    years = (days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970)
    return (years + 1 - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64) - 1


def aging_bucket(days_late) -> np.ndarray:
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

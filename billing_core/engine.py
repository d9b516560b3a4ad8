"""The billing engine (电费核算): every account's line items at once, from 1-D columns.

The bill run (later, over the lake) does::

    energies, flags = energy.segment_energy(prev, now, ct, pt)        # per account-period-segment
    bills = energy.sum_by_bill(segment_bill, n, energies)             # 换表: segments add up per bill
    loss_p, loss_q = energy.transformer_loss(...)                     # 高供低计 accounts only
    periods, demand = energy.spread_loss(loss_p, periods, demand)
    rows = ChargeRows(tariff_row=tariffs.rows(cat, volt, day), e_sharp=..., ...)
    items = price(rows, tariffs.table())                              # the kernel: no per-account loop

A charge row is an account-period, or one part of it when the tariff changes inside the period
(:func:`split_at_change`).  :func:`price` returns a :class:`LineItems` of columns (one entry per row);
:meth:`LineItems.by_bill` adds the parts of split bills; :func:`bill_lines` renders one bill as the
list of line items a customer reads, which add up to its total.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import ModuleType

import numpy as np
import numpy.typing as npt

from gridhead.billing_core import _billing_py as K
from gridhead.billing_core.powerfactor import PF_TABLE, STANDARDS
from gridhead.billing_core.powerfactor import monthly_average_power_factor
from gridhead.billing_core.rounding import (BP_DIV, CAPACITY_DIV, DEMAND_DIV, ENERGY_DIV, round_div,
                                   round_line_item_once)
from gridhead.billing_core.tariff import PERIOD_ZH, PERIODS, TariffTable
from gridhead.protocols import accel
from gridhead.protocols.errors import BillingError

# the kernel, chosen once at import: the compiled _billing unless GRIDHEAD_PUREPYTHON=1 or not built
if accel.PURE:
    from . import _billing_py as _kernel
else:
    try:
        # the stub _billing.pyi has the twin's signatures, but mypy cannot bind one name to either of
        # two modules: the name keeps the twin's type
        from . import _billing as _kernel  # type: ignore[no-redef]
    except ImportError:
        from . import _billing_py as _kernel

INPUTS = ("tariff_row", "e_sharp", "e_peak", "e_flat", "e_valley", "q", "cum_prev", "demand",
          "capacity_kva", "contract_kw", "days", "period_days", "pf_x100")
# the kernel's arguments (pf_x100: the month's power factor, or PF_FROM_ROW)
KERNEL_INPUTS = ("tariff_row", "e_sharp", "e_peak", "e_flat", "e_valley", "q", "pf_x100", "cum_prev", "demand",
                 "capacity_kva", "contract_kw", "days", "period_days")
PF_FROM_ROW = -2     # pf_x100 not given: the row is a whole month, its cosφ comes from its own P and Q
_INT32 = {"tariff_row", "days", "period_days"}
# bounds that keep every product of rounding.py inside int64 (checked on the columns, not per row)
_MAX = {"e_sharp": 10 ** 11, "e_peak": 10 ** 11, "e_flat": 10 ** 11, "e_valley": 10 ** 11, "q": 10 ** 12,
        "cum_prev": 10 ** 12, "demand": 10 ** 9, "capacity_kva": 10 ** 6, "contract_kw": 10 ** 5,
        "days": 366, "period_days": 366, "pf_x100": 100}

ITEMS = ("energy_sharp_fen", "energy_peak_fen", "energy_flat_fen", "energy_valley_fen", "tier2_fen",
         "tier3_fen", "basic_fen", "pf_adjust_fen", "funds_fen", "total_fen", "pf_x100", "pf_bp",
         "tier2_kwh_x100", "tier3_kwh_x100", "billing_demand")
# the exact amounts before each line's one rounding (kernel rows O_N_*), in the order of MONEY's lines
# without 力调 (which is computed from the rounded lines)
EXACT = ("n_sharp", "n_peak", "n_flat", "n_valley", "n_tier2", "n_tier3", "n_basic", "n_funds")
MONEY = ITEMS[:9]            # the line items; total_fen is their sum


@dataclasses.dataclass
class ChargeRows:
    """Kernel inputs, one entry per charge row; see ``billing_core/_billing_py.py`` for units."""

    tariff_row: np.ndarray
    e_sharp: np.ndarray
    e_peak: np.ndarray
    e_flat: np.ndarray
    e_valley: np.ndarray
    q: np.ndarray
    cum_prev: np.ndarray
    demand: np.ndarray
    capacity_kva: np.ndarray
    contract_kw: np.ndarray
    days: np.ndarray
    period_days: np.ndarray
    pf_x100: np.ndarray
    bill: np.ndarray | None = None     # bill number of each row (None: row i is bill i)

    @classmethod
    def of(cls, n: int, bill: np.ndarray | None = None, **cols: npt.ArrayLike) -> "ChargeRows":
        """Rows with defaults for what a tariff does not use (0, and whole 30-day periods)."""
        base = {k: np.zeros(n, dtype=np.int32 if k in _INT32 else np.int64) for k in INPUTS}
        base["days"][:] = 30
        base["period_days"][:] = 30
        base["pf_x100"][:] = PF_FROM_ROW
        for k, v in cols.items():
            base[k] = np.ascontiguousarray(np.broadcast_to(v, (n,)), dtype=base[k].dtype)
        return cls(**base, bill=bill)


@dataclasses.dataclass
class LineItems:
    """Columns of line items, ``columns[name][i]`` for charge row (or bill) ``i``; names in ITEMS."""

    columns: dict[str, np.ndarray]
    tariff_row: np.ndarray
    table: TariffTable | None = None       # the table the rows were priced on (split bills need it)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def by_bill(self, bill: np.ndarray | None, n_bills: int | None = None, table: TariffTable | None = None
                ) -> "LineItems":
        """Bills from their charge rows: a bill of one row is that row; the parts of a split bill are added
        exactly and each line rounded once (:func:`billing_core.rounding.round_line_item_once`), 力调 at the
        month's one rate on the sum of the rounded lines it adjusts, the total the sum of the lines.
        Energies and tier energies add up; power factor, rate and billing demand are the first part's."""
        if bill is None:
            return self
        bill = np.asarray(bill, dtype=np.intp)
        n = int(n_bills if n_bills is not None else bill.max() + 1)
        first = np.full(n, -1, dtype=np.intp)
        first[bill[::-1]] = np.arange(len(bill))[::-1]
        cols = {name: col[first] for name, col in self.columns.items()}
        rows_of = np.bincount(bill, minlength=n)
        split = np.flatnonzero(rows_of > 1)
        table = table if table is not None else self.table
        if len(split):
            if table is None:
                raise BillingError("line items: adding the parts of split bills needs the tariff table")
            _add_parts(cols, self.columns, bill, split, self.tariff_row, table)
        return LineItems(cols, self.tariff_row[first], table)


def _add_parts(cols: dict[str, np.ndarray], rows: dict[str, np.ndarray], bill: np.ndarray, split: np.ndarray,
               tariff_row: np.ndarray, table: TariffTable) -> None:
    """The lines of the split bills ``split``: exact sums of their rows' amounts, each rounded once."""
    sel = np.flatnonzero(np.isin(bill, split))
    where = np.searchsorted(split, bill[sel])
    k = len(split)

    def total(col: np.ndarray, dtype: npt.DTypeLike = np.int64) -> np.ndarray:
        acc = np.zeros(k, dtype=dtype)
        np.add.at(acc, where, col[sel].astype(dtype))
        return acc

    for name in ("tier2_kwh_x100", "tier3_kwh_x100"):
        cols[name][split] = total(rows[name])
    par = table.params[np.asarray(tariff_row)[sel]]
    # the billing demand of the first part that has a basic charge (a version may start two-part mid-month)
    two_part = par[:, K.P_BASIC_KIND] != K.BASIC_NONE
    bd = cols["billing_demand"][split].copy()
    bd[where[two_part][::-1]] = rows["billing_demand"][sel][two_part][::-1]
    cols["billing_demand"][split] = bd
    days_div = np.asarray(rows["_period_days"])[sel].astype(object)
    lines = np.zeros(k, dtype=object)
    for name, exact in zip([m for m in MONEY if m != "pf_adjust_fen"], EXACT):
        if exact == "n_basic":
            # capacity amounts are over 10^4·period_days, demand amounts over 10^8·period_days: one denominator
            scale = np.where(par[:, K.P_BASIC_KIND] == K.BASIC_CAPACITY, DEMAND_DIV // CAPACITY_DIV, 1)
            num = np.zeros(k, dtype=object)
            np.add.at(num, where, rows[exact][sel].astype(object) * scale.astype(object))
            den = np.zeros(k, dtype=object)
            den[where] = days_div * DEMAND_DIV
            value = round_line_item_once(num, den)
        else:
            value = round_line_item_once(total(rows[exact], object), ENERGY_DIV)
        cols[name][split] = value.astype(np.int64)
        if name != "funds_fen":
            lines = lines + value
    bp = cols["pf_bp"][split].astype(object)
    cols["pf_adjust_fen"][split] = round_line_item_once(lines * bp, BP_DIV).astype(np.int64)
    cols["total_fen"][split] = sum(cols[m][split] for m in MONEY)


def _check(rows: ChargeRows, table: TariffTable) -> list[np.ndarray]:
    cols: list[np.ndarray] = []
    n = len(rows.tariff_row)
    for k in INPUTS:
        a: np.ndarray = np.ascontiguousarray(getattr(rows, k), dtype=np.int32 if k in _INT32 else np.int64)
        if a.ndim != 1 or len(a) != n:
            raise BillingError(f"charge rows: column {k!r} has shape {a.shape}, expected ({n},)")
        cols.append(a)
    if n:
        c = dict(zip(INPUTS, cols))
        if c["tariff_row"].min() < 0 or c["tariff_row"].max() >= len(table.params):
            raise BillingError("charge rows: tariff_row outside the compiled tariff table")
        for k, bound in _MAX.items():
            if np.abs(c[k]).max() > bound:
                i = int(np.argmax(np.abs(c[k]) > bound))
                raise BillingError(f"charge rows: row {i}: {k} = {int(c[k][i])} is beyond {bound} "
                                   f"(the engine's integer range)")
        if ((c["pf_x100"] < 0) & (c["pf_x100"] != PF_FROM_ROW) & (c["pf_x100"] != -1)).any():
            raise BillingError("charge rows: pf_x100 must be 0..100, -1 (none) or PF_FROM_ROW")
        if (c["period_days"] <= 0).any() or (c["days"] < 0).any() or (c["days"] > c["period_days"]).any():
            raise BillingError("charge rows: days must be 0..period_days and period_days > 0")
    return cols


def price(rows: ChargeRows, table: TariffTable, kernel: ModuleType | None = None,
          exact: bool | None = None) -> LineItems:
    """Every line item of every charge row, by the compiled kernel (or its numpy twin).

    A row whose ``pf_x100`` is not given (PF_FROM_ROW) is a whole month: the kernel takes its cosφ from the
    row's own P and Q — its month's average power factor.  ``exact`` (default: when the rows are parts of
    split bills, ``rows.bill`` set) also keeps each line's exact amount, so that :meth:`LineItems.by_bill`
    adds the parts before the one rounding."""
    cols = dict(zip(INPUTS, _check(rows, table)))
    exact = rows.bill is not None if exact is None else exact
    n = len(cols["tariff_row"])
    out = np.zeros((K.N_OUT if exact else K.N_ROUNDED, n), dtype=np.int64)
    (kernel or _kernel).bill_kernel(*(cols[k] for k in KERNEL_INPUTS), table.params, PF_TABLE, out)
    named = dict(zip(ITEMS, out))
    if exact:
        named.update(zip(EXACT, out[K.O_N_SHARP:K.O_N_FUNDS + 1]))
        named["_period_days"] = cols["period_days"]
    return LineItems(named, cols["tariff_row"], table)


def split_at_change(rows: ChargeRows, change_day: npt.ArrayLike, new_row: npt.ArrayLike,
                    e_before: Sequence[npt.ArrayLike] | None = None) -> ChargeRows:
    """Split the rows whose tariff changes on day ``change_day`` (1-based day of the period, 0 = none) in two:
    :func:`split_at_changes` with at most one change per row.

    ``new_row`` is the tariff row from that day on; ``e_before`` (optional) a tuple of the four period
    energies of each row up to the change, from that day's frozen reading.
    """
    n = len(rows.tariff_row)
    change_day = np.broadcast_to(np.asarray(change_day, dtype=np.int64), (n,))
    new_row = np.broadcast_to(np.asarray(new_row, dtype=np.int32), (n,))
    split = np.flatnonzero((change_day > 1) & (change_day <= rows.period_days))
    before = None if e_before is None else tuple(np.asarray(e, dtype=np.int64)[split] for e in e_before)
    return split_at_changes(rows, split, change_day[split], new_row[split], before)


def split_at_changes(rows: ChargeRows, cut_row: npt.ArrayLike, cut_day: npt.ArrayLike,
                     cut_tariff_row: npt.ArrayLike, e_before: Sequence[npt.ArrayLike] | None = None
                     ) -> ChargeRows:
    """Split rows at every day their tariff changes: one charge part per stretch between changes.

    A change ``j`` (long format, any number per row) splits row ``cut_row[j]`` on day ``cut_day[j]``
    (1-based day of the period; a day outside 2..period_days is ignored) into the tariff row
    ``cut_tariff_row[j]`` from that day on.  ``e_before`` (a tuple of the four period energies of each
    change, 0.01 kWh) is the energy of the row *from the period start up to* that change — from that day's
    frozen reading; without it the cumulative energy to the change is pro rata by days, rounded half away
    from zero (so every part but the last is rounded on its cumulative days and the last takes the rest:
    nothing is lost).  The reactive energy is always split by days.  Basic charge and monthly tier limits
    follow each part's days (1583号: basic charge by days of use); an annual-tier part continues the
    year-to-date cumulative of the parts before it; every part carries the month's one power factor
    (ruling: one monthly average power factor).  Returns new :class:`ChargeRows` with ``bill`` set to the
    original row numbers, the parts of a row in day order.
    """
    n = len(rows.tariff_row)
    cut_row = np.asarray(cut_row, dtype=np.intp)
    cut_day = np.asarray(cut_day, dtype=np.int64)
    cut_tariff_row = np.asarray(cut_tariff_row, dtype=np.int32)
    period_days = np.asarray(rows.period_days, dtype=np.int64)
    ok = (cut_day > 1) & (cut_day <= period_days[cut_row])
    energies = ("e_sharp", "e_peak", "e_flat", "e_valley", "q")
    whole = {k: np.asarray(getattr(rows, k), dtype=np.int64) for k in energies}
    # the energy of each row from the period start up to each change (cumulative): the frozen reading's,
    # else by days
    cum: dict[str, np.ndarray] = {}
    for j, k in enumerate(energies):
        if e_before is not None and k != "q":
            cum[k] = np.asarray(e_before[j], dtype=np.int64)[ok]
        else:
            cum[k] = round_div(whole[k][cut_row[ok]] * (cut_day[ok] - 1), period_days[cut_row[ok]])
    # the parts: each row's first stretch from day 1, then one per change, in (row, day) order
    bill = np.concatenate([np.arange(n, dtype=np.intp), cut_row[ok]])
    day = np.concatenate([np.ones(n, np.int64), cut_day[ok]])
    tariff_row = np.concatenate([np.asarray(rows.tariff_row, dtype=np.int32), cut_tariff_row[ok]])
    start_cum = {k: np.concatenate([np.zeros(n, np.int64), cum[k]]) for k in energies}
    order = np.lexsort((day, bill))
    bill, day, tariff_row = bill[order], day[order], tariff_row[order]
    start_cum = {k: v[order] for k, v in start_cum.items()}
    last = np.ones(len(bill), bool)
    last[:-1] = bill[1:] != bill[:-1]
    nxt = np.minimum(np.arange(len(bill)) + 1, max(len(bill) - 1, 0))
    cols = {k: np.asarray(getattr(rows, k))[bill].copy() for k in INPUTS}
    for k in energies:
        end_cum = np.where(last, whole[k][bill], start_cum[k][nxt])
        cols[k] = end_cum - start_cum[k]
    days = np.asarray(rows.days, dtype=np.int64)[bill]
    cols["days"] = np.where(last, days - (day - 1), day[nxt] - day).astype(np.int32)
    cols["tariff_row"] = tariff_row
    cols["cum_prev"] = cols["cum_prev"] + sum(start_cum[k] for k in energies[:4])
    # the month's one power factor on every part of a split row (ruling: one monthly average power factor)
    parts_of = np.bincount(bill, minlength=n)
    whole_pf = (np.asarray(rows.pf_x100) == PF_FROM_ROW) & (parts_of > 1)
    if whole_pf.any():
        idx = np.flatnonzero(whole_pf)
        pf = np.asarray(rows.pf_x100, dtype=np.int64).copy()
        pf[idx] = monthly_average_power_factor(sum(whole[k][idx] for k in energies[:4]), whole["q"][idx])
        cols["pf_x100"] = pf[bill]
    return ChargeRows(**cols, bill=bill)


def bill_lines(items: LineItems, i: int, table: TariffTable, energies: Mapping[str, np.ndarray] | None = None
               ) -> list[tuple[str, str, int]]:
    """One bill as the customer reads it: ``[(code, label, amount_fen), ...]`` ending with the total.

    Every line is one of the rounded columns, so the lines add up to ``total_fen`` exactly.
    ``energies`` (optional dict of the period energy columns) adds kWh and unit price to the labels.
    """
    row = int(items.tariff_row[i])
    par = table.params[row]
    cat, volt, eff, season = table.keys[row]
    c = {k: int(v[i]) for k, v in items.columns.items()}
    lines: list[tuple[str, str, int]] = []
    for k, p in enumerate(PERIODS):
        label = f"电度电费 {PERIOD_ZH[p]} ({p})"
        if energies is not None:
            label += f" {_dec(int(energies['e_' + p][i]), 2)} kWh × {_dec(int(par[K.P_PRICE_SHARP + k]), 6)} 元"
        lines.append((f"energy_{p}", label, c[f"energy_{p}_fen"]))
    for t in (2, 3):
        if c[f"tier{t}_kwh_x100"] or c[f"tier{t}_fen"]:
            inc = int(par[K.P_INC2 if t == 2 else K.P_INC3])
            lines.append((f"tier{t}", f"阶梯加价 第{t}档 {_dec(c[f'tier{t}_kwh_x100'], 2)} kWh × {_dec(inc, 6)} 元",
                          c[f"tier{t}_fen"]))
    if par[K.P_BASIC_KIND] != K.BASIC_NONE:
        unit = "kVA" if par[K.P_BASIC_KIND] == K.BASIC_CAPACITY else "kW"
        q = c["billing_demand"] if unit == "kVA" else _dec(c["billing_demand"], 4)
        lines.append(("basic", f"基本电费 {q} {unit}", c["basic_fen"]))
    if par[K.P_PF_STD] >= 0:
        pf = "—" if c["pf_x100"] < 0 else f"{c['pf_x100'] / 100:.2f}"
        lines.append(("pf_adjust", f"力调电费 cosφ {pf} (标准 0.{STANDARDS[par[K.P_PF_STD]]}) "
                                   f"{c['pf_bp'] / 100:+.2f}%", c["pf_adjust_fen"]))
    fund_names = "、".join(f.zh for f in table.funds.get(row, ()))
    lines.append(("funds", f"政府性基金及附加 ({fund_names or '免征'})", c["funds_fen"]))
    lines.append(("total", f"合计 ({cat}, {volt}, 电价 {eff} {season})", c["total_fen"]))
    if sum(amount for _, _, amount in lines[:-1]) != c["total_fen"]:
        raise BillingError(f"bill {i}: line items do not add up to the total")   # cannot happen; guard
    return lines


def _dec(value: int, places: int) -> str:
    """An integer of scale 10^-places as a decimal string, exactly (no float)."""
    sign = "-" if value < 0 else ""
    s = str(abs(value)).rjust(places + 1, "0")
    return f"{sign}{s[:-places]}.{s[-places:]}"

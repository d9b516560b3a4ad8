"""Reports people look at: static HTML files with inline SVG charts (no server, no script, no network).

* :func:`lineloss_html` — a month of line loss (线损): category counts, the distribution of the areas'
  monthly rates, the worst high-loss areas and, apart, the negative-loss (负损) ones, each shown area's
  daily trend, the feeders.
* :func:`collection_html` — collection success rate (采集成功率) by day and by area, from the
  ``collection`` view of storage.collection; says so when there is none.
* :func:`bills_html` — a bill run's totals by category and tariff and its held bills, from the
  ``bills`` view of billing_core.jobs.bills; says so when there is none.

Charts are SVG written here (bars, a histogram, sparklines): a browser draws them from the file alone.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from gridhead.billing_core import lineloss as ll

from . import lineloss as sl

if TYPE_CHECKING:
    from gridhead.storage.sql import Session

_CSS = """body{font-family:sans-serif;margin:24px;color:#222}h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#eef}td.l,th.l{text-align:left}.note{color:#555;font-size:13px}.warn{color:#a33;font-weight:bold}"""
_CAT_COLOURS = ("#4a9d5b", "#d9534f", "#5b7fd9", "#999999", "#333333")


def _e(v: object) -> str:
    return html.escape(str(v))


def page(title: str, body: list[str]) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"zh\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def svg_bars(labels: Sequence[object], values: Sequence[float], *, width: int = 560, height: int = 220,
             colours: Sequence[str] | None = None, unit: str = "") -> str:
    """Vertical bars with their values written above them."""
    n = max(len(values), 1)
    top = max([float(v) for v in values] + [1e-9])
    bw = (width - 40) / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" role="img">',
             f'<line x1="30" y1="{height}" x2="{width - 5}" y2="{height}" stroke="#444"/>']
    for i, (lab, v) in enumerate(zip(labels, values)):
        h = (height - 20) * float(v) / top
        x = 32 + i * bw
        c = (colours[i % len(colours)] if colours else "#5b7fd9")
        parts.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{max(bw - 4, 1):.1f}" height="{h:.1f}" fill="{c}">'
                     f'<title>{_e(lab)}: {_e(v)}{unit}</title></rect>')
        if n <= 40:
            parts.append(f'<text x="{x + bw / 2 - 2:.1f}" y="{height - h - 3:.1f}" font-size="10" '
                         f'text-anchor="middle">{_e(v)}</text>')
            parts.append(f'<text x="{x + bw / 2 - 2:.1f}" y="{height + 14}" font-size="10" text-anchor="middle" '
                         f'transform="rotate(30 {x + bw / 2 - 2:.1f} {height + 14})">{_e(lab)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_spark(values: npt.ArrayLike, ok: npt.ArrayLike, *, width: int = 240, height: int = 36,
              band: float | None = None) -> str:
    """A daily trend: a polyline over the days with a value; ``band`` draws the 高损 threshold."""
    v = np.asarray(values, np.float64)
    ok = np.asarray(ok, bool)
    if not ok.any():
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>'
    lo, hi = min(v[ok].min(), 0.0), max(v[ok].max(), band or 0.0, 1e-9)
    x = np.linspace(2, width - 2, len(v))
    y = height - 3 - (v - lo) / (hi - lo) * (height - 6)
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b, k in zip(x, y, ok) if k)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
    if band is not None:
        yb = height - 3 - (band - lo) / (hi - lo) * (height - 6)
        out.append(f'<line x1="0" x2="{width}" y1="{yb:.1f}" y2="{yb:.1f}" stroke="#d9534f" stroke-dasharray="3,2"/>')
    out.append(f'<polyline points="{pts}" fill="none" stroke="#5b7fd9" stroke-width="1.5"/></svg>')
    return "".join(out)


def _table(headers: Sequence[object], rows: Iterable[Sequence[object]], left: int = 1) -> str:
    h = "".join(f'<th class="l">{_e(x)}</th>' if i < left else f"<th>{_e(x)}</th>" for i, x in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def lineloss_html(res: sl.Result, month: str, worst: int = 30) -> str:
    """The month's line loss report (res: :func:`billing_core.jobs.lineloss.compute` over the month)."""
    area_m, feeder_m = res.month()
    cat_m = area_m.category[:, 0]
    counts = np.bincount(cat_m, minlength=len(ll.CATEGORY_NAMES))
    day_counts = np.bincount(res.area.category.ravel(), minlength=len(ll.CATEGORY_NAMES))
    labels = [f"{zh} {en}" for zh, en in zip(ll.CATEGORY_ZH, ll.CATEGORY_NAMES)]
    body = [f'<p class="note">{len(res.area_id)} areas, {len(res.feeder_id)} feeders, {res.days[0]} to {res.days[-1]}; '
            f"rate = (supply − sales) / supply; bands per area type from the thresholds file.</p>",
            "<h2>Categories (month)</h2>", svg_bars(labels, counts.tolist(), colours=_CAT_COLOURS),
            "<h2>Categories (area-days)</h2>", svg_bars(labels, day_counts.tolist(), colours=_CAT_COLOURS)]
    has = area_m.has_rate[:, 0]
    rates = area_m.rate_bp[has, 0] / 100
    if len(rates):
        edges = np.arange(np.floor(min(rates.min(), 0)), np.ceil(max(rates.max(), 1)) + 1, 1.0)
        h, _ = np.histogram(rates, edges)
        body += ["<h2>Distribution of the monthly loss rates (%)</h2>",
                 svg_bars([f"{a:.0f}–{a + 1:.0f}" for a in edges[:-1]], h.tolist())]
    hi, neg = res.thresholds.arrays(res.area_type)
    # high and negative loss apart: a 负损 area is a check-meter or wiring suspect, not a "worst" loss
    rate_m = area_m.rate_bp[:, 0]
    negative = (cat_m == ll.NEGATIVE) | (has & (rate_m < 0))
    high_side = np.flatnonzero(has & ~negative)
    order = high_side[np.argsort(-rate_m[high_side], kind="stable")][:worst]
    low = np.flatnonzero(negative)
    order_neg = low[np.argsort(np.where(has[low], rate_m[low], 0), kind="stable")][:worst]
    heads = ["area", "type", "supply kWh", "sales kWh", "rate %", "类别", "高损 days", "负损 days", "不可算 days",
             "daily trend"]
    body += [f"<h2>Worst {len(order)} high-loss areas, with each one's daily rate (dashed: the 高损 threshold)</h2>",
             _table(heads, [_area_row(res, area_m, i, hi[i]) for i in order], left=2),
             f"<h2>Negative-loss areas (负损): {len(low)}, lowest first — check meter (考核表) stopped, wiring, "
             f"a customer outside the area (dashed: the 负损 threshold)</h2>",
             _table(heads, [_area_row(res, area_m, i, neg[i]) for i in order_neg], left=2) if len(low)
             else '<p class="note">None this month.</p>']
    frows = []
    for i in range(len(res.feeder_id)):
        fr = f"{feeder_m.rate_bp[i, 0] / 100:.2f}" if feeder_m.has_rate[i, 0] else "—"
        frows.append([_e(res.feeder_id[i]), f"{feeder_m.supply[i, 0] / 100:,.0f}", f"{feeder_m.sales[i, 0] / 100:,.0f}",
                      fr, _e(ll.CATEGORY_ZH[feeder_m.category[i, 0]]),
                      svg_spark(np.where(res.feeder.has_rate[i], res.feeder.rate_bp[i] / 100, 0), res.feeder.has_rate[i])])
    body += ["<h2>10 kV feeders</h2>", _table(["feeder", "supply kWh", "sales kWh", "rate %", "类别", "daily trend"], frows)]
    return page(f"线损 line loss — {month}", body)


def _area_row(res: sl.Result, area_m: ll.Balance, i: int, band_bp: int) -> list[object]:
    has = area_m.has_rate[i, 0]
    rate = f"{area_m.rate_bp[i, 0] / 100:.2f}" if has else "—"
    daily = np.where(res.area.has_rate[i], res.area.rate_bp[i] / 100, 0)
    c = res.area.category[i]
    return [_e(res.area_id[i]), _e(res.area_type[i]), f"{area_m.supply[i, 0] / 100:,.0f}",
            f"{area_m.sales[i, 0] / 100:,.0f}", rate, _e(ll.CATEGORY_ZH[area_m.category[i, 0]]),
            int((c == ll.HIGH).sum()), int((c == ll.NEGATIVE).sum()), int((c == ll.NOT_COMPUTABLE).sum()),
            svg_spark(daily, res.area.has_rate[i], band=band_bp / 100)]


def _views(session: Session) -> set[str]:
    t = session.select("SELECT table_name FROM information_schema.tables")
    return set(t.column(0).to_pylist())


def _missing(title: str, what: str) -> str:
    return page(title, [f'<p class="warn">No {_e(what)} in this data directory yet: nothing to report.</p>'])


def collection_html(data: str | os.PathLike[str] | None, month: str | None = None) -> str:
    """Success rate by day and by area from the ``collection`` view (storage.collection)."""
    from gridhead.storage import sql as _sql
    title = "采集成功率 collection success rate" + (f" — {month}" if month else "")
    with _sql.Session(data) as s:
        if "collection" not in _views(s):
            return _missing(title, "collection table (storage.collection)")
        where = f"WHERE strftime(date, '%Y-%m') = '{month}'" if month else ""
        by_day = s.select(f"SELECT date, sum(expected) AS e, sum(collected) AS c, sum(first_pass) AS f "
                         f"FROM collection {where} GROUP BY date ORDER BY date").to_pylist()
        by_area = s.select(f"SELECT area_id, sum(expected) AS e, sum(collected) AS c, sum(first_pass) AS f "
                          f"FROM collection {where} GROUP BY area_id ORDER BY c / e, area_id LIMIT 50").to_pylist()
    if not by_day:
        return _missing(title, "collected day" + (f" in {month}" if month else ""))

    def pct(r: dict[str, Any], k: str) -> float:
        return round(100 * r[k] / r["e"], 2) if r["e"] else 0

    body = ["<h2>Success rate by day (%, after back-fill)</h2>",
            svg_bars([str(r["date"]) for r in by_day], [pct(r, "c") for r in by_day]),
            _table(["day", "expected", "first pass %", "after back-fill %"],
                   [[_e(r["date"]), r["e"], pct(r, "f"), pct(r, "c")] for r in by_day]),
            "<h2>Areas with the lowest success rate</h2>",
            _table(["area", "expected", "first pass %", "after back-fill %"],
                   [[_e(r["area_id"]), r["e"], pct(r, "f"), pct(r, "c")] for r in by_area])]
    return page(title, body)


def bills_html(data: str | os.PathLike[str] | None, month: str | None = None) -> str:
    """Totals by category and tariff, and the held bills, from the ``bills`` view (billing_core.jobs.bills)."""
    from gridhead.storage import sql as _sql
    title = "电费 bill run" + (f" — {month}" if month else "")
    with _sql.Session(data) as s:
        if "bills" not in _views(s):
            return _missing(title, "bill run (billing_core.jobs.bills)")
        where = f"WHERE period = '{month}'" if month else ""
        by = s.select(f"SELECT category, tariff_code, count(*) AS n, sum(e_total_kwh_x100) AS e, sum(total_fen) AS t, "
                     f"count(*) FILTER (WHERE status = 'held') AS held FROM bills {where} "
                     f"GROUP BY ALL ORDER BY category, tariff_code").to_pylist()
        held = s.select(f"SELECT bill_id, customer_no, category, total_fen, reasons FROM bills {where} "
                       f"{'AND' if where else 'WHERE'} status = 'held' ORDER BY bill_id LIMIT 200").to_pylist()
    if not by:
        return _missing(title, "bill" + (f" for {month}" if month else ""))
    body = ["<h2>Amount by category and tariff (yuan)</h2>",
            svg_bars([f"{r['category']}/{r['tariff_code']}" for r in by], [round(r["t"] / 100) for r in by]),
            _table(["category", "tariff", "bills", "energy kWh", "amount yuan", "held"],
                   [[_e(r["category"]), _e(r["tariff_code"]), r["n"], f"{r['e'] / 100:,.2f}", f"{r['t'] / 100:,.2f}",
                     r["held"]] for r in by], left=2),
            f"<h2>Held bills ({len(held)} shown)</h2>",
            _table(["bill", "customer", "category", "amount yuan", "reasons"],
                   [[_e(r["bill_id"]), _e(r["customer_no"]), _e(r["category"]), f"{r['total_fen'] / 100:,.2f}",
                     _e(r["reasons"])] for r in held], left=5)]
    return page(title, body)


def write(path: str | os.PathLike[str], text: str) -> None:
    """Write the HTML file whole (aside, then rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


"""The audit list (稽查) on disk: rank a month, store the list, record what the checkers found.

The loop flag → audit task → result closes in the lake::

    <lake>/audit/month=YYYY-MM/part-<uuid>.parquet     the ranked list of a month (replaced on a re-run)
    <lake>/audit_marks/part-<uuid>.parquet            one file per mark, append-only (never rewritten)

``gridhead sql`` shows them as the ``audit`` view: every item with its latest mark (``result`` theft /
fault / normal, ``checked_by``, ``note``, ``checked_utc``; NULL while unchecked).  Item ids are
``<YYYYMM>-C<customer_id>`` for a customer and ``<YYYYMM>-A<area_id>`` for an area.
"""

from __future__ import annotations

import datetime as _dt
import os
import pathlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gridhead.billing_core import audit as au
from gridhead.billing_core import lineloss as ll
from gridhead.protocols.errors import StorageError
from gridhead.storage import lake, schema
from gridhead.storage.archive import Archive
from gridhead.storage.results import AUDIT_ITEMS_SCHEMA as ITEMS_SCHEMA
from gridhead.storage.results import AUDIT_MARKS_SCHEMA as MARKS_SCHEMA

from . import lineloss as sl

RESULTS = ("theft", "fault", "normal")
PREVIOUS_DAYS = 14          # the previous month's last days the theft signal compares with (when in the lake)
class UnknownItem(StorageError):
    """An item id that no stored audit list has: bad input (exit 2)."""

    exit_code = 2


def read_event_counts(lake_root: lake.StrPath, first: _dt.date, last: _dt.date,
                      meter_ids: np.ndarray) -> dict[int, np.ndarray]:
    """{event code: (len(meter_ids),) count of events starting in [first, last]} from the lake."""
    root = pathlib.Path(lake_root) / "events"
    files: list[str] = []
    d = first
    while d <= last:
        files += sorted(str(p) for p in (root / f"date={d.isoformat()}").glob("bucket=*/part-*.parquet"))
        d += _dt.timedelta(days=1)
    out: dict[int, np.ndarray] = {}
    if not files:
        return out
    try:
        t = pq.read_table(files, columns=["meter_id", "event"])
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"lake: cannot read events: {exc}") from None
    m, ev = t.column("meter_id").to_numpy(), t.column("event").to_numpy()
    order = np.argsort(meter_ids, kind="stable")
    sm = meter_ids[order]
    pos = np.searchsorted(sm, m)
    hit = (pos < len(sm)) & (sm[np.minimum(pos, len(sm) - 1)] == m)
    for code in np.unique(ev[hit]):
        c = np.zeros(len(meter_ids), np.int64)
        np.add.at(c, order[pos[hit & (ev == code)]], 1)
        out[int(code)] = c
    return out


def load_technical(path: str | os.PathLike[str]) -> dict[int, int]:
    """{area_id: technical loss (理论线损) in basis points} from a CSV with columns ``area_id`` and
    ``technical_loss_bp`` (other columns ignored; e.g. the generator's ground_truth/areas.csv)."""
    import pyarrow.csv as pacsv
    try:
        t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            include_columns=["area_id", "technical_loss_bp"], column_types={"area_id": pa.int64(),
                                                                           "technical_loss_bp": pa.int64()}))
    except FileNotFoundError:
        raise StorageError(f"{path}: no such file") from None
    except pa.ArrowException as exc:
        raise StorageError(f"{path}: needs integer columns area_id and technical_loss_bp ({str(exc).splitlines()[0]})") from None
    ids, bp = t.column("area_id"), t.column("technical_loss_bp")
    import pyarrow.compute as pc
    if ids.null_count or (bp.null_count < len(bp) and pc.min(bp).as_py() < 0):
        raise StorageError(f"{path}: area_id is required and technical_loss_bp is >= 0")
    return {int(a): int(b) for a, b in zip(ids.to_pylist(), bp.to_pylist()) if b is not None}


def _shift_months(first: _dt.date, months: int) -> str:
    k = first.year * 12 + first.month - 1 + months
    return f"{k // 12:04d}-{k % 12 + 1:02d}"


def rank_month(archive: Archive, lake_root: lake.StrPath, month: str, *, thresholds: ll.LossThresholds | None = None,
               res: sl.Result | None = None, previous_days: int = PREVIOUS_DAYS,
               technical: dict[int, int] | None = None, inputs_out: dict[str, Any] | None = None) -> pa.Table:
    """The ranked audit list of ``month`` (YYYY-MM) as an Arrow table (ITEMS_SCHEMA), best first.

    The theft, stopped and multiplier signals also see the last ``previous_days`` days of the previous
    month where the lake has their readings (a day with none is missing, so it is simply not used): a
    customer who starts stealing on the 1st has no "before" inside the month.  Events are the month's.
    Areas are judged by the rules of the thresholds file (billing_core.lineloss.RULES): 高损 and 负损 days,
    the month against the previous month (月环比) and the same month last year (同比) where the lake has
    them, and against ``technical`` ({area_id: technical loss in bp}, :func:`load_technical`) where known.
    ``inputs_out`` (a dict) receives the customers' signal inputs and signals (benchmarks/bench_audit.py
    ranks the same inputs by a baseline).
    """
    first, last = sl.month_range(month)
    res = res or sl.compute(archive, lake_root, first, last, thresholds=thresholds)
    # the points of a single-node compute (a distributed run's merged result has none)
    assert (res.kind is not None and res.customer_id is not None and res.flags is not None and res.fwd is not None
            and res.rev is not None and res.point_id is not None and res.meter_id is not None
            and res.point_area is not None and res.ct is not None and res.pt is not None)
    cust = np.flatnonzero(((res.kind == ll.K_CUSTOMER) | (res.kind == ll.K_DEDICATED)) & (res.customer_id >= 0))
    missing = (res.flags[cust] & ll.LF_MISSING) != 0
    ok = res.area.category != ll.NOT_COMPUTABLE
    high = res.area.category == ll.HIGH
    fwd, rev, area_sales, area_loss, days = res.fwd[cust], res.rev[cust], res.area.sales, res.area.loss, res.days
    # the previous month (its period for 月环比, its last days for the signals) and the same month last year
    prev = sl.compute(archive, lake_root, *sl.month_range(_shift_months(first, -1)), thresholds=res.thresholds)
    last_year = sl.compute(archive, lake_root, *sl.month_range(_shift_months(first, -12)), thresholds=res.thresholds)
    if previous_days > 0:
        assert prev.point_id is not None and prev.flags is not None and prev.fwd is not None and prev.rev is not None
        k = min(previous_days, len(prev.days))
        pc = _rows_of(prev.point_id, res.point_id[cust])          # the month's customers in the earlier window
        pa_ = _rows_of(prev.area_id, res.area_id)
        has, hasa = pc >= 0, pa_ >= 0
        def take(a: np.ndarray, rows: np.ndarray, there: np.ndarray, fill: bool | int) -> np.ndarray:
            taken: np.ndarray = np.where(there[:, None], a[np.maximum(rows, 0), -k:], fill)
            return taken

        pmiss = take((prev.flags & ll.LF_MISSING) != 0, pc, has, True)
        pok = take(prev.area.category != ll.NOT_COMPUTABLE, pa_, hasa, False)
        phigh = take(prev.area.category == ll.HIGH, pa_, hasa, False)
        fwd = np.hstack([take(prev.fwd, pc, has, 0), fwd])
        rev = np.hstack([take(prev.rev, pc, has, 0), rev])
        missing = np.hstack([pmiss, missing])
        ok, high = np.hstack([pok, ok]), np.hstack([phigh, high])
        area_sales = np.hstack([take(prev.area.sales, pa_, hasa, 0), area_sales])
        area_loss = np.hstack([take(prev.area.loss, pa_, hasa, 0), area_loss])
        days = prev.days[-k:] + days
    ev = read_event_counts(lake_root, first, last, res.meter_id[cust])
    args = (fwd, rev, missing, res.point_area[cust], area_sales, area_loss, ok, high, ev, res.ct[cust], res.pt[cust])
    sig = au.signals(*args)
    if inputs_out is not None:
        inputs_out.update(point_id=res.point_id[cust], customer_id=res.customer_id[cust], fwd=fwd, rev=rev,
                          missing=missing, days=days, signals=sig, args=args)
    pick = np.flatnonzero(sig["score"] > 0)
    pick = pick[np.lexsort((res.customer_id[cust][pick], -sig["score"][pick]))]
    tag = month.replace("-", "")
    ids: list[str] = []
    ev_text: list[str] = []
    kinds: list[str] = []
    for j in pick:                  # the listed items only (tens to thousands), for their text
        ks = [k for k in au.KINDS if sig[f"score_{k}"][j] > 0]
        kinds.append(",".join(ks))
        ids.append(f"{tag}-C{res.customer_id[cust][j]}")
        ev_text.append(_evidence(sig, j, ks, ev, days))
    c = cust[pick]
    area_row = res.point_area[c]
    items = {"item_id": ids, "level": ["customer"] * len(pick), "customer_id": res.customer_id[c],
             "point_id": res.point_id[c], "meter_id": res.meter_id[c],
             "area_id": pa.array(np.where(area_row >= 0, res.area_id[np.maximum(area_row, 0)], 0), pa.int64(),
                                 mask=area_row < 0),
             "score": sig["score"][pick].round(1), "kinds": kinds, "evidence": ev_text}
    # areas: the rules of the thresholds file, each named in the item (billing_core.audit.area_rules)
    area_items = _area_items(res, prev, last_year, technical or {}, tag)
    # each part cast on its own: an empty part has null-typed columns that concat would refuse
    t = pa.concat_tables([pa.table({**part, "rank": pa.nulls(n, pa.int32())}).select(ITEMS_SCHEMA.names)
                          .cast(ITEMS_SCHEMA) for part, n in ((items, len(pick)), (area_items, len(area_items["item_id"])))])
    order = np.lexsort((np.array(t.column("item_id").to_pylist()), -t.column("score").to_numpy()))
    t = t.take(order)
    return t.set_column(1, "rank", pa.array(np.arange(1, len(t) + 1), pa.int32()))


def _area_items(res: sl.Result, prev: sl.Result, last_year: sl.Result, technical: dict[int, int], tag: str
                ) -> dict[str, Any]:
    """The area items of the month: the areas where a rule of ``res.thresholds.rules`` fired."""
    A = len(res.area_id)
    m, _ = res.month()
    rate, has = m.rate_bp[:, 0], m.has_rate[:, 0]
    cat = res.area.category
    hd = (cat == ll.HIGH).sum(axis=1)
    nd = (cat == ll.NEGATIVE).sum(axis=1)

    def history(r: sl.Result) -> tuple[np.ndarray, np.ndarray]:
        rows = _rows_of(r.area_id, res.area_id)
        pm, _ = r.month()
        there = rows >= 0
        return (np.where(there, pm.rate_bp[np.maximum(rows, 0), 0], 0),
                there & pm.has_rate[np.maximum(rows, 0), 0] & (pm.category[np.maximum(rows, 0), 0] != ll.NOT_COMPUTABLE))
    p_bp, p_has = history(prev)
    y_bp, y_has = history(last_year)
    t_has = np.array([int(a) in technical for a in res.area_id], bool)
    t_bp = np.array([technical.get(int(a), 0) for a in res.area_id], np.int64)
    rules = res.thresholds.rules
    fired = au.area_rules(rules, rate, has, hd, nd, m.category[:, 0] == ll.NEGATIVE, p_bp, p_has, y_bp, y_has, t_bp, t_has)
    ar = np.flatnonzero(np.any([fired[k] for k in au.AREA_KINDS], axis=0)) if A else np.zeros(0, np.int64)

    def pct(bp: float) -> str:
        return f"{bp / 100:.2f} %"

    ev = []
    for i in ar:
        month_rate = pct(rate[i]) if has[i] else "no rate"
        text = {"area_high_loss": f"高损 {hd[i]}/{len(res.days)} days (rule high_days >= {rules['high_days']})",
                "area_negative_loss": f"负损 {nd[i]}/{len(res.days)} days, month {month_rate} "
                                      f"(rule negative_days >= {rules['negative_days']}): check meter (考核表) stopped or wiring",
                "area_month_over_month": f"月环比 {month_rate} vs {pct(p_bp[i])} the month before "
                                         f"(rule month_over_month_bp >= {rules['month_over_month_bp']})",
                "area_year_over_year": f"同比 {month_rate} vs {pct(y_bp[i])} a year before "
                                       f"(rule year_over_year_bp >= {rules['year_over_year_bp']})",
                "area_over_technical": f"{month_rate} vs technical loss {pct(t_bp[i])} "
                                       f"(rule over_technical_bp >= {rules['over_technical_bp']})"}
        ev.append("; ".join(text[k] for k in au.AREA_KINDS if fired[k][i]))
    return {"item_id": [f"{tag}-A{a}" for a in res.area_id[ar]], "level": ["area"] * len(ar),
            "customer_id": pa.nulls(len(ar), pa.int64()), "point_id": pa.nulls(len(ar), pa.int64()),
            "meter_id": pa.nulls(len(ar), pa.int64()), "area_id": res.area_id[ar],
            "score": fired["score"][ar].round(1),
            "kinds": [",".join(k for k in au.AREA_KINDS if fired[k][i]) for i in ar], "evidence": ev}


def _rows_of(ids: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Row of each of ``want`` in the sorted unique ``ids``, -1 where absent."""
    k = np.searchsorted(ids, want)
    kk = np.minimum(k, max(len(ids) - 1, 0))
    return np.where((k < len(ids)) & (ids[kk] == want) if len(ids) else np.zeros(len(want), bool), kk, -1)


def _evidence(sig: dict[str, np.ndarray], j: int | np.integer[Any], ks: list[str], ev: dict[int, np.ndarray],
              days: list[_dt.date]) -> str:
    parts: list[str] = []
    if "theft" in ks or "multiplier" in ks:
        d = days[min(int(sig["split_day"][j]), len(days) - 1)]
        parts.append(f"share of area sales −{sig['drop'][j] * 100:.0f} % from {d} (t={sig['t_stat'][j]:.1f}), "
                     f"area loss +{sig['area_loss_rise_kwh'][j]:.1f} kWh/day, area 高损 "
                     f"{sig['area_high_share'][j] * 100:.0f} % of days")
    if "multiplier" in ks:
        parts.append(f"energy ×{sig['step_ratio'][j]:.2f}: looks like a CT/PT factor")
    if "stopped" in ks:
        parts.append(f"zero for the last {sig['zero_days'][j]} days while the area's sales held")
    if "reverse" in ks:
        parts.append(f"reverse energy {sig['reverse_kwh_x100'][j] / 100:.2f} kWh")
    if "events" in ks:
        names = [f"{schema.EVENTS[c][1]}×{ev[c][j]}" for c in au.EVENT_WEIGHTS if c in ev and ev[c][j]]
        parts.append("events " + " ".join(names))
    return "; ".join(parts)


def save(lake_root: lake.StrPath, month: str, items: pa.Table) -> pathlib.Path:
    sl.month_range(month)
    return sl.replace_partition(pathlib.Path(lake_root), pathlib.Path("audit") / f"month={month}", items)


def mark(lake_root: lake.StrPath, item_id: str, result: str, by: str, note: str = "",
         now: _dt.datetime | None = None) -> pathlib.Path:
    """Record the result of checking ``item_id`` (one append-only file; the latest mark wins)."""
    if result not in RESULTS:
        raise StorageError(f"audit mark: result {result!r} is not one of {', '.join(RESULTS)}")
    if not by.strip():
        raise StorageError("audit mark: --by needs the checker's name")
    root = pathlib.Path(lake_root)
    files = sorted(str(p) for p in (root / "audit").glob("month=*/part-*.parquet"))
    known: set[str] = set()
    for fn in files:
        known.update(pq.read_table(fn, columns=["item_id"]).column("item_id").to_pylist())
    if item_id not in known:
        raise UnknownItem(f"audit mark: no audit item {item_id!r} (run `gridhead audit --period M` first)")
    now = now or _dt.datetime.now(_dt.timezone.utc)
    t = pa.table({"item_id": [item_id], "result": [result], "checked_by": [by], "note": [note],
                  "checked_utc": [now]}, schema=MARKS_SCHEMA)
    d = root / "audit_marks"
    d.mkdir(parents=True, exist_ok=True)
    name = lake.new_file_name()
    tmp = d / f".{name}.tmp"
    with open(tmp, "wb") as f:
        pq.write_table(t, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, d / name)
    lake.fsync_dir(d)
    return d / name

"""Line loss (线损) from the lake and the archive: read, assemble, compute, store.

:func:`compute` reads the daily frozen readings (日冻结, ``ae_fwd`` / ``ae_rev``; ``re_fwd`` for 高供低计
transformer loss) of a window of days and the archive's metering points, and hands numpy columns to
:mod:`billing_core.lineloss`.  Segments as in billing: every ``point_meters`` row active in the window
is one segment (换表 gives two in the swap day).  A row ``[valid_from, valid_to)`` owns the freezes
``valid_from < date <= valid_to`` (the 00:00 frozen reading of the swap day still belongs to the old
meter, storage.archive); its install reading stands for the freeze at ``valid_from`` and its removal
reading for the freeze after ``valid_to`` (both within the swap day).  The multiplier (CT × PT,
``point_multipliers``) is the one valid on the consumption day.

Results: the ``line_loss`` table in the lake, one partition per day written atomically (the whole
partition replaced in one directory swap, the lake's publication rule), and beside it ``line_loss_missing``
(:func:`missing_table`: per 不可算 area-day the meters whose readings are missing, the input of a targeted
re-read)::

    <lake>/line_loss/date=YYYY-MM-DD/part-<uuid>.parquet

with columns ``level`` (area / feeder), ``unit_id``, ``unit_type``, ``supply_kwh_x100``,
``sales_kwh_x100``, ``loss_kwh_x100``, ``rate_bp`` (NULL without a rate), ``category`` (ok, high,
negative, not_computable, outage), ``category_zh``, ``flags`` (billing_core.lineloss LF_* bits).
"""

from __future__ import annotations

import datetime as _dt
import os
import pathlib
import tomllib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from gridhead.billing_core import lineloss as ll
from gridhead.billing_core.energy import transformer_loss
from gridhead.protocols.errors import ConfigError, StorageError
from gridhead.storage import lake, lakefs, schema
from gridhead.storage.archive import Archive
from gridhead.storage.results import LINE_LOSS_SCHEMA, MISSING_SCHEMA, MISSING_TABLE
from gridhead.storage.results import LINE_LOSS_TABLE as TABLE
from gridhead.storage.results import line_loss_glob as glob

DEFAULT_THRESHOLDS = pathlib.Path(__file__).resolve().parent.parent / "lineloss.toml"
REGS = {"ae_fwd": schema.REGISTER_CODES["ae_fwd"], "ae_rev": schema.REGISTER_CODES["ae_rev"],
        "re_fwd": schema.REGISTER_CODES["re_fwd"]}
_OPEN = np.iinfo(np.int64).max                  # an open valid_to
_KIND = {"customer": ll.K_CUSTOMER, "area_check": ll.K_CHECK, "pv": ll.K_PV, "feeder_out": ll.K_FEEDER_OUT}
def load_thresholds(path: str | os.PathLike[str] | None = None) -> ll.LossThresholds:
    p = pathlib.Path(path) if path else DEFAULT_THRESHOLDS
    try:
        with open(p, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not TOML ({exc})") from None
    return ll.parse_thresholds(doc, str(p))


# --- reading the lake ---------------------------------------------------------------------------------
def read_frozen(lake_root: lake.StrPath, dates: Sequence[_dt.date], meter_ids: npt.ArrayLike,
                registers: Sequence[str] = ("ae_fwd", "ae_rev"), *,
                pivots: bool = True, kind: str = schema.DAILY) -> dict[str, np.ndarray]:
    """Daily frozen values as {register: (len(meter_ids), len(dates)) int64, -1 where missing}.

    ``meter_ids`` need not be sorted or unique.  Of duplicate deliveries the last received wins (the
    rule of the SQL pivots).  Reads only the partitions of ``dates``.  A partition with its materialised
    pivot (storage.lake, :data:`~storage.lake.PIVOT_KINDS`) is read from the pivot, only the columns of
    ``registers``; the others from their part files, only the rows of those registers, deduplicated here
    by the same rule (``pivots=False`` reads every partition that way: the tests compare both paths).
    ``kind``: the daily frozen readings (日冻结), or the monthly settlement ones (月冻结, schema.MONTHLY).
    """
    meter_ids = np.asarray(meter_ids, np.int64)
    if len(meter_ids) and (np.diff(meter_ids) > 0).all():        # already sorted and unique: no sort
        uniq, pos = meter_ids, None
    else:
        uniq, pos = np.unique(meter_ids, return_inverse=True)
    rows_of = _meter_index(uniq)
    # (day, meter) while filling: each day's scatter writes one contiguous row; handed back transposed
    out = {r: np.full((len(dates), len(uniq)), -1, np.int64) for r in registers}
    prev: list[tuple[np.ndarray, np.ndarray]] = []   # the day before's (meter ids, rows) per batch: a bucket's meters rarely change
    lfs = lakefs.configured(lake_root)       # a lake behind a URI (storage.lakefs): its part files via pyarrow.fs
    days = _day_files(lake_root, dates, pivots, kind) if lfs is None else \
        [([], lfs.files(f"readings/kind={kind}/date={d.isoformat()}")) for d in dates]
    for j, (pivot_files, part_files) in enumerate(days):
        seen: list[tuple[np.ndarray, np.ndarray]] = []
        # batch by batch (a file's row group), straight from Arrow's buffers: no concatenated copy
        for k, b in enumerate(_read(pivot_files, ["meter_id", *registers]).to_batches() if pivot_files else ()):
            m = b.column(0).to_numpy()
            same = k < len(prev) and len(prev[k][0]) == len(m) and np.array_equal(prev[k][0], m)
            row = prev[k][1] if same else rows_of(m)
            seen.append((m, row))
            keep = None if row.min(initial=0) >= 0 else row >= 0
            for i, name in enumerate(registers, 1):
                v = b.column(i)
                v = (v.fill_null(-1) if v.null_count else v).to_numpy()
                if keep is None:
                    out[name][j][row] = v
                else:
                    out[name][j][row[keep]] = v[keep]
        prev = seen
        if part_files:
            _scatter_raw(_read(part_files, ["meter_id", "register", "value", "received_utc"],
                               [("register", "in", [REGS[r] for r in registers])], lfs),
                         rows_of, len(uniq), out, j)
    return {k: v.T if pos is None else v.T[pos] for k, v in out.items()}


def _meter_index(uniq: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function: meter ids -> their rows in sorted unique ``uniq``, -1 for meters not in it.  A dense
    lookup table when the ids are compact (one gather), else a binary search."""
    if len(uniq) and 0 < uniq[0] and uniq[-1] <= 8 * len(uniq) + 1_000_000:
        lut = np.full(int(uniq[-1]) + 2, -1, np.int64)     # slot 0 and the last: ids outside (clipped there)
        lut[uniq] = np.arange(len(uniq))

        def look_up(m: np.ndarray) -> np.ndarray:
            return np.take(lut, m, mode="clip")
        return look_up

    def search(m: np.ndarray) -> np.ndarray:
        row = np.searchsorted(uniq, m)
        row[(row >= len(uniq)) | (uniq[np.minimum(row, max(len(uniq) - 1, 0))] != m)] = -1
        return row
    return search


def _day_files(lake_root: lake.StrPath, dates: Sequence[_dt.date], pivots: bool, kind: str = schema.DAILY) -> list[tuple[list[str], list[str]]]:
    """Per date: (pivot files, part files of the partitions read raw), from one listing of the lake."""
    if pivots:
        piv, parts = lake.pivot_snapshot(lake_root, kind)
    else:
        piv, parts = [], [os.path.join(d, n) for d, names in lake.partition_listing(lake_root, "readings", f"kind={kind}")
                          for n in names if n.startswith("part-") and n.endswith(".parquet")]
    by_day: dict[str, tuple[list[str], list[str]]] = {}
    for i, files in enumerate((piv, parts)):
        for f in files:
            day = pathlib.PurePath(f).parent.parent.name          # date=YYYY-MM-DD
            by_day.setdefault(day, ([], []))[i].append(f)
    return [by_day.get(f"date={d.isoformat()}", ([], [])) for d in dates]


def _read(files: list[str], columns: list[str], filters: list[tuple[str, str, list[int]]] | None = None,
          lfs: lakefs.Lake | None = None) -> pa.Table:
    try:
        return pq.read_table(files, columns=columns, filters=filters, filesystem=lfs.fs if lfs else None)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"lake: cannot read {os.path.dirname(os.path.dirname(files[0]))}: {exc}") from None


def _scatter_raw(t: pa.Table, rows_of: Callable[[np.ndarray], np.ndarray], n: int, out: dict[str, np.ndarray],
                 j: int) -> None:
    """Raw readings of one day into column ``j`` of ``out``: per (meter, register) the last received."""
    row = rows_of(t.column("meter_id").to_numpy())
    reg = t.column("register").to_numpy()
    val = t.column("value").to_numpy()
    keep = row >= 0
    for name in out:
        sel = keep & (reg == REGS[name])
        r_, v_ = row[sel], val[sel]
        if len(r_) and np.bincount(r_, minlength=n).max() > 1:   # re-deliveries: last received wins
            recv = t.column("received_utc").to_numpy().astype("datetime64[s]").astype(np.int64)[sel]
            o = np.lexsort((recv, r_))
            last = np.r_[r_[o][1:] != r_[o][:-1], True]
            r_, v_ = r_[o][last], v_[o][last]
        out[name][j][r_] = v_


# select(seg, areas, feeders) -> the subset of those archive columns a task computes (jobs.dist)
Select = Callable[[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray],
                  tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]]


# --- the computation ----------------------------------------------------------------------------------
@dataclass
class Result:
    """A window of days: per area, feeder and point, (unit, day) arrays."""

    days: list[_dt.date]
    area_id: np.ndarray
    area_type: np.ndarray
    area_feeder: np.ndarray
    area: ll.Balance
    feeder_id: np.ndarray
    feeder: ll.Balance
    thresholds: ll.LossThresholds
    # points (rows) for the audit: primary energies (P, D), flags, who they are
    # (None in the units of a distributed run's task: billing_core.jobs.dist)
    point_id: np.ndarray | None = field(repr=False, default=None)
    kind: np.ndarray | None = field(repr=False, default=None)
    customer_id: np.ndarray | None = field(repr=False, default=None)
    point_area: np.ndarray | None = field(repr=False, default=None)     # area row, -1 none
    meter_id: np.ndarray | None = field(repr=False, default=None)       # the meter at the end of the window
    multiplier: np.ndarray | None = field(repr=False, default=None)     # (P, D)
    ct: np.ndarray | None = field(repr=False, default=None)
    pt: np.ndarray | None = field(repr=False, default=None)
    fwd: np.ndarray | None = field(repr=False, default=None)
    rev: np.ndarray | None = field(repr=False, default=None)
    flags: np.ndarray | None = field(repr=False, default=None)
    # (area Balance, feeder Balance) of the window as one period (one column)
    period: tuple[ll.Balance, ll.Balance] | None = None
    # the meters whose missing readings made an area-day 不可算 (:func:`missing_table`): columns
    missing: dict[str, np.ndarray] | None = field(repr=False, default=None)

    def month(self) -> tuple[ll.Balance, ll.Balance]:
        """(area Balance, feeder Balance) of the whole window as one period: a gap inside the window
        does not make it 不可算 (the days telescope), only a missing reading at its ends."""
        assert self.period is not None          # compute() and the distributed merge both set it
        return self.period


def _days(first: _dt.date, last: _dt.date) -> list[_dt.date]:
    return [first + _dt.timedelta(days=i) for i in range((last - first).days + 1)]


def window(first: _dt.date, last: _dt.date, max_gap: int = 3) -> list[_dt.date]:
    """The freezes :func:`compute` reads for days ``first`` .. ``last``: the gap window on both sides."""
    g = max(1, int(max_gap))
    return _days(first - _dt.timedelta(days=g - 1), last + _dt.timedelta(days=g))


def registers_for(seg: dict[str, np.ndarray]) -> tuple[str, ...]:
    """The registers :func:`compute` reads for segments ``seg`` (reactive only with 高供低计 points)."""
    return ("ae_fwd", "ae_rev", "re_fwd") if seg["hv_metered_lv"].astype(bool).any() else ("ae_fwd", "ae_rev")


def archive_inputs(archive: Archive, first: _dt.date, last: _dt.date) -> dict[str, Any]:
    """Everything :func:`compute` reads from the archive for days ``first`` .. ``last``: ``seg`` (segments
    of every point's meters), ``areas``, ``feeders`` (ids), ``mu`` (multiplier history rows of the days) and
    ``mrows`` (the multipliers in force on the last day)."""
    seg, areas, feeders = segments(archive, first, last)
    mu = archive.columns("""SELECT point_id, valid_from, valid_to, ct_ratio * pt_ratio AS mult FROM point_multipliers
                            WHERE valid_from <= $l AND (valid_to IS NULL OR valid_to > $f)
                            ORDER BY point_id, valid_from""", {"f": first, "l": last})
    mrows = archive.columns("""SELECT point_id, ct_ratio, pt_ratio FROM point_multipliers
                               WHERE valid_from <= $l AND (valid_to IS NULL OR valid_to > $l) ORDER BY point_id""",
                            {"l": last})
    return {"seg": seg, "areas": areas, "feeders": feeders, "mu": mu, "mrows": mrows}


def segments(archive: Archive, first: _dt.date, last: _dt.date
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """The archive columns :func:`compute` starts from: (segments of every point's meters in the days,
    areas, feeder ids)."""
    seg = archive.columns("""
        SELECT pm.point_id, pm.meter_id, pm.valid_from, pm.valid_to,
               pm.install_reading_x100 AS install, coalesce(pm.removal_reading_x100, -1) AS removal,
               p.role, coalesce(p.area_id, -1) AS area_id, coalesce(p.feeder_id, a.feeder_id, -1) AS feeder_id,
               coalesce(p.customer_id, -1) AS customer_id, p.hv_metered_lv,
               coalesce(p.tx_capacity_kva, 0) AS kva, coalesce(p.tx_p0_w, 0) AS p0, coalesce(p.tx_pk_w, 0) AS pk,
               coalesce(p.tx_loss_rate_bp, -1) AS tx_rate, m.register_digits
        FROM point_meters pm JOIN points p USING (point_id) JOIN meters m USING (meter_id)
        LEFT JOIN areas a ON a.area_id = p.area_id
        WHERE pm.valid_from <= $l AND (pm.valid_to IS NULL OR pm.valid_to >= $f)
        ORDER BY pm.point_id, pm.valid_from""", {"f": first, "l": last})
    areas = archive.columns("SELECT area_id, area_type, feeder_id FROM areas ORDER BY area_id")
    feeders = archive.columns("SELECT feeder_id FROM feeders ORDER BY feeder_id")["feeder_id"]
    return seg, areas, feeders


def compute(archive: Archive | None, lake_root: lake.StrPath, first: _dt.date, last: _dt.date, *,
            thresholds: ll.LossThresholds | None = None, max_gap: int = 3, select: Select | None = None,
            pivots: bool = True, frozen: dict[str, np.ndarray] | None = None,
            inputs: dict[str, Any] | None = None) -> Result:
    """Line loss of every area and feeder for each consumption day ``first`` .. ``last`` (inclusive).

    Day D is the energy between the freezes of D and D+1 at 00:00.  ``select(seg, areas, feeders)`` (one
    task of the distributed run, billing_core.jobs.dist) returns the subset of those archive columns to compute.
    ``frozen``: the frozen readings of the selected segments over :func:`window` (register → (segments,
    freezes), as :func:`read_frozen` gives; read once for every task by the driver), else read here.
    ``inputs``: :func:`archive_inputs` (a task's share, made by the driver; then ``archive`` is not used).
    ``pivots``: see :func:`read_frozen`.
    """
    if last < first:
        raise StorageError(f"line loss: last day {last} before first day {first}")
    th = thresholds or load_thresholds()
    days = _days(first, last)
    D, g = len(days), max(1, int(max_gap))
    freezes = window(first, last, max_gap)
    off = g - 1                                     # interval index of day ``first`` in the window
    if not inputs:
        assert archive is not None              # the archive is read unless its inputs are given
        inputs = archive_inputs(archive, first, last)
    seg, areas, feeders = inputs["seg"], inputs["areas"], inputs["feeders"]
    if select is not None:
        seg, areas, feeders = select(seg, areas, feeders)
    pid_seg = seg["point_id"].astype(np.int64)
    point_id, prow = np.unique(pid_seg, return_inverse=True)
    P = len(point_id)
    first_row = np.r_[0, np.flatnonzero(np.diff(prow)) + 1]
    last_row = np.r_[first_row[1:] - 1, len(prow) - 1]
    # per point attributes (from its last segment: role and area never change within a point)
    role = seg["role"][last_row]
    kind = np.array([_KIND[r] for r in role], np.int8) if P else np.zeros(0, np.int8)
    a_id = seg["area_id"][last_row].astype(np.int64)
    f_id = seg["feeder_id"][last_row].astype(np.int64)
    kind[(kind == ll.K_CUSTOMER) & (a_id < 0)] = ll.K_DEDICATED
    area_ids = areas["area_id"].astype(np.int64)
    point_area = np.where(a_id >= 0, np.searchsorted(area_ids, a_id), -1)
    point_feeder = np.where(f_id >= 0, np.searchsorted(feeders, f_id), -1)

    # readings per segment over the window's freezes; ownership and virtual install / removal readings
    hv = seg["hv_metered_lv"].astype(bool)
    regs = registers_for(seg)
    if frozen is None:
        R = read_frozen(lake_root, freezes, seg["meter_id"], regs, pivots=pivots)
    else:
        R = {name: frozen[name] for name in regs}
        if any(v.shape != (len(seg["meter_id"]), len(freezes)) for v in R.values()):
            raise StorageError("line loss: the frozen readings given do not match the segments")
    fz = np.array(freezes, "datetime64[D]").astype(np.int64)
    vf = seg["valid_from"].astype("datetime64[D]").astype(np.int64)
    vt = _day_numbers(seg["valid_to"])
    owned = (vf[:, None] < fz[None, :]) & (fz[None, :] <= vt[:, None])
    inst_col = np.searchsorted(fz, vf)                          # freeze at valid_from
    inst_ok = (inst_col < len(fz)) & (fz[np.minimum(inst_col, len(fz) - 1)] == vf)
    rem_col = np.searchsorted(fz, np.where(vt < _OPEN, vt + 1, 0))
    rem_ok = (vt < _OPEN) & (rem_col < len(fz))
    rem_ok &= fz[np.minimum(rem_col, len(fz) - 1)] == np.where(rem_ok, vt + 1, -1)
    modulus = 10 ** (seg["register_digits"].astype(np.int64) + 2)
    rr = {}
    for name in regs:
        r = np.where(owned, R[name], -1)
        rows = np.flatnonzero(inst_ok)
        # the archive records install / removal readings of the forward register; a new meter's other
        # registers start at 0 and the old meter's are not known at removal (its swap day counts as missing)
        r[rows, inst_col[rows]] = seg["install"][rows] if name == "ae_fwd" else 0
        rows = np.flatnonzero(rem_ok)
        r[rows, rem_col[rows]] = seg["removal"][rows] if name == "ae_fwd" else -1
        rr[name] = r
    # 停运: an area's outage days take no share of a gap spread over them (else its customers show sales
    # with no supply, 负损).  Found from the forward readings of the whole window (billing_core.lineloss.outage_days)
    seg_area = point_area[prow]
    wd = fz[:-1]                                               # interval t is the consumption day of freeze t
    active_w = (vf[:, None] <= wd[None, :]) & (wd[None, :] <= vt[:, None])
    e0, f0 = ll.interval_energy(rr["ae_fwd"], modulus, g)
    outage = ll.outage_days(seg_area, len(areas["area_id"]), e0, f0, active_w)
    blocked = None
    if outage.any():
        blocked = np.where((seg_area >= 0)[:, None], outage[np.maximum(seg_area, 0)], False)
    # the period: 月冻结 (monthly settlement) readings at its two ends where the lake has them — the same
    # 00:00 instant as the daily freeze, and the utilities' convention for the month — else the daily ones
    ends = np.array([off, off + D])
    monthly = read_frozen(lake_root, [freezes[c] for c in ends], seg["meter_id"], regs, pivots=pivots,
                          kind=schema.MONTHLY) if frozen is None or "monthly" not in frozen else frozen["monthly"]
    ends_owned = owned[:, ends]
    m_used = ends_owned & (monthly["ae_fwd"] >= 0)
    d_used = ends_owned & ~m_used
    E, EP = {}, {}
    for name in regs:
        r = rr[name]
        e, fl = (e0, f0) if name == "ae_fwd" and blocked is None else ll.interval_energy(r, modulus, g, blocked)
        E[name] = e[:, off:off + D]
        rp = r.copy()
        for k, c in enumerate(ends):
            use = ends_owned[:, k] & (monthly[name][:, k] >= 0)
            rp[use, c] = monthly[name][use, k]
        # the period as a whole: any gap inside it spans (the days telescope to R(end) - R(start))
        ep, flp = ll.interval_energy(rp, modulus, len(freezes), blocked)
        EP[name] = ep[:, off:off + D]
        if name == "ae_fwd":
            seg_flags, seg_pflags = fl[:, off:off + D], flp[:, off:off + D]
    # a segment is active on its days valid_from .. valid_to (the swap day is in both)
    day_n = np.array(days, "datetime64[D]").astype(np.int64)
    active = (vf[:, None] <= day_n[None, :]) & (day_n[None, :] <= vt[:, None])
    for name in regs:
        # reverse / reactive registers have no install or removal reading: missing counts as zero there
        E[name] = np.where(active, E[name], 0)
        EP[name] = np.where(active, EP[name], 0)
    seg_flags = np.where(active, seg_flags, 0).astype(np.uint8)
    seg_pflags = np.bitwise_or.reduce(np.where(active, seg_pflags, 0).astype(np.uint8), axis=1, keepdims=True)

    mult = _multipliers(inputs["mu"], point_id, days)          # (P, D)
    n_active = ll.group_sum(prow, P, active.astype(np.int64))
    pfl = ll.group_or(prow, P, seg_flags) | np.where(n_active > 1, ll.LF_REPLACED, 0).astype(np.uint8)
    pe = {name: ll.group_sum(prow, P, E[name]) * mult for name in regs}
    fwd, rev = pe["ae_fwd"], pe["ae_rev"]
    pfl_period = ll.group_or(prow, P, seg_pflags) | np.bitwise_or.reduce(pfl & ll.LF_REPLACED, axis=1, keepdims=True)
    fwd_p, rev_p = ((ll.group_sum(prow, P, EP[n]) * mult).sum(axis=1, keepdims=True) for n in ("ae_fwd", "ae_rev"))

    # 高供低计 dedicated transformers: 变损 per day (formula over 24 h, or the agreed rate)
    tx = np.zeros((P, D), np.int64)
    hv_pt = np.flatnonzero(hv[last_row] & (kind == ll.K_DEDICATED))
    if len(hv_pt):
        lr = last_row[hv_pt]
        rate = seg["tx_rate"][lr]
        method = np.where(rate >= 0, 2, 1)

        def rep(a: npt.ArrayLike) -> np.ndarray:
            return np.repeat(np.asarray(a), D)

        lp, _ = transformer_loss(rep(method), fwd[hv_pt].ravel(), pe.get("re_fwd", fwd * 0)[hv_pt].ravel(), 24,
                                 rep(seg["kva"][lr]), rep(seg["p0"][lr]), rep(seg["pk"][lr]), 0, 0,
                                 rep(np.maximum(rate, 0)), 0, 0, 0)
        tx[hv_pt] = lp.reshape(len(hv_pt), D)
    hi, neg = th.arrays(areas["area_type"])
    area = ll.area_balance(kind, point_area, len(area_ids), fwd, rev, pfl, hi, neg)
    fhi, fneg = th.arrays(np.full(len(feeders), "feeder"))
    pf_idx = point_feeder.copy()
    chk = (kind == ll.K_CHECK) & (point_area >= 0)
    af = np.searchsorted(feeders, areas["feeder_id"].astype(np.int64))
    pf_idx[chk] = af[point_area[chk]]
    feeder = ll.feeder_balance(kind, pf_idx, len(feeders), fwd, rev, pfl, tx, fhi, fneg)
    period = (ll.area_balance(kind, point_area, len(area_ids), fwd_p, rev_p, pfl_period, hi, neg),
              ll.feeder_balance(kind, pf_idx, len(feeders), fwd_p, rev_p, pfl_period, tx.sum(axis=1, keepdims=True),
                                fhi, fneg))
    # which readings each unit's period came from: 1 = a 月冻结 end, 2 = a daily end (per point, then unit)
    seg_in = active.any(axis=1)
    src = (np.where(seg_in & m_used.any(axis=1), 1, 0) | np.where(seg_in & d_used.any(axis=1), 2, 0))
    pt_src = np.zeros(P, np.int64)
    for bit in (1, 2):
        pt_src |= np.where(np.bincount(prow, weights=(src & bit) > 0, minlength=P) > 0, bit, 0)
    for bal, idx, n_u, keep in ((period[0], point_area, len(area_ids), kind != ll.K_DEDICATED),
                                (period[1], pf_idx, len(feeders), np.isin(kind, (ll.K_FEEDER_OUT, ll.K_CHECK, ll.K_DEDICATED)))):
        sel = (idx >= 0) & keep
        u_src = np.zeros(n_u, np.int64)
        for bit in (1, 2):
            u_src |= np.where(np.bincount(idx[sel], weights=(pt_src[sel] & bit) > 0, minlength=n_u) > 0, bit, 0)
        bal.basis = np.select([u_src == 1, u_src == 3], [ll.B_MONTHLY, ll.B_MIXED], ll.B_DAILY).astype(np.int8)[:, None]
    missing = _missing_meters(seg, seg_flags, seg_area, area_ids, area.category, rr["ae_fwd"], freezes, off, days)
    mrows = inputs["mrows"]
    mult_ct = np.ones(P, np.int64), np.ones(P, np.int64)
    k = np.searchsorted(point_id, mrows["point_id"].astype(np.int64))
    okk = (k < P) & (point_id[np.minimum(k, P - 1)] == mrows["point_id"])
    mult_ct[0][k[okk]] = mrows["ct_ratio"][okk]
    mult_ct[1][k[okk]] = mrows["pt_ratio"][okk]
    return Result(days, area_ids, areas["area_type"], areas["feeder_id"].astype(np.int64), area,
                  feeders.astype(np.int64), feeder, th, point_id, kind, seg["customer_id"][last_row].astype(np.int64),
                  point_area, seg["meter_id"][last_row].astype(np.int64), mult, mult_ct[0], mult_ct[1], fwd, rev, pfl,
                  period, missing)


def _missing_meters(seg: dict[str, np.ndarray], seg_flags: np.ndarray, seg_area: np.ndarray, area_ids: np.ndarray,
                    category: np.ndarray, r_fwd: np.ndarray, freezes: list[_dt.date], off: int,
                    days: list[_dt.date]) -> dict[str, np.ndarray]:
    """Per 不可算 area-day, the meters (segments) without a reading at the day's freezes (D and D+1 at
    00:00) and no span to spread over: one row per (day, area, meter, missing freeze)."""
    s_row, col = np.nonzero((seg_flags & ll.LF_MISSING) != 0)
    a = seg_area[s_row]
    keep = a >= 0
    s_row, col, a = s_row[keep], col[keep], a[keep]
    keep = category[a, col] == ll.NOT_COMPUTABLE
    s_row, col, a = s_row[keep], col[keep], a[keep]
    rows: dict[str, list[np.ndarray]] = {"date": [], "area_id": [], "meter_id": [], "point_id": [], "role": [], "reading_date": []}
    for side in (0, 1):                                # the freeze opening the day, then the one closing it
        gone = r_fwd[s_row, off + col + side] < 0
        for k, v in (("date", np.array(days, "datetime64[D]")[col[gone]]), ("area_id", area_ids[a[gone]]),
                     ("meter_id", seg["meter_id"][s_row[gone]]), ("point_id", seg["point_id"][s_row[gone]]),
                     ("role", seg["role"][s_row[gone]]),
                     ("reading_date", np.array(freezes, "datetime64[D]")[off + col[gone] + side])):
            rows[k].append(np.asarray(v))
    out = {k: np.concatenate(v) for k, v in rows.items()}
    o = np.lexsort((out["reading_date"], out["meter_id"], out["area_id"], out["date"]))
    return {k: v[o] for k, v in out.items()}


def _day_numbers(col: np.ndarray) -> np.ndarray:
    """Dates as days since 1970 (int64); NULL / NaT (an open valid_to) as :data:`_OPEN`."""
    if col.dtype == object:
        return np.array([_OPEN if v is None else np.datetime64(v, "D").astype(np.int64) for v in col], np.int64)
    d = col.astype("datetime64[D]")
    return np.where(np.isnat(d), _OPEN, d.astype(np.int64))


def _multipliers(mu: dict[str, np.ndarray], point_id: np.ndarray, days: list[_dt.date]) -> np.ndarray:
    """CT × PT per (point, consumption day) from the multiplier rows ``mu`` (:func:`archive_inputs`); 0 where
    the archive has none (then the energy is 0)."""
    P, D = len(point_id), len(days)
    out = np.zeros((P, D), np.int64)
    k = np.searchsorted(point_id, mu["point_id"].astype(np.int64))
    ok = (k < P) & (point_id[np.minimum(k, max(P - 1, 0))] == mu["point_id"]) if P else np.zeros(len(k), bool)
    day_n = np.array(days, "datetime64[D]").astype(np.int64)
    vf = mu["valid_from"].astype("datetime64[D]").astype(np.int64)
    vt = _day_numbers(mu["valid_to"])
    # rows of one point never overlap (archive import checks it), so each (point, day) gets at most one
    on = ok[:, None] & (vf[:, None] <= day_n[None, :]) & (day_n[None, :] < vt[:, None])
    r, c = np.nonzero(on)
    out[k[r], c] = mu["mult"][r]
    return out


# --- tables -------------------------------------------------------------------------------------------
def _rows(level: str, ids: np.ndarray, types: np.ndarray, bal: ll.Balance, col: int) -> dict[str, Any]:
    cat = bal.category[:, col]
    return {"level": [level] * len(ids), "unit_id": ids, "unit_type": types,
            "supply_kwh_x100": bal.supply[:, col], "sales_kwh_x100": bal.sales[:, col],
            "loss_kwh_x100": bal.loss[:, col],
            "rate_bp": pa.array(bal.rate_bp[:, col], pa.int64(), mask=~bal.has_rate[:, col]),
            "category": np.array(ll.CATEGORY_NAMES)[cat], "category_zh": np.array(ll.CATEGORY_ZH)[cat],
            "flags": bal.flags[:, col].astype(np.int16)}


def _table(res: Result, col: int, area: ll.Balance, feeder: ll.Balance) -> pa.Table:
    a = _rows("area", res.area_id, res.area_type, area, col)
    f = _rows("feeder", res.feeder_id, np.full(len(res.feeder_id), "feeder"), feeder, col)
    return pa.concat_tables([pa.table(a, schema=LINE_LOSS_SCHEMA), pa.table(f, schema=LINE_LOSS_SCHEMA)])


def day_table(res: Result, day: _dt.date) -> pa.Table:
    """Rows of one day (areas then feeders)."""
    return _table(res, res.days.index(day), res.area, res.feeder)


def month_table(res: Result) -> pa.Table:
    """Rows of the whole window as one period (a month), with the count of 不可算 days per unit and the
    ``basis`` of each unit's energies: ``monthly`` (every meter's 月冻结 readings at both ends), ``daily``
    (the daily frozen ones, spread over gaps) or ``mixed``."""
    a, f = res.month()
    t = _table(res, 0, a, f)
    bad = np.r_[(res.area.category == ll.NOT_COMPUTABLE).sum(axis=1), (res.feeder.category == ll.NOT_COMPUTABLE).sum(axis=1)]
    basis = np.array(ll.BASIS_NAMES)[np.r_[a.basis[:, 0], f.basis[:, 0]]]
    return t.append_column("days", pa.array(np.full(len(t), len(res.days)), pa.int32())) \
            .append_column("days_not_computable", pa.array(bad, pa.int32())) \
            .append_column("basis", pa.array(basis, pa.string()))


def missing_table(res: Result, day: _dt.date | None = None) -> pa.Table:
    """The meters whose missing readings made an area-day 不可算 (not computable), one row per (day, area,
    meter, missing freeze ``reading_date``), of ``day`` or of every day of ``res``: what a targeted re-read
    (``gridhead collect run --meters FILE``) asks for."""
    m = res.missing or {k: np.zeros(0) for k in ("date", "area_id", "meter_id", "point_id", "role", "reading_date")}
    sel = np.ones(len(m["date"]), bool) if day is None else m["date"] == np.datetime64(day, "D")
    cols = {"date": pa.array(m["date"][sel].astype("datetime64[D]"), pa.date32())}
    for f in MISSING_SCHEMA:
        v = m[f.name][sel]
        cols[f.name] = pa.array(v.astype("datetime64[D]") if f.type == pa.date32() else v.astype(object if f.type == pa.string() else np.int64), f.type)
    return pa.table(cols)


def reread_table(missing: pa.Table) -> pa.Table:
    """The distinct (meter_id, date) readings to re-read from a :func:`missing_table`: the file format of
    ``gridhead collect run --meters FILE``."""
    t = missing.group_by(["meter_id", "reading_date"]).aggregate([]).rename_columns(["meter_id", "date"])
    return t.sort_by([("date", "ascending"), ("meter_id", "ascending")])


def write_reread(path: str | os.PathLike[str], missing: pa.Table) -> int:
    """Write :func:`reread_table` of ``missing`` as CSV (meter_id,date) to ``path``; its row count."""
    import pyarrow.csv as pacsv
    t = reread_table(missing)
    try:
        pacsv.write_csv(t, path)
    except OSError as exc:
        raise StorageError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    rows: int = t.num_rows
    return rows


def read_reread(path: str | os.PathLike[str]) -> tuple[list[int], list[_dt.date] | None]:
    """(meter ids, their dates or None) of a re-read file: CSV with a ``meter_id`` column and optionally
    ``date`` (YYYY-MM-DD), as :func:`write_reread` writes it."""
    import pyarrow.csv as pacsv
    try:
        t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={"meter_id": pa.int64(), "date": pa.date32()}))
    except FileNotFoundError:
        raise StorageError(f"{path}: no such file") from None
    except pa.ArrowException as exc:
        raise StorageError(f"{path}: not a CSV of meter_id[,date] ({str(exc).splitlines()[0]})") from None
    if "meter_id" not in t.column_names or t.column("meter_id").null_count:
        raise StorageError(f"{path}: needs a meter_id column with a meter id on every row")
    if "date" in t.column_names and t.column("date").null_count:
        raise StorageError(f"{path}: the date column is empty on some row")
    return t.column("meter_id").to_pylist(), (t.column("date").to_pylist() if "date" in t.column_names else None)


def only_level(tbl: pa.Table, level: str) -> pa.Table:
    """The rows of ``tbl`` at ``level`` ("area" or "feeder"); "all" keeps every row."""
    if level == "all":
        return tbl
    import pyarrow.compute as pc
    return tbl.filter(pc.equal(tbl.column("level"), level))


def write_days(lake_root: lake.StrPath, res: Result) -> list[pathlib.Path]:
    """Store every day of ``res`` in the lake's ``line_loss`` table, one partition per day, replaced whole."""
    out: list[pathlib.Path] = []
    for d in res.days:
        out.append(replace_partition(pathlib.Path(lake_root), pathlib.Path(TABLE) / f"date={d.isoformat()}",
                                     day_table(res, d)))
        if res.missing is not None:       # the day's 不可算 meters beside it (replaced too: none left is news)
            replace_partition(pathlib.Path(lake_root), pathlib.Path(MISSING_TABLE) / f"date={d.isoformat()}",
                              missing_table(res, d).drop_columns(["date"]))
    return out


def replace_partition(root: pathlib.Path, rel: pathlib.Path, tbl: pa.Table) -> pathlib.Path:
    """Write ``tbl`` as the only file of partition ``root/rel``: aside, fsync, then one directory swap
    (storage.lake's publication rule: a reader sees the old file or the new one, never both)."""
    live = root / rel
    staging = root / "_staging" / uuid.uuid4().hex
    name = lake.new_file_name()
    try:
        staging.mkdir(parents=True)
        with open(staging / name, "wb") as f:
            pq.write_table(tbl, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        with lake.LakeLock(root):
            if live.exists():
                lake.exchange_dirs(staging, live)
                trash = root / "_trash"
                trash.mkdir(exist_ok=True)
                os.rename(staging, trash / f"{_dt.datetime.now().timestamp():.0f}-{staging.name}")
                lake.sweep_trash(root)
            else:
                live.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging, live)
            lake.fsync_dir(live.parent)
    except OSError as exc:
        raise StorageError(f"lake: cannot write {live}: {exc.strerror or exc}") from None
    return live / name


def month_range(month: str) -> tuple[_dt.date, _dt.date]:
    """'2026-06' -> (2026-06-01, 2026-06-30)."""
    try:
        y, m = (int(x) for x in month.split("-"))
        first = _dt.date(y, m, 1)
    except ValueError:
        raise StorageError(f"month {month!r}: expected YYYY-MM") from None
    nxt = _dt.date(y + (m == 12), m % 12 + 1, 1)
    return first, nxt - _dt.timedelta(days=1)


def flag_text(flags: int | None) -> str:
    """LF_* bits as words: 'spread,replaced'."""
    f = int(flags or 0)
    return ",".join(name for bit, name in ll.FLAG_NAMES.items() if f & bit)

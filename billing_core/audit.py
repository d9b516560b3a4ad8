"""The audit list (稽查): rank customers whose meters point at theft or faults, with the evidence.

Array code over one period's customer × day energies (from billing_core.jobs.lineloss) — no Python loop over
customers.  Signals, each a score and the numbers a checker reads (:func:`signals`):

* ``theft`` — consumption fell while the area's loss rose.  The customer's share of its area's sales,
  x_d = e_d / sales_d (the share removes weather and weekday, common to the area), is tested at every
  split day s: t(s) = (mean before − mean after) / (pooled sd · √(1/n_b + 1/n_a)); the best split must
  show a drop of at least ``MIN_DROP`` and the area's loss energy must have risen after it, with
  t >= ``THEFT_T`` — or t >= ``THEFT_T_BALANCED`` when the area's loss rose by at least ``BALANCE`` ×
  what the customer stopped registering (kWh/day): the energy balance confirms a theft that started late
  in the month (few days after the split, so a low t), which a customer simply using less does not show.
  Score ``10 · t`` (capped at 100), boosted by the share of the area's days that were 高损.
* ``stopped`` — the meter registers zero for the last ``STOPPED_DAYS`` days or more after it
  registered before, while its area's supply did not fall (停走).  Score 100.
* ``reverse`` — energy on the reverse register of a customer meter without generation (反向走字).
  Score 100.
* ``events`` — device events of the period weighted by :data:`EVENT_WEIGHTS` (cover opened, reverse
  energy, phase failure, clock change ...; power-down is not evidence).
* ``multiplier`` — on a metering point with CT × PT > 1, the energy steps by a factor close to CT, PT,
  CT × PT or 2 (a CT change not, or wrongly, recorded in the archive: 倍率差错).  Score 80.

An item's score is the sum; the list is sorted by it.  :func:`precision_recall` measures a ranking
against a ground truth (the generator's); :func:`drop_baseline` is the plain consumption-drop ranking it
is compared with (benchmarks/bench_audit.py).  :func:`area_rules` judges areas (billing_core.jobs.audit).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

import numpy as np
import numpy.typing as npt

from gridhead.storage.schema import EVENT_CODES

MIN_DROP = 0.2            # the theft signal needs the share to fall by at least 20 %
THEFT_T = 5.0             # ... with a t statistic of at least 5 (max over ~30 splits of noise is ~3-4)
THEFT_T_BALANCED = 3.0    # ... or of at least 3 when the area's loss rose by what the customer stopped registering
BALANCE = 0.5             # ... (area loss rise >= BALANCE × the customer's fall in kWh/day): a late theft has few days after
MIN_SIDE = 3              # days on each side of a split
STOPPED_DAYS = 3
MULT_TOL = 0.08           # |ln(ratio) − ln(factor)| for the multiplier signal
EVENT_WEIGHTS = {EVENT_CODES["cover_open"]: 30, EVENT_CODES["terminal_cover_open"]: 30,
                 EVENT_CODES["reverse_energy"]: 30, EVENT_CODES["magnetic_interference"]: 30,
                 EVENT_CODES["phase_failure"]: 15, EVENT_CODES["voltage_loss"]: 15,
                 EVENT_CODES["current_loss"]: 20, EVENT_CODES["clock_change"]: 10,
                 EVENT_CODES["meter_reset"]: 20}
KINDS = ("theft", "stopped", "reverse", "events", "multiplier")


def best_drop(x: np.ndarray, valid: np.ndarray, min_side: int = MIN_SIDE
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best split of each row: (t statistic, split index s (first day after), mean before, mean after).

    ``x`` (n, D) float, ``valid`` (n, D) bool.  Day d is before the split when d < s.
    """
    x = np.where(valid, x, 0.0)
    v = valid.astype(np.float64)
    n, D = x.shape
    if D < 2 * min_side:
        z = np.zeros(n)
        return z, np.zeros(n, np.int64), z, z
    c1, c2, cn = (np.cumsum(a, axis=1) for a in (x, x * x, v))
    S1, S2, N = c1[:, -1:], c2[:, -1:], cn[:, -1:]
    b1, b2, bn = c1[:, :-1], c2[:, :-1], cn[:, :-1]           # before split s = 1..D-1
    a1, a2, an = S1 - b1, S2 - b2, N - bn
    with np.errstate(invalid="ignore", divide="ignore"):
        mb, ma = b1 / bn, a1 / an
        ss = (b2 - b1 * mb) + (a2 - a1 * ma)
        sd = np.sqrt(np.maximum(ss / (N - 2), 0))
        t = (mb - ma) / (sd * np.sqrt(1 / bn + 1 / an))
    t = np.where((bn >= min_side) & (an >= min_side) & np.isfinite(t), t, 0.0)
    s = np.argmax(t, axis=1)
    r = np.arange(n)
    return t[r, s], s + 1, np.nan_to_num(mb[r, s]), np.nan_to_num(ma[r, s])


def signals(energy: npt.ArrayLike, rev: npt.ArrayLike, missing: np.ndarray, area: npt.ArrayLike,
            area_sales: np.ndarray, area_loss: npt.ArrayLike, area_ok: npt.ArrayLike, area_high: npt.ArrayLike,
            event_counts: Mapping[int, npt.ArrayLike], ct: npt.ArrayLike, pt: npt.ArrayLike
            ) -> dict[str, np.ndarray]:
    """Scores and evidence per customer (see the module docstring).

    energy, rev (n, D) int64 primary 0.01 kWh; missing (n, D) bool; area (n,) area row or -1;
    area_sales, area_loss (A, D) int64; area_ok, area_high (A, D) bool; event_counts {code: (n,) int};
    ct, pt (n,) int.  Returns a dict of (n,) arrays: ``score``, one ``score_<kind>`` per kind and the
    evidence columns.
    """
    e = np.asarray(energy, np.int64)
    n, D = e.shape
    area = np.asarray(area, np.int64)
    ina = area >= 0
    ai = np.where(ina, area, 0)
    A = len(area_sales)
    sales = np.asarray(area_sales, np.float64)[ai] if A else np.ones((n, D))
    ok = ~missing & ina[:, None] & (np.asarray(area_ok)[ai] if A else False) & (sales > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(ok, e / np.where(sales > 0, sales, 1), 0.0)
    t, split, mb, ma = best_drop(share, ok)
    drop = np.where(mb > 0, 1 - ma / np.where(mb > 0, mb, 1), 0.0)
    # the area's loss energy after the split vs before (kWh/day), at the customer's split
    loss = np.asarray(area_loss, np.float64)[ai] if A else np.zeros((n, D))
    aok = (np.asarray(area_ok)[ai] if A else np.zeros((n, D), bool))
    after = np.arange(D)[None, :] >= split[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        rise = (np.where(aok & after, loss, 0).sum(1) / np.maximum((aok & after).sum(1), 1)
                - np.where(aok & ~after, loss, 0).sum(1) / np.maximum((aok & ~after).sum(1), 1)) / 100
    # share of the area's computable days that were 高损 (days not in the lake do not dilute it)
    hi_days = (np.asarray(area_high)[ai] if A else np.zeros((n, D), bool)).sum(1)
    high_share = hi_days / np.maximum(aok.sum(1), 1) * ina
    mult = np.asarray(ct, np.int64) * np.asarray(pt, np.int64)
    # a step by a clean factor on a point with CT/PT: the multiplier, not theft
    ratio = np.where(mb > 0, ma / np.where(mb > 0, mb, 1), 1.0)
    lr = np.log(np.clip(ratio, 1e-9, None))
    factors = np.stack([mult, np.asarray(ct), np.asarray(pt), np.full(n, 2)], axis=1).astype(np.float64)
    near = np.abs(np.abs(lr)[:, None] - np.log(factors)) < MULT_TOL
    mult_hit = (mult > 1) & (t >= THEFT_T) & (near & (factors > 1)).any(axis=1)
    # stopped: trailing zero run while present
    zero = (e == 0) & ~missing
    run = np.where(zero.all(axis=1), D, np.argmax(~zero[:, ::-1], axis=1))
    before = np.arange(D)[None, :] < (D - run)[:, None]
    had = (np.where(before & ~missing, e, 0).sum(1) > 0)
    sup = np.asarray(area_sales, np.float64)[ai] if A else np.zeros((n, D))
    zmask = ~before
    with np.errstate(invalid="ignore", divide="ignore"):
        sup_ratio = (np.where(zmask, sup, 0).sum(1) / np.maximum(zmask.sum(1), 1)) / \
            (np.where(before, sup, 0).sum(1) / np.maximum(before.sum(1), 1))
    sup_held = ~ina | ~np.isfinite(sup_ratio) | (sup_ratio >= 0.7)
    rev_total = np.asarray(rev, np.int64).sum(axis=1)
    reverse = rev_total > 0
    stopped = (run >= STOPPED_DAYS) & had & sup_held & ~reverse
    # a stopped or reversed meter also "drops"; it is listed as what it is
    # the customer's fall in kWh/day at its split: (share before − after) × the area's sales after
    with np.errstate(invalid="ignore", divide="ignore"):
        sales_after = np.where(aok & after, sales, 0).sum(1) / np.maximum((aok & after).sum(1), 1)
    lost = np.maximum(mb - ma, 0) * sales_after / 100
    balanced = (rise > 0) & (rise >= BALANCE * lost)
    strong = (t >= THEFT_T) & (rise > 0)
    theft = ina & (strong | ((t >= THEFT_T_BALANCED) & balanced)) & (drop >= MIN_DROP) & ~mult_hit & ~stopped & ~reverse
    score_theft = np.where(theft, np.minimum(10 * t, 100) * (1 + high_share), 0.0)
    score_ev = np.zeros(n)
    for code, w in EVENT_WEIGHTS.items():
        c = event_counts.get(code)
        if c is not None:
            score_ev += w * np.minimum(np.asarray(c), 3)
    out = {"score_theft": score_theft, "score_stopped": np.where(stopped, 100.0, 0.0),
           "score_reverse": np.where(reverse, 100.0, 0.0), "score_events": score_ev,
           "score_multiplier": np.where(mult_hit, 80.0, 0.0),
           "t_stat": t, "split_day": split, "drop": drop, "area_loss_rise_kwh": rise, "lost_kwh": lost, "area_high_share": high_share,
           "zero_days": np.where(zero[:, -1], run, 0), "reverse_kwh_x100": rev_total, "step_ratio": ratio}
    out["score"] = sum(out[f"score_{k}"] for k in KINDS)
    return out


def precision_recall(ranked_keys: Iterable[Hashable], truth_keys: Iterable[Hashable], k: int | None = None
                     ) -> dict[str, float]:
    """precision@k (k = len(truth) by default), recall@k and recall of the whole list."""
    ranked = list(ranked_keys)
    truth = set(truth_keys)
    k = len(truth) if k is None else k
    top = ranked[:k]
    hit_k = sum(1 for x in top if x in truth)
    hit = sum(1 for x in ranked if x in truth)
    return {"k": k, "precision_at_k": hit_k / max(len(top), 1), "recall_at_k": hit_k / max(len(truth), 1),
            "recall": hit / max(len(truth), 1), "listed": len(ranked), "truth": len(truth)}


AREA_KINDS = ("area_high_loss", "area_negative_loss", "area_month_over_month", "area_year_over_year",
              "area_over_technical")


def area_rules(rules: Mapping[str, int], rate_bp: npt.ArrayLike, has_rate: npt.ArrayLike,
               high_days: npt.ArrayLike, negative_days: npt.ArrayLike, month_negative: npt.ArrayLike,
               prev_bp: npt.ArrayLike, prev_has: npt.ArrayLike, last_year_bp: npt.ArrayLike,
               last_year_has: npt.ArrayLike, technical_bp: npt.ArrayLike, technical_has: npt.ArrayLike,
               ) -> dict[str, np.ndarray]:
    """Which of the area rules (billing_core.lineloss.RULES) fire for each area's month: {kind: (A,) bool}
    plus ``score`` (A,).  A rule needs its numbers: no history or technical loss, no firing.

    ``rate_bp``/``has_rate`` (A,) the month's rate; ``high_days``/``negative_days`` (A,) counts of the
    month's 高损 / 负损 days; ``month_negative`` (A,) the month itself 负损; ``prev_*`` the previous month,
    ``last_year_*`` the same month last year, ``technical_*`` the technical loss (理论线损)."""
    rate = np.asarray(rate_bp, np.int64)
    has = np.asarray(has_rate, bool)

    def on(k: str) -> bool:
        return rules.get(k, -1) >= 0

    out = {
        "area_high_loss": (np.asarray(high_days) >= rules["high_days"]) if on("high_days") else np.zeros(len(rate), bool),
        "area_negative_loss": ((np.asarray(negative_days) >= rules["negative_days"]) | np.asarray(month_negative, bool))
        if on("negative_days") else np.zeros(len(rate), bool),
    }
    for kind, key, ref, ref_has in (("area_month_over_month", "month_over_month_bp", prev_bp, prev_has),
                                    ("area_year_over_year", "year_over_year_bp", last_year_bp, last_year_has),
                                    ("area_over_technical", "over_technical_bp", technical_bp, technical_has)):
        ok = has & np.asarray(ref_has, bool)
        out[kind] = ok & (rate - np.asarray(ref, np.int64) >= rules[key]) if on(key) else np.zeros(len(rate), bool)
    # a high-loss rule: 50 + the excess in tenths of a point (at most +50); days rules: 50 + 2 per day

    def excess(ref: npt.ArrayLike) -> np.ndarray:
        clipped: np.ndarray = np.clip((rate - np.asarray(ref, np.int64)) / 10, 0, 50)
        return clipped

    parts = [np.where(out["area_high_loss"], 50 + 2 * np.asarray(high_days), 0),
             np.where(out["area_negative_loss"], 50 + 2 * np.asarray(negative_days), 0),
             np.where(out["area_month_over_month"], 50 + excess(prev_bp), 0),
             np.where(out["area_year_over_year"], 50 + excess(last_year_bp), 0),
             np.where(out["area_over_technical"], 50 + excess(technical_bp), 0)]
    fired = sum(out[k].astype(np.int64) for k in AREA_KINDS)
    out["score"] = np.max(np.stack(parts), axis=0) + 5.0 * np.maximum(fired - 1, 0)
    return out


def drop_baseline(energy: npt.ArrayLike, missing: npt.ArrayLike, min_side: int = MIN_SIDE) -> np.ndarray:
    """The plain consumption-drop ranking the audit is measured against (benchmarks/bench_audit.py): per
    customer the largest relative fall of its mean daily energy across any split day (at least
    ``min_side`` read days each side), 1 − mean after / mean before; no area, no statistics, no events."""
    e = np.asarray(energy, np.float64)
    ok = ~np.asarray(missing, bool)
    x = np.where(ok, e, 0.0)
    c, n = np.cumsum(x, axis=1), np.cumsum(ok, axis=1)
    bs, bn = c[:, :-1], n[:, :-1]
    as_, an = c[:, -1:] - bs, n[:, -1:] - bn
    with np.errstate(invalid="ignore", divide="ignore"):
        drop = 1 - (as_ / an) / (bs / bn)
    drop = np.where((bn >= min_side) & (an >= min_side) & (bs > 0) & np.isfinite(drop), drop, -np.inf)
    return drop.max(axis=1) if drop.shape[1] else np.full(len(e), -np.inf)

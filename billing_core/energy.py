"""Energy of a billing period from register readings (抄见电量), and settlement energy (结算电量).

Input is one row per account-period-segment (a meter replacement 换表 or a tariff change split at a
day's frozen reading gives two segments), as the bill run will read them from the lake's monthly
settlement and daily frozen pivots: for each energy register of ``storage.schema.REGISTERS`` a
``prev`` and a ``now`` column in the register's own integer scale (0.01 kWh), ``-1`` where the lake
has no reading (NULL), and the segment's CT and PT ratios.

Per register and segment: E = (now − prev [+ 10^digits on rollover]) × CT × PT.

* Rollover (走字满度翻转): ``now < prev`` by more than half the register's range means the register
  wrapped past 99…99; the range 10^digits is added and the row flagged ``F_ROLLOVER``.  A smaller
  backwards step is a real negative energy (``F_NEGATIVE``) and is kept negative for review.
* A missing reading gives 0 and ``F_MISSING``; an estimated one (quality ``Q_ESTIMATED``) ``F_ESTIMATED``.
* TOU (尖/峰/平/谷) registers that do not add up to the total register within ``TOU_TOLERANCE`` give
  ``F_TOU_MISMATCH`` (:func:`tou_registers_do_not_add_up`: per segment, in the meter's own 0.01 kWh before
  CT × PT; a bill is held if any of its segments mismatches).  The billed 平 energy is the total minus
  尖, 峰 and 谷 (平段取差), so that the period energies always add up to the total register; a single-rate
  meter (no TOU reading at all) bills everything as 平 and is not flagged.

Bill review (核算审核) holds a bill on any of these flags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from gridhead.billing_core.rounding import round_div
from gridhead.protocols.errors import BillingError
from gridhead.storage.schema import ENERGY_REGISTERS, Q_ESTIMATED, REGISTER_CODES, REGISTERS

F_MISSING = 1
F_ESTIMATED = 2
F_NEGATIVE = 4
F_ROLLOVER = 8
F_TOU_MISMATCH = 16
F_ZERO = 32
FLAG_NAMES = {F_MISSING: "missing reading", F_ESTIMATED: "estimated reading", F_NEGATIVE: "negative energy",
              F_ROLLOVER: "register rollover", F_TOU_MISMATCH: "TOU registers do not add up to the total",
              F_ZERO: "zero consumption"}

ENERGY_NAMES = tuple(REGISTERS[c].name for c in ENERGY_REGISTERS)   # ae_fwd, ae_fwd_t1..t4, ae_rev, re_fwd, re_rev
TOU_NAMES = ("ae_fwd_t1", "ae_fwd_t2", "ae_fwd_t3", "ae_fwd_t4")     # 尖 峰 平 谷
DEFAULT_DIGITS = len(str(REGISTERS[REGISTER_CODES["ae_fwd"]].max_value))   # digits incl. decimals
TOU_TOLERANCE = 4        # 0.01 kWh: four TOU registers each truncated to 0.01 kWh may miss the total by < 4


def register_energy(prev: npt.ArrayLike, now: npt.ArrayLike, multiplier: npt.ArrayLike,
                    digits: npt.ArrayLike = DEFAULT_DIGITS, prev_quality: npt.ArrayLike | None = None,
                    now_quality: npt.ArrayLike | None = None
                    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """Energy (register scale × multiplier) and flags of one register over many segments."""
    prev = np.asarray(prev, dtype=np.int64)
    now = np.asarray(now, dtype=np.int64)
    modulus = np.power(np.int64(10), np.asarray(digits, dtype=np.int64))
    missing = (prev < 0) | (now < 0)
    delta = now - prev
    wrapped = (delta < 0) & (-delta > modulus // 2)
    delta = np.where(wrapped, delta + modulus, delta)
    delta = np.where(missing, 0, delta)
    flags = (np.where(missing, F_MISSING, 0) | np.where(wrapped & ~missing, F_ROLLOVER, 0)
             | np.where((delta < 0), F_NEGATIVE, 0)).astype(np.uint8)
    for qual in (prev_quality, now_quality):
        if qual is not None:
            flags |= np.where(np.asarray(qual) & Q_ESTIMATED, F_ESTIMATED, 0).astype(np.uint8)
    return delta * np.asarray(multiplier, dtype=np.int64), flags


def segment_energy(prev: Mapping[str, npt.ArrayLike], now: Mapping[str, npt.ArrayLike], ct: npt.ArrayLike,
                   pt: npt.ArrayLike, digits: npt.ArrayLike = DEFAULT_DIGITS,
                   prev_quality: npt.ArrayLike | None = None, now_quality: npt.ArrayLike | None = None,
                   ) -> tuple[dict[str, npt.NDArray[np.int64]], npt.NDArray[np.uint8]]:
    """Energies of every register present in ``prev``/``now`` (keys: register names) and OR-ed flags.

    Returns ``({register name: int64 energy in 0.01 kWh}, flags)`` with the TOU check applied; the
    dict also has ``"flat_billed"``, the 平 energy to bill (total − 尖 − 峰 − 谷).
    """
    mult = np.asarray(ct, dtype=np.int64) * np.asarray(pt, dtype=np.int64)
    unknown = sorted(set(prev) - set(ENERGY_NAMES))
    if unknown:
        raise BillingError(f"readings: {unknown[0]!r} is not an energy register of storage.schema")
    out: dict[str, npt.NDArray[np.int64]] = {}
    flags: npt.NDArray[np.uint8] | None = None
    raw: dict[str, npt.NDArray[np.int64]] = {}
    for name in prev:
        e, f = register_energy(prev[name], now[name], 1, digits, prev_quality, now_quality)
        if name in TOU_NAMES:           # a single-rate meter has no TOU reading: not "missing"
            f = f & ~np.uint8(F_MISSING)
        raw[name] = e
        out[name] = e * mult
        flags = f if flags is None else flags | f
    total = raw["ae_fwd"]
    assert flags is not None                 # set by the loop: "ae_fwd" is among prev's registers
    tou_present = np.zeros(len(total), dtype=bool)
    if all(n in prev for n in TOU_NAMES):
        tou_present = np.any([np.asarray(prev[n]) >= 0 for n in TOU_NAMES], axis=0)
        mismatch = tou_registers_do_not_add_up([raw[n] for n in TOU_NAMES], total, tou_present)
        flags |= np.where(mismatch, F_TOU_MISMATCH, 0).astype(np.uint8)
        others = sum(out[n] for n in ("ae_fwd_t1", "ae_fwd_t2", "ae_fwd_t4"))
        out["flat_billed"] = np.where(tou_present, out["ae_fwd"] - others, out["ae_fwd"])
        for n in ("ae_fwd_t1", "ae_fwd_t2", "ae_fwd_t4"):
            out[n] = np.where(tou_present, out[n], 0)
    else:
        out["flat_billed"] = out["ae_fwd"].copy()
    return out, flags


def tou_registers_do_not_add_up(tou_energy: Sequence[npt.ArrayLike], total_energy: npt.ArrayLike,
                                tou_present: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """The segments whose TOU registers (尖/峰/平/谷) do not add up to the total register: an anomaly the
    bill is held for (DOMAIN.md: "TOU registers should sum to the total register; a mismatch is an anomaly").

    The rule as read here: the check is per register-reading pair of one segment (one meter under one
    multiplier, from its start reading to its end reading), on the energies in the meter's own units
    (0.01 kWh, *before* CT × PT — the tolerance is the meter's resolution: four registers each truncated to
    0.01 kWh miss the total by less than ``TOU_TOLERANCE``, whatever the multiplier), and a bill is held if
    any of its segments mismatches (the flags of the segments are united, :func:`sum_by_bill`).  A segment
    ending on a CT/PT change is checked like any other (both ends are 00:00 freezes of every register); one
    ending on a meter's removal reading (the total only) is not — its caller masks it (``tou_check``).
    ``tou_energy``: the four TOU registers' energies, ``tou_present``: where the meter has TOU registers.
    """
    tou_sum = sum(np.asarray(e, dtype=np.int64) for e in tou_energy)
    return np.asarray(tou_present, bool) & (np.abs(tou_sum - np.asarray(total_energy, np.int64)) > TOU_TOLERANCE)


def sum_by_bill(bill_index: npt.ArrayLike, n_bills: int,
                columns: Mapping[str, npt.ArrayLike]) -> dict[str, np.ndarray]:
    """Add segment columns into their bills (exactly: integer ``np.add.at``, not a float bincount); unsigned
    columns are flag sets and are OR-ed (a bill holds for the union of its segments' reasons)."""
    bill_index = np.asarray(bill_index, dtype=np.intp)
    out = {}
    for name, col in columns.items():
        acc = np.zeros(n_bills, dtype=np.asarray(col).dtype)
        if np.issubdtype(acc.dtype, np.unsignedinteger):
            np.bitwise_or.at(acc, bill_index, col)
        else:
            np.add.at(acc, bill_index, col)
        out[name] = acc
    return out


def transformer_loss(method: npt.ArrayLike, a_p: npt.ArrayLike, a_q: npt.ArrayLike, hours: npt.ArrayLike,
                     capacity_kva: npt.ArrayLike, p0_w: npt.ArrayLike, pk_w: npt.ArrayLike,
                     i0_x100: npt.ArrayLike, uk_x100: npt.ArrayLike, rate_x1e4: npt.ArrayLike,
                     fixed_p: npt.ArrayLike, fixed_q: npt.ArrayLike, line_loss_x1e4: npt.ArrayLike,
                     rate_q_x1e4: npt.ArrayLike | None = None,
                     ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """高供低计 losses added to the metered energy: (active loss, reactive loss), 0.01 kWh / kvarh.

    ``method`` per account: 0 none (高供高计), 1 formula, 2 agreed rate, 3 agreed fixed energy (table).

    Formula (变压器损耗, nameplate P0, Pk in W, I0 % and Uk % in 0.01 %, capacity S_N kVA, hours T)::

        ΔA = P0·T + Pk·β²·T,  β = √(A_P² + A_Q²) / (S_N·T)       (average load factor of the period)
        ΔQ = Q0·T + Qk·β²·T,  Q0 = I0%·S_N, Qk = Uk%·S_N

    in 0.01 kWh: ΔA = (P0·T² ·S_N²·10⁴ + Pk·(a_p² + a_q²)) / (10⁵·S_N²·T), rounded once; ΔQ by
    :func:`reactive_loss`.  The agreed rate takes ``rate_x1e4`` / 10⁴ of A_P (and ``rate_q_x1e4``, default
    the same rate, of A_Q).  The agreed line loss (线损, ``line_loss_x1e4``) is a share of
    the metered energy plus transformer loss, active only.  The squares overflow 64 bits, so the few
    高供低计 accounts are computed with Python integers on object arrays (vectorised, exact); the
    others get 0 without touching them.
    """
    method = np.asarray(method)
    n = len(method)
    loss_p = np.zeros(n, dtype=np.int64)
    loss_q = np.zeros(n, dtype=np.int64)
    idx = np.flatnonzero(method != 0)
    if len(idx) == 0:
        return loss_p, loss_q
    if rate_q_x1e4 is None:
        rate_q_x1e4 = rate_x1e4
    o = {k: np.broadcast_to(np.asarray(v), (n,))[idx].astype(object) for k, v in dict(
        m=method, ap=a_p, aq=a_q, t=hours, s=capacity_kva, p0=p0_w, pk=pk_w, i0=i0_x100, uk=uk_x100,
        rate=rate_x1e4, rq=rate_q_x1e4, fp=fixed_p, fq=fixed_q, line=line_loss_x1e4).items()}
    sq = o["ap"] * o["ap"] + o["aq"] * o["aq"]
    formula = o["m"] == 1
    # guard the divisors of the rows that do not use the formula (their result is discarded)
    s = np.where(formula, o["s"], 1).astype(object)
    t = np.where(formula, o["t"], 1).astype(object)
    f_p = _round_obj(o["p0"] * t * t * s * s * 10_000 + o["pk"] * sq, 100_000 * s * s * t)
    r_p = _round_obj(o["ap"] * o["rate"], 10_000)
    dp = np.where(formula, f_p, np.where(o["m"] == 2, r_p, o["fp"]))
    dq = reactive_loss(o["m"], o["ap"], o["aq"], t, s, o["i0"], o["uk"], o["rq"], o["fq"])
    dp = dp + _round_obj((o["ap"] + dp) * o["line"], 10_000)
    loss_p[idx] = dp.astype(np.int64)
    loss_q[idx] = dq.astype(np.int64)
    return loss_p, loss_q


def reactive_loss(method: npt.NDArray[Any], a_p: npt.NDArray[np.object_], a_q: npt.NDArray[np.object_],
                  hours: npt.NDArray[Any], capacity_kva: npt.NDArray[Any], i0_x100: npt.NDArray[np.object_],
                  uk_x100: npt.NDArray[np.object_], rate_q_x1e4: npt.NDArray[np.object_],
                  fixed_q: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Reactive transformer loss ΔQ, 0.01 kvarh (object arrays of Python ints, one entry per account).

    Ruling "Reactive loss counts wherever active loss counts" (DOMAIN.md): with the nameplate method
    (``method`` 1) ΔQ = Q0·T + Qk·β²·T, Q0 = I0%·S_N/100, Qk = Uk%·S_N/100 (I0, Uk in 0.01 %, kept in the
    archive) = (I0·S_N²·T²·10⁴ + Uk·(a_p² + a_q²)) / (10⁶·S_N·T); with an agreed rate (2) ΔQ = A_Q × the
    agreed reactive rate (``rate_q_x1e4``: the archive's reactive rate, else the active one); with an
    agreed table (3) ``fixed_q``.  Each rounded once, half away from zero.
    """
    sq = a_p * a_p + a_q * a_q
    formula = method == 1
    s = np.where(formula, capacity_kva, 1).astype(object)
    t = np.where(formula, hours, 1).astype(object)
    f_q = _round_obj(i0_x100 * s * s * t * t * 10_000 + uk_x100 * sq, 1_000_000 * s * t)
    r_q = _round_obj(a_q * rate_q_x1e4, 10_000)
    return np.where(formula, f_q, np.where(method == 2, r_q, fixed_q))


def _round_obj(num: npt.NDArray[Any], den: npt.NDArray[Any] | int) -> npt.NDArray[np.object_]:
    """:func:`billing_core.rounding.round_div` for object arrays of Python ints (no 64-bit limit)."""
    rounded: npt.NDArray[np.object_] = np.frompyfunc(round_div, 2, 1)(num, den)
    return rounded


@overload
def split_loss_over_tou(loss: npt.ArrayLike, periods: Sequence[npt.ArrayLike], demand: None = None,
                        ) -> tuple[tuple[npt.NDArray[np.int64], ...], None]: ...
@overload
def split_loss_over_tou(loss: npt.ArrayLike, periods: Sequence[npt.ArrayLike], demand: npt.ArrayLike,
                        ) -> tuple[tuple[npt.NDArray[np.int64], ...], npt.NDArray[np.int64]]: ...


def split_loss_over_tou(loss: npt.ArrayLike, periods: Sequence[npt.ArrayLike],
                        demand: npt.ArrayLike | None = None,
                        ) -> tuple[tuple[npt.NDArray[np.int64], ...], npt.NDArray[np.int64] | None]:
    """Add ``loss`` to the TOU period energies in proportion to their metered energy; scale demand alike.

    Ruling "Loss split over TOU periods" (DOMAIN.md): 尖, 峰 and 谷 get loss·E_p/E rounded half away from
    zero to 0.01 kWh (:func:`billing_core.rounding.round_div`, the project's one rounding rule), 平 takes
    the remainder, so the shares add up to the loss exactly; with no metered energy it all goes to 平.
    Demand becomes D·(E + loss)/E rounded (the loss's share of the period's energy applied to its peak;
    高供低计 losses count in the demand charge).
    """
    sharp, peak, flat, valley = (np.asarray(p, dtype=np.int64) for p in periods)
    loss = np.asarray(loss, dtype=np.int64)
    total = sharp + peak + flat + valley
    idx = np.flatnonzero((loss != 0) & (total > 0))
    out = [sharp.copy(), peak.copy(), flat + np.where(total > 0, 0, loss), valley.copy()]
    if len(idx):
        tot = total[idx].astype(object)
        ls = loss[idx].astype(object)
        added = 0
        for k in (0, 1, 3):
            share = _round_obj(ls * out[k][idx].astype(object), tot)
            out[k][idx] += share.astype(np.int64)
            added = added + share
        out[2][idx] += (ls - added).astype(np.int64)
    if demand is None:
        return tuple(out), None
    demand = np.asarray(demand, dtype=np.int64).copy()
    if len(idx):
        demand[idx] = _round_obj(demand[idx].astype(object) * (tot + ls), tot).astype(np.int64)
    return tuple(out), demand

"""An exact reference biller (电费核算 by hand): one customer at a time, ``fractions.Fraction`` arithmetic.

It recomputes every bill of a period from the archive (``archive.duckdb``) and the readings lake (the raw
Parquet part files) with queries of its own, and shares no code with ``billing_core`` but the tariff file
reader (:class:`billing_core.tariff.TariffSet`: the TOML files, their versions, seasons, prices, funds and
``price_from_tariff_assignment``, the file a tariff code names).  It is the independent side of ``tests/billing_core/test_billing_reference.py``, which compares it line
by line with the vectorised bill run (``gridhead bill run``).

What it implements, and where each rule is written:

* ../shared/DOMAIN.md "Billing rules" and its "Rulings" (cited as R1..R9 below:
  R1 one monthly cosφ, R2 reactive = |import| + |export|, R3 reactive loss, R4 one rounding per printed
  line, R5 loss over TOU periods, R6 the quantity beside a price, R7 annual-tier year-to-date from
  readings, R8 the tariff assignment chooses the price, R9 缺无功 held);
* the project's written conventions where DOMAIN.md leaves a point open, read (not imported) from
  ``billing_core/rounding.py`` (half away from zero, once per line, the scales), ``billing_core/energy.py``
  (rollover beyond half the range, 平段取差, TOU tolerance 4, the loss formula with T = days × 24 h and
  β = √(A_P² + A_Q²)/(S_N·T)), ``billing_core/run.py`` (review flags and their texts, the point's basic
  method and 力调 standard override the file's, the jump rule), ``billing_core/jobs/bills.py`` (which readings a
  segment starts and ends on, earlier bills for the jump history) and ``storage/archive.py`` (history
  rows, install / removal readings).  Where the run's code and those documents disagreed, the difference
  was written to the billing helper's notes and settled there (issue 15).

Money is exact: every line is a :class:`~fractions.Fraction` of fen summed over the parts of the month and
rounded once (R4).  A month splits at every day a tariff assignment or a version of the tariff in force
starts; each part's energy comes from that day's frozen reading where the bill has one segment and no
loss, else by days.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
from fractions import Fraction

import duckdb
import pyarrow as pa

from gridhead.billing_core.tariff import TariffSet          # the tariff file reader: the one shared piece

REGS = ("ae_fwd", "ae_fwd_t1", "ae_fwd_t2", "ae_fwd_t3", "ae_fwd_t4", "ae_rev", "re_fwd", "re_rev")
REG_CODE = {"ae_fwd": 1, "ae_fwd_t1": 2, "ae_fwd_t2": 3, "ae_fwd_t3": 4, "ae_fwd_t4": 5, "ae_rev": 6,
            "re_fwd": 7, "re_rev": 8, "md_fwd": 20}
Q_ESTIMATED = 2                 # storage.schema quality bit 估抄
TOU_TOLERANCE = 4               # 0.01 kWh (energy.py: four truncated registers may miss the total by < 4)
PERIODS = ("sharp", "peak", "flat", "valley")
TOU_REGS = ("ae_fwd_t1", "ae_fwd_t2", "ae_fwd_t3", "ae_fwd_t4")
JUMP_RATIO, JUMP_MIN_DAILY, REVERSE_MIN = 3, 100, 100      # run.py: 3×, 1 kWh/day, 1 kWh

# review reasons, as the bills table prints them (run.py REASONS)
MISSING, ESTIMATED, NEGATIVE, ROLLOVER, TOU_MISMATCH, ZERO = ("missing reading", "estimated reading",
                                                             "negative energy", "register rollover",
                                                             "TOU registers do not add up to the total",
                                                             "zero consumption")
JUMP, REVERSE, NO_POINT = "consumption jump vs history", "reverse energy registered", "no metering point"
NO_REACTIVE = "no reactive reading for the power-factor adjustment"          # R9 缺无功
YTD_UNKNOWN = "year-to-date energy unknown for the annual tiers"             # R7 年累计电量不明


def round_half_away(x: Fraction) -> int:
    """四舍五入 to an integer, half away from zero (rounding.py's one rule)."""
    n, d = abs(x.numerator), x.denominator
    q, r = divmod(n, d)
    q += 2 * r >= d
    return -q if x < 0 else q


def voltage_level(v: int) -> str:
    """The tariff files' voltage level of a supply voltage in V."""
    return "under_1kV" if v < 1000 else "1-10kV" if v <= 10_000 else f"{v // 1000}kV"


def pf_hundredths(p: int, q: int) -> int:
    """cosφ = P/√(P²+Q²) rounded to 0.01 (half up), −1 without active energy.  k/100 is the result iff
    k − ½ ≤ 100·P/S < k + ½; decided on squares, exactly."""
    if p <= 0:
        return -1
    s2 = p * p + q * q
    for k in range(100, -1, -1):
        lo = Fraction(2 * k - 1, 200)            # cosφ ≥ (k − ½)/100  ⇔  P² ≥ lo²·S²  (lo ≥ 0)
        if lo <= 0 or p * p >= lo * lo * s2:
            return k
    return 0


def pf_rate_bp(std: int, pf: int) -> int:
    """力调 rate in basis points from DOMAIN.md's table ((83)水电财字第215号)."""
    if pf < 0:
        return 0
    if pf < std:
        down = std - pf
        if down <= 20:
            return 50 * down                          # +0.5 % per 0.01
        if down <= 25:
            return 1000 + 100 * (down - 20)           # 10 % + 1 % per 0.01
        return 1500 + 200 * (down - 25)               # 15 % + 2 % per 0.01
    up = pf - std
    if std == 90:
        return -15 * min(up, 5)                       # −0.15 % per 0.01, −0.75 % from 0.95
    if std == 85:
        if pf <= 90:
            return -10 * up
        return {91: -65, 92: -80, 93: -95}.get(pf, -110)
    if std == 80:
        if pf <= 90:
            return -10 * up
        return -115 if pf == 91 else -130
    raise ValueError(std)


# --- the data, read with queries of our own ------------------------------------------------------------
@dataclasses.dataclass
class Reading:
    regs: dict                  # register name -> value (0.01 kWh / 1e-4 kW), absent = not read
    quality: int


def _rows(con, sql: str, params=None) -> list[dict]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


class Data:
    """The archive's rows and the lake's readings, per key, as Python objects."""

    def __init__(self, data_dir, extra_days=()):
        d = pathlib.Path(data_dir)
        con = duckdb.connect()
        con.execute(f"ATTACH '{d / 'archive.duckdb'}' AS a (READ_ONLY)")
        cols = {r["column_name"] for r in _rows(con, "SELECT column_name FROM duckdb_columns() "
                                                     "WHERE database_name = 'a' AND table_name = 'customers'")}
        self.customers = {r["customer_id"]: r for r in _rows(con, "SELECT * FROM a.customers")}
        self.has_opening = "opening_ytd_kwh_x100" in cols
        self.assignments: dict = {}
        for r in _rows(con, "SELECT * FROM a.customer_tariffs ORDER BY customer_id, valid_from"):
            self.assignments.setdefault(r["customer_id"], []).append(r)
        self.points: dict = {}
        for r in _rows(con, "SELECT * FROM a.points WHERE role = 'customer' ORDER BY point_id"):
            self.points.setdefault(r["customer_id"], []).append(r)
        self.multipliers: dict = {}
        for r in _rows(con, "SELECT * FROM a.point_multipliers ORDER BY point_id, valid_from"):
            self.multipliers.setdefault(r["point_id"], []).append(r)
        self.point_meters: dict = {}
        for r in _rows(con, "SELECT * FROM a.point_meters ORDER BY point_id, valid_from"):
            self.point_meters.setdefault(r["point_id"], []).append(r)
        self.digits = {r["meter_id"]: r["register_digits"] for r in _rows(con, "SELECT * FROM a.meters")}
        self.readings = {"monthly": {}, "daily": {}}
        # the daily freezes a bill can read: of every meter on the 1st (where the settlement reading is missing),
        # tariff version days and go-live dates; of a customer's meters on the days its point's meter or
        # multiplier history or its tariff assignment changes
        every = set(extra_days)
        if self.has_opening:
            every |= {c["opening_ytd_date"] for c in self.customers.values()}
        every.discard(None)
        pairs = set()
        for cid, points in self.points.items():
            for point in points:
                pid = point["point_id"]
                meters = {r["meter_id"] for r in self.point_meters.get(pid, [])}
                days = {r[k] for rows in (self.assignments.get(cid, []), self.multipliers.get(pid, []),
                                          self.point_meters.get(pid, [])) for r in rows
                        for k in ("valid_from", "valid_to")} - {None}
                pairs |= {(m, day) for m in meters for day in days}
        con.register("_every", pa.table({"date": pa.array(sorted(every), pa.date32())}))
        con.register("_pairs", pa.table({"meter_id": pa.array([m for m, _ in pairs], pa.int64()),
                                         "date": pa.array([day for _, day in pairs], pa.date32())}))
        days = every | {day for _, day in pairs}
        lake = d / "lake" / "readings"
        codes = {c: n for n, c in REG_CODE.items()}
        for kind in ("monthly", "daily"):
            files = []
            for part in sorted((lake / f"kind={kind}").glob("date=*")):
                day = dt.date.fromisoformat(part.name.split("=", 1)[1])
                if kind == "monthly" or day.day == 1 or day in days:
                    files += [str(f) for f in sorted(part.glob("bucket=*/part-*.parquet"))]
            if not files:
                continue
            src = (f"read_parquet({files!r}, hive_partitioning = true, "
                   f"hive_types = {{'date': DATE, 'bucket': INTEGER}})")
            if kind == "daily":
                src = f"""(SELECT * FROM {src} x WHERE day(x.date) = 1 OR x.date IN (SELECT date FROM _every)
                           OR EXISTS (SELECT 1 FROM _pairs p WHERE p.meter_id = x.meter_id AND p.date = x.date))"""
            # the last received value of a register wins; the quality of a meter-day is all its rows' OR-ed
            q = f"""WITH r AS (SELECT meter_id, date, register, value, quality, received_utc FROM {src})
                    SELECT r1.meter_id, r1.date, r1.register, r1.v, qd.q FROM
                      (SELECT meter_id, date, register, arg_max(value, received_utc) AS v FROM r
                       GROUP BY ALL) r1
                    JOIN (SELECT meter_id, date, bit_or(quality) AS q FROM r GROUP BY ALL) qd
                      USING (meter_id, date)"""
            store = self.readings[kind]
            for meter, date, reg, v, qual in con.execute(q).fetchall():
                if reg not in codes:
                    continue
                rd = store.get((meter, date))
                if rd is None:
                    rd = store[(meter, date)] = Reading({}, int(qual))
                rd.regs[codes[reg]] = int(v)
        con.close()

    def reading(self, meter: int, date: dt.date) -> Reading | None:
        """The 00:00 reading of ``date``: the monthly settlement one where it has the total, else the
        daily frozen one (billing_core/jobs/bills.py)."""
        m = self.readings["monthly"].get((meter, date))
        if m is not None and "ae_fwd" in m.regs:
            return m
        return self.readings["daily"].get((meter, date))


# --- energy of a stretch of time: segments of one meter and one multiplier --------------------------------
@dataclasses.dataclass
class Segment:
    meter: int
    frm: dt.date
    to: dt.date
    ct: int
    pt: int
    modulus: int
    prev: dict                  # register -> value or None
    now: dict
    prev_quality: int
    now_quality: int
    tou_check: bool             # False when the end is a removal reading (TOU registers end at the freeze)
    md: int | None


def segments(data: Data, customer_id: int, start: dt.date, end: dt.date) -> list[Segment]:
    """Meter history (换表) × multiplier history (倍率变更) of the customer's points, clipped to
    [start, end); each read from its start to its end (archive.py: a meter removed on day R keeps the 00:00
    reading of R; the new one starts at its install reading)."""
    out = []
    for point in data.points.get(customer_id, []):
        pid = point["point_id"]
        for pm in data.point_meters.get(pid, []):
            m_to = pm["valid_to"] or end
            if not (pm["valid_from"] < end and m_to > start):
                continue
            for mu in data.multipliers.get(pid, []):
                u_to = mu["valid_to"] or end
                frm = max(pm["valid_from"], mu["valid_from"], start)
                to = min(m_to, u_to, end)
                if frm >= to:
                    continue
                meter = pm["meter_id"]
                installed = frm == pm["valid_from"] and frm > start
                removed = pm["valid_to"] is not None and to == pm["valid_to"] and to < end
                if installed:
                    inst = pm["install_reading_x100"]
                    # the archive keeps the total's install reading; a new meter installed at zero has
                    # every register at zero
                    prev = {r: (inst if r == "ae_fwd" else (0 if inst == 0 else None)) for r in REGS}
                    pq_ = 0
                else:
                    rd = data.reading(meter, frm)
                    prev = {r: (rd.regs.get(r) if rd else None) for r in REGS}
                    pq_ = rd.quality if rd else 0
                rn = data.reading(meter, to)
                now = {r: (rn.regs.get(r) if rn else None) for r in REGS}
                if removed and pm["removal_reading_x100"] is not None:
                    now["ae_fwd"] = pm["removal_reading_x100"]
                mon = data.readings["monthly"].get((meter, to))
                md = mon.regs.get("md_fwd") if mon else None
                out.append(Segment(meter, frm, to, mu["ct_ratio"], mu["pt_ratio"],
                                   10 ** (data.digits[meter] + 2), prev, now, pq_, rn.quality if rn else 0,
                                   not removed, md))
    out.sort(key=lambda s: s.frm)
    return out


def register_delta(prev, now, modulus) -> tuple[int, set]:
    """now − prev in the register's scale, with rollover past 99…99 (a backwards step of more than half
    the range), negative kept; a missing reading gives 0."""
    if prev is None or now is None:
        return 0, {MISSING}
    d = now - prev
    if d < 0 and -d > modulus // 2:
        return d + modulus, {ROLLOVER}
    return d, ({NEGATIVE} if d < 0 else set())


def segment_energy(s: Segment, now: dict | None = None, tou_check: bool | None = None) -> tuple[dict, set]:
    """Per register energy × CT × PT of one segment (to ``now`` if given) and the review reasons."""
    now = s.now if now is None else now
    tou_check = s.tou_check if tou_check is None else tou_check
    mult = s.ct * s.pt
    raw, reasons = {}, set()
    for r in ("ae_fwd", *TOU_REGS):
        d, f = register_delta(s.prev[r], now[r], s.modulus)
        if r in TOU_REGS:
            f = f - {MISSING}                    # a single-rate meter has no TOU registers
        raw[r] = d
        reasons |= f
    if s.prev_quality & Q_ESTIMATED or s.now_quality & Q_ESTIMATED:
        reasons.add(ESTIMATED)
    tou = any(s.prev[r] is not None for r in TOU_REGS)
    if tou and tou_check and abs(sum(raw[r] for r in TOU_REGS) - raw["ae_fwd"]) > TOU_TOLERANCE:
        reasons.add(TOU_MISMATCH)
    e = {"total": raw["ae_fwd"] * mult}
    if tou:
        e["sharp"], e["peak"], e["valley"] = (raw[r] * mult for r in ("ae_fwd_t1", "ae_fwd_t2", "ae_fwd_t4"))
        e["flat"] = e["total"] - e["sharp"] - e["peak"] - e["valley"]       # 平段取差
    else:
        e.update(sharp=0, peak=0, valley=0, flat=e["total"])
    return e, reasons


# --- tariffs -----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Part:
    """One stretch of the month under one tariff version and season (a charge part)."""

    frm: dt.date
    to: dt.date
    days: int
    tariff: object
    version: object
    season: object
    prices: dict                 # µyuan
    funds: tuple                 # Fund objects charged
    basic: str                   # none | capacity | contract_demand | actual_demand (after the point's choice)
    energy: dict = dataclasses.field(default_factory=dict)     # period -> 0.01 kWh (losses included)


def _tariff_for(ts: TariffSet, code: str | None, category: str):
    """The tariff file that prices a customer assigned ``code`` (R8): the file whose ``codes`` list it, else
    the category's default file (the tariff file reader's lookup)."""
    return ts.tariff(ts.price_from_tariff_assignment(code, category))


def _funds_of(ts: TariffSet, version, season, category: str) -> tuple:
    """Funds of a tariff version's season: those in force on its first day in that season
    (tariff.py: a fund change inside a tariff version needs a new tariff version); exemptions by category."""
    day = max(version.effective, dt.date(version.effective.year, min(season.months), 1))
    found = [fs for eff, fs in ts.funds if eff <= day]
    return tuple(f for f in (found[-1] if found else ()) if category not in f.exempt)


# --- one bill ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Bill:
    customer_id: int
    reasons: set
    items: list                  # (code, quantity, unit_price, amount_fen)
    e_total: int = 0             # settlement energy (losses included)
    e_metered: int = 0
    loss_p: int = 0
    loss_q: int = 0
    q: int = 0
    demand: int = 0
    pf_x100: int = -1
    pf_bp: int = 0
    days: int = 0
    parts: int = 1
    segments: int = 0
    loss_method: str = ""        # nameplate | agreed | "" (what the comparison's fleet is checked to contain)
    over_105: bool = False       # contract demand: D > 1.05 C
    ytd: int | None = None       # annual tiers: the year-to-date before the period

    @property
    def held(self) -> bool:
        return bool(self.reasons)

    @property
    def total_fen(self) -> int:
        return sum(a for c, _q, _p, a in self.items if c != "total")


class Reference:
    """Bills of periods, one customer at a time.  ``history`` keeps this biller's own earlier bills (the
    jump check's three latest periods), so bill the periods in order, as the run does."""

    def __init__(self, data_dir, tariffs_dir=None):
        self.tariffs = TariffSet.load(tariffs_dir)
        self.data = Data(data_dir, {v.effective for t in self.tariffs.tariffs.values() for v in t.versions})
        self.history: dict = {}          # period -> {customer_id: (held, e_metered, days)}

    def bill_period(self, period: str) -> dict:
        y, m = (int(x) for x in period.split("-"))
        start = dt.date(y, m, 1)
        end = dt.date(y + m // 12, m % 12 + 1, 1)
        earlier = sorted(p for p in self.history if p < period)[-3:]
        out = {}
        for cid in sorted(self.data.customers):
            hist = [self.history[p][cid] for p in earlier if cid in self.history[p]]
            out[cid] = self.bill(cid, start, end, hist)
        self.history[period] = {cid: (b.held, b.e_metered, b.days) for cid, b in out.items()}
        return out

    # the year-to-date of annual tiers (R7)
    def year_to_date(self, cid: int, start: dt.date) -> int | None:
        """Metered energy (no losses) from the tier year's start (1 January) to ``start``, from readings,
        or from an opening year-to-date imported at go-live plus readings since its date; None if it
        cannot be established."""
        c = self.data.customers[cid]
        frm, base = dt.date(start.year, 1, 1), 0
        od = c.get("opening_ytd_date") if self.data.has_opening else None
        if od is not None and od.year == start.year and od <= start:
            frm, base = od, c["opening_ytd_kwh_x100"]
        if frm >= start:
            return base
        segs = segments(self.data, cid, frm, start)
        covered = sum((s.to - s.frm).days for s in segs)
        if covered < (start - frm).days:
            return None                   # part of the year has no meter: the energy is not known
        total = 0
        for s in segs:
            e, reasons = segment_energy(s)
            if reasons & {MISSING, NEGATIVE}:           # a missing or backwards reading: not established
                return None
            total += e["total"]
        return base + total

    def bill(self, cid: int, start: dt.date, end: dt.date, hist: list) -> Bill:
        data, ts = self.data, self.tariffs
        c = data.customers[cid]
        period_days = (end - start).days
        points = data.points.get(cid, [])
        point = points[0] if points else {}
        segs = segments(data, cid, start, end)
        b = Bill(cid, set(), [], days=period_days, segments=len(segs))

        # energy per segment, added per bill (换表, 倍率变更)
        e = {p: 0 for p in ("total", *PERIODS)}
        q_fwd = q_rev = rev = 0
        has_q = False
        q_reasons: set = set()
        assessed = point.get("pf_standard_x100", 0) > 0
        for s in segs:
            es, reasons = segment_energy(s)
            b.reasons |= reasons
            for k in e:
                e[k] += es[k]
            mult = s.ct * s.pt
            d, _ = register_delta(s.prev["ae_rev"], s.now["ae_rev"], s.modulus)
            rev += d * mult
            if s.prev["re_fwd"] is not None or s.now["re_fwd"] is not None:
                has_q = True
            d, f = register_delta(s.prev["re_fwd"], s.now["re_fwd"], s.modulus)
            q_fwd += d * mult
            q_reasons |= f & {MISSING, NEGATIVE, ROLLOVER}
            if s.prev["re_rev"] is not None and s.now["re_rev"] is not None:      # exported reactive (R2)
                d, f = register_delta(s.prev["re_rev"], s.now["re_rev"], s.modulus)
                q_rev += d * mult
                q_reasons |= f & {NEGATIVE, ROLLOVER}
            elif (s.prev["re_rev"] is None) != (s.now["re_rev"] is None):         # one of its readings missing
                q_reasons.add(MISSING)
        b.e_metered = e["total"]
        if assessed and has_q:              # a reactive reading missing is a missing reading (run.py)
            b.reasons |= q_reasons
        demand = max([s.md * s.ct * s.pt for s in segs if s.md is not None and s.md >= 0], default=0)
        if rev >= REVERSE_MIN:
            b.reasons.add(REVERSE)
        if not segs:
            b.reasons |= {NO_POINT, MISSING}
        elif e["total"] == 0 and MISSING not in b.reasons:
            b.reasons.add(ZERO)
        hist_e = sum(h[1] for h in hist if not h[0])
        hist_days = sum(h[2] for h in hist if not h[0])
        if hist_days > 0 and hist_e >= JUMP_MIN_DAILY * hist_days and e["total"] > 0:
            cur, past = e["total"] * hist_days, hist_e * period_days
            if cur > JUMP_RATIO * past or JUMP_RATIO * cur < past:
                b.reasons.add(JUMP)
        if assessed and not has_q:
            b.reasons.add(NO_REACTIVE)                                          # R9 缺无功

        # 高供低计: transformer and line loss (DOMAIN.md; R3 reactive loss; R5 over the TOU periods)
        periods = {p: max(e[p], 0) for p in PERIODS}      # held bills are priced with negative energy as 0
        a_p = sum(periods.values())
        a_q = abs(q_fwd) + abs(q_rev)                                           # R2
        loss_p, loss_q = self.loss(point, a_p, a_q, period_days)
        if point.get("hv_metered_lv"):
            b.loss_method = "nameplate" if point.get("tx_p0_w") is not None and point.get("tx_pk_w") is not None \
                else "agreed"
        if loss_p and a_p > 0:
            shares = {p: round_half_away(Fraction(loss_p * periods[p], a_p)) for p in ("sharp", "peak", "valley")}
            shares["flat"] = loss_p - sum(shares.values())
            demand = round_half_away(Fraction(demand * (a_p + loss_p), a_p))
        else:
            shares = {"sharp": 0, "peak": 0, "valley": 0, "flat": loss_p}
        settle = {p: periods[p] + shares[p] for p in PERIODS}
        b.e_total, b.loss_p, b.loss_q, b.demand = a_p + loss_p, loss_p, loss_q, demand
        b.q = a_q + loss_q

        # the parts of the month: tariff assignment changes (R8) and tariff versions in force
        parts = self.parts(c, point, start, end)
        b.parts = len(parts)
        self.split_energy(parts, settle, segs, loss_p, start, period_days)

        # annual tiers: the year-to-date before the period (R7)
        first = parts[0]
        ytd = 0
        if any(p.version.tiers == "annual" for p in parts):
            ytd = b.ytd = self.year_to_date(cid, start)
            if ytd is None:
                b.reasons.add(YTD_UNKNOWN)
                ytd = 0

        # 力调 standard: the point's (run.py: it overrides the file's); assessed only with a reactive reading
        std = point.get("pf_standard_x100", 0) if (assessed and has_q) else 0
        b.pf_x100 = pf_hundredths(b.e_total, b.q) if std else -1            # R1: one cosφ of the month
        b.pf_bp = pf_rate_bp(std, b.pf_x100) if std else 0

        # the lines, each summed exactly over the parts and rounded once (R4)
        mixed = len(parts) > 1
        fen = Fraction(1, 10 ** 6)                   # 0.01 kWh × µyuan → fen
        items = []
        for p in PERIODS:
            amount = round_half_away(sum(Fraction(pt.energy[p] * pt.prices[p]) * fen for pt in parts))
            qty = sum(pt.energy[p] for pt in parts)
            if qty or amount:
                items.append((f"energy_{p}", qty, -1 if mixed else first.prices[p], amount))
        t2 = t3 = 0
        t2_money = t3_money = Fraction(0)
        cum = ytd
        for pt in parts:
            v = pt.version
            e_part = sum(pt.energy.values())
            if v.tiers == "none":
                cum += e_part                   # still energy of the tier year
                continue
            lim2, lim3 = v.tier_limits_kwh[0] * 100, v.tier_limits_kwh[1] * 100
            if v.tiers == "monthly":             # monthly limits by days of a partial month, from zero
                lim2 = round_half_away(Fraction(lim2 * pt.days, period_days))
                lim3 = round_half_away(Fraction(lim3 * pt.days, period_days))
                c0 = 0
            else:
                c0 = cum
            c1 = c0 + e_part
            w = lim3 - lim2
            e2 = min(max(c1 - lim2, 0), w) - min(max(c0 - lim2, 0), w)
            e3 = max(c1 - lim3, 0) - max(c0 - lim3, 0)
            t2 += e2
            t3 += e3
            t2_money += Fraction(e2 * v.tier_increments_uyuan[0]) * fen
            t3_money += Fraction(e3 * v.tier_increments_uyuan[1]) * fen
            cum += e_part
        if t2:
            items.append(("tier2", t2, -1 if mixed else first.version.tier_increments_uyuan[0], round_half_away(t2_money)))
        if t3:
            items.append(("tier3", t3, -1 if mixed else first.version.tier_increments_uyuan[1], round_half_away(t3_money)))
        if any(pt.basic != "none" for pt in parts):     # 1583号: by days of the parts under a two-part tariff
            money = Fraction(0)
            qty = price0 = None
            for pt in parts:
                if pt.basic == "capacity":
                    kva = max(point.get("tx_capacity_kva") or 0, 0)
                    money += Fraction(kva * pt.prices.get("capacity", 0) * pt.days, period_days * 10 ** 4)
                    bd, price = kva * 10_000, pt.prices.get("capacity", 0)
                elif pt.basic in ("contract_demand", "actual_demand"):
                    if pt.basic == "contract_demand":      # 1583号: D ≤ 1.05C → C; else 1.05C + 2(D − 1.05C)
                        ckw = max(point.get("contract_demand_kw") or 0, 0)
                        bd = ckw * 10_000 if demand <= ckw * 10_500 else 2 * demand - ckw * 10_500
                        b.over_105 = demand > ckw * 10_500
                    else:
                        bd = demand
                    price = pt.prices.get("demand", 0)
                    money += Fraction(bd * price * pt.days, period_days * 10 ** 8)
                else:
                    continue
                if qty is None:
                    qty, price0 = bd, price
            items.append(("basic", qty or 0, -1 if mixed else (price0 or 0), round_half_away(money)))
        adjustable = sum(a for _c, _q, _p, a in items)        # the printed energy, tier and basic lines
        if std:
            items.append(("pf_adjust", b.pf_x100, b.pf_bp, round_half_away(Fraction(adjustable * b.pf_bp, 10_000))))
        funds_money = sum(Fraction(sum(pt.energy.values()) * sum(f.price_uyuan for f in pt.funds)) * fen
                          for pt in parts)
        items.append(("funds", b.e_total, -1 if mixed else sum(f.price_uyuan for f in first.funds),   # R6
                      round_half_away(funds_money)))
        items.append(("total", 0, -1 if mixed else 0, sum(a for _c, _q, _p, a in items)))
        b.items = items
        return b

    def loss(self, point: dict, a_p: int, a_q: int, period_days: int) -> tuple[int, int]:
        """(active, reactive) loss of a 高供低计 point in 0.01 kWh / kvarh, each rounded once."""
        if not point or not point.get("hv_metered_lv"):
            return 0, 0
        p0, pk = point.get("tx_p0_w"), point.get("tx_pk_w")
        rate = point.get("tx_loss_rate_bp")
        if p0 is not None and pk is not None:
            # nameplate: ΔA = P0·T + Pk·β²·T, ΔQ = Q0·T + Qk·β²·T, Q0 = I0%·Se/100, Qk = Uk%·Se/100,
            # β = √(A_P² + A_Q²)/(Se·T), T = the period's hours (energy.py)
            se = max(point.get("tx_capacity_kva") or 0, 1)
            t = period_days * 24
            beta2 = Fraction(a_p * a_p + a_q * a_q, 10_000) / (se * t) ** 2     # kWh² / (kVA·h)²
            dp = (Fraction(p0, 1000) * t + Fraction(pk, 1000) * beta2 * t) * 100
            i0 = Fraction(point.get("tx_i0_x100") or 0, 100)               # I0 in %, from 0.01 %
            uk = Fraction(point.get("tx_uk_x100") or 0, 100)
            q0, qk = i0 * se / 100, uk * se / 100                          # kvar: Q0 = I0%·Se/100, Qk = Uk%·Se/100
            dq = (q0 * t + qk * beta2 * t) * 100
            loss_p, loss_q = round_half_away(dp), round_half_away(dq)
        elif rate is not None:
            qrate = point.get("tx_q_loss_rate_bp")
            qrate = rate if qrate is None else qrate
            loss_p = round_half_away(Fraction(a_p * rate, 10_000))
            loss_q = round_half_away(Fraction(a_q * qrate, 10_000))
        else:
            loss_p = loss_q = 0
        line = point.get("line_loss_rate_bp")
        if line:
            loss_p += round_half_away(Fraction((a_p + loss_p) * line, 10_000))
        return loss_p, loss_q

    def parts(self, c: dict, point: dict, start: dt.date, end: dt.date) -> list[Part]:
        """Split the month at each day a tariff assignment (R8) or a tariff version starts."""
        ts = self.tariffs
        rows = [r for r in self.data.assignments.get(c["customer_id"], [])
                if r["valid_from"] < end and (r["valid_to"] is None or r["valid_to"] > start)]
        cuts = {start}
        for r in rows:
            if start < r["valid_from"] < end:
                cuts.add(r["valid_from"])

        def code_on(day):
            hit = [r for r in rows if r["valid_from"] <= day and (r["valid_to"] is None or r["valid_to"] > day)]
            return hit[-1]["tariff_code"] if hit else (rows[0]["tariff_code"] if rows else None)

        stretches = sorted(cuts)
        for frm, to in zip(stretches, stretches[1:] + [end]):    # a version starting inside a stretch
            t = _tariff_for(ts, code_on(frm), c["category"])
            cuts |= {v.effective for v in t.versions if frm < v.effective < to}
        cuts = sorted(cuts)
        out = []
        for frm, to in zip(cuts, cuts[1:] + [end]):
            t = _tariff_for(ts, code_on(frm), c["category"])
            v = t.version_on(frm)
            s = v.season_of(frm.month)
            level = voltage_level(c["voltage_v"])
            prices = s.prices[level]
            pb = point.get("basic_charge") or "none"
            basic = pb if (v.basic != "none" and pb != "none") else v.basic
            out.append(Part(frm, to, (to - frm).days, t, v, s, prices, _funds_of(ts, v, s, t.category), basic))
        return out

    def split_energy(self, parts: list[Part], settle: dict, segs: list, loss_p: int, start, period_days):
        """Each part's TOU energies: at a change day by that day's frozen reading where the bill has one
        segment, no loss and a clean reading; else by days (the first parts rounded half away from zero on
        the cumulative days, the last takes the rest)."""
        if len(parts) == 1:
            parts[0].energy = dict(settle)
            return
        cum_before = []
        for pt in parts[1:]:
            days1 = (pt.frm - start).days
            by_days = {p: round_half_away(Fraction(settle[p] * days1, period_days)) for p in PERIODS}
            got = None
            if len(segs) == 1 and loss_p == 0:
                s = segs[0]
                rd = self.data.reading(s.meter, pt.frm)
                if s.frm <= pt.frm < s.to and rd is not None:
                    now = {r: rd.regs.get(r) for r in REGS}
                    es, reasons = segment_energy(s, now, tou_check=True)
                    if not reasons & {MISSING, NEGATIVE, ROLLOVER, TOU_MISMATCH} and \
                            all(0 <= es[p] <= settle[p] for p in PERIODS):
                        got = {p: es[p] for p in PERIODS}
            cum_before.append(got or by_days)
        prev = {p: 0 for p in PERIODS}
        for pt, cb in zip(parts, cum_before):
            pt.energy = {p: cb[p] - prev[p] for p in PERIODS}
            prev = cb
        parts[-1].energy = {p: settle[p] - prev[p] for p in PERIODS}

"""The fleet simulator's meters: who they are (the fleet) and what their registers say (the model).

**The fleet** — which concentrators (集中器) exist, their addresses, and which meters sit behind each:

* :func:`load_gen_dir` — exactly the fleet of a ``gridhead gen`` directory: routes from its archive
  (``storage.archive.Archive(...).meter_routes()``), the register model from the same generator
  configuration (``ground_truth/summary.json``), so the head-end accepts every login;
* :func:`standalone` — N terminals with about M meters each, derived from the seed (a generator fleet
  of N × M customers whose meters — with the generator's area check, feeder, PV and replacement meters
  spread evenly among them — are dealt to terminals in meter-id order; terminal ``i`` has address
  ``3201`` + ``i`` in 8 digits); :func:`write_standalone_archive` writes the matching archive files,
  which ``gridhead archive import`` accepts.

**The model** (:class:`RegisterModel`) — registers are never stored per meter per day; they are
computed on demand, vectorised over the meters asked for:

    inc(m, j)  = rint(base(m) × season_weekday(day j)[category] × noise(m, j) × 100 / (CT × PT))
    total(m, d) = (r0(m) + Σ_{j<d} inc(m, j)) mod 10^(digits+2)       (0.01 kWh, frozen at d 00:00)

with ``base``, ``r0``, the multiplier and the category from :meth:`storage.generator.FleetGenerator.meter_model`
and the shapes ``season_weekday`` / ``tou_shares`` / ``HOURLY_SHAPES`` of :mod:`storage.generator`.  The
noise is a counter-based hash of (seed, meter, day) — lognormal σ 0.15 like the generator's — so any
meter's register on any day costs O(days) and any order of requests gives the same answer.  Each day's
increment is split over 尖/峰/平/谷 by ``generator.split_tou`` (floor three, the fourth takes the rest), so
the four TOU registers sum to the total exactly.  Reactive registers follow tanφ like the generator's;
the reverse register stays at its initial value.  Energy flows as in the generator (:class:`Flows`): an
area's check meter (考核表) registers what its customers' meters register that day / (1 − the area's loss
rate, ±10 % by day) less the PV generation inside it, a feeder's outgoing meter (出线表) the supply of its
areas plus its dedicated-transformer customers with their transformer loss (变损 ΔA = P0·T + Pk·β²·T), / 0.98;
a 高供高计 customer's meter, on the high side, registers its transformer's loss with its load.  So line loss
(线损) computed from the simulated readings is the loss put in, on any day.  A replaced meter (换表) stops the day it is swapped,
its replacement starts that day.  Which freezes a meter has (:meth:`RegisterModel.installed`) follow the
archive's ``point_meters`` validity, as ``storage.collection`` expects them: the original meter up to
and including its removal day's 00:00 freeze (``valid_to``), the replacement from the freeze after its
install day (``valid_from`` < D) — the generator's rule.
"""

from __future__ import annotations

import datetime as _dt
import json
import pathlib
import tempfile

import numpy as np

from gridhead.protocols.errors import GridheadError
from gridhead.storage import generator as gen

P_RS485_1 = 0xF2010201            # profile.PORT_RS485_1: the port of a meter the archive gives none
ENERGY_REGS = gen.ENERGY_REGS      # register columns: ae_fwd, t1..t4, ae_rev, re_fwd, re_rev
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class SimulatorError(GridheadError):
    """The simulator cannot start: bad fleet directory, sizes, address."""


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser over a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def unit_hash(seed: int, a, b, salt: int = 0) -> np.ndarray:
    """Uniform [0, 1) from (seed, a, b, salt), broadcast over arrays a and b: deterministic, order-free."""
    a = np.asarray(a, np.int64).astype(np.uint64)
    b = np.asarray(b, np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = np.uint64((seed * 0x9E3779B97F4A7C15 + salt * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)
        h = _mix(_mix(a * np.uint64(0xA24BAED4963EE407) + x) + b * np.uint64(0x9FB21C651E98DF25))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class RegisterModel:
    """Registers of M meters as functions of (meter index, day); see the module docstring.

    ``start``: the local date of day 0 (the generator's first freeze).  Days are integers relative
    to it; freeze ``d`` is at ``start + d`` 00:00 local time.
    """

    __slots__ = ("seed", "start", "cat", "base", "mult", "r0", "modulus", "reactive", "tan", "stop_day",
                 "start_day", "first_freeze", "last_freeze", "_cum_hour", "_sw_cache", "flows")

    def __init__(self, cols: dict, start: _dt.date, seed: int):
        self.seed = int(seed)
        self.start = start
        self.cat = cols["category"].astype(np.int64)
        self.base = cols["base_kwh"].astype(np.float64)
        self.mult = cols["multiplier"].astype(np.float64)
        self.r0 = cols["registers"].astype(np.int64)
        self.modulus = cols["modulus"].astype(np.int64)
        self.reactive = cols["reactive"].astype(bool)
        self.tan = cols["tan_phi"].astype(np.float64)
        rd = cols["replaced_day"]
        self.stop_day = np.where(rd >= 0, rd, np.iinfo(np.int64).max)   # consumes days j < stop_day
        self.start_day = cols["installed_day"].astype(np.int64)          # ... and j >= start_day
        # freezes the archive expects of each meter: [first_freeze, last_freeze] (module docstring)
        self.last_freeze = self.stop_day
        self.first_freeze = np.full(len(self.base), np.iinfo(np.int64).min)
        new = np.asarray(cols.get("new_meter", ()), np.int64)
        self.first_freeze[new] = self.start_day[new] + 1
        shapes = gen.HOURLY_SHAPES
        # cumulative share of a day's energy by the end of each hour, per category (+ a flat row for -1)
        flat = np.full((1, 24), 1 / 24)
        self._cum_hour = np.concatenate([np.zeros((5, 1)), np.cumsum(np.vstack([shapes, flat]), axis=1)], axis=1)
        self._sw_cache: dict[int, np.ndarray] = {}
        self.flows: Flows | None = cols.get("flows")

    def __len__(self) -> int:
        return len(self.base)

    def date(self, d: int) -> _dt.date:
        return self.start + _dt.timedelta(days=int(d))

    def day_of(self, date: _dt.date) -> int:
        return (date - self.start).days

    def installed(self, idx, d: int):
        """Is meter ``idx`` (an index or an array) in place at freeze ``d`` (the archive's validity)?"""
        return (self.first_freeze[idx] <= d) & (d <= self.last_freeze[idx])

    def _factors(self, days: np.ndarray) -> np.ndarray:
        """(days, 5) season × weekday multiplier by category; column 4 (category -1) is 1."""
        out = np.empty((len(days), 5))
        for k, j in enumerate(days.tolist()):
            f = self._sw_cache.get(j)
            if f is None:
                f = self._sw_cache[j] = np.append(gen.season_weekday(self.date(j)), 1.0)
            out[k] = f
        return out

    def increments(self, idx: np.ndarray, days: np.ndarray) -> np.ndarray:
        """(k, len(days)) active-energy increment of each meter on each consumption day, 0.01 kWh."""
        idx = np.asarray(idx, np.int64)
        days = np.asarray(days, np.int64)
        kwh = self.own_kwh(idx, days)
        if self.flows is None:
            return np.rint(kwh * 100 / self.mult[idx, None]).astype(np.int64)
        kwh = self.flows.registered(self, idx, days, kwh)
        inc = np.rint(kwh * 100 / self.mult[idx, None]).astype(np.int64)
        for k in np.flatnonzero(self.flows.kind[idx] == 2):
            inc[k] = self._accumulated(int(idx[k]), days)
        return inc

    def _accumulated(self, m: int, days: np.ndarray) -> np.ndarray:
        """Increments of meter ``m`` as a register counts them — rounded on the running total from day 0,
        not day by day — for a feeder's outgoing meter, whose unit (0.01 kWh × CT × PT = 120 kWh) is
        coarse against a small fleet's day: rounding each day would lose the fractions systematically."""
        if not len(days):
            return np.zeros(0, np.int64)
        full = np.arange(0, int(days.max()) + 1, dtype=np.int64)
        one = np.array([m], np.int64)
        kwh = self.flows.registered(self, one, full, self.own_kwh(one, full))[0]
        total = np.rint(np.r_[0.0, np.cumsum(kwh)] * 100 / self.mult[m]).astype(np.int64)
        return total[days + 1] - total[days]

    def own_kwh(self, idx: np.ndarray, days: np.ndarray) -> np.ndarray:
        """(k, len(days)) energy at the primary side (kWh, float) of each meter's own model: base × season
        × noise on the days it is in place, 0 otherwise (what a customer's meter registers)."""
        u1 = unit_hash(self.seed, idx[:, None], days[None, :], 1)
        u2 = unit_hash(self.seed, idx[:, None], days[None, :], 2)
        z = np.sqrt(-2 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)         # Box-Muller: N(0, 1)
        f = self._factors(days)[:, self.cat[idx]].T                      # (k, days)
        kwh = self.base[idx, None] * f * np.exp(0.15 * z)
        on = (days[None, :] < self.stop_day[idx, None]) & (days[None, :] >= self.start_day[idx, None])
        return np.where(on, kwh, 0.0)

    def _tou(self, inc: np.ndarray, idx: np.ndarray, days: np.ndarray) -> np.ndarray:
        """(k, 4) Σ over days of each day's TOU split (floor three, 谷 the rest): sums to Σ inc exactly."""
        out = np.zeros((len(idx), 4), np.int64)
        cat = np.maximum(self.cat[idx], 0)
        for k, j in enumerate(days.tolist()):
            out += gen.split_tou(inc[:, k], gen.tou_shares(self.date(j).month)[cat])
        return out

    def frozen(self, idx, d: int) -> np.ndarray:
        """(k, 8) registers of meters ``idx`` frozen at day ``d`` 00:00, :data:`ENERGY_REGS` order."""
        idx = np.asarray(idx, np.int64)
        days = np.arange(0, max(int(d), 0), dtype=np.int64)
        inc = self.increments(idx, days)
        return self._assemble(idx, inc.sum(axis=1), self._tou(inc, idx, days))

    def at(self, idx, d: int, seconds: float) -> np.ndarray:
        """(k, 8) registers at ``seconds`` after day ``d`` 00:00 (0 ≤ seconds < 86400): the frozen
        registers plus the share of day ``d``'s energy the category's hourly shape puts before then."""
        idx = np.asarray(idx, np.int64)
        days = np.arange(0, max(int(d), 0), dtype=np.int64)
        inc = self.increments(idx, days)
        part = self._partial(idx, d, seconds)
        tou = self._tou(inc, idx, days) + gen.split_tou(part, gen.tou_shares(self.date(d).month)[np.maximum(self.cat[idx], 0)])
        return self._assemble(idx, inc.sum(axis=1) + part, tou)

    def _partial(self, idx, d: int, seconds: float) -> np.ndarray:
        today = self.increments(idx, np.array([d]))[:, 0]
        h = min(max(seconds, 0.0), 86400.0) / 3600
        lo = int(h)
        cum = self._cum_hour[self.cat[idx]]                              # (k, 25)
        frac = cum[:, lo] + (cum[:, min(lo + 1, 24)] - cum[:, lo]) * (h - lo)
        return np.floor(today * frac).astype(np.int64)

    def _assemble(self, idx, total_inc, tou_inc) -> np.ndarray:
        r = self.r0[idx].copy()
        r[:, 0] += total_inc
        r[:, 1:5] += tou_inc
        react = self.reactive[idx]
        r[:, 6] += np.where(react, np.rint(total_inc * self.tan[idx]), 0).astype(np.int64)
        r[:, 7] += np.where(react, np.rint(total_inc * 0.01), 0).astype(np.int64)
        return r % self.modulus[idx, None]

    def power_x1e4(self, idx, d: int, seconds: float) -> np.ndarray:
        """Active power (0.0001 kW at the meter) in the hour containing ``seconds`` of day ``d``."""
        idx = np.asarray(idx, np.int64)
        today = self.increments(idx, np.array([d]))[:, 0]
        h = min(int(seconds // 3600), 23)
        cum = self._cum_hour[self.cat[idx]]
        return np.rint(today * (cum[:, h + 1] - cum[:, h]) * 100).astype(np.int64)

    def max_demand_x1e4(self, idx, month_start: int, month_end: int) -> tuple[np.ndarray, np.ndarray]:
        """Maximum 15-minute demand (0.0001 kW) over consumption days [month_start, month_end) and the
        day index it happened on (1.8 × the mean load of the busiest day, as the generator models it)."""
        idx = np.asarray(idx, np.int64)
        days = np.arange(max(month_start, 0), max(month_end, 1), dtype=np.int64)
        inc = self.increments(idx, days)
        k = inc.argmax(axis=1)
        md = np.rint(inc[np.arange(len(idx)), k] / 100 / 24 * 1.8 * 10_000).astype(np.int64)
        return md, days[k]


class Fleet:
    """N terminals and their meters: ``terminals[i]`` is the address of terminal i, ``meters_of[i]``
    the meter indices behind it (into the model and the per-meter columns)."""

    __slots__ = ("terminals", "meters_of", "meter_id", "address", "is645", "model", "source", "port")

    def __init__(self, terminals, meters_of, meter_id, address, is645, model: RegisterModel, source: str,
                 port=None):
        self.terminals = list(terminals)
        self.meters_of = meters_of
        self.meter_id = np.asarray(meter_id, np.int64)
        self.address = list(address)
        self.is645 = np.asarray(is645, bool)
        self.model = model
        self.source = source
        # the concentrator port each meter hangs on (archive port_oad, e.g. F2090201 carrier / PLC)
        self.port = (np.full(len(self.meter_id), P_RS485_1, np.int64) if port is None
                     else np.asarray([int(str(x), 16) if x else P_RS485_1 for x in port], np.int64))

    @property
    def n_meters(self) -> int:
        return sum(len(m) for m in self.meters_of)


def _group(term_of_meter: np.ndarray, n_terms: int) -> list[np.ndarray]:
    order = np.argsort(term_of_meter, kind="stable")
    bounds = np.searchsorted(term_of_meter[order], np.arange(n_terms + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(n_terms)]


class Flows:
    """Where energy flows in the generator's fleet (storage.generator ``_consume``), per meter index: what
    an area's check meter, a feeder's outgoing meter and a dedicated transformer's meter register is
    computed from the meters downstream of them on the same day (:meth:`registered`)."""

    def __init__(self, g):
        f, pm = g.fleet, g.point_of_meter
        role, area = f.role[pm], f.p_area[pm]
        cust = np.flatnonzero((role == "customer") & (area > 0))
        ind = np.flatnonzero(np.isin(pm, f.ind))
        by_area = _group(area[cust], f.n_areas + 1)
        self.kind = np.zeros(len(pm), np.int8)                   # 1 area check, 2 feeder out, 3 dedicated
        self.kind[role == "area_check"] = 1
        self.kind[role == "feeder_out"] = 2
        self.kind[ind] = 3
        self.area_of = area                                       # area id of a check meter (1..na)
        self.customers = [cust[k] for k in by_area]               # meters of area a's customers
        self.pv = np.full(f.n_areas + 1, -1, np.int64)            # area a's PV meter
        pv = np.flatnonzero(role == "pv")
        self.pv[area[pv]] = pv
        self.loss = np.r_[0.0, f.area_loss]                       # area a's technical loss rate
        check = np.flatnonzero(role == "area_check")
        self.check = np.full(f.n_areas + 1, -1, np.int64)
        self.check[area[check]] = check
        self.feeder_of = np.where(role == "feeder_out", f.p_feeder[pm], 0)
        self.feeder_areas = [np.flatnonzero(f.area_feeder == k) + 1 for k in range(f.n_feeders + 1)]
        self.feeder_ind = [ind[f.p_feeder[pm[ind]] == k] for k in range(f.n_feeders + 1)]
        self.kva = f.tx_kva[pm].astype(np.float64)
        self.p0 = f.tx_p0[pm].astype(np.float64)
        self.pk = f.tx_pk[pm].astype(np.float64)
        self.hv_metered_hv = (self.kind == 3) & ~f.hv_lv[pm]       # 高供高计: the meter sees the loss

    def tx_loss(self, idx, kwh):
        """Transformer loss of dedicated meters ``idx`` on the days they carry load (T = 24 h, β = mean
        load / (kVA × 0.9)): the generator's ΔA = P0·T + Pk·β²·T, kWh."""
        beta = kwh / 24 / (self.kva[idx, None] * 0.9)
        return np.where(kwh > 0, (self.p0[idx, None] * 24 + self.pk[idx, None] * beta ** 2 * 24) / 1000, 0.0)

    def supply(self, model, a: int, days) -> tuple[np.ndarray, np.ndarray]:
        """Area ``a``'s supply and PV generation per day (kWh): Σ customers / (1 − loss ± 10 %)."""
        sales = model.own_kwh(self.customers[a], days).sum(axis=0)
        u = unit_hash(model.seed, self.check[a], days, 3)
        supply = sales / (1 - self.loss[a] * (0.9 + 0.2 * u))
        pv = np.zeros(len(days)) if self.pv[a] < 0 else \
            np.minimum(model.own_kwh(self.pv[a:a + 1], days)[0], 0.5 * supply)   # never exports
        return supply, pv

    def registered(self, model, idx, days, kwh):
        """``kwh`` (the meters' own model) with the rows of check, feeder and dedicated meters replaced by
        what flows through them."""
        kind = self.kind[idx]
        if not kind.any():
            return kwh
        kwh = kwh.copy()
        for k in np.flatnonzero(kind):
            m = idx[k]
            if kind[k] == 1:
                supply, pv = self.supply(model, self.area_of[m], days)
                kwh[k] = supply - pv
            elif kind[k] == 2:
                fd = self.feeder_of[m]
                total = np.zeros(len(days))
                for a in self.feeder_areas[fd]:      # what its areas' check meters take (their PV offsets it)
                    supply, pv = self.supply(model, a, days)
                    total += supply - pv
                d = self.feeder_ind[fd]
                own = model.own_kwh(d, days)
                total = total + (own + self.tx_loss(d, own)).sum(axis=0)
                kwh[k] = total / 0.98
            elif self.hv_metered_hv[m]:
                kwh[k] = kwh[k] + self.tx_loss(np.array([m]), kwh[k:k + 1])[0]
        return kwh


def _model_columns(g) -> dict:
    """The generator's register model columns plus which meters are replacements (``new_meter``) and how
    energy flows between them (``flows``)."""
    return dict(g.meter_model(), new_meter=g.new_meter, flows=Flows(g))


def _config(summary: dict) -> gen.GenConfig:
    return gen.GenConfig(int(summary["customers"]), int(summary["days"]), int(summary["seed"]),
                         _dt.date.fromisoformat(str(summary["start"])), rates=summary.get("rates") or {})


def load_gen_dir(data_dir, archive_db=None) -> Fleet:
    """The fleet of a ``gridhead gen`` directory.  The routes come from ``archive_db`` (an archive
    DuckDB file) if given, else ``DATA/archive.duckdb`` if present, else from importing
    ``DATA/archive-files`` into a temporary archive."""
    from gridhead.storage.archive import Archive
    root = pathlib.Path(data_dir)
    summary_path = root / "ground_truth" / "summary.json"
    if not summary_path.exists():
        raise SimulatorError(f"{root}: not a gridhead gen directory (no ground_truth/summary.json)")
    cfg = _config(json.loads(summary_path.read_text()))
    db = pathlib.Path(archive_db) if archive_db else root / "archive.duckdb"
    if db.exists():
        with Archive(db, read_only=True) as a:
            routes = a.meter_routes().to_pydict()
    else:
        files = sorted((root / "archive-files").glob("*.csv"))
        if not files:
            raise SimulatorError(f"{root}: no archive-files/*.csv and no archive.duckdb")
        with tempfile.TemporaryDirectory() as tmp, Archive(pathlib.Path(tmp) / "a.duckdb") as a:
            a.import_files(files)
            routes = a.meter_routes().to_pydict()
    g = gen.FleetGenerator(cfg)
    cols = _model_columns(g)
    meter_id = np.asarray(routes["meter_id"], np.int64)
    if len(meter_id) != g.M or not np.array_equal(meter_id, cols["meter_id"]):
        raise SimulatorError(f"{root}: the archive's meters do not match the generator configuration "
                             f"in summary.json ({len(meter_id)} vs {g.M} meters)")
    terms, inverse = np.unique(np.asarray(routes["terminal_address"], dtype=object).astype(str), return_inverse=True)
    model = RegisterModel(cols, cfg.start, cfg.seed)
    return Fleet(terms.tolist(), _group(inverse, len(terms)), meter_id, routes["comm_address"],
                 np.asarray(routes["meter_protocol"]) == "645", model, f"gen directory {root}",
                 routes.get("port_oad"))


def terminal_address(i: int) -> str:
    """Address of standalone terminal ``i`` (0-based): 3201 + i + 1 in 8 digits, 12 BCD digits."""
    return f"3201{i + 1:08d}"


def _standalone_parts(terminals: int, meters_per_terminal: int, seed: int, start: _dt.date):
    if terminals < 1 or meters_per_terminal < 1:
        raise SimulatorError(f"need at least 1 terminal and 1 meter per terminal, got {terminals}, {meters_per_terminal}")
    if terminals > 99_999_999:
        raise SimulatorError(f"{terminals} terminals: at most 99,999,999 addresses")
    g = gen.FleetGenerator(gen.GenConfig(terminals * meters_per_terminal, 1, seed, start))
    cols = g.meter_columns()
    M = len(cols["meter_id"])
    # meters dealt in meter-id order, the generator's extra meters (area check, feeder, PV, replacements)
    # spread evenly: a terminal holds meters_per_terminal or one or two more, never one huge record
    term_of = np.arange(M) * terminals // M
    return g, cols, term_of


def standalone(terminals: int, meters_per_terminal: int, seed: int, start: _dt.date) -> Fleet:
    """A fleet of ``terminals`` concentrators derived from ``seed`` (see the module docstring)."""
    g, cols, term_of = _standalone_parts(terminals, meters_per_terminal, seed, start)
    model = RegisterModel(_model_columns(g), start, seed)
    return Fleet([terminal_address(i) for i in range(terminals)], _group(term_of, terminals), cols["meter_id"],
                 cols["comm_address"], np.asarray(cols["protocol"]) == "645", model,
                 f"standalone seed {seed}", cols["port_oad"])


def write_standalone_archive(out_dir, terminals: int, meters_per_terminal: int, seed: int,
                             start: _dt.date) -> pathlib.Path:
    """Write ``OUT/archive-files/*.csv`` for :func:`standalone` with the same arguments (the generator's
    archive of N × M customers with its concentrators and meters re-dealt to the N terminals), and
    the generator's ground truth, so ``load_gen_dir(OUT)`` gives the same fleet.  Returns OUT."""
    import csv
    from gridhead.storage.archive import BY_NAME
    out = pathlib.Path(out_dir)
    gen.generate(out, customers=terminals * meters_per_terminal, days=1, seed=seed, start=start, write_lake=False)
    _g, cols, term_of = _standalone_parts(terminals, meters_per_terminal, seed, start)
    files = out / "archive-files"
    conc = {"concentrator_id": range(1, terminals + 1), "terminal_address": [terminal_address(i) for i in range(terminals)],
            "protocol": ["698"] * terminals, "comm_mode": ["4g"] * terminals, "area_id": [""] * terminals}
    meters = dict(cols, concentrator_id=term_of + 1)
    for name, table in (("concentrators", conc), ("meters", meters)):
        names = BY_NAME[name].names
        with open(files / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(names)
            w.writerows(zip(*(list(table[c]) for c in names)))
    return out


class ControlState:
    """Remote-control state of the simulated meters, indexed like the model: relay open
    (跳闸), trip command latched, protection (保电), the meter clock's offset from its concentrator's
    (seconds; 对时 sets it), and the DL/T 645 level-02 password a 1CH / 14H request must carry.

    Rules the meters follow: a protected meter refuses a trip; 合闸允许 (close allowed) releases the trip
    command but leaves the relay open until the customer closes it, 直接合闸 closes it; a 645 request
    with the wrong password, or operator code 00000000 (no operator), is refused as unauthorised."""

    __slots__ = ("relay_open", "trip_command", "protected", "clock_offset_s", "password_645", "last_operator")

    def __init__(self, n_meters: int, password_645: str = "02000000"):
        self.relay_open = np.zeros(n_meters, bool)
        self.trip_command = np.zeros(n_meters, bool)
        self.protected = np.zeros(n_meters, bool)
        self.clock_offset_s = np.zeros(n_meters, np.float64)
        self.password_645 = password_645
        self.last_operator: dict[int, str] = {}

    def trip(self, m: int) -> bool:
        """False (refused) when the meter is protected."""
        if self.protected[m]:
            return False
        self.relay_open[m] = self.trip_command[m] = True
        return True

    def close(self, m: int, direct: bool) -> None:
        self.trip_command[m] = False
        if direct:
            self.relay_open[m] = False

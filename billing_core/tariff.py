"""Tariffs (电价) from human-editable TOML files, validated on load and compiled to kernel parameters.

A directory holds one file per customer category plus ``funds.toml`` (政府性基金及附加).  A category
file::

    category = "large_industrial"            # the archive's customer category code
    name = "大工业用电"
    # codes = ["IND-TOU-2PART"]              # optional: the tariff codes (customer_tariffs) this file prices

    [[version]]                              # versions, by strictly increasing effective date
    effective = 2026-01-01
    basic = "contract_demand"                # none | capacity | contract_demand | actual_demand (1583号)
    pf_standard = "0.90"                     # none | 0.90 | 0.85 | 0.80  ((83)水电财字第215号)
    tiers = "none"                           # none | monthly | annual  (发改价格〔2011〕2617号)
    # tier_limits_kwh = [2760, 4800]         # upper limits of tiers 1 and 2
    # tier_increments = ["0.05", "0.30"]     # yuan/kWh added to every TOU price in tiers 2 and 3
    weekends_are_holidays = false
    holidays = [2026-10-01, 2026-10-02]      # dates that follow the season's holiday hours

    [version.prices."1-10kV"]                # per voltage level; yuan/kWh, basic in yuan/kVA·month, yuan/kW·month
    sharp = "1.0520"; peak = "0.8767"; flat = "0.5845"; valley = "0.2923"; capacity = "25.6"; demand = "38.4"

    [[version.season]]                       # seasons cover the 12 months exactly once
    name = "summer"
    months = [7, 8]
    weekday = "vvvvvvvvffpppffffpsspppf"     # one letter per hour 00..23: s 尖 p 峰 f 平 v 谷
    holiday = "vvvvvvvvffffffffffffffff"
    [version.season.prices."1-10kV"]         # optional seasonal override of some prices
    sharp = "1.2"

Which file prices a customer (:meth:`TariffSet.price_from_tariff_assignment`): the file whose ``codes``
list the customer's tariff code (``customer_tariffs.tariff_code``, with its history) — else the file of
the customer's category without ``codes`` (the category's default).

Prices may be TOML strings or numbers; they are read as decimals and stored in µyuan (1e-6 yuan,
see :mod:`billing_core.rounding`); a price with more than 6 decimals is refused, not rounded.
A file with any mistake is refused with :class:`~protocols.errors.ConfigError` naming the file, the
key and the reason on one line.  TOU hours and holidays (发改价格〔2021〕1093号: by province, seasons,
holidays on their own schedule) drive :func:`hour_periods`, which turns a load curve into the per-period
energies the meter's own TOU registers would show.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import os
import pathlib
import tomllib
from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from gridhead.billing_core import _billing_py as K
from gridhead.billing_core.powerfactor import NO_ADJUSTMENT, STANDARDS
from gridhead.protocols.errors import ConfigError

PERIODS = ("sharp", "peak", "flat", "valley")          # 尖 峰 平 谷 — kernel order
PERIOD_ZH = {"sharp": "尖", "peak": "峰", "flat": "平", "valley": "谷"}
PERIOD_LETTERS = {"s": 0, "p": 1, "f": 2, "v": 3}
BASIC_KINDS = {"none": K.BASIC_NONE, "capacity": K.BASIC_CAPACITY, "contract_demand": K.BASIC_CONTRACT,
               "actual_demand": K.BASIC_ACTUAL}
TIER_KINDS = {"none": K.TIER_NONE, "monthly": K.TIER_MONTHLY, "annual": K.TIER_ANNUAL}
PF_STANDARDS = {"none": NO_ADJUSTMENT, **{f"0.{s}": i for i, s in enumerate(STANDARDS)}}
MAX_ENERGY_PRICE_UYUAN = 10_000_000         # 10 yuan/kWh: keeps E × price inside int64 (rounding.py)
MAX_DEMAND_PRICE_UYUAN = 100_000_000        # 100 yuan/kW·month
FUNDS_FILE = "funds.toml"

_VERSION_KEYS = {"effective", "basic", "pf_standard", "tiers", "tier_limits_kwh", "tier_increments",
                 "weekends_are_holidays", "holidays", "prices", "season"}
_PRICE_KEYS = set(PERIODS) | {"capacity", "demand"}
_SEASON_KEYS = {"name", "months", "weekday", "holiday", "prices"}


@dataclasses.dataclass(frozen=True, slots=True)
class Season:
    name: str
    months: tuple[int, ...]
    weekday: tuple[int, ...]          # 24 period codes
    holiday: tuple[int, ...]
    prices: dict[str, dict[str, int]]  # voltage -> {key: µyuan}, merged with the version's


@dataclasses.dataclass(frozen=True, slots=True)
class Version:
    effective: dt.date
    basic: str
    pf_standard: str
    tiers: str
    tier_limits_kwh: tuple[int, int]
    tier_increments_uyuan: tuple[int, int]
    weekends_are_holidays: bool
    holidays: frozenset[dt.date]
    seasons: tuple[Season, ...]

    def season_of(self, month: int) -> Season:
        return next(s for s in self.seasons if month in s.months)


@dataclasses.dataclass(frozen=True, slots=True)
class Tariff:
    category: str
    name: str
    path: str
    versions: tuple[Version, ...]
    codes: tuple[str, ...] = ()            # tariff codes this file prices; () = its category's default
    key: str = ""                          # the file's key in TariffSet.tariffs (category, or category/stem)

    def version_on(self, day: dt.date) -> Version:
        found = [v for v in self.versions if v.effective <= day]
        if not found:
            raise ConfigError(f"{self.path}: version: no version of {self.category!r} is effective on {day}")
        return found[-1]


@dataclasses.dataclass(frozen=True, slots=True)
class Fund:
    name: str
    zh: str
    price_uyuan: int
    exempt: frozenset[str]


# --- parsing helpers: each raises ConfigError(file: key: reason) --------------------------------------
class _File:
    def __init__(self, path: pathlib.Path) -> None:
        self.path = str(path)

    def fail(self, key: str, reason: str) -> NoReturn:
        raise ConfigError(f"{self.path}: {key}: {reason}")

    def table(self, obj: object, key: str, required: set[str], allowed: set[str]) -> dict[str, Any]:
        if not isinstance(obj, dict):
            self.fail(key, "must be a table")
        unknown = sorted(set(obj) - allowed)
        if unknown:
            self.fail(f"{key}.{unknown[0]}" if key else unknown[0], "unknown key (misspelt?)")
        missing = sorted(required - set(obj))
        if missing:
            self.fail(f"{key}.{missing[0]}" if key else missing[0], "required key is missing")
        return obj

    def uyuan(self, value: object, key: str, limit: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.fail(key, f"a price must be a number or a decimal string, not {value!r}")
        try:
            d = decimal.Decimal(repr(value) if isinstance(value, float) else str(value).strip())
        except decimal.InvalidOperation:
            self.fail(key, f"not a decimal number: {value!r}")
        if not d.is_finite() or d < 0:
            self.fail(key, f"a price must be a finite non-negative number, not {value!r}")
        scaled = d * 1_000_000
        if scaled != scaled.to_integral_value():
            self.fail(key, f"{value!r} has more than 6 decimals (prices are kept in 1e-6 yuan)")
        if scaled > limit:
            self.fail(key, f"{value!r} yuan is beyond the {limit / 1e6:g} yuan this engine accepts")
        return int(scaled)

    def choice(self, value: object, key: str, options: Mapping[str, int]) -> str:
        # not a string: refused like any other value not among the options (an array or a table, which
        # cannot be looked up, raised TypeError)
        if not isinstance(value, str) or value not in options:
            self.fail(key, f"{value!r} is not one of {', '.join(options)}")
        return value

    def hours(self, value: object, key: str) -> tuple[int, ...]:
        if not isinstance(value, str) or len(value) != 24 or set(value) - set(PERIOD_LETTERS):
            self.fail(key, "must be 24 letters, one per hour 00..23, each s (尖) p (峰) f (平) or v (谷)")
        return tuple(PERIOD_LETTERS[c] for c in value)

    def date(self, value: object, key: str) -> dt.date:
        if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
            self.fail(key, f"must be a TOML date like 2026-01-01, not {value!r}")
        return value

    def prices(self, obj: Any, key: str, partial: bool) -> dict[str, dict[str, int]]:
        self.table(obj, key, set(), set(obj))
        out: dict[str, dict[str, int]] = {}
        for volt, p in obj.items():
            k = f"{key}.{volt}"
            self.table(p, k, set() if partial else set(PERIODS), _PRICE_KEYS)
            out[volt] = {name: self.uyuan(v, f"{k}.{name}",
                                          MAX_DEMAND_PRICE_UYUAN if name in ("capacity", "demand")
                                          else MAX_ENERGY_PRICE_UYUAN)
                         for name, v in p.items()}
        return out


def _read_toml(path: pathlib.Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: (syntax): {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: (file): {exc.strerror}") from None


def load_tariff(path: str | os.PathLike[str]) -> Tariff:
    """Read and validate one category file; :class:`ConfigError` (file: key: reason) on any mistake."""
    path = pathlib.Path(path)
    f = _File(path)
    doc = f.table(_read_toml(path), "", {"category", "name", "version"}, {"category", "name", "version", "codes"})
    if not isinstance(doc["category"], str) or not doc["category"].isidentifier():
        f.fail("category", f"must be an identifier like large_industrial, not {doc['category']!r}")
    if not isinstance(doc["version"], list) or not doc["version"]:
        f.fail("version", "must be an array of tables [[version]] with at least one version")
    versions: list[Version] = []
    for i, raw in enumerate(doc["version"]):
        versions.append(_version(f, raw, f"version[{i}]"))
        if i and versions[-1].effective <= versions[-2].effective:
            f.fail(f"version[{i}].effective", "effective dates must strictly increase from one version to the next")
    codes = doc.get("codes", [])
    if not isinstance(codes, list) or not codes and "codes" in doc or not all(
            isinstance(c, str) and c and len(c) <= 32 and all(ch.isalnum() or ch in "_.-" for ch in c) for c in codes):
        f.fail("codes", "must be a non-empty array of tariff codes (1-32 of A-Z a-z 0-9 _ . -)")
    key = doc["category"] if not codes else f"{doc['category']}/{path.stem}"
    return Tariff(doc["category"], str(doc["name"]), str(path), tuple(versions), tuple(codes), key)


def _version(f: _File, raw: object, key: str) -> Version:
    v = f.table(raw, key, {"effective", "basic", "pf_standard", "tiers", "prices", "season"}, _VERSION_KEYS)
    effective = f.date(v["effective"], f"{key}.effective")
    basic = f.choice(v["basic"], f"{key}.basic", BASIC_KINDS)
    pf = f.choice(v["pf_standard"], f"{key}.pf_standard", PF_STANDARDS)
    tiers = f.choice(v["tiers"], f"{key}.tiers", TIER_KINDS)
    limits: tuple[int, int] = (0, 0)
    incs: tuple[int, int] = (0, 0)
    if tiers != "none":
        lim = v.get("tier_limits_kwh")
        if (not isinstance(lim, list) or len(lim) != 2 or not all(type(x) is int for x in lim)
                or not 0 < lim[0] < lim[1] <= 10 ** 9):
            f.fail(f"{key}.tier_limits_kwh", "must be two whole kWh limits, 0 < tier 1 < tier 2")
        inc = v.get("tier_increments")
        if not isinstance(inc, list) or len(inc) != 2:
            f.fail(f"{key}.tier_increments", "must be two prices (yuan/kWh) added in tiers 2 and 3")
        inc2, inc3 = (f.uyuan(x, f"{key}.tier_increments[{j}]", MAX_ENERGY_PRICE_UYUAN) for j, x in enumerate(inc))
        incs, limits = (inc2, inc3), (lim[0], lim[1])
    elif "tier_limits_kwh" in v or "tier_increments" in v:
        f.fail(f"{key}.tiers", 'is "none" but tier limits or increments are given')
    holidays = v.get("holidays", [])
    if not isinstance(holidays, list):
        f.fail(f"{key}.holidays", "must be an array of dates")
    holidays = frozenset(f.date(d, f"{key}.holidays[{j}]") for j, d in enumerate(holidays))
    weekends = v.get("weekends_are_holidays", False)
    if not isinstance(weekends, bool):
        f.fail(f"{key}.weekends_are_holidays", "must be true or false")
    prices = f.prices(v["prices"], f"{key}.prices", partial=False)
    if not prices:
        f.fail(f"{key}.prices", "at least one voltage level is needed")
    need = {"capacity": "capacity", "contract_demand": "demand", "actual_demand": "demand"}.get(basic)
    if not isinstance(v["season"], list) or not v["season"]:
        f.fail(f"{key}.season", "must be an array of tables [[version.season]]")
    seasons: list[Season] = []
    seen: dict[int, Any] = {}           # month -> its season's name
    for j, raw_s in enumerate(v["season"]):
        sk = f"{key}.season[{j}]"
        s = f.table(raw_s, sk, {"name", "months", "weekday"}, _SEASON_KEYS)
        months = s["months"]
        if not isinstance(months, list) or not months or not all(type(m) is int and 1 <= m <= 12 for m in months):
            f.fail(f"{sk}.months", "must be an array of month numbers 1..12")
        for m in months:
            if m in seen:
                f.fail(f"{sk}.months", f"month {m} is already in season {seen[m]!r}")
            seen[m] = s["name"]
        weekday = f.hours(s["weekday"], f"{sk}.weekday")
        holiday = f.hours(s.get("holiday", s["weekday"]), f"{sk}.holiday")
        override = f.prices(s.get("prices", {}), f"{sk}.prices", partial=True)
        merged: dict[str, dict[str, int]] = {}
        for volt, base in prices.items():
            merged[volt] = {**base, **override.get(volt, {})}
        for volt in override:
            if volt not in prices:
                f.fail(f"{sk}.prices.{volt}", "voltage level not priced in the version's [prices]")
        for volt, p in merged.items():
            pk = f"{sk if volt in override else key}.prices.{volt}"
            if need and need not in p:
                f.fail(f"{pk}.{need}", f"required by basic = {basic!r}")
            # a TOU tariff never charges the valley more than the peak (发改价格〔2021〕1093号)
            order = [p[n] for n in PERIODS]
            if order != sorted(order, reverse=True):
                f.fail(f"{pk}", "TOU prices must not rise from sharp to peak to flat to valley")
        seasons.append(Season(str(s["name"]), tuple(months), weekday, holiday, merged))
    missing = sorted(set(range(1, 13)) - set(seen))
    if missing:
        f.fail(f"{key}.season", f"months {missing} belong to no season")
    return Version(effective, basic, pf, tiers, limits, incs, weekends, holidays, tuple(seasons))


def load_funds(path: str | os.PathLike[str]) -> list[tuple[dt.date, tuple[Fund, ...]]]:
    """``funds.toml``: versions of the per-kWh government funds and surcharges with their exemptions."""
    path = pathlib.Path(path)
    f = _File(path)
    doc = f.table(_read_toml(path), "", {"version"}, {"version"})
    if not isinstance(doc["version"], list) or not doc["version"]:
        f.fail("version", "must be an array of tables [[version]]")
    out: list[tuple[dt.date, tuple[Fund, ...]]] = []
    for i, raw in enumerate(doc["version"]):
        key = f"version[{i}]"
        v = f.table(raw, key, {"effective", "fund"}, {"effective", "fund"})
        eff = f.date(v["effective"], f"{key}.effective")
        if out and eff <= out[-1][0]:
            f.fail(f"{key}.effective", "effective dates must strictly increase from one version to the next")
        funds: list[Fund] = []
        for j, rf in enumerate(v["fund"] if isinstance(v["fund"], list) else f.fail(f"{key}.fund", "must be [[fund]]")):
            fk = f"{key}.fund[{j}]"
            r = f.table(rf, fk, {"name", "zh", "price"}, {"name", "zh", "price", "exempt"})
            exempt = r.get("exempt", [])
            if not isinstance(exempt, list) or not all(isinstance(c, str) for c in exempt):
                f.fail(f"{fk}.exempt", "must be an array of category codes")
            funds.append(Fund(str(r["name"]), str(r["zh"]), f.uyuan(r["price"], f"{fk}.price", 1_000_000),
                              frozenset(exempt)))
        out.append((eff, tuple(funds)))
    return out


TableKey = tuple[str, str, dt.date, str]     # (category, voltage, effective, season name) of a row


@dataclasses.dataclass(frozen=True)
class TariffTable:
    """Every (category, voltage, version, season) compiled to one row of kernel parameters."""

    params: np.ndarray                       # (R, N_PARAMS) int64, columns billing_core._billing_py.P_*
    keys: tuple[TableKey, ...]               # row -> (category, voltage, effective, season name)
    index: dict[TableKey, int]               # (category, voltage, effective, season name) -> row
    funds: dict[int, tuple[Fund, ...]]       # row -> tuple of (Fund) charged on that row

    def row(self, category: str, voltage: str, day: dt.date, tariffs: "TariffSet") -> int:
        t = tariffs.tariff(category)
        v = t.version_on(day)
        key = (category, voltage, v.effective, v.season_of(day.month).name)
        if key not in self.index:
            raise ConfigError(f"{t.path}: version {v.effective}.prices: no price for voltage level {voltage!r}")
        return self.index[key]


class TariffSet:
    """All tariff files of a directory, validated; :meth:`table` compiles them for the kernel."""

    def __init__(self, tariffs: dict[str, Tariff], funds: list[tuple[dt.date, tuple[Fund, ...]]]) -> None:
        self.tariffs = tariffs
        self.funds = funds
        self._table: TariffTable | None = None

    @classmethod
    def load(cls, directory: str | os.PathLike[str] | None = None) -> "TariffSet":
        directory = pathlib.Path(directory or pathlib.Path(__file__).with_name("tariffs"))
        files = sorted(p for p in directory.glob("*.toml") if p.name != FUNDS_FILE)
        if not files:
            raise ConfigError(f"{directory}: (directory): no tariff files *.toml")
        tariffs: dict[str, Tariff] = {}
        codes: dict[str, str] = {}
        for p in files:
            t = load_tariff(p)
            if t.key in tariffs:
                raise ConfigError(f"{p}: category: {t.category!r} is already defined in {tariffs[t.key].path}"
                                  if not t.codes else f"{p}: (file): two tariff files named {p.stem!r}")
            for c in t.codes:
                if c in codes:
                    raise ConfigError(f"{p}: codes: {c!r} is already priced by {tariffs[codes[c]].path}")
                codes[c] = t.key
            tariffs[t.key] = t
        funds_path = directory / FUNDS_FILE
        funds = load_funds(funds_path) if funds_path.exists() else []
        for eff, fs in funds:
            for fund in fs:
                unknown = sorted(fund.exempt - {t.category for t in tariffs.values()})
                if unknown:
                    raise ConfigError(f"{funds_path}: version {eff}.fund {fund.name}.exempt: "
                                      f"unknown category {unknown[0]!r}")
        out = cls(tariffs, funds)
        out.codes = codes
        return out

    codes: dict[str, str] = {}       # tariff code -> key of the file that prices it (files' ``codes``)

    def tariff(self, category: str) -> Tariff:
        """The tariff of a key of :attr:`tariffs`: a category (its default file) or a code file's key."""
        try:
            return self.tariffs[category]
        except KeyError:
            raise ConfigError(f"(tariffs): category: no tariff file for category {category!r}") from None

    def price_from_tariff_assignment(self, tariff_code: str | None, category: str) -> str:
        """The key (of :attr:`tariffs`) of the tariff that prices a customer assigned ``tariff_code``.

        Ruling "A customer's tariff assignment (with its history) chooses the price; the category is a
        default only" (DOMAIN.md): the file listing the code in its ``codes``, else the default file of
        the customer's category.  Called once per distinct (code, category) of a run, for each side of a
        change of assignment.
        """
        key = self.codes.get(tariff_code) if tariff_code is not None else None
        if key is None:
            self.tariff(category)            # the category's default must exist
            return category
        return key

    def funds_on(self, day: dt.date, category: str) -> tuple[Fund, ...]:
        found = [fs for eff, fs in self.funds if eff <= day]
        return tuple(f for f in (found[-1] if found else ()) if category not in f.exempt)

    def table(self) -> TariffTable:
        """Compile every row once; the kernel then reads parameters by row number."""
        if self._table is not None:
            return self._table
        rows: list[npt.NDArray[np.int64]] = []
        keys: list[TableKey] = []
        funds: dict[int, tuple[Fund, ...]] = {}
        for cat, t in sorted(self.tariffs.items()):
            for v in t.versions:
                for s in v.seasons:
                    # funds follow their own versions: those in force on the tariff version's first day of
                    # the season.  A fund change inside a tariff version needs a new tariff version.
                    fs = self.funds_on(max(v.effective, dt.date(v.effective.year, min(s.months), 1)), t.category)
                    for volt, p in sorted(s.prices.items()):
                        r = np.zeros(K.N_PARAMS, dtype=np.int64)
                        for k, name in enumerate(PERIODS):
                            r[K.P_PRICE_SHARP + k] = p[name]
                        r[K.P_TIER_KIND] = TIER_KINDS[v.tiers]
                        r[K.P_LIM2], r[K.P_LIM3] = (x * 100 for x in v.tier_limits_kwh)
                        r[K.P_INC2], r[K.P_INC3] = v.tier_increments_uyuan
                        r[K.P_FUNDS] = sum(f.price_uyuan for f in fs)
                        r[K.P_BASIC_KIND] = BASIC_KINDS[v.basic]
                        r[K.P_PRICE_KVA] = p.get("capacity", 0)
                        r[K.P_PRICE_KW] = p.get("demand", 0)
                        r[K.P_PF_STD] = PF_STANDARDS[v.pf_standard]
                        funds[len(rows)] = fs
                        keys.append((cat, volt, v.effective, s.name))
                        rows.append(r)
        params = np.ascontiguousarray(np.vstack(rows))
        self._table = TariffTable(params, tuple(keys), {k: i for i, k in enumerate(keys)}, funds)
        return self._table

    def rows(self, categories: npt.ArrayLike, voltages: npt.ArrayLike, day: dt.date) -> npt.NDArray[np.int32]:
        """Kernel row of each account (category and voltage columns, any hashable codes) on ``day``."""
        categories, voltages = np.asarray(categories), np.asarray(voltages)
        pairs, inverse = np.unique(np.stack([categories.astype(str), voltages.astype(str)]), axis=1,
                                   return_inverse=True)
        table = self.table()
        lookup = np.array([table.row(c, v, day, self) for c, v in pairs.T], dtype=np.int32)
        return lookup[inverse.reshape(-1)]


def hour_periods(version: Version, year: int) -> npt.NDArray[np.int8]:
    """TOU period code (0 尖 1 峰 2 平 3 谷) of every hour of ``year`` (8760 or 8784), local time."""
    start = dt.date(year, 1, 1)
    ndays = (dt.date(year + 1, 1, 1) - start).days
    out = np.empty(ndays * 24, dtype=np.int8)
    for d in range(ndays):                   # 365 iterations of a calendar, not accounts
        day = start + dt.timedelta(days=d)
        s = version.season_of(day.month)
        holiday = day in version.holidays or (version.weekends_are_holidays and day.weekday() >= 5)
        out[d * 24:(d + 1) * 24] = s.holiday if holiday else s.weekday
    return out

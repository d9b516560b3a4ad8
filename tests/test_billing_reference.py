"""The bill run against an independent reference (tests/billing_reference.py), line by line, to the fen.

Every bill of generated fleets is recomputed one customer at a time in exact fractions from the archive and
the raw lake files, and compared with what ``gridhead bill run`` (``storage.bills.run``) published: every
line item's code, quantity, unit price and amount, the hold reasons, and the loss, reactive energy and
demand the bill was priced on — under the compiled kernels and under their pure twins (``kernels``).

(a) a 2,000-customer, seven-month fleet with every rule kind and edge boosted: meter replacements (换表),
    CT changes, rollovers, tariff assignment changes and a tariff version in mid-month (split months with
    力调), annual tiers crossing their limits and a new tier year, 两部制 by capacity and contract demand
    around 105 %, nameplate and agreed transformer losses, a month billed out of order (a skipped month:
    September is billed last) and go-live in June (opening year-to-date).
(b) hypothesis: random tariff files (versions in mid-month, tier kinds and limits, basic kinds, prices,
    funds and exemptions) over small random fleets.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import pathlib
import random
import shutil

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from storage import archive, bills

from .billing_reference import Reference, pf_hundredths, pf_rate_bp, round_half_away
from .conftest import generated

PERIODS = ("2026-06", "2026-07", "2026-08", "2026-10", "2026-11", "2026-12", "2026-09")   # September last
EDGE_RATES = {"replacement": 0.02, "rollover": 0.02, "tariff_change": 0.4, "multiplier_change": 0.3,
              "reverse_running": 0.002, "stopped_meter": 0.002}


def published(d: pathlib.Path, period: str) -> dict:
    """customer_id -> (bill row, [(code, quantity, unit_price, amount_fen), ...]) as the run published them."""
    part = d / "bills" / f"period={period}"
    rows = pq.ParquetFile(part / "bills.parquet").read().to_pylist()
    items = collections.defaultdict(list)
    for r in pq.ParquetFile(part / "bill_items.parquet").read(
            columns=["bill_id", "seq", "code", "quantity", "unit_price", "amount_fen"]).to_pylist():
        items[r["bill_id"]].append((r["seq"], (r["code"], r["quantity"], r["unit_price"], r["amount_fen"])))
    return {r["customer_id"]: (r, [x for _s, x in sorted(items[r["bill_id"]])]) for r in rows}


def differences(ref: dict, got: dict, period: str) -> list[str]:
    """Every difference between the reference's bills and the published ones, one line each."""
    out = []
    if sorted(ref) != sorted(got):
        out.append(f"{period}: customers billed differ: {sorted(set(ref) ^ set(got))[:10]}")
    for cid in sorted(set(ref) & set(got)):
        b, (row, items) = ref[cid], got[cid]
        where = f"{period} customer {cid} ({row['category']}, {row['tariff_code']}, parts {row['parts']}, " \
                f"segments {row['segments']})"
        reasons = {x for x in (row["reasons"] or "").split("; ") if x}
        if reasons != b.reasons:
            out.append(f"{where}: hold reasons: expected {sorted(b.reasons)}, got {sorted(reasons)}")
        if (row["status"] == "held") != b.held:
            out.append(f"{where}: status {row['status']}, expected {'held' if b.held else 'issued'}")
        for name, mine in (("loss_kwh_x100", b.loss_p), ("q_kvarh_x100", b.q), ("demand_kw_x1e4", b.demand)):
            if row[name] != mine:
                out.append(f"{where}: {name}: expected {mine}, got {row[name]}")
        if items != b.items:
            gd, md = {x[0]: x for x in items}, {x[0]: x for x in b.items}
            for code in dict.fromkeys([x[0] for x in b.items] + [x[0] for x in items]):
                if gd.get(code) != md.get(code):
                    out.append(f"{where}: {code} (code, quantity, unit price, fen): expected {md.get(code)}, "
                               f"got {gd.get(code)}")
            if [x[0] for x in items] != [x[0] for x in b.items]:
                out.append(f"{where}: item order: expected {[x[0] for x in b.items]}, got {[x[0] for x in items]}")
    return out


def compare_run(d: pathlib.Path, periods, tariffs_dir=None, limit: int = 30) -> tuple[list[str], int]:
    """Bill ``periods`` in that order with the run and with the reference; (differences, bills compared)."""
    shutil.rmtree(d / "bills", ignore_errors=True)
    ref = Reference(d, tariffs_dir)
    diffs, n = [], 0
    for p in periods:
        bills.run(d, p, tariffs_dir)
        mine = ref.bill_period(p)
        diffs += differences(mine, published(d, p), p)
        n += len(mine)
    return diffs[:limit] + ([f"... {len(diffs) - limit} more"] if len(diffs) > limit else []), n


# --- the reference's own arithmetic, against DOMAIN.md's figures worked by hand --------------------------------
def test_reference_rounding_and_power_factor_by_hand():
    from fractions import Fraction
    assert [round_half_away(Fraction(n, 2)) for n in (5, 3, 1, -1, -5)] == [3, 2, 1, -1, -3]   # 四舍五入
    assert round_half_away(Fraction(1, 3)) == 0 and round_half_away(Fraction(-2, 3)) == -1
    assert pf_hundredths(3, 4) == 60 and pf_hundredths(5, 0) == 100 and pf_hundredths(0, 5) == -1
    # cosφ 0.8955 rounds to 0.90, 0.8949 to 0.89: P = 8955, Q = √(10000² − 8955²) ≈ 4450.6 either side
    assert pf_hundredths(8955, 4450) == 90 and pf_hundredths(8949, 4463) == 89
    # (83)水电财字第215号 as DOMAIN.md states it, in basis points
    assert [pf_rate_bp(90, pf) for pf in (90, 89, 70, 69, 65, 64, 91, 95, 99)] == \
        [0, 50, 1000, 1100, 1500, 1700, -15, -75, -75]
    assert [pf_rate_bp(85, pf) for pf in (86, 90, 91, 92, 93, 94, 100, 84, 65, 60, 59)] == \
        [-10, -50, -65, -80, -95, -110, -110, 50, 1000, 1500, 1700]
    assert [pf_rate_bp(80, pf) for pf in (85, 90, 91, 92, 99, 60, 55, 54)] == \
        [-50, -100, -115, -130, -130, 1000, 1500, 1700]


# --- (a) the big fleet ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_fleet(tmp_path_factory):
    """2,000 customers, 2026-06-01 .. 2027-01-01 (seven settlement months), edges boosted."""
    d = tmp_path_factory.mktemp("reference-fleet")
    return generated(d, 2000, 214, seed=15, rates=EDGE_RATES)


@pytest.mark.slow
def test_every_bill_of_seven_months_equals_the_reference(big_fleet, kernels):
    diffs, n = compare_run(big_fleet, PERIODS)
    assert n == 2000 * 7
    assert diffs == [], "\n".join(diffs)


def test_the_big_fleet_has_every_edge(big_fleet):
    """The comparison above is only worth what the fleet contains: count each edge in the published bills."""
    seen = collections.Counter()
    for p in PERIODS:
        if not (big_fleet / "bills" / f"period={p}").exists():
            bills.run(big_fleet, p)
        for cid, (row, items) in published(big_fleet, p).items():
            codes = {c for c, *_ in items}
            seen["split month with 力调"] += row["parts"] > 1 and "pf_adjust" in codes
            seen["meter or CT/PT change"] += row["segments"] > 1
            seen["rollover"] += "register rollover" in (row["reasons"] or "")
            seen["tier 2"] += "tier2" in codes
            seen["tier 3"] += "tier3" in codes
            seen["basic charge"] += "basic" in codes
            seen["transformer loss"] += row["loss_kwh_x100"] > 0
            seen["held"] += row["status"] == "held"
    for edge in ("split month with 力调", "meter or CT/PT change", "rollover", "tier 2", "tier 3", "basic charge",
                 "transformer loss", "held"):
        assert seen[edge] > 0, (edge, dict(seen))


# --- (b) random tariffs over small fleets --------------------------------------------------------------------
_CATEGORIES = ("residential", "general_commercial", "large_industrial", "agricultural")
_LEVELS = ("under_1kV", "1-10kV")


def _price(rng: random.Random, lo: int, hi: int) -> str:
    """A price in yuan with up to 6 decimals, as a TOML string."""
    v = rng.randint(lo, hi)
    return f"{v // 10 ** 6}.{v % 10 ** 6:06d}"


def write_tariffs(directory: pathlib.Path, rng: random.Random, change: dt.date | None) -> None:
    """Random but valid tariff files for the four categories (and funds), a second version from ``change``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = [(cat, cat, None) for cat in _CATEGORIES]
    for code, cat in (("COM-TOU-2021", "general_commercial"), ("IND-TOU-2PART", "large_industrial"),
                      ("RES-TIER", "residential")):
        if rng.random() < 0.5:          # the assignment, not the category, chooses the price (R8)
            files.append((f"{cat}_{code.lower()}", cat, code))
    for stem, cat, code in files:
        lines = [f'category = "{cat}"', f'name = "random {stem}"'] + ([f'codes = ["{code}"]'] if code else []) + [""]
        effective_dates = [dt.date(2026, 1, 1)] + ([change] if change and rng.random() < 0.7 else [])
        for eff in effective_dates:
            basic = rng.choice(("none", "capacity", "contract_demand", "actual_demand")) \
                if cat == "large_industrial" else "none"
            tiers = rng.choice(("none", "monthly", "annual"))
            lines += ["[[version]]", f"effective = {eff}", f'basic = "{basic}"',
                      f'pf_standard = "{rng.choice(("none", "0.90", "0.85", "0.80"))}"', f'tiers = "{tiers}"']
            if tiers != "none":
                l1 = rng.randint(1, 3000)
                lines += [f"tier_limits_kwh = [{l1}, {l1 + rng.randint(1, 3000)}]",
                          f'tier_increments = ["{_price(rng, 0, 400_000)}", "{_price(rng, 0, 900_000)}"]']
            for level in _LEVELS:
                ps = sorted((rng.randint(100_000, 2_000_000) for _ in range(4)), reverse=True)
                lines += ["", f'[version.prices."{level}"]'] + [
                    f'{k} = "{v // 10 ** 6}.{v % 10 ** 6:06d}"' for k, v in zip(("sharp", "peak", "flat", "valley"), ps)]
                lines += [f'capacity = "{_price(rng, 1_000_000, 40_000_000)}"',
                          f'demand = "{_price(rng, 1_000_000, 60_000_000)}"']
            lines += ["", "[[version.season]]", 'name = "all_year"', f"months = {list(range(1, 13))}",
                      'weekday = "vvvvvvvvfppfffffpppppfff"', ""]
        (directory / f"{stem}.toml").write_text("\n".join(lines))
    funds = ["[[version]]", "effective = 2026-01-01"]
    for k in range(rng.randint(0, 3)):
        exempt = [c for c in _CATEGORIES if rng.random() < 0.3]
        funds += ["[[version.fund]]", f'name = "f{k}"', f'zh = "基金{k}"', f'price = "{_price(rng, 0, 30_000)}"',
                  f"exempt = {exempt!r}".replace("'", '"')]
    (directory / "funds.toml").write_text("\n".join(funds) + "\n")


@pytest.fixture(scope="module")
def small_fleets(tmp_path_factory):
    """Three small fleets (June and July 2026) with different seeds and edges; generated once."""
    out = []
    for seed in (3, 4, 5):
        d = tmp_path_factory.mktemp(f"small-{seed}")
        out.append(generated(d, 60, 61, seed=seed, rates={**EDGE_RATES, "replacement": 0.1, "rollover": 0.1,
                                                            "tariff_change": 1.0, "multiplier_change": 1.0}))
    return out


def randomise_archive(base: pathlib.Path, d: pathlib.Path, rng: random.Random) -> pathlib.Path:
    """A data directory ``d`` reading ``base``'s lake with a randomised copy of its archive: each customer
    point's 高供低计 transformer (nameplate P0/Pk/I0/Uk or agreed rates, line loss), basic-charge method and
    contract demand (around the 105 % limit), 力调 standard, and opening year-to-date where the archive has it."""
    d.mkdir(parents=True)
    (d / "lake").symlink_to(base / "lake")
    files = d / "archive-files"
    shutil.copytree(base / "archive-files", files)
    md = {}                                   # the month's maximum demand of each point, kW (from its meter)
    for f in (base / "lake" / "readings" / "kind=monthly").glob("date=*/bucket=*/part-*.parquet"):
        t = pq.ParquetFile(f).read(columns=["meter_id", "register", "value"]).to_pylist()
        for r in t:
            if r["register"] == 20:
                md[r["meter_id"]] = max(md.get(r["meter_id"], 0), r["value"])
    mult = {}
    with open(files / "point_multipliers.csv") as fh:
        for r in csv.DictReader(fh):
            mult[r["point_id"]] = int(r["ct_ratio"]) * int(r["pt_ratio"])

    def rewrite(name, change):
        with open(files / f"{name}.csv") as fh:
            rows = list(csv.DictReader(fh))
            cols = list(rows[0])
        for r in rows:
            change(r, cols)
        with open(files / f"{name}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, cols)
            w.writeheader()
            w.writerows(rows)

    def point(r, cols):
        if r["role"] != "customer":
            return
        kw = md.get(int(r["point_id"]), 0) * mult.get(r["point_id"], 1) // 10_000
        r["pf_standard_x100"] = str(rng.choice((0, 80, 85, 90)))
        hv = rng.random() < 0.5
        r["hv_metered_lv"] = "true" if hv else "false"
        r["tx_capacity_kva"] = str(rng.choice((100, 315, 630, 1000, 2000))) if hv or rng.random() < 0.5 else ""
        for c in ("tx_p0_w", "tx_pk_w", "tx_loss_rate_bp", "line_loss_rate_bp", "tx_i0_x100", "tx_uk_x100",
                  "tx_q_loss_rate_bp"):
            if c in r:
                r[c] = ""
        if hv:
            if rng.random() < 0.5:                # nameplate
                r["tx_p0_w"], r["tx_pk_w"] = str(rng.randint(0, 3000)), str(rng.randint(0, 20000))
                if "tx_i0_x100" in r:
                    r["tx_i0_x100"], r["tx_uk_x100"] = str(rng.randint(0, 300)), str(rng.randint(0, 1000))
            else:                                 # agreed rates
                r["tx_loss_rate_bp"] = str(rng.randint(0, 2000))
                if "tx_q_loss_rate_bp" in r and rng.random() < 0.5:
                    r["tx_q_loss_rate_bp"] = str(rng.randint(0, 2000))
            if rng.random() < 0.3:
                r["line_loss_rate_bp"] = str(rng.randint(0, 500))
        basic = rng.choice(("none", "capacity", "contract_demand", "actual_demand"))
        if basic == "capacity" and not r["tx_capacity_kva"]:
            basic = "actual_demand"
        r["basic_charge"] = basic
        # a contract demand just below, at or just above the 105 % limit of the metered demand
        r["contract_demand_kw"] = str(max(1, kw * 100 // rng.choice((100, 104, 105, 106, 120)))) \
            if basic == "contract_demand" or rng.random() < 0.3 else ""

    def customer(r, cols):
        if "opening_ytd_date" in r:
            on = rng.random() < 0.7
            r["opening_ytd_date"] = rng.choice(("2026-06-01", "2026-06-15", "2026-07-01", "2025-12-01")) if on else ""
            r["opening_ytd_kwh_x100"] = str(rng.randint(0, 600_000)) if on else ""

    rewrite("points", point)
    rewrite("customers", customer)
    with archive.Archive(d / "archive.duckdb") as a:
        a.import_files(sorted(files.glob("*.csv")))
    return d


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 2), seed=st.integers(0, 2 ** 32 - 1),
       change=st.sampled_from([None, dt.date(2026, 6, 11), dt.date(2026, 7, 1), dt.date(2026, 7, 20)]))
def test_random_tariffs_and_points_equal_the_reference(small_fleets, kernels, tmp_path_factory, which, seed, change):
    rng = random.Random(seed)
    d = randomise_archive(small_fleets[which], tmp_path_factory.mktemp("random") / "data", rng)
    tdir = d / "tariffs"
    write_tariffs(tdir, rng, change)
    diffs, n = compare_run(d, ("2026-06", "2026-07"), tdir)
    assert n == 120
    assert diffs == [], "\n".join(diffs)

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
import datetime as dt
import pathlib
import random
import shutil

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from storage import bills

from .billing_reference import Reference
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
    for cat in _CATEGORIES:
        lines = [f'category = "{cat}"', f'name = "random {cat}"', ""]
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
        (directory / f"{cat}.toml").write_text("\n".join(lines))
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


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 2), seed=st.integers(0, 2 ** 32 - 1),
       change=st.sampled_from([None, dt.date(2026, 6, 11), dt.date(2026, 7, 1), dt.date(2026, 7, 20)]))
def test_random_tariffs_equal_the_reference(small_fleets, kernels, tmp_path_factory, which, seed, change):
    d = small_fleets[which]
    tdir = tmp_path_factory.mktemp("tariffs")
    write_tariffs(tdir, random.Random(seed), change)
    diffs, n = compare_run(d, ("2026-06", "2026-07"), tdir)
    assert n == 120
    assert diffs == [], "\n".join(diffs)

"""The bill run against an independent reference (tests/billing_reference.py), line by line, to the fen.

Every bill of generated fleets is recomputed one customer at a time in exact fractions from the archive and
the raw lake files, and compared with what ``gridhead bill run`` (``billing_core.jobs.bills.run``) published: every
line item's code, quantity, unit price and amount, the hold reasons, and the loss, reactive energy and
demand the bill was priced on — under the compiled kernels and under their pure twins (``kernels``).

(a) a 2,000-customer, eight-month fleet (June 2026 to January 2027: a new tier year; the shipped tariffs) with the generator's
    edges boosted: meter replacements (换表), CT changes, rollovers, tariff assignment changes in mid-month
    (split months with 力调; the new code priced by its own file), annual tiers crossing their limits, 两部制
    by capacity and by contract demand within and beyond 105 %, nameplate (I0 %, Uk %) and agreed
    transformer losses, exported reactive energy, 缺无功, a month billed out of order (September billed last:
    skipped when October was billed) and go-live in June (opening year-to-date; a few customers without one
    are held).  ``test_the_big_fleet_has_every_edge`` checks the fleet really contains each of them.
(b) hypothesis: random tariff files (versions in mid-month, tier kinds and limits, basic kinds, prices,
    funds and exemptions, files chosen by tariff code), random metering points (高供低计 by nameplate or agreed
    rates, basic methods, contract demand around 105 %, 力调 standards), random opening year-to-date and
    randomly re-sent readings, over two small generated fleets; and two fixed cases found that way.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import os
import pathlib
import random
import shutil

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings, strategies as st

from gridhead.protocols import accel
from gridhead.storage import archive, lake
from gridhead.billing_core.jobs import bills

from tests.billing_reference import Reference, pf_hundredths, pf_rate_bp, round_half_away
from tests.conftest import _kernel_params, generated

PERIODS = ("2026-06", "2026-07", "2026-08", "2026-10", "2026-11", "2026-12", "2027-01", "2026-09")   # September last
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
        for name, mine in (("loss_kwh_x100", b.loss_p), ("q_kvarh_x100", b.q), ("demand_kw_x1e4", b.demand),
                           ("parts", b.parts), ("segments", b.segments)):
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


def reference_bills(d: pathlib.Path, periods, tariffs_dir=None) -> dict:
    """period -> the reference's bills, billing ``periods`` in that order (as the run will)."""
    ref = Reference(d, tariffs_dir)
    return {p: ref.bill_period(p) for p in periods}


def compare_run(d: pathlib.Path, expected: dict, tariffs_dir=None, limit: int = 30) -> tuple[list[str], int]:
    """Bill the periods of ``expected`` in its order with the run, from no earlier bills, and compare;
    (differences, bills compared)."""
    shutil.rmtree(d / "bills", ignore_errors=True)
    diffs, n = [], 0
    for p, mine in expected.items():
        bills.run(d, p, tariffs_dir)
        diffs += differences(mine, published(d, p), p)
        n += len(mine)
    return diffs[:limit] + ([f"... {len(diffs) - limit} more"] if len(diffs) > limit else []), n


def kernel_modes() -> list[str]:
    """The kernels the suite runs under (conftest's ``kernels`` fixture): compiled and pure twins, or the
    twins only under GRIDHEAD_PUREPYTHON=1."""
    modes = _kernel_params()
    if "compiled" in modes and not accel.is_compiled("gridhead.billing_core._billing"):
        pytest.fail("compiled kernels are not built: run `pip install -e .` (or set GRIDHEAD_PUREPYTHON=1)")
    return modes


@contextlib.contextmanager
def kernels_restored():
    """The kernel mode the session runs under, back in force when the block ends (a failed assert too)."""
    try:
        yield
    finally:
        accel.use(_kernel_params()[0] if len(_kernel_params()) == 1 else "auto")


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
    """2,000 customers, 2026-06-01 .. 2027-02-01 (eight settlement months), edges boosted; the reference's
    bills of every month (they do not depend on the kernel: computed once)."""
    d = tmp_path_factory.mktemp("reference-fleet")
    # no 15-minute load curves: bills never read them, and they were over half the lake's files (5,880 of
    # 10,436) — most of the fixture's time
    generated(d, 2000, 245, seed=15, rates=EDGE_RATES, curve_fraction=0)
    return d, reference_bills(d, PERIODS)


@pytest.mark.slow
def test_every_bill_of_eight_months_equals_the_reference(big_fleet, kernels):
    d, expected = big_fleet
    diffs, n = compare_run(d, expected)
    assert n == 2000 * 8
    assert diffs == [], "\n".join(diffs)


@pytest.mark.slow
def test_the_big_fleet_has_every_edge(big_fleet):
    """The comparison above is only worth what the fleet contains: count each edge in the reference's bills."""
    d, expected = big_fleet
    seen = collections.Counter()
    for p, mine in expected.items():
        for b in mine.values():
            codes = {c for c, *_ in b.items}
            seen["split month with 力调"] += b.parts > 1 and "pf_adjust" in codes
            seen["meter or CT/PT change"] += b.segments > 1
            seen["rollover"] += "register rollover" in b.reasons
            seen["annual tier crossed"] += b.ytd is not None and "tier2" in codes and \
                not any(c == "tier2" and q == b.e_total for c, q, *_ in b.items)
            seen["tier 3"] += "tier3" in codes
            seen["contract demand within 105 %"] += "basic" in codes and not b.over_105 and \
                any(c == "basic" and q % 10_000 == 0 and q > 0 for c, q, *_ in b.items)
            seen["contract demand over 105 %"] += b.over_105
            seen["nameplate loss"] += b.loss_method == "nameplate" and b.loss_q > 0
            seen["agreed loss"] += b.loss_method == "agreed" and b.loss_p > 0
            seen["year-to-date unknown (go-live without an opening)"] += b.ytd is None and "tier2" not in codes \
                and any("year-to-date" in r for r in b.reasons)
            seen["opening year-to-date at go-live"] += p == "2026-06" and bool(b.ytd)
            seen["new tier year"] += p == "2027-01" and b.ytd == 0
            seen["缺无功"] += any("reactive" in r for r in b.reasons)
            seen["held"] += b.held
            seen["issued"] += not b.held
    assert all(seen.values()) and len(seen) == 15, dict(seen)


# --- (b) random tariffs over small fleets --------------------------------------------------------------------
_CATEGORIES = ("residential", "general_commercial", "large_industrial", "agricultural")
_LEVELS = ("under_1kV", "1-10kV")


def _price(rng: random.Random, lo: int, hi: int) -> str:
    """A price in yuan with up to 6 decimals, as a TOML string."""
    v = rng.randint(lo, hi)
    return f"{v // 10 ** 6}.{v % 10 ** 6:06d}"


def write_tariffs(directory: pathlib.Path, rng: random.Random, change: dt.date | None,
                  split=lambda category, code: True) -> None:
    """Random but valid tariff files for the four categories (and funds), some with a second version from
    ``change`` (only files for which ``split(category, code)`` holds, when ``change`` is inside the month)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = [(cat, cat, None) for cat in _CATEGORIES]
    for code, cat in (("COM-TOU-2021", "general_commercial"), ("IND-TOU-2PART", "large_industrial"),
                      ("RES-TIER", "residential")):
        if rng.random() < 0.5:          # the assignment, not the category, chooses the price (R8)
            files.append((f"{cat}_{code.lower()}", cat, code))
    for stem, cat, code in files:
        lines = [f'category = "{cat}"', f'name = "random {stem}"'] + ([f'codes = ["{code}"]'] if code else []) + [""]
        second = change and rng.random() < 0.7 and (change.day == 1 or split(cat, code))
        effective_dates = [dt.date(2026, 1, 1)] + ([change] if second else [])
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
    n_funds = rng.randint(0, 3)             # none: no funds file at all
    for k in range(n_funds):
        exempt = [c for c in _CATEGORIES if rng.random() < 0.3]
        funds += ["[[version.fund]]", f'name = "f{k}"', f'zh = "基金{k}"', f'price = "{_price(rng, 0, 30_000)}"',
                  f"exempt = {exempt!r}".replace("'", '"')]
    if n_funds:
        (directory / "funds.toml").write_text("\n".join(funds) + "\n")


@pytest.fixture(scope="module")
def small_fleets(tmp_path_factory):
    """Two small fleets going live on 2026-07-01 (July billed), edges boosted, and each customer point's
    maximum demand in July (kW, at the primary) for contract demands around 105 %."""
    out = []
    for seed in (3, 4):
        d = tmp_path_factory.mktemp(f"small-{seed}")
        generated(d, 60, 31, seed=seed, start=dt.date(2026, 7, 1),
                  rates={**EDGE_RATES, "replacement": 0.1, "rollover": 0.1, "tariff_change": 1.0,
                         "multiplier_change": 1.0, "no_reactive": 0.3, "agreed_loss": 0.5})
        con = duckdb.connect(str(d / "archive.duckdb"), read_only=True)
        mult = dict(con.execute("SELECT point_id, ct_ratio * pt_ratio FROM point_multipliers").fetchall())
        meter_point = dict(con.execute("SELECT meter_id, point_id FROM point_meters").fetchall())
        con.close()
        md = {}
        for f in (d / "lake" / "readings" / "kind=monthly").glob("date=2026-08-01/bucket=*/part-*.parquet"):
            for r in pq.ParquetFile(f).read(columns=["meter_id", "register", "value"]).to_pylist():
                if r["register"] == 20 and r["meter_id"] in meter_point:
                    pid = meter_point[r["meter_id"]]
                    md[pid] = max(md.get(pid, 0), r["value"] * mult.get(pid, 1) // 10_000)
        out.append((d, md))
    return out


def randomise_archive(base, d: pathlib.Path, rng: random.Random) -> pathlib.Path:
    """A data directory ``d`` reading ``base``'s lake with a randomised copy of its archive: each customer
    point's 高供低计 transformer (nameplate P0/Pk/I0/Uk or agreed rates, line loss), basic-charge method and
    contract demand (around the 105 % limit of its July demand), 力调 standard, and each customer's opening
    year-to-date (at go-live, earlier, later, or none).  Rows are updated in place: valid values only."""
    base, md = base
    d.mkdir(parents=True)
    (d / "lake").symlink_to(base / "lake")
    con = duckdb.connect(str(d / "archive.duckdb"))
    con.execute(archive.ddl())
    con.execute(f"ATTACH '{base / 'archive.duckdb'}' AS o (READ_ONLY)")
    points = []
    for (pid,) in con.execute("SELECT point_id FROM o.points WHERE role = 'customer' ORDER BY point_id").fetchall():
        hv = rng.random() < 0.5
        kva = rng.choice((100, 315, 630, 1000, 2000)) if hv or rng.random() < 0.5 else None
        p0 = pk = i0 = uk = rate = q_rate = line = None
        if hv and rng.random() < 0.5:               # nameplate
            p0, pk, i0, uk = rng.randint(0, 3000), rng.randint(0, 20000), rng.randint(0, 300), rng.randint(0, 1000)
        elif hv:                                      # agreed rates
            rate = rng.randint(0, 2000)
            q_rate = rng.choice((None, rng.randint(0, 2000)))
        if hv and rng.random() < 0.3:
            line = rng.randint(0, 500)
        basic = rng.choice(("none", "capacity", "contract_demand", "actual_demand"))
        if basic == "capacity" and kva is None:
            basic = "actual_demand"
        contract = None
        if basic == "contract_demand" or rng.random() < 0.3:   # just below, at or above 105 % of the demand
            contract = max(1, md.get(pid, 0) * 100 // rng.choice((100, 104, 105, 106, 120)))
        points.append((hv, kva, p0, pk, i0, uk, rate, q_rate, line, contract, basic, rng.choice((0, 0, 0, 80, 85, 90)),
                       pid))
    p_cols = ("hv_metered_lv", "tx_capacity_kva", "tx_p0_w", "tx_pk_w", "tx_i0_x100", "tx_uk_x100", "tx_loss_rate_bp",
              "tx_q_loss_rate_bp", "line_loss_rate_bp", "contract_demand_kw", "basic_charge", "pf_standard_x100",
              "point_id")
    customers = []
    for (cid,) in con.execute("SELECT customer_id FROM o.customers ORDER BY customer_id").fetchall():
        on = rng.choice((None, dt.date(2026, 7, 1), dt.date(2026, 7, 1), dt.date(2026, 6, 15), dt.date(2025, 12, 1)))
        customers.append((on and rng.randint(0, 600_000), on, cid))
    # a new archive file with the changed rows (DuckDB cannot UPDATE a row that a foreign key refers to)
    mods = {"points": (pa.table({c: [r[i] for r in points] for i, c in enumerate(p_cols)}), "point_id"),
            "customers": (pa.table({"opening_ytd_kwh_x100": pa.array([c[0] for c in customers], pa.int64()),
                                    "opening_ytd_date": pa.array([c[1] for c in customers], pa.date32()),
                                    "customer_id": [c[2] for c in customers]}), "customer_id")}
    for t in archive.TABLES:
        cols = t.names
        if t.name in mods:
            mod, key = mods[t.name]
            con.register("mod", mod)
            pick = ", ".join(f"CASE WHEN m.{key} IS NULL THEN x.{c} ELSE m.{c} END"
                             if c in mod.column_names and c != key else f"x.{c}" for c in cols)
            con.execute(f"INSERT INTO {t.name} SELECT {pick} FROM o.{t.name} x LEFT JOIN mod m ON m.{key} = x.{key}")
            con.unregister("mod")
        else:
            con.execute(f"INSERT INTO {t.name} SELECT {', '.join(cols)} FROM o.{t.name}")
    con.close()
    return d


_PERTURBED_DAYS = ("2026-07-01", "2026-08-01")


def _lake_copy(src: pathlib.Path, dst: pathlib.Path, days) -> None:
    """``dst``: the lake ``src`` with the reading partitions of ``days`` copied and every other partition (and
    the events) linked — what a full copy reads, for a fraction of its files (the bill run and the reference
    only read the lake; new readings are written into the copied partitions only)."""
    dst.mkdir()
    for top in src.iterdir():
        if top.name != "readings":
            (dst / top.name).symlink_to(top)
            continue
        for kind in top.iterdir():
            (dst / "readings" / kind.name).mkdir(parents=True)
            for part in kind.iterdir():
                if part.name.split("=", 1)[1] in days:
                    shutil.copytree(part, dst / "readings" / kind.name / part.name)
                else:
                    (dst / "readings" / kind.name / part.name).symlink_to(part)


def perturb_readings(d: pathlib.Path, rng: random.Random, k: int) -> None:
    """Replace the shared lake of ``d`` by a copy and re-send ``k`` random registers of the settlement and daily
    freezes at 2026-07-01 and 2026-08-01, received later (the last received wins): moved by up to ±30 kWh
    (backwards steps, TOU sums that do not add up) and some flagged estimated (估抄)."""
    lake_dir = d / "lake"
    src = lake_dir.resolve()
    lake_dir.unlink()
    _lake_copy(src, lake_dir, _PERTURBED_DAYS)
    rows = []
    ms = pa.timestamp("ms", tz="UTC")
    for kind in ("monthly", "daily"):
        for day in _PERTURBED_DAYS:
            for f in sorted((lake_dir / "readings" / f"kind={kind}" / f"date={day}").glob("bucket=*/part-*.parquet")):
                t = pq.ParquetFile(f).read()
                # instants as integer ms (not datetime objects: their conversion was most of this function's time)
                for c in ("ts_utc", "received_utc"):
                    t = t.set_column(t.schema.get_field_index(c), c, t.column(c).cast(ms).cast(pa.int64()))
                rows += [(kind, r) for r in t.to_pylist() if r["register"] <= 8]
    by_kind: dict = {"monthly": [], "daily": []}
    for kind, r in rng.sample(rows, min(k, len(rows))):
        r = dict(r)
        r["value"] = max(0, r["value"] + rng.randint(-3000, 3000))
        r["quality"] = rng.choice((0, 0, 2))
        r["received_utc"] += 3_600_000                 # an hour later, ms
        by_kind[kind].append(r)
    for kind, rs in by_kind.items():
        if rs:
            cols = {c: [r[c] for r in rs] for c in ("meter_id", "register", "value", "quality", "source")}
            for c in ("ts_utc", "received_utc"):
                cols[c] = pa.array([r[c] for r in rs], ms)
            lake.write_readings(lake_dir, cols, kind)


# In CI (CI=true) the examples are drawn from a fixed seed: the gate is the same run every time.  Developers'
# runs draw new examples each time (GRIDHEAD_REFERENCE_EXAMPLES=n for more than 8) and add what they find as an
# @example below with its fix.
@settings(max_examples=int(os.environ.get("GRIDHEAD_REFERENCE_EXAMPLES") or 8) if not os.environ.get("CI") else 8,
          deadline=None, derandomize=bool(os.environ.get("CI")))
@given(which=st.integers(0, 1), seed=st.integers(0, 2 ** 32 - 1),
       change=st.sampled_from([None, dt.date(2026, 7, 1), dt.date(2026, 7, 11), dt.date(2026, 7, 20)]))
# found: a CT change in July and a backward step of the exported reactive register in the first segment (customer
# 38): the run took |exported| per segment, not of the month (test_billing_edges has the case worked by hand)
@example(which=1, seed=94883, change=None)
def test_random_tariffs_and_points_equal_the_reference(small_fleets, tmp_path_factory, which, seed, change):
    """Each example: a randomised archive and tariff directory; July billed by the reference once and by the
    run under each kernel (as the ``kernels`` fixture switches them)."""
    rng = random.Random(seed)
    d = randomise_archive(small_fleets[which], tmp_path_factory.mktemp("random") / "data", rng)
    perturb_readings(d, rng, 12)
    tdir = d / "tariffs"
    # every commercial customer of these fleets changes its assignment in July: a version of theirs starting
    # inside July makes a third part (test_assignment_change_and_new_version_in_one_month)
    write_tariffs(tdir, rng, change)
    expected = reference_bills(d, ("2026-07",), tdir)
    with kernels_restored():
        for mode in kernel_modes():
            accel.use(mode)
            diffs, n = compare_run(d, expected, tdir)
            assert n == 60
            assert diffs == [], f"kernels {mode}:\n" + "\n".join(diffs)


def _single_rate_file(category: str, versions: list, basic: str = "none") -> str:
    """A tariff file of ``category``: one version per (effective date, price scale %), TOU prices scaled."""
    out = [f'category = "{category}"', f'name = "{category} (test)"']
    for eff, scale in versions:
        out += ["", "[[version]]", f"effective = {eff}", f'basic = "{basic}"', 'pf_standard = "0.85"', 'tiers = "none"']
        for level in ("under_1kV", "1-10kV"):
            out.append(f'[version.prices."{level}"]')
            for name, base in (("sharp", 1_250_000), ("peak", 1_040_000), ("flat", 650_000), ("valley", 260_000)):
                v = base * scale // 100
                out.append(f'{name} = "{v // 10 ** 6}.{v % 10 ** 6:06d}"')
            if basic != "none":
                out += ['capacity = "25.6"', 'demand = "38.4"']
        out += ["[[version.season]]", 'name = "all_year"', f"months = {list(range(1, 13))}",
                'weekday = "vvvvvvvvfppfffffpppppfff"']
    return "\n".join(out) + "\n"


def _with_tariffs(base: pathlib.Path, d: pathlib.Path, files: dict) -> pathlib.Path:
    """A data directory reading ``base``'s lake and archive (copied) with the shipped tariffs, ``files``
    (name -> TOML text) replacing or adding some; returns the tariff directory."""
    d.mkdir(parents=True)
    (d / "lake").symlink_to(base / "lake")
    shutil.copy(base / "archive.duckdb", d / "archive.duckdb")
    tdir = d / "tariffs"
    shutil.copytree(pathlib.Path(__file__).resolve().parents[2] / "billing_core" / "tariffs", tdir)
    for name, text in files.items():
        (tdir / name).write_text(text)
    return tdir


def test_assignment_change_and_new_version_in_one_month(small_fleets, tmp_path_factory):
    """Every commercial customer of this fleet moves from COM-TOU to COM-TOU-2021 (its own file) on some day
    of July; the default commercial file gets new prices from 07-11: a customer moving after the 11th has
    three parts (07-01..10 old prices, 07-11..move new prices, then the COM-TOU-2021 file).  The run split a
    bill in at most two parts and ignored the version (i15 notes, DIFFERENCE 4: customer 1, July 2026,
    energy_sharp 255826 fen printed, 289690 by the rules); now every part is priced, and the published
    ``parts`` equal the reference's (``differences`` compares them)."""
    base, _md = small_fleets[1]
    d = tmp_path_factory.mktemp("three-parts") / "data"
    tdir = _with_tariffs(base, d, {"general_commercial.toml": _single_rate_file(
        "general_commercial", [(dt.date(2026, 1, 1), 100), (dt.date(2026, 7, 11), 130)])})
    expected = reference_bills(d, ("2026-07",), tdir)
    three = sorted(cid for cid, b in expected["2026-07"].items() if b.parts == 3)
    if not three:
        pytest.fail("the case is gone: no bill of three parts in this fleet")
    with kernels_restored():
        for mode in kernel_modes():
            accel.use(mode)
            diffs, _n = compare_run(d, expected, tdir)
            assert diffs == [], f"kernels {mode}:\n" + "\n".join(diffs)
            got = published(d, "2026-07")
            assert sorted(cid for cid, (row, _items) in got.items() if row["parts"] == 3) == three
    # the printed bill names the first change, the new assignment and the number of parts
    shown = bills.render(bills.show(d, got[three[0]][0]["customer_no"], "2026-07"))
    assert "2026-07-11" in shown and "; assignment → COM-TOU-2021; 3 parts" in shown


_TWO_PART_FROM_JULY_11 = """category = "large_industrial"
name = "大工业用电 (两部制 from 2026-07-11)"

[[version]]
effective = 2026-01-01
basic = "none"
pf_standard = "0.90"
tiers = "none"
[version.prices."1-10kV"]
sharp = "1.05"
peak = "0.88"
flat = "0.58"
valley = "0.29"
[version.prices."under_1kV"]
sharp = "1.06"
peak = "0.89"
flat = "0.59"
valley = "0.30"
[[version.season]]
name = "all_year"
months = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
weekday = "vvvvvvvvfppfffffpppppfff"

[[version]]
effective = 2026-07-11
basic = "contract_demand"
pf_standard = "0.90"
tiers = "none"
[version.prices."1-10kV"]
sharp = "1.0612"
peak = "0.8844"
flat = "0.5896"
valley = "0.2948"
capacity = "25.6"
demand = "38.4"
[version.prices."under_1kV"]
sharp = "1.07"
peak = "0.90"
flat = "0.60"
valley = "0.31"
capacity = "25.6"
demand = "38.4"
[[version.season]]
name = "all_year"
months = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
weekday = "vvvvvvvvfppfffffpppppfff"
"""


def test_basic_charge_of_a_two_part_version_starting_in_the_month(small_fleets, tmp_path_factory):
    """A single-rate large-industrial tariff becomes two-part on 07-11: July's basic charge is the 21 days'
    share (1583号, by days), printed as its own line (found by the property test: the run left the line out
    while charging it, and refused the period)."""
    base, _md = small_fleets[1]
    tdir = _with_tariffs(base, tmp_path_factory.mktemp("two-part") / "data",
                         {"large_industrial.toml": _TWO_PART_FROM_JULY_11})
    d = tdir.parent
    expected = reference_bills(d, ("2026-07",), tdir)
    two_part = [b for b in expected["2026-07"].values() if b.parts == 2 and any(c == "basic" for c, *_ in b.items)]
    if not two_part:
        pytest.fail("the case is gone: no large-industrial bill in this fleet")
    with kernels_restored():
        for mode in kernel_modes():
            accel.use(mode)
            diffs, _n = compare_run(d, expected, tdir)
            assert diffs == [], f"kernels {mode}:\n" + "\n".join(diffs)


def test_tou_sum_hold_over_two_segments(small_fleets, tmp_path_factory):
    """Found by the property test (which=1, seed=25022711): July customer 38 (IND-TOU-2PART, CT 250 → 500 on
    07-28, the meter stays).  Its first segment's TOU registers add up to 290.71 of the total's 302.39 (0.01
    kWh at the meter): the reference holds the bill ("TOU registers do not add up to the total"), the run did
    not — its segment table marked a segment ending at a CT change of a meter still in place as not to be
    checked (``NOT (seg_to = meter_to AND ...)`` is NULL when meter_to is NULL).  The reference was right;
    the run is fixed (billing_core.jobs.bills, billing_core.energy.tou_registers_do_not_add_up; worked by hand in
    test_billing_edges::test_tou_sum_is_checked_per_segment_before_the_multiplier_at_a_ct_change)."""
    test_random_tariffs_and_points_equal_the_reference.hypothesis.inner_test(
        small_fleets, tmp_path_factory, which=1, seed=25022711, change=None)

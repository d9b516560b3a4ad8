"""The bill run end to end on a generated fleet: every customer billed or held, the ground truth's anomalies
held or split, line items adding up, bills equal to the engine priced from hand-extracted readings,
idempotent re-runs, atomic publication under SIGKILL, bad input refused with nothing published."""

from __future__ import annotations

import csv
import datetime as dt
import json
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from gridhead.billing_core import engine, run as R
from gridhead.billing_core import _billing_py as K
from gridhead.billing_core.tariff import TariffSet, TariffTable
from gridhead.protocols.errors import BillingError, ConfigError
from gridhead.storage import lake, schema
from gridhead.billing_core.jobs import bills

from tests.conftest import generated

ROOT = pathlib.Path(__file__).resolve().parents[2]
N = 400


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """400 customers, June and July 2026 (61 days), archive imported, both periods billed."""
    d = tmp_path_factory.mktemp("fleet")
    generated(d, N, 61, seed=11, rates={"reverse_running": 0.005, "stopped_meter": 0.005,
                                        "replacement": 0.01, "rollover": 0.01})
    for p in ("2026-06", "2026-07"):
        bills.run(d, p)
    return d


def _bills(d, period):
    return pq.ParquetFile(d / "bills" / f"period={period}" / "bills.parquet").read()


def _items(d, period):
    return pq.ParquetFile(d / "bills" / f"period={period}" / "bill_items.parquet").read()


def _truth(d):
    with open(d / "ground_truth" / "anomalies.csv") as f:
        return list(csv.DictReader(f))


def _col(t, name):
    return np.asarray(t.column(name).to_pylist())


def test_every_customer_gets_a_bill_or_a_held_bill_with_reasons(fleet):
    for p in ("2026-06", "2026-07"):
        b = _bills(fleet, p)
        assert sorted(_col(b, "customer_id")) == list(range(1, N + 1))
        status, reasons = _col(b, "status"), _col(b, "reasons")
        assert set(status) <= {"issued", "held"}
        assert all(r for r in reasons[status == "held"])
        assert not any(r for r in reasons[status == "issued"])
        s = json.loads((fleet / "bills" / f"period={p}" / "summary.json").read_text())
        assert s["bills"] == N and s["issued"] + s["held"] == N
        assert s["total_fen"] == int(_col(b, "total_fen").sum())


def test_line_items_add_up_to_each_total(fleet):
    b, it = _bills(fleet, "2026-06"), _items(fleet, "2026-06")
    total = dict(zip(_col(b, "bill_id"), _col(b, "total_fen")))
    ids, codes, amounts = _col(it, "bill_id"), _col(it, "code"), _col(it, "amount_fen")
    acc = {}
    for i, c, a in zip(ids, codes, amounts):
        if c == "total":
            assert a == total[i]
        else:
            acc[i] = acc.get(i, 0) + int(a)
    assert acc == {k: int(v) for k, v in total.items()}
    money = sum(_col(b, k) for k in ("energy_sharp_fen", "energy_peak_fen", "energy_flat_fen", "energy_valley_fen",
                                     "tier2_fen", "tier3_fen", "basic_fen", "pf_adjust_fen", "funds_fen"))
    assert (money == _col(b, "total_fen")).all()


def _in(period, date):
    start, end = bills.period_bounds(period)
    return start <= date < end


def test_ground_truth_anomalies_are_held_or_split(fleet):
    truth = [r for r in _truth(fleet) if r["anomaly"] != "missing_read"]
    kinds = {r["anomaly"] for r in truth}
    assert {"replacement", "rollover", "reverse_running", "stopped_meter"} <= kinds
    by = {p: {r["customer_id"]: r for r in _bills(fleet, p).to_pylist()} for p in ("2026-06", "2026-07")}
    for r in truth:
        cid = int(r["point_id"])
        date = dt.date.fromisoformat(r["date"]) if r["date"] else None
        if r["anomaly"] == "replacement":
            for p in by:
                # the swap day's freeze still belongs to the old meter: a swap on the 1st is a boundary
                want = 2 if _in(p, date) and date != bills.period_bounds(p)[0] else 1
                assert by[p][cid]["segments"] == want, (r, p)
                assert by[p][cid]["e_metered_kwh_x100"] > 0
        elif r["anomaly"] == "rollover":
            held = [by[p][cid]["flags"] & R.F_ROLLOVER for p in by]
            assert sum(1 for h in held if h) == 1, r               # the register wraps once in two months
        elif r["anomaly"] == "reverse_running":
            for p in by:
                if date < bills.period_bounds(p)[1] - dt.timedelta(days=1):
                    assert by[p][cid]["flags"] & R.R_REVERSE and by[p][cid]["status"] == "held", (r, p)
        elif r["anomaly"] == "stopped_meter":
            for p in by:
                if date <= bills.period_bounds(p)[0]:
                    assert by[p][cid]["flags"] & R.F_ZERO and by[p][cid]["status"] == "held", (r, p)
    # tariff changes of the archive inside a period split the bill in two parts at that day
    con = duckdb.connect(str(fleet / "archive.duckdb"), read_only=True)
    changes = con.execute("SELECT customer_id, valid_from FROM customer_tariffs WHERE valid_from > DATE '2026-01-01'"
                          ).fetchall()
    con.close()
    assert changes
    for cid, day in changes:
        for p in by:
            start = bills.period_bounds(p)[0]
            want = 2 if _in(p, day) and day > start else 1
            assert by[p][cid]["parts"] == want
            if want == 2:
                assert by[p][cid]["change_day"] == (day - start).days + 1


def test_bills_equal_the_engine_priced_from_hand_extracted_readings(fleet):
    """Sampled plain customers (one meter, one multiplier, one tariff, no losses): read the two settlement
    readings with plain DuckDB, compute E = (now - prev) × CT × PT per register, price with the engine."""
    b = {r["customer_id"]: r for r in _bills(fleet, "2026-06").to_pylist()}
    con = duckdb.connect(":memory:")
    con.execute(f"ATTACH '{fleet / 'archive.duckdb'}' AS a (READ_ONLY)")
    plain = con.execute("""
        SELECT c.customer_id, c.category, c.voltage_v, pm.meter_id, mu.ct_ratio * mu.pt_ratio, p.pf_standard_x100,
               p.basic_charge, coalesce(p.contract_demand_kw, 0), coalesce(p.tx_capacity_kva, 0),
               coalesce(c.opening_ytd_kwh_x100, 0)
        FROM a.customers c JOIN a.points p ON p.customer_id = c.customer_id
        JOIN a.point_meters pm ON pm.point_id = p.point_id JOIN a.point_multipliers mu ON mu.point_id = p.point_id
        WHERE NOT p.hv_metered_lv
          AND (SELECT count(*) FROM a.point_meters x WHERE x.point_id = p.point_id) = 1
          AND (SELECT count(*) FROM a.point_multipliers x WHERE x.point_id = p.point_id) = 1
          AND (SELECT count(*) FROM a.customer_tariffs x WHERE x.customer_id = c.customer_id) = 1
        ORDER BY c.category, c.customer_id""").fetchall()
    rng = random.Random(3)
    by_cat = {}
    for row in plain:
        by_cat.setdefault(row[1], []).append(row)
    sample = [r for rows in by_cat.values() for r in rng.sample(rows, min(6, len(rows)))]
    assert {r[1] for r in sample} >= {"residential", "general_commercial", "large_industrial"}
    glob = fleet / "lake" / "readings" / "kind=monthly"
    ts = TariffSet.load()
    # the customer chose basic charge by capacity (points.basic_charge): the same tariff rows priced by kVA
    base = ts.table()
    cap = base.params.copy()
    cap[:, K.P_BASIC_KIND] = np.where(cap[:, K.P_BASIC_KIND] != K.BASIC_NONE, K.BASIC_CAPACITY, K.BASIC_NONE)
    # a meter without reactive registers cannot be assessed for 力调: the same rows without it
    nopf = base.params.copy()
    nopf[:, K.P_PF_STD] = -1
    table = TariffTable(np.vstack([base.params, cap, nopf]), base.keys * 3, base.index, base.funds)
    cols = {k: [] for k in ("tariff_row", "e_sharp", "e_peak", "e_flat", "e_valley", "q", "demand", "contract_kw",
                            "capacity_kva", "cum_prev")}
    # the fleet goes live on 2026-06-01 with each customer's opening year-to-date (annual tiers): June's
    # year-to-date before the period is that opening value
    for cid, cat, volt, meter, mult, pf_std, basic, contract, kva, opening in sample:
        cols["cum_prev"].append(opening)
        r = {}
        for day in ("2026-06-01", "2026-07-01"):
            r[day] = dict(con.execute(f"SELECT register, value FROM read_parquet('{glob}/date={day}/*/*.parquet') "
                                      f"WHERE meter_id = ?", [meter]).fetchall())
        e = {code: (r["2026-07-01"][code] - r["2026-06-01"][code]) * mult
             for code in r["2026-06-01"] if code in r["2026-07-01"] and code <= 8}
        flat = e[1] - e[2] - e[3] - e[5]
        row = base.row(cat, R.voltage_level(volt), dt.date(2026, 6, 1), ts)
        if 7 not in r["2026-06-01"]:
            row += 2 * len(base.params)
        cols["tariff_row"].append(row + (len(base.params) if basic == "capacity" else 0))
        cols["capacity_kva"].append(kva)
        for k, v in zip(("e_sharp", "e_peak", "e_flat", "e_valley"), (e[2], e[3], flat, e[5])):
            cols[k].append(v)
        cols["q"].append(abs(e.get(7, 0)) + abs(e.get(8, 0)))      # imported + exported reactive (215号)
        cols["demand"].append(r["2026-07-01"].get(20, 0) * mult)
        cols["contract_kw"].append(contract)
    rows = engine.ChargeRows.of(len(sample), **{k: np.array(v) for k, v in cols.items()}, days=30, period_days=30)
    got = engine.price(rows, table)
    compared = set()
    for i, s in enumerate(sample):
        bill = b[s[0]]
        if bill["flags"]:
            continue
        compared.add(s[1])
        for k in ("energy_sharp_fen", "energy_peak_fen", "energy_flat_fen", "energy_valley_fen", "basic_fen",
                  "pf_adjust_fen", "funds_fen", "total_fen"):
            assert bill[k] == int(got[k][i]), (s, k)
    assert compared >= {"residential", "general_commercial", "large_industrial"}


def test_annual_tier_cumulative_carries_to_the_next_period(fleet):
    june = {r["customer_id"]: r for r in _bills(fleet, "2026-06").to_pylist()}
    july = _bills(fleet, "2026-07").to_pylist()
    res = [r for r in july if r["category"] == "residential"]
    assert res
    unknown = 0
    for r in res:
        if r["flags"] & R.R_NO_YTD:         # no opening year-to-date at go-live: held both months, never from 0
            unknown += 1
            assert r["status"] == "held" and june[r["customer_id"]]["flags"] & R.R_NO_YTD
            continue
        assert r["cum_after_kwh_x100"] == june[r["customer_id"]]["cum_after_kwh_x100"] + r["e_total_kwh_x100"]
    assert 0 < unknown < len(res) // 20


def test_rerun_is_identical_and_keeps_releases(fleet):
    part = fleet / "bills" / "period=2026-06"
    before = (part / "bills.parquet").read_bytes(), (part / "bill_items.parquet").read_bytes()
    bills.run(fleet, "2026-06")
    assert ((part / "bills.parquet").read_bytes(), (part / "bill_items.parquet").read_bytes()) == before
    held = bills.held(fleet, "2026-06")
    assert held.num_rows
    one = held.column("bill_id")[0].as_py()
    r = bills.release(fleet, [one], by="王审核", note="reverse wiring checked on site")
    assert r == {"released": [one], "already": []}
    again = bills.release(fleet, [one], by="someone else")
    assert again == {"released": [], "already": [one]}
    row = [x for x in _bills(fleet, "2026-06").to_pylist() if x["bill_id"] == one][0]
    assert row["status"] == "released" and row["released_by"] == "王审核" and row["released_at"]
    log = [json.loads(x) for x in (part / "reviews.jsonl").read_text().splitlines()]
    assert [(x["bill_id"], x["by"]) for x in log] == [(one, "王审核")]
    assert one not in set(bills.held(fleet, "2026-06").column("bill_id").to_pylist())
    assert bills.summary(fleet, "2026-06")["released"] == 1
    bills.run(fleet, "2026-06")                               # the bill did not change: the release stays
    row = [x for x in _bills(fleet, "2026-06").to_pylist() if x["bill_id"] == one][0]
    assert row["status"] == "released" and row["released_by"] == "王审核"
    with pytest.raises(BillingError, match="not held"):
        issued = [x["bill_id"] for x in _bills(fleet, "2026-06").to_pylist() if x["status"] == "issued"][0]
        bills.release(fleet, [issued], by="x")
    with pytest.raises(BillingError, match="no such bill"):
        bills.release(fleet, [bills.bill_id("2026-06", 10 ** 9)], by="x")


def _copy(fleet, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    shutil.copy(fleet / "archive.duckdb", d / "archive.duckdb")
    shutil.copytree(fleet / "lake", d / "lake")
    return d


def _rewrite_monthly(d, day, meter, keep_daily=True):
    """Drop one meter's monthly settlement readings of ``day`` (and its daily frozen ones unless keep_daily);
    a partition's materialised pivot is rewritten with its file (as every lake writer does)."""
    kinds = ["monthly"] + ([] if keep_daily else ["daily"])
    for kind in kinds:
        for f in (d / "lake" / "readings" / f"kind={kind}" / f"date={day}").glob("bucket=*/part-*.parquet"):
            t = pq.read_table(f, partitioning=None)
            keep = np.asarray(t.column("meter_id")) != meter
            if not keep.all():
                pq.write_table(t.filter(keep), f)
                if (f.parent / lake.pivot_name(f.name)).exists():
                    lake.write_pivot(t.filter(keep), f)


def test_missing_monthly_reading_falls_back_to_daily_then_holds(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    ref = {r["customer_id"]: r for r in _bills(fleet, "2026-06").to_pylist()}
    cid = next(c for c, r in ref.items() if r["category"] == "residential" and r["status"] == "issued"
               and r["segments"] == 1)
    _rewrite_monthly(d, "2026-07-01", cid)
    bills.run(d, "2026-06")
    got = {r["customer_id"]: r for r in _bills(d, "2026-06").to_pylist()}
    if got[cid]["flags"] & R.F_MISSING:        # the generator's own missing daily read on that day
        pytest.skip("daily frozen reading missing too")
    assert got[cid]["total_fen"] == ref[cid]["total_fen"] and got[cid]["status"] == "issued"
    _rewrite_monthly(d, "2026-07-01", cid, keep_daily=False)
    bills.run(d, "2026-06")
    got = {r["customer_id"]: r for r in _bills(d, "2026-06").to_pylist()}
    assert got[cid]["status"] == "held" and "missing reading" in got[cid]["reasons"]


def test_estimated_reading_and_jump_are_held(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    shutil.copytree(fleet / "bills", d / "bills")
    july = {r["customer_id"]: r for r in _bills(fleet, "2026-07").to_pylist()}
    plain = [c for c, r in july.items() if r["category"] == "residential" and r["status"] == "issued"
             and r["segments"] == 1]
    est, jump = plain[0], plain[1]
    t_aug = int(dt.datetime(2026, 8, 1, tzinfo=schema.LOCAL_TZ).timestamp())
    con = duckdb.connect()
    now = dict(con.execute(f"SELECT meter_id, value FROM read_parquet('{d}/lake/readings/kind=monthly/date=2026-08-01/"
                           f"*/*.parquet') WHERE register = 1 AND meter_id IN ({est}, {jump})").fetchall())
    # later deliveries of the same instant win (arg_max(value, received_utc)): an estimate, and a big jump
    lake.write_readings(d / "lake", {
        "meter_id": np.array([est, jump]), "register": np.array([1, 1], np.int16),
        "ts_utc": np.array([t_aug, t_aug]), "value": np.array([now[est], now[jump] + 5_000_000]),
        "quality": np.array([schema.Q_ESTIMATED, 0], np.uint8), "source": np.array([3, 3], np.uint8),
        "received_utc": np.array([t_aug + 86400 * 3] * 2)}, "monthly")
    bills.run(d, "2026-07")
    got = {r["customer_id"]: r for r in _bills(d, "2026-07").to_pylist()}
    assert got[est]["status"] == "held" and got[est]["flags"] & R.F_ESTIMATED
    assert got[jump]["status"] == "held" and got[jump]["flags"] & R.R_JUMP
    assert got[plain[2]]["total_fen"] == july[plain[2]]["total_fen"]


def test_customer_without_tariff_publishes_nothing(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    con = duckdb.connect(str(d / "archive.duckdb"))
    con.execute("DELETE FROM customer_tariffs WHERE customer_id = 7")
    con.close()
    for chunk in (bills.CHUNK, 100):        # whole, and in chunks of buckets (the check is in bills.prepare)
        with pytest.raises(BillingError, match=r"^customer 3100000007 \(id 7\): no tariff assignment") as e:
            bills.run(d, "2026-06", chunk=chunk)
        assert "\n" not in str(e.value)
        left = list((d / "bills").glob("*")) if (d / "bills").exists() else []
        assert not [p for p in left if p.name.startswith(("period=", ".spill", ".staging"))], left


def test_broken_tariff_file_publishes_nothing(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    t = tmp_path / "tariffs"
    shutil.copytree(ROOT / "billing_core" / "tariffs", t)
    p = t / "residential.toml"
    p.write_text(p.read_text().replace('peak = "0.5583"', 'peak = "0.55831234"', 1))
    with pytest.raises(ConfigError, match=r"residential\.toml: version\[0\]\.prices\.under_1kV\.peak: .*6 decimals"):
        bills.run(d, "2026-06", tariffs_dir=t)
    assert not (d / "bills").exists() or not list((d / "bills").glob("period=*"))
    with pytest.raises(BillingError, match="period '2026-13'"):
        bills.run(d, "2026-13")


_CRASH = """
import os, sys
sys.path.insert(0, {root!r})
from gridhead.billing_core.jobs import bills
bills.run({data!r}, "2026-07")
"""


def test_sigkill_at_random_points_never_shows_a_partial_period(fleet, tmp_path):
    d = _copy(fleet, tmp_path)
    shutil.copytree(fleet / "bills", d / "bills")
    part = d / "bills" / "period=2026-07"
    ref = _bills(fleet, "2026-07")
    ref_items = _items(fleet, "2026-07")
    script = _CRASH.format(root=str(ROOT), data=str(d))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True)
    full = time.perf_counter() - t0
    delays = np.linspace(0.2, 1.4, 8) * full
    random.Random(6).shuffle(delays)
    seen = {"absent": 0, "whole": 0}
    for k, delay in enumerate(delays):
        if k % 2 == 0:
            if part.exists():
                shutil.rmtree(part)                  # a first publication: rename into place
        elif not part.exists():
            bills.run(d, "2026-07")                  # a re-run: exchange with the live partition
        proc = subprocess.Popen([sys.executable, "-c", script])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if part.exists():
            assert sorted(p.name for p in part.iterdir()) == ["bill_items.parquet", "bills.parquet", "summary.json"]
            assert pq.ParquetFile(part / "bills.parquet").read().equals(ref)
            assert pq.ParquetFile(part / "bill_items.parquet").read().equals(ref_items)
            seen["whole"] += 1
        else:
            assert k % 2 == 0, "a re-run killed midway must leave the old partition in place"
            seen["absent"] += 1
    assert seen["absent"], seen
    bills.run(d, "2026-07")                          # a run after crashes cleans their staging directories
    assert not list((d / "bills").glob(".staging-*"))
    assert _bills(d, "2026-07").equals(ref)

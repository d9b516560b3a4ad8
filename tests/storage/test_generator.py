"""The fleet generator: TOU sums, supply = sales + loss, anomalies at the configured rates, determinism."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.csv as pacsv
import pytest

from gridhead.storage import generator
from gridhead.storage.archive import Archive
from gridhead.storage.sql import Session

N, DAYS, SEED = 3000, 6, 11
# rates raised so that a 3000-customer fleet carries several of each
RATES = {"rollover": 0.01, "replacement": 0.01, "reverse_running": 0.005, "stopped_meter": 0.005, "theft_area": 0.2}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    d = tmp_path_factory.mktemp("fleet")
    summary = generator.generate(d, N, DAYS, SEED, rates=RATES, start=generator.GenConfig.start)
    with Archive(d / "archive.duckdb") as a:
        a.import_files(sorted((d / "archive-files").glob("*.csv")))   # the archive it makes imports clean
    truth = pacsv.read_csv(d / "ground_truth" / "anomalies.csv").to_pylist()
    areas = pacsv.read_csv(d / "ground_truth" / "areas.csv").to_pylist()
    with Session(d) as s:
        yield d, s, summary, truth, areas


def _meters(truth, kind):
    return sorted({r["meter_id"] for r in truth if r["anomaly"] == kind})


def test_tou_registers_sum_to_total(fleet):
    _d, s, _summary, truth, _areas = fleet
    rolled = _meters(truth, "rollover")
    rows = s.query("""SELECT d.meter_id, ae_fwd, ae_fwd_t1 + ae_fwd_t2 + ae_fwd_t3 + ae_fwd_t4 AS tou,
                             10::BIGINT ** (m.register_digits + 2) AS modulus
                      FROM daily_frozen d JOIN meters m USING (meter_id)""").to_pydict()
    total, tou, mod = (np.array(rows[k]) for k in ("ae_fwd", "tou", "modulus"))
    meter = np.array(rows["meter_id"])
    normal = ~np.isin(meter, rolled)
    assert normal.sum() > 15_000 and np.array_equal(total[normal], tou[normal])
    # a rolled-over total register wraps alone; the TOU registers still agree with it modulo 10^digits
    assert np.array_equal(total[~normal] % mod[~normal], tou[~normal] % mod[~normal])
    assert (total[~normal] != tou[~normal]).any()


def test_registers_never_fall_except_rollover(fleet):
    _d, s, _summary, truth, _areas = fleet
    fell = s.query("""SELECT DISTINCT meter_id FROM (SELECT meter_id, ae_fwd - lag(ae_fwd) OVER
                      (PARTITION BY meter_id ORDER BY date) AS inc FROM daily_frozen) WHERE inc < 0
                      ORDER BY 1""").column(0).to_pylist()
    assert fell == _meters(truth, "rollover") and len(fell) == round(RATES["rollover"] * _residential(s))


def _residential(s):
    return s.query("SELECT count(*) FROM customers WHERE category = 'residential'").column(0)[0].as_py()


def test_anomaly_counts_are_the_configured_rates(fleet):
    _d, s, summary, truth, areas = fleet
    inj = summary["injected"]
    assert inj["replacement"] == len(_meters(truth, "replacement")) == round(RATES["replacement"] * N)
    assert inj["reverse_running"] == len(_meters(truth, "reverse_running")) == round(RATES["reverse_running"] * N)
    assert inj["stopped_meter"] == len(_meters(truth, "stopped_meter")) == round(RATES["stopped_meter"] * N)
    assert inj["theft_area"] == sum(a["theft"] for a in areas) == round(RATES["theft_area"] * summary["areas"])
    # missing reads: 1 % of the meters installed at each freeze, exactly the meter-days absent from the lake
    missing = {(r["meter_id"], str(r["date"])) for r in truth if r["anomaly"] == "missing_read"}
    assert len(missing) == inj["missing_read"]
    assert abs(len(missing) / ((DAYS + 1) * summary["meters"]) - 0.01) < 0.0005
    present = s.query("SELECT meter_id, date::VARCHAR AS date FROM daily_frozen").to_pydict()
    assert not missing & set(zip(present["meter_id"], present["date"]))
    # each point has one series of DAYS + 1 freezes (a replaced point: the old meter's, then the new one's)
    assert len(present["meter_id"]) + len(missing) == (DAYS + 1) * summary["points"]


def test_anomalies_show_in_the_registers(fleet):
    _d, s, _summary, truth, _areas = fleet
    by = lambda kind: {r["meter_id"]: str(r["date"]) for r in truth if r["anomaly"] == kind}  # noqa: E731
    for m, since in by("stopped_meter").items():
        after = s.query(f"SELECT DISTINCT ae_fwd FROM daily_frozen WHERE meter_id = {m} AND date > '{since}'")
        assert after.num_rows <= 1, m
    for m, since in by("reverse_running").items():
        rev = s.query(f"SELECT max(ae_rev) - min(ae_rev) FROM daily_frozen WHERE meter_id = {m}").column(0)[0]
        assert rev.as_py() > 0, m
        ev = s.query(f"SELECT event_name FROM events WHERE meter_id = {m}").column(0).to_pylist()
        assert "reverse_energy" in ev
    # replacement: the archive closes the old meter with the removal reading the lake cannot contradict
    for r in (r for r in truth if r["anomaly"] == "replacement"):
        pm = s.query(f"SELECT meter_id, valid_to::VARCHAR AS valid_to, removal_reading_x100 FROM point_meters "
                     f"WHERE point_id = {r['point_id']} ORDER BY valid_from").to_pylist()
        assert len(pm) == 2 and pm[0]["valid_to"] == str(r["date"])
        last = s.query(f"SELECT max(ae_fwd) FROM daily_frozen WHERE meter_id = {pm[0]['meter_id']}").column(0)[0]
        assert last.as_py() is None or last.as_py() <= pm[0]["removal_reading_x100"]
        first_new = s.query(f"SELECT min(date)::VARCHAR AS d FROM daily_frozen WHERE meter_id = {pm[1]['meter_id']}")
        assert first_new.column(0)[0].as_py() is None or first_new.column(0)[0].as_py() > str(r["date"])


def test_supply_is_sales_plus_plausible_loss(tmp_path):
    """Check meter × multiplier + PV = Σ customers × multiplier + technical loss, per area and day."""
    # a fleet of its own: no missing reads (every area-day computable), theft in a third of the areas
    quiet = {k: 0.0 for k in generator.ANOMALY_RATES} | {"theft_area": 0.3, "theft_customer": 0.1}
    generator.generate(tmp_path, 4000, 4, SEED, rates=quiet, curve_fraction=0)
    with Archive(tmp_path / "archive.duckdb") as a:
        a.import_files(sorted((tmp_path / "archive-files").glob("*.csv")))
    truth = pacsv.read_csv(tmp_path / "ground_truth" / "anomalies.csv").to_pylist()
    areas = pacsv.read_csv(tmp_path / "ground_truth" / "areas.csv").to_pylist()
    with Session(tmp_path) as s:
        _check_balance(s, truth, areas)


def _check_balance(s, truth, areas):
    bad_areas = {r["area_id"] for r in truth}
    rows = s.query("""
        WITH inc AS (SELECT meter_id, date, ae_fwd - lag(ae_fwd) OVER (PARTITION BY meter_id ORDER BY date) AS inc,
                            date - lag(date) OVER (PARTITION BY meter_id ORDER BY date) AS gap
                     FROM daily_frozen),
             pm AS (SELECT p.point_id, p.role, p.area_id, m.meter_id, mu.ct_ratio * mu.pt_ratio AS mult
                    FROM points p JOIN point_meters m USING (point_id) JOIN point_multipliers mu USING (point_id)
                    WHERE mu.valid_to IS NULL AND m.valid_to IS NULL AND p.area_id IS NOT NULL)
        SELECT area_id, date,
               sum(inc * mult) FILTER (WHERE role IN ('area_check', 'pv')) AS supply,
               sum(inc * mult) FILTER (WHERE role = 'customer') AS sales,
               count(*) FILTER (WHERE gap <> 1 OR inc IS NULL) AS gaps,
               count(*) AS n
        FROM inc JOIN pm USING (meter_id) WHERE inc IS NOT NULL AND gap = 1 GROUP BY ALL""").to_pylist()
    expected = {a["area_id"]: a["technical_loss_bp"] / 10_000 for a in areas}
    thefts = {a["area_id"] for a in areas if a["theft"]}
    sizes = {r["area_id"]: r["n"] for r in s.query(
        "SELECT area_id, count(*) AS n FROM points WHERE area_id IS NOT NULL GROUP BY 1").to_pylist()}
    checked, theft_rates = 0, []
    last = max(r["date"] for r in rows)
    for r in rows:
        if r["n"] != sizes[r["area_id"]]:
            continue        # a missing read in the area that day: not computable (不可算)
        rate = float(r["supply"] - r["sales"]) / float(r["supply"])
        truth_rate = expected[r["area_id"]]
        if r["area_id"] in thefts and r["date"] == last:
            theft_rates.append(rate - truth_rate)
        if r["area_id"] in bad_areas:
            continue
        assert 0.88 * truth_rate - 0.002 <= rate <= 1.12 * truth_rate + 0.002, (r, truth_rate)
        checked += 1
    assert checked > 20
    # theft areas lose clearly more than their technical loss once every theft has started (the last day)
    assert theft_rates and min(theft_rates) > 0.01, theft_rates


def _digest(d):
    h = hashlib.sha256()
    for p in sorted((d / "archive-files").glob("*.csv")) + [d / "ground_truth" / "anomalies.csv"]:
        h.update(p.read_bytes())
    with Session(d) as s:
        h.update(s.query("SELECT * FROM readings ORDER BY kind, meter_id, register, ts_utc").to_string().encode())
        h.update(str(s.query("SELECT sum(value), count(*), sum(meter_id * register) FROM readings").to_pylist()).encode())
    return h.hexdigest()


def test_deterministic_by_seed(tmp_path):
    runs = [(tmp_path / str(i), seed) for i, seed in enumerate((4, 4, 5))]
    for d, seed in runs:
        generator.generate(d, 300, 2, seed)
    a, b, c = (_digest(d) for d, _ in runs)
    assert a == b and a != c
    summary = json.loads((runs[0][0] / "ground_truth" / "summary.json").read_text())
    assert summary["customers"] == 300 and summary["rows"]["daily"] > 0


def test_bad_configuration_is_one_line(tmp_path):
    from gridhead.protocols.errors import StorageError
    with pytest.raises(StorageError, match="unknown anomaly 'gremlins'"):
        generator.generate(tmp_path, 10, 1, 1, rates={"gremlins": 0.1})
    with pytest.raises(StorageError, match="rate missing_read=2 is not in 0..1"):
        generator.generate(tmp_path, 10, 1, 1, rates={"missing_read": 2})


def test_area_anomalies_show_in_the_registers(fleet):
    """Check-meter fault: on each day of the ground truth the 考核表 registers less than the area's
    customers (负损), nothing when it stopped; outage: the check meter and every meter of the area
    register nothing that day.  At least one of each in a fleet of >= 4 areas; never in a theft area."""
    _d, s, summary, truth, areas = fleet
    assert summary["areas"] >= generator.AREA_MIN_FLEET
    inj = summary["injected"]
    flags = {a["area_id"]: a for a in areas}
    for kind, col in (("check_meter_fault", "check_meter_fault"), ("area_outage", "outage")):
        rows = [r for r in truth if r["anomaly"] == kind]
        hit = {r["area_id"] for r in rows}
        assert inj[kind] == len(hit) >= 1 and hit == {a for a, x in flags.items() if x[col]}
        assert not any(flags[a]["theft"] for a in hit)
    inc = {(r["area_id"], r["role"], str(r["date"])): r for r in s.query("""
        WITH i AS (SELECT meter_id, date, lead(ae_fwd) OVER (PARTITION BY meter_id ORDER BY date) - ae_fwd AS inc,
                          lead(date) OVER (PARTITION BY meter_id ORDER BY date) - date AS gap FROM daily_frozen)
        SELECT p.area_id, p.role, i.date::VARCHAR AS date, sum(inc * mu.ct_ratio * mu.pt_ratio) AS e,
               count(*) FILTER (WHERE gap = 1) AS n, count(*) FILTER (WHERE inc <> 0 AND gap = 1) AS nonzero
        FROM i JOIN point_meters pm USING (meter_id) JOIN points p USING (point_id)
             JOIN point_multipliers mu USING (point_id)
        WHERE p.area_id IS NOT NULL AND gap = 1 AND mu.valid_to IS NULL GROUP BY ALL""").to_pylist()}
    seen = 0
    for r in truth:
        day = str(r["date"])
        chk, cus = inc.get((r["area_id"], "area_check", day)), inc.get((r["area_id"], "customer", day))
        if chk is None or cus is None:
            continue                            # the check meter's reading is missing either side
        if r["anomaly"] == "area_outage":
            assert chk["e"] == 0 and cus["nonzero"] == 0, r
            seen += 1
        elif r["anomaly"] == "check_meter_fault":
            assert chk["e"] < cus["e"], (r, chk, cus)
            if r["detail"].endswith("0.00 of supply"):
                assert chk["e"] == 0
            seen += 1
    assert seen >= 2

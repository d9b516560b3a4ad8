"""Issue 18, item 5: the meters that made an area-day 不可算, as a table (SQL view line_loss_missing, CLI)
and as the file of a targeted re-read, ``gridhead collect run --meters FILE``, which reads again only those
meter-days (the head-end and a simulated fleet in separate processes over 127.0.0.1)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from click.testing import CliRunner

from gridhead.headend.sim import demo
from gridhead.storage import archive, collection, sql
from tests.headend.test_fleet import _collect, _fresh, fleet_dir  # noqa: F401  (fleet_dir: a fixture)
from tests.billing_core.test_lineloss import fleet


def _gaps(data, days) -> set:
    with archive.Archive(sql.archive_path(data), read_only=True) as a:
        exp = collection.expected_meters(a)
    with collection.CollectionState(sql.lake_root(data), exp) as st:
        g = st.gaps(days, "daily-frozen").to_pydict()
    return set(zip(g["meter_id"], g["date"]))


def test_missing_meters_table_view_and_reread_file(tmp_path):
    """Every 不可算 area-day of the month is explained by meters without the day's readings; the SQL view
    holds the same rows; the re-read file lists each missing reading once."""
    import datetime as dt
    from gridhead.billing_core import lineloss as ll
    from gridhead.cli import _reread_file, cli
    from gridhead.billing_core.jobs import lineloss as sl
    d = tmp_path / "fleet"
    shutil.copytree(fleet(), d)
    with archive.Archive(d / "archive.duckdb", read_only=True) as a:
        res = sl.compute(a, d / "lake", *sl.month_range("2026-06"))
    miss = sl.missing_table(res).to_pylist()
    nc = {(int(res.area_id[i]), res.days[j]) for i, j in zip(*((res.area.category == ll.NOT_COMPUTABLE).nonzero()))}
    assert nc and {(r["area_id"], r["date"]) for r in miss} == nc
    with sql.Session(d) as s:                 # each listed reading is really absent from the lake
        for r in miss:
            got = s.query(f"SELECT count(*) AS n FROM daily_frozen WHERE meter_id = {r['meter_id']} "
                          f"AND date = DATE '{r['reading_date']}'").to_pylist()[0]["n"]
            assert got == 0, r
            assert r["date"] <= r["reading_date"] <= r["date"] + dt.timedelta(days=1)
    out = tmp_path / "reread.csv"
    r = CliRunner().invoke(cli, ["lineloss", "--month", "2026-06", "--missing", "--json", "--reread-out", str(out),
                                 "--data", str(d)])
    assert r.exit_code == 0, r.output
    printed = [json.loads(x) for x in r.output.splitlines() if x.startswith("{")]
    assert len(printed) == len(miss)
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len({(x["meter_id"], x["reading_date"]) for x in miss})
    wanted = _reread_file(out, None)
    assert sum(len(v) for v in wanted.values()) == len(rows)
    r = CliRunner().invoke(cli, ["sql", "SELECT date, area_id, meter_id, reading_date FROM line_loss_missing "
                                 "ORDER BY ALL", "--format", "json", "--data", str(d)])
    assert r.exit_code == 0, r.output
    view = [json.loads(x) for x in r.output.splitlines()]
    assert len(view) == len(miss)
    assert sorted((v["area_id"], v["meter_id"], v["date"], v["reading_date"]) for v in view) == \
        sorted((m["area_id"], m["meter_id"], str(m["date"]), str(m["reading_date"])) for m in miss)


def test_bad_meters_file_is_one_line(tmp_path):
    from gridhead.cli import cli
    from gridhead.storage.archive import Archive
    with Archive(tmp_path / "archive.duckdb"):          # an (empty) archive: the data directory is valid
        pass
    bad = tmp_path / "m.csv"
    for text, words in (("meter\n1\n", "meter_id"), ("meter_id,date\n1,June\n", "not a CSV"),
                        ("meter_id\n5\n", "no date column")):
        bad.write_text(text)
        r = CliRunner().invoke(cli, ["collect", "run", "--meters", str(bad), "--data", str(tmp_path)])
        assert r.exit_code == 2 and words in r.output and r.output.count("\n") == 1, r.output


def test_collect_run_meters_rereads_only_those(fleet_dir, tmp_path):  # noqa: F811
    """A first pass with dropped answers and no back-fill leaves gaps; a re-read of half of them (the
    file) closes exactly those, the others stay open."""
    src, days = fleet_dir
    data = _fresh(src, tmp_path / "d")
    port = demo._free_port()
    sim = demo.start_fleet(data, port, seed=3, faults={"drop": 0.1}, heartbeat_s=30)
    try:
        _collect(data, port, days, "--retries", "0")
    finally:
        demo.stop_process(sim)
    gaps = sorted(_gaps(data, days))
    assert len(gaps) >= 4
    chosen, rest = gaps[::2], gaps[1::2]
    f = tmp_path / "reread.csv"
    f.write_text("meter_id,date\n" + "".join(f"{m},{d}\n" for m, d in chosen))
    port = demo._free_port()
    sim = demo.start_fleet(data, port, seed=3, faults={}, heartbeat_s=30)
    try:
        out = _collect(data, port, [], "--meters", str(f), "--retries", "0")
    finally:
        demo.stop_process(sim)
    assert out["requested"] == len(chosen) and out["still_missing"] == 0, out
    assert _gaps(data, days) == set(rest)

"""gridhead gen / archive / sql end to end in a temporary data directory (the README's flow)."""

from __future__ import annotations

import csv
import io
import json
import re

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from gridhead.cli import cli


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    r = CliRunner().invoke(cli, ["gen", "--customers", "400", "--days", "3", "--seed", "2", "--data", str(d)])
    assert r.exit_code == 0, r.output
    assert "400 customers" in r.output and "injected:" in r.output
    r = CliRunner().invoke(cli, ["archive", "import", *map(str, sorted((d / "archive-files").glob("*.csv")))],
                           env={"GRIDHEAD_DATA": str(d)})
    assert r.exit_code == 0, r.output
    assert "customers 400" in r.output
    return d


def run(data, *args, input=None):
    return CliRunner().invoke(cli, [*args, "--data", str(data)], input=input)


def test_sql_formats(data, tmp_path):
    q = "SELECT category, count(*) AS n FROM customers GROUP BY 1 ORDER BY 1"
    table = run(data, "sql", q)
    assert table.exit_code == 0 and "residential" in table.output and "┌" in table.output
    rows = list(csv.DictReader(io.StringIO(run(data, "sql", q, "--format", "csv").output)))
    assert sum(int(r["n"]) for r in rows) == 400
    js = [json.loads(line) for line in run(data, "sql", q, "--format", "json").output.splitlines()]
    assert js == [{"category": r["category"], "n": int(r["n"])} for r in rows]
    out = tmp_path / "r.parquet"
    assert run(data, "sql", "SELECT * FROM daily_frozen", "--format", "parquet", "--out", str(out)).exit_code == 0
    t = pq.read_table(out)
    assert t.num_rows > 1000 and "ae_fwd_t1" in t.column_names
    # readings of every customer meter joined to the archive
    r = run(data, "sql", "SELECT count(DISTINCT d.meter_id) FROM daily_frozen d JOIN meters USING (meter_id)",
            "--format", "csv")
    assert int(r.output.splitlines()[1]) >= 400


def test_sql_errors_are_one_line(data):
    r = run(data, "sql", "SELECT nope FROM customers")
    assert r.exit_code == 2 and r.output.count("\n") == 1 and r.output.startswith("error: sql: Binder Error")
    r = run(data, "sql", "SELECT 1", "--format", "parquet")
    assert r.exit_code == 1 and "needs --out" in r.output


def test_sql_shell(data):
    r = run(data, "sql", "--format", "csv", input="SELECT 41 +\n 1 AS answer;\nSELECT bad;\nSELECT 2 AS two;\n.quit\n")
    assert r.exit_code == 0
    assert "\"answer\"\n42\n" in r.output and "\"two\"\n2\n" in r.output and "error: sql: Binder" in r.output


def test_sql_shell_dot_commands_and_output_flags(data):
    """Issue 19: the shell takes the common dot commands (or says what to type); --json / --csv as on the
    other commands."""
    r = run(data, "sql", "--shell", input=".tables\n.schema feeders\n.mode json\nSELECT 7 AS seven;\n.bogus\n"
                                          ".help\n.quit\nSELECT 8;\n")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert {"daily_frozen", "customers", "readings", "meters"} <= set(out.split())   # .tables
    assert "voltage_kv" in out and out.count("feeder_id") == 1                    # .schema feeders, once
    assert '{"seven": 7}' in out and '"8"' not in out and "8" not in out.split('{"seven": 7}')[1]  # .mode; .quit
    assert "error: unknown command .bogus: .help lists the dot commands" in r.stderr
    assert ".schema [NAME]" in r.stderr and "now: json" in r.stderr
    q = "SELECT category, count(*) AS n FROM customers GROUP BY 1 ORDER BY 1"
    assert run(data, "sql", q, "--json").output == run(data, "sql", q, "--format", "json").output
    assert run(data, "sql", q, "--csv").output == run(data, "sql", q, "--format", "csv").output
    r = run(data, "sql", q, "--json", "--csv")
    assert r.exit_code == 2 and "choose one" in r.output


def test_shell_refuses_parquet_in_one_line(data):
    """The shell prints; Parquet needs a QUERY and a file: said once, before any statement is read."""
    r = run(data, "sql", "--shell", "--format", "parquet", input="SELECT 1;\n")
    assert r.exit_code == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert "--format parquet needs QUERY and --out FILE" in r.stderr


def test_print_views_for_plain_duckdb(data):
    r = run(data, "sql", "--print-views")
    assert r.exit_code == 0
    assert "ATTACH IF NOT EXISTS" in r.output and "CREATE OR REPLACE VIEW daily_frozen" in r.output


def test_bad_archive_file_fails_whole_import(data, tmp_path):
    out = tmp_path / "export"
    assert run(data, "archive", "export", "--out", str(out)).exit_code == 0
    before = run(data, "archive", "info").output
    lines = (out / "meters.csv").read_text().splitlines()
    fields = lines[3].split(",")
    assert lines[0].split(",")[3] == "protocol"
    good, fields[3] = fields[3], "646"
    lines[3] = ",".join(fields)
    (out / "meters.csv").write_text("\n".join(lines) + "\n")
    fresh = tmp_path / "fresh"
    r = run(fresh, "archive", "import", *map(str, sorted(out.glob("*.csv"))))
    assert r.exit_code == 2          # bad input (issue 19): the bad row, then what happened
    assert r.output == ("meters.csv, row 3, column protocol: '646' not one of 645, 698\n"
                        "error: 1 bad row(s); nothing was imported\n")
    # nothing left behind: no empty archive a later command would bill as a fleet of 0 customers
    assert not fresh.exists()
    r = run(fresh, "archive", "info")
    assert r.exit_code == 2 and r.output == f"error: no data directory at {fresh} (give --data DIR or set GRIDHEAD_DATA)\n"
    # re-importing the same rows into the original fails on the first key and leaves it as it was
    fields[3] = good
    lines[3] = ",".join(fields)
    (out / "meters.csv").write_text("\n".join(lines) + "\n")
    r = run(data, "archive", "import", *map(str, sorted(out.glob("*.csv"))))
    assert r.exit_code == 2 and "already in the archive" in r.output
    assert run(data, "archive", "info").output == before


def test_lake_info_and_compact(data, tmp_path):
    import shutil

    import numpy as np

    from gridhead.storage import lake
    d = tmp_path / "copy"
    shutil.copytree(data / "lake", d / "lake")
    info = lambda: {(r["table"], r["kind"]): r for r in map(json.loads, run(d, "lake", "info", "--json").output.splitlines())}  # noqa: E731
    before = info()
    daily = before[("readings", "daily")]
    assert daily["files"] == daily["partitions"] == daily["pivots"] > 0 and daily["rows"] > 1000
    assert ("events", None) in before and before[("readings", "monthly")]["pivots"] > 0
    frozen = "SELECT count(*) AS n, sum(ae_fwd) AS s FROM daily_frozen"
    want = run(d, "sql", frozen, "--format", "csv").output
    # a second file in one partition: a re-delivery of some meters' readings, received later, same values
    f = sorted(lake.published_files(d / "lake"))[0]
    rows = lake.read_file(f, "readings")
    cols = {c: rows.column(c).to_numpy()[:50] for c in lake.READINGS_SCHEMA.names}
    cols["received_utc"] = cols["received_utc"] + np.timedelta64(3600, "s")
    lake.write_readings(d / "lake", cols, "daily")
    assert info()[("readings", "daily")]["files"] == daily["files"] + 1
    assert run(d, "sql", frozen, "--format", "csv").output == want       # the GROUP BY path for that partition
    r = run(d, "lake", "compact", "--table", "readings")
    assert r.exit_code == 0 and re.match(r"readings: [1-9]\d* partitions compacted, [1-9]\d* files removed", r.output)
    after = info()
    assert after[("readings", "daily")]["files"] == daily["files"] and after[("readings", "daily")]["rows"] == daily["rows"]
    for kind in ("daily", "monthly", "interval"):
        k = after[("readings", kind)]
        assert k["files"] == k["partitions"] == (k["pivots"] if kind != "interval" else k["files"]), kind
    assert run(d, "sql", frozen, "--format", "csv").output == want
    table = run(d, "lake", "info").output
    assert table.splitlines()[0].split()[:3] == ["table", "kind", "partitions"] and "daily" in table
    # columns two spaces apart however wide a figure is (an events table of few rows has B/row > 999.99)
    lines = table.splitlines()
    assert any(ln.startswith("events") and float(ln.split()[-3]) > 999.99 for ln in lines), table
    for ln in lines[1:]:
        assert all(re.fullmatch(r"[\d,]+|\d+\.\d\d|-", t) for t in re.split(r"\s{2,}", ln.strip())[-7:]), ln
    assert len({len(ln) for ln in lines}) == 1, table
    r = run(tmp_path / "nothing", "lake", "compact")
    assert r.exit_code == 2 and r.output.startswith("error: no data directory at ")
    (tmp_path / "nothing").mkdir()
    r = run(tmp_path / "nothing", "lake", "compact")
    assert r.exit_code == 2 and r.output.startswith("error: lake compact: no lake at ")

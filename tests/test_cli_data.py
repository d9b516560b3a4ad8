"""gridhead gen / archive / sql end to end in a temporary data directory (the README's flow)."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cli import cli


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
    assert r.exit_code == 1
    assert r.output == "error: meters.csv, row 3, column protocol: '646' not one of 645, 698\n"
    assert set(run(fresh, "archive", "info").output.split()[1::2]) == {"0"}
    # re-importing the same rows into the original fails on the first key and leaves it as it was
    fields[3] = good
    lines[3] = ",".join(fields)
    (out / "meters.csv").write_text("\n".join(lines) + "\n")
    r = run(data, "archive", "import", *map(str, sorted(out.glob("*.csv"))))
    assert r.exit_code == 1 and "already in the archive" in r.output
    assert run(data, "archive", "info").output == before

"""`gridhead bill run / review / show` through the click entry point on a small generated fleet."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from gridhead.cli import cli

from tests.conftest import generated


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("clibill")
    generated(d, 200, 31, seed=4, rates={"reverse_running": 0.01, "rollover": 0.02})
    return d


def _run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_run_json_review_release_show(data):
    r = _run("bill", "run", "--period", "2026-06", "--data", str(data), "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)                      # quiet in a pipe: the output is the JSON alone
    assert s["bills"] == 200 and s["held"] >= 1 and s["issued"] + s["held"] == 200
    r = _run("bill", "run", "--period", "2026-06", "--data", str(data))
    assert r.exit_code == 0 and "200 bills" in r.output and "\r" not in r.output
    rows = list(csv.DictReader(io.StringIO(_run("bill", "review", "--data", str(data), "--csv").output)))
    assert len(rows) == s["held"] and all(row["reasons"] for row in rows)
    listed = [json.loads(x) for x in _run("bill", "review", "--data", str(data), "--json").output.splitlines()]
    assert [x["bill_id"] for x in listed] == [int(row["bill_id"]) for row in rows]
    table = _run("bill", "review", "--data", str(data), "--period", "2026-06").output
    assert rows[0]["bill_id"] in table and "held" not in table.splitlines()[0]
    one = rows[0]["bill_id"]
    r = _run("bill", "review", "--data", str(data), "--release", one, "--by", "李审核", "--note", "checked")
    assert r.exit_code == 0 and "released 1" in r.output
    r = _run("bill", "review", "--data", str(data), "--release", one, "--by", "李审核")
    assert r.exit_code == 0 and "already released 1" in r.output
    r = _run("bill", "review", "--data", str(data), "--release", one)
    assert r.exit_code == 2 and r.output.strip().splitlines() == [
        "error: --release needs --by NAME (who releases the bills) (see `cli bill review --help`)"]
    shown = json.loads(_run("bill", "show", rows[0]["customer_no"], "--period", "2026-06", "--data", str(data),
                            "--json").output)
    assert shown["bill"]["status"] == "released" and shown["bill"]["released_by"] == "李审核"
    items = shown["items"]
    assert items[-1]["code"] == "total"
    assert sum(i["amount_fen"] for i in items[:-1]) == items[-1]["amount_fen"] == shown["bill"]["total_fen"]


def test_show_prints_the_bill_a_customer_reads(data):
    _run("bill", "run", "--period", "2026-06", "--data", str(data))
    r = _run("bill", "show", "1", "--period", "2026-06", "--data", str(data))
    assert r.exit_code == 0, r.output
    out = r.output
    b = json.loads(_run("bill", "show", "1", "--period", "2026-06", "--data", str(data), "--json").output)["bill"]
    total = b["total_fen"]
    assert f"{total // 100}.{total % 100:02d} 元" in out.splitlines()[-1]
    for label in ("电费账单", "户号", "电度电费", "energy charge", "政府性基金及附加", "合计 (total)"):
        assert label in out, label


def test_errors_are_one_line_with_exit_codes(data, tmp_path):
    r = _run("bill", "run", "--period", "2026-6", "--data", str(data))
    assert r.exit_code == 2 and r.output == ("error: Invalid value for '--period': '2026-6' is not a month YYYY-MM "
                                             "(e.g. 2026-06) (see `cli bill run --help`)\n")
    r = _run("bill", "show", "999999", "--period", "2026-06", "--data", str(data))
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "no bill" in r.output
    r = _run("bill", "run", "--period", "2026-06", "--data", str(tmp_path))
    assert r.exit_code == 2 and r.output == (f"error: no archive at {tmp_path / 'archive.duckdb'} (import one: "
                                             f"gridhead archive import FILE... --data {tmp_path})\n")
    r = _run("bill", "review", "--data", str(data), "--release", "20260600000000001", "--by", "x")
    assert r.exit_code == 1 and "not held" in r.output


def test_sql_has_bills_views(data):
    _run("bill", "run", "--period", "2026-06", "--data", str(data))
    r = _run("sql", "--data", str(data), "--format", "csv",
             "SELECT count(*) AS n, sum(amount_fen) FILTER (WHERE code = 'total') AS t FROM bill_items")
    n, t = r.output.splitlines()[1].split(",")
    r2 = _run("sql", "--data", str(data), "--format", "csv", "SELECT count(*) AS n, sum(total_fen) AS t FROM bills")
    assert r2.output.splitlines()[1].split(",")[1] == t and int(n) > 200

"""`gridhead demo` end to end with small sizes: archive, head-end + fleet subprocess, collection with
faults and back-fill (the recent days and last month's first and last freezes), the summary printed, the
lake left for `gridhead sql` (its collection view); last month's bills, line loss and audit list; the
prepayment loop (trip and reconnect through the control API, relay read back) in the audit log."""

from __future__ import annotations

import calendar
import json
import os
import re
import shlex
import subprocess
import sys
from decimal import Decimal

import pytest
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "gridhead.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One demo run (small sizes) for the tests of this module: its data directory and its summary."""
    data = tmp_path_factory.mktemp("demo") / "demo"
    r = _cli("demo", "--data", str(data), "--terminals", "4", "--meters-per-terminal", "4", "--days", "2", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    return data, json.loads(r.stdout)


def test_demo_runs_end_to_end_and_leaves_the_lake(demo_run, tmp_path):
    data, s = demo_run
    assert list(s)[:3] == ["archive", "collect", "report"]
    assert list(s) == ["archive", "collect", "report", "bill", "lineloss", "prepay", "next"]
    c = s["collect"]
    assert c["online_at_start"] == c["terminals"] == 4 and len(c["recent_days"]) == 2
    assert c["days"] == sorted(set(c["recent_days"]) | set(c["month_ends"]))
    period = s["archive"]["period"]
    assert c["month_ends"][0] == f"{period}-01" and c["month_ends"][1].endswith("-01")
    assert c["before"]["expected"] > 0 and c["readings_stored"] > 0
    assert c["after"]["success_pct"] >= c["before"]["success_first_pct"]
    assert c["after"]["collected"] == c["before"]["first_pass"] + c["after"]["backfilled"]
    assert s["report"]["readings_in_lake"] >= c["readings_stored"] // 2 > 0
    # the human summary, and the lake answers the query the demo suggests
    q = _cli("sql", "--data", str(data), "--format", "json",
             "SELECT sum(expected) AS e, sum(collected) AS c FROM collection")
    assert q.returncode == 0, q.stderr
    row = json.loads(q.stdout.splitlines()[0])
    assert (int(row["e"]), int(row["c"])) == (c["after"]["expected"], c["after"]["collected"])
    # the billing summary adds up to the bills partition
    b = s["bill"]
    assert b["period"] == period and b["bills"] == s["archive"]["customers"] > 0
    assert b["issued"] + b["held"] + b["released"] == b["bills"]
    assert b["held"] <= sum(b["held_by_reason"].values()) and (b["held"] == 0) == (not b["held_by_reason"])
    q = _cli("sql", "--data", str(data), "--format", "json",
             f"SELECT count(*) AS n, sum(total_fen) AS t, sum(total_fen) FILTER (WHERE status <> 'held') AS i, "
             f"count(*) FILTER (WHERE status = 'held') AS h FROM bills WHERE period = '{period}'")
    assert q.returncode == 0, q.stderr
    row = json.loads(q.stdout.splitlines()[0])
    assert (int(row["n"]), int(row["t"]), int(row["i"]), int(row["h"])) == \
        (b["bills"], b["total_fen"], b["issued_fen"], b["held"])
    # line loss: every area in one category, the month's days stored in the lake
    ll = s["lineloss"]
    assert ll["month"] == period and ll["areas"] > 0 and sum(ll["categories"].values()) == ll["areas"]
    assert set(ll["categories"]) <= {"ok", "high", "negative", "not_computable", "outage"}
    q = _cli("sql", "--data", str(data), "--format", "json",
             "SELECT count(DISTINCT date) AS days, count(DISTINCT unit_id) AS areas FROM line_loss WHERE level = 'area'")
    assert q.returncode == 0, q.stderr
    row = json.loads(q.stdout.splitlines()[0])
    month_days = calendar.monthrange(int(period[:4]), int(period[5:]))[1]
    assert int(row["areas"]) == ll["areas"] and int(row["days"]) == month_days
    # the prepayment loop: tripped by the system through the control API, relay read back open; paid,
    # reconnected, relay read back closed; both commands (pending, then ok) in the audit log
    p = s["prepay"]
    assert p["online"] == 4 and any(r["trips"] for r in p["runs"])
    assert p["trip"] == {"outcome": "ok", "target": p["meter"], "who": "system:prepay", "relay_open": True,
                         "confirmed": True}
    assert p["reconnect"] == {"outcome": "ok", "target": p["meter"], "who": "system:prepay", "relay_open": False,
                              "confirmed": True}
    assert p["after_payment"] == {"closes": 1, "dispatched": {"ok": 1}} and p["tripped_now"] is False
    assert [(a["command"], a["outcome"]) for a in p["audit"]] == \
        [("disconnect", "pending"), ("disconnect", "ok"), ("reconnect", "pending"), ("reconnect", "ok")]
    assert {a["who"] for a in p["audit"]} == {"system:prepay"}
    assert p["audit"][1]["reason"] == "prepayment balance exhausted"
    assert [e for e in p["events"] if e in ("trip", "reconnect")] == ["trip", "reconnect"]
    q = _cli("sql", "--data", str(data), "--format", "json",
             f"SELECT command, outcome, who FROM audit_log WHERE target = 'meter:{p['meter']}' ORDER BY seq")
    assert q.returncode == 0, q.stderr
    assert [tuple(json.loads(x).values()) for x in q.stdout.splitlines()] == \
        [(a["command"], a["outcome"], a["who"]) for a in p["audit"]]
    # the human summary shows the new parts and ends with the commands to run next
    from gridhead.headend.sim import demo
    text = demo.render(s)
    assert "bills      " + period in text and "line loss  " + period in text and "relay read back open" in text
    assert "relay read back closed" in text
    nxt = text.split("next       ", 1)[1]
    assert f"gridhead bill show {p['customer']} --period {period}" in nxt and "FROM audit_log" in nxt
    assert f"gridhead report lineloss --period {period} --html" in nxt and "FROM line_loss" in nxt
    # a second run empties its own directory; a foreign non-empty directory is refused in one line
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    r2 = _cli("demo", "--data", str(other), "--terminals", "1", "--meters-per-terminal", "1", "--days", "1")
    assert r2.returncode != 0 and "not a gridhead demo directory" in r2.stderr and (other / "keep.txt").exists()


def _suggested(text: str, needle: str) -> list[str]:
    """The command the summary suggests that contains ``needle``, as arguments after `gridhead`."""
    cmds = [ln.strip().removeprefix("next").strip() for ln in text.split("\nnext", 1)[1].splitlines()]
    hits = [c for c in cmds if needle in c]
    assert len(hits) == 1, (needle, cmds)
    args = shlex.split(hits[0])
    assert args[0] == "gridhead"
    return args[1:]


def _run(args: list[str], *more: str):
    from gridhead.cli import cli
    r = CliRunner().invoke(cli, [*args, *more])
    assert r.exit_code == 0, r.output
    return r


def test_the_printed_summary_agrees_with_the_commands_it_suggests(demo_run):
    """Issue 19: every figure of the human summary is what the command it suggests shows — collection,
    bills, line loss (no 不可算 day with supply 0 beside a rate: the month's days are spread), the audit
    list and the prepayment commands in the audit log."""
    from gridhead.headend.sim import demo
    data, s = demo_run
    text = demo.render(s)
    # success after back-fill: collected/expected meter-days, from the collection table by date
    m = re.search(r"([\d.]+)% after back-fill \((\d+)/(\d+); (\d+) still missing\)", text)
    rows = [json.loads(x) for x in _run(_suggested(text, "FROM collection"), "--json").output.splitlines()]
    collected, expected = sum(int(r["collected"]) for r in rows), sum(int(r["expected"]) for r in rows)
    assert (collected, expected, expected - collected) == (int(m[2]), int(m[3]), int(m[4]))
    assert Decimal(m[1]) == round(Decimal(100 * collected) / expected, 2)
    # bills: counts and yuan by status
    m = re.search(r"bills      (\S+): (\d+) bills, (\d+) issued, (\d+) held.*; total ([\d.]+) yuan, issued ([\d.]+) yuan",
                  text)
    rows = {r["status"]: r for r in map(json.loads, _run(_suggested(text, "FROM bills"), "--json").output.splitlines())}
    assert sum(int(r["bills"]) for r in rows.values()) == int(m[2])
    assert int(rows.get("held", {"bills": 0})["bills"]) == int(m[4])
    assert round(sum(Decimal(str(r["yuan"])) for r in rows.values()), 2) == Decimal(m[5])
    assert round(sum(Decimal(str(r["yuan"])) for k, r in rows.items() if k != "held"), 2) == Decimal(m[6])
    # line loss: every area's and feeder's printed rate is the month the stored days add up to
    line = text.split("line loss  ", 1)[1].splitlines()[0]
    printed = {(lvl, int(u)): (Decimal(rate), cat)
               for lvl, u, rate, cat in re.findall(r"(area|feeder) (\d+) ([\d.-]+)% \((\w+)\)", line)}
    rows = {(r["level"], int(r["unit_id"])): r
            for r in map(json.loads, _run(_suggested(text, "FROM line_loss"), "--json").output.splitlines())}
    assert printed and set(printed) <= set(rows) and any(k[0] == "feeder" for k in printed)
    month_days = calendar.monthrange(*map(int, s["lineloss"]["month"].split("-")))[1]
    for key, (rate, _cat) in printed.items():
        r = rows[key]
        assert int(r["days"]) == month_days and Decimal(str(r["supply_kwh"])) > 0, r
        assert abs(Decimal(str(r["rate_pct"])) - rate) <= Decimal("0.01"), (key, r, rate)
    assert all(Decimal(str(r["rate_pct"])) > -5 for r in rows.values())      # no 负损 feeder any more
    q = _run(["sql", "--data", str(data), "--json", "SELECT count(*) AS n FROM line_loss WHERE category = "
              "'not_computable' OR supply_kwh_x100 = 0"])
    assert json.loads(q.output)["n"] == 0
    # the area categories printed are the stored month's
    cats = dict(re.findall(r"(ok|high|negative|not_computable|outage) (\d+)", line.split(";")[0]))
    assert sum(map(int, cats.values())) == s["lineloss"]["areas"] == sum(1 for k in rows if k[0] == "area")
    # the audit list: as many items as `gridhead audit --period M` ranks
    n = int(re.search(r"audit      (\d+) items", text)[1])
    r = _run(_suggested(text, "gridhead audit --period"))
    assert f"{n} items (" in r.stderr
    # the prepayment commands: the audit log the summary lists
    logged = re.findall(r"#(\d+) (\w+) (\w+)", text.split("audit log:", 1)[1].splitlines()[0])
    rows = [json.loads(x) for x in _run(_suggested(text, "FROM audit_log"), "--json").output.splitlines()]
    assert [(str(r["seq"]), r["command"], r["outcome"]) for r in rows] == logged

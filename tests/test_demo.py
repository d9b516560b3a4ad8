"""`gridhead demo` end to end with small sizes: archive, head-end + fleet subprocess, collection with
faults and back-fill, the summary printed, the lake left for `gridhead sql` (its collection view)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_demo_runs_end_to_end_and_leaves_the_lake(tmp_path):
    data = tmp_path / "demo"
    r = _cli("demo", "--data", str(data), "--terminals", "4", "--meters-per-terminal", "4", "--days", "2", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout)
    assert list(s)[:3] == ["archive", "collect", "report"]
    c = s["collect"]
    assert c["online_at_start"] == c["terminals"] == 4 and len(c["days"]) == 2
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
    # a second run empties its own directory; a foreign non-empty directory is refused in one line
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    r2 = _cli("demo", "--data", str(other), "--terminals", "1", "--meters-per-terminal", "1", "--days", "1")
    assert r2.returncode != 0 and "not a gridhead demo directory" in r2.stderr and (other / "keep.txt").exists()

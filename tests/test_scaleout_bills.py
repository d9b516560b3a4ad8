"""The bill run on Dask distributed (storage.dist) against the single-node run: a LocalCluster of two worker
processes on 127.0.0.1 publishes the same files byte for byte (two periods, so the annual-tier cumulative
and the jump history cross periods), with customers whose replaced meters sit in another bucket; a worker
killed mid-run still gives the identical result (or a clean failure with nothing published); the CLI."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import duckdb
import numpy as np
import pytest

from protocols.errors import StorageError
from storage import archive, bills, dist, generator, lake

ROOT = pathlib.Path(__file__).resolve().parent.parent
N = 300
PERIODS = ("2026-06", "2026-07")
FILES = ("bills.parquet", "bill_items.parquet")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """300 customers over June and July 2026 with 5 % meter replacements; the single-node bills of both."""
    d = tmp_path_factory.mktemp("scaleout") / "single"
    with pytest.MonkeyPatch.context() as mp:        # test data: durability of the generator is not under test
        mp.setattr(os, "fsync", lambda fd: None)
        generator.generate(d, N, 61, seed=23, rates={"replacement": 0.05, "rollover": 0.01,
                                                          "reverse_running": 0.01})
    with archive.Archive(d / "archive.duckdb") as a:
        a.import_files(sorted((d / "archive-files").glob("*.csv")))
    fresh = d.parent / "fresh"
    shutil.copytree(d, fresh)                       # the same data, no bills yet
    for p in PERIODS:
        bills.run(d, p)
    return d, fresh


@pytest.fixture(scope="module")
def cluster():
    with dist.client(workers=2) as c:
        yield c


def _copy(fresh: pathlib.Path, to: pathlib.Path) -> pathlib.Path:
    shutil.copytree(fresh, to)
    return to


def _same(a: pathlib.Path, b: pathlib.Path, period: str) -> None:
    for f in FILES:
        x = (a / "bills" / f"period={period}" / f).read_bytes()
        y = (b / "bills" / f"period={period}" / f).read_bytes()
        assert x == y, f"{period}/{f} differs"


def test_replaced_meters_cross_buckets_and_every_customer_has_one_task(fleet):
    single, fresh = fleet
    con = duckdb.connect(str(fresh / "archive.duckdb"), read_only=True)
    pairs = con.execute("""SELECT po.customer_id, list(pm.meter_id ORDER BY pm.valid_from) FROM points po
                           JOIN point_meters pm USING (point_id) WHERE po.role = 'customer'
                           GROUP BY 1 HAVING count(*) > 1""").fetchall()
    con.close()
    crossing = [c for c, ms in pairs if len(set(lake.buckets_of(np.array(ms, np.int64)))) > 1]
    assert len(crossing) >= 3, "the test needs customers whose meters sit in different buckets"
    for p in PERIODS:
        plan = dist.assign(fresh, p)
        ids = np.concatenate(list(plan.values()))
        assert sorted(ids.tolist()) == list(range(1, N + 1))          # each customer in exactly one task
    # in the first period (every first meter installed before it) a customer's task is its first meter's bucket
    plan = dist.assign(fresh, PERIODS[0])
    for c, ms in pairs:
        assert [b for b, v in plan.items() if c in v] == [int(lake.buckets_of(np.array(ms[:1], np.int64))[0])]


def test_local_cluster_bills_identical_to_single_node(fleet, cluster, tmp_path):
    single, fresh = fleet
    d = _copy(fresh, tmp_path / "dist")
    for p in PERIODS:
        s = dist.run(d, p, cluster)
        assert s["tasks"]["count"] == 16 and s["bills"] == N
        _same(single, d, p)
    ref = json.loads((single / "bills" / "period=2026-07" / "summary.json").read_text())
    got = json.loads((d / "bills" / "period=2026-07" / "summary.json").read_text())
    assert {k: v for k, v in got.items() if k not in ("seconds", "tasks")} == \
        {k: v for k, v in ref.items() if k != "seconds"}
    # idempotent: a re-run publishes the same bytes again, and leaves no staging behind
    dist.run(d, "2026-07", cluster)
    _same(single, d, "2026-07")
    assert not list((d / "bills").glob(".staging-*"))


def test_worker_killed_mid_run_gives_identical_bills_or_publishes_nothing(fleet, cluster, tmp_path):
    single, fresh = fleet
    d = _copy(fresh, tmp_path / "killed")
    bills.run(d, "2026-06")             # June's bills exist: July's annual cumulative reads them
    pids = cluster.run(os.getpid)
    killed = []

    def progress(step):
        if step.startswith("task") and not killed:  # the first task is in: others are running or queued
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    try:
        dist.run(d, "2026-07", cluster, progress=progress)
    except StorageError as exc:            # a clean failure: one line, nothing published
        assert "nothing was published" in str(exc)
        assert not (d / "bills" / "period=2026-07").exists()
    else:
        _same(single, d, "2026-07")
    assert killed
    cluster.wait_for_workers(2, timeout=30)  # the nanny restarted the worker: the cluster is whole again
    assert killed[0] not in cluster.run(os.getpid).values()


def test_cli_bill_run_workers(fleet, tmp_path):
    single, fresh = fleet
    d = _copy(fresh, tmp_path / "cli")
    bills.run(d, "2026-06")
    r = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "bill", "run", "--period", "2026-07", "--workers", "2",
                        "--json", "--data", str(d)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["bills"] == N and s["tasks"]["count"] == 16
    _same(single, d, "2026-07")
    bad = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "bill", "run", "--period", "2026-07", "--scheduler",
                          "tcp://127.0.0.1:9", "--data", str(d)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "scheduler tcp://127.0.0.1:9" in bad.stderr.strip().splitlines()[-1]

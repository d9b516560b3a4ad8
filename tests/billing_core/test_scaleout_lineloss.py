"""Line loss on Dask distributed (billing_core.jobs.dist.lineloss_run) against the single-node run: a LocalCluster of two
worker processes on 127.0.0.1, one task per feeder set (a feeder with its areas), writes line_loss partitions
byte-identical to the single-node run's (the merged table has the same rows, types and order, and the same
Parquet writer call makes the same bytes; only the file's uuid name differs); a worker killed mid-run gives
the identical partitions or a clean failure with nothing written; the CLI's --workers."""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from gridhead.protocols.errors import StorageError
from gridhead.storage import archive
from gridhead.billing_core.jobs import dist, lineloss

from tests.conftest import generated

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIRST, LAST = dt.date(2026, 6, 1), dt.date(2026, 6, 7)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """12k customers (4 feeders, 80 areas) over May 28 .. June 10 with meter replacements; the single-node
    line loss of June 1..7 written."""
    d = tmp_path_factory.mktemp("scaleout-ll") / "single"
    generated(d, 12_000, 14, seed=11, start=dt.date(2026, 5, 28), curve_fraction=0,
              rates={"replacement": 0.05, "rollover": 0.01, "reverse_running": 0.01})
    fresh = d.parent / "fresh"
    shutil.copytree(d, fresh)
    with archive.Archive(d / "archive.duckdb", read_only=True) as a:
        res = lineloss.compute(a, d / "lake", FIRST, LAST)
    lineloss.write_days(d / "lake", res)
    return d, fresh, res


@pytest.fixture(scope="module")
def cluster():
    with dist.client(workers=2) as c:
        yield c


def _partitions(d: pathlib.Path) -> dict:
    """line_loss and line_loss_missing (the 不可算 meters, issue 18) partitions: name -> bytes."""
    out = {}
    for table in (lineloss.TABLE, lineloss.MISSING_TABLE):
        for p in sorted((d / "lake" / table).glob("date=*")):
            files = list(p.glob("part-*.parquet"))
            assert len(files) == 1, p
            out[f"{table}/{p.name}"] = files[0].read_bytes()
    return out


def test_feeder_sets_cover_every_feeder_once(fleet):
    _single, fresh, res = fleet
    sets = dist.feeder_sets(fresh, 16)
    keys = np.concatenate(sets)
    assert len(sets) >= 4 and sorted(keys.tolist()) == [-1] + res.feeder_id.tolist()


def test_local_cluster_line_loss_byte_identical_to_single_node(fleet, cluster, tmp_path):
    single, fresh, ref = fleet
    d = shutil.copytree(fresh, tmp_path / "dist")
    res, tasks = dist.lineloss_run(d, FIRST, LAST, cluster, n_sets=16)     # one feeder per task
    assert tasks["count"] == len(ref.feeder_id) >= 4
    want = _partitions(single)
    assert len(want) == 14 and _partitions(d) == want
    assert lineloss.month_table(res).equals(lineloss.month_table(ref))
    # the default layout (one set per worker: 2 tasks) gives the same rows: the partition does not matter
    res2, tasks2 = dist.lineloss_run(d, FIRST, LAST, cluster, save=False)
    assert tasks2["count"] == 2 and lineloss.month_table(res2).equals(lineloss.month_table(ref))
    # tasks that query the archive and read the lake themselves (no shares from the driver): the same rows
    res3, _ = dist.lineloss_run(d, FIRST, LAST, cluster, save=False, n_sets=3, ship_inputs=False)
    assert lineloss.month_table(res3).equals(lineloss.month_table(ref))


def test_worker_killed_mid_run_gives_identical_line_loss_or_writes_nothing(fleet, cluster, tmp_path):
    single, fresh, _ref = fleet
    d = shutil.copytree(fresh, tmp_path / "killed")
    pids = cluster.run(os.getpid)
    killed = []

    def progress(step):
        if step.startswith("task") and not killed:
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    try:
        dist.lineloss_run(d, FIRST, LAST, cluster, progress=progress)
    except StorageError as exc:
        assert "nothing was written" in str(exc)
        assert not (d / "lake" / lineloss.TABLE).exists()
    else:
        assert _partitions(d) == _partitions(single)
    assert killed
    cluster.wait_for_workers(2, timeout=30)


def test_cli_lineloss_workers(fleet, tmp_path):
    single, fresh, _ref = fleet
    d = shutil.copytree(fresh, tmp_path / "cli")
    cmd = [sys.executable, "-c", "import cli; cli.main()", "lineloss", "--date", "2026-06-03", "--csv", "--data", str(d)]
    r = subprocess.run(cmd + ["--workers", "2"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _partitions(d) == {k: v for k, v in _partitions(single).items() if k.endswith("/date=2026-06-03")}
    ref = subprocess.run(cmd + ["--no-save"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert ref.returncode == 0 and r.stdout == ref.stdout
    bad = subprocess.run(cmd + ["--scheduler", "tcp://127.0.0.1:9"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "scheduler tcp://127.0.0.1:9" in bad.stderr.strip().splitlines()[-1]

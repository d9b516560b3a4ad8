"""The bill run on Dask distributed (billing_core.jobs.dist) against the single-node run: a LocalCluster of two worker
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
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gridhead.protocols.errors import StorageError
from gridhead.storage import lake
from gridhead.billing_core.jobs import bills, dist

from tests.conftest import generated

ROOT = pathlib.Path(__file__).resolve().parents[2]
N = 300
PERIODS = ("2026-06", "2026-07")
FILES = ("bills.parquet", "bill_items.parquet")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """300 customers over June and July 2026 with 5 % meter replacements; the single-node bills of both."""
    d = tmp_path_factory.mktemp("scaleout") / "single"
    generated(d, N, 61, seed=23, rates={"replacement": 0.05, "rollover": 0.01, "reverse_running": 0.01})
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
    # a relative data directory, as a user types it (issue 19: the spill directory was compared unresolved)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "bill", "run", "--period", "2026-07", "--workers", "2",
                        "--json", "--data", d.name], cwd=d.parent, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["bills"] == N and s["tasks"]["count"] == 16
    _same(single, d, "2026-07")
    bad = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "bill", "run", "--period", "2026-07", "--scheduler",
                          "tcp://127.0.0.1:9", "--data", str(d)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "scheduler tcp://127.0.0.1:9" in bad.stderr.strip().splitlines()[-1]


def test_chunked_single_node_and_small_row_groups_give_the_same_files(fleet, cluster, tmp_path, monkeypatch):
    """A single-node run over more customers than one chunk bills whole buckets at a time and spills them;
    the files are the unchunked run's, byte for byte — also when row groups are small, so that every group
    is merged from several parts (the path 10M bills take), on the cluster too.  No spill is left behind."""
    single, fresh = fleet
    d = _copy(fresh, tmp_path / "chunked")
    steps = []
    for p in PERIODS:
        bills.run(d, p, chunk=100, progress=steps.append)
        _same(single, d, p)
    k = int(steps[0].split("/")[1])            # whole buckets of at most 100 customers each: 3 chunks or more
    assert k >= 3 and steps[:k] == [f"chunk {i}/{k}" for i in range(1, k + 1)]
    assert not list((d / "bills").glob(".spill-*"))
    monkeypatch.setattr(bills, "ROW_GROUP", 64)
    small = [_copy(fresh, tmp_path / name) for name in ("small-whole", "small-chunked", "small-dist")]
    for p in PERIODS:
        bills.run(small[0], p)
        bills.run(small[1], p, chunk=100)
        dist.run(small[2], p, cluster)
        _same(small[0], small[1], p)
        _same(small[0], small[2], p)
        f = small[0] / "bills" / f"period={p}" / "bills.parquet"
        assert pq.ParquetFile(f).metadata.num_row_groups == -(-N // 64)
        for name in FILES:           # the same rows as the default row groups
            a = pq.ParquetFile(single / "bills" / f"period={p}" / name).read()
            b = pq.ParquetFile(small[0] / "bills" / f"period={p}" / name).read()
            assert a.to_pylist() == b.to_pylist(), name


def test_a_dead_runs_spill_is_cleaned_a_live_ones_kept(tmp_path):
    root = tmp_path / "bills"
    live = bills.Parts(root, spill=True)
    live.add(pa.table({"customer_id": pa.array([1], pa.int64())}), {"total_fen": np.array([5])},
             {"bill": np.array([0]), "amount_fen": np.array([5])})
    dead = root / ".spill-dead"
    dead.mkdir()
    (dead / "lock").touch()               # nobody holds its lock: the run that made it is gone
    (dead / "0000.arrow").write_bytes(b"x")
    old_tmp, new_tmp = root / ".spilltmp-old", root / ".spilltmp-new"   # a crash before the rename; one in it
    old_tmp.mkdir()
    new_tmp.mkdir()
    os.utime(old_tmp, (0, 0))
    bills._clean(root)
    assert not dead.exists() and live.dir.exists()
    assert not old_tmp.exists() and new_tmp.exists()
    (text, out, items), = list(live.groups())
    assert text.column("customer_id").to_pylist() == [1] and out["total_fen"].tolist() == [5]
    live.close()
    assert not list(root.glob(".spill-*"))


def test_release_rewrites_a_multi_group_file_group_by_group(fleet, tmp_path, monkeypatch):
    """A release streams bills.parquet a row group at a time and links the unchanged items: only the
    released bill's status and who/when/note change, the row groups stay, a re-run keeps the release."""
    _single, fresh = fleet
    monkeypatch.setattr(bills, "ROW_GROUP", 64)
    d = _copy(fresh, tmp_path / "release")
    bills.run(d, "2026-06")
    live = d / "bills" / "period=2026-06"
    before = pq.ParquetFile(live / "bills.parquet").read().to_pylist()
    items = (live / "bill_items.parquet").read_bytes()
    held = [b for b in before if b["status"] == "held"]
    assert len(held) >= 2, "the test needs held bills"
    target = held[-1]["bill_id"]                # a late row group
    got = bills.release(d, [target], by="审核员", note="checked")
    assert got == {"released": [target], "already": []}
    after = pq.ParquetFile(live / "bills.parquet")
    assert after.metadata.num_row_groups == -(-N // 64)
    rows = after.read().to_pylist()
    for old, new in zip(before, rows):
        if new["bill_id"] == target:
            assert (new["status"], new["released_by"], new["release_note"]) == ("released", "审核员", "checked")
            assert {k: v for k, v in new.items() if not k.startswith("release") and k != "status"} == \
                {k: v for k, v in old.items() if not k.startswith("release") and k != "status"}
        else:
            assert new == old
    assert (live / "bill_items.parquet").read_bytes() == items
    assert json.loads((live / "summary.json").read_text())["released"] == 1
    bills.run(d, "2026-06")                     # a re-run keeps the release of an unchanged bill
    rows = pq.ParquetFile(live / "bills.parquet").read().to_pylist()
    assert [r["status"] for r in rows if r["bill_id"] == target] == ["released"]


def test_task_columns_travel_as_files_or_as_values_alike(fleet, tmp_path):
    """A worker that sees the driver's spill directory writes its columns there and returns file names; one
    that does not returns the columns — the driver's merged groups are the same either way."""
    from gridhead.billing_core.tariff import TariffSet
    _single, fresh = fleet
    plan = dist.assign(fresh, PERIODS[0])
    prep = bills.prepare(fresh, PERIODS[0], {k: ({k}, v) for k, v in plan.items()})
    b, ts = sorted(plan)[0], TariffSet.load()
    spilled = bills.Parts(tmp_path / "bills", spill=True)
    as_files = dist.bill_task(fresh, PERIODS[0], b, plan[b], ts, None, prep[b], None, str(spilled.spill_dir()))
    as_values = dist.bill_task(fresh, PERIODS[0], b, plan[b], ts, None, prep[b], None, str(tmp_path / "elsewhere"))
    assert "files" in as_files and "out" not in as_files and "out" in as_values
    spilled.adopt(*as_files["files"])
    held = bills.Parts(tmp_path / "bills", spill=False)
    held.add(as_values["text"], as_values["out"], as_values["items"])
    (t1, o1, i1), = list(spilled.groups())
    (t2, o2, i2), = list(held.groups())
    assert t1.equals(t2) and len(t1) == len(plan[b])
    assert o1.keys() == o2.keys() and all(np.array_equal(o1[k], o2[k]) for k in o1)
    assert i1.keys() == i2.keys() and all(np.array_equal(i1[k], i2[k]) for k in i1)
    with pytest.raises(StorageError, match="not in this run's spill directory"):
        held.adopt(*as_files["files"])
    spilled.close()

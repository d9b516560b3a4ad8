"""The head-end and the simulated fleet in separate processes over real sockets on 127.0.0.1.

* a fleet of 50 terminals × 8 meters collected completely: every expected meter-day in the lake, each
  value equal to the simulator's register model;
* faults (dropped answers, offline spells, frozen data the concentrators lack) leave gaps after the
  first pass that back-fill closes within its retries;
* kill -9 of the head-end in the middle of a collection: every batch the ingest acknowledged is in the
  lake after restart, the restarted collection resumes and back-fill closes the gaps.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gridhead.headend.sim import demo, model as sim_model
from gridhead.storage import archive, collection, schema, sql, wal

N_TERMINALS, N_METERS, SEED, DAYS = 50, 8, 3, 2
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory):
    """An archive of 50 × 8 meters starting DAYS + 1 days ago (the fleet's model is the same)."""
    d = tmp_path_factory.mktemp("fleet")
    start = demo.today_local() - dt.timedelta(days=DAYS + 1)
    sim_model.write_standalone_archive(d, N_TERMINALS, N_METERS, SEED, start)
    with archive.Archive(sql.archive_path(d)) as a:
        a.import_files(sorted((d / "archive-files").glob("*.csv")))
    return d, [start + dt.timedelta(days=i) for i in range(1, DAYS + 1)]


def _fresh(src, dst):
    """A copy of the archive with an empty lake, so each test collects from nothing."""
    import shutil
    dst.mkdir()
    shutil.copy(sql.archive_path(src), sql.archive_path(dst))
    shutil.copytree(src / "archive-files", dst / "archive-files")
    shutil.copytree(src / "ground_truth", dst / "ground_truth")
    return dst


def _collect(data, port, days, *extra, ack_log=None, wait=True):
    cmd = [sys.executable, "-m", "gridhead.cli", "collect", "run", "--data", str(data), "--port", str(port), "--json",
           "--wait", "20", "--seed", "7", "--timeout", "1", *extra]
    for d in days:
        cmd += ["--date", d.isoformat()]
    if ack_log:
        cmd += ["--ack-log", str(ack_log)]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return p
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def _lake_vs_model(data, days):
    """(expected meter-days, stored meter-days, mismatching values) against the simulator's model."""
    fleet = sim_model.load_gen_dir(data)
    idx_of = {int(m): i for i, m in enumerate(fleet.meter_id)}
    names = ("ae_fwd", "ae_fwd_t1", "ae_fwd_t2", "ae_fwd_t3", "ae_fwd_t4")
    with sql.Session(data) as s:
        rows = s.query(f"SELECT meter_id, date, {', '.join(names)} FROM daily_frozen").to_pylist()
    with archive.Archive(sql.archive_path(data), read_only=True) as a:
        exp = collection.expected_meters(a)
    with collection.CollectionState(sql.lake_root(data), exp) as st:
        expected = st.expected_count(days)
        gaps = st.gaps(days, "daily-frozen").num_rows
    bad = []
    for r in rows:
        i = idx_of[r["meter_id"]]
        want = fleet.model.frozen([i], fleet.model.day_of(r["date"]))[0][:5]
        got = np.array([r[n] for n in names], np.int64)
        # a DL/T 645 register (XXXXXX.XX) carries the low 8 digits of an 8-digit meter's register
        if not (np.array_equal(got, want) or (fleet.is645[i] and np.array_equal(got, want % 10 ** 8))):
            bad.append((r["meter_id"], str(r["date"]), got.tolist(), want.tolist()))
    return expected, len(rows), gaps, bad


def test_fleet_collected_completely(fleet_dir, tmp_path):
    src, days = fleet_dir
    data = _fresh(src, tmp_path / "d")
    port = demo._free_port()
    sim = demo.start_fleet(data, port, seed=SEED, faults={}, heartbeat_s=30)
    try:
        out = _collect(data, port, days, "--retries", "2", "--backfill-delay", "0.2")
    finally:
        demo.stop_process(sim)
    assert out["online_at_start"] == N_TERMINALS
    assert out["before"]["success_first_pct"] == 100.0 and out["before"]["backfilled"] == 0
    expected, stored, gaps, bad = _lake_vs_model(data, days)
    assert expected >= N_TERMINALS * N_METERS * DAYS and stored >= expected and gaps == 0
    assert bad == []


def test_faults_leave_gaps_that_backfill_closes(fleet_dir, tmp_path):
    src, days = fleet_dir
    data = _fresh(src, tmp_path / "d")
    port = demo._free_port()
    faults = {"drop": 0.05, "missing": 0.15, "missing_late": 0.0, "offline": 0.05, "offline_s": 1.0}
    sim = demo.start_fleet(data, port, seed=SEED, faults=faults, heartbeat_s=1)
    try:
        out = _collect(data, port, days, "--retries", "5", "--backfill-delay", "0.3")
    finally:
        demo.stop_process(sim)
    before, after = out["before"], out["after"]
    assert before["missing"] > 0.1 * before["expected"]          # the faults bite
    assert after["missing"] == 0 and after["backfilled"] == before["missing"]
    assert out["backfill"]["open_gaps"] == 0
    expected, stored, gaps, bad = _lake_vs_model(data, days)
    assert stored >= expected and gaps == 0 and bad == []
    # the attempts are bounded by the retries, and back-filled readings carry the flag
    with archive.Archive(sql.archive_path(data), read_only=True) as a:
        exp = collection.expected_meters(a)
    with collection.CollectionState(sql.lake_root(data), exp) as st:
        att = st.attempts().to_pydict()
        per = {}
        for m, d in zip(att["meter_id"], att["date"]):
            per[(m, d)] = per.get((m, d), 0) + 1
        assert per and max(per.values()) <= 5
    with sql.Session(data) as s:
        q = s.query(f"SELECT count(*) AS n FROM daily_frozen WHERE quality & {schema.Q_BACKFILLED} <> 0").to_pylist()
    assert q[0]["n"] == after["backfilled"]


def test_kill_9_mid_collection_loses_nothing_acknowledged_and_resumes(fleet_dir, tmp_path):
    src, days = fleet_dir
    data = _fresh(src, tmp_path / "d")
    port = demo._free_port()
    acks = tmp_path / "acks.jsonl"
    sim = demo.start_fleet(data, port, seed=SEED, faults={"missing": 0.1, "missing_late": 0.0}, heartbeat_s=30)
    try:
        # throttled so the kill lands in the middle: 100 record requests at 25/s take 4 s
        he = _collect(data, port, days, "--requests-per-s", "25", "--retries", "3", "--backfill-delay", "0.2",
                      ack_log=acks, wait=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not acks.exists() or len(acks.read_text().splitlines()) < 20):
            assert he.poll() is None, he.stderr.read()[-2000:]
            time.sleep(0.02)
        os.kill(he.pid, signal.SIGKILL)
        he.wait()
        lines = [json.loads(x) for x in acks.read_text().splitlines() if x.endswith("}")]
        assert 20 <= len(lines) < N_TERMINALS * DAYS            # killed mid-collection
        # what was acknowledged is in the write-ahead log: replay publishes it
        wal.replay(sql.lake_root(data))
        with sql.Session(data) as s:
            have = {(r["meter_id"], r["t"]) for r in s.query(
                "SELECT DISTINCT meter_id, epoch(ts_utc)::BIGINT AS t FROM readings").to_pylist()}
        acked = {(m, t) for x in lines for m in x["meter_id"] for t in x["ts_utc"]}
        assert acked and acked <= have
        # restart: the days without a finished run are collected again, back-fill closes the gaps
        out = _collect(data, port, days, "--retries", "3", "--backfill-delay", "0.2")
    finally:
        demo.stop_process(sim)
    assert out["after"]["missing"] == 0
    expected, stored, gaps, bad = _lake_vs_model(data, days)
    assert stored >= expected and gaps == 0 and bad == []

"""`gridhead serve` with a ``[collect]`` table: the collection scheduler and the nightly lake compaction run
inside the head-end process, beside the control API (real processes on 127.0.0.1, a simulated fleet).

Day D's partitions are compacted once D is over (here ``compact_offset = "0s"``: at D+1 00:00): a daily
partition of yesterday that held two files (a maximum-demand file written before the head-end started and
the collected energy readings) is one file with its pivot afterwards, holding both; the compaction and
the collection are recorded in the collection state, so a restarted head-end repeats neither.  A sharded
head-end collects its own terminals only and records its runs under its shard's name."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pyarrow.parquet as pq
import pytest

from gridhead.headend import collect as c
from gridhead.headend.sim import demo, model as sim_model
from gridhead.headend.config import Config
from gridhead.headend.shard import shard_of
from gridhead.storage import archive, collection, lake, schema, sql

from tests.conftest import ROOT

N_TERMINALS, N_METERS, SEED = 4, 5, 21


def _midnight_utc_s(d: dt.date) -> int:
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=schema.LOCAL_TZ).timestamp())


def _serve(cfg):
    p = subprocess.Popen([sys.executable, "-m", "gridhead.cli", "serve", "--config", str(cfg), "--no-api"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line:
        raise AssertionError(p.communicate(timeout=30)[1][-2000:])
    return p, json.loads(line)


def _stop(p):
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    return p.returncode, err


def _state(d):
    with archive.Archive(sql.archive_path(d), read_only=True) as a:
        expected = collection.expected_meters(a)
    return collection.CollectionState(sql.lake_root(d), expected)


def _runs(d, task, phase):
    with _state(d) as st:
        return [r for r in st.runs().to_pylist() if r["task"] == task and r["phase"] == phase]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve-collect")
    today = demo.today_local()
    yesterday = today - dt.timedelta(days=1)
    sim_model.write_standalone_archive(d, N_TERMINALS, N_METERS, SEED, today - dt.timedelta(days=4))
    with archive.Archive(sql.archive_path(d)) as a:
        a.import_files(sorted((d / "archive-files").glob("*.csv")))
        meters = a.columns("SELECT meter_id FROM meters")["meter_id"]
    # yesterday's maximum demand of every meter, bulk-written before the head-end starts: each daily
    # partition of yesterday gets a first file (and its pivot); the collection adds a second
    md = np.asarray(meters, np.int64)
    t = _midnight_utc_s(yesterday)
    lake.write_readings(sql.lake_root(d), {
        "meter_id": md, "register": np.full(len(md), schema.REGISTER_CODES["md_fwd"], np.int16),
        "ts_utc": np.full(len(md), t, np.int64), "value": 1000 + md, "quality": np.zeros(len(md), np.uint8),
        "source": np.zeros(len(md), np.uint8), "received_utc": np.full(len(md), t + 60, np.int64)}, schema.DAILY)
    (d / "tasks.toml").write_text('[[task]]\nname = "daily-frozen"\nbackfill_retries = 0\n'
                                  '[[task]]\nname = "monthly-settlement"\nenabled = false\n')
    cfg = d / "he.toml"
    cfg.write_text(f'listen_port = 0\ndata_dir = "{d}"\nrequest_timeout_s = 5\n'
                   f'[collect]\ntasks = "tasks.toml"\nfirst_day = {yesterday.isoformat()}\ncompact_offset = "0s"\n')
    he, ready = _serve(cfg)
    fleet = demo.start_fleet(d, ready["port"], seed=SEED, heartbeat_s=30)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            if _runs(d, "daily-frozen", "collect") and _runs(d, c.COMPACT_RUN, "compact"):
                break
            time.sleep(0.3)
    finally:
        demo.stop_process(fleet)
        rc, err = _stop(he)
    return dict(d=d, cfg=cfg, yesterday=yesterday, today=today, rc=rc, err=err, meters=md)


def _events(err, name):
    return [e for e in map(json.loads, err.splitlines()) if e.get("event") == name]


def test_collected_and_compacted_yesterday_then_stopped_cleanly(site):
    assert site["rc"] == 0 and "Traceback" not in site["err"], site["err"][-2000:]
    days = {r["date"] for r in _runs(site["d"], "daily-frozen", "collect")}
    assert site["yesterday"] in days
    comp = _runs(site["d"], c.COMPACT_RUN, "compact")
    assert [r["date"] for r in comp] == [site["yesterday"]]          # today is not over: not compacted
    ev = _events(site["err"], "lake compacted")
    assert [e["date"] for e in ev] == [site["yesterday"].isoformat()] and ev[0]["partitions"] >= 1
    assert ev[0]["files_removed"] == comp[0]["stored"] >= 1


def test_yesterdays_partitions_are_one_file_with_its_pivot_holding_both_sources(site):
    root = sql.lake_root(site["d"])
    dirs = [pd for pd in lake.partition_dirs(root)
            if f"date={site['yesterday'].isoformat()}" in pd.parts and "kind=daily" in pd.parts]
    assert dirs
    seen = set()
    for p in dirs:
        parts = sorted(x.name for x in p.glob("part-*.parquet"))
        assert len(parts) == 1, (p, parts)
        pivot = pq.read_table(p / lake.pivot_name(parts[0])).to_pydict()
        for m, md, ae in zip(pivot["meter_id"], pivot["md_fwd"], pivot["ae_fwd"]):
            assert md == 1000 + m                                      # the pre-written file's value
            if ae is not None:
                seen.add(m)
    # every meter collected yesterday (no faults in the fleet) sits in the compacted pivot with its energy
    with sql.Session(site["d"]) as s:
        got = s.query(f"SELECT DISTINCT meter_id FROM readings WHERE kind = 'daily' AND register = "
                      f"{schema.REGISTER_CODES['ae_fwd']} AND ts_utc = to_timestamp({_midnight_utc_s(site['yesterday'])})"
                      ).column("meter_id").to_pylist()
    assert got and set(got) == seen


def test_a_restart_repeats_neither_collection_nor_compaction(site):
    d = site["d"]
    before = (len(_runs(d, "daily-frozen", "collect")), len(_runs(d, c.COMPACT_RUN, "compact")))
    cfg = d / "he-restart.toml"                                         # no fleet: do not wait for it
    cfg.write_text(site["cfg"].read_text() + 'wait_online = "0s"\n')
    he, _ready = _serve(cfg)
    try:
        time.sleep(2.5)                                                 # a scheduler pass with nothing due
    finally:
        rc, err = _stop(he)
    assert rc == 0 and "Traceback" not in err, err[-2000:]
    assert [e["online"] for e in _events(err, "collection scheduler")] == [0] and not _events(err, "lake compacted")
    # yesterday's run is not repeated (today's freeze may become due and be collected: that is a new day)
    runs = _runs(d, "daily-frozen", "collect")
    assert sum(r["date"] == site["yesterday"] for r in runs) == 1
    assert (len(_runs(d, c.COMPACT_RUN, "compact"))) == before[1]


def test_sharded_collector_takes_its_own_terminals(site):
    d = site["d"]
    with archive.Archive(sql.archive_path(d), read_only=True) as a:
        terminals = a.columns("SELECT terminal_address FROM concentrators")["terminal_address"].tolist()
    got = {}
    for i in (0, 1):
        he = types.SimpleNamespace(config=Config(data_dir=str(d), shard_index=i, shard_count=2))
        col = c.Collector(he, [])
        try:
            got[i] = set(col.meters_of)
            assert col.run_suffix == f"@shard-{i:02d}-of-02" and col.compact_lake == (i == 0)
        finally:
            col.close()
    assert got[0] | got[1] == set(terminals) and not got[0] & got[1]
    assert all(shard_of(a, 2) == i for i in (0, 1) for a in got[i])

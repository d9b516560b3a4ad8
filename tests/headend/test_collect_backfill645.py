"""Issue 19 item 1: back-fill of DL/T 645 meters re-reads every register the task requires.

A demo-like run — the simulated fleet in its own process on 127.0.0.1, faults that keep meter-days out of
the concentrators' task records, the built-in daily task with back-fill — then the lake against the
simulator's model: every meter-day of every meter, first pass or back-filled, 698 or 645, carries forward
and reverse active energy and (where the meter keeps them) both combined reactive registers; and the
success rate counts a meter-day as collected only when all of them are stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest

from gridhead.headend import collect as C
from gridhead.headend.server import serve_and_collect
from gridhead.headend.sim import demo, model as sim_model
from gridhead.storage import archive, collection, schema, sql

N_TERMINALS, N_METERS, SEED, DAYS = 4, 10, 11, 2
REGS = ("ae_fwd", "ae_rev", "re_fwd", "re_rev")


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    data = tmp_path_factory.mktemp("bf645")
    start = demo.today_local() - dt.timedelta(days=DAYS + 1)
    sim_model.write_standalone_archive(data, N_TERMINALS, N_METERS, SEED, start)
    with archive.Archive(sql.archive_path(data)) as a:
        a.import_files(sorted((data / "archive-files").glob("*.csv")))
    days = [start + dt.timedelta(days=i) for i in range(1, DAYS + 1)]
    port = demo._free_port()
    fleet = demo.start_fleet(data, port, seed=SEED, faults={"missing": 0.3, "missing_late": 0.0}, heartbeat_s=30)
    tasks = [dataclasses.replace(C.DEFAULT_TASKS[0], backfill_retries=3, backfill_delay_s=0.05, timeout_s=5)]
    try:
        out = asyncio.run(serve_and_collect(data, days, port=port, tasks=tasks, seed=1, wait_s=30,
                                              config={"request_retries": 0}))
    finally:
        demo.stop_process(fleet)
    with sql.Session(data) as s:
        rows = s.query(f"SELECT meter_id, date, quality, {', '.join(REGS)} FROM daily_frozen").to_pylist()
    return data, days, out, rows, sim_model.load_gen_dir(data)


def test_backfilled_645_meter_days_carry_every_register_of_the_task(collected):
    _data, _days, out, rows, fleet = collected
    m, idx_of = fleet.model, {int(x): i for i, x in enumerate(fleet.meter_id)}
    backfilled_645 = 0
    for r in rows:
        i = idx_of[r["meter_id"]]
        want = m.frozen([i], m.day_of(r["date"]))[0]
        exp = {"ae_fwd": want[0], "ae_rev": want[5], "re_fwd": want[6] if m.reactive[i] else None,
               "re_rev": want[7] if m.reactive[i] else None}
        if fleet.is645[i]:
            exp = {k: None if v is None else int(v) % 10 ** 8 for k, v in exp.items()}
            backfilled_645 += bool(r["quality"] & schema.Q_BACKFILLED) and bool(m.reactive[i])
        assert {k: r[k] for k in REGS} == {k: None if v is None else int(v) for k, v in exp.items()}, r
    assert backfilled_645 > 0                   # the scenario: reactive 645 meter-days came by back-fill
    assert out["after"]["missing"] == 0 and out["backfill"]["open_gaps"] == 0


def test_a_meter_day_without_its_reactive_energy_is_a_gap(collected):
    """The success rate agrees with the lake: drop re_fwd of one back-filled reactive 645 meter-day and
    it is a gap again (before the fix it counted as collected with ae_fwd alone)."""
    data, days, _out, rows, fleet = collected
    m, idx_of = fleet.model, {int(x): i for i, x in enumerate(fleet.meter_id)}
    with archive.Archive(sql.archive_path(data), read_only=True) as a:
        exp = collection.expected_meters(a)
    root = sql.lake_root(data)
    with collection.CollectionState(root, exp) as st:
        assert st.gaps(days, "daily-frozen").num_rows == 0
    r = next(r for r in rows if fleet.is645[idx_of[r["meter_id"]]] and m.reactive[idx_of[r["meter_id"]]])
    # a copy of the lake where that meter-day's re_fwd row is gone
    import shutil
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    copy = data.parent / (data.name + "-copy")
    shutil.copytree(root, copy / "lake")
    part = copy / "lake" / "readings" / f"kind={schema.DAILY}" / f"date={r['date'].isoformat()}"
    for f in part.glob("bucket=*/part-*.parquet"):
        t = pq.read_table(f)
        keep = pc.invert(pc.and_(pc.equal(t["meter_id"], r["meter_id"]),
                                 pc.equal(t["register"], schema.REGISTER_CODES["re_fwd"])))
        pq.write_table(t.filter(keep), f)
    with collection.CollectionState(copy / "lake", exp) as st:
        g = st.gaps(days, "daily-frozen").to_pydict()
        s = st.success(days).to_pydict()
    assert list(zip(g["meter_id"], g["date"])) == [(r["meter_id"], r["date"])]
    assert sum(s["missing"]) == 1


def test_storage_defaults_are_the_built_in_tasks_requirements():
    """`collect status` and the `collection` view (no task given) count as the built-in tasks do."""
    by_name = {t.name: t for t in C.DEFAULT_TASKS}
    assert collection.REQUIRED[schema.DAILY] == C.required_registers(by_name["daily-frozen"])
    assert collection.REQUIRED[schema.MONTHLY] == C.required_registers(by_name["monthly-settlement"])
    assert C.items_645(by_name["daily-frozen"]) == (0x05060101, 0x05060201, 0x05060301, 0x05060401)

"""SQL views over a hand-written lake: pivots against hand-computed values; plain duckdb sees the same."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pytest

from gridhead.storage import lake, schema
from gridhead.storage.sql import PIVOT_REGISTERS, Session, SqlError, view_statements, views_script

CST = schema.LOCAL_TZ
R = schema.REGISTER_CODES


def _ts(y, m, d, h=0, mi=0):
    return int(dt.datetime(y, m, d, h, mi, tzinfo=CST).timestamp())


def _rows(rows):
    """(meter, register name, ts, value, received) -> lake columns."""
    return {"meter_id": np.array([r[0] for r in rows], np.int64),
            "register": np.array([R[r[1]] for r in rows], np.int16),
            "ts_utc": np.array([r[2] for r in rows], np.int64), "value": np.array([r[3] for r in rows], np.int64),
            "quality": np.array([r[5] if len(r) > 5 else 0 for r in rows], np.uint8),
            "source": np.full(len(rows), schema.SRC_TASK, np.uint8),
            "received_utc": np.array([r[4] for r in rows], np.int64)}


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "lake"
    d1, d2 = _ts(2026, 11, 1), _ts(2026, 11, 2)
    daily = [(7, "ae_fwd", d1, 100_000, d1 + 60), (7, "ae_fwd_t1", d1, 10_000, d1 + 60),
             (7, "ae_fwd_t2", d1, 30_000, d1 + 60), (7, "ae_fwd_t3", d1, 35_000, d1 + 60),
             (7, "ae_fwd_t4", d1, 25_000, d1 + 60), (7, "ae_rev", d1, 0, d1 + 60),
             (7, "ae_fwd", d2, 100_850, d2 + 60), (9, "ae_fwd", d1, 5_000, d1 + 70),
             (9, "re_fwd", d1, 1_200, d1 + 70)]
    lake.write_readings(root, _rows(daily), "daily")
    # a back-filled re-delivery of meter 9's ae_fwd on 1 November with a later receive time and a corrected value
    lake.write_readings(root, _rows([(9, "ae_fwd", d1, 5_010, d1 + 7200, schema.Q_BACKFILLED)]), "daily")
    lake.write_readings(root, _rows([(7, "ae_fwd", d1, 100_000, d1 + 60), (7, "md_fwd", d1, 123_456, d1 + 60)]),
                        "monthly")
    lake.write_readings(root, _rows([(7, "p", d1 + 900, 4_000, d2), (7, "p", d1 + 1800, 4_400, d2)]), "interval")
    lake.write_events(root, {"meter_id": np.array([7], np.int64), "event": np.array([2], np.int16),
                             "start_utc": np.array([d1 + 3600], np.int64), "end_utc": np.array([d1 + 3700], np.int64),
                             "detail": None, "source": np.array([2], np.uint8), "received_utc": np.array([d1 + 4000])})
    return tmp_path


def test_daily_frozen_pivot(data):
    with Session(data) as s:
        rows = s.query("SELECT meter_id, date::VARCHAR AS day, ae_fwd, ae_fwd_t1, ae_fwd_t2, ae_fwd_t3, ae_fwd_t4, "
                       "ae_rev, re_fwd, md_fwd, quality FROM daily_frozen ORDER BY 1, 2").to_pylist()
    assert rows == [
        {"meter_id": 7, "day": "2026-11-01", "ae_fwd": 100_000, "ae_fwd_t1": 10_000, "ae_fwd_t2": 30_000,
         "ae_fwd_t3": 35_000, "ae_fwd_t4": 25_000, "ae_rev": 0, "re_fwd": None, "md_fwd": None, "quality": 0},
        {"meter_id": 7, "day": "2026-11-02", "ae_fwd": 100_850, "ae_fwd_t1": None, "ae_fwd_t2": None,
         "ae_fwd_t3": None, "ae_fwd_t4": None, "ae_rev": None, "re_fwd": None, "md_fwd": None, "quality": 0},
        # the later delivery wins; the row says one of its readings was back-filled
        {"meter_id": 9, "day": "2026-11-01", "ae_fwd": 5_010, "ae_fwd_t1": None, "ae_fwd_t2": None,
         "ae_fwd_t3": None, "ae_fwd_t4": None, "ae_rev": None, "re_fwd": 1_200, "md_fwd": None,
         "quality": schema.Q_BACKFILLED},
    ]


def test_other_views(data):
    with Session(data) as s:
        assert s.query("SELECT meter_id, ae_fwd, md_fwd FROM monthly_settlement").to_pylist() == \
            [{"meter_id": 7, "ae_fwd": 100_000, "md_fwd": 123_456}]
        assert s.query("SELECT kind, count(*) AS n FROM readings GROUP BY 1 ORDER BY 1").to_pylist() == \
            [{"kind": "daily", "n": 10}, {"kind": "interval", "n": 2}, {"kind": "monthly", "n": 2}]
        assert s.query("SELECT register_name, sum(value) AS v FROM load_curve GROUP BY 1").to_pylist() == \
            [{"register_name": "p", "v": 8_400}]
        assert s.query("SELECT event_name, event_name_zh, date::VARCHAR AS d FROM events").to_pylist() == \
            [{"event_name": "cover_open", "event_name_zh": "开表盖", "d": "2026-11-01"}]
        assert s.query("SELECT count(*) AS n FROM quarantine").to_pylist() == [{"n": 0}]
        with pytest.raises(SqlError, match="^sql: .*no_such_column"):
            s.query("SELECT no_such_column FROM daily_frozen")


def test_empty_data_directory_has_every_view(tmp_path):
    with Session(tmp_path) as s:
        for v in ("readings", "daily_frozen", "monthly_settlement", "load_curve", "events", "quarantine"):
            assert s.query(f"SELECT count(*) AS n FROM {v}").to_pylist() == [{"n": 0}], v
        assert "ae_fwd_t4" in s.query("SELECT * FROM daily_frozen").column_names


def test_plain_duckdb_opens_the_same_views(data):
    """The printed script alone, in a bare duckdb connection: no gridhead code involved."""
    script = views_script(data)
    con = duckdb.connect()
    con.execute(script)
    got = con.execute("SELECT meter_id, ae_fwd FROM daily_frozen ORDER BY 1, date").fetchall()
    assert got == [(7, 100_000), (7, 100_850), (9, 5_010)]
    views = {v for (v,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"readings", "daily_frozen", "monthly_settlement", "load_curve", "events", "quarantine"} <= views
    assert "archive" not in " ".join(view_statements(data))      # no archive yet
    assert "part-*.parquet" in script and ".pivot'" not in script  # globs for plain duckdb


def _random_lake(root, rng, meters=300, days=3):
    """Readings of every pivot register, with re-deliveries inside one bulk batch (other receive times, other
    values, now and then another timestamp of the same day) and second files in some partitions."""
    codes = np.array([R[n] for n in PIVOT_REGISTERS], np.int16)
    for d in range(days):
        t0 = _ts(2026, 11, 1 + d)
        for kind in ("daily", "monthly"):
            m = np.repeat(np.arange(1, meters + 1), len(codes))
            reg = np.tile(codes, meters)
            keep = rng.random(len(m)) < 0.7
            m, reg = m[keep], reg[keep]
            dup = rng.random(len(m)) < 0.1
            m, reg = np.concatenate([m, m[dup]]), np.concatenate([reg, reg[dup]])
            ts = np.full(len(m), t0) + np.where(rng.random(len(m)) < 0.05, 3600, 0)
            cols = {"meter_id": m.astype(np.int64), "register": reg, "ts_utc": ts,
                    "value": rng.integers(0, 10**9, len(m)), "quality": rng.integers(0, 16, len(m)).astype(np.uint8),
                    "source": np.full(len(m), schema.SRC_TASK, np.uint8),
                    "received_utc": t0 + 600 + rng.permutation(len(m))}
            lake.write_readings(root, cols, kind)
            late = m % 7 == d        # a later bulk delivery for some meters: their partitions get a second file
            lake.write_readings(root, {k: v[late] for k, v in cols.items()} | {
                "value": cols["value"][late] + 1, "received_utc": cols["received_utc"][late] + 10**6}, kind)


def test_materialised_pivot_equals_the_group_by(tmp_path):
    """gridhead sql's pivots (materialised per single-file partition + GROUP BY elsewhere) equal the plain
    duckdb script's GROUP BY over every reading, row for row, column for column."""
    _random_lake(tmp_path / "lake", np.random.default_rng(4))
    pivots, parts = lake.pivot_snapshot(tmp_path / "lake", "daily")
    assert pivots and parts          # both paths are exercised
    con = duckdb.connect()
    con.execute(views_script(tmp_path))
    with Session(tmp_path) as s:
        for view in ("daily_frozen", "monthly_settlement"):
            q = f"SELECT * FROM {view} ORDER BY meter_id, date"
            ours = s.query(q)
            assert ours.num_rows == 300 * 3          # every meter-day
            assert ours.to_pylist() == con.execute(q).to_arrow_table().to_pylist(), view
    with Session(tmp_path) as s:
        before = s.query("SELECT * EXCLUDE (quality) FROM daily_frozen ORDER BY meter_id, date").to_pylist()
    # compaction leaves one file and its pivot in every partition, and the values the views showed
    lake.compact(tmp_path / "lake")
    pivots, parts = lake.pivot_snapshot(tmp_path / "lake", "daily")
    assert pivots and not parts
    con = duckdb.connect()
    con.execute(views_script(tmp_path))
    with Session(tmp_path) as s:
        q = "SELECT * FROM daily_frozen ORDER BY meter_id, date"
        assert s.query(q).to_pylist() == con.execute(q).to_arrow_table().to_pylist()
        assert s.query(q.replace("*", "* EXCLUDE (quality)")).to_pylist() == before


def test_a_compaction_under_a_query_is_loud_never_short(tmp_path):
    """The Session's views read a snapshot list of files: once a compaction swapped a partition, a query
    fails with 'run it again' (and the views are refreshed) instead of silently skipping the partition.
    (DuckDB may answer from its cache of files it already read: then the answer is the snapshot's, whole.)"""
    _random_lake(tmp_path / "lake", np.random.default_rng(5), meters=100, days=2)
    count = "SELECT count(*) AS n FROM {}"
    views = ("readings", "daily_frozen")
    with Session(tmp_path) as warm, Session(tmp_path) as cold, Session(tmp_path) as cold2:
        n = {v: warm.query(count.format(v)).to_pylist()[0]["n"] for v in views}
        assert lake.compact(tmp_path / "lake")[0] > 0
        for view, s in zip(views, (cold, cold2)):       # views made before the compaction, never queried
            with pytest.raises(SqlError, match="^sql: the lake changed during the query .*run it again"):
                s.query(count.format(view))
            try:
                assert warm.query(count.format(view)).to_pylist()[0]["n"] == n[view]
            except SqlError as exc:
                assert "run it again" in str(exc)
        # the failed query refreshed the views: run again, right
        assert cold2.query(count.format("daily_frozen")).to_pylist()[0]["n"] == n["daily_frozen"]
        # what the lake holds now, by the files' footers: multi-file partitions lost their duplicates
        got = cold.query(count.format("readings")).to_pylist()[0]["n"]
        assert got == sum(r["rows"] for r in lake.info(tmp_path / "lake") if r["table"] == "readings") < n["readings"]


def test_date_filter_prunes_partitions(data):
    with Session(data) as s:
        plan = s.query("EXPLAIN ANALYZE SELECT count(*) FROM readings WHERE date = DATE '2026-11-02'")
        text = "\n".join(str(v) for v in plan.column(plan.num_columns - 1).to_pylist())
        assert s.query("SELECT count(*) AS n FROM readings WHERE date = DATE '2026-11-02'").to_pylist() == [{"n": 1}]
        assert "Total Files Read: 1" in text, text


def test_no_duckdb_progress_bar_on_stdout(tmp_path):
    """DuckDB draws its progress bar on stdout (into `gridhead sql --csv > file`): every connection gridhead
    opens has it off."""
    from gridhead.storage import archive, duck
    assert duck.connect().execute("SELECT current_setting('enable_progress_bar')").fetchone()[0] is False
    s = Session(tmp_path)
    assert s.db.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0] is False
    with archive.Archive(tmp_path / "archive.duckdb") as a:
        assert a.db.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0] is False

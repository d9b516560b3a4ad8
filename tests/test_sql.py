"""SQL views over a hand-written lake: pivots against hand-computed values; plain duckdb sees the same."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pytest

from storage import lake, schema
from storage.sql import Session, SqlError, view_statements, views_script

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
    assert len(view_statements(data)) == 7     # SET TimeZone + 6 lake views (no archive yet)

"""headend.records: 698 record rows and 645 answers → lake columns, worked by hand; read back through storage."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from gridhead.headend import profile as P
from gridhead.headend import records as rec
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698.axdr import Data, DateTimeS, Road
from gridhead.storage import schema

R = schema.REGISTER_CODES
T = A.tsa
DLU, ARR, NULL = 6, 1, 0


def energy(*vals):
    return Data(ARR, tuple(Data(DLU, v) if v is not None else Data(NULL, None) for v in vals))


def dts(*t):
    return Data(28, DateTimeS(*t))


METERS = {T("000000000001"): 11, T("000000000002"): 12}
# 2024-06-01 00:00 CST = 2024-05-31 16:00 UTC
MIDNIGHT = int(dt.datetime(2024, 5, 31, 16, tzinfo=dt.timezone.utc).timestamp())


def daily_row(addr, fwd, rev=(5,), r1=(7,), r2=(8,), when=(2024, 6, 1, 0, 0, 0)):
    t = dts(*when)
    return (Data(85, T(addr)), dts(2024, 6, 1, 0, 1, 0), dts(2024, 6, 1, 0, 2, 0), t,
            Data(ARR, (t, energy(*fwd), energy(*rev), energy(*r1), energy(*r2))))


def test_daily_record_rows_map_every_element_to_its_register():
    rows = [daily_row("000000000001", (1000, 100, 200, 300, 400)),
            daily_row("000000000002", (2000, 1, 2, 3, 4), rev=(9,))]
    b = rec.rows_to_batch(P.DAILY_RCSD, rows, METERS, source=schema.SRC_REPORT, received_utc=MIDNIGHT + 3600)
    c = b.columns
    assert len(b) == 16 and b.missing == () and b.meters == (11, 12)
    first = list(zip(c["register"][:8].tolist(), c["value"][:8].tolist()))
    assert first == [(R["ae_fwd"], 1000), (R["ae_fwd_t1"], 100), (R["ae_fwd_t2"], 200), (R["ae_fwd_t3"], 300),
                     (R["ae_fwd_t4"], 400), (R["ae_rev"], 5), (R["re_fwd"], 7), (R["re_rev"], 8)]
    assert (c["ts_utc"] == MIDNIGHT).all()
    assert c["meter_id"].tolist() == [11] * 8 + [12] * 8
    assert c["value"][13] == 9
    assert (c["source"] == schema.SRC_REPORT).all() and (c["quality"] == 0).all()
    assert (c["received_utc"] == MIDNIGHT + 3600).all()
    assert c["register"].dtype == np.int16 and c["value"].dtype == np.int64


def test_no_data_unknown_meter_and_no_time_are_missing_not_stored():
    null_row = daily_row("000000000001", (None,) * 5, rev=(None,), r1=(None,), r2=(None,))
    rows = [null_row,
            daily_row("000000000099", (1, 2, 3, 4, 5)),
            daily_row("000000000002", (1, 2, 3, 4, 5), when=(0xFFFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF))]
    # whole ROAD null: the terminal has nothing for the meter
    rows.append((Data(85, T("000000000002")), Data(NULL, None), Data(NULL, None), Data(NULL, None), Data(NULL, None)))
    b = rec.rows_to_batch(P.DAILY_RCSD, rows, METERS)
    assert len(b) == 0
    assert b.missing == ((11, rec.R_NO_DATA), (-1, rec.R_UNKNOWN_TSA), (12, rec.R_NO_TIME), (12, rec.R_NO_TIME))


def test_partial_row_keeps_what_is_there():
    b = rec.rows_to_batch(P.DAILY_RCSD, [daily_row("000000000001", (1000, None, 2, None, 4), rev=(None,))], METERS)
    assert b.columns["register"].tolist() == [R["ae_fwd"], R["ae_fwd_t2"], R["ae_fwd_t4"], R["re_fwd"], R["re_rev"]]
    assert b.missing == ()


def test_proxy_record_rows_take_the_meter_from_tsa_and_max_demand_value():
    md = Data(ARR, (Data(2, (Data(DLU, 123456), dts(2024, 5, 20, 10, 15, 0))),))
    row = (dts(2024, 6, 1, 0, 0, 0), energy(1, 2, 3, 4, 5), energy(6), energy(7), energy(8), md)
    b = rec.rows_to_batch(P.MONTHLY_METER_RCSD, [row], METERS, tsa=T("000000000002"))
    assert b.columns["meter_id"].tolist() == [12] * 9
    assert (b.columns["register"][-1], b.columns["value"][-1]) == (R["md_fwd"], 123456)
    with pytest.raises(ValueError):
        rec.rows_to_batch(P.MONTHLY_METER_RCSD, [row], METERS)


def test_indexed_oad_and_kind_of():
    row = (Data(85, T("000000000001")), dts(2024, 6, 1, 0, 15, 0), Data(DLU, 77))
    b = rec.rows_to_batch((P.OAD_TARGET_TSA, P.OAD_FREEZE_TIME, 0x00100203), [row], METERS)
    assert b.columns["register"].tolist() == [R["ae_fwd_t2"]] and b.columns["ts_utc"][0] == MIDNIGHT + 900
    assert rec.kind_of(P.DAILY_RCSD) == schema.DAILY
    assert rec.kind_of((Road(P.OAD_MONTH_FREEZE, ()),)) == schema.MONTHLY
    assert rec.kind_of(P.CURVE_METER_RCSD, P.OAD_MINUTE_FREEZE) == schema.INTERVAL
    assert rec.kind_of((P.OAD_FWD_ACTIVE,)) == schema.INSTANT


def test_result_with_dar_is_missing():
    res = A.ResultRecord(P.OAD_DAY_FREEZE, P.DAILY_METER_RCSD, None, 6)
    b = rec.result_to_batch(res, METERS, tsa=T("000000000001"))
    assert len(b) == 0 and b.missing == ((11, "DAR 6"),)


def test_tsa_index_from_routes():
    idx = rec.tsa_index([(11, "000000000001"), (12, "123456789012")])
    assert idx[bytes.fromhex("05") + bytes.fromhex("123456789012")[::-1]] == 12


def test_645_answers():
    local = dt.datetime(2024, 6, 1, 0, 0)
    b = rec.answers645_to_batch([(11, 0x05060101, [1000, 1, 2, 3, 4], local),
                                 (12, 0x05060103, [None] * 5, local),          # 上3次: no freeze there
                                 (12, 0x05060201, [55], None)], received_utc=MIDNIGHT + 60)
    assert b.columns["meter_id"].tolist() == [11] * 5
    assert b.columns["register"].tolist() == list(P.REGISTER_MAP_645[0x05060101])
    assert (b.columns["ts_utc"] == MIDNIGHT).all()
    assert b.missing == ((12, rec.R_NO_DATA), (12, rec.R_NO_TIME))
    assert rec.registers_645(0x0001FF00) == P.REGISTER_MAP_645[0x0001FF00]
    assert rec.registers_645(0x0001FF05) == P.REGISTER_MAP_645[0x0001FF01]


def test_event_rows():
    rcsd = (P.OAD_TARGET_TSA, rec.OAD_EVENT_START, rec.OAD_EVENT_END)
    rows = [(Data(85, T("000000000001")), dts(2024, 6, 1, 3, 0, 0), dts(2024, 6, 1, 3, 5, 0)),
            (Data(85, T("000000000002")), dts(2024, 6, 1, 4, 0, 0), Data(NULL, None))]
    closed, open_ = rec.event_rows_to_batch(0x30110200, rcsd, rows, METERS)
    assert closed["meter_id"].tolist() == [11] and closed["end_utc"][0] - closed["start_utc"][0] == 300
    assert open_["meter_id"].tolist() == [12] and "end_utc" not in open_
    assert (closed["event"] == schema.EVENT_CODES["power_down"]).all()
    assert rec.event_rows_to_batch(0x60120300, rcsd, rows, METERS) is None


def test_batch_goes_into_the_lake(tmp_path):
    from gridhead.storage import wal
    rows = [daily_row("000000000001", (1000, 100, 200, 300, 400))]
    b = rec.rows_to_batch(P.DAILY_RCSD, rows, METERS, source=schema.SRC_REPORT)
    with wal.IngestWriter(tmp_path, [11, 12]) as w:
        t = w.append(b.columns, rec.kind_of(P.DAILY_RCSD))
    assert (t.accepted, t.quarantined) == (8, 0)
    import duckdb
    got = duckdb.sql(f"SELECT meter_id, register, value, epoch(ts_utc)::BIGINT FROM read_parquet('{tmp_path}/readings/**/*.parquet', "
                     "hive_partitioning=true) ORDER BY register").fetchall()
    assert {t for *_, t in got} == {MIDNIGHT}
    assert [(m, r, v) for m, r, v, _ in got] == [(11, R[n], v) for n, v in
                                                 zip(("ae_fwd", "ae_fwd_t1", "ae_fwd_t2", "ae_fwd_t3", "ae_fwd_t4"),
                                                     (1000, 100, 200, 300, 400))] + \
        [(11, R["ae_rev"], 5), (11, R["re_fwd"], 7), (11, R["re_rev"], 8)]

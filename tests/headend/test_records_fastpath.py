"""headend.records.decode_record_answer (the columnar decoder, headend._records698 and its twin) against
the general path (decode_apdu + records.result_to_batch): equal batches, or None and the general path.

The oracle below is what the head-end stored before the fast path existed; every case is run under
both kernels (the ``kernels`` fixture)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridhead.headend import profile as P
from gridhead.headend import records as rec
from gridhead.headend.sim import model as sm
from gridhead.headend.sim import simulator as S
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698.axdr import Data, DateTime, DateTimeS
from gridhead.protocols.errors import GridheadError
from gridhead.storage import schema

T = A.tsa
METERS = {T("000000000001"): 11, T("000000000002"): 12, T("123456789012"): 0}
KW = dict(source=schema.SRC_REPORT, quality=schema.Q_ACTUAL, received_utc=1_780_000_000)


def general(buf: bytes, meter_of, **kw):
    """The general path's batches of the same bytes (an exception if they do not decode)."""
    apdu = A.decode_apdu(buf)
    if isinstance(apdu, A.ReportNotificationRecordList):
        found, tsa = apdu.results, None
    elif isinstance(apdu, A.ProxyGetResponseRecord):
        found, tsa = (apdu.result,), apdu.tsa
    else:
        found, tsa = (apdu.result,), None
    return apdu, [rec.result_to_batch(r, meter_of, tsa=tsa, **kw) for r in found]


def same(a: rec.Batch, b: rec.Batch) -> None:
    assert a.columns.keys() == b.columns.keys()
    for k in a.columns:
        assert a.columns[k].dtype == b.columns[k].dtype, k
        np.testing.assert_array_equal(a.columns[k], b.columns[k], err_msg=k)
    assert a.missing == b.missing
    assert a.meters == b.meters


def check(buf: bytes, meter_of=METERS, *, must_take=True, **kw):
    """The fast path equals the general path, or declines (None) and the general path decides."""
    kw = {**KW, **kw}
    fast = rec.decode_record_answer(buf, meter_of, **kw)
    if fast is None:
        assert not must_take, "the fast path declined an answer it should take"
        return None
    apdu, batches = general(buf, meter_of, **kw)
    assert fast.piid_acd == apdu.piid_acd
    assert len(fast.results) == len(batches)
    for (oad, rcsd, dar, b), want in zip(fast.results, batches):
        same(b, want)
    if isinstance(apdu, A.ReportNotificationRecordList):
        assert A.report_response(fast.notification()) == A.report_response(apdu)
    return fast


# --- rows ------------------------------------------------------------------------------------------------
def dts(*t):
    return Data(28, DateTimeS(*t))


def energy(vals):
    return Data(1, tuple(Data(6, v) if v is not None else Data(0, None) for v in vals))


def daily_row(addr, fwd=(1000, 100, 200, 300, 400), rev=(5,), r1=(7,), r2=(8,), when=(2024, 6, 1, 0, 0, 0)):
    t = dts(*when) if when is not None else Data(0, None)
    return (Data(85, T(addr)), dts(2024, 6, 1, 0, 1, 0), dts(2024, 6, 1, 0, 2, 0), dts(2024, 6, 1, 0, 0, 0),
            Data(1, (t, energy(fwd), energy(rev), energy(r1), energy(r2))))


def report(rows, rcsd=P.DAILY_RCSD, piid=7, oad=P.OAD_TASK_RECORDS) -> bytes:
    return A.ReportNotificationRecordList(piid, (A.ResultRecord(oad, rcsd, tuple(rows)),)).to_bytes()


def test_hand_rows_every_case_of_rows_to_batch(kernels):
    rows = [daily_row("000000000001"), daily_row("000000000002", rev=(None,)),
            daily_row("000000000099"),                                   # not in the archive
            daily_row("000000000001", (None,) * 5, (None,), (None,), (None,)),   # no data
            daily_row("000000000002", when=None),                        # no freeze time
            daily_row("000000000002", when=(0xFFFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)),
            daily_row("000000000002", when=(2023, 2, 29, 0, 0, 0)),     # not a date
            daily_row("123456789012", fwd=(2**32 - 1, 0, 0, 0, 0))]      # meter id 0, rollover-size value
    fast = check(report(rows))
    b = fast.results[0][3]
    assert len(b) == 8 + 7 + 8 and b.meters == (11, 12, 0)
    assert b.missing == ((-1, rec.R_UNKNOWN_TSA), (11, rec.R_NO_DATA), (12, rec.R_NO_TIME), (12, rec.R_NO_TIME),
                         (12, rec.R_NO_TIME))


def test_per_meter_rcsds_get_and_proxy(kernels):
    t0 = dts(2024, 6, 1, 0, 0, 0)
    md = Data(1, (Data(2, (Data(6, 1234), dts(2024, 5, 20, 10, 15, 0))),))
    month = (t0, energy((1, 2, 3, 4, 5)), energy((6,)), energy((7,)), energy((8,)), md)
    rr = A.ResultRecord(P.OAD_MONTH_FREEZE, P.MONTHLY_METER_RCSD, (month,))
    proxy = A.ProxyGetResponseRecord(3, T("000000000002"), rr).to_bytes()
    fast = check(proxy)
    assert fast.tsa == T("000000000002") and len(fast.results[0][3]) == 9
    curve = [(dts(2024, 6, 1, h, q * 15, 0), energy((100 + h,)), Data(5, -42 * h)) for h in range(3) for q in range(4)]
    rr = A.ResultRecord(P.OAD_MINUTE_FREEZE, P.CURVE_METER_RCSD, tuple(curve))
    check(A.ProxyGetResponseRecord(4, T("000000000001"), rr).to_bytes())
    # a GET-Response-Record of per-meter rows has no meter: the general path refuses, the fast path declines
    with pytest.raises(ValueError):
        rec.result_to_batch(rr, METERS)
    assert rec.decode_record_answer(A.GetResponseRecord(4, rr).to_bytes(), METERS, **KW) is None
    # unknown proxy meter: every row missing with meter -1
    fast = check(A.ProxyGetResponseRecord(4, T("000000000077"), rr).to_bytes())
    assert fast.results[0][3].missing == ((-1, rec.R_UNKNOWN_TSA),) * 12


def test_dar_results_and_other_services_decline_or_match(kernels):
    dar = A.ProxyGetResponseRecord(5, T("000000000001"), A.ResultRecord(P.OAD_DAY_FREEZE, P.DAILY_METER_RCSD, None, 6))
    fast = check(dar.to_bytes())
    assert fast.results[0][2] == 6 and fast.results[0][3].missing == ((11, "DAR 6"),)
    get = A.GetResponseRecord(9, A.ResultRecord(P.OAD_TASK_RECORDS, P.DAILY_RCSD, (daily_row("000000000001"),)))
    check(get.to_bytes())
    # another RCSD, an event record, a time tag: the general path's business
    other = (P.OAD_TARGET_TSA, P.OAD_FREEZE_TIME, P.OAD_FWD_ACTIVE)
    row = (Data(85, T("000000000001")), dts(2024, 6, 1, 0, 0, 0), energy((1, 2, 3, 4, 5)))
    check(report([row], rcsd=other), must_take=False)
    check(report([daily_row("000000000001")], oad=0x30110200), must_take=False)
    tagged = A.ReportNotificationRecordList(1, (A.ResultRecord(P.OAD_TASK_RECORDS, P.DAILY_RCSD, ()),),
                                            time_tag=A.TimeTag(DateTimeS(2024, 6, 1, 0, 0, 0), 0, 5))
    check(tagged.to_bytes(), must_take=False)
    assert rec.decode_record_answer(A.ReportResponseRecordList(1, (P.OAD_TASK_RECORDS,)).to_bytes(), METERS, **KW) is None


def test_simulator_reports_and_task_records(kernels):
    fleet = sm.standalone(3, 40, 5, dt.date(2026, 6, 1))
    sim = S.Simulator(fleet, seed=5, connect=("127.0.0.1", 9), start=dt.datetime(2026, 6, 5, 10))
    meter_of = rec.tsa_index(zip(fleet.meter_id, fleet.address))
    day = fleet.model.day_of(dt.date(2026, 6, 4))
    n = 0
    for k, t in enumerate(sim.terminals):
        rep = sim.answers.report(t.meters, day, k + 1, sim.now())
        fast = check(rep.to_bytes(), meter_of)
        n += len(fast.results[0][3])
        rows = sim.answers.task_rows(t.meters, [day - 1, day], P.DAILY_RCSD, sim.now())
        get = A.GetResponseRecord(k, A.ResultRecord(P.OAD_TASK_RECORDS, P.DAILY_RCSD, rows))
        check(get.to_bytes(), meter_of)
    assert n > 0


# --- hypothesis: record lists of the profile's shapes, with nulls, odd types, unknown meters, bad times ---
def _int_data():
    return st.one_of(
        st.integers(0, 2**32 - 1).map(lambda v: Data(6, v)), st.integers(-2**31, 2**31 - 1).map(lambda v: Data(5, v)),
        st.integers(0, 65535).map(lambda v: Data(18, v)), st.integers(-32768, 32767).map(lambda v: Data(16, v)),
        st.integers(0, 255).map(lambda v: Data(17, v)), st.integers(0, 255).map(lambda v: Data(22, v)),
        st.integers(-128, 127).map(lambda v: Data(15, v)), st.integers(-2**63, 2**63 - 1).map(lambda v: Data(20, v)),
        st.integers(0, 2**64 - 1).map(lambda v: Data(21, v)))


_leaf = st.one_of(_int_data(), st.just(Data(0, None)), st.booleans().map(lambda v: Data(3, v)),
                  st.binary(max_size=4).map(lambda v: Data(9, v)))
_element = st.one_of(_leaf, st.lists(_leaf, max_size=3).map(lambda v: Data(2, tuple(v))),
                     st.lists(_leaf, max_size=2).map(lambda v: Data(1, tuple(v))))
_times = st.one_of(
    st.tuples(st.integers(2020, 2030), st.integers(0, 13), st.integers(0, 32), st.integers(0, 24),
              st.integers(0, 60), st.integers(0, 60)).map(lambda t: Data(28, DateTimeS(*t))),
    st.tuples(st.integers(2020, 2030), st.integers(1, 12), st.integers(1, 28), st.integers(0, 6),
              st.integers(0, 23), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
    .map(lambda t: Data(25, DateTime(*t))),
    st.just(Data(28, DateTimeS(0xFFFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF))), st.just(Data(0, None)), _int_data())
_value = st.one_of(st.lists(_element, max_size=6).map(lambda v: Data(1, tuple(v))), _element)
_tsa = st.one_of(st.sampled_from(sorted(METERS) + [T("000000000099")]).map(lambda v: Data(85, v)),
                 st.just(Data(0, None)), _int_data())


@st.composite
def answers(draw):
    rcsd = draw(st.sampled_from(rec.FAST_RCSDS))
    nvals = len(rcsd) - 1
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        if rcsd is P.DAILY_RCSD:
            inner = draw(st.one_of(st.tuples(_times, *[_value] * 4).map(lambda v: Data(1, v)),
                                   st.lists(_value, max_size=7).map(lambda v: Data(1, tuple(v))), _leaf))
            rows.append((draw(_tsa), draw(_times), draw(_times), draw(_times), inner))
        else:
            rows.append((draw(_times),) + tuple(draw(_value) for _ in range(nvals)))
    oad = P.OAD_TASK_RECORDS if rcsd is P.DAILY_RCSD else P.OAD_DAY_FREEZE
    result = A.ResultRecord(oad, rcsd, tuple(rows))
    kind = draw(st.sampled_from(("report", "get", "proxy")))
    if kind == "report":
        return A.ReportNotificationRecordList(draw(st.integers(0, 255)), (result,) * draw(st.integers(0, 2)))
    if kind == "get":
        return A.GetResponseRecord(1, result)
    return A.ProxyGetResponseRecord(2, draw(_tsa.filter(lambda d: d.tag == 85)).value, result)


def _walk(apdu):
    res = apdu.results if hasattr(apdu, "results") else (apdu.result,)
    stack = [d for r in res for row in (r.rows or ()) for d in row]
    while stack:
        d = stack.pop()
        if d.tag in (1, 2):
            stack.extend(d.value)
        yield d


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(apdu=answers(), ts=st.sampled_from([None, 1_717_171_200]))
def test_generated_record_lists_equal_the_general_path(kernels, apdu, ts):
    buf = apdu.to_bytes()
    # taken unless a long64-unsigned beyond int64 or per-meter rows without a PROXY meter (the general
    # path raises for both)
    res = apdu.results if hasattr(apdu, "results") else (apdu.result,)
    must = not any(v.tag == 21 and v.value >= 2**63 for v in _walk(apdu)) and (
        isinstance(apdu, A.ProxyGetResponseRecord) or all(r.rcsd is P.DAILY_RCSD for r in res))
    check(buf, must_take=must, ts_utc=ts)
    check(buf, lambda k: METERS.get(k), must_take=must, ts_utc=ts)     # a callable map


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(apdu=answers(), cut=st.integers(0, 10_000), flips=st.lists(st.tuples(st.integers(0, 10_000),
                                                                           st.integers(0, 255)), max_size=3))
def test_mutated_and_truncated_bytes_error_or_equal(kernels, apdu, cut, flips):
    buf = bytearray(apdu.to_bytes())
    for at, v in flips:
        buf[at % len(buf)] = v
    buf = bytes(buf[:max(2, len(buf) - cut % (len(buf) + 1))])
    fast = rec.decode_record_answer(buf, METERS, **KW)
    if fast is None:
        return                                   # declined: the general path decides (or raises)
    try:
        general(buf, METERS, **KW)
    except GridheadError:
        pytest.fail("the fast path took bytes the general decoder refuses")
    check(buf)


def test_session_report_decoder_hands_columns_and_acknowledges_alike(kernels):
    from gridhead.protocols.dlt698 import session as CS
    from gridhead.protocols.dlt698.frame import Frame, ServerAddress
    now = dt.datetime(2024, 6, 1, 0, 5)
    frame = Frame(ServerAddress("000000000042"), 0x10, 0x83, report([daily_row("000000000001")], piid=0x47)).to_bytes()

    def decoder(apdu):
        fast = rec.decode_record_answer(apdu, METERS, **KW)
        return None if fast is None else (fast.notification(), fast)
    acks = []
    for kw in ({}, {"report_decoder": decoder}):
        s = CS.ClientSession(**kw)
        s.receive_data(frame, now)
        ev = s.next_event()
        assert isinstance(ev, CS.Report)
        assert (ev.decoded is None) == (not kw)
        acks.append(s.send(CS.AcknowledgeReport(ev), now))
    assert acks[0] == acks[1]
    assert len(ev.decoded.results[0][3]) == 8

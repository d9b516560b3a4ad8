"""Interop with an independent DL/T 698.45 implementation, the C++ ``dlt698`` package (test-only peer).

For every APDU type both implement: our bytes → the peer decodes them and re-encodes the same bytes;
the peer's bytes → we decode them to the same structure and re-encode the same bytes; plus
hypothesis-generated APDUs (Data from tests/strategies698.py) through both.  Runs under the compiled
kernels and their pure twins.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

peer = pytest.importorskip("dlt698._native")

from gridhead.protocols.dlt698 import apdu as A  # noqa: E402
from gridhead.protocols.dlt698.axdr import Data  # noqa: E402
from tests.strategies698 import data, from_peer, oads, to_peer  # noqa: E402
from tests.protocols.test_dlt698_apdu import SAMPLES  # noqa: E402

SECURITY_TAGS = (0x10, 0x90)      # the peer has decode_security / encode_security for these
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def peer_decode(raw: bytes):
    return (peer.decode_security if raw[0] in SECURITY_TAGS else peer.decode_apdu)(raw)


def peer_encode(obj, tag: int) -> bytes:
    return (peer.encode_security if tag in SECURITY_TAGS else peer.encode_apdu)(obj)


def p_oad(o: int):
    return peer.Oad(oi=o >> 16, attribute=(o >> 8) & 0xFF, index=o & 0xFF)


def f_oad(p) -> int:
    return p.oi << 16 | p.attribute << 8 | p.index


@pytest.mark.parametrize("apdu", SAMPLES, ids=lambda s: s.NAME)
def test_peer_decodes_ours_and_reencodes_the_same_bytes(kernels, apdu):
    raw = apdu.to_bytes()
    theirs = peer_decode(raw)
    assert peer_encode(theirs, apdu.TAG) == raw
    assert A.decode_apdu(peer_encode(theirs, apdu.TAG)) == apdu


def _dt(v):
    d = peer.DateTime()
    d.value = list(struct.pack(">HBBBBBBH", *v))      # the peer holds date_time as its 10 wire bytes
    return d


def peer_built():
    """APDUs built with the peer's own classes: (peer object, what we must decode it to)."""
    dt = (2025, 4, 11, 5, 9, 12, 40, 7)
    e4 = Data(1, tuple(Data(6, v) for v in (5, 1, 1, 1, 2)))
    return [
        (peer.LinkRequest(piid_acd=3, type=peer.LinkRequestType.heartbeat, heartbeat_seconds=300,
                          requested_at=_dt(dt)), A.LinkRequest(3, A.LINK_HEARTBEAT, 300, dt)),
        (peer.LinkResponse(piid=3, result=0x80, requested_at=_dt(dt), received_at=_dt(dt), responded_at=_dt(dt)),
         A.LinkResponse(3, 0x80, dt, dt, dt)),
        (peer.GetRequest(piid=1, attributes=[p_oad(0x00100200)]), A.get("00100200")),
        (peer.GetRequest(piid=2, list=True, attributes=[p_oad(0x00100200), p_oad(0x20000200)]),
         A.get_list(["00100200", "20000200"], piid=2)),
        (peer.GetResponse(piid_acd=1, attributes=[peer.AttributeResult(attribute=p_oad(0x00100200),
                                                                       result=to_peer(e4))]),
         A.GetResponseNormal(1, A.ResultNormal(0x00100200, e4))),
        (peer.GetResponse(piid_acd=1, attributes=[peer.AttributeResult(attribute=p_oad(0x00100200), result=6)]),
         A.GetResponseNormal(1, A.ResultNormal(0x00100200, None, 6))),
        (peer.SetRequest(piid=4, attributes=[peer.SetAttribute(attribute=p_oad(0x41000200),
                                                               value=to_peer(Data(17, 15)))]),
         A.SetRequestNormal(4, 0x41000200, Data(17, 15))),
        (peer.ActionRequest(piid=5, methods=[peer.ActionMethod(
            method=peer.Omd(oi=0x8000, method=130, mode=0), parameter=to_peer(Data(0, None)))]),
         A.action(A.omd(0x8000, 130), Data(0, None), piid=5)),
        (peer.ReportResponse(piid=9, choice=2, attributes=[p_oad(0x60120300)]),
         A.ReportResponseRecordList(9, (0x60120300,))),
        (peer.ReportResponse(piid=9, choice=3), A.ReportResponseTransData(9)),
        (peer.ReleaseRequest(piid=6), A.ReleaseRequest(6)),
        (peer.ErrorResponse(piid=7, server=True, type=2), A.ErrorResponse(7, 2)),
        (peer.ProxyRequest(piid=10, timeout_seconds=120, payload=[peer.ProxyGetTarget(
            server=peer.Tsa(value=A.tsa("201601200001")), timeout_seconds=60, items=[p_oad(0x00100200)])]),
         A.proxy_get_list({A.tsa("201601200001"): [0x00100200]}, timeout_s=120, piid=10, per_meter_timeout_s=60)),
    ]


@pytest.mark.parametrize("pair", peer_built(), ids=lambda p: type(p[0]).__name__)
def test_we_decode_what_the_peer_encodes(kernels, pair):
    obj, expected = pair
    raw = peer_encode(obj, expected.TAG)
    ours = A.decode_apdu(raw)
    assert ours == expected
    assert ours.to_bytes() == raw


def _results(rs):
    return tuple(A.ResultNormal(o, d) for o, d in rs)


@HYP
@given(st.lists(st.tuples(oads(), data(max_depth=2, peer=True)), min_size=1, max_size=4),
       st.integers(0, 255), st.booleans())
def test_hypothesis_get_and_report_lists_through_both(kernels, items, piid, as_report):
    cls = A.ReportNotificationList if as_report else A.GetResponseNormalList
    ours = cls(piid, _results(items))
    raw = ours.to_bytes()
    theirs = peer.decode_apdu(raw)
    got = theirs.payload if as_report else theirs.attributes
    assert [(f_oad(r.attribute), from_peer(r.result)) for r in got] == list(items)
    assert peer.encode_apdu(theirs) == raw
    assert A.decode_apdu(raw) == ours


@HYP
@given(st.lists(st.tuples(oads(), data(max_depth=2, peer=True)), min_size=1, max_size=4), st.integers(0, 63))
def test_hypothesis_peer_encoded_lists_decode_here(kernels, items, piid):
    theirs = peer.GetResponse(piid_acd=piid, list=True, attributes=[
        peer.AttributeResult(attribute=p_oad(o), result=to_peer(d)) for o, d in items])
    raw = peer.encode_apdu(theirs)
    ours = A.decode_apdu(raw)
    assert ours == A.GetResponseNormalList(piid, _results(items))
    assert ours.to_bytes() == raw


@HYP
@given(st.lists(st.lists(data(max_depth=1, peer=True), min_size=3, max_size=3), max_size=5),
       st.lists(oads(), min_size=3, max_size=3, unique=True))
def test_hypothesis_record_reports_through_both(kernels, rows, cols):
    ours = A.ReportNotificationRecordList(2, (A.ResultRecord(0x60120300, tuple(cols), tuple(map(tuple, rows))),))
    raw = ours.to_bytes()
    theirs = peer.decode_apdu(raw)
    rec = theirs.payload[0]
    assert [f_oad(c) for c in rec.columns] == cols
    assert [[from_peer(x) for x in row] for row in rec.result] == rows
    assert peer.encode_apdu(theirs) == raw
    assert A.decode_apdu(raw) == ours

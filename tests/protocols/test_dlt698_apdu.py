"""DL/T 698.45 APDUs: public vectors, every service round trip, DAR errors, truncation and fuzz.

Each test runs under the compiled A-XDR walk and its pure twin (the ``kernels`` fixture).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridhead.protocols import _framing698_py as F
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698 import dar
from gridhead.protocols.errors import DeviceError, LocalProtocolError, ProtocolError, RemoteProtocolError
from tests.conftest import load_vectors

NEGATIVE = "NEGATIVE CASE"
DT = (2025, 4, 11, 5, 9, 12, 40, 0)
DTS = (2025, 4, 11, 0, 0, 0)
TT = A.TimeTag(DTS, 1, 5)
TSA1 = A.tsa("000000000001")
E4 = (1, tuple((6, v) for v in (123456, 10000, 20000, 30000, 63456)))
FOLLOW = A.FollowReport(1, (A.ResultNormal(0x20150200, (4, (32, b"\x00\x00\x00\x10"))),))
ROWS_RCSD = (0x202A0200, 0x60420200, (0x50040200, (0x00100200, 0x00200200)))
ROW = ((85, TSA1), (28, DTS), (1, (E4, E4)))


def apdu_of_frame(raw: bytes) -> bytes:
    """The APDU inside a checked DL/T 698.45 frame (clause 5.3), or ChecksumError-like ValueError."""
    h = F.header_length(raw[4])
    if F.crc16(raw, 1, h - 2) != int.from_bytes(raw[h - 2:h], "little"):
        raise ValueError("HCS")
    if F.crc16(raw, 1, len(raw) - 3) != int.from_bytes(raw[-3:-1], "little"):
        raise ValueError("FCS")
    return raw[h:-3]


def vector_apdus():
    out = []
    for v in load_vectors("DL/T 698.45"):
        raw = bytes.fromhex(v["hex"])
        if NEGATIVE in v["meaning"]:
            continue
        out.append(pytest.param(raw if v["protocol"].endswith("APDU-only") else apdu_of_frame(raw),
                                id=v["meaning"][:50]))
    return out


# one instance of every APDU class, with the optional trailers exercised
SAMPLES = [
    A.LinkRequest(0, A.LINK_LOGIN, 180, DT),
    A.LinkRequest(0x10, A.LINK_HEARTBEAT, 300, DT),
    A.LinkResponse(0, 0x80, DT, DT, DT),
    A.ConnectRequest(1),
    A.ConnectRequest(2, mechanism=1, mechanism_data=("33333333",), time_tag=TT),
    A.ConnectRequest(3, mechanism=2, mechanism_data=(b"\x01" * 32, b"\x02" * 4)),
    A.ConnectResponse(1, A.FactoryVersion(b"GRID", b"0001", b"250411", b"0001", b"250411", bytes(8)),
                      0x16, b"\xff" * 8, b"\xff" * 16, 512, 512, 1, 512, 7200, 0, (b"\x11" * 16, b"\x22" * 4)),
    A.ReleaseRequest(4, TT),
    A.ReleaseResponse(4),
    A.ReleaseNotification(0, DTS, DTS, FOLLOW),
    A.GetRequestNormal(1, 0x00100200),
    A.GetRequestNormal(0x81, 0x00100200, TT),
    A.GetRequestNormalList(2, (0x00100200, 0x20000200, 0x40000200)),
    A.GetRequestRecord(3, A.GetRecord(0x50040200, (9, 1), (0x20210200, 0x00100200))),
    A.GetRequestRecordList(4, (A.GetRecord(0x50040200, (1, (0x20210200, (28, DTS))), ()),
                               A.GetRecord(0x60120300, (6, (DTS, DTS, (3, 1), (1, None))), ROWS_RCSD))),
    A.GetRequestNext(5, 3),
    A.GetRequestMD5(6, 0x60120200),
    A.GetResponseNormal(1, A.ResultNormal(0x00100200, E4)),
    A.GetResponseNormal(0x41, A.ResultNormal(0x00100200, None, 6), FOLLOW, TT),
    A.GetResponseNormalList(2, (A.ResultNormal(0x20000200, (1, ((18, 2201), (18, 2199), (18, 0)))),
                                A.ResultNormal(0x40000200, (28, DTS)))),
    A.GetResponseRecord(3, A.ResultRecord(0x60120300, ROWS_RCSD, (ROW, ROW))),
    A.GetResponseRecord(3, A.ResultRecord(0x50040200, (0x20210200,), None, 9)),
    A.GetResponseRecordList(4, (A.ResultRecord(0x50040200, (0x20210200, 0x00100200), (((28, DTS), E4),)),)),
    A.GetResponseNext(5, False, 1, 1, (A.ResultNormal(0x00100200, E4),)),
    A.GetResponseNext(5, True, 2, 2, (A.ResultRecord(0x50040200, (0x20210200,), (((28, DTS),),)),)),
    A.GetResponseNext(5, True, 3, 0, 10),
    A.GetResponseMD5(6, 0x60120200, b"\x00" * 16),
    A.GetResponseMD5(6, 0x60120200, None, 4),
    A.SetRequestNormal(7, 0x40000200, (28, DTS)),
    A.SetRequestNormalList(8, (A.SetItem(0x40000200, (28, DTS)), A.SetItem(0x41000200, (17, 15)))),
    A.SetThenGetRequestNormalList(9, (A.SetThenGetItem(0x40000200, (28, DTS), 0x40000200, 3),)),
    A.SetResponseNormal(7, 0x40000200, 0),
    A.SetResponseNormalList(8, (A.SetResult(0x40000200, 0), A.SetResult(0x41000200, 3))),
    A.SetThenGetResponseNormalList(9, (A.SetThenGetResult(0x40000200, 0, 0x40000200, (28, DTS)),
                                       A.SetThenGetResult(0x40000200, 3, 0x40000200, None, 3))),
    A.ActionRequestNormal(10, 0x80008100, (1, ((2, ((81, 0xF2050201), (17, 0), (18, 0), (3, True))),))),
    A.ActionRequestNormalList(11, (A.ActionItem(0x80008200, (0, None)), A.ActionItem(0x43000300, (0, None)))),
    A.ActionThenGetRequestNormalList(12, (A.ActionThenGetItem(0x00100100, (0, None), 0x00100200, 1),)),
    A.ActionResponseNormal(10, 0x80008100, 0),
    A.ActionResponseNormal(10, 0x80008100, 0, (0, None)),
    A.ActionResponseNormalList(11, (A.ActionResult(0x80008200, 0), A.ActionResult(0x43000300, 15, (22, 1)))),
    A.ActionThenGetResponseNormalList(12, (A.ActionThenGetResult(0x00100100, 0, A.ABSENT, 0x00100200, E4),)),
    A.ReportNotificationList(13, (A.ResultNormal(0x30110200, (1, ())),)),
    A.ReportNotificationRecordList(14, (A.ResultRecord(0x60120300, ROWS_RCSD, (ROW,) * 3),)),
    A.ReportNotificationTransData(15, 0xF2010201, (b"\x68\x16", b"\xfe\xfe")),
    A.ReportResponseList(13, (0x30110200,)),
    A.ReportResponseRecordList(14, (0x60120300,), TT),
    A.ReportResponseTransData(15),
    A.ProxyGetRequestList(16, 120, (A.ProxyTarget(TSA1, 60, (0x00100200, 0x20000200)),)),
    A.ProxyGetRequestRecord(17, 120, TSA1, A.GetRecord(0x50040200, (9, 1), (0x20210200, 0x00100200))),
    A.ProxySetRequestList(18, 60, (A.ProxyTarget(TSA1, 30, (A.SetItem(0x40000200, (28, DTS)),)),)),
    A.ProxySetThenGetRequestList(19, 60, (A.ProxyTarget(TSA1, 30, (A.SetThenGetItem(
        0x40000200, (28, DTS), 0x40000200, 2),)),)),
    A.ProxyActionRequestList(20, 60, (A.ProxyTarget(TSA1, 30, (A.ActionItem(0x80008200, (0, None)),)),)),
    A.ProxyActionThenGetRequestList(21, 60, (A.ProxyTarget(TSA1, 30, (A.ActionThenGetItem(
        0x80008200, (0, None), 0x80000300, 1),)),)),
    A.ProxyTransCommandRequest(22, 0xF2010201, (6, 2, 8, 1, 0), 10, 100, b"\x68\x17\x00\x43"),
    A.ProxyGetResponseList(16, (A.ProxyResult(TSA1, (A.ResultNormal(0x00100200, E4),
                                                     A.ResultNormal(0x20000200, None, 33))),)),
    A.ProxyGetResponseRecord(17, TSA1, A.ResultRecord(0x50040200, (0x20210200, 0x00100200), (((28, DTS), E4),))),
    A.ProxySetResponseList(18, (A.ProxyResult(TSA1, (A.SetResult(0x40000200, 0),)),)),
    A.ProxySetThenGetResponseList(19, (A.ProxyResult(TSA1, (A.SetThenGetResult(0x40000200, 0, 0x40000200,
                                                                               (28, DTS)),)),)),
    A.ProxyActionResponseList(20, (A.ProxyResult(TSA1, (A.ActionResult(0x80008200, 0),)),)),
    A.ProxyActionThenGetResponseList(21, (A.ProxyResult(TSA1, (A.ActionThenGetResult(
        0x80008200, 0, A.ABSENT, 0x80000300, (4, (8, b"\x80"))),)),)),
    A.ProxyTransCommandResponse(22, 0xF2010201, b"\x68\x16"),
    A.ProxyTransCommandResponse(22, 0xF2010201, None, 33),
    A.ClientErrorResponse(23, 2),
    A.ErrorResponse(23, 1),
    A.SecurityRequest(0, bytes.fromhex("0501010010020000"), 1, (b"\x5a" * 16,)),
    A.SecurityRequest(1, b"\x99" * 16, 0, ((0x81000000, b"\x00\x10"), b"\x01\x02\x03\x04")),
    A.SecurityRequest(1, b"\x99" * 16, 2, (b"\x5a" * 16, b"\x01\x02\x03\x04")),
    A.SecurityRequest(1, b"\x99" * 16, 3, ((0x81000000, b"\x00\x10"),)),
    A.SecurityResponse(0, bytes.fromhex("850101001002000101050600"), b"\x01\x02\x03\x04"),
    A.SecurityResponse(2, 22),
]


@pytest.mark.parametrize("raw", vector_apdus())
def test_public_vectors_decode_and_reencode(kernels, raw):
    apdu = A.decode_apdu(raw)
    assert apdu.to_bytes() == raw
    assert A.REGISTRY[(apdu.TAG, apdu.CHOICE)] is type(apdu)
    assert apdu.to_json()["apdu"] == apdu.NAME


def test_negative_vectors_fail_their_checksums():
    bad = [v for v in load_vectors("DL/T 698.45") if NEGATIVE in v["meaning"]]
    assert bad
    for v in bad:
        with pytest.raises(ValueError):
            apdu_of_frame(bytes.fromhex(v["hex"]))


def test_every_service_has_a_sample():
    assert {type(s) for s in SAMPLES} == set(A.REGISTRY.values())


@pytest.mark.parametrize("apdu", SAMPLES, ids=lambda s: s.NAME)
def test_round_trip(kernels, apdu):
    raw = apdu.to_bytes()
    back = A.decode_apdu(raw)
    assert back == apdu
    assert back.to_bytes() == raw
    assert type(apdu).from_bytes(raw) == apdu
    assert back.to_json()["apdu"] == apdu.NAME


@pytest.mark.parametrize("apdu", SAMPLES, ids=lambda s: s.NAME)
def test_every_truncation_is_a_remote_protocol_error(kernels, apdu):
    raw = apdu.to_bytes()
    for n in range(len(raw)):
        with pytest.raises(RemoteProtocolError):
            A.decode_apdu(raw[:n])
    with pytest.raises(RemoteProtocolError, match="left over"):
        A.decode_apdu(raw + b"\x00")


def test_link_response_fields():
    r = A.decode_apdu(bytes.fromhex("81008007E00513040805000089" "07E005130408050102 5F07E0051304080502 02DA"
                                    .replace(" ", "")))
    assert r.clock_trusted and r.outcome == 0
    assert r.requested_at == (2016, 5, 19, 4, 8, 5, 0, 0x89)
    req = A.LinkRequest(0x40, A.LINK_LOGIN, 180, DT)
    resp = A.link_response(req, DT, DT, clock_trusted=False, outcome=1)
    assert resp.piid == 0 and resp.result == 1 and not resp.clock_trusted


@pytest.mark.parametrize("apdu", [A.get("00100200"), A.link_response(
    A.LinkRequest(1, 0, 300, (2024, 6, 1, 6, 0, 0, 0, 0)), (2024, 6, 1, 6, 0, 0, 0, 0), (2024, 6, 1, 6, 0, 0, 0, 0))])
def test_report_response_refuses_what_is_not_a_report(apdu):
    # a GET-Request has no PIID-ACD: this raised AttributeError before naming the APDU
    with pytest.raises(LocalProtocolError, match="is not a REPORT-Notification"):
        A.report_response(apdu)


def test_constructors():
    assert A.get("00100200").to_bytes() == bytes.fromhex("0501010010020000")
    assert A.get(A.oad(0x4001)).oad == 0x40010200
    rec = A.get_record("50040200", (9, 1), (0x20210200, 0x00100200))
    assert rec.to_bytes() == bytes.fromhex("0503015004020009010200202102000000100200" "00")
    n = A.decode_apdu(SAMPLES[[s.NAME for s in SAMPLES].index("REPORT-Notification-RecordList")].to_bytes())
    ack = A.report_response(n)
    assert isinstance(ack, A.ReportResponseRecordList) and ack.oads == (0x60120300,) and ack.piid == 14
    p = A.proxy_get_list({A.tsa("201601200001"): ["00100200"]}, timeout_s=120)
    # TSA octets are laid out like the frame's SA: lowest byte first after the AF byte (clause 5.3)
    assert p.targets[0].tsa == bytes.fromhex("05010020011620")
    assert p.to_bytes()[:6] == bytes.fromhex("090101007801")
    assert A.action(A.omd(0x8000, 129), (0, None)).to_bytes() == bytes.fromhex("0701018000810000" "00")
    with pytest.raises(ProtocolError):
        A.parse_oad("0010020")
    with pytest.raises(ProtocolError):
        A.GetRequestNormal(1, 1 << 32).to_bytes()
    with pytest.raises(ProtocolError):
        A.SetRequestNormal(1, 0x40000200, (18, 70000)).to_bytes()


def test_security_wrapper_exposes_plaintext_and_uses_the_backend():
    req = SAMPLES[[s.NAME for s in SAMPLES].index("SECURITY-Request")]
    assert req.plaintext and req.inner() == A.get("00100200")
    assert req.verification == (1, (b"\x5a" * 16,))

    class XorBackend:
        """A stand-in security module: enough to show the wrapper hands ciphertext over untouched."""

        def __init__(self):
            self.seen = None

        def decrypt(self, ciphertext, verification):
            self.seen = verification
            return bytes(b ^ 0x5A for b in ciphertext)

        def encrypt(self, plaintext):
            return bytes(b ^ 0x5A for b in plaintext), (1, (b"\x00" * 16,))

    be = XorBackend()
    secret, ver = be.encrypt(A.get("40000200").to_bytes())
    wrapped = A.SecurityRequest(1, secret, *ver)
    back = A.decode_apdu(wrapped.to_bytes())
    assert back.ciphertext == secret and back.inner(be) == A.get("40000200") and be.seen == ver
    with pytest.raises(ProtocolError, match="security backend"):
        back.inner()
    with pytest.raises(dar.EsamVerificationFailed):
        A.SecurityResponse(2, 22).inner()


def test_dar_errors_are_named_device_errors():
    assert dar.DAR_ERRORS[4] is dar.ObjectUndefined and issubclass(dar.ObjectUndefined, DeviceError)
    assert len(dar.DAR_ERRORS) == len(dar.TABLE) - 1 and all(c.code == k for k, c in dar.DAR_ERRORS.items())
    e = dar.error_for(6, "OAD 00100200")
    assert isinstance(e, dar.ObjectUnavailable) and "OAD 00100200" in str(e) and "对象不存在" in str(e)
    assert isinstance(dar.error_for(77), dar.ReservedDar) and dar.error_for(77).code == 77
    dar.check(0)
    r = A.ResultNormal(0x00100200, None, 3)
    with pytest.raises(dar.ReadWriteDenied):
        r.value()
    assert A.ResultNormal(0x00100200, E4).value() == E4


def test_unknown_services_are_rejected_clearly():
    for raw, msg in [(b"", "empty"), (b"\x05\x09\x01", "choice 9"), (b"\x42\x00", "tag 0x42"),
                     (b"\x05", "choice byte"), (bytes.fromhex("85010100100200020000"), "choice 2"),
                     (bytes.fromhex("8501010010020001FF0000"), "unknown type tag 255 at byte 8")]:
        with pytest.raises(RemoteProtocolError, match=msg):
            A.decode_apdu(raw)


def test_non_minimal_lengths_are_refused_so_reencoding_stays_exact():
    with pytest.raises(RemoteProtocolError, match="non-minimal"):
        A.decode_apdu(bytes.fromhex("0502018101001002000000"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=64))
def test_fuzz_arbitrary_bytes(kernels, raw):
    try:
        apdu = A.decode_apdu(raw)
    except ProtocolError:
        return
    assert apdu.to_bytes() == raw


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(SAMPLES), st.data())
def test_fuzz_mutated_apdus(kernels, apdu, data):
    raw = bytearray(apdu.to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        back = A.decode_apdu(bytes(raw))
    except ProtocolError:
        return
    assert back.to_bytes() == bytes(raw)

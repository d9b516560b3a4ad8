"""The one-pass walk of the hot DL/T 698.45 APDUs (protocols._apdu698 and its twin) equals the general
walk of protocols.dlt698.apdu: same objects (type, equality, repr, hash), exact re-encoding, and
whatever it does not decode goes to the general walk, which gives the same error as before."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.bench_dlt698 import frames as bench_frames
from gridhead.protocols import accel
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698 import frame as F
from gridhead.protocols.dlt698.axdr import Tag
from gridhead.protocols.errors import GridheadError, ProtocolError
from tests import strategies698 as S
from tests.conftest import load_vectors
from tests.protocols.test_dlt698_apdu import SAMPLES, vector_apdus

HOT = {(0x01, None), (0x85, 1), (0x85, 2), (0x85, 3), (0x85, 4), (0x88, 1), (0x88, 2), (0x89, 1), (0x89, 2)}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _key(buf: bytes):
    if not buf:
        return None
    return (buf[0], None) if buf[0] == 0x01 else (buf[0], buf[1] if len(buf) > 1 else None)


def general(buf: bytes):
    """(apdu, None) or (None, the error) from the registry's codecs alone."""
    try:
        return A._decode_general(buf), None
    except GridheadError as exc:
        return None, exc


def same(a, b) -> bool:
    """Equal objects; a NaN float is never equal to itself (nor hashes alike), so values holding one
    must agree on type, repr and encoding instead."""
    if "nan" in repr(a):
        return type(a) is type(b) and repr(a) == repr(b) and a.to_bytes() == b.to_bytes()
    return type(a) is type(b) and a == b and repr(a) == repr(b) and hash(a) == hash(b)


def check(buf: bytes, *, hot_expected: bool = False):
    """The fast path gives the general walk's object, or None exactly when it is not a hot APDU that
    decodes; decode_apdu gives the same object or the same error as the general walk."""
    fast = A._fast.decode(buf, A)
    ref, err = general(buf)
    if hot_expected:
        assert _key(buf) in HOT and ref is not None, err
    if ref is not None and _key(buf) in HOT:
        assert fast is not None, f"{ref.NAME} left to the general walk"
    if fast is not None:
        assert err is None, f"fast path accepted what the general walk refuses: {err}"
        assert same(fast, ref)
        assert fast.to_bytes() == buf
    try:
        got = A.decode_apdu(buf)
    except GridheadError as exc:
        assert err is not None and type(exc) is type(err) and str(exc) == str(err)
    else:
        assert err is None and same(got, ref)
    return fast


def test_the_fast_path_follows_the_kernel_mode(kernels):
    assert A._fast.__name__ == ("gridhead.protocols._apdu698" if kernels == "compiled" else "gridhead.protocols._apdu698_py")
    if kernels == "compiled":
        assert accel.is_compiled("gridhead.protocols._apdu698")


@pytest.mark.parametrize("raw", vector_apdus())
def test_public_vectors(kernels, raw):
    check(raw)


def test_vectors_include_hot_services():
    keys = {_key(p.values[0]) for p in vector_apdus()}
    assert keys & HOT, "no hot APDU among the public vectors"
    assert load_vectors("DL/T 698.45")


@pytest.mark.parametrize("name,raw", bench_frames(), ids=[n for n, _ in bench_frames()])
def test_benchmark_frames(kernels, name, raw):
    apdu = check(F.decode_frame(raw).apdu, hot_expected=True)
    assert apdu.NAME.startswith(name.split(" ")[0])


@pytest.mark.parametrize("apdu", SAMPLES, ids=lambda s: s.NAME)
def test_every_sample(kernels, apdu):
    check(apdu.to_bytes(), hot_expected=(apdu.TAG, apdu.CHOICE) in HOT)


@pytest.mark.parametrize("apdu", SAMPLES, ids=lambda s: s.NAME)
def test_every_truncation_gives_the_general_error(kernels, apdu):
    raw = apdu.to_bytes()
    for n in range(len(raw)):
        assert check(raw[:n]) is None
    assert check(raw + b"\x00") is None


# --- hypothesis: hot APDUs of arbitrary content --------------------------------------------------
u8 = st.integers(0, 0xFF)
dar = st.integers(0, 0xFF)
data = S.data(max_depth=2)
rcsd = S.bare(Tag.RCSD)
tsa = S.bare(Tag.TSA)

result_normal = st.one_of(st.builds(A.ResultNormal, S.oads(), data),
                          st.builds(lambda o, d: A.ResultNormal(o, None, d), S.oads(), dar))


@st.composite
def result_record(draw):
    cols = draw(rcsd)
    if draw(st.booleans()):
        return A.ResultRecord(draw(S.oads()), cols, None, draw(dar))
    # an empty RCSD ("all columns") with rows of no cells is not a frame anyone sends, and the A-XDR
    # bound (every row takes a byte) refuses it: rows only when there are columns
    rows = draw(st.lists(st.tuples(*[data] * len(cols)), max_size=3 if cols else 0))
    return A.ResultRecord(draw(S.oads()), cols, tuple(rows))


def tup(s, n=4):
    return st.lists(s, max_size=n).map(tuple)


follow = st.one_of(st.none(), st.builds(A.FollowReport, st.just(1), tup(result_normal, 2)),
                   st.builds(A.FollowReport, st.just(2), tup(result_record(), 2)))
time_tag = st.one_of(st.none(), st.builds(A.TimeTag, S.bare(Tag.DATE_TIME_S), st.integers(0, 5),
                                          st.integers(0, 0xFFFF)))


def server(cls, body):
    return st.builds(cls, u8, body, follow, time_tag)


hot_apdus = st.one_of(
    st.builds(A.LinkRequest, u8, st.integers(0, 2), st.integers(0, 0xFFFF), S.bare(Tag.DATE_TIME)),
    server(A.GetResponseNormal, result_normal),
    server(A.GetResponseNormalList, tup(result_normal)),
    server(A.GetResponseRecord, result_record()),
    server(A.GetResponseRecordList, tup(result_record(), 3)),
    server(A.ReportNotificationList, tup(result_normal)),
    server(A.ReportNotificationRecordList, tup(result_record(), 3)),
    server(A.ProxyGetResponseList, tup(st.builds(A.ProxyResult, tsa, tup(result_normal, 3)), 3)),
    st.builds(A.ProxyGetResponseRecord, u8, tsa, result_record(), follow, time_tag),
)


@FUZZ
@given(hot_apdus)
def test_hypothesis_hot_apdus(kernels, apdu):
    raw = apdu.to_bytes()
    assert same(check(raw, hot_expected=True), apdu)


@FUZZ
@given(hot_apdus, st.data())
def test_mutated_hot_apdus(kernels, apdu, draw):
    raw = bytearray(apdu.to_bytes())
    for _ in range(draw.draw(st.integers(1, 4))):
        raw[draw.draw(st.integers(0, len(raw) - 1))] = draw.draw(u8)
    check(bytes(raw))


@FUZZ
@given(st.sampled_from(sorted(HOT, key=str)), st.binary(max_size=80))
def test_arbitrary_bytes_after_a_hot_header(kernels, key, tail):
    raw = bytes(k for k in key if k is not None) + tail
    try:
        A.decode_apdu(raw)
    except ProtocolError:
        pass
    check(raw)

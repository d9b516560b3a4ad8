"""``decode_apdu(raw, lazy=True)``: the whole APDU is validated at decode time (same error, same
message as the eager decode), its lists and record rows are built when read, and once read they are
the eager decode's objects — equality, hash, repr, to_bytes and to_json included.  Under the pure
twin lazy=True decodes eagerly; the same checks hold."""

from __future__ import annotations

import gc
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.bench_dlt698 import frames as bench_frames
from gridhead.protocols._axdr_py import MAX_DEPTH
from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698 import frame as F
from gridhead.protocols.errors import GridheadError
from tests.conftest import load_vectors
from tests.protocols.test_dlt698_apdu import SAMPLES
from tests.protocols.test_dlt698_fastpath import FUZZ, HOT, _key, hot_apdus, same, u8


def _lazy_type():
    return getattr(A._fast, "LazySeq", None)


def _outcome(fn):
    try:
        return fn(), None
    except GridheadError as exc:
        return None, exc


def _read_items(got, ref):
    """Read each lazy sequence item by item (index, negative index, slice) before anything decodes
    it whole, and compare with the eager objects."""
    lazy = _lazy_type()
    pairs = []
    for name in ("results", "result"):
        g, r = getattr(got, name, None), getattr(ref, name, None)
        pairs.append((g, r))                 # first: a lazy list read item by item
        if type(r) is tuple:
            pairs += [(g[i], r[i]) for i in range(len(r))]
    for g, r in pairs:
        for seq_g, seq_r in ((g, r), (getattr(g, "rows", None), getattr(r, "rows", None)),
                             (getattr(g, "results", None), getattr(r, "results", None))):
            if lazy is None or not isinstance(seq_g, lazy):
                continue
            assert len(seq_g) == len(seq_r)
            for i in range(len(seq_r)):
                assert same_value(seq_g[i], seq_r[i]) and same_value(seq_g[i - len(seq_r)], seq_r[i])
            assert repr(seq_g[1:]) == repr(seq_r[1:])
            with pytest.raises(IndexError):
                seq_g[len(seq_r)]


def same_value(a, b) -> bool:
    return repr(a) == repr(b) and ("nan" in repr(a) or a == b)


def check(buf: bytes):
    """Lazy gives the eager object or raises the eager error, at decode time; the compiled lazy walk
    accepts exactly what the eager decoders accept."""
    ref, err = _outcome(lambda: A.decode_apdu(buf))
    got, lerr = _outcome(lambda: A.decode_apdu(buf, lazy=True))
    if err is not None:
        assert lerr is not None, f"lazy accepted what eager refuses: {err}"
        assert type(lerr) is type(err) and str(lerr) == str(err)
        assert A._fast.decode_lazy(buf, A) is None
        return None
    assert lerr is None, f"lazy refused what eager accepts: {lerr}"
    direct = A._fast.decode_lazy(buf, A)
    if _key(buf) in HOT:
        assert direct is not None, "a hot APDU left to the eager path"
    _read_items(got, ref)
    assert same(got, ref)
    assert got.to_bytes() == buf
    assert json.dumps(got.to_json(), sort_keys=True) == json.dumps(ref.to_json(), sort_keys=True)
    return got


def _all_vector_apdus():
    out = []
    for v in load_vectors("DL/T 698.45"):
        raw = bytes.fromhex(v["hex"])
        if not v["protocol"].endswith("APDU-only"):
            try:
                raw = F.decode_frame(raw).apdu
            except GridheadError:
                continue                 # a bad frame: the framer's business, not the APDU's
        out.append(pytest.param(raw, id=v["meaning"][:50]))
    return out


@pytest.mark.parametrize("raw", _all_vector_apdus())
def test_public_vectors(kernels, raw):
    check(raw)


@pytest.mark.parametrize("name,raw", bench_frames(), ids=[n for n, _ in bench_frames()])
def test_benchmark_frames_are_lazy_and_equal(kernels, name, raw):
    apdu = check(F.decode_frame(raw).apdu)
    lazy = A.decode_apdu(F.decode_frame(raw).apdu, lazy=True)
    if kernels == "compiled":        # the bulk really is left unbuilt
        inner = lazy.results if isinstance(lazy.results, _lazy_type()) else (
            lazy.results[0].rows if hasattr(lazy.results[0], "rows") else lazy.results[0].results)
        assert isinstance(inner, _lazy_type())
    assert apdu is not None


@pytest.mark.parametrize("apdu", SAMPLES, ids=lambda s: s.NAME)
def test_every_sample_and_its_truncations(kernels, apdu):
    raw = apdu.to_bytes()
    check(raw)
    for n in range(len(raw)):
        assert check(raw[:n]) is None
    assert check(raw + b"\x00") is None


def _normal_list(data: bytes) -> bytes:
    # GET-Response-NormalList, PIID 1, one A-ResultNormal 00100200 with Data, no trailer
    return bytes.fromhex("85020101" "00100200" "01") + data + b"\x00\x00"


def _record_row(data: bytes) -> bytes:
    # REPORT-Notification-RecordList, one A-ResultRecord 60120300 of one OAD column, one row
    return bytes.fromhex("88020101" "60120300" "01" "00" "00100200" "01" "01") + data + b"\x00\x00"


def _nested(depth: int) -> bytes:
    return b"\x01\x01" * depth + b"\x00"


# Data the validator must judge as the eager readers do: the depth bound either side, each check of
# the common tags, and rare tags it hands to the eager reader
EDGE_DATA = [
    _nested(MAX_DEPTH - 2), _nested(MAX_DEPTH - 1), _nested(MAX_DEPTH), _nested(MAX_DEPTH + 1),
    b"\x03\x01", b"\x03\x02",                              # bool 1, bool 2
    b"\x04\x09\xff\x80", b"\x04\x09\xff",                   # bit-string 9 bits, one byte short
    b"\x09\x81\x05abcde", b"\x09\x81\x7fab",               # non-minimal length, truncated
    b"\x09\x85\x00\x00\x00\x01a",                          # length of length 5
    b"\x0c\x02\xc3\xa9", b"\x0c\x02\xc3\x28",              # UTF-8 é, invalid UTF-8
    b"\x0a\x02\xe9\xff",                                   # visible-string: any byte
    b"\x55\x07\x05\x11\x22\x33\x44\x55\x66", b"\x55\x07\x04\x11\x22\x33\x44\x55\x66",  # TSA ok, bad flag
    b"\x54\x06\x00\x01", b"\x5f\x06\x02\x08\x01\x00", b"\x5f\x0b\x02\x08\x01\x00",    # TI bad, COMDCB
    b"\x5c\x05\x01\x11\x01\x12\x00\x05", b"\x5b\x02",      # MS region of wrong bounds, CSD choice 2
    b"\x01\x83\x01\x00\x01" + b"\x00" * 65537,             # 65537 elements (the bound is 65536)
    b"\x02\x02\x06\x00\x00\x00\x01\x14" + bytes(8), b"\xff", b"\x07", b"",  # ok; unknown tags; nothing
    b"\x1c\x07\xea\x0b\x16\x00\x00", b"\x19" + bytes(9), b"\x1a\x07\xea\x0b\x16\x00", b"\x1b\x01\x02",
]


@pytest.mark.parametrize("data", EDGE_DATA, ids=lambda d: d[:12].hex() + f"/{len(d)}")
def test_edge_data_in_a_list_and_in_a_row(kernels, data):
    check(_normal_list(data))
    check(_record_row(data))


def test_depth_bound_is_the_eager_one(kernels):
    assert check(_normal_list(_nested(MAX_DEPTH - 1))) is not None
    assert check(_normal_list(_nested(MAX_DEPTH + 1))) is None
    assert check(_record_row(_nested(MAX_DEPTH + 1))) is None


def test_source_buffer_mutated_or_freed(kernels):
    name, raw = bench_frames()[0]
    apdu_bytes = F.decode_frame(raw).apdu
    ref = A.decode_apdu(apdu_bytes)
    buf = bytearray(apdu_bytes)
    lazy_from_bytearray = A.decode_apdu(buf, lazy=True)
    lazy_from_view = A.decode_apdu(memoryview(buf), lazy=True)
    buf[:] = b"\xff" * len(buf)                             # the caller reuses its receive buffer
    tmp = bytes(apdu_bytes)
    lazy_from_bytes = A.decode_apdu(tmp, lazy=True)
    del tmp
    gc.collect()
    for lazy in (lazy_from_bytearray, lazy_from_view, lazy_from_bytes):
        assert same(lazy, ref)


@FUZZ
@given(hot_apdus)
def test_hypothesis_hot_apdus(kernels, apdu):
    got = check(apdu.to_bytes())
    assert same(got, apdu)


@FUZZ
@given(hot_apdus, st.data())
def test_mutated_and_truncated_hot_apdus(kernels, apdu, draw):
    raw = apdu.to_bytes()
    check(raw[:draw.draw(st.integers(0, len(raw) - 1))])
    changed = bytearray(raw)
    for at, byte in draw.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), u8), min_size=1, max_size=4)):
        changed[at] = byte
    check(bytes(changed))

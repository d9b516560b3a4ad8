"""``Framer.messages()``, the fast path (one kernel call per chunk), against the frame-at-a-time path.

The fast path (``messages645`` in ext/_framing.pyx and protocols/_framing_py.py) decodes read
requests, read answers of learnt data items, abnormal answers, write and remote-control requests
itself and hands every other frame to ``decode_message``.  The contract tested here: for any bytes
fed in any chunks, it yields exactly what ``next_frame()`` + ``decode_message`` give (same messages,
same repr, same errors at the same places), under the compiled kernels and under the pure twins.
Also the message records themselves (``protocols/dlt645/_record.py``): the dataclass API they keep.
"""

from __future__ import annotations

import copy
import pickle
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.bench_dlt645 import build_traffic
from gridhead.protocols import accel
from gridhead.protocols.dlt645 import (ChangePasswordRequest, ErrorResponse, Frame, Framer, ReadRequest,
                              ReadResponse, RemoteCommand, RemoteControlRequest, WriteRequest,
                              decode_frames, decode_message, messages, registry)
from gridhead.protocols.errors import ChecksumError, LocalProtocolError, ProtocolError, RemoteProtocolError

from tests.conftest import load_vectors
from tests.protocols.test_dlt645_codec import ALL_MESSAGES, EXPECTED, FEEDS

VECTORS = load_vectors("DL/T 645")
GOOD = [v for v in VECTORS if v["verified"]]
BAD = [v for v in VECTORS if not v["verified"]]
FUZZ = settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)

# data items whose answers the fast path decodes, of every field kind: unsigned and signed BCD,
# binary status words, date-times, blocks (several lengths), DIGITS; learnt before the properties run
FAST_DIS = (0x00010000, 0x0001FF00, 0x0000FF00, 0x00030000, 0x02010100, 0x0201FF00, 0x02020100, 0x02030000,
            0x02060000, 0x02800002, 0x01010000, 0x0101FF00, 0x04000501, 0x04000503, 0x04000101, 0x04000102,
            0x04000401, 0x04000103, 0x03300000)


def _unhex(v):
    return bytes.fromhex(v["hex"].replace(" ", ""))


def _trace_frames(chunks):
    """What next_frame() + decode_message give: repr of each message, (type, text) of each error."""
    fr, out = Framer(), []
    for c in chunks:
        fr.feed(c)
        while True:
            try:
                f = fr.next_frame()
                if f is None:
                    break
                out.append(repr(decode_message(f)))
            except ProtocolError as exc:
                out.append((type(exc).__name__, str(exc)))
    return out, fr.pending, fr.frames, fr.errors


def _trace_stream(chunks):
    """The same through Framer.messages(), calling it again after each error."""
    fr, out = Framer(), []
    for c in chunks:
        fr.feed(c)
        while True:
            try:
                out.extend(repr(m) for m in fr.messages())
                break
            except ProtocolError as exc:
                out.append((type(exc).__name__, str(exc)))
    return out, fr.pending, fr.frames, fr.errors


def _chunked(data: bytes, size: int):
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


@pytest.fixture(scope="module", autouse=True)
def _learnt():
    for di in FAST_DIS:
        assert registry.lookup(di) is not None, f"{di:08X}"
        messages._learn(di)
        assert di in messages.FAST_ANSWERS, f"{di:08X} does not take the fast path"


# --- the vectors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("vec", GOOD, ids=lambda v: v["meaning"][:40])
def test_verified_vectors_stream(kernels, vec, feed):
    fr, got = Framer(), []
    for c in FEEDS[feed](_unhex(vec)):
        fr.feed(c)
        got.extend(fr.messages())
    assert got == [EXPECTED[vec["hex"]]]
    assert ([repr(m) for m in got], 0) == _trace_frames(FEEDS[feed](_unhex(vec)))[:2]


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("vec", BAD, ids=lambda v: v["meaning"][:40])
def test_negative_vectors_rejected_by_stream(kernels, vec, feed):
    fr = Framer()
    with pytest.raises(ChecksumError, match="checksum mismatch: frame says"):
        for c in FEEDS[feed](_unhex(vec)):
            fr.feed(c)
            list(fr.messages())


# --- equal to the frame-at-a-time path ------------------------------------------------------------
def test_traffic_mix_equals_frame_at_a_time(kernels):
    """The benchmark's mix: every message equal to the one encoded, repr equal to the slow path's."""
    buf, msgs = build_traffic(3000, seed=7)
    for size in (1400, 97):
        fr, got = Framer(), []
        for c in _chunked(buf, size):
            fr.feed(c)
            got.extend(fr.messages())
        assert got == msgs
        assert [m.values for m in got if type(m) is ReadResponse] == \
            [m.values for m in msgs if type(m) is ReadResponse]
        assert _trace_stream(_chunked(buf, size)) == _trace_frames(_chunked(buf, size))
    assert decode_frames(buf) == msgs


def test_compiled_and_pure_build_identical_messages():
    if not accel.is_compiled("gridhead.protocols._framing"):
        pytest.skip("compiled kernels not built")
    buf, _msgs = build_traffic(2000, seed=11)
    got = {}
    for mode in ("compiled", "pure"):
        accel.use(mode)
        try:
            got[mode] = [(repr(m), hash(m)) for m in decode_frames(buf)]
        finally:
            accel.use("auto")
    assert got["compiled"] == got["pure"]


@st.composite
def fast_path_frames(draw):
    """Frames the fast path takes or nearly takes: learnt DIs with payloads of random bytes (digits
    that may not be BCD) and right or wrong lengths, read requests, abnormal answers, writes,
    remote controls with random command bytes and times, follow-up bits."""
    addr = draw(st.sampled_from(["000012345678", "AAAAAAAAAAAA", "999999999999", "123456789012"]))
    kind = draw(st.integers(0, 5))
    if kind == 0:
        di = draw(st.sampled_from(FAST_DIS))
        item = registry.lookup(di)
        sizes = [n for n in sorted(item._prefixes) if n <= 200] if item.members else [item.size]
        size = draw(st.sampled_from(sizes + [sizes[0] + 1, max(0, sizes[0] - 1)]))
        c = draw(st.sampled_from([0x91, 0xB1]))
        data = di.to_bytes(4, "little") + draw(st.binary(min_size=size, max_size=size))
    elif kind == 1:
        c, data = 0x11, draw(st.binary(min_size=4, max_size=4))
    elif kind == 2:
        c = draw(st.integers(0xC0, 0xFF))
        data = draw(st.binary(min_size=0, max_size=3))
    elif kind == 3:
        c, data = 0x14, draw(st.binary(min_size=11, max_size=30))
    elif kind == 4:
        c = 0x1C
        data = draw(st.binary(min_size=8, max_size=8)) + bytes((draw(st.sampled_from(
            [int(x) for x in RemoteCommand] + [0x00, 0x1D])), draw(st.integers(0, 255)))) \
            + draw(st.one_of(st.binary(min_size=6, max_size=6),
                             st.integers(0, 99 ** 6).map(lambda v: bytes.fromhex(f"{v % 10 ** 12:012d}"))))
        if draw(st.booleans()):
            data = data[:draw(st.integers(0, 17))]
    else:
        c, data = draw(st.integers(0, 255)), draw(st.binary(max_size=24))
    body = b"\x68" + bytes.fromhex(addr)[::-1] + bytes((0x68, c, len(data))) + bytes((b + 0x33) & 0xFF for b in data)
    return body + bytes((sum(body) & 0xFF, 0x16))


@FUZZ
@given(st.lists(st.one_of(fast_path_frames(), st.binary(max_size=30)), max_size=6), st.integers(1, 40))
def test_fast_path_equals_slow_path(kernels, parts, size):
    data = b"".join(parts)
    whole = _trace_stream([data])
    assert whole == _trace_frames([data])
    assert _trace_stream(_chunked(data, size)) == whole      # chunking changes nothing
    assert _trace_stream(_chunked(data, 1)) == whole


@FUZZ
@given(st.binary(max_size=600), st.integers(1, 64))
def test_fuzz_invariant_stream(kernels, data, chunk):
    """Arbitrary bytes give messages or a ProtocolError subclass, never anything else, and the same
    ones as the frame-at-a-time path."""
    got = _trace_stream(_chunked(data, chunk))               # raises anything but ProtocolError
    assert got == _trace_frames(_chunked(data, chunk))


# --- errors and the generator's bookkeeping --------------------------------------------------------
def test_errors_come_after_the_messages_before_them_and_decoding_carries_on(kernels):
    good = [m.to_bytes() for m in ALL_MESSAGES[:4]]
    damaged = bytearray(good[1])
    damaged[-2] ^= 0xFF
    undefined = bytearray(bytes.fromhex("68785634120000689E00DF16"))   # function 1EH: no such thing
    undefined[-2] = sum(undefined[:-2]) & 0xFF
    fr = Framer()
    fr.feed(good[0] + bytes(damaged) + good[2] + bytes(undefined) + good[3])
    it = fr.messages()
    assert next(it) == ALL_MESSAGES[0]
    with pytest.raises(ChecksumError, match=r"at stream byte \d+"):
        next(it)
    it = fr.messages()
    assert next(it) == ALL_MESSAGES[2]
    with pytest.raises(RemoteProtocolError, match="not defined"):
        next(it)
    assert list(fr.messages()) == [ALL_MESSAGES[3]]
    assert (fr.frames, fr.errors, fr.pending) == (4, 1, 0)


def test_a_loop_that_stops_early_loses_nothing(kernels):
    fr = Framer()
    fr.feed(b"".join(m.to_bytes() for m in ALL_MESSAGES[:5]))
    for m in fr.messages():
        assert m == ALL_MESSAGES[0]
        break
    with pytest.raises(LocalProtocolError, match="still holds"):
        fr.next_frame()                       # mixing the two APIs would reorder messages
    fr.feed(ALL_MESSAGES[5].to_bytes())
    assert list(fr.messages()) == ALL_MESSAGES[1:6]
    assert fr.next_frame() is None


def test_kernel_status_for_a_non_bcd_address(kernels):
    body = b"\x68" + bytes.fromhex("7856341200AB") + b"\x68\x11\x04" + bytes((0x33, 0x33, 0x34, 0x33))
    fr = Framer()
    fr.feed(body + bytes((sum(body) & 0xFF, 0x16)) + ALL_MESSAGES[0].to_bytes())
    with pytest.raises(ProtocolError, match="is not BCD"):
        list(fr.messages())
    assert list(fr.messages()) == [ALL_MESSAGES[0]]


# --- the records -----------------------------------------------------------------------------------
def test_records_keep_the_dataclass_api():
    r = ReadRequest("000012345678", 0x00010000)
    assert repr(r) == "ReadRequest(address='000012345678', di=65536, count=None, start=None)"
    assert r == ReadRequest(address="000012345678", di=0x00010000, count=None)
    assert hash(r) == hash(ReadRequest("000012345678", 0x00010000))
    assert r != ("000012345678", 0x00010000, None, None) and ("000012345678", 0x00010000, None, None) != r
    assert ReadResponse("1", 1, b"") != ReadRequest("1", 1)
    with pytest.raises(AttributeError):
        r.di = 1
    with pytest.raises(TypeError):
        ReadRequest("000012345678")
    with pytest.raises(TypeError):
        r < r  # noqa: B015 - unordered, like a dataclass without order=True
    assert pickle.loads(pickle.dumps(r)) == r and copy.deepcopy(r) is r
    match r:
        case ReadRequest(address, di):
            assert (address, di) == ("000012345678", 0x00010000)
    # fields with compare=False (decoded values) do not take part in == and hash
    a = ReadResponse("000012345678", 0x00010000, b"\x00" * 4, values=())
    b = ReadResponse.of("000012345678", 0x00010000, [0])
    assert a == b and hash(a) == hash(b) and a.values != b.values
    # a class that derives a field keeps its own constructor
    p = ChangePasswordRequest("000012345678", "02000000", "04123456")
    assert p.di == 0x04000C05 and pickle.loads(pickle.dumps(p)) == p
    assert Frame("000012345678", 0x11, b"").function_name == "read"


def test_kernel_built_records_equal_python_built(kernels):
    rnd = random.Random(3)
    msgs = [ReadResponse.of("000012345678", 0x0001FF00, [rnd.randrange(10 ** 8) for _ in range(5)]),
            ErrorResponse("000012345678", 0x11, 0x0102, 2),
            WriteRequest.of("000012345678", 0x04000103, [15], "02123456", "00000001"),
            RemoteControlRequest("000012345678", RemoteCommand.PROTECT_ON, "261122001000", "02123456", "00000001")]
    got = decode_frames(b"".join(m.to_bytes() for m in msgs))
    assert got == msgs
    assert [hash(m) for m in got] == [hash(m) for m in msgs]
    assert [repr(m) for m in got] == [repr(m) for m in msgs]
    assert [m.to_json() for m in got] == [m.to_json() for m in msgs]
    assert got[0].values == msgs[0].values and [hash(v) for v in got[0].values] == [hash(v) for v in msgs[0].values]


def test_the_mix_takes_the_fast_path(kernels, monkeypatch):
    """Only the first answer of a data item goes through the Python decoder (which learns it);
    a regression here costs the benchmark its speed without failing any equality."""
    from gridhead.protocols.dlt645 import frame as frame_mod
    calls = []
    ctx = list(frame_mod.STREAM_CONTEXT)
    slow = ctx[-1]
    ctx[-1] = lambda f: calls.append(f) or slow(f)
    monkeypatch.setattr(frame_mod, "STREAM_CONTEXT", tuple(ctx))
    buf, msgs = build_traffic(2000, seed=5)
    assert decode_frames(buf) == msgs
    assert len({(f.control, f.data[:4]) for f in calls}) == len(calls)   # each DI at most once
    assert all(f.control == 0x91 for f in calls)


def test_compiled_messages_of_atoms_are_not_tracked_by_the_garbage_collector():
    """The kernel untracks a record (and its Values) that holds only untracked objects, as CPython
    does for plain tuples: a caller keeping many messages then does not pay the cyclic collector on
    every collection (5 µs per frame measured before, benchmarks/README.md).  Records that hold a
    tracked object (an enum member) stay tracked; deleting and collecting must be safe either way."""
    import gc
    if not accel.is_compiled("gridhead.protocols._framing"):
        pytest.skip("compiled kernels not built")
    accel.use("compiled")
    try:
        msgs = [ReadResponse.of("000012345678", 0x0001FF00, [5, 1, 1, 1, 2]),
                ReadResponse.of("000012345678", 0x02010100, [2200]),
                RemoteControlRequest("000012345678", RemoteCommand.TRIP, "261122001000")]
        raw = b"".join(m.to_bytes() for m in msgs) * 3
        decode_frames(raw)                                     # learn both DIs
        got = decode_frames(raw)
    finally:
        accel.use("auto")
    assert got == msgs * 3
    for m in got:
        if type(m) is ReadResponse:
            assert not gc.is_tracked(m) and not gc.is_tracked(m.values)
            assert not any(gc.is_tracked(v) for v in m.values)
        else:
            assert gc.is_tracked(m)
    kept = [m.values for m in got if type(m) is ReadResponse]
    del got
    gc.collect()
    assert [len(v) for v in kept] == [5, 1] * 3 and kept[0][0].raw == 5

"""DL/T 698.45 link layer: public vectors, streaming, fragmentation, properties, fuzz, and interop.

Tests that take the ``kernels`` fixture run against the compiled kernel and the pure twin.  The interop
peer is the PyPI package ``dlt698`` (C++ through pybind11, test-only).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridhead.protocols import _framing698_py as pure
from gridhead.protocols import accel
from gridhead.protocols.dlt698 import frame as F
from gridhead.protocols.dlt698.frame import (AddressType, Fragment, Fragmenter, FragmentType, Frame, Framer,
                                    Reassembler, ServerAddress, decode, decode_frame, fragment)
from gridhead.protocols.errors import ChecksumError, FrameError, LocalProtocolError, ProtocolError, RemoteProtocolError

from tests.conftest import load_vectors

try:
    from gridhead.protocols import _framing698 as comp
except ImportError:                      # twin-only environment (no compiler): the twin is tested alone
    comp = None
needs_compiled = pytest.mark.skipif(comp is None, reason="compiled kernel not built")

VECTORS = [v for v in load_vectors("DL/T 698.45") if v["protocol"] == "DL/T 698.45"]
GOOD = [v for v in VECTORS if v["verified"]]
BAD = [v for v in VECTORS if v["verified"] is False]


def fixture_ok(max_examples: int = 100):
    """Hypothesis settings for tests that also take the (function-scoped) ``kernels`` fixture."""
    return settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None,
                    max_examples=max_examples)


def _bytes(v) -> bytes:
    return bytes.fromhex(v["hex"].replace(" ", ""))


FEEDS = {
    "whole": lambda b: [b],
    "halves": lambda b: [b[: len(b) // 2], b[len(b) // 2:]],
    "bytewise": lambda b: [b[i:i + 1] for i in range(len(b))],
}


def _outcomes(data: bytes, chunks, max_frame: int = F.MAX_FRAME):
    """Frames and error class names, in stream order, for ``data`` fed in ``chunks``."""
    fr = Framer(max_frame)
    out = []
    for c in chunks(data):
        fr.feed(c)
        while True:
            try:
                f = fr.next_frame()
            except ProtocolError as e:
                out.append(type(e).__name__)
                continue
            if f is None:
                break
            out.append(f)
    return out, fr


# --- CRC ------------------------------------------------------------------------------------------
def test_crc_check_value(kernels):
    # CRC-16/X.25 catalogue check value; the standard's HCS/FCS (DL/T 698.45 annex on the FCS)
    assert F._k.crc16(b"123456789") == 0x906E
    assert F._k.crc16(b"xx123456789yy", 2, 11) == 0x906E
    assert F._k.crc16(b"") == 0x0000


@settings(max_examples=300)
@given(st.binary(max_size=100), st.integers(0, 120), st.integers(-1, 120))
def test_crc_compiled_equals_pure_and_peer(data, start, stop):
    import dlt698._native as peer
    if comp is not None:
        assert comp.crc16(data, start, stop) == pure.crc16(data, start, stop)
    assert pure.crc16(data) == peer.crc16(data)


# --- the public vectors ---------------------------------------------------------------------------
def test_vector_counts():
    assert len(GOOD) >= 20 and len(BAD) >= 2


@pytest.mark.parametrize("v", GOOD, ids=lambda v: v["meaning"][:50])
def test_verified_vector_parses_and_reencodes(kernels, v):
    raw = _bytes(v)
    f = decode_frame(raw)
    assert f.to_bytes() == raw
    assert decode(raw) == (len(raw), f)
    assert decode(b"\xFE\xFE\xFE\xFE" + raw) == (len(raw) + 4, f)
    assert f.to_bytes(F.PREAMBLE) == b"\xFE\xFE\xFE\xFE" + raw


def test_vector_fields(kernels):
    # the first vector of the file: GET-Request-Normal to SA 201605190907, CA 0 (std ch.5, annex D.3.1)
    f = decode_frame(bytes.fromhex("68 17 00 43 05 07 09 19 05 16 20 00 15 60 05 01 01 40 01 02 00 00 C6 07 16"))
    assert f.server == ServerAddress("201605190907", AddressType.SINGLE, 0)
    assert (f.client, f.control, f.function, f.from_server, f.client_started, f.scrambled) == (0, 0x43, 3, False, True,
                                                                                              False)
    assert f.apdu == bytes.fromhex("05 01 01 40 01 02 00 00") and f.fragment is None
    wild = decode_frame(bytes.fromhex(
        "68 3A 00 43 45 AA AA AA AA AA AA 00 BF 1A 09 07 05 F2 01 02 01 06 02 08 01 00 00 0A 00 64 19 68 17 00 43 05"
        " 01 00 20 03 25 01 00 A5 80 05 01 00 20 01 02 01 00 86 BB 16 00 EB B1 16"))
    assert wild.server == ServerAddress("AAAAAAAAAAAA", AddressType.WILDCARD, 0)
    short = decode_frame(bytes.fromhex("68 1c 00 81 03 78 56 34 12 00 58 89 01 00 00 01 2c 07 e0 09 0b 07 0a 15 28 02"
                                       " f5 0b 65 16"))
    assert short.server.address == "12345678" and short.from_server and not short.client_started
    report = decode_frame(_bytes(next(v for v in GOOD if "88 02" in v["meaning"])))
    assert report.control == 0x83 and report.client == 0xA0 and report.apdu[:2] == b"\x88\x02"


@pytest.mark.parametrize("v", BAD, ids=lambda v: v["meaning"][:50])
def test_negative_vector_rejected_clearly(kernels, v):
    raw = _bytes(v)
    with pytest.raises(ChecksumError, match=r"HCS mismatch: frame says [0-9A-F]{4}, computed [0-9A-F]{4} "
                                            r"\(frame at byte 0\)"):
        decode_frame(raw)
    for name, chunks in FEEDS.items():
        out, _ = _outcomes(raw, chunks)
        assert out == ["ChecksumError"], name


def _stream():
    """Every vector, good and bad, with preambles and noise between them (noise without 68H)."""
    parts, expected = [], []
    for n, v in enumerate(VECTORS):
        parts.append(b"\xFE" * (n % 5) + bytes((n * 7 + k) % 256 for k in range(n % 4)).replace(b"\x68", b"\x01"))
        parts.append(_bytes(v))
        expected.append(decode_frame(_bytes(v)) if v["verified"] else "ChecksumError")
    return b"".join(parts), expected


@pytest.mark.parametrize("feed", FEEDS)
def test_stream_of_all_vectors(kernels, feed):
    data, expected = _stream()
    out, fr = _outcomes(data, FEEDS[feed])
    assert out == expected
    assert fr.frames == len(GOOD) and fr.errors == len(BAD) and fr.pending == 0


def test_framer_error_offset_is_in_the_stream(kernels):
    good, bad = _bytes(GOOD[0]), _bytes(BAD[0])
    fr = Framer()
    fr.feed(good)
    assert fr.next_frame() is not None
    fr.feed(b"\x00\x00" + bad)
    with pytest.raises(ChecksumError, match=f"stream byte {len(good) + 2}"):
        fr.next_frame()
    assert fr.next_frame() is None


def test_decode_reports_used_and_resync(kernels):
    good, bad = _bytes(GOOD[1]), _bytes(BAD[1])
    buf = b"\x12" + bad + good
    with pytest.raises(ChecksumError) as e:
        decode(buf)
    assert e.value.used == 2
    used, f = decode(buf, 2)
    assert f == decode_frame(good) and used == len(buf) - 2
    assert decode(good[:-1]) == (0, None)
    assert decode(b"\x00\x01\x02" + good[:3]) == (3, None)


# --- errors the checksums cannot see --------------------------------------------------------------
def _frame(control=0x43, af_sa=b"\x05\x01\x00\x00\x00\x00\x00", ca=0, data=b"\x05\x01\x00\x40\x01\x02\x00\x00",
           length=None):
    total = 4 + len(af_sa) + 1 + 2 + len(data) + 3
    return pure.encode698(total - 2 if length is None else length, control, af_sa, ca, data)


@pytest.mark.parametrize("raw, message", [
    (_frame(control=0x53), "control word 53 has a reserved bit"),
    (_frame(control=0x47), "control word 47 has a reserved bit or function"),
    (_frame(control=0x40), "control word 40"),
    (_frame(af_sa=b"\x35\x07\x01\x00\x00\x00\x00"), "SA flag 35"),        # bits 5-4 both set
    (_frame(af_sa=b"\x25\x01\x01\x00\x00\x00\x00"), "extended logical address 1"),
    (_frame(control=0x63, data=b"\x05"), "without its fragment header"),
    (_frame(control=0x63, data=b"\x00\x30\x05"), "reserved bits 12-13"),
    (_frame(control=0x63, data=b"\x01\x80\x05"), "confirm fragment 1 with 1 data bytes"),
    (_frame(control=0x63, data=b"\x01\xC0"), "middle fragment 1 with 0 data bytes"),
    (_frame(length=0x0A), "length field 000A shorter than its header"),
    (_frame(length=0x8017), "length field 8017 has reserved bit 15 set"),
])
def test_header_faults_are_frame_errors(kernels, raw, message):
    with pytest.raises(FrameError, match=message):
        decode_frame(raw)
    out, _ = _outcomes(raw + _bytes(GOOD[0]), FEEDS["bytewise"])
    assert out[0] == "FrameError" and out[-1] == decode_frame(_bytes(GOOD[0]))


def test_fcs_and_end_byte_faults(kernels):
    raw = bytearray(_bytes(GOOD[0]))
    raw[-4] ^= 0x01                                               # inside the APDU: FCS catches it
    with pytest.raises(ChecksumError, match="FCS mismatch") as e:
        decode_frame(bytes(raw))
    assert e.value.received != e.value.computed
    raw = bytearray(_bytes(GOOD[0]))
    raw[-1] = 0x17
    with pytest.raises(FrameError, match="ends with 17, not 16"):
        decode_frame(bytes(raw))


def test_size_bound(kernels):
    big = Frame(ServerAddress("000000000001"), 0, 0x43, bytes(3000)).to_bytes()
    assert decode_frame(big) is not None
    with pytest.raises(FrameError, match="exceeds the frame size bound"):
        decode_frame(big, max_frame=2048)
    fr = Framer(max_frame=2048)
    fr.feed(big[:100])
    with pytest.raises(FrameError):
        fr.next_frame()
    fr.feed(big[100:])
    assert list(fr) == [] and fr.pending < 2048


def test_length_in_kilobytes(kernels):
    # bit 14 of L: the length is in kilobytes; 1024 bytes counted by L = frame of 1026 bytes
    f = Frame(ServerAddress("01"), 0, 0x43, bytes(1024 - 10), length_in_kb=True)
    raw = f.to_bytes()
    assert len(raw) == 1026 and raw[1:3] == b"\x01\x40"
    assert decode_frame(raw) == f
    with pytest.raises(LocalProtocolError, match="kilobytes"):
        Frame(ServerAddress("01"), 0, 0x43, b"\x01", length_in_kb=True).to_bytes()


def test_encode_refuses_what_the_standard_does_not_allow():
    sa = ServerAddress("000000000001")
    for bad in [Frame(sa, 0, 0x53, b""), Frame(sa, 256, 0x43, b""), Frame(ServerAddress("0G"), 0, 0x43, b""),
                Frame(ServerAddress("123"), 0, 0x43, b""), Frame(ServerAddress("00" * 17), 0, 0x43, b""),
                Frame(ServerAddress("01", logical=256), 0, 0x43, b""), Frame(sa, 0, 0x63, b"x"),
                Frame(sa, 0, 0x43, b"x", Fragment(0, FragmentType.FIRST)),
                Frame(sa, 0, 0x63, b"x", Fragment(4096, FragmentType.FIRST)),
                Frame(sa, 0, 0x63, b"x", Fragment(1, FragmentType.CONFIRM)),
                Frame(sa, 0, 0x43, bytes(0x3FFF))]:
        with pytest.raises(LocalProtocolError):
            bad.to_bytes()


def test_scrambled_user_data(kernels):
    # SC (control bit 3): every user-data byte +33H on the wire, checksums over the wire bytes
    f = Frame(ServerAddress("123456"), 0x10, 0x4B, bytes.fromhex("0501004001020000"))
    raw = f.to_bytes()
    assert raw[11:19] == bytes.fromhex("38 34 33 73 34 35 33 33")
    assert decode_frame(raw) == f
    g = Frame(ServerAddress("123456"), 0x10, 0x6B, b"\x05\x01", Fragment(3, FragmentType.MIDDLE))
    assert decode_frame(g.to_bytes()) == g


def test_extended_logical_address(kernels):
    s = ServerAddress("123456", AddressType.GROUP, 7)
    assert s.to_bytes() == bytes.fromhex("A3 07 56 34 12")
    f = Frame(s, 1, 0x43, b"\x05")
    assert decode_frame(f.to_bytes()) == f
    assert decode_frame(Frame(ServerAddress("1234", logical=1), 1, 0x43, b"\x05").to_bytes()).server.logical == 1


# --- properties ------------------------------------------------------------------------------------
def _servers(max_logical=255, types=tuple(AddressType)):
    @st.composite
    def build(draw):
        t = draw(st.sampled_from(types))
        logical = draw(st.integers(0, max_logical))
        if t == AddressType.BROADCAST:
            return ServerAddress("AA", t, logical)
        n = draw(st.integers(1, 15 if logical >= 2 else 16))
        digits = "0123456789A" if t == AddressType.WILDCARD else "0123456789"
        return ServerAddress(draw(st.text(digits, min_size=2 * n, max_size=2 * n)), t, logical)
    return build()


@st.composite
def frames(draw, max_logical=255, max_apdu=300):
    frag = draw(st.one_of(st.none(), st.builds(Fragment, st.integers(0, 4095), st.sampled_from(FragmentType))))
    control = draw(st.sampled_from([0x01, 0x43, 0x81, 0x83, 0xC3, 0x03, 0xC1])) | draw(st.sampled_from([0, 0x08]))
    if frag is not None:
        control |= 0x20
    apdu = b"" if frag and frag.type == FragmentType.CONFIRM else \
        draw(st.binary(min_size=1 if frag else 0, max_size=max_apdu))
    return Frame(draw(_servers(max_logical)), draw(st.integers(0, 255)), control, apdu, frag)


@fixture_ok()
@given(frames(), st.sampled_from([b"", b"\xFE" * 4]))
def test_round_trip_random_frames(kernels, f, pre):
    raw = f.to_bytes(pre)
    assert decode_frame(raw) == f
    assert decode(raw) == (len(raw), f)
    out, _ = _outcomes(b"\x16\x68" + raw + raw, FEEDS["halves"])
    assert out == [f, f]


@fixture_ok()
@given(frames(), st.data())
def test_changed_address_fails_hcs(kernels, f, data):
    raw = bytearray(f.to_bytes())
    n_sa = len(f.server.to_bytes())
    i = data.draw(st.integers(5, 4 + n_sa))                      # an SA byte (AF excluded: it moves HCS)
    raw[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ChecksumError, match="HCS mismatch"):
        decode_frame(bytes(raw))


framey = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from([0x68, 0x16, 0xFE, 0x00, 0x05, 0x43, 0x33, 0x17, 0xAA, 0x20, 0xC3]), max_size=400)
    .map(bytes),
)


def _drain_all(data: bytes, chunk: int):
    fr = Framer(max_frame=512)
    got = 0
    for i in range(0, len(data), chunk):
        fr.feed(data[i:i + chunk])
        while True:
            try:
                f = fr.next_frame()
            except ProtocolError:
                continue
            if f is None:
                break
            assert isinstance(f, Frame)
            got += 1
    assert fr.pending <= max(len(data), 512)
    return got


@fixture_ok(300)
@given(framey, st.integers(1, 64))
def test_fuzz_arbitrary_bytes(kernels, data, chunk):
    _drain_all(data, chunk)
    try:
        decode(data)
    except ProtocolError:
        pass


@fixture_ok(300)
@given(st.lists(frames(max_apdu=60), min_size=1, max_size=4), st.data())
def test_fuzz_mutated_valid_frames(kernels, fs, data):
    raw = bytearray(b"".join(f.to_bytes() for f in fs))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=3))
        elif raw:
            del raw[i]
    _drain_all(bytes(raw), data.draw(st.integers(1, 50)))
    try:
        decode(bytes(raw))
    except ProtocolError:
        pass


@needs_compiled
@settings(max_examples=500)
@given(framey, st.integers(0, 20), st.sampled_from([16, 64, 512, F.MAX_FRAME]))
def test_compiled_equals_pure(buf, pos, max_frame):
    pos = min(pos, len(buf))
    assert comp.scan698(buf, pos, len(buf), max_frame) == pure.scan698(buf, pos, len(buf), max_frame)
    assert comp.decode698(buf, pos, len(buf), max_frame) == pure.decode698(buf, pos, len(buf), max_frame)
    assert comp.decode698(bytearray(buf), pos, len(buf), max_frame) == pure.decode698(buf, pos, len(buf), max_frame)
    assert comp.scramble(buf) == pure.scramble(buf)
    assert comp.user_data(buf, pos, len(buf), True) == pure.user_data(buf, pos, len(buf), True)


@needs_compiled
@settings(max_examples=200)
@given(frames())
def test_compiled_equals_pure_on_frames(f):
    raw = f.to_bytes()
    assert comp.decode698(raw, 0, len(raw), F.MAX_FRAME) == pure.decode698(raw, 0, len(raw), F.MAX_FRAME)
    sa = f.server.to_bytes()
    args = (len(raw) - 2, f.control, sa, f.client, raw[7 + len(sa):-3])
    assert comp.encode698(*args) == pure.encode698(*args) == raw


@pytest.mark.skipif(accel.mode() == "pure", reason="GRIDHEAD_PUREPYTHON forces the twin")
def test_kernel_is_compiled():
    # the compiled run of the suite must not silently fall back to the twin
    assert accel.is_compiled("gridhead.protocols._framing698"), "build with `python setup.py build_ext --inplace`"


# --- fragmentation --------------------------------------------------------------------------------
def _exchange(apdu: bytes, max_data: int, template: Frame):
    """Run a fragmented transfer through a Fragmenter and a Reassembler, over bytes both ways."""
    tx, rx = Fragmenter(template, apdu, max_data), Reassembler(max_apdu=10_000, timeout_s=5.0)
    sent, now = [], 0.0
    while True:
        f = decode_frame(tx.current().to_bytes())
        sent.append(f)
        got, confirm = rx.accept(f, now)
        now += 1.0
        if got is not None:
            assert tx.done and confirm is None
            return got, sent
        c = decode_frame(confirm.to_bytes())
        assert c.fragment == Fragment(f.fragment.index, FragmentType.CONFIRM) and c.from_server != f.from_server
        tx.confirm(c)


@pytest.mark.parametrize("control", [0xC3, 0xCB, 0x83])
def test_fragment_round_trip(kernels, control):
    apdu = bytes(range(256)) * 3
    got, sent = _exchange(apdu, 100, Frame(ServerAddress("000000000001"), 0x10, control, b""))
    assert got == apdu
    assert [f.fragment.type for f in sent] == [FragmentType.FIRST] + [FragmentType.MIDDLE] * 6 + [FragmentType.LAST]
    assert [f.fragment.index for f in sent] == list(range(8)) and all(f.control & 0x20 for f in sent)
    assert fragment(Frame(ServerAddress("000000000001"), 0x10, control, apdu), 100) == sent


def test_reassembly_rules():
    sa = ServerAddress("01")
    parts = fragment(Frame(sa, 0, 0xC3, bytes(range(50))), 10)
    rx = Reassembler(max_apdu=1000, timeout_s=10)
    assert rx.accept(parts[0], 0)[1].fragment.index == 0
    assert rx.accept(parts[0], 1)[1].fragment.index == 0       # repeated first: confirm again
    assert rx.accept(parts[1], 2)[0] is None
    assert rx.accept(parts[1], 3)[1].fragment.index == 1       # repeated middle: confirm again
    with pytest.raises(RemoteProtocolError, match="fragment 3 out of order \\(expected 2\\)"):
        rx.accept(parts[3], 4)
    assert not rx.active
    with pytest.raises(RemoteProtocolError, match="without a first one"):
        rx.accept(parts[2], 5)
    # deadline: a transfer idle past timeout_s is dropped
    rx.accept(parts[0], 10)
    assert rx.deadline == 20 and not rx.expire(20) and rx.active
    with pytest.raises(RemoteProtocolError, match="without a first one"):
        rx.accept(parts[1], 20.5)
    # size bound
    small = Reassembler(max_apdu=25)
    small.accept(parts[0], 0)
    small.accept(parts[1], 0)
    with pytest.raises(RemoteProtocolError, match="exceeds 25 bytes"):
        small.accept(parts[2], 0)
    # a new first fragment restarts; index wraps after 4095
    wrap = fragment(Frame(sa, 0, 0xC3, bytes(30)), 10, first_index=4095)
    assert [p.fragment.index for p in wrap] == [4095, 0, 1]
    rx = Reassembler()
    rx.accept(parts[0], 0)
    assert [rx.accept(p, 0)[0] for p in wrap] == [None, None, bytes(30)]
    with pytest.raises(LocalProtocolError):
        rx.accept(Frame(sa, 0, 0x43, b"x"), 0)


def test_fragmenter_rules():
    sa = ServerAddress("01")
    tx = Fragmenter(Frame(sa, 0, 0x43, b""), bytes(25), 10)
    assert tx.current() == tx.current()                         # retransmission gives the same frame
    with pytest.raises(RemoteProtocolError, match="outstanding"):
        tx.confirm(Frame(sa, 0, 0xE3, b"", Fragment(1, FragmentType.CONFIRM)))
    with pytest.raises(RemoteProtocolError, match="confirm frame"):
        tx.confirm(Frame(sa, 0, 0xC3, b"\x85"))
    with pytest.raises(LocalProtocolError, match="fits one frame"):
        Fragmenter(Frame(sa, 0, 0x43, b""), bytes(10), 10)


# --- interop with the dlt698 package (C++ through pybind11) -----------------------------------------
peer = pytest.importorskip("dlt698._native")


def _peer_type(t: AddressType):
    return getattr(peer.AddressType, t.name.lower())


def _link_payload(f: Frame) -> bytes:
    """The peer's ``Frame.payload``: user data unscrambled, fragment header included."""
    return (f.fragment.to_bytes() if f.fragment else b"") + f.apdu


def _assert_same(ours: Frame, theirs) -> None:
    assert theirs.control == ours.control and theirs.client == ours.client
    assert theirs.server.type == _peer_type(ours.server.type)
    assert theirs.server.logical == ours.server.logical
    assert theirs.server.bytes == bytes.fromhex(ours.server.address)[::-1]
    assert theirs.payload == _link_payload(ours)


@pytest.mark.parametrize("v", GOOD, ids=lambda v: v["meaning"][:50])
def test_peer_agrees_on_vectors(v):
    raw = _bytes(v)
    theirs = peer.decode_frame(raw)
    _assert_same(decode_frame(raw), theirs)
    assert peer.encode_frame(theirs) == raw


@pytest.mark.parametrize("v", BAD, ids=lambda v: v["meaning"][:50])
def test_peer_also_rejects_negative_vectors(v):
    with pytest.raises(Exception, match="HCS"):
        peer.decode_frame(_bytes(v))


# The peer reads AF bits 5-4 as a two-bit logical address (0-3) and has no extended logical address
# byte; both agree on logical 0 and 1, which is what every vector and device here uses.
@fixture_ok(300)
@given(frames(max_logical=1))
def test_our_frames_decode_in_theirs(kernels, f):
    raw = f.to_bytes()
    theirs = peer.decode_frame(raw)
    _assert_same(f, theirs)
    assert peer.encode_frame(theirs) == raw


@fixture_ok(300)
@given(frames(max_logical=1))
def test_their_frames_decode_in_ours(kernels, f):
    theirs = peer.Frame(client=f.client, control=f.control, payload=_link_payload(f),
                        server=peer.ServerAddress(bytes=bytes.fromhex(f.server.address)[::-1],
                                                  logical=f.server.logical, type=_peer_type(f.server.type)))
    raw = peer.encode_frame(theirs)
    ours = decode_frame(raw)
    assert ours == f and ours.to_bytes() == raw


def test_peer_stream_decoder_agrees(kernels):
    data, expected = _stream()
    theirs = peer.FrameStreamDecoder().feed(data)
    frames_ = [t for t in theirs if isinstance(t, peer.Frame)]
    ours = [e for e in expected if isinstance(e, Frame)]
    assert len(frames_) == len(ours)
    for o, t in zip(ours, frames_):
        _assert_same(o, t)


@fixture_ok(60)
@given(st.binary(min_size=2, max_size=700), st.data(), st.sampled_from([0xC3, 0xCB, 0x43, 0x83]))
def test_our_fragments_reassemble_in_theirs(kernels, apdu, data, control):
    size = data.draw(st.integers(1, min(120, len(apdu) - 1)), "fragment size")
    rx = peer.LinkReassembler(4096)
    parts = fragment(Frame(ServerAddress("000000000001"), 0x10, control, apdu), size)
    for p in parts:
        theirs = peer.decode_frame(p.to_bytes())
        frag = peer.decode_fragment(theirs.payload)
        assert (frag.sequence, int(frag.type), frag.data) == (p.fragment.index, int(p.fragment.type), p.apdu)
        r = rx.accept(frag)
        if p.fragment.type != FragmentType.LAST:
            assert r.acknowledge == p.fragment.index and r.apdu is None
    assert r.apdu == apdu


@fixture_ok(60)
@given(st.binary(min_size=2, max_size=700), st.data(), st.sampled_from([0xC3, 0xCB, 0x43]))
def test_their_fragments_reassemble_in_ours(kernels, apdu, data, control):
    size = data.draw(st.integers(1, min(120, len(apdu) - 1)), "fragment size")
    sa = peer.ServerAddress(bytes=bytes.fromhex("010000000000"), logical=0, type=peer.AddressType.single)
    tx = peer.LinkFragmenter(apdu, size, 4096)
    rx = Reassembler()
    while True:
        frag = tx.current()
        raw = peer.encode_frame(peer.Frame(client=0x10, control=control | 0x20, payload=peer.encode_fragment(frag),
                                           server=sa))
        got, confirm = rx.accept(decode_frame(raw), 0.0)
        if got is not None:
            assert got == apdu and frag.type == peer.FragmentType.last
            return
        # our confirm frame, as the peer reads it, acknowledges its fragment
        ack = peer.decode_fragment(peer.decode_frame(confirm.to_bytes()).payload)
        assert ack.type == peer.FragmentType.acknowledgement and ack.sequence == frag.sequence
        tx.acknowledge(ack.sequence)

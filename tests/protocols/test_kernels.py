"""The compiled kernels and their pure-Python twins give identical results on any input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridhead.protocols import _framing_py as pure
from gridhead.protocols import accel

if not accel.is_compiled("gridhead.protocols._framing"):
    pytest.skip("compiled kernels not built", allow_module_level=True)
from gridhead.protocols import _framing as comp  # noqa: E402

framey = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([0x68, 0x16, 0xFE, 0x00, 0x33, 0xAA, 0x99, 0x04, 0x12]), max_size=300).map(bytes),
)


@settings(max_examples=500)
@given(framey, st.integers(0, 20))
def test_scan_and_decode_agree(buf, pos):
    pos = min(pos, len(buf))
    assert comp.scan645(buf, pos, len(buf)) == pure.scan645(buf, pos, len(buf))
    assert comp.decode645(buf, pos, len(buf)) == pure.decode645(buf, pos, len(buf))
    assert comp.decode645(bytearray(buf), pos, len(buf)) == pure.decode645(bytearray(buf), pos, len(buf))


@settings(max_examples=300)
@given(st.binary(min_size=6, max_size=6))
def test_address_agrees(b):
    assert comp.address645(b, 0) == pure.address645(b, 0)


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_scramble_round_trip(b):
    assert comp.scramble(b) == pure.scramble(b)
    assert comp.unscramble(comp.scramble(b), 0, len(b)) == b == pure.unscramble(pure.scramble(b), 0, len(b))
    assert comp.checksum645(b, 0, len(b)) == pure.checksum645(b, 0, len(b)) == sum(b) % 256


spec_field = st.tuples(st.integers(1, 12), st.sampled_from([0, 1, 2]))


@settings(max_examples=500)
@given(st.lists(spec_field, min_size=1, max_size=6), st.data())
def test_bcd_fields_agree(fields, data):
    spec = bytes(x for f in fields for x in f)
    n = sum(f[0] for f in fields)
    raw = data.draw(st.binary(min_size=n, max_size=n))
    assert comp.bcd_fields(raw, 0, spec) == pure.bcd_fields(raw, 0, spec)


@settings(max_examples=500)
@given(st.integers(1, 10), st.sampled_from([0, 1, 2]), st.integers(-(10 ** 20), 10 ** 20))
def test_bcd_encode_inverts_decode(nbytes, kind, value):
    enc = pure.bcd_encode(value, nbytes, kind)
    assert comp.bcd_encode(value, nbytes, kind) == enc
    if enc is not None:
        spec = bytes((nbytes, kind))
        assert pure.bcd_fields(enc, 0, spec) == comp.bcd_fields(enc, 0, spec) == [value]


@st.composite
def frame_streams(draw):
    """Well-checksummed frames of the kinds messages645 decodes itself (and others), with noise."""
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        c = draw(st.sampled_from([0x11, 0x91, 0xB1, 0xD1, 0xD4, 0x14, 0x1C, 0x08, 0x93]))
        di = draw(st.sampled_from([0x00010000, 0x0001FF00, 0x02010100, 0x0201FF00, 0x01010000, 0x04000503, 0x0BAD0BAD]))
        n = draw(st.integers(0, 30))
        data = (di.to_bytes(4, "little") if c in (0x11, 0x91, 0xB1, 0x14) else b"") + draw(st.binary(min_size=n, max_size=n))
        addr = draw(st.sampled_from([b"\x78\x56\x34\x12\x00\x00", b"\xAA" * 6, b"\x78\x56\x34\x12\x00\xAB"]))
        body = b"\x68" + addr + bytes((0x68, c, len(data))) + bytes((b + 0x33) & 0xFF for b in data)
        parts.append(draw(st.binary(max_size=4)) + body + bytes((sum(body) & 0xFF, 0x16)))
    return b"".join(parts) + draw(framey)


@settings(max_examples=400, deadline=None)
@given(frame_streams(), st.integers(0, 8), st.booleans())
def test_messages645_agree(buf, pos, as_bytearray):
    from gridhead.protocols.dlt645 import frame, messages
    for di in (0x00010000, 0x0001FF00, 0x02010100, 0x0201FF00, 0x01010000, 0x04000503):
        messages._learn(di)
    data = bytearray(buf) if as_bytearray else buf
    results = []
    for k in (comp, pure):
        out = []
        status = k.messages645(data, min(pos, len(buf)), len(buf), frame.STREAM_CONTEXT, out)
        exc = status[4]
        results.append((status[:4], exc and (type(exc), str(exc)), [(repr(m), hash(m)) for m in out]))
    assert results[0] == results[1]

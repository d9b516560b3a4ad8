"""DL/T 645-2007 codec: public vectors, every function round-trips, streaming, the fuzz invariant.

Every test takes the ``kernels`` fixture, so it runs against the compiled kernels and the pure twin.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridhead.protocols import dlt645
from gridhead.protocols.dlt645 import (BroadcastTimeSync, ChangeBaudRequest, ChangeBaudResponse,
                              ChangePasswordRequest, ChangePasswordResponse, DemandResetRequest,
                              DemandResetResponse, ErrorResponse, EventResetRequest,
                              EventResetResponse, FreezeRequest, FreezeResponse, Framer,
                              MeterResetRequest, MeterResetResponse, ReadAddressRequest,
                              ReadAddressResponse, ReadFollowUpRequest, ReadFollowUpResponse,
                              ReadRequest, ReadResponse, RemoteCommand, RemoteControlRequest,
                              RemoteControlResponse, TerminalOutputRequest, TerminalOutputResponse,
                              WriteAddressRequest, WriteAddressResponse, WriteRequest, WriteResponse,
                              decode_message)
from gridhead.protocols.dlt645.device_errors import NoRequestedData, Unauthorized
from gridhead.protocols.errors import (ChecksumError, FrameError, LocalProtocolError, ProtocolError,
                              RemoteProtocolError)

from tests.conftest import load_vectors

VECTORS = load_vectors("DL/T 645")
GOOD = [v for v in VECTORS if v["verified"]]
BAD = [v for v in VECTORS if not v["verified"]]


def _bytes(v):
    return bytes.fromhex(v["hex"].replace(" ", ""))


def _messages(data: bytes, chunks):
    fr = Framer()
    out = []
    for c in chunks(data):
        fr.feed(c)
        out.extend(decode_message(f) for f in fr)
    return out


FEEDS = {
    "whole": lambda b: [b],
    "halves": lambda b: [b[: len(b) // 2], b[len(b) // 2:]],
    "bytewise": lambda b: [b[i:i + 1] for i in range(len(b))],
}


# --- the public vectors ---------------------------------------------------------------------------
# What each verified vector must decode to (the vector file's "meaning", checked field by field).
EXPECTED = {
    "FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16": ReadAddressRequest("AAAAAAAAAAAA"),
    "FE FE FE FE 68 12 34 56 78 10 12 68 15 06 45 67 89 AB 43 46 8A 16":
        WriteAddressRequest("131078563412", "121078563412"),
    "FE FE FE FE 68 99 99 99 99 99 99 68 08 06 58 44 35 45 67 89 7A 16": BroadcastTimeSync("563412021125"),
    "68 90 78 56 34 12 00 68 11 04 33 33 33 33 55 16": ReadRequest("001234567890", 0x00000000),
    "68 78 56 34 12 00 00 68 11 04 33 34 34 35 C9 16": ReadRequest("000012345678", 0x02010100),
    "FE FE FE FE 68 00 51 44 18 11 17 68 91 06 35 33 B3 35 36 83 45 16":
        ReadResponse("171118445100", 0x02800002, bytes.fromhex("0350")),
    "68 11 11 11 11 11 11 68 1C 10 33 33 33 33 33 33 33 33 4D 33 57 74 48 45 38 4B 55 16":
        RemoteControlRequest("111111111111", RemoteCommand.TRIP, "180512154124", "00000000", "00000000"),
    "68 99 99 99 99 99 99 68 08 06 84 55 43 38 39 4A 4B 16": BroadcastTimeSync("170605102251"),
    "68 16 00 00 00 15 20 68 11 04 33 33 34 33 FD 16": ReadRequest("201500000016", 0x00010000),
    "FE FE FE FE 68 AA AA AA AA AA AA 68 11 04 33 33 34 33 AE 16": ReadRequest("AAAAAAAAAAAA", 0x00010000),
    "68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16": ReadRequest("000000000001", 0x00010000),
}


def test_every_verified_vector_has_an_expectation():
    assert {v["hex"] for v in GOOD} == set(EXPECTED)
    assert BAD, "the vector file has negative cases"


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("vec", GOOD, ids=lambda v: v["meaning"][:40])
def test_verified_vectors_decode(kernels, vec, feed):
    msgs = _messages(_bytes(vec), FEEDS[feed])
    assert msgs == [EXPECTED[vec["hex"]]]
    # re-encoding gives the same bytes (after the wake-up bytes, which are optional)
    raw = _bytes(vec)
    assert msgs[0].to_bytes(b"") == raw[raw.index(0x68):]


def test_vector_values(kernels):
    by_hex = {v["hex"]: v for v in GOOD}
    freq = _messages(_bytes(by_hex["FE FE FE FE 68 00 51 44 18 11 17 68 91 06 35 33 B3 35 36 83 45 16"]),
                     FEEDS["whole"])[0]
    (v,) = freq.values
    assert (v.raw, v.decimals, v.unit, v.text, v.value) == (5003, 2, "Hz", "50.03", Decimal("50.03"))
    trip = _messages(_bytes(by_hex[
        "68 11 11 11 11 11 11 68 1C 10 33 33 33 33 33 33 33 33 4D 33 57 74 48 45 38 4B 55 16"]), FEEDS["whole"])[0]
    assert trip.to_json()["valid_until"] == "2018-05-12T15:41:24"
    sync = _messages(_bytes(by_hex["68 99 99 99 99 99 99 68 08 06 84 55 43 38 39 4A 4B 16"]), FEEDS["whole"])[0]
    assert sync.to_json()["time"] == "2017-06-05T10:22:51"
    # the library vector's time field is not a calendar date (month 34): decoded, flagged, not invented
    odd = _messages(_bytes(by_hex["FE FE FE FE 68 99 99 99 99 99 99 68 08 06 58 44 35 45 67 89 7A 16"]),
                    FEEDS["whole"])[0]
    assert odd.to_json()["time"] is None and odd.time == "563412021125"


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("vec", BAD, ids=lambda v: v["meaning"][:40])
def test_negative_vectors_rejected(kernels, vec, feed):
    with pytest.raises(ChecksumError) as ei:
        _messages(_bytes(vec), FEEDS[feed])
    assert "checksum mismatch: frame says" in str(ei.value)
    assert ei.value.received != ei.value.computed


def test_checksum_message_names_both_bytes(kernels):
    raw = bytes.fromhex("68371300928139689106333434" "35C756B616")
    fr = Framer()
    fr.feed(raw)
    with pytest.raises(ChecksumError, match=r"^checksum mismatch: frame says B6, computed [0-9A-F]{2}"):
        fr.next_frame()


# --- every function round-trips -------------------------------------------------------------------
T = "251122103000"
ALL_MESSAGES = [
    BroadcastTimeSync.at(dt.datetime(2025, 11, 22, 10, 30, 0)),
    ReadRequest("000012345678", 0x00010000),
    ReadRequest("000012345678", 0x06000001, 4, "2511221000"),
    ReadResponse.of("000012345678", 0x00010000, [123456]),
    ReadResponse.of("000012345678", 0x00010000, [123456], follow_up=True),
    ReadResponse.of("000012345678", 0x0001FF00, [500, 100, 200, 150, 50]),     # block: total + 4 tariffs
    ReadResponse.of("000012345678", 0x01010000, [123456, dt.datetime(2026, 11, 1, 12, 15)]),  # demand + time
    ReadFollowUpRequest("000012345678", 0x00010000, 1),
    ReadFollowUpResponse("000012345678", 0x00010000, bytes.fromhex("56341200"), 1),
    ReadAddressRequest(),
    ReadAddressResponse("000012345678"),
    WriteRequest.of("000012345678", 0x04000102, [dt.time(10, 30, 5)], "02123456", "0000ABCD"),
    WriteResponse("000012345678"),
    WriteAddressRequest("000012345679"),
    WriteAddressResponse("000012345679"),
    FreezeRequest("000012345678"),
    FreezeRequest("000012345678", "99010000"),
    FreezeResponse("000012345678"),
    ChangeBaudRequest("000012345678", 9600),
    ChangeBaudResponse("000012345678", 2400),
    ChangePasswordRequest("000012345678", "02000000", "04123456"),
    ChangePasswordResponse("000012345678", "04123456"),
    DemandResetRequest("000012345678", "02123456", "00000001"),
    DemandResetResponse("000012345678"),
    MeterResetRequest("000012345678", "02123456", "00000001"),
    MeterResetResponse("000012345678"),
    EventResetRequest("000012345678", 0x033000FF, "02123456", "00000001"),
    EventResetResponse("000012345678"),
    RemoteControlRequest.build("000012345678", RemoteCommand.TRIP, dt.datetime(2025, 11, 22, 10, 40),
                               "02123456", "00000001"),
    RemoteControlRequest.build("000012345678", RemoteCommand.PROTECT_ON, T, "02123456", "00000001"),
    RemoteControlResponse("000012345678"),
    TerminalOutputRequest("000012345678", 1),
    TerminalOutputResponse("000012345678", 1),
    ErrorResponse("000012345678", 0x11, 0x02),
    ErrorResponse("000012345678", 0x1C, 0x04),
]


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: f"{type(m).__name__}-{m.control:02X}")
def test_round_trip(kernels, msg):
    raw = msg.to_bytes()
    assert raw[:4] == b"\xFE\xFE\xFE\xFE"
    for feed in FEEDS.values():
        (back,) = _messages(raw, feed)
        assert back == msg and type(back) is type(msg)
    assert back.to_json()["function"]


def test_every_function_of_the_standard_is_covered():
    functions = {(type(m).__name__, m.control) for m in ALL_MESSAGES}
    codes = {c for _, c in functions}
    for fn in (0x08, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D):
        if fn != 0x08:
            assert fn in codes and fn | 0x80 in codes, f"{fn:02X}"
    assert 0x08 in codes and 0xB1 in codes and 0xD1 in codes


def test_control_word_bits(kernels):
    f = dlt645.frame.Frame("000012345678", 0xB1, b"\x00\x00\x01\x00\x00\x00\x00\x00")
    assert (f.from_meter, f.abnormal, f.follow_up, f.function, f.function_name) == (True, False, True, 0x11, "read")
    e = dlt645.frame.Frame("000012345678", 0xD1, b"\x02")
    assert (e.from_meter, e.abnormal, e.follow_up) == (True, True, False)


def test_error_word_names_errors(kernels):
    m = decode_message(dlt645.frame.Frame("000012345678", 0xD1, b"\x06"))
    assert isinstance(m, ErrorResponse)
    assert m.errors == [NoRequestedData, Unauthorized]
    assert [e["name_zh"] for e in m.to_json()["errors"]] == ["无请求数据", "密码错/未授权"]
    exc = m.exception()
    assert isinstance(exc, NoRequestedData) and "password wrong" in str(exc)


def test_requests_are_built_from_intent():
    trip = RemoteControlRequest.build("000012345678", 0x1A, dt.datetime(2026, 1, 2, 3, 4, 5),
                                      "02123456", "00000001")
    d = trip.to_frame().data
    assert d == bytes.fromhex("02563412" "01000000" "1A00" "050403020126")
    sync = BroadcastTimeSync.at(dt.datetime(2017, 6, 5, 10, 22, 51))
    assert sync.to_bytes(b"").hex(" ").upper() == "68 99 99 99 99 99 99 68 08 06 84 55 43 38 39 4A 4B 16"


@pytest.mark.parametrize("bad", [
    lambda: ReadRequest("12345", 0x00010000).to_bytes(),
    lambda: ReadRequest("00001234567G", 0x00010000).to_bytes(),
    lambda: ReadRequest("000012345678", 1 << 32).to_bytes(),
    lambda: RemoteControlRequest.build("000012345678", 0x99, T),
    lambda: RemoteControlRequest.build("000012345678", 0x1A, T, password="xyz"),
    lambda: ChangeBaudRequest("000012345678", 115200).to_bytes(),
    lambda: WriteRequest.of("000012345678", 0x00010000, [1]),          # energy is read-only
    lambda: ReadResponse.of("000012345678", 0x00010000, [10 ** 8]),     # 8 digits only
    lambda: FreezeRequest("000012345678", "1234").to_bytes(),
])
def test_bad_intent_is_a_local_protocol_error(bad):
    with pytest.raises(LocalProtocolError):
        bad()


@pytest.mark.parametrize("raw, match", [
    ("68 78 56 34 12 00 00 68 11 03 33 34 34 C8 16", "read request"),      # DI cut short
    ("68 78 56 34 12 00 00 68 91 07 33 34 34 35 33 33 33 56 16", "data is 3 bytes"),  # voltage is 2 bytes
    ("68 78 56 34 12 00 00 68 5F 00 DF 16", "abnormal bit is set on a master request"),
    ("68 78 56 34 12 00 00 68 9E 00 DF 16", "not defined"),               # no function 1E
])
def test_malformed_messages_are_remote_protocol_errors(kernels, raw, match):
    b = bytearray(bytes.fromhex(raw.replace(" ", "")))
    b[-2] = sum(b[:-2]) & 0xFF  # a valid checksum: the error is in the message, not the frame
    fr = Framer()
    fr.feed(bytes(b))
    with pytest.raises(RemoteProtocolError, match=match):
        for f in fr:
            decode_message(f)


# --- streaming --------------------------------------------------------------------------------------
def test_resynchronises_after_garbage_and_damage(kernels):
    good = [m.to_bytes() for m in ALL_MESSAGES[:6]]
    damaged = bytearray(good[1])
    damaged[-2] ^= 0xFF
    stream = b"\x00\x68\x16garbage\x68" + good[0] + bytes(damaged) + b"\xFE\xFE" + good[2] + good[3]
    fr = Framer()
    fr.feed(stream)
    got, errors = [], []
    while True:
        try:
            f = fr.next_frame()
        except FrameError as exc:
            errors.append(exc)
            continue
        if f is None:
            break
        got.append(decode_message(f))
    assert got == [ALL_MESSAGES[0], ALL_MESSAGES[2], ALL_MESSAGES[3]]
    assert len(errors) == 1 and isinstance(errors[0], ChecksumError)
    assert fr.pending == 0


def test_buffer_stays_bounded_on_endless_garbage(kernels):
    fr = Framer()
    for _ in range(2000):
        fr.feed(b"\x68\x01\x02\x03\x04\x05\x06" * 10)  # candidates that never close
        assert list(fr) == []
        assert fr.pending <= 267 + 70


def test_decode_function_style(kernels):
    raw = b"noise" + ReadRequest("000012345678", 0x00010000).to_bytes()
    used, f = dlt645.decode(raw)
    assert f is not None and used == len(raw)
    used, f = dlt645.decode(raw[:-3])
    assert f is None and used == len(b"noise") + 4 and raw[used] == 0x68  # keeps the frame's start


# --- properties -------------------------------------------------------------------------------------
@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600), st.integers(1, 64))
def test_fuzz_invariant(kernels, data, chunk):
    """Arbitrary bytes give frames or a ProtocolError subclass, never anything else."""
    fr = Framer()
    for i in range(0, len(data), chunk):
        fr.feed(data[i:i + chunk])
        while True:
            try:
                f = fr.next_frame()
                if f is None:
                    break
                decode_message(f).to_json()
            except ProtocolError:
                continue


@st.composite
def frames_with_ff(draw):
    """Frame-shaped inputs: random control, random data, right checksum — the codec's hard cases."""
    addr = draw(st.binary(min_size=6, max_size=6))
    c = draw(st.integers(0, 255))
    data = draw(st.binary(max_size=40))
    body = b"\x68" + addr + bytes((0x68, c, len(data))) + bytes((b + 0x33) & 0xFF for b in data)
    return body + bytes((sum(body) & 0xFF, 0x16))


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames_with_ff())
def test_fuzz_well_framed(kernels, raw):
    fr = Framer()
    fr.feed(raw)
    try:
        for f in fr:
            decode_message(f).to_json()
    except ProtocolError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(ALL_MESSAGES), min_size=1, max_size=8), st.binary(max_size=20),
       st.integers(1, 50))
def test_stream_of_messages_with_noise(kernels, msgs, noise, chunk):
    noise = noise.replace(b"\x68", b"\x00")  # noise without a start byte cannot fake a frame
    stream = b"".join(noise + m.to_bytes() for m in msgs)
    got = _messages(stream, lambda b: [b[i:i + chunk] for i in range(0, len(b), chunk)])
    assert got == msgs

"""The `gridhead frame` commands, run as a user runs them: the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import load_vectors

VECTORS = load_vectors("DL/T 645")


def gridhead(*args, input=None, env=None):
    exe = shutil.which("gridhead")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "gridhead.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, input=input, env=env, timeout=60)


def _objects(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("vec", [v for v in VECTORS if v["verified"]], ids=lambda v: v["meaning"][:40])
def test_decode_every_valid_vector(vec):
    r = gridhead("frame", "decode", vec["hex"])
    assert r.returncode == 0, r.stderr
    (obj,) = _objects(r.stdout)
    assert obj["protocol"] == "DL/T 645-2007"
    raw = vec["hex"].upper()
    assert raw.endswith(obj["raw"])
    assert obj["address"] and obj["function"] and obj["direction"] in ("request", "response")


@pytest.mark.parametrize("vec", [v for v in VECTORS if not v["verified"]], ids=lambda v: v["meaning"][:40])
def test_reject_every_bad_vector(vec):
    r = gridhead("frame", "decode", vec["hex"])
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checksum mismatch: frame says "), r.stderr
    assert "Traceback" not in r.stderr


def test_decode_values_with_units():
    r = gridhead("frame", "decode", "FE FE FE FE 68 00 51 44 18 11 17 68 91 06 35 33 B3 35 36 83 45 16")
    (obj,) = _objects(r.stdout)
    assert obj["address"] == "171118445100" and obj["di"] == "02800002" and obj["control"] == "91"
    assert obj["values"][0]["value"] == "50.03" and obj["values"][0]["unit"] == "Hz"


def test_frames_split_across_arguments_and_noise():
    a = "00 11 22 68 16 00 00 00 15 20 68 11"
    b = "04 33 33 34 33 FD 16 99 88 FE FE 68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16 77"
    r = gridhead("frame", "decode", a, b)
    assert r.returncode == 0, r.stderr
    objs = _objects(r.stdout)
    assert [o["address"] for o in objs] == ["201500000016", "000000000001"]
    assert all(o["di"] == "00010000" and o["di_name"] for o in objs)


def test_decode_reads_stdin():
    r = gridhead("frame", "decode", input="68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16\n")
    assert r.returncode == 0 and _objects(r.stdout)[0]["address"] == "000000000001"


@pytest.mark.parametrize("args, message", [
    (["68 01 00 0G"], "not a hex digit"),
    (["68 01 00 0"], "odd number of hex digits"),
    (["68 01 00 00 00 00 00 68 11 04 33"], "cut short"),
    (["00 11 22"], "no frame found"),
    (["68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 15"], "ends with 15, not 16"),
])
@pytest.mark.parametrize("protocol", [[], ["--protocol", "645"]], ids=["auto", "645"])
def test_bad_input_is_one_line_and_exit_2(args, message, protocol):
    r = gridhead("frame", "decode", *protocol, *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert r.stdout == ""


def _checksummed(hex_frame: str) -> str:
    b = bytearray(bytes.fromhex(hex_frame))
    b[-2] = sum(b[:-2]) & 0xFF
    return b.hex()


@pytest.mark.parametrize("frame_hex, message", [
    ("68 78 56 34 12 00 00 68 9E 00 00 16", "not defined by DL/T 645-2007"),      # no function 1EH
    ("68 78 56 34 12 00 00 68 91 07 33 34 34 35 33 33 33 00 16", "data is 3 bytes"),  # voltage is 2 bytes
    ("68 78 56 34 12 00 00 68 1C 10 33 33 33 33 33 33 33 33 99 33 57 74 48 45 38 4B 00 16", "N1=66"),
])
@pytest.mark.parametrize("protocol", [[], ["--protocol", "645"]], ids=["auto", "645"])
def test_a_well_framed_but_wrong_message_is_one_line_and_exit_2(frame_hex, message, protocol):
    r = gridhead("frame", "decode", *protocol, _checksummed(frame_hex.replace(" ", "")))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr


@pytest.mark.parametrize("vec", [v for v in VECTORS if not v["verified"]], ids=lambda v: v["meaning"][:40])
def test_reject_every_bad_vector_as_645(vec):
    r = gridhead("frame", "decode", "--protocol", "645", vec["hex"])
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checksum mismatch: frame says "), r.stderr


@pytest.mark.parametrize("args, expected", [
    (["read", "--address", "000012345678", "--di", "00010000"],
     "FE FE FE FE 68 78 56 34 12 00 00 68 11 04 33 33 34 33 C6 16"),
    (["--no-preamble", "read", "--address", "201500000016", "--di", "00010000"],
     "68 16 00 00 00 15 20 68 11 04 33 33 34 33 FD 16"),
    (["--no-preamble", "time-sync", "--time", "2017-06-05T10:22:51"],
     "68 99 99 99 99 99 99 68 08 06 84 55 43 38 39 4A 4B 16"),
    (["--no-preamble", "remote-control", "--address", "111111111111", "--command", "trip", "--password",
      "00000000", "--valid-until", "2018-05-12T15:41:24"],
     "68 11 11 11 11 11 11 68 1C 10 33 33 33 33 33 33 33 33 4D 33 57 74 48 45 38 4B 55 16"),
    (["read-address"], "FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16"),
])
def test_encode(args, expected):
    r = gridhead("frame", "encode", "645", *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected


def test_encoded_frames_decode_back():
    r = gridhead("frame", "encode", "645", "remote-control", "-a", "000012345678", "--command", "protect-on")
    d = gridhead("frame", "decode", r.stdout.strip())
    (obj,) = _objects(d.stdout)
    assert obj["function"] == "remote_control" and obj["command"] == "protect_on"


@pytest.mark.parametrize("args, message", [
    (["read", "--address", "12345", "--di", "00010000"], "must be 12 digits"),
    (["read", "--address", "000012345678", "--di", "xyz"], "neither 8 hex digits"),
    (["remote-control", "-a", "000012345678", "--command", "trip", "--valid-until", "tomorrow"], "ISO 8601"),
])
def test_encode_bad_input(args, message):
    r = gridhead("frame", "encode", "645", *args)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_status_word_bits_are_named():
    from gridhead.protocols.dlt645 import ReadResponse
    raw = ReadResponse.of("000012345678", 0x04000503, [1 << 4 | 1 << 12]).to_bytes().hex()
    (obj,) = _objects(gridhead("frame", "decode", raw).stdout)
    assert obj["di_name"] == "status_word_3"
    assert {"relay_open", "protected"} <= set(obj["values"][0]["flags"])


@pytest.mark.parametrize("args, message", [
    (["frame", "encode", "645", "read", "--address", "000012345678"], "Missing option '--di'"),
    (["frame", "encode", "645", "read", "-a", "000012345678", "--di", "00010000", "--bogus"], "No such option"),
    (["no-such-command"], "No such command"),
])
def test_usage_errors_are_one_line_and_exit_2(args, message):
    r = gridhead(*args)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "--help" in lines[0], r.stderr


def test_tables_align_cjk_by_display_width(capsys):
    """A CJK character takes two terminal columns: the figures after a 类别 column still line up."""
    from gridhead.cli import _echo_aligned
    _echo_aligned([["类别", "n"], ["合格", "1"], ["ok", "22"]], "l")
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["类别   n", "合格   1", "ok    22"]

"""`gridhead frame decode` / `frame encode 698` on DL/T 698.45 frames (CliRunner, in process)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gridhead.cli import cli
from tests.conftest import load_vectors

FRAMED = [v for v in load_vectors("DL/T 698.45") if v["protocol"] == "DL/T 698.45"]


def run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("vec", FRAMED, ids=lambda v: v["meaning"][:40])
def test_every_framed_vector(vec):
    r = run("frame", "decode", vec["hex"])
    if "NEGATIVE CASE" in vec["meaning"]:
        assert r.exit_code == 2 and r.stdout == ""
        assert len(r.stderr.strip().splitlines()) == 1 and "mismatch" in r.stderr
        return
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["protocol"] == "DL/T 698.45" and out["raw"] == " ".join(vec["hex"].upper().split())
    assert out["apdu"].split("-")[0] in vec["meaning"]


def test_get_response_values_are_named_and_scaled():
    v = next(v for v in FRAMED if v["meaning"].startswith("GET-Response-Normal 00100200 array(5)"))
    out = json.loads(run("frame", "decode", "--protocol", "698", v["hex"]).stdout)
    assert out["apdu"] == "GET-Response-Normal" and out["service"] == "GET-Response" and out["piid"] == 0
    res = out["result"]
    assert res["object"] == "forward_active_energy" and res["unit"] == "kWh"
    assert res["value"]["total"] == {"value": "1234.56", "raw": 123456, "scaler": -2, "unit": "kWh"}
    assert res["value"]["tariff_4"]["value"] == "634.56"


def test_report_record_list_and_proxy_response():
    rep = next(v for v in FRAMED if "REPORT-Notification-RecordList" in v["meaning"])
    out = json.loads(run("frame", "decode", rep["hex"]).stdout)
    assert out["apdu"] == "REPORT-Notification-RecordList" and out["piid"] == 9
    assert out["server"]["address"] == "111111111111" and out["client"] == 0xA0
    rec = out["results"][0]
    assert rec["oad"] == "31060200" and len(rec["columns"]) == 6 and len(rec["rows"]) == 1
    assert rec["rows"][0][1]["value"] == "2025-04-10T11:29:38"
    prx = next(v for v in FRAMED if "ProxyTransCommandResponse" in v["meaning"])
    out = json.loads(run("frame", "decode", prx["hex"]).stdout)
    assert out["apdu"] == "PROXY-Response-TransCommand" and out["service"] == "PROXY-Response"
    assert out["port"]["object"] == "rs485" and out["answer"].startswith("FEFEFEFE68")


def test_encode_then_decode():
    r = run("frame", "encode", "698", "--address", "000000000001", "get", "--oad", "00100200")
    assert r.exit_code == 0
    assert r.stdout.strip() == "68 17 00 43 05 01 00 00 00 00 00 00 A7 E6 05 01 01 00 10 02 00 00 FE 19 16"
    out = json.loads(run("frame", "decode", r.stdout).stdout)
    assert out["apdu"] == "GET-Request-Normal" and out["oad"]["oad"] == "00100200"
    r = run("frame", "encode", "698", "-a", "000000000001", "get", "--oad", "00100200", "--oad", "20000200")
    assert json.loads(run("frame", "decode", r.stdout).stdout)["apdu"] == "GET-Request-NormalList"
    r = run("frame", "encode", "698", "-a", "000000000001", "get-record", "--oad", "50040200",
            "--columns", "20210200,00100200")
    out = json.loads(run("frame", "decode", r.stdout).stdout)
    assert out["apdu"] == "GET-Request-Record" and [c["oad"] for c in out["record"]["rcsd"]] == ["20210200", "00100200"]
    for cmd, method in [("trip", "trip"), ("close", "close"), ("protect-on", "protect_on")]:
        r = run("frame", "encode", "698", "-a", "000000000001", "action", cmd)
        out = json.loads(run("frame", "decode", r.stdout).stdout)
        assert out["apdu"] == "ACTION-Request-Normal" and out["omd"]["method"] == method
    r = run("frame", "encode", "698", "-a", "111111111111", "--piid", "0", "link-response",
            "--request-time", "2025-04-11T09:12:40", "--receive-time", "2025-04-11T09:12:41")
    out = json.loads(run("frame", "decode", r.stdout).stdout)
    assert out["apdu"] == "LINK-Response" and out["clock_trusted"] and out["control"] == "01"


@pytest.mark.parametrize("args", [
    ("frame", "encode", "698", "-a", "000000000001", "get", "--oad", "0010020"),
    ("frame", "encode", "698", "-a", "00000000000G", "get", "--oad", "00100200"),
    ("frame", "decode", "--protocol", "698", "68 17 00 43 05 01 00 00 00 00 00 00 A7 E6 05 01 01 00 10 02"),
    ("frame", "decode", "--protocol", "698", "68 17 00 43 05 01 00 00 00 00 00 00 A7 E6 05 09 01 00 10 02 00 00 12 C7 16"),
])
def test_bad_input_is_one_line_and_exit_2(args):
    r = run(*args)
    assert r.exit_code == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: ")

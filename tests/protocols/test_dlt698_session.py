"""The master's DL/T 698.45 session: LINK answers, PIID matching, REPORT acknowledgement, deadlines.

Driven with the captured exchanges of ../shared/vectors/frames.json where there are some, and with
frames built by the link layer for the rest; every test runs under the compiled kernels and the twins.
"""

from __future__ import annotations

import datetime as dt

import pytest

from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698.frame import Frame, ServerAddress, decode_frame, fragment
from gridhead.protocols.dlt698.session import (CLOSED, IDLE, NEED_DATA, ONLINE, TRANSITIONS, AcceptLink,
                                      AcknowledgeReport, ClientSession, LinkLost, LinkRequested, Report,
                                      Response, Timeout, Unmatched, date_time)
from gridhead.protocols.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

# captured (wenyl/DLT698-API, 4G carbon meter; see the vector file): login, the master's answer, a report
LOGIN = bytes.fromhex("68 1E 00 81 05 11 11 11 11 11 11 00 9E 76 01 00 00 00 B4 07 E9 04 0B 05 09 0C 28 00 00 8A 8B 16")
LOGIN_ANSWER = bytes.fromhex("68 30 00 01 05 11 11 11 11 11 11 A0 14 BC 81 00 00 07 E9 04 0B 05 09 0C 28 00 00 07 E9 04"
                             " 0B 05 09 0C 27 01 B8 07 E9 04 0B 05 09 0C 27 01 BC B1 98 16")
REPORT = bytes.fromhex("68 58 00 83 05 11 11 11 11 11 11 A0 1C 70 88 02 09 01 31 06 02 00 06 00 20 22 02 00 00 20 1E"
                       " 02 00 00 20 20 02 00 00 20 24 02 00 00 33 00 02 00 00 33 09 02 06 01 01 06 00 00 00 18 1C 07"
                       " E9 04 0A 0B 1D 26 00 16 00 01 01 02 02 51 45 00 02 00 11 01 04 08 80 00 00 1B C2 16")
METER = ServerAddress("111111111111")
T0 = dt.datetime(2025, 4, 11, 9, 12, 39, 440_000)


def _events(s: ClientSession):
    out = []
    while (e := s.next_event()) is not NEED_DATA:
        out.append(e)
    return out


def _answer(apdu: A.Apdu, control: int = 0xC3, server=METER) -> bytes:
    return Frame(server, 0xA0, control, apdu.to_bytes()).to_bytes()


def _logged_in(kernels=None) -> ClientSession:
    s = ClientSession(client=0xA0)
    s.receive_data(LOGIN, T0)
    (ev,) = _events(s)
    s.send(AcceptLink(ev, clock_trusted=False), T0 + dt.timedelta(milliseconds=4))
    return s


def test_table_covers_every_state():
    assert set(TRANSITIONS) == {IDLE, ONLINE, CLOSED}
    assert all(nxt in TRANSITIONS for row in TRANSITIONS.values() for nxt in row.values())


def test_login_answer_is_byte_identical_to_the_capture(kernels):
    s = ClientSession(client=0xA0)
    assert s.state == IDLE and s.server is None
    for i in range(len(LOGIN)):                                    # byte at a time
        s.receive_data(LOGIN[i:i + 1], T0)
    (ev,) = _events(s)
    assert isinstance(ev, LinkRequested) and ev.request.type == A.LINK_LOGIN and ev.request.heartbeat_s == 180
    assert ev.server == METER and s.server == METER
    assert ev.received_at == (2025, 4, 11, 5, 9, 12, 39, 440)      # Friday = 5 (Sunday = 0)
    out = s.send(AcceptLink(ev, clock_trusted=False), T0 + dt.timedelta(milliseconds=4))
    assert out == LOGIN_ANSWER
    assert s.state == ONLINE
    with pytest.raises(LocalProtocolError, match="already answered"):
        s.send(AcceptLink(ev), T0)


def test_clock_trusted_and_refusal(kernels):
    s = ClientSession()
    s.receive_data(LOGIN, T0)
    (ev,) = _events(s)
    resp = A.decode_apdu(decode_frame(s.send(AcceptLink(ev, outcome=1), T0)).apdu)
    assert resp.clock_trusted and resp.outcome == 1 and s.state == IDLE


def test_request_response_matching_by_piid(kernels):
    s = _logged_in()
    raw = s.send(A.get("00100200", piid=33), T0)
    f = decode_frame(raw)
    assert f.control == 0x43 and f.server == METER and f.client == 0xA0
    req = A.decode_apdu(f.apdu)
    assert req.piid == 0 and req.oad == 0x00100200                # the session's PIID, not the caller's
    raw2 = s.send(A.get("40000200"), T0, priority=True)
    req2 = A.decode_apdu(decode_frame(raw2).apdu)
    assert req2.piid == 0x81 and s.outstanding == 2
    # answers out of order, each goes to its request
    r2 = A.GetResponseNormal(0x01, A.ResultNormal(0x40000200, None, 0))
    r1 = A.decode_apdu(bytes.fromhex("85 01 00 00 10 02 00 01 01 01 06 00 01 E2 40 00 00"))
    s.receive_data(_answer(r2) + _answer(r1), T0)
    e2, e1 = _events(s)
    assert e2 == Response(req2, r2, METER) and e1 == Response(req, r1, METER)
    assert s.outstanding == 0
    # a response nobody waits for
    s.receive_data(_answer(r1), T0)
    assert _events(s) == [Unmatched(r1, METER)]


def test_response_of_another_service_does_not_match(kernels):
    s = _logged_in()
    s.send(A.get("00100200"), T0)
    wrong = A.SetResponseNormal(0, 0x00100200, 0)
    s.receive_data(_answer(wrong), T0)
    assert _events(s) == [Unmatched(wrong, METER)] and s.outstanding == 1
    err = A.ErrorResponse(0, 2)                                   # ERROR-Response answers anything
    s.receive_data(_answer(err), T0)
    (ev,) = _events(s)
    assert isinstance(ev, Response) and ev.response == err


def test_timeouts_are_deadlines_given_by_the_caller(kernels):
    s = ClientSession(METER, timeout_s=10)
    s.send(A.get("00100200"), T0)
    s.send(A.get("00100201"), T0 + dt.timedelta(seconds=5))
    assert s.next_deadline == T0 + dt.timedelta(seconds=10)
    s.expire(T0 + dt.timedelta(seconds=9.9))
    assert _events(s) == []
    s.expire(T0 + dt.timedelta(seconds=12))
    (ev,) = _events(s)
    assert isinstance(ev, Timeout) and ev.request.oad == 0x00100200 and s.outstanding == 1
    late = A.GetResponseNormal(0, A.ResultNormal(0x00100200, None, 0))
    s.receive_data(_answer(late), T0 + dt.timedelta(seconds=13))
    assert _events(s) == [Unmatched(late, METER)]
    # the freed service number is used again only after the others (round robin)
    assert A.decode_apdu(decode_frame(s.send(A.get("00100200"), T0)).apdu).piid == 2


def test_piid_exhaustion(kernels):
    s = ClientSession(METER)
    for _ in range(64):
        s.send(A.get("00100200"), T0)
    with pytest.raises(LocalProtocolError, match="all 64 PIID"):
        s.send(A.get("00100200"), T0)


def test_report_acknowledged_with_report_response(kernels):
    s = _logged_in()
    half = len(REPORT) // 2
    s.receive_data(REPORT[:half], T0)
    assert s.next_event() is NEED_DATA
    s.receive_data(REPORT[half:], T0)
    (ev,) = _events(s)
    assert isinstance(ev, Report) and ev.notification.NAME == "REPORT-Notification-RecordList"
    f = decode_frame(s.send(AcknowledgeReport(ev), T0))
    assert f.control == 0x03 and f.server == METER
    ack = A.decode_apdu(f.apdu)
    assert ack == A.ReportResponseRecordList(0x09, (0x31060200,))
    with pytest.raises(LocalProtocolError, match="already acknowledged"):
        s.send(AcknowledgeReport(ev), T0)


def test_heartbeat_keeps_online_and_missed_heartbeats_lose_the_link(kernels):
    s = _logged_in()
    assert s.link_deadline == T0 + dt.timedelta(seconds=3 * 180)
    beat = Frame(METER, 0, 0x81, A.LinkRequest(1, A.LINK_HEARTBEAT, 180, date_time(T0)).to_bytes()).to_bytes()
    t1 = T0 + dt.timedelta(seconds=180)
    s.receive_data(beat, t1)
    (ev,) = _events(s)
    s.send(AcceptLink(ev), t1)
    assert s.state == ONLINE and s.link_deadline == t1 + dt.timedelta(seconds=540)
    s.expire(t1 + dt.timedelta(seconds=539))
    assert _events(s) == [] and s.state == ONLINE
    s.expire(t1 + dt.timedelta(seconds=541))
    assert _events(s) == [LinkLost(t1)] and s.state == IDLE


def test_logout_closes(kernels):
    s = _logged_in()
    out = Frame(METER, 0, 0x81, A.LinkRequest(2, A.LINK_LOGOUT, 180, date_time(T0)).to_bytes()).to_bytes()
    s.receive_data(out, T0)
    (ev,) = _events(s)
    s.send(AcceptLink(ev), T0)
    assert s.state == CLOSED
    with pytest.raises(LocalProtocolError, match="cannot send request in state CLOSED"):
        s.send(A.get("00100200"), T0)
    s.receive_data(LOGIN, T0)
    with pytest.raises(RemoteProtocolError, match="cannot recv LINK-Request in state CLOSED"):
        s.next_event()


def test_fragmented_response_is_confirmed_and_reassembled(kernels):
    s = _logged_in()
    s.send(A.get("00100200"), T0)
    resp = A.decode_apdu(bytes.fromhex("85 01 00 00 10 02 00 01 01 05" + "06 00 01 E2 40" * 5 + "00 00"))
    parts = fragment(Frame(METER, 0xA0, 0xC3, resp.to_bytes()), 8)
    for p in parts[:-1]:
        s.receive_data(p.to_bytes(), T0)
        assert s.next_event() is NEED_DATA
        confirm = decode_frame(s.data_to_send())
        assert confirm.fragment.index == p.fragment.index and not confirm.from_server
    s.receive_data(parts[-1].to_bytes(), T0)
    (ev,) = _events(s)
    assert isinstance(ev, Response) and ev.response == resp and s.data_to_send() == b""


def test_bad_input_gives_protocol_errors_only(kernels):
    s = _logged_in()
    # a client-direction frame, a client APDU from the server, an undecodable APDU, a bad checksum
    for raw in [Frame(METER, 0, 0x43, A.get("00100200").to_bytes()).to_bytes(),
                _answer(A.get("00100200")),
                Frame(METER, 0, 0xC3, b"\x85\x7F").to_bytes(),
                LOGIN[:-3] + b"\x00\x00\x16"]:
        s.receive_data(raw, T0)
        with pytest.raises(ProtocolError):
            s.next_event()
        assert s.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError):
        s.send(A.GetResponseNormal(0, A.ResultNormal(0x00100200, None, 0)), T0)
    with pytest.raises(LocalProtocolError, match="no server address"):
        ClientSession().send(A.get("00100200"), T0)

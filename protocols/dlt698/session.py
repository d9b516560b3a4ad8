"""The master's (client's) side of a DL/T 698.45 session, sans-I/O, in the style of h11.

Bytes from the link go in with :meth:`ClientSession.receive_data`; :meth:`ClientSession.next_event`
hands out what they mean (a terminal's LINK-Request, a response matched to its request, a
REPORT-Notification, a timeout); :meth:`ClientSession.send` turns what the master wants to say (a
request APDU, the answer to a LINK-Request or to a report) into the bytes to write.  The caller owns
the clock: every call that needs the time takes ``now`` (a naive ``datetime`` in the terminals' local
time, as DL/T 698.45 date_time is), and deadlines are datetimes it compares against.

What the session does for the caller (DL/T 698.45-2017 clause 7):

- PIID (服务序号-优先级, 7.2): bits 0-5 a service number 0-63, bit 7 priority.  :meth:`send` gives
  each request a free service number (round robin) and matches each response by it; SECURITY APDUs
  carry no PIID and are matched oldest first.  A response no request waits for (one that comes after
  its request timed out) is an :class:`Unmatched` event, not an error.
- LINK (预连接, 7.4.1): the terminal logs in, beats, logs out; each LINK-Request must be answered with
  a LINK-Response carrying the request time, the time the master received it and the time it
  answers (the terminal estimates its clock error from the three).  A terminal that misses
  ``missed_heartbeats`` heartbeat periods is declared lost (:class:`LinkLost`).
- REPORT (上报, 7.4.7): each REPORT-Notification is acknowledged with the REPORT-Response of the same
  PIID listing the OADs reported.
- Link-layer fragments (分帧) are reassembled and confirmed; the confirm frames wait in
  :meth:`data_to_send`.

All state transitions are in :data:`TRANSITIONS`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import LocalProtocolError, RemoteProtocolError
from . import apdu as A
from .axdr import DateTime
from .frame import MAX_FRAME, AddressType, Frame, Framer, Reassembler, ServerAddress

# --- states and what moves them ---------------------------------------------------------------------
IDLE = "IDLE"        # connected, the terminal not logged in (or a link the master opened to a meter)
ONLINE = "ONLINE"    # logged in, heartbeats arriving
CLOSED = "CLOSED"    # logged out: nothing more may be sent

RECV_LINK = "recv LINK-Request"                 # any type: answer owed, state kept until answered
SEND_LINK_ACCEPT = "send LINK-Response ok"      # to a login or heartbeat
SEND_LINK_REFUSE = "send LINK-Response refused"  # duplicate address, illegal device, capacity full
SEND_LOGOUT_ACK = "send LINK-Response to logout"
LINK_LOST = "heartbeats missed"
SEND_REQUEST = "send request"
RECV_RESPONSE = "recv response"
RECV_REPORT = "recv REPORT-Notification"
SEND_REPORT_ACK = "send REPORT-Response"
TIMEOUT = "request timed out"

_EVERYWHERE = {RECV_LINK, SEND_REQUEST, RECV_RESPONSE, RECV_REPORT, SEND_REPORT_ACK, TIMEOUT}
TRANSITIONS: dict[str, dict[str, str]] = {
    IDLE: {**{e: IDLE for e in _EVERYWHERE}, SEND_LINK_ACCEPT: ONLINE, SEND_LINK_REFUSE: IDLE,
           SEND_LOGOUT_ACK: CLOSED},
    ONLINE: {**{e: ONLINE for e in _EVERYWHERE}, SEND_LINK_ACCEPT: ONLINE, SEND_LINK_REFUSE: IDLE,
             SEND_LOGOUT_ACK: CLOSED, LINK_LOST: IDLE},
    # after a logout only late answers are taken (and their timeouts): nothing may be sent
    CLOSED: {RECV_RESPONSE: CLOSED, TIMEOUT: CLOSED},
}

# control words of the frames the master sends (clause 5.3.4): DIR 0; PRM 1 for its own requests,
# PRM 0 when it answers an exchange the terminal started (LINK: function 1, REPORT: function 3)
C_REQUEST, C_LINK_RESPONSE, C_REPORT_RESPONSE = 0x43, 0x01, 0x03
_EPOCH = _dt.datetime(2000, 1, 1)


# --- events -------------------------------------------------------------------------------------------
class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()   # next_event(): no whole frame yet, feed more bytes


@dataclass(frozen=True, slots=True)
class LinkRequested:
    """The terminal sent a LINK-Request (0 login, 1 heartbeat, 2 logout): answer with :class:`AcceptLink`."""

    request: A.LinkRequest
    server: ServerAddress
    received_at: DateTime


@dataclass(frozen=True, slots=True)
class Response:
    """A response matched to the request it answers (by PIID).  ``decoded``: what the session's
    ``response_decoder`` made of it, for a request sent with ``columnar=True`` (else None)."""

    request: A.Apdu
    response: A.Apdu
    server: ServerAddress
    decoded: object = dataclasses.field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Report:
    """A REPORT-Notification: acknowledge it with :class:`AcknowledgeReport`.  ``decoded``: what the
    session's ``report_decoder`` made of the APDU (None when the general decoder did)."""

    notification: A.Apdu
    server: ServerAddress
    decoded: object = dataclasses.field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Timeout:
    """No response to ``request`` by its deadline; its PIID is free again."""

    request: A.Apdu
    deadline: _dt.datetime


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A response that no outstanding request waits for (late, after its timeout, or a duplicate)."""

    response: A.Apdu
    server: ServerAddress


@dataclass(frozen=True, slots=True)
class LinkLost:
    """The terminal missed its heartbeats: it is no longer considered online."""

    last_seen: _dt.datetime | None   # the last LINK-Request accepted


@dataclass(frozen=True, slots=True)
class AcceptLink:
    """Answer a :class:`LinkRequested` (``outcome`` 0 ok, 1 duplicate address, 2 illegal device, 3 full)."""

    link: LinkRequested
    outcome: int = 0
    clock_trusted: bool = True


@dataclass(frozen=True, slots=True)
class AcknowledgeReport:
    report: Report


def date_time(t: _dt.datetime) -> DateTime:
    """A datetime as DL/T 698.45 date_time: day_of_week 0 = Sunday, milliseconds."""
    return DateTime(t.year, t.month, t.day, (t.weekday() + 1) % 7, t.hour, t.minute, t.second,
                    t.microsecond // 1000)


@dataclass(slots=True)
class _Pending:
    request: A.Apdu
    deadline: _dt.datetime
    columnar: bool = False          # its answer goes through the session's response_decoder


# what next_event() gives
Event = LinkRequested | Response | Report | Timeout | Unmatched | LinkLost
# report_decoder / response_decoder: APDU bytes -> (the APDU, what the decoder made of it), or None
FastDecoder = Callable[[bytes], "tuple[A.Apdu, object] | None"]


class ClientSession:
    """One link to one terminal or meter, seen from the master.

    ``server``: the address requests go to (learnt from the terminal's LINK-Request if ``None``);
    ``client``: the master's client address CA; ``timeout_s``: how long a request may wait for its
    response; ``max_frame``: frames longer than this are refused.  ``report_decoder``: optional
    ``f(apdu_bytes) -> (notification, decoded) | None`` tried first on REPORT-Notification APDUs (88H),
    e.g. a decoder straight into columns; None = decode it the general way.  ``notification`` must
    carry the PIID and the OADs the REPORT-Response lists.  ``response_decoder``: the same for the
    answer (85H / 89H) to a request sent with ``columnar=True``; ``response`` must carry the PIID.
    """

    def __init__(self, server: ServerAddress | None = None, client: int = 0x10, *, timeout_s: float = 30.0,
                 max_frame: int = MAX_FRAME, max_apdu: int = 1 << 20, missed_heartbeats: int = 3,
                 report_decoder: FastDecoder | None = None, response_decoder: FastDecoder | None = None) -> None:
        self.report_decoder = report_decoder
        self.response_decoder = response_decoder
        self.server = server
        self.client = client
        self.timeout = _dt.timedelta(seconds=timeout_s)
        self.missed_heartbeats = missed_heartbeats
        self.state = IDLE
        self._framer = Framer(max_frame)
        self._reassembler = Reassembler(max_apdu, timeout_s)
        self._events: list[Event] = []
        self._out = bytearray()
        self._pending: dict[int, _Pending] = {}       # service number -> request (SECURITY: keys 64+)
        self._next_sn = 0
        self._next_security = 64
        self._owed_links: list[LinkRequested] = []
        self._owed_reports: list[Report] = []
        self._rx_at: _dt.datetime | None = None
        self.link_deadline: _dt.datetime | None = None
        self._last_link: _dt.datetime | None = None
        self.last_request: A.Apdu | None = None       # the request :meth:`send` framed last, PIID assigned

    # --- the table ------------------------------------------------------------------------------------
    def _move(self, what: str, theirs: bool) -> None:
        nxt = TRANSITIONS[self.state].get(what)
        if nxt is None:
            err = RemoteProtocolError if theirs else LocalProtocolError
            raise err(f"DL/T 698.45 session: cannot {what} in state {self.state}")
        self.state = nxt

    # --- bytes in, events out -------------------------------------------------------------------------
    def receive_data(self, data: bytes, now: _dt.datetime) -> None:
        """Bytes read from the link at ``now`` (the receive time a LINK-Response reports)."""
        self._rx_at = now
        self._framer.feed(data)

    def next_event(self) -> Event | _NeedData:
        """The next event, or :data:`NEED_DATA`.  A damaged frame raises its FrameError once (the
        framer has already stepped past it: call again to go on)."""
        while not self._events:
            frame = self._framer.next_frame()
            if frame is None:
                return NEED_DATA
            self._frame(frame)
        return self._events.pop(0)

    def _frame(self, frame: Frame) -> None:
        if not frame.from_server:
            raise RemoteProtocolError(f"frame with DIR=0 (client to server) from the server side, C={frame.control:02X}")
        rx_at = self._rx_at
        assert rx_at is not None  # frames come from receive_data(), which sets it
        if frame.fragment is not None:
            # the reassembler counts seconds; any fixed epoch will do
            apdu_bytes, confirm = self._reassembler.accept(frame, (rx_at - _EPOCH).total_seconds())
            if confirm is not None:
                self._out += confirm.to_bytes()
            if apdu_bytes is None:
                return
        else:
            apdu_bytes = frame.apdu
        fast: tuple[A.Apdu, object] | None = None
        if self.report_decoder is not None and apdu_bytes[:1] == b"\x88":
            fast = self.report_decoder(apdu_bytes)
        elif self.response_decoder is not None and apdu_bytes[:1] in (b"\x85", b"\x89") and len(apdu_bytes) > 2:
            p = self._pending.get(apdu_bytes[2] & 0x3F)        # PIID-ACD: the service number's request
            if p is not None and p.columnar:
                fast = self.response_decoder(apdu_bytes)
        apdu: A.Apdu
        decoded: object
        if fast is not None:
            apdu, decoded = fast
        else:
            apdu, decoded = A.decode_apdu(apdu_bytes), None
        server = frame.server
        if isinstance(apdu, A.LinkRequest):
            self._move(RECV_LINK, True)
            if self.server is None or self.server.type != AddressType.SINGLE:
                self.server = server                    # requests now go to the terminal that logged in
            ev = LinkRequested(apdu, server, date_time(rx_at))
            self._owed_links.append(ev)
            self._events.append(ev)
        elif apdu.TAG == 0x88:
            self._move(RECV_REPORT, True)
            report = Report(apdu, server, decoded)
            self._owed_reports.append(report)
            self._events.append(report)
        elif apdu.TAG & 0x80:
            self._move(RECV_RESPONSE, True)
            self._events.append(self._match(apdu, server, decoded))
        else:
            raise RemoteProtocolError(f"{apdu.NAME} is a client APDU, not one a server sends")

    def _match(self, response: A.Apdu, server: ServerAddress, decoded: object = None) -> Response | Unmatched:
        sn = response.service_number
        if sn is None:                                  # SECURITY-Response: oldest SECURITY-Request
            keys = sorted(k for k in self._pending if k >= 64)
            key = keys[0] if keys else None
        else:
            key = sn if sn in self._pending else None
        if key is not None:
            req = self._pending[key].request
            # ERROR-Response answers anything; otherwise the response tag is the request's + 80H
            if response.TAG == 0xEE or response.TAG == req.TAG | 0x80:
                del self._pending[key]
                return Response(req, response, server, decoded)
        return Unmatched(response, server)

    # --- what the master says ---------------------------------------------------------------------------
    def send(self, event: A.Apdu | AcceptLink | AcknowledgeReport, now: _dt.datetime, *, priority: bool = False, columnar: bool = False) -> bytes:
        """Bytes for a request APDU (its PIID is assigned here), an :class:`AcceptLink` or an
        :class:`AcknowledgeReport`.  ``now`` stamps the LINK-Response and starts a request's timeout.  ``columnar``: the request's
        answer is tried with the ``response_decoder`` first (its Response then carries ``decoded``)."""
        if isinstance(event, AcceptLink):
            return self._answer_link(event, now)
        if isinstance(event, AcknowledgeReport):
            if event.report not in self._owed_reports:
                raise LocalProtocolError("that report was already acknowledged (or never received)")
            self._move(SEND_REPORT_ACK, False)
            self._owed_reports.remove(event.report)
            ack = A.report_response(event.report.notification)
            return self._frame_bytes(C_REPORT_RESPONSE, ack, event.report.server)
        if isinstance(event, A.Apdu):
            return self._request(event, now, priority, columnar)
        raise LocalProtocolError(f"cannot send {type(event).__name__}")

    def _answer_link(self, ev: AcceptLink, now: _dt.datetime) -> bytes:
        link = ev.link
        if link not in self._owed_links:
            raise LocalProtocolError("that LINK-Request was already answered (or never received)")
        if not 0 <= ev.outcome <= 7:
            raise LocalProtocolError(f"LINK-Response outcome {ev.outcome} is not 0-7")
        kind = link.request.type
        self._move(SEND_LOGOUT_ACK if kind == A.LINK_LOGOUT else
                   SEND_LINK_ACCEPT if ev.outcome == 0 else SEND_LINK_REFUSE, False)
        self._owed_links.remove(link)
        if self.state == ONLINE:
            last = _dt.datetime(*link.received_at[:3], *link.received_at[4:7], link.received_at[7] * 1000)
            self._last_link = last
            period = _dt.timedelta(seconds=link.request.heartbeat_s * self.missed_heartbeats)
            self.link_deadline = last + period if link.request.heartbeat_s else None
        else:
            self.link_deadline = None
        resp = A.link_response(link.request, link.received_at, date_time(now), clock_trusted=ev.clock_trusted,
                               outcome=ev.outcome)
        return self._frame_bytes(C_LINK_RESPONSE, resp, link.server)

    def _request(self, req: A.Apdu, now: _dt.datetime, priority: bool, columnar: bool = False) -> bytes:
        if req.TAG & 0x80 or isinstance(req, A.LinkRequest) or req.TAG == 0x08:
            raise LocalProtocolError(f"{req.NAME} is not a request the master starts")
        if self.server is None:
            raise LocalProtocolError("no server address yet: give one or wait for the terminal's login")
        if req.service_number is None:                  # SECURITY-Request: no PIID, matched in order
            key = self._next_security
            self._next_security += 1
        else:
            key = self._free_service_number()
            req = dataclasses.replace(req, piid=(0x80 if priority else 0) | key)
        self._move(SEND_REQUEST, False)
        self._pending[key] = _Pending(req, now + self.timeout, columnar)
        self.last_request = req          # the object a Response / Timeout event will carry as .request
        return self._frame_bytes(C_REQUEST, req, self.server)

    def _free_service_number(self) -> int:
        for k in range(64):
            sn = (self._next_sn + k) % 64
            if sn not in self._pending:
                self._next_sn = (sn + 1) % 64
                return sn
        raise LocalProtocolError("all 64 PIID service numbers are waiting for responses")

    def _frame_bytes(self, control: int, apdu: A.Apdu, server: ServerAddress) -> bytes:
        return Frame(server, self.client, control, apdu.to_bytes()).to_bytes()

    def data_to_send(self) -> bytes:
        """Bytes the session itself must send (fragment confirms); empty when none."""
        out, self._out = bytes(self._out), bytearray()
        return out

    # --- time -----------------------------------------------------------------------------------------
    @property
    def next_deadline(self) -> _dt.datetime | None:
        """The earliest time :meth:`expire` has something to do (None: nothing waits)."""
        times = [p.deadline for p in self._pending.values()]
        if self.link_deadline is not None:
            times.append(self.link_deadline)
        return min(times) if times else None

    def expire(self, now: _dt.datetime) -> None:
        """Turn every deadline passed at ``now`` into an event (:class:`Timeout`, :class:`LinkLost`)."""
        for key, p in sorted(self._pending.items(), key=lambda kv: kv[1].deadline):
            if p.deadline <= now:
                self._move(TIMEOUT, False)
                del self._pending[key]
                self._events.append(Timeout(p.request, p.deadline))
        if self.link_deadline is not None and self.link_deadline <= now and self.state == ONLINE:
            self._move(LINK_LOST, False)
            self.link_deadline = None
            self._events.append(LinkLost(self._last_link))

    @property
    def outstanding(self) -> int:
        """Requests waiting for their response."""
        return len(self._pending)

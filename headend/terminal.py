"""One connection to one terminal: an ``asyncio.Protocol`` driving a sans-I/O ClientSession.

All protocol state (PIIDs, owed LINK and REPORT answers, heartbeat deadline) lives in
:class:`protocols.dlt698.session.ClientSession`; this module moves bytes and turns the session's events
into head-end actions.  No task per terminal: callbacks run in the event loop, and every deadline (login
timeout, heartbeat loss, idle link) is one entry in the shared :class:`TimerWheel`.  An idle terminal costs
this object, its session and its transport.

Why a terminal is closed (``reason``, counted in ``gridhead_sessions_closed_total``)::

    logout          it logged out (LINK type 2), answered first
    refused         its login address is not in the archive (LINK-Response result 2, 非法设备)
    replaced        the same address logged in on another connection
    heartbeat       it missed Config.heartbeat_multiple heartbeat periods (session.LinkLost)
    login timeout   no login within Config.login_timeout_s (slowloris)
    idle            no frame within Config.idle_timeout_s (half-open link)
    garbage         too many damaged frames, or Config.max_buffer bytes without one whole frame
    flood           more than Config.max_frames_per_s frames in a second
    protocol        a frame the session refuses (a client APDU from the terminal, a state violation)
    eof / reset     the peer closed / the link broke
    shutdown        the head-end stops
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import heapq
from collections import deque
import math
import time

from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698 import session as S
from gridhead.protocols.dlt698.frame import ServerAddress
from gridhead.protocols.errors import FrameError, ProtocolError, TransportError

from .log import event, get_logger

log = get_logger("terminal")

MAX_DAMAGED = 8            # damaged frames a terminal may send before it is dropped
MAX_FRAMES_PER_S = 200     # a terminal sends a few frames a minute; hundreds a second is a flood


class TerminalOffline(TransportError):
    """The terminal is not logged in, or its link dropped before the answer came."""


class AnswerTimeout(TransportError):
    """No response within the request's deadline (after its retries)."""


# --- meter time: the one clock of every time sent to a meter or terminal --------------------------------
CST = _dt.timezone(_dt.timedelta(hours=8), "CST")    # China Standard Time (storage.schema.LOCAL_TZ), no DST


def meter_tz(text: str | None = None) -> _dt.tzinfo:
    """The meters' time zone from the ``meter_tz`` setting: ``"+08:00"`` (a UTC offset) or an IANA name
    (``"Asia/Shanghai"``); None = China Standard Time.  A bad value raises ValueError naming it."""
    if text is None or str(text).strip() == "":
        return CST
    s = str(text).strip()
    if s[0] in "+-":
        try:
            t = _dt.datetime.strptime(s, "%z") if ":" not in s else _dt.datetime.strptime(s.replace(":", ""), "%z")
        except ValueError:
            raise ValueError(f"meter_tz {text!r} is not a UTC offset like +08:00 or a zone like Asia/Shanghai") from None
        return t.tzinfo
    import zoneinfo
    try:
        return zoneinfo.ZoneInfo(s)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"meter_tz {text!r} is not a UTC offset like +08:00 or a zone like Asia/Shanghai") from None


def local_now(tz: _dt.tzinfo | None = None) -> _dt.datetime:
    """Now on the meters' and terminals' clocks: naive local time of ``tz`` (default China Standard Time),
    never the host's zone (a server runs on UTC).  DL/T 645 times (08H time sync, 1CH 命令有效截止时间,
    14H writes of 04000101/02) and DL/T 698.45 date_time carry no zone: every one is made here."""
    return _dt.datetime.now(tz or CST).replace(tzinfo=None)


def meter_time(t: _dt.datetime, tz: _dt.tzinfo | None = None) -> _dt.datetime:
    """``t`` on the meters' clock: an aware datetime converted to ``tz`` (default CST), a naive one taken
    as meter time already; naive, as the protocols carry it."""
    return t if t.tzinfo is None else t.astimezone(tz or CST).replace(tzinfo=None)


class TimerWheel:
    """One timer for all terminals: slots of ``resolution`` seconds, entries re-checked lazily.

    ``schedule(t, when)`` makes sure ``t.on_deadline(now)`` is called at or soon after ``when`` (loop
    time).  A terminal is in at most one live slot (``t.slot``); pushing a deadline later (a heartbeat)
    costs nothing — when its slot fires, ``on_deadline`` sees the later deadline and reschedules.
    """

    __slots__ = ("loop", "resolution", "slots", "heap", "handle", "armed")

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = 0.25) -> None:
        self.loop = loop
        self.resolution = resolution
        self.slots: dict[int, list] = {}
        self.heap: list[int] = []
        self.handle = None
        self.armed: int | None = None

    def schedule(self, t, when: float) -> None:
        slot = math.ceil(when / self.resolution)
        if t.slot is not None and t.slot <= slot:
            return
        t.slot = slot
        entries = self.slots.get(slot)
        if entries is None:
            self.slots[slot] = [t]
            heapq.heappush(self.heap, slot)
        else:
            entries.append(t)
        if self.armed is None or slot < self.armed:
            if self.handle is not None:
                self.handle.cancel()
            self.armed = slot
            self.handle = self.loop.call_at(slot * self.resolution, self._fire)

    def _fire(self) -> None:
        self.handle = self.armed = None
        now = self.loop.time()
        cur = math.floor(now / self.resolution + 1e-9)
        while self.heap and self.heap[0] <= cur:
            slot = heapq.heappop(self.heap)
            for t in self.slots.pop(slot, ()):
                if t.slot == slot:
                    t.slot = None
                    t.on_deadline(now)
        if self.heap and self.armed is None:
            self.armed = self.heap[0]
            self.handle = self.loop.call_at(self.armed * self.resolution, self._fire)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.slots.clear()
        self.heap.clear()
        self.handle = self.armed = None


class _Waiter:
    __slots__ = ("future", "request", "handle")

    def __init__(self, future, request, handle) -> None:
        self.future = future
        self.request = request
        self.handle = handle


class Terminal(asyncio.Protocol):
    """A terminal's link.  ``address`` is None until it logs in (dial-in) or the configured one (dial-out)."""

    __slots__ = ("he", "session", "transport", "peer", "address", "login_utc", "last_frame_mono", "last_frame_utc",
                 "connected_mono", "deadline", "slot", "heartbeat_s", "link_mono", "closed", "reason", "dial", "connector",
                 "waiters", "in_flight", "slot_waiters", "paused", "frames_in", "frames_out", "bytes_in", "bytes_out",
                 "errors", "unframed", "window", "window_frames", "reports_in", "links_in", "responses_in", "unmatched_in",
                 "requests_out")

    def __init__(self, he, *, dial=None, connector=None) -> None:
        cfg = he.config
        self.he = he
        self.session = S.ClientSession(ServerAddress(dial.address) if dial else None, cfg.client_address,
                                       timeout_s=cfg.request_timeout_s, max_frame=cfg.max_frame,
                                       missed_heartbeats=cfg.heartbeat_multiple,
                                       report_decoder=he.decode_report,
                                       response_decoder=he.decode_response)
        self.transport = None
        self.peer = None
        self.dial = dial
        self.connector = connector            # headend.transport.Connector of a dial-out link
        self.address = dial.address if dial else None
        self.login_utc = None
        self.last_frame_utc = None
        self.last_frame_mono = 0.0
        self.connected_mono = 0.0
        self.deadline = 0.0
        self.slot = None
        self.heartbeat_s = 0
        self.link_mono = 0.0
        self.closed = False
        self.reason = None
        self.waiters = None            # id(request) -> _Waiter, created on first request
        self.in_flight = 0
        self.slot_waiters = None       # deque of futures waiting for an in-flight slot
        self.paused = False
        self.frames_in = self.frames_out = self.bytes_in = self.bytes_out = 0
        self.errors = self.unframed = self.window_frames = self.reports_in = 0
        self.links_in = self.responses_in = self.unmatched_in = self.requests_out = 0
        self.window = 0

    # --- asyncio callbacks ----------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        he = self.he
        self.connected_mono = self.last_frame_mono = he.loop.time()
        he.sessions.connections += 1
        if self.dial is not None and not self.dial.login:    # preset association: no LINK will come
            self.login_utc = time.time()
            he.session_ready(self)
        self._reschedule()
        if he.paused:
            self.pause()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        he = self.he
        n = len(data)
        self.bytes_in += n
        he.metrics.bytes_in += n
        now = self.he.meter_now()
        self.session.receive_data(data, now)
        self._drain(now, n)

    def _drain(self, now, n: int = 0) -> None:
        """Handle the events of the bytes received; stops early while reading is paused (back-pressure:
        the rest waits in the session's bounded buffer until :meth:`resume`)."""
        he = self.he
        sess = self.session
        frames_before = self.frames_in
        try:
            while not self.paused:
                try:
                    ev = sess.next_event()
                except FrameError:
                    self.errors += 1
                    he.metrics.decode_errors += 1
                    if self.errors > MAX_DAMAGED:
                        return self.close("garbage")
                    continue
                if ev is S.NEED_DATA:
                    break
                self._event(ev, now)
                if self.closed:
                    return
        except ProtocolError as exc:
            self.errors += 1
            he.metrics.decode_errors += 1
            event(log, "protocol error", address=self.address, peer=self.peer, error=str(exc))
            return self.close("protocol")
        framed = self.frames_in - frames_before
        if framed:
            self.unframed = 0
            mono = he.loop.time()
            self.last_frame_mono = mono
            self.last_frame_utc = time.time()
            sec = int(mono)
            if sec != self.window:
                self.window, self.window_frames = sec, 0
            self.window_frames += framed
            if self.window_frames > he.config.max_frames_per_s:
                return self.close("flood")
        else:
            self.unframed += n
            if self.unframed > he.config.max_buffer:
                return self.close("garbage")
        out = sess.data_to_send()         # fragment confirms
        if out:
            self._write(out, "fragment confirm")

    def eof_received(self):
        self.close("eof")
        return False

    def connection_lost(self, exc) -> None:
        if not self.closed:
            self._closed("reset" if exc else "eof")
        he = self.he
        he.sessions.connections -= 1
        if self.connector is not None:
            self.connector.link_lost()

    # --- events -----------------------------------------------------------------------------------------
    def _event(self, ev, now) -> None:
        he = self.he
        m = he.metrics
        self.frames_in += 1
        if isinstance(ev, S.LinkRequested):
            m.frames_in["LINK-Request"] += 1
            self.links_in += 1
            self._link(ev, now)
        elif isinstance(ev, S.Response):
            m.frames_in[ev.response.SERVICE] += 1
            self.responses_in += 1
            w = self.waiters.pop(id(ev.request), None) if self.waiters else None
            if w is not None:
                w.handle.cancel()
                if not w.future.done():
                    # a columnar request's record answer comes as lake columns (HeadEnd.decode_response)
                    w.future.set_result(ev.response if ev.decoded is None else ev.decoded)
        elif isinstance(ev, S.Report):
            m.frames_in[ev.notification.NAME] += 1
            self.reports_in += 1
            he.report_received(self, ev)
        elif isinstance(ev, S.Unmatched):
            m.frames_in[ev.response.SERVICE] += 1
            m.unmatched += 1
            self.unmatched_in += 1
        elif isinstance(ev, S.Timeout):
            self.frames_in -= 1
            w = self.waiters.pop(id(ev.request), None) if self.waiters else None
            if w is not None and not w.future.done():
                w.future.set_exception(AnswerTimeout(f"terminal {self.address}: no answer to {ev.request.NAME}"))
        elif isinstance(ev, S.LinkLost):
            self.frames_in -= 1
            self.close("heartbeat")

    def _link(self, ev: S.LinkRequested, now) -> None:
        he = self.he
        kind = ev.request.type
        address = ev.server.address
        if kind == A.LINK_LOGOUT:
            self.send_link(S.AcceptLink(ev, 0))
            return self.close("logout")
        if self.address is None or self.address != address or self.login_utc is None:
            # a login (or a heartbeat from a terminal that was online before the head-end restarted)
            if not he.known_terminal(address):        # dial-in or dial-out alike: the archive decides
                he.metrics.refused["illegal device"] += 1
                event(log, "login refused", address=address, peer=self.peer, reason="not in the archive")
                self.send_link(S.AcceptLink(ev, 2))
                return self.close("refused")
            if self.address is not None and self.address != address and self.login_utc is not None:
                he.sessions.logout(self)           # the same link now speaks for another address
            self.address = address
            self.login_utc = time.time()
            self.send_link(S.AcceptLink(ev, 0))
            he.session_ready(self)
        else:
            self.send_link(S.AcceptLink(ev, 0))
        self.heartbeat_s = ev.request.heartbeat_s
        self.link_mono = he.loop.time()
        self._reschedule()

    def send_link(self, answer: S.AcceptLink) -> None:
        data = self.session.send(answer, self.he.meter_now())
        self.he.metrics.frames_out["LINK-Response"] += 1
        self._write(data, None)

    def acknowledge(self, report: S.Report) -> None:
        """Send the REPORT-Response (once the report is durable)."""
        if self.closed:
            return
        data = self.session.send(S.AcknowledgeReport(report), self.he.meter_now())
        self.he.metrics.frames_out["REPORT-Response"] += 1
        self.he.metrics.reports += 1
        self._write(data, None)

    def _write(self, data: bytes, kind) -> None:
        self.frames_out += 1
        self.bytes_out += len(data)
        self.he.metrics.bytes_out += len(data)
        if kind is not None:
            self.he.metrics.frames_out[kind] += 1
        self.transport.write(data)

    # --- deadlines ---------------------------------------------------------------------------------------
    def _reschedule(self) -> None:
        cfg = self.he.config
        if self.login_utc is None:
            d = self.connected_mono + cfg.login_timeout_s
        else:
            d = self.last_frame_mono + cfg.idle_timeout_s
            if self.heartbeat_s:
                d = min(d, self.link_mono + self.heartbeat_s * cfg.heartbeat_multiple)
        self.deadline = d
        self.he.wheel.schedule(self, d)

    def on_deadline(self, now: float) -> None:
        if self.closed:
            return
        cfg = self.he.config
        if self.login_utc is None:
            if now >= self.connected_mono + cfg.login_timeout_s:
                return self.close("login timeout")
        else:
            if self.heartbeat_s and now >= self.link_mono + self.heartbeat_s * cfg.heartbeat_multiple:
                self.session.expire(self.he.meter_now() + _dt.timedelta(milliseconds=50))
                return self.close("heartbeat")
            if now >= self.last_frame_mono + cfg.idle_timeout_s:
                return self.close("idle")
        self._reschedule()

    # --- requests ----------------------------------------------------------------------------------------
    async def request(self, apdu: A.Apdu, timeout_s: float, priority: bool = False, columnar: bool = False):
        """Send one request and wait for its response (no retry here: HeadEnd.request retries)."""
        he = self.he
        limit = he.config.max_in_flight
        while self.in_flight >= limit:
            if self.closed:
                raise TerminalOffline(f"terminal {self.address} is offline")
            if self.slot_waiters is None:
                self.slot_waiters = deque()
            fut = he.loop.create_future()
            self.slot_waiters.append(fut)
            await fut
        if self.closed:
            raise TerminalOffline(f"terminal {self.address} is offline")
        self.in_flight += 1
        he.metrics.in_flight += 1
        try:
            sess = self.session
            sess.timeout = _dt.timedelta(seconds=timeout_s)
            data = sess.send(apdu, self.he.meter_now(), priority=priority, columnar=columnar)
            req = sess.last_request
            fut = he.loop.create_future()
            handle = he.loop.call_later(timeout_s, self._expire_requests)
            if self.waiters is None:
                self.waiters = {}
            self.waiters[id(req)] = _Waiter(fut, req, handle)
            he.metrics.frames_out[apdu.SERVICE] += 1
            self.requests_out += 1
            self._write(data, None)
            try:
                return await fut
            finally:
                w = self.waiters.pop(id(req), None) if self.waiters else None
                if w is not None:
                    w.handle.cancel()
        finally:
            self.in_flight -= 1
            he.metrics.in_flight -= 1
            sw = self.slot_waiters
            while sw:
                f = sw.popleft()
                if not f.done():
                    f.set_result(None)
                    break

    def _expire_requests(self) -> None:
        if self.closed:
            return
        self.session.expire(self.he.meter_now() + _dt.timedelta(milliseconds=50))
        now = self.he.meter_now()
        while True:
            ev = self.session.next_event()
            if ev is S.NEED_DATA:
                break
            self._event(ev, now)
        if self.waiters:                      # the wall clock lagged the loop clock: look again shortly
            for w in list(self.waiters.values()):
                if w.handle.when() <= self.he.loop.time():
                    w.handle = self.he.loop.call_later(0.05, self._expire_requests)

    # --- flow control and closing -----------------------------------------------------------------------
    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()
            self._drain(self.he.meter_now())          # frames that arrived with the ones that caused the pause

    def close(self, reason: str) -> None:
        """Close the link (after what was written is flushed) and fail whatever waits on it."""
        if self.closed:
            return
        self._closed(reason)
        if self.transport is not None:
            self.transport.close()

    def _closed(self, reason: str) -> None:
        self.closed = True
        self.reason = reason
        he = self.he
        he.metrics.closed[reason] += 1
        he.session_offline(self)
        if self.waiters:
            for w in self.waiters.values():
                w.handle.cancel()
                if not w.future.done():
                    w.future.set_exception(TerminalOffline(f"terminal {self.address}: link closed ({reason})"))
            self.waiters = None
        if self.slot_waiters:
            for f in self.slot_waiters:
                if not f.done():
                    f.set_result(None)
        event(log, "session closed", address=self.address, peer=self.peer, reason=reason)

    # --- the registry's view -------------------------------------------------------------------------------
    @property
    def online(self) -> bool:
        return not self.closed and self.login_utc is not None

    @property
    def counters(self) -> dict:
        """Frames in and out (total and by kind: LINK-Requests, responses, unmatched responses, reports in;
        requests out), bytes, damaged frames, requests in flight."""
        return {"frames_in": self.frames_in, "frames_out": self.frames_out, "links_in": self.links_in,
                "responses_in": self.responses_in, "unmatched_in": self.unmatched_in, "reports_in": self.reports_in,
                "requests_out": self.requests_out, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "errors": self.errors, "in_flight": self.in_flight}

    def info(self) -> dict:
        return {"address": self.address, "peer": self.peer, "login_utc": self.login_utc,
                "last_frame_utc": self.last_frame_utc, "heartbeat_s": self.heartbeat_s, **self.counters}

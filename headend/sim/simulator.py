"""Fleet simulator (`gridhead sim`): N DL/T 698.45 concentrators in one process — the head-end's test
fleet and its load generator.

Each terminal dials the head-end over TCP (or, with ``listen``, waits for the head-end's dial-out),
logs in (LINK-Request login), heartbeats every ``heartbeat_s``, answers the requests of the collection
profile (headend/profile.py: GET-Record 60120300, PROXY GetRequestRecord / GetRequestList /
TransCommandRequest with DL/T 645 reads, GET and SET 40000200) for its meters, and after each
midnight pushes a REPORT-Notification-RecordList of the day's frozen registers, re-sent every
``report_retry_s`` until the head-end acknowledges it.  The answers come from
:mod:`headend.sim.answers`; the fleet and the registers from :mod:`headend.sim.model`.

Scale: one asyncio loop (uvloop when available); a terminal is a slotted object; an idle terminal
owns one ``loop.call_at`` timer (its next heartbeat) and no task.  The process raises its open-file
limit to the hard limit.

Time: the simulated clock is ``start + (monotonic − t0) × speed`` (local time, as DL/T 698.45
date_time is); a terminal with a drifting clock adds its drift to what it reports; SET 40000200
(对时) sets it right.

Faults (:class:`Faults`), deterministic for a seed: decisions about the meter-days come from a hash of
(seed, meter, day); decisions about traffic from each terminal's own ``random.Random`` (seed,
terminal), drawn in the order of that terminal's events.  What was injected is kept in
:attr:`Simulator.truth` (``ground_truth()`` → JSON).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import random
import resource
import signal
import sys
import time

import numpy as np

from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.dlt698.frame import Frame, Framer, ServerAddress
from gridhead.protocols.dlt698.session import date_time
from gridhead.protocols.errors import ProtocolError

from gridhead.headend import profile as P
from .answers import DAR_UNAVAILABLE, DAR_TIMEOUT, Answerer, control_answer, dts_to_datetime
from .model import Fleet, SimulatorError, unit_hash
from gridhead.headend.shard import shard_of
from gridhead.headend.terminal import local_now           # the meters' clock (China Standard Time), as the head-end's

C_LINK, C_RESPONSE, C_REPORT = 0x81, 0xC3, 0x83


@dataclasses.dataclass
class Faults:
    """Fault rates.  Traffic faults are shares of events; meter-day faults shares of meter-days."""

    offline: float = 0.0          # per heartbeat: drop the link (no logout), stay away offline_s
    offline_s: float = 30.0       # mean offline spell, real seconds (0.5-1.5 × this)
    reconnect: float = 0.0        # per heartbeat: close and dial again at once
    slow: float = 0.0             # share of answers delayed by slow_s
    slow_s: float = 5.0
    drop: float = 0.0             # share of answers never sent
    garbage: float = 0.0          # share of frames sent preceded by 1-32 garbage bytes (never 68H)
    clock_drift: float = 0.0      # share of terminals whose clock is off by 60-600 s (either way)
    missing: float = 0.0          # share of meter-days absent from the concentrator's records (a, d)
    missing_late: float = 0.5     # ... of which this share appears late_s after the freeze
    late_s: float = 3600.0        # simulated seconds
    meter_missing: float = 0.0    # share of meter-days the meter itself never froze (b, c too)
    power_down: float = 0.0       # share of meter-days with a power failure (掉电, event record 3011)

    @classmethod
    def parse(cls, items) -> "Faults":
        """From ``name=value`` strings (``--fault-rate drop=0.01``)."""
        f = cls()
        names = {x.name for x in dataclasses.fields(cls)}
        for item in items or ():
            name, _, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if name not in names:
                raise SimulatorError(f"fault {name!r}: one of {', '.join(sorted(names))}")
            try:
                v = float(value)
            except ValueError:
                raise SimulatorError(f"fault {name}={value!r}: a number expected") from None
            if v < 0 or (not name.endswith("_s") and v > 1):
                raise SimulatorError(f"fault {name}={v}: a rate is in 0..1, a time ≥ 0")
            setattr(f, name, v)
        return f


@dataclasses.dataclass
class Stats:
    online: int = 0
    connects: int = 0
    connect_errors: int = 0
    logins: int = 0
    refused: int = 0
    heartbeats: int = 0
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    answers: int = 0
    decode_errors: int = 0
    reports_sent: int = 0
    reports_acked: int = 0
    dropped: int = 0
    slowed: int = 0
    garbage: int = 0
    offline_spells: int = 0
    reconnects: int = 0
    clock_sets: int = 0


class SimTerminal:
    """One simulated concentrator."""

    __slots__ = ("i", "address", "sa", "meters", "by_address", "rng", "drift_s", "conn", "logged_in",
                 "piid", "timer", "login_tries", "last_reported", "report", "report_tries", "report_timer",
                 "stopped", "away_until", "ports")

    def __init__(self, i: int, address: str, meters: np.ndarray, fleet: Fleet, seed: int):
        self.i = i
        self.address = address
        self.sa = ServerAddress(address)
        self.meters = meters
        self.by_address = {fleet.address[m]: int(m) for m in meters}
        self.ports = {P.PORT_RS485_1} | set(fleet.port[meters].tolist())   # its RS-485 1 and its meters' ports
        self.rng = random.Random(seed * 1_000_003 + i)
        self.drift_s = 0.0
        self.conn = None
        self.logged_in = False
        self.piid = 0
        self.timer = None
        self.login_tries = 0
        self.last_reported = None
        self.report = None              # (day, piid, bytes) waiting for its REPORT-Response
        self.report_tries = 0
        self.report_timer = None
        self.stopped = False
        self.away_until = 0.0

    def next_piid(self) -> int:
        self.piid = (self.piid + 1) % 64
        return self.piid


class SimLink(asyncio.Protocol):
    """A TCP link: a terminal's own (dial-in) or one the head-end opened (listen mode, any terminal)."""

    __slots__ = ("sim", "term", "transport", "framer")

    def __init__(self, sim: "Simulator", term: SimTerminal | None):
        self.sim, self.term, self.transport, self.framer = sim, term, None, Framer()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        sim = self.sim
        sim.stats.bytes_in += len(data)
        self.framer.feed(data)
        while True:
            try:
                frame = self.framer.next_frame()
            except ProtocolError:
                sim.stats.decode_errors += 1
                continue
            if frame is None:
                return
            sim.stats.frames_in += 1
            sim.on_frame(self, frame)

    def connection_lost(self, exc):
        self.transport = None
        if self.term is not None:
            self.sim.on_lost(self.term, self)

    def send(self, data: bytes):
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.sim.stats.frames_out += 1
            self.sim.stats.bytes_out += len(data)


class Simulator:
    """The fleet.  ``connect=(host, port)`` dials in; ``listen=(host, port, port_last)`` serves dial-out.

    ``start``: the simulated clock at t0 (naive local datetime; default now in China Standard Time);
    ``speed``: simulated seconds per real second.
    """

    def __init__(self, fleet: Fleet, *, seed: int = 1, connect=None, listen=None, heartbeat_s: int = 60,
                 faults: Faults | None = None, start: _dt.datetime | None = None, speed: float = 1.0,
                 report: bool = True, report_retry_s: float = 30.0, report_tries: int = 10,
                 report_window_s: float = 600.0, ramp_per_s: float = 2000.0, login_timeout_s: float = 10.0,
                 client: int = 0x10, mqtt=None, mqtt_prefix: str = "gridhead"):
        if connect is None and listen is None and mqtt is None:
            raise SimulatorError("give connect=(host, port), listen=(host, port[, last_port]) or mqtt=(host, port)")
        self.mqtt, self.mqtt_prefix = mqtt, mqtt_prefix     # publish through a broker (headend.transport_mqtt)
        self.fleet, self.seed, self.connect_to, self.listen_on = fleet, int(seed), connect, listen
        self.heartbeat_s, self.faults = int(heartbeat_s), faults or Faults()
        self.start = start or self.default_start()
        self.speed = float(speed)
        self.report_enabled, self.report_retry_s, self.report_tries = report, report_retry_s, report_tries
        self.report_window_s, self.ramp_per_s, self.login_timeout_s = report_window_s, ramp_per_s, login_timeout_s
        self.client = client
        self.stats = Stats()
        self.answers = Answerer(self)
        self.terminals = [SimTerminal(i, a, fleet.meters_of[i], fleet, self.seed) for i, a in enumerate(fleet.terminals)]
        self.by_address = {t.address: t for t in self.terminals}
        self.events: list[dict] = []            # the traffic faults injected, in order
        self.loop = None
        self.t0 = None
        self._servers = []
        self._stopping = None
        self._midnight = None
        f = self.faults
        for t in self.terminals:                 # clock drift: fixed per terminal, from its own stream
            if t.rng.random() < f.clock_drift:
                t.drift_s = t.rng.choice((-1, 1)) * t.rng.uniform(60, 600)

    # --- clock ------------------------------------------------------------------------------------
    @staticmethod
    def default_start() -> _dt.datetime:
        """Now in China Standard Time, naive (the terminals' local clock)."""
        return local_now()

    def now(self) -> _dt.datetime:
        """The simulated local time (no drift)."""
        if self.t0 is None:
            return self.start
        return self.start + _dt.timedelta(seconds=(time.monotonic() - self.t0) * self.speed)

    def real_at(self, sim_t: _dt.datetime) -> float:
        """loop.time() at which the simulated clock reads ``sim_t``."""
        return self.loop.time() + (sim_t - self.now()).total_seconds() / self.speed

    def terminal_now(self, t: SimTerminal) -> _dt.datetime:
        return self.now() + _dt.timedelta(seconds=t.drift_s)

    def today(self) -> int:
        return self.fleet.model.day_of(self.now().date())

    def jitter(self, meter: int, k: int) -> float:
        return float(unit_hash(self.seed, meter, k, 7))

    # --- meter-day faults (hash of seed, meter, day: any order, same answer) -----------------------
    def meter_has(self, meter: int, day: int) -> bool:
        """Did the meter itself freeze day ``day``?  Never outside its archive validity (换表)."""
        if not self.fleet.model.installed(meter, day):
            return False
        return not (self.faults.meter_missing and unit_hash(self.seed, meter, day, 11) < self.faults.meter_missing)

    def power_down(self, meter: int, day: int):
        """The meter's power failure (掉电, event 3011) that began on freeze day ``day``: (start, end) as
        local datetimes, None if there was none — one at most per meter-day, 1 to 60 minutes long."""
        f = self.faults
        if not f.power_down or not self.fleet.model.installed(meter, day):
            return None
        if unit_hash(self.seed, meter, day, 21) >= f.power_down:
            return None
        start = _dt.datetime.combine(self.fleet.model.date(day), _dt.time()) + _dt.timedelta(
            seconds=int(unit_hash(self.seed, meter, day, 22) * 86_000))
        return start, start + _dt.timedelta(seconds=60 + int(unit_hash(self.seed, meter, day, 23) * 3540))

    def record_available(self, meter: int, day: int, now: _dt.datetime) -> bool:
        """Has the concentrator the record of ``meter`` for freeze ``day`` at ``now``?"""
        if not self.meter_has(meter, day):
            return False
        f = self.faults
        if f.missing and unit_hash(self.seed, meter, day, 12) < f.missing:
            if unit_hash(self.seed, meter, day, 13) >= f.missing_late:
                return False
            freeze = _dt.datetime.combine(self.fleet.model.date(day), _dt.time())
            return now >= freeze + _dt.timedelta(seconds=f.late_s)
        return True

    def missing_truth(self, first_day: int, last_day: int) -> list[dict]:
        """Every meter-day fault in freeze days [first_day, last_day]: meter_id, date, kind
        (``meter`` never frozen, ``never`` absent from the concentrator's records, ``late`` there
        ``late_s`` after the freeze)."""
        out, f = [], self.faults
        if not (f.missing or f.meter_missing):
            return out
        idx = np.arange(len(self.fleet.model))
        for d in range(max(first_day, 0), last_day + 1):
            mm = unit_hash(self.seed, idx, d, 11) < f.meter_missing if f.meter_missing else np.zeros(len(idx), bool)
            miss = (unit_hash(self.seed, idx, d, 12) < f.missing) & ~mm
            late = miss & (unit_hash(self.seed, idx, d, 13) < f.missing_late)
            date = str(self.fleet.model.date(d))
            for kind, sel in (("meter", mm), ("never", miss & ~late), ("late", late)):
                out += [{"meter_id": int(self.fleet.meter_id[i]), "date": date, "kind": kind} for i in np.flatnonzero(sel)]
        return out

    def note_event(self, t: SimTerminal, kind: str, **kw):
        self.events.append({"t": self.now().isoformat(timespec="milliseconds"), "terminal": t.address, "kind": kind, **kw})

    # --- frames out ---------------------------------------------------------------------------------
    def _frame(self, t: SimTerminal, control: int, apdu: A.Apdu, client: int | None = None) -> bytes:
        return Frame(t.sa, self.client if client is None else client, control, apdu.to_bytes()).to_bytes()

    def _send(self, t: SimTerminal, conn: SimLink, data: bytes, what: str):
        f = self.faults
        if f.garbage and t.rng.random() < f.garbage:
            junk = bytes(b if b != 0x68 else 0x69 for b in t.rng.randbytes(t.rng.randint(1, 32)))
            data = junk + data
            self.stats.garbage += 1
            self.note_event(t, "garbage", bytes=len(junk), before=what)
        conn.send(data)

    def _answer(self, t: SimTerminal, conn: SimLink, apdu: A.Apdu, client: int):
        f = self.faults
        name = apdu.NAME
        if f.drop and t.rng.random() < f.drop:
            self.stats.dropped += 1
            self.note_event(t, "dropped", apdu=name, piid=apdu.service_number)
            return
        data = self._frame(t, C_RESPONSE, apdu, client)
        self.stats.answers += 1
        if f.slow and t.rng.random() < f.slow:
            self.stats.slowed += 1
            self.note_event(t, "slow", apdu=name, piid=apdu.service_number, delay_s=f.slow_s)
            self.loop.call_later(f.slow_s, self._send, t, conn, data, name)
        else:
            self._send(t, conn, data, name)

    # --- link: login, heartbeat, logout ----------------------------------------------------------------
    def _link(self, t: SimTerminal, kind: int):
        if t.conn is None:
            return
        req = A.LinkRequest(t.next_piid(), kind, self.heartbeat_s, date_time(self.terminal_now(t)))
        self._send(t, t.conn, self._frame(t, C_LINK, req, 0), "LINK-Request")

    def login(self, t: SimTerminal):
        t.timer = None
        if t.conn is None or t.logged_in:
            return
        if t.login_tries >= 3:
            t.conn.transport.close()           # no answer: drop and dial again later
            return
        t.login_tries += 1
        self._link(t, A.LINK_LOGIN)
        t.timer = self.loop.call_later(self.login_timeout_s, self.login, t)

    def _heartbeat(self, t: SimTerminal):
        t.timer = None
        if t.conn is None or self._stopping.is_set():
            return
        f = self.faults
        if f.offline and t.rng.random() < f.offline:
            away = f.offline_s * t.rng.uniform(0.5, 1.5)
            self.stats.offline_spells += 1
            self.note_event(t, "offline", duration_s=round(away, 3))
            t.away_until = self.loop.time() + away
            t.conn.transport.abort()
            return
        if f.reconnect and t.rng.random() < f.reconnect:
            self.stats.reconnects += 1
            self.note_event(t, "reconnect")
            t.conn.transport.abort()
            return
        self._link(t, A.LINK_HEARTBEAT)
        self.stats.heartbeats += 1
        t.timer = self.loop.call_later(self.heartbeat_s, self._heartbeat, t)

    def _on_link_response(self, t: SimTerminal, resp: A.LinkResponse):
        if t.logged_in:
            return                                # a heartbeat's answer
        if t.timer is not None:
            t.timer.cancel()
            t.timer = None
        if resp.outcome != 0:
            self.stats.refused += 1
            self.note_event(t, "refused", outcome=resp.outcome)
            t.away_until = self.loop.time() + 60.0
            t.conn.transport.close()
            return
        t.logged_in = True
        self.stats.logins += 1
        self.stats.online += 1
        t.timer = self.loop.call_later(self.heartbeat_s, self._heartbeat, t)
        self._maybe_report(t)

    # --- connections ---------------------------------------------------------------------------------
    async def _dial(self, t: SimTerminal):
        if self._stopping.is_set() or t.stopped:
            return
        if self.mqtt is not None:
            from .mqtt import sim_dial
            await sim_dial(self, t, SimLink(self, t))
            return
        host, port = self.connect_to
        try:
            _tr, conn = await self.loop.create_connection(lambda: SimLink(self, t), host, port)
        except OSError as exc:
            self.stats.connect_errors += 1
            self.note_event(t, "connect_error", error=str(exc)[:80])
            self.redial(t, 1.0 + t.rng.random() * 4)
            return
        self.stats.connects += 1
        t.conn = conn
        t.logged_in = False
        t.login_tries = 0
        self.login(t)

    def redial(self, t: SimTerminal, delay: float):
        if not self._stopping.is_set():
            self.loop.call_later(delay, lambda: self.loop.create_task(self._dial(t)))

    def on_lost(self, t: SimTerminal, conn: SimLink):
        if t.conn is not conn:
            return
        if t.logged_in:
            self.stats.online -= 1
        t.conn, t.logged_in = None, False
        for h in (t.timer, t.report_timer):
            if h is not None:
                h.cancel()
        t.timer = t.report_timer = None
        if self.connect_to is not None or self.mqtt is not None:
            self.redial(t, max(t.away_until - self.loop.time(), 0.5 + t.rng.random()))

    # --- requests ------------------------------------------------------------------------------------
    def on_frame(self, conn: SimLink, frame):
        t = conn.term if conn.term is not None else self.by_address.get(frame.server.address)
        if t is None or frame.from_server:
            self.stats.decode_errors += 1
            return
        try:
            apdu = A.decode_apdu(frame.apdu)
        except ProtocolError:
            self.stats.decode_errors += 1
            self._answer(t, conn, A.ErrorResponse(0, 1), frame.client)
            return
        if isinstance(apdu, A.LinkResponse):
            self._on_link_response(t, apdu)
            return
        if isinstance(apdu, A.ReportResponseRecordList):
            self._on_report_ack(t, apdu)
            return
        resp = self.respond(t, apdu)
        if resp is not None:
            self._answer(t, conn, resp, frame.client)

    def respond(self, t: SimTerminal, req: A.Apdu):
        now = self.now()
        ans = self.answers
        piid = getattr(req, "piid", 0)
        ctl = control_answer(self, t, req, now)      # relays, 保电, meter clocks (sim_answers)
        if ctl is not None:
            return ctl
        first = int(t.meters[0]) if len(t.meters) else None
        if isinstance(req, A.GetRequestNormal):
            return A.GetResponseNormal(piid, self.get_value(t, req.oad, now, first))
        if isinstance(req, A.GetRequestNormalList):
            return A.GetResponseNormalList(piid, tuple(self.get_value(t, o, now, first) for o in req.oads))
        if isinstance(req, A.GetRequestRecord):
            return ans.get_record_response(t, piid, req.record, now)      # pre-encoded for 60120300
        if isinstance(req, A.GetRequestRecordList):
            return A.GetResponseRecordList(piid, tuple(ans.get_record(t, r, now) for r in req.records))
        if isinstance(req, A.SetRequestNormal):
            return A.SetResponseNormal(piid, req.oad, self._set(t, req.oad, req.data, now))
        if isinstance(req, A.ProxyGetRequestList):
            out = []
            for target in req.targets:
                m = self.meter_at(t, target.tsa)
                out.append(A.ProxyResult(target.tsa, tuple(
                    A.ResultNormal(o, None, DAR_TIMEOUT) if m is None else self.get_value(t, o, now, m) for o in target.items)))
            return A.ProxyGetResponseList(piid, tuple(out))
        if isinstance(req, A.ProxyGetRequestRecord):
            m = self.meter_at(t, req.tsa)
            if m is None:
                return A.ProxyGetResponseRecord(piid, req.tsa, A.ResultRecord(req.record.oad, req.record.rcsd, None, DAR_TIMEOUT))
            return A.ProxyGetResponseRecord(piid, req.tsa, ans.meter_record(m, req.record, now))
        if isinstance(req, A.ProxyTransCommandRequest):
            # forwarded on the port asked for: a meter answers only on the port the archive puts it on
            dar = ans.port_dar(t, req.port, req.command)
            answer = ans.trans_645(t, req.command, now) if dar is None else None
            if answer is None:
                return A.ProxyTransCommandResponse(piid, req.port, None, dar or DAR_TIMEOUT)
            return A.ProxyTransCommandResponse(piid, req.port, answer)
        return A.ErrorResponse(piid, 2)           # service not supported

    def meter_at(self, t: SimTerminal, tsa: bytes):
        if not tsa or len(tsa) < 2:
            return None
        addr = bytes(tsa[1:])[::-1].hex().upper()
        return t.by_address.get(addr)

    def get_value(self, t: SimTerminal, oad: int, now, meter) -> A.ResultNormal:
        if oad == P.OAD_DATETIME:
            return A.ResultNormal(oad, _dts_data(self.terminal_now(t)))
        if meter is None:
            return A.ResultNormal(oad, None, DAR_UNAVAILABLE)
        data, dar = self.answers.instant(oad, meter, now)
        return A.ResultNormal(oad, data, dar)

    def _set(self, t: SimTerminal, oad: int, data, now) -> int:
        if oad != P.OAD_DATETIME:
            return DAR_UNAVAILABLE if oad >> 16 not in (0x4000,) else 3
        try:
            v = data.value
            when = _dt.datetime(*v[:3], *v[4:7]) if data.tag == 25 else dts_to_datetime(v)
        except (AttributeError, TypeError, ValueError, IndexError):
            return 7                              # type does not match
        before = t.drift_s
        t.drift_s = (when - now).total_seconds()
        self.stats.clock_sets += 1
        self.note_event(t, "clock_set", drift_before_s=round(before, 3), drift_after_s=round(t.drift_s, 3))
        return 0

    # --- daily REPORT -----------------------------------------------------------------------------------
    def _maybe_report(self, t: SimTerminal):
        if not self.report_enabled or t.report is not None or not t.logged_in or not len(t.meters):
            return
        today = self.today()
        if t.last_reported is None or t.last_reported >= today:
            return
        day = t.last_reported + 1
        offset = self.jitter(t.i, day) * self.report_window_s          # simulated seconds after midnight
        due = _dt.datetime.combine(self.fleet.model.date(day), _dt.time()) + _dt.timedelta(seconds=offset)
        delay = max((due - self.now()).total_seconds() / self.speed, 0.0)
        t.report = (day, None, None)
        t.report_timer = self.loop.call_later(delay, self._push_report, t)

    def _push_report(self, t: SimTerminal):
        t.report_timer = None
        if t.conn is None or not t.logged_in or t.report is None:
            return
        day, piid, data = t.report
        if data is None:
            piid = t.next_piid()
            data = self._frame(t, C_REPORT, self.answers.report(t.meters, day, piid, self.now()), 0)
            t.report = (day, piid, data)
            t.report_tries = 0
        if t.report_tries >= self.report_tries:
            self.note_event(t, "report_abandoned", date=str(self.fleet.model.date(day)))
            t.report, t.last_reported = None, day
            self._maybe_report(t)
            return
        t.report_tries += 1
        self.stats.reports_sent += 1
        self._send(t, t.conn, data, "REPORT")
        t.report_timer = self.loop.call_later(self.report_retry_s, self._push_report, t)

    def _on_report_ack(self, t: SimTerminal, ack):
        if t.report is None or t.report[1] is None or ack.piid & 0x3F != t.report[1]:
            return
        if t.report_timer is not None:
            t.report_timer.cancel()
            t.report_timer = None
        self.stats.reports_acked += 1
        t.last_reported, t.report = t.report[0], None
        self._maybe_report(t)

    def _at_midnight(self):
        for t in self.terminals:
            self._maybe_report(t)
        self._schedule_midnight()

    def _schedule_midnight(self):
        nxt = _dt.datetime.combine(self.now().date() + _dt.timedelta(days=1), _dt.time())
        self._midnight = self.loop.call_at(self.real_at(nxt) + 0.001, self._at_midnight)

    # --- running -------------------------------------------------------------------------------------------
    async def run(self, duration_s: float | None = None, stats_every_s: float = 0.0, stats_out=None,
                  ready=None):
        """Run until :meth:`stop`, SIGINT/SIGTERM or ``duration_s``.  ``ready()`` is called once the
        listeners are up and dialling has been scheduled."""
        raise_nofile()
        self.loop = asyncio.get_running_loop()
        self.t0 = time.monotonic()
        self._stopping = asyncio.Event()
        today = self.today()
        for t in self.terminals:
            t.last_reported = today                 # report days frozen from now on
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.loop.add_signal_handler(sig, self._stopping.set)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        if self.listen_on is not None:
            await self._listen()
        if self.connect_to is not None or self.mqtt is not None:
            step = 1.0 / self.ramp_per_s if self.ramp_per_s > 0 else 0.0
            base = self.loop.time()
            for k, t in enumerate(self.terminals):
                self.loop.call_at(base + k * step, lambda t=t: self.loop.create_task(self._dial(t)))
        self._schedule_midnight()
        if ready is not None:
            ready()
        if duration_s is not None:
            self.loop.call_later(duration_s, self._stopping.set)
        ticker = None
        if stats_every_s > 0:
            ticker = self.loop.create_task(self._ticker(stats_every_s, stats_out or sys.stderr))
        await self._stopping.wait()
        if ticker is not None:
            ticker.cancel()
        await self._shutdown()

    def stop(self):
        if self._stopping is not None:
            self.loop.call_soon_threadsafe(self._stopping.set)

    async def _listen(self):
        host, port, last = self.listen_on
        if last is None or last == port:
            srv = await self.loop.create_server(lambda: SimLink(self, None), host, port)
            self._servers.append(srv)
            return
        if last - port + 1 < len(self.terminals):
            raise SimulatorError(f"port range {port}-{last} has fewer ports than {len(self.terminals)} terminals")
        for k, t in enumerate(self.terminals):
            self._servers.append(await self.loop.create_server(lambda t=t: SimLink(self, t), host, port + k))

    async def _ticker(self, every: float, out):
        while True:
            await asyncio.sleep(every)
            print(self.stats_line(), file=out, flush=True)

    def stats_line(self) -> str:
        s = self.stats
        return (f"sim {self.now():%Y-%m-%d %H:%M:%S} online {s.online}/{len(self.terminals)} frames in {s.frames_in} "
                f"out {s.frames_out} answers {s.answers} reports {s.reports_acked}/{s.reports_sent} "
                f"faults drop {s.dropped} slow {s.slowed} garbage {s.garbage} offline {s.offline_spells}")

    async def _shutdown(self):
        if self._midnight is not None:
            self._midnight.cancel()
        for t in self.terminals:
            t.stopped = True
            for h in (t.timer, t.report_timer):
                if h is not None:
                    h.cancel()
            if t.conn is not None and t.conn.transport is not None:
                if t.logged_in:
                    self._link(t, A.LINK_LOGOUT)
                t.conn.transport.close()
        for srv in self._servers:
            srv.close()
        await asyncio.sleep(0.05)

    # --- results ---------------------------------------------------------------------------------------
    def summary(self) -> dict:
        return {"terminals": len(self.terminals), "meters": self.fleet.n_meters, "fleet": self.fleet.source,
                "seed": self.seed, "sim_start": self.start.isoformat(), "sim_now": self.now().isoformat(),
                **dataclasses.asdict(self.stats)}

    def ground_truth(self) -> dict:
        """What was injected: rates, each terminal's clock drift, the meter-day faults from the start
        day to today, and the traffic faults in order."""
        start_day = self.fleet.model.day_of(self.start.date())
        return {"seed": self.seed, "rates": dataclasses.asdict(self.faults),
                "clock_drift_s": {t.address: round(t.drift_s, 3) for t in self.terminals if t.drift_s},
                "missing": self.missing_truth(start_day - P.MAX_DAYS_BACK_645, self.today()),
                "events": self.events, "counts": dataclasses.asdict(self.stats)}


def _dts_data(t: _dt.datetime):
    from gridhead.protocols.dlt698.axdr import Data
    return Data(25, date_time(t))


def raise_nofile() -> int:
    """Raise the open-file soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def new_loop():
    """A uvloop event loop when uvloop is installed, else asyncio's."""
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def run(sim: Simulator, **kw):
    """Run ``sim`` to completion on a fresh (uv)loop: ``Simulator.run`` keywords."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(sim.run(**kw))


__all__ = ["Simulator", "Faults", "Stats", "SimTerminal", "run", "new_loop", "raise_nofile",
           "SimulatorError"]


class ShardedSimulator(Simulator):
    """The simulator's fleet dialling ``shards[shard_of(address)]`` (host, port) — as terminals configured
    with their shard's master-station address do."""

    def __init__(self, fleet, *, shards, **kw) -> None:
        super().__init__(fleet, connect=tuple(shards[0]), **kw)
        self.shards = [tuple(s) for s in shards]

    async def _dial(self, t):
        # Simulator._dial reads connect_to before its first await: set per terminal, no interleaving
        self.connect_to = self.shards[shard_of(t.address, len(self.shards))]
        await super()._dial(t)

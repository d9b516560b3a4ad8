"""The head-end server (主站前置): keeps DL/T 698.45 terminals online and turns their traffic into readings.

Public API (the collection tasks, the demo and the tests build on this; everything else is internal)::

    from gridhead.headend.config import Config, DialOut
    from gridhead.headend.server import HeadEnd, TerminalOffline, AnswerTimeout

    cfg = Config(data_dir="data", listen_port=0, metrics_port=None)     # or Config.load("gridhead.toml")
    he = HeadEnd(cfg)                      # archive: <data_dir>/archive.duckdb (terminal addresses, meters)
    await he.start()                       # listen (he.port), dial out to cfg.dial_out, metrics, timer wheel
    he.sessions                            # Registry: he.sessions.get("201605190907") -> Terminal | None
    t = he.sessions.get(addr)              #   t.address, t.peer, t.login_utc, t.last_frame_utc, t.counters
    await he.wait_online(addr, timeout_s=5)
    rsp = await he.request(addr, A.get(0x40000200), timeout_s=10, retries=1)   # -> the response Apdu
    he.ingest                              # Ingest: await he.ingest.readings(batch.columns, kind)
                                           #         await he.ingest.events(cols)   (durable on return)
    he.meter_of_tsa                        # dict TSA bytes -> meter id (records.tsa_index of the archive)
    he.on_report.append(fn)                # fn(terminal, notification, [(kind, records.Batch)]) once durable
    he.on_login.append(fn); he.on_logout.append(fn)      # fn(terminal)
    he.metrics                             # Metrics: .collection_progress / .collection_success gauges...
    await he.stop()                        # close sessions, flush ingest into the lake, stop listening

    await serve(cfg, on_ready=fn)          # gridhead serve: start, run until SIGINT/SIGTERM, stop
    use_uvloop(); raise_open_files()       # what a process hosting thousands of terminals does first

``request`` raises :class:`TerminalOffline` (not logged in / the link dropped) or :class:`AnswerTimeout`
(no response within ``timeout_s`` after ``retries`` retries), both :class:`~protocols.errors.TransportError`;
a ``DarError`` is the caller's business (the response carries it).  It waits for a slot of the
terminal's in-flight limit (``Config.max_in_flight``) and of the global throttle (``Config.global_in_flight``
concurrent requests, ``Config.requests_per_s`` token bucket) before sending: a collection wave queues
in the head-end, not in the fleet.

How a connection runs (one :class:`headend.terminal.Terminal` per link, an ``asyncio.Protocol``):
bytes go into its :class:`protocols.dlt698.session.ClientSession` (all protocol state lives there); the
events that come out are handled in the protocol callback — LINK-Requests answered at once (login of an
address not in the archive refused with result 2 "illegal device" and the link closed; a second login of
an online address replaces the old session), responses resolve their request's future, REPORTs are
decoded (headend.records), written through the durable ingest (storage.wal) and acknowledged only when
the ingest says they are fsynced.  No task per terminal: deadlines (heartbeat loss, login timeout,
idle) live in one shared timer wheel (headend.terminal.TimerWheel).

Ingest: ``he.ingest.readings`` batches given in the same event-loop turn (reports from many terminals)
are written as one WAL record (one validation, one fsync group); each caller gets that group's Ticket.

Dial-out terminals (``Config.dial_out``, server mode): the head-end connects, answers their LINK login,
opens the application association (CONNECT-Request, public mechanism) and only then reports them online.

Back-pressure: while more than ``Config.ingest_queue_bound`` report batches wait for their fsync, every
terminal stops being read (``transport.pause_reading``) until the ingest catches up; frames are bounded by
``Config.max_frame`` and a terminal's unparsed bytes by the framer's bound.  A terminal sending garbage,
flooding, never logging in (slowloris) or going silent (half-open) is closed on its own.
"""

from __future__ import annotations

import asyncio
import pathlib
import time

import numpy as np

from gridhead.protocols.dlt698 import apdu as A
from gridhead.protocols.errors import StorageError, TransportError
from gridhead.storage import schema
from gridhead.storage.wal import AsyncIngest

from . import records
from .config import Config, DialOut
from .log import event, get_logger
from .metrics import Metrics
from .registry import Registry
from .terminal import AnswerTimeout, Terminal, TerminalOffline, TimerWheel
from .transport import Connector, TcpListener, Transport

__all__ = ["HeadEnd", "Ingest", "TokenBucket", "TerminalOffline", "AnswerTimeout", "Config", "DialOut", "use_uvloop",
           "serve", "serve_and_collect", "transports_for"]

log = get_logger("headend")


def use_uvloop() -> bool:
    """Make new event loops uvloop's when it is installed; True if so."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


class TokenBucket:
    """``rate`` acquisitions per second on average, bursts up to ``burst``; rate 0 = unlimited."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "lock")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self.rate:
            return
        async with self.lock:                 # first come, first served
            while True:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


class Ingest:
    """The head-end's durable writer: ``await readings(columns, kind)`` / ``await events(columns)`` return
    the storage.wal Ticket once the batch is fsynced in the write-ahead log.

    ``pending`` counts batches waiting for their fsync; above ``bound`` the head-end pauses socket reads
    (back-pressure) until it is back under half of it.
    """

    def __init__(self, writer, metrics: Metrics, bound: int, on_pressure=None) -> None:
        self.writer = writer
        self.metrics = metrics
        self.bound = bound
        self.pending = 0
        self.on_pressure = on_pressure or (lambda high: None)
        self._high = False
        self._async = AsyncIngest(writer)       # resolves once the group fsync covers the batch
        self._groups: dict = {}                 # (kind, columns) -> [(columns, future)] this loop turn
        self._scheduled = False

    def enter(self) -> None:
        """One more batch (or report) waiting for its fsync; pauses reading above the bound."""
        self.pending += 1
        if not self._high and self.pending > self.bound:
            self._high = True
            self.on_pressure(True)

    def leave(self) -> None:
        self.pending -= 1
        if self._high and self.pending <= self.bound // 2:
            self._high = False
            self.on_pressure(False)

    async def readings(self, columns, kind: str):
        """Durably log a batch of readings.  Batches given in the same turn of the event loop (reports
        from many terminals) are written as one (one validation, one Arrow table, one WAL record):
        the ticket returned is that group's."""
        self.enter()
        try:
            fut = asyncio.get_running_loop().create_future()
            key = (kind, tuple(sorted(columns)))
            group = self._groups.get(key)
            if group is None:
                self._groups[key] = group = []
            group.append((columns, fut))
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._submit_groups)
            ticket = await fut
        finally:
            self.leave()
        return ticket

    def _submit_groups(self) -> None:
        self._scheduled = False
        groups, self._groups = self._groups, {}
        loop = asyncio.get_running_loop()
        for (kind, _keys), items in groups.items():
            cols = items[0][0] if len(items) == 1 else {
                k: np.concatenate([c[k] for c, _ in items]) for k in items[0][0]}
            futs = [f for _, f in items]
            try:
                ticket = self.writer.submit(cols, kind)
            except Exception as exc:  # noqa: BLE001 - each waiter gets the writer's error
                for f in futs:
                    if not f.done():
                        f.set_exception(exc)
                continue

            def done(err, futs=futs, ticket=ticket):
                loop.call_soon_threadsafe(self._resolve_group, futs, ticket, err)

            self.writer.when_durable(ticket.seq, done)

    def _resolve_group(self, futs, ticket, err) -> None:
        if err is None:
            self.metrics.readings += ticket.accepted
        for f in futs:
            if f.done():
                continue
            if err is None:
                f.set_result(ticket)
            else:
                f.set_exception(StorageError(f"ingest: batch not logged: {err}"))

    async def events(self, columns, reason: str | None = None):
        """Durably log a batch of events; with ``reason`` into the quarantine table with that reason."""
        self.enter()
        try:
            return await self._async.append_events(columns, reason)
        finally:
            self.leave()

    def flush(self, timeout: float | None = None) -> None:
        self.writer.flush(timeout)


class HeadEnd:
    """See the module docstring.  ``terminals``: the archive's terminal addresses (default: read from
    ``<data_dir>/archive.duckdb``); ``meter_of_tsa``: TSA → meter id (default: from the archive);
    ``writer``: a storage.wal.IngestWriter (default: one on ``<data_dir>/lake`` with the archive's meters)."""

    def __init__(self, config: Config, *, terminals=None, meter_of_tsa=None, writer=None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.sessions = Registry()
        self.on_report: list = []
        self.on_login: list = []
        self.on_logout: list = []
        self._terminals = terminals
        self.meter_of_tsa = meter_of_tsa
        self._writer = writer
        self._own_writer = writer is None
        self.ingest: Ingest | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wheel: TimerWheel | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.paused = False
        self.stopping = False
        self.hurry = asyncio.Event()      # set by a second stop signal: stop() shortens its waits
        from .terminal import meter_tz
        self.meter_tz = meter_tz(config.meter_tz)
        self.links: set = set()
        self._tasks: set = set()
        self._online_waiters: dict = {}
        self._sem: asyncio.Semaphore | None = None
        self._bucket: TokenBucket | None = None
        self.transports: list[Transport] = []   # headend.transport: TCP, dial-out, MQTT, serial (transports_for)

    # --- life cycle ---------------------------------------------------------------------------------------
    def _load_archive(self) -> None:
        if self._terminals is not None and self.meter_of_tsa is not None and self._writer is not None:
            return
        from gridhead.storage.archive import Archive
        from gridhead.storage.paths import archive_path, lake_root
        path = archive_path(self.config.data_dir)
        if not pathlib.Path(path).exists():
            raise TransportError(f"head-end: no archive at {path} (run `gridhead archive import` first)")
        with Archive(path, read_only=True) as arc:
            if self._terminals is None:
                self._terminals = frozenset(arc.columns("SELECT terminal_address FROM concentrators")
                                            ["terminal_address"].tolist())
            routes = arc.meter_routes()
            if self.meter_of_tsa is None:
                self.meter_of_tsa = records.tsa_index(routes)
            known = arc.known_meter_ids()
        if self._writer is None:
            from gridhead.storage.wal import IngestWriter
            from gridhead.headend.shard import wal_name
            self._writer = IngestWriter(lake_root(self.config.data_dir), known,
                                        wal_name=wal_name(self.config.shard_index, self.config.shard_count))

    def meter_now(self):
        """Now on the meters' and terminals' clocks (``Config.meter_tz``, China Standard Time): naive."""
        from .terminal import local_now
        return local_now(self.meter_tz)

    def known_terminal(self, address: str) -> bool:
        t = self._terminals
        return t(address) if callable(t) else address in t

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.loop.run_in_executor(None, self._load_archive)
        self._terminals = self._terminals if callable(self._terminals) else frozenset(
            a.upper() for a in self._terminals)
        if self.config.shard_count > 1:          # scale-out: only this shard's terminals may log in here
            from gridhead.headend.shard import owned
            self._terminals = owned(self._terminals, self.config.shard_index, self.config.shard_count)
        self.ingest = Ingest(self._writer, self.metrics, self.config.ingest_queue_bound, self._pressure)
        self.wheel = TimerWheel(self.loop)
        self._sem = asyncio.Semaphore(self.config.global_in_flight)
        self._bucket = TokenBucket(self.config.requests_per_s)
        m = self.metrics
        m.sessions_online = lambda: len(self.sessions)
        m.connections = lambda: self.sessions.connections
        m.ingest_pending = lambda: self.ingest.pending
        m.paused = lambda: self.paused
        if self.config.metrics_port is not None:
            self.metrics_port = m.start(self.config.metrics_port, "127.0.0.1")
        # every way in — the TCP listener, the dial-out connectors, an MQTT broker, RS-485 buses — is a
        # headend.transport.Transport, started in the order the configuration gives them
        self.transports = transports_for(self, self.config)
        for tr in self.transports:
            await tr.start()
        self.port = self.transports[0].port if isinstance(self.transports[0], TcpListener) else None
        event(log, "started", host=self.config.listen_host, port=self.port, metrics_port=self.metrics_port,
              terminals=len(self._terminals) if not callable(self._terminals) else None,
              dial_out=len(self.config.dial_out), transports=[tr.name for tr in self.transports])

    def accept(self) -> Terminal:
        """A new terminal link (the TCP listener's protocol factory)."""
        t = Terminal(self)
        self.links.add(t)
        return t

    async def stop(self) -> None:
        """Stop listening, close every link, publish everything ingested into the lake."""
        self.stopping = True
        for tr in self.transports:               # no new links or bytes
            await tr.stop()
        # reports already received: let their fsync and acknowledgement finish (milliseconds), then
        # cancel what is left (dial-outs, associations; a report cut short is simply not acknowledged)
        reports = [t for t in self._tasks if not t.done() and t.get_name().startswith("report")]
        if reports:
            await self._wait_unless_hurried(reports, 5)
        for task in list(self._tasks):
            task.cancel()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for t in list(self.links):
            t.close("shutdown")
        self.links.clear()
        for tr in self.transports:
            await tr.closed()
        if self.wheel is not None:
            self.wheel.close()
        self.metrics.stop()
        if self._writer is not None:
            if self._own_writer:
                await self.loop.run_in_executor(None, self._writer.close)
            else:
                await self.loop.run_in_executor(None, self._writer.flush)
        event(log, "stopped", readings=self.metrics.readings)

    async def _wait_unless_hurried(self, tasks, timeout_s: float) -> None:
        """Wait until ``tasks`` are done, ``timeout_s`` at most, less if :attr:`hurry` is set meanwhile (a
        second SIGINT / SIGTERM during a graceful stop): it shortens waits, never the ingest's flush."""
        pending = {t for t in tasks if not t.done()}
        end = self.loop.time() + timeout_s
        h = self.loop.create_task(self.hurry.wait())
        try:
            while pending and not self.hurry.is_set():
                left = end - self.loop.time()
                if left <= 0:
                    break
                done, _ = await asyncio.wait(pending | {h}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                pending -= done
        finally:
            h.cancel()

    def spawn(self, coro, name: str | None = None) -> asyncio.Task:
        """Run ``coro`` as one of the head-end's tasks (cancelled when it stops)."""
        task = self.loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- sessions -------------------------------------------------------------------------------------------
    def session_ready(self, t: Terminal) -> None:
        """A terminal logged in: online at once, or after its application association (dial-out)."""
        if t.dial is not None and t.dial.associate:
            self.spawn(self._associate(t))
        else:
            self._online(t)

    async def _associate(self, t: Terminal) -> None:
        """CONNECT-Request (应用连接, 7.4.2) with public mechanism; online once the terminal accepts."""
        # frame and APDU sizes of 1024: what terminals commonly offer (the dlt698 peer gives no answer to
        # larger ones); longer answers come fragmented (分帧), which the session reassembles
        req = A.ConnectRequest(0, protocol_conformance=b"\xff\xff\xf8\x00\x00\x00\x00\x00",
                               send_frame_max=1024,
                               receive_frame_max=1024, apdu_max=1024)
        try:
            rsp = await t.request(req, self.config.request_timeout_s)
        except TransportError as exc:
            event(log, "association failed", address=t.address, error=str(exc))
            return t.close("association")
        if getattr(rsp, "result", 1) != 0:
            event(log, "association refused", address=t.address, result=getattr(rsp, "result", None))
            return t.close("association")
        self._online(t)

    def _online(self, t: Terminal) -> None:
        old = self.sessions.login(t)
        if old is not None:
            old.close("replaced")
        event(log, "login", address=t.address, peer=t.peer, replaced=old is not None)
        for f in self._online_waiters.pop(t.address, ()):
            if not f.done():
                f.set_result(t)
        for fn in self.on_login:
            fn(t)

    def session_offline(self, t: Terminal) -> None:
        self.links.discard(t)
        if t.address is not None and self.sessions.get(t.address) is t:
            self.sessions.logout(t)
            for fn in self.on_logout:
                fn(t)

    async def wait_online(self, address: str, timeout_s: float | None = None) -> Terminal:
        """The terminal once it is logged in (at once if it is)."""
        t = self.sessions.get(address)
        if t is not None:
            return t
        fut = self.loop.create_future()
        self._online_waiters.setdefault(address, []).append(fut)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            raise TerminalOffline(f"terminal {address} did not log in within {timeout_s} s") from None

    def _pressure(self, high: bool) -> None:
        """Back-pressure from the ingest: stop (or resume) reading from every socket."""
        self.paused = high
        event(log, "reading paused" if high else "reading resumed", pending=self.ingest.pending)
        for t in list(self.links):
            t.pause() if high else t.resume()

    # --- requests --------------------------------------------------------------------------------------------
    async def request(self, terminal_address: str, apdu: A.Apdu, *, timeout_s: float | None = None,
                      retries: int | None = None, priority: bool = False, columnar: bool = False):
        """Send ``apdu`` to the terminal and return its response; retried on timeout.  Raises
        TerminalOffline or AnswerTimeout (TransportError).  ``columnar``: a record answer of the
        profile's RCSDs comes back as lake columns (a ``records.RecordAnswer``, :meth:`decode_response`),
        anything else as the response APDU."""
        cfg = self.config
        timeout_s = cfg.request_timeout_s if timeout_s is None else timeout_s
        retries = cfg.request_retries if retries is None else retries
        m = self.metrics
        for attempt in range(retries + 1):
            t = self.sessions.get(terminal_address)
            if t is None:
                m.requests["offline"] += 1
                raise TerminalOffline(f"terminal {terminal_address} is not online")
            async with self._sem:
                await self._bucket.acquire()
                try:
                    rsp = await t.request(apdu, timeout_s, priority, columnar)
                except AnswerTimeout:
                    if attempt == retries:
                        m.requests["timeout"] += 1
                        raise
                    m.requests["retry"] += 1
                    continue
                except TerminalOffline:
                    m.requests["offline"] += 1
                    raise
            m.requests["ok"] += 1
            return rsp
        raise AssertionError("unreachable")

    # --- reports ---------------------------------------------------------------------------------------------
    def decode_report(self, apdu: bytes):
        """The sessions' ``report_decoder``: a REPORT-Notification-RecordList of the profile's RCSDs
        straight into lake columns (records.decode_record_answer) as (notification without rows,
        RecordAnswer); None for anything else, which the session decodes the general way."""
        if self.meter_of_tsa is None:
            return None
        fast = records.decode_record_answer(apdu, self.meter_of_tsa, source=schema.SRC_REPORT,
                                            received_utc=int(time.time()))
        return None if fast is None else (fast.notification(), fast)

    def decode_response(self, apdu: bytes):
        """The sessions' ``response_decoder`` (requests sent ``columnar``): a GET-Response-Record or
        PROXY-Response-GetRecord of the profile's RCSDs straight into lake columns, as (the response
        without rows, RecordAnswer); None for anything else, which the session decodes the general way."""
        if self.meter_of_tsa is None:
            return None
        fast = records.decode_record_answer(apdu, self.meter_of_tsa, source=schema.SRC_TASK,
                                            received_utc=int(time.time()))
        if fast is None or len(fast.results) != 1:
            return None
        oad, rcsd, dar, _b = fast.results[0]
        res = A.ResultRecord(oad, rcsd, None, dar)
        if fast.tag == 0x85:
            return A.GetResponseRecord(fast.piid_acd, res), fast
        return A.ProxyGetResponseRecord(fast.piid_acd, fast.tsa, res), fast

    def report_received(self, t: Terminal, report) -> None:
        self.ingest.enter()            # counted at once: the frames after it wait if the ingest is behind
        self.spawn(self._store_report(t, report), f"report {t.address}")

    async def _store_report(self, t: Terminal, report) -> None:
        try:
            await self._store_report_inner(t, report)
        finally:
            self.ingest.leave()

    async def _store_report_inner(self, t: Terminal, report) -> None:
        n = report.notification
        received = int(time.time())
        batches, events_, terminal_ = [], [], []
        try:
            if report.decoded is not None:          # columns already (decode_report)
                batches.extend((records.kind_of(rcsd, oad), b) for oad, rcsd, dar, b in report.decoded.results
                               if dar is None and len(b))
            elif isinstance(n, A.ReportNotificationRecordList):
                for res in n.results:
                    if res.dar is not None:
                        continue
                    if not records.has_meter_column(res.rcsd):
                        # the terminal's own record (3106 终端停/上电, 3100, 3104, 3105 ...): it names no
                        # meter, so it is kept as the terminal's event in the quarantine with its reason
                        terminal_.extend((c, schema.TERMINAL_EVENT) for c in records.terminal_event_columns(
                            t.address, res.oad, res.rcsd, res.rows, received_utc=received))
                        continue
                    if not res.rows:
                        continue
                    ev = records.event_rows_to_batch(res.oad, res.rcsd, res.rows, self.meter_of_tsa,
                                                     received_utc=received)
                    if ev is not None:
                        events_.extend(ev)
                        continue
                    try:
                        b = records.result_to_batch(res, self.meter_of_tsa, source=schema.SRC_REPORT,
                                                    received_utc=received)
                    except ValueError as exc:
                        # rows that cannot become readings are kept (quarantined with why), not refused
                        # forever: a report left unacknowledged is sent again and again
                        for cols in records.terminal_event_columns(t.address, res.oad, res.rcsd, res.rows,
                                                                   received_utc=received):
                            cols["event"][:] = 100              # terminal_record: the rows as reported
                            terminal_.append((cols, f"undecodable record: {exc}"))
                        continue
                    if len(b):
                        batches.append((records.kind_of(res.rcsd, res.oad), b))
            for kind, b in batches:
                await self.ingest.readings(b.columns, kind)
            for cols in events_:
                await self.ingest.events(cols)
            for cols, why in terminal_:
                await self.ingest.events(cols, reason=why)
            if terminal_:
                event(log, "terminal record kept", address=t.address, piid=getattr(n, "piid", None),
                      reasons=sorted({why for _c, why in terminal_}), rows=sum(len(c["meter_id"]) for c, _w in terminal_))
        except (StorageError, ValueError) as exc:
            # not durable: no acknowledgement, so the terminal sends the report again
            event(log, "report not stored", address=t.address, error=str(exc))
            self.metrics.decode_errors += 1
            return
        t.acknowledge(report)
        for fn in self.on_report:
            fn(t, n, batches)


def transports_for(he: HeadEnd, config: Config) -> list[Transport]:
    """The transports of ``config``, in the order they start: the TCP listener, the dial-out connectors
    (a ``[[dial_out]]`` address the archive lacks is refused, as its dial-in login would be), the MQTT
    bridge, the serial buses."""
    out: list[Transport] = [TcpListener(he, config.listen_host, config.listen_port)]
    for d in config.dial_out:
        if he.known_terminal(d.address.upper()):
            out.append(Connector(he, d))
        else:
            # the archive says which terminals are ours, whoever dials whom: a dial-out address it lacks
            # is refused as its dial-in login would be (never dialled, never online)
            he.metrics.refused["illegal device"] += 1
            event(log, "dial-out refused", address=d.address, host=d.host, port=d.port, reason="not in the archive")
    if config.mqtt is not None:
        from .transport_mqtt import MqttBridge      # aiomqtt only for a head-end that uses a broker
        out.append(MqttBridge(he, config.mqtt))
    if config.serial:
        from .transport_serial import SerialBus
        out += [SerialBus(he, p) for p in config.serial]
    return out


def raise_open_files() -> int:
    """Raise the soft limit of open files to the hard limit (10,000 terminals need as many sockets)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def serve(config: Config, *, on_ready=None, schedule=None) -> HeadEnd:
    """Run a head-end until SIGINT or SIGTERM, then stop it gracefully (ingest flushed into the lake).

    ``schedule``: a ``headend.collect.Schedule`` (the ``[collect]`` table) runs the collection scheduler
    and the nightly lake compaction in this process, from ``on_ready`` on; on stop it is given a second
    to finish its step, then cancelled (collection resumes from the lake and its state on restart).
    A second signal during the stop shortens those waits (the scheduler's second, the reports' fsync)
    but the ingest is flushed into the lake all the same."""
    import signal
    he = HeadEnd(config)
    await he.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig) -> None:
        # the first signal asks for a graceful stop; a later one (an impatient operator, systemd's
        # second TERM) shortens its waits but never skips the ingest's flush: the handlers stay
        # installed until the flush is done, so no signal falls through to the default (exit 143)
        if not stop.is_set():
            event(log, "stopping", signal=sig.name)
            stop.set()
        elif not he.hurry.is_set():
            event(log, "stop hurried", signal=sig.name, note="waits shortened; the ingest is still flushed")
            he.hurry.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    col = sched = None
    try:
        if on_ready is not None:
            on_ready(he)
        if schedule is not None and schedule.enabled:
            from .collect import Collector
            col = Collector(he, schedule.load_tasks(), seed=schedule.seed)
            col.compact_offset_s = schedule.compact_offset_s if schedule.compact else None
            col.compact_days = schedule.compact_days

            async def scheduler():
                # the terminals log in first (they dial in after a restart): a pass with all of them
                # offline would only record gaps for back-fill
                online = await col.wait_online(schedule.wait_online_s, stop)
                event(log, "collection scheduler", tasks=[t.name for t in col.tasks if t.enabled],
                      terminals=len(col.meters_of), online=online,
                      compact=col.compact_offset_s is not None and col.compact_lake)
                await col.run(first_day=schedule.first_day, stop=stop)
            sched = loop.create_task(scheduler())
        waits = [loop.create_task(stop.wait())] + ([sched] if sched is not None else [])
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        waits[0].cancel()
        if sched is not None and sched.done() and not sched.cancelled() and sched.exception() is not None:
            raise sched.exception()
    finally:
        try:
            if sched is not None and not sched.done():
                stop.set()
                await he._wait_unless_hurried([sched], 1.0)
                if not sched.done():
                    sched.cancel()
                    await asyncio.gather(sched, return_exceptions=True)
            if col is not None:
                col.close()
            await he.stop()
            # what else runs beside the head-end (the control API mounted by on_ready) stops here too,
            # still under the handlers above
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    return he


# --- a head-end that collects (``gridhead collect run``, the demo, the fleet tests) -------------------------
async def serve_and_collect(data_dir, days, *, port: int = 0, host: str = "127.0.0.1", tasks=None,
                            task: str = "daily-frozen", seed: int = 0, wait_online: int | None = None,
                            wait_s: float = 30.0, on_port=None, on_stored=None, forever: bool = False,
                            config: dict | None = None, meters: dict | None = None) -> dict:
    """Start a head-end on ``data_dir``, wait for the fleet (``wait_online`` terminals, default all of
    the archive's, at most ``wait_s``), collect ``days`` with ``task`` and back-fill, stop; the summary.

    ``on_port(port)`` is called once listening; ``forever`` keeps the scheduler running afterwards.
    ``meters`` ({date: [meter_id]}): re-read only those meter-days (:meth:`Collector.reread`) instead.
    """
    from .collect import Collector, refuse_days_not_begun
    # refused before the head-end starts and waits for the fleet (the collector refuses them too)
    refuse_days_not_begun([*days, *(meters or {})])
    he = HeadEnd(Config(data_dir=str(data_dir), listen_host=host, listen_port=port, **(config or {})))
    await he.start()
    col = None
    try:
        if on_port is not None:
            on_port(he.port)
        col = Collector(he, tasks, seed=seed)
        col.on_stored = on_stored
        want = len(col.meters_of) if wait_online is None else wait_online
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while len(he.sessions) < want and loop.time() < deadline:
            await asyncio.sleep(0.05)
        online = len(he.sessions)
        t0 = time.perf_counter()
        out = await (col.reread(task, meters) if meters is not None else col.run_days(task, days))
        out.update(terminals=len(col.meters_of), online_at_start=online, seconds=round(time.perf_counter() - t0, 3),
                   requests=col.counts["requests"], failed_requests=col.counts["failed"],
                   readings_stored=col.counts["stored"], readings_backfilled=col.counts["backfilled"])
        if forever:
            await col.run(first_day=min(days) if days else None)
        return out
    finally:
        if col is not None:
            col.close()
        await he.stop()

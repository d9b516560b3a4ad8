"""The operators' control API of a running head-end (遥控, 召测, 保电, 对时): HTTP + JSON, on 127.0.0.1
by default, served by aiohttp's web server on the head-end's own event loop.

Mounted beside the head-end by ``gridhead serve`` (:func:`mount`), or started by a program::

    ctl = ControlServer(he, ControlConfig(port=0))      # he: a started headend.server.HeadEnd
    await ctl.start()                                    # ctl.port, ctl.url
    ...
    await ctl.stop()

Settings: the ``[control]`` table of the head-end's TOML file (:class:`ControlConfig`)::

    [control]
    host = "127.0.0.1"          # loopback by default; any other address needs TLS (or insecure = true)
    port = 7699                 # 0 = any free port
    tls_cert = "cert.pem"       # both set: HTTPS (ssl.SSLContext from them)
    tls_key = "key.pem"
    tls_client_ca = "ca.pem"    # also set: mutual TLS, a client certificate signed by this CA is required
    command_timeout_s = 10
    password_645 = "02000000"   # DL/T 645 level-02 password and operator code for 1CH / 14H
    operator_645 = "00000001"
    control_per_s = 5           # per operator: commands on meters (bursts of control_burst)
    bulk_approval = 100         # a bulk disconnect of more meters waits for a second admin
    [[control.direct_645]]      # 645 meters reached over TCP (a serial gateway, the dlt645 meter server)
    address = "000012345678"
    host = "127.0.0.1"
    port = 8899

Limits (each a key of ``[control]``; a request past one gets a 4xx JSON answer and one log line):
``max_line_bytes`` (request line, 8 KiB), ``max_field_bytes`` (each header line, 8 KiB),
``max_head_bytes`` (the whole head, 64 KiB), ``max_headers`` (100), ``max_body_bytes`` (1 MiB, chunked
bodies included), ``max_json_depth`` (32), ``head_timeout_s`` (10: the head from its first byte — or
from the connection — to its end; a slow client is answered 408 and cut), ``body_timeout_s`` (30),
``keepalive_s`` (idle keep-alive connection), ``max_connections`` (256) and ``max_connections_per_client``
(32; past either the connection is answered 503 / 429 and closed), ``max_registers`` (32 per read),
``max_bulk_targets`` (10,000 meters per bulk request).  Failed logins: ``auth_free_failures`` (5) per
client address and per token id, then a delay doubling from ``auth_delay_s`` (1) up to
``auth_max_delay_s`` (300); a request within the delay is answered 429 without trying the secret;
failures are forgotten after ``auth_forget_s`` (900) without one.  scrypt runs in a thread pool.

Endpoints (``Authorization: Bearer <token>``; tokens from ``gridhead token add``; roles in headend.auth):

=========================  ==========  ============================================================
``GET  /v1/status``         viewer      terminals online / known, last heartbeat, communication quality
``POST /v1/read``           viewer      {target, registers: [...]}
``POST /v1/disconnect``     operator    {target, reason (required)}
``POST /v1/reconnect``      operator    {target, mode: "allowed" | "direct"}
``POST /v1/protect``        admin       {target, on: true | false}  (off: a job for a second admin)
``POST /v1/timesync``       operator    {target, min_skew_s}
``POST /v1/bulk``           operator    {command: disconnect | reconnect | timesync, targets: [...], ...}
``GET  /v1/jobs[/<id>]``    viewer      jobs (bulk, 保电 off) with their state and outcomes
``POST /v1/jobs/<id>/approve`` admin    the second admin's approval (two-person rule)
``GET  /v1/audit``          viewer      ?limit=N&target=...  the latest audit records (token ids: admins)
``GET/POST /v1/tokens``     admin       list / add {name, role, expires_days}; ``DELETE /v1/tokens/<id>``
=========================  ==========  ============================================================

Every POST command also takes ``client_id`` (idempotency: a repeated id returns the first outcome and
never acts twice; the id is kept in the audit log, so this holds across a restart) and, for commands
on meters, ``offline``: ``"refuse"`` (default: HTTP 409 when the target's terminal is offline) or
``"queue"`` with ``expires_s`` (HTTP 202; the command runs when the terminal logs in, or is recorded
``expired``).  Answers: 200 done (``outcome`` ok; a refusal by the meter or by 保电 is 409 with
outcome ``refused``; a meter's own refusal of a trip carries, as ``readback``, the relay state read
after it), 202 queued or waiting for approval (``outcome`` ``pending_approval``, ``job``), 400 bad
request, 401 / 403, 404, 408 too slow, 409, 413 too large, 429 rate limit or login delay (with
``Retry-After``), 431 head too large, 501 not implemented, 504 no answer from the target (outcome
``failed``).  A 200 answer also gives ``request_ms``: the head-end's exchange with the target alone
(no HTTP, auth or audit fsync; not audited).

**Two-person rule.**  A bulk disconnect of more than ``bulk_approval`` meters and turning 保电 off wait
as jobs (``pending_approval``, expiring after ``approval_expiry_s``) until an admin other than the one
who asked approves (``gridhead approve JOB``); the request, the approval and every command the job
runs are audited (``job``, ``approved_by``).

Audit: every request that names a command is written to ``storage.control_log.AuditLog`` (fsynced,
hash-chained) before the API answers — refusals too (``outcome`` ``rejected``, ``http_status``, who:
the token's name and id or ``anonymous``, the client address); commands on meters are written
``pending`` before the meter is asked, then with their outcome and read-back.  The head-end keeps its
own protection registry (保电) from the audit log: a trip of a protected meter is refused without
touching the meter (and the simulated meter refuses it too).  It does not start on a log whose chain
is broken unless told ``accept_audit_break`` (``gridhead serve --accept-audit-break``), which is
itself recorded with the breaks it accepts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import ipaddress
import json
import math
import re
import socket
import ssl
import time
import uuid
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from gridhead.protocols.errors import ConfigError, GridheadError, TransportError
from gridhead.storage import control_log as CL

from . import auth, commands as K
from .config import Config, check_keys, read_toml
from .log import event, get_logger

log = get_logger("control")
MAX_BODY = 1 << 20
_CLIENT: contextvars.ContextVar = contextvars.ContextVar("gridhead_api_client", default=("local", None))


class AuditBroken(GridheadError):
    """The audit chain under the 保电 list is broken (edited, removed or reordered records): the head-end
    does not start on it unless told ``--accept-audit-break``.  One line, exit code 1."""

    exit_code = 1

    def __init__(self, report: dict) -> None:
        super().__init__(f"audit log chain broken: {_break_line(report)}; the 保电 list would be rebuilt from it — "
                         f"check `gridhead control-log verify`, then start with --accept-audit-break to accept "
                         f"(recorded)")
        self.report = report


def _break_line(report: dict) -> str:
    b = (report.get("unaccepted") or report.get("breaks") or [{}])[0]
    more = len(report.get("unaccepted") or report.get("breaks") or []) - 1
    return f"line {b.get('line')} (seq {b.get('seq')}): {b.get('problem')}" + (f" (+{more} more)" if more > 0 else "")


_CHECKED: dict = {}


def check_audit_chain(data_dir, key_file=None) -> dict:
    """:func:`storage.control_log.verify` of the head-end's audit log with its key (once per state of
    the file: ``gridhead serve`` checks before starting, the API again when it opens the log)."""
    path = CL.audit_path(data_dir)
    try:
        st = path.stat()
        stamp = (str(path.resolve()), st.st_size, st.st_mtime_ns, key_file)
    except FileNotFoundError:
        stamp = None
    if stamp is not None and stamp in _CHECKED:
        return _CHECKED[stamp]
    report = CL.verify(path, CL.audit_key(data_dir, key_file))
    if stamp is not None:
        _CHECKED.clear()
        _CHECKED[stamp] = report
    return report


@dataclasses.dataclass(frozen=True)
class ControlConfig:
    host: str = "127.0.0.1"
    port: int = 7699
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None     # mutual TLS: client certificates signed by this CA required
    insecure: bool = False               # allow a non-loopback host without TLS
    data_dir: str | None = None          # default: the head-end's
    audit_key_file: str | None = None    # the audit chain's HMAC key (default: $GRIDHEAD_AUDIT_KEY_FILE, else tokens.json)
    accept_audit_break: bool = False     # start although the audit chain is broken (recorded)
    command_timeout_s: float = 10.0
    password_645: str = "02000000"
    operator_645: str = "00000001"
    valid_minutes_645: int = 5
    timesync_645: str = "write"          # write (14H, acknowledged) | broadcast (08H, no answer)
    timesync_tolerance_s: float = 5.0
    max_queue_expiry_s: float = 7 * 86400
    control_per_s: float = 5.0
    control_burst: float = 20.0
    reads_per_s: float = 200.0
    reads_burst: float = 400.0
    direct_645: tuple = ()
    # HTTP limits
    max_line_bytes: int = 8192
    max_field_bytes: int = 8192
    max_head_bytes: int = 65536
    max_headers: int = 100
    max_body_bytes: int = MAX_BODY
    max_json_depth: int = 32
    head_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_s: float = 15.0
    max_connections: int = 256
    max_connections_per_client: int = 32
    max_registers: int = 32
    max_bulk_targets: int = 10000
    # failed logins
    auth_free_failures: int = 5
    auth_delay_s: float = 1.0
    auth_max_delay_s: float = 300.0
    auth_forget_s: float = 900.0
    # two-person rule
    bulk_approval: int = 100
    approval_expiry_s: float = 86400.0

    @classmethod
    def from_dict(cls, raw: dict | None, where: str = "[control]") -> "ControlConfig":
        raw = dict(raw or {})
        check_keys(cls, raw, where)
        try:
            raw["direct_645"] = tuple((str(d["address"]), str(d["host"]), int(d["port"]))
                                      for d in raw.get("direct_645", ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: direct_645 needs address, host, port ({exc})") from None
        if raw.get("timesync_645", "write") not in ("write", "broadcast"):
            raise ConfigError(f"{where}: timesync_645 is write or broadcast")
        for f in dataclasses.fields(cls):
            if f.name in raw and f.name.startswith(("max_", "head_", "body_", "keepalive", "auth_", "bulk_",
                                                    "approval_")):
                v = raw[f.name]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 \
                        or v == 0 and f.name not in ("auth_free_failures", "bulk_approval"):
                    raise ConfigError(f"{where}: {f.name} = {v!r}: a positive number")
        return cls(**raw)

    def replace(self, **kw) -> "ControlConfig":
        return dataclasses.replace(self, **kw)

    def limits(self) -> auth.Limits:
        return auth.Limits(self.control_per_s, self.control_burst, self.reads_per_s, self.reads_burst)

    def check_listen(self) -> None:
        """A non-loopback address without TLS is refused unless ``insecure`` (tokens would cross the
        network in clear)."""
        if self.tls_cert and self.tls_key or self.insecure or _loopback(self.host):
            return
        raise InsecureListen(f"[control] host {self.host}: not a loopback address and no TLS (tls_cert, tls_key): "
                          f"tokens would cross the network in clear; set TLS, or --insecure (behind a TLS proxy)")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not (self.tls_cert and self.tls_key):
            if self.tls_client_ca:
                raise ConfigError("[control] tls_client_ca needs tls_cert and tls_key")
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
            if self.tls_client_ca:
                ctx.load_verify_locations(self.tls_client_ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise GridheadError(f"[control] tls_cert/tls_key/tls_client_ca: {exc}") from None
        return ctx


class InsecureListen(ConfigError):
    """The control API asked to listen off loopback in clear: bad input, exit code 2."""

    exit_code = 2


def _loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Queued:
    __slots__ = ("command_id", "spec", "principal", "expires_at", "handle")

    def __init__(self, command_id, spec, principal, expires_at):
        self.command_id, self.spec, self.principal, self.expires_at = command_id, spec, principal, expires_at
        self.handle = None


class _Job:
    """A bulk command or a 保电 off waiting for (or running after) a second admin's approval."""

    __slots__ = ("id", "command", "targets", "args", "principal", "state", "created", "expires_at", "approved_by",
                 "results", "task", "needs_approval")

    def __init__(self, jid, command, targets, args, principal, needs_approval, expires_at):
        self.id, self.command, self.targets, self.args = jid, command, targets, args
        self.principal, self.needs_approval, self.expires_at = principal, needs_approval, expires_at
        self.state = "pending_approval" if needs_approval else "running"
        self.created = time.time()
        self.approved_by = None
        self.results: list = []
        self.task = None

    def public(self, detail: bool = False) -> dict:
        counts: dict = {}
        for r in self.results:
            counts[r.get("outcome")] = counts.get(r.get("outcome"), 0) + 1
        out = {"job": self.id, "command": self.command, "state": self.state, "requested_by": self.principal.name,
               "approved_by": self.approved_by, "targets": len(self.targets), "done": len(self.results),
               "outcomes": counts, "expires_at": self.expires_at if self.state == "pending_approval" else None}
        if detail:
            out["results"] = self.results
        return out


def _json_depth(v, limit: int) -> bool:
    """Whether ``v`` nests at most ``limit`` deep (iterative: no recursion on hostile input)."""
    stack = [(v, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, (dict, list)):
            if d > limit:
                return False
            stack.extend((y, d + 1) for y in (x.values() if isinstance(x, dict) else x))
    return True


_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Payload Too Large", 414: "URI Too Long",
            429: "Too Many Requests", 431: "Request Header Fields Too Large", 501: "Not Implemented",
            503: "Service Unavailable"}


def _raw_answer(status: int, error: str) -> bytes:
    """A whole HTTP/1.1 answer for a connection cut before aiohttp has a request to answer (slow head,
    head too large, connection caps): JSON, then close."""
    body = json.dumps({"error": error}).encode()
    return (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class _Server(web.Server):
    gh_ctl = None

    def __call__(self) -> RequestHandler:
        return _Conn(self, self.gh_ctl, loop=self._loop, **self._kwargs)


class _Conn(RequestHandler):
    """aiohttp's connection handler plus what it lacks: a deadline for the request head, a cap
    on the head's total size, connection caps in all and per client address, JSON errors without a
    traceback.  ``self._messages`` (aiohttp's queue of parsed heads) tells when a head is complete."""

    def __init__(self, manager, ctl: "ControlServer", **kw) -> None:
        super().__init__(manager, **kw)
        self.gh = ctl
        self.gh_timer = None
        self.gh_head = 0
        self.gh_busy = False
        self.gh_addr = None
        self.gh_admitted = False
        self.gh_cut = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.gh_addr = peer[0] if peer else "?"
        refusal = self.gh._admit(self.gh_addr)
        if refusal is not None:
            self._gh_cut(*refusal)
            return
        self.gh_admitted = True
        self._gh_arm()

    def connection_lost(self, exc) -> None:
        if self.gh_timer is not None:
            self.gh_timer.cancel()
            self.gh_timer = None
        if self.gh_admitted:
            self.gh_admitted = False
            self.gh._release(self.gh_addr)
        super().connection_lost(exc)

    def _gh_arm(self) -> None:
        if self.gh_timer is None:
            self.gh_timer = self._loop.call_later(self.gh.cfg.head_timeout_s, self._gh_slow)

    def _gh_slow(self) -> None:
        self.gh_timer = None
        if not self.gh_busy:
            self._gh_cut(408, f"request head not complete within {self.gh.cfg.head_timeout_s:g} s")

    def _gh_cut(self, status: int, error: str) -> None:
        if self.gh_cut:
            return
        self.gh_cut = True
        event(log, "api bad request", status=status, client=self.gh_addr, error=error)
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(_raw_answer(status, error))
            t.close()
        self.force_close()

    def data_received(self, data: bytes) -> None:
        """Feed aiohttp's parser, but never more than the head budget allows, and nothing after a request
        it could not parse: the bytes of a flood are dropped as they come, never queued or kept."""
        if self.gh_cut:
            return
        if self.gh_busy:
            return self._gh_feed(data)
        self._gh_arm()
        room = self.gh.cfg.max_head_bytes - self.gh_head
        before = len(self._messages)
        self.gh_head += len(data)
        if room > 0:
            self._gh_feed(data[:room] if len(data) > room else data)   # only what fits in the budget first
        if len(self._messages) > before:                 # a whole head parsed: its deadline is met
            self.gh_head = 0
            self.gh_busy = True                          # until its answer: the body has its own deadline
            if self.gh_timer is not None:
                self.gh_timer.cancel()
                self.gh_timer = None
            if len(data) > room:                         # what follows the head (body, next request)
                self._gh_feed(data[room:])
        elif self.gh_head > self.gh.cfg.max_head_bytes:
            self._gh_cut(431, f"request head over {self.gh.cfg.max_head_bytes} bytes")

    def _gh_feed(self, data) -> None:
        """aiohttp's data_received; after a parse error (queued for :meth:`handle_error` to answer, then
        close) the connection reads nothing more.  Without this, every later chunk of a flood became one
        more queued error whose traceback kept that chunk (and this handler) alive until the cyclic GC."""
        if self.gh_cut:
            return
        before = len(self._messages)
        super().data_received(data)
        for msg, _ in list(self._messages)[before:]:
            if isinstance(msg, _ErrInfo):
                self.gh_cut = True                       # handle_error answers it; later bytes are dropped
                exc = msg.exc
                if exc is not None:                      # its frames hold the chunk and this handler
                    exc.__traceback__ = None
                    exc.__context__ = exc.__cause__ = None

    def handle_error(self, request, status: int = 500, exc=None, message=None):
        """A request aiohttp could not parse: a JSON 4xx and one log line (never a traceback)."""
        if isinstance(exc, LineTooLong):
            line = bytes(exc.args[0]) if isinstance(exc.args[0], (bytes, bytearray)) else str(exc.args[0]).encode()
            status = 414 if re.match(rb"[A-Z]+ |/", line) else 431
            text = f"request line or header over the limit ({exc.args[1]} bytes)"
        elif isinstance(exc, BadHttpMessage):
            status = 501 if "transfer-encoding" in str(exc).lower() else status
            text = f"bad HTTP request: {exc.message}"
        else:
            text = message or (str(exc).splitlines()[0] if exc else "bad request")
        if status >= 500 and status != 501:
            text = "internal error"
        event(log, "api bad request", status=status, client=self.gh_addr, error=text[:300])
        resp = web.json_response({"error": text}, status=status)
        resp.force_close()
        return resp



class ControlServer:
    """See the module docstring.  ``routes``: a :class:`headend.commands.Routes` (default: from the
    head-end's archive and ``cfg.direct_645``)."""

    def __init__(self, he, cfg: ControlConfig | None = None, *, routes: K.Routes | None = None) -> None:
        self.he = he
        self.cfg = cfg or ControlConfig()
        data = self.cfg.data_dir or he.config.data_dir
        self.data_dir = data
        self.tokens = CL.TokenStore(CL.tokens_path(data))
        self.audit: CL.AuditLog | None = None
        self.routes = routes
        self.commands = K.Commands(he, self.cfg)
        self.limiter = auth.RateLimiter(self.cfg.limits())
        self.throttle = auth.LoginThrottle(self.cfg.auth_free_failures, self.cfg.auth_delay_s,
                                           self.cfg.auth_max_delay_s, self.cfg.auth_forget_s)
        self._scrypt = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="scrypt")
        self.protected: dict[str, bool] = {}            # target key -> 保电 on (from the audit log)
        self.queue: dict[str, list[_Queued]] = {}       # terminal address -> queued commands
        self.jobs: dict[str, _Job] = {}                 # job id -> bulk / 保电-off job (two-person rule)
        self.last_seen: dict[str, float] = {}           # terminal -> logout time (status of offline ones)
        self.inflight: dict[str, asyncio.Future] = {}   # client_id -> outcome being computed
        self.counts = {"ok": 0, "refused": 0, "failed": 0, "queued": 0, "expired": 0, "rejected": 0}
        self.runner: web.AppRunner | None = None
        self.server = None
        self._open = 0                                  # admitted connections
        self._per_addr: dict[str, int] = {}
        self.port = None
        self._sock = None
        self._pending_recovery: list = []
        self.task = None

    @property
    def url(self) -> str:
        scheme = "https" if self.cfg.tls_cert else "http"
        host = f"[{self.cfg.host}]" if ":" in self.cfg.host else self.cfg.host
        return f"{scheme}://{host}:{self.port}"

    # --- life cycle ------------------------------------------------------------------------------------
    def _load_routes(self) -> K.Routes:
        direct = {a: (h, p) for a, h, p in self.cfg.direct_645}
        try:
            from gridhead.storage.archive import Archive
            from gridhead.storage.paths import archive_path
            path = archive_path(self.data_dir)
            with Archive(path, read_only=True) as arc:
                terms = arc.columns("SELECT terminal_address FROM concentrators")["terminal_address"].tolist()
                routes = arc.meter_routes().to_pydict()
        except (GridheadError, OSError, ImportError, Exception) as exc:   # noqa: BLE001 - no archive: direct only
            event(log, "control: no archive routes", error=str(exc).splitlines()[0][:200])
            terms, routes = [], None
        return K.Routes(terms, routes, direct, K.serial_routes(self.he))     # [[serial]]: the host's own buses

    def bind(self) -> int:
        """Bind the listening socket now (synchronously): the port is known before serving starts."""
        self.cfg.check_listen()
        s = socket.socket(socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.cfg.host, self.cfg.port))
        except OSError as exc:
            s.close()
            raise TransportError(f"control API {self.cfg.host}:{self.cfg.port}: {exc.strerror}") from None
        s.listen(512)
        s.setblocking(False)
        self._sock = s
        self.port = s.getsockname()[1]
        return self.port

    def _open_state(self) -> None:
        if self.routes is None:
            self.routes = self._load_routes()
        path = CL.audit_path(self.data_dir)
        key = CL.audit_key(self.data_dir, self.cfg.audit_key_file)
        report = check_audit_chain(self.data_dir, self.cfg.audit_key_file)
        self.audit = CL.AuditLog(path, key)
        if report["unaccepted"]:
            if not self.cfg.accept_audit_break:
                self.audit.close()
                self.audit = None
                raise AuditBroken(report)
            import getpass
            breaks = [{k: b[k] for k in ("line", "seq", "sha256", "problem")} for b in report["unaccepted"]]
            self.audit.append_sync({"who": f"local:{getpass.getuser()}", "role": "local", "command": "accept-audit-break",
                                    "target": "audit", "outcome": "ok",
                                    "params": json.dumps({"breaks": breaks}, ensure_ascii=False),
                                    "error": _break_line(report)})
            event(log, "audit chain break accepted", breaks=len(breaks), first=_break_line(report))
        self._recover(self.audit.existing)
        self.audit.existing = None

    async def start(self) -> None:
        if self._sock is None:
            self.bind()
        if self.audit is None:
            self._open_state()
        self.he.on_login.append(self._on_login)
        self.he.on_logout.append(self._on_logout)
        app = web.Application(client_max_size=self.cfg.max_body_bytes, handler_args=None)
        app.router.add_route("*", "/{tail:.*}", self._http)
        self.runner = web.AppRunner(app, access_log=None, logger=log, keepalive_timeout=self.cfg.keepalive_s,
                                    max_line_size=self.cfg.max_line_bytes, max_field_size=self.cfg.max_field_bytes,
                                    max_headers=self.cfg.max_headers, handle_signals=False,
                                    lingering_time=1.0)   # drain an unread body at most 1 s after the answer
        await self.runner.setup()
        srv = self.runner.server
        srv.__class__ = _Server          # its connections are _Conn (aiohttp has no hook for the class)
        srv.gh_ctl = self
        site = web.SockSite(self.runner, self._sock, ssl_context=self.cfg.ssl_context(), shutdown_timeout=5.0)
        await site.start()
        self.server = site
        for coro in self._pending_recovery:
            asyncio.get_running_loop().create_task(coro)
        self._pending_recovery = []
        event(log, "control API", url=self.url)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()         # stops listening, lets requests in progress finish, closes
            self.runner = self.server = None
        for lst in self.queue.values():
            for q in lst:
                if q.handle is not None:
                    q.handle.cancel()
        for job in self.jobs.values():
            if job.task is not None:
                job.task.cancel()
        for fn, lst in ((self._on_login, self.he.on_login), (self._on_logout, self.he.on_logout)):
            if fn in lst:
                lst.remove(fn)
        if self.audit is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.audit.close)
            self.audit = None
        self._scrypt.shutdown(wait=False)

    def _recover(self, records) -> None:
        """Protection registry, queued commands and jobs as the audit log left them."""
        latest: dict[str, dict] = {}
        jobs: dict[str, list] = {}
        now = time.time()
        for r in records:
            if r.get("command") == "protect" and r.get("outcome") == "ok":
                try:
                    self.protected[r["target"]] = json.loads(r.get("params") or "{}").get("on", False)
                except (ValueError, AttributeError, KeyError):
                    pass
            if r.get("command_id") and r.get("outcome") != "rejected":
                latest[r["command_id"]] = r
            if r.get("job") and r.get("command", "").startswith("job-"):
                jobs.setdefault(r["job"], []).append(r)
        for cid, r in latest.items():
            if r.get("outcome") != "queued":
                continue
            spec = json.loads(r.get("params") or "{}").get("_spec")
            if not spec or spec.get("expires_at", 0) <= now:
                spec = spec or {}
                self._spawn_later(self._finish_expired(cid, r, spec))
                continue
            p = auth.Principal(r.get("token_id") or "", r.get("who") or "", r.get("role") or "")
            self._enqueue(_Queued(cid, spec, p, spec["expires_at"]), spec["terminal"])
        for jid, recs in jobs.items():
            self._recover_job(jid, recs, now)

    def _spawn_later(self, coro) -> None:
        # recovery runs before serving; the expiry records are written once the server starts
        self._pending_recovery.append(coro)

    # --- connections and HTTP ------------------------------------------------------------------------
    def _admit(self, addr: str):
        """A new connection: None (admitted, counted) or (status, error) when a cap is reached."""
        if self._open >= self.cfg.max_connections:
            return 503, f"too many connections ({self.cfg.max_connections})"
        if self._per_addr.get(addr, 0) >= self.cfg.max_connections_per_client:
            return 429, f"too many connections from {addr} ({self.cfg.max_connections_per_client})"
        self._open += 1
        self._per_addr[addr] = self._per_addr.get(addr, 0) + 1
        return None

    def _release(self, addr: str) -> None:
        self._open -= 1
        n = self._per_addr.get(addr, 1) - 1
        if n <= 0:
            self._per_addr.pop(addr, None)
        else:
            self._per_addr[addr] = n

    async def _http(self, request: web.BaseRequest) -> web.StreamResponse:
        conn = request.protocol
        if isinstance(conn, _Conn):
            conn.gh_busy = True
            if conn.gh_timer is not None:
                conn.gh_timer.cancel()
                conn.gh_timer = None
        peer = request.remote or "?"
        close = False
        try:
            status, payload, extra, close = await self._answer(request, peer)
        except Exception as exc:                       # noqa: BLE001 - never a traceback to the client or the log
            event(log, "api internal error", client=peer, path=request.path[:200],
                  error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
            status, payload, extra, close = 500, {"error": "internal error"}, None, True
        finally:
            if isinstance(conn, _Conn):
                conn.gh_busy = False
        resp = web.Response(body=json.dumps(payload, ensure_ascii=False, default=str).encode(), status=status,
                            content_type="application/json", charset="utf-8", headers=extra)
        if status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="gridhead"'
        if close or not request.keep_alive:
            resp.force_close()
        else:
            resp.headers["Connection"] = "keep-alive"
        return resp

    async def _answer(self, request: web.BaseRequest, peer: str):
        """(status, JSON, extra headers, close) of one request."""
        cfg = self.cfg
        head = len(request.raw_path) + sum(len(k) + len(v) + 4 for k, v in request.raw_headers)
        if head > cfg.max_head_bytes:              # a head that arrived whole (else _Conn cut it while coming)
            return self._bad(peer, request, 431, f"request head over {cfg.max_head_bytes} bytes")
        te = request.headers.get("Transfer-Encoding", "").lower()
        if te and te != "chunked":
            return self._bad(peer, request, 501, f"Transfer-Encoding {te[:40]}: only chunked is implemented")
        n = request.content_length
        if n is not None and n > cfg.max_body_bytes:
            return self._bad(peer, request, 413, f"body over {cfg.max_body_bytes} bytes")
        body = b""
        if request.body_exists:
            try:
                body = await asyncio.wait_for(request.read(), cfg.body_timeout_s)
            except asyncio.TimeoutError:
                return self._bad(peer, request, 408, f"body not complete within {cfg.body_timeout_s:g} s")
            except web.HTTPRequestEntityTooLarge:
                return self._bad(peer, request, 413, f"body over {cfg.max_body_bytes} bytes")
            except (ConnectionError, asyncio.IncompleteReadError, web.HTTPException, BadHttpMessage) as exc:
                return self._bad(peer, request, 400, f"body: {type(exc).__name__}")
        cert = None
        if cfg.tls_client_ca and request.transport is not None:
            pc = request.transport.get_extra_info("peercert") or {}
            cert = next((v for rdn in pc.get("subject", ()) for k, v in rdn if k == "commonName"), None)
        status, payload, extra = await self._dispatch(request.method.upper(), request.path_qs, request.headers,
                                                      body, peer, cert)
        return status, payload, extra, False

    def _bad(self, peer, request, status, error):
        event(log, "api bad request", status=status, client=peer, method=request.method,
              path=request.path[:200], error=error)
        return status, {"error": error}, None, True

    async def _authenticate(self, header: str | None, peer: str) -> auth.Principal:
        """Bearer token -> principal, scrypt in a thread pool, failed logins throttled per client address
        and per token id (a request inside the delay is answered 429 without trying the secret)."""
        if not header or not header.startswith("Bearer "):
            raise auth.Unauthenticated("missing token (Authorization: Bearer <token>)")
        token = header[7:].strip()
        tid = token[3:].split("_", 1)[0] if token.startswith("gh_") else ""
        entry = self.tokens.cached(token)
        if entry is False or entry is None:            # not a token seen before: the throttle applies
            wait = self.throttle.wait(peer, tid)
            if wait > 0:
                exc = auth.RateLimited(f"too many failed logins from {peer}; retry after {wait:.0f} s",
                                       retry_after_s=round(wait, 3))
                exc.log = ("api login throttled", {"token_id": tid or None})
                raise exc
        if entry is False:
            loop = asyncio.get_running_loop()
            entry = await loop.run_in_executor(self._scrypt, self.tokens.check, token)
        if entry is None:
            n = self.throttle.fail(peer, tid)
            exc = auth.Unauthenticated("unknown or revoked token")
            exc.log = ("api login failed", {"token_id": tid or None, "failures": n})
            raise exc
        if entry.get("expired"):
            exc = auth.Unauthenticated(f"token expired at {entry.get('expires_utc')} (rotate it: gridhead token rotate)")
            exc.log = ("api login failed", {"token_id": entry["id"]})
            raise exc
        return auth.Principal(entry["id"], entry["name"], entry["role"])

    async def _dispatch(self, method: str, target: str, headers, body: bytes, peer: str = "?", cert=None):
        url = urlsplit(target)
        path = url.path.rstrip("/")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        routes = {("GET", "/v1/status"): ("status", self.status), ("POST", "/v1/read"): ("read", self.read),
                  ("POST", "/v1/disconnect"): ("disconnect", self.disconnect),
                  ("POST", "/v1/reconnect"): ("reconnect", self.reconnect),
                  ("POST", "/v1/protect"): ("protect", self.protect),
                  ("POST", "/v1/timesync"): ("timesync", self.timesync),
                  ("POST", "/v1/bulk"): ("bulk", self.bulk),
                  ("GET", "/v1/jobs"): ("jobs", self.job_list),
                  ("GET", "/v1/audit"): ("audit", self.audit_list),
                  ("GET", "/v1/tokens"): ("tokens", self.token_list),
                  ("POST", "/v1/tokens"): ("tokens", self.token_add)}
        hit = routes.get((method, path))
        parts = path.split("/")
        if hit is None and method == "DELETE" and path.startswith("/v1/tokens/") and len(parts) == 4:
            hit = ("tokens", lambda p, b: self.token_revoke(p, parts[3]))
        elif hit is None and method == "GET" and path.startswith("/v1/jobs/") and len(parts) == 4:
            hit = ("jobs", lambda p, b: self.job_show(p, parts[3]))
        elif hit is None and method == "POST" and path.startswith("/v1/jobs/") and len(parts) == 5 \
                and parts[4] == "approve":
            hit = ("approve", lambda p, b: self.approve(p, parts[3]))
        principal = None
        args: dict = {}
        _CLIENT.set((peer, cert))
        try:
            if hit is None:
                known = any(p == path for _m, p in routes)
                if known:
                    raise auth.ApiError(f"{method} {path}: method not allowed", 405)
                event(log, "api bad request", status=404, client=peer, method=method, path=path[:200],
                      error="no such endpoint")
                return 404, {"error": f"{method} {path[:200]}: no such endpoint"}, None
            name, fn = hit
            if method == "POST" and body:
                try:
                    args = json.loads(body)
                except RecursionError:
                    raise auth.ApiError(f"body: JSON nested deeper than {self.cfg.max_json_depth}") from None
                except ValueError:
                    raise auth.ApiError("body: not JSON") from None
                if not isinstance(args, dict):
                    args = {}
                    raise auth.ApiError("body: a JSON object expected")
                if not _json_depth(args, self.cfg.max_json_depth):
                    args = {}
                    raise auth.ApiError(f"body: JSON nested deeper than {self.cfg.max_json_depth}")
            elif method != "POST":
                args = query
            principal = await self._authenticate(headers.get("authorization"), peer)
            auth.authorize(principal, name)
            self.limiter.check(principal, name)
            status, payload = await fn(principal, args)
            return status, payload, None
        except (auth.ApiError, GridheadError) as exc:
            status = exc.status if isinstance(exc, auth.ApiError) else 400
            extra = getattr(exc, "extra", {}) or {}
            # whole seconds, rounded up: a client told to come back is never early
            hdrs = {"Retry-After": str(max(1, math.ceil(extra.get("retry_after_s", 1))))} if status == 429 else None
            if hit is not None:
                await self._reject(hit[0], path, args, principal, status, str(exc), peer, cert,
                                   getattr(exc, "log", None))
            else:
                event(log, "api bad request", status=status, client=peer, method=method, path=path[:200],
                      error=str(exc)[:300])
            return status, {"error": str(exc), **extra}, hdrs

    async def _reject(self, name, path, args, p, status, error, peer, cert, log_as=None) -> None:
        """Every refused request naming a command, on disk before the answer."""
        target = args.get("target") if isinstance(args, dict) else None
        if name == "tokens" and path.count("/") == 3:
            target = f"token:{path.rsplit('/', 1)[1][:64]}"
        elif name in ("approve", "jobs") and path.count("/") >= 3:
            target = f"job:{path.split('/')[3][:64]}"
        elif name == "bulk" and isinstance(args.get("targets"), list):
            target = f"{len(args['targets'])} targets"
        command = args.get("command") if name == "bulk" and isinstance(args.get("command"), str) else None
        rec = {"who": p.name if p else "anonymous", "role": p.role if p else None, "token_id": p.id if p else None,
               "command": f"bulk-{command[:32]}" if command else name,
               "target": None if target is None else str(target)[:200], "outcome": "rejected",
               "http_status": status, "error": error[:500], "client_addr": peer,
               "client_id": str(args.get("client_id"))[:200] if isinstance(args, dict) and args.get("client_id") else None}
        if cert:
            rec["client_cert"] = cert
        self.counts["rejected"] += 1
        ev, fields = log_as or ("api refused", {})      # one log line per refused request
        event(log, ev, status=status, client=peer, who=rec["who"], command=rec["command"],
              target=rec["target"], error=error[:300], **fields)
        await self.audit.append(rec)


    # --- endpoints -------------------------------------------------------------------------------------
    async def status(self, p, args):
        now = time.time()
        online = []
        for t in self.he.sessions:
            info = t.info()
            frames = max(info.get("frames_in", 0), 1)
            info["last_heartbeat_utc"] = info.get("last_frame_utc")
            info["heartbeat_age_s"] = None if info["last_frame_utc"] is None else round(now - info["last_frame_utc"], 3)
            info["quality"] = round(1 - info.get("errors", 0) / frames, 4)
            online.append(info)
        online.sort(key=lambda d: d["address"] or "")
        known = self.routes.terminals if self.routes else set()
        offline = sorted(a for a in known if a not in self.he.sessions)
        m = self.he.metrics
        return 200, {"online": len(online), "known": len(known), "terminals": online,
                     "offline": [{"address": a, "last_seen_utc": self.last_seen.get(a)} for a in offline],
                     "requests": dict(m.requests), "commands": dict(self.counts),
                     "queued": sum(len(v) for v in self.queue.values()),
                     "jobs_pending": sum(j.state == "pending_approval" for j in self.jobs.values())}

    async def audit_list(self, p, args):
        try:
            limit = int(args.get("limit", 100))
        except ValueError:
            raise auth.ApiError("limit: an integer") from None
        if not 0 < limit <= 100000:
            raise auth.ApiError("limit: 1 to 100000")
        recs = await asyncio.get_running_loop().run_in_executor(None, self.audit.records)
        if args.get("target"):
            want = args["target"]
            recs = [r for r in recs if (r.get("target") or "") in (want, f"meter:{want}", f"terminal:{want}")]
        recs = recs[-limit:]
        if p.role != "admin":                       # token ids: admins only
            recs = [{k: v for k, v in r.items() if k != "token_id"} for r in recs]
        return 200, {"records": recs}

    async def token_list(self, p, args):
        return 200, {"tokens": self.tokens.list()}

    async def token_add(self, p, args):
        days = args.get("expires_days", CL.TOKEN_DAYS)
        if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))):
            raise auth.ApiError("expires_days: a number of days (or null: never)")
        tid, token = self.tokens.add(str(args.get("name", "")), str(args.get("role", "")), days)
        await self.audit.append(self._who(p, {"command": "token-add", "target": f"token:{tid}", "outcome": "ok",
                                              "params": json.dumps({"name": args.get("name"), "role": args.get("role"),
                                                                    "expires_days": days})}))
        return 200, {"id": tid, "token": token}

    async def token_revoke(self, p, key):
        e = self.tokens.revoke(key)
        await self.audit.append(self._who(p, {"command": "token-revoke", "target": f"token:{e['id']}", "outcome": "ok"}))
        return 200, e

    def _who(self, p, rec: dict) -> dict:
        peer, cert = _CLIENT.get()
        out = {"who": p.name, "role": p.role, "token_id": p.id, **rec, "client_addr": peer}
        if cert:
            out["client_cert"] = cert
        return out

    async def read(self, p, args):
        regs = args.get("registers") or []
        if isinstance(regs, str):
            regs = [regs]
        if not regs or not isinstance(regs, list) or not all(isinstance(r, str) for r in regs):
            raise auth.ApiError("read: registers required, e.g. [\"energy\", \"00100200\"]")
        if len(regs) > self.cfg.max_registers:
            raise auth.ApiError(f"read: {len(regs)} registers; at most {self.cfg.max_registers} per read", 413)
        return await self._command(p, "read", args, {"registers": list(regs)})

    async def disconnect(self, p, args):
        if not str(args.get("reason") or "").strip():
            raise auth.ApiError("disconnect: a reason is required (why this household's power is cut)")
        return await self._command(p, "disconnect", args, {})

    async def reconnect(self, p, args):
        mode = args.get("mode", "direct")
        if mode not in ("allowed", "direct"):
            raise auth.ApiError("reconnect: mode is allowed (合闸允许) or direct (直接合闸)")
        return await self._command(p, "reconnect", args, {"mode": mode})

    async def protect(self, p, args):
        on = args.get("on")
        if not isinstance(on, bool):
            raise auth.ApiError("protect: on is true or false")
        if not on:                                  # 保电 off: a second admin approves (two-person rule)
            target_text = str(args.get("target") or args.get("meter") or "").strip()
            if not target_text:
                raise auth.ApiError("protect: target required (meter id or meter address)")
            try:
                target = self.routes.resolve(target_text, self.he.sessions)
            except K.CommandError as exc:
                raise auth.ApiError(str(exc), 404) from None
            if target.kind != "meter":
                raise auth.ApiError(f"protect: {target_text} is a terminal; name a meter", 400)
            return await self._new_job(p, "protect", [target_text], args, True, target=target.key)
        return await self._command(p, "protect", args, {"on": on})

    async def timesync(self, p, args):
        try:
            skew = float(args.get("min_skew_s", 0))
        except (TypeError, ValueError):
            raise auth.ApiError("timesync: min_skew_s is a number") from None
        return await self._command(p, "timesync", args, {"min_skew_s": skew})

    # --- jobs: bulk commands and the two-person rule ---------------------------------------------------
    BULK = {"disconnect": "operator", "reconnect": "operator", "timesync": "operator"}

    async def bulk(self, p, args):
        command = args.get("command")
        if command not in self.BULK:
            raise auth.ApiError(f"bulk: command is one of {', '.join(self.BULK)}")
        auth.authorize(p, command)
        targets = args.get("targets")
        if not isinstance(targets, list) or not targets or not all(isinstance(t, (str, int)) for t in targets):
            raise auth.ApiError("bulk: targets is a non-empty list of meter ids or addresses")
        if len(targets) > self.cfg.max_bulk_targets:
            raise auth.ApiError(f"bulk: {len(targets)} targets; at most {self.cfg.max_bulk_targets} per request", 413)
        if command == "disconnect" and not str(args.get("reason") or "").strip():
            raise auth.ApiError("disconnect: a reason is required (why these households' power is cut)")
        if args.get("offline", "refuse") not in ("refuse", "queue"):
            raise auth.ApiError("offline: refuse or queue")
        needs = command == "disconnect" and len(targets) > self.cfg.bulk_approval
        return await self._new_job(p, command, [str(t) for t in targets], args, needs)

    async def _new_job(self, p, command, targets, args, needs_approval, target=None):
        jid = uuid.uuid4().hex[:12]
        keep = {k: args[k] for k in ("reason", "mode", "min_skew_s", "offline", "expires_s") if k in args}
        job = _Job(jid, command, targets, keep, p, needs_approval, time.time() + self.cfg.approval_expiry_s)
        rec = await self.audit.append(self._who(p, {
            "command": f"job-{command}", "target": target or f"job:{jid}", "job": jid,
            "outcome": "pending_approval" if needs_approval else "started",
            "reason": str(args.get("reason") or "") or None,
            "params": json.dumps({"targets": targets, "args": keep, "expires_at": job.expires_at}, ensure_ascii=False)}))
        self.jobs[jid] = job
        if needs_approval:
            self._expire_job_later(job)
            event(log, "job waits for approval", job=jid, command=command, targets=len(targets), who=p.name)
            return 202, {**job.public(), "outcome": "pending_approval", "seq": rec["seq"],
                         "approve": f"gridhead approve {jid}"}
        job.task = asyncio.get_running_loop().create_task(self._run_job(job))
        return 202, {**job.public(), "outcome": "started", "seq": rec["seq"]}

    def _expire_job_later(self, job) -> None:
        loop = asyncio.get_running_loop()
        delay = max(job.expires_at - time.time(), 0)
        loop.call_later(delay, lambda: loop.create_task(self._expire_job(job)))

    async def _expire_job(self, job) -> None:
        if job.state != "pending_approval":
            return
        job.state = "expired"
        await self.audit.append({"who": job.principal.name, "role": job.principal.role, "token_id": job.principal.id,
                                 "command": f"job-{job.command}", "target": f"job:{job.id}", "job": job.id,
                                 "outcome": "expired", "error": "no second admin approved it in time"})

    async def approve(self, p, jid):
        job = self.jobs.get(jid)
        if job is None:
            raise auth.ApiError(f"no job {jid!r}", 404)
        if job.state != "pending_approval":
            raise auth.ApiError(f"job {jid} is {job.state}, not waiting for approval", 409)
        if p.name == job.principal.name or p.id == job.principal.id:
            raise auth.Forbidden(f"two-person rule: job {jid} was asked for by {p.name}; another admin approves it")
        job.state = "running"
        job.approved_by = p.name
        await self.audit.append(self._who(p, {"command": "approve", "target": f"job:{jid}", "job": jid,
                                              "outcome": "ok", "approved_by": p.name,
                                              "params": json.dumps({"command": job.command, "targets": len(job.targets),
                                                                    "requested_by": job.principal.name})}))
        if job.command == "protect":                # one meter: run now, answer with its outcome
            await self._run_job(job)
            res = job.results[0] if job.results else {}
            return res.get("_status", 200), {**{k: v for k, v in res.items() if k != "_status"},
                                             "job": jid, "approved_by": p.name}
        job.task = asyncio.get_running_loop().create_task(self._run_job(job))
        return 200, job.public()

    async def _run_job(self, job) -> None:
        """Each target through the command pipeline as the requester, at the requester's rate, with a
        client id per target (a job resumed after a restart never acts twice)."""
        p = job.principal
        try:
            for i, t in enumerate(job.targets[len(job.results):], start=len(job.results)):
                args = {**job.args, "target": t, "client_id": f"job-{job.id}-{i}"}
                params = {"on": False} if job.command == "protect" else \
                    {"mode": job.args.get("mode", "direct")} if job.command == "reconnect" else \
                    {"min_skew_s": float(job.args.get("min_skew_s", 0))} if job.command == "timesync" else {}
                if job.command != "protect":
                    while True:
                        try:
                            self.limiter.check(p, job.command)
                            break
                        except auth.RateLimited as exc:
                            await asyncio.sleep(exc.extra.get("retry_after_s", 0.1))
                try:
                    status, rec = await self._command(p, job.command, args, params,
                                                      extra_base={"job": job.id, "approved_by": job.approved_by})
                except auth.ApiError as exc:
                    status, rec = exc.status, {"target": t, "outcome": "rejected", "error": str(exc)}
                    await self.audit.append({"who": p.name, "role": p.role, "token_id": p.id, "command": job.command,
                                             "target": t, "job": job.id, "outcome": "rejected",
                                             "http_status": exc.status, "error": str(exc)[:500]})
                job.results.append({**rec, "_status": status} if job.command == "protect" else
                                   {"target": rec.get("target", t), "outcome": rec.get("outcome"),
                                    "error": rec.get("error")})
            job.state = "done"
            await self.audit.append({"who": p.name, "role": p.role, "token_id": p.id, "command": f"job-{job.command}",
                                     "target": f"job:{job.id}", "job": job.id, "outcome": "ok",
                                     "approved_by": job.approved_by,
                                     "params": json.dumps(job.public()["outcomes"])})
        except asyncio.CancelledError:
            raise
        except Exception as exc:                     # noqa: BLE001 - recorded, never lost silently
            job.state = "failed"
            event(log, "job failed", job=job.id, error=str(exc)[:300])

    async def job_list(self, p, args):
        return 200, {"jobs": [j.public() for j in self.jobs.values()]}

    async def job_show(self, p, jid):
        job = self.jobs.get(jid)
        if job is None:
            raise auth.ApiError(f"no job {jid!r}", 404)
        return 200, job.public(detail=True)

    def _recover_job(self, jid, recs, now) -> None:
        """A job as its records left it: pending (until its expiry) or approved and unfinished (resumed)."""
        first = recs[0]
        outcomes = [r.get("outcome") for r in recs]
        if any(o in ("ok", "expired") for o in outcomes[1:]):
            return
        try:
            spec = json.loads(first.get("params") or "{}")
        except ValueError:
            return
        p = auth.Principal(first.get("token_id") or "", first.get("who") or "", first.get("role") or "")
        command = first["command"][4:]
        job = _Job(jid, command, spec.get("targets") or [], spec.get("args") or {}, p,
                   first.get("outcome") == "pending_approval", spec.get("expires_at") or now)
        approved = [r for r in self.audit.existing if r.get("command") == "approve" and r.get("job") == jid
                    and r.get("outcome") == "ok"] if self.audit and self.audit.existing else []
        self.jobs[jid] = job
        if job.needs_approval and not approved:
            if job.expires_at <= now:
                job.state = "pending_approval"
                self._spawn_later(self._expire_job(job))
            else:
                self._pending_recovery.append(self._later_expiry(job))
            return
        job.state = "running"
        job.approved_by = approved[-1].get("approved_by") if approved else None
        self._pending_recovery.append(self._resume(job))

    async def _later_expiry(self, job) -> None:
        self._expire_job_later(job)

    async def _resume(self, job) -> None:
        job.task = asyncio.get_running_loop().create_task(self._run_job(job))

    # --- the command pipeline -------------------------------------------------------------------------
    async def _command(self, p: auth.Principal, command: str, args: dict, params: dict, *, extra_base=None):
        target_text = str(args.get("target") or args.get("meter") or "").strip()
        if not target_text:
            raise auth.ApiError(f"{command}: target required (terminal address, meter id or meter address)")
        client_id = str(args.get("client_id") or "").strip() or None
        offline = args.get("offline", "refuse")
        if offline not in ("refuse", "queue"):
            raise auth.ApiError("offline: refuse or queue")
        expires_s = args.get("expires_s", 3600)
        if offline == "queue":
            if command == "read":
                raise auth.ApiError("read: a read is answered now or not at all (offline=refuse)")
            if not isinstance(expires_s, (int, float)) or not 0 < expires_s <= self.cfg.max_queue_expiry_s:
                raise auth.ApiError(f"expires_s: 0 < seconds <= {self.cfg.max_queue_expiry_s:g}")
        if client_id is not None:
            seen = self.audit.by_client.get(client_id)
            if seen is not None and (seen.get("command") != command or seen.get("who") != p.name):
                raise auth.ApiError(f"client_id {client_id!r} was used for another command", 409)
            fut = self.inflight.get(client_id)
            if fut is not None:
                status, rec = await asyncio.shield(fut)
                return status, {**rec, "duplicate": True}
            if seen is not None and seen.get("outcome") != "pending":
                return _status_of(seen), {**_public(seen), "duplicate": True}
        try:
            target = self.routes.resolve(target_text, self.he.sessions)
        except K.CommandError as exc:
            raise auth.ApiError(str(exc), 404) from None
        if command in ("disconnect", "reconnect", "protect") and target.kind != "meter":
            raise auth.ApiError(f"{command}: {target_text} is a terminal; name a meter", 400)
        cid = uuid.uuid4().hex
        peer, cert = _CLIENT.get()
        base = {"command_id": cid, "who": p.name, "role": p.role, "token_id": p.id, "command": command,
                "target": target.key, "reason": str(args.get("reason") or "") or None, "client_id": client_id,
                "protocol": target.protocol, "path": target.path, "client_addr": peer, **(extra_base or {})}
        if cert:
            base["client_cert"] = cert
        fut = asyncio.get_running_loop().create_future()
        if client_id is not None:
            self.inflight[client_id] = fut
        try:
            result = await self._run(base, target, command, params, offline, expires_s)
            fut.set_result(result)
            return result
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()          # retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            if client_id is not None:
                self.inflight.pop(client_id, None)

    async def _run(self, base, target, command, params, offline, expires_s):
        link = self.commands.link(target)
        try:
            link.check_online()
        except K.Offline as exc:
            if offline == "queue":
                return await self._queue(base, target, command, params, expires_s)
            rec = await self._record(base, params, "refused", error=f"offline: {exc}")
            return 409, _public(rec)
        if command == "disconnect" and self.protected.get(target.key):
            rec = await self._record(base, params, "refused", error="protected (保电): the head-end refuses trips")
            return 409, _public(rec)
        return await self._execute(base, target, command, params)

    async def _execute(self, base, target, command, params):
        if command != "read":                       # the intent is durable before the meter is asked
            await self._record(base, params, "pending")
        t0 = time.perf_counter()
        try:
            result = await self._do(target, command, params)
        except K.CommandError as exc:              # bad register name...: nothing was sent
            if command != "read":
                await self._record(base, params, "failed", error=str(exc), t0=t0)
            raise auth.ApiError(str(exc)) from None
        except K.Refused as exc:
            rec = await self._record(base, params, "refused", error=str(exc), t0=t0, readback=exc.readback)
            return 409, _public(rec)
        except K.Offline as exc:
            rec = await self._record(base, params, "failed", error=f"offline: {exc}", t0=t0)
            return 409, _public(rec)
        except (TransportError, GridheadError) as exc:
            rec = await self._record(base, params, "failed", error=str(exc), t0=t0)
            return 504, _public(rec)
        request_ms = (time.perf_counter() - t0) * 1000      # the head-end's exchange with the target alone
        if command == "protect":
            self.protected[target.key] = params["on"]
        readback = result.get("readback", result.get("values"))
        outcome = "ok" if result.get("confirmed", True) else "unconfirmed"
        rec = await self._record(base, params, outcome, readback=readback, t0=t0,
                                 extra={k: v for k, v in result.items() if k not in ("readback", "values", "confirmed")})
        out = _public(rec)
        if "values" in result:
            out["values"] = result["values"]
        out["confirmed"] = result.get("confirmed", True)
        out["request_ms"] = round(request_ms, 3)           # not audited: duration_ms is
        return 200, out

    async def _do(self, target, command, params) -> dict:
        c = self.commands
        if command == "read":
            return await c.read(target, params["registers"])
        if command == "disconnect":
            return await c.disconnect(target)
        if command == "reconnect":
            return await c.reconnect(target, params["mode"] == "direct")
        if command == "protect":
            return await c.protect(target, params["on"])
        if command == "timesync":
            return await c.timesync(target, params["min_skew_s"])
        raise auth.ApiError(f"unknown command {command}")

    async def _record(self, base, params, outcome, *, error=None, readback=None, t0=None, extra=None) -> dict:
        rec = dict(base, outcome=outcome, error=error, params=json.dumps(params, ensure_ascii=False),
                   readback=None if readback is None else json.dumps(readback, ensure_ascii=False, default=str),
                   duration_ms=None if t0 is None else int((time.perf_counter() - t0) * 1000))
        if extra:
            rec.update(extra)            # e.g. timesync's clock_before / skew_before_s / set
        if outcome in self.counts:
            self.counts[outcome] += 1
        return await self.audit.append(rec)

    # --- the offline queue -----------------------------------------------------------------------------
    async def _queue(self, base, target, command, params, expires_s):
        term = target.terminal or target.address
        expires_at = time.time() + float(expires_s)
        spec = {"command": command, "target": target.text, "params": params, "terminal": term,
                "expires_at": expires_at, "base": base}
        rec = await self._record(base, dict(params, _spec=spec), "queued")
        q = _Queued(base["command_id"], spec, None, expires_at)
        self._enqueue(q, term)
        return 202, {**_public(rec), "expires_at": expires_at}

    def _enqueue(self, q: _Queued, term: str) -> None:
        self.queue.setdefault(term, []).append(q)
        loop = asyncio.get_event_loop()
        delay = max(q.expires_at - time.time(), 0)
        q.handle = loop.call_later(delay, lambda: loop.create_task(self._expire(term, q)))

    async def _expire(self, term: str, q: _Queued) -> None:
        lst = self.queue.get(term, [])
        if q not in lst:
            return
        lst.remove(q)
        await self._finish_expired(q.command_id, None, q.spec)

    async def _finish_expired(self, cid, rec, spec) -> None:
        base = dict(spec.get("base") or {}, command_id=cid)
        if rec is not None:
            base = {k: rec.get(k) for k in ("command_id", "who", "role", "token_id", "command", "target", "reason",
                                             "client_id", "protocol", "path", "client_addr", "job", "approved_by")}
        await self._record(base, spec.get("params") or {}, "expired", error="terminal offline until the expiry")

    def _on_login(self, t) -> None:
        lst = self.queue.pop(t.address, None)
        if lst:
            asyncio.get_event_loop().create_task(self._drain(lst))

    def _on_logout(self, t) -> None:
        self.last_seen[t.address] = time.time()

    async def _drain(self, lst) -> None:
        for q in lst:
            if q.handle is not None:
                q.handle.cancel()
            spec = q.spec
            base = spec["base"]
            if time.time() >= q.expires_at:
                await self._finish_expired(q.command_id, None, spec)
                continue
            try:
                target = self.routes.resolve(spec["target"], self.he.sessions)
            except K.CommandError as exc:
                await self._record(base, spec["params"], "failed", error=str(exc))
                continue
            if spec["command"] == "disconnect" and self.protected.get(target.key):
                await self._record(base, spec["params"], "refused", error="protected (保电): the head-end refuses trips")
                continue
            await self._execute(base, target, spec["command"], spec["params"])


def _public(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in ("token_id", "prev", "mac")}
    for k in ("params", "readback"):
        if isinstance(out.get(k), str):
            try:
                out[k] = json.loads(out[k])
            except ValueError:
                pass
    if isinstance(out.get("params"), dict):
        out["params"].pop("_spec", None)
    return out


def _status_of(rec: dict) -> int:
    return {"ok": 200, "unconfirmed": 200, "queued": 202, "refused": 409, "expired": 409}.get(rec.get("outcome"), 504)


def mount(he, config=None) -> ControlServer:
    """Start the control API beside a running head-end from synchronous code inside its loop (the
    ``on_ready`` hook of ``headend.server.serve``): binds now (``.port`` is known at once), serves from a
    task, and stops with the loop.  ``config``: a ControlConfig or the ``[control]`` table."""
    cfg = config if isinstance(config, ControlConfig) else ControlConfig.from_dict(config)
    ctl = ControlServer(he, cfg)
    ctl.bind()
    ctl._open_state()

    async def run():
        await ctl.start()
        try:
            await asyncio.Event().wait()
        finally:
            await ctl.stop()
    ctl.task = asyncio.get_event_loop().create_task(run())
    return ctl


def load_config(path):
    """A head-end TOML file → (headend.config.Config, ControlConfig, whether ``[control]`` was given,
    headend.collect.Schedule or None): the ``[control]`` and ``[collect]`` tables are taken out before the
    head-end's own keys are checked (so headend/config.py needs no knowledge of them)."""
    import pathlib

    from .collect import Schedule
    raw, where = read_toml(path)
    control = raw.pop("control", None)
    collect = raw.pop("collect", None)
    if collect is not None and not isinstance(collect, dict):
        raise ConfigError(f"{where}: collect is not a table")
    schedule = None if collect is None else Schedule.from_dict(collect, f"{where}: [collect]",
                                                               pathlib.Path(path).parent)
    return (Config.from_dict(raw, where), ControlConfig.from_dict(control, f"{where}: [control]"),
            control is not None, schedule)


def serve_settings(config_file=None, *, data=None, host=None, port=None, metrics_port=None, api_port=None,
                   mqtt: str | None = None, mqtt_prefix: str | None = None, collect: bool | None = None,
                   insecure: bool = False, accept_audit_break: bool = False):
    """The settings of ``gridhead serve``: the TOML file (:func:`load_config`) with the command line's
    options over it → (headend.config.Config, ControlConfig, whether the API's port was asked for,
    headend.collect.Schedule or None).  A bad option is a one-line ConfigError (exit code 2)."""
    import dataclasses

    from .collect import Schedule
    from .config import MqttBroker, parse_hostport
    cfg, ctl_cfg, ctl_explicit, schedule = load_config(config_file) if config_file else (
        Config(), ControlConfig(), False, None)
    if collect is not None:
        schedule = dataclasses.replace(schedule or Schedule(), enabled=collect)
    if api_port is not None:
        ctl_cfg, ctl_explicit = ctl_cfg.replace(port=api_port), True
    over = {k: v for k, v in (("data_dir", data), ("listen_host", host), ("listen_port", port),
                              ("metrics_port", metrics_port)) if v is not None}
    if mqtt or mqtt_prefix:
        if not mqtt and cfg.mqtt is None:
            raise ConfigError("--mqtt-prefix needs --mqtt HOST:PORT (or an [mqtt] table in --config)")
        broker = cfg.mqtt or MqttBroker()
        if mqtt:
            mhost, mport, _ = parse_hostport(mqtt, "--mqtt")
            broker = dataclasses.replace(broker, host=mhost, port=mport)
        over["mqtt"] = dataclasses.replace(broker, prefix=mqtt_prefix) if mqtt_prefix else broker
    cfg = cfg.replace(**over)
    if insecure or accept_audit_break:
        ctl_cfg = ctl_cfg.replace(insecure=insecure or ctl_cfg.insecure,
                                  accept_audit_break=accept_audit_break or ctl_cfg.accept_audit_break)
    return cfg, ctl_cfg, ctl_explicit, schedule


def preflight(cfg: ControlConfig, data_dir) -> None:
    """What ``gridhead serve`` refuses before anything starts, one line each: a listen address that needs
    TLS (or ``insecure``), a TLS file that does not load, an audit chain broken and not accepted."""
    cfg.check_listen()
    cfg.ssl_context()
    report = check_audit_chain(cfg.data_dir or data_dir, cfg.audit_key_file)
    if report["unaccepted"] and not cfg.accept_audit_break:
        raise AuditBroken(report)


def mount_default(he, cfg: ControlConfig, *, explicit: bool) -> ControlServer | None:
    """:func:`mount` for ``gridhead serve``: a port taken by someone else is an error when the operator
    asked for it, a logged warning (no API) when it is only the default."""
    try:
        return mount(he, cfg)
    except TransportError as exc:
        if explicit:
            raise
        event(log, "control API not started", error=str(exc))
        return None


# --- the client (gridhead read / disconnect / ... talk to a running head-end through this) ---------------
class ClientError(GridheadError):
    """An API answer the operator must see: ``status`` the HTTP status, ``body`` the JSON answer."""

    def __init__(self, message: str, status: int = 0, body: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, body or {}
        self.exit_code = 3 if status in (401, 403) else 2 if status in (400, 404, 405, 413) else 1


class Client:
    """A small synchronous client of the control API (urllib; one connection per call).
    ``call(method, path, body) -> (status, json)``; 429 is retried after its Retry-After up to
    ``max_wait_s``; statuses ≥ 400 other than 409/504 (an outcome, with its audit record) raise ClientError."""

    def __init__(self, url: str, token: str | None, *, timeout_s: float = 60.0, cafile: str | None = None,
                 max_wait_s: float = 600.0, cert: str | None = None, key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.max_wait_s = max_wait_s
        self.ctx = ssl.create_default_context(cafile=cafile) if self.url.startswith("https") else None
        if self.ctx is not None and cert:
            try:
                self.ctx.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                raise ClientError(f"client certificate {cert}: {exc}") from None

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        import urllib.error
        import urllib.request
        data = None if body is None else json.dumps(body).encode()
        waited = 0.0
        while True:
            req = urllib.request.Request(self.url + path, data=data, method=method)
            req.add_header("Content-Type", "application/json")
            if self.token:
                req.add_header("Authorization", f"Bearer {self.token}")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s, context=self.ctx) as r:
                    return r.status, json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as exc:
                try:
                    payload = json.loads(exc.read() or b"{}")
                except ValueError:
                    payload = {}
                if exc.code == 429 and waited < self.max_wait_s:
                    delay = float(exc.headers.get("Retry-After") or 1)
                    time.sleep(delay)
                    waited += delay
                    continue
                if exc.code in (409, 504) and "outcome" in payload:
                    return exc.code, payload
                raise ClientError(f"{method} {path}: HTTP {exc.code}: {payload.get('error', exc.reason)}",
                                  exc.code, payload) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ClientError(f"control API {self.url}: {reason} (is `gridhead serve` running?)") from None

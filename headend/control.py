"""The operators' control API of a running head-end (遥控, 召测, 保电, 对时): HTTP + JSON on 127.0.0.1.

Mounted beside the head-end by ``gridhead serve`` (:func:`mount`), or started by a program::

    ctl = ControlServer(he, ControlConfig(port=0))      # he: a started headend.server.HeadEnd
    await ctl.start()                                    # ctl.port, ctl.url
    ...
    await ctl.stop()

Settings: the ``[control]`` table of the head-end's TOML file (:class:`ControlConfig`)::

    [control]
    host = "127.0.0.1"          # loopback by default
    port = 7699                 # 0 = any free port
    tls_cert = "cert.pem"       # both set: HTTPS (ssl.SSLContext from them)
    tls_key = "key.pem"
    command_timeout_s = 10
    password_645 = "02000000"   # DL/T 645 level-02 password and operator code for 1CH / 14H
    operator_645 = "00000001"
    control_per_s = 5           # per operator: commands on meters (bursts of control_burst)
    [[control.direct_645]]      # 645 meters reached over TCP (a serial gateway, the dlt645 meter server)
    address = "000012345678"
    host = "127.0.0.1"
    port = 8899

Endpoints (``Authorization: Bearer <token>``; tokens from ``gridhead token add``; roles in headend.auth):

=====================  ==========  ===============================================================
``GET  /v1/status``     viewer      terminals online / known, last heartbeat, communication quality
``POST /v1/read``       viewer      {target, registers: [...]}
``POST /v1/disconnect`` operator    {target, reason (required)}
``POST /v1/reconnect``  operator    {target, mode: "allowed" | "direct"}
``POST /v1/protect``    admin       {target, on: true | false}
``POST /v1/timesync``   operator    {target, min_skew_s}
``GET  /v1/audit``      viewer      ?limit=N&target=...  the latest audit records
``GET/POST /v1/tokens`` admin       list / add {name, role}; ``DELETE /v1/tokens/<id>`` revokes
=====================  ==========  ===============================================================

Every POST command also takes ``client_id`` (idempotency: a repeated id returns the first outcome and
never acts twice; the id is kept in the audit log, so this holds across a restart) and, for commands
on meters, ``offline``: ``"refuse"`` (default: HTTP 409 when the target's terminal is offline) or
``"queue"`` with ``expires_s`` (HTTP 202; the command runs when the terminal logs in, or is recorded
``expired``).  Answers: 200 done (``outcome`` ok; a refusal by the meter or by 保电 is 409 with
outcome ``refused``; a meter's own refusal of a trip carries, as ``readback``, the relay state read
after it), 202 queued, 400 bad request, 401 / 403, 404, 409, 429 rate limit (with ``Retry-After``),
504 no answer from the target (outcome ``failed``).  A 200 answer also gives ``request_ms``: the
head-end's exchange with the target alone (no HTTP, auth or audit fsync; not audited).

Audit: every command is written to ``storage.control_log.AuditLog`` (fsynced) before the API answers;
commands on meters are written ``pending`` before the meter is asked, then with their outcome and
read-back.  The head-end keeps its own protection registry (保电) from the audit log: a trip of a
protected meter is refused without touching the meter (and the simulated meter refuses it too).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import ssl
import time
import uuid
from urllib.parse import parse_qs, urlsplit

from protocols.errors import ConfigError, GridheadError, TransportError
from storage import control_log as CL

from . import auth, commands as K
from .config import Config, check_keys, read_toml
from .log import event, get_logger

log = get_logger("control")
MAX_BODY = 1 << 20


@dataclasses.dataclass(frozen=True)
class ControlConfig:
    host: str = "127.0.0.1"
    port: int = 7699
    tls_cert: str | None = None
    tls_key: str | None = None
    data_dir: str | None = None          # default: the head-end's
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
        return cls(**raw)

    def replace(self, **kw) -> "ControlConfig":
        return dataclasses.replace(self, **kw)

    def limits(self) -> auth.Limits:
        return auth.Limits(self.control_per_s, self.control_burst, self.reads_per_s, self.reads_burst)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not (self.tls_cert and self.tls_key):
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise GridheadError(f"[control] tls_cert/tls_key: {exc}") from None
        return ctx


class _Queued:
    __slots__ = ("command_id", "spec", "principal", "expires_at", "handle")

    def __init__(self, command_id, spec, principal, expires_at):
        self.command_id, self.spec, self.principal, self.expires_at = command_id, spec, principal, expires_at
        self.handle = None


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
        self.protected: dict[str, bool] = {}            # target key -> 保电 on (from the audit log)
        self.queue: dict[str, list[_Queued]] = {}       # terminal address -> queued commands
        self.last_seen: dict[str, float] = {}           # terminal -> logout time (status of offline ones)
        self.inflight: dict[str, asyncio.Future] = {}   # client_id -> outcome being computed
        self.counts = {"ok": 0, "refused": 0, "failed": 0, "queued": 0, "expired": 0}
        self.server = None
        self._conns: dict[asyncio.Task, asyncio.StreamWriter] = {}   # open API connections
        self._busy: set[asyncio.Task] = set()                            # those inside a request
        self.port = None
        self._sock = None
        self._pending_recovery: list = []
        self.task = None

    @property
    def url(self) -> str:
        scheme = "https" if self.cfg.tls_cert else "http"
        return f"{scheme}://{self.cfg.host}:{self.port}"

    # --- life cycle ------------------------------------------------------------------------------------
    def _load_routes(self) -> K.Routes:
        direct = {a: (h, p) for a, h, p in self.cfg.direct_645}
        try:
            from storage.archive import Archive
            from storage.sql import archive_path
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
        self.audit = CL.AuditLog(CL.audit_path(self.data_dir))
        self._recover(self.audit.existing)
        self.audit.existing = None

    async def start(self) -> None:
        if self._sock is None:
            self.bind()
        if self.audit is None:
            self._open_state()
        self.he.on_login.append(self._on_login)
        self.he.on_logout.append(self._on_logout)
        self.server = await asyncio.start_server(self._client, sock=self._sock, ssl=self.cfg.ssl_context(),
                                                 limit=MAX_BODY)
        for coro in self._pending_recovery:
            asyncio.get_running_loop().create_task(coro)
        self._pending_recovery = []
        event(log, "control API", url=self.url)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        await self._close_connections()
        for lst in self.queue.values():
            for q in lst:
                if q.handle is not None:
                    q.handle.cancel()
        for fn, lst in ((self._on_login, self.he.on_login), (self._on_logout, self.he.on_logout)):
            if fn in lst:
                lst.remove(fn)
        if self.audit is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.audit.close)
            self.audit = None

    def _recover(self, records) -> None:
        """Protection registry and queued commands as the audit log left them."""
        latest: dict[str, dict] = {}
        now = time.time()
        for r in records:
            if r.get("command") == "protect" and r.get("outcome") == "ok":
                self.protected[r["target"]] = json.loads(r.get("params") or "{}").get("on", False)
            if r.get("command_id"):
                latest[r["command_id"]] = r
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

    def _spawn_later(self, coro) -> None:
        # recovery runs before serving; the expiry records are written once the server starts
        self._pending_recovery.append(coro)

    async def _close_connections(self, grace_s: float = 5.0) -> None:
        """Stop: an idle keep-alive connection is closed at once (its client sees EOF); one inside a
        request gets ``grace_s`` to answer and is closed after.  Nothing is left for the loop to cancel
        (Python 3.11's stream callback raises on a cancelled connection handler)."""
        for task, writer in list(self._conns.items()):
            if task not in self._busy:
                writer.close()
        tasks = list(self._conns)
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=grace_s)
            for task in late:
                self._conns[task].close()
                task.cancel()
            if late:
                await asyncio.wait(late)

    # --- HTTP ------------------------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        self._conns[me] = writer
        try:
            while True:
                self._busy.discard(me)
                try:
                    line = await reader.readline()
                except (ConnectionError, ValueError):
                    return
                if not line:
                    return
                self._busy.add(me)
                try:
                    method, target, _version = line.decode("latin-1").split(" ", 2)
                except ValueError:
                    return await self._send(writer, 400, {"error": "bad request line"}, close=True)
                headers = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length") or 0)
                if n > MAX_BODY:
                    return await self._send(writer, 413, {"error": "body too large"}, close=True)
                body = await reader.readexactly(n) if n else b""
                status, payload, extra = await self._dispatch(method.upper(), target, headers, body)
                close = headers.get("connection", "").lower() == "close"
                await self._send(writer, status, payload, close=close, extra=extra)
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass                                       # stop() gave up on it: closed below, nobody awaits it
        finally:
            self._conns.pop(me, None)
            self._busy.discard(me)
            writer.close()

    async def _send(self, writer, status: int, payload, *, close=False, extra=None) -> None:
        body = json.dumps(payload, ensure_ascii=False, default=str).encode()
        reason = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                  404: "Not Found", 409: "Conflict", 413: "Payload Too Large", 429: "Too Many Requests",
                  500: "Internal Server Error", 504: "Gateway Timeout"}.get(status, "Status")
        head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json; charset=utf-8",
                f"Content-Length: {len(body)}", "Connection: " + ("close" if close else "keep-alive")]
        if status == 401:
            head.append('WWW-Authenticate: Bearer realm="gridhead"')
        for k, v in (extra or {}).items():
            head.append(f"{k}: {v}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass

    async def _dispatch(self, method: str, target: str, headers: dict, body: bytes):
        url = urlsplit(target)
        path = url.path.rstrip("/")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        routes = {("GET", "/v1/status"): ("status", self.status), ("POST", "/v1/read"): ("read", self.read),
                  ("POST", "/v1/disconnect"): ("disconnect", self.disconnect),
                  ("POST", "/v1/reconnect"): ("reconnect", self.reconnect),
                  ("POST", "/v1/protect"): ("protect", self.protect),
                  ("POST", "/v1/timesync"): ("timesync", self.timesync),
                  ("GET", "/v1/audit"): ("audit", self.audit_list),
                  ("GET", "/v1/tokens"): ("tokens", self.token_list),
                  ("POST", "/v1/tokens"): ("tokens", self.token_add)}
        hit = routes.get((method, path))
        if hit is None and method == "DELETE" and path.startswith("/v1/tokens/"):
            hit = ("tokens", lambda p, b: self.token_revoke(p, path.rsplit("/", 1)[1]))
        try:
            if hit is None:
                known = any(p == path for _m, p in routes)
                raise auth.ApiError(f"{method} {path}: " + ("method not allowed" if known else "no such endpoint"),
                                    405 if known else 404)
            name, fn = hit
            principal = auth.authenticate(self.tokens, headers.get("authorization"))
            auth.authorize(principal, name)
            self.limiter.check(principal, name)
            if method == "POST":
                try:
                    args = json.loads(body or b"{}")
                except ValueError:
                    raise auth.ApiError("body: not JSON") from None
                if not isinstance(args, dict):
                    raise auth.ApiError("body: a JSON object expected")
            else:
                args = query
            status, payload = await fn(principal, args)
            return status, payload, None
        except auth.ApiError as exc:
            extra = {"Retry-After": max(1, round(exc.extra.get("retry_after_s", 1)))} if exc.status == 429 else None
            return exc.status, {"error": str(exc), **exc.extra}, extra
        except GridheadError as exc:
            return 400, {"error": str(exc)}, None

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
                     "queued": sum(len(v) for v in self.queue.values())}

    async def audit_list(self, p, args):
        try:
            limit = int(args.get("limit", 100))
        except ValueError:
            raise auth.ApiError("limit: an integer") from None
        recs = await asyncio.get_running_loop().run_in_executor(None, self.audit.records)
        if args.get("target"):
            want = args["target"]
            recs = [r for r in recs if (r.get("target") or "") in (want, f"meter:{want}", f"terminal:{want}")]
        return 200, {"records": recs[-limit:]}

    async def token_list(self, p, args):
        return 200, {"tokens": self.tokens.list()}

    async def token_add(self, p, args):
        tid, token = self.tokens.add(str(args.get("name", "")), str(args.get("role", "")))
        await self.audit.append({"who": p.name, "role": p.role, "command": "token-add", "target": f"token:{tid}",
                                 "outcome": "ok", "params": json.dumps({"name": args.get("name"), "role": args.get("role")})})
        return 200, {"id": tid, "token": token}

    async def token_revoke(self, p, key):
        e = self.tokens.revoke(key)
        await self.audit.append({"who": p.name, "role": p.role, "command": "token-revoke", "target": f"token:{e['id']}",
                                 "outcome": "ok"})
        return 200, e

    async def read(self, p, args):
        regs = args.get("registers") or []
        if isinstance(regs, str):
            regs = [regs]
        if not regs:
            raise auth.ApiError("read: registers required, e.g. [\"energy\", \"00100200\"]")
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
        return await self._command(p, "protect", args, {"on": on})

    async def timesync(self, p, args):
        try:
            skew = float(args.get("min_skew_s", 0))
        except (TypeError, ValueError):
            raise auth.ApiError("timesync: min_skew_s is a number") from None
        return await self._command(p, "timesync", args, {"min_skew_s": skew})

    # --- the command pipeline -------------------------------------------------------------------------
    async def _command(self, p: auth.Principal, command: str, args: dict, params: dict):
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
        base = {"command_id": cid, "who": p.name, "role": p.role, "token_id": p.id, "command": command,
                "target": target.key, "reason": str(args.get("reason") or "") or None, "client_id": client_id,
                "protocol": target.protocol, "path": target.path}
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
                                             "client_id", "protocol", "path")}
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
    out = {k: v for k, v in rec.items() if k not in ("token_id",)}
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
                 max_wait_s: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.max_wait_s = max_wait_s
        self.ctx = ssl.create_default_context(cafile=cafile) if self.url.startswith("https") else None

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
                if exc.code in (409, 504):
                    return exc.code, payload
                raise ClientError(f"{method} {path}: HTTP {exc.code}: {payload.get('error', exc.reason)}",
                                  exc.code, payload) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ClientError(f"control API {self.url}: {reason} (is `gridhead serve` running?)") from None

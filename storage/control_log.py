"""Operators' remote control on disk: the append-only audit log (操作日志) and the API tokens.

Both live under ``<data_dir>/control/``::

    audit.jsonl     one JSON object per line, appended and fsynced before the control API answers
    tokens.json     API tokens: name, role, salt and scrypt hash of the secret (never the secret itself)

**Audit log.**  :class:`AuditLog` appends records through one writer thread that groups the lines
queued meanwhile into one ``write`` + ``fsync`` (group commit, as the WAL does): ``await
log.append(record)`` returns once the line is on disk, so a head-end killed with SIGKILL after it
answered has the record.  Nothing is ever rewritten; a torn last line (a kill in the middle of a
write) is skipped on reading.  Each record carries ``seq`` (1, 2, ... in file order), ``ts_utc``
(ISO 8601, UTC) and the fields the caller gives (who, role, command, target, reason, client_id,
outcome, detail...; :data:`COLUMNS`).  A command has one record per state it reaches
(``pending`` before the meter is asked, then ``ok`` / ``refused`` / ``failed`` / ``queued`` /
``expired``), so an answer cut off by a crash still leaves the intent in the log.  A request the API
turns down before it acts (401, 403, 404, 400, 409, 429...) is recorded ``rejected`` with its
``http_status``; jobs waiting for a second admin are ``pending_approval``.

**Tamper evidence.**  Every record carries ``prev`` — the SHA-256 of the line before it (of
the bytes already in the file for the first record of a chain) — and ``mac``: HMAC-SHA256 over the
record's canonical JSON (sorted keys, without ``mac``) under a key kept outside the audit file
(:func:`audit_key`: the file named by ``GRIDHEAD_AUDIT_KEY_FILE`` / ``[control] audit_key_file``, else in
the token store ``tokens.json``, 0600).  An edited record fails its MAC, a removed or reordered one
breaks the next ``prev`` and the ``seq`` run; :func:`verify` names the first such line.  Writers in
several processes (the head-end, ``gridhead token add``) append under ``flock`` and chain onto the
file's real last line.  A break accepted by ``gridhead serve --accept-audit-break`` is itself a record
(``accept-audit-break`` naming the line and its SHA-256).  The file and the token store are 0600.

The SQL view ``audit_log`` (``gridhead sql``) reads the file with DuckDB's ``read_json`` and fixed
column types (:func:`view_statements`); ``params`` and ``readback`` are JSON text.

**Tokens.**  :class:`TokenStore`: ``add(name, role) -> (id, token)`` (the token is shown once),
``verify(token) -> entry | None``, ``revoke(id_or_name)``, ``rotate(id_or_name)``, ``list()``.
Tokens expire (``expires_utc``, default 90 days after ``add``); ``rotate`` makes a new token of the
same name and role and lets the old one live for an overlap (default one day).  A token is
``gh_<id>_<secret>``; the file keeps ``hashlib.scrypt(secret, salt, n=2**14, r=8, p=1)``.  The file
is replaced atomically (write, fsync, rename); a store notices a newer file (``gridhead token add``
while the head-end runs) by its modification time.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import fcntl
import hashlib
import hmac
import json
import os
import pathlib
import secrets
import threading
from collections.abc import Callable
from typing import IO, Any

from gridhead.protocols.errors import GridheadError, StorageError

ROLES = ("viewer", "operator", "admin")
# audit_log columns: name -> DuckDB type (the view's schema; extra keys of a record are not shown)
COLUMNS = {"seq": "BIGINT", "ts_utc": "TIMESTAMPTZ", "who": "VARCHAR", "role": "VARCHAR", "command": "VARCHAR",
           "target": "VARCHAR", "reason": "VARCHAR", "client_id": "VARCHAR", "outcome": "VARCHAR",
           "error": "VARCHAR", "protocol": "VARCHAR", "path": "VARCHAR", "params": "VARCHAR",
           "readback": "VARCHAR", "duration_ms": "BIGINT", "command_id": "VARCHAR", "token_id": "VARCHAR",
           "client_addr": "VARCHAR", "http_status": "BIGINT", "job": "VARCHAR", "approved_by": "VARCHAR"}
FINAL = ("ok", "refused", "failed", "expired")
KEY_ENV = "GRIDHEAD_AUDIT_KEY_FILE"
# a record of the audit file or an entry of the token store: JSON objects
Record = dict[str, Any]
# a path as callers give it
StrPath = str | os.PathLike[str]
TOKEN_DAYS = 90


class TokenError(GridheadError):
    """A token request that cannot be done (unknown role, unknown token): one line, exit code 2."""

    exit_code = 2


def control_dir(data_dir: StrPath) -> pathlib.Path:
    return pathlib.Path(data_dir) / "control"


def audit_path(data_dir: StrPath) -> pathlib.Path:
    return control_dir(data_dir) / "audit.jsonl"


def tokens_path(data_dir: StrPath) -> pathlib.Path:
    return control_dir(data_dir) / "tokens.json"


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: StrPath) -> list[Record]:
    """Every whole record of an audit file, in order (a torn last line is skipped)."""
    p = pathlib.Path(path)
    if not p.exists():
        return []
    out: list[Record] = []
    with open(p, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break                            # torn by a crash mid-write: never acknowledged
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


# --- the chain ---------------------------------------------------------------------------------------------
def _canon(rec: Record) -> bytes:
    return json.dumps({k: v for k, v in rec.items() if k != "mac"}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"), default=str).encode()


def _mac(key: bytes, rec: Record) -> str:
    return hmac.new(key, _canon(rec), hashlib.sha256).hexdigest()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def audit_key(data_dir: StrPath, key_file: StrPath | None = None) -> bytes:
    """The HMAC key of the audit chain: ``key_file`` (or ``$GRIDHEAD_AUDIT_KEY_FILE``), made 0600 with a
    random key when missing; else kept in the token store (``tokens.json``, 0600)."""
    key_file = key_file or os.environ.get(KEY_ENV) or None
    if key_file:
        p = pathlib.Path(key_file).expanduser()
        try:
            if not p.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32) + "\n")
            return bytes.fromhex(p.read_text().strip())
        except FileExistsError:
            return bytes.fromhex(p.read_text().strip())
        except (OSError, ValueError) as exc:
            raise StorageError(f"audit key {p}: {exc}") from None
    return TokenStore(tokens_path(data_dir)).audit_key()


def _lines(path: StrPath) -> list[bytes]:
    """The file's whole lines (without their newline); a torn last line is left out."""
    p = pathlib.Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    out = data.split(b"\n")
    return out[:-1]                      # the part after the last newline: empty, or torn by a crash


def verify(path: StrPath, key: bytes) -> dict[str, Any]:
    """Check the chain of an audit file: ``{"ok", "records", "breaks": [{line, seq, problem, sha256}],
    "accepted": [...], "head": {seq, sha256}}``.  ``breaks`` lists every break in file order (the first
    is the first edited, removed or reordered record); ``accepted`` those a later ``accept-audit-break``
    record names (line and SHA-256).  Lines before the first chained record (a log from before issue
    16) are sealed by that record's ``prev`` and counted as ``legacy``."""
    lines = _lines(path)
    breaks: list[Record] = []
    accepts: set[tuple[object, object]] = set()
    prev_hash: str | None = None
    prev_seq = None
    started = False
    legacy = 0
    offset_hash = hashlib.sha256()
    for i, line in enumerate(lines, 1):
        problem: str | None = None
        seq = None
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            rec = None
        if rec is None:
            problem = "not a JSON record (edited or damaged)"
        elif "mac" not in rec:
            if started:
                problem = "no chain fields (mac, prev): inserted or edited"
            else:
                legacy += 1
        else:
            seq = rec.get("seq")
            want_prev: str | None
            if not started:
                started = True
                want_prev = offset_hash.hexdigest()
            else:
                want_prev = prev_hash
            if not hmac.compare_digest(str(rec.get("mac")), _mac(key, rec)):
                problem = "MAC mismatch: the record was edited (or written without the key)"
            elif rec.get("prev") != want_prev:
                if prev_seq is not None and isinstance(seq, int) and seq > prev_seq + 1:
                    gone = f"seq {prev_seq + 1}" + (f"..{seq - 1}" if seq - 1 > prev_seq + 1 else "")
                    problem = f"{gone} removed or moved (seq {seq} follows seq {prev_seq})"
                elif prev_seq is not None and isinstance(seq, int) and seq <= prev_seq:
                    problem = f"reordered: seq {seq} follows seq {prev_seq}"
                else:
                    problem = "the line before is not the one this record was chained to (removed, inserted or reordered)"
            if rec.get("command") == "accept-audit-break" and problem is None:
                for b in (json.loads(rec.get("params") or "{}").get("breaks") or []):
                    accepts.add((b.get("line"), b.get("sha256")))
        if problem is not None:
            breaks.append({"line": i, "seq": seq, "problem": problem, "sha256": _sha(line)})
        if rec is not None and isinstance(rec.get("seq"), int):
            prev_seq = rec["seq"]
        elif rec is None and prev_seq is not None:
            prev_seq += 1                # an unreadable line stands for one record
        prev_hash = _sha(line)
        offset_hash.update(line + b"\n")        # the bytes before the next line (a chain's start seals them)
    accepted = [b for b in breaks if (b["line"], b["sha256"]) in accepts]
    return {"ok": not breaks, "records": len(lines), "legacy": legacy, "breaks": breaks, "accepted": accepted,
            "unaccepted": [b for b in breaks if (b["line"], b["sha256"]) not in accepts],
            "head": {"seq": prev_seq, "sha256": prev_hash}}


def _tail_line(fh: IO[bytes]) -> bytes | None:
    """The last whole line of an open binary file (None when empty); reads backwards."""
    end = fh.seek(0, os.SEEK_END)
    if end == 0:
        return None
    pos, buf = end, b""
    while pos > 0:
        step = min(65536, pos)
        pos -= step
        fh.seek(pos)
        buf = fh.read(step) + buf
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0:
            return buf[cut + 1:].rstrip(b"\n")
    return buf.rstrip(b"\n")


Done = Callable[[StorageError | None], None]     # a queued record's callback: None, or the write's error


class _FileLock:
    """``flock`` of an open file for a ``with`` block (the audit file between processes)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh

    def __enter__(self) -> None:
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)


class AuditLog:
    """Append-only, fsynced, chained JSON lines (see the module docstring).  ``append`` from the event
    loop; ``append_sync`` from a thread.  ``key``: the chain's HMAC key (:func:`audit_key`)."""

    def __init__(self, path: StrPath, key: bytes | None = None) -> None:
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.key = key if key is not None else audit_key(self.path.parent.parent)
        new = not self.path.exists()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            os.chmod(self.path, 0o600)
            self._fh = os.fdopen(fd, "a+b")
        except OSError as exc:
            raise StorageError(f"audit log {self.path}: {exc.strerror}") from None
        with self._flock():
            self._fh.seek(0, os.SEEK_END)
            size = self._fh.tell()
            if size:
                self._fh.seek(size - 1)
                if self._fh.read(1) != b"\n":         # torn by a crash mid-write: never acknowledged
                    last = _tail_line(self._fh) or b""
                    os.ftruncate(self._fh.fileno(), size - len(last))
                    os.fsync(self._fh.fileno())
        existing = read_records(self.path)
        self.seq = max((r.get("seq", 0) for r in existing if isinstance(r.get("seq"), int)), default=0)
        self.by_client: dict[str, Record] = {}     # client_id -> its latest record (idempotency)
        for r in existing:
            if r.get("client_id") and r.get("outcome") != "rejected":
                self.by_client[r["client_id"]] = r
        self.existing = existing                 # for the caller's recovery (queued commands), then dropped
        self._chained = False
        self._end = -1                             # file size after our last write
        self._last: bytes | None = None            # and its last line
        if new:
            _fsync_dir(self.path.parent)
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._queue: list[tuple[Record, Done]] = []   # (record, done callback)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="audit-fsync", daemon=True)
        self._thread.start()

    def _flock(self) -> _FileLock:
        return _FileLock(self._fh)

    def _has_chain(self) -> bool:
        if not self._chained:
            self._chained = any(b'"mac":' in ln for ln in _lines(self.path))
        return self._chained

    def _chain_batch(self, batch: list[tuple[Record, Done]]) -> bytes:
        """Under the file lock: stamp seq, ts_utc, prev and mac onto each record, chained onto the file's
        real last line (another process may have appended since)."""
        end = os.fstat(self._fh.fileno()).st_size
        last: bytes | None
        if end == self._end and self._last is not None:
            last = self._last                       # nobody appended since our last write: no read-back
        else:
            last = _tail_line(self._fh)
        seq = self.seq
        if last is None:
            prev = _sha(b"")
        else:
            try:
                tail = json.loads(last)
            except ValueError:
                tail = None
            if isinstance(tail, dict) and isinstance(tail.get("seq"), int):
                seq = max(seq, tail["seq"])
            prev = _sha(last)
            if not (isinstance(tail, dict) and "mac" in tail) and not self._has_chain():
                # the first chained record seals the file's earlier (unchained, pre-issue-16) bytes
                self._fh.seek(0)
                h = hashlib.sha256()
                for chunk in iter(lambda: self._fh.read(1 << 20), b""):
                    h.update(chunk)
                prev = h.hexdigest()
        out: list[bytes] = []
        for rec, _done in batch:
            seq += 1
            stamped = {"seq": seq, "ts_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
                       **rec, "prev": prev}
            stamped = json.loads(json.dumps(stamped, ensure_ascii=False, default=str))
            stamped["mac"] = _mac(self.key, stamped)
            line = json.dumps(stamped, ensure_ascii=False).encode()
            rec.clear()
            rec.update(stamped)
            if rec.get("client_id") and rec.get("outcome") != "rejected":
                self.by_client[rec["client_id"]] = rec
            prev = _sha(line)
            out.append(line + b"\n")
        self.seq = seq
        self._chained = True
        self._last = out[-1][:-1]
        data = b"".join(out)
        self._end = end + len(data)
        return data

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                batch, self._queue = self._queue, []
                if not batch and self._closed:
                    return
            err = None
            try:
                with self._flock():
                    data = self._chain_batch(batch)
                    self._fh.write(data)
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
            except OSError as exc:
                err = StorageError(f"audit log {self.path}: {exc.strerror}")
            for _, done in batch:
                done(err)

    def _submit(self, record: Record, done: Done) -> Record:
        """Queue a record; the writer thread stamps it (seq follows the file order, across processes)."""
        rec = dict(record)
        with self._cv:
            if self._closed:
                raise StorageError(f"audit log {self.path} is closed")
            self._queue.append((rec, done))
            self._cv.notify()
        return rec

    async def append(self, record: Record) -> Record:
        """Stamp, write and fsync one record; returns it (with seq and ts_utc) once durable."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def settle(err: StorageError | None) -> None:     # on the loop: the future may be cancelled by then
            if not fut.done():
                if err:
                    fut.set_exception(err)
                else:
                    fut.set_result(None)

        def done(err: StorageError | None) -> None:
            loop.call_soon_threadsafe(settle, err)
        rec = self._submit(record, done)
        await fut
        return rec

    def append_sync(self, record: Record) -> Record:
        ev = threading.Event()
        box: list[StorageError | None] = []

        def done(err: StorageError | None) -> None:
            box.append(err)
            ev.set()
        rec = self._submit(record, done)
        ev.wait()
        err = box[0]
        if err is not None:
            raise err
        return rec

    def records(self) -> list[Record]:
        return read_records(self.path)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()
        self._fh.close()


def record_local(data_dir: StrPath, command: str, target: str, params: Record | None = None) -> None:
    """Record a command run on the head-end's host (``gridhead token add/rotate/revoke``) in the audit log,
    as the API records its own: who is the local user, role ``local``."""
    import getpass
    log = AuditLog(audit_path(data_dir), audit_key(data_dir))
    try:
        log.append_sync({"who": f"local:{getpass.getuser()}", "role": "local", "command": command, "target": target,
                         "outcome": "ok", "client_addr": "local",
                         "params": None if params is None else json.dumps(params, ensure_ascii=False)})
    finally:
        log.close()


def view_statements(data_dir: StrPath) -> list[str]:
    """``audit_log``: the audit file as a table, one row per line (typed and empty while there is no
    file).  A line that is not a JSON record is shown, not skipped: ``broken`` says why and
    ``raw`` holds its text; ``line_no`` is the line in the file (``gridhead control-log verify`` checks
    the chain and names the first edited, removed or reordered record)."""
    p = audit_path(data_dir).resolve()
    extra = {"line_no": "BIGINT", "broken": "VARCHAR", "raw": "VARCHAR"}
    if not p.exists() or p.stat().st_size == 0:
        cols = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in {**COLUMNS, **extra}.items())
        return [f"CREATE OR REPLACE VIEW audit_log AS SELECT {cols} WHERE false"]
    path = str(p).replace("'", "''")

    def col(c: str, t: str) -> str:
        if t == "VARCHAR":
            return f"CASE WHEN json_type(j, '$.{c}') IN ('OBJECT', 'ARRAY') " \
                   f"THEN json_extract(j, '$.{c}')::VARCHAR ELSE j ->> '$.{c}' END AS {c}"
        return f"TRY_CAST(j ->> '$.{c}' AS {t}) AS {c}"
    sel = ", ".join(col(c, t) for c, t in COLUMNS.items())
    lines = (f"SELECT CASE WHEN ok THEN line ELSE '{{}}' END AS j, line, line_no, ok FROM ("
             f"SELECT line, n AS line_no, coalesce(json_valid(line) AND starts_with(ltrim(line), '{{'), false) AS ok FROM "
             f"(SELECT unnest(parts) AS line, generate_subscripts(parts, 1) AS n FROM "
             f"(SELECT string_split(rtrim(content, chr(10)), chr(10)) AS parts FROM read_text('{path}'))))")
    return [f"CREATE OR REPLACE VIEW audit_log AS SELECT {sel}, line_no, "
            f"CASE WHEN NOT ok THEN 'not a JSON record' END AS broken, CASE WHEN NOT ok THEN line END AS raw "
            f"FROM ({lines}) ORDER BY line_no"]


# --- tokens ------------------------------------------------------------------------------------------------
_SCRYPT = dict(n=2 ** 14, r=8, p=1, dklen=32)


def _hash(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT).hex()


class TokenStore:
    """API tokens, hashed (see the module docstring)."""

    def __init__(self, path: StrPath) -> None:
        self.path = pathlib.Path(path)
        self._mtime: tuple[int, int] | None = None
        self._entries: list[Record] = []
        self._other: Record = {}                 # other keys of the file (the audit chain's key)
        self._verified: dict[str, str] = {}    # sha256(token) -> id: skips scrypt for a token seen before
        self._lock = threading.Lock()
        self._reload()

    def _reload(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._entries, self._mtime, self._other = [], None, {}
            return
        if self._mtime == (st.st_mtime_ns, st.st_size):
            return
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise StorageError(f"tokens {self.path}: unreadable ({exc})") from None
        self._entries = list(raw.get("tokens", []))
        self._other = {k: v for k, v in raw.items() if k != "tokens"}
        self._mtime = (st.st_mtime_ns, st.st_size)
        self._verified.clear()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({**self._other, "tokens": self._entries}, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        st = self.path.stat()
        self._mtime = (st.st_mtime_ns, st.st_size)

    def audit_key(self) -> bytes:
        """The audit chain's HMAC key kept in this store (made on first use)."""
        with self._lock:
            self._reload()
            if not self._other.get("audit_hmac_key"):
                self._other["audit_hmac_key"] = secrets.token_hex(32)
                self._save()
            return bytes.fromhex(self._other["audit_hmac_key"])

    def add(self, name: str, role: str, expires_days: float | None = TOKEN_DAYS) -> tuple[str, str]:
        """A new token for ``name`` with ``role``: (id, token).  The token is not stored, only its hash.
        It expires after ``expires_days`` (None: never)."""
        if role not in ROLES:
            raise TokenError(f"role {role!r}: one of {', '.join(ROLES)}")
        if not name or any(c.isspace() for c in name):
            raise TokenError(f"token name {name!r}: a non-empty word")
        if expires_days is not None and not expires_days > 0:
            raise TokenError(f"expires: a positive number of days, not {expires_days!r}")
        with self._lock:
            self._reload()
            if any(e["name"] == name and _alive(e) for e in self._entries):
                raise TokenError(f"token name {name!r} is in use (revoke it first)")
            tid, token = self._new(name, role, expires_days)
            self._save()
        return tid, token

    def _new(self, name: str, role: str, expires_days: float | None) -> tuple[str, str]:
        tid = secrets.token_hex(4)
        secret = secrets.token_urlsafe(24)
        salt = secrets.token_bytes(16)
        exp = None if expires_days is None else _now(_dt.timedelta(days=expires_days))
        self._entries.append({"id": tid, "name": name, "role": role, "salt": salt.hex(),
                              "scrypt": _hash(secret, salt), "created_utc": _now(), "revoked_utc": None,
                              "expires_utc": exp})
        return tid, f"gh_{tid}_{secret}"

    def rotate(self, key: str, overlap_days: float = 1.0,
               expires_days: float | None = TOKEN_DAYS) -> tuple[Record, str, str]:
        """A new token with the name and role of the active token ``key`` (id or name); the old one
        expires after ``overlap_days`` (0: at once).  -> (old entry, new id, new token)."""
        with self._lock:
            self._reload()
            old = next((e for e in self._entries if (e["id"] == key or e["name"] == key) and _alive(e)), None)
            if old is None:
                raise TokenError(f"no active token {key!r}")
            until = _now(_dt.timedelta(days=overlap_days))
            if old.get("expires_utc") is None or old["expires_utc"] > until:
                old["expires_utc"] = until
            tid, token = self._new(old["name"], old["role"], expires_days)
            old["rotated_to"] = tid
            self._save()
            self._verified.clear()
            return _public(old), tid, token

    def revoke(self, key: str) -> Record:
        with self._lock:
            self._reload()
            for e in self._entries:
                if (e["id"] == key or e["name"] == key) and _alive(e):
                    e["revoked_utc"] = _now()
                    self._save()
                    self._verified.clear()
                    return _public(e)
        raise TokenError(f"no active token {key!r}")

    def list(self) -> list[Record]:
        with self._lock:
            self._reload()
            return [_public(e) for e in self._entries]

    def verify(self, token: str | None) -> Record | None:
        """The token's entry (id, name, role, expires_utc) if it is valid, not revoked and not expired,
        else None.  Runs scrypt for a token not seen before (tens of ms): call it off the event loop."""
        e = self.check(token)
        return e if e is not None and not e.get("expired") else None

    def cached(self, token: str | None) -> Record | None | bool:
        """Without scrypt: the entry of a token verified before (as :meth:`check`), None for a malformed
        or unknown-id token, False when scrypt is needed."""
        if not token or not token.startswith("gh_") or token.count("_") < 2:
            return None
        with self._lock:
            self._reload()
            tid = self._verified.get(hashlib.sha256(token.encode()).hexdigest())
            if tid is None:
                return False if any(e["id"] == token[3:].split("_", 1)[0] for e in self._entries) else None
            return self._state(tid)

    def _state(self, tid: str) -> Record | None:
        e = next((e for e in self._entries if e["id"] == tid), None)
        if e is None or e.get("revoked_utc"):
            return None
        out = _public(e)
        out["expired"] = bool(e.get("expires_utc")) and e["expires_utc"] <= _now()
        return out

    def check(self, token: str | None) -> Record | None:
        """The token's entry with ``expired`` (bool) if the secret matches an unrevoked token, else None."""
        if not token or not token.startswith("gh_") or token.count("_") < 2:
            return None
        with self._lock:
            self._reload()
            fast = hashlib.sha256(token.encode()).hexdigest()
            tid = self._verified.get(fast)
            if tid is None:
                tid, secret = token[3:].split("_", 1)
                e = next((e for e in self._entries if e["id"] == tid), None)
                if e is None:
                    return None
                salt, want = e["salt"], e["scrypt"]
        if tid is not None and fast not in self._verified:
            ok = hmac.compare_digest(_hash(secret, bytes.fromhex(salt)), want)   # outside the lock
            if not ok:
                return None
            with self._lock:
                self._verified[fast] = tid
        with self._lock:
            return self._state(tid)


def _public(e: Record) -> Record:
    return {k: e.get(k) for k in ("id", "name", "role", "created_utc", "revoked_utc", "expires_utc", "rotated_to")}


def _alive(e: Record) -> bool:
    return not e.get("revoked_utc") and not (e.get("expires_utc") and e["expires_utc"] <= _now())


def _now(plus: _dt.timedelta | None = None) -> str:
    t = _dt.datetime.now(_dt.timezone.utc)
    return (t + plus if plus else t).isoformat(timespec="seconds")

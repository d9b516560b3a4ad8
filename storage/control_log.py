"""Operators' remote control on disk (issue 8): the append-only audit log (操作日志) and the API tokens.

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
``expired``), so an answer cut off by a crash still leaves the intent in the log.

The SQL view ``audit_log`` (``gridhead sql``) reads the file with DuckDB's ``read_json`` and fixed
column types (:func:`view_statements`); ``params`` and ``readback`` are JSON text.

**Tokens.**  :class:`TokenStore`: ``add(name, role) -> (id, token)`` (the token is shown once),
``verify(token) -> entry | None``, ``revoke(id_or_name)``, ``list()``.  A token is
``gh_<id>_<secret>``; the file keeps ``hashlib.scrypt(secret, salt, n=2**14, r=8, p=1)``.  The file
is replaced atomically (write, fsync, rename); a store notices a newer file (``gridhead token add``
while the head-end runs) by its modification time.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import hmac
import json
import os
import pathlib
import secrets
import threading

from protocols.errors import GridheadError, StorageError

ROLES = ("viewer", "operator", "admin")
# audit_log columns: name -> DuckDB type (the view's schema; extra keys of a record are not shown)
COLUMNS = {"seq": "BIGINT", "ts_utc": "TIMESTAMPTZ", "who": "VARCHAR", "role": "VARCHAR", "command": "VARCHAR",
           "target": "VARCHAR", "reason": "VARCHAR", "client_id": "VARCHAR", "outcome": "VARCHAR",
           "error": "VARCHAR", "protocol": "VARCHAR", "path": "VARCHAR", "params": "VARCHAR",
           "readback": "VARCHAR", "duration_ms": "BIGINT", "command_id": "VARCHAR"}
FINAL = ("ok", "refused", "failed", "expired")


class TokenError(GridheadError):
    """A token request that cannot be done (unknown role, unknown token): one line, exit code 2."""

    exit_code = 2


def control_dir(data_dir) -> pathlib.Path:
    return pathlib.Path(data_dir) / "control"


def audit_path(data_dir) -> pathlib.Path:
    return control_dir(data_dir) / "audit.jsonl"


def tokens_path(data_dir) -> pathlib.Path:
    return control_dir(data_dir) / "tokens.json"


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path) -> list[dict]:
    """Every whole record of an audit file, in order (a torn last line is skipped)."""
    p = pathlib.Path(path)
    if not p.exists():
        return []
    out = []
    with open(p, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break                            # torn by a crash mid-write: never acknowledged
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


class AuditLog:
    """Append-only, fsynced JSON lines (see the module docstring).  ``append`` from the event loop;
    ``append_sync`` from a thread."""

    def __init__(self, path) -> None:
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        existing = read_records(self.path)
        self.seq = max((r.get("seq", 0) for r in existing), default=0)
        self.by_client: dict[str, dict] = {}     # client_id -> its latest record (idempotency)
        for r in existing:
            if r.get("client_id"):
                self.by_client[r["client_id"]] = r
        self.existing = existing                 # for the caller's recovery (queued commands), then dropped
        try:
            self._fh = open(self.path, "ab")
        except OSError as exc:
            raise StorageError(f"audit log {self.path}: {exc.strerror}") from None
        if new:
            _fsync_dir(self.path.parent)
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._queue: list = []                  # (line, done callback)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="audit-fsync", daemon=True)
        self._thread.start()

    def _stamp(self, record: dict) -> tuple[dict, bytes]:
        self.seq += 1
        rec = {"seq": self.seq, "ts_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
               **record}
        if rec.get("client_id"):
            self.by_client[rec["client_id"]] = rec
        return rec, (json.dumps(rec, ensure_ascii=False, default=str) + "\n").encode()

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
                self._fh.write(b"".join(line for line, _ in batch))
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except OSError as exc:
                err = StorageError(f"audit log {self.path}: {exc.strerror}")
            for _, done in batch:
                done(err)

    def _submit(self, record: dict, done) -> dict:
        """Stamp and queue under one lock, so seq follows the file order."""
        with self._cv:
            if self._closed:
                raise StorageError(f"audit log {self.path} is closed")
            rec, line = self._stamp(record)
            self._queue.append((line, done))
            self._cv.notify()
        return rec

    async def append(self, record: dict) -> dict:
        """Stamp, write and fsync one record; returns it (with seq and ts_utc) once durable."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def done(err):
            loop.call_soon_threadsafe(lambda: fut.done() or (fut.set_exception(err) if err else fut.set_result(None)))
        rec = self._submit(record, done)
        await fut
        return rec

    def append_sync(self, record: dict) -> dict:
        ev = threading.Event()
        box = []

        def done(err):
            box.append(err)
            ev.set()
        rec = self._submit(record, done)
        ev.wait()
        if box[0] is not None:
            raise box[0]
        return rec

    def records(self) -> list[dict]:
        return read_records(self.path)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()
        self._fh.close()


def view_statements(data_dir) -> list[str]:
    """``audit_log``: the audit file as a table (typed and empty while there is no file)."""
    p = audit_path(data_dir).resolve()
    if not p.exists() or p.stat().st_size == 0:
        cols = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in COLUMNS.items())
        return [f"CREATE OR REPLACE VIEW audit_log AS SELECT {cols} WHERE false"]
    spec = ", ".join(f"{c}: '{'VARCHAR' if t == 'TIMESTAMPTZ' else t}'" for c, t in COLUMNS.items())
    sel = ", ".join(f"CAST({c} AS TIMESTAMPTZ) AS {c}" if t == "TIMESTAMPTZ" else c for c, t in COLUMNS.items())
    path = str(p).replace("'", "''")
    return [f"CREATE OR REPLACE VIEW audit_log AS SELECT {sel} FROM read_json('{path}', "
            f"format = 'newline_delimited', columns = {{{spec}}}, ignore_errors = true) ORDER BY seq"]


# --- tokens ------------------------------------------------------------------------------------------------
_SCRYPT = dict(n=2 ** 14, r=8, p=1, dklen=32)


def _hash(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT).hex()


class TokenStore:
    """API tokens, hashed (see the module docstring)."""

    def __init__(self, path) -> None:
        self.path = pathlib.Path(path)
        self._mtime = None
        self._entries: list[dict] = []
        self._verified: dict[str, str] = {}    # sha256(token) -> id: skips scrypt for a token seen before
        self._lock = threading.Lock()
        self._reload()

    def _reload(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._entries, self._mtime = [], None
            return
        if self._mtime == (st.st_mtime_ns, st.st_size):
            return
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise StorageError(f"tokens {self.path}: unreadable ({exc})") from None
        self._entries = list(raw.get("tokens", []))
        self._mtime = (st.st_mtime_ns, st.st_size)
        self._verified.clear()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump({"tokens": self._entries}, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        st = self.path.stat()
        self._mtime = (st.st_mtime_ns, st.st_size)

    def add(self, name: str, role: str) -> tuple[str, str]:
        """A new token for ``name`` with ``role``: (id, token).  The token is not stored, only its hash."""
        if role not in ROLES:
            raise TokenError(f"role {role!r}: one of {', '.join(ROLES)}")
        if not name or any(c.isspace() for c in name):
            raise TokenError(f"token name {name!r}: a non-empty word")
        with self._lock:
            self._reload()
            if any(e["name"] == name and not e.get("revoked_utc") for e in self._entries):
                raise TokenError(f"token name {name!r} is in use (revoke it first)")
            tid = secrets.token_hex(4)
            secret = secrets.token_urlsafe(24)
            salt = secrets.token_bytes(16)
            self._entries.append({"id": tid, "name": name, "role": role, "salt": salt.hex(),
                                  "scrypt": _hash(secret, salt), "created_utc": _now(), "revoked_utc": None})
            self._save()
        return tid, f"gh_{tid}_{secret}"

    def revoke(self, key: str) -> dict:
        with self._lock:
            self._reload()
            for e in self._entries:
                if (e["id"] == key or e["name"] == key) and not e.get("revoked_utc"):
                    e["revoked_utc"] = _now()
                    self._save()
                    self._verified.clear()
                    return _public(e)
        raise TokenError(f"no active token {key!r}")

    def list(self) -> list[dict]:
        with self._lock:
            self._reload()
            return [_public(e) for e in self._entries]

    def verify(self, token: str | None) -> dict | None:
        """The token's entry (id, name, role) if it is valid and not revoked, else None."""
        if not token or not token.startswith("gh_") or token.count("_") < 2:
            return None
        with self._lock:
            self._reload()
            fast = hashlib.sha256(token.encode()).hexdigest()
            tid = self._verified.get(fast)
            if tid is None:
                tid, secret = token[3:].split("_", 1)
                e = next((e for e in self._entries if e["id"] == tid), None)
                if e is None or not hmac.compare_digest(_hash(secret, bytes.fromhex(e["salt"])), e["scrypt"]):
                    return None
                self._verified[fast] = tid
            e = next((e for e in self._entries if e["id"] == tid), None)
            if e is None or e.get("revoked_utc"):
                return None
            return _public(e)


def _public(e: dict) -> dict:
    return {k: e.get(k) for k in ("id", "name", "role", "created_utc", "revoked_utc")}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

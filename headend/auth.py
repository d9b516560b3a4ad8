"""Who may do what on the control API (系统管理: permissions): roles, the permission table, rate limits.

Roles, lowest first (a role may do everything the roles below it may):

* ``viewer``   — status (terminals online, last heartbeat, communication quality), remote reads (召测),
  the audit log;
* ``operator`` — also time sync (对时), trip (跳闸 / 拉闸) and close (合闸), within limits: a token
  bucket per operator for commands that act on a meter (:class:`Limits`);
* ``admin``    — also protection on/off (保电) and the tokens.

:func:`authenticate` turns the ``Authorization: Bearer <token>`` header into a principal (or raises
:class:`Unauthenticated`, HTTP 401); :func:`authorize` raises :class:`Forbidden` (HTTP 403) when the
principal's role is below the command's.  Tokens live hashed in ``storage.control_log.TokenStore``.
"""

from __future__ import annotations

import dataclasses
import time

from gridhead.protocols.errors import GridheadError
from gridhead.storage.control_log import ROLES

RANK = {r: i for i, r in enumerate(ROLES)}
# command -> lowest role allowed
PERMISSIONS = {
    "status": "viewer", "read": "viewer", "audit": "viewer",
    "timesync": "operator", "disconnect": "operator", "reconnect": "operator",
    "protect": "admin", "tokens": "admin",
    "bulk": "operator", "jobs": "viewer", "approve": "admin",
}
CONTROL = ("disconnect", "reconnect", "protect", "timesync")   # act on a meter: rate-limited, audited twice


class ApiError(GridheadError):
    """An API answer other than 200: ``status`` is the HTTP status."""

    status = 400

    def __init__(self, message: str, status: int | None = None, **extra) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.extra = extra


class Unauthenticated(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class RateLimited(ApiError):
    status = 429


@dataclasses.dataclass(frozen=True)
class Principal:
    id: str
    name: str
    role: str


def authenticate(store, header: str | None) -> Principal:
    if not header or not header.startswith("Bearer "):
        raise Unauthenticated("missing token (Authorization: Bearer <token>)")
    entry = store.verify(header[7:].strip())
    if entry is None:
        raise Unauthenticated("unknown or revoked token")
    return Principal(entry["id"], entry["name"], entry["role"])


def authorize(p: Principal, command: str) -> None:
    need = PERMISSIONS[command]
    if RANK.get(p.role, -1) < RANK[need]:
        raise Forbidden(f"{command} needs role {need}; {p.name} is {p.role}")


class LoginThrottle:
    """Failed logins per client address and per token id: ``free`` failures, then each next
    attempt waits ``base_s`` × 2^(failures − free), at most ``max_s``; a key's failures are forgotten
    ``forget_s`` after its last one.  Bounded: the oldest keys go first past ``max_keys``."""

    def __init__(self, free: int = 5, base_s: float = 1.0, max_s: float = 300.0, forget_s: float = 900.0,
                 clock=time.monotonic, max_keys: int = 100_000) -> None:
        self.free, self.base_s, self.max_s, self.forget_s = free, base_s, max_s, forget_s
        self.clock = clock
        self.max_keys = max_keys
        self._fails: dict = {}                 # key -> (failures, time of the last one)

    def _delay(self, key) -> float:
        n, last = self._fails.get(key, (0, 0.0))
        now = self.clock()
        if n and now - last > self.forget_s:
            self._fails.pop(key, None)
            return 0.0
        if n < self.free:
            return 0.0
        return max(0.0, last + min(self.max_s, self.base_s * 2 ** (n - self.free)) - now)

    def wait(self, addr: str, token_id: str) -> float:
        """Seconds before this client (or anyone, for this token id) may try again; 0 = now."""
        return max(self._delay(("addr", addr)), self._delay(("id", token_id)) if token_id else 0.0)

    def fail(self, addr: str, token_id: str) -> int:
        now = self.clock()
        out = 0
        for key in (("addr", addr),) + ((("id", token_id),) if token_id else ()):
            n, last = self._fails.pop(key, (0, now))
            if now - last > self.forget_s:
                n = 0
            self._fails[key] = (n + 1, now)
            out = max(out, n + 1)
        while len(self._fails) > self.max_keys:
            self._fails.pop(next(iter(self._fails)))
        return out


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per principal: ``control_per_s`` commands acting on meters on average, bursts of ``control_burst``
    (a bulk disconnect of a whole area goes at this pace); ``reads_per_s`` / ``reads_burst`` for reads.
    An admin's rates are ``admin_factor`` times these."""

    control_per_s: float = 5.0
    control_burst: float = 20.0
    reads_per_s: float = 200.0
    reads_burst: float = 400.0
    admin_factor: float = 10.0


class RateLimiter:
    """Token buckets per (principal, class); :meth:`check` raises RateLimited with ``retry_after_s``."""

    def __init__(self, limits: Limits, clock=time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict = {}

    def check(self, p: Principal, command: str) -> None:
        lim = self.limits
        control = command in CONTROL
        rate, burst = (lim.control_per_s, lim.control_burst) if control else (lim.reads_per_s, lim.reads_burst)
        if p.role == "admin":
            rate, burst = rate * lim.admin_factor, burst * lim.admin_factor
        if rate <= 0:
            return
        key = (p.id, control)
        now = self.clock()
        tokens, stamp = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - stamp) * rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            wait = (1 - tokens) / rate
            raise RateLimited(f"rate limit: {rate:g} {'commands' if control else 'reads'}/s for {p.name}; "
                              f"retry after {wait:.2f} s", retry_after_s=round(wait, 3))
        self._buckets[key] = (tokens - 1, now)

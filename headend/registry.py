"""The registry of terminal sessions (运行状况管理): who is online, from where, since when, how busy.

One :class:`Registry` per head-end maps a terminal address (its SA, e.g. ``"201605190907"``) to the
:class:`headend.terminal.Terminal` logged in with it.  A second login of an online address replaces the
old session (:meth:`Registry.login` returns the stale one for the caller to close).
"""

from __future__ import annotations

from typing import Iterator


class Registry:
    __slots__ = ("_online", "connections")

    def __init__(self) -> None:
        self._online: dict = {}          # address -> Terminal
        self.connections = 0             # open connections, logged in or not

    def get(self, address: str):
        """The online terminal with this address, or None."""
        return self._online.get(address)

    def login(self, terminal):
        """Register ``terminal`` under its address; returns the session it replaces (or None)."""
        old = self._online.get(terminal.address)
        self._online[terminal.address] = terminal
        return old if old is not terminal else None

    def logout(self, terminal) -> None:
        """Forget ``terminal`` (only if it is still the one registered under its address)."""
        if terminal.address is not None and self._online.get(terminal.address) is terminal:
            del self._online[terminal.address]

    def __len__(self) -> int:
        return len(self._online)

    def __iter__(self) -> Iterator:
        return iter(list(self._online.values()))

    def __contains__(self, address: str) -> bool:
        return address in self._online

    def addresses(self) -> list[str]:
        return list(self._online)

    def snapshot(self) -> list[dict]:
        """One dict per online terminal: address, peer, login and last-frame times (UTC), counters."""
        return [t.info() for t in self]

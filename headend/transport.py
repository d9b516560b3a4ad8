"""How terminals and meters reach the head-end: one small interface for every transport.

A :class:`Transport` is started with the head-end and stopped with it; ``headend.server.transports_for`` builds
the head-end's list from its configuration, in the order they start:

* :class:`TcpListener` — concentrators dialling in over TCP (the listen address);
* :class:`Connector` — one per ``[[dial_out]]`` entry: the head-end connects to a terminal in server mode
  and connects again when the link is lost;
* ``headend.transport_mqtt.MqttBridge`` — concentrators publishing through an MQTT broker (``[mqtt]``);
* ``headend.transport_serial.SerialBus`` — meters wired to an RS-485 port of the head-end host
  (``[[serial]]``).

The first three bring terminal sessions (``headend.terminal.Terminal`` in ``he.sessions``); a
:class:`MeterBus` (a serial line) has no terminal in front of its meters and carries a meter's own
requests (:meth:`MeterBus.request645`, :meth:`MeterBus.request698`), one at a time.  Either way a
transport only carries requests: the collector (``headend.collect``) reads every meter with one
algorithm, through a link per terminal (the meter's request inside a 698 proxy request to the terminal)
or per bus (the request itself on the bus), and one collection loop drives them all.

Stopping is two steps, so the head-end can close its links in between: :meth:`Transport.stop` stops
taking new links or bytes, :meth:`Transport.closed` waits until the transport is gone.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from .log import event, get_logger

if TYPE_CHECKING:
    from .config import DialOut


class TransportHost(Protocol):
    """What a transport uses of the head-end (``headend.server.HeadEnd``)."""

    stopping: bool
    links: set[Any]

    def accept(self) -> asyncio.Protocol: ...

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]: ...

__all__ = ["Transport", "MeterBus", "TcpListener", "Connector"]

log = get_logger("transport")


class Transport(abc.ABC):
    """One way terminals or meters reach the head-end ``he``."""

    name: str = "transport"

    @abc.abstractmethod
    async def start(self) -> None:
        """Start taking links (or bytes); return once ready."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop taking new links or bytes (links already open are the head-end's to close)."""

    async def closed(self) -> None:
        """Wait until the transport is gone (after :meth:`stop` and after the head-end closed its links)."""


class MeterBus(Transport):
    """A transport whose meters the head-end reads itself, one request at a time (no terminal in front):
    it carries a meter's DL/T 645 and 698.45 requests; what to read is the collector's
    (``headend.collect.BusLink``)."""

    meters: list[Any]               # each with ``address`` (12 digits) and ``protocol`` ("645" / "698")

    @abc.abstractmethod
    def meter_id(self, address: str) -> int | None:
        """The archive's meter id of the meter at ``address`` on this bus (None: not in the archive)."""

    @abc.abstractmethod
    async def request645(self, msg: Any, **kw: Any) -> Any:
        """Send a DL/T 645 request to its meter; the meter's answer message (``TransportError`` if none)."""

    @abc.abstractmethod
    async def request698(self, address: str, apdu: Any, **kw: Any) -> Any:
        """Send a 698.45 request APDU to the meter at ``address``; its response APDU (``TransportError`` if none)."""


class TcpListener(Transport):
    """Concentrators dialling in over TCP: each accepted connection is a new terminal link."""

    def __init__(self, he: TransportHost, host: str, port: int) -> None:
        self.he, self.host, self.port = he, host, port
        self.name = f"tcp {host}:{port}"
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(
            self.he.accept, self.host, self.port, backlog=4096, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        self.name = f"tcp {self.host}:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()


class Connector(Transport):
    """A terminal in server mode (``[[dial_out]]``): the head-end connects to it, and again ``reconnect_s``
    after a failed attempt or a lost link, until it stops."""

    def __init__(self, he: TransportHost, dial: DialOut) -> None:
        self.he, self.dial = he, dial
        self.name = f"dial-out {dial.address} {dial.host}:{dial.port}"

    async def start(self) -> None:
        self.he.spawn(self.connect())

    async def stop(self) -> None:
        """Nothing to close: the head-end cancels its pending attempts with its other tasks."""

    async def connect(self) -> None:
        from .terminal import Terminal
        he, d = self.he, self.dial
        loop = asyncio.get_running_loop()
        while not he.stopping:
            try:
                _, t = await loop.create_connection(lambda: Terminal(he, dial=d, connector=self), d.host, d.port)
                he.links.add(t)
                return
            except OSError as exc:
                event(log, "dial-out failed", address=d.address, host=d.host, port=d.port, error=str(exc))
                await asyncio.sleep(d.reconnect_s)

    def link_lost(self) -> None:
        """The terminal's link ended: connect again after ``reconnect_s`` (unless the head-end stops)."""
        async def later() -> None:
            await asyncio.sleep(self.dial.reconnect_s)
            await self.connect()
        if not self.he.stopping:
            self.he.spawn(later())

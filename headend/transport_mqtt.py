"""MQTT transport: DL/T 698.45 concentrators that publish through a broker instead of dialling TCP.

A transport is only a byte pipe.  The head-end subscribes as ONE client (:class:`MqttBridge`); each
terminal's uplink topic feeds the same :class:`headend.terminal.Terminal` (and so the same
ClientSession, login, heartbeat, requests, reports, collection) as a TCP link, through
:class:`MqttLink`, an ``asyncio.Transport`` look-alike whose ``write()`` publishes to the downlink topic.

Topic layout (``prefix`` = ``Config.mqtt.prefix``, default ``gridhead``; QoS 1 everywhere, nothing
retained — a retained frame would be replayed to every new subscriber, and a stale login is worse than none)::

    <prefix>/<terminal address>/up       terminal -> head-end   raw 698.45 frames (LINK, responses, REPORTs)
    <prefix>/<terminal address>/down     head-end -> terminal   raw 698.45 frames (LINK-Response, requests, acks)
    <prefix>/<terminal address>/status   terminal -> head-end   "online" after connecting; "offline" is its
                                                                Last Will, published by the broker when the
                                                                terminal's connection dies
    <prefix>/$headend/status             the head-end's own Last Will ("offline")

The address in the topic is the terminal's server address (12 hex digits, as in its LINK login); a LINK
naming another address is refused (result 2, link closed "refused") before it can replace that
terminal's session: a terminal speaks only on its own topics.
One MQTT payload may carry any number of whole or partial frames — the session's framer reassembles, as
it does over TCP.

QoS 1 is at-least-once: a frame may arrive twice.  A duplicated response finds no waiting request
(``Unmatched``), a duplicated REPORT is stored twice and deduplicated by the lake's keys
(storage.lake), a duplicated LINK is answered twice.  Nothing more is needed.

Reconnects: when the broker goes away every MQTT link is closed (its terminal goes offline exactly as a
reset TCP link would), and the bridge reconnects after ``reconnect_min_s`` doubling up to
``reconnect_max_s`` with ±25 % jitter; the terminals log in again as they reconnect.

Back-pressure: ``pause_reading`` holds the link's further payloads in memory (the broker has already
been acknowledged, it cannot be paused per topic); the session sees them on ``resume_reading``.

The simulator's side (``headend.sim.mqtt``) is one MQTT client per simulated terminal, with its own Last Will.
"""

from __future__ import annotations

import asyncio
import random

import aiomqtt

from gridhead.protocols.dlt698 import session as S

from .config import MqttBroker
from .log import event, get_logger
from .terminal import Terminal
from .transport import Transport

log = get_logger("mqtt")

QOS = 1
ONLINE, OFFLINE = b"online", b"offline"
HEADEND = "$headend"


def topic(prefix: str, address: str, kind: str) -> str:
    """``<prefix>/<address>/<kind>``, kind one of up, down, status."""
    return f"{prefix}/{address}/{kind}"


def _valid_address(a: str) -> bool:
    return 0 < len(a) <= 32 and all(c in "0123456789ABCDEFabcdef" for c in a)


def backoff_s(attempt: int, lo: float, hi: float, rng: random.Random) -> float:
    """lo × 2^attempt capped at hi, ±25 % jitter (a fleet reconnecting after a broker restart spreads out)."""
    return min(hi, lo * 2 ** min(attempt, 30)) * rng.uniform(0.75, 1.25)


class MqttLink:
    """One terminal's byte pipe over the broker, seen by its Terminal as an asyncio transport."""

    __slots__ = ("bridge", "address", "protocol", "down", "closing", "paused", "held")

    def __init__(self, bridge: "MqttBridge", address: str, protocol) -> None:
        self.bridge = bridge
        self.address = address
        self.protocol = protocol
        self.down = topic(bridge.broker.prefix, address, "down")
        self.closing = False
        self.paused = False
        self.held: list = []

    # --- what Terminal calls ---------------------------------------------------------------------------
    def write(self, data) -> None:
        if not self.closing:
            self.bridge._publish(self.down, bytes(data))

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.bridge._forget(self)
        self.bridge.he.loop.call_soon(self.protocol.connection_lost, None)

    abort = close

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        if self.held:
            self.bridge.he.loop.call_soon(self._release)

    def get_extra_info(self, name, default=None):
        if name == "peername":
            return ("mqtt", topic(self.bridge.broker.prefix, self.address, "up"))
        return default

    # --- what the bridge calls -------------------------------------------------------------------------
    def feed(self, payload: bytes) -> None:
        if self.closing:
            return
        if self.paused:
            self.held.append(payload)
            return
        self.protocol.data_received(payload)

    def _release(self) -> None:
        held, self.held = self.held, []
        for p in held:
            self.feed(p)

    def lost(self) -> None:
        """The broker connection dropped: the link is gone as a reset TCP link is."""
        if not self.closing:
            self.closing = True
            self.protocol.connection_lost(ConnectionResetError("MQTT broker connection lost"))


class MqttBridge(Transport):
    """The head-end's one MQTT client (a headend.transport.Transport): every terminal under
    ``broker.prefix`` becomes a Terminal.

    ``await start()`` returns once the first connection attempt ended (connected or not: the bridge
    keeps trying in the background); ``await wait_connected(timeout_s)``; ``await stop()``.
    ``links``: address -> MqttLink of the terminals currently talking; ``connects``: broker
    connections made so far.
    """

    def __init__(self, he, broker: MqttBroker, *, seed: int | None = None) -> None:
        self.he = he
        self.broker = broker
        self.name = f"mqtt {broker.host}:{broker.port} {broker.prefix}/"
        self.links: dict[str, MqttLink] = {}
        self.client: aiomqtt.Client | None = None
        self.connects = 0
        self.received = 0
        self.published = 0
        self._connected = asyncio.Event()
        self._tried = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._pubs: set = set()
        self._stopping = False
        self._rng = random.Random(seed)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._tried.wait()

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def stop(self) -> None:
        self._stopping = True
        for link in list(self.links.values()):
            link.protocol.close("shutdown")
        if self._pubs:                                      # the logouts' answers, the last acks
            await asyncio.wait(list(self._pubs), timeout=2.0)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        b = self.broker
        attempt = 0
        will = aiomqtt.Will(topic(b.prefix, HEADEND, "status"), OFFLINE, qos=QOS)
        while not self._stopping:
            try:
                async with aiomqtt.Client(b.host, b.port, identifier=b.client_id, keepalive=b.keepalive_s,
                                          clean_session=True, will=will, timeout=10) as client:
                    self.client = client
                    await client.subscribe([(topic(b.prefix, "+", "up"), QOS), (topic(b.prefix, "+", "status"), QOS)])
                    self.connects += 1
                    attempt = 0
                    self._connected.set()
                    self._tried.set()
                    event(log, "broker connected", host=b.host, port=b.port, connects=self.connects)
                    async for msg in client.messages:
                        self._on_message(msg)
            except aiomqtt.MqttError as exc:
                event(log, "broker connection lost" if self._connected.is_set() else "broker unreachable",
                      host=b.host, port=b.port, error=str(exc))
            finally:
                self.client = None
                self._connected.clear()
                self._tried.set()
                for link in list(self.links.values()):
                    link.lost()
                self.links.clear()
            if self._stopping:
                break
            await asyncio.sleep(backoff_s(attempt, b.reconnect_min_s, b.reconnect_max_s, self._rng))
            attempt += 1

    def _on_message(self, msg) -> None:
        parts = msg.topic.value.split("/")
        if len(parts) != 3 or not _valid_address(parts[1]):
            self.he.metrics.decode_errors += 1
            return
        address, kind = parts[1].upper(), parts[2]
        payload = bytes(msg.payload) if msg.payload is not None else b""
        self.received += 1
        link = self.links.get(address)
        if kind == "status":
            if payload == OFFLINE and link is not None:
                event(log, "terminal offline (last will)", address=address)
                link.protocol.eof_received()                  # closes the session with reason "eof"
            return
        if kind != "up" or not payload:
            return
        if link is None:
            he = self.he
            t = MqttTerminal(he)
            t.topic_address = address
            link = MqttLink(self, address, t)
            self.links[address] = link
            he.links.add(t)                       # back-pressure and shutdown reach it as any link
            t.connection_made(link)
        link.feed(payload)

    def _forget(self, link: MqttLink) -> None:
        if self.links.get(link.address) is link:
            del self.links[link.address]

    def _publish(self, topic_: str, data: bytes) -> None:
        client = self.client
        if client is None:
            return                                   # the link is being torn down with the broker connection
        # tasks start in creation order, and aiomqtt hands the frame to paho before its first await:
        # frames leave in the order the session wrote them
        task = self.he.loop.create_task(client.publish(topic_, data, qos=QOS))
        self.published += 1
        self._pubs.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task) -> None:
        self._pubs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            event(log, "publish failed", error=str(task.exception()))


class MqttTerminal(Terminal):
    """A Terminal refusing a LINK whose address is not its topic's (result 2, closed "refused")."""

    __slots__ = ("topic_address",)

    def _link(self, ev, now) -> None:
        if ev.server.address.upper() != self.topic_address:
            self.he.metrics.refused["wrong topic"] += 1
            event(log, "login refused", address=ev.server.address, peer=self.peer,
                  reason="not the address of its topic")
            self.send_link(S.AcceptLink(ev, 2))
            return self.close("refused")
        super()._link(ev, now)


__all__ = ["MqttBridge", "MqttLink", "topic", "backoff_s", "QOS", "ONLINE", "OFFLINE"]

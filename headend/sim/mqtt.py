"""A simulated terminal's MQTT side: one MQTT client per terminal, with its own Last Will, speaking the
head-end's topics (``headend.transport_mqtt``)."""

from __future__ import annotations

import asyncio
import socket

import aiomqtt

from gridhead.headend.transport_mqtt import OFFLINE, ONLINE, QOS, topic

__all__ = ["sim_dial"]


async def sim_dial(sim, t, conn) -> None:
    """Connect simulated terminal ``t`` of ``sim`` (headend.sim.simulator.Simulator, ``sim.mqtt`` = (host,
    port)) to the broker with its Last Will, log in over its topics and serve ``conn`` (its simulator.SimLink) until the link ends."""
    host, port = sim.mqtt
    prefix = getattr(sim, "mqtt_prefix", "gridhead")
    pipe = SimPipe(conn, topic(prefix, t.address, "up"), topic(prefix, t.address, "status"))
    status = topic(prefix, t.address, "status")
    connected = False
    try:
        async with aiomqtt.Client(host, port, identifier=f"gridhead-sim-{t.address}", clean_session=True,
                                  keepalive=max(5, min(60, sim.heartbeat_s)), timeout=10,
                                  will=aiomqtt.Will(status, OFFLINE, qos=QOS)) as client:
            pipe.client = client
            pipe.task = asyncio.current_task()
            await client.subscribe(topic(prefix, t.address, "down"), qos=QOS)
            await client.publish(status, ONLINE, qos=QOS)
            connected = True
            sim.stats.connects += 1
            conn.connection_made(pipe)
            t.conn = conn
            t.logged_in = False
            t.login_tries = 0
            sim.login(t)
            async for msg in client.messages:
                if pipe.closing:
                    break
                conn.data_received(bytes(msg.payload))
    except aiomqtt.MqttError as exc:
        if not connected:
            sim.stats.connect_errors += 1
            sim.note_event(t, "connect_error", error=str(exc)[:80])
            sim.redial(t, 1.0 + t.rng.random() * 4)
            return
    except asyncio.CancelledError:
        pass
    finally:
        pipe.closing = True
    if connected:
        conn.connection_lost(None)


class SimPipe:
    """The transport a simulated terminal's Link writes to: publishes on its uplink topic."""

    __slots__ = ("conn", "up", "status", "client", "task", "closing", "pubs")

    def __init__(self, conn, up: str, status: str) -> None:
        self.conn, self.up, self.status = conn, up, status
        self.client = self.task = None
        self.closing = False
        self.pubs: set = set()

    def write(self, data: bytes) -> None:
        if self.client is not None and not self.closing:
            task = asyncio.get_running_loop().create_task(self.client.publish(self.up, bytes(data), qos=QOS))
            self.pubs.add(task)
            task.add_done_callback(self._done)

    def _done(self, task) -> None:
        self.pubs.discard(task)
        if not task.cancelled():
            task.exception()                          # a publish lost with the connection: nothing to do

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        """Clean goodbye: what was written, then "offline" on the status topic, then DISCONNECT."""
        if self.closing or self.client is None:
            return
        self.closing = True
        asyncio.get_running_loop().create_task(self._goodbye())

    async def _goodbye(self) -> None:
        if self.pubs:
            await asyncio.wait(list(self.pubs), timeout=2.0)
        try:
            await self.client.publish(self.status, OFFLINE, qos=QOS, timeout=2.0)
        except aiomqtt.MqttError:
            pass
        if self.task is not None:
            self.task.cancel()

    def abort(self) -> None:
        """Vanish without DISCONNECT: the broker publishes the Last Will (a terminal losing power)."""
        if self.closing or self.client is None:
            return
        self.closing = True
        sock = self.client._client.socket()           # paho's socket: shut it so the broker sees a broken link
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass                                  # paho sees the end of the stream, aiomqtt the disconnect

"""The head-end server (主站前置): keeps DL/T 698.45 terminals online and turns their traffic into readings.

Public API (the collection tasks, the demo and the tests build on this; everything else is internal)::

    from headend.config import Config, DialOut
    from headend.server import HeadEnd, TerminalOffline, RequestTimeout

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
    he.on_report.append(fn)                # fn(terminal, notification, batch) after a report is durable
    he.on_login.append(fn); he.on_logout.append(fn)      # fn(terminal)
    he.metrics                             # Metrics: .collection_progress / .collection_success gauges...
    await he.stop()                        # close sessions, flush ingest into the lake, stop listening

``request`` raises :class:`TerminalOffline` (not logged in / the link dropped) or :class:`RequestTimeout`
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

Back-pressure: while more than ``Config.ingest_queue_bound`` report batches wait for their fsync, every
terminal stops being read (``transport.pause_reading``) until the ingest catches up; frames are bounded by
``Config.max_frame`` and a terminal's unparsed bytes by the framer's bound.  A terminal sending garbage,
flooding, never logging in (slowloris) or going silent (half-open) is closed on its own.
"""

from __future__ import annotations

"""Head-end metrics in Prometheus text format (prometheus-client), served on a local port.

The hot path increments plain integers (a dict lookup, no lock: the event loop is one thread); a custom
collector turns them into metric families when Prometheus scrapes.  Gauges the collection tasks set
(``collection_progress``, ``collection_success``) are ordinary prometheus-client gauges in the same
registry.

Exposed (prefix ``gridhead_``): ``sessions_online``, ``connections``, ``frames_in_total{type}``,
``frames_out_total{type}``, ``bytes_in_total``, ``bytes_out_total``, ``decode_errors_total``,
``unmatched_responses_total``, ``sessions_closed_total{reason}``, ``logins_refused_total{reason}``,
``readings_total``, ``readings_per_second`` (over the last scrape interval), ``reports_total``,
``requests_in_flight``, ``requests_total{outcome}``, ``ingest_pending``, ``reading_paused``,
``collection_progress{task}``, ``collection_success{task}``.
"""

from __future__ import annotations

import time
from collections import Counter

from prometheus_client import CollectorRegistry, Gauge, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

P = "gridhead_"


class Metrics:
    """Counters of one head-end.  ``start(port)`` serves them on 127.0.0.1; ``text()`` renders them."""

    def __init__(self) -> None:
        self.frames_in: Counter = Counter()         # APDU service name -> frames
        self.frames_out: Counter = Counter()
        self.closed: Counter = Counter()            # reason -> sessions closed
        self.refused: Counter = Counter()           # reason -> logins refused
        self.requests: Counter = Counter()          # outcome -> requests (ok, timeout, retry, offline)
        self.bytes_in = 0
        self.bytes_out = 0
        self.decode_errors = 0
        self.unmatched = 0
        self.readings = 0
        self.reports = 0
        self.in_flight = 0
        self.sessions_online = lambda: 0            # set by the head-end
        self.connections = lambda: 0
        self.ingest_pending = lambda: 0
        self.paused = lambda: False
        self._last = (time.monotonic(), 0)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.collection_progress = Gauge(P + "collection_progress", "share of a collection task done (0..1)",
                                         ["task"], registry=self.registry)
        self.collection_success = Gauge(P + "collection_success", "collection success rate (采集成功率, 0..1)",
                                        ["task"], registry=self.registry)
        self.server = None

    def readings_per_s(self) -> float:
        now = time.monotonic()
        t0, n0 = self._last
        self._last = (now, self.readings)
        return (self.readings - n0) / (now - t0) if now > t0 else 0.0

    def collect(self):
        g = GaugeMetricFamily
        yield g(P + "sessions_online", "terminals logged in", value=self.sessions_online())
        yield g(P + "connections", "open TCP connections", value=self.connections())
        for name, doc, counts in (("frames_in", "frames received by APDU service", self.frames_in),
                                  ("frames_out", "frames sent by APDU service", self.frames_out)):
            c = CounterMetricFamily(P + name, doc, labels=["type"])
            for k, v in sorted(counts.items()):
                c.add_metric([k], v)
            yield c
        for name, doc, counts, label in (
                ("sessions_closed", "sessions closed by reason", self.closed, "reason"),
                ("logins_refused", "logins refused by reason", self.refused, "reason"),
                ("requests", "requests by outcome", self.requests, "outcome")):
            c = CounterMetricFamily(P + name, doc, labels=[label])
            for k, v in sorted(counts.items()):
                c.add_metric([k], v)
            yield c
        for name, doc, v in (("bytes_in", "bytes received", self.bytes_in),
                             ("bytes_out", "bytes sent", self.bytes_out),
                             ("decode_errors", "damaged frames and undecodable APDUs", self.decode_errors),
                             ("unmatched_responses", "responses no request waited for (dropped)", self.unmatched),
                             ("readings", "readings stored durably", self.readings),
                             ("reports", "REPORT-Notifications acknowledged", self.reports)):
            yield CounterMetricFamily(P + name, doc, value=v)
        yield g(P + "readings_per_second", "readings stored per second since the last scrape",
                value=self.readings_per_s())
        yield g(P + "requests_in_flight", "requests sent and not yet answered", value=self.in_flight)
        yield g(P + "ingest_pending", "report batches waiting for their fsync", value=self.ingest_pending())
        yield g(P + "reading_paused", "1 while socket reads are paused for back-pressure", value=int(self.paused()))

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def start(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``host:port`` (0 = any free port) in a daemon thread; returns the port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self.server = server
        return server.server_address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

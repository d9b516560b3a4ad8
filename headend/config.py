"""The head-end's settings (``gridhead serve --config FILE``, a TOML file) with their defaults.

Example (every key optional)::

    listen_host = "127.0.0.1"        # terminals dial in here (public-network mode)
    listen_port = 7698
    data_dir = "data"                # archive.duckdb and the lake (storage.sql.data_dir layout)
    metrics_port = 9698              # Prometheus text on 127.0.0.1:<port>/metrics; 0 = any free port; absent = off
    heartbeat_multiple = 3           # missed heartbeat periods before a session is closed
    login_timeout_s = 30             # a connection that has not logged in by then is closed (slowloris)
    idle_timeout_s = 600             # a session without any frame for this long is closed (half-open)
    request_timeout_s = 30
    request_retries = 1
    max_in_flight = 4                # requests in flight per terminal
    global_in_flight = 2000          # requests in flight over the whole fleet
    requests_per_s = 5000            # token bucket over the fleet (0 = unlimited)
    ingest_queue_bound = 64          # report batches waiting for fsync before reads pause
    max_frame = 16385                # longest frame accepted (bytes)
    max_buffer = 65536               # bytes one terminal may send without a whole frame (garbage)
    max_frames_per_s = 200           # more frames than this in one second is a flood
    shard_index = 0                  # scale-out (headend.shard): this process owns the terminals whose
    shard_count = 1                  #   address hashes to shard_index of shard_count; others are refused
    meter_tz = "+08:00"              # the meters' and terminals' clocks (China Standard Time): every time
                                     #   sent to them (对时, LINK answers, 645 remote control's expiry) is
                                     #   now in this zone, never the host's; "+HH:MM" or e.g. "Asia/Shanghai"

    [[dial_out]]                     # terminals in server mode: the head-end connects to them
    host = "127.0.0.1"
    port = 9001
    address = "201605190907"         # its server address (SA): must be in the archive, as a dial-in's
    login = true                     # it sends a LINK login first (false: preset association, no LINK)
    associate = true                 # send CONNECT-Request (应用连接) before reading it

    [mqtt]                           # concentrators publishing through a broker (headend.transport_mqtt)
    host = "127.0.0.1"
    port = 1883
    prefix = "gridhead"              # topics <prefix>/<terminal address>/up | down | status
    client_id = "gridhead-headend"
    keepalive_s = 30
    reconnect_min_s = 0.5            # back-off after a lost broker: doubles up to reconnect_max_s, jittered
    reconnect_max_s = 30

    [[serial]]                       # an RS-485 bus wired to this host (headend.transport_serial)
    device = "/dev/ttyUSB0"
    baud = 2400                      # DL/T 645-2007 default; 698.45 meters commonly 9600
    parity = "E"                     # N | E | O
    timeout_s = 2                    # per request, after the last byte sent
    retries = 2
    meters = [{protocol = "645", address = "000012345678"}, {protocol = "698", address = "000000000001"}]

Two more tables of the same file belong to other modules and are taken out before these keys are
checked: ``[control]`` (the operators' control API, headend.control.ControlConfig) and ``[collect]``
(the collection scheduler and nightly lake compaction in the head-end, headend.collect.Schedule)::

    [collect]                        # present (or `serve --collect`): collect on schedule in this process
    tasks = "tasks.toml"             # [[task]] tables over the built-in tasks (relative to this file)
    first_day = 2026-06-01           # catch up from this day (default: the day the head-end starts)
    wait_online = "60s"              # the first pass waits this long at most for the terminals' logins
    compact = true                   # compact day D's partitions at D+1 00:00 + compact_offset,
    compact_offset = "4h"            #   with those of the compact_days - 1 days before (late data)
    compact_days = 7
"""

from __future__ import annotations

import dataclasses
import pathlib
import tomllib
from dataclasses import dataclass, field

from gridhead.protocols.errors import ConfigError


def read_toml(path) -> tuple[dict, str]:
    """A settings file's tables and how errors name it (``config <path>``); a missing or malformed file
    is a one-line ConfigError.  Other readers of the same file (headend.control's ``[control]``) use it."""
    p = pathlib.Path(path)
    try:
        return tomllib.loads(p.read_text()), f"config {p}"
    except OSError as exc:
        raise ConfigError(f"config {p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {p}: {exc}") from None


def check_keys(cls, raw: dict, where: str) -> None:
    """A settings table's keys against the dataclass ``cls``: one line naming the unknown ones and the known."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")


@dataclass(frozen=True, slots=True)
class DialOut:
    host: str
    port: int
    address: str
    reconnect_s: float = 5.0
    login: bool = True         # wait for its LINK login (a terminal in server mode on a public profile)
    associate: bool = True     # open an application association (CONNECT-Request) before any request


@dataclass(frozen=True, slots=True)
class MqttBroker:
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "gridhead"
    client_id: str = "gridhead-headend"
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


@dataclass(frozen=True, slots=True)
class SerialMeter:
    protocol: str              # "645" (DL/T 645-2007) or "698" (DL/T 698.45)
    address: str               # 12 digits, human order (the meter's comm address / 698 server address)


@dataclass(frozen=True, slots=True)
class SerialPort:
    device: str
    baud: int = 2400
    parity: str = "E"
    timeout_s: float = 2.0
    retries: int = 2
    meters: tuple = ()

    def __post_init__(self) -> None:
        if self.parity not in ("N", "E", "O"):
            raise ConfigError(f"config: [[serial]] {self.device}: parity {self.parity!r} is not N, E or O")
        if self.baud not in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200):
            raise ConfigError(f"config: [[serial]] {self.device}: baud {self.baud} is not a standard rate")
        if self.timeout_s <= 0 or self.retries < 0:
            raise ConfigError(f"config: [[serial]] {self.device}: timeout_s must be > 0, retries >= 0")
        for m in self.meters:
            if m.protocol not in ("645", "698"):
                raise ConfigError(f"config: [[serial]] {self.device}: meter {m.address}: protocol "
                                  f"{m.protocol!r} is not 645 or 698")
            if len(m.address) != 12 or not m.address.isdigit():
                raise ConfigError(f"config: [[serial]] {self.device}: meter address {m.address!r} is not 12 digits")


@dataclass(frozen=True, slots=True)
class Config:
    listen_host: str = "127.0.0.1"
    listen_port: int = 7698
    data_dir: str = "data"
    metrics_port: int | None = None
    heartbeat_multiple: int = 3
    login_timeout_s: float = 30.0
    idle_timeout_s: float = 600.0
    request_timeout_s: float = 30.0
    request_retries: int = 1
    max_in_flight: int = 4
    global_in_flight: int = 2000
    requests_per_s: float = 5000.0
    ingest_queue_bound: int = 64
    max_frame: int = 16385
    max_buffer: int = 65536
    max_frames_per_s: int = 200
    client_address: int = 0x10
    dial_out: tuple = field(default_factory=tuple)
    mqtt: MqttBroker | None = None
    serial: tuple = field(default_factory=tuple)
    shard_index: int = 0
    shard_count: int = 1
    meter_tz: str = "+08:00"

    def __post_init__(self) -> None:
        if self.shard_count < 1 or not 0 <= self.shard_index < self.shard_count:
            raise ConfigError(f"config: shard_index {self.shard_index} of shard_count {self.shard_count}: "
                              f"need 0 <= shard_index < shard_count")
        for name in ("heartbeat_multiple", "max_in_flight", "global_in_flight", "ingest_queue_bound", "max_frame",
                     "max_buffer", "max_frames_per_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"config: {name} must be >= 1, not {getattr(self, name)}")
        for name in ("login_timeout_s", "idle_timeout_s", "request_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config: {name} must be > 0")
        if self.request_retries < 0 or self.requests_per_s < 0:
            raise ConfigError("config: request_retries and requests_per_s must be >= 0")
        if not 0 <= self.listen_port <= 65535:
            raise ConfigError(f"config: listen_port {self.listen_port} is not a TCP port")
        from .terminal import meter_tz
        try:
            meter_tz(self.meter_tz)
        except ValueError as exc:
            raise ConfigError(f"config: {exc}") from None

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config") -> "Config":
        check_keys(cls, raw, where)
        known = {f.name: f for f in dataclasses.fields(cls)}
        kw = dict(raw)
        try:
            kw["dial_out"] = tuple(DialOut(**d) for d in raw.get("dial_out", ()))
        except TypeError as exc:
            raise ConfigError(f"{where}: [[dial_out]]: {exc}") from None
        try:
            if raw.get("mqtt") is not None and not isinstance(raw["mqtt"], MqttBroker):
                kw["mqtt"] = MqttBroker(**raw["mqtt"])
            kw["serial"] = tuple(
                s if isinstance(s, SerialPort) else
                SerialPort(**{**s, "meters": tuple(SerialMeter(**m) for m in s.get("meters", ()))})
                for s in raw.get("serial", ()))
        except TypeError as exc:
            raise ConfigError(f"{where}: [mqtt] / [[serial]]: {exc}") from None
        for name, value in kw.items():
            f = known[name]
            if name not in ("dial_out", "mqtt", "serial") and value is not None and f.type in ("int", "float", "str", "int | None"):
                want = {"int": int, "float": (int, float), "str": str, "int | None": int}[f.type]
                if not isinstance(value, want) or isinstance(value, bool):
                    raise ConfigError(f"{where}: {name} = {value!r} is not {f.type}")
        return cls(**kw)

    @classmethod
    def load(cls, path) -> "Config":
        raw, where = read_toml(path)
        return cls.from_dict(raw, where)

    def replace(self, **kw) -> "Config":
        return dataclasses.replace(self, **kw)


def parse_hostport(text: str, what: str):
    """``HOST:PORT`` or ``HOST:PORT-PORT`` (listen range) → (host, port, last or None)."""
    host, _, ports = text.rpartition(":")
    first, _, last = ports.partition("-")
    try:
        a, b = int(first), int(last) if last else None
    except ValueError:
        raise ConfigError(f"{what} {text!r}: HOST:PORT expected") from None
    if not host or not 0 < a < 65536 or (b is not None and not a <= b < 65536):
        raise ConfigError(f"{what} {text!r}: HOST:PORT expected (port 1-65535)")
    return host, a, b

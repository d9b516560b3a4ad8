"""The one exception hierarchy of gridhead.

Every error a user can provoke with bad input is a :class:`GridheadError`; the CLI turns it into one
line on stderr and a non-zero exit code.  Nothing else (ValueError, KeyError, IndexError...) may escape
a public entry point for bad input.

    GridheadError
    ├── ProtocolError                 (abstract: something about bytes on a wire)
    │   ├── LocalProtocolError        we were asked to build something the standard does not allow
    │   └── RemoteProtocolError       the peer sent bytes the standard does not allow
    │       └── FrameError            link layer: framing, length, address, control word
    │           └── ChecksumError     CS (DL/T 645) or HCS/FCS (DL/T 698.45) mismatch
    ├── DeviceError                   the device answered with its own error code (one class per code)
    ├── TransportError                sockets, serial ports, MQTT
    ├── StorageError                  WAL, lake, archive database
    ├── ArchiveError                  the archive (档案) says no: unknown meter, bad reference
    ├── BillingError                  tariffs, bill runs
    └── ConfigError                   a configuration or tariff file is wrong (file, key and reason)
"""

from __future__ import annotations


class GridheadError(Exception):
    """Root of every error gridhead raises on purpose."""

    exit_code = 1


class ProtocolError(GridheadError):
    """Bytes that the standard does not allow.  Abstract: raise a subclass."""

    exit_code = 2

    def __init__(self, msg: str, *args: object) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; raise LocalProtocolError or RemoteProtocolError")
        super().__init__(msg, *args)


class LocalProtocolError(ProtocolError):
    """We were asked to encode something the standard does not allow (bad address, value out of range)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the standard does not allow."""


class FrameError(RemoteProtocolError):
    """Link-layer framing is wrong: length, delimiters, address, control word."""

    used: int  # set by the framers' decode(): bytes of the buffer to drop to resynchronise


class ChecksumError(FrameError):
    """The frame's checksum does not match the bytes it covers."""

    def __init__(self, msg: str, *, received: int, computed: int) -> None:
        super().__init__(msg)
        self.received = received
        self.computed = computed


class DeviceError(GridheadError):
    """The device answered with an error code of its own.  Subclasses carry one code each."""

    code: int = 0
    name: str = "device error"

    def __init__(self, msg: str | None = None, *, code: int | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(msg or f"{self.name} (code {self.code:#04x})")


class TransportError(GridheadError):
    """A transport (TCP, serial, MQTT) failed."""


class StorageError(GridheadError):
    """The write-ahead log, the lake or the archive database failed."""


class ArchiveError(GridheadError):
    """The archive (档案) refuses: unknown meter, customer or reference."""


class BillingError(GridheadError):
    """A bill cannot be computed as asked."""


class ConfigError(GridheadError):
    """A configuration or tariff file is wrong; the message names file, key and reason.  Bad input: exit 2."""

    exit_code = 2

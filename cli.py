"""gridhead command line: a thin click group over the packages.

A user never sees a traceback for bad input: every :class:`GridheadError` becomes one line on stderr
and its exit code (2 for protocol errors and bad arguments, 1 otherwise).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys

import click

from protocols.errors import GridheadError, LocalProtocolError

EXIT_BAD_INPUT = 2


class GridheadGroup(click.Group):
    """Turns project errors into one line and an exit code, at the edge."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GridheadError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=GridheadGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gridhead")
def cli():
    """gridhead: meter data head-end (DL/T 645-2007, DL/T 698.45) and billing engine."""


def main():  # console_scripts entry point
    cli(prog_name="gridhead")


# --- frame ----------------------------------------------------------------------------------------
@cli.group()
def frame():
    """Decode and encode protocol frames."""


_HEX_SEP = re.compile(r"[\s:,\-]+")


def parse_hex_args(args) -> bytes:
    """Join HEX arguments (spaces, colons, commas allowed) into bytes; one-line error on bad hex."""
    out = bytearray()
    for n, arg in enumerate(args, 1):
        s = _HEX_SEP.sub("", arg)
        if s.lower().startswith("0x"):
            s = s[2:]
        if len(s) % 2 or not re.fullmatch(r"[0-9A-Fa-f]*", s):
            bad = next((c for c in s if c not in "0123456789abcdefABCDEF"), None)
            why = f"{bad!r} is not a hex digit" if bad else "odd number of hex digits"
            raise LocalProtocolError(f"argument {n} ({arg[:40]!r}): {why}")
        out += bytes.fromhex(s)
    return bytes(out)


@frame.command("decode")
@click.option("--protocol", type=click.Choice(["auto", "645"]), default="auto", show_default=True,
              help="Which protocol to look for.")
@click.option("--pretty/--compact", default=False, help="Indent the JSON.")
@click.argument("hex_args", metavar="HEX...", nargs=-1)
def frame_decode(protocol, pretty, hex_args):
    """Decode every frame found in HEX (arguments joined; stdin if none).

    Prints one JSON object per frame: protocol, address (human order), function, direction, data
    identifier, values with units, raw hex.  Noise between frames and frames split across arguments
    are fine.  A damaged frame exits 2 with one line saying what is wrong.
    """
    from protocols import dlt645

    if not hex_args:
        hex_args = [line for line in sys.stdin.read().split()]
    data = parse_hex_args(hex_args)
    framer = dlt645.Framer()
    framer.feed(data)
    found = 0
    indent = 2 if pretty else None
    while True:
        f = framer.next_frame()  # a damaged frame raises here: one line, exit 2
        if f is None:
            break
        msg = dlt645.decode_message(f)
        raw = f.to_bytes(b"")
        out = {"protocol": "DL/T 645-2007", "control": f"{f.control:02X}", **msg.to_json(), "raw": raw.hex(" ").upper()}
        click.echo(json.dumps(out, ensure_ascii=False, indent=indent))
        found += 1
    if not found:
        left = framer.pending
        if left:
            raise _Incomplete(f"no complete frame: {left} byte(s) from offset {len(data) - left} start a frame "
                              f"that is cut short")
        raise _Incomplete(f"no frame found in {len(data)} byte(s)")


class _Incomplete(GridheadError):
    exit_code = EXIT_BAD_INPUT


# --- frame encode 645 ... -----------------------------------------------------------------------
@frame.group("encode")
def frame_encode():
    """Build a frame from intent and print it as hex."""


@frame_encode.group("645")
@click.option("--no-preamble", is_flag=True, help="Leave out the FE FE FE FE wake-up bytes.")
@click.pass_context
def encode645(ctx, no_preamble):
    """DL/T 645-2007 requests (and meter responses, for simulators)."""
    ctx.obj = {"preamble": b"" if no_preamble else b"\xFE\xFE\xFE\xFE"}


def _emit(ctx, msg):
    click.echo(msg.to_bytes(ctx.obj["preamble"]).hex(" ").upper())


def _di(value: str) -> int:
    s = value.replace(" ", "")
    if len(s) != 8 or not re.fullmatch(r"[0-9A-Fa-f]{8}", s):
        from protocols.dlt645 import registry
        try:
            return registry.by_name(value).di
        except KeyError:
            raise LocalProtocolError(f"--di {value!r}: neither 8 hex digits (DI3..DI0) nor a known name") from None
    return int(s, 16)


def _when(value: str | None, default_now: bool = True) -> _dt.datetime:
    if value is None:
        return _dt.datetime.now().replace(microsecond=0)
    try:
        return _dt.datetime.fromisoformat(value)
    except ValueError:
        raise LocalProtocolError(f"time {value!r} is not ISO 8601 (e.g. 2026-11-22T10:30:00)") from None


_address = click.option("--address", "-a", required=True, help="Meter address, 12 digits, human order.")
_password = click.option("--password", default="02000000", show_default=True,
                         help="Password PA P2 P1 P0: level then code, 8 hex digits.")
_operator = click.option("--operator", default="00000000", show_default=True, help="Operator code, 8 hex digits.")


@encode645.command("read")
@_address
@click.option("--di", required=True, help="Data identifier DI3..DI0 (e.g. 00010000) or its name.")
@click.option("--count", type=int, help="Load-record block count N (DI3=06).")
@click.option("--start", help="Load-record start time, ISO 8601.")
@click.pass_context
def enc_read(ctx, address, di, count, start):
    """Read data (11H)."""
    from protocols.dlt645 import ReadRequest
    _emit(ctx, ReadRequest(address, _di(di), count, None if start is None else _digits(start, "YYMMDDhhmm")))


def _digits(value: str, fmt: str) -> str:
    from protocols.dlt645.formats import datetime_to_digits
    return datetime_to_digits(_when(value), fmt)


@encode645.command("read-follow-up")
@_address
@click.option("--di", required=True)
@click.option("--seq", type=click.IntRange(0, 255), required=True)
@click.pass_context
def enc_read_follow(ctx, address, di, seq):
    """Read follow-up data (12H)."""
    from protocols.dlt645 import ReadFollowUpRequest
    _emit(ctx, ReadFollowUpRequest(address, _di(di), seq))


@encode645.command("read-address")
@click.pass_context
def enc_read_address(ctx):
    """Read communication address (13H) with the AA wildcard."""
    from protocols.dlt645 import ReadAddressRequest
    _emit(ctx, ReadAddressRequest())


@encode645.command("write")
@_address
@click.option("--di", required=True)
@click.option("--value", "values", multiple=True, required=True,
              help="One per field of the data item, in order (decimal numbers, ISO times).")
@_password
@_operator
@click.pass_context
def enc_write(ctx, address, di, values, password, operator):
    """Write data (14H), the value encoded by the data item's format."""
    from protocols.dlt645 import WriteRequest, registry
    from protocols.dlt645.formats import DATETIME
    code = _di(di)
    item = registry.lookup(code)
    if item is None:
        raise LocalProtocolError(f"unknown data identifier {code:08X}")
    conv = [(_when(v) if f.kind == DATETIME and not v.isdigit() else v) for f, v in zip(item.fields, values)]
    _emit(ctx, WriteRequest.of(address, code, conv, password, operator))


@encode645.command("write-address")
@click.option("--new-address", required=True)
@click.pass_context
def enc_write_address(ctx, new_address):
    """Write communication address (15H), sent to the AA wildcard."""
    from protocols.dlt645 import WriteAddressRequest
    _emit(ctx, WriteAddressRequest(new_address))


@encode645.command("freeze")
@_address
@click.option("--when", default="99999999", show_default=True, help="MMDDhhmm, 99 = any; 99999999 = now.")
@click.pass_context
def enc_freeze(ctx, address, when):
    """Freeze command (16H)."""
    from protocols.dlt645 import FreezeRequest
    _emit(ctx, FreezeRequest(address, when))


@encode645.command("baud")
@_address
@click.option("--baud", type=int, required=True)
@click.pass_context
def enc_baud(ctx, address, baud):
    """Change baud rate (17H)."""
    from protocols.dlt645 import ChangeBaudRequest
    _emit(ctx, ChangeBaudRequest(address, baud))


@encode645.command("password")
@_address
@click.option("--old", required=True)
@click.option("--new", required=True)
@click.pass_context
def enc_password(ctx, address, old, new):
    """Change password (18H)."""
    from protocols.dlt645 import ChangePasswordRequest
    _emit(ctx, ChangePasswordRequest(address, old, new))


def _reset_cmd(name, cls_name, doc):
    @encode645.command(name, help=doc)
    @_address
    @_password
    @_operator
    @click.pass_context
    def _cmd(ctx, address, password, operator):
        from protocols import dlt645
        _emit(ctx, getattr(dlt645, cls_name)(address, password=password, operator=operator))
    return _cmd


_reset_cmd("demand-reset", "DemandResetRequest", "Maximum demand reset (19H).")
_reset_cmd("meter-reset", "MeterResetRequest", "Meter reset (1AH).")


@encode645.command("event-reset")
@_address
@click.option("--event-di", default="FFFFFFFF", show_default=True, help="FFFFFFFF = all events.")
@_password
@_operator
@click.pass_context
def enc_event_reset(ctx, address, event_di, password, operator):
    """Event reset (1BH)."""
    from protocols.dlt645 import EventResetRequest
    _emit(ctx, EventResetRequest(address, _di(event_di), password, operator))


@encode645.command("time-sync")
@click.option("--address", "-a", default="999999999999", show_default=True)
@click.option("--time", "when", help="ISO 8601 local time; default now.")
@click.pass_context
def enc_time_sync(ctx, address, when):
    """Broadcast time sync (08H)."""
    from protocols.dlt645 import BroadcastTimeSync
    _emit(ctx, BroadcastTimeSync.at(_when(when), address))


_COMMANDS = {"trip": 0x1A, "close-allowed": 0x1B, "close-direct": 0x1C, "alarm": 0x2A,
             "alarm-release": 0x2B, "protect-on": 0x3A, "protect-off": 0x3B}


@encode645.command("remote-control")
@_address
@click.option("--command", "command", type=click.Choice(list(_COMMANDS)), required=True)
@click.option("--valid-until", help="ISO 8601; default now + --valid-minutes.")
@click.option("--valid-minutes", type=click.IntRange(1, 24 * 60), default=10, show_default=True)
@_password
@_operator
@click.pass_context
def enc_remote(ctx, address, command, valid_until, valid_minutes, password, operator):
    """Remote control (1CH): trip 拉闸, close 合闸, alarm, protect 保电."""
    from protocols.dlt645 import RemoteControlRequest
    until = _when(valid_until) if valid_until else _when(None) + _dt.timedelta(minutes=valid_minutes)
    _emit(ctx, RemoteControlRequest.build(address, _COMMANDS[command], until, password, operator))


@encode645.command("terminal-output")
@_address
@click.option("--output", type=click.IntRange(0, 2), required=True,
              help="0 clock second pulse, 1 demand period, 2 time switch.")
@click.pass_context
def enc_terminal_output(ctx, address, output):
    """Multi-function terminal output control (1DH)."""
    from protocols.dlt645 import TerminalOutputRequest
    _emit(ctx, TerminalOutputRequest(address, output))


if __name__ == "__main__":
    main()

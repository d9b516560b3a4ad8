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

from gridhead.protocols.errors import GridheadError, LocalProtocolError

EXIT_BAD_INPUT = 2


# --- shared option types (one spelling and one check per setting: README "Every command") ------------------
class _Month(click.ParamType):
    """A month ``YYYY-MM`` (billing period, line-loss month), checked here so a bad one exits 2 before
    anything runs; the command gets the string back."""

    name = "YYYY-MM"

    def convert(self, value, param, ctx):
        m = re.fullmatch(r"(\d{4})-(\d{2})", str(value).strip())
        if not m or not 1 <= int(m.group(2)) <= 12:
            self.fail(f"{value!r} is not a month YYYY-MM (e.g. 2026-06)", param, ctx)
        return m.group(0)


class _Day(click.ParamType):
    """A calendar day ``YYYY-MM-DD`` as a datetime (what click.DateTime gave); a day that does not exist
    says so (2026-02-30: February 2026 has 28 days) instead of "does not match the format"."""

    name = "YYYY-MM-DD"

    def convert(self, value, param, ctx):
        import calendar
        if isinstance(value, _dt.datetime):
            return value
        text = str(value).strip()
        m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", text)
        if not m:
            self.fail(f"{value!r} is not a date YYYY-MM-DD (e.g. 2026-07-15)", param, ctx)
        try:
            return _dt.datetime.combine(_dt.date.fromisoformat(text), _dt.time())
        except ValueError:
            y, mo = int(m.group(1)), int(m.group(2))
            if not 1 <= mo <= 12:
                self.fail(f"{text}: there is no month {mo}", param, ctx)
            self.fail(f"{text} does not exist: {calendar.month_name[mo]} {y} has {calendar.monthrange(y, mo)[1]} "
                      f"days", param, ctx)


_MONTH = _Month()
_DAY = _Day()


class _Aliased(click.Option):
    """An option whose names after the first are old spellings: they keep working, --help shows only
    the first (e.g. --api, old --control-url)."""

    def get_help_record(self, ctx):
        opts, self.opts = self.opts, self.opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts

    def get_error_hint(self, ctx):
        return f"'{self.opts[0]}'"


def _check_url(ctx, param, value):
    """--api: an http(s) URL with a host, else one line (exit 2) instead of urllib's traceback."""
    if value is None:
        return value
    from urllib.parse import urlsplit
    try:
        u = urlsplit(value)
        ok = u.scheme in ("http", "https") and bool(u.hostname) and (u.port is None or u.port > 0)
    except ValueError:
        ok = False
    if not ok:
        raise click.BadParameter(f"{value!r} is not an http:// or https:// URL, e.g. http://127.0.0.1:7699",
                                 ctx, param)
    return value


class GridheadGroup(click.Group):
    """Turns project errors into one line and an exit code, at the edge."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GridheadError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:
            # one line too for a wrong option or a missing argument, with the command to ask for help
            where = exc.ctx.command_path if exc.ctx else ctx.command_path
            click.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
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


@frame.command("decode")
@click.option("--protocol", type=click.Choice(["auto", "645", "698"]), default="auto", show_default=True,
              help="Which protocol to look for (auto: DL/T 645 frames if there are any, else DL/T 698.45).")
@click.option("--pretty/--compact", default=False, help="Indent the JSON.")
@click.argument("hex_args", metavar="HEX...", nargs=-1)
def frame_decode(protocol, pretty, hex_args):
    """Decode every frame found in HEX (arguments joined; stdin if none).

    Prints one JSON object per frame.  DL/T 645: address (human order), function, direction, data
    identifier, values with units.  DL/T 698.45: server and client address, control word, APDU type
    (e.g. GET-Response-Normal), PIID, the data with OADs named and values scaled (exact decimal string,
    raw integer and scaler).  Noise between frames and frames split across arguments are fine.  A
    damaged frame exits 2 with one line saying what is wrong.
    """
    from gridhead.protocols.describe import decode_frames, parse_hex
    for out in decode_frames(parse_hex(hex_args or sys.stdin.read().split()), protocol):
        click.echo(json.dumps(out, ensure_ascii=False, indent=2 if pretty else None))


# --- frame encode 645 ... -----------------------------------------------------------------------
@frame.group("encode")
@click.option("--meter-tz", default="+08:00", show_default=True, envvar="GRIDHEAD_METER_TZ",
              help="The meters' time zone (the head-end's meter_tz; China Standard Time): a time given "
                   "with an offset, and the default now, are put on the meters' clock in it — never the "
                   "host's zone.")
@click.pass_context
def frame_encode(ctx, meter_tz):
    """Build a frame from intent and print it as hex."""
    from gridhead.headend.terminal import meter_tz as _tz
    try:
        ctx.meta["meter_tz"] = _tz(meter_tz)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--meter-tz") from None


@frame_encode.group("698")
@click.option("--address", "-a", required=True, help="Server address SA, hex digits in human order.")
@click.option("--client", type=click.IntRange(0, 255), default=0, show_default=True, help="Client address CA.")
@click.option("--piid", type=click.IntRange(0, 255), default=1, show_default=True, help="PIID (service number).")
@click.pass_context
def encode698(ctx, address, client, piid):
    """DL/T 698.45 requests of the master (C=43H) and its LINK-Response (C=01H)."""
    ctx.obj = {"address": address, "client": client, "piid": piid}


def _emit698(ctx, apdu, control: int = 0x43):
    from gridhead.protocols.dlt698 import frame as F
    o = ctx.obj
    click.echo(F.Frame(F.ServerAddress(o["address"]), o["client"], control, apdu.to_bytes()).to_bytes().hex(" ").upper())


def _oads698(values) -> list[int]:
    from gridhead.protocols.dlt698.apdu import parse_oad
    return [parse_oad(v) for vs in values for v in vs.split(",") if v]


@encode698.command("get")
@click.option("--oad", "oads", multiple=True, required=True, help="OAD, 8 hex digits (repeat for a list).")
@click.pass_context
def enc698_get(ctx, oads):
    """GET-Request-Normal (one OAD) or -NormalList (several)."""
    from gridhead.protocols.dlt698 import apdu as A
    o = _oads698(oads)
    _emit698(ctx, A.get(o[0], ctx.obj["piid"]) if len(o) == 1 else A.get_list(o, ctx.obj["piid"]))


@encode698.command("get-record")
@click.option("--oad", required=True, help="Record OAD, e.g. 50040200 (day freeze).")
@click.option("--last", type=click.IntRange(1, 255), default=1, show_default=True,
              help="RSD selector 9: the n-th last record.")
@click.option("--columns", default="", help="RCSD: OADs separated by commas (none: all columns).")
@click.pass_context
def enc698_get_record(ctx, oad, last, columns):
    """GET-Request-Record with selector 9 (上第n次记录)."""
    from gridhead.protocols.dlt698 import apdu as A
    _emit698(ctx, A.get_record(oad, (9, last), tuple(_oads698([columns])), ctx.obj["piid"]))


@encode698.command("action")
@click.argument("command", type=click.Choice(["trip", "close", "protect-on", "protect-off"]))
@click.option("--relay", default="F2050201", show_default=True, help="Relay output OAD (继电器).")
@click.option("--alarm-delay", type=click.IntRange(0, 255), default=0, show_default=True,
              help="trip: alarm delay, minutes (告警延时).")
@click.option("--duration", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="trip: power-cut time, minutes, 0 = until closed (限电时间).")
@click.pass_context
def enc698_action(ctx, command, relay, alarm_delay, duration):
    """ACTION-Request on 8000 remote control (129 trip, 130 close) or 8001 protection (127 on, 128 off)."""
    from gridhead.protocols.dlt698 import apdu as A
    from gridhead.protocols.dlt698 import control as control698
    r = A.parse_oad(relay)
    omd, p = (control698.trip(r, alarm_delay, duration) if command == "trip" else control698.close(r)
              if command == "close" else control698.protect(command == "protect-on"))
    _emit698(ctx, A.action(omd, p, ctx.obj["piid"]))


@encode698.command("link-response")
@click.option("--request-time", required=True, help="The LINK-Request's time, ISO 8601.")
@click.option("--receive-time", help="When it was received (default now).")
@click.option("--untrusted-clock", is_flag=True, help="Clear result bit 7 (clock trusted).")
@click.pass_context
def enc698_link_response(ctx, request_time, receive_time, untrusted_clock):
    """LINK-Response (C=01H) to a terminal's login or heartbeat."""
    from gridhead.protocols.dlt698 import apdu as A
    from gridhead.protocols.dlt698.axdr import DateTime

    def dt(v):
        t = _when(v)
        return DateTime(t.year, t.month, t.day, t.isoweekday() % 7, t.hour, t.minute, t.second,
                        t.microsecond // 1000)

    now = dt(receive_time)
    _emit698(ctx, A.LinkResponse(ctx.obj["piid"], 0 if untrusted_clock else 0x80, dt(request_time), now, now),
             control=0x01)


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
        from gridhead.protocols.dlt645 import registry
        try:
            return registry.by_name(value).di
        except KeyError:
            raise LocalProtocolError(f"--di {value!r}: neither 8 hex digits (DI3..DI0) nor a known name") from None
    return int(s, 16)


def _when(value: str | None, default_now: bool = True) -> _dt.datetime:
    """A time for a meter, on the meters' clock (``--meter-tz``): now by default, an ISO 8601 time with an
    offset converted, one without taken as meter time (headend.terminal's clock, as the head-end's)."""
    from gridhead.headend.terminal import local_now, meter_time
    ctx = click.get_current_context(silent=True)
    tz = ctx.meta.get("meter_tz") if ctx is not None else None
    if value is None:
        return local_now(tz).replace(microsecond=0)
    try:
        return meter_time(_dt.datetime.fromisoformat(value), tz)
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
    from gridhead.protocols.dlt645 import ReadRequest
    _emit(ctx, ReadRequest(address, _di(di), count, None if start is None else _digits(start, "YYMMDDhhmm")))


def _digits(value: str, fmt: str) -> str:
    from gridhead.protocols.dlt645.formats import datetime_to_digits
    return datetime_to_digits(_when(value), fmt)


@encode645.command("read-follow-up")
@_address
@click.option("--di", required=True)
@click.option("--seq", type=click.IntRange(0, 255), required=True)
@click.pass_context
def enc_read_follow(ctx, address, di, seq):
    """Read follow-up data (12H)."""
    from gridhead.protocols.dlt645 import ReadFollowUpRequest
    _emit(ctx, ReadFollowUpRequest(address, _di(di), seq))


@encode645.command("read-address")
@click.pass_context
def enc_read_address(ctx):
    """Read communication address (13H) with the AA wildcard."""
    from gridhead.protocols.dlt645 import ReadAddressRequest
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
    from gridhead.protocols.dlt645 import WriteRequest, registry
    from gridhead.protocols.dlt645.formats import DATETIME
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
    from gridhead.protocols.dlt645 import WriteAddressRequest
    _emit(ctx, WriteAddressRequest(new_address))


@encode645.command("freeze")
@_address
@click.option("--when", default="99999999", show_default=True, help="MMDDhhmm, 99 = any; 99999999 = now.")
@click.pass_context
def enc_freeze(ctx, address, when):
    """Freeze command (16H)."""
    from gridhead.protocols.dlt645 import FreezeRequest
    _emit(ctx, FreezeRequest(address, when))


@encode645.command("baud")
@_address
@click.option("--baud", type=int, required=True)
@click.pass_context
def enc_baud(ctx, address, baud):
    """Change baud rate (17H)."""
    from gridhead.protocols.dlt645 import ChangeBaudRequest
    _emit(ctx, ChangeBaudRequest(address, baud))


@encode645.command("password")
@_address
@click.option("--old", required=True)
@click.option("--new", required=True)
@click.pass_context
def enc_password(ctx, address, old, new):
    """Change password (18H)."""
    from gridhead.protocols.dlt645 import ChangePasswordRequest
    _emit(ctx, ChangePasswordRequest(address, old, new))


def _reset_cmd(name, cls_name, doc):
    @encode645.command(name, help=doc)
    @_address
    @_password
    @_operator
    @click.pass_context
    def _cmd(ctx, address, password, operator):
        from gridhead.protocols import dlt645
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
    from gridhead.protocols.dlt645 import EventResetRequest
    _emit(ctx, EventResetRequest(address, _di(event_di), password, operator))


@encode645.command("time-sync")
@click.option("--address", "-a", default="999999999999", show_default=True)
@click.option("--time", "when", help="ISO 8601, the meters' local time (or with an offset); default now.")
@click.pass_context
def enc_time_sync(ctx, address, when):
    """Broadcast time sync (08H)."""
    from gridhead.protocols.dlt645 import BroadcastTimeSync
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
    from gridhead.protocols.dlt645 import RemoteControlRequest
    until = _when(valid_until) if valid_until else _when(None) + _dt.timedelta(minutes=valid_minutes)
    _emit(ctx, RemoteControlRequest.build(address, _COMMANDS[command], until, password, operator))


@encode645.command("terminal-output")
@_address
@click.option("--output", type=click.IntRange(0, 2), required=True,
              help="0 clock second pulse, 1 demand period, 2 time switch.")
@click.pass_context
def enc_terminal_output(ctx, address, output):
    """Multi-function terminal output control (1DH)."""
    from gridhead.protocols.dlt645 import TerminalOutputRequest
    _emit(ctx, TerminalOutputRequest(address, output))


# === gen / archive / sql (storage: the archive, the fleet generator, SQL over the lake) ===========
# Every command of these groups takes --data DIR (env GRIDHEAD_DATA, default ./gridhead-data): the
# directory holding archive.duckdb and lake/ (storage.sql.data_dir).
# ``need``: what must already be there — "archive" (DIR/archive.duckdb, most commands), "dir" (the directory:
# sql, lake, token), None (gen and archive import make them); else one line and exit 2, before any work.
class _NoData(GridheadError):
    exit_code = EXIT_BAD_INPUT


def _check_data(value, need="archive"):
    if need is None:
        return value
    from gridhead.storage import sql as _sql
    d = _sql.data_dir(value)
    if not d.is_dir():
        raise _NoData(f"no data directory at {d} (give --data DIR or set GRIDHEAD_DATA)")
    if need == "archive" and not _sql.archive_path(value).is_file():
        raise _NoData(f"no archive at {_sql.archive_path(value)} (import one: gridhead archive import "
                      f"FILE... --data {d})")
    return value


def _data_option(f=None, *, need="archive"):
    def deco(f):
        return click.option("--data", "data", envvar="GRIDHEAD_DATA", type=click.Path(file_okay=False),
                            default=None, callback=lambda ctx, p, v: _check_data(v, need),
                            help="Data directory with archive.duckdb and lake/ "
                                 "[env GRIDHEAD_DATA; default ./gridhead-data].")(f)
    return deco if f is None else deco(f)


def _echo_aligned(rows: list[list[str]], align: str = "") -> None:
    """Print ``rows`` (the header first) as columns two spaces apart, however wide a value gets; ``align``
    per column: "l" left (text), "r" right (figures, and every column past the string's end)."""
    import unicodedata

    def width(v: str) -> int:          # on a terminal a CJK character (类别, 违约金) takes two columns
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in v)

    widths = [max(width(r[k]) for r in rows) for k in range(len(rows[0]))]
    for r in rows:
        pads = [" " * (w - width(v)) for v, w in zip(r, widths)]
        click.echo("  ".join(v + pad if align[k:k + 1] == "l" else pad + v
                             for k, (v, pad) in enumerate(zip(r, pads))).rstrip())


def _progress(total, desc):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="step", disable=None, leave=False, file=sys.stderr)


@cli.command("gen")
@click.option("--customers", type=click.IntRange(1), required=True, help="Number of customers.")
@click.option("--days", type=click.IntRange(1), required=True, help="Days of readings (days + 1 freezes).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--start", type=_DAY, default="2026-06-01", show_default=True,
              help="First freeze date (local).")
@click.option("--curve-fraction", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Share of customers with 15-minute load curves.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output directory [default: the data directory].")
@click.option("--import-archive", is_flag=True, help="Also import the archive files into the data directory.")
@_data_option(need=None)
def gen_cmd(customers, days, seed, start, curve_fraction, out, import_archive, data):
    """Generate a synthetic fleet: archive files, readings in the lake, anomalies with their ground truth.

    Writes OUT/archive-files/*.csv (for `gridhead archive import`), OUT/lake/ and OUT/ground_truth/.
    """
    import time as _time

    from gridhead.storage import generator, sql as _sql
    out = out or str(_sql.data_dir(data))
    bar = _progress(days + 1, "days")
    t0 = _time.perf_counter()
    try:
        summary = generator.generate(out, customers, days, seed, start=start.date(), curve_fraction=curve_fraction,
                                     progress=lambda n: bar.update(n - bar.n))
    finally:
        bar.close()
    secs = _time.perf_counter() - t0
    rows = summary["rows"]
    click.echo(f"{customers} customers, {summary['meters']} meters, {summary['areas']} areas, {days} days: "
               f"{rows['daily']} daily, {rows['monthly']} monthly, {rows['interval']} curve readings, "
               f"{rows['events']} events in {secs:.1f} s ({customers / secs:,.0f} customers/s) -> {out}")
    click.echo("injected: " + ", ".join(f"{k} {v}" for k, v in summary["injected"].items()))
    if import_archive:
        import pathlib
        _archive_import(data, sorted(str(p) for p in (pathlib.Path(out) / "archive-files").glob("*.csv")))


@cli.group("archive")
def archive_grp():
    """The archive (档案): customers, metering points, meters, concentrators, areas, feeders."""


def _archive_import(data, files):
    from gridhead.storage import archive, sql as _sql
    path = _sql.archive_path(data)
    bar = _progress(2 * len(files), "import")
    try:
        done = archive.import_into(path, files, progress=lambda _step: bar.update(1))
    except archive.ImportRefused as exc:
        bar.close()
        for line in exc.errors:
            click.echo(line, err=True)
        click.echo(f"error: {exc.summary}; nothing was imported", err=True)
        sys.exit(exc.exit_code)
    finally:
        bar.close()
    click.echo("imported " + ", ".join(f"{t} {n}" for t, n in done.items()) + f" into {path}")


@archive_grp.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@_data_option(need=None)
def archive_import(files, data):
    """Import FILE... (CSV or Parquet, one per table: customers.csv, meters.parquet ...).

    Everything is checked first — types, keys, references across the files and against the archive,
    ranges, overlapping periods; one bad row fails the whole import with file, row, column and reason,
    and nothing is written.
    """
    _archive_import(data, files)


@archive_grp.command("export")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory for one file per table.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@_data_option
def archive_export(out, fmt, data):
    """Write every archive table to OUT (files that `archive import` accepts)."""
    from gridhead.storage import archive, sql as _sql
    with archive.Archive(_sql.archive_path(data), read_only=True) as a:
        paths = a.export(out, fmt)
    click.echo(f"exported {len(paths)} tables to {out}")


@archive_grp.command("info")
@_data_option
def archive_info(data):
    """Rows per archive table."""
    from gridhead.storage import archive, sql as _sql
    with archive.Archive(_sql.archive_path(data), read_only=True) as a:
        for t, n in a.counts().items():
            click.echo(f"{t:<20}{n:>12}")


@cli.command("sql")
@click.argument("query", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines (the same as --format json).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header (the same as --format csv).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the result to FILE.")
@click.option("--shell", is_flag=True, help="The interactive shell (also without QUERY): statements end with "
                                           "';', dot commands .tables .schema .mode .help .quit.")
@click.option("--print-views", is_flag=True, help="Print the CREATE VIEW script for plain duckdb and exit.")
@_data_option(need="dir")
def sql_cmd(query, fmt, as_json, as_csv, out, shell, print_views, data):
    """Run QUERY over the lake and the archive, or an interactive shell (--shell, or no QUERY).

    Views: readings, daily_frozen, monthly_settlement, load_curve, events, quarantine and the archive
    tables.  `gridhead sql --print-views > views.sql` writes them for a duckdb CLI (`duckdb -init
    views.sql`; the CLI is a separate download from duckdb.org — the duckdb Python package has none).
    """
    from gridhead.storage import sql as _sql
    if as_json or as_csv:
        if fmt != "table" or (as_json and as_csv):
            raise click.UsageError("--json, --csv and --format: choose one")
        fmt = "json" if as_json else "csv"
    if shell and query is not None:
        raise click.UsageError("--shell reads its statements from the terminal: leave out QUERY")
    if print_views:
        click.echo(_sql.views_script(data), nl=False)
        return
    with _sql.Session(data) as s:
        if query is None:
            from gridhead.storage import shell
            if fmt not in shell.MODES:
                raise click.UsageError(f"the shell prints {', '.join(shell.MODES)}; --format {fmt} needs QUERY "
                                       f"and --out FILE")
            shell.run(shell.Shell(s, fmt, out=click.echo,
                                  err=lambda text: click.echo(text, err=True)))
            return
        if fmt == "table" and out is None:
            click.echo(s.render_table(query))
            return
        tbl = s.query(query)
        if tbl is not None:
            _sql.write_result(tbl, "csv" if fmt == "table" else fmt, out)


# === end gen / archive / sql =====================================================================


# === lake (storage.lake: compaction and what is where) =============================================
@cli.group("lake")
def lake_grp():
    """The readings lake (DIR/lake): compact small files, show files, rows and bytes."""


@lake_grp.command("compact")
@click.option("--table", "tables", type=click.Choice(["readings", "events", "quarantine", "all"]),
              default="all", show_default=True, help="Which table to compact.")
@click.option("--min-files", type=click.IntRange(2), default=2, show_default=True,
              help="Compact a partition holding at least this many files.")
@_data_option(need="dir")
def lake_compact(tables, min_files, data):
    """Merge each partition's files into one (deduplicated, sorted), atomically per partition.

    A WAL left by a stopped ingest writer is replayed first.  Single-file partitions of daily and
    monthly readings get their materialised pivot (what daily_frozen reads).  Queries already running
    in `gridhead sql` fail with "run it again" if their partition is swapped; they never come back short.
    """
    import time as _time

    from gridhead.storage import sql as _sql, wal
    root = _sql.lake_root(data)
    if not root.is_dir():
        raise _NoData(f"lake compact: no lake at {root}")
    for table in (("readings", "events", "quarantine") if tables == "all" else (tables,)):
        t0 = _time.perf_counter()
        done, removed = wal.compact(root, table, min_files=min_files)
        click.echo(f"{table}: {done} partitions compacted, {removed} files removed in "
                   f"{_time.perf_counter() - t0:.1f} s")


@lake_grp.command("info")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per table and kind.")
@_data_option(need="dir")
def lake_info(as_json, data):
    """Partitions, files, rows and bytes per table and reading kind (rows from the Parquet footers)."""
    import json as _json

    from gridhead.storage import lake, sql as _sql
    rows = lake.info(_sql.lake_root(data))
    if as_json:
        for r in rows:
            click.echo(_json.dumps(r))
        return
    cells = [["table", "kind", "partitions", "files", "rows", "bytes", "B/row", "pivots", "pivot B/row"]]
    for r in rows:
        per = lambda b: f"{b / r['rows']:.2f}" if r["rows"] else "-"  # noqa: E731
        cells.append([r["table"], r["kind"] or "", str(r["partitions"]), str(r["files"]), f"{r['rows']:,}",
                      f"{r['bytes']:,}", per(r["bytes"]), str(r["pivots"]), per(r["pivot_bytes"])])
    _echo_aligned(cells, "ll")
# === end lake ======================================================================================


# === bill (the bill run 电费核算, review 核算审核, show; billing_core.jobs.bills + billing_core.run) ============
# --data DIR as in the storage commands (_data_option): bills live in DIR/bills/ (billing_core.jobs.bills)
@cli.group("bill")
def bill_grp():
    """Bills: the monthly run, review of held bills, one bill as the customer reads it."""


@bill_grp.command("run")
@click.option("--period", type=_MONTH, required=True,
              help="Billing month YYYY-MM (settlement readings of its 1st and the next 1st).")
@click.option("--tariffs", "tariffs_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Directory of tariff TOML files [default: billing_core/tariffs].")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Run on this Dask scheduler, one task per lake bucket (billing_core.jobs.dist); same bills.")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Run on a local Dask cluster of N worker processes on 127.0.0.1 (billing_core.jobs.dist).")
@_data_option
def bill_run(period, tariffs_dir, as_json, data, scheduler=None, workers=None):
    """Compute every bill of PERIOD and publish bills/period=PERIOD/ atomically (re-runs give the same bills).

    Bills failing review (zero, jump, negative, TOU mismatch, missing/estimated reading, rollover, reverse
    energy) are held with their reasons; `gridhead bill review` lists and releases them.
    """
    from tqdm import tqdm

    from gridhead.billing_core.jobs import bills
    bar = tqdm(total=4, desc=f"bill run {period}", unit="step", disable=None, leave=False, file=sys.stderr)

    def tick(step: str) -> None:       # read, price, write, publish; "chunk k/n" (large runs), "task NN" (Dask)
        if step.startswith("chunk"):
            bar.total = 4 + int(step.split("/")[1])
        if step.startswith("task"):
            bar.set_postfix_str(f"{step} done")
        else:
            bar.update(1)

    try:
        if scheduler or workers:
            from gridhead.billing_core.jobs import dist
            with dist.client(scheduler, workers) as client:
                s = dist.run(data, period, client, tariffs_dir, progress=tick)
        else:
            s = bills.run(data, period, tariffs_dir, progress=tick)
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps(s, ensure_ascii=False))
        return
    click.echo(f"{period}: {s['bills']} bills, {s['issued']} issued, {s['held']} held, "
               f"total {bills.yuan(s['total_fen'])} yuan, {s['energy_kwh_x100'] // 100} kWh "
               f"in {s['seconds']['total']:.1f} s")
    for reason, n in s["held_by_reason"].items():
        click.echo(f"  held: {reason}: {n}")


@bill_grp.command("review")
@click.option("--period", type=_MONTH, default=None, help="Only this period (YYYY-MM).")
@click.option("--release", "release_ids", multiple=True, type=int, metavar="BILL_ID",
              help="Release these held bills (repeat, or list them as arguments).")
@click.argument("bill_ids", nargs=-1, type=int)
@click.option("--by", default=None, help="Who releases (required with --release).")
@click.option("--note", default="", help="Why the bill may be issued.")
@click.option("--json", "as_json", is_flag=True, help="JSON: one object per line.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header.")
@_data_option
def bill_review(period, release_ids, bill_ids, by, note, as_json, as_csv, data):
    """List held bills with their reasons, or release them: --release BILL_ID... --by NAME --note TEXT."""
    from gridhead.storage import sql as _sql
    from gridhead.billing_core.jobs import bills
    ids = list(release_ids) + list(bill_ids)
    if bill_ids and not release_ids:
        raise click.UsageError("bill ids given without --release")
    if ids and not by:
        raise click.UsageError("--release needs --by NAME (who releases the bills)")
    if ids:
        r = bills.release(data, ids, by or "", note)
        if as_json:
            click.echo(json.dumps(r))
        else:
            click.echo(f"released {len(r['released'])}" + (f", already released {len(r['already'])}" if r["already"] else ""))
        return
    tbl = bills.held(data, period)
    if as_json or as_csv:
        _sql.write_result(tbl, "json" if as_json else "csv", None)
        return
    _echo_aligned([["bill_id", "customer_no", "kWh", "yuan", "reasons"]] + [
        [str(r["bill_id"]), r["customer_no"], f"{r['e_total_kwh_x100'] / 100:.2f}", bills.yuan(r["total_fen"]),
         f"{r['reasons_zh']} ({r['reasons']})"] for r in tbl.to_pylist()], "llrrl")
    click.echo(f"{tbl.num_rows} held", err=True)


@bill_grp.command("show")
@click.argument("customer")
@click.option("--period", type=_MONTH, required=True, help="Billing month YYYY-MM.")
@click.option("--json", "as_json", is_flag=True)
@_data_option
def bill_show(customer, period, as_json, data):
    """Print the bill of CUSTOMER (户号 or customer id) for PERIOD with its line items."""
    from gridhead.billing_core.jobs import bills
    b = bills.show(data, customer, period)
    if as_json:
        click.echo(json.dumps(b, ensure_ascii=False, default=str))
        return
    click.echo(bills.render(b))
# === end bill ======================================================================================


# === pay / ledger / prepay (accounts 电费收缴及账务 and prepayment 预付费; billing_core.jobs.ledger, billing_core.jobs.prepay) ====
# --data DIR as in the storage commands.  Amounts on the command line are yuan with at most 2 decimals.
# Commands to meters go through the running head-end's control API: --api / GRIDHEAD_API and
# --token / GRIDHEAD_TOKEN (an operator token); without them they wait in the outbox (`gridhead prepay status`).
def _fen_arg(text: str, signed: bool = False) -> int:
    from gridhead.billing_core.ledger import yuan_to_fen
    neg = signed and text.startswith("-")
    fen = yuan_to_fen(text[1:] if neg else text)
    if fen is None:
        raise click.BadParameter(f"{text!r} is not an amount in yuan with at most 2 decimals")
    return -fen if neg else fen


def _policy_options(f):
    """The accounts' configurable rules (billing_core.ledger.Policy); defaults from there."""
    from gridhead.billing_core.ledger import Policy
    d = Policy()
    f = click.option("--late-fee-min-yuan", envvar="GRIDHEAD_LATE_FEE_MIN_YUAN", default=f"{d.late_fee_min_fen / 100:.2f}",
                     show_default=True, help="违约金 minimum per overdue bill [env GRIDHEAD_LATE_FEE_MIN_YUAN].")(f)
    return click.option("--max-payment-yuan", envvar="GRIDHEAD_MAX_PAYMENT_YUAN",
                        default=f"{d.max_payment_fen / 100:.2f}", show_default=True,
                        help="The largest single payment taken [env GRIDHEAD_MAX_PAYMENT_YUAN].")(f)


def _policy(late_fee_min_yuan, max_payment_yuan):
    from gridhead.billing_core.ledger import Policy
    return Policy(late_fee_min_fen=_fen_arg(late_fee_min_yuan), max_payment_fen=_fen_arg(max_payment_yuan))


def _read_token(ctx, _param, value):
    """The API token: --token-file, else $GRIDHEAD_TOKEN; never argv (it shows in `ps`)."""
    legacy = ctx.params.pop("token_argv", None)
    if legacy:
        raise click.UsageError("--token on the command line shows in `ps`; put the token in GRIDHEAD_TOKEN or "
                               "a file read with --token-file")
    if value:
        try:
            text = open(value).read().strip()
        except OSError as exc:
            raise click.BadParameter(f"{value}: {exc.strerror}", param_hint="--token-file") from None
        if not text:
            raise click.BadParameter(f"{value}: empty", param_hint="--token-file")
        return text.splitlines()[0].strip()
    import os
    return os.environ.get("GRIDHEAD_TOKEN") or None


def _control_options(f):
    f = click.option("--token-file", "token", type=click.Path(dir_okay=False), callback=_read_token,
                     help="File holding the control API token (operator) [default: env GRIDHEAD_TOKEN].")(f)
    f = click.option("--token", "token_argv", hidden=True, is_eager=True, expose_value=False,
                     callback=lambda ctx, p, v: ctx.params.__setitem__("token_argv", v) if v else None)(f)
    # --api / GRIDHEAD_API as for `gridhead status` and the other operate commands (--control-url and
    # GRIDHEAD_CONTROL_URL: the old names, still taken)
    return click.option("--api", "--control-url", "control_url", cls=_Aliased, callback=_check_url,
                        envvar=["GRIDHEAD_API", "GRIDHEAD_CONTROL_URL"], default=None,
                        help="The head-end's control API, e.g. http://127.0.0.1:7699 [env GRIDHEAD_API]; "
                             "without it trip/reconnect commands wait in the outbox.")(f)


def _sender(control_url, token):
    if not control_url:
        return None
    from gridhead.headend.prepay_control import sender
    return sender(control_url, token)


def _reconnect_after(data, customer_ids, control_url, token):
    from gridhead.billing_core.jobs import prepay
    return prepay.after_payment(data, customer_ids, send=_sender(control_url, token))


@cli.group("pay")
def pay_grp():
    """Payments (收费): at the counter, from a bank file, refunds."""


@pay_grp.command("add")
@click.argument("customer")
@click.argument("amount")
@click.option("--by", required=True, help="Who takes the payment (cashier).")
@click.option("--ref", default=None, help="Receipt / transaction reference (refused if posted before).")
@click.option("--json", "as_json", is_flag=True)
@_policy_options
@_control_options
@_data_option
def pay_add(customer, amount, by, ref, as_json, late_fee_min_yuan, max_payment_yuan, control_url, token, data):
    """Post a payment of AMOUNT yuan for CUSTOMER (户号) at the counter; reconnects a tripped prepayment
    customer whose balance is back.  Prints the receipt number (`gridhead pay show` reprints it)."""
    from gridhead.billing_core.jobs import ledger
    r = ledger.add_entry(data, customer, "payment", _fen_arg(amount), by, ref=ref,
                         policy=_policy(late_fee_min_yuan, max_payment_yuan))
    r["reconnect"] = _reconnect_after(data, [r["customer_id"]], control_url, token)
    click.echo(json.dumps(r, ensure_ascii=False) if as_json else
               f"{customer}: paid {amount} yuan, receipt {r['receipt_no']}, balance {r['balance_fen'] / 100:.2f} yuan owed"
               + ("; reconnect ordered" if r["reconnect"]["closes"] else ""))


@pay_grp.command("show")
@click.argument("customer")
@click.option("--receipt", default=None, help="Receipt number [default: the customer's latest payment].")
@click.option("--json", "as_json", is_flag=True)
@_data_option
def pay_show(customer, receipt, as_json, data):
    """Print CUSTOMER's receipt (收据) of a payment: number, amount, cashier, what it settled, balance."""
    from gridhead.billing_core.jobs import ledger
    r = ledger.receipt(data, customer, receipt)
    click.echo(json.dumps(r, ensure_ascii=False, default=str) if as_json else ledger.render_receipt(r))


@pay_grp.command("refund")
@click.argument("customer")
@click.argument("amount")
@click.option("--by", required=True, help="Who pays the money back.")
@click.option("--note", required=True, help="Why.")
@click.option("--payment", required=True, help="The payment returned: its receipt number or reference.")
@click.option("--json", "as_json", is_flag=True)
@_data_option
def pay_refund(customer, amount, by, note, payment, as_json, data):
    """Refund AMOUNT yuan of a PAYMENT to CUSTOMER (户号): a new entry linked to the payment, never more
    than the customer's credit on hand nor what is left of that payment."""
    from gridhead.billing_core.jobs import ledger
    r = ledger.add_entry(data, customer, "refund", _fen_arg(amount), by, note=note, payment=payment)
    click.echo(json.dumps(r, ensure_ascii=False) if as_json else
               f"{customer}: refunded {amount} yuan, balance {r['balance_fen'] / 100:.2f} yuan owed")


@pay_grp.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--by", default="bank-import", show_default=True, help="Who imports the file.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--return-file", "return_file", type=click.Path(dir_okay=False), default=None,
              help="Also write the return file (回盘): per line applied or refused, and why.")
@_policy_options
@_control_options
@_data_option
def pay_import(file, by, as_json, return_file, late_fee_min_yuan, max_payment_yuan, control_url, token, data):
    """Post a bank file (CSV: ref,customer_no,amount_yuan,paid_on) all or nothing.

    Any bad row refuses the whole file: every bad row is printed on stderr as FILE:ROW: COLUMN: REASON
    and nothing is posted (exit 2).  A reference posted before is a bad row, so a file imported twice
    changes nothing.
    """
    from gridhead.billing_core.jobs import ledger
    try:
        r = ledger.import_payments(data, file, by, policy=_policy(late_fee_min_yuan, max_payment_yuan),
                                   return_file=return_file)
    except ledger.LedgerError as exc:
        for line in exc.errors[:ledger.MAX_ERRORS_SHOWN]:
            click.echo(line, err=True)
        if len(exc.errors) > ledger.MAX_ERRORS_SHOWN:
            click.echo(f"... and {len(exc.errors) - ledger.MAX_ERRORS_SHOWN} more bad rows", err=True)
        click.echo(f"error: {file}: {len(exc.errors)} bad row(s); nothing was imported", err=True)
        sys.exit(EXIT_BAD_INPUT)            # the file is bad input (README: exit 2)
    rc = _reconnect_after(data, r.pop("customer_ids"), control_url, token)
    r["reconnect"] = rc
    click.echo(json.dumps(r, ensure_ascii=False) if as_json else
               f"{file}: {r['rows']} payments, {r['amount_fen'] / 100:.2f} yuan posted (batch {r['batch']})"
               + (f"; bank batch {r['bank_batch']} count and total agree" if r.get("bank_batch") else "")
               + (f"; {rc['closes']} reconnects ordered" if rc["closes"] else ""))


@cli.group("ledger")
def ledger_grp():
    """Accounts: post bills, adjust, prove balances, arrears and reminders, the finance export."""


@ledger_grp.command("post")
@click.option("--period", type=_MONTH, required=True, help="Billing month YYYY-MM whose issued/released bills to post.")
@click.option("--by", default="billing", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_data_option
def ledger_post(period, by, as_json, data):
    """Post the period's issued and released bills as receivables (idempotent; held bills wait)."""
    from gridhead.billing_core.jobs import ledger
    r = ledger.post_bills(data, period, by)
    click.echo(json.dumps(r) if as_json else
               f"{period}: {r['posted']} bills posted ({r['receivable_fen'] / 100:.2f} yuan), {r['skipped']} "
               f"already posted, {r['held']} held; prepayment true-up {r['trueup_fen'] / 100:.2f} yuan")


@ledger_grp.command("adjust", context_settings={"ignore_unknown_options": True})   # AMOUNT may be -10.00
@click.argument("customer")
@click.argument("amount")
@click.option("--by", required=True)
@click.option("--note", required=True, help="The reason (required).")
@click.option("--json", "as_json", is_flag=True)
@_data_option
def ledger_adjust(customer, amount, by, note, as_json, data):
    """Adjust CUSTOMER's receivable by AMOUNT yuan (negative: a credit), as a new entry."""
    from gridhead.billing_core.jobs import ledger
    r = ledger.add_entry(data, customer, "adjust", _fen_arg(amount, signed=True), by, note=note)
    click.echo(json.dumps(r, ensure_ascii=False) if as_json else
               f"{customer}: adjusted {amount} yuan, balance {r['balance_fen'] / 100:.2f} yuan owed")


@ledger_grp.command("late-fees")
@click.option("--as-of", type=_DAY, required=True, help="Accrue to this day.")
@click.option("--by", default="billing", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_policy_options
@_data_option
def ledger_late_fees(as_of, by, as_json, late_fee_min_yuan, max_payment_yuan, data):
    """Post the late fees (违约金) accrued up to --as-of as receivables, one per overdue bill (bills paid
    late included; idempotent per date, a later date posts only the growth)."""
    from gridhead.billing_core.jobs import ledger
    r = ledger.post_late_fees(data, as_of.date(), by, _policy(late_fee_min_yuan, max_payment_yuan))
    click.echo(json.dumps(r) if as_json else
               f"{r['as_of']}: {r['posted']} late fees posted, {r['amount_fen'] / 100:.2f} yuan")


@ledger_grp.command("waive")
@click.argument("customer")
@click.argument("amount")
@click.option("--fee", "fee_entry", type=int, required=True, help="The late fee's entry id (ledger arrears).")
@click.option("--by", required=True, help="Who grants the waiver (减免).")
@click.option("--note", required=True, help="Why (required).")
@click.option("--json", "as_json", is_flag=True)
@_data_option
def ledger_waive(customer, amount, fee_entry, by, note, as_json, data):
    """Waive (减免) AMOUNT yuan of CUSTOMER's late fee --fee: a new entry naming who and why."""
    from gridhead.billing_core.jobs import ledger
    r = ledger.add_entry(data, customer, "waiver", _fen_arg(amount), by, note=note, fee_entry=fee_entry)
    click.echo(json.dumps(r, ensure_ascii=False) if as_json else
               f"{customer}: waived {amount} yuan of late fee {fee_entry}, balance {r['balance_fen'] / 100:.2f} yuan owed")


@ledger_grp.command("check")
@click.option("--json", "as_json", is_flag=True)
@_data_option
def ledger_check(as_json, data):
    """Prove balance = receivables − payments for every customer, and every issued bill posted once.

    Exits 1 naming the first customer whose balance does not follow from its entries."""
    from gridhead.billing_core.jobs import ledger
    r = ledger.check(data)
    click.echo(json.dumps(r) if as_json else
               f"ok: {r['customers']} customers, {r['entries']} entries, {r['bills_checked']} bills posted as issued")


@ledger_grp.command("arrears")
@click.option("--as-of", type=_DAY, default=None, help="Date [default: today].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--csv", "as_csv", is_flag=True)
@click.option("--customer", default=None, help="One customer (户号) only.")
@click.option("--limit", type=click.IntRange(0), default=50, show_default=True,
              help="Rows listed after the summary (worst first; 0 = all); --json/--csv give every row.")
@_policy_options
@_data_option
def ledger_arrears(as_of, as_json, as_csv, customer, limit, late_fee_min_yuan, max_payment_yuan, data):
    """Arrears (欠费) with late fees (违约金, 供电营业规则 第九十八条) and aging: the reminder list (催费).

    As of a date, only entries and payments with value dates on or before it count.  The summary comes
    first (customers, amounts, by aging); late_fee is what has accrued and is not yet posted
    (`gridhead ledger late-fees`).  Prepayment customers are listed where they owe."""
    import datetime as _dt

    from gridhead.storage import sql as _sql
    from gridhead.billing_core.jobs import ledger
    day = as_of.date() if as_of else _dt.date.today()
    tbl = ledger.arrears(data, day, _policy(late_fee_min_yuan, max_payment_yuan), customer)
    if as_json or as_csv:
        _sql.write_result(tbl, "json" if as_json else "csv", None)
        return
    sm = ledger.summarise_arrears(tbl)
    click.echo(f"{day}: {sm['customers']} customers ({sm['prepaid_customers']} prepayment) owe "
               f"{sm['arrears_fen'] / 100:.2f} yuan on {sm['receivables']} receivables, late fees not yet posted "
               f"{sm['late_fee_fen'] / 100:.2f} yuan; by aging: "
               + (", ".join(f"{k or 'paid late'} {v / 100:.2f}" for k, v in sm["by_aging_fen"].items()) or "none"))
    rows = tbl.to_pylist() if not limit else tbl.slice(0, limit).to_pylist()
    _echo_aligned([["customer_no", "kind", "entry", "period", "due", "days", "aging", "arrears", "违约金"]] + [
        [r["customer_no"], r["kind"], str(r["entry_id"]), r["period"], str(r["due_date"]), str(r["days_late"]),
         r["aging"], f"{r['arrears_fen'] / 100:.2f}", f"{r['late_fee_fen'] / 100:.2f}"] for r in rows], "llrllrl")
    if len(rows) < tbl.num_rows:
        click.echo(f"... {tbl.num_rows - len(rows)} more (--limit 0 lists all)")


@ledger_grp.command("export")
@click.option("--period", type=_MONTH, required=True, help="YYYY-MM.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output file.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@_data_option
def ledger_export(period, out, fmt, data):
    """Finance export: receivable, received and outstanding of PERIOD by category and area."""
    from gridhead.billing_core.jobs import ledger
    tbl = ledger.export(data, period, out, fmt)
    click.echo(f"{out}: {tbl.num_rows} rows", err=True)


@cli.group("prepay")
def prepay_grp():
    """Prepayment (预付费): daily deduction, reminders, automatic trip and reconnect."""


@prepay_grp.command("run")
@click.option("--date", "day", type=_DAY, required=True,
              help="The day to deduct (needs the daily frozen readings of it and of the next day).")
@click.option("--warn-yuan", default="20", show_default=True, help="Reminder below this credit.")
@click.option("--grace-days", type=click.IntRange(0), default=1, show_default=True,
              help="Days below zero before the trip.")
@click.option("--confirm-above", type=click.IntRange(0), envvar="GRIDHEAD_PREPAY_CONFIRM_ABOVE", default=100,
              show_default=True, help="Ask before sending more trip commands than this [env GRIDHEAD_PREPAY_CONFIRM_ABOVE].")
@click.option("--send-attempts", type=click.IntRange(1), default=5, show_default=True,
              help="Alarm and give up a command that cannot reach the head-end this many times.")
@click.option("--yes", is_flag=True, help="Send without asking, however many trips.")
@click.option("--tariffs", "tariffs_dir", type=click.Path(file_okay=False, exists=True), default=None)
@click.option("--json", "as_json", is_flag=True)
@_control_options
@_data_option
def prepay_run(day, warn_yuan, grace_days, confirm_above, send_attempts, yes, tariffs_dir, as_json, control_url,
               token, data):
    """Deduct the day's estimated charge of every prepayment customer, send reminders, order trips and
    reconnects (idempotent per date: a re-run only sends what is still pending).

    Commands that could not reach the head-end before are sent again.  Before sending more trips than
    --confirm-above it prints a summary and asks (--yes: don't ask; declined or no terminal: the
    commands stay in the outbox, exit 1)."""
    from gridhead.billing_core.prepay import PrepayThresholds
    from gridhead.billing_core.jobs import prepay
    t = PrepayThresholds(warn_fen=_fen_arg(warn_yuan), grace_days=grace_days, send_attempts=send_attempts,
                   confirm_trips_above=confirm_above)
    r = prepay.run(data, day.date(), t, tariffs_dir)          # decide first; sending is below
    if not as_json:
        click.echo(f"{r['day']}: {r['customers']} prepayment customers, {r['read']} read, "
                   f"{r['charged_fen'] / 100:.2f} yuan deducted, {r['reminders']} reminders, {r['trips']} trips, "
                   f"{r['withheld']} withheld (保电), {r['closes']} reconnects" + (" (already run)" if r["repeated"] else ""))
    r["dispatched"] = _prepay_send(data, t, yes, control_url, token, as_json)
    if as_json:
        click.echo(json.dumps(r, ensure_ascii=False))
    elif r["dispatched"]:
        click.echo("commands: " + ", ".join(f"{k} {v}" for k, v in sorted(r["dispatched"].items())))


def _prepay_send(data, t, yes, control_url, token, quiet) -> dict:
    """Send the outbox, after asking when it holds more trips than ``t.confirm_trips_above``."""
    from gridhead.billing_core.jobs import prepay
    send = _sender(control_url, token)
    if send is None:
        return {}
    st = prepay.status(data)
    sm = prepay.summarise(st)
    if sm["pending_trips"] > t.confirm_trips_above and not yes:
        click.echo(f"{sm['pending_trips']} trip commands are waiting to be sent ({sm['customers']} prepayment "
                   f"customers, {sm['below_zero']} below zero owing {sm['owed_fen'] / 100:.2f} yuan). More than "
                   f"--confirm-above {t.confirm_trips_above}: customers without an opening balance (期初余额) or "
                   f"a payment would be cut off together.", err=True)
        if not click.confirm("Send them now?", default=False, err=True):
            click.echo("not sent: the commands stay in the outbox (`gridhead prepay send --yes` sends them)", err=True)
            sys.exit(1)
    return prepay.dispatch(data, send, t)


@prepay_grp.command("send")
@click.option("--confirm-above", type=click.IntRange(0), envvar="GRIDHEAD_PREPAY_CONFIRM_ABOVE", default=100,
              show_default=True, help="Ask before sending more trip commands than this.")
@click.option("--send-attempts", type=click.IntRange(1), default=5, show_default=True)
@click.option("--yes", is_flag=True, help="Send without asking.")
@click.option("--json", "as_json", is_flag=True)
@_control_options
@_data_option
def prepay_send(confirm_above, send_attempts, yes, as_json, control_url, token, data):
    """Send the commands waiting in the outbox (those that did not reach the head-end before included)."""
    from gridhead.billing_core.prepay import PrepayThresholds
    if not control_url:
        raise click.UsageError("--api (or GRIDHEAD_API) is required to send")
    t = PrepayThresholds(send_attempts=send_attempts, confirm_trips_above=confirm_above)
    out = _prepay_send(data, t, yes, control_url, token, as_json)
    click.echo(json.dumps(out) if as_json else
               "commands: " + (", ".join(f"{k} {v}" for k, v in sorted(out.items())) or "none pending"))


@prepay_grp.command("status")
@click.option("--customer", default=None, help="One customer (户号) only.")
@click.option("--limit", type=click.IntRange(0), default=50, show_default=True,
              help="Customers listed after the summary (tripped, then below zero; 0 = all).")
@click.option("--json", "as_json", is_flag=True)
@_data_option
def prepay_status(customer, limit, as_json, data):
    """Prepayment customers' credit, reminders, trips (confirmed by the head-end, or pending), and
    commands still waiting for the head-end — the summary first."""
    from gridhead.billing_core.jobs import prepay
    s = prepay.status(data, customer)
    sm = prepay.summarise(s)
    if as_json:
        click.echo(json.dumps({"last_run": s["last_run"], "summary": sm, "customers": s["customers"].to_pylist(),
                               "pending": s["pending"]}, ensure_ascii=False, default=str))
        return
    click.echo(f"last run {s['last_run']}; {sm['customers']} prepayment customers, {sm['below_zero']} below zero "
               f"(owing {sm['owed_fen'] / 100:.2f} yuan), {sm['tripped']} tripped, {sm['trip_pending']} trips not yet "
               f"confirmed, {sm['pending_commands']} commands pending, {sm['alarms']} alarms")
    rows = [r for r in s["customers"].to_pylist() if customer or r["tripped"] or r["trip_pending"] or r["credit_fen"] < 0]
    rows.sort(key=lambda r: (not r["tripped"], not r["trip_pending"], r["credit_fen"]))
    shown = rows if not limit else rows[:limit]
    for r in shown:
        state = "tripped" if r["tripped"] else "trip pending" if r["trip_pending"] else ""
        click.echo(f"  {r['customer_no']:<12} credit {r['credit_fen'] / 100:>10.2f}  {state:<12} "
                   f"below zero since {r['below_zero_since']}")
    if len(shown) < len(rows):
        click.echo(f"  ... {len(rows) - len(shown)} more (--limit 0 lists all)")
# === end pay / ledger / prepay =====================================================================


# === serve (headend: the head-end server 主站前置) ====================================================
@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML settings (headend/config.py "
              "documents every key); options below override it.")
@click.option("--data", help="Data directory (archive.duckdb and the lake) [default: the config's data_dir].")
@click.option("--host", help="Listen address [default 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), help="Listen port [default 7698; 0 = any free port].")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Prometheus /metrics port on 127.0.0.1.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="JSON-lines logs on stderr at this level.")
@click.option("--api-port", type=click.IntRange(0, 65535), help="Operators' control API on 127.0.0.1 "
              "[default: the config's [control] port, else 7699; 0 = any free port].")
@click.option("--no-api", is_flag=True, help="Run without the control API.")
@click.option("--insecure", is_flag=True, help="Let the control API listen on a non-loopback address without TLS "
              "(only behind a TLS-terminating proxy; see README: running the API behind TLS).")
@click.option("--accept-audit-break", is_flag=True, help="Start although the control audit log's hash chain is "
              "broken (`gridhead control-log verify` names the break); the acceptance is itself recorded.")
@click.option("--mqtt", metavar="HOST:PORT", help="Also take concentrators through the MQTT broker at HOST:PORT "
              "(topics <prefix>/<address>/up|down|status; the config's [mqtt] table for the other settings).")
@click.option("--mqtt-prefix", metavar="PREFIX", help="Topic prefix with --mqtt [default: the config's, else gridhead].")
@click.option("--collect/--no-collect", default=None,
              help="Run the collection tasks on schedule and compact each day's lake partitions the night "
                   "after (the config's [collect] table, headend/collect.py Schedule) [default: on when the "
                   "config has a [collect] table].")
def serve(config_file, data, host, port, metrics_port, log_level, api_port, no_api, insecure=False,
          accept_audit_break=False, mqtt=None, mqtt_prefix=None, collect=None):
    """Run the head-end: terminals dial in (and configured ones are dialled out), LINK sessions kept,
    reports stored durably then acknowledged, until SIGINT/SIGTERM (graceful: the ingest is flushed).
    With --collect (or a [collect] table) it also collects on schedule (采集任务, back-fill 补采) and
    compacts the lake nightly.

    Prints one JSON line on stdout once listening: {"host", "port", "metrics_port", "pid", "api"}."""
    import asyncio
    import logging
    import os

    from gridhead.headend import log as _log
    from gridhead.headend.server import raise_open_files, serve as _serve, use_uvloop

    from gridhead.headend import control as _control          # the [control] table is the control API's
    cfg, ctl_cfg, ctl_explicit, schedule = _control.serve_settings(
        config_file, data=data, host=host, port=port, metrics_port=metrics_port, api_port=api_port, mqtt=mqtt,
        mqtt_prefix=mqtt_prefix, collect=collect, insecure=insecure, accept_audit_break=accept_audit_break)
    if not no_api:                     # refused before anything starts, one line
        _control.preflight(ctl_cfg, cfg.data_dir)
    _log.setup(sys.stderr, getattr(logging, log_level.upper()))
    raise_open_files()
    use_uvloop()

    def ready(he):
        api = None if no_api else _control.mount_default(he, ctl_cfg, explicit=ctl_explicit)
        click.echo(json.dumps({"host": cfg.listen_host, "port": he.port, "metrics_port": he.metrics_port,
                               "pid": os.getpid(), "api": api.url if api else None}))
        sys.stdout.flush()

    he = asyncio.run(_serve(cfg, on_ready=ready, schedule=schedule))
    click.echo(json.dumps({"stopped": True, "readings": he.metrics.readings, "reports": he.metrics.reports}))
# === end serve =====================================================================================


# === sim (headend: the fleet simulator) ===========================================================
def _faults(values):
    """--fault-rate checked while the options are read: a bad one is bad input (exit 2)."""
    from gridhead.headend.sim import simulator
    try:
        simulator.Faults.parse(values)
    except GridheadError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault-rate") from None
    return values


@cli.command("sim")
@click.option("--terminals", type=click.IntRange(1), default=10, show_default=True,
              help="Standalone fleet: number of concentrators (ignored with --data).")
@click.option("--meters-per-terminal", type=click.IntRange(1), default=32, show_default=True,
              help="Standalone fleet: meters behind each concentrator.")
@click.option("--seed", type=int, default=1, show_default=True, help="Fleet, registers and faults.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="A `gridhead gen` directory: simulate exactly its concentrators and meters.")
@click.option("--archive", "archive_db", type=click.Path(dir_okay=False, exists=True), default=None,
              help="With --data: the archive DuckDB to route by [default DATA/archive.duckdb or its archive-files].")
@click.option("--connect", help="Dial in to the head-end at HOST:PORT (127.0.0.1 only in tests).")
@click.option("--listen", help="Server mode for dial-out: HOST:PORT (one port) or HOST:PORT-PORT (one per terminal).")
@click.option("--mqtt", help="Publish through the MQTT broker at HOST:PORT instead of dialling TCP "
                             "(topics gridhead/<address>/up|down|status, headend.transport_mqtt).")
@click.option("--heartbeat", "heartbeat_s", type=click.IntRange(1, 65535), default=60, show_default=True,
              help="Heartbeat period, seconds.")
@click.option("--fault-rate", "faults", multiple=True, metavar="NAME=VALUE", callback=lambda ctx, p, v: _faults(v),
              help="A fault rate (repeat): offline, offline_s, reconnect, slow, slow_s, drop, garbage, "
                   "clock_drift, missing, missing_late, late_s, meter_missing.")
@click.option("--start", type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]),
              default=None, help="Simulated clock at start (local) [default: now, China Standard Time].")
@click.option("--speed", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="Simulated seconds per real second.")
@click.option("--no-report", is_flag=True, help="Do not push daily REPORTs.")
@click.option("--report-window", "report_window_s", type=click.FloatRange(0), default=600.0, show_default=True,
              help="Reports are pushed within this many simulated seconds after midnight.")
@click.option("--report-retry", "report_retry_s", type=click.FloatRange(0.01), default=30.0, show_default=True,
              help="Re-send an unacknowledged REPORT after this many seconds.")
@click.option("--ramp", "ramp_per_s", type=click.FloatRange(0), default=2000.0, show_default=True,
              help="New connections per second at start (0: all at once).")
@click.option("--duration", type=click.FloatRange(0), default=None, help="Stop after this many seconds.")
@click.option("--stats-every", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Print a stats line to stderr this often (0: never).")
@click.option("--truth", "truth_path", type=click.Path(dir_okay=False), default=None,
              help="Write the ground truth of the injected faults (JSON) here at the end.")
@click.option("--write-archive", "write_archive", type=click.Path(file_okay=False), default=None,
              help="Write the standalone fleet's archive files into this directory and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary at the end.")
def sim_cmd(terminals, meters_per_terminal, seed, data_dir, archive_db, connect, listen, mqtt, heartbeat_s, faults,
            start, speed, no_report, report_window_s, report_retry_s, ramp_per_s, duration, stats_every,
            truth_path, write_archive, as_json):
    """Simulate a fleet of DL/T 698.45 concentrators (with 698 and 645 meters behind them) that dial in
    to the head-end, log in, heartbeat, answer collection requests and push daily REPORTs, with faults
    at the given rates.  Stops on SIGINT/SIGTERM or after --duration; exit 0.
    """
    from gridhead.headend.config import parse_hostport
    from gridhead.headend.sim import model as sim_model, simulator
    start_date = (start or simulator.Simulator.default_start()).date()
    if write_archive:
        out = sim_model.write_standalone_archive(write_archive, terminals, meters_per_terminal, seed, start_date)
        click.echo(f"archive files of {terminals} terminals in {out / 'archive-files'}", err=True)
        return
    if not connect and not listen and not mqtt:
        raise click.UsageError("give --connect HOST:PORT, --listen HOST:PORT or --mqtt HOST:PORT")
    fleet = (sim_model.load_gen_dir(data_dir, archive_db) if data_dir
             else sim_model.standalone(terminals, meters_per_terminal, seed, start_date))
    sim = simulator.Simulator(
        fleet, seed=seed, heartbeat_s=heartbeat_s, faults=simulator.Faults.parse(faults), start=start,
        speed=speed, report=not no_report, report_window_s=report_window_s, report_retry_s=report_retry_s,
        ramp_per_s=ramp_per_s,
        connect=parse_hostport(connect, "--connect")[:2] if connect else None,
        listen=parse_hostport(listen, "--listen") if listen else None,
        mqtt=parse_hostport(mqtt, "--mqtt")[:2] if mqtt else None)
    click.echo(f"simulating {len(fleet.terminals)} terminals, {fleet.n_meters} meters ({fleet.source})", err=True)
    simulator.run(sim, duration_s=duration, stats_every_s=stats_every)
    if truth_path:
        with open(truth_path, "w") as fh:
            json.dump(sim.ground_truth(), fh, ensure_ascii=False)
    summary = sim.summary()
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(sim.stats_line(), err=True)
# === end sim =======================================================================================

# === collect / demo (headend.collect: tasks 数据采集管理, back-fill 补采, success rate; headend.sim.demo) ======
def _dates(first, last, single):
    import datetime as _d
    if single:
        return sorted({d.date() for d in single})
    if first is None:
        raise click.UsageError("give --date D (repeatable) or --from D [--to D]")
    lo, hi = first.date(), (last or first).date()
    if hi < lo:
        raise click.UsageError(f"--to {hi} is before --from {lo}")
    return [lo + _d.timedelta(days=i) for i in range((hi - lo).days + 1)]


_DATE = _DAY


@cli.group("collect")
def collect_grp():
    """Collection tasks (数据采集管理): collect days, back-fill (补采) gaps, success rate (采集成功率)."""


@collect_grp.command("run")
@click.option("--date", "single", type=_DATE, multiple=True, help="A day to collect (repeatable).")
@click.option("--from", "first", type=_DATE, default=None, help="First day to collect.")
@click.option("--to", "last", type=_DATE, default=None, help="Last day to collect [default: --from].")
@click.option("--port", type=click.IntRange(0, 65535), default=7698, show_default=True,
              help="TCP port on 127.0.0.1 the terminals dial (0 = any; the port is printed).")
@click.option("--tasks", "tasks_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file of [[task]] tables overriding or adding to the built-in tasks.")
@click.option("--task", default="daily-frozen", show_default=True, help="Which task to run.")
@click.option("--retries", type=click.IntRange(0), default=None, help="Override the task's back-fill retries.")
@click.option("--backfill-delay", type=click.FloatRange(0), default=None,
              help="Override the task's first back-fill delay (seconds; doubles per retry, with jitter).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1), default=None,
              help="Override the task's request timeout, seconds.")
@click.option("--wait-online", type=click.IntRange(0), default=None,
              help="Terminals to wait for before collecting [default: all of the archive's].")
@click.option("--wait", "wait_s", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Longest wait for them, seconds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the back-off jitter.")
@click.option("--requests-per-s", type=click.FloatRange(0), default=None,
              help="Throttle requests over the fleet [default: the head-end's, 5000/s].")
@click.option("--forever", is_flag=True, help="Keep the head-end and the scheduler running afterwards.")
@click.option("--ack-log", type=click.Path(dir_okay=False), default=None,
              help="Append a JSON line per batch the ingest acknowledged (meters, kind) to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--meters", "meters_file", type=click.Path(dir_okay=False), default=None,
              help="Re-read only these meters: a CSV with meter_id and optionally date (the reading's day), e.g. "
                   "from `gridhead lineloss --reread-out`; days without a date column come from --date/--from.")
@_data_option
def collect_run(single, first, last, port, tasks_file, task, retries, backfill_delay, timeout_s, wait_online, wait_s, seed,
                requests_per_s, forever, ack_log, as_json, data, meters_file=None):
    """Start the head-end on 127.0.0.1, wait for the fleet, collect the days, back-fill, print the rates.

    Days that already have a recorded collection run are not collected again (a restart resumes);
    back-fill re-requests the gaps found in the lake, each at most the task's retries.
    """
    import asyncio
    import dataclasses

    from gridhead.headend import collect as _c
    from gridhead.headend.server import serve_and_collect
    from gridhead.storage import sql as _sql
    wanted = None
    if meters_file:
        wanted = _reread_file(meters_file, _dates(first, last, single) if single or first else None)
        days = sorted(wanted)
    else:
        days = _dates(first, last, single)
    tasks = _c.load_tasks(tasks_file)
    over = {k: v for k, v in (("backfill_retries", retries), ("backfill_delay_s", backfill_delay),
                              ("timeout_s", timeout_s)) if v is not None}
    tasks = [dataclasses.replace(t, **over) if t.name == task else t for t in tasks]
    log_fh = open(ack_log, "a", buffering=1) if ack_log else None

    def stored(kind, cols):
        if log_fh is not None:
            log_fh.write(json.dumps({"kind": kind, "meter_id": sorted(set(cols["meter_id"].tolist())),
                                     "ts_utc": sorted(set(cols["ts_utc"].tolist()))}) + "\n")

    def on_port(p):
        click.echo(f"head-end listening on 127.0.0.1:{p}", err=True)

    try:
        out = asyncio.run(serve_and_collect(_sql.data_dir(data), days, port=port, tasks=tasks, task=task,
                                               seed=seed, wait_online=wait_online, wait_s=wait_s, on_port=on_port,
                                               on_stored=stored, forever=forever, meters=wanted,
                                               config={} if requests_per_s is None else
                                               {"requests_per_s": requests_per_s}))
    finally:
        if log_fh is not None:
            log_fh.close()
    if as_json:
        click.echo(json.dumps(out, default=str))
        return
    if wanted is not None:
        click.echo(f"{out['online_at_start']}/{out['terminals']} terminals online; re-read {out['requested']} "
                   f"meter-days: {out['readings_reread']} readings stored, {out['still_missing']} still missing")
        return
    if "before" not in out:            # monthly / curve / events: no daily success rate to show
        click.echo(f"{out['online_at_start']}/{out['terminals']} terminals online; {task}: {out['stored']} "
                   f"readings / events stored in {out['seconds']} s")
        return
    b, a = out["before"], out.get("after", out["before"])
    click.echo(f"{out['online_at_start']}/{out['terminals']} terminals online; {out['readings_stored']} readings "
               f"stored ({out['readings_backfilled']} by back-fill) in {out['seconds']} s")
    click.echo(f"success {b['success_first_pct']}% first pass, {a['success_pct']}% after back-fill "
               f"({a['collected']}/{a['expected']} meter-days, {a['missing']} missing)")


def _reread_file(path, days) -> dict:
    """{date: [meter_id]} of a re-read file (billing_core.jobs.lineloss.read_reread); ``days`` (a list, or None)
    gives the days of a file without dates and limits those of one with dates.  Bad input: one line, exit 2."""
    from gridhead.headend.collect import TaskError
    from gridhead.protocols.errors import StorageError
    from gridhead.billing_core.jobs import lineloss as _ll
    try:
        ids, dates = _ll.read_reread(path)
    except StorageError as exc:
        raise TaskError(str(exc)) from None
    if dates is not None:
        out: dict = {}
        for m, d in zip(ids, dates):
            if days is None or d in days:
                out.setdefault(d, []).append(m)
        return out
    if days is None:
        raise TaskError(f"{path} has no date column: give --date D or --from D [--to D]")
    return {d: list(ids) for d in days}


@collect_grp.command("status")
@click.option("--date", "single", type=_DATE, multiple=True, help="A day (repeatable).")
@click.option("--from", "first", type=_DATE, default=None, help="First day.")
@click.option("--to", "last", type=_DATE, default=None, help="Last day [default: --from].")
@click.option("--by", type=click.Choice(["day", "terminal", "area"]), default="day", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
@_data_option
def collect_status(single, first, last, by, as_json, data):
    """Success rate (采集成功率) of the days: expected meter-days, first pass, back-filled, missing."""
    from gridhead.storage import archive, collection, sql as _sql
    days = _dates(first, last, single)
    with archive.Archive(_sql.archive_path(data), read_only=True) as a:
        exp = collection.expected_meters(a)
    with collection.CollectionState(_sql.lake_root(data), exp) as st:
        tbl = st.success(days, by)
    if as_json:
        for row in tbl.to_pylist():
            click.echo(json.dumps(row, default=str))
        return
    _echo_aligned([tbl.column_names] + [["" if v is None else str(v) for v in r.values()] for r in tbl.to_pylist()])


@cli.command("demo")
@click.option("--data", type=click.Path(file_okay=False), default="gridhead-demo", show_default=True,
              help="Directory for the demo's archive and lake (emptied if a previous demo made it).")
@click.option("--terminals", type=click.IntRange(1, 2000), default=10, show_default=True)
@click.option("--meters-per-terminal", type=click.IntRange(1, 256), default=32, show_default=True)
@click.option("--days", type=click.IntRange(1, 30), default=3, show_default=True, help="Days to collect.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--no-faults", is_flag=True, help="A fleet without faults.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary of every step as JSON.")
def demo_cmd(data, terminals, meters_per_terminal, days, seed, no_faults, as_json):
    """Generate a small fleet, run the head-end and the simulated fleet on 127.0.0.1, collect a few days
    (and last month's first and last freezes) with faults and back-fill; bill last month, its line loss and
    audit list; a prepayment customer runs out, is tripped through the control API, pays and is
    reconnected (relay read back each time).  Leaves the lake for `gridhead sql --data DIR`."""
    from gridhead.headend.sim import demo
    echo = (lambda line: click.echo(line, err=True))
    summary = demo.run(data, terminals=terminals, meters_per_terminal=meters_per_terminal, days=days, seed=seed,
                       faults={} if no_faults else None, echo=echo)
    click.echo(json.dumps(summary, default=str, ensure_ascii=False) if as_json else demo.render(summary))
# === end collect / demo ============================================================================


# === lineloss / audit / report (line loss 线损, the audit list 稽查, HTML reports) ============
def _out_format(as_json, as_csv):
    if as_json and as_csv:
        raise click.UsageError("--json and --csv: choose one")
    return "json" if as_json else "csv" if as_csv else "table"


def _emit_table(tbl, fmt, columns):
    """Print an Arrow table as aligned text (``columns``: name -> (header, formatter)), CSV or JSON lines."""
    from gridhead.storage import sql as _sql
    if fmt != "table":
        _sql.write_result(tbl, fmt, None)
        return
    rows = tbl.to_pylist()
    _echo_aligned([[h for h, _f in columns.values()]] + [[str(f(r[c])) for c, (_h, f) in columns.items()] for r in rows],
                  "l")


def _kwh(v):
    return "" if v is None else f"{v / 100:.2f}"


def _date_or_month(date, month):
    from gridhead.billing_core.jobs import lineloss as _ll
    if bool(date) == bool(month):
        raise click.UsageError("give exactly one of --date YYYY-MM-DD or --period YYYY-MM")
    if date:
        return date.date(), date.date()
    return _ll.month_range(month)


@cli.command("lineloss")
@click.option("--date", "date", type=_DAY, help="One consumption day (freeze D to D+1).")
@click.option("--period", "--month", "month", cls=_Aliased, type=_MONTH, help="A month, YYYY-MM (its first to last day).")
@click.option("--level", type=click.Choice(["area", "feeder", "all"]), default="all", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header.")
@click.option("--thresholds", type=click.Path(dir_okay=False), help="TOML bands [default: billing_core/lineloss.toml].")
@click.option("--max-gap", type=click.IntRange(1, 31), default=3, show_default=True,
              help="Spread a multi-day difference over a gap of at most this many days.")
@click.option("--no-save", is_flag=True, help="Do not store the daily results in the lake's line_loss table.")
@click.option("--missing", is_flag=True,
              help="Print, per 不可算 area-day, the meters whose missing readings made it so (SQL view line_loss_missing).")
@click.option("--reread-out", type=click.Path(dir_okay=False), default=None,
              help="Write those meters' missing readings as a CSV (meter_id,date) for `gridhead collect run --meters FILE`.")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Run on this Dask scheduler, one task per feeder set with its areas (billing_core.jobs.dist).")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Run on a local Dask cluster of N worker processes on 127.0.0.1 (billing_core.jobs.dist).")
@_data_option
def lineloss_cmd(date, month, level, as_json, as_csv, thresholds, max_gap, no_save, data, scheduler=None,
                 workers=None, missing=False, reread_out=None):
    """Statistical line loss (线损) per transformer area (台区) and 10 kV feeder, for a day or a month.

    supply = check meter (考核表) forward × CT×PT + PV inside the area; sales = Σ customers × CT×PT + check
    meter reverse; rate = (supply − sales) / supply in basis points.  Categories: ok 合格, high 高损,
    negative 负损, not_computable 不可算, outage 停运.  The daily rows are stored in the lake (SQL view
    line_loss) unless --no-save, with the meters that made an area-day 不可算 (view line_loss_missing;
    --missing prints them, --reread-out FILE writes them for `gridhead collect run --meters FILE`).  A
    month's energies come from the 月冻结 readings where the lake has them (column basis).
    """
    from gridhead.storage import archive, sql as _sql
    from gridhead.billing_core.jobs import lineloss as _ll
    fmt = _out_format(as_json, as_csv)
    first, last = _date_or_month(date, month)
    th = _ll.load_thresholds(thresholds)
    if not no_save:
        from gridhead.storage import lakefs
        lakefs.check_local_write(_sql.lake_root(data))
    if scheduler or workers:
        from gridhead.billing_core.jobs import dist
        with dist.client(scheduler, workers) as client:
            res, _tasks = dist.lineloss_run(data, first, last, client, thresholds=th, max_gap=max_gap,
                                            save=not no_save)
    else:
        with archive.Archive(_sql.archive_path(data), read_only=True) as a:
            res = _ll.compute(a, _sql.lake_root(data), first, last, thresholds=th, max_gap=max_gap)
        if not no_save:
            _ll.write_days(_sql.lake_root(data), res)
    if missing or reread_out:
        if res.missing is None:
            raise click.UsageError("--missing and --reread-out: this run has no list of the 不可算 meters")
        miss = _ll.missing_table(res, first if date else None)
        if reread_out:
            n = _ll.write_reread(reread_out, miss)
            click.echo(f"wrote {reread_out}: {n} readings of {len(set(miss.column('meter_id').to_pylist()))} "
                       f"meters to re-read", err=True)
        if missing:
            _emit_table(miss, fmt, {"date": ("day", str), "area_id": ("area", str), "meter_id": ("meter", str),
                                    "point_id": ("point", str), "role": ("role", str),
                                    "reading_date": ("missing reading", str)})
            return
    tbl = _ll.only_level(_ll.day_table(res, first) if date else _ll.month_table(res), level)
    cols = {"level": ("level", str), "unit_id": ("id", str), "unit_type": ("type", str),
            "supply_kwh_x100": ("supply kWh", _kwh), "sales_kwh_x100": ("sales kWh", _kwh),
            "loss_kwh_x100": ("loss kWh", _kwh), "rate_bp": ("rate %", lambda v: "" if v is None else f"{v / 100:.2f}"),
            "category": ("category", str), "category_zh": ("类别", str), "flags": ("flags", _ll.flag_text)}
    if not date:
        cols["days_not_computable"] = ("不可算 days", str)
        cols["basis"] = ("basis", str)
    _emit_table(tbl, fmt, cols)


@cli.group("audit", invoke_without_command=True)
@click.option("--period", "--month", "month", cls=_Aliased, type=_MONTH, help="Rank the month YYYY-MM (and store the list).")
@click.option("--top", type=click.IntRange(1), default=50, show_default=True, help="Items to print.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header.")
@click.option("--thresholds", type=click.Path(dir_okay=False),
              help="TOML bands and [rules] of the areas [default: billing_core/lineloss.toml].")
@click.option("--technical", type=click.Path(dir_okay=False),
              help="CSV of area_id, technical_loss_bp (理论线损): areas above it by the rule's margin are listed.")
@_data_option(need=None)                 # checked below: `audit mark` has its own --data
@click.pass_context
def audit_grp(ctx, month, top, as_json, as_csv, thresholds, technical, data):
    """The audit list (稽查): customers and areas ranked by the evidence of theft or a faulty meter.

    `gridhead audit --period M` ranks and stores the list (SQL view audit); `gridhead audit mark ITEM
    --result theft|fault|normal --by NAME` records what the check found.  An area is listed when a rule
    of the thresholds file's [rules] fires (高损 / 负损 days, 月环比, 同比, over its technical loss); its
    signals name the rules.
    """
    if ctx.invoked_subcommand is not None:
        return
    _check_data(data)
    if not month:
        raise click.UsageError("--period YYYY-MM is required (or a subcommand: mark)")
    from gridhead.storage import archive, sql as _sql
    from gridhead.billing_core.jobs import audit as _au
    fmt = _out_format(as_json, as_csv)
    from gridhead.billing_core.jobs import lineloss as _ll
    th = _ll.load_thresholds(thresholds)
    tech = _au.load_technical(technical) if technical else None
    with archive.Archive(_sql.archive_path(data), read_only=True) as a:
        items = _au.rank_month(a, _sql.lake_root(data), month, thresholds=th, technical=tech)
    _au.save(_sql.lake_root(data), month, items)
    shown = items.slice(0, top)
    _emit_table(shown, fmt, {"rank": ("#", str), "item_id": ("item", str), "score": ("score", lambda v: f"{v:.1f}"),
                             "kinds": ("signals", str), "evidence": ("evidence", str)})
    if fmt == "table":
        click.echo(f"{items.num_rows} items ({shown.num_rows} shown); mark one: "
                   f"gridhead audit mark ITEM --result theft|fault|normal --by NAME", err=True)


@audit_grp.command("mark")
@click.argument("item")
@click.option("--result", type=click.Choice(["theft", "fault", "normal"]), required=True)
@click.option("--by", "by", required=True, help="Who checked.")
@click.option("--note", default="", help="What was found.")
@_data_option
def audit_mark(item, result, by, note, data):
    """Record the result of checking ITEM (e.g. 202606-C1254); the latest mark of an item wins."""
    from gridhead.storage import sql as _sql
    from gridhead.billing_core.jobs import audit as _au
    _au.mark(_sql.lake_root(data), item, result, by, note)
    click.echo(f"{item}: {result} (by {by})")

@cli.group("report")
def report_grp():
    """Static HTML reports with inline SVG charts (open the file in any browser, no server)."""


def _report_out(html_out, text):
    from gridhead.billing_core.jobs import reports
    reports.write(html_out, text)
    click.echo(f"wrote {html_out}")


@report_grp.command("lineloss")
@click.option("--period", "--month", "month", cls=_Aliased, type=_MONTH, required=True, help="YYYY-MM.")
@click.option("--html", "html_out", required=True, type=click.Path(dir_okay=False), help="Output file.")
@click.option("--thresholds", type=click.Path(dir_okay=False), help="TOML bands [default: billing_core/lineloss.toml].")
@_data_option
def report_lineloss(month, html_out, thresholds, data):
    """Line loss of a month: category counts, the rates' distribution, worst areas with daily trends, feeders."""
    from gridhead.storage import archive, sql as _sql
    from gridhead.billing_core.jobs import lineloss as _ll, reports
    first, last = _ll.month_range(month)
    with archive.Archive(_sql.archive_path(data), read_only=True) as a:
        res = _ll.compute(a, _sql.lake_root(data), first, last, thresholds=_ll.load_thresholds(thresholds))
    _report_out(html_out, reports.lineloss_html(res, month))


@report_grp.command("collection")
@click.option("--period", "--month", "month", cls=_Aliased, type=_MONTH, help="YYYY-MM [default: every collected day].")
@click.option("--html", "html_out", required=True, type=click.Path(dir_okay=False), help="Output file.")
@_data_option
def report_collection(month, html_out, data):
    """Collection success rate (采集成功率) by day and area (from the collection table, if there is one)."""
    from gridhead.billing_core.jobs import reports
    _report_out(html_out, reports.collection_html(data, month))


@report_grp.command("bills")
@click.option("--period", "--month", "month", cls=_Aliased, type=_MONTH, help="Billing period YYYY-MM [default: all].")
@click.option("--html", "html_out", required=True, type=click.Path(dir_okay=False), help="Output file.")
@_data_option
def report_bills(month, html_out, data):
    """Bill run totals by category and tariff, and the held bills (from bills/, if there is a run)."""
    from gridhead.billing_core.jobs import reports
    _report_out(html_out, reports.bills_html(data, month))
# === end lineloss / audit / report =================================================================



# === operate (operators' remote control 召测 / 拉闸 / 合闸 / 保电 / 对时 through the control API) ===
# These talk to a running `gridhead serve` (its control API, headend/control.py) with a token from
# `gridhead token add`.  Exit codes: 0 every command ok, 1 a command refused/failed/unconfirmed,
# 2 bad request, 3 missing or insufficient token.
def _api_options(f):
    f = click.option("--json", "as_json", is_flag=True, help="One JSON object per command on stdout.")(f)
    f = click.option("--token-file", "token", type=click.Path(dir_okay=False), callback=_read_token,
                     help="File holding the API token [default: env GRIDHEAD_TOKEN].")(f)
    f = click.option("--token", "token_argv", hidden=True, is_eager=True, expose_value=False,
                     callback=lambda ctx, p, v: ctx.params.__setitem__("token_argv", v) if v else None)(f)
    f = click.option("--api", "--control-url", "api_url", cls=_Aliased, callback=_check_url,
                     envvar=["GRIDHEAD_API", "GRIDHEAD_CONTROL_URL"], default="http://127.0.0.1:7699",
                     show_default=True, help="The head-end's control API [env GRIDHEAD_API].")(f)
    f = click.option("--cafile", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="CA certificate for an https API.")(f)
    f = click.option("--client-cert", envvar="GRIDHEAD_CLIENT_CERT", type=click.Path(dir_okay=False, exists=True),
                     default=None, expose_value=False, callback=_meta,
                     help="Client certificate (PEM, key included or --client-key) for an API "
                          "that requires mutual TLS [env GRIDHEAD_CLIENT_CERT].")(f)
    f = click.option("--client-key", envvar="GRIDHEAD_CLIENT_KEY", type=click.Path(dir_okay=False, exists=True),
                     default=None, expose_value=False, callback=_meta, help="Its private key [env GRIDHEAD_CLIENT_KEY].")(f)
    return f


def _meta(ctx, param, value):
    ctx.meta[f"gridhead.{param.name}"] = value


def _client(api_url, token, cafile):
    from gridhead.headend.control import Client
    meta = click.get_current_context().meta
    return Client(api_url, token, cafile=cafile, cert=meta.get("gridhead.client_cert"),
                  key=meta.get("gridhead.client_key"))


def _targets(target, file):
    if file is None:
        if not target:
            raise click.UsageError("name a target or give --file")
        return [target]
    with click.open_file(file) as fh:
        out = [ln.split("#")[0].strip() for ln in fh]
    out = [t for t in out if t]
    if not out:
        raise GridheadError(f"{file}: no targets (one meter id or address per line)")
    return out


def _offline_options(f):
    f = click.option("--expires", "expires_s", type=click.FloatRange(1), default=3600.0, show_default=True,
                     help="With --offline queue: drop the command after this many seconds.")(f)
    f = click.option("--offline", type=click.Choice(["refuse", "queue"]), default="refuse", show_default=True,
                     help="A target whose terminal is offline: refuse now, or queue until it logs in.")(f)
    f = click.option("--client-id", help="Idempotency key: a repeated id never acts twice [default: a new one].")(f)
    f = click.option("--file", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="Bulk: one target per line (rate-limited by the head-end; progress bar on stderr).")(f)
    return f


def _line(r: dict) -> str:
    head = f"{r.get('target')}: {r.get('command')} {r.get('outcome')}"
    if r.get("error"):
        head += f" — {r['error']}"
    rb = r.get("readback")
    if r.get("values") is not None:
        head += "\n  " + "\n  ".join(json.dumps(v, ensure_ascii=False) for v in r["values"])
    elif rb is not None:
        head += f"  read-back: {json.dumps(rb, ensure_ascii=False)}"
    return head


def _run_commands(api_url, token, cafile, as_json, path, bodies, what):
    import uuid

    from tqdm import tqdm

    client = _client(api_url, token, cafile)
    bad = 0
    bar = tqdm(total=len(bodies), desc=what, unit="cmd", disable=len(bodies) < 2, file=sys.stderr)
    for i, body in enumerate(bodies):
        body = dict(body)
        base = body.pop("_client_id", None)
        body["client_id"] = (f"{base}-{i}" if len(bodies) > 1 else base) if base else uuid.uuid4().hex
        status, r = client.call("POST", path, body)
        if r.get("outcome") not in ("ok", "queued") or r.get("confirmed") is False:
            bad += 1
        if as_json:
            click.echo(json.dumps(r, ensure_ascii=False, default=str))
        else:
            (bar.write if len(bodies) > 1 else click.echo)(_line(r))
        bar.update(1)
    bar.close()
    if bad:
        sys.exit(1)


def _run_job(api_url, token, cafile, as_json, body):
    """A bulk job: waits for a second admin (prints how to approve it), or runs in the head-end while a
    progress bar follows it; then one line (or JSON object) per target."""
    client = _client(api_url, token, cafile)
    _s, job = client.call("POST", "/v1/bulk", body)
    if job.get("state") == "pending_approval":
        if as_json:
            click.echo(json.dumps(job, ensure_ascii=False))
        else:
            click.echo(f"job {job['job']}: {body['command']} of {job['targets']} meters waits for a second admin: "
                       f"gridhead approve {job['job']}")
        return
    _show_job(client, job, as_json)


def _show_job(client, job, as_json):
    import time

    from tqdm import tqdm
    bar = tqdm(total=job["targets"], desc=job["command"], unit="cmd", file=sys.stderr, disable=job["targets"] < 2)
    while True:
        _s, job = client.call("GET", f"/v1/jobs/{job['job']}")
        bar.n = job["done"]
        bar.refresh()
        if job["state"] not in ("running",):
            break
        time.sleep(0.5)
    bar.close()
    bad = 0
    for r in job.get("results", []):
        bad += r.get("outcome") not in ("ok", "queued")
        click.echo(json.dumps(r, ensure_ascii=False, default=str) if as_json else _line({**r, "command": job["command"]}))
    if bad or job["state"] != "done":
        sys.exit(1)


@cli.command("approve")
@click.argument("job")
@_api_options
def op_approve(job, as_json, token, api_url, cafile):
    """Approve JOB as the second admin (two-person rule: a bulk disconnect past [control] bulk_approval,
    protection (保电) off); a bulk job then runs, its progress shown."""
    client = _client(api_url, token, cafile)
    status, r = client.call("POST", f"/v1/jobs/{job}/approve", {})
    if "state" in r and r.get("command") != "protect":
        click.echo(f"job {job} approved; running", err=True)
        return _show_job(client, r, as_json)
    click.echo(json.dumps(r, ensure_ascii=False, default=str) if as_json else _line(r))
    if r.get("outcome") != "ok":
        sys.exit(1)


@cli.command("jobs")
@click.argument("job", required=False)
@_api_options
def op_jobs(job, as_json, token, api_url, cafile):
    """Jobs of the control API (bulk commands, 保电 off) and their state; with JOB, its outcomes."""
    client = _client(api_url, token, cafile)
    _s, r = client.call("GET", f"/v1/jobs/{job}" if job else "/v1/jobs")
    for j in ([r] if job else r["jobs"]):
        click.echo(json.dumps(j, ensure_ascii=False, default=str) if as_json else
                   f"{j['job']}  {j['command']:<10} {j['state']:<16} {j['done']}/{j['targets']}  "
                   f"by {j['requested_by']}" + (f", approved by {j['approved_by']}" if j["approved_by"] else "")
                   + (f"  {json.dumps(j['outcomes'])}" if j["outcomes"] else ""))


@cli.command("read")
@click.argument("args", nargs=-1, required=True, metavar="[METER] REGISTER...")
@click.option("--file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Bulk: one meter per line; then every argument is a register.")
@_api_options
def op_read(args, file, as_json, token, api_url, cafile):
    """Remote read now (召测) of REGISTERs of a meter or terminal: energy, reverse, voltage, current, power,
    pf, frequency, clock, relay, protect, or an OAD / a 645 DI in 8 hex digits."""
    target, regs = (None, list(args)) if file else (args[0], list(args[1:]))
    if not regs:
        raise click.UsageError("name at least one register")
    bodies = [{"target": t, "registers": regs} for t in _targets(target, file)]
    _run_commands(api_url, token, cafile, as_json, "/v1/read", bodies, "read")


@cli.command("disconnect")
@click.argument("meter", required=False)
@click.option("--reason", required=True, help="Why (recorded in the audit log): e.g. arrears notice 2026-07.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_offline_options
@_api_options
def op_disconnect(meter, reason, yes, file, client_id, offline, expires_s, as_json, token, api_url, cafile):
    """Trip a meter's relay (跳闸 / 拉闸): the household loses power.  Refused for a protected (保电) meter."""
    targets = _targets(meter, file)
    if not yes and not click.confirm(f"Cut the power of {len(targets)} meter(s) ({', '.join(targets[:5])}"
                                     f"{'...' if len(targets) > 5 else ''})?", err=True):
        raise click.Abort()
    if file is not None and len(targets) > 1:        # one bulk job (two-person rule past [control] bulk_approval)
        return _run_job(api_url, token, cafile, as_json, {"command": "disconnect", "targets": targets, "reason": reason,
                                                          "offline": offline, "expires_s": expires_s})
    bodies = [{"target": t, "reason": reason, "offline": offline, "expires_s": expires_s, "_client_id": client_id}
              for t in targets]
    _run_commands(api_url, token, cafile, as_json, "/v1/disconnect", bodies, "disconnect")


@cli.command("reconnect")
@click.argument("meter", required=False)
@click.option("--mode", type=click.Choice(["direct", "allowed"]), default="direct", show_default=True,
              help="direct: close the relay (直接合闸); allowed: the customer closes it (合闸允许).")
@_offline_options
@_api_options
def op_reconnect(meter, mode, file, client_id, offline, expires_s, as_json, token, api_url, cafile):
    """Close a meter's relay (合闸)."""
    bodies = [{"target": t, "mode": mode, "offline": offline, "expires_s": expires_s, "_client_id": client_id}
              for t in _targets(meter, file)]
    _run_commands(api_url, token, cafile, as_json, "/v1/reconnect", bodies, "reconnect")


@cli.command("protect")
@click.argument("meter", required=False)
@click.argument("state", type=click.Choice(["on", "off"]))
@_offline_options
@_api_options
def op_protect(meter, state, file, client_id, offline, expires_s, as_json, token, api_url, cafile):
    """Protection (保电) on or off: a protected meter is never tripped.  Needs an admin token."""
    bodies = [{"target": t, "on": state == "on", "offline": offline, "expires_s": expires_s,
               "_client_id": client_id} for t in _targets(meter, file)]
    _run_commands(api_url, token, cafile, as_json, "/v1/protect", bodies, "protect")


@cli.command("timesync")
@click.argument("target", required=False)
@click.option("--min-skew", "min_skew_s", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Leave a clock alone when it is off by at most this many seconds.")
@_offline_options
@_api_options
def op_timesync(target, min_skew_s, file, client_id, offline, expires_s, as_json, token, api_url, cafile):
    """Clock sync (对时) of a terminal or a meter: read its clock, set it, read it back."""
    bodies = [{"target": t, "min_skew_s": min_skew_s, "offline": offline, "expires_s": expires_s,
               "_client_id": client_id} for t in _targets(target, file)]
    _run_commands(api_url, token, cafile, as_json, "/v1/timesync", bodies, "timesync")


@cli.command("status")
@_api_options
def op_status(as_json, token, api_url, cafile):
    """Terminals online, their last heartbeat and communication quality; queued commands."""
    _status, r = _client(api_url, token, cafile).call("GET", "/v1/status")
    if as_json:
        click.echo(json.dumps(r, ensure_ascii=False, default=str))
        return
    click.echo(f"online {r['online']} of {r['known']} terminals; queued commands {r['queued']}; "
               f"commands {json.dumps(r['commands'])}")
    for t in r["terminals"]:
        hb = "-" if t["heartbeat_age_s"] is None else f"{t['heartbeat_age_s']:.0f} s ago"
        click.echo(f"  {t['address']}  {t['peer']}  last heartbeat {hb}  quality {t['quality']:.4f}  "
                   f"frames {t['frames_in']}/{t['frames_out']}  errors {t['errors']}")
    for t in r["offline"][:50]:
        click.echo(f"  {t['address']}  offline")


@cli.group("token")
def token_grp():
    """API tokens of the control API (stored hashed in DATA/control/tokens.json)."""


@token_grp.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), required=True)
@click.option("--expires", "expires_days", type=click.FloatRange(0, min_open=True), default=90.0, show_default=True,
              help="Days until the token expires (rotate it before: gridhead token rotate).")
@_data_option(need="dir")
@click.option("--json", "as_json", is_flag=True)
def token_add(name, role, expires_days, data, as_json):
    """Make a token for NAME; it is printed once and cannot be shown again.  Give it to the operator's
    client through GRIDHEAD_TOKEN or a 0600 file (--token-file), never on a command line."""
    from gridhead.storage import control_log as CL
    from gridhead.storage.paths import data_dir
    d = data_dir(data)
    store = CL.TokenStore(CL.tokens_path(d))
    tid, token = store.add(name, role, expires_days)
    CL.record_local(d, "token-add", f"token:{tid}", {"name": name, "role": role, "expires_days": expires_days})
    click.echo(json.dumps({"id": tid, "name": name, "role": role, "token": token,
                           "expires_utc": store.list()[-1]["expires_utc"]}) if as_json else token)


@token_grp.command("rotate")
@click.argument("token_id")
@click.option("--overlap", "overlap_days", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Days the old token keeps working (0: ends now).")
@click.option("--expires", "expires_days", type=click.FloatRange(0, min_open=True), default=90.0, show_default=True,
              help="Days until the new token expires.")
@_data_option(need="dir")
@click.option("--json", "as_json", is_flag=True)
def token_rotate(token_id, overlap_days, expires_days, data, as_json):
    """A new token with the name and role of TOKEN_ID (id or name); the old one ends after --overlap."""
    from gridhead.storage import control_log as CL
    from gridhead.storage.paths import data_dir
    d = data_dir(data)
    old, tid, token = CL.TokenStore(CL.tokens_path(d)).rotate(token_id, overlap_days, expires_days)
    CL.record_local(d, "token-rotate", f"token:{tid}", {"old": old["id"], "name": old["name"], "overlap_days": overlap_days})
    click.echo(json.dumps({"id": tid, "name": old["name"], "role": old["role"], "token": token, "old": old["id"],
                           "old_expires_utc": old["expires_utc"]}) if as_json else token)


@token_grp.command("list")
@_data_option(need="dir")
@click.option("--json", "as_json", is_flag=True)
def token_list(data, as_json):
    """The tokens (never their secrets)."""
    from gridhead.storage import control_log as CL
    from gridhead.storage.paths import data_dir
    for e in CL.TokenStore(CL.tokens_path(data_dir(data))).list():
        click.echo(json.dumps(e) if as_json else
                   f"{e['id']}  {e['name']:<16} {e['role']:<8} created {e['created_utc']}"
                   + (f"  expires {e['expires_utc']}" if e.get("expires_utc") else "")
                   + (f"  revoked {e['revoked_utc']}" if e["revoked_utc"] else ""))


@token_grp.command("revoke")
@click.argument("token_id")
@_data_option(need="dir")
def token_revoke(token_id, data):
    """Revoke a token by id or name (a running head-end notices at once)."""
    from gridhead.storage import control_log as CL
    from gridhead.storage.paths import data_dir
    d = data_dir(data)
    e = CL.TokenStore(CL.tokens_path(d)).revoke(token_id)
    CL.record_local(d, "token-revoke", f"token:{e['id']}")
    click.echo(f"revoked {e['id']} ({e['name']})")


@cli.group("control-log")
def control_log_grp():
    """The control API's audit log (操作日志, DATA/control/audit.jsonl): hash-chained, append-only.
    (`gridhead audit` is the theft/fault audit list, 稽查.)"""


@control_log_grp.command("verify")
@_data_option(need="dir")
@click.option("--key-file", type=click.Path(dir_okay=False), default=None,
              help="The chain's HMAC key file, as [control] audit_key_file [default: $GRIDHEAD_AUDIT_KEY_FILE, "
                   "else the key in tokens.json].")
@click.option("--json", "as_json", is_flag=True)
def control_log_verify(data, key_file, as_json):
    """Check the hash chain: exit 0 when intact, else 1 and the first edited, removed or reordered
    record (line and seq)."""
    from gridhead.headend.control import check_audit_chain
    from gridhead.storage import control_log as CL
    from gridhead.storage.paths import data_dir
    d = data_dir(data)
    if not CL.audit_path(d).exists():
        raise GridheadError(f"{CL.audit_path(d)}: no audit log")
    r = check_audit_chain(d, key_file)
    if as_json:
        click.echo(json.dumps(r, ensure_ascii=False))
    elif r["ok"]:
        click.echo(f"{CL.audit_path(d)}: {r['records']} records, chain intact; head seq {r['head']['seq']} "
                   f"sha256 {r['head']['sha256']}")
    else:
        b = r["breaks"][0]
        click.echo(f"{CL.audit_path(d)}: line {b['line']} (seq {b['seq']}): {b['problem']}"
                   + (f"; {len(r['breaks']) - 1} more break(s)" if len(r["breaks"]) > 1 else "")
                   + (f"; {len(r['accepted'])} accepted at a start" if r["accepted"] else ""), err=True)
    if not r["ok"]:
        sys.exit(1)
# === end operate ===================================================================================


if __name__ == "__main__":
    main()

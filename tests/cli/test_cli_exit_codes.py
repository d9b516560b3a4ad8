"""The CLI's contract for bad input (README, "Every command"): one line on stderr saying what and where,
exit status 2 — for every command of the click tree.  A command added without a case here fails
:func:`test_every_command_has_a_bad_input_case`; the cases are real bad input of each command (a month
13, a day that does not exist, a bad row in a file, an unknown item, a URL that is not one), run in a
small data directory.  :func:`test_every_data_command_says_what_is_missing`: a data directory or an
archive that is not there is one line and exit 2 for every command that reads them (issue 19)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from gridhead.cli import cli

from tests.conftest import generated

# command path -> (arguments, text the error line must contain); {data}: the data directory, {tmp}: a
# scratch directory, {missing}: a path that does not exist
A698 = ["-a", "000000000001"]       # the 698 group's own option comes before the subcommand
FRAME = {       # frame commands: the whole argument list (their groups take options of their own)
    "frame decode": (["frame", "decode", "68 ZZ 16"], "not a hex digit"),
    "frame encode 698 get": (["frame", "encode", "698", *A698, "get", "--oad", "XYZ"], "8 hex digits"),
    "frame encode 698 get-record": (["frame", "encode", "698", *A698, "get-record", "--oad", "5004"], "8 hex digits"),
    "frame encode 698 action": (["frame", "encode", "698", *A698, "action", "explode"], "'explode' is not one of"),
    "frame encode 698 link-response": (["frame", "encode", "698", *A698, "link-response", "--request-time", "noon"],
                                       "not ISO 8601"),
}
F645 = {   # frame encode 645 SUB ...
    "frame encode 645 read": (["read", "--address", "12345", "--di", "00010000"], "must be 12 digits"),
    "frame encode 645 read-follow-up": (["read-follow-up", "-a", "000012345678", "--di", "nope", "--seq", "1"],
                                        "neither 8 hex digits"),
    "frame encode 645 read-address": (["read-address", "000012345678"], "unexpected extra argument"),
    "frame encode 645 write": (["write", "-a", "000012345678", "--di", "04000101", "--value", "abc"],
                               "not ISO 8601"),
    "frame encode 645 write-address": (["write-address", "--new-address", "12"], "must be 12 digits"),
    "frame encode 645 freeze": (["freeze", "-a", "000012345678", "--when", "xx"], "8 digits MMDDhhmm"),
    "frame encode 645 baud": (["baud", "-a", "000012345678", "--baud", "1234"], "baud rate 1234"),
    "frame encode 645 password": (["password", "-a", "000012345678", "--old", "zz", "--new", "02000000"],
                                  "8 hex digits"),
    "frame encode 645 demand-reset": (["demand-reset", "-a", "000012345678", "--password", "zz"], "8 hex digits"),
    "frame encode 645 meter-reset": (["meter-reset", "-a", "000012345678", "--operator", "zz"], "8 hex digits"),
    "frame encode 645 event-reset": (["event-reset", "-a", "000012345678", "--event-di", "nope"],
                                     "neither 8 hex digits"),
    "frame encode 645 time-sync": (["time-sync", "--time", "never"], "not ISO 8601"),
    "frame encode 645 remote-control": (["remote-control", "-a", "000012345678", "--command", "trip",
                                         "--valid-until", "never"], "not ISO 8601"),
    "frame encode 645 terminal-output": (["terminal-output", "-a", "000012345678", "--output", "5"],
                                         "not in the range"),
}
CASES = {**FRAME, **{n: (["frame", "encode", "645", *a], t) for n, (a, t) in F645.items()}}
CASES.update({name: ([*name.split(), *a], t) for name, (a, t) in {      # the arguments after the command
    "gen": (["--customers", "0", "--days", "1", "--data", "{tmp}"], "--customers"),
    "archive import": (["{tmp}/customers.csv", "--data", "{tmp}/new"], "bad row"),
    "archive export": (["--out", "{tmp}/x", "--format", "xml", "--data", "{data}"], "'xml' is not one of"),
    "archive info": (["--data", "{missing}"], "no data directory at"),
    "sql": (["SELECT nope FROM customers", "--data", "{data}"], "Binder Error"),
    "lake compact": (["--table", "bills", "--data", "{data}"], "'bills' is not one of"),
    "lake info": (["--data", "{missing}"], "no data directory at"),
    "bill run": (["--period", "2026-13", "--data", "{data}"], "'2026-13' is not a month"),
    "bill review": (["--release", "1", "--data", "{data}"], "--release needs --by"),
    "bill show": (["3100000001", "--period", "26-06", "--data", "{data}"], "'26-06' is not a month"),
    "pay add": (["3100000001", "ten", "--by", "x", "--data", "{data}"], "'ten' is not an amount"),
    "pay refund": (["3100000001", "1.234", "--payment", "R1", "--by", "x", "--note", "n", "--data", "{data}"],
                   "'1.234' is not"),
    "pay import": (["{tmp}/bank.csv", "--data", "{data}"], "bad row"),
    "ledger post": (["--period", "2026-6", "--data", "{data}"], "'2026-6' is not a month"),
    "ledger adjust": (["3100000001", "x", "--by", "x", "--note", "n", "--data", "{data}"], "'x' is not an amount"),
    "ledger check": (["--data", "{missing}"], "no data directory at"),
    "ledger arrears": (["--as-of", "2026-02-30", "--data", "{data}"], "February 2026 has 28 days"),
    "ledger export": (["--period", "2026-00", "--out", "{tmp}/e.csv", "--data", "{data}"], "is not a month"),
    "prepay run": (["--date", "2026-06-31", "--data", "{data}"], "June 2026 has 30 days"),
    "prepay status": (["--data", "{missing}"], "no data directory at"),
    "prepay send": (["--api", "ftp://x", "--data", "{data}"], "is not an http://"),
    "pay show": (["3100000001", "--data", "{missing}"], "no data directory at"),
    "ledger late-fees": (["--as-of", "2026-02-30", "--data", "{data}"], "February 2026 has 28 days"),
    "ledger waive": (["3100000001", "x", "--fee", "1", "--by", "a", "--note", "n", "--data", "{data}"],
                     "'x' is not an amount"),
    "serve": (["--config", "{missing}/headend.toml"], "No such file"),
    "sim": (["--fault-rate", "bogus=1", "--connect", "127.0.0.1:1"], "fault 'bogus'"),
    "collect run": (["--from", "2026-06-05", "--to", "2026-06-01", "--data", "{data}"], "is before --from"),
    "collect status": (["--date", "2026-13-01", "--data", "{data}"], "there is no month 13"),
    "demo": (["--terminals", "0", "--data", "{tmp}/demo"], "--terminals"),
    "lineloss": (["--date", "2026-02-30", "--data", "{data}"], "February 2026 has 28 days"),
    "audit": (["--period", "2026-13", "--data", "{data}"], "'2026-13' is not a month"),
    "audit mark": (["209901-C1", "--result", "fault", "--by", "x", "--data", "{data}"], "no audit item"),
    "report lineloss": (["--period", "2026-13", "--html", "{tmp}/r.html", "--data", "{data}"], "is not a month"),
    "report collection": (["--period", "July", "--html", "{tmp}/r.html", "--data", "{data}"], "is not a month"),
    "report bills": (["--month", "2026-7", "--html", "{tmp}/r.html", "--data", "{data}"], "is not a month"),
    "read": (["000000000001", "energy", "--api", "not-a-url"], "'not-a-url' is not an http:// or https:// URL"),
    "disconnect": (["000000000001", "--reason", "x", "--yes", "--api", "ftp://x"], "is not an http://"),
    "reconnect": (["000000000001", "--mode", "maybe"], "'maybe' is not one of"),
    "protect": (["000000000001", "maybe"], "'maybe' is not one of"),
    "timesync": (["000000000001", "--min-skew", "-1"], "--min-skew"),
    "status": (["--api", "http://"], "is not an http://"),
    "token add": (["alice", "--role", "god", "--data", "{data}"], "'god' is not one of"),
    "token list": (["--data", "{missing}"], "no data directory at"),
    "token revoke": (["nobody", "--data", "{data}"], "no active token 'nobody'"),
    "token rotate": (["nobody", "--data", "{data}"], "no active token 'nobody'"),
    "approve": (["J1", "--api", "ftp://x"], "is not an http://"),
    "jobs": (["--api", "http://"], "is not an http://"),
    "control-log verify": (["--data", "{missing}"], "no data directory at"),
}.items()})


def commands(group: click.Group = cli, path: tuple = ()) -> list[tuple[str, click.Command]]:
    """Every command a user can run: the leaves of the tree, and groups that run without a subcommand."""
    out = []
    for name, cmd in group.commands.items():
        p = (*path, name)
        if isinstance(cmd, click.Group):
            if cmd.invoke_without_command:
                out.append((" ".join(p), cmd))
            out += commands(cmd, p)
        else:
            out.append((" ".join(p), cmd))
    return out


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    data = generated(tmp_path_factory.mktemp("exit") / "data", 40, 2)
    tmp = tmp_path_factory.mktemp("scratch")
    lines = (data / "archive-files" / "customers.csv").read_text().splitlines()
    lines[2] = lines[2].replace("residential", "residental", 1) if "residential" in lines[2] else lines[2] + "x"
    (tmp / "customers.csv").write_text("\n".join(lines) + "\n")
    (tmp / "bank.csv").write_text("ref,customer_no,amount_yuan,paid_on\nB1,9999999999,10,2026-07-01\n")
    return {"data": str(data), "tmp": str(tmp), "missing": str(tmp / "missing")}


def test_every_command_has_a_bad_input_case():
    names = {n for n, _ in commands()}
    assert names - set(CASES) == set(), "add a bad-input case to CASES for each new command"
    assert set(CASES) - names == set(), "CASES names a command that is not in the tree"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_exit_2(dirs, name):
    args, text = CASES[name]
    r = CliRunner().invoke(cli, [a.format(**dirs) for a in args])
    err = r.stderr.splitlines()
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert err and err[-1].startswith("error: "), r.output
    # one line — commands refusing a file list its bad rows first (FILE, row N ...), then the one error line
    assert len(err) == 1 or name in ("archive import", "pay import"), err
    assert text in r.stderr, r.stderr


def test_every_data_command_says_what_is_missing(dirs, tmp_path):
    """No data directory, or one without an archive: one line naming the path, exit 2 — before any work
    (--data first on the line, so nothing else is parsed yet); a failed import leaves neither behind."""
    missing = tmp_path / "nothing"
    empty = tmp_path / "empty"
    empty.mkdir()
    checked = 0
    for name, cmd in commands():
        opt = next((p for p in cmd.params if p.name == "data"), None)
        if opt is None or name in ("gen", "archive import", "serve", "demo"):
            continue            # gen and archive import make the data directory; serve and demo have their own
        r = CliRunner().invoke(cli, [*name.split(), "--data", str(missing)])
        assert r.exit_code == 2 and r.stderr == f"error: no data directory at {missing} (give --data DIR or set " \
                                                 f"GRIDHEAD_DATA)\n", (name, r.output)
        r = CliRunner().invoke(cli, [*name.split(), "--data", str(empty)])
        if name.split()[0] in ("sql", "lake", "token", "control-log"):
            continue            # these need the directory only (a lake without an archive is queryable)
        assert r.exit_code == 2 and r.stderr == (f"error: no archive at {empty / 'archive.duckdb'} (import one: "
                                                 f"gridhead archive import FILE... --data {empty})\n"), (name, r.output)
        checked += 1
    assert checked >= 20
    r = CliRunner().invoke(cli, ["archive", "import", f"{dirs['tmp']}/customers.csv", "--data", str(missing)])
    assert r.exit_code == 2 and not missing.exists()
    r = CliRunner().invoke(cli, ["archive", "import", f"{dirs['tmp']}/customers.csv", "--data", str(empty)])
    assert r.exit_code == 2 and list(empty.iterdir()) == []


def test_one_name_per_setting_the_old_ones_still_taken(dirs):
    """--api / GRIDHEAD_API and --period everywhere (issue 19); the old spellings work but are not shown."""
    run = CliRunner().invoke
    for path in (["pay", "add"], ["pay", "import"], ["prepay", "run"], ["status"], ["read"]):
        h = run(cli, [*path, "--help"]).output
        assert "--api" in h and "--control-url" not in h and "GRIDHEAD_API" in h, path
    for path in (["lineloss"], ["audit"], ["report", "lineloss"], ["report", "collection"], ["report", "bills"],
                 ["bill", "run"], ["ledger", "post"]):
        h = run(cli, [*path, "--help"]).output
        assert "--period" in h and "--month" not in h, path
    args = ["pay", "add", "3100000001", "1", "--by", "x", "--data", dirs["data"]]
    for extra, env in ((["--control-url", "nope"], {}), ([], {"GRIDHEAD_CONTROL_URL": "nope"}),
                       ([], {"GRIDHEAD_API": "nope"})):
        r = run(cli, [*args, *extra], env=env)
        assert r.exit_code == 2 and "Invalid value for '--api': 'nope' is not an http" in r.stderr, (extra, env)
    r = run(cli, ["report", "bills", "--month", "2026-6", "--html", "x.html", "--data", dirs["data"]])
    assert r.exit_code == 2 and "Invalid value for '--period': '2026-6'" in r.stderr

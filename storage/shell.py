"""The interactive SQL shell of ``gridhead sql`` over a :class:`storage.sql.Session`.

Statements end with ';' and may span lines; a bad statement prints one error line and the shell goes
on.  Dot commands (the common ones of the sqlite and duckdb shells), at the start of a statement:

    .tables / .views         the views and tables
    .schema [NAME]           the columns of NAME (of every view without NAME)
    .mode [table|csv|json]   how results are printed
    .help                    the list
    .quit / .exit / .q       leave (as does the end of input)
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from typing import TextIO

from gridhead.protocols.errors import GridheadError

from . import sql as _sql

MODES = ("table", "csv", "json")
PROMPT, CONTINUATION = "gridhead> ", "     ...> "
HELP = """statements end with ';' and may span lines.  Dot commands:
  .tables            the views and tables (.views: the same)
  .schema [NAME]     the columns of NAME (every view without NAME)
  .mode [table|csv|json]   how results are printed (now: {mode})
  .help              this text
  .quit / .exit      leave (or end of input, Ctrl-D)"""

_TABLES = "SELECT DISTINCT table_name AS name FROM information_schema.tables ORDER BY 1"
_SCHEMA = ("SELECT name, column_name, data_type FROM (SELECT DISTINCT table_name AS name, column_name, data_type, "
           "ordinal_position FROM information_schema.columns{where}) ORDER BY name, ordinal_position")


class Shell:
    """One shell: :meth:`feed` it lines; results go to ``out`` (csv and json straight to stdout, as
    ``storage.sql.write_result`` writes them), messages and errors to ``err``."""

    def __init__(self, session: _sql.Session, mode: str = "table", *, out: Callable[[str], object] = print,
                 err: Callable[[str], object] = lambda text: print(text, file=sys.stderr)) -> None:
        if mode not in MODES:
            raise GridheadError(f"sql shell: mode {mode!r}: {', '.join(MODES)}")
        self.session, self.mode, self.out, self.err = session, mode, out, err
        self.buf: list[str] = []
        self.done = False

    @property
    def prompt(self) -> str:
        return CONTINUATION if self.buf else PROMPT

    def feed(self, line: str) -> None:
        """One line of input; sets :attr:`done` on .quit."""
        line = line.rstrip("\n")
        if not self.buf and line.strip().startswith("."):
            self._dot(line.strip().rstrip(";"))
            return
        self.buf.append(line)
        if line.rstrip().endswith(";"):
            stmt, self.buf = "\n".join(self.buf), []
            self._run(stmt)

    def _dot(self, line: str) -> None:
        word, _, arg = line.partition(" ")
        arg = arg.strip()
        if word in (".quit", ".exit", ".q"):
            self.done = True
        elif word == ".help":
            self.err(HELP.format(mode=self.mode))
        elif word == ".mode":
            if arg in MODES:
                self.mode = arg
            elif arg:
                self.err(f"error: .mode {arg}: {', '.join(MODES)}")
            self.err(f"mode {self.mode}")
        elif word in (".tables", ".views"):
            names = self.session.select(_TABLES).column("name").to_pylist()
            self.out(textwrap.fill("  ".join(names), width=100, break_on_hyphens=False))
        elif word == ".schema":
            self._run(_SCHEMA.format(where=" WHERE table_name = ?" if arg else ""), [arg] if arg else None)
        else:
            self.err(f"error: unknown command {word}: .help lists the dot commands; SQL ends with ';'")

    def _run(self, stmt: str, params: list[object] | None = None) -> None:
        try:
            if self.mode == "table":
                self.out(self.session.render_table(stmt, params))
            else:
                tbl = self.session.query(stmt, params)
                if tbl is not None:
                    _sql.write_result(tbl, self.mode, None)
        except GridheadError as exc:          # a bad statement does not end the shell
            self.err(f"error: {exc}")


def run(shell: Shell, stdin: TextIO | None = None) -> None:
    """Read ``stdin`` (a terminal: with prompts and line editing) into ``shell`` until .quit or its end."""
    stdin = stdin or sys.stdin
    tty = stdin.isatty()
    shell.err(f"gridhead sql on {shell.session.data} — statements end with ';', .help for the dot commands, .quit")
    while not shell.done:
        try:
            line = input(shell.prompt) if tty else stdin.readline()
        except EOFError:
            break
        if not tty and line == "":
            break
        shell.feed(line)


__all__ = ["Shell", "run", "HELP", "MODES"]

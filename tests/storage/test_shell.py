"""The SQL shell (storage.shell) on an empty data directory: statements across lines, errors that do not
end it, dot commands, and a .schema name that cannot break out of its query."""

import io

from gridhead.storage import shell, sql


def _shell(tmp_path, mode="table"):
    out, err = [], []
    s = shell.Shell(sql.Session(tmp_path), mode, out=out.append, err=err.append)
    return s, out, err


def test_statements_errors_and_dot_commands(tmp_path):
    s, out, err = _shell(tmp_path)
    with s.session:
        shell.run(s, io.StringIO("SELECT 41 +\n 1 AS answer;\nSELECT nope;\n.mode csv\n.mode xml\n.schema customers\n"
                                 ".tables\n.frob\n.quit\nSELECT 99;\n"))
    assert "42" in out[0] and "answer" in out[0]                       # two lines, one statement
    assert any(e.startswith("error: sql: Binder") for e in err)        # and the shell went on
    assert "error: .mode xml: table, csv, json" in err and err.count("mode csv") == 2
    assert "daily_frozen" in out[-1] and "readings" in out[-1]         # .tables
    assert any(e.startswith("error: unknown command .frob") for e in err)
    assert s.done and not any("99" in o for o in out)                  # .quit ends before SELECT 99


def test_schema_name_is_a_parameter(tmp_path, capsys):
    s, out, err = _shell(tmp_path, "json")
    with s.session:
        s.feed(".schema readings")
        s.feed(".schema x' OR '1'='1")
    lines = capsys.readouterr().out.splitlines()
    assert lines and all('"name": "readings"' in line for line in lines)   # the second matched nothing
    assert not err


def test_prompt_follows_the_statement(tmp_path):
    s, _out, _err = _shell(tmp_path)
    with s.session:
        assert s.prompt == shell.PROMPT
        s.feed("SELECT")
        assert s.prompt == shell.CONTINUATION
        s.feed("1;")
        assert s.prompt == shell.PROMPT

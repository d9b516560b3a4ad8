"""The house's layering (STYLE.md): protocols/ is sans-I/O; only storage/ touches duckdb / pyarrow."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

from .conftest import ROOT

IO_MODULES = {"asyncio", "socket", "serial", "serial_asyncio", "aiomqtt", "duckdb", "pyarrow", "time",
              "selectors", "ssl", "uvloop"}
STORAGE_ONLY = {"duckdb", "pyarrow"}


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno


def _pyx_imports(path):
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = re.match(r"\s*(?:from|import|cimport)\s+([\w.]+)", line)
        if m:
            yield m.group(1).split(".")[0], n


def _python_files(*parts):
    for part in parts:
        p = ROOT / part
        if p.is_file():
            yield p
        elif p.is_dir():
            yield from sorted(p.rglob("*.py"))


def test_protocols_import_no_io():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for p in _python_files("protocols") for mod, line in _imports(p) if mod in IO_MODULES]
    bad += [f"{p.relative_to(ROOT)}:{line} imports {mod}"
            for p in sorted((ROOT / "ext").glob("*.pyx")) for mod, line in _pyx_imports(p) if mod in IO_MODULES]
    assert not bad, "protocols/ must stay sans-I/O:\n" + "\n".join(bad)


def test_only_storage_imports_duckdb_and_pyarrow():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for p in _python_files("protocols", "headend", "billing_core", "cli.py")
           for mod, line in _imports(p) if mod in STORAGE_ONLY]
    assert not bad, "only storage/ may import duckdb or pyarrow:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", ["protocols.dlt645"])
def test_importing_protocols_pulls_in_no_io(package):
    # the interpreter itself loads some of these at start-up (zipimport loads time): compare to a bare start
    probe = f"import sys; print(','.join(sorted(set({sorted(IO_MODULES)!r}) & set(sys.modules))))"
    bare = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    out = subprocess.run([sys.executable, "-c", f"import {package}; " + probe], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    extra = set(out.stdout.strip().split(",")) - set(bare.stdout.strip().split(",")) - {""}
    assert not extra, f"importing {package} loaded I/O modules: {sorted(extra)}"

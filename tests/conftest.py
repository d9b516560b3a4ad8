"""Shared fixtures.  ``kernels`` runs a test under the compiled kernels and under their pure twins."""

from __future__ import annotations

import json
import importlib
import os
import pathlib
import re
import sys
import subprocess

import pytest

from gridhead.protocols import accel

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# the shared vectors when they sit beside the clone (CI, developers), else the copy taken with the repo
VECTORS_FILE = SHARED / "vectors" / "frames.json"
if not VECTORS_FILE.exists():
    VECTORS_FILE = ROOT / "tests" / "data" / "frames.json"


def generated(d: pathlib.Path, customers: int, days: int, **kw) -> pathlib.Path:
    """A fleet generated into ``d`` (storage.generator; ``kw`` as it takes them) with its archive imported.
    Test data: the generator's fsyncs are skipped, its durability is not under test."""
    from gridhead.storage import archive, generator
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", lambda fd: None)
        generator.generate(d, customers, days, **kw)
    with archive.Archive(d / "archive.duckdb") as a:
        a.import_files(sorted((d / "archive-files").glob("*.csv")))
    return d


def _kernel_params():
    if os.environ.get("GRIDHEAD_PUREPYTHON", "") not in ("", "0"):
        return ["pure"]
    return ["compiled", "pure"]


def _built_kernels():
    """Every kernel module setup.py builds (those whose ext/ source exists)."""
    text = (ROOT / "setup.py").read_text()
    return [mod for mod, src in re.findall(r'"([\w.]+)": "(ext/\w+\.pyx)"', text) if (ROOT / src).exists()]


@pytest.fixture(params=_kernel_params())
def kernels(request):
    """Switch every kernel binding to the compiled module or the pure twin for one test."""
    if request.param == "compiled":
        missing = [m for m in _built_kernels() if not accel.is_compiled(m)]
        if missing:
            pytest.fail(f"compiled kernels {missing} are not built: run `pip install -e .` "
                        "(or set GRIDHEAD_PUREPYTHON=1)")
    for module, _attr, _name in accel.USERS:       # every user imported, so that use() reaches it
        importlib.import_module(module)
    accel.use(request.param)
    yield request.param
    accel.use("pure" if os.environ.get("GRIDHEAD_PUREPYTHON", "") not in ("", "0") else "auto")


def load_vectors(prefix: str):
    """The public frame vectors of ../shared/vectors/frames.json whose protocol starts with ``prefix``."""
    rows = json.loads(VECTORS_FILE.read_text())
    return [r for r in rows if r["protocol"].startswith(prefix)]


def mypy_strict(package: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    """``mypy --strict -p <package>`` with the project's config.  mypy names modules after folders and the
    clone may not be called "gridhead" (a CI checkout), so it checks the package through a link of that
    name, from a directory holding nothing else."""
    (tmp_path / "gridhead").symlink_to(ROOT, target_is_directory=True)
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
           "--cache-dir", str(tmp_path / ".mypy_cache"), "--strict", "-p", package]
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def strict_in_pyproject() -> set[str]:
    """The modules the project's mypy config checks with ``strict = true`` (its per-module overrides): a plain
    `mypy` run checks them as strictly as the typing tests do."""
    import tomllib
    overrides = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["overrides"]
    return {m for o in overrides if o.get("strict") for m in o["module"]}

"""storage/ (lake, WAL, archive, views, state, the fleet generator) type-checks clean under ``mypy --strict``."""

from __future__ import annotations

import pathlib

import pytest

from tests.conftest import mypy_strict

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent  # the repository root: the package gridhead


def test_mypy_strict_storage(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("mypy")
    proc = mypy_strict("gridhead.storage", tmp_path)
    assert proc.returncode == 0, f"mypy --strict -p gridhead.storage failed:\n{proc.stdout}{proc.stderr}"


def test_storage_is_strict_in_pyproject() -> None:
    """A plain `mypy` run with the project's config checks storage as strictly as the test does."""
    import tomllib
    overrides = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["overrides"]
    strict = {m for o in overrides if o.get("strict") for m in o["module"]}
    assert {"gridhead.storage", "gridhead.storage.*"} <= strict

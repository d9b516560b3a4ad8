"""storage/ (lake, WAL, archive, views, state, the fleet generator) type-checks clean under ``mypy --strict``."""

from __future__ import annotations

import pathlib

import pytest

from tests.conftest import mypy_strict, strict_in_pyproject


def test_mypy_strict_storage(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("mypy")
    proc = mypy_strict("gridhead.storage", tmp_path)
    assert proc.returncode == 0, f"mypy --strict -p gridhead.storage failed:\n{proc.stdout}{proc.stderr}"


def test_storage_is_strict_in_pyproject() -> None:
    """A plain `mypy` run with the project's config checks storage as strictly as the test does."""
    assert {"gridhead.storage", "gridhead.storage.*"} <= strict_in_pyproject()

"""billing_core/ type-checks clean under ``mypy --strict``, and the compiled bill kernel's stub agrees with
its twin."""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib

import pytest

from gridhead.protocols import accel

from tests.conftest import mypy_strict, strict_in_pyproject

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent  # the repository root: the package gridhead


def test_mypy_strict_billing_core(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("mypy")
    proc = mypy_strict("gridhead.billing_core", tmp_path)
    assert proc.returncode == 0, f"mypy --strict -p gridhead.billing_core failed:\n{proc.stdout}{proc.stderr}"


def test_billing_core_is_strict_in_pyproject() -> None:
    """A plain `mypy` run with the project's config checks billing_core as strictly as the test does."""
    assert {"gridhead.billing_core", "gridhead.billing_core.*"} <= strict_in_pyproject()


def _defs(path: pathlib.Path) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}


def _params(f: ast.FunctionDef) -> list[tuple[str, str, str]]:
    a = f.args
    defaults = [None] * (len(a.args) - len(a.defaults)) + list(a.defaults)
    return [(p.arg, ast.unparse(p.annotation) if p.annotation else "", ast.unparse(d) if d else "")
            for p, d in zip(a.args, defaults)]


def test_billing_stub_agrees_with_twin_and_compiled() -> None:
    """Every public function of the bill kernel is in _billing.pyi with the twin's annotations and
    return type; the compiled module's parameters are the stub's."""
    here = ROOT / "billing_core"
    stub, twin = _defs(here / "_billing.pyi"), _defs(here / "_billing_py.py")
    name = "gridhead.billing_core._billing"
    compiled = importlib.import_module(name) if accel.is_compiled(name) else None
    public = {n for n in twin if not n.startswith("_")}
    if compiled is not None:
        public |= {n for n, v in vars(compiled).items() if inspect.isbuiltin(v) or inspect.isfunction(v)
                   if not n.startswith("_") and getattr(v, "__module__", None) == compiled.__name__}
    assert public and public <= set(stub), f"_billing.pyi lacks {sorted(public - set(stub))}"
    for fname, f in stub.items():
        assert fname in twin, fname
        assert _params(twin[fname]) == _params(f), fname
        assert ast.unparse(twin[fname].returns or ast.Constant(None)) == ast.unparse(
            f.returns or ast.Constant(None)), fname
        if compiled is not None:
            sig = inspect.signature(getattr(compiled, fname))
            assert [p.name for p in sig.parameters.values()] == [p for p, _, _ in _params(f)], fname

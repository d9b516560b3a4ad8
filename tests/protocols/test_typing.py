"""protocols/ type-checks clean under ``mypy --strict``, and the error classes written out for it agree
with the standard's tables they come from."""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib

import pytest

from gridhead.protocols import accel
from gridhead.protocols.dlt645 import device_errors
from gridhead.protocols.dlt698 import dar

from tests.conftest import mypy_strict

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent  # the repository root: the package gridhead


def test_mypy_strict_protocols(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("mypy")
    proc = mypy_strict("gridhead.protocols", tmp_path)
    assert proc.returncode == 0, f"mypy --strict -p gridhead.protocols failed:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("row", [r for r in dar.TABLE if r[0]], ids=lambda r: r[1])
def test_dar_classes_match_the_table(row: tuple[int, str, str, str]) -> None:
    code, cls_name, en, zh = row
    cls = getattr(dar, cls_name)
    assert dar.DAR_ERRORS[code] is cls
    assert issubclass(cls, dar.DarError)
    assert (cls.__name__, cls.__module__, cls.code, cls.name, cls.name_zh) == (
        cls_name, dar.__name__, code, en, zh)
    assert cls.__doc__ == f"DAR {code}: {en} ({zh})."
    assert dar.NAMES[code] == en


def test_dar_tables_complete() -> None:
    assert sorted(dar.DAR_ERRORS) == [r[0] for r in dar.TABLE if r[0]]
    assert list(dar.NAMES) == [r[0] for r in dar.TABLE]


@pytest.mark.parametrize("row", device_errors._TABLE, ids=lambda r: r[1])
def test_dlt645_error_classes_match_the_table(row: tuple[int, str, str, str]) -> None:
    bit, cls_name, en, zh = row
    cls = getattr(device_errors, cls_name)
    assert device_errors.ERROR_BITS[bit] is cls
    assert issubclass(cls, device_errors.Dlt645DeviceError)
    assert (cls.__name__, cls.__module__, cls.bit, cls.code, cls.name, cls.name_zh) == (
        cls_name, device_errors.__name__, bit, 1 << bit, en, zh)
    assert cls.__doc__ == f"ERR bit {bit}: {en} ({zh})."


def test_dlt645_error_bits_complete() -> None:
    assert list(device_errors.ERROR_BITS) == [r[0] for r in device_errors._TABLE]


def _defs(path: pathlib.Path) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}


def _params(f: ast.FunctionDef) -> list[tuple[str, str, str]]:
    a = f.args
    defaults = [None] * (len(a.args) - len(a.defaults)) + list(a.defaults)
    return [(p.arg, ast.unparse(p.annotation) if p.annotation else "", ast.unparse(d) if d else "")
            for p, d in zip(a.args, defaults)]


@pytest.mark.parametrize("kernel", ["_framing", "_framing698", "_axdr", "_apdu698"])
def test_stub_agrees_with_twin_and_compiled(kernel: str) -> None:
    """Every public function of a kernel is in its .pyi with the twin's annotations; the compiled module's
    parameters are the stub's (the twin may take extra trailing parameters with defaults, used inside)."""
    here = ROOT / "protocols"
    stub, twin = _defs(here / f"{kernel}.pyi"), _defs(here / f"{kernel}_py.py")
    compiled = (importlib.import_module(f"gridhead.protocols.{kernel}")
                if accel.is_compiled(f"gridhead.protocols.{kernel}") else None)
    public = {n for n in twin if not n.startswith("_")}
    if compiled is not None:
        public |= {n for n, v in vars(compiled).items() if inspect.isbuiltin(v) or inspect.isfunction(v)
                   if not n.startswith("_") and getattr(v, "__module__", None) == compiled.__name__}
    assert public <= set(stub), f"{kernel}.pyi lacks {sorted(public - set(stub))}"
    for name, f in stub.items():
        want = _params(f)
        if name in twin:
            got = _params(twin[name])
            assert got[:len(want)] == want and all(d for _, _, d in got[len(want):]), name
            assert ast.unparse(twin[name].returns or ast.Constant(None)) == ast.unparse(
                f.returns or ast.Constant(None)), name
        if compiled is not None and hasattr(compiled, name):
            sig = inspect.signature(getattr(compiled, name))
            assert [p.name for p in sig.parameters.values()] == [p for p, _, _ in want], name

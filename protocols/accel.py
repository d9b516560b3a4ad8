"""Choose between compiled kernels and their pure-Python twins.

Every compiled module ``protocols._X`` (built from ``ext/_X.pyx``) has a twin ``protocols._X_py`` with
the same functions and results.  The compiled one is used when it imports; ``GRIDHEAD_PUREPYTHON=1``
forces the twins.  Modules that use a kernel take it with :func:`bind`, so that :func:`use` (for the
tests, which run against both) swaps every binding at once.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

_bindings: list[tuple[dict, str, str]] = []
_forced_pure = os.environ.get("GRIDHEAD_PUREPYTHON", "") not in ("", "0")
_mode = "pure" if _forced_pure else "auto"


def load(name: str, mode: str | None = None) -> ModuleType:
    """Return kernel module ``name`` (e.g. ``"gridhead.protocols._framing"``), compiled unless pure is asked for."""
    mode = mode or _mode
    if mode != "pure":
        try:
            return importlib.import_module(name)
        except ImportError:
            if mode == "compiled":
                raise
    return importlib.import_module(name + "_py")


def is_compiled(name: str) -> bool:
    """True if the compiled build of ``name`` is importable (whatever the current mode)."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def bind(namespace: dict, attr: str, name: str) -> ModuleType:
    """Set ``namespace[attr]`` to kernel ``name`` now and again whenever :func:`use` switches."""
    _bindings.append((namespace, attr, name))
    mod = load(name)
    namespace[attr] = mod
    return mod


def use(mode: str) -> None:
    """Switch every binding to ``"compiled"``, ``"pure"`` or ``"auto"`` (compiled if built)."""
    global _mode
    if mode not in ("compiled", "pure", "auto"):
        raise ValueError(mode)
    _mode = mode
    for namespace, attr, name in _bindings:
        namespace[attr] = load(name, mode)


def mode() -> str:
    """The mode in force: ``"pure"``, ``"compiled"`` or ``"auto"``."""
    return _mode

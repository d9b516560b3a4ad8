"""Compiled kernels and their pure-Python twins.

Every compiled module ``gridhead.<package>._X`` (built from ``ext/_X.pyx``) has a twin ``_X_py`` beside
it with the same functions and results.  A module that uses a kernel chooses it once, statically, at
import (as msgpack does)::

    if accel.PURE:
        from .. import _framing_py as _k
    else:
        try:
            from .. import _framing as _k
        except ImportError:
            from .. import _framing_py as _k

``GRIDHEAD_PUREPYTHON=1`` forces the twins.  :data:`USERS` lists where each kernel is held, so that the
tests, which run every kernel test against both, can switch them all with :func:`use`.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

__all__ = ["PURE", "USERS", "load", "is_compiled", "use", "mode"]

PURE: bool = os.environ.get("GRIDHEAD_PUREPYTHON", "") not in ("", "0")

# (module, attribute, kernel): every module attribute that holds a kernel
USERS: tuple[tuple[str, str, str], ...] = (
    ("gridhead.protocols.dlt645.formats", "_k", "gridhead.protocols._framing"),
    ("gridhead.protocols.dlt645.frame", "_k", "gridhead.protocols._framing"),
    ("gridhead.protocols.dlt698.axdr", "_k", "gridhead.protocols._axdr"),
    ("gridhead.protocols.dlt698.frame", "_k", "gridhead.protocols._framing698"),
    ("gridhead.protocols.dlt698.apdu", "_fast", "gridhead.protocols._apdu698"),
    ("gridhead.billing_core.engine", "_kernel", "gridhead.billing_core._billing"),
    ("gridhead.headend.records", "_fast", "gridhead.headend._records698"),
)

_mode = "pure" if PURE else "auto"


def load(name: str, mode: str | None = None) -> ModuleType:
    """Kernel module ``name`` (e.g. ``"gridhead.protocols._framing"``): compiled unless pure is asked for
    (``"auto"``: compiled if built; ``"compiled"``: compiled or ImportError)."""
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


def use(mode: str) -> None:
    """Switch every kernel of :data:`USERS` already imported to ``"compiled"``, ``"pure"`` or ``"auto"``
    (for the tests and benchmarks, which import the users first: a module imported later chooses by
    :data:`PURE`)."""
    global _mode
    if mode not in ("compiled", "pure", "auto"):
        raise ValueError(mode)
    _mode = mode
    for module, attr, name in USERS:
        held = sys.modules.get(module)
        if held is not None:
            setattr(held, attr, load(name, mode))


def mode() -> str:
    """The mode in force: ``"pure"``, ``"compiled"`` or ``"auto"``."""
    return _mode

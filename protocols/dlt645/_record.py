"""Immutable records: tuple subclasses that behave like frozen, slotted dataclasses.

Why not ``@dataclass(frozen=True, slots=True)``: a frozen dataclass sets every field through
``object.__setattr__`` in a Python ``__init__`` — 0.3 µs for a 3-field ``Frame``, 0.55 µs for a
``ReadResponse``, measured (benchmarks/bench_dlt645.py --profile), more than the whole compiled scan of
the frame.  A tuple subclass is built in one allocation, by Python (``cls(...)``) or by the compiled
kernel (which fills the tuple in C), and reads a field through a C-level item getter.

What is kept from the dataclass: the constructor signature with defaults and keywords, attribute
access by name, ``__repr__`` in the dataclass format, ``==`` and ``hash`` on the fields that compare,
and only between instances of the same class (a tuple would compare equal to any tuple),
``__match_args__``, immutability (assigning a field raises AttributeError), pickling.  The record is
also a tuple (indexing, ``len``); code should not rely on that.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from operator import itemgetter
from typing import Any, TypeVar, cast, dataclass_transform

_T = TypeVar("_T")


def _property_getter(i: int, doc: str) -> property:
    return property(itemgetter(i), doc=doc)


# the C descriptor namedtuple uses for its fields: ~2x faster than property(itemgetter); private, so
# looked up (not in typeshed), with the property for other interpreters
_tuplegetter: Callable[[int, str], object] = getattr(collections, "_tuplegetter", _property_getter)

_MISSING: Any = object()


class _Field:
    """A field's default and whether it takes part in ``==`` / ``hash`` (made by :func:`field`)."""

    __slots__ = ("default", "compare")

    def __init__(self, *, default: object = _MISSING, compare: bool = True) -> None:
        self.default = default
        self.compare = compare


def field(*, default: _T, compare: bool = True) -> _T:
    """Like ``dataclasses.field``, which it stands in for: a marker that :func:`record` reads, typed as
    its default (so ``values: tuple[Value, ...] = field(default=())`` checks as the default would)."""
    return cast(_T, _Field(default=default, compare=compare))


# type checkers read a record like a frozen dataclass (PEP 681): its constructor from the fields
@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[_T]) -> type[_T]:
    """Class decorator: make ``cls`` (a subclass of a ``tuple`` base with ``__slots__ = ()``) a record.

    Fields are the class's annotations that are not ``ClassVar``, after those of a record base.  A class
    that defines its own ``__new__`` keeps it (e.g. to derive a default from other fields).
    """
    fields: list[tuple[str, object, bool]] = list(getattr(cls, "__record_fields__", ()))
    own: dict[str, object] = cls.__dict__.get("__annotations__", {})
    for name, ann in own.items():
        if "ClassVar" in str(ann):
            continue
        default = cls.__dict__.get(name, _MISSING)
        compare = True
        if isinstance(default, _Field):
            compare = default.compare
            default = default.default
        fields = [f for f in fields if f[0] != name] + [(name, default, compare)]
    names = tuple(f[0] for f in fields)
    seen_default = False
    for name, default, _c in fields:
        if default is _MISSING and seen_default:
            raise TypeError(f"{cls.__name__}: field {name} without a default follows one with a default")
        seen_default = seen_default or default is not _MISSING

    ns = {k: v for k, v in cls.__dict__.items()
          if k not in ("__dict__", "__weakref__") and not (k in own and k in names)}
    ns["__slots__"] = ()
    ns["__record_fields__"] = tuple(fields)
    ns["__match_args__"] = names
    for i, name in enumerate(names):
        ns[name] = _tuplegetter(i, f"field {name}")
    if "__new__" not in cls.__dict__:
        ns["__new__"] = _make_new(cls.__name__, fields)
    compared = tuple(i for i, f in enumerate(fields) if f[2])
    key: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    if len(compared) == len(fields):
        key = tuple                     # every field compares: the plain tuple is the key
    else:
        key = lambda t: tuple([t[i] for i in compared])  # noqa: E731
    ns["__eq__"] = _make_eq(key, True)
    ns["__ne__"] = _make_eq(key, False)
    ns["__hash__"] = lambda self, _key=key: hash(_key(self))
    for op in ("__lt__", "__le__", "__gt__", "__ge__"):   # unordered, like a dataclass (order=False)
        ns[op] = lambda self, other: NotImplemented
    ns.setdefault("__repr__", _repr)
    ns["__getnewargs__"] = lambda self: tuple(self)
    ns["__copy__"] = lambda self: self
    ns["__deepcopy__"] = lambda self, memo: self
    meta: Callable[[str, tuple[type, ...], dict[str, Any]], type[_T]] = type(cls)  # the metaclass
    new = meta(cls.__name__, cls.__bases__, ns)
    new.__qualname__ = cls.__qualname__
    return new


def _make_new(clsname: str, fields: list[tuple[str, object, bool]]) -> Callable[..., object]:
    params: list[str] = []
    defaults: dict[str, object] = {}
    for name, default, _c in fields:
        if default is _MISSING:
            params.append(name)
        else:
            defaults[f"_d_{name}"] = default
            params.append(f"{name}=_d_{name}")
    names = ", ".join(f[0] for f in fields)
    src = (f"def __new__(cls, {', '.join(params)}):\n"
           f"    return _tuple_new(cls, ({names}{',' if len(fields) == 1 else ''}))\n")
    env: dict[str, Any] = {"_tuple_new": tuple.__new__, **defaults}
    exec(src, env)  # noqa: S102 - generated from field names, as dataclasses does
    fn: Callable[..., object] = env["__new__"]
    fn.__qualname__ = f"{clsname}.__new__"
    return fn


def _make_eq(key: Callable[[tuple[Any, ...]], tuple[Any, ...]],
             equal: bool) -> Callable[[tuple[Any, ...], object], bool | Any]:
    def eq(self: tuple[Any, ...], other: object) -> bool | Any:
        if other.__class__ is not self.__class__:
            # a plain tuple must not compare equal, and NotImplemented would let tuple.__eq__ decide
            return (not equal) if isinstance(other, tuple) else NotImplemented
        same = key(self) == key(other)
        return same if equal else not same
    return eq


def _repr(self: Any) -> str:
    inner = ", ".join(f"{f[0]}={v!r}" for f, v in zip(self.__record_fields__, self))
    return f"{self.__class__.__qualname__}({inner})"

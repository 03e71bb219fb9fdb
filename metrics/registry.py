"""The rule every name registry of `metrics` follows: a name is registered once.

`register_extractor`, `register_metric` and `register_direction` refuse a name that is taken
by something else (`DuplicateNameError`, as torch-fidelity refuses a duplicate) unless called
with `replace=True`. Registering the same thing again is not a duplicate: the same object, or
a module-level function or class with the same module and qualified name (an entry-point
plugin imported twice, or its module reloaded), so loading plugins twice never trips it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any


class DuplicateNameError(ValueError):
    """A name is already registered to something else and `replace=True` was not given."""


def same_callable(a: Any, b: Any) -> bool:
    """True for the same object, for two module-level functions/classes of one name in one
    module (a reloaded module's new objects), or for two `functools.partial`s of such with equal
    arguments. Lambdas and nested functions count only as themselves: two of them may share a
    qualified name and still differ."""
    if a is b:
        return True
    if isinstance(a, partial) and isinstance(b, partial):  # e.g. one extractor class, several names
        return same_callable(a.func, b.func) and a.args == b.args and a.keywords == b.keywords
    name = getattr(a, "__qualname__", None)
    return (
        isinstance(name, str)
        and "<" not in name
        and name == getattr(b, "__qualname__", None)
        and getattr(a, "__module__", None) == getattr(b, "__module__", None)
    )


def check_new(
    registry: dict, name: str, value: Any, what: str, replace: bool, same: Callable[[Any, Any], bool] = same_callable
) -> None:
    """Raise DuplicateNameError when `name` is taken in `registry` by something other than
    `value` and `replace` is false; otherwise return (the caller then stores it)."""
    if replace or name not in registry or same(registry[name], value):
        return
    raise DuplicateNameError(
        f"{what} {name!r} is already registered (as {_describe(registry[name])}); pass replace=True to replace it"
    )


def _describe(value: Any) -> str:
    fn = getattr(value, "fn", value)
    name = getattr(fn, "__qualname__", None)
    return f"{getattr(fn, '__module__', '?')}.{name}" if name else repr(value)

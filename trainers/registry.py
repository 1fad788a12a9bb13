"""The method registry: built-in names, ``module:Class`` paths and entry points.

``resolve_method("g2rl")`` returns the registered class; ``"my.module:MyMethod"``
imports a researcher's own :class:`~trainers.method.Method` subclass; a package
can also register one under the entry-point group ``g2rl_workbench.methods``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from trainers.method import Method
from workbench.registry import Registry, UnknownNameError

METHODS: Registry[type[Method]] = Registry("method")
ENTRY_POINT_GROUP = "g2rl_workbench.methods"


def _load_builtins() -> None:
    # Imported for their @METHODS.register side effect.
    from trainers import entropy, evol_rl, g2rl, grpo  # noqa: F401


def resolve_method(name: str) -> type[Method]:
    """The method class for a registered name, an entry point or ``module:Class``."""
    if not METHODS.names():
        _load_builtins()
    if name in METHODS:
        return METHODS.get(name)
    if ":" in name:
        return _import_method(name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return _check(ep.load(), name)
    raise UnknownNameError(
        f"unknown method {name!r}; valid methods: {', '.join(METHODS.names())}, "
        "or 'package.module:ClassName' for your own Method subclass"
    )


def _import_method(path: str) -> type[Method]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UnknownNameError(f"method {path!r}: cannot import module {module_name!r} ({err}); is it on PYTHONPATH?") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise UnknownNameError(f"method {path!r}: module {module_name!r} has no attribute {attr!r}") from None
    return _check(obj, path)


def _check(obj: object, name: str) -> type[Method]:
    if not (isinstance(obj, type) and issubclass(obj, Method)):
        raise UnknownNameError(f"method {name!r} is {obj!r}, not a subclass of trainers.method.Method")
    return obj

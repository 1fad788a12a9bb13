"""Which method a name means: a built-in, ``module:Class`` or an entry point.

``resolve_method("g2rl")`` returns the registered class; ``"my.module:MyMethod"``
imports a researcher's own :class:`~trainers.method.Method` subclass; a package
can also register one under the entry-point group ``g2rl_workbench.methods``.
Imports no torch: naming a method costs nothing at start-up.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from trainers.entropy import EntropyBonus
from trainers.evol_rl import EvolRL
from trainers.g2rl import G2RL
from trainers.grpo import GRPO
from trainers.method import METHODS, Method
from trainers.registry import UnknownNameError

BUILTINS = (EntropyBonus, EvolRL, G2RL, GRPO)  # registered by their modules under METHODS


ENTRY_POINT_GROUP = "g2rl_workbench.methods"


def builtin_methods() -> list[type[Method]]:
    """The built-in method classes, by name."""
    return [METHODS.get(name) for name in METHODS.names()]


def resolve_method(name: str) -> type[Method]:
    """The method class for a registered name, an entry point or ``module:Class``."""
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

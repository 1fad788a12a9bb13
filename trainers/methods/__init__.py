"""The built-in methods, one module each in this folder, and which method a name means.

Every module here is imported with the package, and each registers its class with
:func:`~trainers.method.register_method` under the class's ``name``: a new built-in is one new
module in this folder and nothing else. ``resolve_method("g2rl")`` returns a registered class;
``"my.module:MyMethod"`` imports a researcher's own :class:`~trainers.method.Method` subclass; a
package can also publish one under the entry-point group ``g2rl_workbench.methods``, named by the
class's ``name``. Imports no torch: naming a method costs nothing at start-up.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from trainers.method import METHODS, Method
from trainers.registry import UnknownNameError

for _module in pkgutil.iter_modules(__path__):  # each built-in registers itself as it is imported
    importlib.import_module(f"{__name__}.{_module.name}")

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
            cls = _check(ep.load(), name)
            if cls.name != name:
                raise UnknownNameError(f"entry point {name!r} of group {ENTRY_POINT_GROUP!r} loads {cls.__name__}, "
                                       f"whose name is {cls.name!r}; publish it under {cls.name!r}")
            return cls
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

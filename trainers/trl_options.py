"""A method's options as fields of a TRL config, made from the options model itself.

``workbench run`` reads a method's options from its config section (``g2rl.lam``); a TRL script
reads them from the trainer's config dataclass (``G2RLConfig(g2rl_lam=...)``, or
``--g2rl_lam`` through TRL's ``TrlParser``). :func:`with_method_options` adds one dataclass field
``<section>_<field>`` per field of the method's :class:`~trainers.method.MethodOptions`, with its
default, type and help text, and :func:`options_of` validates them back through the same model,
so a name, a default or a rule is declared once, beside the method. The feature options
(:class:`~trainers.feature_options.FeatureOptions`) reach :class:`~trainers.geometry.GeometryArgs`
the same way, as ``features_<field>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from trainers.method import Method, MethodOptions

M = TypeVar("M", bound=BaseModel)


def option_names(model: type[BaseModel], prefix: str, exclude: Iterable[str] = ()) -> dict[str, str]:
    """Each field of the options ``model`` (but ``exclude``) -> its TRL config field, ``<prefix>_<field>``."""
    skip = set(exclude)
    return {name: f"{prefix}_{name}" for name in model.model_fields if name not in skip}


def with_options(cls: type, model: type[BaseModel], prefix: str, exclude: Iterable[str] = ()) -> type:
    """``cls`` (a class not yet a dataclass, e.g. a subclass of a TRL config) made a dataclass with a field per
    field of the options ``model`` but ``exclude``: ``<prefix>_<field>``, the option's annotation, default and
    description (as the field's ``help``, which ``TrlParser`` prints). The options are listed in ``cls.__doc__``."""
    annotations = dict(cls.__dict__.get("__annotations__", {}))
    lines = []
    for option, name in option_names(model, prefix, exclude).items():
        info = model.model_fields[option]
        default = info.get_default(call_default_factory=True)
        annotations[name] = info.annotation
        meta = {"help": info.description or ""}
        if isinstance(default, (list, dict, set)):
            setattr(cls, name, dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta))
        else:
            setattr(cls, name, dataclasses.field(default=default, metadata=meta))
        lines.append(f"        {name} (defaults to `{default!r}`): {info.description or ''}")
    cls.__annotations__ = annotations
    cls.__doc__ = (cls.__doc__ or "").rstrip() + f"\n\n    Options from {model.__name__}:\n" + "\n".join(lines) + "\n"
    return dataclasses.dataclass(cls)


def with_method_options(cls: type, method: type[Method], exclude: Iterable[str] = ()) -> type:
    """:func:`with_options` for the options of ``method``, as ``<section>_<option>``."""
    assert method.Options is not None, f"method {method.name!r} has no options"
    return with_options(cls, method.Options, method.section, exclude)


def options_from(args: Any, model: type[M], prefix: str, exclude: Iterable[str] = (), **extra: Any) -> M:
    """The options ``model`` read from the ``<prefix>_<field>`` fields of ``args`` (plus ``extra`` for the
    excluded ones), validated by the model; a bad value raises ValueError naming the TRL field and the fix."""
    names = option_names(model, prefix, exclude)
    try:
        return model(**{option: getattr(args, name) for option, name in names.items()}, **extra)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            if not e["loc"]:  # a rule across fields: its message names them
                problems.append(str(e.get("ctx", {}).get("error", e["msg"])))
                continue
            option = str(e["loc"][0])
            problems.append(f"{names.get(option, option)}={e.get('input')!r}: {e['msg']}")
        raise ValueError(f"invalid {type(args).__name__}: " + "; ".join(problems)) from None


def options_of(args: Any, method: type[Method], exclude: Iterable[str] = (), **extra: Any) -> MethodOptions:
    """The options of ``method`` read from the TRL config ``args`` (:func:`options_from`)."""
    return options_from(args, method.Options, method.section, exclude, **extra)


def method_config(method: type[Method], base: type | None = None) -> type:
    """A TRL config class for ``method``: ``base`` (default TRL's ``GRPOConfig``) with its options as fields
    (:func:`with_method_options`), validated when made; ``method_options()`` returns them as the method's
    options, for ``MethodTrainer(..., method=method(args.method_options()))``. A plug-in's TRL config::

        PenaltyConfig = method_config(ScaledPenalty)
        args = PenaltyConfig(output_dir="out", penalty_penalty=0.25)
    """
    if base is None:
        from trl import GRPOConfig as base

    class Config(base):
        def __post_init__(self) -> None:
            super().__post_init__()
            self.method_options()  # validates

        def method_options(self) -> MethodOptions:
            return options_of(self, method)

    Config.__name__ = Config.__qualname__ = f"{method.__name__}Config"
    Config.__doc__ = f"TRL's {base.__name__} with the options of method {method.name!r}."
    return with_method_options(Config, method)

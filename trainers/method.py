"""What a method is: a reward shaper on whole groups, its own options, and trainer options.

Every method shares GRPO's clipped objective and KL control (DESIGN 3); a method
only decides the rewards GRPO standardises, and may set trainer options (the
entropy bonus sets TRL's ``entropy_coef``). The one TRL subclass
(:class:`trainers.trainer.MethodTrainer`) gathers a generation batch across
processes into one :class:`StepBatch`, calls :meth:`Method.shape` and hands the
shaped rewards back to TRL, which computes the advantages.

A method declares its name once, as ``Method.name``: its registration
(:func:`register_method`), its config section and its plug-in entry point follow
from it. Its options live beside it: a :class:`MethodOptions` subclass named by
``Method.Options``, the config section ``name`` (``g2rl`` for G2RL), which
``workbench run`` validates (YAML, ``--set g2rl.lam=0.5``); the method is handed
only its own section, also a plug-in method.

This module imports no torch, so naming a method costs nothing at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from trainers.registry import Registry


class MethodOptions(BaseModel):
    """Base of a method's options: unknown keys and bad values are refused, each field documented.

    Declare fields with ``pydantic.Field(default, description=...)``; the
    description is the help text of ``--set <section>.<field>``.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class StepBatch:
    """One generation batch, gathered across processes, rank by rank.

    ``groups[i]`` is the group (prompt) of completion ``i``; a group's members
    may sit anywhere in the arrays.
    """

    groups: np.ndarray  # (N,) int
    correct: np.ndarray  # (N,) bool: the (weighted) reward is above the correctness threshold
    has_answer: np.ndarray  # (N,) bool, an answer could be extracted (scorable, without a verifier)
    answers: list[str | None]  # (N,) extracted answers (None without a verifier)
    features: np.ndarray | None = None  # (N, d) Phi, when computed
    embeddings: np.ndarray | None = None  # (N, e) unit text embeddings, when computed
    rewards: np.ndarray | None = None  # (N,) TRL's reward: the weighted sum of the reward functions


@dataclass(frozen=True)
class Shaped:
    """What a method computed for each completion (DESIGN 6 column names)."""

    base_reward: np.ndarray  # (N,) the verifier reward the method starts from
    shaped_reward: np.ndarray  # (N,) what GRPO standardises
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. nu, nu_bar, novelty
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. g2rl/nu_mean


class Method:
    """Base class of methods: GRPO's binary reward, unchanged.

    Subclass it in your own module and run ``workbench run --method mod:Class``.
    Name it with ``name`` (default: the class name in lower case), a Python
    identifier. To give it options, set ``Options`` to a :class:`MethodOptions`
    subclass: they become the config section ``name`` (``section``, derived, never
    set), and ``self.options`` is that section, validated.
    """

    name: ClassVar[str] = "grpo"
    section: ClassVar[str | None] = None  # derived: ``name`` when the method has Options, else None
    Options: ClassVar[type[MethodOptions] | None] = None  # its fields
    needs_features: ClassVar[bool] = False  # shape() reads batch.features
    needs_embeddings: ClassVar[bool] = False  # shape() reads batch.embeddings
    score_columns: ClassVar[tuple[str, ...]] = ()  # keys of Shaped.scores, dumped as columns

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "section" in cls.__dict__:
            raise TypeError(f"{cls.__qualname__} sets `section = {cls.__dict__['section']!r}`; a method's config "
                            f"section is its name: set `name = {cls.__dict__['section']!r}` instead")
        if "name" not in cls.__dict__:
            cls.name = cls.__name__.lower()
        if not (isinstance(cls.name, str) and cls.name.isidentifier()):
            raise TypeError(f"{cls.__qualname__}.name = {cls.name!r} is not a Python identifier; it names the "
                            "method's config section, so use letters, digits and underscores, e.g. 'my_method'")
        cls.section = cls.name if cls.Options is not None else None

    def __init__(self, options: MethodOptions | None = None) -> None:
        if self.Options is not None:
            options = self.Options() if options is None else options
            if not isinstance(options, self.Options):
                raise TypeError(f"method {self.name!r} takes {self.Options.__name__}, got {type(options).__name__}")
        self.options = options

    def trainer_args(self) -> dict[str, Any]:
        """Overrides of TRL's GRPOConfig that this method needs."""
        return {}

    def shape(self, batch: StepBatch) -> Shaped:
        base = batch.correct.astype(np.float64)
        return Shaped(base_reward=base, shaped_reward=base)


METHODS: Registry[type[Method]] = Registry("method")
"""The built-in methods by name; each module of :mod:`trainers.methods` registers its class with
:func:`register_method`."""


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register a method under its ``name``."""
    METHODS.add(cls.name, cls)
    return cls

"""What a method is: a reward shaper on whole groups, plus trainer options.

Every method shares GRPO's clipped objective and KL control (DESIGN 3); a method
only decides the rewards GRPO standardises, and may set trainer options (the
entropy bonus sets TRL's ``entropy_coef``). The shared TRL subclass
(``trainers.trainer.WorkbenchTrainer``) gathers a generation batch across
processes into one :class:`StepBatch`, calls :meth:`Method.shape` and hands the
shaped rewards back to TRL, which computes the advantages.

This module imports no torch, so naming a method costs nothing at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from workbench.config import WorkbenchConfig


@dataclass(frozen=True)
class StepBatch:
    """One generation batch, gathered across processes, rank by rank.

    ``groups[i]`` is the group (prompt) of completion ``i``; a group's members
    may sit anywhere in the arrays.
    """

    groups: np.ndarray  # (N,) int
    correct: np.ndarray  # (N,) bool, the verifier's verdict
    has_answer: np.ndarray  # (N,) bool, an answer could be extracted
    answers: list[str | None]  # (N,) extracted answers
    features: np.ndarray | None = None  # (N, d) Phi, when computed
    embeddings: np.ndarray | None = None  # (N, e) unit text embeddings, when computed


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
    """

    name: ClassVar[str] = "grpo"
    needs_features: ClassVar[bool] = False  # shape() reads batch.features
    needs_embeddings: ClassVar[bool] = False  # shape() reads batch.embeddings
    score_columns: ClassVar[tuple[str, ...]] = ()  # keys of Shaped.scores

    def __init__(self, cfg: WorkbenchConfig) -> None:
        self.cfg = cfg

    def trainer_args(self) -> dict[str, Any]:
        """Overrides of TRL's GRPOConfig that this method needs."""
        return {}

    def shape(self, batch: StepBatch) -> Shaped:
        base = batch.correct.astype(np.float64)
        return Shaped(base_reward=base, shaped_reward=base)

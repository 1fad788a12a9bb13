"""EVOL-RL's semantic-embedding novelty (DESIGN 3.3, [EVOL-RL repo]).

Completions are embedded by a sentence-transformers model (the text after any
``</think>``). Novelty ``u = 1 - (0.5 s_mean + 0.5 s_max)`` is min-max rescaled
within each class; correct completions get ``0.5 + 0.5 u``, incorrect ones
``-1 + 0.5 u``, those without an answer ``-1``. ``evol_rl.labels: majority``
replaces the verifier's labels by agreement with the group's majority answer,
the original label-free variant.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from trainers import shaping
from trainers.method import Method, MethodOptions, Shaped, StepBatch, register_method


class EvolRLOptions(MethodOptions):
    """The ``evol_rl`` section."""

    labels: Literal["verifier", "majority"] = Field("verifier", description="Correctness labels: verifier or majority vote.")


@register_method
class EvolRL(Method):
    name = "evol_rl"
    Options = EvolRLOptions
    needs_embeddings = True
    score_columns = ("novelty",)

    def shape(self, batch: StepBatch) -> Shaped:
        if self.options.labels == "majority":
            labels = shaping.majority_labels(batch.answers, batch.groups)
        else:
            labels = batch.correct
        # Completions without an answer are no peers (EVOL-RL repo); their novelty is NaN.
        novelty = shaping.evol_rl_novelty(batch.embeddings, labels, batch.groups, valid=batch.has_answer)
        rewards = shaping.evol_rl_rewards(novelty, labels, batch.has_answer, batch.groups)
        return Shaped(
            base_reward=batch.correct.astype(np.float64),
            shaped_reward=rewards,
            scores={"novelty": novelty},
            metrics={"evol_rl/novelty_mean": float(np.nanmean(novelty)) if np.isfinite(novelty).any() else 0.0},
        )

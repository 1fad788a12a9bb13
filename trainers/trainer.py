"""The one trainer every method trains with: TRL's ``GRPOTrainer`` plus geometry plus a method's rewards.

``MethodTrainer`` is :class:`~trainers.geometry.GeometryMixin` on ``GRPOTrainer``
with one change: after TRL has run (and gathered) the reward functions, the
method shapes whole groups (:meth:`~trainers.method.Method.shape`) and the
shaped reward is what TRL standardises into advantages, as GRPO does. Loss,
clipping, KL and optimisation are TRL's own.

How the shaped reward reaches TRL: TRL sums the reward columns with
``reward_weights`` (``multi_objective_aggregation="sum_then_normalize"``). A
method that changes rewards gets one extra reward column, ``shaping``, of
weight 1, holding ``shaped - sum_k w_k r_k``; the weighted sum is then the
shaped reward (to float32 rounding), and TRL still logs each user reward
function's own mean under ``rewards/<name>/mean``.
``normalize_then_sum`` standardises each column on its own, which would undo
the shaping, and is refused.

``workbench run`` builds this trainer with the task's :class:`VerifierReward`
as the one reward function; :class:`~trainers.g2rl_trainer.G2RLTrainer` is this
trainer with G2RL for any TRL script.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import GRPOTrainer

from trainers.geometry import GeometryMixin
from trainers.method import Method, Shaped, StepBatch


class VerifierReward:
    """TRL reward function: 1.0 if the task's verifier accepts the completion, else 0.0.

    Keeps the local verdicts of its last call, so the trainer can gather the
    extracted answers too.
    """

    __name__ = "verifier"

    def __init__(self, task) -> None:
        self.task = task
        self.last: list = []

    def __call__(self, prompts, completions, answer, **_: Any) -> list[float]:
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        self.last = [self.task.verify(text, gold) for text, gold in zip(texts, answer, strict=True)]
        return [1.0 if v.correct else 0.0 for v in self.last]


def _shaping_column(prompts, completions, **_: Any) -> list[None]:
    """The ``shaping`` reward column: filled by :class:`MethodTrainer` after the user's rewards."""
    return [None] * len(prompts)


_shaping_column.__name__ = "shaping"


class MethodTrainer(GeometryMixin, GRPOTrainer):
    """GRPOTrainer whose rewards are shaped by a :class:`~trainers.method.Method`.

    Takes GRPOTrainer's arguments plus ``method``, ``verifier`` (a reward
    function among ``reward_funcs`` whose ``last`` verdicts carry ``answer`` and
    ``timed_out``; None: no answers) and GeometryMixin's ``geometry``,
    ``recorder`` and ``embedder``.
    """

    def __init__(self, *args: Any, method: Method, verifier: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(f"multi_objective_aggregation={self.multi_objective_aggregation!r} standardises each "
                             "reward on its own, which undoes a method's shaping; use 'sum_then_normalize'")
        self.method = method
        self.verifier = verifier
        self.score_columns = tuple(method.score_columns)
        if method.needs_embeddings and self.semantic_every not in (None, 1):
            raise ValueError(f"method {method.name!r} reads text embeddings in its rewards, so it embeds every step: "
                             f"features_semantic_every={self.semantic_every} would sample what it computes anyway; use 1")
        if method.needs_embeddings and self.embedder is None:
            from trainers.embeddings import TextEmbedder

            self.embedder = TextEmbedder(self.features.encoder, dtype=self.features.encoder_dtype)
        if type(method).shape is not Method.shape:  # the method changes rewards: add the shaping column
            self.reward_funcs.append(_shaping_column)
            self.reward_func_names.append(_shaping_column.__name__)
            self.reward_processing_classes.append(None)
            self.reward_weights = torch.cat([self.reward_weights, torch.ones(1)])
            self.shaping_columns = 1

    @property
    def wants_phi(self) -> bool:
        return super().wants_phi or self.method.needs_features

    @property
    def rewards_need_embeddings(self) -> bool:
        return self.method.needs_embeddings

    def shape_batch(self, batch: StepBatch) -> Shaped:
        return self.method.shape(batch)

    def shaped_columns(self, rewards_per_func: torch.Tensor, batch: StepBatch, shaped: Shaped) -> torch.Tensor:
        if not self.shaping_columns:
            return rewards_per_func
        shaped_reward = torch.as_tensor(shaped.shaped_reward, dtype=torch.float32, device=rewards_per_func.device)
        rewards = torch.as_tensor(batch.rewards, dtype=torch.float32, device=rewards_per_func.device)
        out = rewards_per_func.clone()
        out[:, -1] = shaped_reward - rewards  # (N,)
        user = out[:, : out.size(1) - 1]
        out[torch.isnan(user).all(dim=1), -1] = torch.nan  # unscorable stays unscorable: TRL zeroes its advantage
        return out

    def answers(self) -> tuple[list[str | None] | None, list[bool]]:
        if self.verifier is None:
            return super().answers()
        return [v.answer for v in self.verifier.last], [v.timed_out for v in self.verifier.last]

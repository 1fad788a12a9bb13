"""G2RL, gradient-guided reward shaping (DESIGN 3.4, [paper] sections 2.2-2.6).

Each completion's sequence feature Phi (``trainers.features``) is compared with
its group peers: ``nu_i = max(1 - sum_j w_ij <u_i, u_j>^2, 0)`` with weights
``w_ij`` favouring higher-reward peers (eqs. 9-11). ``nu`` is min-max normalised
within the group and scales the +-1 base reward: ``r~ = clip(r * f, -3, 3)``
with ``f = 1 + lambda * nu_bar`` (``g2rl.scaler: paper_text``, the default, as
sections 2.4 and 6 describe) or ``f = 1 + lambda * r * nu_bar`` (``eq12``, as
printed). TRL then standardises ``r~`` within each group as GRPO does.

Equal-reward groups (DESIGN 3.4 [ours]). With TRL's ``scale_rewards=group``
(the paper's eq. 2) a group whose base rewards are all equal (all wrong, or all
right) gets advantages that do not depend on lambda: r~ = r (1 + lambda nu_bar)
is an affine function of nu_bar within the group, and standardisation removes
any affine map with a positive slope, so the advantages are the unit
standardisation of nu_bar (all right), or of -nu_bar (all wrong), for
lambda = 0.01 as for 2. Under ``paper_text`` the most redundant wrong answer
of an all-wrong group (nu_bar = 0, the least penalised) gets an advantage of
about +2 in a group of 8; under ``eq12`` (r~ = -1 + lambda nu_bar) the most
novel one does. ``g2rl.uniform_groups: zero`` gives such groups r~ = r, a
constant, hence GRPO's zero advantage, so G2RL only reorders within mixed
groups; ``rank`` (default) is the paper's reading. With ``scale_rewards=none``
the advantage is r~ - mean(r~) and scales with lambda.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from trainers import shaping
from trainers.method import Method, MethodOptions, Shaped, StepBatch, register_method


class G2RLOptions(MethodOptions):
    """The ``g2rl`` section (DESIGN 3.4)."""

    lam: float = Field(1.0, ge=0, le=2, description="Scaler strength lambda; [0, 2] keeps the clip at 3 inactive.")
    scaler: Literal["paper_text", "eq12"] = Field("paper_text", description="Which reading of the reward scaler.")
    route: Literal["sampling", "forward"] = Field(
        "sampling", description="Where Phi is computed (for every method's geometry too): summed while sampling, "
                                "or by one no-grad forward pass after generation (always with vLLM).")
    clip: float = Field(3.0, gt=0, description="Shaped rewards are clipped to [-clip, clip].")
    uniform_groups: Literal["rank", "zero"] = Field(
        "rank", description="Groups whose base rewards are all equal: 'rank' shapes them by nu_bar (the paper's "
                            "reading); 'zero' gives them GRPO's zero advantage.")
    base_reward: Literal["sign", "raw"] = Field(
        "sign", description="r in eqs. 10 and 12-13: 'sign' is +1 for a reward above the correctness threshold, "
                            "else -1 (the paper's); 'raw' is the (weighted) reward itself [ours].")

    @model_validator(mode="after")
    def _eq12_keeps_sign(self) -> G2RLOptions:
        if self.scaler == "eq12" and self.lam > 1:
            raise ValueError(
                f"g2rl.lam={self.lam} with g2rl.scaler=eq12 makes f = 1 - lam * nu_bar negative, turning penalties "
                "of wrong answers into rewards; use lam <= 1 with eq12, or scaler paper_text"
            )
        return self


@register_method
class G2RL(Method):
    name = "g2rl"
    Options = G2RLOptions
    needs_features = True
    score_columns = ("nu", "nu_bar")

    def shape(self, batch: StepBatch) -> Shaped:
        cfg = self.options
        if cfg.base_reward == "raw":
            if batch.rewards is None:
                raise ValueError("g2rl.base_reward='raw' needs the batch's rewards (StepBatch.rewards)")
            base = np.asarray(batch.rewards, dtype=np.float64)
        else:
            base = shaping.g2rl_base_rewards(batch.correct, batch.has_answer)
        nu = shaping.exploration_score(batch.features, base, batch.groups)
        nu_bar = shaping.minmax_in_group(nu, batch.groups)
        shaped = shaping.g2rl_shaped_rewards(base, nu_bar, cfg.lam, cfg.scaler, cfg.clip, groups=batch.groups,
                                              uniform_groups=cfg.uniform_groups)
        return Shaped(
            base_reward=base,
            shaped_reward=shaped,
            scores={"nu": nu, "nu_bar": nu_bar},
            metrics={"g2rl/nu_mean": float(np.mean(nu)), "g2rl/nu_bar_mean": float(np.mean(nu_bar))},
        )

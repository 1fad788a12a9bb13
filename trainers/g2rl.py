"""G2RL, gradient-guided reward shaping (DESIGN 3.4, [paper] sections 2.2-2.6).

Each completion's sequence feature Phi (``trainers.features``) is compared with
its group peers: ``nu_i = max(1 - sum_j w_ij <u_i, u_j>^2, 0)`` with weights
``w_ij`` favouring higher-reward peers (eqs. 9-11). ``nu`` is min-max normalised
within the group and scales the +-1 base reward: ``r~ = clip(r * f, -3, 3)``
with ``f = 1 + lambda * nu_bar`` (``g2rl.scaler: paper_text``, the default, as
sections 2.4 and 6 describe) or ``f = 1 + lambda * r * nu_bar`` (``eq12``, as
printed). TRL then standardises ``r~`` within each group as GRPO does.
"""

from __future__ import annotations

import numpy as np

from trainers import shaping
from trainers.method import Method, Shaped, StepBatch
from trainers.registry import METHODS


@METHODS.register("g2rl")
class G2RL(Method):
    needs_features = True
    score_columns = ("nu", "nu_bar")

    def shape(self, batch: StepBatch) -> Shaped:
        cfg = self.cfg.g2rl
        base = shaping.g2rl_base_rewards(batch.correct, batch.has_answer)
        nu = shaping.exploration_score(batch.features, base, batch.groups)
        nu_bar = shaping.minmax_in_group(nu, batch.groups)
        shaped = shaping.g2rl_shaped_rewards(base, nu_bar, cfg.lam, cfg.scaler, cfg.clip)
        return Shaped(
            base_reward=base,
            shaped_reward=shaped,
            scores={"nu": nu, "nu_bar": nu_bar},
            metrics={"g2rl/nu_mean": float(np.mean(nu)), "g2rl/nu_bar_mean": float(np.mean(nu_bar))},
        )

"""GRPO with an entropy bonus (DESIGN 3.2, [paper: baseline]).

The loss becomes ``loss - eta * mean token entropy``, through TRL's own
``entropy_coef`` (no second implementation). The paper gives no eta; our default
``entropy.coef = 0.01`` [ours] is the usual order for token-level entropy bonuses
in LLM RL: large enough to keep entropy from collapsing over a few hundred steps,
small next to the policy-gradient term whose advantages are of order 1.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from trainers.method import Method, MethodOptions, register_method


class EntropyOptions(MethodOptions):
    """The ``entropy`` section."""

    coef: float = Field(0.01, ge=0, le=1, description="Entropy bonus coefficient eta (loss - eta * H).")


@register_method
class EntropyBonus(Method):
    """GRPO's rewards; TRL adds ``-entropy.coef * H`` to the loss."""

    name = "entropy"
    Options = EntropyOptions

    def trainer_args(self) -> dict[str, Any]:
        return {"entropy_coef": self.options.coef}

"""GRPO (DESIGN 3.1, [paper]): rewards r_i = c_i in {0, 1}, TRL's objective as is."""

from __future__ import annotations

from trainers.method import Method, register_method


@register_method
class GRPO(Method):
    """The baseline: the verifier's 0/1 reward, standardised by TRL within each group."""

    name = "grpo"

"""G2RL for any TRL script: :class:`G2RLConfig` and :class:`G2RLTrainer`, in TRL's style.

>>> from trainers import G2RLConfig, G2RLTrainer
>>> args = G2RLConfig(output_dir="out", g2rl_lam=1.0, num_generations=8)
>>> trainer = G2RLTrainer(model=model, reward_funcs=[my_reward], args=args, train_dataset=dataset)

The trainer takes exactly ``GRPOTrainer``'s arguments (any model, reward
functions or reward models, plain or conversational datasets, ``peft_config``,
callbacks). G2RL's base reward r (DESIGN 3.4) is the weighted sum of the reward
functions mapped to +1 when above ``correct_threshold`` (default 0.5) and -1
otherwise [paper: r in {-1, +1}]; ``g2rl_base_reward="raw"`` uses the weighted sum
itself as r in eqs. 10 and 12-13 [ours]. The method is :class:`trainers.methods.g2rl.G2RL`,
the one ``workbench run --method g2rl`` trains; see ``docs/g2rl_trainer.md``.
"""

from __future__ import annotations

from typing import Any

from trl import GRPOConfig

from trainers.geometry import GeometryArgs
from trainers.methods.g2rl import G2RL, G2RLOptions
from trainers.trainer import MethodTrainer
from trainers.trl_options import options_of, with_method_options

ROUTE_FIELD = "phi_route"
"""G2RL's ``route`` option is :class:`~trainers.geometry.GeometryArgs`'s ``phi_route``: the geometry of every
method reads Phi by the same route, so it is no ``g2rl_route`` field here."""


class G2RLConfig(GRPOConfig, GeometryArgs):
    r"""Configuration of :class:`G2RLTrainer`: every ``GRPOConfig`` parameter, the geometry options of
    :class:`~trainers.geometry.GeometryArgs`, and G2RL's options (:class:`~trainers.methods.g2rl.G2RLOptions`)
    as ``g2rl_<option>``: ``g2rl_lam``, ``g2rl_scaler``, ``g2rl_clip``, ``g2rl_uniform_groups``,
    ``g2rl_base_reward``, with the same defaults and rules as ``workbench run``'s ``g2rl`` section.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_geometry_args()
        self.g2rl_options()  # validates
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(f"multi_objective_aggregation={self.multi_objective_aggregation!r} would standardise "
                             "each reward on its own and undo G2RL's shaping; use 'sum_then_normalize'")

    def g2rl_options(self) -> G2RLOptions:
        """These fields as the G2RL method's options; ValueError naming the bad field and the fix."""
        return options_of(self, G2RL, exclude=("route",), route=getattr(self, ROUTE_FIELD))


G2RLConfig = with_method_options(G2RLConfig, G2RL, exclude=("route",))


class G2RLTrainer(MethodTrainer):
    """``GRPOTrainer`` with G2RL's gradient-guided reward shaping and the geometry of GeometryMixin.

    Arguments are GRPOTrainer's; ``args`` must be a :class:`G2RLConfig`.
    """

    def __init__(self, model: Any, reward_funcs: Any, args: G2RLConfig | None = None, **kwargs: Any) -> None:
        if args is None:
            args = G2RLConfig(output_dir="g2rl-output")
        if not isinstance(args, G2RLConfig):
            raise TypeError(f"G2RLTrainer needs args=G2RLConfig(...), got {type(args).__name__}; G2RLConfig takes "
                            "every GRPOConfig parameter")
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, method=G2RL(args.g2rl_options()),
                         **kwargs)

"""G2RL for any TRL script: :class:`G2RLConfig` and :class:`G2RLTrainer`, in TRL's style.

>>> from trainers import G2RLConfig, G2RLTrainer
>>> args = G2RLConfig(output_dir="out", g2rl_lambda=1.0, num_generations=8)
>>> trainer = G2RLTrainer(model=model, reward_funcs=[my_reward], args=args, train_dataset=dataset)

The trainer takes exactly ``GRPOTrainer``'s arguments (any model, reward
functions or reward models, plain or conversational datasets, ``peft_config``,
callbacks). G2RL's base reward r (DESIGN 3.4) is the weighted sum of the reward
functions mapped to +1 when above ``correct_threshold`` (default 0.5) and -1
otherwise [paper: r in {-1, +1}]; ``g2rl_base_reward="raw"`` uses the weighted sum
itself as r in eqs. 10 and 12-13 [ours]. The method is :class:`trainers.g2rl.G2RL`,
the one ``workbench run --method g2rl`` trains; see ``docs/g2rl_trainer.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from trl import GRPOConfig

from trainers.g2rl import G2RL, G2RLOptions
from trainers.geometry import GeometryArgs
from trainers.trainer import MethodTrainer

_DEFAULTS = G2RLOptions()


@dataclass
class G2RLConfig(GRPOConfig, GeometryArgs):
    r"""Configuration of :class:`G2RLTrainer`: every ``GRPOConfig`` parameter, the geometry options of
    :class:`~trainers.geometry.GeometryArgs`, and these.

    Parameters:
        g2rl_lambda (`float`, defaults to `1.0`): strength lambda of the reward scaler, in [0, 2].
        g2rl_scaler (`str`, defaults to `"paper_text"`): ``paper_text``, f = 1 + lambda nu_bar (the paper's
            sections 2.4 and 6), or ``eq12``, f = 1 + lambda r nu_bar (eq. 12 as printed).
        g2rl_clip (`float`, defaults to `3.0`): shaped rewards are clipped to [-clip, clip].
        g2rl_uniform_groups (`str`, defaults to `"rank"`): groups whose base rewards are all equal; ``rank``
            shapes them by nu_bar (the paper's reading), ``zero`` gives them GRPO's zero advantage.
        g2rl_base_reward (`str`, defaults to `"sign"`): ``sign``, r = +1 above ``correct_threshold`` else -1
            [paper]; ``raw``, r = the weighted reward [ours].
    """

    g2rl_lambda: float = field(default=_DEFAULTS.lam, metadata={
        "help": "Strength lambda of the reward scaler, in [0, 2] (with eq12, at most 1)."})
    g2rl_scaler: str = field(default=_DEFAULTS.scaler, metadata={
        "help": "'paper_text': f = 1 + lambda nu_bar; 'eq12': f = 1 + lambda r nu_bar."})
    g2rl_clip: float = field(default=_DEFAULTS.clip, metadata={"help": "Clip shaped rewards to [-clip, clip]."})
    g2rl_uniform_groups: str = field(default=_DEFAULTS.uniform_groups, metadata={
        "help": "Equal-reward groups: 'rank' shapes them by nu_bar, 'zero' gives them zero advantage."})
    g2rl_base_reward: str = field(default=_DEFAULTS.base_reward, metadata={
        "help": "'sign': r = +1 above correct_threshold else -1 (the paper's); 'raw': r = the weighted reward."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_geometry_args()
        self.g2rl_options()  # validates
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(f"multi_objective_aggregation={self.multi_objective_aggregation!r} would standardise "
                             "each reward on its own and undo G2RL's shaping; use 'sum_then_normalize'")

    def g2rl_options(self) -> G2RLOptions:
        """These fields as the G2RL method's options; ValueError naming the bad field and the fix."""
        fields = {"lam": "g2rl_lambda", "scaler": "g2rl_scaler", "clip": "g2rl_clip",
                  "uniform_groups": "g2rl_uniform_groups", "base_reward": "g2rl_base_reward"}
        try:
            return G2RLOptions(route=self.phi_route, **{key: getattr(self, name) for key, name in fields.items()})
        except ValidationError as err:
            problems = []
            for e in err.errors():
                if not e["loc"]:  # a rule across fields
                    problems.append(str(e.get("ctx", {}).get("error", e["msg"])))
                    continue
                name = fields.get(str(e["loc"][0]), "phi_route")
                problems.append(f"{name}={e.get('input')!r}: {e['msg']}")
            raise ValueError("invalid G2RLConfig: " + "; ".join(problems)) from None


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

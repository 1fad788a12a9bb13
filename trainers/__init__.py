"""Training methods on TRL's GRPOTrainer: shaping formulas, Phi, geometry, and the trainers.

For a plain TRL script::

    from trainers import G2RLConfig, G2RLTrainer      # G2RL's reward shaping
    from trainers import GeometryMixin, GeometryArgs  # geometry for any GRPO trainer

The names are imported on first use, so ``import trainers.registry`` stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "G2RLConfig": "trainers.g2rl_trainer",
    "G2RLTrainer": "trainers.g2rl_trainer",
    "GeometryArgs": "trainers.geometry",
    "GeometryMixin": "trainers.geometry",
    "MethodTrainer": "trainers.trainer",
    "StepRecord": "trainers.step_record",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainers' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

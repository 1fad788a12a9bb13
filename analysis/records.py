"""The record a run leaves in MLflow (DESIGN 6): artifact paths and dump columns, declared once.

Writers (the trainer's recorders, evaluation, probes) and readers (loaders, the
app, notebooks) take these names from here. Imports no torch.
"""

from __future__ import annotations

DUMP_COLUMNS = ("step", "group", "sample", "prompt_id", "prompt", "completion", "answer", "correct", "base_reward",
                "shaped_reward", "advantage", "num_tokens", "grad_feature", "embedding", "nu", "nu_bar", "novelty")
"""Columns of a feature dump, in order; a method's own score columns follow them."""

SCORE_COLUMNS = ("nu", "nu_bar", "novelty")
"""The built-in methods' score columns (G2RL's nu and nu_bar, EVOL-RL's novelty), in every dump."""

FEATURES_DIR = "features"
EVAL_DIR = "eval"


def step_path(folder: str, step: int) -> str:
    """Artifact path of the step-``step`` file of ``folder`` (:data:`FEATURES_DIR` or :data:`EVAL_DIR`)."""
    return f"{folder}/step_{step:06d}.parquet"


def dump_path(step: int) -> str:
    """Artifact path of the feature dump of training step ``step``."""
    return step_path(FEATURES_DIR, step)


def eval_path(step: int) -> str:
    """Artifact path of the evaluation samples at step ``step``."""
    return step_path(EVAL_DIR, step)

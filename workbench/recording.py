"""What a training step records in MLflow (DESIGN 6).

:class:`StepRecorder` turns one shaped generation batch into the per-step
``train/``, ``geometry/``, method and ``perf/`` metrics and, every
``features.every`` steps, the ``features/step_<step:06d>.parquet`` dump. With
``features.every=0`` no method logs geometry (G2RL still computes Phi for its
rewards), so runs of different methods carry the same metrics.
Geometry comes from :func:`analysis.geometry.geometry_metrics`, the same function
the app and the notebooks call, so all three agree by construction.
:class:`TrackerCallback` forwards TRL's own scalars (KL, entropy, lengths, loss).
"""

from __future__ import annotations

import time
import numpy as np
import pyarrow as pa
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from analysis.geometry import geometry_metrics
from trainers.method import Shaped, StepBatch
from workbench.config import FeaturesConfig
from workbench.tracking import Tracker

DUMP_COLUMNS = ("step", "group", "sample", "prompt_id", "prompt", "completion", "answer", "correct", "base_reward",
                "shaped_reward", "advantage", "num_tokens", "grad_feature", "embedding", "nu", "nu_bar", "novelty")
SCORE_COLUMNS = ("nu", "nu_bar", "novelty")


def dump_path(step: int) -> str:
    return f"features/step_{step:06d}.parquet"


def eval_path(step: int) -> str:
    return f"eval/step_{step:06d}.parquet"


def random_projection(x: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """Seeded Gaussian projection R^d -> R^dim scaled by 1/sqrt(dim) (Johnson-Lindenstrauss [ours]).

    Cosines are kept approximately, with error of order 1/sqrt(dim).
    """
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((x.shape[1], dim)) / np.sqrt(dim)  # (d, dim)
    return x @ proj  # (N, dim)


def zero_variance_groups(values: np.ndarray, groups: np.ndarray) -> int:
    """Groups whose values are all equal: GRPO gets no signal from them."""
    return sum(int(np.ptp(values[groups == g]) == 0) for g in np.unique(groups))


class StepRecorder:
    def __init__(self, tracker: Tracker, features: FeaturesConfig, seed: int = 0) -> None:
        self.tracker = tracker
        self.features = features
        self.seed = seed

    def record(self, *, step: int, advantages: np.ndarray, batch: StepBatch, shaped: Shaped, timed_out: list[bool],
               prompts: list[str], prompt_ids: list[str], texts: list[str], num_tokens: list[int],
               feature_s: float, embed_s: float) -> dict[str, float]:
        metrics = self.metrics(batch, shaped, advantages, timed_out, num_tokens)
        metrics |= {"perf/feature_s": feature_s, "perf/embed_s": embed_s}
        self.tracker.log_metrics(metrics, step=step)
        every = self.features.every
        if every and (step % every == 0 or step == 1):
            frame = self.frame(step, batch, shaped, advantages, prompts, prompt_ids, texts, num_tokens)
            self.tracker.log_parquet(frame, dump_path(step))
        return metrics

    def metrics(self, batch: StepBatch, shaped: Shaped, advantages: np.ndarray, timed_out: list[bool],
                num_tokens: list[int]) -> dict[str, float]:
        out = {
            "train/reward": float(batch.correct.mean()),
            "train/base_reward": float(shaped.base_reward.mean()),
            "train/shaped_reward": float(shaped.shaped_reward.mean()),
            "train/advantage_abs": float(np.abs(advantages).mean()),
            "train/zero_variance_groups": zero_variance_groups(shaped.shaped_reward, batch.groups),
            "train/zero_variance_groups_base": zero_variance_groups(shaped.base_reward, batch.groups),
            "train/no_answer_frac": float(1 - batch.has_answer.mean()),
            "train/answer_timeouts": float(sum(timed_out)),
            "train/completion_tokens": float(np.mean(num_tokens)),
        }
        if batch.features is not None and self.features.every:  # every=0: no geometry for any method
            out |= geometry_metrics(batch.features, batch.embeddings, batch.groups, batch.correct, tau=self.features.tau)
        return out | shaped.metrics

    def frame(self, step: int, batch: StepBatch, shaped: Shaped, advantages: np.ndarray, prompts: list[str],
              prompt_ids: list[str], texts: list[str], num_tokens: list[int]) -> pa.Table:
        """The dump of one step as an Arrow table with the schema of DESIGN 6."""
        n = len(batch.groups)
        sample = np.zeros(n, dtype=np.int64)
        for g in np.unique(batch.groups):
            idx = np.flatnonzero(batch.groups == g)
            sample[idx] = np.arange(len(idx))
        vec = pa.float16() if self.features.dtype == "float16" else pa.float32()
        columns = {
            "step": pa.array(np.full(n, step, dtype=np.int64)),
            "group": pa.array(batch.groups.astype(np.int64)),
            "sample": pa.array(sample),
            "prompt_id": pa.array(prompt_ids, pa.string()),
            "prompt": pa.array(prompts, pa.string()),
            "completion": pa.array(texts, pa.string()),
            "answer": pa.array(batch.answers, pa.string()),
            "correct": pa.array(batch.correct.astype(bool)),
            "base_reward": pa.array(shaped.base_reward.astype(np.float64)),
            "shaped_reward": pa.array(shaped.shaped_reward.astype(np.float64)),
            "advantage": pa.array(advantages.astype(np.float64)),
            "num_tokens": pa.array(np.asarray(num_tokens, dtype=np.int64)),
            "grad_feature": _vectors(self._project(batch.features), n, vec),
            "embedding": _vectors(batch.embeddings, n, vec),
        }
        for name in SCORE_COLUMNS:
            values = shaped.scores.get(name)
            columns[name] = pa.array(
                [None] * n if values is None else [None if not np.isfinite(v) else float(v) for v in values],
                pa.float64(),
            )
        return pa.table(columns)

    def _project(self, features: np.ndarray | None) -> np.ndarray | None:
        dim = self.features.project_dim
        if features is None or dim is None or dim >= features.shape[1]:
            return features
        return random_projection(features, dim, seed=self.seed)


def _vectors(x: np.ndarray | None, n: int, dtype: pa.DataType) -> pa.Array:
    """(N, d) array -> list<dtype> column; None -> a column of nulls."""
    if x is None:
        return pa.nulls(n, pa.list_(dtype))
    flat = pa.array(np.ascontiguousarray(x, dtype=dtype.to_pandas_dtype()).ravel(), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, x.shape[1]).cast(pa.list_(dtype))


class TrackerCallback(TrainerCallback):
    """Forwards TRL's logged scalars under DESIGN 6 names, times each step, flushes at checkpoints."""

    RENAME = {
        "kl": "train/kl",
        "entropy": "train/entropy",
        "completions/mean_length": "train/completion_len",
        "loss": "train/loss",
        "grad_norm": "train/grad_norm",
        "learning_rate": "train/learning_rate",
        "clip_ratio/region_mean": "train/clip_ratio",
        "frac_reward_zero_std": "train/frac_reward_zero_std",
    }

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self._t0: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is not None and state.is_world_process_zero:
            self.tracker.log_metrics({"perf/step_s": time.perf_counter() - self._t0}, step=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        metrics = {new: logs[old] for old, new in self.RENAME.items() if isinstance(logs.get(old), (int, float))}
        self.tracker.log_metrics(metrics, step=state.global_step)

    def on_save(self, args, state, control, **kwargs):
        """Write the held metrics: a run killed later loses only steps that a resume trains again."""
        if state.is_world_process_zero:
            self.tracker.flush()


class ProgressBar(ProgressCallback):
    """transformers' progress bar, showing reward, KL and entropy instead of printing every log dict."""

    SHOWN = ("reward", "kl", "entropy")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {k: f"{logs[k]:.3g}" for k in self.SHOWN if isinstance(logs.get(k), (int, float))}
            self.training_bar.set_postfix(shown, refresh=False)

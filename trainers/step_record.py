"""One training step as the trainer hands it to a recorder, and what is recorded of it (DESIGN 6).

:class:`StepRecord` is the typed record the trainer's hooks fill; a recorder
is any object with ``record(record: StepRecord) -> None``, and optionally ``flush() -> None``, which
the trainer calls at each checkpoint and at the end of training (the recorders write their
:class:`~analysis.summary.PairSummaries` there). :func:`step_metrics`
gives the per-step ``train/``, ``geometry/``, method and ``perf/`` scalars,
:func:`dump_table` the feature dump as an Arrow table. Both recorders (TRL's
logging in :mod:`trainers.geometry`, the workbench's MLflow tracker in
:mod:`workbench.run.recording`) and probes call these two, so they write one schema.
Geometry comes from :func:`analysis.geometry.geometry_metrics`, the function the
app and the notebooks call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa

from analysis.geometry import geometry_metrics
from analysis.records import COMPLETION_COLUMNS, PERF, SCORE_COLUMNS, TRAIN, dump_schema, is_declared_metric, metric_key
from trainers.method import Shaped, StepBatch
from trainers.shaping import group_outcomes, zero_variance_groups


@dataclass(frozen=True)
class StepRecord:
    """A generation batch of one training step, gathered over processes, with TRL's advantages."""

    step: int  # the optimizer step this batch trains (1-based)
    batch: StepBatch
    shaped: Shaped
    advantages: np.ndarray  # (N,) TRL's advantages
    prompts: list[str]  # (N,) prompt texts
    prompt_ids: list[str]  # (N,) the dataset's prompt_id, "" when it has none
    texts: list[str]  # (N,) completion texts
    num_tokens: list[int]  # (N,) completion tokens
    timed_out: list[bool]  # (N,) the answer check ran out of time
    feature_s: float = 0.0  # seconds spent on Phi on rank 0
    embed_s: float = 0.0  # seconds spent on text embeddings on rank 0
    score_columns: tuple[str, ...] = ()  # the method's keys of shaped.scores, dumped as columns
    span: int = 1  # optimizer steps this generation batch trains (steps step .. step + span - 1)


class Recorder(Protocol):
    def record(self, record: StepRecord) -> None: ...


def step_metrics(record: StepRecord, *, geometry: bool = True, tau: float = 0.1) -> dict[str, float]:
    """The step's scalars (DESIGN 6); ``geometry/*`` only with ``geometry`` and Phi at hand.

    Every key is built by :mod:`analysis.records` (:func:`~analysis.records.metric_key`, and
    :func:`~analysis.records.geometry_key` inside ``geometry_metrics``), and a method's own metrics are
    checked by :func:`~analysis.records.is_declared_metric`, so an undeclared name fails at the first step.
    """
    batch, shaped = record.batch, record.shaped
    train = {
        "reward": float(batch.correct.mean()),
        "base_reward": float(shaped.base_reward.mean()),
        "shaped_reward": float(shaped.shaped_reward.mean()),
        "advantage_abs": float(np.abs(record.advantages).mean()),
        "zero_variance_groups": zero_variance_groups(shaped.shaped_reward, batch.groups),
        "zero_variance_groups_base": zero_variance_groups(shaped.base_reward, batch.groups),
        **group_outcomes(batch.correct, batch.groups),
        "no_answer_frac": float(1 - batch.has_answer.mean()),
        "answer_timeouts": float(sum(record.timed_out)),
        "completion_tokens": float(np.mean(record.num_tokens)),
    }
    out = {metric_key(TRAIN, name): value for name, value in train.items()}
    if geometry and batch.features is not None:
        out |= geometry_metrics(batch.features, batch.embeddings, batch.groups, batch.correct, tau=tau)
    for key in shaped.metrics:
        if not is_declared_metric(key, method_sections=(key.partition("/")[0],)):
            raise ValueError(f"method metric {key!r} is not a record name: use '<method section>/<name>', outside "
                             "the families analysis.records declares (train/, perf/, probe/, geometry/, eval/)")
    perf = {metric_key(PERF, "feature_s"): record.feature_s, metric_key(PERF, "embed_s"): record.embed_s}
    return out | shaped.metrics | perf




def dump_due(step: int, every: int, span: int = 1) -> bool:
    """Dumps are written at step 1 and every ``every`` steps; never with ``every=0``.

    A generation batch that trains ``span`` optimizer steps (several updates per rollout batch) is
    recorded once, at its first step ``step``; it is due when a multiple of ``every`` lies among the
    steps it trains, so the cadence holds whatever the number of updates per batch.
    """
    if not every:
        return False
    return step == 1 or (step + span - 1) // every > (step - 1) // every


def embedding_due(step: int, semantic_every: int, dump_every: int, span: int = 1) -> bool:
    """Whether step ``step`` embeds its completions' texts: a semantic step (:func:`dump_due` of
    ``semantic_every``) or a dump step, so every dump carries its embeddings."""
    return dump_due(step, semantic_every, span) or dump_due(step, dump_every, span)


def random_projection(x: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """Seeded Gaussian projection R^d -> R^dim scaled by 1/sqrt(dim) (Johnson-Lindenstrauss [ours]).

    Cosines are kept approximately, with error of order 1/sqrt(dim).
    """
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((x.shape[1], dim)) / np.sqrt(dim)  # (d, dim)
    return x @ proj  # (N, dim)


def dump_table(record: StepRecord, *, dtype: str = "float32", project_dim: int | None = None,
               seed: int = 0) -> pa.Table:
    """The dump of one step as an Arrow table with :func:`analysis.records.dump_schema` (DESIGN 6).

    The built-in score columns are always there (null where the method has
    none); a method's own score columns follow them.
    """
    batch, shaped = record.batch, record.shaped
    n = len(batch.groups)
    sample = np.zeros(n, dtype=np.int64)
    for g in np.unique(batch.groups):
        idx = np.flatnonzero(batch.groups == g)
        sample[idx] = np.arange(len(idx))
    vec = pa.float16() if dtype == "float16" else pa.float32()
    features = batch.features
    if features is not None and project_dim is not None and project_dim < features.shape[1]:
        features = random_projection(features, project_dim, seed=seed)
    columns = {
        "step": pa.array(np.full(n, record.step, dtype=np.int64)),
        "group": pa.array(batch.groups.astype(np.int64)),
        "sample": pa.array(sample),
        "prompt_id": pa.array(record.prompt_ids, pa.string()),
        "prompt": pa.array(record.prompts, pa.string()),
        "completion": pa.array(record.texts, pa.string()),
        "answer": pa.array(batch.answers, pa.string()),
        "correct": pa.array(batch.correct.astype(bool)),
        "base_reward": pa.array(shaped.base_reward.astype(np.float64)),
        "shaped_reward": pa.array(shaped.shaped_reward.astype(np.float64)),
        "advantage": pa.array(record.advantages.astype(np.float64)),
        "num_tokens": pa.array(np.asarray(record.num_tokens, dtype=np.int64)),
        "grad_feature": _vectors(features, n, vec),
        "embedding": _vectors(batch.embeddings, n, vec),
    }
    for name in dict.fromkeys((*SCORE_COLUMNS, *record.score_columns)):
        values = shaped.scores.get(name)
        columns[name] = pa.array(
            [None] * n if values is None else [None if not np.isfinite(v) else float(v) for v in values],
            pa.float64(),
        )
    return pa.table(columns, schema=dump_schema(dtype, record.score_columns))


def completion_rows(record: StepRecord) -> dict[str, list]:
    """The first group of ``record`` as :data:`~analysis.records.COMPLETION_COLUMNS` lists (a completion table)."""
    batch, shaped = record.batch, record.shaped
    idx = np.flatnonzero(batch.groups == batch.groups[0])
    columns = {
        "step": [record.step] * len(idx),
        "group": [int(batch.groups[0])] * len(idx),
        "sample": list(range(len(idx))),
        "prompt": [record.prompts[i] for i in idx],
        "completion": [record.texts[i] for i in idx],
        "answer": [batch.answers[i] for i in idx],
        "correct": [bool(batch.correct[i]) for i in idx],
        "base_reward": [float(shaped.base_reward[i]) for i in idx],
        "shaped_reward": [float(shaped.shaped_reward[i]) for i in idx],
        "advantage": [float(record.advantages[i]) for i in idx],
    }
    return {name: columns[name] for name in COMPLETION_COLUMNS}


def _vectors(x: np.ndarray | None, n: int, dtype: pa.DataType) -> pa.Array:
    """(N, d) array -> list<dtype> column; None -> a column of nulls."""
    if x is None:
        return pa.nulls(n, pa.list_(dtype))
    flat = pa.array(np.ascontiguousarray(x, dtype=dtype.to_pandas_dtype()).ravel(), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, x.shape[1]).cast(pa.list_(dtype))

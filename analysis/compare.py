"""Compare runs: tidy tables the app and the notebooks plot (DESIGN 4, 5, 6).

Inputs are what :mod:`analysis.loaders` returns (the runs table, metric
histories, feature dumps, eval artifacts); outputs are tidy pandas frames, one
row per (run or method, key, step ...), ready for a plotting library. Nothing
here talks to MLflow or caches: the app wraps these calls in ``st.cache_data``.

Pure numpy/pandas/scipy (and scikit-learn for :func:`pca_2d`): no torch, no
``workbench``, no ``trainers``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.geometry import pairs_frame, unit_rows
from analysis.loaders import stack
from analysis.records import DUMP_COLUMNS, SCORE_COLUMNS, parse_eval_key, parse_level_key
from analysis.passk import (
    maj_at_k_per_problem,
    maj_at_k_table,
    pass_at_k_table,
    problem_counts,
)
from analysis.smoothing import ema

BAND_KINDS = ("min-max", "std", "ci95")
FRACTION_NAMES = ("neg_frac", "orth_frac", "opp_frac", "aligned_frac")
_RUN_FIELDS = ("run_id", "run_name", "method", "seed", "preset", "task", "status", "last_step")


# --------------------------------------------------------------------------- runs


def run_labels(runs: pd.DataFrame) -> pd.Series:
    """A short unique label per run, ``<method> · seed <s>`` (plus the run name when that repeats).

    Indexed by run id.
    """
    if runs.empty:
        return pd.Series(dtype=object)
    method = runs["method"].replace("", "?").astype(str)
    base = method + " · seed " + runs["seed"].astype(str)
    clash = base.duplicated(keep=False)
    label = base.where(~clash, base + " · " + runs["run_name"].astype(str))
    label = label.where(~label.duplicated(keep=False), label + " · " + runs["run_id"].str[:6])
    return pd.Series(label.to_numpy(), index=runs["run_id"].to_numpy(), name="label")


def metric_keys(runs: pd.DataFrame, prefix: str = "") -> list[str]:
    """Metric names (without ``metric.``) that at least one run logged, starting with ``prefix``, sorted."""
    keys = [c.removeprefix("metric.") for c in runs.columns if c.startswith("metric." + prefix)]
    return sorted(k for k in keys if runs[f"metric.{k}"].notna().any())


def eval_keys(runs: pd.DataFrame) -> pd.DataFrame:
    """The ``eval/<benchmark>/<kind>_at_<k>`` metrics present: columns key, benchmark, kind, k."""
    rows = []
    for key in metric_keys(runs, "eval/"):
        if parsed := parse_eval_key(key):
            rows.append((key, *parsed))
    frame = pd.DataFrame(rows, columns=["key", "benchmark", "kind", "k"])
    return frame.sort_values(["benchmark", "kind", "k"], kind="stable").reset_index(drop=True)


def level_eval_keys(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-level ``eval/<benchmark>/level_<L>/<kind>_at_<k>`` metrics present (DESIGN 10): columns key,
    benchmark, level (int), kind, k; distinct-correct keys are left out (no k)."""
    rows = []
    for key in metric_keys(runs, "eval/"):
        parsed = parse_level_key(key)
        if parsed is not None and parsed[3] is not None:
            rows.append((key, *parsed))
    frame = pd.DataFrame(rows, columns=["key", "benchmark", "level", "kind", "k"])
    return frame.sort_values(["benchmark", "level", "kind", "k"], kind="stable").reset_index(drop=True)


def overview_table(runs: pd.DataFrame, final_metrics: Sequence[str]) -> pd.DataFrame:
    """The runs as a table: method, seed, preset, task, steps, status, then the last value of each metric.

    Metrics no run logged are left out; the index is the run label.
    """
    table = runs[list(_RUN_FIELDS)].rename(columns={"last_step": "steps", "run_name": "run"})
    for key in final_metrics:
        if f"metric.{key}" in runs.columns:
            table[key] = runs[f"metric.{key}"].astype(float)
    table.index = run_labels(runs).to_numpy()
    return table.drop(columns=["run_id"])


def config_differences(runs: pd.DataFrame) -> pd.DataFrame:
    """Params whose value differs between the runs: one row per param, one column per run label.

    A param a run did not record shows as missing. Empty when all configs agree
    (or there is at most one run).
    """
    params = [c for c in runs.columns if c.startswith("param.")]
    if len(runs) < 2 or not params:
        return pd.DataFrame()
    values = runs[params].astype(object).where(runs[params].notna(), None)
    differs = [c for c in params if values[c].map(repr).nunique() > 1]
    table = values[differs].T
    table.columns = run_labels(runs).to_numpy()
    table.index = [c.removeprefix("param.") for c in differs]
    table.index.name = "param"
    return table


# --------------------------------------------------------------------------- histories


def band_over_seeds(
    tidy: pd.DataFrame,
    by: str | Sequence[str] = "method",
    value: str = "value",
    band: str = "min-max",
    level: float = 0.95,
) -> pd.DataFrame:
    """Mean over seeds and a band, per ``by`` group and step.

    ``tidy`` holds one row per (run, ..., step) with ``value``. ``band`` is
    ``min-max`` (the range over seeds), ``std`` (mean +- one sample standard
    deviation) or ``ci95`` (the Student-t interval at ``level``, as
    :func:`analysis.passk.mean_ci_over_seeds`). One seed: lo = hi = mean.
    Returns the ``by`` columns, step, mean, lo, hi, n.
    """
    if band not in BAND_KINDS:
        raise ValueError(f"band={band!r} is unknown; choose one of {list(BAND_KINDS)}")
    keys = [by] if isinstance(by, str) else list(by)
    cols = [*keys, "step", "mean", "lo", "hi", "n"]
    if tidy.empty:
        return pd.DataFrame(columns=cols)
    grouped = tidy.dropna(subset=[value]).groupby([*keys, "step"], sort=True)[value]
    out = grouped.agg(mean="mean", vmin="min", vmax="max", std="std", n="count").reset_index()
    std = out["std"].fillna(0.0).to_numpy()
    n = out["n"].to_numpy()
    if band == "min-max":
        lo, hi = out["vmin"].to_numpy(), out["vmax"].to_numpy()
    else:
        if band == "std":
            half = std
        else:
            t = stats.t.ppf((1.0 + level) / 2.0, np.maximum(n - 1, 1))
            half = np.where(n > 1, t * std / np.sqrt(np.maximum(n, 1)), 0.0)
        lo, hi = out["mean"].to_numpy() - half, out["mean"].to_numpy() + half
    out["lo"], out["hi"] = lo, hi
    return out[cols]


def smooth_runs(tidy: pd.DataFrame, weight: float, x: str = "step", value: str = "value") -> pd.DataFrame:
    """``tidy`` with each run's ``value`` smoothed over ``x`` in order (:func:`analysis.smoothing.ema`, TensorBoard's).

    ``tidy`` holds one metric: one row per (run_id, ``x``). Returns its rows
    sorted by run_id and ``x``, ``value`` replaced by the smoothed one.
    """
    ordered = tidy.sort_values(["run_id", x], kind="stable")
    smoothed = ordered.groupby("run_id", sort=False)[value].transform(lambda v: ema(v.to_numpy(float), weight))
    return ordered.assign(**{value: smoothed.to_numpy()})


def attach_runs(tidy: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Add method, seed and label columns to a frame that has a ``run_id`` column."""
    info = runs.set_index("run_id")[["method", "seed"]].assign(label=run_labels(runs))
    return tidy.join(info, on="run_id")


# --------------------------------------------------------------------------- geometry from dumps


def dump_pairs(dumps: pd.DataFrame) -> pd.DataFrame:
    """All within-group pairs of a run's dumps, with their gradient and semantic cosines (DESIGN 4).

    ``dumps`` is :func:`analysis.loaders.load_dumps` (one or several steps);
    groups are unique within a step, so pairs never cross steps. Returns
    columns step, group, i, j (row positions in ``dumps``), grad_cos, sem_cos
    (NaN without embeddings) and pair_type, via :func:`analysis.geometry.pairs_frame`.
    """
    cols = ["step", "group", "i", "j", "grad_cos", "sem_cos", "pair_type"]
    if dumps.empty:
        return pd.DataFrame(columns=cols)
    dumps = dumps.reset_index(drop=True)
    grad = stack(dumps, "grad_feature")
    emb = stack(dumps, "embedding") if dumps["embedding"].notna().all() else None
    codes, _ = pd.factorize(pd.MultiIndex.from_frame(dumps[["step", "group"]]))
    pairs = pairs_frame(grad, emb, codes, dumps["correct"].to_numpy(dtype=bool))
    pairs["step"] = dumps["step"].to_numpy()[pairs["i"].to_numpy()]
    pairs["group"] = dumps["group"].to_numpy()[pairs["i"].to_numpy()]
    return pairs[cols]


def group_table(dump: pd.DataFrame) -> pd.DataFrame:
    """Per group of one step's dump: prompt, completions, correct count, reward spread (for choosing a group)."""
    return (
        dump.groupby("group", sort=True)
        .agg(prompt=("prompt", "first"), completions=("sample", "size"), correct=("correct", "sum"),
             base_reward_std=("base_reward", "std"), shaped_reward_std=("shaped_reward", "std"))
        .reset_index()
    )


def pca_2d(x: np.ndarray) -> np.ndarray:
    """First two principal components of the unit-normalised rows of ``x``, shape (N, 2).

    Rows are divided by their norms first (:func:`analysis.geometry.unit_rows`),
    so the map shows cosine geometry, as the geometry metrics do. Uses
    scikit-learn's ``PCA``; fewer than two usable components are padded with 0.
    """
    from sklearn.decomposition import PCA

    u = unit_rows(np.asarray(x, dtype=np.float64))  # (N, d)
    n_comp = min(2, u.shape[0], u.shape[1])
    out = np.zeros((u.shape[0], 2))  # (N, 2)
    if u.shape[0] >= 2 and n_comp >= 1:
        out[:, :n_comp] = PCA(n_components=n_comp, svd_solver="full").fit_transform(u)
    return out


def group_maps(dump: pd.DataFrame, group: int) -> pd.DataFrame:
    """2-D PCA maps of one group's gradient features and of its text embeddings (DESIGN 3.4, paper Fig. 1).

    One row per completion per space: space ("gradient feature" or "text
    embedding"), x, y, plus sample, correct, base/shaped reward, advantage,
    the method score and the completion text.
    """
    part = dump[dump["group"] == group].sort_values("sample").reset_index(drop=True)
    keep = ["sample", "correct", "answer", "base_reward", "shaped_reward", "advantage", "completion"]
    info = part[keep].assign(score=method_score(part), correctness=part["correct"].map({True: "correct",
                                                                                        False: "incorrect"}))
    maps = []
    for space, column in (("gradient feature", "grad_feature"), ("text embedding", "embedding")):
        if part[column].isna().any():
            continue
        xy = pca_2d(stack(part, column))
        maps.append(info.assign(space=space, x=xy[:, 0], y=xy[:, 1]))
    return pd.concat(maps, ignore_index=True) if maps else pd.DataFrame()


# --------------------------------------------------------------------------- samples


def method_score(dump: pd.DataFrame) -> pd.Series:
    """The method's own per-completion score: nu (G2RL), else novelty (EVOL-RL), else missing."""
    for name in ("nu", "novelty"):
        if name in dump.columns and dump[name].notna().any():
            return dump[name].astype("Float64")
    return pd.Series(pd.array([pd.NA] * len(dump), dtype="Float64"), index=dump.index)


def score_columns(dump: pd.DataFrame) -> list[str]:
    """The method score columns of a dump that hold values: the built-ins' (``SCORE_COLUMNS``) and the numeric
    ones a method adds after ``DUMP_COLUMNS`` (its ``score_columns``; a loader's ``run_id`` is none), in order."""
    named = [c for c in dump.columns if c in SCORE_COLUMNS or c not in DUMP_COLUMNS]
    return [c for c in named if pd.api.types.is_numeric_dtype(dump[c]) and dump[c].notna().any()]


def samples_table(dump: pd.DataFrame) -> pd.DataFrame:
    """One step's completions for reading: group, sample, correct, answer, rewards, advantage, scores, text."""
    cols = ["group", "sample", "correct", "answer", "base_reward", "shaped_reward", "advantage"]
    cols += score_columns(dump) + ["num_tokens", "completion", "prompt"]
    return dump[cols].sort_values(["group", "sample"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- pass@k


def passk_curves(eval_frame: pd.DataFrame) -> pd.DataFrame:
    """pass@k and maj@k against k per benchmark from one eval artifact (DESIGN 5, 6).

    :func:`analysis.passk.pass_at_k_table` and :func:`maj_at_k_table` with the
    default k = 1, 2, 4, ..., n. Columns benchmark, metric ("pass"/"maj"), k, value.
    """
    if eval_frame.empty:
        return pd.DataFrame(columns=["benchmark", "metric", "k", "value"])
    return pd.concat([pass_at_k_table(eval_frame), maj_at_k_table(eval_frame)], ignore_index=True)


def problem_table(eval_frame: pd.DataFrame) -> pd.DataFrame:
    """Per problem of one eval artifact: n samples, c correct, pass@1 = c / n, maj@n, the most common answer."""
    counts = problem_counts(eval_frame)
    counts["pass@1"] = counts["c"] / counts["n"]
    maj = maj_at_k_per_problem(eval_frame)
    maj = maj[maj["k"] == maj.groupby("benchmark")["k"].transform("max")]
    counts = counts.merge(maj[["benchmark", "problem_id", "value"]].rename(columns={"value": "maj@n"}),
                          on=["benchmark", "problem_id"], how="left")
    answered = eval_frame.dropna(subset=["answer"])
    top = answered.groupby(["benchmark", "problem_id"])["answer"].agg(lambda a: a.value_counts().index[0])
    return counts.join(top.rename("most common answer"), on=["benchmark", "problem_id"])


def evenly_spaced(values: Iterable[int], at_most: int) -> list[int]:
    """At most ``at_most`` of the sorted ``values``, evenly spread, always keeping the first and the last."""
    values = sorted(set(values))
    if at_most < 1 or len(values) <= at_most:
        return values
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, at_most)).astype(int))
    return [values[i] for i in idx]

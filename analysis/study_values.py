"""The per-run evaluation values of a study: the report's CSV, from which every table is recomputed (DESIGN 10 [ours]).

One row per run, evaluation step, benchmark, level and metric, columns
:data:`VALUE_COLUMNS`:

- ``arm``, ``seed``, ``run_id``, ``step``, ``benchmark``;
- ``level``: ``"all"`` (every problem) or a problem level as text (countdown:
  the fewest steps of a solution; MATH: the file's level), where the
  evaluation rows carry one;
- ``metric``: ``pass@k`` and ``maj@k`` for every k = 1..n (n: the fewest
  samples of a problem of the benchmark), and ``distinct_correct`` where the
  task writes canonical solutions (:func:`analysis.paired.metric_label`);
- ``value``: the mean over the level's problems of the per-problem estimator
  of :mod:`analysis.passk`, rounded to :data:`DECIMALS` decimals (the tables
  are computed from the rounded values, so the CSV reproduces them exactly);
- ``problems``: how many problems the value averages.

Values come from each run's evaluation artifacts (``eval/step_<step>.parquet``),
not from its logged metrics, with the same estimators and maj@k seed as the
logged ``eval/`` metrics, so they agree where both exist.

Pure pandas over :mod:`analysis.loaders` and :mod:`analysis.passk`: no torch, no ``workbench``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.loaders import EVAL_DIR, artifact_steps, load_dumps
from analysis.paired import metric_label
from analysis.passk import by_level, distinct_correct_per_problem, maj_at_k_per_problem, pass_at_k_per_problem

VALUE_COLUMNS = ["arm", "seed", "run_id", "step", "benchmark", "level", "metric", "value", "problems"]
ALL_LEVELS = "all"
DECIMALS = 6
_STEP_COLUMNS = VALUE_COLUMNS[3:]


def eval_values(frame: pd.DataFrame) -> pd.DataFrame:
    """The values of one run's evaluation rows (any number of steps): columns step, benchmark, level, metric,
    value, problems, one row per (step, benchmark, level, metric), in that order.

    A frame recorded before problems had levels (or of a task without levels) gives only ``"all"`` rows; one
    without solutions gives no ``distinct_correct``.
    """
    parts = []
    for (step, benchmark), rows in frame.groupby(["step", "benchmark"], sort=True):
        n = int(rows.groupby("problem_id").size().min())
        ks = range(1, n + 1)
        per_problem = pd.concat([pass_at_k_per_problem(rows, ks), maj_at_k_per_problem(rows, ks),
                                 distinct_correct_per_problem(rows)], ignore_index=True)
        every = per_problem.groupby(["benchmark", "metric", "k"], sort=False)["value"].agg(["mean", "size"])
        every = every.reset_index().rename(columns={"mean": "value", "size": "problems"}).assign(level=ALL_LEVELS)
        levels = by_level(per_problem, rows).astype({"level": str})
        both = pd.concat([every, levels], ignore_index=True)
        both["metric"] = [metric_label(m, k) for m, k in zip(both["metric"], both["k"])]
        parts.append(both.assign(step=int(step))[_STEP_COLUMNS])
    if not parts:
        return pd.DataFrame(columns=_STEP_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    out["value"] = out["value"].astype(float).round(DECIMALS)
    return out.astype({"step": int, "problems": int})


def run_values(train: pd.DataFrame, uri: str) -> pd.DataFrame:
    """:func:`eval_values` of every evaluation artifact of every run of ``train`` (the study's runs, with
    columns run_id, arm, seed), as :data:`VALUE_COLUMNS`, in the runs' order.

    An artifact that cannot be parsed is left out and named in ``.attrs["notes"]``.
    """
    parts, notes = [], []
    for run in train.itertuples():
        steps = artifact_steps(run.run_id, uri, EVAL_DIR)
        if not steps:
            notes.append(f"run {run.run_id[:12]} ({run.arm}, seed {run.seed}) has no evaluation artifacts")
            continue
        frame = load_dumps(run.run_id, uri, steps, folder=EVAL_DIR)
        for step in frame.attrs.get("invalid_steps", []):
            notes.append(f"run {run.run_id[:12]} ({run.arm}, seed {run.seed}): the evaluation artifact of step "
                         f"{step} is truncated or corrupt, so that step is left out")
        if not frame.empty:
            parts.append(eval_values(frame).assign(arm=run.arm, seed=int(run.seed), run_id=run.run_id))
    out = pd.concat(parts, ignore_index=True)[VALUE_COLUMNS] if parts else pd.DataFrame(columns=VALUE_COLUMNS)
    out.attrs["notes"] = notes
    return out


def write_values(values: pd.DataFrame, path: str | Path) -> Path:
    """Write :func:`run_values` as CSV (no index); returns the path."""
    path = Path(path)
    values[VALUE_COLUMNS].to_csv(path, index=False)
    return path


def read_values(path: str | Path) -> pd.DataFrame:
    """Read a CSV of :func:`write_values` back with the types the tables expect (level as text)."""
    return pd.read_csv(path, dtype={"arm": str, "run_id": str, "benchmark": str, "level": str, "metric": str,
                                    "seed": int, "step": int, "value": float, "problems": int})

"""The numbers behind a ``workbench study`` report (DESIGN 10), grouped by arm (tag ``workbench.arm``).

Each function takes the study's runs (:func:`study_runs`) and returns a tidy
frame for one part of the report: per-step training metrics over steps
(:func:`dynamics`: the rollouts' reward, length and entropy, the group
outcomes), the Figure 3 pairs and summary of the probes (:func:`probe_pairs`,
:func:`probe_summary`). Bands are over seeds,
:func:`analysis.compare.band_over_seeds` with the 95 % t-interval. The
evaluation tables and figures come from the per-run values instead
(:mod:`analysis.study_values`, :mod:`analysis.study_tables`).

Pure pandas over :mod:`analysis.loaders`: no torch, no ``workbench``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis.compare import band_over_seeds, dump_pairs
from analysis.loaders import is_probe, load_dumps, metric_history
from analysis.records import metric_key

# The paper's Figure 3 numbers (DESIGN 4): 8 samples on each of the 30 AIME25 problems, Qwen3 models.
PAPER_FIGURE3 = {
    "grad_cos_mean": {"grpo": 0.208, "g2rl": 0.064},
    "neg_frac": {"grpo": 0.0591, "evol_rl": 0.189, "g2rl": 0.2809},
    "sem_cos_mean": {"grpo": 0.738, "g2rl": 0.769},
}
FIGURE3_METRICS = {"grad_cos_mean": "mean gradient cosine", "neg_frac": "negative-pair share",
                   "sem_cos_mean": "semantic cosine"}
TRAIN_DYNAMICS = {"train/reward": "training reward (rollout accuracy)",
                  "train/completion_len": "completion length (tokens)", "train/entropy": "entropy (nats)"}
GROUP_OUTCOMES = {metric_key("train", "mixed_groups"): "mixed groups (some correct, some wrong)",
                  metric_key("train", "all_wrong_groups"): "all-wrong groups",
                  metric_key("train", "all_correct_groups"): "all-correct groups"}
BAND = "ci95"


def study_runs(runs: pd.DataFrame, arms: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training runs, probes) of the arms: FINISHED, the newest per (arm, seed), in arm order."""
    def newest(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame[(frame["status"] == "FINISHED") & frame["arm"].isin(list(arms))]
        frame = frame.sort_values("start_time", ascending=False, kind="stable").drop_duplicates(["arm", "seed"])
        order = {a: k for k, a in enumerate(arms)}
        return frame.sort_values(["arm", "seed"], key=lambda c: c.map(order) if c.name == "arm" else c,
                                 kind="stable").reset_index(drop=True)

    if runs.empty or "arm" not in runs:
        return runs.iloc[0:0], runs.iloc[0:0]
    probe = is_probe(runs)
    return newest(runs[~probe]), newest(runs[probe])


def dynamics(train: pd.DataFrame, uri: str, keys: Sequence[str]) -> pd.DataFrame:
    """Each metric of ``keys`` over steps per arm: columns arm, key, step, mean, lo, hi, n (seeds)."""
    rows = [metric_history(run.run_id, key, uri).assign(arm=run.arm, key=key)
            for run in train.itertuples() for key in keys]
    rows = [r for r in rows if len(r)]  # a key a run did not log
    tidy = (pd.concat(rows, ignore_index=True).astype({"step": int, "value": float}) if rows
            else pd.DataFrame(columns=["arm", "key", "step", "value"]))
    return band_over_seeds(tidy, by=["arm", "key"], band=BAND)


def probe_pairs(probes: pd.DataFrame, uri: str) -> pd.DataFrame:
    """Every within-group pair of every probe's dump, with its arm and seed (the histograms of Figure 3)."""
    frames = [dump_pairs(load_dumps(run.run_id, uri)).assign(arm=run.arm, seed=run.seed)
              for run in probes.itertuples()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["arm", "seed", "grad_cos", "sem_cos", "pair_type"])


def probe_summary(probes: pd.DataFrame, arm_methods: dict[str, str]) -> pd.DataFrame:
    """Per arm and Figure 3 metric: the probes' logged ``geometry/<metric>`` as mean and 95 % CI over
    seeds, beside the paper's value for the arm's method (NaN where the paper gives none).

    Columns arm, method, metric, mean, lo, hi, n, paper.
    """
    cols = ["arm", "method", "metric", "mean", "lo", "hi", "n", "paper"]
    present = [m for m in FIGURE3_METRICS if f"metric.geometry/{m}" in probes]
    if probes.empty or not present:
        return pd.DataFrame(columns=cols)
    tidy = probes.melt(id_vars=["arm", "seed"], value_vars=[f"metric.geometry/{m}" for m in present],
                       var_name="metric", value_name="value")
    tidy["metric"] = tidy["metric"].str.removeprefix("metric.geometry/")
    out = band_over_seeds(tidy.assign(step=0), by=["arm", "metric"], band=BAND).drop(columns="step")
    out["method"] = out["arm"].map(arm_methods)
    out["paper"] = [PAPER_FIGURE3[m].get(method, float("nan")) for m, method in zip(out["metric"], out["method"])]
    order = {a: k for k, a in enumerate(arm_methods)}
    out = out.sort_values(["arm", "metric"], key=lambda c: c.map(order) if c.name == "arm" else
                          c.map(list(FIGURE3_METRICS).index), kind="stable")
    return out[cols].reset_index(drop=True)

"""Per-method summary of a sweep: reward early vs late, held-out pass@1 before/after, step time, geometry.

    python bench/sweep_summary.py --experiment default [--uri sqlite:///mlruns.db]

Everything is read back from MLflow through ``analysis``; step time is the
median ``perf/step_s`` of each run, divided by the grpo runs' median (runs of a
sweep are interleaved with nothing else only if the machine was otherwise idle).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd

from analysis.geometry import direction_fractions, semantic_summary
from analysis.loaders import load_dumps, metric_history, runs_table
from analysis.compare import dump_pairs


def summarise(experiment: str, uri: str, window: int = 10) -> pd.DataFrame:
    runs = runs_table(experiment, uri)
    runs = runs[runs["status"] == "FINISHED"]
    rows = []
    for run in runs.itertuples():
        reward = metric_history(run.run_id, "train/reward", uri)["value"].to_numpy()
        step_s = metric_history(run.run_id, "perf/step_s", uri)["value"].to_numpy()
        evals = {k: metric_history(run.run_id, k, uri) for k in runs.columns.str.removeprefix("metric.")
                 if k.startswith("eval/") and k.endswith("/pass_at_1")}
        first_eval = np.mean([h["value"].iloc[0] for h in evals.values()]) if evals else np.nan
        last_eval = np.mean([h["value"].iloc[-1] for h in evals.values()]) if evals else np.nan
        dumps = load_dumps(run.run_id, uri)
        pairs = dump_pairs(dumps) if not dumps.empty else None
        geo = direction_fractions(pairs["grad_cos"].to_numpy()) if pairs is not None else {}
        sem = semantic_summary(pairs["sem_cos"].dropna().to_numpy()) if pairs is not None else {}
        rows.append({
            "method": run.method, "seed": run.seed,
            f"reward_first{window}": reward[:window].mean(), f"reward_last{window}": reward[-window:].mean(),
            "eval_pass1_step0": first_eval, "eval_pass1_final": last_eval,
            "step_s_median": float(np.median(step_s)) if len(step_s) else np.nan,
            "grad_cos_mean": geo.get("grad_cos_mean", np.nan), "neg_frac": geo.get("neg_frac", np.nan),
            "sem_cos_mean": sem.get("sem_cos_mean", np.nan),
        })
    frame = pd.DataFrame(rows)
    grpo = frame.loc[frame["method"] == "grpo", "step_s_median"].median()
    return frame.assign(step_vs_grpo=frame["step_s_median"] / grpo)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="workbench")
    p.add_argument("--uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlruns.db"))
    args = p.parse_args()
    frame = summarise(args.experiment, args.uri)
    pd.set_option("display.width", 200)
    print(frame.round(3).to_string(index=False))
    print("\nmean over seeds:")
    print(frame.drop(columns="seed").groupby("method", sort=False).mean().round(3).to_string())


if __name__ == "__main__":
    main()

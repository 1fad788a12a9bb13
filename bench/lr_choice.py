"""Apply the learning-rate rule of docs/lr-sweep/rule.md to a sweep's per-run CSV and print the table and the choice.

    python -m bench.lr_choice docs/lr-sweep/per_run.csv >> docs/lr-sweep/README.md

Reads the per-run values of ``workbench study --config configs/study-lr-sweep.yaml`` (one arm per rate, named
``grpo-lr<rate>``, runs with the rate in ``training.learning_rate``): per rate, the mean over seeds of the change
from the first to the last evaluation of held-out pass@1 and pass@32 over every problem. Eligible: pass@1 rose and
pass@32 fell by at most 5 points; chosen: the largest eligible rate, else the smallest candidate.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

MAX_PASS32_LOSS = 0.05
METRICS = ("pass@1", "pass@32")


def rate_of(arm: str) -> float:
    """``grpo-lr3e-5`` -> 3e-05."""
    return float(arm.rsplit("lr", 1)[1])


def changes(values: pd.DataFrame) -> pd.DataFrame:
    """Per rate: the mean over seeds of end - start of each of :data:`METRICS`, the seeds, and eligibility."""
    rows = values[(values["level"].astype(str) == "all") & values["metric"].isin(METRICS)]
    first, last = rows["step"].min(), rows["step"].max()
    wide = rows.pivot_table(index=["arm", "seed", "metric"], columns="step", values="value").reset_index()
    wide["change"] = wide[last] - wide[first]
    table = wide.pivot_table(index="arm", columns="metric", values="change", aggfunc="mean")
    table["seeds"] = wide.groupby("arm")["seed"].nunique()
    for metric in METRICS:
        table[f"{metric} start"] = wide[wide["metric"] == metric].groupby("arm")[first].mean()
        table[f"{metric} end"] = wide[wide["metric"] == metric].groupby("arm")[last].mean()
    table.index = [rate_of(a) for a in table.index]
    table = table.sort_index()
    table["eligible"] = (table["pass@1"] > 0) & (table["pass@32"] >= -MAX_PASS32_LOSS)
    return table


def choose(table: pd.DataFrame) -> float:
    eligible = table.index[table["eligible"]]
    return float(eligible.max()) if len(eligible) else float(table.index.min())


def markdown(table: pd.DataFrame, chosen: float) -> str:
    lines = ["", "## The rule applied (`python -m bench.lr_choice`)", "",
             "| learning rate | seeds | pass@1 start -> end | change | pass@32 start -> end | change | eligible |",
             "| ---: | ---: | --- | ---: | --- | ---: | --- |"]
    for rate, r in table.iterrows():
        lines.append(f"| {rate:g} | {int(r['seeds'])} | {r['pass@1 start']:.3f} -> {r['pass@1 end']:.3f} | "
                     f"{r['pass@1']:+.3f} | {r['pass@32 start']:.3f} -> {r['pass@32 end']:.3f} | {r['pass@32']:+.3f} | "
                     f"{'yes' if r['eligible'] else 'no'} |")
    lines += ["", f"**Chosen: {chosen:g}** (the largest eligible rate)" if table["eligible"].any()
              else f"**Chosen: {chosen:g}** (no rate was eligible: the smallest candidate)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="the sweep report's per_run.csv")
    args = parser.parse_args(argv)
    table = changes(pd.read_csv(args.csv))
    print(markdown(table, choose(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Markdown sections of a study report (:mod:`workbench.experiments.study_report` assembles them).

Each function takes the study and frames computed from the per-run values of
:mod:`analysis.study_values` (or the probes' summary) and returns the lines
of one section; none reads the tracking store.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.paired import STATISTIC
from analysis.records import DISTINCT_CORRECT
from analysis.study_tables import FIRST, LAST, arm_table, level_table, levels_of, paired_display
from analysis.study_values import ALL_LEVELS, VALUE_COLUMNS
from workbench.experiments.study_spec import Study

PROBE_COLUMNS = {"grad_cos_mean": "mean g", "neg_frac": "neg share", "sem_cos_mean": "semantic cos"}
VALUES_CSV = "per_run.csv"
UNITS = ("pass@k and maj@k in percent, distinct correct solutions per problem as a count; mean ± half-width of "
         "the 95 % t-interval over seeds")


def markdown_table(frame: pd.DataFrame) -> list[str]:
    """A GitHub Markdown table of ``frame`` (its index as the first column), or a placeholder when empty."""
    if frame.empty:
        return ["(no evaluation values)"]
    header = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] + ["---:"] * len(frame.columns)) + " |"]
    return lines + ["| " + " | ".join([str(i), *map(str, row)]) + " |" for i, row in frame.iterrows()]


def arms_section(study: Study) -> list[str]:
    lines = ["| arm | method | seeds | overrides |", "| --- | --- | --- | --- |"]
    lines += [f"| {a.name} | {a.method} | {', '.join(map(str, a.seeds))} | "
              f"{', '.join(f'`{o}`' for o in a.overrides) or '(the base config)'} |" for a in study.arms]
    return lines + ["", f"Baseline of the paired differences and hypotheses: `{study.baseline}`."]


def table1_section(values: pd.DataFrame, arms: list[str]) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """Table 1 at each run's first evaluation (step 0) and its last; the tables by stage name."""
    lines, tables = [], {}
    for stage, step, label in (("start", FIRST, "step 0 (each run's first evaluation)"),
                               ("end", LAST, "the end (each run's last evaluation)")):
        tables[stage] = arm_table(values, step, arms)
        lines += [f"**At {label}** ({UNITS}):", "", *markdown_table(tables[stage]), ""]
    return lines, tables


def paired_section(paired: pd.DataFrame, study: Study, arms: list[str]) -> list[str]:
    """The paired differences to the baseline at the end, over all problems and by level."""
    lines = [f"Each arm minus `{study.baseline}` at the end, seed by seed over the seeds both ran; mean and 95 % "
             f"interval (pass@k and maj@k in percentage points, distinct correct solutions per problem as a "
             f"count). Statistic: {STATISTIC}. `pairs`: the common seeds.", "",
             *markdown_table(paired_display(paired, arms)), ""]
    levels = levels_of(paired) if len(paired) else []
    if levels:
        lines += ["By level:", "", *markdown_table(paired_display(paired, arms, levels)), ""]
    return lines


def levels_section(values: pd.DataFrame, arms: list[str]) -> list[str]:
    """Per-level tables at the start and the end, with the problems of each level; a line when none."""
    levels = levels_of(values)
    if not levels:
        return ["The evaluation rows carry no problem level (a task without levels, or runs recorded before "
                "levels existed), so there is no split by level.", ""]
    counts = values[values["level"] != ALL_LEVELS].groupby(["benchmark", "level"])["problems"].max()
    sizes = ", ".join(f"{b} L{lv}: {int(n)} problems" for (b, lv), n in counts.items())
    lines = [f"L<level>: the problems of one level (countdown: the fewest steps a solution needs). {sizes}.", ""]
    for stage, step in (("start", FIRST), ("end", LAST)):
        lines += [f"**At the {stage}** ({UNITS}):", "", *markdown_table(level_table(values, step, arms)), ""]
    return lines


def _number(x: float) -> str:
    return "" if math.isnan(x) else f"{x:+.4f}"


def hypotheses_section(results: pd.DataFrame) -> list[str]:
    """The pre-registered hypotheses with their paired differences and verdicts."""
    if results.empty:
        return ["The study file pre-registers no hypotheses (`hypotheses:`)."]
    lines = [f"Statistic: {STATISTIC}. A hypothesis is **supported** when the 95 % interval of arm - baseline "
             "lies above `min_effect`, **refuted** when it lies below it, **inconclusive** when it contains it (or "
             "there are fewer than 2 pairs, so no interval). Differences are in the metric's unit (fractions for "
             "pass@k and maj@k).", "",
             "| # | hypothesis | benchmark | problems | step | mean difference | 95 % interval | pairs | verdict |",
             "| --- | --- | --- | --- | --- | ---: | --- | ---: | --- |"]
    for k, r in enumerate(results.itertuples(), 1):
        claim = f"{r.arm} - {r.baseline} on {r.metric} > {r.min_effect:+g}"
        problems = "all" if pd.isna(r.level) else f"level {int(r.level)}"
        interval = "" if math.isnan(r.lo) else f"[{_number(r.lo)}, {_number(r.hi)}]"
        lines.append(f"| H{k} | {claim} | {r.benchmark} | {problems} | {r.step_used} | {_number(r.mean)} | "
                     f"{interval} | {r.pairs} | **{r.verdict}** |")
    return lines


def values_section(values: pd.DataFrame) -> list[str]:
    """What the per-run CSV holds and how to recompute the tables from it."""
    ks = sorted({int(m.split("@")[1]) for m in set(values["metric"]) - {DISTINCT_CORRECT}})
    span = f"pass@k and maj@k for k = {ks[0]}..{ks[-1]}" if ks else "no pass@k"
    return [f"[{VALUES_CSV}]({VALUES_CSV}): {len(values)} rows, one per run, evaluation step, benchmark, level and "
            f"metric, columns {', '.join(VALUE_COLUMNS)}. Computed from the runs' evaluation artifacts (per-sample "
            f"rows) with `analysis.passk`; `level` is `all` or a problem level; metrics {span} and "
            f"`{DISTINCT_CORRECT}` where the task writes solutions; `problems`: the problems a value averages.",
            "",
            "Every table above is recomputed from it: Table 1 and the level tables are the mean and t-interval over "
            "seeds of `value` at each run's first or last `step`; the paired tables and the hypotheses pair the "
            "arms' values by `seed` (`analysis.study_tables` does both: `read_values`, then `arm_table`, "
            "`paired_rows`, `hypothesis_rows`)."]


def _fmt(mean: float, lo: float, hi: float, n: int) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.3f}" if n < 2 else f"{mean:.3f} ± {(hi - lo) / 2:.3f}"


def figure3_table(summary: pd.DataFrame, study: Study) -> list[str]:
    rows = []
    for arm in study.arms:
        part = summary[summary["arm"] == arm.name].set_index("metric")
        if part.empty:
            continue
        cells = []
        for metric in PROBE_COLUMNS:
            r = part.loc[metric] if metric in part.index else None
            ours = "" if r is None else _fmt(r["mean"], r["lo"], r["hi"], int(r["n"]))
            paper = "" if r is None or math.isnan(r["paper"]) else f"{r['paper']:.3f}"
            cells += [ours, paper]
        seeds = int(part["n"].max())
        rows.append(f"| {arm.name} | {arm.method} | {seeds} | " + " | ".join(cells) + " |")
    if not rows:
        return ["(no finished probes)"]
    head = " | ".join(f"{name} | paper {name}" for name in PROBE_COLUMNS.values())
    return [f"| arm | method | probes | {head} |", "| --- | --- | ---: |" + " ---: |" * (2 * len(PROBE_COLUMNS)),
            *rows]


def demoted(lines: list[str]) -> list[str]:
    """Markdown ``lines`` with every heading one level lower (``#`` -> ``##``), fenced code left alone."""
    out, fenced = [], False
    for line in lines:
        fenced ^= line.startswith("```")
        out.append("#" + line if not fenced and line.startswith("#") else line)
    return out

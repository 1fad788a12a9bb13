"""The report folder of a ``workbench study`` (DESIGN 10): ``README.md`` with its tables, the per-run CSV
they are recomputed from, and the figures of :mod:`workbench.experiments.study_plots` as PNG and HTML.

Everything is read back from the tracking store, so ``--report-only`` rewrites
the same report without training. The evaluation numbers come from the runs'
evaluation artifacts through :func:`analysis.study_values.run_values`; the
report writes them as ``per_run.csv`` and computes every table from them
(:mod:`analysis.study_tables`), so the CSV reproduces the report. The sections
are :mod:`workbench.experiments.study_sections`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd

from workbench.experiments.study_spec import Study


def git_commit() -> str:
    """The commit of the workbench checkout, ``+ local changes`` when its tracked files differ from it."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" + local changes" if dirty else "")


def stored_seconds(run_ids: list[str], uri: str) -> float:
    """Sum of end - start over the given runs, as the store recorded them."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    total = 0.0
    for run_id in run_ids:
        info = c.get_run(run_id).info
        if info.end_time and info.start_time:
            total += (info.end_time - info.start_time) / 1000
    return total


def _header(study: Study, command: str, wall_s: float | None, train: pd.DataFrame, probes: pd.DataFrame,
            seconds: float) -> list[str]:
    invocation = f"{wall_s:.0f} s ({wall_s / 60:.1f} min) for this invocation; " if wall_s else ""
    return [f"# Study `{study.experiment}`", "",
            f"- command: `{command}`",
            f"- config: `{study.path}`",
            f"- commit: `{git_commit()}`",
            f"- wall time: {invocation}{seconds:.0f} s ({seconds / 60:.1f} min) summed over the {len(train)} training "
            f"runs and {len(probes)} probes in the store",
            f"- runs: {len(train)} finished of {len(study.cells)} cells ({study.grid_text()}), experiment "
            f"`{study.experiment}`", ""]


def _figure(name: str, caption: str, alt: str) -> list[str]:
    return [caption, "", f"![{alt}]({name}.png)", "", f"Interactive: [{name}.html]({name}.html)", ""]


def _evaluation_sections(study: Study, values: pd.DataFrame, arms: list[str], out: Path) -> tuple[list[str], list[str]]:
    """Table 1, the hypotheses, the paired and level tables and the evaluation figures; (lines, files)."""
    from analysis.study_tables import (curve_bands, headline_metrics, hypothesis_rows, paired_over_steps,
                                       paired_rows, passk_bands)
    from workbench.experiments import study_sections as sec
    from workbench.experiments.study_plots import curves_figure, paired_figure, passk_figure

    files: list[str] = []
    results = hypothesis_rows(values, study.hypotheses)
    results.to_csv(out / "hypotheses.csv", index=False)
    lines = ["## Hypotheses (pre-registered in the study file)", "", *sec.hypotheses_section(results), ""]
    table_lines, tables = sec.table1_section(values, arms)
    lines += ["## Table 1: held-out pass@1, maj@n, pass@n and distinct correct solutions per arm", "", *table_lines]
    for stage, table in tables.items():
        if not table.empty:
            table.to_csv(out / f"table_{stage}.csv")
    paired = paired_rows(values, study.baseline)
    paired.to_csv(out / "paired_end.csv", index=False)
    lines += [f"## Paired differences to `{study.baseline}`", "", *sec.paired_section(paired, study, arms)]
    lines += ["## By problem level", "", *sec.levels_section(values, arms)]
    metrics_of = {b: headline_metrics(values, b) for b in values["benchmark"].unique()}
    bands = curve_bands(values, metrics_of)
    if len(bands):
        files += curves_figure(bands, arms, out)
        steps = values["step"].nunique()
        lines += ["## Figure 2: held-out metrics over training", "",
                  *_figure("curves", f"At each of the {steps} evaluation steps; lines: mean over seeds, bands: 95 % "
                           "t-interval over seeds.", "held-out curves")]
        diffs = paired_over_steps(values, study.baseline, metrics_of)
        if diffs["pairs"].gt(0).any():
            files += paired_figure(diffs, arms, study.baseline, out)
            lines += _figure("paired", f"Each arm minus `{study.baseline}` at every evaluation step, with the paired "
                             "95 % interval over the common seeds.", "paired differences")
    passk = passk_bands(values)
    if len(passk):
        files += passk_figure(passk, arms, out)
        passk.to_csv(out / "passk.csv", index=False)
        lines += ["## pass@k and maj@k against k, at the first and the last evaluation", "",
                  *_figure("passk", "Every k = 1..n; dashed: each run's first evaluation (step 0), solid: its last; "
                           "bands: 95 % CI over seeds; a row per problem level where the rows carry one.", "pass@k")]
    return lines, files


def _training_sections(train: pd.DataFrame, uri: str, arms: list[str], out: Path) -> tuple[list[str], list[str]]:
    """The group outcomes (where logged) and the training dynamics; (lines, files)."""
    from analysis.study import GROUP_OUTCOMES, TRAIN_DYNAMICS, dynamics
    from workbench.experiments.study_plots import UNIT, dynamics_figure

    lines, files = [], []
    logged = {k: v for k, v in GROUP_OUTCOMES.items() if f"metric.{k}" in train}
    if logged:
        files += dynamics_figure(dynamics(train, uri, list(logged)), logged, arms, out, "groups",
                                 "shares of the training groups by outcome", y_range=UNIT)
        lines += ["## Group outcomes during training", "",
                  *_figure("groups", "Shares of each step's groups whose completions were all correct, all wrong, "
                           "or mixed (only mixed groups carry GRPO's advantage); bands: 95 % CI over seeds.",
                           "group outcomes")]
    dyn = dynamics(train, uri, list(TRAIN_DYNAMICS))
    if len(dyn):
        files += dynamics_figure(dyn, TRAIN_DYNAMICS, arms, out)
        lines += ["## Training dynamics", "",
                  *_figure("dynamics", "Reward, completion length and entropy of the training rollouts at every "
                           "step; bands: 95 % CI over seeds.", "dynamics")]
    return lines, files


def _probe_section(study: Study, probes: pd.DataFrame, uri: str, arms: list[str], out: Path) -> tuple[list[str],
                                                                                                        list[str]]:
    from analysis.study import probe_pairs, probe_summary
    from workbench.experiments.study_plots import figure3
    from workbench.experiments.study_sections import figure3_table

    summary = probe_summary(probes, {a.name: a.method for a in study.arms})
    benchmark, n = study.probe["benchmark"], study.probe["n"]
    lines = [f"## Figure 3: geometry of the final checkpoints (probe `{benchmark}`, {n} samples per problem, "
             f"{study.probe['max_problems'] or 'every'} problems)", "",
             "Ours: mean ± 95 % CI over seeds of each probe's logged `geometry/*`. The paper's: 8 samples on "
             "each of the 30 AIME25 problems from Qwen3 models, so a different model and benchmark.", "",
             *figure3_table(summary, study), ""]
    files: list[str] = []
    if len(probes):
        summary.to_csv(out / "figure3.csv", index=False)
        files += figure3(probe_pairs(probes, uri), summary, arms, out)
        lines += ["![Figure 3](figure3.png)", "", "Interactive: [figure3.html](figure3.html)", ""]
    return lines, files


def write_study_report(study: Study, uri: str, *, command: str, wall_s: float | None) -> list[Path]:
    """Write the report of ``study`` into ``study.report_dir``; returns the files written.

    ``wall_s``: the wall time of the invocation that trained (None for ``--report-only``).
    """
    import matplotlib

    matplotlib.use("Agg")
    from analysis.loaders import runs_table
    from analysis.study import study_runs
    from analysis.study_values import read_values, run_values, write_values
    from workbench.experiments import study_sections as sec

    out = Path(study.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    arms = [a.name for a in study.arms]
    train, probes = study_runs(runs_table(study.experiment, uri), arms)
    lines = _header(study, command, wall_s, train, probes, stored_seconds([*train["run_id"], *probes["run_id"]], uri))
    lines += ["## Arms", "", *sec.arms_section(study), ""]
    computed = run_values(train, uri)
    files = [write_values(computed, out / sec.VALUES_CSV).name]
    values = read_values(out / sec.VALUES_CSV)  # the tables are made from the CSV as written
    lines += [f"- {note}" for note in computed.attrs["notes"]] + ([""] if computed.attrs["notes"] else [])
    if len(values):
        part, written = _evaluation_sections(study, values, arms, out)
        lines += part
        files += written
    else:
        lines += ["(no evaluation artifacts in the store: no tables)", ""]
    part, written = _training_sections(train, uri, arms, out)
    lines, files = lines + part, files + written
    if study.probe is not None:
        part, written = _probe_section(study, probes, uri, arms, out)
        lines, files = lines + part, files + written
    lines += ["## The per-run CSV", "", *sec.values_section(values), ""]
    for path in study.include:
        lines += [f"<!-- included from {path} -->", "", *sec.demoted(path.read_text().splitlines()), ""]
    (out / "README.md").write_text("\n".join(lines))
    return [out / "README.md", *(out / f for f in files)]

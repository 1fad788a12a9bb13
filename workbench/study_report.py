"""The report folder of a ``workbench study``: ``README.md`` with its tables, and the figures of
:mod:`workbench.study_plots` as PNG and HTML. Everything is read back from the tracking store, so
``--report-only`` rewrites the same report without training.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pandas as pd

from workbench.study_spec import Study

PROBE_COLUMNS = {"grad_cos_mean": "mean g", "neg_frac": "neg share", "sem_cos_mean": "semantic cos"}


def git_commit() -> str:
    """The commit of the workbench checkout, ``+ local changes`` when its tracked files differ from it."""
    root = Path(__file__).resolve().parents[1]
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


def _markdown_table(frame: pd.DataFrame) -> list[str]:
    header = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] + ["---:"] * len(frame.columns)) + " |"]
    lines += ["| " + " | ".join([str(i), *map(str, row)]) + " |" for i, row in frame.iterrows()]
    return lines


def _arms_section(study: Study) -> list[str]:
    lines = ["| arm | method | overrides |", "| --- | --- | --- |"]
    lines += [f"| {a.name} | {a.method} | {', '.join(f'`{o}`' for o in a.overrides) or '(the base config)'} |"
              for a in study.arms]
    return lines


def _table1(study: Study, train: pd.DataFrame, uri: str) -> tuple[list[str], dict[str, pd.DataFrame]]:
    from analysis.report import report_table

    n = study.cells[0].eval.n
    tables, lines = {}, []
    for label, step in (("step 0", 0), ("the end", "last")):
        table = report_table(study.experiment, uri, ks=(1, n), maj_k=n, step=step, runs=train, group_by="arm")
        if not table.empty:
            table = table.reindex([a.name for a in study.arms if a.name in table.index])
        tables[label] = table
        lines += [f"**At {label}** (mean ± 95 % CI half-width over seeds, in %):", ""]
        lines += _markdown_table(table) if not table.empty else ["(no eval metrics)"]
        lines += [*[f"- {note}" for note in table.attrs.get("notes", [])], ""]
    return lines, tables


def _fmt(mean: float, lo: float, hi: float, n: int) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.3f}" if n < 2 else f"{mean:.3f} ± {(hi - lo) / 2:.3f}"


def _figure3_table(summary: pd.DataFrame, study: Study) -> list[str]:
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


def _demoted(lines: list[str]) -> list[str]:
    """Markdown ``lines`` with every heading one level lower (``#`` -> ``##``), fenced code left alone."""
    out, fenced = [], False
    for line in lines:
        fenced ^= line.startswith("```")
        out.append("#" + line if not fenced and line.startswith("#") else line)
    return out


def write_study_report(study: Study, uri: str, *, command: str, wall_s: float | None) -> list[Path]:
    """Write the report of ``study`` into ``study.report_dir``; returns the files written.

    ``wall_s``: the wall time of the invocation that trained (None for ``--report-only``).
    """
    import matplotlib

    matplotlib.use("Agg")
    from analysis.loaders import runs_table
    from analysis.study import dynamics, held_out_keys, passk_bands, probe_pairs, probe_summary, study_runs
    from analysis.study import TRAIN_DYNAMICS
    from workbench.study_plots import dynamics_figure, figure3, passk_figure

    out = Path(study.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    arms = [a.name for a in study.arms]
    train, probes = study_runs(runs_table(study.experiment, uri), arms)
    files: list[str] = []
    seconds = stored_seconds([*train["run_id"], *probes["run_id"]], uri)
    lines = [f"# Study `{study.experiment}`", "",
             f"- command: `{command}`",
             f"- config: `{study.path}`",
             f"- commit: `{git_commit()}`",
             f"- wall time: {'%.0f s (%.1f min) for this invocation; ' % (wall_s, wall_s / 60) if wall_s else ''}"
             f"{seconds:.0f} s ({seconds / 60:.1f} min) summed over the {len(train)} training runs and "
             f"{len(probes)} probes in the store",
             f"- runs: {len(train)} finished of {len(study.cells)} cells ({len(arms)} arms x {len(study.seeds)} "
             f"seeds {list(study.seeds)}), experiment `{study.experiment}`",
             "", "## Arms", "", *_arms_section(study), ""]
    table_lines, tables = _table1(study, train, uri)
    lines += ["## Table 1: held-out pass@1, maj@n, pass@n per arm", "", *table_lines]
    for label, table in tables.items():
        if not table.empty:
            table.to_csv(out / f"table_{'start' if label == 'step 0' else 'end'}.csv")
    bands = passk_bands(train, uri)
    if len(bands):
        files += passk_figure(bands, arms, out)
        bands.to_csv(out / "passk.csv", index=False)
        lines += ["## pass@k against k, at step 0 and at the end", "",
                  "Dashed: the first evaluation (step 0), solid: the last; bands: 95 % CI over seeds.", "",
                  "![pass@k](passk.png)", "", "Interactive: [passk.html](passk.html)", ""]
    if study.probe is not None:
        summary = probe_summary(probes, {a.name: a.method for a in study.arms})
        benchmark, n = study.probe["benchmark"], study.probe["n"]
        lines += [f"## Figure 3: geometry of the final checkpoints (probe `{benchmark}`, {n} samples per problem, "
                  f"{study.probe['max_problems'] or 'every'} problems)", "",
                  "Ours: mean ± 95 % CI over seeds of each probe's logged `geometry/*`. The paper's: 8 samples on "
                  "each of the 30 AIME25 problems from Qwen3 models, so a different model and benchmark.", "",
                  *_figure3_table(summary, study), ""]
        if len(probes):
            summary.to_csv(out / "figure3.csv", index=False)
            files += figure3(probe_pairs(probes, uri), summary, arms, out)
            lines += ["![Figure 3](figure3.png)", "", "Interactive: [figure3.html](figure3.html)", ""]
    held_out = held_out_keys(train)
    dyn = dynamics(train, uri, [*held_out, *TRAIN_DYNAMICS])
    if len(dyn):
        files += dynamics_figure(dyn, held_out, arms, out)
        lines += ["## Figure 2: training dynamics", "",
                  "Held-out pass@1 at the evaluation steps, completion length and entropy of the training "
                  "rollouts at every step; bands: 95 % CI over seeds.", "",
                  "![dynamics](dynamics.png)", "", "Interactive: [dynamics.html](dynamics.html)", ""]
    for path in study.include:
        lines += [f"<!-- included from {path} -->", "", *_demoted(path.read_text().splitlines()), ""]
    (out / "README.md").write_text("\n".join(lines))
    return [out / "README.md", *(out / f for f in files)]

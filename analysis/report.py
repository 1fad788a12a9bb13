"""The paper's Table 1 from the runs of one experiment (DESIGN 5): ``workbench report`` and the app's pass@k page.

Rows are methods, columns benchmark x {pass@1, maj@16, pass@16}, then the
mean distinct correct solutions per problem where runs logged it
(``eval/<benchmark>/distinct_correct``); ``by_level`` adds the same columns
for each problem level from the logged ``eval/<benchmark>/level_<L>/...``
metrics. Each cell is the mean over seeds and a spread over seeds, in percent
like the paper (distinct correct solutions: a count). The
spread is :func:`analysis.compare.band_over_seeds`: by default ``ci95``, the
half-width of the Student-t interval of
:func:`analysis.passk.mean_ci_over_seeds`; also ``std`` or ``min-max``. Values
are the runs' eval metrics ``eval/<benchmark>/pass_at_<k>`` and ``maj_at_<k>``
at the last logged step (or a given step). When runs sampled fewer than the
requested k (n = 8, say), the column uses the largest k logged below it and
its label says so (maj@8, pass@8).

Only FINISHED runs count; of several finished runs of one (method, seed) the
newest is used. Runs of ``workbench eval`` (tag ``method='eval'``) appear as rows
``eval: <model>``. What was left out, and why, is in ``table.attrs["notes"]``.

Pure pandas/numpy over :mod:`analysis.loaders`: no torch, no ``workbench``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import pandas as pd

from analysis.compare import BAND_KINDS, band_over_seeds
from analysis.loaders import is_probe, metric_history, runs_table
from analysis.records import DISTINCT_CORRECT, METHOD_ORDER, distinct_key, parse_eval_key, parse_level_key

BENCHMARK_ORDER = ("math500", "amc", "aime24", "aime25", "gpqa_diamond", "gsm8k", "countdown", "countdown_test", "arithmetic", "arithmetic_test")
LONG_COLUMNS = ["method", "benchmark", "level", "metric", "k", "mean", "half", "lo", "hi", "n_seeds", "values"]
_KEYS = ["method", "benchmark", "level", "metric", "k"]
ALL_LEVELS = "all"  # the level of a value over every problem


def describe_spread(band: str = "ci95", level: float = 0.95) -> str:
    """What a cell "mean ± x" or "mean (lo–hi)" means for ``band``, e.g. for a caption."""
    if band not in BAND_KINDS:
        raise ValueError(f"band={band!r} is unknown; choose one of {list(BAND_KINDS)}")
    return {"ci95": f"mean ± {100 * level:g}% t-interval half-width over seeds",
            "std": "mean ± 1 std over seeds",
            "min-max": "mean (min–max) over seeds"}[band]


def _finished(runs: pd.DataFrame, notes: list[str], group_by: str = "method") -> pd.DataFrame:
    """The finished runs to report, one per (row, seed), newest first wins; rows are the ``group_by`` column."""
    if runs.empty:
        return runs
    runs = runs[(runs["method"].astype(str) != "") & ~is_probe(runs)].copy()  # probes measure geometry, not pass@k
    others = runs[runs["status"] != "FINISHED"]
    if len(others):
        counts = others["status"].value_counts().to_dict()
        notes.append(f"ignored {len(others)} run(s) that did not finish: "
                     + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    runs = runs[runs["status"] == "FINISHED"].copy()
    model = runs["param.model"] if "param.model" in runs else pd.Series("", index=runs.index)
    runs["row"] = [f"eval: {m}" if method == "eval" else row
                   for method, row, m in zip(runs["method"], runs[group_by].astype(str), model)]
    runs = runs.sort_values("start_time", ascending=False, kind="stable")
    dupes = runs.duplicated(["row", "seed"], keep="first")
    if dupes.any():
        notes.append(f"ignored {int(dupes.sum())} older finished run(s) of a ({group_by}, seed) that has a newer one: "
                     + ", ".join(runs.loc[dupes, "run_id"].str[:12]))
    return runs[~dupes]


def _eval_columns(runs: pd.DataFrame, by_level: bool = False) -> dict[tuple[str, str, str, int], str]:
    """(benchmark, level, kind, k) -> column name in the runs table; level ``"all"`` for every problem, or a
    problem level (``eval/<benchmark>/level_<L>/...``, only ``by_level``); kind ``distinct_correct`` has k 0."""
    out = {}
    for col in runs.columns:
        key = col.removeprefix("metric.")
        if not col.startswith("metric."):
            continue
        if parsed := parse_eval_key(key):
            out[(parsed[0], ALL_LEVELS, parsed[1], parsed[2])] = col
        elif key.count("/") == 2 and key == distinct_key(benchmark := key.split("/")[1]):
            out[(benchmark, ALL_LEVELS, DISTINCT_CORRECT, 0)] = col
        elif by_level and (level_key := parse_level_key(key)):
            benchmark, lv, kind, k = level_key
            out[(benchmark, str(lv), kind, k or 0)] = col
    return out


def _pick_k(runs: pd.DataFrame, columns: dict, group: tuple[str, str], kind: str, wanted: int) -> int | None:
    """The largest logged k <= wanted of a (benchmark, level), preferring one every run with it has."""
    ks = sorted((k for (b, lv, kd, k) in columns if (b, lv) == group and kd == kind and k <= wanted), reverse=True)
    if not ks:
        return None
    has_bench = runs[[c for (b, lv, _, _), c in columns.items() if (b, lv) == group]].notna().any(axis=1)
    for k in ks:
        if runs.loc[has_bench, columns[(*group, kind, k)]].notna().all():
            return k
    return ks[0]


def _value_at(run_id: str, key: str, uri: str, step: int) -> float:
    history = metric_history(run_id, key, uri)
    hit = history.loc[history["step"] == step, "value"]
    return float(hit.iloc[-1]) if len(hit) else math.nan


def _order(names, preferred: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    first = [n for n in preferred if n in names]
    return first + sorted(n for n in names if n not in preferred)


def report_data(experiment: str, uri: str, ks: Sequence[int] = (1, 16), maj_k: int = 16,
                step: int | str = "last", band: str = "ci95", level: float = 0.95,
                runs: pd.DataFrame | None = None, group_by: str = "method", by_level: bool = False) -> pd.DataFrame:
    """Tidy numbers behind the table: one row per (method, benchmark, level, metric) with mean and spread.

    ``runs`` is the experiment's runs table (:func:`analysis.loaders.runs_table`)
    or a selection of its rows, when the caller holds it already; None reads
    it from ``uri``. ``band`` and ``level`` choose the spread as in
    :func:`analysis.compare.band_over_seeds`. ``group_by``: the runs-table
    column whose values are the rows (``arm`` for a study); the column
    ``method`` of the result holds them.

    ``by_level``: also the logged per-level metrics (``eval/<benchmark>/level_<L>/...``), each level as
    its own rows; ``level`` (the problem level, not the confidence ``level``) is ``"all"`` otherwise.

    Columns ``method, benchmark, level, metric`` ("pass", "maj" or "distinct_correct", the mean distinct
    correct solutions per problem, where logged), ``k`` (the k used; 0 for distinct_correct),
    ``mean, half, lo, hi`` (fractions; ``half`` = (hi - lo) / 2; all three NaN
    for one seed), ``n_seeds, values`` (per-seed values). Notes are in
    ``.attrs["notes"]``.
    """
    if step != "last" and not isinstance(step, int):
        raise ValueError(f"step={step!r} must be 'last' or an integer step")
    describe_spread(band, level)  # rejects an unknown band before reading anything
    notes: list[str] = []
    runs = _finished(runs_table(experiment, uri) if runs is None else runs, notes, group_by)
    out = pd.DataFrame(columns=LONG_COLUMNS)
    out.attrs["notes"] = notes
    if runs.empty:
        notes.append(f"experiment {experiment!r} at {uri} has no finished runs")
        return out
    columns = _eval_columns(runs, by_level)
    has_eval = runs[list(columns.values())].notna().any(axis=1) if columns else pd.Series(False, index=runs.index)
    for run in runs[~has_eval].itertuples():
        notes.append(f"run {run.run_id[:12]} ({run.row}, seed {run.seed}) has no eval/ metrics: it ran with "
                     "eval.final=false, or without any eval benchmark, so it is left out")
    runs = runs[has_eval]
    if runs.empty:
        return out
    benchmarks = _order((b for (b, _, _, _) in columns), BENCHMARK_ORDER)
    groups = [(b, lv) for b in benchmarks for lv in sorted({lv for (b2, lv, _, _) in columns if b2 == b},
                                                          key=lambda v: (v != ALL_LEVELS, v.zfill(4)))]
    if by_level and all(lv == ALL_LEVELS for _, lv in groups):
        notes.append("no per-level metrics were logged (runs recorded before problems had levels, or a task "
                     "without levels), so there is no split by level")
    wanted = [("pass", int(ks[0])), ("maj", int(maj_k)), *[("pass", int(k)) for k in ks[1:]]]
    rows = []  # (method, benchmark, level, metric, k, value): one per seed, in table order
    substituted: dict[tuple[str, int, int | None], list[str]] = {}
    for group in groups:
        seen = set()
        for kind, k_wanted in [*wanted, (DISTINCT_CORRECT, 0)]:
            k = _pick_k(runs, columns, group, kind, k_wanted)
            if k != k_wanted and kind != DISTINCT_CORRECT and group[1] == ALL_LEVELS:
                substituted.setdefault((kind, k_wanted, k), []).append(group[0])
            if k is None or (kind, k) in seen:
                continue
            seen.add((kind, k))
            col = columns[(*group, kind, k)]
            for method, block in runs.groupby("row", sort=False):
                if step == "last":
                    values = block[col].dropna().tolist()
                else:
                    values = [v for r in block.itertuples() if not math.isnan(v := _value_at(
                        r.run_id, col.removeprefix("metric."), uri, int(step)))]
                rows += [(method, *group, kind, k, float(v)) for v in values]
    for (kind, k_wanted, k), names in substituted.items():
        if k is None:
            notes.append(f"{', '.join(names)}: no {kind}@k with k <= {k_wanted} was logged")
        else:
            notes.append(f"{', '.join(names)}: {kind}@{k_wanted} was not logged (fewer samples per problem); "
                         f"reporting {kind}@{k}")
    tidy = pd.DataFrame(rows, columns=[*_KEYS, "value"])
    if tidy.empty:
        return out
    spread = band_over_seeds(tidy.assign(step=0), by=_KEYS, band=band, level=level).drop(columns="step")
    values = tidy.groupby(_KEYS, sort=False)["value"].agg(list).rename("values").reset_index()
    out = values.merge(spread, on=_KEYS, how="left").rename(columns={"n": "n_seeds"})  # keeps the table order
    one = out["n_seeds"] < 2  # no spread from one seed
    out.loc[one, ["lo", "hi"]] = math.nan
    out["half"] = (out["hi"] - out["lo"]) / 2
    out = out[LONG_COLUMNS]
    out.attrs["notes"] = notes
    out.attrs["band"], out.attrs["level"] = band, level
    return out


def format_cell(mean: float, lo: float, hi: float, band: str = "ci95", percent: bool = True) -> str:
    """A cell in percent (else a count with two decimals): the mean, then its spread ("± half-width", or
    "(min–max)"); just the mean for one seed."""
    scale, digits = (100.0, 1) if percent else (1.0, 2)

    def num(x: float) -> str:
        return f"{scale * x:.{digits}f}"

    if math.isnan(lo):
        return num(mean)
    if band == "min-max":
        return f"{num(mean)} ({num(lo)}–{num(hi)})"
    return f"{num(mean)} ± {num((hi - lo) / 2)}"


def column_label(benchmark: str, level: str, metric: str, k: int) -> str:
    """A table column: ``"<benchmark> pass@1"``, ``"<benchmark> L3 maj@16"``, ``"<benchmark> distinct correct"``."""
    name = "distinct correct" if metric == DISTINCT_CORRECT else f"{metric}@{k}"
    return f"{benchmark} {name}" if level == ALL_LEVELS else f"{benchmark} L{level} {name}"


def report_table(experiment: str, uri: str, ks: Sequence[int] = (1, 16), maj_k: int = 16,
                 step: int | str = "last", band: str = "ci95", level: float = 0.95,
                 runs: pd.DataFrame | None = None, group_by: str = "method", by_level: bool = False) -> pd.DataFrame:
    """The Table 1 layout: index = methods (or the values of ``group_by``, sorted), columns
    ``"<benchmark> pass@1"``, ``maj@16``, ``pass@16``, ..., ``distinct correct`` (where logged); with
    ``by_level`` also the same columns per problem level, ``"<benchmark> L<level> pass@1"``, ...

    Cells are strings in percent (distinct correct: solutions per problem), "mean ± half" (``band``
    ``ci95`` or ``std``) or "mean (min–max)" (``min-max``); just "mean" for one seed, "" where a
    method lacks the metric. Column ``seeds`` counts the seeds per method.
    ``.attrs["notes"]`` lists what was left out and why; ``.attrs["data"]``
    holds :func:`report_data` (same arguments).
    """
    data = report_data(experiment, uri, ks=ks, maj_k=maj_k, step=step, band=band, level=level, runs=runs,
                       group_by=group_by, by_level=by_level)
    notes = list(data.attrs["notes"])
    if data.empty:
        table = pd.DataFrame()
    else:
        data = data.assign(column=[column_label(b, lv, m, k) for b, lv, m, k in
                                   zip(data["benchmark"], data["level"], data["metric"], data["k"])])
        methods = _order(data["method"], METHOD_ORDER if group_by == "method" else ())
        cols = list(dict.fromkeys(data["column"]))
        table = pd.DataFrame("", index=pd.Index(methods, name=group_by), columns=["seeds", *cols])
        for r in data.itertuples():
            table.loc[r.method, r.column] = format_cell(r.mean, r.lo, r.hi, band, r.metric != DISTINCT_CORRECT)
        seeds = data.groupby("method")["n_seeds"].max()
        table["seeds"] = [str(int(seeds[m])) for m in methods]
    table.attrs["notes"] = notes
    table.attrs["data"] = data
    table.attrs["band"], table.attrs["level"] = band, level
    return table


def to_markdown(table: pd.DataFrame, experiment: str = "") -> str:
    """A GitHub Markdown table, the notes below it."""
    lines = []
    if experiment:
        spread = describe_spread(table.attrs.get("band", "ci95"), table.attrs.get("level", 0.95))
        counts = any(str(c).endswith("distinct correct") for c in table.columns)
        lines += [f"### {experiment}: {spread}, in %{' (distinct correct: solutions per problem)' if counts else ''}",
                  ""]
    if not table.empty:
        header = [table.index.name or "", *table.columns]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("| " + " | ".join(["---"] + ["---:"] * len(table.columns)) + " |")
        for method, row in table.iterrows():
            lines.append("| " + " | ".join([str(method), *(str(v) for v in row)]) + " |")
    else:
        lines.append("(no eval metrics to report)")
    notes = table.attrs.get("notes", [])
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"

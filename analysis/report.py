"""The paper's Table 1 from the runs of one experiment (DESIGN 5): ``workbench report`` and the app's pass@k page.

Rows are methods, columns benchmark x {pass@1, maj@16, pass@16}; each cell is
the mean over seeds and a spread over seeds, in percent like the paper. The
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
from analysis.records import parse_eval_key

METHOD_ORDER = ("grpo", "entropy", "evol_rl", "g2rl")
BENCHMARK_ORDER = ("math500", "amc", "aime24", "aime25", "gpqa_diamond", "gsm8k", "countdown", "countdown_test", "arithmetic", "arithmetic_test")
LONG_COLUMNS = ["method", "benchmark", "metric", "k", "mean", "half", "lo", "hi", "n_seeds", "values"]
_KEYS = ["method", "benchmark", "metric", "k"]


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


def _eval_columns(runs: pd.DataFrame) -> dict[tuple[str, str, int], str]:
    """(benchmark, kind, k) -> column name in the runs table."""
    out = {}
    for col in runs.columns:
        if col.startswith("metric.") and (parsed := parse_eval_key(col.removeprefix("metric."))):
            out[parsed] = col
    return out


def _pick_k(runs: pd.DataFrame, columns: dict, benchmark: str, kind: str, wanted: int) -> int | None:
    """The largest logged k <= wanted, preferring one every run with this benchmark has."""
    ks = sorted((k for (b, kd, k) in columns if b == benchmark and kd == kind and k <= wanted), reverse=True)
    if not ks:
        return None
    has_bench = runs[[c for (b, _, _), c in columns.items() if b == benchmark]].notna().any(axis=1)
    for k in ks:
        if runs.loc[has_bench, columns[(benchmark, kind, k)]].notna().all():
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
                runs: pd.DataFrame | None = None, group_by: str = "method") -> pd.DataFrame:
    """Tidy numbers behind the table: one row per (method, benchmark, metric) with mean and spread.

    ``runs`` is the experiment's runs table (:func:`analysis.loaders.runs_table`)
    or a selection of its rows, when the caller holds it already; None reads
    it from ``uri``. ``band`` and ``level`` choose the spread as in
    :func:`analysis.compare.band_over_seeds`. ``group_by``: the runs-table
    column whose values are the rows (``arm`` for a study); the column
    ``method`` of the result holds them.

    Columns ``method, benchmark, metric`` ("pass" or "maj"), ``k`` (the k used),
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
    columns = _eval_columns(runs)
    has_eval = runs[list(columns.values())].notna().any(axis=1) if columns else pd.Series(False, index=runs.index)
    for run in runs[~has_eval].itertuples():
        notes.append(f"run {run.run_id[:12]} ({run.row}, seed {run.seed}) has no eval/ metrics: it ran with "
                     "eval.final=false, or without any eval benchmark, so it is left out")
    runs = runs[has_eval]
    if runs.empty:
        return out
    benchmarks = _order((b for (b, _, _) in columns), BENCHMARK_ORDER)
    wanted = [("pass", int(ks[0])), ("maj", int(maj_k)), *[("pass", int(k)) for k in ks[1:]]]
    rows = []  # (method, benchmark, metric, k, value): one per seed, in table order
    substituted: dict[tuple[str, int, int | None], list[str]] = {}
    for benchmark in benchmarks:
        seen = set()
        for kind, k_wanted in wanted:
            k = _pick_k(runs, columns, benchmark, kind, k_wanted)
            if k != k_wanted:
                substituted.setdefault((kind, k_wanted, k), []).append(benchmark)
            if k is None or (kind, k) in seen:
                continue
            seen.add((kind, k))
            col = columns[(benchmark, kind, k)]
            for method, block in runs.groupby("row", sort=False):
                if step == "last":
                    values = block[col].dropna().tolist()
                else:
                    values = [v for r in block.itertuples() if not math.isnan(v := _value_at(
                        r.run_id, col.removeprefix("metric."), uri, int(step)))]
                rows += [(method, benchmark, kind, k, float(v)) for v in values]
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


def _cell(mean: float, lo: float, hi: float, band: str) -> str:
    """A cell in percent: the mean, then its spread ("± half-width", or "(min–max)"); just the mean for one seed."""
    if math.isnan(lo):
        return f"{100 * mean:.1f}"
    if band == "min-max":
        return f"{100 * mean:.1f} ({100 * lo:.1f}–{100 * hi:.1f})"
    return f"{100 * mean:.1f} ± {100 * (hi - lo) / 2:.1f}"


def report_table(experiment: str, uri: str, ks: Sequence[int] = (1, 16), maj_k: int = 16,
                 step: int | str = "last", band: str = "ci95", level: float = 0.95,
                 runs: pd.DataFrame | None = None, group_by: str = "method") -> pd.DataFrame:
    """The Table 1 layout: index = methods (or the values of ``group_by``, sorted), columns
    ``"<benchmark> pass@1"``, ``maj@16``, ``pass@16``, ...

    Cells are strings in percent, "mean ± half" (``band`` ``ci95`` or ``std``)
    or "mean (min–max)" (``min-max``); just "mean" for one seed, "" where a
    method lacks the metric. Column ``seeds`` counts the seeds per method.
    ``.attrs["notes"]`` lists what was left out and why; ``.attrs["data"]``
    holds :func:`report_data` (same arguments).
    """
    data = report_data(experiment, uri, ks=ks, maj_k=maj_k, step=step, band=band, level=level, runs=runs,
                       group_by=group_by)
    notes = list(data.attrs["notes"])
    if data.empty:
        table = pd.DataFrame()
    else:
        data = data.assign(column=[f"{b} {m}@{k}" for b, m, k in zip(data["benchmark"], data["metric"], data["k"])])
        methods = _order(data["method"], METHOD_ORDER if group_by == "method" else ())
        cols = list(dict.fromkeys(data["column"]))
        table = pd.DataFrame("", index=pd.Index(methods, name=group_by), columns=["seeds", *cols])
        for r in data.itertuples():
            table.loc[r.method, r.column] = _cell(r.mean, r.lo, r.hi, band)
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
        lines += [f"### {experiment}: {spread}, in %", ""]
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

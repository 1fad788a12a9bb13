"""``workbench report``: the paper's Table 1 from the runs of one experiment (DESIGN 5).

Rows are methods, columns benchmark x {pass@1, maj@16, pass@16}; each cell is
the mean over seeds and the half-width of its 95 % Student-t interval
(:func:`analysis.passk.mean_ci_over_seeds`), in percent like the paper. Values
are the runs' eval metrics ``eval/<benchmark>/pass_at_<k>`` and ``maj_at_<k>``
at the last logged step (or a given step). When runs sampled fewer than the
requested k (n = 8, say), the column uses the largest k logged below it and
its label says so (maj@8, pass@8).

Only FINISHED runs count; of several finished runs of one (method, seed) the
newest is used. Runs of ``workbench eval`` (tag ``method='eval'``) appear as rows
``eval: <model>``. What was left out, and why, is in ``table.attrs["notes"]``.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas, scipy and mlflow load when a report is made, not when the CLI starts
    import pandas as pd

_EVAL_METRIC = re.compile(r"^metric\.eval/(?P<benchmark>.+)/(?P<kind>pass|maj)_at_(?P<k>\d+)$")
METHOD_ORDER = ("grpo", "entropy", "evol_rl", "g2rl")
BENCHMARK_ORDER = ("math500", "amc", "aime24", "aime25", "gpqa_diamond", "gsm8k", "arithmetic", "arithmetic_test")
LONG_COLUMNS = ["method", "benchmark", "metric", "k", "mean", "half", "lo", "hi", "n_seeds", "values"]


def _runs(experiment: str, uri: str, notes: list[str]) -> pd.DataFrame:
    """The finished runs to report, one per (row, seed), newest first wins."""
    import pandas as pd

    from analysis.loaders import runs_table

    runs = runs_table(experiment, uri)
    if runs.empty:
        return runs
    runs = runs[runs["method"].astype(str) != ""].copy()
    others = runs[runs["status"] != "FINISHED"]
    if len(others):
        counts = others["status"].value_counts().to_dict()
        notes.append(f"ignored {len(others)} run(s) that did not finish: "
                     + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    runs = runs[runs["status"] == "FINISHED"].copy()
    model = runs["param.model"] if "param.model" in runs else pd.Series("", index=runs.index)
    runs["row"] = [f"eval: {m}" if method == "eval" else method for method, m in zip(runs["method"], model)]
    runs = runs.sort_values("start_time", ascending=False, kind="stable")
    dupes = runs.duplicated(["row", "seed"], keep="first")
    if dupes.any():
        notes.append(f"ignored {int(dupes.sum())} older finished run(s) of a (method, seed) that has a newer one: "
                     + ", ".join(runs.loc[dupes, "run_id"].str[:12]))
    return runs[~dupes]


def _eval_columns(runs: pd.DataFrame) -> dict[tuple[str, str, int], str]:
    """(benchmark, kind, k) -> column name in the runs table."""
    out = {}
    for col in runs.columns:
        m = _EVAL_METRIC.match(col)
        if m:
            out[(m["benchmark"], m["kind"], int(m["k"]))] = col
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
    from analysis.loaders import metric_history

    history = metric_history(run_id, key, uri)
    hit = history.loc[history["step"] == step, "value"]
    return float(hit.iloc[-1]) if len(hit) else math.nan


def _order(names, preferred: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    first = [n for n in preferred if n in names]
    return first + sorted(n for n in names if n not in preferred)


def report_data(experiment: str, uri: str, ks: Sequence[int] = (1, 16), maj_k: int = 16,
                step: int | str = "last") -> pd.DataFrame:
    """Tidy numbers behind the table: one row per (method, benchmark, metric) with mean and interval.

    Columns ``method, benchmark, metric`` ("pass" or "maj"), ``k`` (the k used),
    ``mean, half, lo, hi`` (fractions; ``half`` is NaN for one seed),
    ``n_seeds, values`` (per-seed values). Notes are in ``.attrs["notes"]``.
    """
    import pandas as pd

    from analysis.passk import mean_ci_over_seeds

    if step != "last" and not isinstance(step, int):
        raise ValueError(f"step={step!r} must be 'last' or an integer step")
    notes: list[str] = []
    runs = _runs(experiment, uri, notes)
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
    rows = []
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
                if not values:
                    continue
                mean, lo, hi = mean_ci_over_seeds(values)
                rows.append((method, benchmark, kind, k, mean, (hi - lo) / 2, lo, hi, len(values), values))
    for (kind, k_wanted, k), names in substituted.items():
        if k is None:
            notes.append(f"{', '.join(names)}: no {kind}@k with k <= {k_wanted} was logged")
        else:
            notes.append(f"{', '.join(names)}: {kind}@{k_wanted} was not logged (fewer samples per problem); "
                         f"reporting {kind}@{k}")
    out = pd.DataFrame(rows, columns=LONG_COLUMNS)
    out.attrs["notes"] = notes
    return out


def _cell(mean: float, half: float) -> str:
    if math.isnan(half):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * half:.1f}"


def report_table(experiment: str, uri: str, ks: Sequence[int] = (1, 16), maj_k: int = 16,
                 step: int | str = "last") -> pd.DataFrame:
    """The Table 1 layout: index = methods, columns ``"<benchmark> pass@1"``, ``maj@16``, ``pass@16``, ...

    Cells are strings "mean ± half" in percent (just "mean" for one seed, ""
    where a method lacks the metric); column ``seeds`` counts the seeds per
    method. ``.attrs["notes"]`` lists what was left out and why; ``.attrs["data"]``
    holds :func:`report_data`.
    """
    import pandas as pd

    data = report_data(experiment, uri, ks=ks, maj_k=maj_k, step=step)
    notes = list(data.attrs["notes"])
    if data.empty:
        table = pd.DataFrame()
    else:
        data = data.assign(column=[f"{b} {m}@{k}" for b, m, k in zip(data["benchmark"], data["metric"], data["k"])])
        methods = _order(data["method"], METHOD_ORDER)
        cols = list(dict.fromkeys(data["column"]))
        table = pd.DataFrame("", index=pd.Index(methods, name="method"), columns=["seeds", *cols])
        for r in data.itertuples():
            table.loc[r.method, r.column] = _cell(r.mean, r.half)
        seeds = data.groupby("method")["n_seeds"].max()
        table["seeds"] = [str(int(seeds[m])) for m in methods]
    table.attrs["notes"] = notes
    table.attrs["data"] = data
    return table


def to_markdown(table: pd.DataFrame, experiment: str = "") -> str:
    """A GitHub Markdown table, the notes below it."""
    lines = []
    if experiment:
        lines += [f"### {experiment}: mean ± 95% t-interval half-width over seeds, in %", ""]
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


def write_report(table: pd.DataFrame, out_dir: str | Path, experiment: str = "") -> list[Path]:
    """Write ``table.md``, ``table.csv`` (the display table) and ``table_long.csv`` (the numbers)."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv, long_csv = out / "table.md", out / "table.csv", out / "table_long.csv"
    md.write_text(to_markdown(table, experiment))
    table.to_csv(csv)
    data = table.attrs.get("data", pd.DataFrame(columns=LONG_COLUMNS))
    data.drop(columns=["column"], errors="ignore").to_csv(long_csv, index=False)
    return [md, csv, long_csv]


# --------------------------------------------------------------------------- CLI


def _ks(text: str) -> list[int]:
    from workbench.config import ConfigError

    try:
        ks = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--ks {text!r} must be comma-separated integers, e.g. --ks 1,16") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"--ks {text!r} must list integers >= 1, e.g. --ks 1,16")
    return ks


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="the paper's Table 1 (methods x benchmark pass@k, maj@k)")
    p.add_argument("--experiment", default="workbench", help="MLflow experiment name (default 'workbench')")
    p.add_argument("--out", metavar="DIR", help="folder for table.md / table.csv / table_long.csv "
                   "(default reports/<experiment>)")
    p.add_argument("--ks", default="1,16", help="pass@k columns (default 1,16)")
    p.add_argument("--maj-k", type=int, default=16, help="maj@k column (default 16)")
    p.add_argument("--step", default="last", help="eval step to report: 'last' (default) or a step number")
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    from workbench.config import ConfigError
    from workbench.tracking import tracking_uri

    if args.step != "last" and not str(args.step).isdigit():
        raise ConfigError(f"--step {args.step!r} must be 'last' or a step number")
    step = args.step if args.step == "last" else int(args.step)
    uri = tracking_uri()
    table = report_table(args.experiment, uri, ks=_ks(args.ks), maj_k=args.maj_k, step=step)
    print(to_markdown(table, args.experiment), end="")
    if table.empty:
        print(f"\nNothing to report for experiment {args.experiment!r} at {uri}: no finished run has eval "
              "metrics. Train with eval enabled (eval.final: true) or run `workbench eval`.")
        return 1
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", args.experiment)
    paths = write_report(table, args.out or Path("reports") / safe, args.experiment)
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0

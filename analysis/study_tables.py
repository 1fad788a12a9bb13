"""The tables and figure data of a study report, each computed from the per-run values alone (DESIGN 10 [ours]).

Every function takes the frame of :mod:`analysis.study_values` (the report's
per-run CSV, as written or as read back with
:func:`analysis.study_values.read_values`) and returns a tidy frame or a
display table, so whoever holds the CSV recomputes every table of the report
with these functions (or by hand: each docstring says how).

- Summaries over seeds (:func:`over_seeds`) are the mean and the Student-t
  95 % interval over seeds, :func:`analysis.compare.band_over_seeds`.
- Paired differences to the baseline (:func:`paired_rows`) and the
  hypotheses' verdicts (:func:`hypothesis_rows`) are :mod:`analysis.paired`.

Pure pandas: no torch, no ``workbench``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd

from analysis.compare import band_over_seeds
from analysis.paired import metric_label, paired_difference, paired_table, parse_metric_label, verdict
from analysis.records import DISTINCT_CORRECT
from analysis.report import format_cell
from analysis.study_values import ALL_LEVELS

BAND = "ci95"
FIRST, LAST = "first", "last"


@dataclass(frozen=True)
class Hypothesis:
    """A pre-registered hypothesis: ``arm`` - ``baseline`` on ``metric`` exceeds ``min_effect`` (DESIGN 10).

    ``metric``: ``pass@k``, ``maj@k`` or ``distinct_correct``; ``level`` None: every problem; ``step`` None:
    each run's last evaluation.
    """

    arm: str
    baseline: str
    metric: str
    min_effect: float
    benchmark: str
    level: int | None = None
    step: int | None = None


# --------------------------------------------------------------------------- selecting rows


def at_step(values: pd.DataFrame, step: int | str) -> pd.DataFrame:
    """The rows of each run's first evaluation (``"first"``), its last (``"last"``) or of a given step."""
    if step in (FIRST, LAST):
        pick = values.groupby("run_id")["step"].transform("min" if step == FIRST else "max")
        return values[values["step"] == pick]
    if isinstance(step, bool) or not isinstance(step, int):
        raise ValueError(f"step={step!r} must be {FIRST!r}, {LAST!r} or an evaluation step")
    return values[values["step"] == step]


def levels_of(values: pd.DataFrame) -> list[str]:
    """The problem levels the values hold (not ``"all"``), in numeric order."""
    return sorted({str(v) for v in values["level"].unique()} - {ALL_LEVELS}, key=_level_rank)


def headline_metrics(values: pd.DataFrame, benchmark: str) -> list[str]:
    """The paper's Table 1 columns for a benchmark, then ours: pass@1, maj@n, pass@n, distinct_correct (the
    last where the benchmark has it); n is the largest k of its pass@k."""
    labels = values.loc[values["benchmark"] == benchmark, "metric"].unique()
    ks = [k for kind, k in map(parse_metric_label, labels) if kind == "pass"]
    out = [] if not ks else [metric_label("pass", 1), metric_label("maj", max(ks)), metric_label("pass", max(ks))]
    return out + ([DISTINCT_CORRECT] if DISTINCT_CORRECT in set(labels) else [])


def _metric_rank(metric: str) -> tuple[int, int]:
    """Table order of metric labels: pass@1, the maj@k, the other pass@k, distinct_correct."""
    if metric == DISTINCT_CORRECT:
        return (3, 0)
    kind, k = parse_metric_label(metric)
    return (0 if (kind, k) == ("pass", 1) else 1 if kind == "maj" else 2, int(k))


def _level_rank(level: str) -> tuple[int, int, str]:
    return (level != ALL_LEVELS, int(level) if level.isdigit() else 0, level)


def _in_table_order(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` sorted by benchmark (first appearance), level and :func:`_metric_rank`, stably."""
    first = {b: k for k, b in enumerate(dict.fromkeys(frame["benchmark"]))}
    levels = frame["level"].astype(str) if "level" in frame else pd.Series(ALL_LEVELS, index=frame.index)
    key = [(first[b], _level_rank(lv), _metric_rank(m)) for b, lv, m in zip(frame["benchmark"], levels,
                                                                          frame["metric"])]
    return frame.iloc[sorted(range(len(frame)), key=key.__getitem__)].reset_index(drop=True)


def _arm_order(values: pd.DataFrame, arms: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(values["arm"]))
    return [a for a in arms if a in present] if arms is not None else present


# --------------------------------------------------------------------------- over seeds


def over_seeds(rows: pd.DataFrame, by: Sequence[str], x: str = "step") -> pd.DataFrame:
    """Mean and 95 % t-interval over seeds per ``by`` and ``x``: columns by..., x, mean, lo, hi, n (seeds)."""
    tidy = rows.drop(columns="step", errors="ignore").rename(columns={x: "step"}) if x != "step" else rows
    out = band_over_seeds(tidy, by=list(by), band=BAND)
    return out.rename(columns={"step": x}) if x != "step" else out


def _cell(mean: float, lo: float, hi: float, n: int, percent: bool) -> str:
    """:func:`analysis.report.format_cell` ("mean ± half-width", percent or a count); the mean alone for one
    seed, "" for none."""
    if math.isnan(mean):
        return ""
    return format_cell(mean, math.nan if n < 2 else lo, math.nan if n < 2 else hi, BAND, percent)


def _column(benchmark: str, metric: str, level: str = ALL_LEVELS) -> str:
    name = "distinct correct" if metric == DISTINCT_CORRECT else metric
    return f"{benchmark} {name}" if level == ALL_LEVELS else f"{benchmark} L{level} {name}"


def arm_table(values: pd.DataFrame, step: int | str, arms: Sequence[str] | None = None,
              levels: Sequence[str] = (ALL_LEVELS,)) -> pd.DataFrame:
    """Table 1's layout at ``step`` (:func:`at_step`): index arm, columns ``seeds`` then
    ``"<benchmark> pass@1"``, ``maj@n``, ``pass@n``, ``distinct correct`` (with ``L<level>`` for a level).

    Cells "mean ± half-width of the 95 % t-interval over seeds": pass@k and maj@k in percent, distinct
    correct solutions per problem as a count. By hand: the mean and t-interval over the seeds' ``value``
    of the rows of each arm, benchmark, level and metric at each run's first or last step.
    """
    rows = at_step(values, step)
    rows = rows[rows["level"].isin(list(levels))]
    if rows.empty:
        return pd.DataFrame()
    stats = over_seeds(rows.assign(step=0), ["arm", "benchmark", "level", "metric"]).set_index(
        ["arm", "benchmark", "level", "metric"])
    order = _arm_order(rows, arms)
    present = set(zip(rows["benchmark"], rows["level"]))
    columns = [(b, lv, m) for b in dict.fromkeys(rows["benchmark"]) for lv in levels if (b, lv) in present
               for m in headline_metrics(rows, b)]
    table = pd.DataFrame("", index=pd.Index(order, name="arm"),
                         columns=["seeds", *(_column(b, m, lv) for b, lv, m in columns)])
    for arm in order:
        table.loc[arm, "seeds"] = str(rows.loc[rows["arm"] == arm, "seed"].nunique())
        for b, lv, m in columns:
            if (arm, b, lv, m) in stats.index:
                r = stats.loc[(arm, b, lv, m)]
                table.loc[arm, _column(b, m, lv)] = _cell(r["mean"], r["lo"], r["hi"], int(r["n"]),
                                                          m != DISTINCT_CORRECT)
    return table


def level_table(values: pd.DataFrame, step: int | str, arms: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`arm_table` over the problems of each level (columns ``"<benchmark> L<level> <metric>"``);
    empty when the evaluation rows carry no levels."""
    levels = levels_of(values)
    return arm_table(values, step, arms, levels) if levels else pd.DataFrame()


# --------------------------------------------------------------------------- paired differences


def paired_rows(values: pd.DataFrame, baseline: str, step: int | str = LAST,
                metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Paired differences arm - ``baseline`` (:func:`analysis.paired.paired_table`) at ``step`` per benchmark,
    level and metric (default: :func:`headline_metrics`): columns arm, benchmark, level, metric, mean, lo, hi,
    pairs.

    By hand: for each seed both arms ran, the arm's ``value`` minus the baseline's in the same benchmark,
    level and metric at each run's last step; the mean of these differences and its t-interval.
    """
    rows = at_step(values, step)
    if metrics is None:
        keep = pd.concat([rows[(rows["benchmark"] == b) & rows["metric"].isin(headline_metrics(rows, b))]
                          for b in rows["benchmark"].unique()]) if len(rows) else rows
    else:
        keep = rows[rows["metric"].isin(list(metrics))]
    return paired_table(keep[["arm", "seed", "benchmark", "level", "metric", "value"]], baseline,
                        ["benchmark", "level", "metric"])


def _diff_cell(mean: float, lo: float, hi: float, percent: bool) -> str:
    """"+1.2 [-0.5, 2.9]": the mean difference and its interval (percent: in percentage points)."""
    if math.isnan(mean):
        return ""
    scale, digits = (100.0, 1) if percent else (1.0, 2)
    text = f"{scale * mean:+.{digits}f}"
    return text if math.isnan(lo) else f"{text} [{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"


def paired_display(paired: pd.DataFrame, arms: Sequence[str] | None = None,
                   levels: Sequence[str] = (ALL_LEVELS,)) -> pd.DataFrame:
    """:func:`paired_rows` as a table: index arm, column ``pairs`` (the fewest of its cells), then one column per
    benchmark, level and metric, "mean [lo, hi]" (pass@k, maj@k in percentage points; distinct correct
    solutions per problem as a count)."""
    part = paired[paired["level"].isin(list(levels))]
    if part.empty:
        return pd.DataFrame()
    order = _arm_order(part, arms)
    ordered = _in_table_order(part)
    columns = list(dict.fromkeys(zip(ordered["benchmark"], ordered["level"], ordered["metric"])))
    table = pd.DataFrame("", index=pd.Index(order, name="arm"), columns=["pairs", *(_column(b, m, lv)
                                                                                   for b, lv, m in columns)])
    for r in part.itertuples():
        table.loc[r.arm, _column(r.benchmark, r.metric, r.level)] = _diff_cell(r.mean, r.lo, r.hi,
                                                                             r.metric != DISTINCT_CORRECT)
    pairs = part.groupby("arm")["pairs"].min()
    table["pairs"] = [str(int(pairs[a])) for a in order]
    return table


def paired_over_steps(values: pd.DataFrame, baseline: str, metrics_of: dict[str, list[str]]) -> pd.DataFrame:
    """Paired differences to ``baseline`` at every evaluation step, over all problems: columns arm, benchmark,
    metric, step, mean, lo, hi, pairs. ``metrics_of``: benchmark -> the metrics to take."""
    rows = values[values["level"] == ALL_LEVELS]
    rows = rows[[m in metrics_of.get(b, ()) for b, m in zip(rows["benchmark"], rows["metric"])]]
    if rows.empty:
        return pd.DataFrame(columns=["arm", "benchmark", "metric", "step", "mean", "lo", "hi", "pairs"])
    out = paired_table(rows[["arm", "seed", "benchmark", "metric", "step", "value"]], baseline,
                       ["benchmark", "metric", "step"])
    return _in_table_order(out[["arm", "benchmark", "metric", "step", "mean", "lo", "hi", "pairs"]])


# --------------------------------------------------------------------------- hypotheses


def hypothesis_rows(values: pd.DataFrame, hypotheses: Sequence[Hypothesis]) -> pd.DataFrame:
    """Each hypothesis with its paired difference and verdict (:func:`analysis.paired.verdict`): its fields, then
    step_used ("last" or the step), mean, lo, hi, pairs, verdict.

    By hand: the rows of the hypothesis's benchmark, level (``"all"`` without one) and metric at each run's
    last evaluation (or its ``step``); the paired t-interval of arm - baseline over the common seeds; the
    verdict compares it with ``min_effect``.
    """
    out = []
    for h in hypotheses:
        level = ALL_LEVELS if h.level is None else str(h.level)
        rows = at_step(values, LAST if h.step is None else h.step)
        rows = rows[(rows["benchmark"] == h.benchmark) & (rows["level"] == level) & (rows["metric"] == h.metric)]
        of = {arm: rows[rows["arm"] == arm].set_index("seed")["value"] for arm in (h.arm, h.baseline)}
        d = paired_difference(of[h.arm], of[h.baseline])
        out.append({**asdict(h), "step_used": LAST if h.step is None else str(h.step), "mean": d.mean, "lo": d.lo,
                    "hi": d.hi, "pairs": d.pairs, "verdict": verdict(d.lo, d.hi, h.min_effect)})
    cols = [*Hypothesis.__dataclass_fields__, "step_used", "mean", "lo", "hi", "pairs", "verdict"]
    return pd.DataFrame(out, columns=cols)


# --------------------------------------------------------------------------- figure data


def curve_bands(values: pd.DataFrame, metrics_of: dict[str, list[str]], level: str = ALL_LEVELS) -> pd.DataFrame:
    """Each metric over evaluation steps per arm, mean and 95 % t-interval over seeds (Figure 2): columns arm,
    benchmark, metric, step, mean, lo, hi, n. ``metrics_of``: benchmark -> the metrics to draw."""
    rows = values[values["level"] == level]
    rows = rows[[m in metrics_of.get(b, ()) for b, m in zip(rows["benchmark"], rows["metric"])]]
    return _in_table_order(over_seeds(rows, ["arm", "benchmark", "metric"]))


def passk_bands(values: pd.DataFrame) -> pd.DataFrame:
    """pass@k and maj@k against every k at each run's first (stage ``start``) and last (``end``) evaluation, per
    arm, benchmark and level, over seeds: columns arm, stage, benchmark, level, metric ("pass"/"maj"), k, mean,
    lo, hi, n."""
    parts = []
    for stage, step in (("start", FIRST), ("end", LAST)):
        rows = at_step(values, step)
        rows = rows[rows["metric"] != DISTINCT_CORRECT]
        if rows.empty:
            continue
        parsed = [parse_metric_label(m) for m in rows["metric"]]
        rows = rows.assign(kind=[p[0] for p in parsed], k=[p[1] for p in parsed], stage=stage)
        parts.append(over_seeds(rows, ["arm", "stage", "benchmark", "level", "kind"], x="k"))
    cols = ["arm", "stage", "benchmark", "level", "metric", "k", "mean", "lo", "hi", "n"]
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True).rename(columns={"kind": "metric"})[cols]

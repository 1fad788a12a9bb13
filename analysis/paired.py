"""Paired differences between a study's arms, and the verdicts of its pre-registered hypotheses (DESIGN 10 [ours]).

A study pairs its arms by seed: a seed gives every arm the same warm start,
prompt order and evaluation sampling seed, so the difference arm - baseline
of one seed removes what the seed shares (which problems the warm start
solves, how lucky its evaluation samples are). The statistic is the
**paired t-interval over seeds**: the mean of the per-seed differences
d_s = arm_s - baseline_s over the seeds both arms ran, with

    mean(d) +- t_{0.975, m-1} * sd(d) / sqrt(m)          (m pairs)

(:func:`analysis.passk.mean_ci_over_seeds` applied to the differences).

Why this one. The run is the replicate: a seed's value (pass@k averaged over
the evaluated problems) already averages the problem-level noise, and what
varies between runs is the training itself. With the 4-8 seeds a study
affords, a percentile bootstrap over seeds under-covers (its interval is
about the normal one, 1.96 s / sqrt(m) shrunk by sqrt((m-1)/m), where t needs
2.36 s / sqrt(m) for m = 8: roughly three quarters of the width). A two-level
bootstrap over seeds and problems would also need per-problem values, which
the report's per-run CSV does not hold, so its tables could not be recomputed
from it. The interval is conditional on the evaluated problems: it says how
sure the arms differ on these problems, not on new ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.passk import mean_ci_over_seeds
from analysis.records import DISTINCT_CORRECT, METRIC_KINDS

VERDICTS = ("supported", "refuted", "inconclusive")
STATISTIC = ("paired t-interval over seeds: the mean of the per-seed differences arm - baseline over the seeds "
             "both ran, +- t(0.975, pairs - 1) x sd / sqrt(pairs)")
_LABEL = re.compile(r"^(?P<kind>pass|maj)@(?P<k>\d+)$")


def metric_label(kind: str, k: int | None = None) -> str:
    """The label of a metric in a study's tables and CSV: ``pass@<k>``, ``maj@<k>`` or ``distinct_correct``."""
    if kind == DISTINCT_CORRECT:
        return DISTINCT_CORRECT
    if kind not in METRIC_KINDS or k is None or int(k) < 1:
        raise ValueError(f"metric ({kind!r}, {k!r}): give pass or maj with k >= 1, or {DISTINCT_CORRECT!r}")
    return f"{kind}@{int(k)}"


def parse_metric_label(label: str) -> tuple[str, int | None]:
    """(kind, k) of :func:`metric_label` (k None for ``distinct_correct``); ValueError naming the forms."""
    if label == DISTINCT_CORRECT:
        return DISTINCT_CORRECT, None
    m = _LABEL.match(str(label))
    if not m or int(m["k"]) < 1:
        raise ValueError(f"metric {label!r} is not pass@k, maj@k (k >= 1) or {DISTINCT_CORRECT}; e.g. pass@32")
    return m["kind"], int(m["k"])


@dataclass(frozen=True)
class PairedDifference:
    """arm - baseline over the common seeds: mean, the interval (NaN with fewer than 2 pairs), the pairs."""

    mean: float
    lo: float
    hi: float
    pairs: int
    seeds: tuple[int, ...] = ()


def paired_difference(arm: Mapping[int, float] | pd.Series, baseline: Mapping[int, float] | pd.Series,
                      level: float = 0.95) -> PairedDifference:
    """The paired t-interval of arm - baseline over the seeds both have (the module's statistic).

    ``arm`` and ``baseline`` map seed -> value (a Series indexed by seed, or a dict); seeds only one of them
    has are left out, so an arm with fewer seeds pairs on the common ones. No common seed: NaN mean; one:
    the difference, NaN interval. Differences that are all equal give a zero-width interval.
    """
    a, b = pd.Series(arm, dtype=float).dropna(), pd.Series(baseline, dtype=float).dropna()
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        return PairedDifference(math.nan, math.nan, math.nan, 0)
    d = a.loc[seeds].to_numpy() - b.loc[seeds].to_numpy()  # (m,)
    mean, lo, hi = mean_ci_over_seeds(d, level=level)
    if len(d) > 1 and np.ptp(d) == 0:  # no spread: the interval is the point (t x 0 may round off it)
        lo = hi = mean
    return PairedDifference(mean, lo, hi, len(seeds), tuple(int(s) for s in seeds))


def verdict(lo: float, hi: float, min_effect: float) -> str:
    """The verdict of a pre-registered hypothesis "arm - baseline > min_effect" (DESIGN 10 [ours]).

    **supported** when the 95 % interval [lo, hi] of the paired difference lies above ``min_effect``
    (lo > min_effect), **refuted** when it lies below it (hi < min_effect), **inconclusive** when it
    contains it, or when there is no interval (NaN: fewer than 2 pairs).
    """
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    if lo > min_effect:
        return "supported"
    if hi < min_effect:
        return "refuted"
    return "inconclusive"


def paired_table(rows: pd.DataFrame, baseline: str, by: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """:func:`paired_difference` of every other arm against ``baseline``, per group of ``by``.

    ``rows``: one value per (arm, seed, *by), columns arm, seed, the ``by`` columns and value. Returns
    columns arm, the ``by`` columns, mean, lo, hi, pairs (arms in their order in ``rows``, the baseline
    left out); a group the baseline lacks gives 0 pairs.
    """
    by = list(by)
    cols = ["arm", *by, "mean", "lo", "hi", "pairs"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    dupes = rows.duplicated(["arm", "seed", *by])
    if dupes.any():
        raise ValueError(f"rows hold {int(dupes.sum())} repeated (arm, seed, {', '.join(by)}); give one value each")
    base = rows[rows["arm"] == baseline]
    base_of = {key: part.set_index("seed")["value"] for key, part in _groups(base, by)}
    out = []
    for arm in dict.fromkeys(rows["arm"]):
        if arm == baseline:
            continue
        for key, group in _groups(rows[rows["arm"] == arm], by):
            d = paired_difference(group.set_index("seed")["value"], base_of.get(key, pd.Series(dtype=float)), level)
            out.append((arm, *key, d.mean, d.lo, d.hi, d.pairs))
    return pd.DataFrame(out, columns=cols)


def _groups(frame: pd.DataFrame, by: list[str]):
    """(key tuple, part) per group of ``by`` in order of appearance; one group ``()`` for no ``by``."""
    if not by:
        return [((), frame)] if len(frame) else []
    return [(key if isinstance(key, tuple) else (key,), part) for key, part in frame.groupby(by, sort=False)]

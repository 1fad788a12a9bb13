"""The held-out headline that ``workbench run`` prints at its end: start -> end of pass@1, maj@k and pass@k.

One line per benchmark the run evaluated, for the largest k it logged, read back from the tracking store:

    countdown (steps 0 -> 300): pass@1 0.262 -> 0.301, maj@32 0.455 -> 0.470, pass@32 0.940 -> 0.925

The values are the run's own ``eval/<benchmark>/<kind>_at_<k>`` metrics (analysis/records.py), unsmoothed,
at its first and last evaluation. A run that evaluated once shows that one value; a run with no evaluation
(or whose records still wait in the spool) prints nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from analysis.records import parse_eval_key

History = Sequence[tuple[int, float]]  # (step, value) of one metric


def headline_lines(histories: Mapping[str, History]) -> list[str]:
    """The headline from each eval metric's history (metric key -> [(step, value), ...]); other keys are ignored."""
    by_benchmark: dict[str, dict[tuple[str, int], History]] = defaultdict(dict)
    for key, history in histories.items():
        parsed = parse_eval_key(key)
        if parsed and history:
            benchmark, kind, k = parsed
            by_benchmark[benchmark][(kind, k)] = sorted(history)
    lines = []
    for benchmark in sorted(by_benchmark):
        series = by_benchmark[benchmark]
        shown = [("pass", 1)]
        for kind in ("maj", "pass"):  # the largest k of each kind
            ks = [k for kd, k in series if kd == kind]
            if ks and (kind, max(ks)) not in shown:
                shown.append((kind, max(ks)))
        shown = [s for s in shown if s in series]
        steps = sorted({step for s in shown for step, _ in series[s]})
        span = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]} -> {steps[-1]}"
        parts = [f"{kind}@{k} {_start_end(series[(kind, k)])}" for kind, k in shown]
        lines.append(f"{benchmark} ({span}): " + ", ".join(parts))
    return lines


def _start_end(history: History) -> str:
    first, last = history[0][1], history[-1][1]
    return f"{first:.3f}" if len(history) == 1 else f"{first:.3f} -> {last:.3f}"


def run_headline(run_id: str, uri: str) -> list[str]:
    """:func:`headline_lines` of a recorded run; [] when the store has no evaluation of it."""
    from workbench.tracking import client

    c = client(uri)
    keys = [key for key in c.get_run(run_id).data.metrics if parse_eval_key(key)]
    return headline_lines({key: [(m.step, m.value) for m in c.get_metric_history(run_id, key)] for key in keys})

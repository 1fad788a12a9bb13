"""Timing helpers shared by the benchmarks: interleaved repeats, paired ratios, median and IQR.

The machines these run on are shared and noisy, so no benchmark compares absolute times
taken at different moments. :func:`interleave` runs every case once per round, in a rotating
order, for several rounds; :func:`ratios` divides each case's time by the reference case's
time *of the same round*, and :func:`summary` reports the median and interquartile range of
those paired ratios.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def interleave(cases: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each case, ``rounds`` times, cases interleaved (order rotates each round).

    ``warmup`` untimed rounds come first (allocator, caches, lazy imports).
    """
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            start = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ratios(times: dict[str, list[float]], reference: str) -> dict[str, np.ndarray]:
    """Per-round ratios time[case] / time[reference] (paired within a round)."""
    ref = np.asarray(times[reference])
    return {name: np.asarray(t) / ref for name, t in times.items() if name != reference}


@dataclass(frozen=True)
class Stat:
    median: float
    q25: float
    q75: float
    n: int

    def fmt(self, kind: str = "ratio") -> str:
        f = {"ratio": _fmt_ratio, "s": _fmt_seconds, "pct": _fmt_pct}[kind]
        return f(self.median)

    def spread(self, kind: str = "ratio") -> str:
        f = {"ratio": _fmt_ratio, "s": _fmt_seconds, "pct": _fmt_pct}[kind]
        return f"{f(self.q25)} – {f(self.q75)}"


def summary(values) -> Stat:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return Stat(float(med), float(q25), float(q75), int(v.size))


def _fmt_ratio(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def _fmt_seconds(x: float) -> str:
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.2f} s"


def _fmt_pct(x: float) -> str:
    return f"{100 * x:.2f} %"


class Timer:
    """Accumulates the seconds spent inside ``with timer:`` blocks."""

    def __init__(self) -> None:
        self.total = 0.0
        self.calls = 0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.total += time.perf_counter() - self._start
        self.calls += 1


def set_threads() -> int:
    """torch threads for the benchmarks: ``BENCH_THREADS`` (default 1).

    One thread by default: on a small shared CPU, OpenMP's barriers make two threads several times
    slower than one whenever another process holds a core (measured here: a SmolLM2-sized forward
    took 4.6-12 s with 2 threads against 0.9-1.3 s with 1, interleaved, while another job ran).
    """
    import os

    import torch

    threads = int(os.environ.get("BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    return threads

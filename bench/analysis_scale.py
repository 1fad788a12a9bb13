"""Benchmark 4: the analysis functions at scale, each within a second; peak memory measured.

- Geometry: :func:`analysis.geometry.geometry_metrics` (what training logs each step) and
  :func:`analysis.geometry.pairs_frame` (what the app's geometry page builds) over 10^6 pairs:
  8,334 groups of 16 completions (120 pairs each: 1,000,080 pairs), gradient features of
  d = 256 (a projected dump; time grows linearly with d) and 384-dim text embeddings (MiniLM).
  That is e.g. 16 runs x 40 dumped steps x 16 prompts x 16 completions, the app's geometry page
  at the paper's batch.
- pass@k and maj@k: :func:`analysis.passk.pass_at_k_table` and :func:`analysis.passk.maj_at_k_table`
  over 10^4 problems x 64 samples (640,000 eval rows, k = 1, 2, 4, ..., 64).

Times are absolute (no ratio applies): median and IQR of repeats, in seconds. Memory: the peak
of ``tracemalloc`` (numpy and pandas buffers included) during one extra, untimed call.

Run: ``python -m bench.analysis_scale [--quick]``.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import pandas as pd

from bench.results import Row, append, stat_row
from bench.timing import summary

BENCH = "4 analysis scale"
GROUP = 16


def geometry_inputs(pairs: int = 1_000_000, d: int = 256, e: int = 384, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = -(-pairs // (GROUP * (GROUP - 1) // 2))
    n = groups * GROUP
    grad = rng.standard_normal((n, d), dtype=np.float32)  # as loaded from a float32 dump
    emb = rng.standard_normal((n, e), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return grad, emb, np.repeat(np.arange(groups), GROUP), rng.random(n) < 0.4


def eval_frame(problems: int = 10_000, samples: int = 64, seed: int = 0) -> pd.DataFrame:
    """Per-sample eval rows (DESIGN 6): a few distinct answers per problem, some missing."""
    rng = np.random.default_rng(seed)
    n = problems * samples
    answer_code = rng.integers(0, 6, n)
    answers = np.array(["42", "41", "43", "7", "100", None], dtype=object)[answer_code]
    return pd.DataFrame({
        "step": 100,
        "benchmark": "task",
        "problem_id": np.repeat([f"p{i:05d}" for i in range(problems)], samples),
        "sample": np.tile(np.arange(samples), problems),
        "answer": answers,
        "correct": answer_code == 0,
    })


def timed(fn, repeats: int) -> tuple[list[float], int]:
    """Seconds of ``repeats`` calls (3 when a call takes over 2 s), after one warm-up call, and the
    tracemalloc peak of one more call."""
    start = time.perf_counter()
    fn()
    if time.perf_counter() - start > 2.0:
        repeats = min(repeats, 3)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return times, peak


def run(quick: bool = False) -> list[Row]:
    from analysis.geometry import geometry_metrics, pairs_frame
    from analysis.passk import maj_at_k_table, pass_at_k_table

    repeats = 2 if quick else 5  # 3 for cases slower than 2 s a call
    grad, emb, groups, correct = geometry_inputs(100_000 if quick else 1_000_000)
    n_pairs = len(groups) // GROUP * GROUP * (GROUP - 1) // 2
    frame = eval_frame(1_000 if quick else 10_000)
    input_mb = (grad.nbytes + emb.nbytes) / 2**20
    geo = f"{n_pairs:,} pairs (d 256, emb 384)"
    problems = f"{frame['problem_id'].nunique():,} problems x 64"
    cases = [
        (f"geometry_metrics, {geo}", lambda: geometry_metrics(grad, emb, groups, correct), f"inputs {input_mb:.0f} MB"),
        (f"pairs_frame (the app's pair table), {geo}", lambda: pairs_frame(grad, emb, groups, correct), ""),
        (f"pass_at_k_table, {problems}", lambda: pass_at_k_table(frame), f"{len(frame):,} eval rows"),
        (f"maj_at_k_table, {problems}", lambda: maj_at_k_table(frame), "k = 1, 2, 4, ..., 64"),
    ]
    rows = []
    for case, fn, note in cases:
        times, peak = timed(fn, repeats)
        stat = summary(times)
        peak_note = f"peak memory {peak / 2**20:.0f} MB"
        rows.append(stat_row(BENCH, case, stat, "s", target="<= 1 s", limit=1.0,
                             note="; ".join(x for x in (peak_note, note) if x)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the size (a smoke run)")
    args = parser.parse_args(argv)
    append(run(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark 7: the tiny step time with two cells training at once, as ``workbench study`` runs them, against one.

A round runs ``workbench run`` (the default method grpo, evaluation off) first alone, then two of
them at once, each in its own process, both writing to one SQLite store as a study's shards do;
rounds repeat in that order. A cell's step time is the mean of its logged ``perf/step_s`` (the
first rollout batch's steps dropped), so start-up is left out; a mean, not a median, because the
preset's steps come in cycles of one rollout batch's generation and 4 updates, and the median would
be an update step's. The ratio pairs each round's two-cell medians
(their mean) with the same round's single cell. CPU per step of each process (user + sys, all
threads: training, the recorder's worker, the MLflow writer) comes from ``getrusage`` of the
finished children over their whole run, start-up included.

On 2 cores, two cells have no spare core: whatever a cell does off its training thread competes
with the other cell's training. Target: <= 1.25.

Run: ``python -m bench.two_jobs [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import SCRATCH
from bench.results import Row, append, stat_row
from bench.timing import summary

BENCH = "7 two cells at once"
SKIP = 4  # the first rollout batch's steps (4 updates each), dropped: lazy loads, allocator


def cell_argv(seed: int, steps: int, experiment: str) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "run", "--method", "grpo", "--seed", str(seed),
            "--experiment", experiment, "--set", f"training.steps={steps}", "--set", "eval.initial=false",
            "--set", "eval.final=false", "--set", f"training.output_dir={SCRATCH}/outputs"]


def run_cells(count: int, steps: int, experiment: str) -> tuple[list[float], float, float]:
    """Start ``count`` cells at once; (each cell's mean step seconds, mean CPU seconds per step, wall s)."""
    from analysis.loaders import metric_history, runs_table

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    logs = [Path(SCRATCH) / f"{experiment}-seed{seed}.log" for seed in range(count)]
    procs = []
    for seed, log in enumerate(logs):
        with log.open("w") as out:
            procs.append(subprocess.Popen(cell_argv(seed, steps, experiment), stdout=out, stderr=subprocess.STDOUT))
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    if any(codes):
        seed = next(i for i, code in enumerate(codes) if code)
        tail = "\n".join(logs[seed].read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"a cell failed (exit codes {codes}); the end of seed {seed}'s output:\n{tail}\n"
                         f"run {' '.join(cell_argv(seed, steps, experiment))}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / (count * steps)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    runs = runs_table(experiment, uri)
    means = []
    for run_id in runs["run_id"]:
        history = metric_history(run_id, "perf/step_s", uri)
        means.append(statistics.mean(history[history["step"] > SKIP]["value"]))
    return means, cpu, wall


def run(quick: bool = False) -> list[Row]:
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(SCRATCH) / 'two-jobs.db'}"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    steps, rounds = (8, 1) if quick else (40, 3)
    subprocess.run(cell_argv(0, 1, "warm-up"), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ratios, single, double, cpu1, cpu2 = [], [], [], [], []
    for r in range(rounds):
        one, c1, _ = run_cells(1, steps, f"one-{r}")
        two, c2, _ = run_cells(2, steps, f"two-{r}")
        single.append(one[0])
        double.append(statistics.mean(two))
        ratios.append(double[-1] / single[-1])
        cpu1.append(c1)
        cpu2.append(c2)
    note = (f"{rounds} rounds of one cell, then two at once; {steps} steps of the tiny default each, the first {SKIP} "
            f"dropped; one cell {summary(single).fmt('s')} a step, two {summary(double).fmt('s')}; CPU a step "
            f"(start-up included) {summary(cpu1).fmt('s')} alone, {summary(cpu2).fmt('s')} each of two")
    return [stat_row(BENCH, "tiny step, 2 cells at once / 1 cell", summary(ratios), target="<= 1.25", limit=1.25,
                     note=note)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke run)")
    args = parser.parse_args(argv)
    append(run(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark 3: our ``grpo`` against a bare ``trl.GRPOTrainer`` with the same model, data, reward and settings.

Trainers on the tiny preset (the embedded default), built once each and run in rotating order,
round after round (see ``bench/harness.py``):

- **TRL**: ``trl.GRPOTrainer`` given exactly the model, ``GRPOConfig``, dataset and verifier
  reward that ``workbench run --method grpo`` builds, and nothing else (no hooks, no callbacks).
- **ours, logging off**: ``MethodTrainer`` with ``features.geometry=false features.dump_every=0``, logging its scalar
  metrics to an MLflow store (SQLite in a scratch folder).
- **ours, logging on**: the default, ``features.geometry=true features.dump_every=1``: Phi by the sampling route, text
  embeddings (MiniLM), geometry metrics and a Parquet feature dump, every step, to that store.

A step's time is the interval between consecutive step starts, so it includes every callback and
log write. Target: ours with logging on <= 1.05 x TRL. For "logging on", the share of its
``train()`` time spent in each of our layers is measured in the same runs (timing wrappers).

With ``--smollm2``, TRL and ours (logging on) once more on ``smollm2-135m`` (3 rounds of 2
steps each, the first of each dropped): the same layers around a policy 200 times the tiny one's size.

Run: ``python -m bench.engine_overhead [--quick] [--smollm2]``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

from bench.harness import SCRATCH, SMOLLM2, build_trainer, config
from bench.results import Row, append, stat_row
from bench.step_cost import interleaved_steps
from bench.timing import set_threads, summary

BENCH = "3 our layers vs TRL"


class Seconds(defaultdict):
    """Seconds per named layer; :meth:`wrap` times a callable under a name."""

    def __init__(self) -> None:
        super().__init__(float)

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self[name] += time.perf_counter() - start

        return timed


def instrument(trainer, tracker, seconds: Seconds) -> None:
    """Time our layers inside ``trainer``: MLflow writes, text embeddings, Phi, step metrics, the dump table."""
    import trainers.trainer as module

    tracker.log_metrics = seconds.wrap("MLflow metric writes", tracker.log_metrics)
    tracker.log_parquet = seconds.wrap("feature dump write (Parquet + MLflow artifact)", tracker.log_parquet)
    trainer.embedder.encode = seconds.wrap("text embeddings (MiniLM)", trainer.embedder.encode)
    trainer._local_phi = seconds.wrap("Phi: closed form", trainer._local_phi)
    trainer.recorder.metrics = seconds.wrap("step metrics incl. geometry", trainer.recorder.metrics)
    trainer.recorder.frame = seconds.wrap("dump table (Arrow)", trainer.recorder.frame)
    base = module.PhiAccumulator

    class TimedAccumulator(base):
        def __call__(self, input_ids, scores):
            start = time.perf_counter()
            try:
                return super().__call__(input_ids, scores)
            finally:
                seconds["Phi: accumulator in generate"] += time.perf_counter() - start

    module.PhiAccumulator = TimedAccumulator


def run(quick: bool = False, smollm2: bool = False) -> list[Row]:
    from workbench.tracking import NullTracker
    from workbench.launch import start_tracker

    set_threads()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{SCRATCH}/mlruns.db"
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    steps, rounds = (6, 2) if quick else (8, 5)
    common = [f"training.steps={steps}", "training.cpu_threads=1"]
    off = config("grpo", *common, "features.geometry=false", "features.dump_every=0")
    on = config("grpo", *common)
    on_tracker = start_tracker(on)
    trainers = {
        "trl": build_trainer(off, NullTracker(), plain=True),
        "off": build_trainer(off, start_tracker(off)),
        "on": build_trainer(on, on_tracker),
    }
    seconds = Seconds()
    instrument(trainers["on"], on_tracker, seconds)
    walls_before = []

    def after_warmup() -> None:
        seconds.clear()
        walls_before.append(len(trainers["on"].clock.walls))

    times = interleaved_steps(trainers, rounds, after_warmup=after_warmup)
    trl = summary(times["trl"])
    note = f"{rounds} rounds x {steps} steps after a warm-up round"
    rows = []
    for name, title, limit in [("off", "ours grpo, logging off / TRL GRPOTrainer", None),
                               ("on", "ours grpo, logging on / TRL GRPOTrainer", 1.05)]:
        ratio = [t / b for t, b in zip(times[name], times["trl"], strict=True)]
        extra = f"TRL step {trl.fmt('s')}" if name == "off" else ""
        rows.append(stat_row(BENCH, f"tiny: {title}", summary(ratio), target="<= 1.05" if limit else "",
                             limit=limit, note="; ".join(x for x in (extra, note) if x)))
    wall = sum(trainers["on"].clock.walls[walls_before[0]:])
    for layer, secs in sorted(seconds.items(), key=lambda kv: -kv[1]):
        rows.append(Row(BENCH, f"tiny, ours logging on: share of train() time in {layer}", f"{100 * secs / wall:.1f} %",
                        n=rounds, note=f"{1e3 * secs / (rounds * steps):.1f} ms per step"))
    if smollm2:
        rows += smollm2_rows()
    return rows


def smollm2_rows(rounds: int = 3) -> list[Row]:
    """TRL vs ours with logging on, on smollm2-135m: ``rounds`` rounds of 2 steps each, the first dropped."""
    from workbench.tracking import NullTracker
    from workbench.launch import start_tracker

    steps = 2
    overrides = [*SMOLLM2, f"training.steps={steps}"]
    on = config("grpo", *overrides)
    tracker = start_tracker(on)
    trainers = {"trl": build_trainer(config("grpo", *overrides, "features.geometry=false", "features.dump_every=0"), NullTracker(), plain=True),
                "on": build_trainer(on, tracker)}
    seconds = Seconds()
    instrument(trainers["on"], tracker, seconds)
    times = interleaved_steps(trainers, rounds, warmup_steps=0, skip=1)
    ratio = [t / b for t, b in zip(times["on"], times["trl"], strict=True)]
    trl = summary(times["trl"])
    note = (f"TRL step {trl.fmt('s')}; {rounds} rounds of {steps} steps each, the first dropped; 2 prompts x 8 "
            "completions of <= 32 tokens, the arithmetic task")
    rows = [stat_row(BENCH, "smollm2-135m: ours grpo, logging on / TRL GRPOTrainer", summary(ratio),
                     target="<= 1.05", limit=1.05, note=note)]
    wall = sum(trainers["on"].clock.walls)
    for layer, secs in sorted(seconds.items(), key=lambda kv: -kv[1]):
        rows.append(Row(BENCH, f"smollm2-135m, ours logging on: share of train() time in {layer}",
                        f"{100 * secs / wall:.1f} %", n=rounds, note=f"{1e3 * secs / (steps * rounds):.1f} ms per step"))
    tracker.finish()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps (a smoke run)")
    parser.add_argument("--smollm2", action="store_true", help="also TRL vs ours on smollm2-135m (minutes)")
    args = parser.parse_args(argv)
    append(run(args.quick, args.smollm2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

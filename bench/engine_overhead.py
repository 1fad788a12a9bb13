"""Benchmark 3: our ``grpo`` against a bare ``trl.GRPOTrainer`` with the same model, data, reward and settings.

Trainers built once each and run in rotating order, round after round (see ``bench/harness.py``):

- **TRL**: ``trl.GRPOTrainer`` given exactly the model, ``GRPOConfig``, dataset and verifier
  reward that ``workbench run --method grpo`` builds, and nothing else (no hooks, no callbacks).
- **ours, logging off**: ``MethodTrainer`` with ``features.geometry=false features.dump_every=0``, logging its scalar
  metrics to an MLflow store (SQLite in a scratch folder).
- **ours, logging on**: the default recording of a default run: Phi by the sampling route and the gradient
  geometry every step, text embeddings (MiniLM) with the semantic geometry and a Parquet feature dump at step 1
  and every tenth of the run (``features.semantic_every`` and ``dump_every`` resolve to 30 for the default 300
  steps; set here, since a round is shorter), pair summaries, to that store. A round is 60 updates (15 rollout
  batches of 4 updates), 3 of whose batches embed and dump: a fifth, against 11 of 75 in a default run.

The policy is held still (``HOLD``: a learning rate below float32's resolution of the weights), so
every trainer samples the same completions from the same seed and a ratio measures our layers, not
what a different policy would generate; the notes give each trainer's mean completion length.

A step's time is the interval between consecutive step starts, so it includes every callback and
log write. Target: ours with logging on <= 1.03 x TRL. Beside wall time, each round's process CPU
time (user + sys, all threads) per step: the recorder's worker and the MLflow writer run on other
threads, which a spare core hides from wall time but not from a second job on the same cores.
Target: CPU, ours with logging on <= 1.10 x TRL on the tiny preset, <= 1.03 on SmolLM2. For both trainers each step is split into
phases (generation, the rest of scoring, loss and backward, and what lies outside
``training_step``: optimizer, callbacks, logging), so a gap is named by where it lies. For "logging
on", the time of each of our layers is measured in the same runs (timing wrappers), with the thread
it runs on: the recorder's worker and the MLflow writer run while the next step trains.

On the tiny preset (the embedded default); with ``--smollm2``, TRL and ours (logging on) once more on
``smollm2-135m`` (3 rounds of 2 steps each, the first of each dropped): the same layers around a
policy 200 times the tiny one's size.

Run: ``python -m bench.engine_overhead [--quick] [--smollm2]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

from bench.harness import SCRATCH, SMOLLM2, build_trainer, config
from bench.results import Row, append, stat_row
from bench.step_cost import HOLD, interleaved_steps
from bench.timing import set_threads, summary

BENCH = "3 our layers vs TRL"
MAIN, WORKER, WRITER = "training thread", "recorder's worker thread", "MLflow writer thread"


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


PHASES = ("generation", "rest of scoring (rewards, reference, advantages, our hooks)", "loss and backward",
          "outside training_step (optimizer, callbacks, logging)")


def time_phases(trainer, seconds: Seconds) -> None:
    """Split ``trainer``'s steps into :data:`PHASES` (the last is derived from the step clock)."""
    trainer._generate = seconds.wrap("generation", trainer._generate)
    trainer._generate_and_score_completions = seconds.wrap("scoring", trainer._generate_and_score_completions)
    trainer.compute_loss = seconds.wrap("loss", trainer.compute_loss)


def phase_ms(seconds: Seconds, steps: int) -> dict[str, float]:
    """Milliseconds per step of each of :data:`PHASES`, from a :class:`Phases` trainer's seconds."""
    inner, wall = seconds["training_step"], seconds["wall"]
    out = (seconds["generation"], seconds["scoring"] - seconds["generation"], inner - seconds["scoring"], wall - inner)
    return {phase: 1e3 * v / steps for phase, v in zip(PHASES, out, strict=True)}


def instrument(trainer, tracker, seconds: Seconds) -> None:
    """Time our layers inside ``trainer``, each under the thread it runs on."""
    import trainers.geometry as geometry
    from trainers.background import BackgroundRecorder

    recorder = trainer.recorder
    assert isinstance(recorder, BackgroundRecorder), type(recorder)
    inner = recorder.recorder
    recorder.embed = seconds.wrap(f"text embeddings (MiniLM) [{WORKER}]", recorder.embed)
    inner.record = seconds.wrap(f"recording a step: metrics, geometry, summaries, dump (incl. its Parquet write) "
                                f"[{WORKER}]", inner.record)
    inner.frame = seconds.wrap(f"dump table (Arrow) [{WORKER}]", inner.frame)
    import workbench.tracking.sender as sender

    sender.deliver = seconds.wrap(f"MLflow writes from the spool: metrics, table rows, artifacts [{WRITER}]",
                                  sender.deliver)
    tracker.spool.append = seconds.wrap("spool appends (records to disk) [the logging thread]", tracker.spool.append)
    recorder.worker.submit = seconds.wrap(f"handing a step to the worker (waits when it is behind) [{MAIN}]",
                                          recorder.worker.submit)
    recorder.flush = seconds.wrap(f"checkpoint and end-of-training flush (waits for both threads) [{MAIN}]",
                                  recorder.flush)
    trainer._local_phi = seconds.wrap(f"Phi: closed form [{MAIN}]", trainer._local_phi)
    base = geometry.PhiAccumulator

    class TimedAccumulator(base):
        def __call__(self, input_ids, scores):
            start = time.perf_counter()
            try:
                return super().__call__(input_ids, scores)
            finally:
                seconds[f"Phi: accumulator in generate [{MAIN}]"] += time.perf_counter() - start

    geometry.PhiAccumulator = TimedAccumulator


class Phases:
    """Per trainer: :func:`time_phases` seconds, plus ``training_step`` and train() wall time."""

    def __init__(self, trainers: dict) -> None:
        self.seconds = {name: Seconds() for name in trainers}
        self.trainers = trainers
        for name, trainer in trainers.items():
            time_phases(trainer, self.seconds[name])
            trainer.training_step = self.seconds[name].wrap("training_step", trainer.training_step)
            trainer.train = self.seconds[name].wrap("wall", trainer.train)

    def clear(self) -> None:
        for s in self.seconds.values():
            s.clear()

    def rows(self, label: str, steps: int, reference: str = "trl", case: str = "on") -> list[Row]:
        ref, ours = (phase_ms(self.seconds[n], steps) for n in (reference, case))
        rows = []
        for phase in PHASES:
            rows.append(Row(BENCH, f"{label}, per step: {phase}: ours logging on - TRL",
                            f"{ours[phase] - ref[phase]:+.1f} ms", n=steps,
                            note=f"TRL {ref[phase]:.1f} ms, ours {ours[phase]:.1f} ms (totals over the timed "
                                 f"rounds, including each train() call's first step)"))
        return rows


def completion_lengths(trainer, calls: int) -> float:
    """Mean of TRL's logged ``completions/mean_length`` over the last ``calls`` train() calls' steps."""
    values = [e["completions/mean_length"] for e in trainer.state.log_history if "completions/mean_length" in e]
    return statistics.mean(values[-calls * trainer.args.max_steps:]) if values else float("nan")


def cpu_rows(label: str, times: dict[str, list[float]], limits: dict[str, float | None], note: str) -> list[Row]:
    """``CPU: ours logging off|on / TRL``: per round, process CPU time per step (all threads) paired with TRL's."""
    rows = []
    trl = summary(times["trl cpu"])
    for name, limit in limits.items():
        ratio = [t / b for t, b in zip(times[f"{name} cpu"], times["trl cpu"], strict=True)]
        logging = "logging on" if name == "on" else "logging off"
        rows.append(stat_row(BENCH, f"{label}: CPU: ours grpo, {logging} / TRL GRPOTrainer", summary(ratio),
                             target=f"<= {limit:.2f}" if limit else "", limit=limit,
                             note=f"process CPU time (user + sys, all threads) of each round's train() call; TRL "
                                  f"{trl.fmt('s')} CPU a step, ours {summary(times[f'{name} cpu']).fmt('s')}; "
                                  + note))
    return rows


def layer_rows(label: str, seconds: Seconds, wall: float, steps: int, n: int) -> list[Row]:
    return [Row(BENCH, f"{label}, ours logging on: {layer}", f"{100 * secs / wall:.1f} % of train() time", n=n,
                note=f"{1e3 * secs / steps:.1f} ms per step")
            for layer, secs in sorted(seconds.items(), key=lambda kv: -kv[1])]


def run(quick: bool = False, smollm2: bool = False) -> list[Row]:
    from workbench.run.launch import start_tracker
    from workbench.tracking import NullTracker

    set_threads()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{SCRATCH}/mlruns.db"
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    steps, rounds = (8, 2) if quick else (60, 6)
    common = [f"training.steps={steps}", "training.cpu_threads=1", HOLD]
    off = config("grpo", *common, "features.geometry=false", "features.dump_every=0")
    default = config("grpo")  # a default run: its cadences are those of its training.steps
    f, run_steps = default.features, default.training.steps
    cadence = [f"features.dump_every={f.dump_cadence(run_steps)}",
               f"features.semantic_every={f.semantic_cadence(run_steps, False)}"]
    on = config("grpo", *common, *cadence)
    on_tracker = start_tracker(on)
    trainers = {
        "trl": build_trainer(off, NullTracker(), plain=True),
        "off": build_trainer(off, start_tracker(off)),
        "on": build_trainer(on, on_tracker),
    }
    seconds = Seconds()
    instrument(trainers["on"], on_tracker, seconds)
    phases = Phases(trainers)

    def after_warmup() -> None:
        seconds.clear()
        phases.clear()

    times = interleaved_steps(trainers, rounds, after_warmup=after_warmup)
    trl = summary(times["trl"])
    lengths = {name: completion_lengths(t, rounds) for name, t in trainers.items()}
    note = (f"{rounds} rounds x {steps} steps after a warm-up round; mean completion length TRL "
            f"{lengths['trl']:.1f}, ours off {lengths['off']:.1f}, ours on {lengths['on']:.1f} tokens")
    rows = []
    for name, title in [("off", "ours grpo, logging off / TRL GRPOTrainer"),
                        ("on", "ours grpo, logging on / TRL GRPOTrainer")]:
        ratio = [t / b for t, b in zip(times[name], times["trl"], strict=True)]
        extra = f"TRL step {trl.fmt('s')}" if name == "off" else ""
        rows.append(stat_row(BENCH, f"tiny: {title}", summary(ratio), target="<= 1.03" if name == "on" else "",
                             limit=1.03 if name == "on" else None, note="; ".join(x for x in (extra, note) if x)))
    rows += cpu_rows("tiny", times, {"off": None, "on": 1.10}, note)
    total_steps = rounds * steps
    rows += phases.rows("tiny", total_steps)
    rows += layer_rows("tiny", seconds, phases.seconds["on"]["wall"], total_steps, rounds)
    on_tracker.finish()
    if smollm2:
        rows += smollm2_rows()
    return rows


def smollm2_rows(rounds: int = 3) -> list[Row]:
    """TRL vs ours with logging on, on smollm2-135m: ``rounds`` rounds of 2 steps each, the first dropped."""
    from workbench.run.launch import start_tracker
    from workbench.tracking import NullTracker

    steps = 2
    overrides = [*SMOLLM2, f"training.steps={steps}", HOLD]
    on = config("grpo", *overrides)
    tracker = start_tracker(on)
    trainers = {"trl": build_trainer(config("grpo", *overrides, "features.geometry=false", "features.dump_every=0"),
                                     NullTracker(), plain=True),
                "on": build_trainer(on, tracker)}
    seconds = Seconds()
    instrument(trainers["on"], tracker, seconds)
    phases = Phases(trainers)
    times = interleaved_steps(trainers, rounds, warmup_steps=0, skip=1)
    ratio = [t / b for t, b in zip(times["on"], times["trl"], strict=True)]
    trl = summary(times["trl"])
    lengths = {name: completion_lengths(t, rounds) for name, t in trainers.items()}
    note = (f"TRL step {trl.fmt('s')}; {rounds} rounds of {steps} steps each, the first dropped; 2 prompts x 8 "
            f"completions of <= 32 tokens, the arithmetic task; mean completion length TRL {lengths['trl']:.1f}, "
            f"ours {lengths['on']:.1f} tokens")
    rows = [stat_row(BENCH, "smollm2-135m: ours grpo, logging on / TRL GRPOTrainer", summary(ratio),
                     target="<= 1.03", limit=1.03, note=note)]
    rows += cpu_rows("smollm2-135m", times, {"on": 1.03}, note)
    total_steps = rounds * steps
    rows += phases.rows("smollm2-135m", total_steps)
    rows += layer_rows("smollm2-135m", seconds, phases.seconds["on"]["wall"], total_steps, rounds)
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

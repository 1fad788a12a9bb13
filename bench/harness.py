"""Build trainers exactly as ``workbench.run.train.train`` does, without training, so benchmarks can
interleave them: each trainer is built once, then ``trainer.train()`` is called once per round.

``train(cfg, tracker)`` builds model, data, method, recorder and a ``MethodTrainer`` and calls
its ``train()``; :func:`build_trainer` runs that same function with the trainer's ``train()``
deferred and returns the trainer. With ``plain=True`` the trainer is a bare ``trl.GRPOTrainer``
given the same model, arguments, data and verifier reward (and none of the workbench's hooks or
callbacks). Every later ``train()`` runs ``training.steps`` steps again from the same seed (the
Trainer reseeds at the start of ``train()``), continuing from the weights it has reached.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback


class StepClock(TrainerCallback):
    """Times steps as the intervals between consecutive ``on_step_begin`` calls (the last one: to ``on_train_end``).

    An interval covers a whole loop iteration: generation, scoring, the update, and every
    callback and log write in between. ``last(skip)`` gives the step times of the latest
    ``train()`` call without its first ``skip`` steps; ``inner(skip)`` the same steps' seconds inside
    ``Trainer.training_step`` (generation, scoring with every method hook, loss, backward), which
    :func:`build_trainer` times.
    """

    def __init__(self) -> None:
        self.runs: list[list[float]] = []
        self.inner_runs: list[list[float]] = []
        self.walls: list[float] = []  # seconds from train begin to train end, per train() call
        self._begin = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.runs.append([])
        self.inner_runs.append([])
        self._begin = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.runs[-1].append(now)  # closes the last step
        self.walls.append(now - self._begin)

    def on_step_begin(self, args, state, control, **kwargs):
        self.runs[-1].append(time.perf_counter())

    def last(self, skip: int = 1) -> list[float]:
        stamps = self.runs[-1]
        return [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=False)][skip:]

    def inner(self, skip: int = 1) -> list[float]:
        return self.inner_runs[-1][skip:]

    def timed_training_step(self, training_step):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return training_step(*args, **kwargs)
            finally:
                self.inner_runs[-1].append(time.perf_counter() - start)

        return timed


@contextlib.contextmanager
def _deferred(plain: bool) -> Iterator[dict]:
    import trainers.trainer as module

    original = module.MethodTrainer
    box: dict = {}

    def factory(*args, **kwargs):
        if plain:
            from trl import GRPOTrainer

            for name in ("method", "verifier", "geometry", "recorder", "callbacks"):
                kwargs.pop(name)
            trainer = GRPOTrainer(*args, **kwargs)
        else:
            trainer = original(*args, **kwargs)
        trainer.train = lambda *a, **k: None  # instance attribute: train(cfg, ...) returns at once
        box["trainer"] = trainer
        return trainer

    module.MethodTrainer = factory
    try:
        yield box
    finally:
        module.MethodTrainer = original


def build_trainer(cfg, tracker, plain: bool = False):
    """The trainer ``workbench.run.train.train(cfg, tracker)`` would train (or a bare GRPOTrainer), with a
    :class:`StepClock` at ``trainer.clock`` and no progress printing."""
    from workbench.run.train import train

    with _deferred(plain) as box:
        train(cfg, tracker)
    trainer = box["trainer"]
    del trainer.train  # back to the class's train()
    for callback in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(callback)
    trainer.clock = StepClock()
    trainer.add_callback(trainer.clock)
    trainer.training_step = trainer.clock.timed_training_step(trainer.training_step)
    return trainer


# smollm2-135m as the step benchmarks run it: 2 prompts x 8 completions (the preset's batch) of <= 32 tokens
# (the preset has 64: halved for time), on the arithmetic task (self-contained: no data files).
SMOLLM2 = ("model.preset=smollm2-135m", "task.name=arithmetic", "training.max_completion_length=32",
           "training.cpu_threads=1")

SCRATCH = tempfile.mkdtemp(prefix="g2rl-bench-")  # trainer output folders and throwaway tracking stores
atexit.register(shutil.rmtree, SCRATCH, True)


def config(method: str, *overrides: str):
    """A workbench config as the CLI builds it (defaults < preset < overrides), evaluation off, no checkpoints
    but the last (a run's default, one every tenth of it, is every step of a short benchmark call), outputs in
    a scratch folder."""
    from workbench.config import EvalConfig, build_config

    no_eval = [f"eval.{name}={value}" for name, value in (("initial", "false"), ("final", "false"), ("every", 0))
               if name in EvalConfig.model_fields]
    return build_config([{"method": method}], [*no_eval, "training.save_steps=0", f"training.output_dir={SCRATCH}/outputs",
                                               *overrides])

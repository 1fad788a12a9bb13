"""What a ``workbench run`` records in MLflow (DESIGN 6) besides the steps, through the workbench's tracker.

The steps are recorded by :class:`~trainers.recorder.StepRecorder` with the run's
:class:`~workbench.tracking.Tracker` as its sink (the one recorder of every training path). The
tracker writes every value with the record's step, so the trainer runs the recorder on a worker
thread while the next step trains (:class:`~trainers.background.BackgroundRecorder`): the text
embeddings of the semantic metrics are computed there, and its metrics reach MLflow a step or so
later, under their own step. Here: :class:`TrackerCallback` forwards TRL's own scalars (KL,
entropy, lengths, loss), :class:`ProgressBar` shows the run's progress, and :func:`log_datasets`
records its problems.
"""

from __future__ import annotations

import time

import pandas as pd
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from workbench.tracking import Tracker


def problems_frame(problems) -> pd.DataFrame:
    """Problems (:class:`workbench.tasks.Problem`) as a frame: id, prompt, answer."""
    return pd.DataFrame({"id": [p.id for p in problems], "prompt": [p.prompt for p in problems],
                         "answer": [p.answer for p in problems]})


def log_datasets(tracker: Tracker, inputs, train_path: str | None = None) -> None:
    """The run's training problems (context ``training``) and each benchmark it evaluates on (``evaluation``)
    as MLflow datasets, each with its digest; ``train_path`` is the training file, where there is one."""
    tracker.log_dataset(problems_frame(inputs.problems), f"{inputs.task.name}-train", "training", train_path)
    for name, _, problems in inputs.suite:
        tracker.log_dataset(problems_frame(problems), name, "evaluation")


class TrackerCallback(TrainerCallback):
    """Forwards TRL's logged scalars under DESIGN 6 names, times each step, flushes at checkpoints."""

    RENAME = {
        "kl": "train/kl",
        "entropy": "train/entropy",
        "completions/mean_length": "train/completion_len",
        "loss": "train/loss",
        "grad_norm": "train/grad_norm",
        "learning_rate": "train/learning_rate",
        "clip_ratio/region_mean": "train/clip_ratio",
        "frac_reward_zero_std": "train/frac_reward_zero_std",
    }

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self._t0: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is not None and state.is_world_process_zero:
            self.tracker.log_metrics({"perf/step_s": time.perf_counter() - self._t0}, step=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        metrics = {new: logs[old] for old, new in self.RENAME.items() if isinstance(logs.get(old), (int, float))}
        self.tracker.log_metrics(metrics, step=state.global_step)

    def on_save(self, args, state, control, **kwargs):
        """Write the held metrics: a run killed later loses only steps that a resume trains again."""
        if state.is_world_process_zero:
            self.tracker.flush()


class ProgressBar(ProgressCallback):
    """transformers' progress bar, showing the verifier's accuracy, KL and entropy instead of printing every
    log dict; for a method that shapes rewards also the shaped mean, labelled so (G2RL's is mostly negative)."""

    SHOWN = {"rewards/verifier/mean": "accuracy", "reward": "shaped", "kl": "kl", "entropy": "entropy"}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            # kept across logs: the updates after a rollout batch's first log no rewards of their own
            self.shown = {**getattr(self, "shown", {}), **self.postfix(logs)}
            self.training_bar.set_postfix(self.shown, refresh=False)

    @classmethod
    def postfix(cls, logs: dict) -> dict[str, str]:
        """What the bar shows of one TRL log dict (``reward`` is the shaped mean only where a method shapes)."""
        shaped = "rewards/shaping/mean" in logs
        names = {k: v for k, v in cls.SHOWN.items() if k != "reward" or shaped}
        return {name: f"{logs[k]:.3g}" for k, name in names.items() if isinstance(logs.get(k), (int, float))}

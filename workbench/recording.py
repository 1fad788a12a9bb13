"""What a training step records in MLflow (DESIGN 6), through the workbench's tracker.

:class:`StepRecorder` is the recorder of ``workbench run``. Each step it logs:

- the :func:`~trainers.step_record.step_metrics` of the :class:`~trainers.step_record.StepRecord`,
  with the ``geometry/*`` metrics where ``features.geometry`` is on (off, no method logs geometry,
  though G2RL still computes Phi for its rewards, so runs of different methods carry the same metrics);
- one group's completions, appended to the MLflow table ``completions.json`` that the MLflow UI shows;
- at step 1 and every ``features.dump_every`` steps (default a tenth of the run), its :func:`~trainers.step_record.dump_table` as
  ``features/step_<step:06d>.parquet``.

Its pair summaries go to ``summary/pairs.parquet`` at each :meth:`StepRecorder.flush` (checkpoints
and the end of training), which then flushes the tracker. It writes every value with the record's
step, so the trainer runs it on a worker thread while the next step trains
(:class:`~trainers.background.BackgroundRecorder`): the text embeddings of the semantic metrics are
computed there, and its metrics reach MLflow a step or so later, under their own step.
:class:`TrackerCallback` forwards TRL's own scalars (KL, entropy, lengths, loss).
"""

from __future__ import annotations

import time
import warnings

import pandas as pd
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from analysis.records import COMPLETIONS_TABLE, SUMMARY_PATH, dump_path
from analysis.summary import PairSummaries
from trainers.step_record import StepRecord, completion_rows, dump_due, dump_table, step_metrics
from workbench.config import FeaturesConfig
from workbench.tracking import Tracker, TrackingError


class StepRecorder:
    """Per-step metrics and dumps of a workbench run, written by its :class:`~workbench.tracking.Tracker`."""

    background = True  # every value is written with record.step: the trainer may record on a worker thread

    def __init__(self, tracker: Tracker, features: FeaturesConfig, seed: int = 0, dump_every: int | None = None) -> None:
        self.tracker = tracker
        self.features = features
        self.dump_every = features.dump_cadence(1) if dump_every is None else dump_every  # resolved by the caller
        self.seed = seed
        self.summaries = PairSummaries(earlier=lambda: tracker.read_parquet(SUMMARY_PATH))

    def record(self, record: StepRecord) -> dict[str, float]:
        metrics = step_metrics(record, geometry=self.features.geometry, tau=self.features.tau)
        self.tracker.log_metrics(metrics, step=record.step)
        self.tracker.log_table(completion_rows(record), COMPLETIONS_TABLE)
        if self.features.geometry:
            b = record.batch
            self.summaries.add(record.step, b.features, b.embeddings, b.groups, b.correct)
        if dump_due(record.step, self.dump_every, record.span):
            self.tracker.log_parquet(self.frame(record), dump_path(record.step))
        return metrics

    def flush(self) -> None:
        """Write the pair summaries of every step so far (replacing the artifact), then flush the tracker.

        Where the summaries of an earlier process of the run cannot be read (the tracking store does not
        answer), they are not written now, which would drop those rows; the next flush tries again."""
        try:
            table = self.summaries.table()
        except TrackingError as err:
            warnings.warn(f"pair summaries not written at this flush: {err}", stacklevel=2)
            table = None
        if table is not None:
            self.tracker.log_parquet(table, SUMMARY_PATH)
        self.tracker.flush()

    def frame(self, record: StepRecord):
        """The dump of ``record`` with this run's dtype and projection."""
        return dump_table(record, dtype=self.features.dtype, project_dim=self.features.project_dim, seed=self.seed)


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

"""One recorder of a training step (DESIGN 6), writing through a sink.

:class:`StepRecorder` turns each :class:`~trainers.step_record.StepRecord` into what the record holds:

- the :func:`~trainers.step_record.step_metrics`, with the ``geometry/*`` metrics where
  ``features.geometry`` is on (off, no method logs geometry, though G2RL still computes Phi for its
  rewards, so runs of different methods carry the same metrics);
- one group's completions, appended to the table ``completions.json`` that the MLflow UI shows (where
  the sink keeps one: the workbench's tracker does);
- at step 1 and every ``dump_every`` steps, its :func:`~trainers.step_record.dump_table` as
  ``features/step_<step:06d>.parquet``;
- at each :meth:`StepRecorder.flush` (checkpoints and the end of training), the pair summaries of every
  step so far, ``summary/pairs.parquet``, then the sink's own flush.

The sinks: the workbench's :class:`~workbench.tracking.Tracker` (``workbench run``), and
:class:`TrainerLogSink` for a TRL script (the metrics through TRL's own logging, so ``report_to``
sees them; the artifacts to the active MLflow run, else to ``output_dir``). Both get the same metrics
and the same dumps.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Protocol

import pyarrow.parquet as pq

from analysis.records import COMPLETIONS_TABLE, SUMMARY_PATH, dump_path
from analysis.summary import PairSummaries
from trainers.feature_options import FeatureOptions
from trainers.step_record import StepRecord, completion_rows, dump_due, dump_table, step_metrics


class Sink(Protocol):
    """Where a :class:`StepRecorder` writes. ``read_parquet`` returns None for an artifact not written yet
    and raises where the store cannot be read. ``keyed_by_step`` (default true): the sink writes every
    value under the step it is given, so the recorder may run later, on a worker thread."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_table(self, rows: dict[str, list], artifact_file: str) -> None: ...

    def log_parquet(self, frame: Any, artifact_file: str) -> None: ...

    def read_parquet(self, artifact_file: str) -> Any: ...

    def flush(self) -> None: ...


class StepRecorder:
    """Per-step metrics, completions, dumps and pair summaries of a run, written through ``sink``."""

    def __init__(self, sink: Sink, features: FeatureOptions, seed: int = 0, dump_every: int | None = None) -> None:
        self.sink = sink
        self.features = features
        self.dump_every = features.dump_cadence(1) if dump_every is None else dump_every  # resolved by the caller
        self.seed = seed
        self.background = getattr(sink, "keyed_by_step", True)  # BackgroundRecorder may run it on a worker thread
        self.summaries = PairSummaries(earlier=lambda: sink.read_parquet(SUMMARY_PATH))

    def record(self, record: StepRecord) -> dict[str, float]:
        metrics = step_metrics(record, geometry=self.features.geometry, tau=self.features.tau)
        self.sink.log_metrics(metrics, step=record.step)
        self.sink.log_table(completion_rows(record), COMPLETIONS_TABLE)
        if self.features.geometry:
            b = record.batch
            self.summaries.add(record.step, b.features, b.embeddings, b.groups, b.correct)
        if dump_due(record.step, self.dump_every, record.span):
            self.sink.log_parquet(self.frame(record), dump_path(record.step))
        return metrics

    def flush(self) -> None:
        """Write the pair summaries of every step so far (replacing the artifact), then flush the sink.

        Where the summaries of an earlier process of the run cannot be read (the tracking store does not
        answer), they are not written now, which would drop those rows; the next flush tries again."""
        try:
            table = self.summaries.table()
        except Exception as err:  # noqa: BLE001 - the sink's store did not answer: keep the rows for later
            warnings.warn(f"pair summaries not written at this flush: {err}", stacklevel=2)
            table = None
        if table is not None:
            self.sink.log_parquet(table, SUMMARY_PATH)
        self.sink.flush()

    def frame(self, record: StepRecord):
        """The dump of ``record`` with this run's dtype and projection."""
        return dump_table(record, dtype=self.features.dtype, project_dim=self.features.project_dim, seed=self.seed)


class TrainerLogSink:
    """A TRL trainer's own logging as a sink: metrics appended to ``trainer._metrics``, which TRL logs at
    the step it is at (so the recorder records in the step), artifacts to the active MLflow run when
    MLflow is among ``report_to``, else under ``output_dir``."""

    keyed_by_step = False

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.trainer._metrics["train"][key].append(value)

    def log_table(self, rows: dict[str, list], artifact_file: str) -> None:
        """No completions table: TRL's own ``log_completions`` shows completions to its trackers."""

    def log_parquet(self, table: Any, artifact_file: str) -> None:
        run = mlflow_run(self.trainer.args)
        if run is None:
            path = Path(self.trainer.args.output_dir) / artifact_file
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
            return
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(artifact_file).name
            pq.write_table(table, local)
            mlflow.log_artifact(str(local), artifact_path=str(Path(artifact_file).parent), run_id=run.info.run_id)

    def read_parquet(self, artifact_file: str):
        """What an earlier process of this run wrote (a resume), or None."""
        run = mlflow_run(self.trainer.args)
        try:
            if run is None:
                path = Path(self.trainer.args.output_dir) / artifact_file
                return pq.read_table(path) if path.exists() else None
            import mlflow

            with tempfile.TemporaryDirectory() as tmp:
                return pq.read_table(mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, artifact_path=artifact_file, dst_path=tmp))
        except Exception:  # noqa: BLE001 - none written yet, or unreadable: start afresh
            return None

    def flush(self) -> None:
        """Nothing held: TRL logs the metrics, the artifacts are written at once."""


def mlflow_run(args: Any):
    """The active MLflow run when MLflow is among ``report_to``, else None."""
    report_to = args.report_to if isinstance(args.report_to, list) else [args.report_to]
    if "mlflow" not in report_to and "all" not in report_to:
        return None
    import mlflow

    return mlflow.active_run()

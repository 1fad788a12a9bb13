"""MLflow recording (DESIGN 6) behind one small interface, and a stand-in.

Training code calls a :class:`Tracker` and never asks whether tracking is on:
:class:`NullTracker` accepts the same calls and does nothing (nanochat's
``DummyWandb``). :class:`MlflowTracker` talks to any tracking server through
``MlflowClient`` with an explicit run id, so several runs can be written from
one process. Without ``MLFLOW_TRACKING_URI`` the store is ``mlruns.db``
(SQLite) with artifacts under ``mlartifacts/``, both in the working directory.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from analysis.records import DEFAULT_ARTIFACTS, KIND_TAG, check_metric_name, tracking_uri

# MLflow's own rule for run ids: no dots or slashes, so an id can name a folder without escaping it.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,255}")


class TrackingError(RuntimeError):
    """The tracking server cannot be used; the message says which and how to fix it."""


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a well-formed MLflow run id (letters, digits, ``_``, ``-``), else TrackingError."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise TrackingError(f"{run_id!r} is not an MLflow run id (letters, digits, _ and -; see `workbench runs`)")
    return run_id


def check_artifact_path(path: str) -> str:
    """``path`` if it is a relative path inside a run's artifacts (no ``..``, no root, no backslash)."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or ":" in parts[0] or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"artifact path {path!r} must be relative and stay inside the run's artifacts, "
                         "e.g. 'features/step_000001.parquet'")
    return path


def client(uri: str | None = None):
    """An ``MlflowClient`` for ``uri``, checked to answer before any training starts."""
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    return MlflowClient(tracking_uri=uri)


def _check_server(uri: str) -> None:
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
    except requests.RequestException as err:
        raise TrackingError(
            f"MLflow tracking server {uri} is not reachable ({type(err).__name__}); start it "
            f"(e.g. `mlflow server --port 5000`) or unset MLFLOW_TRACKING_URI to use a local SQLite file"
        ) from None


def experiment_id(mlflow_client, name: str) -> str:
    """The id of experiment ``name``, created if missing (local artifacts for SQLite); several
    processes may call it at once."""
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    uri = mlflow_client._tracking_client.tracking_uri
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        location = (db.parent / DEFAULT_ARTIFACTS).resolve().as_uri()
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException as err:  # another process (a concurrent sweep cell) created it first
        exp = mlflow_client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def get_run(mlflow_client, run_id: str):
    """Run ``run_id``, or TrackingError saying that the store has no such run."""
    from mlflow.exceptions import MlflowException

    check_run_id(run_id)
    try:
        return mlflow_client.get_run(run_id)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise TrackingError(f"no run {run_id!r} in the tracking store {mlflow_client.tracking_uri}; "
                            "list runs with `workbench runs`") from None


def read_text_artifact(mlflow_client, run_id: str, artifact_file: str) -> str | None:
    """The text of one artifact of a run, or None when the run has no such artifact."""
    from mlflow.exceptions import MlflowException

    check_artifact_path(artifact_file)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow_client.download_artifacts(run_id, artifact_file, tmp)
        except (MlflowException, OSError):
            return None
        return Path(local).read_text(encoding="utf-8")


@contextlib.contextmanager
def closing_run(tracker: Tracker) -> Iterator[Tracker]:
    """Close the run as FINISHED, KILLED (Ctrl-C, SIGTERM) or FAILED (any other error, re-raised)."""
    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")


def _parents(mlflow_client, exp_id: str, kind: str) -> list[str]:
    """Run ids of the parent runs of ``kind`` in the experiment, oldest first (start time, then run id)."""
    runs = mlflow_client.search_runs([exp_id], filter_string=f"tags.`{KIND_TAG}` = '{kind}'", max_results=1000)
    return [run.info.run_id for run in sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))]


def find_or_create_parent(mlflow_client, exp_id: str, kind: str, name: str) -> str:
    """The id of the experiment's parent run of ``kind`` (tag ``workbench.kind``); a new one named ``name`` if none.

    Processes that start at once (the cells of one sweep under a scheduler) settle on one parent: each that
    created a run looks again and keeps the oldest parent, deleting its own if that is another. They agree as
    long as their hosts' clocks agree to within the time between a create and the next search.
    """
    found = _parents(mlflow_client, exp_id, kind)
    if found:
        return found[0]
    created = mlflow_client.create_run(exp_id, run_name=name, tags={KIND_TAG: kind}).info.run_id
    oldest = _parents(mlflow_client, exp_id, kind)[0]
    if oldest != created:
        mlflow_client.delete_run(created)
    return oldest


@contextlib.contextmanager
def parent_run(mlflow_client, exp_id: str, kind: str, name: str) -> Iterator[str]:
    """The experiment's parent run of ``kind`` (:func:`find_or_create_parent`), RUNNING while the block runs.

    Yields its run id, for the ``mlflow.parentRunId`` tag of the cells started in the block. It closes as a
    cell's run does (:func:`closing_run`): FINISHED, KILLED on Ctrl-C or SIGTERM, FAILED on an error.
    Several processes sharing one parent (``workbench sweep --cell K``) each set its status; the last wins.
    """
    run_id = find_or_create_parent(mlflow_client, exp_id, kind, name)
    mlflow_client.update_run(run_id, status="RUNNING")
    with closing_run(MlflowTracker(mlflow_client, run_id)):
        yield run_id


def write_parquet(frame: Any, path: Path) -> None:
    """Write a table (Arrow or pandas) as Parquet, without dictionary encoding for float32/64 vectors.

    Those values never repeat, and their dictionary pages made a float32 dump 28 % larger; float16
    vectors (65,536 possible values) and scalar columns keep it (``make bench``, dump size).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    dictionary: list[str] | bool = []  # Parquet column paths; a list's values are "<name>.list.element"
    for field in table.schema:
        if not pa.types.is_nested(field.type):
            dictionary.append(field.name)
        elif not pa.types.is_list(field.type):  # structs, maps: pyarrow's default
            dictionary = True
            break
        elif field.type.value_type not in (pa.float32(), pa.float64()):
            dictionary.append(f"{field.name}.list.element")
    pq.write_table(table, path, use_dictionary=dictionary)


class Tracker:
    """What training code calls to record a run. This base records nothing and reads nothing back; it is
    the stand-in where tracking is off (nanochat's ``DummyWandb``) and the base of :class:`MlflowTracker`."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_parquet(self, frame: Any, artifact_file: str) -> None: ...
    def log_table(self, rows: dict[str, list], artifact_file: str) -> None: ...
    def log_dataset(self, frame: Any, name: str, context: str, source: str | None = None) -> None: ...
    def read_parquet(self, artifact_file: str) -> Any:
        return None

    def set_tags(self, tags: dict[str, str]) -> None: ...
    def flush(self) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...


class NullTracker(Tracker):
    """Accepts every tracker call and records nothing.

    ``run_id`` may name a run that another process records (rank 0 of a
    multi-process launch), so every process uses the same output folder.
    """

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id


class MlflowTracker(Tracker):
    """Writes one MLflow run through ``MlflowClient`` (batched metrics, atomic artifacts), off the training thread.

    Metrics and table rows are held in memory and handed, in one batch, to a writer thread
    (:class:`~trainers.background.Background`) every ``flush_s`` seconds: one ``log_batch`` is a
    synchronous transaction (about 40 ms on SQLite here), and MLflow appends to a table by
    downloading and uploading it whole. Parquet artifacts are written to a local file on the calling
    thread and uploaded by the writer. Every method may be called from any thread.

    :meth:`flush` hands over what is held and waits until the writer has written everything, so
    what was logged before a flush is in the store after it. Training flushes at every checkpoint
    (``TrackerCallback.on_save`` and the recorder's flush), so a process killed without warning
    (SIGKILL) loses only metrics of steps after its last checkpoint, which ``workbench run --resume``
    trains and logs again; Ctrl-C, SIGTERM and errors finish the run through :func:`closing_run`,
    which flushes. Parameters, text artifacts and tags flush first and are written at once. A write
    that fails on the writer is raised from the next call that hands it work, or from :meth:`flush`.

    ``system_metrics_s`` > 0 starts MLflow's own system-metrics monitor (CPU, memory, disk,
    network, GPU under ``system/``), sampling every that many seconds until the run finishes.
    """

    def __init__(self, mlflow_client, run_id: str, flush_s: float = 10.0, system_metrics_s: float = 0.0,
                 resumed: bool = False) -> None:
        import threading
        import time

        from trainers.background import Background

        self.client = mlflow_client
        self.run_id = run_id
        self.flush_s = flush_s
        self._lock = threading.Lock()  # guards what is held: _pending, _tables, _last_flush
        self._pending: list = []  # mlflow Metric entities not yet handed to the writer
        self._tables: dict[str, list[dict[str, list]]] = {}  # artifact file -> row blocks not yet handed over
        self._last_flush = time.monotonic()
        self._writer = Background(f"mlflow-writer-{run_id[:8]}")
        self._system = None
        if system_metrics_s > 0:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._system = SystemMetricsMonitor(run_id, sampling_interval=system_metrics_s, resume_logging=resumed,
                                                tracking_uri=mlflow_client._tracking_client.tracking_uri)
            self._system.start()

    @classmethod
    def start(cls, experiment: str, run_name: str, tags: dict[str, str], uri: str | None = None,
              flush_s: float = 10.0, system_metrics_s: float = 0.0) -> MlflowTracker:
        c = client(uri)
        run = c.create_run(experiment_id(c, experiment), run_name=run_name, tags=tags)
        return cls(c, run.info.run_id, flush_s, system_metrics_s)

    @classmethod
    def resume(cls, run_id: str, uri: str | None = None, flush_s: float = 10.0,
               system_metrics_s: float = 0.0) -> MlflowTracker:
        """Reopen run ``run_id`` (status RUNNING again); metrics and artifacts append to what it has."""
        c = client(uri)
        get_run(c, run_id)
        c.update_run(run_id, status="RUNNING")
        return cls(c, run_id, flush_s, system_metrics_s, resumed=True)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.flush()
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entities = [Metric(check_metric_name(k), float(v), now, step)
                    for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
        with self._lock:
            self._pending += entities
            due = time.monotonic() - self._last_flush >= self.flush_s
        if due:
            self._hand_over()

    def flush(self) -> None:
        """Hand over the metrics and table rows held in memory and wait until everything is written."""
        self._hand_over()
        self._writer.wait()

    def _hand_over(self) -> None:
        """Give what is held to the writer thread (it writes in the order handed over)."""
        import time

        with self._lock:
            pending, self._pending = self._pending, []
            tables, self._tables = self._tables, {}
            self._last_flush = time.monotonic()
        if pending or tables:
            self._writer.submit(self._write, pending, tables)

    def _write(self, pending: list, tables: dict[str, list[dict[str, list]]]) -> None:
        for i in range(0, len(pending), 1000):  # MLflow's limit per log_batch
            self.client.log_batch(self.run_id, metrics=pending[i : i + 1000])
        if tables:
            import pandas as pd

            for artifact_file, blocks in tables.items():  # MLflow appends to a table that exists
                self.client.log_table(self.run_id, pd.concat(map(pd.DataFrame, blocks), ignore_index=True),
                                      artifact_file)

    def log_table(self, rows: dict[str, list], artifact_file: str) -> None:
        """Append ``rows`` (column -> values) to the MLflow table ``artifact_file``, at the next hand-over."""
        check_artifact_path(artifact_file)
        with self._lock:
            self._tables.setdefault(artifact_file, []).append(rows)

    def log_dataset(self, frame: Any, name: str, context: str, source: str | None = None) -> None:
        """Log ``frame`` as an MLflow dataset input (name, digest, schema, ``source``) in ``context``."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        from analysis.records import DATASET_CONTEXTS

        if context not in DATASET_CONTEXTS:
            raise ValueError(f"dataset context {context!r}: use one of {list(DATASET_CONTEXTS)}")
        dataset = mlflow.data.from_pandas(frame, source=source, name=name)
        tag = InputTag(key="mlflow.data.context", value=context)
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[tag])])

    def log_text(self, text: str, artifact_file: str) -> None:
        check_artifact_path(artifact_file)
        self.flush()
        self.client.log_text(self.run_id, text, artifact_file)

    def log_parquet(self, frame: Any, artifact_file: str) -> None:
        """Write a table (Arrow or pandas) as Parquet, fully, here; the writer hands the finished file to MLflow."""
        path = Path(check_artifact_path(artifact_file))
        tmp = tempfile.mkdtemp(prefix="workbench-artifact-")
        local = Path(tmp) / path.name
        try:
            write_parquet(frame, local)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._writer.submit(self._upload, local, str(path.parent) if str(path.parent) != "." else None)

    def _upload(self, local: Path, artifact_path: str | None) -> None:
        try:
            self.client.log_artifact(self.run_id, str(local), artifact_path)
        finally:
            shutil.rmtree(local.parent, ignore_errors=True)

    def read_parquet(self, artifact_file: str):
        """A Parquet artifact of the run as an Arrow table (after writing what is queued); None when the run has
        none (or it cannot be parsed)."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        from mlflow.exceptions import MlflowException

        check_artifact_path(artifact_file)
        self.flush()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                return pq.read_table(self.client.download_artifacts(self.run_id, artifact_file, tmp))
            except (MlflowException, OSError, pa.ArrowInvalid):
                return None

    def set_tags(self, tags: dict[str, str]) -> None:
        self.flush()
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def finish(self, status: str = "FINISHED") -> None:
        """Stop the system-metrics monitor, write everything held or queued, and end the run as ``status``."""
        if self._system is not None:
            self._system.finish()
            self._system = None
        try:
            self.flush()
        finally:
            self._writer.close()
            self.client.set_terminated(self.run_id, status=status)

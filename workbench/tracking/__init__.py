"""MLflow recording (DESIGN 6) behind one small interface, and a stand-in.

Training code calls a :class:`Tracker` and never asks whether tracking is on:
:class:`NullTracker` accepts the same calls and does nothing (nanochat's
``DummyWandb``). :class:`MlflowTracker` talks to any tracking server through
``MlflowClient`` with an explicit run id, so several runs can be written from
one process; it spools every record in the run's folder first
(:mod:`workbench.tracking.spool`) and writes it from there on a thread of its own
(:mod:`workbench.tracking.sender`), so no caller waits on the server. Without
``MLFLOW_TRACKING_URI`` the store is ``mlruns.db`` (SQLite) with artifacts under
``mlartifacts/``, both in the working directory.
"""

from __future__ import annotations

import contextlib
import math
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from analysis.records import DEFAULT_ARTIFACTS, DEFAULT_OUTPUT_DIR, KIND_TAG, check_metric_name, tracking_uri

FINISH_WAIT_S = 60.0
"""Seconds the end of a run waits, by default, for a tracking store that writes nothing (``tracking.finish_wait_s``)."""
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
    """Writes one MLflow run through ``MlflowClient``, by way of a local spool, off the training thread.

    Every record (parameters, tags, metrics, table rows, text and Parquet artifacts, datasets, and
    last the run's status) is first written to the run's spool, ``<run folder>/spool/``
    (:mod:`workbench.tracking.spool`; the run folder is ``training.output_dir/<run id>``, by default
    ``outputs/<run id>``), and a sender thread (:class:`~workbench.tracking.sender.Sender`) writes it from
    there to the store, in order, each record once. No call waits on the network: while the store
    does not answer, records wait in the spool and the sender tries again; when it answers, the
    spool is written in order. Metrics and table rows are held in memory and spooled together
    every ``flush_s`` seconds (MLflow appends to a table by downloading and uploading it whole);
    Parquet artifacts are written whole, on the calling thread, into the spool. Every method may be
    called from any thread.

    :meth:`flush` spools what is held. With a store in a local file (``sqlite:``, ``file:``) it then
    waits until the sender has written everything, so what was logged before a flush is in the
    store after it; with any other store (a tracking server) it does not wait: what was logged is
    on disk, in the store or in the spool. Training flushes at every checkpoint
    (``TrackerCallback.on_save`` and the recorder's flush), so a process killed without warning
    (SIGKILL) leaves every step up to its last checkpoint in the store or the spool; ``workbench run
    --resume`` replays the spool first, then trains and logs the later steps again. Parameters,
    text artifacts, tags and datasets flush at once. A record the store refuses (not an outage)
    is raised as :class:`~trainers.background.BackgroundError` from the next call that spools, or
    from :meth:`flush`.

    :meth:`finish` spools the status and waits for the sender to write everything, while the store
    answers; after ``finish_wait_s`` seconds without a record written it stops waiting, leaves the
    rest in the spool and prints the ``workbench sync`` command that replays it.

    ``system_metrics_s`` > 0 starts MLflow's own system-metrics monitor (CPU, memory, disk,
    network, GPU under ``system/``), sampling every that many seconds until the run finishes; it
    writes to the store itself, not through the spool.
    """

    def __init__(self, mlflow_client, run_id: str, flush_s: float = 10.0, system_metrics_s: float = 0.0,
                 resumed: bool = False, run_folder: str | Path | None = None,
                 finish_wait_s: float = FINISH_WAIT_S, fresh: bool = False) -> None:
        import threading
        import time

        from workbench.tracking.sender import Sender
        from workbench.tracking.spool import Session, spool_folder

        self.client = mlflow_client
        self.run_id = check_run_id(run_id)
        self.flush_s = flush_s
        self.finish_wait_s = finish_wait_s
        self.uri = getattr(getattr(mlflow_client, "_tracking_client", None), "tracking_uri", "")
        self.run_folder = Path(run_folder if run_folder is not None else Path(DEFAULT_OUTPUT_DIR) / run_id).absolute()
        self.spool = Session.create(spool_folder(self.run_folder), run_id, self.uri)
        self.left_in_spool = 0  # records finish() left for `workbench sync`
        self._sender = Sender(mlflow_client, run_id, self.spool, f"mlflow-sender-{run_id[:8]}")
        self._waits_for_store = self.uri.startswith(("sqlite:", "file:"))
        self._fresh = fresh  # this tracker created the run: the store holds only what it logged
        self._logged: set[str] = set()  # artifact paths this tracker logged
        self._lock = threading.Lock()  # guards what is held: _pending, _tables, _last_flush
        self._pending: list[list] = []  # [key, value, timestamp ms, step] not yet spooled
        self._tables: dict[str, list[dict[str, list]]] = {}  # artifact file -> row blocks not yet spooled
        self._last_flush = time.monotonic()
        self._system = None
        if system_metrics_s > 0:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._system = SystemMetricsMonitor(run_id, sampling_interval=system_metrics_s, resume_logging=resumed,
                                                tracking_uri=self.uri)
            self._system.start()

    @classmethod
    def start(cls, experiment: str, run_name: str, tags: dict[str, str], uri: str | None = None,
              flush_s: float = 10.0, system_metrics_s: float = 0.0, output_dir: str | Path = DEFAULT_OUTPUT_DIR,
              finish_wait_s: float = FINISH_WAIT_S) -> MlflowTracker:
        """A new run of ``experiment`` (the store must answer now); its folder is ``output_dir/<run id>``."""
        c = client(uri)
        run_id = c.create_run(experiment_id(c, experiment), run_name=run_name, tags=tags).info.run_id
        return cls(c, run_id, flush_s, system_metrics_s, run_folder=Path(output_dir) / run_id,
                   finish_wait_s=finish_wait_s, fresh=True)

    @classmethod
    def resume(cls, run_id: str, uri: str | None = None, flush_s: float = 10.0,
               system_metrics_s: float = 0.0, run_folder: str | Path | None = None,
               finish_wait_s: float = FINISH_WAIT_S) -> MlflowTracker:
        """Reopen run ``run_id`` (status RUNNING again); metrics and artifacts append to what it has."""
        c = client(uri)
        get_run(c, run_id)
        c.update_run(run_id, status="RUNNING")
        return cls(c, run_id, flush_s, system_metrics_s, resumed=True, run_folder=run_folder,
                   finish_wait_s=finish_wait_s)

    # ------------------------------------------------------------------ spooling

    def _raise(self) -> None:
        """Raise a record's refusal by the store, once, on the calling thread."""
        from trainers.background import BackgroundError

        if (err := self._sender.take_error()) is not None:
            raise BackgroundError(f"{self._sender.name}: {err}") from err

    def _spool(self, kind: str, payload: dict[str, Any], data: Path | None = None) -> None:
        self._raise()
        self._sender.put(self.spool.append(kind, payload, data))

    def log_params(self, params: dict[str, Any]) -> None:
        self._spool("params", {"params": {k: str(v)[:6000] for k, v in params.items()}})
        self.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        now = int(time.time() * 1000)
        entries = [[check_metric_name(k), float(v), now, int(step)]
                   for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
        with self._lock:
            self._pending += entries
            due = time.monotonic() - self._last_flush >= self.flush_s
        if due:
            self._hand_over()

    def flush(self) -> None:
        """Spool the metrics and table rows held in memory; with a local store, wait until all is written."""
        self._hand_over()
        if self._waits_for_store:
            self._sender.wait_written(self.spool.last_seq)
        self._raise()

    def _hand_over(self) -> None:
        """Spool what is held: one record of metrics, one of rows per table."""
        import time

        with self._lock:
            pending, self._pending = self._pending, []
            tables, self._tables = self._tables, {}
            self._last_flush = time.monotonic()
        if pending:
            self._spool("metrics", {"metrics": pending})
        for artifact_file, blocks in tables.items():
            for rows in _joined(blocks):
                self._spool("table", {"file": artifact_file, "rows": rows})

    def log_table(self, rows: dict[str, list], artifact_file: str) -> None:
        """Append ``rows`` (column -> values) to the MLflow table ``artifact_file``, at the next hand-over."""
        check_artifact_path(artifact_file)
        with self._lock:
            self._tables.setdefault(artifact_file, []).append(rows)

    def log_dataset(self, frame: Any, name: str, context: str, source: str | None = None) -> None:
        """Log ``frame`` as an MLflow dataset input (name, digest, schema, ``source``) in ``context``."""
        import mlflow.data

        from analysis.records import DATASET_CONTEXTS

        if context not in DATASET_CONTEXTS:
            raise ValueError(f"dataset context {context!r}: use one of {list(DATASET_CONTEXTS)}")
        entity = mlflow.data.from_pandas(frame, source=source, name=name)._to_mlflow_entity()
        fields = ("name", "digest", "source_type", "source", "schema", "profile")
        self._spool("dataset", {"dataset": {k: getattr(entity, k) for k in fields}, "context": context})
        self.flush()

    def log_text(self, text: str, artifact_file: str) -> None:
        self._spool("text", {"file": check_artifact_path(artifact_file), "text": text})
        self._logged.add(artifact_file)
        self.flush()

    def log_parquet(self, frame: Any, artifact_file: str) -> None:
        """Write a table (Arrow or pandas) as Parquet, fully, into the spool, here; the sender uploads it."""
        check_artifact_path(artifact_file)
        local = self.spool.data_file()
        try:
            write_parquet(frame, local)
        except BaseException:
            local.unlink(missing_ok=True)
            raise
        self._spool("artifact", {"file": artifact_file}, local)
        self._logged.add(artifact_file)

    def read_parquet(self, artifact_file: str):
        """A Parquet artifact of the run as an Arrow table: its newest spooled version, else the store's; None
        when the run has none (or it cannot be parsed). TrackingError when the store does not answer."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from workbench.tracking.replay import is_outage

        check_artifact_path(artifact_file)
        self._hand_over()
        item = self._sender.newest(artifact_file)
        if item is not None and item.data is not None:
            try:
                return pq.read_table(item.data)
            except FileNotFoundError:  # written to the store meanwhile
                pass
            except (OSError, pa.ArrowInvalid):
                return None
        if self._fresh and artifact_file not in self._logged:
            return None
        if self._waits_for_store:
            self.flush()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                return pq.read_table(self.client.download_artifacts(self.run_id, artifact_file, tmp))
            except Exception as err:  # noqa: BLE001  an outage is raised; a missing or bad file reads as None
                if is_outage(err):
                    raise TrackingError(f"cannot read {artifact_file} of run {self.run_id}: the tracking store "
                                        f"{self.uri} does not answer ({type(err).__name__})") from err
                return None

    def set_tags(self, tags: dict[str, str]) -> None:
        self._spool("tags", {"tags": {k: str(v) for k, v in tags.items()}})
        self.flush()

    def finish(self, status: str = "FINISHED") -> None:
        """Stop the system-metrics monitor, spool everything held and then the status ``status``, and wait
        until the store has it all, or until it has written nothing for ``finish_wait_s`` seconds."""
        import sys
        import time

        if self._system is not None:
            self._system.finish()
            self._system = None
        self._hand_over()
        error = self._sender.take_error()
        self._sender.put(self.spool.append("status", {"status": status, "end_time_ms": int(time.time() * 1000)}))
        self._sender.close()
        backlog = self._sender.backlog
        if backlog > PROGRESS_FROM:
            from workbench.progress import progress

            with progress(f"writing {backlog} spooled records of run {self.run_id[:12]} to {self.uri}",
                          backlog) as bar:
                written = self._sender.wait_closed(self.finish_wait_s, bar.advance)
        else:
            written = self._sender.wait_closed(self.finish_wait_s)
        if not written:
            self.left_in_spool = self._sender.backlog
            print(f"workbench: the tracking store {self.uri} has written nothing for {self.finish_wait_s:.0f} s; "
                  f"{self.left_in_spool} records of run {self.run_id} (the last: its status {status}) are kept in "
                  f"{self.spool.folder.parent}. This process goes on writing them while it lives; once it has "
                  f"ended, write them into the same run with (from {Path.cwd()}):\n"
                  f"    {sync_command(self.run_id, self.run_folder)}",
                  file=sys.stderr, flush=True)
        if error is not None or (error := self._sender.take_error()) is not None:
            from trainers.background import BackgroundError

            raise BackgroundError(f"{self._sender.name}: {error}") from error


PROGRESS_FROM = 20
"""A finish with more records than this left to write shows a progress bar."""


def sync_command(run_id: str, run_folder: Path) -> str:
    """The ``workbench sync`` command that replays the spool of run ``run_id`` in ``run_folder``."""
    output_dir = Path(run_folder).absolute().parent
    flag = "" if output_dir == Path(DEFAULT_OUTPUT_DIR).absolute() else f" --output-dir {output_dir}"
    return f"workbench sync {run_id}{flag}"


def _joined(blocks: list[dict[str, list]]) -> list[dict[str, list]]:
    """Consecutive row blocks with the same columns joined into one (column -> values)."""
    out: list[dict[str, list]] = []
    for rows in blocks:
        if out and list(out[-1]) == list(rows):
            for name, values in rows.items():
                out[-1][name] = [*out[-1][name], *values]
        else:
            out.append({name: list(values) for name, values in rows.items()})
    return out

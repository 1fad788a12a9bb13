"""Spooled records to MLflow, each once: what the live sender and ``workbench sync`` both call.

:func:`send` writes a window of consecutive records (:class:`~workbench.tracking.spool.Item`) of one run in
few MLflow calls: parameters, tags and datasets in the order logged, then every metric value
(``log_batch``, 1,000 a call), then each table's rows appended in the order logged (one
``log_table`` per table), then each artifact path's last version in the window. A ``status``
record is always alone in its window (:func:`windows`), so the run's status is written after
everything logged before it.

Records *in doubt* (a write that was started before and may have reached the store) are checked
first, so none reaches the store twice:

- metric values already in the run's history (same key, step, timestamp and value) are left out;
- table rows: the rows the table already ends with (the longest run of the in-doubt records'
  blocks, from the first) are not appended again;
- parameters, tags, datasets, artifacts, text and the status are written again: MLflow keeps one
  value per parameter and tag, one input per dataset digest, and one file per artifact path.

:func:`deliver` journals a window (``start`` before, ``done`` after) and, where the store refuses
it for a reason other than an outage, sends its records one by one so only the refused one is
dropped. :func:`is_outage` tells an outage (no connection, a timeout, a 5xx or 429 answer) from
a refusal.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from workbench.tracking.spool import Item, Session

WINDOW = 16
"""Records written together at most: few calls per record, and a replay journals its progress often."""
_OUTAGE_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "INTERNAL_ERROR"}


class Outage(RuntimeError):
    """The tracking store could not be reached; the records stay in the spool. ``__cause__`` says why."""


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def is_outage(err: BaseException) -> bool:
    """Whether ``err`` says the store is unreachable or overloaded (try again later), not that it refused.

    True for a connection error or timeout anywhere in the exception chain (Python's, ``requests``',
    ``urllib3``'s), an MLflow client error wrapping one ("API request to ... failed with exception"),
    an HTTP answer 5xx or 429, and MLflow's ``TEMPORARILY_UNAVAILABLE``, ``REQUEST_LIMIT_EXCEEDED`` and
    server-side ``INTERNAL_ERROR``.
    """
    import requests
    import urllib3
    from mlflow.exceptions import MlflowException, RestException

    for e in _chain(err):
        if isinstance(e, (ConnectionError, TimeoutError, requests.ConnectionError, requests.Timeout,
                          requests.exceptions.RetryError, requests.exceptions.ChunkedEncodingError,
                          urllib3.exceptions.MaxRetryError, urllib3.exceptions.ProtocolError,
                          urllib3.exceptions.NewConnectionError)):
            return True
        if isinstance(e, requests.HTTPError) and e.response is not None and (
                e.response.status_code >= 500 or e.response.status_code == 429):
            return True
        if isinstance(e, RestException) and e.error_code in _OUTAGE_CODES:
            return True
        if isinstance(e, MlflowException) and str(e.message).startswith("API request to") and " failed with" in \
                str(e.message):
            return True
    return False


def windows(items: Sequence[Item], size: int = WINDOW) -> Iterator[list[Item]]:
    """Consecutive runs of at most ``size`` records; a ``status`` record alone."""
    window: list[Item] = []
    for item in items:
        if item.kind == "status" or len(window) == size:
            if window:
                yield window
            window = []
        window.append(item)
        if item.kind == "status":
            yield window
            window = []
    if window:
        yield window


def deliver(mlflow_client, run_id: str, session: Session, window: list[Item]) -> list[tuple[Item, str]]:
    """Write ``window`` to the store and journal it; the records the store refused, with the reason.

    Raises :class:`Outage` when the store cannot be reached; the window's records are then in doubt
    (``item.in_doubt``) and stay pending.
    """
    session.started(window)
    try:
        send(mlflow_client, run_id, window)
    except Exception as err:  # noqa: BLE001  an outage is raised, a refusal is narrowed down below
        for item in window:
            item.in_doubt = True
        if is_outage(err):
            raise Outage(f"{type(err).__name__}: {err}") from err
        if len(window) == 1:
            session.failed(window[0], f"{type(err).__name__}: {err}")
            return [(window[0], f"{type(err).__name__}: {err}")]
        refused = []
        for item in window:  # one at a time: only the record the store refuses is dropped
            refused += deliver(mlflow_client, run_id, session, [item])
        return refused
    session.done(window)
    return []


def send(mlflow_client, run_id: str, items: Sequence[Item]) -> None:
    """Write ``items`` (consecutive records of run ``run_id``) to the store; in-doubt ones are checked first."""
    from mlflow.entities import Metric

    if len(items) == 1 and items[0].kind == "status":
        payload = items[0].payload
        mlflow_client.set_terminated(run_id, status=payload["status"], end_time=payload.get("end_time_ms"))
        return
    if any(item.kind == "status" for item in items):
        raise ValueError("a status record is written alone, after the records before it")
    params: dict[str, str] = {}
    tags: dict[str, str] = {}
    metrics: list[Metric] = []
    doubtful_metrics: list[Metric] = []
    tables: dict[str, list[tuple[dict[str, list], bool]]] = {}
    artifacts: dict[str, Item] = {}
    for item in items:
        p = item.payload
        if item.kind == "params":
            params.update(p["params"])
        elif item.kind == "tags":
            tags.update(p["tags"])
        elif item.kind == "dataset":
            _flush_params_tags(mlflow_client, run_id, params, tags)  # in the order logged
            params, tags = {}, {}
            _log_dataset(mlflow_client, run_id, p)
        elif item.kind == "metrics":
            entries = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in p["metrics"]]
            (doubtful_metrics if item.in_doubt else metrics).extend(entries)
        elif item.kind == "table":
            tables.setdefault(p["file"], []).append((p["rows"], item.in_doubt))
        elif item.kind in ("artifact", "text"):
            artifacts[p["file"]] = item  # later wins: one file per path
    _flush_params_tags(mlflow_client, run_id, params, tags)
    metrics = _not_in_store(mlflow_client, run_id, doubtful_metrics) + metrics
    for i in range(0, len(metrics), 1000):  # MLflow's limit per log_batch
        mlflow_client.log_batch(run_id, metrics=metrics[i : i + 1000])
    for artifact_file, blocks in tables.items():
        _append_table(mlflow_client, run_id, artifact_file, blocks)
    for artifact_file, item in artifacts.items():
        if item.kind == "text":
            mlflow_client.log_text(run_id, item.payload["text"], artifact_file)
        else:
            _log_file(mlflow_client, run_id, item.data, artifact_file)


def _flush_params_tags(mlflow_client, run_id: str, params: dict[str, str], tags: dict[str, str]) -> None:
    from mlflow.entities import Param, RunTag

    entries = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(entries), 100):  # MLflow's limit per log_batch
        mlflow_client.log_batch(run_id, params=entries[i : i + 100])
    entries = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, len(entries), 100):
        mlflow_client.log_batch(run_id, tags=entries[i : i + 100])


def _log_dataset(mlflow_client, run_id: str, payload: dict[str, Any]) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from mlflow.exceptions import MlflowException

    dataset = Dataset(**payload["dataset"])
    tag = InputTag(key="mlflow.data.context", value=payload["context"])
    try:
        mlflow_client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[tag])])
    except MlflowException as err:  # two runs of one experiment logged the same dataset at once (a study's cells)
        if "UNIQUE constraint failed: datasets" not in str(err):
            raise
        mlflow_client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[tag])])  # it exists now: link it


def _log_file(mlflow_client, run_id: str, data: Path | None, artifact_file: str) -> None:
    """Upload ``data`` as ``artifact_file``: a copy named after the artifact, in its folder."""
    import shutil

    if data is None or not Path(data).is_file():
        raise FileNotFoundError(f"the spooled data of artifact {artifact_file} is missing")
    path = Path(artifact_file)
    with tempfile.TemporaryDirectory(prefix="workbench-artifact-") as tmp:
        local = Path(tmp) / path.name
        try:
            local.hardlink_to(data)  # no copy where the file system allows it
        except OSError:
            shutil.copyfile(data, local)
        mlflow_client.log_artifact(run_id, str(local), str(path.parent) if str(path.parent) != "." else None)


def _not_in_store(mlflow_client, run_id: str, metrics: list) -> list:
    """The values of ``metrics`` that the run's history does not hold yet (same key, step, timestamp, value)."""
    if not metrics:
        return []
    held = set()
    for key in dict.fromkeys(m.key for m in metrics):
        held |= {(m.key, m.step, m.timestamp, m.value) for m in mlflow_client.get_metric_history(run_id, key)}
    return [m for m in metrics if (m.key, m.step, m.timestamp, m.value) not in held]


def _append_table(mlflow_client, run_id: str, artifact_file: str, blocks: list[tuple[dict[str, list], bool]]) -> None:
    """Append the row blocks (column -> values, in doubt or not) to the MLflow table, leaving out the
    in-doubt blocks the table already ends with."""
    import pandas as pd

    leading = next((k for k, (_, in_doubt) in enumerate(blocks) if not in_doubt), len(blocks))
    doubtful = [rows for rows, _ in blocks[:leading]]  # pending records in doubt come before the others
    skip = _blocks_at_end(_table_rows(mlflow_client, run_id, artifact_file), doubtful) if doubtful else 0
    rows = [rows for rows, _ in blocks][skip:]
    if rows:
        mlflow_client.log_table(run_id, pd.concat(map(pd.DataFrame, rows), ignore_index=True), artifact_file)
    elif skip:
        _list_table(mlflow_client, run_id, artifact_file)


def _list_table(mlflow_client, run_id: str, artifact_file: str) -> None:
    """The tag by which MLflow lists a run's tables: set where a write stopped between the upload and it."""
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    listed = json.loads(mlflow_client.get_run(run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    entry = {"path": artifact_file, "type": "table"}
    if entry not in listed:
        mlflow_client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps([*listed, entry]))


def _split_rows(frame_json: dict[str, Any]) -> tuple[list[str], list[list]]:
    return list(frame_json.get("columns", [])), [list(r) for r in frame_json.get("data", [])]


def _table_rows(mlflow_client, run_id: str, artifact_file: str) -> tuple[list[str], list[list]]:
    """(columns, rows) of the run's table ``artifact_file`` as MLflow stored it (JSON, orient split); no rows
    when the run has no such table."""
    from pathlib import PurePosixPath

    folder = str(PurePosixPath(artifact_file).parent)
    listed = [f.path for f in mlflow_client.list_artifacts(run_id, None if folder == "." else folder)]
    if artifact_file not in listed:
        return [], []
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow_client.download_artifacts(run_id, artifact_file, tmp)
        return _split_rows(json.loads(Path(local).read_text(encoding="utf-8")))


def _as_stored(rows: dict[str, list]) -> tuple[list[str], list[list]]:
    """A block as MLflow's ``log_table`` writes it (pandas JSON, orient split), read back."""
    import pandas as pd

    return _split_rows(json.loads(pd.DataFrame(rows).to_json(orient="split", index=False, date_format="iso")))


def _blocks_at_end(stored: tuple[list[str], list[list]], blocks: list[dict[str, list]]) -> int:
    """The largest k such that the stored table ends with the rows of ``blocks[:k]``, in order (0: none)."""
    columns, data = stored
    for k in range(len(blocks), 0, -1):
        tail: list[list] = []
        ok = True
        for rows in blocks[:k]:
            cols, block = _as_stored(rows)
            if sorted(cols) != sorted(columns):
                ok = False
                break
            order = [cols.index(c) for c in columns]
            tail += [[row[i] for i in order] for row in block]
        if ok and tail and len(tail) <= len(data) and data[len(data) - len(tail):] == tail:
            return k
    return 0

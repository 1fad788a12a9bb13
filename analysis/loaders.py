"""Read what runs recorded (DESIGN 6) through the MLflow client, as pandas.

Works against any tracking URI (a SQLite file or a remote server), because it
reads only through ``MlflowClient``. No torch, no workbench imports.
"""

from __future__ import annotations

import pandas as pd

from analysis import records
from analysis.geometry import stack  # noqa: F401  read with the dumps: loaders.stack(dump, "grad_feature")
from analysis.records import ARM_TAG, KIND_TAG, PARENT_KINDS, PROBE

REWARD = records.metric_key("train", "reward")

RUN_COLUMNS = ["run_id", "run_name", "method", "seed", "preset", "task", "kind", "arm", "status", "start_time",
               "last_step", "final_reward"]
def _client(uri: str):
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiments(uri: str) -> list[str]:
    """Names of the experiments at ``uri`` that hold at least one run, most recently updated first."""
    client = _client(uri)
    return [exp.name for exp in client.search_experiments(order_by=["last_update_time DESC"])
            if client.search_runs([exp.experiment_id], max_results=1)]


def runs_table(experiment: str, uri: str) -> pd.DataFrame:
    """One row per training, eval or probe run of ``experiment``: tags, status, last step and final ``train/reward``.

    ``kind`` is the run's ``workbench.kind`` tag (``probe`` for probes, else empty); ``arm`` its
    ``workbench.arm`` tag (the arm of a ``workbench study``, else empty). The parent runs of sweeps
    and studies (kind in ``PARENT_KINDS``) are left out: they are no cells.

    Also carries every param as ``param.<key>`` and the last value of every
    metric as ``metric.<key>``. An unknown experiment gives an empty frame.
    """
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame(columns=RUN_COLUMNS)
    rows = []
    for run in client.search_runs([exp.experiment_id], max_results=5000, order_by=["attributes.start_time ASC"]):
        tags, data = run.data.tags, run.data
        if tags.get(KIND_TAG) in PARENT_KINDS:
            continue
        history = client.get_metric_history(run.info.run_id, REWARD)
        rows.append({
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "method": tags.get("method", ""),
            "seed": int(tags["seed"]) if tags.get("seed", "").isdigit() else -1,
            "preset": tags.get("preset", ""),
            "task": tags.get("task", ""),
            "kind": tags.get(KIND_TAG, ""),
            "arm": tags.get(ARM_TAG, ""),
            "status": run.info.status,
            "start_time": pd.to_datetime(run.info.start_time, unit="ms"),
            "last_step": max((m.step for m in history), default=0),
            "final_reward": data.metrics.get(REWARD, float("nan")),
            **{f"param.{k}": v for k, v in data.params.items()},
            **{f"metric.{k}": v for k, v in data.metrics.items()},
        })
    return pd.DataFrame(rows, columns=None if rows else RUN_COLUMNS)


def is_probe(runs: pd.DataFrame) -> pd.Series:
    """True for the rows of a runs table that are probes (``workbench probe``), False for training and eval runs."""
    kind = runs["kind"] if "kind" in runs else pd.Series("", index=runs.index)
    return kind.astype(str) == PROBE


def metric_history(run_id: str, key: str, uri: str) -> pd.DataFrame:
    """All logged values of one metric of one run: columns step, value."""
    history = _client(uri).get_metric_history(run_id, key)
    frame = pd.DataFrame([(m.step, m.value) for m in history], columns=["step", "value"])
    return frame.sort_values("step", kind="stable").drop_duplicates("step", keep="last").reset_index(drop=True)


DUMP_DIR = records.FEATURES_DIR
EVAL_DIR = records.EVAL_DIR


def _step_of(path: str) -> int | None:
    parsed = records.parse_step_path(path)
    return None if parsed is None else parsed[1]


def _steps(files) -> list[int]:
    return sorted(s for f in files if (s := _step_of(f.path)) is not None)


def artifact_steps(run_id: str, uri: str, folder: str = DUMP_DIR) -> list[int]:
    """Steps that have a ``<folder>/step_<step>.parquet`` artifact, ascending."""
    return _steps(_client(uri).list_artifacts(run_id, folder))


def _artifact_repository(run_id: str, uri: str):
    """The artifact repository of a run, resolved once.

    ``MlflowClient.download_artifacts`` looks the run up again for every file
    (SQL queries each time on a SQLite store); reading through the repository
    does not.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(_client(uri).get_run(run_id).info.artifact_uri, tracking_uri=uri)


def _read_parquet_artifact(repository, path: str) -> pd.DataFrame | None:
    """Download and parse one Parquet artifact; a truncated or corrupt file gives None.

    The pandas metadata a writer may have stored is ignored: columns come back
    from their Arrow types (lists as arrays), so a file written from pandas
    with Arrow-backed list columns reads like any other.
    """
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        local = repository.download_artifacts(path, tmp)
        try:
            return pq.read_table(local).to_pandas(ignore_metadata=True)
        except (pa.ArrowInvalid, OSError):
            return None


def load_dumps(run_id: str, uri: str, steps: list[int] | None = None, folder: str = DUMP_DIR) -> pd.DataFrame:
    """The per-completion feature dumps of a run (DESIGN 6) for ``steps`` (default all), concatenated.

    A dump that cannot be parsed (an interrupted write) is skipped and its step
    listed in ``frame.attrs["invalid_steps"]``; the run id is in column ``run_id``.
    The run's artifact repository is resolved once for all the files.
    """
    repository = _artifact_repository(run_id, uri)
    available = _steps(repository.list_artifacts(folder))
    wanted = available if steps is None else [s for s in steps if s in set(available)]
    frames, invalid = [], []
    for step in wanted:
        frame = _read_parquet_artifact(repository, records.step_path(folder, step))
        if frame is None:
            invalid.append(step)
        else:
            frames.append(frame)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not out.empty:
        out.insert(0, "run_id", run_id)
    out.attrs["invalid_steps"] = invalid
    return out


def load_summaries(run_id: str, uri: str) -> pd.DataFrame | None:
    """The run's per-step pair summaries (``records.SUMMARY_PATH``) as :func:`analysis.summary.summary_frame`,
    with ``run_id``.

    None when the run has no such artifact (it was recorded before summaries existed, or without
    geometry); ValueError when the artifact cannot be parsed.
    """
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from analysis.summary import summary_frame

    repository = _artifact_repository(run_id, uri)
    if records.SUMMARY_PATH not in {f.path for f in repository.list_artifacts(records.SUMMARY_DIR)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            table = pq.read_table(repository.download_artifacts(records.SUMMARY_PATH, tmp))
        except (pa.ArrowInvalid, OSError):
            raise ValueError(f"{records.SUMMARY_PATH} is truncated or corrupt") from None
    frame = summary_frame(table)
    frame.insert(0, "run_id", run_id)
    return frame

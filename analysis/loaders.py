"""Read what runs recorded (DESIGN 6) through the MLflow client, as pandas.

Works against any tracking URI (a SQLite file or a remote server), because it
reads only through ``MlflowClient``. No torch, no workbench imports.
"""

from __future__ import annotations

import pandas as pd

RUN_COLUMNS = ["run_id", "run_name", "method", "seed", "preset", "task", "status", "start_time", "last_step",
               "final_reward"]


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_table(experiment: str, uri: str) -> pd.DataFrame:
    """One row per run of ``experiment``: tags, status, last step and final ``train/reward``.

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
        history = client.get_metric_history(run.info.run_id, "train/reward")
        rows.append({
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "method": tags.get("method", ""),
            "seed": int(tags["seed"]) if tags.get("seed", "").isdigit() else -1,
            "preset": tags.get("preset", ""),
            "task": tags.get("task", ""),
            "status": run.info.status,
            "start_time": pd.to_datetime(run.info.start_time, unit="ms"),
            "last_step": max((m.step for m in history), default=0),
            "final_reward": data.metrics.get("train/reward", float("nan")),
            **{f"param.{k}": v for k, v in data.params.items()},
            **{f"metric.{k}": v for k, v in data.metrics.items()},
        })
    return pd.DataFrame(rows, columns=None if rows else RUN_COLUMNS)


def metric_history(run_id: str, key: str, uri: str) -> pd.DataFrame:
    """All logged values of one metric of one run: columns step, value."""
    history = _client(uri).get_metric_history(run_id, key)
    frame = pd.DataFrame([(m.step, m.value) for m in history], columns=["step", "value"])
    return frame.sort_values("step", kind="stable").drop_duplicates("step", keep="last").reset_index(drop=True)

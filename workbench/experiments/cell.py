"""One cell of a sweep or study: its identity, what to do with its earlier runs, and one training of it.

A cell is identified by its tags ``method``, ``seed`` and ``config_hash`` (:func:`config_hash`, a hash of its
resolved config) plus any tags its caller adds (a study's arm). :func:`_decide` reads its earlier runs and
says whether to skip it (FINISHED), leave it (RUNNING in a live process), resume the newest killed run or
start a new one; :func:`run_one` trains it. :mod:`workbench.experiments.sweep` runs cells one after the other in one
process, :mod:`workbench.experiments.sweep_cell` one cell across the processes of a launch; both build on this module.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from analysis.records import HASH_TAG, PARENT_TAG
from workbench.config import ConfigError, WorkbenchConfig
from workbench.run.launch import ProcessState, find_resume_point, reopen_tracker, run_process, start_tracker
from workbench.tracking import Tracker, TrackingError, closing_run

TrainFn = Callable[..., Any]  # (cfg, tracker) for a new run; also resume_from_checkpoint= for a resumed one
CELL_KEYS = ("method", "seed")


@dataclass(frozen=True)
class CellResult:
    method: str
    seed: int
    status: str  # "finished" (ran now), "resumed" (continued now, finished), "skipped" (finished before),
    # "failed", "running" (left alone)
    run_id: str | None
    config_hash: str
    seconds: float = 0.0
    error: str | None = None


def config_hash(cfg: WorkbenchConfig) -> str:
    """Hash of everything that determines a run's result: the resolved config less its ``tracking``
    section and its checkpoint cadence (``training.save_steps``, ``keep_checkpoints``, ``save_final``)."""
    data = cfg.model_dump(mode="json", exclude={"tracking": True, "training": {"save_steps", "keep_checkpoints",
                                                                            "save_final"}})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def previous_runs(mlflow_client, exp_id: str, cfg: WorkbenchConfig, digest: str,
                  tags: dict[str, str] | None = None) -> list:
    """Runs of this cell (same method, seed and config hash, and the given ``tags``), newest first."""
    query = (f"tags.method = '{cfg.method}' and tags.seed = '{cfg.seed}' and tags.{HASH_TAG} = '{digest}'")
    query += "".join(f" and tags.`{key}` = '{value}'" for key, value in (tags or {}).items())
    return mlflow_client.search_runs([exp_id], filter_string=query, order_by=["attributes.start_time DESC"],
                                     max_results=100)


def _synced(mlflow_client, run):
    """``run`` as the store holds it after writing what a stopped process left in its spool (its last steps,
    its status: :func:`workbench.tracking.sync.sync_run`); a run that a live process writes is left to it."""
    from workbench.tracking.sync import has_spool, run_folder_of, sync_run

    if run.info.status in ("RUNNING", "SCHEDULED") and run_process(run.data.tags) is ProcessState.ALIVE:
        return run
    if not has_spool(folder := run_folder_of(run.info.run_id, run.data.tags)):
        return run
    sync_run(mlflow_client, run.info.run_id, folder)
    return mlflow_client.get_run(run.info.run_id)


def _decide(mlflow_client, runs: list, rerun_running: bool) -> tuple[str, str | None]:
    """("skip", run_id) | ("running", run_id) | ("resume", run_id of the newest killed run) | ("run", None);
    writes what stopped runs left in their spool first, and marks dead RUNNING runs KILLED."""
    runs = [_synced(mlflow_client, run) for run in runs]
    for run in runs:
        if run.info.status == "FINISHED":
            return "skip", run.info.run_id
    killed = None
    for run in runs:  # newest first
        status = run.info.status
        if status in ("RUNNING", "SCHEDULED"):
            if not (run_process(run.data.tags) is ProcessState.DEAD or rerun_running):
                return "running", run.info.run_id
            mlflow_client.set_terminated(run.info.run_id, status="KILLED")
            status = "KILLED"
        if status == "KILLED" and killed is None:
            killed = run.info.run_id
    return ("resume", killed) if killed else ("run", None)


def _resume_point(run_id: str):
    """Where the killed run ``run_id`` continues (a :class:`workbench.run.launch.ResumePoint`), or the reason it
    cannot."""
    try:
        return find_resume_point(run_id), None
    except TrackingError as err:
        return None, str(err)


def resume_or_restart(action: str, run_id: str | None, say, label: str):
    """The resume point of a cell whose ``action`` is "resume" (None otherwise, or where the killed run
    cannot resume: ``say`` then tells ``label``'s user that it starts a new run)."""
    if action != "resume":
        return None
    point, why_not = _resume_point(run_id)
    if point is None:
        say(f"[yellow]{label}: killed run {run_id} cannot resume ({why_not}); starting a new run[/yellow]")
    return point


def _default_train(cfg: WorkbenchConfig, tracker: Tracker, **kwargs: Any) -> None:
    """``workbench.run.train.train``, then the model and trainer freed before the next cell loads its own."""
    from workbench.run.train import train

    try:
        train(cfg, tracker, **kwargs)
    finally:
        _free_memory()


def run_one(cfg: WorkbenchConfig, digest: str, train_fn: TrainFn, parent_id: str, resume=None,
            tags: dict[str, str] | None = None) -> str:
    """Train the cell in a new run (tagged also with ``tags``, and nested under run ``parent_id``), or continue
    the run of ``resume`` (a ``ResumePoint``) from its checkpoint, under the parent it has; close the run as
    FINISHED, FAILED or KILLED; return its id."""
    if resume is not None:
        tracker = reopen_tracker(resume)
        with closing_run(tracker):
            train_fn(resume.config, tracker, resume_from_checkpoint=resume.checkpoint)
        return tracker.run_id
    tracker = start_tracker(cfg)
    tracker.set_tags({HASH_TAG: digest, PARENT_TAG: parent_id, **(tags or {})})
    with closing_run(tracker):
        train_fn(cfg, tracker)
    return tracker.run_id


def _free_memory() -> None:
    import torch

    gc.collect()  # the trainer holds the model in reference cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_cell(k: int, count: int) -> int:
    """``k`` if it numbers one of ``count`` cells (0 to count - 1), else a ConfigError saying which exist."""
    if not 0 <= k < count:
        raise ConfigError(f"--cell {k} is out of range: this sweep has {count} cells, numbered 0 to {count - 1} "
                          f"(a SLURM array: --array=0-{count - 1}); list them with --list")
    return k

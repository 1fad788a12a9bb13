"""Open a run's MLflow record, or find where a stopped run resumes: what happens before training starts.

:func:`launch_tracker` creates the MLflow run (:func:`start_tracker`), or
reopens it to resume (:func:`reopen_tracker`), on rank 0 only; under
``torchrun`` / ``accelerate launch`` the other ranks get its id through the
process group and a :class:`~workbench.tracking.NullTracker`. Every run is
tagged with the host and process that train it (:func:`run_process` reads them
back) and the folder of its checkpoints.

Resume (``workbench run --resume RUN_ID``, :func:`find_resume_point`): TRL
checkpoints (every tenth of the run unless ``training.save_steps`` says otherwise)
go to ``training.output_dir/<run id>`` (:func:`checkpoint_dir`); the run first
writes what the stopped process left in its spool, then continues from its last
complete ``checkpoint-N`` (:func:`last_checkpoint`) with the optimizer, scheduler
and RNG states of the checkpoint, and the config of the run's own ``config.yaml``.
Steps up to N are not logged again. Steps the killed process logged after N (at
most one checkpoint interval) are logged a second time by the resumed process, later:
MLflow appends metric values and cannot delete them, and
``analysis.loaders.metric_history`` keeps the last value of each step (MLflow
returns a history in timestamp order), so a reader sees each step once, with the
value of the trajectory that continued. Feature dumps and evaluation artifacts
are files named by step and are overwritten, so they never repeat.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from analysis.records import CHECKPOINT_TAG, CONFIG_ARTIFACT, HOST_TAG, PID_TAG, RESUMED_TAG
from trainers.embeddings import encoder_dtype
from workbench import __version__
from workbench.config import WorkbenchConfig, flatten, to_yaml, validate
from workbench.tracking import (
    MlflowTracker,
    NullTracker,
    Tracker,
    TrackingError,
    check_run_id,
    client,
    get_run,
    read_text_artifact,
)

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_PID = re.compile(r"^[1-9][0-9]*$")


@dataclass(frozen=True)
class ResumePoint:
    """Where ``workbench run --resume`` continues a run."""

    run_id: str
    config: WorkbenchConfig  # the run's own config.yaml
    checkpoint: Path | None  # the last complete checkpoint-N; None: restart at step 0 in the same run
    step: int  # N, the last step the checkpoint holds (0 without one)


class ProcessState(enum.Enum):
    """Whether the process a run's tags name is still there (:func:`run_process`)."""

    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"


def run_process(tags: Mapping[str, str]) -> ProcessState:
    """The state of the process that trains (or trained) the run with ``tags``, as seen from this process.

    - ``ALIVE``: the run's host tag is this host and a process with its pid tag exists, other than this
      one (one owned by another user counts: it exists).
    - ``DEAD``: the host tag is this host and no process has its pid, or the pid is this very process's
      (which is not training that run: it is asking about it, so the recorded process is gone and its pid
      reused, or this process left the run open).
    - ``UNKNOWN``: this host cannot tell: the host tag names another host or is missing, or the pid tag
      is missing or not a positive integer.

    ``workbench run --resume`` refuses a RUNNING run only when ``ALIVE``; ``workbench sweep`` takes a
    RUNNING run for killed (and resumes it) only when ``DEAD``, and leaves it alone when ``UNKNOWN``.
    """
    pid_text = tags.get(PID_TAG, "")
    if tags.get(HOST_TAG) != socket.gethostname() or not _PID.match(pid_text):
        return ProcessState.UNKNOWN
    pid = int(pid_text)
    if pid == os.getpid():
        return ProcessState.DEAD
    try:
        os.kill(pid, 0)  # signal 0: checks that the process exists, sends nothing
    except ProcessLookupError:
        return ProcessState.DEAD
    except PermissionError:
        return ProcessState.ALIVE
    return ProcessState.ALIVE


def run_tags(cfg: WorkbenchConfig) -> dict[str, str]:
    return {"method": cfg.method, "seed": str(cfg.seed), "preset": cfg.model.preset, "task": cfg.task.name,
            "workbench_version": __version__}


def start_tracker(cfg: WorkbenchConfig) -> MlflowTracker:
    """A new MLflow run of ``cfg``: its tags, flattened params, ``config.yaml`` and the process tags."""
    run_name = cfg.tracking.run_name or f"{cfg.method}-s{cfg.seed}"
    tracker = MlflowTracker.start(cfg.tracking.experiment, run_name, run_tags(cfg), flush_s=cfg.tracking.flush_s,
                                  system_metrics_s=cfg.tracking.system_metrics_interval(),
                                  output_dir=cfg.training.output_dir, finish_wait_s=cfg.tracking.finish_wait_s)
    params = flatten(cfg.model_dump(mode="json"))
    params["features.encoder_dtype"] = encoder_dtype(cfg.features.encoder_dtype)  # what ran, auto resolved
    tracker.log_params(params)
    tracker.log_text(to_yaml(cfg), CONFIG_ARTIFACT)
    tracker.set_tags(_process_tags(cfg, tracker.run_id))
    return tracker


def _process_tags(cfg: WorkbenchConfig, run_id: str) -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            CHECKPOINT_TAG: str(checkpoint_dir(cfg, run_id).resolve())}


def checkpoint_dir(cfg: WorkbenchConfig, run_id: str | None) -> Path:
    """Where TRL writes the checkpoints of run ``run_id``: ``training.output_dir/<run id>``."""
    return Path(cfg.training.output_dir) / (run_id or "scratch")


def checkpoint_folder(cfg: WorkbenchConfig, run_id: str, tagged: str | None) -> Path:
    """The checkpoint folder of the recorded run ``run_id``: the absolute one it tagged (``tagged``, if it is a
    folder named after the run) or ``training.output_dir/<run id>`` from the working directory."""
    if tagged and Path(tagged).name == run_id and Path(tagged).is_dir():
        return Path(tagged)
    return checkpoint_dir(cfg, run_id)


def last_checkpoint(folder: Path) -> tuple[Path | None, int]:
    """The complete ``checkpoint-N`` with the largest N in ``folder`` and N; (None, 0) if there is none.

    A checkpoint counts as complete once its ``trainer_state.json`` (written
    last by the Trainer) parses; a process killed while saving leaves one that does not.
    """
    found = []
    if folder.is_dir():
        for child in folder.iterdir():
            match = _CHECKPOINT.match(child.name)
            if match and child.is_dir():
                found.append((int(match[1]), child))
    for step, path in sorted(found, reverse=True):
        try:
            state = json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            log.warning("checkpoint %s is incomplete (no readable trainer_state.json); skipped", path)
            continue
        if state.get("global_step") == step:
            return path, step
    return None, 0


def find_resume_point(run_id: str) -> ResumePoint:
    """Read what resuming ``run_id`` needs: its config, status and last checkpoint, after writing what the
    stopped process left in the run's spool (:func:`workbench.tracking.sync.sync_run`; it may hold the last steps,
    ``config.yaml`` and the status).

    Refuses a FINISHED run, a run still RUNNING in a live process on this host
    (:func:`run_process`; one RUNNING on another host is resumed, the caller
    vouching that it stopped), a run without ``config.yaml`` and a run that saved no checkpoints.
    """
    check_run_id(run_id)  # before any store is opened
    from workbench.tracking.sync import has_spool, run_folder_of, sync_run

    c = client()
    run = get_run(c, run_id)
    if has_spool(folder := run_folder_of(run_id, run.data.tags)):
        sync_run(c, run_id, folder)
        run = get_run(c, run_id)
    status, tags = run.info.status, run.data.tags
    if status == "FINISHED":
        raise TrackingError(f"run {run_id} is FINISHED; nothing to resume (start a new run with `workbench run`)")
    if status == "RUNNING" and run_process(tags) is ProcessState.ALIVE:
        raise TrackingError(f"run {run_id} is still RUNNING in process {tags[PID_TAG]} on this host; stop that "
                            "process first (a resumed copy would write the same run twice)")
    text = read_text_artifact(c, run_id, CONFIG_ARTIFACT)
    if text is None:
        raise TrackingError(f"run {run_id} has no {CONFIG_ARTIFACT} artifact, so its config is unknown; "
                            "only runs started by `workbench run` can be resumed")
    cfg = validate(yaml.safe_load(text))
    if not cfg.training.checkpoint_every():
        raise TrackingError(f"run {run_id} saved no checkpoints (training.save_steps=0); start a new run, "
                            "with --set training.save_steps=N to make it resumable")
    folder = checkpoint_folder(cfg, run_id, tags.get(CHECKPOINT_TAG))
    path, step = last_checkpoint(folder)
    return ResumePoint(run_id, cfg, path, step)


def shared_resume_point(run_id: str) -> ResumePoint:
    """:func:`find_resume_point` of ``run_id`` on rank 0 (which alone writes the run's spool first), the same
    point on every rank of the launch (:func:`from_rank_zero`)."""
    found: list[ResumePoint] = []

    def find() -> dict:
        found.append(point := find_resume_point(run_id))
        return {"run_id": point.run_id, "config": to_yaml(point.config), "step": point.step,
                "checkpoint": str(point.checkpoint) if point.checkpoint is not None else None}

    shared = from_rank_zero(find, f"find where run {run_id} resumes")
    if found:
        return found[0]
    checkpoint = Path(shared["checkpoint"]) if shared["checkpoint"] else None
    return ResumePoint(shared["run_id"], validate(yaml.safe_load(shared["config"])), checkpoint, shared["step"])


def reopen_tracker(point: ResumePoint) -> MlflowTracker:
    """Reopen the run of ``point`` for writing (RUNNING again), tagged with the step it resumes from."""
    folder = point.checkpoint.parent if point.checkpoint is not None else checkpoint_dir(point.config, point.run_id)
    tracker = MlflowTracker.resume(point.run_id, flush_s=point.config.tracking.flush_s,
                                   system_metrics_s=point.config.tracking.system_metrics_interval(),
                                   run_folder=folder, finish_wait_s=point.config.tracking.finish_wait_s)
    tags = _process_tags(point.config, point.run_id)
    if point.checkpoint is not None:  # training goes on writing next to the checkpoint it resumes
        tags[CHECKPOINT_TAG] = str(point.checkpoint.parent.resolve())
    tracker.set_tags({**tags, RESUMED_TAG: str(point.step)})
    return tracker


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process as torchrun / accelerate launch set them; (0, 1) alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def launch_tracker(cfg: WorkbenchConfig, resume: ResumePoint | None = None) -> Tracker:
    """The run's tracker: rank 0 creates the MLflow run (or reopens it to resume); other ranks get a
    :class:`NullTracker` carrying its id, sent over the process group, and create nothing.

    If rank 0 fails (say the server is down), every rank raises, so none waits forever.
    """
    opened: list[Tracker] = []

    def open_run() -> dict[str, str]:
        opened.append(reopen_tracker(resume) if resume else start_tracker(cfg))
        return {"run_id": opened[0].run_id}

    shared = from_rank_zero(open_run, "open the MLflow run")
    return opened[0] if opened else NullTracker(run_id=shared["run_id"])


def from_rank_zero(compute: Callable[[], dict], what: str) -> dict:
    """``compute()`` (a JSON-able dict) run on rank 0 only, its result on every rank of the launch.

    Alone (no ``torchrun`` / ``accelerate launch``), just ``compute()``. Otherwise it first starts the
    process group (accelerate's ``PartialState``, which TRL's Trainer then reuses). If rank 0's
    ``compute`` raises, rank 0 raises that error and every other rank a TrackingError saying that rank 0
    could not ``what``, so no rank waits forever.
    """
    if process_rank()[1] == 1:
        return compute()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    result, error = None, None
    if state.is_main_process:
        try:
            result = compute()
        except Exception as err:  # noqa: BLE001  sent to the other ranks, then raised here too
            error = err
    sent = _broadcast_text(json.dumps(result) if error is None else f"\0{type(error).__name__}: {error}",
                           state.device)
    if error is not None:
        raise error
    if sent.startswith("\0"):
        raise TrackingError(f"rank 0 could not {what} ({sent[1:]})")
    return json.loads(sent)


def _broadcast_text(text: str, device) -> str:
    """``text`` of rank 0 on every rank (the others' ``text`` is not used): its length, then its UTF-8 bytes,
    as tensors (no pickling)."""
    import torch
    import torch.distributed as dist

    data = list(text.encode("utf-8"))
    length = torch.tensor([len(data)], dtype=torch.int64, device=device)  # (1,)
    dist.broadcast(length, src=0)
    buf = torch.zeros(int(length.item()), dtype=torch.uint8, device=device)  # (length,) rank 0's length
    if dist.get_rank() == 0 and data:
        buf[:] = torch.tensor(data, dtype=torch.uint8)
    dist.broadcast(buf, src=0)
    return bytes(buf.cpu().tolist()).decode("utf-8")

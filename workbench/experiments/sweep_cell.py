"""One sweep cell trained by every process of a launch: ``accelerate launch -m workbench.cli sweep ... --cell K``.

Rank 0 does what ``workbench sweep --cell K`` does in one process (:func:`workbench.experiments.sweep.run_cells`, from the parts in :mod:`workbench.experiments.cell`):
it finds the experiment's parent run, decides from the cell's earlier runs whether to skip the cell
(FINISHED), leave it (RUNNING in a live process), resume its killed run from the last checkpoint or
start a new run, and opens that run. It sends the decision, the run's id, its config and the
checkpoint to the other ranks (:func:`workbench.run.launch.from_rank_zero`). Every rank then trains
the cell; rank 0 records it, the others hold a :class:`~workbench.tracking.NullTracker` with the
run's id, so every rank writes its checkpoint files into the same run folder. Run again after a
kill, the launch resumes the cell in the same run, as a one-process cell would.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from analysis.records import HASH_TAG, PARENT_TAG, SWEEP_KIND
from workbench.config import WorkbenchConfig, to_yaml, validate
from workbench.run.launch import from_rank_zero, process_rank, reopen_tracker, start_tracker
from workbench.experiments.cell import CellResult, TrainFn, _decide, _default_train, check_cell, config_hash
from workbench.experiments.cell import previous_runs, resume_or_restart
from workbench.tracking import NullTracker, Tracker, client, closing_run, experiment_id, parent_run


def run_cell_across(configs: Sequence[WorkbenchConfig], k: int, experiment: str, *, train_fn: TrainFn | None = None,
                    rerun_running: bool = False, console=None, tags: dict[str, str] | None = None,
                    kind: str = SWEEP_KIND) -> list[CellResult]:
    """Train cell ``k`` of ``configs`` on every process of this launch, recorded by rank 0; its result."""
    from rich.console import Console

    console = console or Console(stderr=True)
    train_fn = train_fn or _default_train
    cfg = configs[check_cell(k, len(configs))]
    digest, tags = config_hash(cfg), dict(tags or {})
    label = f"cell {k} ({cfg.method} seed {cfg.seed}{''.join(f', {v}' for v in tags.values())})"
    main = process_rank()[0] == 0
    opened: list[Tracker] = []
    with contextlib.ExitStack() as stack:

        def decide() -> dict:
            c = client()
            exp_id = experiment_id(c, experiment)
            parent_id = stack.enter_context(parent_run(c, exp_id, kind, experiment))
            action, run_id = _decide(c, previous_runs(c, exp_id, cfg, digest, tags), rerun_running)
            if action in ("skip", "running"):
                return {"action": action, "run_id": run_id}
            point = resume_or_restart(action, run_id, console.print, label)
            if point is not None:
                opened.append(reopen_tracker(point))
                return {"action": "resume", "run_id": point.run_id, "config": to_yaml(point.config),
                        "checkpoint": str(point.checkpoint) if point.checkpoint is not None else None,
                        "step": point.step}
            tracker = start_tracker(cfg)
            tracker.set_tags({HASH_TAG: digest, PARENT_TAG: parent_id, **tags})
            opened.append(tracker)
            return {"action": "run", "run_id": tracker.run_id}

        shared = from_rank_zero(decide, f"open the MLflow run of {label}")
        action, run_id = shared["action"], shared["run_id"]
        if action == "skip":
            if main:
                console.print(f"[dim]{label}: already finished (run {run_id}), skipped[/dim]")
            return [CellResult(cfg.method, cfg.seed, "skipped", run_id, digest)]
        if action == "running":
            if main:
                console.print(f"[yellow]{label}: run {run_id} is still RUNNING in another live process or on "
                              "another host; left alone (--rerun-running to rerun it)[/yellow]")
            return [CellResult(cfg.method, cfg.seed, "running", run_id, digest)]
        tracker = opened[0] if opened else NullTracker(run_id=run_id)
        kwargs = {}
        run_cfg = cfg
        if action == "resume":
            run_cfg = validate(yaml.safe_load(shared["config"]))
            kwargs["resume_from_checkpoint"] = Path(shared["checkpoint"]) if shared["checkpoint"] else None
            if main:
                console.rule(f"[bold]{label}, resuming run {run_id} from step {shared['step']}, "
                             f"{process_rank()[1]} processes[/bold]")
        elif main:
            console.rule(f"[bold]{label}, {process_rank()[1]} processes[/bold]")
        t0 = time.perf_counter()
        with closing_run(tracker):
            train_fn(run_cfg, tracker, **kwargs)
        seconds = time.perf_counter() - t0
    if main:
        console.print(f"[green]{label}: finished in {seconds:.0f} s (run {run_id})[/green]")
    return [CellResult(cfg.method, cfg.seed, "resumed" if action == "resume" else "finished", run_id, digest,
                       seconds)]

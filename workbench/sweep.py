"""``workbench sweep``: the method x seed grid in one MLflow experiment, resumable.

Each cell (method, seed) is one MLflow run, trained in this process one after
the other. A cell is identified by its tags ``method``, ``seed`` and
``config_hash`` (a hash of the cell's resolved config, :func:`config_hash`), so
running the same sweep again:

- skips a cell whose run FINISHED,
- reruns (as a new run) a cell whose run FAILED or was KILLED, or that is still
  marked RUNNING although its process on this host is gone (that run is then
  marked KILLED),
- leaves alone a cell RUNNING in a live process or on another host, unless
  ``rerun_running`` is set.

Changing any config value (``--set``, ``--steps``, the YAML) changes the hash,
so those cells run again rather than being mixed with runs of another config.

Cells run in-process rather than in a subprocess each: torch, TRL and the
cached model load once (several seconds a cell on CPU), and the tracker
lifecycle stays in one place. A failing cell is recorded as FAILED and the
sweep goes on with the next; a crash of the whole process is what resumability
is for. ``train_fn`` is the training function (``workbench.train.train`` by
default); tests inject a cheap one.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from workbench.config import ConfigError, WorkbenchConfig, build_config
from workbench.tracking import HOST_TAG, PID_TAG, Tracker, client, closing_run, experiment_id

TrainFn = Callable[[WorkbenchConfig, Tracker], Any]
HASH_TAG = "config_hash"
CELL_KEYS = ("method", "seed")


@dataclass(frozen=True)
class CellResult:
    method: str
    seed: int
    status: str  # "finished" (ran now), "skipped" (finished before), "failed", "running" (left alone)
    run_id: str | None
    config_hash: str
    seconds: float = 0.0
    error: str | None = None


def config_hash(cfg: WorkbenchConfig) -> str:
    """Hash of everything that determines a run's result: the resolved config less its ``tracking`` section."""
    data = cfg.model_dump(mode="json", exclude={"tracking"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{what} {text!r} names nothing; give a comma-separated list, e.g. --{what} a,b")
    dupes = sorted({t for t in items if items.count(t) > 1})
    if dupes:
        raise ConfigError(f"--{what} lists {', '.join(dupes)} more than once")
    return items


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for item in parse_list(text, "seeds"):
        if not item.isdigit():
            raise ConfigError(f"--seeds {text!r}: {item!r} is not a non-negative integer; e.g. --seeds 0,1,2")
        seeds.append(int(item))
    return seeds


def cell_configs(methods: Sequence[str], seeds: Sequence[int], base_layers: list[dict[str, Any]],
                 overrides: Sequence[str], experiment: str) -> list[WorkbenchConfig]:
    """The validated config of every cell, in run order (method-major); raises before anything runs."""
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key in CELL_KEYS:
            raise ConfigError(f"--set {text!r}: a sweep sets {key} per cell; use --methods / --seeds instead")
    configs = []
    for method in methods:
        for seed in seeds:
            cell = {"method": method, "seed": seed, "tracking": {"experiment": experiment, "run_name": None}}
            configs.append(build_config([*base_layers, cell], list(overrides)))
    return configs


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_dead(run) -> bool:
    """A RUNNING run whose process on this host is gone (a crash or a kill -9)."""
    tags = run.data.tags
    if tags.get(HOST_TAG) != socket.gethostname():
        return False
    pid = tags.get(PID_TAG, "")
    return pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid)))


def previous_runs(mlflow_client, exp_id: str, cfg: WorkbenchConfig, digest: str) -> list:
    """Runs of this cell (same method, seed and config hash), newest first."""
    query = (f"tags.method = '{cfg.method}' and tags.seed = '{cfg.seed}' and tags.{HASH_TAG} = '{digest}'")
    return mlflow_client.search_runs([exp_id], filter_string=query, order_by=["attributes.start_time DESC"],
                                     max_results=100)


def _decide(mlflow_client, runs: list, rerun_running: bool) -> tuple[str, str | None]:
    """("skip", run_id) | ("running", run_id) | ("run", None); marks dead RUNNING runs KILLED."""
    for run in runs:
        if run.info.status == "FINISHED":
            return "skip", run.info.run_id
    for run in runs:
        if run.info.status in ("RUNNING", "SCHEDULED"):
            if _is_dead(run) or rerun_running:
                mlflow_client.set_terminated(run.info.run_id, status="KILLED")
            else:
                return "running", run.info.run_id
    return "run", None


def _default_train(cfg: WorkbenchConfig, tracker: Tracker) -> None:
    """``workbench.train.train``, then the model and trainer freed before the next cell loads its own."""
    from workbench.train import train

    try:
        train(cfg, tracker)
    finally:
        _free_memory()


def run_one(cfg: WorkbenchConfig, digest: str, train_fn: TrainFn) -> str:
    """Start the cell's run, train, and close the run as FINISHED, FAILED or KILLED; return its id."""
    from workbench.train import start_tracker

    tracker = start_tracker(cfg)
    tracker.set_tags({HASH_TAG: digest, HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())})
    with closing_run(tracker):
        train_fn(cfg, tracker)
    return tracker.run_id


def _free_memory() -> None:
    import torch

    gc.collect()  # the trainer holds the model in reference cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sweep(methods: Sequence[str], seeds: Sequence[int], base_layers: list[dict[str, Any]],
          overrides: Sequence[str], experiment: str, *, train_fn: TrainFn | None = None,
          rerun_running: bool = False, console=None) -> list[CellResult]:
    """Run every (method, seed) cell not yet FINISHED under the same config; one result per cell.

    ``base_layers`` are config layers (later wins) under each cell's ``method``,
    ``seed`` and ``tracking.experiment``; ``overrides`` (``key=value``) apply
    last but may not set ``method`` or ``seed``. Every cell's config is
    validated before the first one runs. Runs go to
    :func:`workbench.tracking.tracking_uri` (``MLFLOW_TRACKING_URI``).
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    train_fn = train_fn or _default_train
    configs = cell_configs(methods, seeds, base_layers, overrides, experiment)
    mlflow_client = client()
    exp_id = experiment_id(mlflow_client, experiment)
    total = len(configs)
    results: list[CellResult] = []
    t_start = time.perf_counter()
    ran_seconds: list[float] = []
    for index, cfg in enumerate(configs, start=1):
        digest = config_hash(cfg)
        label = f"{cfg.method} seed {cfg.seed}"
        action, run_id = _decide(mlflow_client, previous_runs(mlflow_client, exp_id, cfg, digest), rerun_running)
        if action == "skip":
            console.print(f"[dim][{index}/{total}] {label}: already finished (run {run_id}), skipped[/dim]")
            results.append(CellResult(cfg.method, cfg.seed, "skipped", run_id, digest))
            continue
        if action == "running":
            console.print(f"[yellow][{index}/{total}] {label}: run {run_id} is still RUNNING in another live "
                          "process or on another host; left alone (--rerun-running to rerun it)[/yellow]")
            results.append(CellResult(cfg.method, cfg.seed, "running", run_id, digest))
            continue
        console.rule(f"[bold]cell {index}/{total}: {label}[/bold]  {_eta(configs[index - 1:], ran_seconds)}")
        t0 = time.perf_counter()
        try:
            run_id = run_one(cfg, digest, train_fn)
        except Exception as err:  # noqa: BLE001  a failed cell is recorded and the sweep goes on
            seconds = time.perf_counter() - t0
            console.print(f"[red][{index}/{total}] {label}: FAILED after {seconds:.0f} s: "
                          f"{type(err).__name__}: {err}[/red]")
            console.print(f"[dim]{traceback.format_exc(limit=3)}[/dim]", highlight=False)
            error = f"{type(err).__name__}: {err}"
            results.append(CellResult(cfg.method, cfg.seed, "failed", None, digest, seconds, error))
        else:
            seconds = time.perf_counter() - t0
            ran_seconds.append(seconds)
            console.print(f"[green][{index}/{total}] {label}: finished in {seconds:.0f} s (run {run_id})[/green]")
            results.append(CellResult(cfg.method, cfg.seed, "finished", run_id, digest, seconds))
        done = sum(r.status in ("finished", "skipped") for r in results)
        console.print(f"sweep progress: {done}/{total} cells done, {len(results)}/{total} visited, "
                      f"{time.perf_counter() - t_start:.0f} s elapsed")
    return results


def _eta(remaining: Sequence[WorkbenchConfig], ran_seconds: list[float]) -> str:
    if not ran_seconds:
        return ""
    per_cell = sum(ran_seconds) / len(ran_seconds)
    return f"(about {per_cell * len(remaining):.0f} s left)"


def summary_table(results: Sequence[CellResult], experiment: str):
    from rich.table import Table

    table = Table(title=f"sweep in experiment {experiment!r}")
    for col in ("method", "seed", "status", "run_id", "seconds"):
        table.add_column(col)
    style = {"failed": "red", "running": "yellow", "skipped": "dim", "finished": "green"}
    for r in results:
        table.add_row(r.method, str(r.seed), f"[{style[r.status]}]{r.status}[/]", r.run_id or "",
                      f"{r.seconds:.0f}" if r.seconds else "")
    return table


# --------------------------------------------------------------------------- CLI


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sweep", help="train a method x seed grid in one experiment (resumable)")
    p.add_argument("--methods", required=True, help="comma-separated methods, e.g. grpo,entropy,evol_rl,g2rl")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    p.add_argument("--preset", help="model preset: tiny (default), smollm2-135m, qwen3-1.7b-base, qwen3-4b-base")
    p.add_argument("--model", help="a Hugging Face id or local model folder (sets preset 'path')")
    p.add_argument("--task", help="training task: arithmetic (default), math, gsm8k, gpqa")
    p.add_argument("--data", help="training data file for file tasks (json, jsonl or parquet)")
    p.add_argument("--steps", type=int, help="optimizer steps of every cell")
    p.add_argument("--experiment", help="MLflow experiment of the whole grid (default: the config's, 'workbench')")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML config file shared by every cell")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config field in every cell, e.g. --set training.learning_rate=1e-5 (repeatable)")
    p.add_argument("--rerun-running", action="store_true",
                   help="also rerun cells whose run is still marked RUNNING by another process or host")
    p.set_defaults(func=cmd_sweep)
    return p


def config_layers(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The config layers of ``workbench.cli.config_from_args`` (YAML file < flags), without ``--set``.

    ``config_from_args(args, extra) == build_config([*config_layers(args), extra], args.overrides)``
    (a test holds the two to that). Flags a parser lacks count as unset.
    """
    from workbench.config import load_yaml

    get = lambda name: getattr(args, name, None)  # noqa: E731
    flags: dict[str, Any] = {}
    for key, name in (("method", "method"), ("seed", "seed")):
        if get(name) is not None:
            flags[key] = get(name)
    for section, key, name in (("model", "preset", "preset"), ("task", "name", "task"), ("task", "path", "data"),
                               ("training", "steps", "steps"), ("tracking", "experiment", "experiment")):
        if get(name) is not None:
            flags.setdefault(section, {})[key] = get(name)
    if get("model"):
        flags.setdefault("model", {}).update(preset="path", name_or_path=get("model"))
    return [load_yaml(args.config) if get("config") else {}, flags]


def cmd_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console

    from workbench.tracking import tracking_uri

    methods = parse_list(args.methods, "methods")
    seeds = parse_seeds(args.seeds)
    layers = config_layers(args)
    experiment = args.experiment or build_config(layers, args.overrides).tracking.experiment
    cell_configs(methods, seeds, layers, args.overrides, experiment)  # every name and value checked first
    console = Console(stderr=True)
    console.print(f"Sweep: {len(methods)} methods x {len(seeds)} seeds = {len(methods) * len(seeds)} cells "
                  f"in experiment {experiment!r} at {tracking_uri()}")
    results = sweep(methods, seeds, layers, args.overrides, experiment, console=console,
                    rerun_running=args.rerun_running)
    Console().print(summary_table(results, experiment))
    failed = [r for r in results if r.status == "failed"]
    print(f"\nTable of results: workbench report --experiment {experiment}")
    if failed:
        print(f"{len(failed)} cell(s) failed; run the same command again to rerun only those.")
        return 1
    return 0

"""``workbench sweep``: the method x seed grid in one MLflow experiment, resumable.

Each cell (method, seed) is one MLflow run. ``workbench sweep`` trains the cells
in this process one after the other; ``--list`` prints one command per cell and
``--cell K`` runs cell K alone, so a scheduler (a SLURM array, Kubernetes jobs)
can run the cells in parallel on several machines, all into the same experiment.
Cells are numbered from 0 in method-major order. A cell is identified by its tags
``method``, ``seed`` and ``config_hash`` (a hash of the cell's resolved config,
:func:`config_hash`), so running the same sweep (or cell) again:

- skips a cell whose run FINISHED,
- resumes a cell whose run was KILLED, or is still marked RUNNING although its
  process on this host is gone (:func:`workbench.run.launch.run_process` says DEAD;
  that run is then marked KILLED): the same run continues from its last
  checkpoint, by the machinery of ``workbench run --resume``
  (:func:`workbench.run.launch.find_resume_point`), or from step 0 if it
  saved none yet; a killed run that cannot resume (no ``config.yaml``, or
  ``training.save_steps=0``) is rerun as a new run,
- reruns (as a new run) a cell whose run FAILED,
- leaves alone a cell RUNNING in a live process, on another host, or without a
  usable pid tag (``run_process`` says ALIVE or UNKNOWN), unless
  ``rerun_running`` is set; then that run counts as killed (for a scheduler that
  runs each cell once at a time, where a requeued job may land on another host).

Cells checkpoint as every run does, every tenth of the run, keeping the newest two
(:meth:`workbench.config.TrainingConfig.checkpoint_every`); ``training.save_steps`` and
``training.keep_checkpoints`` in the sweep's config (YAML or ``--set``) set
another cadence, ``save_steps=0`` none. Changing any other config value
(``--set``, ``--steps``, the YAML) changes the hash, so those cells run again
rather than being mixed with runs of another config.

In MLflow the cells hang under one parent run of the experiment (tag
``workbench.kind=sweep``, named after the experiment; tag ``mlflow.parentRunId``
on each cell), which the MLflow UI draws as a group. Running the sweep again,
or another cell of it, finds that parent by its tag instead of making a second
one; :func:`analysis.loaders.runs_table` leaves it out, as it is no cell.

Under ``torchrun`` / ``accelerate launch``, ``--cell K`` trains that one cell across the launch's
processes, rank 0 recording it (:mod:`workbench.experiments.sweep_cell`); a whole sweep there is refused.

Cells run in-process rather than in a subprocess each: torch, TRL and the
cached model load once (several seconds a cell on CPU), and the tracker
lifecycle stays in one place. A failing cell is recorded as FAILED and the
sweep goes on with the next; a crash of the whole process is what resumability
is for. ``train_fn`` is the training function (``workbench.run.train.train`` by
default); tests inject a cheap one.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from collections.abc import Sequence
from typing import Any

from workbench.experiments.cell import (
    CELL_KEYS,
    CellResult,
    TrainFn,
    _decide,
    _default_train,
    check_cell,
    config_hash,
    previous_runs,
    resume_or_restart,
    run_one,
)
from workbench.config import ConfigError, WorkbenchConfig, build_config
from analysis.records import DEFAULT_EXPERIMENT, SWEEP_KIND
from workbench.help_text import benchmark_help, methods_help, preset_help, task_help
from workbench.tracking import client, experiment_id, parent_run


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
    """The validated config of every cell, in cell order (method-major); raises before anything runs."""
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key in CELL_KEYS:
            raise ConfigError(f"--set {text!r}: a sweep sets {key} per cell; use --methods / --seeds instead")
    configs = []
    for method in methods:
        for seed in seeds:
            layers = [*base_layers, {"method": method, "seed": seed,
                                     "tracking": {"experiment": experiment, "run_name": None}}]
            configs.append(build_config(layers, list(overrides)))
    return configs


def sweep(methods: Sequence[str], seeds: Sequence[int], base_layers: list[dict[str, Any]],
          overrides: Sequence[str], experiment: str, *, train_fn: TrainFn | None = None,
          rerun_running: bool = False, cells: Sequence[int] | None = None, console=None) -> list[CellResult]:
    """Run every (method, seed) cell not yet FINISHED under the same config; one result per cell.

    ``base_layers`` are config layers (later wins) under each cell's ``method``,
    ``seed`` and ``tracking.experiment``; ``overrides`` (``key=value``) apply
    last but may not set ``method`` or ``seed``. ``cells``: the numbers of the
    cells to visit (default all; see :func:`check_cell`). Every cell's config is
    validated before the first one runs. Runs go to
    :func:`workbench.tracking.tracking_uri` (``MLFLOW_TRACKING_URI``).
    """
    configs = cell_configs(methods, seeds, base_layers, overrides, experiment)
    return run_cells(configs, experiment, train_fn=train_fn, rerun_running=rerun_running, cells=cells,
                     console=console)


def run_cells(configs: Sequence[WorkbenchConfig], experiment: str, *, train_fn: TrainFn | None = None,
              rerun_running: bool = False, cells: Sequence[int] | None = None, console=None,
              tags: Sequence[dict[str, str]] | None = None, kind: str = SWEEP_KIND) -> list[CellResult]:
    """Run every cell of ``configs`` (validated configs, in cell order) not yet FINISHED; one result per
    visited cell. ``tags[k]``: extra tags of cell k's run, which also identify it (with method, seed and
    config hash); :func:`sweep` gives none, ``workbench study`` the arm's name.

    The cells started here are nested (tag ``mlflow.parentRunId``) under the experiment's parent run of
    ``kind`` (``sweep``; ``study`` for ``workbench study``), named after the experiment: the one found by
    its tag ``workbench.kind``, else a new one (:func:`workbench.tracking.parent_run`). Resumed cells keep
    the parent they have; skipped ones are left as they are."""
    from rich.console import Console

    console = console or Console(stderr=True)
    train_fn = train_fn or _default_train
    tags = list(tags) if tags is not None else [{} for _ in configs]
    chosen = list(range(len(configs))) if cells is None else [check_cell(k, len(configs)) for k in cells]
    mlflow_client = client()
    exp_id = experiment_id(mlflow_client, experiment)
    total = len(chosen)
    results: list[CellResult] = []
    t_start = time.perf_counter()
    ran_seconds: list[float] = []
    with parent_run(mlflow_client, exp_id, kind, experiment) as parent_id:
        for index, k in enumerate(chosen, start=1):
            cfg = configs[k]
            digest = config_hash(cfg)
            label = f"cell {k} ({cfg.method} seed {cfg.seed}{''.join(f', {v}' for v in tags[k].values())})"
            action, run_id = _decide(mlflow_client, previous_runs(mlflow_client, exp_id, cfg, digest, tags[k]),
                                     rerun_running)
            if action == "skip":
                console.print(f"[dim][{index}/{total}] {label}: already finished (run {run_id}), skipped[/dim]")
                results.append(CellResult(cfg.method, cfg.seed, "skipped", run_id, digest))
                continue
            if action == "running":
                console.print(f"[yellow][{index}/{total}] {label}: run {run_id} is still RUNNING in another live "
                              "process or on another host; left alone (--rerun-running to rerun it)[/yellow]")
                results.append(CellResult(cfg.method, cfg.seed, "running", run_id, digest))
                continue
            point = resume_or_restart(action, run_id, console.print, f"[{index}/{total}] {label}")
            where = f", resuming run {point.run_id} from step {point.step}" if point else ""
            console.rule(f"[bold]{label}{where}[/bold]  {_eta(total - index + 1, ran_seconds)}")
            t0 = time.perf_counter()
            try:
                run_id = run_one(cfg, digest, train_fn, parent_id, point, tags[k])
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
                results.append(CellResult(cfg.method, cfg.seed, "resumed" if point else "finished", run_id, digest,
                                          seconds))
            done = sum(r.status in ("finished", "resumed", "skipped") for r in results)
            console.print(f"sweep progress: {done}/{total} cells done, {len(results)}/{total} visited, "
                          f"{time.perf_counter() - t_start:.0f} s elapsed")
    return results


def _eta(remaining: int, ran_seconds: list[float]) -> str:
    if not ran_seconds:
        return ""
    per_cell = sum(ran_seconds) / len(ran_seconds)
    return f"(about {per_cell * remaining:.0f} s left)"


def summary_table(results: Sequence[CellResult], experiment: str):
    from rich.table import Table

    table = Table(title=f"sweep in experiment {experiment!r}")
    for col in ("method", "seed", "status", "run_id", "seconds"):
        table.add_column(col)
    style = {"failed": "red", "running": "yellow", "skipped": "dim", "finished": "green", "resumed": "green"}
    for r in results:
        table.add_row(r.method, str(r.seed), f"[{style[r.status]}]{r.status}[/]", r.run_id or "",
                      f"{r.seconds:.0f}" if r.seconds else "")
    return table


# --------------------------------------------------------------------------- CLI


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sweep", help="train a method x seed grid in one experiment (resumable)")
    p.add_argument("--methods", required=True, help=methods_help())
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    p.add_argument("--preset", help=preset_help())
    p.add_argument("--model", help="a Hugging Face id or local model folder (sets preset 'path')")
    p.add_argument("--task", help=task_help())
    p.add_argument("--data", help="training data file for file tasks (json, jsonl or parquet)")
    p.add_argument("--steps", type=int, help="optimizer steps of every cell")
    p.add_argument("--experiment", help=f"MLflow experiment of the whole grid (default: the config's, {DEFAULT_EXPERIMENT!r})")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML config file shared by every cell")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config field in every cell, e.g. --set training.learning_rate=1e-5 (repeatable)")
    p.add_argument("--rerun-running", action="store_true",
                   help="treat cells whose run is still marked RUNNING by another process or host as killed, and "
                        "resume them (for a scheduler that runs each cell once at a time)")
    p.add_argument("--list", action="store_true",
                   help="print the command of every cell, one a line, and run nothing (for a scheduler)")
    p.add_argument("--json", action="store_true", help="with --list: print the cells as JSON")
    p.add_argument("--cell", type=int, metavar="K",
                   help="run cell K only (0 to cells - 1, in the order --list prints), "
                        "e.g. --cell $SLURM_ARRAY_TASK_ID")
    p.add_argument("--probe", metavar="BENCH",
                   help=f"then probe each finished cell's final checkpoint on BENCH: {benchmark_help()} "
                        "(`workbench probe` with its defaults: 8 samples, every problem); cells probed before "
                        "are skipped")
    p.add_argument("--probe-data-dir", metavar="DIR", help="folder holding the --probe benchmark's file")
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


def cell_command(args: argparse.Namespace, experiment: str, k: int) -> list[str]:
    """The argv of ``workbench sweep ... --cell k``: the grid arguments of ``args``, the experiment resolved."""
    argv = ["workbench", "sweep", "--methods", ",".join(parse_list(args.methods, "methods")),
            "--seeds", ",".join(str(s) for s in parse_seeds(args.seeds))]
    for name in ("preset", "model", "task", "data", "steps", "config"):
        if getattr(args, name) is not None:
            argv += [f"--{name}", str(getattr(args, name))]
    argv += ["--experiment", experiment]
    for text in args.overrides:
        argv += ["--set", text]
    if args.rerun_running:
        argv.append("--rerun-running")
    if getattr(args, "probe", None):
        argv += ["--probe", args.probe] + (["--probe-data-dir", args.probe_data_dir] if args.probe_data_dir else [])
    return [*argv, "--cell", str(k)]


def print_cells(args: argparse.Namespace, configs: Sequence[WorkbenchConfig], experiment: str,
                as_json: bool) -> None:
    import shlex

    commands = [cell_command(args, experiment, k) for k in range(len(configs))]
    if not as_json:
        print("\n".join(shlex.join(argv) for argv in commands))
        return
    cells = [{"cell": k, "method": cfg.method, "seed": cfg.seed, "config_hash": config_hash(cfg),
              "experiment": experiment, "argv": argv, "command": shlex.join(argv)}
             for k, (cfg, argv) in enumerate(zip(configs, commands, strict=True))]
    print(json.dumps(cells, indent=2))


def cmd_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console

    from workbench.signals import sigterm_as_interrupt
    from workbench.tracking import tracking_uri

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not args.list and args.cell is None:
        raise ConfigError(f"this is one of {world} processes (torchrun / accelerate launch), which train one cell "
                          "together: add --cell K (the cells of a whole sweep run one after the other, each "
                          "launched on its own: `workbench sweep ... --list` prints their commands)")
    if world > 1 and args.probe:
        raise ConfigError(f"--probe {args.probe} samples on one process, and this is one of {world}; drop --probe "
                          "and probe the finished cell afterwards with `workbench probe RUN_ID`")
    methods = parse_list(args.methods, "methods")
    seeds = parse_seeds(args.seeds)
    layers = config_layers(args)
    experiment = args.experiment or build_config(layers, args.overrides).tracking.experiment
    configs = cell_configs(methods, seeds, layers, args.overrides, experiment)  # every name and value checked first
    if args.probe_data_dir and not args.probe:
        raise ConfigError(f"--probe-data-dir {args.probe_data_dir} is where the --probe benchmark's file is; "
                          "add --probe BENCH, or drop it")
    if args.probe:
        from workbench.experiments.probe import load_problems, ProbeSource

        check = ProbeSource("", 0, configs[0], "", configs[0].model.preset)
        load_problems(check, args.probe, args.probe_data_dir, 1)  # a bad benchmark or file fails before training
    if args.json and not args.list:
        raise ConfigError("--json only changes what --list prints; add --list, or drop --json")
    if args.list:
        if args.cell is not None:
            raise ConfigError(f"--list prints every cell, --cell {args.cell} runs one; give one of the two")
        print_cells(args, configs, experiment, args.json)
        return 0
    cells = None if args.cell is None else [check_cell(args.cell, len(configs))]
    console = Console(stderr=True)
    what = f"cell {args.cell} of " if cells else ""
    if os.environ.get("RANK", "0") == "0":
        console.print(f"Sweep: {what}{len(methods)} methods x {len(seeds)} seeds = {len(configs)} cells "
                      f"in experiment {experiment!r} at {tracking_uri()}")
    with sigterm_as_interrupt():  # a scheduler's stop marks the cell's run KILLED, resumable
        if world > 1:
            from workbench.experiments.sweep_cell import run_cell_across

            results = run_cell_across(configs, args.cell, experiment, console=console,
                                      rerun_running=args.rerun_running)
            if os.environ.get("RANK", "0") != "0":
                return 0  # rank 0 reports
        else:
            results = sweep(methods, seeds, layers, args.overrides, experiment, console=console,
                            rerun_running=args.rerun_running, cells=cells)
    Console().print(summary_table(results, experiment))
    failed = [r for r in results if r.status == "failed"]
    probes_failed = []
    if args.probe:
        from workbench.experiments.probe import probe_runs

        done = [r.run_id for r in results if r.status in ("finished", "resumed", "skipped") and r.run_id]
        probed = probe_runs(done, args.probe, data_dir=args.probe_data_dir, console=console)
        probes_failed = [p for p in probed if p[1] == "failed"]
    print(f"\nTable of results: workbench report --experiment {experiment}")
    if failed or probes_failed:
        print(f"{len(failed)} cell(s) and {len(probes_failed)} probe(s) failed; run the same command again to rerun "
              "only those.")
        return 1
    return 0

"""The ``workbench`` command line: ``main(argv) -> int`` so tests call it directly."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from analysis.records import DEFAULT_EXPERIMENT
from workbench.config import ConfigError, WorkbenchConfig, build_config, load_yaml
from workbench.experiments.eval_cmd import add_eval_parser
from workbench.help_text import method_help, preset_help, task_help
from workbench.experiments.probe import add_probe_parser
from workbench.experiments.report import add_report_parser
from workbench.experiments.study import add_study_parser
from workbench.experiments.sweep import add_sweep_parser
from workbench.tracking.sync import add_sync_parser
from trainers.registry import UnknownNameError
from workbench.signals import sigterm_as_interrupt
from workbench.tracking.spool import SpoolError
from workbench.tracking import TrackingError, closing_run, tracking_uri

USER_ERRORS = (ConfigError, UnknownNameError, TrackingError, SpoolError, FileNotFoundError)


def add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", help=method_help())
    p.add_argument("--preset", help=preset_help())
    p.add_argument("--model", help="a Hugging Face id or local model folder (sets preset 'path')")
    p.add_argument("--task", help=task_help())
    p.add_argument("--data", help="training data file for file tasks (json, jsonl or parquet)")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--seed", type=int, help="run seed")
    p.add_argument("--experiment", help=f"MLflow experiment name (default {DEFAULT_EXPERIMENT!r})")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML config file (sections as in `workbench config`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any config field, e.g. --set training.learning_rate=1e-5 (repeatable)")


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> WorkbenchConfig:
    """Layers, later wins: preset defaults < YAML file < flags < --set overrides."""
    file_layer = load_yaml(args.config) if args.config else {}
    flags: dict[str, Any] = {}
    put = lambda section, key, value: value is not None and flags.setdefault(section, {}).__setitem__(key, value)  # noqa: E731
    if args.method is not None:
        flags["method"] = args.method
    if args.seed is not None:
        flags["seed"] = args.seed
    put("model", "preset", args.preset)
    if args.model:
        flags.setdefault("model", {}).update(preset="path", name_or_path=args.model)
    put("task", "name", args.task)
    put("task", "path", args.data)
    put("training", "steps", args.steps)
    put("tracking", "experiment", args.experiment)
    return build_config([file_layer, flags, extra or {}], args.overrides)


def cmd_run(args: argparse.Namespace) -> int:
    """Check everything (config, data files, tracking server), then open the run, then train.

    Under ``torchrun`` / ``accelerate launch`` every rank runs this and checks
    the same input the same way; only rank 0 records (see ``launch_tracker``).
    """
    from workbench.run.launch import launch_tracker, process_rank, shared_resume_point
    from workbench.run.train import load_inputs, train

    point = None
    if args.resume:
        _refuse_config_flags(args)
        point = shared_resume_point(args.resume)
        cfg = point.config
    else:
        cfg = config_from_args(args)
    inputs = load_inputs(cfg)  # a missing or malformed data file stops here, before any run exists
    tracker = launch_tracker(cfg, point)
    if point is not None and process_rank()[0] == 0:
        where = f"checkpoint {point.checkpoint}" if point.checkpoint else "step 0 (no checkpoint was saved yet)"
        print(f"Resuming run {point.run_id} from {where}.", file=sys.stderr)
    with sigterm_as_interrupt(), closing_run(tracker):
        train(cfg, tracker, inputs=inputs, resume_from_checkpoint=point.checkpoint if point else None)
    if process_rank()[0] == 0:
        _print_where(cfg, tracker.run_id, getattr(tracker, "left_in_spool", 0))
    return 0


def _print_where(cfg: WorkbenchConfig, run_id: str | None, left_in_spool: int = 0) -> None:
    uri = tracking_uri()
    print(f"\nRun {run_id} ({cfg.method}, seed {cfg.seed}) finished in experiment {cfg.tracking.experiment!r}.")
    if run_id and not left_in_spool:
        for line in _headline(run_id, uri):
            print(f"  held out       : {line}")
    if left_in_spool:
        print(f"  not yet stored : {left_in_spool} records in its spool; `workbench sync {run_id}` writes them")
    print(f"  tracking store : {uri}")
    print(f"  list runs      : workbench runs --experiment {cfg.tracking.experiment}")
    print(f"  browse metrics : mlflow ui --backend-store-uri {uri}")
    print("  compare runs   : streamlit run app/main.py")


def _headline(run_id: str, uri: str) -> list[str]:
    """The run's held-out start -> end (workbench.run.headline); nothing if the store cannot answer now."""
    from workbench.run.headline import run_headline

    try:
        return run_headline(run_id, uri)
    except Exception as exc:  # the run is recorded; a store that went away must not fail the command now
        print(f"  (held-out headline not read back: {exc})", file=sys.stderr)
        return []


RUN_CONFIG_FLAGS = ("method", "preset", "model", "task", "data", "steps", "seed", "experiment", "config")


def _refuse_config_flags(args: argparse.Namespace) -> None:
    given = [f"--{name}" for name in RUN_CONFIG_FLAGS if getattr(args, name) is not None]
    given += ["--set"] if args.overrides else []
    if given:
        raise ConfigError(f"--resume continues a run with its own recorded config; drop {', '.join(given)} "
                          "(or start a new run without --resume)")


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from analysis.loaders import runs_table

    frame = runs_table(args.experiment, tracking_uri())
    if frame.empty:
        print(f"No runs in experiment {args.experiment!r} at {tracking_uri()}; start one with `workbench run`.")
        return 0
    table = Table(title=f"runs of {args.experiment!r}")
    for col in ("run_id", "method", "seed", "status", "last_step", "final_reward"):
        table.add_column(col)
    for row in frame.itertuples():
        reward = "" if row.final_reward != row.final_reward else f"{row.final_reward:.3f}"
        table.add_row(row.run_id[:12], row.method, str(row.seed), row.status, str(row.last_step), reward)
    Console().print(table)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from workbench.config import to_yaml

    print(to_yaml(config_from_args(args)), end="")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description="Train and compare exploration methods for LLM RL.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train one method and record it in MLflow")
    add_config_flags(run)
    run.add_argument("--resume", metavar="RUN_ID",
                     help="continue a stopped run (same MLflow run, same config) from its last checkpoint; "
                          "needs a checkpoint of that run (every run saves them unless training.save_steps=0)")
    run.set_defaults(func=cmd_run)
    cfg = sub.add_parser("config", help="print the resolved config of a run as YAML (nothing runs)")
    add_config_flags(cfg)
    cfg.set_defaults(func=cmd_config)
    runs = sub.add_parser("runs", help="list the runs of an experiment")
    runs.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment name")
    runs.set_defaults(func=cmd_runs)
    add_sweep_parser(sub)
    add_study_parser(sub)
    add_eval_parser(sub)
    add_probe_parser(sub)
    add_report_parser(sub)
    add_sync_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"workbench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

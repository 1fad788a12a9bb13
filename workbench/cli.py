"""The ``workbench`` command line: ``main(argv) -> int`` so tests call it directly."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from workbench.config import ConfigError, WorkbenchConfig, build_config, load_yaml
from workbench.eval_cmd import add_eval_parser
from workbench.report import add_report_parser
from workbench.sweep import add_sweep_parser
from workbench.registry import UnknownNameError
from workbench.tracking import TrackingError, tracking_uri

USER_ERRORS = (ConfigError, UnknownNameError, TrackingError, FileNotFoundError)


def add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", help="grpo, entropy, evol_rl, g2rl, or 'package.module:Class' (default grpo)")
    p.add_argument("--preset", help="model preset: tiny (default), smollm2-135m, qwen3-1.7b-base, qwen3-4b-base")
    p.add_argument("--model", help="a Hugging Face id or local model folder (sets preset 'path')")
    p.add_argument("--task", help="training task: arithmetic (default), math, gsm8k, gpqa")
    p.add_argument("--data", help="training data file for file tasks (json, jsonl or parquet)")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--seed", type=int, help="run seed")
    p.add_argument("--experiment", help="MLflow experiment name (default 'workbench')")
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
    cfg = config_from_args(args)
    from workbench.train import start_tracker, train

    tracker = start_tracker(cfg)
    try:
        train(cfg, tracker)
    except KeyboardInterrupt:
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    _print_where(cfg, tracker.run_id)
    return 0


def _print_where(cfg: WorkbenchConfig, run_id: str | None) -> None:
    uri = tracking_uri()
    print(f"\nRun {run_id} ({cfg.method}, seed {cfg.seed}) finished in experiment {cfg.tracking.experiment!r}.")
    print(f"  tracking store : {uri}")
    print(f"  list runs      : workbench runs --experiment {cfg.tracking.experiment}")
    print(f"  browse metrics : mlflow ui --backend-store-uri {uri}")
    print("  compare runs   : streamlit run app/main.py")


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
    run.set_defaults(func=cmd_run)
    cfg = sub.add_parser("config", help="print the resolved config of a run as YAML (nothing runs)")
    add_config_flags(cfg)
    cfg.set_defaults(func=cmd_config)
    runs = sub.add_parser("runs", help="list the runs of an experiment")
    runs.add_argument("--experiment", default="workbench", help="MLflow experiment name")
    runs.set_defaults(func=cmd_runs)
    add_sweep_parser(sub)
    add_eval_parser(sub)
    add_report_parser(sub)
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

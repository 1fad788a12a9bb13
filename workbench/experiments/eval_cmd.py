"""``workbench eval``: pass@k and maj@k of any model on named benchmarks, recorded as an MLflow run.

The model is a preset name (``tiny``, ``smollm2-135m``, ...), a saved
checkpoint folder (e.g. ``outputs/<run_id>/checkpoint-100``) or any Hugging Face
model id (:func:`workbench.models.load.resolve_model`). The sampling flags are
the fields of :class:`workbench.config.EvalConfig`, with its defaults and
descriptions; each benchmark is sampled by
:func:`workbench.run.evaluation.evaluate_suite`, the loop training evaluates with.
The run (tag ``method='eval'``) records the metrics of
:func:`workbench.run.evaluation.score` at step 0 and the per-sample artifact
``eval/step_000000.parquet`` of DESIGN 6, so the app and ``workbench report``
read it like a training run's final evaluation.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import get_args

from pydantic import ValidationError

from analysis.records import DEFAULT_EXPERIMENT, parse_eval_key
from workbench import __version__
from workbench.config import ConfigError, EvalConfig, WorkbenchConfig

# EvalConfig field -> its flag; each flag takes the field's default and the first sentence of its description
# (a second sentence says what None means in a config).
FLAGS = {"n": "--n", "temperature": "--temperature", "max_problems": "--max-problems",
         "max_new_tokens": "--max-new-tokens", "prompts_per_batch": "--batch", "data_dir": "--data-dir"}
FOLDER_MAX_NEW_TOKENS = 256  # a model folder or hub id has no preset to say how long its completions run
NOTES = {  # what a flag means beyond its field's description
    "max_problems": "0: all",
    "max_new_tokens": "unset: the preset's eval.max_new_tokens, else its training.max_completion_length; "
                      f"a model folder or hub id: {FOLDER_MAX_NEW_TOKENS}",
}
HINTS = {"max_problems": "or 0: all", "temperature": "sampling; pass@k needs distinct samples"}  # for errors
DEFAULT_BENCHMARKS = "gsm8k"


def _flag_type(field: str) -> type:
    """The scalar type of an EvalConfig field (``int | None`` -> int)."""
    annotation = EvalConfig.model_fields[field].annotation
    return next((t for t in get_args(annotation) if t is not type(None)), annotation)


def first_sentence(text: str) -> str:
    """``"Samples per problem (paper: 16). More."`` -> ``"Samples per problem (paper: 16)"``."""
    return text.split(". ")[0].rstrip(".")


def _help(text: str, extra: str) -> str:
    """``"Samples per problem (paper: 16)"``, ``"default 8"`` -> ``"samples per problem (paper: 16; default 8)"``."""
    text = text[:1].lower() + text[1:]
    if not extra:
        return text
    return f"{text[:-1]}; {extra})" if text.endswith(")") else f"{text} ({extra})"


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    from workbench.models.load import DTYPES
    from workbench.models.presets import PRESETS
    from workbench.tasks import BENCHMARKS

    p = subparsers.add_parser("eval", help="pass@k / maj@k of a model or checkpoint on benchmarks, as an MLflow run")
    p.add_argument("--model", required=True, help=f"a preset ({', '.join(PRESETS.names())}), a saved "
                                                  "model/checkpoint folder, or a Hugging Face id")
    p.add_argument("--benchmarks", default=DEFAULT_BENCHMARKS,
                   help=f"comma-separated: {', '.join(BENCHMARKS.names())}; NAME=FILE reads that file "
                        "(default %(default)s)")
    for field, flag in FLAGS.items():
        info = EvalConfig.model_fields[field]
        extra = ([] if info.default is None else ["default %(default)s"]) + ([NOTES[field]] if field in NOTES else [])
        p.add_argument(flag, dest=field, metavar=flag[2:].upper().replace("-", "_"), type=_flag_type(field),
                       default=info.default, help=_help(first_sentence(info.description), "; ".join(extra)))
    p.add_argument("--seed", type=int, default=WorkbenchConfig.model_fields["seed"].default,
                   help="sampling seed (default %(default)s)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="weights dtype (default bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment name (default %(default)r)")
    p.add_argument("--run-name", help="MLflow run name (default eval-<model folder name>)")
    p.set_defaults(func=cmd_eval)
    return p


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The :class:`EvalConfig` of the flags (``--max-problems 0``: all); a bad value is a ConfigError naming
    the flag and the rule, e.g. ``--n 0 must be >= 1``."""
    if args.seed < 0:
        raise ConfigError(f"--seed {args.seed} must be >= 0")
    values = {field: getattr(args, field) for field in FLAGS}
    values["max_problems"] = values["max_problems"] or None
    try:
        return EvalConfig(**values)
    except ValidationError as err:
        raise ConfigError("; ".join(_flag_error(e) for e in err.errors())) from None


def _flag_error(error: dict) -> str:
    field = str(error["loc"][0])
    flag, ctx = FLAGS.get(field, field), error.get("ctx", {})
    rule = next((f"must be {op} {ctx[key]:g}" for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                 if key in ctx), error["msg"])
    hint = f" ({HINTS[field]})" if field in HINTS else ""
    return f"{flag} {error.get('input')} {rule}{hint}"


def score_table(metrics: dict[str, float]):
    """A rich table: rows benchmarks, columns pass@k then maj@k."""
    from rich.table import Table

    parsed: dict[str, dict[tuple[str, int], float]] = {}
    for key, value in metrics.items():
        found = parse_eval_key(key)
        if found:
            bench, kind, k = found
            parsed.setdefault(bench, {})[(kind, k)] = value
    cols = sorted({c for v in parsed.values() for c in v}, key=lambda c: (c[0] != "pass", c[1]))
    table = Table(title="evaluation (fractions of problems)")
    table.add_column("benchmark")
    for kind, k in cols:
        table.add_column(f"{kind}@{k}", justify="right")
    for bench, vals in parsed.items():
        table.add_row(bench, *(f"{vals[c]:.3f}" if c in vals else "" for c in cols))
    return table


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from analysis.records import eval_path
    from workbench.run.evaluation import completion_tokens, eval_table, evaluate_suite, load_suite, parse_benchmarks, score
    from workbench.models.load import load_model, resolve_dtype, resolve_model
    from workbench.run.recording import problems_frame
    from workbench.tracking import MlflowTracker, client, tracking_uri

    settings = eval_config(args)
    benchmarks = parse_benchmarks(args.benchmarks)
    client()  # a dead tracking server fails now, not after sampling
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bad files fail before the model loads
    suite = load_suite(benchmarks, data_dir=settings.data_dir, max_problems=settings.max_problems)
    ref = resolve_model(args.model)
    max_new_tokens = settings.max_new_tokens or (completion_tokens(ref.cfg) if ref.preset != "path"
                                                 else FOLDER_MAX_NEW_TOKENS)
    dtype = resolve_dtype(args.dtype)
    model, tokenizer = load_model(ref.path, dtype, cpu_threads=ref.cfg.training.cpu_threads)
    t0 = time.perf_counter()
    frame = evaluate_suite(model, tokenizer, suite, settings, max_new_tokens=max_new_tokens, seed=args.seed)
    seconds = time.perf_counter() - t0
    metrics = score(frame)
    name = args.run_name or f"eval-{Path(args.model.rstrip('/')).name}"
    tags = {"method": "eval", "seed": str(args.seed), "preset": ref.preset, "task": ",".join(b for b, _ in benchmarks),
            "workbench_version": __version__}
    tracker = MlflowTracker.start(args.experiment, name, tags)
    try:
        tracker.log_params({"model": args.model, "model_path": ref.path, "benchmarks": args.benchmarks,
                            "n": settings.n, "temperature": settings.temperature,
                            "max_problems": settings.max_problems, "max_new_tokens": max_new_tokens,
                            "prompts_per_batch": settings.prompts_per_batch, "seed": args.seed, "dtype": dtype,
                            "data_dir": settings.data_dir})
        for bench, _, problems in suite:
            tracker.log_dataset(problems_frame(problems), bench, "evaluation")
        tracker.log_metrics(metrics | {"perf/eval_s": seconds}, step=0)
        tracker.log_parquet(eval_table(frame), eval_path(0))
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    Console().print(score_table(metrics))
    print(f"\n{len(frame)} samples in {seconds:.0f} s; run {tracker.run_id} in experiment {args.experiment!r} "
          f"at {tracking_uri()}", file=sys.stderr)
    return 0

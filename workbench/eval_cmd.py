"""``workbench eval``: pass@k and maj@k of any model on named benchmarks, recorded as an MLflow run.

The model is a preset name (``tiny``, ``smollm2-135m``, ...), a saved
checkpoint folder (e.g. ``outputs/<run_id>/checkpoint-100``) or any Hugging Face
model id. Each benchmark is sampled ``n`` times per problem with
:func:`workbench.evaluation.sample_problems`; the run (tag ``method='eval'``)
records the metrics of :func:`workbench.evaluation.score` at step 0 and the
per-sample artifact ``eval/step_000000.parquet`` of DESIGN 6, so the app and
``workbench report`` read it like a training run's final evaluation.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from workbench import __version__
from workbench.config import ConfigError, WorkbenchConfig, build_config


def resolve_model(model: str, cache_dir: str | None = None) -> tuple[str, str]:
    """(preset or 'path', folder or hub id) for a preset name, a folder or a Hugging Face id."""
    from workbench.models.presets import PRESETS

    if model in PRESETS:
        cfg: WorkbenchConfig = build_config([{"model": {"preset": model, "cache_dir": cache_dir}}])
        if cfg.training.cpu_threads:  # the preset's CPU thread count (the tiny model: 1)
            import torch

            torch.set_num_threads(cfg.training.cpu_threads)
        return model, str(PRESETS.get(model).load(cfg))
    if Path(model).exists() and not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(f"--model {model}: the folder has no config.json; point at a saved model or "
                                f"checkpoint folder, or use a preset ({', '.join(PRESETS.names())})")
    return "path", model


def _load(path: str, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except OSError as err:
        from workbench.models.presets import PRESETS

        hub = "" if os.environ.get("HF_HUB_OFFLINE") != "1" else " (HF_HUB_OFFLINE=1: only local folders load)"
        raise FileNotFoundError(f"--model {path!r} is neither a preset ({', '.join(PRESETS.names())}) nor a "
                                f"loadable model folder or hub id{hub}: {str(err).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model, tokenizer


def parse_benchmarks(text: str) -> list[tuple[str, str | None]]:
    """``math500,amc=/data/amc.json`` -> [("math500", None), ("amc", "/data/amc.json")], names checked."""
    from workbench.tasks import BENCHMARKS

    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, path = item.partition("=")
        BENCHMARKS.get(name.strip())  # unknown names list the valid ones
        out.append((name.strip(), path.strip() or None))
    if not out:
        raise ConfigError(f"--benchmarks {text!r} names nothing; e.g. --benchmarks math500,gsm8k")
    return out


def load_suite(benchmarks: list[tuple[str, str | None]], data_dir: str | None, max_problems: int | None):
    """(name, task, problems) per benchmark; a missing or malformed file is a :class:`ConfigError`."""
    from workbench.tasks import load_benchmark

    try:
        return [(name, *load_benchmark(name, path, data_dir=data_dir, max_problems=max_problems))
                for name, path in benchmarks]
    except ValueError as err:
        raise ConfigError(str(err)) from None


def evaluate(model, tokenizer, loaded, *, n: int, temperature: float, max_new_tokens: int, seed: int, batch: int):
    """The per-sample frame of every (name, task, problems) benchmark, with a progress bar per benchmark."""
    import pandas as pd

    from workbench.evaluation import sample_problems
    from workbench.progress import progress

    frames = []
    for name, task, problems in loaded:
        with progress(f"{name} (n={n})", len(problems)) as bar:
            frames.append(sample_problems(
                model, tokenizer, task, problems, n=n, temperature=temperature, max_new_tokens=max_new_tokens,
                benchmark=name, step=0, prompts_per_batch=batch, seed=seed, progress=bar.advance,
            ))
    return pd.concat(frames, ignore_index=True)


def score_table(metrics: dict[str, float]):
    """A rich table: rows benchmarks, columns pass@k then maj@k."""
    import re

    from rich.table import Table

    parsed = {}
    for key, value in metrics.items():
        m = re.match(r"^eval/(.+)/(pass|maj)_at_(\d+)$", key)
        if m:
            parsed.setdefault(m[1], {})[(m[2], int(m[3]))] = value
    cols = sorted({c for v in parsed.values() for c in v}, key=lambda c: (c[0] != "pass", c[1]))
    table = Table(title="evaluation (fractions of problems)")
    table.add_column("benchmark")
    for kind, k in cols:
        table.add_column(f"{kind}@{k}", justify="right")
    for bench, vals in parsed.items():
        table.add_row(bench, *(f"{vals[c]:.3f}" if c in vals else "" for c in cols))
    return table


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="pass@k / maj@k of a model or checkpoint on benchmarks, as an MLflow run")
    p.add_argument("--model", required=True,
                   help="a preset (tiny, smollm2-135m, ...), a saved model/checkpoint folder, or a Hugging Face id")
    p.add_argument("--benchmarks", default="gsm8k",
                   help="comma-separated: math500, amc, aime24, aime25, gpqa_diamond, gsm8k, countdown, arithmetic; "
                        "NAME=FILE reads that file (default gsm8k)")
    p.add_argument("--data-dir", help="folder holding benchmark files (benchmarks/math500.json, gsm8k/test.jsonl, ...)")
    p.add_argument("--n", type=int, default=8, help="samples per problem (default 8; paper 16)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8, as the paper)")
    p.add_argument("--max-problems", type=int, default=64, help="first N problems per benchmark (default 64; 0: all)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="completion tokens per sample (default 256)")
    p.add_argument("--batch", type=int, default=8, help="problems per generate call (default 8)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="weights dtype (default bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--experiment", default="workbench", help="MLflow experiment name (default 'workbench')")
    p.add_argument("--run-name", help="MLflow run name (default eval-<model folder name>)")
    p.set_defaults(func=cmd_eval)
    return p


def _check_args(args: argparse.Namespace) -> None:
    for flag, value, low in (("--n", args.n, 1), ("--max-new-tokens", args.max_new_tokens, 1),
                             ("--batch", args.batch, 1), ("--max-problems", args.max_problems, 0),
                             ("--seed", args.seed, 0)):
        if value < low:
            raise ConfigError(f"{flag} {value} must be >= {low}")
    if args.temperature <= 0:
        raise ConfigError(f"--temperature {args.temperature} must be > 0 (sampling; pass@k needs distinct samples)")


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from workbench.evaluation import eval_table, score
    from analysis.records import eval_path
    from workbench.tracking import MlflowTracker, client, tracking_uri

    _check_args(args)
    benchmarks = parse_benchmarks(args.benchmarks)
    client()  # a dead tracking server fails now, not after sampling
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    max_problems = args.max_problems or None
    suite = load_suite(benchmarks, args.data_dir, max_problems)  # bad files fail before the model loads
    preset, path = resolve_model(args.model)
    dtype = args.dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
    model, tokenizer = _load(path, dtype)
    t0 = time.perf_counter()
    frame = evaluate(model, tokenizer, suite, n=args.n, temperature=args.temperature,
                     max_new_tokens=args.max_new_tokens, seed=args.seed, batch=args.batch)
    seconds = time.perf_counter() - t0
    metrics = score(frame)
    name = args.run_name or f"eval-{Path(args.model.rstrip('/')).name}"
    tags = {"method": "eval", "seed": str(args.seed), "preset": preset, "task": ",".join(b for b, _ in benchmarks),
            "workbench_version": __version__}
    tracker = MlflowTracker.start(args.experiment, name, tags)
    try:
        tracker.log_params({"model": args.model, "model_path": path, "benchmarks": args.benchmarks, "n": args.n,
                            "temperature": args.temperature, "max_problems": max_problems,
                            "max_new_tokens": args.max_new_tokens, "seed": args.seed, "dtype": dtype,
                            "data_dir": args.data_dir})
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

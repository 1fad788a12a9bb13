"""``workbench probe``: the exploration geometry of a checkpoint on evaluation samples (DESIGN 10, Figure 3).

The policy is a run's checkpoint (its last, or ``--step N``), a checkpoint
folder, a model folder or hub id, or a preset. For every problem of a benchmark
(or of the task's test split, ``--benchmark task``) it samples ``n``
completions at the evaluation temperature, checks each with the benchmark's
verifier, and computes for each

- Phi by the **forward route** (DESIGN 3.4, :func:`trainers.features.phi_forward`):
  one no-grad forward over prompt + completion after sampling, with p_t =
  softmax(z_t / T) at the sampling temperature T. Sampling then is plain
  ``generate`` by :func:`workbench.run.evaluation.sample`, the loop ``workbench eval``
  and training's evaluation sample with; the sampling route would
  save that forward but ties Phi to transformers' generation internals, and
  both routes agree to float tolerance (tests/test_features.py);
- the unit text embedding (:class:`trainers.embeddings.TextEmbedder`, the
  source run's ``features.encoder``).

It records one MLflow run in the source run's experiment (``--experiment``
otherwise): the dump ``features/step_<step:06d>.parquet`` with the schema of
DESIGN 6 (written by :func:`trainers.step_record.dump_table`, one group per
problem; ``base_reward`` = ``shaped_reward`` = the verifier reward 1/0,
``advantage`` NaN: nothing is trained) and the ``geometry/*`` metrics of
:func:`analysis.geometry.geometry_metrics` (the function training logs with),
at step = the checkpoint's step. Tags: ``workbench.kind=probe``,
``workbench.probe_of=<run id>`` and the source run's ``method`` and ``seed``;
a probe of a model without a source run has ``method=base``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench import __version__
from workbench.config import ConfigError, WorkbenchConfig, build_config, validate
from analysis.records import ARM_TAG, DEFAULT_EXPERIMENT, KIND_TAG, PROBE, PROBE_OF_TAG
from analysis.records import PROBE_BENCHMARK_TAG as BENCHMARK_TAG
from analysis.records import PROBE_STEP_TAG as STEP_TAG
from workbench.run.evaluation import TASK_BENCHMARK

NO_RUN_METHOD = "base"  # the method tag of a probe of a model that no run trained
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class ProbeSource:
    """What is probed: a model folder (or hub id) at a step, and the run that trained it, if known."""

    model_path: str
    step: int
    cfg: WorkbenchConfig  # the source run's config, else the preset's defaults
    label: str  # for the run name
    preset: str
    run: Any = None  # the source MLflow run

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run is not None else None


# --------------------------------------------------------------------------- what to probe


def _run_config(mlflow_client, run_id: str) -> tuple[Any, WorkbenchConfig]:
    """Run ``run_id`` and its recorded config; errors name the run and the fix."""
    import yaml

    from analysis.records import CONFIG_ARTIFACT
    from workbench.tracking import TrackingError, get_run, read_text_artifact

    run = get_run(mlflow_client, run_id)
    text = read_text_artifact(mlflow_client, run_id, CONFIG_ARTIFACT)
    if text is None:
        raise TrackingError(f"run {run_id} has no {CONFIG_ARTIFACT}, so where its checkpoints are is unknown; "
                            "probe a checkpoint folder with --checkpoint DIR instead")
    return run, validate(yaml.safe_load(text))


def from_run(mlflow_client, run_id: str, step: int | None = None) -> ProbeSource:
    """The last checkpoint of run ``run_id``, or its ``checkpoint-<step>``; errors name the value and the fix."""
    from workbench.run.launch import CHECKPOINT_TAG, checkpoint_folder, last_checkpoint

    run, cfg = _run_config(mlflow_client, run_id)
    folder = checkpoint_folder(cfg, run_id, run.data.tags.get(CHECKPOINT_TAG))
    if step is None:
        path, step = last_checkpoint(folder)
        if path is None:
            raise FileNotFoundError(
                f"run {run_id} has no complete checkpoint in {folder}: it ran with training.save_final=false and "
                "training.save_steps=0, or that folder was moved (run the probe from the folder the run was "
                "started in, or give the checkpoint with --checkpoint DIR)")
    else:
        saved = saved_steps(folder)
        if step not in saved:
            have = ", ".join(map(str, saved)) or "none"
            raise FileNotFoundError(f"run {run_id} has no checkpoint of step {step} in {folder} (saved steps: "
                                    f"{have}); pick one of those with --step, or drop --step for the last")
        path = folder / f"checkpoint-{step}"
    if run.info.status != "FINISHED":
        print(f"note: run {run_id} is {run.info.status}; probing its checkpoint of step {step}", file=sys.stderr)
    return ProbeSource(str(path), step, cfg, f"{run.info.run_name}-step{step}", cfg.model.preset, run)


def saved_steps(folder: Path) -> list[int]:
    """Steps N with a complete ``checkpoint-N`` (its ``trainer_state.json`` parses) in ``folder``, ascending."""
    steps = []
    if folder.is_dir():
        for child in folder.iterdir():
            match = _CHECKPOINT.match(child.name)
            if match and _trainer_step(child) == int(match[1]):
                steps.append(int(match[1]))
    return sorted(steps)


def _trainer_step(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def from_checkpoint(mlflow_client, folder: str) -> ProbeSource:
    """A checkpoint folder; its step from ``trainer_state.json`` (else its name, else 0). If the folder sits in
    ``<output_dir>/<run id>/`` of a run in the store, that run is the source (its config, method and seed)."""
    from workbench.tracking import TrackingError

    path = Path(folder)
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "has no config.json"
        raise FileNotFoundError(f"--checkpoint {folder}: the folder {what}; give a checkpoint-N folder of a run "
                                "(outputs/<run id>/checkpoint-N) or a saved model folder")
    match = _CHECKPOINT.match(path.name)
    step = _trainer_step(path)
    step = step if step is not None else int(match[1]) if match else 0
    label = f"{path.resolve().parent.name}-{path.name}"
    try:
        run, cfg = _run_config(mlflow_client, path.resolve().parent.name)
    except TrackingError:  # not a run's folder: a model on its own
        cfg = build_config([{"model": {"preset": "path", "name_or_path": str(path)}}])
        return ProbeSource(str(path), step, cfg, label, "path")
    return ProbeSource(str(path), step, cfg, f"{run.info.run_name}-step{step}", cfg.model.preset, run)


def from_model(model: str, preset: str | None = None) -> ProbeSource:
    """A preset (built or loaded into the model cache) or a model folder / hub id, at step 0."""
    from workbench.models.load import resolve_model

    if preset is not None:
        from workbench.models.presets import PRESETS

        PRESETS.get(preset)  # an unknown name lists the valid ones
        model = preset
    ref = resolve_model(model)
    return ProbeSource(ref.path, 0, ref.cfg, Path(model.rstrip("/")).name, ref.preset)


# --------------------------------------------------------------------------- sampling and features


@dataclass(frozen=True)
class ProbeSamples:
    """n completions per problem, in problem order, with what the dump and the geometry need."""

    groups: np.ndarray  # (N,) the problem's index
    prompt_ids: list[str]
    prompts: list[str]
    texts: list[str]
    num_tokens: list[int]
    verdicts: list  # workbench.tasks.Verdict
    features: np.ndarray  # (N, d) Phi
    embeddings: np.ndarray  # (N, e) unit text embeddings
    feature_s: float
    embed_s: float


def sample(model, tokenizer, task, problems, *, n: int, temperature: float, max_new_tokens: int, seed: int,
           embedder, prompts_per_batch: int = 8, forward_batch: int = 8, progress=None) -> ProbeSamples:
    """``n`` completions per problem, sampled and checked by :func:`workbench.run.evaluation.sample` (the loop
    evaluation samples with), with Phi by the forward route and the text embedding of each."""
    import torch

    from trainers.features import pad_batch, phi_forward
    from workbench.run.evaluation import eval_mode, sample as sample_completions

    completions = sample_completions(model, tokenizer, task, problems, n=n, temperature=temperature,
                                     max_new_tokens=max_new_tokens, seed=seed, prompts_per_batch=prompts_per_batch,
                                     progress=progress, token_ids=True)
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    phis = []
    with eval_mode(model, tokenizer):
        for start in range(0, len(completions), prompts_per_batch * n):  # the rows of one generate call
            rows = completions[start : start + prompts_per_batch * n]
            ids, attn, cmask = pad_batch([c.prompt_ids for c in rows], [c.completion_ids for c in rows],
                                         tokenizer.pad_token_id, device=device)
            phis.append(phi_forward(model, ids, attn, cmask, temperature, batch_size=forward_batch).float().cpu())
    feature_s = time.perf_counter() - t0
    texts = [c.text for c in completions]
    t0 = time.perf_counter()
    embeddings = embedder.encode(texts)  # (N, e)
    embed_s = time.perf_counter() - t0
    return ProbeSamples(np.asarray([c.group for c in completions], dtype=np.int64),
                        [c.problem.id for c in completions],
                        [f"{c.problem.system}\n{c.problem.prompt}" if c.problem.system else c.problem.prompt
                         for c in completions],
                        texts, [len(c.completion_ids) for c in completions], [c.verdict for c in completions],
                        torch.cat(phis).numpy(), embeddings, feature_s, embed_s)


# --------------------------------------------------------------------------- recording


def probe_tags(source: ProbeSource, benchmark: str, seed: int) -> dict[str, str]:
    """The probe run's tags: kind, the source run, its method, seed and study arm (``base`` and ``seed``
    without a source run)."""

    tags = {KIND_TAG: PROBE, BENCHMARK_TAG: benchmark, STEP_TAG: str(source.step), "preset": source.preset,
            "task": benchmark, "workbench_version": __version__}
    if source.run is not None:
        src = source.run.data.tags
        tags |= {PROBE_OF_TAG: source.run_id, "method": src.get("method", ""), "seed": src.get("seed", str(seed))}
        tags |= {ARM_TAG: src[ARM_TAG]} if ARM_TAG in src else {}
    else:
        tags |= {"method": NO_RUN_METHOD, "seed": str(seed)}
    return tags


def record(tracker, source: ProbeSource, samples: ProbeSamples, *, seconds: float) -> dict[str, float]:
    """Write the dump and the metrics of a probe through ``tracker``, at the checkpoint's step."""
    from analysis.geometry import geometry_metrics
    from analysis.records import dump_path
    from trainers.method import Shaped, StepBatch
    from trainers.step_record import StepRecord, dump_table

    correct = np.array([v.correct for v in samples.verdicts], dtype=bool)
    batch = StepBatch(groups=samples.groups, correct=correct,
                      has_answer=np.array([v.answer is not None for v in samples.verdicts]),
                      answers=[v.answer for v in samples.verdicts], features=samples.features,
                      embeddings=samples.embeddings)
    reward = correct.astype(np.float64)
    features = source.cfg.features
    step = StepRecord(step=source.step, batch=batch, shaped=Shaped(base_reward=reward, shaped_reward=reward),
                      advantages=np.full(len(reward), np.nan), prompts=samples.prompts, prompt_ids=samples.prompt_ids,
                      texts=samples.texts, num_tokens=samples.num_tokens, timed_out=[v.timed_out for v in samples.verdicts])
    frame = dump_table(step, dtype=features.dtype, project_dim=features.project_dim, seed=source.cfg.seed)
    metrics = geometry_metrics(samples.features, samples.embeddings, samples.groups, correct, tau=features.tau)
    metrics |= {"probe/accuracy": float(correct.mean()), "probe/completion_tokens": float(np.mean(samples.num_tokens)),
                "perf/probe_s": seconds, "perf/feature_s": samples.feature_s, "perf/embed_s": samples.embed_s}
    tracker.log_metrics(metrics, step=source.step)
    tracker.log_parquet(frame, dump_path(source.step))
    return metrics


# --------------------------------------------------------------------------- the command


def add_probe_parser(subparsers) -> argparse.ArgumentParser:
    from workbench.models.load import DTYPES
    from workbench.models.presets import PRESETS
    from workbench.tasks import BENCHMARKS

    p = subparsers.add_parser("probe", help="exploration geometry of a checkpoint on n samples per benchmark "
                                            "problem, as an MLflow run (the paper's Figure 3)")
    p.add_argument("run", nargs="?", metavar="RUN_ID", help="a run whose checkpoint to probe (its last by default)")
    p.add_argument("--step", type=int, help="with RUN_ID: the checkpoint of this step (default: the last)")
    p.add_argument("--checkpoint", metavar="DIR", help="a checkpoint folder (outputs/<run id>/checkpoint-N)")
    p.add_argument("--model", help="a saved model folder or a Hugging Face id (step 0)")
    p.add_argument("--preset", help=f"a model preset: {', '.join(PRESETS.names())} (step 0)")
    p.add_argument("--benchmark", default=TASK_BENCHMARK,
                   help=f"{TASK_BENCHMARK} (the test split of the run's task, default), or one of "
                        f"{', '.join(BENCHMARKS.names())}; NAME=FILE reads that file")
    p.add_argument("--data-dir", help="folder holding benchmark files (benchmarks/aime25.json, gsm8k/test.jsonl, ...)")
    p.add_argument("--n", type=int, default=8, help="samples per problem (default 8, the paper's)")
    p.add_argument("--max-problems", type=int, default=0, help="first N problems (default 0: all, the paper's)")
    p.add_argument("--temperature", type=float,
                   help="sampling temperature (default: the run's eval.temperature, 0.8 as the paper)")
    p.add_argument("--max-new-tokens", type=int,
                   help="completion tokens per sample (default: the run's eval.max_new_tokens, else its "
                        "training.max_completion_length)")
    p.add_argument("--batch", type=int, help="problems per generate call (default: the run's "
                                             "eval.prompts_per_batch)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="weights dtype (default bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--experiment", help=f"MLflow experiment (default: the source run's, else {DEFAULT_EXPERIMENT!r})")
    p.add_argument("--run-name", help="MLflow run name (default probe-<benchmark>-<source>)")
    p.set_defaults(func=cmd_probe)
    return p


def _check_args(args: argparse.Namespace) -> None:
    given = [name for name, value in (("RUN_ID", args.run), ("--checkpoint", args.checkpoint),
                                      ("--model", args.model), ("--preset", args.preset)) if value is not None]
    if len(given) != 1:
        which = f"got {' and '.join(given)}" if given else "got none"
        raise ConfigError(f"name one policy to probe: a RUN_ID, --checkpoint DIR, --model PATH or --preset NAME "
                          f"({which})")
    if args.step is not None and args.run is None:
        raise ConfigError(f"--step {args.step} picks a checkpoint of a run: give the RUN_ID too, or a checkpoint "
                          "folder with --checkpoint")
    for flag, value, low in (("--n", args.n, 1), ("--batch", args.batch, 1), ("--max-problems", args.max_problems, 0),
                             ("--seed", args.seed, 0), ("--step", args.step, 0),
                             ("--max-new-tokens", args.max_new_tokens, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{flag} {value} must be >= {low}")
    if args.temperature is not None and args.temperature <= 0:
        raise ConfigError(f"--temperature {args.temperature} must be > 0 (Phi needs p_t = softmax(z_t / T))")


def resolve_source(args: argparse.Namespace, mlflow_client) -> ProbeSource:
    if args.run is not None:
        return from_run(mlflow_client, args.run, args.step)
    if args.checkpoint is not None:
        return from_checkpoint(mlflow_client, args.checkpoint)
    return from_model(args.model, args.preset) if args.model else from_model(args.preset, args.preset)


def load_problems(source: ProbeSource, benchmark: str, data_dir: str | None, max_problems: int | None):
    """(benchmark name, task, problems) of the one benchmark ``benchmark`` (``--benchmark``) names, by
    :func:`workbench.run.evaluation.load_suite`: ``task`` is the test split of the source config's task."""
    from workbench.run.evaluation import load_suite, parse_benchmarks

    parsed = parse_benchmarks(benchmark, "--benchmark", task=True)
    if len(parsed) != 1:
        raise ConfigError(f"--benchmark {benchmark!r}: a probe measures one benchmark; run one probe per benchmark")
    return load_suite(parsed, source.cfg.task, data_dir=data_dir, max_problems=max_problems)[0]


def probe(source: ProbeSource, *, benchmark: str = TASK_BENCHMARK, data_dir: str | None = None, n: int = 8,
          max_problems: int | None = None, temperature: float | None = None, max_new_tokens: int | None = None,
          batch: int | None = None, seed: int = 0, dtype: str | None = None, experiment: str | None = None,
          run_name: str | None = None) -> tuple[str, dict[str, float]]:
    """Probe ``source``; returns the probe run's id and its metrics. Bad files fail before the model loads.

    ``temperature``, ``max_new_tokens`` and ``batch`` (problems per generate call) default to the source
    config's evaluation settings."""
    from trainers.embeddings import TextEmbedder
    from workbench.run.evaluation import completion_tokens
    from workbench.models.load import load_model, resolve_dtype
    from workbench.progress import progress
    from workbench.tracking import MlflowTracker, client

    name, task, problems = load_problems(source, benchmark, data_dir, max_problems)
    if not problems:
        raise ConfigError(f"benchmark {name!r} has no problems to probe")
    c = client()
    if experiment is None:
        experiment = c.get_experiment(source.run.info.experiment_id).name if source.run is not None else DEFAULT_EXPERIMENT
    e = source.cfg.eval
    temperature = temperature or e.temperature
    max_new_tokens = max_new_tokens or completion_tokens(source.cfg)
    batch = batch or e.prompts_per_batch
    dtype = resolve_dtype(dtype)
    model, tokenizer = load_model(source.model_path, dtype, cpu_threads=source.cfg.training.cpu_threads)
    embedder = TextEmbedder(source.cfg.features.encoder, dtype=source.cfg.features.encoder_dtype)
    t0 = time.perf_counter()
    with progress(f"probe {name} (n={n}) of {source.label}", len(problems)) as bar:
        samples = sample(model, tokenizer, task, problems, n=n, temperature=temperature,
                         max_new_tokens=max_new_tokens, seed=seed, embedder=embedder, prompts_per_batch=batch,
                         progress=bar.advance)
    seconds = time.perf_counter() - t0
    from workbench.run.recording import problems_frame

    tracker = MlflowTracker.start(experiment, run_name or f"probe-{name}-{source.label}",
                                  probe_tags(source, name, seed))
    try:
        tracker.log_params({"model_path": source.model_path, "step": source.step, "benchmark": benchmark,
                            "data_dir": data_dir, "n": n, "max_problems": max_problems, "temperature": temperature,
                            "max_new_tokens": max_new_tokens, "seed": seed, "dtype": dtype, "phi_route": "forward",
                            "features.tau": source.cfg.features.tau, "features.encoder": source.cfg.features.encoder,
                            "features.encoder_dtype": embedder.dtype,
                            "features.project_dim": source.cfg.features.project_dim,
                            "features.dtype": source.cfg.features.dtype})
        tracker.log_dataset(problems_frame(problems), name, "evaluation")
        metrics = record(tracker, source, samples, seconds=seconds)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    return tracker.run_id, metrics


def cmd_probe(args: argparse.Namespace) -> int:
    from workbench.tracking import client, tracking_uri

    _check_args(args)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    source = resolve_source(args, client())
    run_id, metrics = probe(source, benchmark=args.benchmark, data_dir=args.data_dir, n=args.n,
                            max_problems=args.max_problems or None, temperature=args.temperature,
                            max_new_tokens=args.max_new_tokens, batch=args.batch, seed=args.seed, dtype=args.dtype,
                            experiment=args.experiment, run_name=args.run_name)
    shown = ("probe/accuracy", "geometry/grad_cos_mean", "geometry/neg_frac", "geometry/sem_cos_mean")
    print("  ".join(f"{k.split('/')[-1]} {metrics[k]:.3f}" for k in shown if k in metrics))
    of = f" of run {source.run_id}" if source.run_id else ""
    print(f"probe run {run_id}{of} at step {source.step}, {metrics['perf/probe_s']:.0f} s, at {tracking_uri()}",
          file=sys.stderr)
    return 0


def existing_probe(mlflow_client, run_id: str, benchmark: str) -> str | None:
    """The id of a FINISHED probe of run ``run_id`` on ``benchmark`` (the ``--benchmark`` text), or None."""
    run = mlflow_client.get_run(run_id)
    found = mlflow_client.search_runs(
        [run.info.experiment_id], max_results=1,
        filter_string=(f"tags.`{KIND_TAG}` = '{PROBE}' and tags.`{PROBE_OF_TAG}` = '{run_id}' and "
                       f"params.benchmark = '{benchmark}' and attributes.status = 'FINISHED'"))
    return found[0].info.run_id if found else None


def probe_runs(run_ids: list[str], benchmark: str, *, data_dir: str | None = None,
               console=None, **options: Any) -> list[tuple[str, str, str | None]]:
    """Probe the last checkpoint of each run once (``workbench sweep --probe``), with the defaults of
    :func:`probe` (8 samples, every problem) or the given ``options`` of it (``n``, ``max_problems``); a
    run that has a FINISHED probe of ``benchmark`` is skipped.

    Returns (run id, "probed" | "skipped" | "failed", probe run id or the error) per run; a failed probe
    does not stop the others.
    """
    from rich.console import Console

    from workbench.tracking import client

    console = console or Console(stderr=True)
    c = client()
    out = []
    for k, run_id in enumerate(run_ids, start=1):
        done = existing_probe(c, run_id, benchmark)
        if done is not None:
            console.print(f"[dim][probe {k}/{len(run_ids)}] run {run_id}: probed before (run {done}), skipped[/dim]")
            out.append((run_id, "skipped", done))
            continue
        try:
            probe_id, _ = probe(from_run(c, run_id), benchmark=benchmark, data_dir=data_dir, **options)
        except Exception as err:  # noqa: BLE001  reported, and the next run is probed
            console.print(f"[red][probe {k}/{len(run_ids)}] run {run_id}: FAILED: {type(err).__name__}: {err}[/red]")
            out.append((run_id, "failed", f"{type(err).__name__}: {err}"))
        else:
            console.print(f"[green][probe {k}/{len(run_ids)}] run {run_id}: probe run {probe_id}[/green]")
            out.append((run_id, "probed", probe_id))
    return out

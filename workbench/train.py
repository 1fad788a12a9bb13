"""Run one training job: config -> model, task, method -> WorkbenchTrainer -> MLflow run."""

from __future__ import annotations

import logging
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench import __version__
from workbench.config import WorkbenchConfig, flatten, to_yaml
from workbench.tracking import MlflowTracker, Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    run_id: str | None
    experiment: str
    steps: int
    first_rewards: list[float]
    last_rewards: list[float]


def run_tags(cfg: WorkbenchConfig) -> dict[str, str]:
    return {"method": cfg.method, "seed": str(cfg.seed), "preset": cfg.model.preset, "task": cfg.task.name,
            "workbench_version": __version__}


def start_tracker(cfg: WorkbenchConfig) -> MlflowTracker:
    run_name = cfg.tracking.run_name or f"{cfg.method}-s{cfg.seed}"
    tracker = MlflowTracker.start(cfg.tracking.experiment, run_name, run_tags(cfg))
    tracker.log_params(flatten(cfg.model_dump(mode="json")))
    tracker.log_text(to_yaml(cfg), "config.yaml")
    return tracker


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: WorkbenchConfig, tracker: Tracker):
    """Train ``cfg``, record it through ``tracker`` (a NullTracker records nothing); return the trainer."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from trainers.registry import resolve_method
    from trainers.trainer import VerifierReward, WorkbenchTrainer
    from workbench.evaluation import EvalCallback, benchmark_suite
    from workbench.models.presets import PRESETS
    from workbench.recording import StepRecorder, TrackerCallback
    from workbench.tasks import build_task

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    seed_everything(cfg.seed)
    if cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    task = build_task(cfg.task)
    model_path = cfg.model.name_or_path if cfg.model.preset == "path" else PRESETS.get(cfg.model.preset).load(cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = getattr(torch, cfg.model.dtype)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    method = resolve_method(cfg.method)(cfg)
    dataset = Dataset.from_list([_example(p, task.chat) for p in task.problems("train")])

    t = cfg.training
    cuda = torch.cuda.is_available()
    args = GRPOConfig(
        output_dir=str(Path(t.output_dir) / (tracker.run_id or "scratch")),
        seed=cfg.seed,
        max_steps=t.steps,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=_per_device_batch(cfg),
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_generations=t.num_generations,
        num_iterations=t.num_iterations,
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
        activation_checkpointing=t.gradient_checkpointing,
        bf16=t.bf16 and cuda,
        use_cpu=not cuda,
        use_vllm=t.use_vllm,
        vllm_mode=t.vllm_mode,
        logging_steps=1,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500,
        report_to="none",
        disable_tqdm=False,
        dataloader_num_workers=0,
        **method.trainer_args(),
    )
    embedder = None
    want_features = cfg.features.every > 0
    if want_features or method.needs_embeddings:
        from trainers.embeddings import TextEmbedder

        embedder = TextEmbedder(cfg.features.encoder)
    evaluator = EvalCallback(cfg, benchmark_suite(cfg, task) if cfg.eval.every or cfg.eval.final else [],
                             tokenizer, tracker)
    trainer = WorkbenchTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        method=method,
        verifier=VerifierReward(task),
        recorder=StepRecorder(tracker, cfg.features, seed=cfg.seed),
        embedder=embedder,
        want_features=want_features,
        route=cfg.g2rl.route,
        callbacks=[TrackerCallback(tracker), evaluator.callback],
    )
    trainer.train()
    return trainer


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
        raise ValueError(
            f"training.prompts_per_step x num_generations = {total} completions must divide evenly over "
            f"{world} processes x {t.gradient_accumulation_steps} accumulation steps"
        )
    return per

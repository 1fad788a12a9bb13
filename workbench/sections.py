"""The model and task sections of the run config, and what a model loader reads of a run.

They sit below :mod:`workbench.config`, which assembles the whole config from them, so that the model
presets and loaders (:mod:`workbench.models`) can be typed against what they read without importing
the config that validates preset names against them.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """A section of the run config: unknown keys are errors, and assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    preset: str = Field("tiny", description="Model preset (tiny, tiny-arithmetic, smollm2-135m, qwen3-1.7b-base, qwen3-4b-base) or 'path'.")
    name_or_path: str | None = Field(None, description="A Hugging Face id or local folder; required when preset is 'path'.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype for training.")
    cache_dir: str | None = Field(None, description="Where built/converted models are cached (default ~/.cache/g2rl-workbench).")
    warmstart_steps: int = Field(10000, ge=0, description="Supervised warm-start steps of the tiny presets (the "
                                 "default's warm starts are committed; other settings build theirs once, ~0.2 s a step).")
    warmstarts: int = Field(2, ge=1, description="Distinct warm starts of the tiny presets: run seed s starts from "
                            "warm start s mod warmstarts (each its own supervised run), so a seed pairs every arm "
                            "of a study on one warm start and its seeds span several.")


class TaskConfig(Section):
    name: str = Field("countdown", description="Training task (countdown, arithmetic, math, gsm8k, gpqa).")
    path: str | None = Field(None, description="Training data file for file tasks (json, jsonl or parquet).")
    test_path: str | None = Field(None, description="Held-out data file for file tasks.")
    digits: int = Field(3, ge=1, le=12, description="Arithmetic: digits per operand.")
    operations: list[str] = Field(default_factory=lambda: ["+"], description="Arithmetic: operations among + - *.")
    num_train: int = Field(5000, ge=1, description="Synthetic tasks: training problems generated.")
    num_test: int = Field(200, ge=1, description="Synthetic tasks: held-out problems generated.")
    data_seed: int = Field(1234, description="Seed of the synthetic data (independent of the run seed).")
    count: int = Field(4, ge=3, le=5, description="Countdown: numbers per problem.")
    max_number: int = Field(10, ge=2, description="Countdown: numbers are drawn from 1..max_number.")
    min_target: int = Field(10, ge=0, description="Countdown: smallest target.")
    max_target: int = Field(50, ge=1, description="Countdown: largest target.")
    min_steps: int = Field(2, ge=1, le=4, description="Countdown: every problem needs at least this many steps "
                           "(no solution is shorter); 1 admits one-step problems.")
    max_problems: int | None = Field(None, ge=1, description="Cap on problems read per split.")
    answer_timeout_s: float = Field(5.0, gt=0, description="Time limit of one symbolic answer check.")
    system_prompt: str | None = Field(None, description="Override the task's system prompt.")

    @field_validator("operations")
    @classmethod
    def _known_ops(cls, ops: list[str]) -> list[str]:
        bad = [op for op in ops if op not in {"+", "-", "*"}]
        if bad or not ops:
            raise ValueError(f"operations {ops!r} must be a non-empty subset of ['+', '-', '*']")
        return ops


class ModelRequest(Protocol):
    """What a model preset's loader reads of a run: its model and task sections, and its seed (a tiny
    preset's warm start is seed mod ``model.warmstarts``). A :class:`~workbench.config.WorkbenchConfig`
    is one."""

    seed: int
    model: ModelConfig
    task: TaskConfig

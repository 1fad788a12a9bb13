"""The one typed config of a workbench run.

Every field carries its help text and its valid range; a bad value raises
:class:`ConfigError` naming the field, the value and what is allowed. The CLI
builds a config from (in order) the method's defaults, the preset's defaults, a
YAML file, the CLI flags and ``--set key.path=value`` overrides.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, create_model, model_validator

from analysis.records import DEFAULT_EXPERIMENT, DEFAULT_OUTPUT_DIR
from trainers.feature_options import FeatureOptions as FeaturesConfig
from workbench.sections import ModelConfig, Section, TaskConfig
from workbench.tracking import FINISH_WAIT_S


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and the fix."""


CHECKPOINTS_PER_RUN = 10
"""Checkpoints a run saves by default (``training.save_steps: null``): one every tenth of its steps."""
KEEP_CHECKPOINTS = 2
"""Checkpoints a run keeps by default, the newest (``training.keep_checkpoints``)."""


class TrainingConfig(Section):
    steps: int = Field(100, ge=1, description="Optimizer steps.")
    learning_rate: float = Field(1e-4, gt=0, le=1.0, description="AdamW learning rate (paper: 5e-7 on Qwen3).")
    prompts_per_step: int = Field(8, ge=1, description="Prompts per optimizer step (paper: 16).")
    num_generations: int = Field(8, ge=2, description="Completions per prompt, the group size m (paper: 16).")
    beta: float = Field(0.0, ge=0, description="KL coefficient to the reference policy (paper: 0.001).")
    epsilon: float = Field(0.2, gt=0, lt=1, description="PPO clip range.")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field("grpo", description="TRL loss aggregation.")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="Divide advantages by the group std.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature in training (paper: 1.0).")
    max_prompt_length: int | None = Field(None, ge=1, description="Truncate prompts to this many tokens.")
    max_completion_length: int = Field(8, ge=1, description="Completion tokens per sample.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    num_iterations: int = Field(1, ge=1, description="Policy updates per generation batch (PPO epochs).")
    steps_per_generation: int | None = Field(
        None, ge=1, description="TRL's steps_per_generation: micro-batches per generation batch (None: "
                                "gradient_accumulation_steps, one optimizer step per generation). A multiple k of "
                                "gradient_accumulation_steps gives k optimizer updates per generation batch.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Learning-rate warmup share of the run.")
    gradient_checkpointing: bool = Field(False, description="Activation checkpointing (slower on CPU).")
    bf16: bool = Field(False, description="bfloat16 mixed precision (GPU).")
    use_vllm: bool = Field(False, description="Generate with vLLM (GPU); G2RL then uses the forward feature route.")
    vllm_mode: Literal["colocate", "server"] = Field("colocate", description="TRL's vLLM mode.")
    cpu_threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default).")
    save_steps: int | None = Field(None, ge=0, description="Checkpoint every N steps (0: never; None: every "
                                   f"tenth of the run, steps // {CHECKPOINTS_PER_RUN}, at least 1), so "
                                   "`workbench run --resume` can continue a stopped run.")
    save_final: bool = Field(True, description="Save a checkpoint of the last step, for `workbench probe`, also "
                             "with save_steps=0 (with save_steps > 0 the Trainer saves the last step anyway).")
    keep_checkpoints: int | None = Field(KEEP_CHECKPOINTS, ge=1, description="Keep only the newest N checkpoints "
                                         "(None: all).")
    output_dir: str = Field(DEFAULT_OUTPUT_DIR, description="Folder of the runs' folders (<run id>/: checkpoints, "
                            "the spool of records not yet in the tracking store).")

    def checkpoint_every(self) -> int:
        """Steps between checkpoints: ``save_steps``, or a tenth of the run where it is None; 0: none."""
        return max(1, self.steps // CHECKPOINTS_PER_RUN) if self.save_steps is None else self.save_steps


class EvalConfig(Section):
    every: int = Field(0, ge=0, description="Evaluate every N steps (0: only at the end).")
    n: int = Field(8, ge=1, description="Samples per problem (paper: 16).")
    temperature: float = Field(0.8, gt=0, description="Sampling temperature (paper: 0.8).")
    benchmarks: list[str] = Field(default_factory=lambda: ["task"], description="Benchmarks; 'task' = the task's test split.")
    data_dir: str | None = Field(None, description="Folder holding benchmark files (benchmarks/math500.json, "
                                 "gsm8k/test.jsonl, ...).")
    max_problems: int | None = Field(64, ge=1, description="The first N problems per benchmark. None: all.")
    max_new_tokens: int | None = Field(None, ge=1, description="Completion tokens per sample. None: "
                                       "training.max_completion_length.")
    prompts_per_batch: int = Field(8, ge=1, description="Problems per generate call, each sampled n times.")
    n_per_benchmark: dict[str, int] = Field(default_factory=dict, description="Samples per problem for some "
                                            "benchmarks, e.g. {gpqa_diamond: 32}; the others take n.")
    initial: bool = Field(True, description="Evaluate before the first step (step 0), the baseline.")
    final: bool = Field(True, description="Evaluate at the end of the run.")


class TrackingConfig(Section):
    experiment: str = Field(DEFAULT_EXPERIMENT, min_length=1, description="MLflow experiment name.")
    run_name: str | None = Field(None, description="MLflow run name (default method-seed).")
    flush_s: float = Field(10.0, ge=0, description="Seconds between metric writes (0: at once); "
                           "metrics are also written at every checkpoint and when the run ends.")
    system_metrics: bool = Field(False, description="Log MLflow's system metrics (CPU, memory, disk, network, "
                                 "GPU) under system/.")
    system_metrics_s: float = Field(10.0, gt=0, description="Seconds between system-metric samples.")
    finish_wait_s: float = Field(FINISH_WAIT_S, ge=0, description="At the end of a run, seconds to wait for a "
                                 "tracking store that does not answer, before leaving the rest of the record in "
                                 "the run's spool for `workbench sync`.")

    def system_metrics_interval(self) -> float:
        """The sampling interval of MLflow's system metrics; 0 when they are off."""
        return self.system_metrics_s if self.system_metrics else 0.0


class WorkbenchConfig(Section):
    """The sections every run has. :func:`config_class` adds one section per method's options
    (``entropy``, ``evol_rl``, ``g2rl``, a plug-in's own), each declared beside its method."""

    method: str = Field("grpo", description="grpo, entropy, evol_rl, g2rl, or 'module:Class'.")
    seed: int = Field(0, ge=0, description="Run seed (model init of RL, sampling, data order).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _check_names(self) -> WorkbenchConfig:
        from trainers.methods import resolve_method
        from workbench.models.presets import PRESETS
        from workbench.tasks import TASKS

        resolve_method(self.method)
        if self.model.preset != "path":
            PRESETS.get(self.model.preset)
        elif not self.model.name_or_path:
            raise ValueError("model.preset 'path' needs model.name_or_path (a Hugging Face id or folder)")
        TASKS.get(self.task.name)
        every = self.features.semantic_every
        if every not in (None, 1) and resolve_method(self.method).needs_embeddings:
            raise ValueError(f"features.semantic_every={every}: method {self.method!r} reads text embeddings in its "
                             "rewards, so it embeds every step; drop features.semantic_every or set it to 1")
        return self


def config_class(method: str) -> type[WorkbenchConfig]:
    """:class:`WorkbenchConfig` with the options sections of the built-in methods and of ``method``.

    Every run carries the built-in methods' sections, so runs of different
    methods have the same params; a plug-in method (``module:Class``) adds its
    own, which YAML and ``--set`` then reach. Unknown method: UnknownNameError.
    """
    from trainers.methods import builtin_methods, resolve_method

    sections: dict[str, type] = {}
    for cls in [*builtin_methods(), resolve_method(method)]:
        if cls.section is None:
            continue
        if cls.section in WorkbenchConfig.model_fields or sections.get(cls.section, cls.Options) is not cls.Options:
            raise ConfigError(f"method {method!r} is named {cls.name!r}, and its options section of that name is "
                              "taken; rename the method (the class attribute `name`)")
        sections[cls.section] = cls.Options
    return _with_sections(tuple(sections.items()))


@functools.cache
def _with_sections(sections: tuple[tuple[str, type], ...]) -> type[WorkbenchConfig]:
    fields = {name: (options, Field(default_factory=options, description=f"Options of the method with section {name!r}."))
              for name, options in sections}
    return create_model("WorkbenchConfig", __base__=WorkbenchConfig, **fields)


def build_method(cfg: WorkbenchConfig):
    """The :class:`~trainers.method.Method` of ``cfg``, given its own options section only."""
    from trainers.methods import resolve_method

    cls = resolve_method(cfg.method)
    return cls(getattr(cfg, cls.section) if cls.section else None)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the MLflow params of a config."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted == "a.b"``, refusing unknown keys."""
    keys = dotted.split(".")
    node: Any = data
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            where = ".".join(keys[:i]) or "the top level"
            valid = ", ".join(sorted(node)) if isinstance(node, dict) else "none"
            raise ConfigError(f"unknown config key {dotted!r}: {key!r} is not a field of {where}; valid: {valid}")
        if i == len(keys) - 1:
            node[key] = value
        else:
            node = node[key]


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value`` -> (key.path, YAML-parsed value), e.g. ``training.steps=5``."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r} must look like key.path=value, e.g. --set training.steps=50")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file; errors name the file and the line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML at{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(layers: list[dict[str, Any]], overrides: Sequence[str] = ()) -> WorkbenchConfig:
    """Defaults < the preset's defaults < ``layers`` (later wins) < ``key=value`` overrides; validated."""
    data = _merge([_preset_defaults(_merge(layers, overrides)["model"]["preset"]), *layers], overrides)
    return validate(data)


def _merge(layers: list[dict[str, Any]], overrides: Sequence[str]) -> dict[str, Any]:
    data = _config_class_of(_chosen_method(layers, overrides)).model_construct().model_dump()
    for layer in layers:
        data = deep_merge(data, layer)
    for text in overrides:
        key, value = parse_override(text)
        set_path(data, key, value)
    return data


def _preset_defaults(name: Any) -> dict[str, Any]:
    from workbench.models.presets import PRESETS

    return PRESETS.get(name).defaults if isinstance(name, str) and name in PRESETS else {}


def _chosen_method(layers: list[dict[str, Any]], overrides: Sequence[str]) -> Any:
    """The method the layers and ``method=`` overrides choose (the default if none does)."""
    method = WorkbenchConfig.model_fields["method"].default
    for layer in layers:
        method = layer.get("method", method)
    for text in overrides:
        key, value = parse_override(text)
        method = value if key == "method" else method
    return method


def _config_class_of(method: Any) -> type[WorkbenchConfig]:
    """:func:`config_class` of ``method``; for a value that names no method, the built-ins' sections
    (validation then reports the bad method name with the other errors)."""
    from trainers.registry import UnknownNameError

    try:
        return config_class(method if isinstance(method, str) else "grpo")
    except UnknownNameError:
        return config_class("grpo")


def validate(data: dict[str, Any]) -> WorkbenchConfig:
    """Validate a config dict; the error names each bad field, its value and the rule."""
    try:
        return _config_class_of(data.get("method", "grpo") if isinstance(data, dict) else "grpo").model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"]) or "config"
            value = e.get("input")
            if e["type"] == "extra_forbidden":
                lines.append(f"unknown config key {field!r}; check the spelling (see `workbench run --help`)")
            elif field == "config":
                lines.append(str(e.get("ctx", {}).get("error", e["msg"])))
            else:
                lines.append(f"{field}={value!r}: {e['msg']}")
        raise ConfigError("invalid config: " + "; ".join(lines)) from None


def to_yaml(cfg: WorkbenchConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

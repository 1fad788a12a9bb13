"""Config validation: bad values name the field, the value and the allowed range."""

from __future__ import annotations

import pytest

from workbench.config import ConfigError, build_config, flatten, load_yaml, parse_override


def test_defaults_validate():
    cfg = build_config([])
    assert cfg.method == "grpo" and cfg.model.preset == "tiny" and cfg.task.name == "countdown"
    assert (cfg.training.max_completion_length, cfg.eval.n) == (64, 32)  # the tiny preset's countdown settings
    arithmetic = build_config([], ["model.preset=tiny-arithmetic"])
    assert (arithmetic.task.name, arithmetic.training.max_completion_length) == ("arithmetic", 8)


def test_override_sets_nested_field():
    cfg = build_config([], ["training.learning_rate=1e-5", "g2rl.scaler=eq12", "task.operations=['+', '-']"])
    assert cfg.training.learning_rate == pytest.approx(1e-5)
    assert cfg.g2rl.scaler == "eq12"
    assert cfg.task.operations == ["+", "-"]


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("training.learning_rate=-1", ["training.learning_rate", "-1", "greater than 0"]),
        ("training.num_generations=1", ["training.num_generations", "1", "greater than or equal to 2"]),
        ("g2rl.lam=5", ["g2rl.lam", "5", "less than or equal to 2"]),
        ("features.tau=1.5", ["features.tau", "1.5"]),
        ("g2rl.scaler=nope", ["g2rl.scaler", "nope", "paper_text", "eq12"]),
        ("task.operations=['/']", ["operations", "'/'"]),
    ],
)
def test_bad_values_name_field_value_and_rule(override, needles):
    with pytest.raises(ConfigError) as err:
        build_config([], [override])
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize(
    ("layer", "needles"),
    [
        ({"method": "nonsense"}, ["nonsense", "grpo", "g2rl", "evol_rl", "entropy"]),
        ({"task": {"name": "chess"}}, ["chess", "arithmetic", "math", "gsm8k"]),
        ({"model": {"preset": "gpt5"}}, ["gpt5", "tiny", "smollm2-135m"]),
        ({"model": {"preset": "path"}}, ["name_or_path"]),
    ],
)
def test_unknown_names_list_valid_ones(layer, needles):
    with pytest.raises(ConfigError) as err:
        build_config([layer])
    for needle in needles:
        assert needle in str(err.value)


def test_unknown_key_is_refused_with_valid_keys():
    with pytest.raises(ConfigError) as err:
        build_config([], ["training.lr=1"])
    assert "training.lr" in str(err.value) and "learning_rate" in str(err.value)


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("training.steps")


def test_yaml_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  steps: 3\n  lr: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    assert "bad.yaml" in str(err.value) and "line" in str(err.value)


def test_flatten_gives_dotted_params():
    flat = flatten(build_config([]).model_dump(mode="json"))
    assert flat["training.learning_rate"] > 0 and flat["g2rl.scaler"] == "paper_text"

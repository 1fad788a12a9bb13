"""A researcher's own method, in their own module, runs without editing this package."""

from __future__ import annotations

import dataclasses
import sys
import textwrap

import numpy as np
import pytest

from analysis import compare
from analysis.loaders import load_dumps, runs_table
from conftest import SMALL
from trainers.methods import resolve_method
from workbench.cli import main
from workbench.config import ConfigError, build_config, build_method, load_yaml
from trainers.registry import UnknownNameError

PLUGIN = textwrap.dedent('''
    import numpy as np
    from pydantic import Field
    from trainers.method import Method, MethodOptions, Shaped, StepBatch

    class NoAnswerPenalty(Method):
        """Verifier reward, minus 0.5 when no answer could be extracted."""

        score_columns = ("novelty",)

        def shape(self, batch: StepBatch) -> Shaped:
            base = batch.correct.astype(float)
            shaped = base - 0.5 * ~batch.has_answer
            return Shaped(base_reward=base, shaped_reward=shaped, scores={"novelty": np.full(len(base), 0.25)},
                          metrics={"plugin/no_answer": float((~batch.has_answer).mean())})

    class NotAMethod:
        pass


    class PenaltyOptions(MethodOptions):
        penalty: float = Field(0.5, ge=0, description="Subtracted when no answer was extracted.")


    class ScaledPenalty(Method):
        """Its own options section and its own score column."""

        name = "penalty"
        Options = PenaltyOptions
        score_columns = ("missing",)

        def shape(self, batch: StepBatch) -> Shaped:
            base = batch.correct.astype(float)
            missing = (~batch.has_answer).astype(float)
            return Shaped(base_reward=base, shaped_reward=base - self.options.penalty * missing,
                          scores={"missing": missing})


    class TakesTraining(Method):
        name = "training"
        Options = PenaltyOptions
''')


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "my_methods.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_methods"
    sys.modules.pop("my_methods", None)


def test_module_path_resolves_and_is_checked(plugin_module):
    assert resolve_method("my_methods:NoAnswerPenalty").__name__ == "NoAnswerPenalty"
    with pytest.raises(UnknownNameError, match="not a subclass"):
        resolve_method("my_methods:NotAMethod")
    with pytest.raises(UnknownNameError, match="has no attribute"):
        resolve_method("my_methods:Missing")


def test_plugin_trains_and_records_its_rewards(store, model_cache, plugin_module):
    argv = ["run", "--method", "my_methods:NoAnswerPenalty", "--experiment", "plugin"]
    for override in SMALL:
        argv += ["--set", override]
    assert main(argv) == 0
    runs = runs_table("plugin", store)
    assert runs["method"].tolist() == ["my_methods:NoAnswerPenalty"]
    dumps = load_dumps(runs["run_id"].iloc[0], store)
    expected = dumps["correct"].astype(float) - 0.5 * dumps["answer"].isna()
    np.testing.assert_allclose(dumps["shaped_reward"], expected)
    assert (dumps["novelty"] == 0.25).all()
    assert "metric.plugin/no_answer" in runs.columns


def test_a_plugin_declares_its_own_options_section(plugin_module, tmp_path):
    yaml_file = tmp_path / "plugin.yaml"
    yaml_file.write_text("method: my_methods:ScaledPenalty\npenalty:\n  penalty: 0.75\n")
    assert build_config([load_yaml(yaml_file)]).penalty.penalty == 0.75  # the YAML path
    yaml_file.write_text("method: my_methods:ScaledPenalty\npenalty:\n  penalty: -2\n")
    with pytest.raises(ConfigError, match="penalty.penalty"):
        build_config([load_yaml(yaml_file)])
    cfg = build_config([{"method": "my_methods:ScaledPenalty"}], ["penalty.penalty=0.25"])
    assert cfg.penalty.penalty == 0.25 and cfg.g2rl.lam == 1.0  # the built-ins' sections are always there
    method = build_method(cfg)
    assert method.options is cfg.penalty  # handed its own section only
    with pytest.raises(ConfigError, match="penalty.penalty=-1"):
        build_config([{"method": "my_methods:ScaledPenalty"}], ["penalty.penalty=-1"])
    with pytest.raises(ConfigError, match="'nope' is not a field of penalty; valid: penalty"):
        build_config([{"method": "my_methods:ScaledPenalty"}], ["penalty.nope=1"])
    with pytest.raises(ConfigError, match="unknown config key 'penalty.penalty'"):  # grpo has no such section
        build_config([{"method": "grpo"}], ["penalty.penalty=0.25"])
    with pytest.raises(ConfigError, match="named 'training', and its options section of that name is taken"):
        build_config([{"method": "my_methods:TakesTraining"}])


def test_a_plugins_options_and_scores_reach_the_run(store, model_cache, plugin_module):
    argv = ["run", "--method", "my_methods:ScaledPenalty", "--experiment", "plugin-options", "--set",
            "penalty.penalty=0.25"]
    for override in SMALL:
        argv += ["--set", override]
    assert main(argv) == 0
    runs = runs_table("plugin-options", store)
    assert runs["param.penalty.penalty"].iloc[0] == "0.25"
    dumps = load_dumps(runs["run_id"].iloc[0], store)
    missing = dumps["answer"].isna().astype(float)
    np.testing.assert_allclose(dumps["missing"], missing)  # the method's own score column is dumped
    assert compare.score_columns(dumps) == ["missing"]  # ... and read as its score, with no list to extend
    assert "missing" in compare.samples_table(dumps).columns
    np.testing.assert_allclose(dumps["shaped_reward"], dumps["correct"].astype(float) - 0.25 * missing)


def test_a_method_is_named_once_and_its_section_follows(plugin_module):
    """The class's name is its registry name and its config section; a section set by hand is refused."""
    from trainers.method import METHODS, Method

    assert resolve_method("my_methods:NoAnswerPenalty").name == "noanswerpenalty"  # the class name, lower case
    scaled = resolve_method("my_methods:ScaledPenalty")
    assert (scaled.name, scaled.section) == ("penalty", "penalty")
    assert resolve_method("my_methods:NoAnswerPenalty").section is None  # no options, no section
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert cls.name == name and cls.section in (None, name), cls
    with pytest.raises(TypeError, match=r"sets `section = 'mine'`.*set `name = 'mine'` instead"):
        type("Mine", (Method,), {"section": "mine"})
    with pytest.raises(TypeError, match=r"name = 'my-method' is not a Python identifier"):
        type("Mine", (Method,), {"name": "my-method"})


def test_a_plugins_options_are_fields_of_its_trl_config(plugin_module):
    """G2RLConfig-style: the plug-in's options become ``<name>_<option>`` fields of a TRL config, made from
    its options model with nothing written by hand, validated by the same rules as the YAML and --set paths."""
    from trainers.trl_options import method_config
    from trl import TrlParser

    scaled = resolve_method("my_methods:ScaledPenalty")
    config = method_config(scaled)
    args = config(output_dir="x", report_to="none", use_cpu=True, penalty_penalty=0.25)
    assert args.method_options() == scaled.Options(penalty=0.25)
    assert scaled(args.method_options()).options.penalty == 0.25
    with pytest.raises(ValueError, match=r"penalty_penalty=-1: Input should be greater than or equal to 0"):
        config(output_dir="x", report_to="none", use_cpu=True, penalty_penalty=-1)
    (parsed,) = TrlParser((config,)).parse_args_into_dataclasses(
        ["--output_dir", "x", "--report_to", "none", "--use_cpu", "true", "--penalty_penalty", "0.75"])
    assert parsed.method_options().penalty == 0.75
    help_text = {f.name: f.metadata.get("help") for f in dataclasses.fields(config)}
    assert help_text["penalty_penalty"] == scaled.Options.model_fields["penalty"].description

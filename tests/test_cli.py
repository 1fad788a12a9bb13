"""The CLI as a function: bad input fails fast, names the fix, and records nothing."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from workbench.cli import main


def _runs(uri: str) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["run", "--method", "nonsense"], ["unknown method 'nonsense'", "g2rl"]),
        (["run", "--set", "training.learning_rate=-1"], ["training.learning_rate=-1", "greater than 0"]),
        (["run", "--task", "chess"], ["unknown task 'chess'", "arithmetic"]),
        (["run", "--preset", "gpt5"], ["unknown preset 'gpt5'", "tiny"]),
        (["run", "--config", "missing.yaml"], ["missing.yaml", "does not exist"]),
        (["run", "--method", "no_such_module:Thing"], ["no_such_module"]),
    ],
)
def test_bad_input_fails_with_message_and_no_run(store, capsys, argv, needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err
    assert _runs(store) == 0


def test_bad_input_fails_fast_in_a_fresh_process(store):
    """A new user's typo: the process exits non-zero with the message, importing no torch."""
    code = "import sys; from workbench.cli import main; rc = main(['run', '--method', 'nonsense']); " \
           "print('torch' in sys.modules); sys.exit(rc)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown method 'nonsense'" in proc.stderr
    assert proc.stdout.strip() == "False"


def test_config_prints_resolved_yaml(capsys):
    assert main(["config", "--method", "g2rl", "--set", "g2rl.lam=0.5", "--steps", "7"]) == 0
    out = capsys.readouterr().out
    assert "method: g2rl" in out and "lam: 0.5" in out and "steps: 7" in out


def test_runs_on_empty_store_says_how_to_start(store, capsys):
    assert main(["runs", "--experiment", "nothing-here"]) == 0
    assert "workbench run" in capsys.readouterr().out


def test_help_on_every_command(capsys):
    for argv in (["--help"], ["run", "--help"], ["runs", "--help"], ["config", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
    assert "--set" in capsys.readouterr().out


def _option_help(capsys, monkeypatch, argv: list[str], option: str) -> str:
    """The help text of ``option`` in ``workbench ARGV --help``, on one line (no wrapping at 1000 columns)."""
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith(f"{option} ")]
    assert len(lines) == 1, lines
    return lines[0]


def _listed(text: str) -> set[str]:
    """The names a help text lists, split at commas and spaces."""
    return set(re.split(r"[\s,:]+", text))


@pytest.mark.parametrize(("command", "option"), [("run", "--method"), ("config", "--method"), ("sweep", "--methods")])
def test_help_lists_every_registered_method(capsys, monkeypatch, command, option):
    from trainers.method import METHODS

    assert {"grpo", "entropy", "evol_rl", "g2rl"} <= set(METHODS.names())  # the built-ins registered themselves
    assert set(METHODS.names()) <= _listed(_option_help(capsys, monkeypatch, [command], option))


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_help_lists_every_preset_and_task_and_marks_the_defaults(capsys, monkeypatch, command):
    from workbench.config import ModelConfig, TaskConfig
    from workbench.models.presets import PRESETS
    from workbench.tasks import TASKS

    presets = _option_help(capsys, monkeypatch, [command], "--preset")
    assert set(PRESETS.names()) <= _listed(presets)
    assert f"{ModelConfig.model_fields['preset'].default} (default)" in presets
    tasks = _option_help(capsys, monkeypatch, [command], "--task")
    assert set(TASKS.names()) <= _listed(tasks)
    assert f"{TaskConfig.model_fields['name'].default} (default)" in tasks


def test_sweep_probe_help_lists_every_benchmark(capsys, monkeypatch):
    from workbench.tasks import BENCHMARKS

    assert set(BENCHMARKS.names()) <= _listed(_option_help(capsys, monkeypatch, ["sweep"], "--probe"))


def test_help_follows_the_registry(capsys, monkeypatch):
    """A method registered before the parser is built is listed: the help is read from the registry."""
    from trainers.methods.grpo import GRPO
    from trainers.method import METHODS

    monkeypatch.setitem(METHODS._items, "zz_new_method", GRPO)
    assert "zz_new_method" in _listed(_option_help(capsys, monkeypatch, ["run"], "--method"))
    assert "zz_new_method" in _listed(_option_help(capsys, monkeypatch, ["sweep"], "--methods"))


def _subparser(name: str):
    from workbench.cli import parser

    (sub,) = [a for a in parser()._actions if a.dest == "command"]
    return sub.choices[name]


def test_eval_flags_take_the_eval_config_defaults_and_descriptions():
    """``workbench eval``'s sampling flags are EvalConfig's fields: the same defaults, so they cannot drift."""
    from workbench.config import EvalConfig, WorkbenchConfig
    from workbench.experiments.eval_cmd import FLAGS, eval_config, first_sentence

    eval_parser = _subparser("eval")
    args = eval_parser.parse_args(["--model", "tiny"])
    fields = EvalConfig.model_fields
    assert set(FLAGS) == {"n", "temperature", "max_problems", "max_new_tokens", "prompts_per_batch", "data_dir"}
    for field in FLAGS:
        assert getattr(args, field) == fields[field].default, field
    assert args.seed == WorkbenchConfig.model_fields["seed"].default
    settings = eval_config(args)
    assert settings.model_dump(include=set(FLAGS)) == EvalConfig().model_dump(include=set(FLAGS))
    assert eval_config(eval_parser.parse_args(["--model", "tiny", "--max-problems", "0"])).max_problems is None
    helps = {a.option_strings[0]: a.help for a in eval_parser._actions if a.option_strings}
    for field, flag in FLAGS.items():
        words = first_sentence(fields[field].description).split(" (")[0]
        assert words.lower() in helps[flag].lower(), (flag, words)  # from the field's description


@pytest.mark.parametrize(("argv", "message"), [
    (["--n", "0"], "--n 0 must be >= 1"),
    (["--temperature", "0"], "--temperature 0.0 must be > 0 (sampling"),
    (["--max-problems", "-1"], "--max-problems -1 must be >= 1 (or 0: all)"),
    (["--batch", "0"], "--batch 0 must be >= 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0 must be >= 1"),
    (["--seed", "-1"], "--seed -1 must be >= 0"),
])
def test_bad_eval_flags_name_the_flag_and_the_rule(argv, message):
    from workbench.config import ConfigError
    from workbench.experiments.eval_cmd import eval_config

    with pytest.raises(ConfigError) as err:
        eval_config(_subparser("eval").parse_args(["--model", "tiny", *argv]))
    assert message in str(err.value)


def test_help_lists_every_registered_benchmark_and_preset():
    from workbench.models.presets import PRESETS
    from workbench.tasks import BENCHMARKS

    for command, flags in (("eval", ("--benchmarks", "--model")), ("probe", ("--benchmark", "--preset"))):
        helps = {a.option_strings[0]: a.help for a in _subparser(command)._actions if a.option_strings}
        benchmarks, presets = (helps[flag] for flag in flags)
        assert all(name in benchmarks for name in BENCHMARKS.names()), (command, benchmarks)
        assert all(name in presets for name in PRESETS.names()), (command, presets)

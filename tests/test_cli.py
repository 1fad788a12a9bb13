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
    from trainers.methods import BUILTINS

    assert len(METHODS.names()) >= len(BUILTINS)  # the built-ins are registered: the check below is not empty
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
    from trainers.grpo import GRPO
    from trainers.method import METHODS

    monkeypatch.setitem(METHODS._items, "zz_new_method", GRPO)
    assert "zz_new_method" in _listed(_option_help(capsys, monkeypatch, ["run"], "--method"))
    assert "zz_new_method" in _listed(_option_help(capsys, monkeypatch, ["sweep"], "--methods"))

"""Sweeps for a scheduler: ``--list`` prints one command per cell, ``--cell K`` runs cell K alone, cells
run concurrently into one tracking server, and a killed cell resumes from its checkpoint."""

from __future__ import annotations

import collections
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.loaders import artifact_steps, load_dumps, metric_history, runs_table
from analysis.report import report_table
from conftest import SMALL
from test_server import server  # noqa: F401  the `mlflow server` fixture
from workbench.cli import main, parser
from workbench.config import ConfigError
from workbench.experiments.sweep import cell_configs, check_cell, config_hash, config_layers, sweep
from workbench.run.launch import RESUMED_TAG, last_checkpoint

GRID = ["sweep", "--methods", "grpo,g2rl", "--seeds", "0,1", "--experiment", "grid"]
BASE = [{"model": {"preset": "tiny"}, "training": {"steps": 20}}]


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _configs_of(argv: list[str]):
    args = parser().parse_args(argv)
    return args, cell_configs(args.methods.split(","), [int(s) for s in args.seeds.split(",")],
                              config_layers(args), args.overrides, args.experiment)


def test_list_prints_one_command_per_cell_that_builds_that_cell(capsys):
    argv = [*GRID, "--preset", "tiny", "--steps", "7", "--set", "training.beta=0.1"]
    assert main([*argv, "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    _, configs = _configs_of(argv)
    assert len(lines) == len(configs) == 4
    for k, line in enumerate(lines):
        command = shlex.split(line)
        assert command[0] == "workbench"
        args, listed = _configs_of(command[1:])
        assert args.cell == k and listed == configs  # the same grid, config and experiment, cell k
    assert [(c.method, c.seed) for c in configs] == [("grpo", 0), ("grpo", 1), ("g2rl", 0), ("g2rl", 1)]

    assert main([*argv, "--list", "--json"]) == 0
    cells = json.loads(capsys.readouterr().out)
    assert [c["command"] for c in cells] == lines
    assert [(c["cell"], c["method"], c["seed"], c["config_hash"]) for c in cells] == [
        (k, cfg.method, cfg.seed, config_hash(cfg)) for k, cfg in enumerate(configs)]


@pytest.mark.parametrize(("extra", "needle"), [
    (["--cell", "4"], "--cell 4 is out of range: this sweep has 4 cells, numbered 0 to 3"),
    (["--cell", "-1"], "--cell -1 is out of range"),
    (["--json"], "--json only changes what --list prints; add --list"),
    (["--list", "--cell", "1"], "give one of the two"),
])
def test_bad_cell_flags_are_refused_before_anything_runs(store, capsys, extra, needle):
    assert main([*GRID, *extra]) == 2
    err = capsys.readouterr().err
    assert needle in err and "workbench: error:" in err
    assert not Path(store.removeprefix("sqlite:///")).exists()  # refused before the store was opened


def test_a_whole_sweep_under_a_multi_process_launcher_is_refused(store, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert main(GRID) == 2
    assert "one of 8 processes (torchrun / accelerate launch), which train one cell together: add --cell K" in \
        capsys.readouterr().err
    assert main([*GRID, "--cell", "0", "--probe", "task"]) == 2
    assert "--probe task samples on one process, and this is one of 8" in capsys.readouterr().err
    assert not Path(store.removeprefix("sqlite:///")).exists()


def test_cells_checkpoint_as_every_run_does():
    from workbench.config import build_config

    (cfg,) = cell_configs(["g2rl"], [0], BASE, [], "grid")
    assert (cfg.training.checkpoint_every(), cfg.training.keep_checkpoints) == (2, 2)  # a tenth of 20 steps
    assert cfg.training == build_config(BASE).training  # a plain run's default, declared once
    assert build_config([], ["training.steps=5"]).training.checkpoint_every() == 1  # at least one a step
    (own,) = cell_configs(["g2rl"], [0], BASE, ["training.save_steps=5"], "grid")
    (never,) = cell_configs(["g2rl"], [0], [*BASE, {"training": {"save_steps": 0}}], [], "grid")  # a YAML's
    assert own.training.checkpoint_every() == 5 and never.training.checkpoint_every() == 0
    assert config_hash(own) == config_hash(cfg)  # the cadence does not change what a cell computes
    assert check_cell(3, 4) == 3
    with pytest.raises(ConfigError, match="--cell 4 is out of range"):
        check_cell(4, 4)


class FakeTrain:
    """Stands in for ``workbench.run.train.train``: logs a step and writes a checkpoint of it; a cell in
    ``stop`` is interrupted there as SIGTERM would (the run is then KILLED)."""

    def __init__(self, stop: tuple[tuple[str, int], ...] = ()) -> None:
        self.stop = set(stop)
        self.calls: list[tuple[str, int, str | None]] = []

    def __call__(self, cfg, tracker, resume_from_checkpoint=None):
        from workbench.run.launch import checkpoint_dir

        self.calls.append((cfg.method, cfg.seed, resume_from_checkpoint and Path(resume_from_checkpoint).name))
        tracker.log_metrics({"train/reward": 0.5}, step=1)
        folder = checkpoint_dir(cfg, tracker.run_id) / "checkpoint-1"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "trainer_state.json").write_text('{"global_step": 1}')
        if (cfg.method, cfg.seed) in self.stop:
            self.stop.discard((cfg.method, cfg.seed))
            raise KeyboardInterrupt("signal 15")


def test_cell_k_runs_alone_and_a_killed_cell_resumes_in_its_own_run(store):
    fake = FakeTrain(stop=(("g2rl", 0),))
    with pytest.raises(KeyboardInterrupt):
        sweep(["grpo", "g2rl"], [0, 1], BASE, [], "grid", train_fn=fake, cells=[2])
    assert fake.calls == [("g2rl", 0, None)]
    (killed,) = runs_table("grid", store).itertuples()
    assert killed.status == "KILLED"

    results = sweep(["grpo", "g2rl"], [0, 1], BASE, [], "grid", train_fn=fake, cells=[2, 1])
    assert fake.calls[1:] == [("g2rl", 0, "checkpoint-1"), ("grpo", 1, None)]
    assert [(r.method, r.seed, r.status) for r in results] == [("g2rl", 0, "resumed"), ("grpo", 1, "finished")]
    assert results[0].run_id == killed.run_id  # the same run goes on
    runs = runs_table("grid", store)
    assert sorted(runs["status"]) == ["FINISHED", "FINISHED"]
    resumed = runs.set_index("run_id").loc[killed.run_id]
    assert resumed["method"] == "g2rl"
    from workbench.tracking import client

    assert client(store).get_run(killed.run_id).data.tags[RESUMED_TAG] == "1"


def _parents(uri: str, experiment: str, kind: str = "sweep") -> list:
    from workbench.tracking import client

    c = client(uri)
    return c.search_runs([c.get_experiment_by_name(experiment).experiment_id],
                         filter_string=f"tags.`workbench.kind` = '{kind}'")


def test_cells_are_nested_under_one_parent_run_that_a_rerun_reuses(store):
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from analysis import loaders
    from analysis.records import KIND_TAG, PARENT_TAG, STUDY_KIND, SWEEP_KIND

    assert PARENT_TAG == MLFLOW_PARENT_RUN_ID  # the tag MLflow's UI nests runs by
    assert (loaders.KIND_TAG, set(loaders.PARENT_KINDS)) == (KIND_TAG, {SWEEP_KIND, STUDY_KIND})  # what readers skip
    fake = FakeTrain(stop=(("g2rl", 1),))
    with pytest.raises(KeyboardInterrupt):
        sweep(["grpo", "g2rl"], [0, 1], BASE, [], "grid", train_fn=fake)
    (parent,) = _parents(store, "grid")
    assert (parent.info.run_name, parent.info.status) == ("grid", "KILLED")  # stopped with its last cell
    cells = _runs(store, "grid")
    assert len(cells) == 4 and {c.data.tags[PARENT_TAG] for c in cells} == {parent.info.run_id}

    results = sweep(["grpo", "g2rl"], [0, 1], BASE, [], "grid", train_fn=fake)  # again: one cell resumes
    assert [r.status for r in results] == ["skipped", "skipped", "skipped", "resumed"]
    (again,) = _parents(store, "grid")
    assert (again.info.run_id, again.info.status) == (parent.info.run_id, "FINISHED")
    from workbench.tracking import client

    assert client(store).get_run(results[-1].run_id).data.tags[PARENT_TAG] == parent.info.run_id
    assert sorted(runs_table("grid", store)["run_id"]) == sorted(r.run_id for r in results)  # no parent row


def test_cells_that_start_at_once_settle_on_one_parent(store):
    """Two processes both find no parent and create one: each keeps the older, the newer is deleted."""
    from workbench.tracking import client, experiment_id, find_or_create_parent

    c = client(store)
    exp = experiment_id(c, "grid")

    class Racing:
        """The client of a process that another one beats to it: that one's parent is created first."""

        def __getattr__(self, name):
            return getattr(c, name)

        def create_run(self, *args, **kwargs):
            self.other = c.create_run(*args, **kwargs).info.run_id
            time.sleep(0.01)  # a later start time
            self.mine = c.create_run(*args, **kwargs).info.run_id
            return c.get_run(self.mine)

    racing = Racing()
    assert find_or_create_parent(racing, exp, "sweep", "grid") == racing.other
    assert c.get_run(racing.mine).info.lifecycle_stage == "deleted"
    assert find_or_create_parent(c, exp, "sweep", "grid") == racing.other  # the other process's answer
    assert [r.info.run_id for r in _parents(store, "grid")] == [racing.other]


# --------------------------------------------------------------------------- real cells, real processes


def _warm_model_cache() -> None:
    """Build the tiny preset once here, so concurrent cells find it cached (shrunk as in conftest.SMALL)."""
    from workbench.config import build_config
    from workbench.models.presets import PRESETS

    cfg = build_config([], SMALL)
    PRESETS.get(cfg.model.preset).load(cfg)


@pytest.mark.timeout(600)
def test_two_cells_run_as_concurrent_processes_into_one_server(server, model_cache, tmp_path, monkeypatch,  # noqa: F811
                                                               capsys):
    url, _ = server
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    _warm_model_cache()
    # conftest.SMALL (3 steps of 4 prompts x 4 completions), plus a final evaluation of 4 problems x 2 samples
    # for the report.
    grid = ["sweep", "--methods", "grpo,g2rl", "--seeds", "0", "--experiment", "cells",
            *_sets([*SMALL, "eval.final=true", "eval.max_problems=4", "eval.n=2"])]
    assert main([*grid, "--list"]) == 0
    commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    assert len(commands) == 2
    logs = [open(tmp_path / f"cell{k}.log", "w") for k in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "workbench.cli", *command[1:]], cwd=tmp_path, stdout=log,
                              stderr=subprocess.STDOUT, env=dict(os.environ)) for command, log in zip(commands, logs)]
    for proc, log in zip(procs, logs):
        proc.wait(timeout=540)
        log.close()
    for k, proc in enumerate(procs):
        assert proc.returncode == 0, (tmp_path / f"cell{k}.log").read_text()[-3000:]

    runs = runs_table("cells", url)
    assert sorted(zip(runs["method"], runs["status"])) == [("g2rl", "FINISHED"), ("grpo", "FINISHED")]
    pids = {client_run.data.tags["workbench.pid"] for client_run in _runs(url, "cells")}
    assert pids == {str(p.pid) for p in procs}  # each cell was written by its own process
    table = report_table("cells", url)
    assert sorted(table.index) == ["g2rl", "grpo"] and (table.drop(columns="seeds") != "").all().all()

    assert main(grid) == 0  # the whole sweep, run again: both cells are done
    assert "already finished" in capsys.readouterr().err
    assert len(runs_table("cells", url)) == 2
    assert len(_parents(url, "cells")) == 1  # the two processes, started together, settled on one parent


def _runs(uri: str, experiment: str) -> list:
    """The cell runs of ``experiment`` (not its sweep's parent run)."""
    from workbench.tracking import client

    c = client(uri)
    return c.search_runs([c.get_experiment_by_name(experiment).experiment_id], filter_string="tags.config_hash != ''")


STEPS, SAVE = 8, 2
KILL_GRID = ["sweep", "--methods", "g2rl", "--seeds", "0", "--experiment", "killed",
             *_sets([*SMALL, f"training.steps={STEPS}", f"training.save_steps={SAVE}"])]


@pytest.mark.timeout(600)
def test_a_sigkilled_cell_resumes_from_its_checkpoint_when_the_sweep_runs_again(store, model_cache, tmp_path):
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", *KILL_GRID, "--cell", "0"], cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    deadline = time.monotonic() + 300  # includes the warm start when the model cache is cold
    dumps: list[Path] = []
    try:  # SIGKILL once the dump of step 5 exists: checkpoint-4 is saved, step 5 partly logged
        while time.monotonic() < deadline and proc.poll() is None and not dumps:
            dumps = list(tmp_path.glob("mlartifacts/*/artifacts/features/step_000005.parquet"))
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
    assert dumps and proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    run_id = dumps[0].parents[2].name
    (killed,) = _runs(store, "killed")
    assert killed.info.run_id == run_id and killed.info.status == "RUNNING"  # SIGKILL leaves no chance to close
    checkpoint, n = last_checkpoint(tmp_path / "outputs" / run_id)
    assert checkpoint is not None and SAVE <= n < STEPS

    assert main(KILL_GRID) == 0  # the whole sweep again: the dead cell is marked KILLED and resumed
    (resumed,) = _runs(store, "killed")
    assert resumed.info.run_id == run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags[RESUMED_TAG] == str(n)
    # Every step is there, and the loaders see each once (a step the killed process logged after its
    # checkpoint was logged again by the resumed one; the loader keeps the later value).
    for key in resumed.data.metrics:
        if key.startswith(("train/", "geometry/", "g2rl/")):
            assert metric_history(run_id, key, store)["step"].tolist() == list(range(1, STEPS + 1)), key
    assert artifact_steps(run_id, store) == list(range(1, STEPS + 1))
    dumps = load_dumps(run_id, store)
    per_step = collections.Counter(dumps["step"])
    assert sorted(per_step) == list(range(1, STEPS + 1)) and set(per_step.values()) == {16}  # 4 prompts x 4
    assert runs_table("killed", store)["last_step"].tolist() == [STEPS]

"""``workbench probe`` on a real short run of the default: its dump, its geometry, its tags, its inputs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import SMALL
from mlflow.tracking import MlflowClient

from analysis.geometry import geometry_metrics
from analysis.loaders import load_dumps, metric_history, stack
from workbench.cli import main
from workbench.config import build_config
from analysis.records import DUMP_COLUMNS
from workbench.tasks import build_task
from workbench.run.launch import start_tracker
from workbench.run.train import train

# Shrunk for 2 cores: 3 problems x 3 samples of at most 12 tokens exercise every part of a probe.
PROBE = ["--n", "3", "--max-problems", "3", "--max-new-tokens", "12"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, model_cache):
    """A finished 3-step g2rl run of the default (SMALL) with its checkpoints, in a store of its own that
    the tests of this module share (one training for all); (run id, config, store URI, working folder)."""
    folder = tmp_path_factory.mktemp("probe")
    uri = f"sqlite:///{folder / 'mlruns.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        cfg = build_config([{"method": "g2rl", "seed": 2}], SMALL)
        tracker = start_tracker(cfg)
        train(cfg, tracker)
        tracker.finish()
    return tracker.run_id, cfg, uri, folder


@pytest.fixture
def store(trained, monkeypatch) -> str:
    """The shared store of :func:`trained`, from its working folder."""
    monkeypatch.chdir(trained[3])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained[2])
    return trained[2]


def probe_named(store: str, name: str):
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`workbench.kind` = 'probe' and attributes.run_name = '{name}'")
    assert len(runs) == 1, name
    return runs[0]


def test_probe_of_a_run_logs_geometry_that_its_dump_reproduces(trained, store, capsys):
    run_id, cfg = trained[:2]
    assert main(["probe", run_id, *PROBE, "--run-name", "of-run"]) == 0
    probe = probe_named(store, "of-run")
    tags = probe.data.tags
    assert (tags["workbench.kind"], tags["workbench.probe_of"], tags["method"], tags["seed"]) == (
        "probe", run_id, "g2rl", "2")
    assert probe.info.experiment_id == MlflowClient(tracking_uri=store).get_run(run_id).info.experiment_id
    assert "probe run" in capsys.readouterr().err

    dump = load_dumps(probe.info.run_id, store)
    assert list(dump.columns[1:]) == list(DUMP_COLUMNS)
    assert len(dump) == 9 and set(dump["step"]) == {cfg.training.steps}  # the final checkpoint's step
    assert dump.groupby("group")["sample"].apply(sorted).map(list).tolist() == [[0, 1, 2]] * 3
    task = build_task(cfg.task)
    gold = {p.id: p.answer for p in task.problems("test")}
    verdicts = [task.verify(text, gold[pid]) for text, pid in zip(dump["completion"], dump["prompt_id"])]
    assert dump["correct"].tolist() == [v.correct for v in verdicts]  # the verifier's verdicts

    recomputed = geometry_metrics(stack(dump, "grad_feature"), stack(dump, "embedding"), dump["group"].to_numpy(),
                                  dump["correct"].to_numpy(), tau=cfg.features.tau)
    assert {"geometry/grad_cos_mean", "geometry/neg_frac", "geometry/sem_cos_mean"} <= set(recomputed)
    for key, value in recomputed.items():
        logged = metric_history(probe.info.run_id, key, store)
        assert logged["step"].tolist() == [cfg.training.steps], key
        assert np.isclose(logged["value"].item(), value, atol=1e-6), key


def test_probe_of_a_checkpoint_folder_and_of_a_model_folder(trained, store, tmp_path):
    run_id, cfg, _, folder = trained
    checkpoint = folder / "outputs" / run_id / f"checkpoint-{cfg.training.steps}"
    assert main(["probe", "--checkpoint", str(checkpoint), *PROBE, "--run-name", "of-folder"]) == 0
    probe = probe_named(store, "of-folder")  # a checkpoint in a run's folder is a probe of that run
    assert probe.data.tags["workbench.probe_of"] == run_id
    assert probe.data.tags["workbench.probe_step"] == str(cfg.training.steps)

    model = tmp_path / "elsewhere" / "my-model"
    shutil.copytree(checkpoint, model)
    (model / "trainer_state.json").unlink()
    assert main(["probe", "--model", str(model), "--seed", "5", *PROBE, "--run-name", "of-model"]) == 0
    alone = probe_named(store, "of-model")
    assert "workbench.probe_of" not in alone.data.tags
    assert (alone.data.tags["method"], alone.data.tags["seed"], alone.data.tags["workbench.probe_step"]) == (
        "base", "5", "0")
    assert len(load_dumps(alone.info.run_id, store)) == 9


def test_bad_input_names_the_value_and_the_fix(trained, store, tmp_path, capsys):
    run_id, cfg, _, folder = trained
    before = len(MlflowClient(tracking_uri=store).search_runs([e.experiment_id for e in
                                                               MlflowClient(tracking_uri=store).search_experiments()]))
    cases = [
        (["probe", "0123abcd"], "no run '0123abcd'"),
        # A checkpoint every step (a tenth of 3 steps, at least 1), the newest 2 kept: step 1's is gone.
        (["probe", run_id, "--step", "1"], f"no checkpoint of step 1 in {folder / 'outputs' / run_id} "
                                           f"(saved steps: {cfg.training.steps - 1}, {cfg.training.steps})"),
        (["probe", "--checkpoint", str(tmp_path / "nope")], "the folder does not exist"),
        (["probe", run_id, "--preset", "tiny"], "got RUN_ID and --preset"),
        (["probe", "--preset", "tiny", "--step", "3"], "--step 3 picks a checkpoint of a run"),
        (["probe", run_id, "--benchmark", "aime25"], "pass its path, or data_dir"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    outputs = folder / "outputs" / run_id
    outputs.rename(tmp_path / "moved")
    try:
        assert main(["probe", run_id]) == 2
    finally:
        (tmp_path / "moved").rename(outputs)
    assert "training.save_final=false" in capsys.readouterr().err
    client = MlflowClient(tracking_uri=store)
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == before  # nothing new


def test_sweep_probes_each_finished_cell_once(store, capsys):
    # One 3-step cell (SMALL); a held-out split of 3 problems keeps the probe's defaults (8 samples, all) small.
    argv = ["sweep", "--methods", "grpo", "--seeds", "0", "--experiment", "grid", "--probe", "task",
            *[a for item in [*SMALL, "task.num_test=3"] for a in ("--set", item)]]
    assert main(argv) == 0
    client = MlflowClient(tracking_uri=store)
    grid = client.get_experiment_by_name("grid").experiment_id
    (cell,) = client.search_runs([grid], filter_string="tags.method = 'grpo' and tags.config_hash != ''")
    (probe,) = client.search_runs([grid], filter_string="tags.`workbench.kind` = 'probe'")
    assert probe.data.tags["workbench.probe_of"] == cell.info.run_id
    assert probe.data.params["n"] == "8" and len(load_dumps(probe.info.run_id, store)) == 3 * 8
    capsys.readouterr()
    assert main(argv) == 0  # again: the cell and its probe are skipped
    assert "probed before" in capsys.readouterr().err
    assert len(client.search_runs([grid])) == 3  # the cell, its probe and the sweep's parent run
    assert main(["sweep", "--methods", "grpo", "--probe", "aime25"]) == 2  # checked before any cell trains

"""Sweeps resume (finished cells skipped, failed and dead ones rerun), reports read eval metrics, eval records a run."""

from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest

from analysis.loaders import runs_table
from analysis.passk import mean_ci_over_seeds
from analysis.report import report_data, report_table, to_markdown
from workbench.cli import USER_ERRORS
from workbench.config import ConfigError
from workbench.experiments.report import add_report_parser, write_report
from analysis.records import HASH_TAG, HOST_TAG, PID_TAG
from workbench.experiments.sweep import add_sweep_parser, cell_configs, config_hash, sweep

BASE = [{"model": {"preset": "tiny"}, "training": {"steps": 2}}]


def _main(argv: list[str]) -> int:
    """``workbench.cli.main`` for the sweep / report / eval subcommands (until cli.py registers them)."""
    from workbench.experiments.eval_cmd import add_eval_parser

    parser = argparse.ArgumentParser(prog="workbench")
    sub = parser.add_subparsers(dest="command", required=True)
    add_sweep_parser(sub)
    add_report_parser(sub)
    add_eval_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"workbench: error: {err}", file=sys.stderr)
        return 2


def _runs(uri: str, experiment: str) -> list:
    """The runs of ``experiment`` but its sweep's parent run, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = [] if exp is None else client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    return [r for r in runs if r.data.tags.get("workbench.kind") != "sweep"]


class FakeTrain:
    """Stands in for ``workbench.run.train.train``: logs one metric, fails for the cells in ``fail``."""

    def __init__(self, fail: tuple[tuple[str, int], ...] = ()) -> None:
        self.fail = set(fail)
        self.calls: list[tuple[str, int]] = []

    def __call__(self, cfg, tracker):
        self.calls.append((cfg.method, cfg.seed))
        tracker.log_metrics({"train/reward": 0.5}, step=1)
        if (cfg.method, cfg.seed) in self.fail:
            raise RuntimeError("boom")


def test_sweep_skips_finished_cells_and_reruns_failed_ones(store):
    first = FakeTrain(fail=(("g2rl", 1),))
    results = sweep(["grpo", "g2rl"], [0, 1], BASE, [], "grid", train_fn=first)
    assert first.calls == [("grpo", 0), ("grpo", 1), ("g2rl", 0), ("g2rl", 1)]
    assert [r.status for r in results] == ["finished", "finished", "finished", "failed"]
    assert "boom" in results[-1].error
    runs = _runs(store, "grid")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]
    assert {r.data.tags[HASH_TAG] for r in runs} == {r.config_hash for r in results}

    second = FakeTrain()
    results = sweep(["grpo", "g2rl"], [0, 1], BASE, [], "grid", train_fn=second)
    assert second.calls == [("g2rl", 1)]  # only the failed cell, as a new run
    assert [r.status for r in results] == ["skipped", "skipped", "skipped", "finished"]
    assert len(_runs(store, "grid")) == 5

    third = FakeTrain()  # another config is another cell: nothing is reused
    results = sweep(["grpo", "g2rl"], [0, 1], BASE, ["training.steps=3"], "grid", train_fn=third)
    assert len(third.calls) == 4 and all(r.status == "finished" for r in results)


def test_sweep_reruns_a_dead_running_cell_and_leaves_a_live_one(store):
    from mlflow.tracking import MlflowClient

    from workbench.tracking import experiment_id

    client = MlflowClient(store)
    exp = experiment_id(client, "grid")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cfgs = cell_configs(["grpo"], [0, 1], BASE, [], "grid")
    for cfg, pid in zip(cfgs, [dead.pid, os.getppid()]):  # seed 0: a dead process; seed 1: a live one
        client.create_run(exp, tags={"method": cfg.method, "seed": str(cfg.seed), HASH_TAG: config_hash(cfg),
                                     HOST_TAG: socket.gethostname(), PID_TAG: str(pid)})
    fake = FakeTrain()
    results = sweep(["grpo"], [0, 1], BASE, [], "grid", train_fn=fake)
    assert fake.calls == [("grpo", 0)]
    assert [r.status for r in results] == ["finished", "running"]
    statuses = {(r.data.tags["seed"], r.info.status) for r in _runs(store, "grid")}
    assert statuses == {("0", "KILLED"), ("0", "FINISHED"), ("1", "RUNNING")}


def test_bad_sweep_input_fails_before_anything_runs(store, capsys):
    fake = FakeTrain()
    with pytest.raises(ConfigError, match="valid methods: .*g2rl"):
        sweep(["grpo", "nonsense"], [0], BASE, [], "grid", train_fn=fake)
    with pytest.raises(ConfigError, match="--methods"):
        sweep(["grpo"], [0], BASE, ["method=g2rl"], "grid", train_fn=fake)
    assert fake.calls == []
    for argv, needle in [
        (["sweep", "--methods", "grpo,nonsense", "--seeds", "0"], "unknown method 'nonsense'"),
        (["sweep", "--methods", "grpo", "--seeds", "0,x"], "'x' is not a non-negative integer"),
        (["sweep", "--methods", "grpo,grpo"], "more than once"),
        (["sweep", "--methods", "grpo", "--set", "training.steps=0"], "training.steps=0"),
    ]:
        assert _main(argv) == 2
        assert needle in capsys.readouterr().err
    assert _runs(store, "workbench") == []


@pytest.mark.parametrize("flags", [
    ["--method", "g2rl", "--seed", "3", "--task", "arithmetic", "--steps", "5", "--experiment", "e",
     "--config", "configs/tiny-sweep.yaml", "--set", "training.beta=0.1"],
    ["--model", "/some/folder", "--data", "train.jsonl", "--task", "gsm8k", "--preset", "tiny"],
    ["--preset", "smollm2-135m", "--set", "eval.n=4"],
])
def test_sweep_layers_resolve_like_the_run_command(flags):
    """The sweep builds cells from the same layers as `workbench run`: a drift between the two is a bug."""
    from pathlib import Path

    from workbench.cli import config_from_args, parser
    from workbench.config import build_config
    from workbench.experiments.sweep import config_layers

    flags = [str(Path(__file__).parents[1] / f) if f.endswith(".yaml") else f for f in flags]
    args = parser().parse_args(["run", *flags])
    cell = {"seed": 7}
    assert config_from_args(args, cell) == build_config([*config_layers(args), cell], args.overrides)


@pytest.mark.slow
def test_real_tiny_sweep_runs_two_methods_then_resumes(store, model_cache, capsys):
    argv = ["sweep", "--methods", "grpo,g2rl", "--seeds", "0", "--experiment", "tiny-grid", "--steps", "2",
            "--set", "model.warmstart_steps=100",  # a short warm start: the policy only needs to exist
            "--set", "training.prompts_per_step=4", "--set", "training.num_generations=4",  # 16 completions a step
            "--set", "training.steps_per_generation=null", "--set", "training.beta=0",  # one update a batch
            "--set", "eval.final=false"]  # no evaluation: this checks the grid, not the scores
    assert _main(argv) == 0
    runs = _runs(store, "tiny-grid")
    assert sorted((r.data.tags["method"], r.info.status) for r in runs) == [("g2rl", "FINISHED"), ("grpo", "FINISHED")]
    assert _main(argv) == 0  # the second time every cell is skipped
    assert len(_runs(store, "tiny-grid")) == 2
    assert "already finished" in capsys.readouterr().err


# --------------------------------------------------------------------------- report


def _log_run(client, exp: str, method: str, seed: int, metrics: dict[str, float], status: str = "FINISHED",
             params: dict | None = None) -> str:
    run = client.create_run(exp, tags={"method": method, "seed": str(seed)})
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value, step=0)
        client.log_metric(run.info.run_id, key, value + 0.01, step=5)  # the final evaluation is the last step
    for key, value in (params or {}).items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def _eval_metrics(p1: float, p8: float, m8: float) -> dict[str, float]:
    return {"eval/math500/pass_at_1": p1, "eval/math500/pass_at_8": p8, "eval/math500/maj_at_8": m8,
            "eval/math500/pass_at_4": p8 - 0.05, "eval/math500/maj_at_4": m8 - 0.05,
            "eval/aime25/pass_at_1": p1 / 2, "eval/aime25/pass_at_8": p8 / 2, "eval/aime25/maj_at_8": m8 / 2}


@pytest.fixture(scope="module")
def report_store(tmp_path_factory):
    """One store for the report tests (creating an MLflow database takes seconds); they only read it."""
    from mlflow.tracking import MlflowClient

    from workbench.tracking import experiment_id

    store = f"sqlite:///{tmp_path_factory.mktemp('report') / 'mlruns.db'}"
    client = MlflowClient(store)
    exp = experiment_id(client, "paper")
    grpo = [(0.10, 0.30, 0.15), (0.12, 0.34, 0.17), (0.11, 0.35, 0.16)]
    g2rl = [(0.20, 0.45, 0.29), (0.21, 0.44, 0.28), (0.19, 0.46, 0.30)]
    for seed, values in enumerate(grpo):
        _log_run(client, exp, "grpo", seed, _eval_metrics(*values))
    for seed, values in enumerate(g2rl):
        _log_run(client, exp, "g2rl", seed, _eval_metrics(*values))
    _log_run(client, exp, "entropy", 0, {"train/reward": 0.5})  # trained without evaluation
    _log_run(client, exp, "g2rl", 3, _eval_metrics(0.9, 0.9, 0.9), status="FAILED")  # ignored
    _log_run(client, exp, "eval", 0, _eval_metrics(0.05, 0.2, 0.1), params={"model": "base"})
    return store, {"grpo": grpo, "g2rl": g2rl}


def test_report_table_has_the_paper_layout_with_intervals_over_seeds(report_store):
    uri, truth = report_store
    table = report_table("paper", uri)
    assert list(table.index) == ["grpo", "g2rl", "eval: base"]  # paper order, then the rest
    assert list(table.columns) == ["seeds", "math500 pass@1", "math500 maj@8", "math500 pass@8",
                                   "aime25 pass@1", "aime25 maj@8", "aime25 pass@8"]  # n = 8: largest k <= 16
    for method, runs in truth.items():
        for col, idx in (("math500 pass@1", 0), ("math500 pass@8", 1), ("math500 maj@8", 2)):
            mean, lo, hi = mean_ci_over_seeds([v[idx] + 0.01 for v in runs])  # last step's values
            assert table.loc[method, col] == f"{100 * mean:.1f} ± {100 * (hi - lo) / 2:.1f}"
    assert table.loc["grpo", "seeds"] == "3"
    assert table.loc["eval: base", "math500 pass@1"] == "6.0"  # one seed: no interval
    notes = " ".join(table.attrs["notes"])
    assert "entropy, seed 0) has no eval/ metrics" in notes
    assert "1 FAILED" in notes
    assert "reporting pass@8" in notes and "reporting maj@8" in notes


def test_report_reads_a_given_step_and_writes_markdown_and_csv(report_store, tmp_path):
    uri, truth = report_store
    data = report_data("paper", uri, ks=(1,), maj_k=4, step=0)
    row = data[(data["method"] == "g2rl") & (data["benchmark"] == "math500") & (data["metric"] == "maj")].iloc[0]
    assert row["k"] == 4 and row["n_seeds"] == 3
    assert math.isclose(row["mean"], sum(v[2] - 0.05 for v in truth["g2rl"]) / 3)
    table = report_table("paper", uri)
    paths = write_report(table, tmp_path / "out", "paper")
    assert [p.name for p in paths] == ["table.md", "table.csv", "table_long.csv"]
    md = paths[0].read_text()
    assert "| method | seeds | math500 pass@1 | math500 maj@8 |" in md
    assert pd.read_csv(paths[1], index_col=0).loc["g2rl", "seeds"] == 3
    assert set(pd.read_csv(paths[2])["metric"]) == {"pass", "maj"}


def test_report_of_chosen_runs_with_another_band(report_store):
    """The app's use: a selection of the runs table, the sidebar's band; the same rules apply."""
    uri, truth = report_store
    runs = runs_table("paper", uri)
    chosen = runs[(runs["method"] != "grpo") | (runs["seed"] < 2)]
    table = report_table("paper", uri, band="min-max", runs=chosen)
    assert table.loc["grpo", "seeds"] == "2" and table.loc["g2rl", "seeds"] == "3"
    values = [v[0] + 0.01 for v in truth["g2rl"]]
    assert table.loc["g2rl", "math500 pass@1"] == (
        f"{100 * sum(values) / 3:.1f} ({100 * min(values):.1f}–{100 * max(values):.1f})")
    assert table.loc["eval: base", "math500 pass@1"] == "6.0"  # one seed: no spread
    assert "1 FAILED" in " ".join(table.attrs["notes"])
    assert to_markdown(table, "paper").startswith("### paper: mean (min–max) over seeds, in %")
    with pytest.raises(ValueError, match="band"):
        report_table("paper", uri, band="iqr")


def test_report_command_prints_markdown_or_says_there_is_nothing(report_store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", report_store[0])
    assert _main(["report", "--experiment", "paper", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "| g2rl | 3 |" in out and (tmp_path / "r" / "table.md").is_file()
    assert _main(["report", "--experiment", "nothing-here"]) == 1
    assert "no finished run has eval metrics" in capsys.readouterr().out
    assert to_markdown(report_table("nothing-here", report_store[0])).startswith("(no eval metrics")


def test_report_by_level_reads_the_logged_level_metrics(tmp_path, monkeypatch, capsys):
    """Runs logging per-level metrics and distinct correct solutions (as workbench.run.evaluation.score does): the
    table splits by level with --by-level; runs without levels say so."""
    from mlflow.tracking import MlflowClient

    from analysis.records import distinct_key, eval_key, level_eval_key
    from workbench.tracking import experiment_id

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    exp = experiment_id(client, "levels")
    truth = {}
    for seed, shift in enumerate((0.0, 0.02, 0.05)):
        metrics = {eval_key("countdown_test", "pass", 1): 0.3 + shift, eval_key("countdown_test", "maj", 8): 0.4,
                   eval_key("countdown_test", "pass", 8): 0.7, distinct_key("countdown_test"): 1.5 + shift}
        for level, value in ((2, 0.4 + shift), (3, 0.1 + shift)):
            metrics |= {level_eval_key("countdown_test", level, "pass", 1): value,
                        level_eval_key("countdown_test", level, "maj", 8): value,
                        level_eval_key("countdown_test", level, "pass", 8): value,
                        distinct_key("countdown_test", level): 2 * value}
            truth.setdefault(level, []).append(value + 0.01)  # the last step's value
        _log_run(client, exp, "grpo", seed, metrics)
    plain = report_table("levels", uri)
    assert list(plain.columns) == ["seeds", "countdown_test pass@1", "countdown_test maj@8", "countdown_test pass@8",
                                   "countdown_test distinct correct"]
    mean, lo, hi = mean_ci_over_seeds([1.51, 1.53, 1.56])  # the last step's values
    assert plain.loc["grpo", "countdown_test distinct correct"] == f"{mean:.2f} ± {(hi - lo) / 2:.2f}"  # a count
    table = report_table("levels", uri, ks=(1, 8), maj_k=8, by_level=True)
    assert [c for c in table.columns if "pass@1" in c] == ["countdown_test pass@1", "countdown_test L2 pass@1",
                                                           "countdown_test L3 pass@1"]
    for level in (2, 3):
        mean, lo, hi = mean_ci_over_seeds(truth[level])
        assert table.loc["grpo", f"countdown_test L{level} maj@8"] == f"{100 * mean:.1f} ± {100 * (hi - lo) / 2:.1f}"
        mean, lo, hi = mean_ci_over_seeds([2 * v - 0.01 for v in truth[level]])  # logged 2 x value, then + 0.01
        assert table.loc["grpo", f"countdown_test L{level} distinct correct"] == f"{mean:.2f} ± {(hi - lo) / 2:.2f}"
    data = table.attrs["data"]
    assert set(data["level"]) == {"all", "2", "3"} and not table.attrs["notes"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert _main(["report", "--experiment", "levels", "--by-level", "--ks", "1,8", "--maj-k", "8",
                  "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "countdown_test L3 pass@8" in out and "(distinct correct: solutions per problem)" in out
    assert set(pd.read_csv(tmp_path / "r" / "table_long.csv", dtype={"level": str})["level"]) == {"all", "2", "3"}


def test_report_by_level_without_levels_says_so(report_store):
    table = report_table("paper", report_store[0], by_level=True)
    assert "no per-level metrics were logged" in " ".join(table.attrs["notes"])
    assert list(table.columns) == list(report_table("paper", report_store[0]).columns)


# --------------------------------------------------------------------------- eval


@pytest.fixture(scope="module")
def tiny_dir(model_cache) -> str:
    from workbench.config import build_config
    from workbench.models.tiny import tiny_model_dir

    cfg = build_config([{"model": {"warmstart_steps": 100}}])  # a short warm start, as in the sweep test
    return str(tiny_model_dir(cfg))


def test_eval_command_records_a_run_that_the_report_reads(store, tiny_dir, capsys):
    argv = ["eval", "--model", tiny_dir, "--benchmarks", "arithmetic", "--n", "4", "--max-problems", "6",
            "--max-new-tokens", "6", "--experiment", "evals"]  # 6 problems x 4 samples of <= 6 tokens: seconds
    assert _main(argv) == 0
    assert "pass@4" in capsys.readouterr().out
    (run,) = _runs(store, "evals")
    assert run.info.status == "FINISHED" and run.data.tags["method"] == "eval"
    wanted = {"eval/arithmetic/pass_at_1", "eval/arithmetic/pass_at_4", "eval/arithmetic/maj_at_4"}
    assert wanted <= set(run.data.metrics)
    from analysis.loaders import EVAL_DIR, artifact_steps

    assert artifact_steps(run.info.run_id, store, EVAL_DIR) == [0]
    table = report_table("evals", store)
    assert list(table.columns) == ["seeds", "arithmetic pass@1", "arithmetic maj@4", "arithmetic pass@4"]


def test_eval_command_rejects_bad_input_before_loading(store, capsys):
    assert _main(["eval", "--model", "tiny", "--benchmarks", "mmlu"]) == 2
    assert "unknown benchmark 'mmlu'" in capsys.readouterr().err
    assert _main(["eval", "--model", "tiny", "--n", "0"]) == 2
    assert "--n 0" in capsys.readouterr().err
    assert _main(["eval", "--model", "tiny", "--benchmarks", "math500"]) == 2  # no --data-dir: which file?
    assert "data_dir" in capsys.readouterr().err
    assert _main(["eval", "--model", "tiny", "--benchmarks", "amc=missing.json"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert _runs(store, "workbench") == []

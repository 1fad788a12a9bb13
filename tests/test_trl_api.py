"""G2RL and geometry from a plain TRL script: G2RLTrainer, GeometryMixin on GRPOTrainer and GMPOTrainer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import trl_script
from analysis.loaders import load_dumps
from trainers import shaping

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _recomputed(dump) -> tuple[np.ndarray, np.ndarray]:
    """(shaped rewards, advantages) recomputed from a dump's completions and Phi, independently of the trainer."""
    groups = dump["group"].to_numpy()
    base = np.where(np.array(trl_script.rewards_of(dump["completion"].tolist())) > 0.5, 1.0, -1.0)
    phi = np.stack(dump["grad_feature"].to_numpy()).astype(np.float64)
    nu = shaping.exploration_score(phi, base, groups)
    shaped = np.clip(base * (1 + 1.0 * shaping.minmax_in_group(nu, groups)), -3, 3)  # paper_text, lambda 1
    grouped = torch.tensor(shaped).view(-1, trl_script.GENERATIONS)
    mean = grouped.mean(1).repeat_interleave(trl_script.GENERATIONS)
    std = grouped.std(1).repeat_interleave(trl_script.GENERATIONS)  # TRL: unbiased std, + 1e-4
    return shaped, ((torch.tensor(shaped) - mean) / (std + 1e-4)).numpy()


def _run_script(tmp_path, launcher: list[str]) -> str:
    """Run tests/trl_script.py; the MLflow store URI it logged to."""
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "trl-script",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([*launcher, str(Path(__file__).with_name("trl_script.py")), str(tmp_path / "out")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return uri


def _only_run(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("trl-script").experiment_id])
    assert len(runs) == 1
    return runs[0]


def _check_shaping(uri: str, run) -> None:
    dumps = load_dumps(run.info.run_id, uri)
    assert sorted(dumps["step"].unique()) == list(range(1, trl_script.STEPS + 1))
    for _, dump in dumps.groupby("step"):
        dump = dump.sort_values(["group", "sample"])
        shaped, advantages = _recomputed(dump)
        np.testing.assert_allclose(dump["shaped_reward"], shaped, atol=1e-6)
        np.testing.assert_allclose(dump["advantage"], advantages, atol=1e-4)  # what TRL trained on
        assert dump["shaped_reward"].nunique() > 2, "the shaping must be non-trivial for the check to mean anything"


def test_g2rl_trainer_in_a_plain_trl_script_shapes_rewards_and_logs_to_mlflow(tmp_path):
    uri = _run_script(tmp_path, [sys.executable])
    run = _only_run(uri)
    _check_shaping(uri, run)
    keys = set(run.data.metrics)  # through TRL's logging and transformers' MLflowCallback
    assert {"geometry/grad_cos_mean", "geometry/neg_frac", "g2rl/nu_mean", "rewards/has_seven/mean"} <= keys


def test_g2rl_trainer_under_two_processes_shapes_as_one(tmp_path):
    launcher = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                str(29500 + os.getpid() % 1000)]
    uri = _run_script(tmp_path, launcher)
    _check_shaping(uri, _only_run(uri))  # the dump is the whole batch, recomputed here in one process


def _train(trainer_cls, args_cls, with_mixin: bool, tmp_path):
    from trainers import GeometryArgs, GeometryMixin

    model, tok, dataset = trl_script.tiny_model_and_data()
    args = args_cls(output_dir=str(tmp_path / f"{trainer_cls.__name__}-{with_mixin}"), max_steps=2,
                    per_device_train_batch_size=8, num_generations=4, max_completion_length=6, learning_rate=1e-2,
                    report_to="none", logging_steps=1, save_strategy="no", use_cpu=True, seed=0)
    cls = type("WithGeometry", (GeometryMixin, trainer_cls), {}) if with_mixin else trainer_cls
    extra = {"geometry": GeometryArgs(features_dump_every=1)} if with_mixin else {}
    trainer = cls(model=model, reward_funcs=[trl_script.has_seven, trl_script.short], args=args,
                  train_dataset=dataset, processing_class=tok, **extra)
    trainer.train()
    return trainer


@pytest.mark.parametrize("engine", ["grpo", "gmpo"])
def test_geometry_mixin_changes_nothing_but_adds_geometry(engine, tmp_path):
    from trl import GRPOConfig, GRPOTrainer
    from trl.experimental.gmpo import GMPOConfig, GMPOTrainer

    trainer_cls, args_cls = (GRPOTrainer, GRPOConfig) if engine == "grpo" else (GMPOTrainer, GMPOConfig)
    plain = _train(trainer_cls, args_cls, False, tmp_path)
    mixed = _train(trainer_cls, args_cls, True, tmp_path)
    same = ("loss", "reward", "reward_std", "rewards/has_seven/mean", "rewards/short/mean", "grad_norm")
    for a, b in zip(plain.state.log_history[:-1], mixed.state.log_history[:-1], strict=True):
        assert {k: a[k] for k in same} == {k: b[k] for k in same}
        assert "geometry/grad_cos_mean" in b and "geometry/grad_cos_mean" not in a
    for p, q in zip(plain.model.parameters(), mixed.model.parameters(), strict=True):
        assert torch.equal(p, q)  # the same updates: rewards, advantages and loss were identical
    dumps = sorted((Path(mixed.args.output_dir) / "features").glob("step_*.parquet"))
    assert [d.name for d in dumps] == ["step_000001.parquet", "step_000002.parquet"]  # no MLflow: output_dir


def test_g2rl_config_refuses_bad_values_with_the_fix():
    from trainers import G2RLConfig

    with pytest.raises(ValueError, match="g2rl_scaler='eq13'"):
        G2RLConfig(output_dir="x", report_to="none", use_cpu=True, g2rl_scaler="eq13")
    with pytest.raises(ValueError, match="lam <= 1 with eq12"):
        G2RLConfig(output_dir="x", report_to="none", use_cpu=True, g2rl_scaler="eq12", g2rl_lam=2)
    with pytest.raises(ValueError, match=r"features_tau=2: Input should be less than or equal to 1"):
        G2RLConfig(output_dir="x", report_to="none", use_cpu=True, features_tau=2)
    with pytest.raises(ValueError, match="sum_then_normalize"):
        G2RLConfig(output_dir="x", report_to="none", use_cpu=True, multi_objective_aggregation="normalize_then_sum")

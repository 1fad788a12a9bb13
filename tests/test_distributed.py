"""Sharded equals global: 2 gloo processes give the shaped rewards of 1 process."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from trainers.geometry import gather_step_batch
from workbench.config import build_config, build_method

N, GROUP, WORLD = 12, 4, 2  # 3 groups of 4; rank 0 holds rows 0-5, so group 1 spans both ranks


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    correct = rng.random(N) < 0.5
    answers = [None if i % 5 == 0 else str(rng.integers(0, 3)) for i in range(N)]
    features = rng.standard_normal((N, 16)).astype(np.float32)
    emb = rng.standard_normal((N, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return correct, answers, features, emb


def _shaped(method: str, correct, answers, features, emb) -> list[float]:
    cfg = build_config([{"method": method}])
    rewards = torch.tensor(correct, dtype=torch.float32)
    batch = gather_step_batch(rewards, torch.ones(N, dtype=torch.bool), answers, torch.from_numpy(features),
                              torch.from_numpy(emb), GROUP)
    return build_method(cfg).shape(batch).shaped_reward.tolist()


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from accelerate import PartialState

    state = PartialState(cpu=True)
    assert state.num_processes == WORLD
    correct, answers, features, emb = _data()
    rows = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
    # TRL gathers the verifier rewards itself; each rank holds its own answers, Phi and embeddings.
    results = {m: _shaped(m, correct, answers[rows], features[rows], emb[rows]) for m in ("g2rl", "evol_rl")}
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)
    state.wait_for_everyone()
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_two_processes_shape_like_one(tmp_path):
    out = str(tmp_path / "sharded.json")
    mp.start_processes(_worker, args=(_free_port(), out), nprocs=WORLD, join=True, start_method="spawn")
    with open(out) as f:
        sharded = json.load(f)
    correct, answers, features, emb = _data()
    for method in ("g2rl", "evol_rl"):
        single = _shaped(method, correct, answers, features, emb)
        np.testing.assert_allclose(sharded[method], single, rtol=0, atol=1e-6, err_msg=method)
        assert len(set(np.round(single, 6))) > 2, "shaping must be non-trivial for the comparison to mean anything"

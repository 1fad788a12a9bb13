"""bench/gpu_check.sh, the parts that run without a GPU: the CUDA report says "no CUDA", the sampling-route
Phi equals the forward-route Phi on the CPU, and the g2rl / grpo step-time ratio of the tiny preset."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.gpu_check import PHI_TOLERANCE, phi_route_gap
from conftest import SMALL
from test_features import EOS, PAD, VOCAB, tiny_model

ROOT = Path(__file__).resolve().parents[1]


def _prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(5)
    return [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in (2, 6, 4, 3, 5, 6)]


def test_phi_route_gap_is_small_and_catches_a_route_that_disagrees(monkeypatch):
    model = tiny_model(3, torch.float32)
    gap, n = phi_route_gap(model, _prompts(), EOS, PAD, temperature=0.7)
    assert n == 6 and gap <= PHI_TOLERANCE

    import trainers.features as features

    right = features.phi_forward
    monkeypatch.setattr(features, "phi_forward", lambda m, i, a, c, t: right(m, i, a, c, t * 1.5))  # a wrong T
    gap, _ = phi_route_gap(model, _prompts(), EOS, PAD, temperature=0.7)
    assert gap > 100 * PHI_TOLERANCE


@pytest.mark.timeout(600)
def test_gpu_check_runs_its_cpu_parts(model_cache):
    sets = [arg for item in SMALL for arg in ("--set", item)]  # the tiny preset shrunk as in conftest.SMALL
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--preset", "tiny", "--steps", "2", "--rounds", "1", *sets],
                          cwd=ROOT, capture_output=True, text=True, timeout=540,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"^CUDA +: no CUDA", out, re.M) and re.search(r"^bf16 +: not checked", out, re.M)
    gap = float(re.search(r"max \|diff\| / max \|Phi\| = (\S+) on cpu, 8 completions of tiny  OK$", out, re.M)[1])
    assert gap <= PHI_TOLERANCE
    ratio = float(re.search(r"^g2rl / grpo +: step-time ratio (\S+)", out, re.M)[1])
    assert ratio > 0
    assert "transformers generate" in out or "vLLM colocate" in out

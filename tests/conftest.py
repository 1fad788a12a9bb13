"""Shared fixtures: offline hub, a private tracking store and model cache per test session."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

# Shrunk for 2 CPU cores: a 100-step warm start (the committed default's are longer) gives a weak but
# non-trivial policy; 3 RL steps of 4 prompts x 4 completions of at most 6 tokens exercise every hook.
# One update per rollout batch and no reference model: the preset's 4 updates per batch and KL 0.001
# make a 2-step test run record once and build a second model. Tests that run `workbench` with their
# own shrinking add these.
ONE_UPDATE = ["training.steps_per_generation=null", "training.beta=0"]
SMALL = [
    "model.warmstart_steps=100",
    "training.steps=3",
    "training.prompts_per_step=4",
    "training.num_generations=4",
    "training.max_completion_length=6",
    "training.steps_per_generation=null",  # one update per rollout batch (the preset: 4), so every step records
    "training.beta=0",  # no reference model to build (the preset: KL 0.001; tests/test_train.py trains with beta)
    "eval.initial=false",  # the pass@k evaluations are tested on their own (tests/test_train.py)
    "eval.final=false",
]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store in a temporary working directory."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """Model cache shared by the tests of one session (the tiny warm start runs once)."""
    path = Path(os.environ.get("WORKBENCH_TEST_CACHE", tmp_path_factory.mktemp("model-cache")))
    os.environ["WORKBENCH_CACHE"] = str(path)
    return path


def imported_packages(module_path: str) -> set[str]:
    """Top-level packages a source file of this repository imports, e.g. ``imported_packages("analysis/passk.py")``."""
    source = (Path(__file__).parents[1] / module_path).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    return imported

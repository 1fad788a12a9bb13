"""The tiny preset's warm-started model: what its cache key holds, and that it is built once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from workbench.config import build_config
from workbench.models import tiny
from workbench.models.warmstart import RECIPES


def key(*overrides: str) -> dict:
    return tiny.cache_key(build_config([], list(overrides)))


@pytest.mark.parametrize("override", [
    "task.count=3", "task.max_number=9", "task.min_target=12", "task.max_target=40", "task.data_seed=7",
    "task.num_train=100", "task.num_test=50", "task.name=arithmetic", "model.warmstart_steps=10", "task.min_steps=1",
    "seed=1", "seed=3",
])
def test_what_determines_the_model_changes_the_key(override):
    assert key(override) != key()


@pytest.mark.parametrize("override", [
    "seed=2", "model.warmstarts=1", "method=g2rl", "training.learning_rate=0.001", "training.steps=7", "eval.n=4", "g2rl.lam=0.5",
    "task.max_problems=5", "features.geometry=false", "features.dump_every=0",
])
def test_what_does_not_determine_it_keeps_the_key(override):
    assert key(override) == key()


def test_the_recipe_settings_are_in_the_key(monkeypatch):
    before = key()
    monkeypatch.setitem(RECIPES["countdown"].settings, "hit_rate", 0.3)
    assert key() != before


def test_the_model_is_built_once_and_a_concurrent_build_is_harmless(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tiny, "_supervised", lambda *args: calls.append(args[3]))  # no training: just the plumbing
    cfg = build_config([], [f"model.cache_dir={tmp_path}", "model.warmstart_steps=3", "task.num_train=20"])
    folder = tiny.tiny_model_dir(cfg)
    assert (folder / "config.json").is_file() and calls == [3]
    assert tiny.tiny_model_dir(cfg) == folder and calls == [3]  # cached
    tiny.build_tiny(cfg, folder)  # as a second process finishing after the first: keeps the first's model
    assert (folder / "config.json").is_file()
    # No temporary folder left behind; the lock file beside the folder stays (removing it could let a late
    # process lock a new file while another still holds the old one).
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name, f"{folder.name}.lock"]


def test_a_task_without_a_recipe_is_refused():
    with pytest.raises(ValueError, match="warm-started on a synthetic task .*--task countdown"):
        tiny.tiny_model_dir(build_config([], ["task.name=gsm8k"]))


def test_one_process_builds_the_model_cache_while_the_others_wait(tmp_path):
    from workbench.models.cache import built

    builds = []

    def build(folder: Path) -> None:
        builds.append(threading.current_thread().name)
        time.sleep(0.5)  # others arrive meanwhile
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir()
        (tmp / "config.json").write_text("{}")
        tmp.replace(folder)

    got = []
    threads = [threading.Thread(target=lambda: got.append(built(tmp_path / "tiny-x", build)), name=f"t{k}")
               for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and got == [tmp_path / "tiny-x"] * 3
    assert (tmp_path / "tiny-x" / "config.json").is_file()

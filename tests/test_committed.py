"""The committed warm starts are the current recipe's (workbench/models/committed.py)."""

from __future__ import annotations

import pytest

from workbench.models import committed, tiny


def test_every_default_warm_start_is_committed_and_current():
    wanted = committed.expected_folders()
    found = {p.name for p in tiny.COMMITTED.glob("tiny-*") if p.is_dir()}
    assert found == set(wanted), ("rebuild with `python -m workbench.models.committed`: the recipe, architecture "
                                  f"or default task settings changed (missing {set(wanted) - found}, stale "
                                  f"{found - set(wanted)})")
    for name in found:
        assert committed.problems(tiny.COMMITTED / name) == []


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_default_config_loads_a_committed_warm_start_without_building(seed, monkeypatch):
    from workbench.config import build_config

    monkeypatch.setattr(tiny, "build_tiny", lambda *a: pytest.fail("the default warm start was built, not loaded"))
    cfg = build_config([], [f"seed={seed}"])
    folder = tiny.tiny_model_dir(cfg)
    assert folder.parent == tiny.COMMITTED and folder.name == f"tiny-{tiny.key_digest(tiny.cache_key(cfg))}"


def test_a_tampered_folder_is_reported(tmp_path):
    import json
    import shutil

    source = next(tiny.COMMITTED.glob("tiny-*"))
    copy = tmp_path / source.name
    shutil.copytree(source, copy)
    (copy / "model.safetensors").write_bytes(b"not the weights")
    assert committed.problems(copy) == [f"{copy.name}: model.safetensors is not the file recipe.json names"]
    data = json.loads((copy / tiny.RECIPE_FILE).read_text())
    data["key"]["steps"] += 1
    (copy / tiny.RECIPE_FILE).write_text(json.dumps(data))
    assert f"{copy.name}: its recipe.json key hashes to another folder name" in committed.problems(copy)

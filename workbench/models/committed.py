"""Rebuild the committed warm starts of the tiny preset: ``python -m workbench.models.committed``.

The default settings' ``model.warmstarts`` warm starts live in the repository
(:data:`workbench.models.tiny.COMMITTED`), so a fresh clone trains without spending the
supervised run first. This command builds each of them again from the recipe, as a cache
miss would (:func:`workbench.models.tiny.build_tiny`), and replaces the committed folders;
``tests/test_committed.py`` checks that every committed folder is the current recipe's
(its ``recipe.json`` key hashes to its name and equals the default config's key) and that
its weights are the ones ``recipe.json`` names. Change the recipe, the architecture or the
default task settings, and that test fails until this command has run.

``--check`` only reports which committed folders are missing or stale.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from workbench.config import WorkbenchConfig, build_config
from workbench.models import tiny


def default_configs() -> list[WorkbenchConfig]:
    """One config per committed warm start: the defaults, with seeds 0 .. model.warmstarts - 1."""
    count = build_config([], []).model.warmstarts
    return [build_config([], [f"seed={k}"]) for k in range(count)]


def expected_folders() -> dict[str, WorkbenchConfig]:
    """Committed folder name -> the config whose warm start it holds."""
    return {f"tiny-{tiny.key_digest(tiny.cache_key(cfg))}": cfg for cfg in default_configs()}


def problems(folder: Path) -> list[str]:
    """What is wrong with one committed folder (nothing: an empty list)."""
    recipe = folder / tiny.RECIPE_FILE
    if not recipe.is_file():
        return [f"{folder.name}: no {tiny.RECIPE_FILE}"]
    data = json.loads(recipe.read_text())
    out = []
    if f"tiny-{tiny.key_digest(data['key'])}" != folder.name:
        out.append(f"{folder.name}: its recipe.json key hashes to another folder name")
    weights = folder / "model.safetensors"
    if not weights.is_file() or hashlib.sha256(weights.read_bytes()).hexdigest() != data["sha256"]:
        out.append(f"{folder.name}: model.safetensors is not the file recipe.json names")
    return out


def rebuild(root: Path = tiny.COMMITTED) -> list[Path]:
    """Build every expected warm start into ``root`` (replacing what is there); remove stale folders."""
    root.mkdir(parents=True, exist_ok=True)
    wanted = expected_folders()
    for stale in (p for p in root.iterdir() if p.is_dir() and p.name not in wanted):
        shutil.rmtree(stale)
    built = []
    for name, cfg in wanted.items():
        target = root / name
        shutil.rmtree(target, ignore_errors=True)
        tiny.build_tiny(cfg, target)
        built.append(target)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report missing or stale folders; build nothing")
    args = parser.parse_args(argv)
    if args.check:
        wanted = expected_folders()
        found = {p.name for p in tiny.COMMITTED.glob("tiny-*") if p.is_dir()}
        report = [f"missing: {n}" for n in sorted(set(wanted) - found)]
        report += [f"stale: {n}" for n in sorted(found - set(wanted))]
        report += [line for n in sorted(found & set(wanted)) for line in problems(tiny.COMMITTED / n)]
        print("\n".join(report) or "every committed warm start is the current recipe's")
        return 1 if report else 0
    for folder in rebuild():
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The model cache: one folder per built model (the tiny warm start, the SmolLM2 conversion), built once.

Several processes may want the same model at once: the ranks of one launch, the shards of a study,
the cells of a sweep array on one shared cache. :func:`built` lets one of them build it, under an
exclusive ``fcntl.flock`` on ``<folder>.lock`` beside the folder, while the others wait for that
lock and then load what it built. A build writes a temporary folder and renames it, so a folder
with its ``config.json`` is a finished model even after a build was killed.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.sections import ModelRequest


def cache_root(cfg: ModelRequest) -> Path:
    """``model.cache_dir``, else ``$WORKBENCH_CACHE``, else ``~/.cache/g2rl-workbench``."""
    root = cfg.model.cache_dir or os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "g2rl-workbench"
    return Path(root)


def is_built(folder: Path) -> bool:
    return (Path(folder) / "config.json").is_file()


def built(folder: Path, build: Callable[[Path], None]) -> Path:
    """``folder`` once it holds a model: as it is, or built now by ``build(folder)`` in this process, or by
    the process that holds ``<folder>.lock`` (this one waits for it, then builds only if that one failed)."""
    folder = Path(folder)
    if is_built(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"Waiting for another process to build the model cache {folder} ...", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when that process's build ends, or when it dies
        if not is_built(folder):
            build(folder)
    return folder

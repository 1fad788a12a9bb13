"""The ``tiny`` preset: a small Llama built from a config, warm-started on a synthetic task.

The model is warm-started by a supervised run on the training split of its task
(``countdown`` by default, or ``arithmetic``; recipes in :mod:`workbench.models.warmstart`),
with the loss on the target tokens only. ``model.warmstarts`` distinct warm starts exist
for one setting, each its own supervised run from its own seed; run seed ``s`` starts
from warm start ``s mod model.warmstarts``, so the arms of a study that share a seed
share a warm start, and its seeds span several.

A warm start is keyed by everything that determines it (the architecture, the recipe,
the steps, the warm-start seed and the task settings). The default settings' warm
starts are committed in the repository (:data:`COMMITTED`, ``tiny-<key digest>/`` with
a ``recipe.json`` holding the key and the weights' SHA-256; rebuilt by
``python -m workbench.models.committed``), so a fresh clone trains at once; any other
setting is built once into the cache (``model.cache_dir``; one process builds it while
others wait: :mod:`workbench.models.cache`), its progress shown on a terminal and as
plain lines in a log.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from workbench.models.cache import built, cache_root
from workbench.models.tokenizer import char_tokenizer
from workbench.progress import progress

if TYPE_CHECKING:
    from workbench.sections import ModelRequest

ARCH = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}
WARMSTART = {"batch_size": 64, "learning_rate": 1e-3, "version": 5}
TASK_KEYS = {"name", "digits", "operations", "count", "max_number", "min_target", "max_target", "min_steps", "num_train",
             "num_test",
             "data_seed"}  # num_test too: the train split skips the test split's problems


COMMITTED = Path(__file__).with_name("warmstarts")
"""The committed warm starts of the default settings, one ``tiny-<key digest>`` folder each."""
RECIPE_FILE = "recipe.json"
"""In a warm start's folder: its cache key and the SHA-256 of its weights."""


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def tiny_model_dir(cfg: ModelRequest) -> Path:
    """Folder of the warm-started tiny model of this config (its task and warm start): the committed one
    when there is one for its key, else the cached one, built if missing."""
    name = f"tiny-{key_digest(cache_key(cfg))}"
    if (COMMITTED / name / "config.json").is_file():
        return COMMITTED / name
    return built(cache_root(cfg) / name, lambda folder: build_tiny(cfg, folder))


def warmstart_seed(cfg: ModelRequest) -> int:
    """The warm start a run starts from: its seed modulo ``model.warmstarts``."""
    return cfg.seed % cfg.model.warmstarts


def cache_key(cfg: ModelRequest) -> dict:
    """Everything that determines the warm-started model (and nothing that does not)."""
    from workbench.models.warmstart import RECIPES

    recipe = RECIPES.get(cfg.task.name)
    return {
        "arch": ARCH,
        "warmstart": WARMSTART,
        "recipe": dict(recipe.settings) if recipe else None,
        "steps": cfg.model.warmstart_steps,
        "seed": warmstart_seed(cfg),
        "task": cfg.task.model_dump(include=TASK_KEYS),
    }


def build_tiny(cfg: ModelRequest, folder: Path) -> None:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from workbench.models.warmstart import RECIPES
    from workbench.tasks import build_task

    if cfg.task.name not in RECIPES:
        raise ValueError(f"the tiny preset is warm-started on a synthetic task ({', '.join(RECIPES)}), not "
                         f"{cfg.task.name!r}; use --task {next(iter(RECIPES))} or another preset")
    recipe = RECIPES[cfg.task.name]
    tok = char_tokenizer()
    seed = warmstart_seed(cfg)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, **ARCH)
    model = LlamaForCausalLM(config)
    draw = recipe.make(build_task(cfg.task), random.Random(seed), recipe.settings)
    _supervised(model, tok, draw, cfg.model.warmstart_steps,
                f"warm-starting the tiny model on {cfg.task.name} (warm start {seed})")
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                               bos_token_id=tok.bos_token_id)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    weights = hashlib.sha256((tmp / "model.safetensors").read_bytes()).hexdigest()
    (tmp / RECIPE_FILE).write_text(json.dumps({"key": cache_key(cfg), "sha256": weights}, indent=1, sort_keys=True))
    try:
        tmp.replace(folder)  # atomic: a half-built model is never seen as cached
    except OSError:  # another process built it meanwhile (a non-empty folder cannot be replaced): use theirs
        if not (folder / "config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _supervised(model, tok, draw, steps: int, description: str) -> None:
    """Next-token loss on the target tokens (and EOS) of pairs from ``draw()``."""
    threads = torch.get_num_threads()  # the caller's (e.g. training.cpu_threads), restored at the end
    torch.set_num_threads(min(2, os.cpu_count() or 1))  # measured at this size: 0.18 s a step on 2 threads, 0.29 on 1
    try:
        _train_steps(model, tok, draw, steps, description)
    finally:
        torch.set_num_threads(threads)


def _train_steps(model, tok, draw, steps: int, description: str) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=WARMSTART["learning_rate"], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=WARMSTART["learning_rate"], total_steps=max(steps, 1))

    def encode(prompt: str, target: str) -> tuple[list[int], list[int]]:
        return (tok(prompt, add_special_tokens=False).input_ids,
                tok(target, add_special_tokens=False).input_ids + [tok.eos_token_id])

    model.train()
    with progress(description, steps, fields=("loss",)) as bar:
        for _ in range(steps):
            input_ids, labels = _batch([encode(*draw()) for _ in range(WARMSTART["batch_size"])], tok.pad_token_id)
            loss = model(input_ids=input_ids, attention_mask=(input_ids != tok.pad_token_id).long(), labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            bar.advance(1, loss=loss.item())
    model.eval()


def _batch(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) + len(a) for p, a in pairs)
    input_ids = torch.full((len(pairs), width), pad_id)  # (B, L), right-padded
    labels = torch.full((len(pairs), width), -100)  # (B, L), loss on answers only
    for row, (p, a) in enumerate(pairs):
        seq = p + a
        input_ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, len(p) : len(seq)] = torch.tensor(a)
    return input_ids, labels

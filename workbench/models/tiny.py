"""The ``tiny`` preset: a small Llama built from a config, warm-started on arithmetic.

RL needs a policy that is right some of the time and wrong some of the time, so
the tiny model is first trained by a short supervised run on the arithmetic
task's training split (loss on the answer tokens only). The result is cached in
a folder keyed by everything that determines it, so the warm start runs once.

Label noise [ours]: in half of the supervised examples of an addition the target
drops every carry (``347+589=`` -> ``826`` instead of ``936``). The warm-started
policy then mixes a sound and an unsound procedure, much as a pretrained LLM
mixes sound and unsound reasoning, and RL has something to find. Measured here:
trained on clean targets, the model sits in a sharp optimum that GRPO steps only
degrade (held-out probability of the right answer 0.62 -> 0.57 in 100 steps at
lr 3e-5, collapse at 1e-4); with carry-dropping noise it rises 0.24 -> 0.30 in
100 steps at lr 1e-4.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from workbench.models.tokenizer import char_tokenizer

if TYPE_CHECKING:
    from workbench.config import WorkbenchConfig

ARCH = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
}
WARMSTART = {"batch_size": 64, "learning_rate": 1e-3, "seed": 0, "label_noise": 0.5, "version": 3}


def cache_root(cfg: WorkbenchConfig) -> Path:
    root = cfg.model.cache_dir or os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "g2rl-workbench"
    return Path(root)


def tiny_model_dir(cfg: WorkbenchConfig) -> Path:
    """Folder of the warm-started tiny model for this task config; built if missing."""
    key = {
        "arch": ARCH,
        "warmstart": WARMSTART,
        "steps": cfg.model.warmstart_steps,
        "task": cfg.task.model_dump(include={"name", "digits", "operations", "num_train", "data_seed"}),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_root(cfg) / f"tiny-{digest}"
    if not (folder / "config.json").is_file():
        build_tiny(cfg, folder)
    return folder


def build_tiny(cfg: WorkbenchConfig, folder: Path) -> None:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from workbench.tasks import build_task

    if cfg.task.name != "arithmetic":
        raise ValueError(f"the tiny preset is warm-started on task 'arithmetic', not {cfg.task.name!r}; "
                         "use --task arithmetic or another preset")
    tok = char_tokenizer()
    torch.manual_seed(WARMSTART["seed"])
    config = LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, **ARCH)
    model = LlamaForCausalLM(config)
    problems = build_task(cfg.task).problems("train")
    rng = random.Random(WARMSTART["seed"])
    texts = [(p.prompt, _noisy_target(p.prompt, p.answer, rng) + tok.eos_token) for p in problems]
    _supervised(model, tok, texts, cfg.model.warmstart_steps)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                               bos_token_id=tok.bos_token_id)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.replace(folder)  # atomic: a half-built model is never seen as cached


def carry_free_sum(a: int, b: int) -> int:
    """Digit-wise sum that drops every carry: 347 + 589 -> 826."""
    digits, place = 0, 1
    while a or b:
        digits += ((a % 10 + b % 10) % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return digits


def _noisy_target(prompt: str, answer: str, rng: random.Random) -> str:
    """The supervised target: the answer, or for an addition with probability label_noise its carry-free sum."""
    match = re.fullmatch(r"(\d+)\+(\d+)=", prompt)
    if match is None or rng.random() >= WARMSTART["label_noise"]:
        return answer
    return str(carry_free_sum(int(match[1]), int(match[2])))


def _supervised(model, tok, texts: list[tuple[str, str]], steps: int) -> None:
    """Next-token loss on the answer tokens of (prompt, answer) pairs."""
    torch.set_num_threads(1)  # small matrices: one thread is several times faster than two on 2 cores
    gen = torch.Generator().manual_seed(WARMSTART["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=WARMSTART["learning_rate"], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=WARMSTART["learning_rate"], total_steps=max(steps, 1))
    encoded = [(tok(p, add_special_tokens=False).input_ids, tok(a, add_special_tokens=False).input_ids) for p, a in texts]
    model.train()
    columns = [TextColumn("warm-starting the tiny model"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as progress:
        bar = progress.add_task("sft", total=steps, loss=float("nan"))
        for _ in range(steps):
            idx = torch.randint(len(encoded), (WARMSTART["batch_size"],), generator=gen)
            input_ids, labels = _batch([encoded[i] for i in idx], tok.pad_token_id)
            loss = model(input_ids=input_ids, attention_mask=(input_ids != tok.pad_token_id).long(), labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            progress.update(bar, advance=1, loss=loss.item())
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

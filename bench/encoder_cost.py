"""Benchmark 8: the text encoder's precision, its CPU time and its error (``features.encoder_dtype``).

The texts are real completions: the default run's policy (the tiny preset's warm start) samples
16 completions for each of 16 of its training problems at the training temperature, 256 texts as a
step of the default embeds them. Each round encodes all of them once in float32 and once in
bfloat16 (cases interleaved, no cache), and the CPU time of each (``time.process_time``: every
thread) is paired within the round. The error is what the semantic geometry reads: the cosine of
every pair of completions, bfloat16's against float32's, its largest absolute difference over all
pairs (and of each embedding against itself, 1 - cos). Target: <= 0.01 per pair.

The ratio holds on a CPU that computes bf16 natively (AVX512-BF16 or AMX; ``auto`` picks float32
elsewhere, and then this row says so).

Run: ``python -m bench.encoder_cost [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np

from bench.results import Row, append, stat_row
from bench.timing import set_threads, summary

BENCH = "8 text encoder"


def completions(prompts: int, per_prompt: int) -> list[str]:
    """``per_prompt`` completions of each of ``prompts`` training problems, sampled by the default policy."""
    from workbench.config import build_config
    from workbench.run.evaluation import sample
    from workbench.run.train import load_inputs, load_policy

    cfg = build_config([], [])
    inputs = load_inputs(cfg)
    model, tokenizer = load_policy(cfg)
    out = sample(model, tokenizer, inputs.task, inputs.problems[:prompts], n=per_prompt,
                 temperature=cfg.training.temperature, max_new_tokens=cfg.training.max_completion_length, seed=0)
    return [c.text for c in out]


def pair_error(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(largest |cos_other(i, j) - cos_reference(i, j)| over pairs i < j, largest 1 - cos(ref_i, other_i))."""
    upper = np.triu_indices(len(reference), k=1)
    pairs = np.abs(other @ other.T - reference @ reference.T)[upper]  # unit rows: dot products are cosines
    self_err = 1.0 - np.sum(reference * other, axis=1)
    return float(pairs.max()), float(self_err.max())


def cpu_seconds(fn) -> float:
    gc.collect()
    start = time.process_time()
    fn()
    return time.process_time() - start


def run(quick: bool = False) -> list[Row]:
    from trainers.embeddings import TextEmbedder, encoder_dtype

    set_threads()
    texts = completions(4 if quick else 16, 16)
    encoders = {dtype: TextEmbedder(dtype=dtype, cache_size=0) for dtype in ("float32", "bfloat16")}
    for encoder in encoders.values():
        encoder.encode(texts[:8])  # loads the model, warms the allocator
    rounds = 2 if quick else 7
    cpu: dict[str, list[float]] = {name: [] for name in encoders}
    for r in range(rounds):
        for name in list(encoders)[r % 2:] + list(encoders)[: r % 2]:
            cpu[name].append(cpu_seconds(lambda e=encoders[name]: e.encode(texts)))
    ratio = [b / f for b, f in zip(cpu["bfloat16"], cpu["float32"], strict=True)]
    pairs, itself = pair_error(encoders["float32"].encode(texts), encoders["bfloat16"].encode(texts))
    distinct = len(set(texts))
    auto = encoder_dtype("auto")
    timing = (f"{len(texts)} completions of the default policy ({distinct} distinct), float32 "
              f"{summary(cpu['float32']).fmt('s')} CPU, bfloat16 {summary(cpu['bfloat16']).fmt('s')}; "
              f"auto picks {auto} on this CPU")
    return [
        stat_row(BENCH, "CPU: MiniLM bfloat16 / float32, encoding a step's completions", summary(ratio), note=timing),
        Row(BENCH, "MiniLM bfloat16 against float32: largest per-pair cosine difference", f"{pairs:.2g}", "",
            len(texts) * (len(texts) - 1) // 2, "<= 0.01", pairs <= 0.01,
            f"over all pairs of the {len(texts)} completions; largest 1 - cos of an embedding with itself "
            f"{itself:.2g}"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer texts and rounds (a smoke run)")
    args = parser.parse_args(argv)
    append(run(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

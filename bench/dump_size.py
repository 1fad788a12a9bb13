"""Benchmark 5: bytes per logged step of the feature dump at Qwen3-1.7B scale, and the projection's error.

One step of the paper's batch: 16 prompts x 16 completions (256 rows), Phi of d = 2048
(Qwen3-1.7B's hidden size), 384-dim text embeddings (MiniLM), texts of about 6,000 characters
(~1,500 tokens; the paper's completions run to 3,072 tokens). The dump is built by
:func:`trainers.step_record.dump_table` and written by
:func:`workbench.tracking.write_parquet` (what ``MlflowTracker.log_parquet`` writes), for
``features.dtype`` float32 and float16 and for ``features.project_dim`` 256; once more with
pyarrow's defaults (dictionary encoding tried on every column) for comparison.

Phi is synthetic with the paper's geometry (a shared direction per group, weighted per
completion, plus noise: mean within-group cosine ~0.14, ~30 % of pairs negative, like the paper's
G2RL); the cosine error compares every within-group pair's cosine after storage (dtype and
projection) with its float64 cosine before.

Run: ``python -m bench.dump_size``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from bench.results import Row, append

BENCH = "5 dump size"
PROMPTS, GROUP, D, E = 16, 16, 2048, 384
WORDS = ("so the sum is carry the one then we get therefore answer boxed step first next add multiply "
         "divide equation value x y n total each remaining since because check again wait").split()


def step_batch(seed: int = 0):
    from trainers.method import Shaped, StepBatch

    rng = np.random.default_rng(seed)
    n = PROMPTS * GROUP
    groups = np.repeat(np.arange(PROMPTS), GROUP)
    shared = rng.standard_normal((PROMPTS, D))
    weight = rng.normal(0.5, 0.6, (n, 1))  # a completion's share of its group's direction: cosines spread over [-1, 1]
    phi = weight * shared[groups] / np.sqrt(D) + rng.standard_normal((n, D)) / np.sqrt(D)  # (N, d)
    phi *= rng.uniform(0.5, 2.0, (n, 1)) * 1e-2
    emb = rng.standard_normal((n, E))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    correct = rng.random(n) < 0.4
    answers = [str(int(a)) if rng.random() < 0.9 else None for a in rng.integers(0, 1000, n)]
    batch = StepBatch(groups=groups, correct=correct, has_answer=np.array([a is not None for a in answers]),
                      answers=answers, features=phi.astype(np.float32), embeddings=emb.astype(np.float32))
    base = np.where(correct, 1.0, -1.0)
    shaped = Shaped(base_reward=base, shaped_reward=base * 1.3, scores={"nu": rng.random(n), "nu_bar": rng.random(n)})
    texts = [" ".join(rng.choice(WORDS, 1000)) for _ in range(n)]  # ~6,000 characters each
    prompts = [f"Problem {g}: " + " ".join(rng.choice(WORDS, 60)) for g in groups]
    return batch, shaped, rng.standard_normal(n), prompts, [f"math-{g:04d}" for g in groups], texts, \
        rng.integers(200, 3072, n).tolist()


def within_group_cosines(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    from analysis.geometry import pairwise_cosines

    return pairwise_cosines(np.asarray(x, dtype=np.float64), groups).cos


def run() -> list[Row]:
    from analysis.geometry import direction_fractions
    from trainers.step_record import StepRecord, dump_table
    from workbench.tracking import write_parquet

    batch, shaped, adv, prompts, prompt_ids, texts, num_tokens = step_batch()
    record = StepRecord(step=1, batch=batch, shaped=shaped, advantages=adv, prompts=prompts, prompt_ids=prompt_ids,
                        texts=texts, num_tokens=num_tokens, timed_out=[False] * len(texts))
    exact = within_group_cosines(batch.features, batch.groups)
    rows = []
    variants = [("float32", None), ("float16", None), ("float32", 256), ("float16", 256)]
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype, dim in variants:
            table = dump_table(record, dtype=dtype, project_dim=dim, seed=0)
            path = Path(tmp) / f"{dtype}-{dim}.parquet"
            write_parquet(table, path)
            size = path.stat().st_size
            no_vectors = Path(tmp) / "text-only.parquet"
            write_parquet(table.drop_columns(["grad_feature", "embedding"]), no_vectors)
            grad_only = Path(tmp) / "grad-only.parquet"
            write_parquet(table.select(["grad_feature"]), grad_only)
            back = np.stack(pq.read_table(path).column("grad_feature").to_pylist()).astype(np.float64)
            stored = within_group_cosines(back, batch.groups)
            err = np.abs(stored - exact)
            before, after = direction_fractions(exact), direction_fractions(stored)
            label = f"{dtype}" + (f", project_dim {dim}" if dim else f", d {D}")
            sizes[(dtype, dim)] = size
            rows.append(Row(BENCH, f"Qwen3-1.7B scale, 16 x 16 completions: {label}", f"{size / 2**20:.2f} MiB",
                            note=(f"grad_feature column alone {grad_only.stat().st_size / 2**20:.2f} MiB, "
                                  "without both vector columns "
                                  f"{no_vectors.stat().st_size / 2**20:.2f} MiB; "
                                  f"within-group cosine error: mean {err.mean():.1e}, "
                                  f"p95 {np.quantile(err, 0.95):.1e}, "
                                  f"max {err.max():.1e}; step's mean cosine {before['grad_cos_mean']:.3f} -> "
                                  f"{after['grad_cos_mean']:.3f}, orth_frac (tau 0.1) {before['orth_frac']:.3f} -> "
                                  f"{after['orth_frac']:.3f}, neg_frac {before['neg_frac']:.3f} -> "
                                  f"{after['neg_frac']:.3f}")))
    full = sizes[("float32", None)]
    with tempfile.TemporaryDirectory() as tmp:  # pyarrow's defaults, for comparison
        table = dump_table(record, dtype="float32", seed=0)
        path = Path(tmp) / "defaults.parquet"
        pq.write_table(table, path)
        rows.append(Row(BENCH, "Qwen3-1.7B scale: float32, d 2048, pyarrow defaults (dictionary encoding on every "
                        "column; reference)", f"{path.stat().st_size / 2**20:.2f} MiB",
                        note=f"the workbench's write is {full / path.stat().st_size:.0%} of this"))
    rows.append(Row(BENCH, "per 1,000 logged steps (features.dump_every=1): float32 / float16 / float16 + project_dim 256",
                    " / ".join(f"{sizes[k] * 1000 / 2**30:.2f} GiB" for k in
                               [("float32", None), ("float16", None), ("float16", 256)]),
                    note=f"float16 + 256-dim projection is {sizes[('float16', 256)] / full:.0%} of float32's size"))
    return rows


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    append(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

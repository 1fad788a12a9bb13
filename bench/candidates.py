"""Candidate fixes measured next to the workbench's own code (not used by the workbench).

Each function computes exactly what its workbench counterpart computes (the benchmark asserts
agreement) with fewer passes over the (positions x vocabulary) data. They are here so
``make bench`` shows the gain side by side; once a fix lands in ``trainers/features.py`` its
candidate and its rows can go.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from trainers.features import EPS, PhiAccumulator, _check_temperature, _compute_dtype, phi_from_prob_sums, token_counts


def phi_from_logits_blocked(logits: Tensor, tokens: Tensor, mask: Tensor, lm_head_weight: Tensor,
                            temperature: float = 1.0, block_elements: int = 1 << 20, eps: float = EPS) -> Tensor:
    """:func:`trainers.features.phi_from_logits`, softmax over blocks of about ``block_elements`` logits.

    The workbench version takes 64 positions of every sequence at once, ``logits[:, s:s+64]``: at
    SmolLM2's V that is a (B, 64, V) block of 200 MB (B = 16) which, being a slice of the model's
    (B, C + 1, V) output, is not contiguous, so softmax first copies it, into freshly mapped memory
    each time (blocks above glibc's 32 MB mmap threshold are never reused), and the weighted sum is
    a batched (1 x 64) @ (64 x V) product, which runs far below memory speed. Here a block is a few
    MB: for a large V, ``block_elements // V`` positions of one sequence (a contiguous (c, V) slice,
    summed by one GEMV); for a small V, whole sequences, as many as fit (the workbench's path, one
    softmax and one bmm per block).
    """
    _check_temperature(temperature)
    batch, length, vocab = logits.shape
    dtype = _compute_dtype(logits.dtype, lm_head_weight.dtype)
    weights = mask.to(dtype)  # (B, L)
    prob_sum = logits.new_zeros(batch, vocab, dtype=dtype)  # (B, V)
    positions = max(1, block_elements // vocab)
    if positions >= length:  # small V: whole sequences per block
        seqs = max(1, positions // length)
        for b in range(0, batch, seqs):
            z = logits[b : b + seqs].to(dtype)  # (s, L, V)
            probs = torch.softmax(z if temperature == 1.0 else z / temperature, dim=-1)  # (s, L, V)
            prob_sum[b : b + seqs] = torch.bmm(weights[b : b + seqs, None, :], probs).squeeze(1)  # (s, V)
    else:  # large V: a few positions of one sequence per block
        for b in range(batch):
            for start in range(0, length, positions):
                z = logits[b, start : start + positions].to(dtype)  # (c, V), contiguous
                probs = torch.softmax(z if temperature == 1.0 else z / temperature, dim=-1)  # (c, V)
                prob_sum[b] += weights[b, start : start + positions] @ probs  # (V,)
    count = token_counts(tokens, weights, vocab, dtype)  # (B, V)
    return phi_from_prob_sums(lm_head_weight, prob_sum, count, weights.sum(1), eps)


class LeanPhiAccumulator(PhiAccumulator):
    """:class:`trainers.features.PhiAccumulator` with a cheaper per-step call.

    Same sums, three changes: the non-finite check sums the scores (one reduction; -inf or NaN
    anywhere makes the sum non-finite) instead of ``torch.isfinite(scores).all()`` (which
    materialises three (B, V) temporaries); the masked add is one fused ``addcmul_``; and
    T == 1 skips the division (dividing by 1.0 changes no bit).
    """

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.prob_sum is None:  # first call: set up exactly as the parent does
            return super().__call__(input_ids, scores)
        batch, length = input_ids.shape
        if batch != self.prob_sum.size(0) or length != self._length + 1:
            return super().__call__(input_ids, scores)  # the parent raises its error
        self._finished |= torch.isin(input_ids[:, -1], self._eos)  # (B,)
        self._length = length
        active = ~self._finished  # (B,)
        z = scores.to(self.prob_sum.dtype)  # (B, V)
        probs = torch.softmax(z if self.temperature == 1.0 else z / self.temperature, dim=-1)  # (B, V)
        self.prob_sum.addcmul_(probs, active[:, None].to(probs.dtype))  # (B, V)
        self.num_tokens += active
        self._nonfinite |= ~torch.isfinite(scores.sum())
        return scores


# ---------------------------------------------------------------------------------------------
# Analysis at scale (numpy only, as analysis/ must be)
# ---------------------------------------------------------------------------------------------


def unit_rows_lean(x, eps: float = 1e-12):
    """:func:`analysis.geometry.unit_rows` with one full-size temporary instead of four."""
    import numpy as np

    x = np.array(x, dtype=np.float64)  # the one copy, scaled in place
    norms = np.sqrt(np.einsum("nd,nd->n", x, x))  # (N,)
    with np.errstate(divide="ignore"):
        scale = np.where(norms <= eps, 0.0, 1.0 / norms)  # (N,); NaN norms stay NaN
    x *= scale[:, None]
    return x  # (N, d)


def group_cosines(features, groups):
    """Cosines of all within-group pairs, in :func:`analysis.geometry.pair_indices` order, by Gram blocks.

    :func:`analysis.geometry.cosines_at` gathers both rows of every pair (two (P, d) copies: 4 GB
    of float64 at 10^6 pairs and d = 256); here each group's (m, m) Gram matrix comes from one
    batched product over all groups of the same size, and its upper triangle is scattered to the
    group's block of pairs (pairs are ordered by group, then i, then j).
    """
    import numpy as np

    from analysis.geometry import pair_indices

    groups = np.asarray(groups).reshape(-1)
    unit = unit_rows_lean(features)
    i, j = pair_indices(groups)
    out = np.empty(i.size)  # (P,)
    if groups.size == 0:
        return i, j, out
    order = np.argsort(groups, kind="stable")  # rows by group, original order within
    _, starts, sizes = np.unique(groups[order], return_index=True, return_counts=True)  # (G,)
    pair_start = np.cumsum(sizes * (sizes - 1) // 2) - sizes * (sizes - 1) // 2  # (G,)
    for m in np.unique(sizes):
        if m < 2:
            continue
        which = np.flatnonzero(sizes == m)  # groups of size m
        rows = order[starts[which][:, None] + np.arange(m)]  # (g, m)
        if which.size * m == groups.size and np.array_equal(rows.ravel(), np.arange(groups.size)):
            block = unit.reshape(which.size, m, -1)  # rows already grouped: a view, no copy
        else:
            block = unit[rows]  # (g, m, d)
        gram = block @ block.transpose(0, 2, 1)  # (g, m, m)
        iu, ju = np.triu_indices(m, 1)  # (m(m-1)/2,) in (i, then j) order
        out[pair_start[which][:, None] + np.arange(iu.size)] = gram[:, iu, ju]
    return i, j, np.clip(out, -1.0, 1.0)


def maj_at_k_table_vectorised(df, ks=None, *, seed: int = 0, max_subsets: int = 256):
    """:func:`analysis.passk.maj_at_k_table`, all problems of a benchmark at once.

    Same values: every problem with n samples uses the same k-subsets (the per-problem function
    draws them from the same seed), so the votes of all problems for one k are one batched product
    onehot (A, P, n) @ member (n, S) -> (A, P, S), made in chunks of problems; value(a) is the
    per-answer majority of the samples' flags (0.5 on a tie), as
    :func:`analysis.passk.answer_correctness`. Reductions run over the leading answer axis.
    """
    import numpy as np
    import pandas as pd

    from analysis.passk import _check_eval_frame, _k_subsets, _ks_for_benchmark

    _check_eval_frame(df)
    out = []
    ordered = df.sort_values(["benchmark", "problem_id", "sample"], kind="stable")
    for benchmark, bench in ordered.groupby("benchmark", sort=True):
        problem, names = pd.factorize(bench["problem_id"].to_numpy(), sort=True)  # (R,) rows grouped by problem
        sizes = np.bincount(problem)  # (P,)
        ks_b = _ks_for_benchmark(ks, int(sizes.min()), str(benchmark))
        has = bench["answer"].notna().to_numpy()  # (R,)
        answer, _ = pd.factorize(bench["answer"].to_numpy())  # (R,), -1 for no answer
        key = problem.astype(np.int64) * (int(answer.max()) + 2) + answer + 1  # (R,) one per (problem, answer)
        uniq, code = np.unique(key, return_inverse=True)  # keys sorted: a problem's answers are contiguous
        flags = bench["correct"].astype(bool).to_numpy()
        yes = np.bincount(code[has], weights=flags[has], minlength=uniq.size)
        total = np.bincount(code[has], minlength=uniq.size)
        value = np.where(yes * 2 > total, 1.0, np.where(yes * 2 < total, 0.0, 0.5))  # (U,)
        first_code = np.searchsorted(uniq, (uniq // (int(answer.max()) + 2))[np.r_[0, np.flatnonzero(
            np.diff(uniq // (int(answer.max()) + 2))) + 1]] * (int(answer.max()) + 2))  # (P,) first key of a problem
        local = code - first_code[problem]  # (R,) answer index within its problem (0 may be "no answer")
        n_answers = int(local.max()) + 1
        first_row = np.r_[0, np.cumsum(sizes)[:-1]]  # (P,)
        for n in np.unique(sizes):
            probs = np.flatnonzero(sizes == n)  # problems with n samples
            rows = first_row[probs][:, None] + np.arange(n)  # (P, n)
            p_idx, s_idx = np.nonzero(has[rows])
            onehot = np.zeros((n_answers, probs.size, n), dtype=np.float32)  # (A, P, n)
            onehot[local[rows][p_idx, s_idx], p_idx, s_idx] = 1.0
            vals = np.zeros((n_answers, probs.size))  # (A, P)
            vals[local[rows][p_idx, s_idx], p_idx] = value[code[rows][p_idx, s_idx]]
            for k in ks_b:
                subsets = _k_subsets(int(n), k, seed=seed, max_subsets=max_subsets)  # (S, k)
                member = np.zeros((n, subsets.shape[0]), dtype=np.float32)  # (n, S)
                np.put_along_axis(member.T, subsets, 1.0, axis=1)
                scores = np.empty(probs.size)
                step = max(1, (1 << 22) // (subsets.shape[0] * n_answers))
                for lo in range(0, probs.size, step):
                    votes = onehot[:, lo : lo + step] @ member  # (A, p, S), exact small integers
                    top = votes.max(axis=0)  # (p, S)
                    tied = votes == top  # (A, p, S)
                    n_tied = tied.sum(axis=0)  # (p, S)
                    hit = np.einsum("aps,ap->ps", tied, vals[:, lo : lo + step])  # (p, S)
                    scores[lo : lo + step] = np.where(top > 0, hit / n_tied, 0.0).mean(1)  # no votes: 0
                out.append(pd.DataFrame({"benchmark": benchmark, "problem_id": names[probs], "metric": "maj", "k": k,
                                         "value": scores}))
    table = pd.concat(out, ignore_index=True)
    return table.groupby(["benchmark", "metric", "k"], sort=True)["value"].mean().reset_index().astype(
        {"k": int, "value": float})


# ---------------------------------------------------------------------------------------------
# Our layers around TRL
# ---------------------------------------------------------------------------------------------


class BufferedTracker:
    """A tracker that holds metrics in memory and writes them in one batch every ``flush_s`` seconds.

    Candidate for ``workbench.tracking.MlflowTracker``: each ``log_metrics`` is otherwise one
    synchronous SQLite transaction (~40 ms measured here), three per step (the recorder's metrics,
    ``perf/step_s``, TRL's scalars). Metrics appear up to ``flush_s`` later; ``finish`` and every
    artifact write flush first.
    """

    def __init__(self, tracker, flush_s: float = 10.0) -> None:
        self.tracker = tracker
        self.run_id = tracker.run_id
        self.flush_s = flush_s
        self._pending: list[tuple[dict, int]] = []
        self._last = time.monotonic()

    def log_metrics(self, metrics: dict, step: int) -> None:
        self._pending.append((dict(metrics), step))
        if time.monotonic() - self._last >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._last = time.monotonic()
        if not pending:
            return
        from mlflow.entities import Metric

        from workbench.tracking import check_metric_name

        now = int(time.time() * 1000)
        items = [Metric(check_metric_name(k), float(v), now, step) for metrics, step in pending
                 for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
        for i in range(0, len(items), 1000):
            self.tracker.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_parquet(self, frame, artifact_file: str) -> None:
        self.tracker.log_parquet(frame, artifact_file)

    def __getattr__(self, name: str):  # log_params, log_text, set_tags, ...
        return getattr(self.tracker, name)

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        self.tracker.finish(status)


class CachedEmbedder:
    """Candidate for ``trainers.embeddings.TextEmbedder.encode``: encode each distinct answer text once.

    Completions of one group often share their answer text (on the arithmetic task nearly always:
    a few distinct numbers per group), and texts repeat across steps; the encoder is
    deterministic, so a bounded text -> vector cache returns the same embeddings.
    """

    def __init__(self, embedder, max_entries: int = 50_000) -> None:
        self.embedder = embedder
        self.max_entries = max_entries
        self._cache: dict[str, object] = {}

    def encode(self, texts):
        import numpy as np

        from trainers.embeddings import answer_text

        keys = [answer_text(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            for key, vec in zip(missing, self.embedder.encode(missing), strict=True):
                if len(self._cache) >= self.max_entries:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = vec
        if not keys:
            return self.embedder.encode([])
        return np.stack([self._cache[k] for k in keys])

    def __getattr__(self, name: str):
        return getattr(self.embedder, name)


def geometry_metrics_gram(grad, emb, groups, correct, tau: float = 0.1) -> dict[str, float]:
    """:func:`analysis.geometry.geometry_metrics` from :func:`group_cosines`, pair types as integer codes.

    Same keys and values (to float rounding). No DataFrame and no string column: a pair's type is
    its number of correct members (0, 1, 2), indexing ``analysis.geometry.PAIR_TYPES``.
    """
    import numpy as np

    from analysis.geometry import PAIR_TYPES, PREFIX, _check_features, _check_tau, _summaries

    _check_tau(tau)
    groups = np.asarray(groups).reshape(-1)
    flags = np.asarray(correct, dtype=bool).reshape(-1)
    i, j, g = group_cosines(_check_features("features", grad, groups.size), groups)
    s = None if emb is None else group_cosines(_check_features("emb", emb, groups.size), groups)[2]
    kind = flags[i].astype(np.int8) + flags[j]  # (P,)
    metrics = {f"{PREFIX}/{name}": v for name, v in _summaries(g, s, tau).items()}
    for code, pair_type in enumerate(PAIR_TYPES):
        part = kind == code
        for name, v in _summaries(g[part], None if s is None else s[part], tau).items():
            metrics[f"{PREFIX}/{pair_type}/{name}"] = v
    return {key: float(v) for key, v in metrics.items() if not math.isnan(v)}


def load_dumps_one_repository(run_id: str, uri: str, steps=None, folder: str = "features"):
    """:func:`analysis.loaders.load_dumps` resolving the run's artifact repository once.

    ``MlflowClient.download_artifacts`` looks the run up again (two SQL queries and a logged-model
    check, ~35 ms on SQLite) for every file; here the repository of the run's artifact URI is
    resolved once and each dump is one file copy and one Parquet read.
    """
    import tempfile

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from analysis import loaders

    client = loaders._client(uri)
    available = loaders.artifact_steps(run_id, uri, folder)
    wanted = available if steps is None else [s for s in steps if s in set(available)]
    repo = get_artifact_repository(client.get_run(run_id).info.artifact_uri)
    frames, invalid = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for step in wanted:
            try:
                local = repo.download_artifacts(f"{folder}/step_{step:06d}.parquet", tmp)
                frames.append(pq.read_table(local).to_pandas(ignore_metadata=True))
            except (pa.ArrowInvalid, OSError):
                invalid.append(step)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not out.empty:
        out.insert(0, "run_id", run_id)
    out.attrs["invalid_steps"] = invalid
    return out

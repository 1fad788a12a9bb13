"""Candidate fixes measured next to the workbench's own code (not used by the workbench).

Each function computes exactly what its workbench counterpart computes (the benchmark asserts
agreement) with fewer passes over the (positions x vocabulary) data. They are here so
``make bench`` shows the gain side by side; once a fix lands in ``trainers/features.py`` its
candidate and its rows can go.
"""

from __future__ import annotations

import math


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

"""pass@k and maj@k estimators, and confidence intervals for them (DESIGN 5).

Pure numpy/pandas/scipy: no torch, no ``workbench``, no ``trainers``.

The input of the table functions is the per-sample eval artifact of DESIGN 6
(``eval/step_<step>.parquet``): one row per sample with columns ``benchmark``,
``problem_id``, ``sample``, ``answer`` (extracted, normalised, or null) and
``correct`` (bool). The tables are tidy: one row per (benchmark, metric, k).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.records import REQUIRED_EVAL_COLUMNS

_EVAL_COLUMNS = REQUIRED_EVAL_COLUMNS[1:]  # every column but the step
_CHUNK_ELEMENTS = 1 << 20  # bound on answers x problems x subsets in one block of maj@k votes


# --------------------------------------------------------------------------- pass@k


def _check_n_c_k(n: int, c: int, k: int) -> None:
    """Raise ValueError naming the bad value when not 1 <= k <= n and 0 <= c <= n."""
    if n < 1:
        raise ValueError(f"n={n} samples is invalid; need n >= 1")
    if k < 1:
        raise ValueError(f"k={k} is invalid; choose 1 <= k <= n={n}")
    if k > n:
        raise ValueError(f"k={k} exceeds n={n} samples; choose k <= n")
    if not 0 <= c <= n:
        raise ValueError(f"c={c} correct samples is outside [0, n={n}]")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` of ``n`` samples correct.

    pass@k = 1 - C(n-c, k) / C(n, k)
           = 1 - prod_{i=n-c+1}^{n} (1 - k / i)      (stable product form)

    DESIGN 5 [paper]; estimator and product form from Chen et al. 2021
    (human-eval ``estimate_pass_at_k``). Equals 1 when n - c < k. One problem of
    :func:`pass_at_k_array`, which holds the formula.

    Raises:
        ValueError: unless 1 <= k <= n and 0 <= c <= n.
    """
    n, c, k = int(n), int(c), int(k)
    _check_n_c_k(n, c, k)
    return float(pass_at_k_array(n, np.array([c]), k)[0])


def pass_at_k_array(n: int | np.ndarray, c_array: np.ndarray, k: int) -> np.ndarray:
    """pass@k for many problems at once: one value per entry of ``c_array``.

    pass@k = 1 - prod_{i=n-c+1}^{n} (1 - k / i) (DESIGN 5 [paper], the product form
    of :func:`pass_at_k`), evaluated as a masked (P, max c) product, and 1 where
    n - c < k. ``n`` is one sample count for all problems or one per problem.

    Raises:
        ValueError: unless 1 <= k <= n and 0 <= c <= n for every problem.
    """
    c = np.asarray(c_array, dtype=np.int64).reshape(-1)  # (P,)
    n_arr = np.broadcast_to(np.asarray(n, dtype=np.int64), c.shape)  # (P,)
    k = int(k)
    bad = np.flatnonzero((n_arr < 1) | (k < 1) | (k > n_arr) | (c < 0) | (c > n_arr))
    if bad.size:
        p = int(bad[0])
        try:
            _check_n_c_k(int(n_arr[p]), int(c[p]), k)
        except ValueError as err:
            raise ValueError(f"problem {p}: {err}") from None
    out = np.ones(c.shape, dtype=np.float64)  # (P,)
    if c.size == 0:
        return out
    offsets = np.arange(max(int(c.max()), 1))  # (C,)
    i = (n_arr - c + 1)[:, None] + offsets[None, :]  # (P, C)
    factors = np.where(offsets[None, :] < c[:, None], 1.0 - k / i, 1.0)  # (P, C)
    computed = n_arr - c >= k
    out[computed] = 1.0 - np.prod(factors[computed], axis=1)
    return out


def ks_for(n: int) -> list[int]:
    """The k values reported for n samples: 1, 2, 4, ... <= n, then n itself.

    DESIGN 5 [paper]: "report k = 1, 2, 4, ..., n".
    """
    if n < 1:
        raise ValueError(f"n={n} samples is invalid; need n >= 1")
    ks = [2**e for e in range(n.bit_length()) if 2**e <= n]
    if ks[-1] != n:
        ks.append(n)
    return ks


# --------------------------------------------------------------------------- maj@k


def _k_subsets(n: int, k: int, *, seed: int, max_subsets: int) -> np.ndarray:
    """Index subsets of size k of range(n): all of them when C(n, k) <= max_subsets,
    else ``max_subsets`` uniformly random ones (independent draws) from
    ``np.random.default_rng(seed)``. Shape (S, k)."""
    if math.comb(n, k) <= max_subsets:
        return np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(-1, k)
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((max_subsets, n)), axis=1)[:, :k]  # (S, k)


def maj_at_k(
    answers: Sequence[str | None],
    correct: Sequence[bool],
    k: int,
    *,
    seed: int = 0,
    max_subsets: int = 256,
) -> float:
    """maj@k of one problem: how often a majority vote over k samples is right.

    For a set S of k samples, vote(S) = mean over the answers a with the most
    votes in S of value(a) (ties broken uniformly at random, so the exact
    expectation over tied answers), or 0 if no sample in S has an answer.
    maj@k = mean over k-subsets S of the n samples of vote(S). value(a) = 1 if
    most samples with answer a are flagged correct, 0 if most are flagged
    incorrect, 0.5 on a tie (samples with one answer normally agree; this only
    settles verifier disagreements) [ours].

    DESIGN 5 [paper]. Subsets [ours]: k == n uses all samples; k < n averages
    over every k-subset when C(n, k) <= ``max_subsets``, else over
    ``max_subsets`` uniformly random k-subsets drawn with
    ``np.random.default_rng(seed)`` (an unbiased, seeded estimate).

    ``answers`` are the extracted, already normalised answers (None: no
    answer, which casts no vote); they are compared as exact strings. One
    problem of :func:`_maj_scores`, which holds the vote and the tie rule.
    """
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"answers has {n} entries but correct has {len(correct)}; pass one flag per sample")
    _check_n_c_k(n, 0, k)
    if max_subsets < 1:
        raise ValueError(f"max_subsets={max_subsets} is invalid; need max_subsets >= 1")
    answer, value = _answer_codes(np.zeros(n, dtype=np.int64), pd.Series(list(answers), dtype=object),
                                  pd.Series(list(correct), dtype=object))  # (n,), (A, 1)
    return float(_maj_scores(answer[None, :], value, [k], seed=seed, max_subsets=max_subsets)[0, 0])


# --------------------------------------------------------------------------- tables


def _check_eval_frame(df: pd.DataFrame) -> None:
    missing = [col for col in _EVAL_COLUMNS if col not in df.columns]
    if missing:
        raise ValueError(f"eval frame lacks columns {missing}; expected {list(_EVAL_COLUMNS)} (DESIGN 6)")


def _ks_for_benchmark(ks: Sequence[int] | None, n_min: int, benchmark: str) -> list[int]:
    if ks is None:
        return ks_for(n_min)
    for k in ks:
        if not 1 <= k <= n_min:
            raise ValueError(
                f"k={k} is invalid for benchmark {benchmark!r}, whose smallest problem has "
                f"n={n_min} samples; choose 1 <= k <= {n_min}, or ks=None for ks_for(n)"
            )
    return [int(k) for k in ks]


def problem_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Per problem: n samples and c correct. Columns benchmark, problem_id, n, c."""
    _check_eval_frame(df)
    flags = df["correct"].astype(bool)
    grouped = flags.groupby([df["benchmark"], df["problem_id"]], sort=True)
    return pd.DataFrame({"n": grouped.size(), "c": grouped.sum()}).reset_index()


def pass_at_k_per_problem(df: pd.DataFrame, ks: Sequence[int] | None = None) -> pd.DataFrame:
    """pass@k of every problem (DESIGN 5 [paper]) from the per-sample eval frame.

    ``ks=None`` uses :func:`ks_for` of each benchmark's smallest n. Returns
    columns benchmark, problem_id, metric ("pass"), k, value.
    """
    counts = problem_counts(df)
    parts = []
    for benchmark, block in counts.groupby("benchmark", sort=True):
        for k in _ks_for_benchmark(ks, int(block["n"].min()), str(benchmark)):
            values = pass_at_k_array(block["n"].to_numpy(), block["c"].to_numpy(), k)
            parts.append(block[["benchmark", "problem_id"]].assign(metric="pass", k=k, value=values))
    return _concat(parts)


def _answer_codes(problem: np.ndarray, answers: pd.Series, correct: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's answer as an index among its problem's distinct answers, and their values.

    ``problem`` (R,) is each sample's problem index (P problems). Answers are
    compared as strings, as in :func:`maj_at_k`; a missing one (None, NaN) gets
    -1 and casts no vote. Returns the indices (R,) and value(a) of
    value(a) of :func:`maj_at_k` (1, 0, or 0.5 on a tie of the flags) as an (A, P) array (A: the most distinct answers
    of any problem; 0 where a problem has fewer).
    """
    has = answers.notna().to_numpy()  # (R,)
    text, _ = pd.factorize(answers[has].astype(str))  # (R',) one code per distinct string
    n_texts = max(1, int(text.max(initial=0)) + 1)
    key = problem[has].astype(np.int64) * n_texts + text  # (R',) one per (problem, answer)
    pairs, pair_of_row = np.unique(key, return_inverse=True)  # (U,) sorted: by problem, then answer
    pair_problem = pairs // n_texts  # (U,) ascending
    pair_index = np.arange(pairs.size) - np.searchsorted(pair_problem, pair_problem)  # (U,) answer index in its problem
    flags = correct.astype(bool).to_numpy()[has]  # (R',)
    yes = np.bincount(pair_of_row, weights=flags, minlength=pairs.size)  # (U,)
    total = np.bincount(pair_of_row, minlength=pairs.size)  # (U,)
    value = np.zeros((int(pair_index.max(initial=0)) + 1, int(problem.max(initial=-1)) + 1))  # (A, P)
    value[pair_index, pair_problem] = np.where(2 * yes > total, 1.0, np.where(2 * yes < total, 0.0, 0.5))
    index = np.full(problem.size, -1)  # (R,)
    index[has] = pair_index[pair_of_row]
    return index, value


def _maj_scores(answer: np.ndarray, value: np.ndarray, ks: Sequence[int], *, seed: int, max_subsets: int) -> np.ndarray:
    """maj@k (:func:`maj_at_k`) for each k of p problems with n samples each, shape (p, K).

    ``answer`` (p, n): each sample's answer index within its problem, -1 for
    none; ``value`` (A, p): value(a) per answer index. All problems use the same
    k-subsets (:func:`_k_subsets` with the same ``seed``), so their votes are one
    product onehot (A p, n) @ member (n, S) -> (A, p, S), made for blocks of
    problems. A subset scores the mean value over the answers with the top
    count (uniform random tie-break, in expectation), 0 when nobody voted.
    """
    n_problems, n = answer.shape
    n_answers = value.shape[0]
    members = []
    for k in ks:
        subsets = _k_subsets(n, k, seed=seed, max_subsets=max_subsets)  # (S, k)
        member = np.zeros((n, subsets.shape[0]), dtype=np.float32)  # (n, S)
        member[subsets, np.arange(subsets.shape[0])[:, None]] = 1.0
        members.append(member)
    value = value.astype(np.float32)  # 0, 0.5 and 1, and their sums below, are exact in float32
    out = np.empty((n_problems, len(ks)))  # (p, K)
    step = max(1, _CHUNK_ELEMENTS // (n_answers * max(n, *(m.shape[1] for m in members))))
    for lo in range(0, n_problems, step):
        block = answer[lo : lo + step]  # (c, n)
        onehot = (block[None] == np.arange(n_answers)[:, None, None]).astype(np.float32)  # (A, c, n)
        flat = onehot.reshape(-1, n)  # (A c, n): one 2-D product per k, far faster than a batched one
        for col, member in enumerate(members):
            votes = (flat @ member).reshape(n_answers, block.shape[0], -1)  # (A, c, S) vote counts, exact
            top = votes.max(axis=0)  # (c, S)
            tied = votes == top  # (A, c, S)
            total = np.einsum("acs,ac->cs", tied, value[:, lo : lo + step])  # (c, S) sum of value over the tied
            mean_value = np.divide(total, tied.sum(axis=0, dtype=np.int32), dtype=np.float64)  # (c, S)
            out[lo : lo + step, col] = np.where(top > 0, mean_value, 0.0).mean(axis=1)  # nobody voted: 0
    return out


def maj_at_k_per_problem(
    df: pd.DataFrame, ks: Sequence[int] | None = None, *, seed: int = 0, max_subsets: int = 256
) -> pd.DataFrame:
    """maj@k of every problem (:func:`maj_at_k`, DESIGN 5 [paper]).

    Samples are ordered by ``sample`` within a problem; every problem uses the
    same ``seed``. ``ks=None`` uses :func:`ks_for` of each benchmark's smallest
    n. Returns columns benchmark, problem_id, metric ("maj"), k, value, a row
    per problem (sorted) and k. Vectorised over the problems of a benchmark
    with the same number of samples (:func:`_maj_scores`).
    """
    _check_eval_frame(df)
    if max_subsets < 1:
        raise ValueError(f"max_subsets={max_subsets} is invalid; need max_subsets >= 1")
    parts = []
    ordered = df.sort_values(["benchmark", "problem_id", "sample"], kind="stable")
    for benchmark, bench in ordered.groupby("benchmark", sort=True):
        bench = bench[bench["problem_id"].notna()]  # as groupby, which drops a missing key
        if bench.empty:
            continue
        problem, names = pd.factorize(bench["problem_id"], sort=True)  # (R,) each problem's rows contiguous
        sizes = np.bincount(problem)  # (P,) samples per problem
        ks_b = _ks_for_benchmark(ks, int(sizes.min()), str(benchmark))
        answer, value = _answer_codes(problem, bench["answer"], bench["correct"])  # (R,), (A, P)
        first_row = np.cumsum(sizes) - sizes  # (P,)
        scores = np.empty((sizes.size, len(ks_b)))  # (P, K)
        for n in np.unique(sizes):
            probs = np.flatnonzero(sizes == n)  # problems with n samples
            rows = first_row[probs][:, None] + np.arange(n)  # (p, n)
            scores[probs] = _maj_scores(answer[rows], value[:, probs], ks_b, seed=seed, max_subsets=max_subsets)
        parts.append(pd.DataFrame({"benchmark": benchmark, "problem_id": names.repeat(len(ks_b)), "metric": "maj",
                                   "k": np.tile(ks_b, sizes.size), "value": scores.ravel()}))
    return _concat(parts)


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=["benchmark", "problem_id", "metric", "k", "value"])
    return pd.concat(parts, ignore_index=True)


def _mean_over_problems(per_problem: pd.DataFrame) -> pd.DataFrame:
    table = per_problem.groupby(["benchmark", "metric", "k"], sort=True)["value"].mean().reset_index()
    return table.astype({"k": int, "value": float})


def pass_at_k_table(df: pd.DataFrame, ks: Sequence[int] | None = None) -> pd.DataFrame:
    """Per-benchmark pass@k: the mean over problems of :func:`pass_at_k`.

    DESIGN 5 [paper]. Input: the per-sample eval frame of DESIGN 6. Output:
    tidy columns benchmark, metric ("pass"), k, value. ``ks=None`` reports
    :func:`ks_for` of each benchmark's smallest n; an explicit k above a
    benchmark's n raises ValueError.
    """
    return _mean_over_problems(pass_at_k_per_problem(df, ks))


def maj_at_k_table(
    df: pd.DataFrame, ks: Sequence[int] | None = None, *, seed: int = 0, max_subsets: int = 256
) -> pd.DataFrame:
    """Per-benchmark maj@k: the mean over problems of :func:`maj_at_k`.

    DESIGN 5 [paper]. Same input, ``ks`` rule and output shape as
    :func:`pass_at_k_table`, with metric "maj".
    """
    return _mean_over_problems(maj_at_k_per_problem(df, ks, seed=seed, max_subsets=max_subsets))


# --------------------------------------------------------------------------- distinct correct solutions


def distinct_correct_per_problem(df: pd.DataFrame) -> pd.DataFrame:
    """Distinct correct solutions of every problem: the number of different ``solution`` values among its
    correct samples (0 when none is correct). DESIGN 10 [ours].

    Only benchmarks whose task writes solutions count: those with a non-null ``solution`` on some row (a
    task without a canonical form, math answers, writes none and gets no rows). Returns columns
    benchmark, problem_id, metric ("distinct_correct"), k (n, the samples of the problem), value.
    """
    _check_eval_frame(df)
    if "solution" not in df.columns:
        return _concat([])
    with_form = df.groupby("benchmark")["solution"].transform(lambda s: s.notna().any()).astype(bool)
    rows = df[with_form]
    if rows.empty:
        return _concat([])
    right = rows["correct"].astype(bool) & rows["solution"].notna()
    keys = [rows["benchmark"], rows["problem_id"]]
    distinct = rows["solution"].where(right).groupby(keys, sort=True).nunique()
    n = rows.groupby(keys, sort=True).size()
    out = pd.DataFrame({"value": distinct.astype(float), "k": n.astype(int)}).reset_index()
    return out.assign(metric="distinct_correct")[["benchmark", "problem_id", "metric", "k", "value"]]


def distinct_correct_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per-benchmark mean over problems of :func:`distinct_correct_per_problem`: columns benchmark, metric,
    k (the smallest n), value."""
    per_problem = distinct_correct_per_problem(df)
    if per_problem.empty:
        return pd.DataFrame(columns=["benchmark", "metric", "k", "value"])
    table = per_problem.groupby(["benchmark", "metric"], sort=True).agg(k=("k", "min"), value=("value", "mean"))
    return table.reset_index().astype({"k": int, "value": float})


# --------------------------------------------------------------------------- by level


def problem_levels(df: pd.DataFrame) -> pd.DataFrame:
    """Each problem's level (the ``level`` column; null where the task defines none, or in frames recorded
    before the column existed): columns benchmark, problem_id, level (nullable Int64)."""
    _check_eval_frame(df)
    level = df["level"] if "level" in df.columns else pd.Series(pd.NA, index=df.index)
    levels = level.groupby([df["benchmark"], df["problem_id"]], sort=True).first()
    return levels.astype("Int64").rename("level").reset_index()


def by_level(per_problem: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """A per-problem table (:func:`pass_at_k_per_problem`, :func:`maj_at_k_per_problem`,
    :func:`distinct_correct_per_problem`) averaged over the problems of each level of ``df``.

    Returns columns benchmark, level, metric, k, value, problems (the problems averaged); problems without a
    level are left out, so a benchmark without levels gives no rows.
    """
    cols = ["benchmark", "level", "metric", "k", "value", "problems"]
    if per_problem.empty:
        return pd.DataFrame(columns=cols)
    tagged = per_problem.merge(problem_levels(df), on=["benchmark", "problem_id"], how="left")
    tagged = tagged[tagged["level"].notna()]
    if tagged.empty:
        return pd.DataFrame(columns=cols)
    table = tagged.groupby(["benchmark", "level", "metric", "k"], sort=True)["value"].agg(["mean", "size"])
    table = table.reset_index().rename(columns={"mean": "value", "size": "problems"})
    return table.astype({"level": int, "k": int, "value": float, "problems": int})[cols]


# --------------------------------------------------------------------------- intervals


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level} is invalid; choose a confidence level in (0, 1), e.g. 0.95")


def bootstrap_ci(
    values_per_problem: np.ndarray, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean over problems and its percentile-bootstrap confidence interval.

    Resample the P problem values with replacement ``n_boot`` times
    (``np.random.default_rng(seed)``); (lo, hi) are the (1-level)/2 and
    (1+level)/2 quantiles of the resampled means. DESIGN 5 [ours: percentile
    bootstrap over problems].
    """
    _check_level(level)
    values = np.asarray(values_per_problem, dtype=np.float64).reshape(-1)  # (P,)
    if values.size == 0:
        raise ValueError("values_per_problem is empty; need at least one problem")
    if not np.all(np.isfinite(values)):
        raise ValueError("values_per_problem contains NaN or inf; drop or fill them first")
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot} is invalid; need n_boot >= 1")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))  # (B, P)
    means = values[idx].mean(axis=1)  # (B,)
    lo, hi = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(values.mean()), float(lo), float(hi)


def mean_ci_over_seeds(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean over seeds and its Student-t confidence interval.

    mean +- t_{(1+level)/2, s-1} * std(ddof=1) / sqrt(s) for s seeds
    (``scipy.stats.t``). One seed gives (value, nan, nan). DESIGN 5 [ours].
    """
    _check_level(level)
    arr = np.asarray(values, dtype=np.float64).reshape(-1)  # (s,)
    if arr.size == 0:
        raise ValueError("values is empty; need at least one seed")
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1.0 + level) / 2.0, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean, mean - half, mean + half

"""Tests for analysis/passk.py (DESIGN 5): data-file cases, brute force, properties."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.records import eval_key as metric_key
from analysis.passk import (
    bootstrap_ci,
    ks_for,
    maj_at_k,
    maj_at_k_per_problem,
    maj_at_k_table,
    mean_ci_over_seeds,
    pass_at_k,
    pass_at_k_array,
    pass_at_k_per_problem,
    pass_at_k_table,
    problem_counts,
)
from conftest import imported_packages  # noqa: E402

CASES = json.loads((Path(__file__).parent / "data" / "passk_cases.json").read_text())
FAST = settings(max_examples=60, deadline=None)


# --------------------------------------------------------------------------- references


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(s < c for s in subset) for subset in subsets) / len(subsets)


def brute_vote(answers: list, value: dict, subset: tuple) -> float:
    counts = Counter(answers[s] for s in subset if answers[s] is not None)
    if not counts:
        return 0.0
    top = max(counts.values())
    tied = [a for a, cnt in counts.items() if cnt == top]
    return sum(value[a] for a in tied) / len(tied)


def brute_maj_at_k(answers: list, correct: list, k: int) -> float:
    """Plain loop over all k-subsets; answers with consistent flags only."""
    value = {a: float(f) for a, f in zip(answers, correct, strict=True) if a is not None}
    subsets = list(itertools.combinations(range(len(answers)), k))
    return sum(brute_vote(answers, value, s) for s in subsets) / len(subsets)


@st.composite
def n_c_k(draw, max_n: int = 40):
    n = draw(st.integers(1, max_n))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@st.composite
def consistent_answers(draw, max_n: int = 8):
    """Answers from a small alphabet (None = no answer); 'a' is the right one."""
    n = draw(st.integers(1, max_n))
    answers = draw(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=n, max_size=n))
    return answers, [a == "a" for a in answers]


# --------------------------------------------------------------------------- pass@k


@pytest.mark.parametrize("case", CASES["pass_at_k"], ids=lambda c: c["name"])
def test_pass_at_k_cases(case):
    got = pass_at_k(case["n"], case["c"], case["k"])
    assert got == pytest.approx(case["expected"], abs=case["tolerance"])
    arr = pass_at_k_array(case["n"], np.array([case["c"]]), case["k"])
    assert arr[0] == pytest.approx(case["expected"], abs=case["tolerance"])


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


@FAST
@given(n_c_k())
def test_pass_at_k_matches_exact_binomials(nck):
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


@FAST
@given(n_c_k())
def test_pass_at_1_is_accuracy_and_pass_at_n_is_any(nck):
    n, c, _ = nck
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)
    assert pass_at_k(n, c, n) == float(c > 0)


@FAST
@given(n_c_k())
def test_pass_at_k_monotone_in_k_and_c(nck):
    n, c, _ = nck
    by_k = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(by_k))
    by_c = [pass_at_k(n, cc, max(1, n // 2)) for cc in range(n + 1)]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(by_c))
    assert all(0.0 <= v <= 1.0 for v in by_k)


@FAST
@given(st.lists(n_c_k(max_n=20), min_size=1, max_size=12), st.integers(1, 20))
def test_pass_at_k_array_equals_scalar(problems, k):
    problems = [(n, c) for n, c, _ in problems if k <= n] or [(k, 0)]
    n_arr = np.array([n for n, _ in problems])
    c_arr = np.array([c for _, c in problems])
    got = pass_at_k_array(n_arr, c_arr, k)
    assert got.shape == (len(problems),)
    np.testing.assert_array_equal(got, [pass_at_k(n, c, k) for n, c in problems])


def test_pass_at_k_array_shared_n_and_empty():
    np.testing.assert_allclose(pass_at_k_array(4, np.array([0, 1, 4]), 1), [0.0, 0.25, 1.0])
    assert pass_at_k_array(4, np.array([], dtype=int), 2).shape == (0,)


@pytest.mark.parametrize(
    ("n", "c", "k", "names"),
    [
        (16, 3, 20, ["k=20", "n=16"]),
        (16, 3, 0, ["k=0"]),
        (16, 17, 4, ["c=17", "n=16"]),
        (16, -1, 4, ["c=-1"]),
        (0, 0, 1, ["n=0"]),
    ],
)
def test_pass_at_k_rejects_bad_values(n, c, k, names):
    with pytest.raises(ValueError) as err:
        pass_at_k(n, c, k)
    assert all(name in str(err.value) for name in names)


def test_pass_at_k_array_names_the_problem():
    with pytest.raises(ValueError, match=r"problem 1: k=8 exceeds n=4"):
        pass_at_k_array(np.array([8, 4]), np.array([1, 1]), 8)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (16, [1, 2, 4, 8, 16]), (32, [1, 2, 4, 8, 16, 32]), (12, [1, 2, 4, 8, 12])],
)
def test_ks_for(n, expected):
    assert ks_for(n) == expected


def test_ks_for_rejects_zero():
    with pytest.raises(ValueError, match="n=0"):
        ks_for(0)


# --------------------------------------------------------------------------- maj@k


@pytest.mark.parametrize("case", CASES["maj_at_k"], ids=lambda c: c["name"])
def test_maj_at_k_cases(case):
    got = maj_at_k(case["answers"], case["correct"], case["k"])
    assert got == pytest.approx(case["expected"], abs=case["tolerance"])


@FAST
@given(consistent_answers(), st.data())
def test_maj_at_k_matches_brute_force(answers_correct, data):
    answers, correct = answers_correct
    k = data.draw(st.integers(1, len(answers)))
    got = maj_at_k(answers, correct, k, max_subsets=math.comb(len(answers), k))
    assert got == pytest.approx(brute_maj_at_k(answers, correct, k), abs=1e-12)


def test_maj_at_k_sampled_subsets_are_seeded_and_close():
    rng = np.random.default_rng(3)
    answers = list(rng.choice(["a", "b", "c"], size=16, p=[0.45, 0.35, 0.2]))
    correct = [a == "a" for a in answers]
    exact = brute_maj_at_k(answers, correct, 8)  # C(16, 8) = 12870 subsets
    first = maj_at_k(answers, correct, 8, seed=1, max_subsets=2000)
    assert first == maj_at_k(answers, correct, 8, seed=1, max_subsets=2000)
    assert first == pytest.approx(exact, abs=0.05)


def test_maj_at_k_rejects_bad_inputs():
    with pytest.raises(ValueError, match="k=5 exceeds n=4"):
        maj_at_k(["a"] * 4, [True] * 4, 5)
    with pytest.raises(ValueError, match="correct has 3"):
        maj_at_k(["a"] * 4, [True] * 3, 2)
    with pytest.raises(ValueError, match="max_subsets=0"):
        maj_at_k(["a"] * 4, [True] * 4, 2, max_subsets=0)


# --------------------------------------------------------------------------- tables


def eval_frame() -> pd.DataFrame:
    """Two benchmarks: 'toy' with n=4 (two problems), 'gpqa' with n=2 (one problem)."""
    rows = [
        ("toy", "p1", 0, "5", True),
        ("toy", "p1", 1, "5", True),
        ("toy", "p1", 2, "6", False),
        ("toy", "p1", 3, None, False),
        ("toy", "p2", 0, "1", False),
        ("toy", "p2", 1, "2", False),
        ("toy", "p2", 2, "3", True),
        ("toy", "p2", 3, "1", False),
        ("gpqa", "q1", 1, "B", False),
        ("gpqa", "q1", 0, "A", True),
    ]
    return pd.DataFrame(rows, columns=["benchmark", "problem_id", "sample", "answer", "correct"])


def test_problem_counts():
    counts = problem_counts(eval_frame())
    assert counts.to_dict("records") == [
        {"benchmark": "gpqa", "problem_id": "q1", "n": 2, "c": 1},
        {"benchmark": "toy", "problem_id": "p1", "n": 4, "c": 2},
        {"benchmark": "toy", "problem_id": "p2", "n": 4, "c": 1},
    ]


def test_pass_at_k_table_default_ks_per_benchmark():
    table = pass_at_k_table(eval_frame())
    assert list(table.columns) == ["benchmark", "metric", "k", "value"]
    got = {(r.benchmark, r.k): r.value for r in table.itertuples()}
    assert set(got) == {("gpqa", 1), ("gpqa", 2), ("toy", 1), ("toy", 2), ("toy", 4)}
    assert got["toy", 1] == pytest.approx((0.5 + 0.25) / 2)
    assert got["toy", 2] == pytest.approx((pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 2)
    assert got["toy", 4] == pytest.approx(1.0)
    assert got["gpqa", 1] == pytest.approx(0.5)
    assert set(table["metric"]) == {"pass"}


def test_maj_at_k_table_values_and_sample_order():
    table = maj_at_k_table(eval_frame(), ks=[1, 2])
    got = {(r.benchmark, r.k): r.value for r in table.itertuples()}
    # toy p1, samples (5, 5, 6, none), maj@2 over its 6 pairs: 1 + .5 + 1 + .5 + 1 + 0 = 4/6.
    p2 = brute_maj_at_k(["1", "2", "3", "1"], [False, False, True, False], 2)
    assert got["toy", 2] == pytest.approx((4 / 6 + p2) / 2)
    assert got["toy", 1] == pytest.approx((0.5 + 0.25) / 2)
    assert got["gpqa", 2] == pytest.approx(0.5)
    assert set(table["metric"]) == {"maj"}


def test_tables_reject_k_above_a_benchmarks_n():
    with pytest.raises(ValueError, match=r"k=4 is invalid for benchmark 'gpqa'"):
        pass_at_k_table(eval_frame(), ks=[1, 4])
    with pytest.raises(ValueError, match="lacks columns"):
        pass_at_k_table(eval_frame().drop(columns=["answer"]))


def test_nan_answers_do_not_vote():
    df = eval_frame().astype({"answer": object})
    df = df[df["benchmark"] == "toy"]
    df.loc[df["answer"].isna(), "answer"] = np.nan
    per_problem = maj_at_k_per_problem(df, ks=[4])
    assert per_problem.loc[per_problem["problem_id"] == "p1", "value"].item() == 1.0


def test_per_problem_frames_feed_bootstrap():
    per_problem = pass_at_k_per_problem(eval_frame(), ks=[1])
    toy = per_problem[per_problem["benchmark"] == "toy"]["value"].to_numpy()
    mean, lo, hi = bootstrap_ci(toy, n_boot=200)
    assert lo <= mean <= hi


# --------------------------------------------------------------------------- vectorised maj@k == per-problem loop


def loop_maj_at_k_per_problem(df: pd.DataFrame, ks=None, *, seed: int = 0, max_subsets: int = 256) -> pd.DataFrame:
    """The per-problem implementation maj_at_k_per_problem replaced: one maj_at_k call per problem and k."""
    from analysis.passk import _ks_for_benchmark

    def answer_or_none(value):
        return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)

    rows = []
    ordered = df.sort_values(["benchmark", "problem_id", "sample"], kind="stable")
    for benchmark, bench in ordered.groupby("benchmark", sort=True):
        ks_b = _ks_for_benchmark(ks, int(bench.groupby("problem_id").size().min()), str(benchmark))
        for problem_id, prob in bench.groupby("problem_id", sort=True):
            answers = [answer_or_none(a) for a in prob["answer"]]
            flags = prob["correct"].astype(bool).tolist()
            for k in ks_b:
                value = maj_at_k(answers, flags, k, seed=seed, max_subsets=max_subsets)
                rows.append((benchmark, problem_id, "maj", k, value))
    return pd.DataFrame(rows, columns=["benchmark", "problem_id", "metric", "k", "value"])


def random_eval_frame(seed: int, n_min: int = 1) -> pd.DataFrame:
    """Three benchmarks, ragged sample counts (n >= n_min), rows shuffled; few distinct answers (ties), missing
    ones (None and NaN), answers flagged inconsistently, a problem with no answer at all, int and str answers."""
    rng = np.random.default_rng(seed)
    rows = []
    for benchmark, n_problems, n_lo, n_hi in (("math", 25, 8, 12), ("gpqa", 6, 3, 5), ("tiny", 5, 1, 2)):
        if n_hi < n_min:
            continue
        for p in range(n_problems):
            n = int(rng.integers(max(n_lo, n_min), n_hi + 1))
            silent = p == 3  # no sample of this problem has an answer
            for sample in rng.permutation(n):
                answer = None if silent else rng.choice(np.array(["7", "8", "9", 7, None, np.nan], dtype=object))
                correct = bool(rng.random() < 0.2) if rng.random() < 0.1 else answer in ("7", 7)
                rows.append((benchmark, f"{benchmark}-{p:02d}", int(sample), answer, correct))
    rows += [("math", None, 0, "7", True), ("math", None, 1, "8", False)]  # no problem id: left out, as by groupby
    frame = pd.DataFrame(rows, columns=["benchmark", "problem_id", "sample", "answer", "correct"])
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.mark.parametrize(
    ("seed", "ks", "max_subsets"), [(0, None, 256), (1, [1, 2, 3], 256), (2, None, 4), (3, [1, 3], 1), (4, None, 50)]
)
def test_maj_at_k_per_problem_equals_per_problem_loop(seed, ks, max_subsets):
    df = random_eval_frame(seed, n_min=max(ks or [1]))
    got = maj_at_k_per_problem(df, ks, seed=seed, max_subsets=max_subsets)
    expected = loop_maj_at_k_per_problem(df, ks, seed=seed, max_subsets=max_subsets)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-12)
    table = maj_at_k_table(df, ks, seed=seed, max_subsets=max_subsets)
    expected_table = expected.groupby(["benchmark", "metric", "k"], sort=True)["value"].mean().reset_index()
    pd.testing.assert_frame_equal(table, expected_table.astype({"k": int, "value": float}), rtol=0, atol=1e-12)


def test_maj_at_k_per_problem_blocks_and_int_ids(monkeypatch):
    import analysis.passk as passk

    df = random_eval_frame(5).dropna(subset=["problem_id"])
    df["problem_id"] = df["problem_id"].str[-2:].astype(int) + 100 * (df["benchmark"] == "gpqa")
    expected = loop_maj_at_k_per_problem(df)
    monkeypatch.setattr(passk, "_CHUNK_ELEMENTS", 1)  # one problem per block of votes
    pd.testing.assert_frame_equal(maj_at_k_per_problem(df), expected, rtol=0, atol=1e-12)


def test_maj_at_k_table_edge_frames():
    empty = eval_frame().iloc[:0]
    assert maj_at_k_per_problem(empty).empty and maj_at_k_table(empty).empty
    silent = eval_frame().assign(answer=None)  # nobody answers: every vote scores 0
    assert (maj_at_k_table(silent)["value"] == 0.0).all()
    with pytest.raises(ValueError, match="max_subsets=0"):
        maj_at_k_table(eval_frame(), max_subsets=0)


# --------------------------------------------------------------------------- intervals


def test_bootstrap_ci_covers_truth_at_nominal_rate():
    rng = np.random.default_rng(0)
    true_mean, n_problems, reps = 0.3, 60, 200
    covered = 0
    for rep in range(reps):
        values = (rng.random(n_problems) < true_mean).astype(float)
        _, lo, hi = bootstrap_ci(values, n_boot=1000, seed=rep)
        covered += lo <= true_mean <= hi
    assert 0.88 <= covered / reps <= 0.99


def test_mean_ci_over_seeds_covers_truth_at_nominal_rate():
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(400):
        _, lo, hi = mean_ci_over_seeds(rng.normal(0.2, 0.05, size=3))
        covered += lo <= 0.2 <= hi
    assert 0.88 <= covered / 400 <= 0.99


def test_bootstrap_ci_is_seeded_and_ordered():
    values = np.linspace(0, 1, 30)
    assert bootstrap_ci(values, seed=5) == bootstrap_ci(values, seed=5)
    mean, lo, hi = bootstrap_ci(values, level=0.9)
    assert lo < mean < hi
    assert mean == pytest.approx(0.5)
    assert bootstrap_ci(np.array([0.7])) == (0.7, 0.7, 0.7)


@pytest.mark.parametrize(
    ("values", "kwargs", "match"),
    [
        (np.array([]), {}, "empty"),
        (np.array([0.1, np.nan]), {}, "NaN"),
        (np.array([0.1]), {"level": 1.5}, "level=1.5"),
        (np.array([0.1]), {"n_boot": 0}, "n_boot=0"),
    ],
)
def test_bootstrap_ci_rejects_bad_inputs(values, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(values, **kwargs)


def test_mean_ci_over_seeds_hand_values():
    mean, lo, hi = mean_ci_over_seeds([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(3), s = 1
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    single = mean_ci_over_seeds([0.4])
    assert single[0] == 0.4 and math.isnan(single[1]) and math.isnan(single[2])
    with pytest.raises(ValueError, match="empty"):
        mean_ci_over_seeds([])


# --------------------------------------------------------------------------- names


def test_metric_key():
    assert metric_key("aime25", "pass", 16) == "eval/aime25/pass_at_16"
    assert metric_key("MATH500", "maj", 16) == "eval/MATH500/maj_at_16"
    with pytest.raises(ValueError, match="kind='mean'"):
        metric_key("aime25", "mean", 1)
    with pytest.raises(ValueError, match="name 'aime@25'"):
        metric_key("aime@25", "pass", 1)


@FAST
@given(st.from_regex(r"[A-Za-z0-9_\-.]{1,20}", fullmatch=True), st.sampled_from(["pass", "maj"]), st.integers(1, 1024))
def test_metric_keys_use_only_mlflow_characters(benchmark, kind, k):
    key = metric_key(benchmark, kind, k)
    assert all(ch.isalnum() or ch in "_-./ " for ch in key)
    assert "@" not in key


# --------------------------------------------------------------------------- layering


def test_analysis_passk_imports_no_torch_or_upper_layers():
    imported = imported_packages("analysis/passk.py")
    assert not imported & {"torch", "workbench", "trainers"}

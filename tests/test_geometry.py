"""Tests for analysis/geometry.py (DESIGN 4): hand cases, naive-loop equivalence, names."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.geometry import (
    PAIR_TYPES,
    Pairs,
    direction_fractions,
    geometry_metrics,
    pair_indices,
    pair_types,
    pairs_frame,
    pairwise_cosines,
    semantic_summary,
    unit_rows,
)
from conftest import imported_packages  # noqa: E402

FAST = settings(max_examples=40, deadline=None)
BASE_NAMES = ["grad_cos_mean", "neg_frac", "orth_frac", "opp_frac", "aligned_frac", "sem_cos_mean", "sem_dispersion"]
MLFLOW_NAME = re.compile(r"^[A-Za-z0-9_\-. /]+$")


def naive_pairs(features: np.ndarray, groups: np.ndarray) -> dict[tuple[int, int], float]:
    """Plain double loop: {(i, j): cosine} for i < j in the same group; zero rows give 0."""
    out = {}
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            if groups[i] != groups[j]:
                continue
            a, b = features[i].astype(float), features[j].astype(float)
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            out[i, j] = 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))
    return out


def as_dict(pairs: Pairs) -> dict[tuple[int, int], float]:
    return {(int(i), int(j)): float(c) for i, j, c in zip(pairs.i, pairs.j, pairs.cos, strict=True)}


# --------------------------------------------------------------------------- hand cases


def test_orthogonal_pair():
    pairs = pairwise_cosines(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([0, 0]))
    fr = direction_fractions(pairs.cos)
    assert fr == {"grad_cos_mean": 0.0, "neg_frac": 0.0, "orth_frac": 1.0, "opp_frac": 0.0, "aligned_frac": 0.0}


def test_opposed_pair():
    pairs = pairwise_cosines(np.array([[1.0, 1.0], [-3.0, -3.0]]), np.array([7, 7]))
    fr = direction_fractions(pairs.cos)
    assert fr["opp_frac"] == 1.0 and fr["neg_frac"] == 1.0 and fr["orth_frac"] == 0.0
    assert fr["grad_cos_mean"] == pytest.approx(-1.0)


def test_parallel_pair():
    pairs = pairwise_cosines(np.array([[0.0, 2.0, 1.0], [0.0, 4.0, 2.0]]), np.array([1, 1]))
    fr = direction_fractions(pairs.cos)
    assert fr["aligned_frac"] == 1.0 and fr["neg_frac"] == 0.0
    assert fr["grad_cos_mean"] == pytest.approx(1.0)


def test_tau_boundaries_and_mixed_fractions():
    cos = np.array([-0.5, -0.1, -0.05, 0.0, 0.1, 0.9])
    fr = direction_fractions(cos, tau=0.1)
    assert fr["opp_frac"] == pytest.approx(1 / 6)  # -0.5 only; -0.1 is orthogonal (|g| <= tau)
    assert fr["orth_frac"] == pytest.approx(4 / 6)
    assert fr["aligned_frac"] == pytest.approx(1 / 6)
    assert fr["neg_frac"] == pytest.approx(3 / 6)
    assert fr["grad_cos_mean"] == pytest.approx(0.35 / 6)
    assert direction_fractions(cos, tau=0.0)["orth_frac"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("tau", [-0.1, 1.5, float("nan")])
def test_tau_validation_names_tau(tau):
    with pytest.raises(ValueError, match=r"tau="):
        direction_fractions(np.array([0.2]), tau=tau)
    with pytest.raises(ValueError, match=r"tau="):
        geometry_metrics(np.eye(2), None, np.array([0, 0]), np.array([True, False]), tau=tau)


def test_empty_cosines_give_nan():
    fr = direction_fractions(np.array([]))
    assert all(math.isnan(v) for v in fr.values())
    assert all(math.isnan(v) for v in semantic_summary(np.array([])).values())


def test_zero_vector_has_cosine_zero():
    features = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    got = as_dict(pairwise_cosines(features, np.zeros(3, dtype=int)))
    assert got == {(0, 1): 0.0, (0, 2): 0.0, (1, 2): -1.0}
    np.testing.assert_array_equal(unit_rows(np.zeros((2, 3))), np.zeros((2, 3)))


def test_unit_rows_are_unit():
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float16)
    np.testing.assert_allclose(np.linalg.norm(unit_rows(x), axis=1), 1.0)


def test_non_finite_features_rejected():
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        pairwise_cosines(np.array([[1.0, 0.0], [np.inf, 0.0]]), np.array([0, 0]))


def test_pair_types_split():
    features = np.eye(4)
    pairs = pairwise_cosines(features, np.zeros(4, dtype=int))
    types = pair_types(pairs, np.array([True, True, False, False]))
    got = dict(zip(zip(pairs.i.tolist(), pairs.j.tolist(), strict=True), types.tolist(), strict=True))
    assert got == {
        (0, 1): "correct_correct",
        (0, 2): "correct_incorrect",
        (0, 3): "correct_incorrect",
        (1, 2): "correct_incorrect",
        (1, 3): "correct_incorrect",
        (2, 3): "incorrect_incorrect",
    }


def test_pairs_never_cross_groups_and_singletons_have_none():
    groups = np.array([3, 1, 3, 2, 1, 3])
    i, j = pair_indices(groups)
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 2), (0, 5), (1, 4), (2, 5)]
    assert np.all(groups[i] == groups[j]) and np.all(i < j)
    assert pair_indices(np.array([], dtype=int))[0].size == 0


# --------------------------------------------------------------------------- vectorised == naive


@pytest.mark.parametrize(("seed", "n", "d", "n_groups"), [(0, 1, 3, 1), (1, 12, 5, 3), (2, 40, 16, 7), (3, 64, 2, 1)])
def test_pairwise_cosines_equal_naive_loop(seed, n, d, n_groups):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d))
    features[rng.random(n) < 0.1] = 0.0  # some zero rows
    groups = rng.integers(0, n_groups, size=n)
    pairs = pairwise_cosines(features, groups)
    expected = naive_pairs(features, groups)
    got = as_dict(pairs)
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[key] for key in expected], list(expected.values()), atol=1e-12)
    np.testing.assert_array_equal(pairs.group, groups[pairs.i])


@FAST
@given(
    st.integers(0, 2**31 - 1),
    st.integers(0, 30),
    st.integers(1, 6),
    st.sampled_from(["int", "str"]),
)
def test_pairwise_cosines_equal_naive_loop_property(seed, n, d, id_kind):
    rng = np.random.default_rng(seed)
    features = rng.integers(-2, 3, size=(n, d)).astype(float)  # small ints: zero rows and exact ties occur
    groups = rng.integers(0, 4, size=n)
    if id_kind == "str":
        groups = np.array([f"g{g}" for g in groups], dtype=object if n == 0 else str)
    pairs = pairwise_cosines(features, groups)
    expected = naive_pairs(features, groups)
    got = as_dict(pairs)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12)


def test_chunked_cosines_match_for_wide_features(monkeypatch):
    import analysis.geometry as geometry

    rng = np.random.default_rng(4)
    features, groups = rng.normal(size=(24, 50)), np.repeat(np.arange(3), 8)
    full = pairwise_cosines(features, groups).cos
    monkeypatch.setattr(geometry, "_CHUNK_ELEMENTS", 60)  # one pair per chunk
    np.testing.assert_allclose(pairwise_cosines(features, groups).cos, full, atol=1e-15)


# --------------------------------------------------------------------------- metrics dict


def loop_metrics(grad, emb, groups, correct, tau, pairs_of=naive_pairs):
    """Reference geometry metrics from a per-pair loop (``emb`` None: no semantic keys)."""
    g = pairs_of(grad, groups)
    s = None if emb is None else pairs_of(emb, groups)
    out = {}
    kinds = {None: list(g)}
    for key in g:
        n_ok = int(correct[key[0]]) + int(correct[key[1]])
        kinds.setdefault(PAIR_TYPES[n_ok], []).append(key)
    for kind, keys in kinds.items():
        if not keys:
            continue
        gc = np.array([g[key] for key in keys])
        prefix = "geometry/" if kind is None else f"geometry/{kind}/"
        out.update(
            {
                prefix + "grad_cos_mean": gc.mean(),
                prefix + "neg_frac": np.mean(gc < 0),
                prefix + "orth_frac": np.mean(np.abs(gc) <= tau),
                prefix + "opp_frac": np.mean(gc < -tau),
                prefix + "aligned_frac": np.mean(gc > tau),
            }
        )
        if s is not None:
            sc = np.array([s[key] for key in keys])
            out.update({prefix + "sem_cos_mean": sc.mean(), prefix + "sem_dispersion": 1 - sc.mean()})
    return out


@pytest.mark.parametrize("seed", range(4))
def test_geometry_metrics_equal_naive_loop(seed):
    rng = np.random.default_rng(seed)
    n = 32
    grad, emb = rng.normal(size=(n, 12)), rng.normal(size=(n, 6))
    groups, correct = np.repeat(np.arange(4), 8), rng.random(n) < 0.5
    got = geometry_metrics(grad, emb, groups, correct, tau=0.15)
    expected = loop_metrics(grad, emb, groups, correct, 0.15)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_geometry_metrics_keys_and_nan_omission():
    grad = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    groups = np.array([0, 0, 1, 1])
    metrics = geometry_metrics(grad, grad, groups, np.array([True, True, True, False]))
    top = {f"geometry/{name}" for name in BASE_NAMES}
    split = {f"geometry/{t}/{name}" for t in ("correct_correct", "correct_incorrect") for name in BASE_NAMES}
    assert set(metrics) == top | split  # no incorrect_incorrect pair: those keys are omitted
    assert metrics["geometry/correct_correct/orth_frac"] == 1.0
    assert metrics["geometry/correct_incorrect/grad_cos_mean"] == pytest.approx(-math.sqrt(0.5))
    assert metrics["geometry/sem_dispersion"] == pytest.approx(1 - metrics["geometry/sem_cos_mean"])
    assert all(MLFLOW_NAME.match(key) for key in metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def test_geometry_metrics_without_embeddings_or_pairs():
    grad = np.eye(3)
    metrics = geometry_metrics(grad, None, np.array([0, 0, 1]), np.array([False, False, True]))
    assert set(metrics) == {f"geometry/{name}" for name in BASE_NAMES[:5]} | {
        f"geometry/incorrect_incorrect/{name}" for name in BASE_NAMES[:5]
    }
    assert geometry_metrics(grad, None, np.arange(3), np.ones(3, dtype=bool)) == {}


def test_geometry_metrics_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="emb must have shape"):
        geometry_metrics(np.eye(3), np.eye(2), np.zeros(3, dtype=int), np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="correct has 2"):
        geometry_metrics(np.eye(3), None, np.zeros(3, dtype=int), np.ones(2, dtype=bool))


def test_pairs_frame_columns():
    rng = np.random.default_rng(5)
    grad, emb = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    frame = pairs_frame(grad, emb, np.array([0, 0, 0, 1, 1, 1]), np.array([1, 0, 1, 0, 0, 1], dtype=bool))
    assert list(frame.columns) == ["group", "i", "j", "grad_cos", "sem_cos", "pair_type"]
    assert len(frame) == 6
    assert set(frame["pair_type"]) <= set(PAIR_TYPES)
    assert frame["sem_cos"].between(-1, 1).all()
    assert pairs_frame(grad, None, np.zeros(6, dtype=int), np.ones(6, dtype=bool))["sem_cos"].isna().all()


# --------------------------------------------------------------------------- Gram blocks == per-pair loop


def reference_unit_rows(x, eps=1e-12):
    """unit_rows as first written: np.where over the whole array, no chunks."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    tiny = norms <= eps
    return np.where(tiny, 0.0, x / np.where(tiny, 1.0, norms))


def unit_loop_pairs(features: np.ndarray, groups: np.ndarray) -> dict[tuple[int, int], float]:
    """Plain double loop over unit rows: {(i, j): clip(<u_i, u_j>, -1, 1)}, i < j in the same group.

    Unlike :func:`naive_pairs`, rows of norm <= 1e-12 and rows whose norm overflows are zero vectors, as the
    definition (reference_unit_rows) has them.
    """
    with np.errstate(over="ignore"):  # overflowing rows: norm inf, unit row 0
        u = reference_unit_rows(features)
    out = {}
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            if groups[i] == groups[j]:
                out[i, j] = float(np.clip(u[i] @ u[j], -1.0, 1.0))
    return out


def ragged_inputs(seed: int, n_groups: int = 9, max_size: int = 7):
    """Groups of 1..max_size rows with shuffled, non-consecutive ids; zero, tiny and overflowing rows."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_size + 1, size=n_groups)
    ids = rng.choice(10 * n_groups, size=n_groups, replace=False)
    groups = rng.permutation(np.repeat(ids, sizes))  # (N,) rows of a group scattered
    n = groups.size
    grad = rng.normal(size=(n, 7)).astype(np.float32)  # float32, as dumped
    grad[rng.random(n) < 0.1] = 0.0  # zero rows
    grad[rng.random(n) < 0.1] *= 1e-14  # nonzero, norm <= 1e-12: zero vectors too
    emb = rng.normal(size=(n, 5))
    emb[rng.random(n) < 0.1] = 1e200  # finite, but the norm overflows to inf: a zero vector
    emb[rng.random(n) < 0.2] = emb[0]  # exact ties: cosine 1
    return grad, emb, groups, rng.random(n) < 0.5


@pytest.mark.parametrize("chunk", [1 << 20, 40])  # 40: about one group per Gram block
@pytest.mark.parametrize("seed", range(4))
def test_gram_cosines_equal_per_pair_loop(monkeypatch, seed, chunk):
    import analysis.geometry as geometry

    monkeypatch.setattr(geometry, "_CHUNK_ELEMENTS", chunk)
    grad, emb, groups, _ = ragged_inputs(seed)
    for features in (grad, emb):
        pairs = pairwise_cosines(features, groups)
        expected = unit_loop_pairs(features, groups)
        got = as_dict(pairs)
        assert got.keys() == expected.keys()
        np.testing.assert_allclose([got[key] for key in expected], list(expected.values()), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(pairs.i, pair_indices(groups)[0])
        np.testing.assert_array_equal(pairs.j, pair_indices(groups)[1])


@pytest.mark.parametrize("seed", range(4))
def test_pairs_frame_equals_per_pair_reference(seed):
    grad, emb, groups, correct = ragged_inputs(seed)
    g, s = unit_loop_pairs(grad, groups), unit_loop_pairs(emb, groups)
    keys = sorted(g, key=lambda key: (groups[key[0]], key[0], key[1]))  # by group id, then i, then j
    frame = pairs_frame(grad, emb, groups, correct)
    assert list(frame.columns) == ["group", "i", "j", "grad_cos", "sem_cos", "pair_type"]
    assert frame["i"].tolist() == [i for i, _ in keys] and frame["j"].tolist() == [j for _, j in keys]
    assert frame["group"].tolist() == [groups[i] for i, _ in keys]
    np.testing.assert_allclose(frame["grad_cos"], [g[key] for key in keys], rtol=0, atol=1e-12)
    np.testing.assert_allclose(frame["sem_cos"], [s[key] for key in keys], rtol=0, atol=1e-12)
    assert frame["pair_type"].dtype == "category" and list(frame["pair_type"].cat.categories) == list(PAIR_TYPES)
    assert frame["pair_type"].tolist() == [PAIR_TYPES[int(correct[i]) + int(correct[j])] for i, j in keys]
    assert (frame["pair_type"] == "correct_incorrect").sum() == sum(correct[i] != correct[j] for i, j in keys)
    no_emb = pairs_frame(grad, None, groups, correct)
    assert no_emb["sem_cos"].isna().all() and no_emb["grad_cos"].equals(frame["grad_cos"])


@pytest.mark.parametrize("with_emb", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_geometry_metrics_equal_per_pair_loop_on_ragged_groups(seed, with_emb):
    grad, emb, groups, correct = ragged_inputs(seed)
    emb = emb if with_emb else None
    tau = (0.1, 0.0, 0.3, 1.0)[seed]
    got = geometry_metrics(grad, emb, groups, correct, tau=tau)
    expected = loop_metrics(grad, emb, groups, correct, tau, pairs_of=unit_loop_pairs)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_geometry_metrics_agree_with_pairs_frame():
    grad, emb, groups, correct = ragged_inputs(7, n_groups=30)
    metrics = geometry_metrics(grad, emb, groups, correct)
    frame = pairs_frame(grad, emb, groups, correct)
    for pair_type, part in [(None, frame), *frame.groupby("pair_type", observed=True)]:
        prefix = "geometry/" if pair_type is None else f"geometry/{pair_type}/"
        expected = direction_fractions(part["grad_cos"].to_numpy()) | semantic_summary(part["sem_cos"].to_numpy())
        assert {name: metrics[prefix + name] for name in expected} == expected


def test_unit_rows_equal_reference_bit_for_bit(monkeypatch):
    import analysis.geometry as geometry

    rng = np.random.default_rng(8)
    x = rng.normal(size=(11, 6))
    x[1], x[2], x[3], x[4] = 0.0, 1e-14, 1e200, np.nan  # zero, tiny, overflowing, NaN
    with np.errstate(over="ignore", invalid="ignore"):  # the overflowing and the NaN row
        expected = reference_unit_rows(x)
        np.testing.assert_array_equal(unit_rows(x), expected)  # NaN rows stay NaN in both
        assert np.isnan(unit_rows(x)[4]).all() and not unit_rows(x)[[1, 2, 3]].any()
        monkeypatch.setattr(geometry, "_CHUNK_ELEMENTS", 12)  # two rows per norm chunk
        np.testing.assert_array_equal(unit_rows(x), expected)
    x32 = np.delete(x, [3, 4], axis=0).astype(np.float32)
    np.testing.assert_array_equal(unit_rows(x32), reference_unit_rows(x32))
    before = x32.copy()
    unit_rows(x32)
    np.testing.assert_array_equal(x32, before)  # the input is not divided in place
    x64 = x32.astype(np.float64)
    unit_rows(x64)
    np.testing.assert_array_equal(x64, before)
    with pytest.raises(ValueError, match="2-D"):
        unit_rows(np.ones(3))


def test_geometry_metrics_at_scale_match_a_sample_of_pairs():
    """8 groups of 16 rows: the batched, chunked path; a few pairs checked directly."""
    rng = np.random.default_rng(9)
    grad = rng.standard_normal((128, 300), dtype=np.float32)
    groups = np.repeat(np.arange(8), 16)
    pairs = pairwise_cosines(grad, groups)
    u = reference_unit_rows(grad)
    for p in rng.integers(0, len(pairs), size=20):
        assert pairs.cos[p] == pytest.approx(u[pairs.i[p]] @ u[pairs.j[p]], abs=1e-12)
    assert len(pairs) == 8 * 120


# --------------------------------------------------------------------------- layering


def test_analysis_geometry_imports_no_torch_or_upper_layers():
    imported = imported_packages("analysis/geometry.py")
    assert not imported & {"torch", "workbench", "trainers"}


def test_importing_analysis_geometry_does_not_import_pandas():
    import subprocess
    import sys

    code = "import sys, analysis.geometry; sys.exit('pandas' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0

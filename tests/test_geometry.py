"""Tests for analysis/geometry.py (DESIGN 4): hand cases, naive-loop equivalence, names."""

from __future__ import annotations

import ast
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


def loop_metrics(grad, emb, groups, correct, tau):
    """Reference geometry metrics from the naive loop."""
    g, s = naive_pairs(grad, groups), naive_pairs(emb, groups)
    out = {}
    kinds = {None: list(g)}
    for key in g:
        n_ok = int(correct[key[0]]) + int(correct[key[1]])
        kinds.setdefault(PAIR_TYPES[n_ok], []).append(key)
    for kind, keys in kinds.items():
        gc = np.array([g[key] for key in keys])
        sc = np.array([s[key] for key in keys])
        prefix = "geometry/" if kind is None else f"geometry/{kind}/"
        out.update(
            {
                prefix + "grad_cos_mean": gc.mean(),
                prefix + "neg_frac": np.mean(gc < 0),
                prefix + "orth_frac": np.mean(np.abs(gc) <= tau),
                prefix + "opp_frac": np.mean(gc < -tau),
                prefix + "aligned_frac": np.mean(gc > tau),
                prefix + "sem_cos_mean": sc.mean(),
                prefix + "sem_dispersion": 1 - sc.mean(),
            }
        )
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


# --------------------------------------------------------------------------- layering


def test_analysis_geometry_imports_no_torch_or_upper_layers():
    source = (Path(__file__).parents[1] / "analysis" / "geometry.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"torch", "workbench", "trainers"}

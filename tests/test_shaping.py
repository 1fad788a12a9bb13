"""Tests for trainers/shaping.py (DESIGN 3.1, 3.3, 3.4): hand-computed cases, plain references, properties."""

from __future__ import annotations

import importlib.util
import inspect
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trainers import shaping
from trainers.shaping import (
    exploration_score,
    g2rl_base_rewards,
    g2rl_shaped_rewards,
    group_standardize,
    minmax_in_group,
    zero_variance_groups,
)

FAST = settings(max_examples=60, deadline=None)
E = math.e


# --------------------------------------------------------------------------- plain references (pair loops)


def ref_nu(features, rewards, groups, eps=1e-8):
    """eqs. 9-11 written literally, one pair at a time."""
    n = len(rewards)
    u = [np.asarray(f, float) / (np.linalg.norm(f) + eps) for f in features]
    nu = []
    for i in range(n):
        peers = [j for j in range(n) if j != i and groups[j] == groups[i]]
        if not peers:
            nu.append(1.0)
            continue
        denom = sum(math.exp(rewards[k]) for k in peers) + eps
        explained = sum(math.exp(rewards[j]) / denom * float(u[i] @ u[j]) ** 2 for j in peers)
        nu.append(max(1.0 - explained, 0.0))
    return np.array(nu)


def ref_trl_advantages(rewards, groups, scale):
    """TRL's formula in plain Python (nanstd = Bessel over non-NaN; NaN advantages -> 0)."""
    r = list(map(float, rewards))
    ok = [x for x in r if not math.isnan(x)]
    batch_std = statistics.stdev(ok) if len(ok) > 1 else (math.nan if ok else 0.0)
    out = []
    for i, x in enumerate(r):
        vals = [r[j] for j in range(len(r)) if groups[j] == groups[i] and not math.isnan(r[j])]
        mean = statistics.fmean(vals) if vals else math.nan
        a = x - mean
        if scale == "group":
            a = a / ((statistics.stdev(vals) if len(vals) > 1 else math.nan) + 1e-4)
        elif scale == "batch":
            a = a / (batch_std + 1e-4)
        out.append(0.0 if math.isnan(a) else a)
    return np.array(out)


# --------------------------------------------------------------------------- strategies


@st.composite
def batches(draw, max_n=12, max_d=5):
    """features (N, d), rewards in [-3, 3] (N,), interleaved group ids (N,)."""
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    feats = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-10, 10, allow_subnormal=False)))
    rewards = draw(hnp.arrays(np.float64, n, elements=st.floats(-3, 3, allow_subnormal=False)))
    groups = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 3)))
    return feats, rewards, groups


# --------------------------------------------------------------------------- G2RL exploration score


def test_nu_parallel_to_only_high_reward_peer_is_zero():
    nu = exploration_score([[1.0, 0.0], [2.0, 0.0]], [-1.0, 1.0], [0, 0])
    np.testing.assert_allclose(nu, [0.0, 0.0], atol=1e-7)


def test_nu_orthogonal_to_all_is_one():
    nu = exploration_score(np.eye(3), [1.0, -1.0, 1.0], [7, 7, 7])
    np.testing.assert_allclose(nu, [1.0, 1.0, 1.0])


def test_nu_opposed_counts_as_explained():
    # S = -1, S^2 = 1: an opposed direction is explained like a parallel one.
    nu = exploration_score([[1.0, 0.0], [-3.0, 0.0]], [1.0, 1.0], [0, 0])
    np.testing.assert_allclose(nu, [0.0, 0.0], atol=1e-7)


def test_nu_reward_weights_follow_eq10():
    # i = 0 is parallel to a low-reward peer (1) and orthogonal to a high-reward peer (2):
    # nu_0 = 1 - w_01 * 1 = 1 - exp(r1) / (exp(r1) + exp(r2)); it rises with r2.
    feats = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    nus = []
    for r2 in (-1.0, 0.0, 1.0, 2.0, 3.0):
        nu0 = exploration_score(feats, [1.0, -1.0, r2], [0, 0, 0])[0]
        np.testing.assert_allclose(nu0, 1.0 - math.exp(-1) / (math.exp(-1) + math.exp(r2)), atol=1e-7)
        nus.append(nu0)
    assert np.all(np.diff(nus) > 0)
    # i's own reward does not enter its weights.
    a = exploration_score(feats, [-3.0, -1.0, 1.0], [0, 0, 0])[0]
    b = exploration_score(feats, [3.0, -1.0, 1.0], [0, 0, 0])[0]
    assert a == pytest.approx(b, abs=1e-12)


def test_nu_hand_computed_three_member_group():
    # u0 = (1, 0), u1 = (0.6, 0.8), u2 = (0, 1) at different scales; r = (1, -1, 1).
    # S01 = 0.6, S02 = 0, S12 = 0.8.
    # nu0 = 1 - [e^-1 * 0.36 + e * 0] / (e^-1 + e) = 1 - 0.36 / (1 + e^2)  = 0.957087...
    # nu1 = 1 - [e * 0.36 + e * 0.64] / (2 e)     = 0.5
    # nu2 = 1 - [e * 0 + e^-1 * 0.64] / (e + e^-1) = 1 - 0.64 / (1 + e^2) = 0.923710...
    feats = [[3.0, 0.0], [0.3, 0.4], [0.0, 5.0]]
    nu = exploration_score(feats, [1.0, -1.0, 1.0], [4, 4, 4])
    expected = [1 - 0.36 / (1 + E**2), 0.5, 1 - 0.64 / (1 + E**2)]
    np.testing.assert_allclose(nu, expected, atol=1e-7)
    np.testing.assert_allclose(nu, [0.957087, 0.5, 0.923710], atol=1e-6)


def test_nu_group_of_one_is_one():
    nu = exploration_score([[1.0, 2.0], [1.0, 2.0], [5.0, 0.0]], [1.0, 1.0, -1.0], [0, 0, 1])
    np.testing.assert_allclose(nu, [0.0, 0.0, 1.0], atol=1e-7)


def test_nu_zero_feature_explains_nothing():
    nu = exploration_score([[0.0, 0.0], [1.0, 0.0]], [1.0, 1.0], [0, 0])
    np.testing.assert_allclose(nu, [1.0, 1.0])


def test_nu_groups_do_not_mix():
    # Identical directions in different groups do not explain each other.
    feats = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    nu = exploration_score(feats, [1.0, 1.0, 1.0, 1.0], [0, 1, 0, 1])
    np.testing.assert_allclose(nu, [1.0, 1.0, 1.0, 1.0])


@FAST
@given(batches())
def test_nu_matches_pair_loop_reference(batch):
    feats, rewards, groups = batch
    np.testing.assert_allclose(exploration_score(feats, rewards, groups), ref_nu(feats, rewards, groups), atol=1e-9)


@FAST
@given(batches())
def test_nu_in_unit_interval(batch):
    nu = exploration_score(*batch)
    assert np.all((nu >= 0) & (nu <= 1))


@FAST
@given(batches(), st.randoms(use_true_random=False))
def test_nu_invariant_to_feature_scaling_and_row_order(batch, rnd):
    feats, rewards, groups = batch
    # eq. 9's eps makes the invariance hold up to ~eps / ||Phi||: keep norms >= 0.25.
    feats = feats + np.where(np.linalg.norm(feats, axis=1, keepdims=True) < 0.5, 1.0, 0.0)
    nu = exploration_score(feats, rewards, groups)
    scales = np.array([10 ** rnd.uniform(-0.3, 2) for _ in rewards])[:, None]  # (N, 1)
    np.testing.assert_allclose(exploration_score(feats * scales, rewards, groups), nu, atol=1e-6)
    perm = np.array(rnd.sample(range(len(rewards)), len(rewards)))
    np.testing.assert_allclose(exploration_score(feats[perm], rewards[perm], groups[perm]), nu[perm], atol=1e-12)


def test_nu_safe_for_large_rewards():
    nu = exploration_score([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [0.0, 1000.0, -1000.0], [0, 0, 0])
    assert np.all(np.isfinite(nu))
    np.testing.assert_allclose(nu, [0.0, 0.0, 1.0], atol=1e-7)


def test_nu_rejects_bad_shapes():
    with pytest.raises(ValueError, match="N=2"):
        exploration_score([[1.0], [2.0]], [1.0, 1.0, 1.0], [0, 0])
    with pytest.raises(ValueError, match="integer"):
        exploration_score([[1.0], [2.0]], [1.0, 1.0], [0.0, 0.5])


# --------------------------------------------------------------------------- min-max, base and shaped rewards


def test_minmax_in_group_hand_computed():
    x = [2.0, 5.0, 1.0, 7.0, 7.0, 4.0]
    g = [0, 1, 0, 2, 2, 0]
    # group 0: (2, 1, 4) -> (1/3, 0, 1); group 1 single -> fill; group 2 all equal -> fill
    np.testing.assert_allclose(minmax_in_group(x, g), [1 / 3, 0.0, 0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(minmax_in_group(x, g, fill=0.5), [1 / 3, 0.5, 0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(minmax_in_group(x, g, fill=0.5, single=1.0), [1 / 3, 1.0, 0.0, 0.5, 0.5, 1.0])


def test_minmax_ignores_rounding_noise():
    # Identical completions: scores equal up to rounding must not become 0 and 1.
    x = [0.3, 0.3 + 1e-15, 0.3 - 1e-9, 0.1, 0.1 + 1e-7]
    g = [0, 0, 0, 1, 1]
    np.testing.assert_array_equal(minmax_in_group(x, g), [0.0] * 5)
    np.testing.assert_allclose(minmax_in_group(x, g, atol=0.0), [1.0, 1.0, 0.0, 0.0, 1.0], atol=1e-6)


def test_base_rewards():
    correct = [True, True, False, False]
    has_answer = [True, False, True, False]
    np.testing.assert_array_equal(g2rl_base_rewards(correct, has_answer), [1.0, -1.0, -1.0, -1.0])


def test_shaped_rewards_both_readings_hand_computed():
    base = np.array([1.0, 1.0, -1.0, -1.0])
    nu_bar = np.array([1.0, 0.0, 1.0, 0.5])
    # paper_text: f = 1 + nu_bar = (2, 1, 2, 1.5)      -> r~ = (2, 1, -2, -1.5)
    np.testing.assert_allclose(g2rl_shaped_rewards(base, nu_bar, 1.0), [2.0, 1.0, -2.0, -1.5])
    # eq12: f = 1 + r nu_bar = (2, 1, 0, 0.5)            -> r~ = (2, 1, 0, -0.5)
    np.testing.assert_allclose(g2rl_shaped_rewards(base, nu_bar, 1.0, "eq12"), [2.0, 1.0, 0.0, -0.5])
    # lam = 0.5, paper_text: f = (1.5, 1, 1.5, 1.25)
    np.testing.assert_allclose(g2rl_shaped_rewards(base, nu_bar, 0.5), [1.5, 1.0, -1.5, -1.25])


def test_shaped_rewards_clip():
    base = np.array([1.0, -1.0, 1.0, -1.0])
    nu_bar = np.array([1.0, 1.0, 0.2, 0.2])
    # lam = 5, paper_text: r f = (6, -6, 2, -2)   -> clipped (3, -3, 2, -2)
    np.testing.assert_allclose(g2rl_shaped_rewards(base, nu_bar, 5.0), [3.0, -3.0, 2.0, -2.0])
    # lam = 5, eq12: f = (6, -4, 2, 0)  r f = (6, 4, 2, 0) -> (3, 3, 2, 0): eq12 with lam > 1 flips a penalty
    np.testing.assert_allclose(g2rl_shaped_rewards(base, nu_bar, 5.0, "eq12"), [3.0, 3.0, 2.0, -0.0])
    np.testing.assert_allclose(g2rl_shaped_rewards(base, nu_bar, 5.0, clip=1.5), [1.5, -1.5, 1.5, -1.5])


@pytest.mark.parametrize("scaler", ["paper_text", "eq12"])
def test_one_distinct_nu_leaves_base_rewards(scaler):
    # Every member along the same direction: nu all equal -> nu_bar = 0 -> r~ = r.
    feats = np.array([[1.0, 1.0], [2.0, 2.0], [-1.0, -1.0], [3.0, 0.0], [0.0, 1.0]])
    groups = np.array([0, 0, 0, 1, 2])  # group 1 and 2: single members
    base = np.array([1.0, -1.0, 1.0, -1.0, 1.0])
    nu_bar = minmax_in_group(exploration_score(feats, base, groups), groups)
    np.testing.assert_array_equal(nu_bar, np.zeros(5))
    np.testing.assert_array_equal(g2rl_shaped_rewards(base, nu_bar, 1.5, scaler), base)


@pytest.mark.parametrize("correct", [True, False])
def test_all_correct_or_all_wrong_group_still_has_signal(correct):
    # u0 = (1, 0), u1 = (0.6, 0.8), u2 = (0, 1), equal rewards: w = 1/2.
    # nu = (1 - 0.36/2, 1 - (0.36 + 0.64)/2, 1 - 0.64/2) = (0.82, 0.5, 0.68)
    # nu_bar = (1, 0, 0.5625); paper_text, lam = 1: f = (2, 1, 1.5625)
    feats = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]
    groups = [0, 0, 0]
    base = g2rl_base_rewards([correct] * 3, [True] * 3)
    nu = exploration_score(feats, base, groups)
    np.testing.assert_allclose(nu, [0.82, 0.5, 0.68], atol=1e-7)
    nu_bar = minmax_in_group(nu, groups)
    np.testing.assert_allclose(nu_bar, [1.0, 0.0, 0.5625], atol=1e-7)
    shaped = g2rl_shaped_rewards(base, nu_bar, 1.0)
    np.testing.assert_allclose(shaped, base * np.array([2.0, 1.0, 1.5625]), atol=1e-7)
    assert zero_variance_groups(base, groups) == 1
    assert zero_variance_groups(shaped, groups) == 0
    assert np.abs(group_standardize(shaped, groups)).sum() > 1.0


def _all_wrong_group():
    """Eight wrong answers with spread-out gradient features: base -1, nu_bar spanning [0, 1]."""
    feats = np.random.default_rng(3).standard_normal((8, 5))
    groups = np.zeros(8, dtype=np.int64)
    base = g2rl_base_rewards([False] * 8, [True] * 8)
    nu_bar = minmax_in_group(exploration_score(feats, base, groups), groups)
    return base, nu_bar, groups


def test_equal_reward_group_advantages_do_not_depend_on_lambda():
    # DESIGN 3.4 "Equal-reward groups": r~ = -(1 + lam nu_bar) is affine in nu_bar with a slope of -lam, so group
    # standardisation gives the unit standardisation of -nu_bar for any lam > 0 (up to TRL's eps = 1e-4 in the std).
    base, nu_bar, groups = _all_wrong_group()
    adv = {lam: group_standardize(g2rl_shaped_rewards(base, nu_bar, lam), groups, scale="group")
           for lam in (0.01, 1.0, 2.0)}
    unit = -(nu_bar - nu_bar.mean()) / nu_bar.std(ddof=1)
    np.testing.assert_allclose(adv[2.0], unit, atol=1e-3)
    np.testing.assert_allclose(adv[1.0], adv[2.0], atol=1e-3)
    np.testing.assert_allclose(adv[0.01], adv[2.0], rtol=0.05)  # eps / std(r~) ~ 3 % at lam = 0.01
    # paper_text: the most redundant wrong answer (nu_bar = 0) gets the largest advantage, positive.
    assert np.argmax(adv[2.0]) == np.argmin(nu_bar) and adv[2.0].max() > 1.0
    # eq12 (r~ = -1 + lam nu_bar): the most novel one does.
    eq12 = group_standardize(g2rl_shaped_rewards(base, nu_bar, 0.5, "eq12"), groups, scale="group")
    assert np.argmax(eq12) == np.argmax(nu_bar) and eq12.max() > 1.0
    # Without scaling the advantages scale with lam.
    none = {lam: group_standardize(g2rl_shaped_rewards(base, nu_bar, lam), groups, scale="none") for lam in (1.0, 2.0)}
    np.testing.assert_allclose(none[2.0], 2 * none[1.0])


@pytest.mark.parametrize("scaler", ["paper_text", "eq12"])
def test_uniform_groups_zero_gives_equal_reward_groups_zero_advantage(scaler):
    wrong, nu_wrong, _ = _all_wrong_group()
    base = np.concatenate([wrong, [1.0, -1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])  # all wrong, mixed, all right
    nu_bar = np.concatenate([nu_wrong, [1.0, 0.0, 0.3, 0.6], [0.0, 0.5, 1.0]])
    groups = np.repeat([0, 1, 2], [8, 4, 3])
    zero = g2rl_shaped_rewards(base, nu_bar, 0.8, scaler, groups=groups, uniform_groups="zero")
    rank = g2rl_shaped_rewards(base, nu_bar, 0.8, scaler, groups=groups)
    np.testing.assert_array_equal(zero[groups != 1], base[groups != 1])  # the constant base reward
    np.testing.assert_array_equal(zero[groups == 1], rank[groups == 1])  # mixed groups shaped as before
    adv = group_standardize(zero, groups, scale="group")
    np.testing.assert_array_equal(adv[groups != 1], 0.0)
    assert np.abs(group_standardize(rank, groups)[groups != 1]).sum() > 1.0  # 'rank' ranks them
    np.testing.assert_array_equal(shaping.uniform_rows(base, groups), groups != 1)


def test_uniform_groups_errors_name_the_value():
    base, nu_bar = np.array([1.0, -1.0]), np.array([0.5, 0.0])
    with pytest.raises(ValueError, match="'none'.*rank, zero"):
        g2rl_shaped_rewards(base, nu_bar, 1.0, uniform_groups="none")
    with pytest.raises(ValueError, match="groups"):
        g2rl_shaped_rewards(base, nu_bar, 1.0, uniform_groups="zero")


def test_shaped_rewards_errors_name_the_value():
    base, nu_bar = np.array([1.0]), np.array([0.5])
    with pytest.raises(ValueError, match=r"'paper'.*eq12.*paper_text"):
        g2rl_shaped_rewards(base, nu_bar, 1.0, "paper")
    with pytest.raises(ValueError, match=r"-0\.5"):
        g2rl_shaped_rewards(base, nu_bar, -0.5)
    with pytest.raises(ValueError, match="nan"):
        g2rl_shaped_rewards(base, nu_bar, float("nan"))
    with pytest.raises(ValueError, match="clip"):
        g2rl_shaped_rewards(base, nu_bar, 1.0, clip=0.0)


def test_scaler_registry_refuses_duplicates():
    assert shaping.SCALERS.names() == ["eq12", "paper_text"]
    with pytest.raises(ValueError, match="already registered"):
        shaping.SCALERS.add("eq12", lambda r, nb, lam: r)


# --------------------------------------------------------------------------- GRPO standardisation


def test_group_standardize_hand_computed():
    # group 0: r = (1, 0, 0, 1): mean .5, unbiased std sqrt(1/3) -> A = +-0.5 / (0.57735 + 1e-4)
    a = group_standardize([1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0, 0, 0, 0, 1, 1])
    s = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    np.testing.assert_allclose(a, [s, -s, -s, s, 0.0, 0.0])
    np.testing.assert_allclose(group_standardize([1.0, 0.0, 0.0, 1.0], [0] * 4, scale=False), [0.5, -0.5, -0.5, 0.5])


@FAST
@given(
    st.sampled_from([True, False, "group", "batch", "none"]),
    hnp.arrays(
        np.float64,
        st.integers(1, 16),
        elements=st.one_of(st.floats(-3, 3, allow_subnormal=False), st.just(float("nan"))),
    ),
    st.data(),
)
def test_group_standardize_matches_plain_trl_formula(scale, rewards, data):
    groups = np.array(data.draw(st.lists(st.integers(0, 3), min_size=rewards.size, max_size=rewards.size)))
    mode = {True: "group", False: "none"}.get(scale, scale)
    np.testing.assert_allclose(
        group_standardize(rewards, groups, scale=scale), ref_trl_advantages(rewards, groups, mode), atol=1e-9
    )


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_standardize_equals_trl_torch_lines(scale, seed):
    """TRL 1.16 grpo_trainer.py, sum_then_normalize branch, re-run in torch on contiguous equal groups."""
    torch = pytest.importorskip("torch")

    def nanstd(t, dim=None):  # trl.trainer.utils.nanstd (importing trl costs seconds)
        mean = torch.nanmean(t, dim=dim, keepdim=True)
        var = torch.nanmean((t - mean) ** 2, dim=dim, keepdim=True)
        count = torch.sum(~torch.isnan(t), dim=dim, keepdim=True)
        corr = torch.where(count > 1, count / (count - 1), torch.full_like(count / 1.0, float("nan")))
        std = torch.sqrt(var * corr)
        return std if dim is None else std.squeeze(dim)

    rng = np.random.default_rng(seed)
    num_generations, n_prompts = 8, 6
    r = rng.choice([-1.0, 1.0, 0.3, 2.5], size=num_generations * n_prompts)
    r[rng.random(r.size) < 0.1] = np.nan
    r[:num_generations] = 1.0  # one zero-variance group
    rewards = torch.tensor(r, dtype=torch.float64)
    mean = torch.nanmean(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations)
    if scale in ("group", "none"):
        std = nanstd(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations)
    else:
        std = nanstd(rewards).expand_as(rewards)
    adv = rewards - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    expected = torch.nan_to_num(adv, nan=0.0).numpy()
    groups = np.repeat(np.arange(n_prompts), num_generations)
    np.testing.assert_allclose(group_standardize(r, groups, scale=scale), expected, atol=1e-9)
    # Non-contiguous group ids: the same advantages, permuted.
    perm = rng.permutation(r.size)
    np.testing.assert_allclose(group_standardize(r[perm], groups[perm] * 7 + 3, scale=scale), expected[perm], atol=1e-9)


def test_trl_source_still_uses_this_formula():
    """If TRL changes its advantage formula, group_standardize's docstring is wrong: fail loudly."""
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("trl not installed")
    src = (Path(spec.submodule_search_locations[0]) / "trainer" / "grpo_trainer.py").read_text()
    for line in (
        "std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)",
        "std_rewards = nanstd(rewards).expand_as(rewards)",
        "advantages = rewards - mean_grouped_rewards",
        "advantages = advantages / (std_rewards + 1e-4)",
        "advantages = torch.nan_to_num(advantages, nan=0.0)",
    ):
        assert line in src, line
    utils = (Path(spec.submodule_search_locations[0]) / "trainer" / "utils.py").read_text()
    assert "correction = count / (count - 1)" in utils


def test_group_standardize_rejects_unknown_scale():
    with pytest.raises(ValueError, match="'median'"):
        group_standardize([1.0, 0.0], [0, 0], scale="median")


def test_zero_variance_groups():
    rewards = [1.0, 1.0, 0.0, 1.0, 0.5, 2.0, 2.0 + 1e-12]
    groups = [0, 0, 1, 1, 2, 3, 3]
    # group 0 equal, group 1 not, group 2 single (counts), group 3 differs by 1e-12
    assert zero_variance_groups(rewards, groups) == 2
    assert zero_variance_groups(rewards, groups, atol=1e-9) == 3
    assert zero_variance_groups([], []) == 0


# --------------------------------------------------------------------------- module hygiene


def test_shaping_imports_no_torch():
    code = "import sys, trainers.shaping; sys.exit('torch' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.parametrize("name", shaping.__all__)
def test_formula_docstrings_cite_design_and_source(name):
    obj = getattr(shaping, name)
    if not callable(obj) or name == "unit_rows":
        return
    doc = inspect.getdoc(obj) or ""
    assert "DESIGN" in doc and any(tag in doc for tag in ("[paper", "[EVOL-RL repo", "[ours", "[TRL")), name

"""Tests for the EVOL-RL formulas of trainers/shaping.py (DESIGN 3.3): hand-computed cases, a pair-loop reference."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from test_shaping import FAST, batches
from trainers.shaping import evol_rl_novelty, evol_rl_rewards, majority_labels


def ref_novelty(emb, labels, groups):
    """DESIGN 3.3 novelty, one pair at a time."""
    n = len(labels)
    e = [np.asarray(v, float) / np.linalg.norm(v) for v in emb]
    out = []
    for i in range(n):
        others = [j for j in range(n) if j != i and groups[j] == groups[i]]
        if not others:
            out.append(0.5)
            continue
        sim = {j: min(max(float(e[i] @ e[j]), 0.0), 1.0) for j in others}
        same = [j for j in others if labels[j] == labels[i]] or others
        out.append(1.0 - (0.5 * statistics.fmean(sim[j] for j in same) + 0.5 * max(sim.values())))
    return np.array(out)


# --------------------------------------------------------------------------- EVOL-RL


def test_evol_rl_hand_computed_group():
    # e0 = (1,0,0) C, e1 = (.6,.8,0) C, e2 = (0,1,0) I, e3 = (0,0,1) I
    # S01 = .6, S12 = .8, the rest 0.
    # u0 = 1 - (.5*.6 + .5*.6) = .4      u1 = 1 - (.5*.6 + .5*.8) = .3
    # u2 = 1 - (.5*0  + .5*.8) = .6      u3 = 1 - (.5*0  + .5*0)  = 1
    # correct class: (.4, .3) -> (1, 0) -> (1.0, 0.5); incorrect: (.6, 1) -> (0, 1) -> (-1.0, -0.5)
    emb = [[1, 0, 0], [0.6, 0.8, 0], [0, 1, 0], [0, 0, 1]]
    labels = np.array([True, True, False, False])
    u = evol_rl_novelty(emb, labels, [3, 3, 3, 3])
    np.testing.assert_allclose(u, [0.4, 0.3, 0.6, 1.0], atol=1e-12)
    np.testing.assert_allclose(evol_rl_rewards(u, labels, [True] * 4, [3] * 4), [1.0, 0.5, -1.0, -0.5], atol=1e-12)


@pytest.mark.parametrize("lone_correct", [True, False])
def test_evol_rl_lone_member(lone_correct):
    # e0 = (1,0) alone in its class, e1 = (.8,.6), e2 = (0,1) in the other class. S01 = .8, S02 = 0, S12 = .6.
    # u0 = 1 - (.5 * mean(.8, 0) + .5 * .8) = .4   (alone: s_mean over all others)
    # u1 = 1 - (.5*.6 + .5*.8) = .3,  u2 = 1 - (.5*.6 + .5*.6) = .4
    emb = [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]
    labels = np.array([lone_correct, not lone_correct, not lone_correct])
    u = evol_rl_novelty(emb, labels, [0, 0, 0])
    np.testing.assert_allclose(u, [0.4, 0.3, 0.4], atol=1e-12)
    rewards = evol_rl_rewards(u, labels, [True] * 3, [0, 0, 0])
    if lone_correct:
        np.testing.assert_allclose(rewards, [1.0, -1.0, -0.5], atol=1e-12)
    else:
        np.testing.assert_allclose(rewards, [-0.5, 0.5, 1.0], atol=1e-12)


def test_evol_rl_ties_give_midpoints():
    # All the same text: u = 0 for all; each class has two equal values -> 0.5 -> 0.75 / -0.75.
    emb = np.tile([0.6, 0.8], (4, 1))
    labels = np.array([True, False, True, False])
    u = evol_rl_novelty(emb, labels, [0, 0, 0, 0])
    np.testing.assert_allclose(u, 0.0, atol=1e-12)
    np.testing.assert_allclose(evol_rl_rewards(u, labels, [True] * 4, [0] * 4), [0.75, -0.75, 0.75, -0.75])


def test_evol_rl_negative_cosine_clipped_to_zero():
    u = evol_rl_novelty([[1.0, 0.0], [-1.0, 0.0]], [True, True], [0, 0])
    np.testing.assert_allclose(u, [1.0, 1.0])


def test_evol_rl_no_answer_is_minus_one_and_left_out_of_minmax():
    # Row 1 has the correct label but no answer: -1, and row 0 is then the lone correct -> 1.0.
    emb = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]]
    labels = np.array([True, True, False, False])
    has_answer = np.array([True, False, True, True])
    u = evol_rl_novelty(emb, labels, [0] * 4)
    rewards = evol_rl_rewards(u, labels, has_answer, [0] * 4)
    assert rewards[0] == 1.0 and rewards[1] == -1.0
    # Incorrect pair: u2 = 1 - (.5*.96 + .5*.96) = .04, u3 = 1 - (.5*.96 + .5*.96) = .04: tie -> -0.75.
    np.testing.assert_allclose(rewards[2:], [-0.75, -0.75], atol=1e-12)


def test_evol_rl_valid_mask_excludes_peers():
    # With valid = has_answer, row 1 neither is scored (NaN) nor counts as a peer.
    emb = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    labels = [True, True, False]
    u = evol_rl_novelty(emb, labels, [0, 0, 0], valid=[True, False, True])
    assert np.isnan(u[1])
    # Row 0 is alone among valid correct: s_mean = s_max = S02 = 0 -> u0 = 1.
    np.testing.assert_allclose(u[[0, 2]], [1.0, 1.0])
    np.testing.assert_allclose(evol_rl_rewards(u, labels, [True, False, True], [0, 0, 0]), [1.0, -1.0, -0.5])
    with pytest.raises(ValueError, match="NaN"):
        evol_rl_rewards(u, labels, [True, True, True], [0, 0, 0])


def test_evol_rl_group_of_one():
    u = evol_rl_novelty([[1.0, 0.0], [0.0, 1.0]], [True, False], [0, 1])
    np.testing.assert_allclose(u, [0.5, 0.5])
    np.testing.assert_allclose(evol_rl_rewards(u, [True, False], [True, True], [0, 1]), [1.0, -0.5])


def test_evol_rl_groups_do_not_mix():
    emb = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    u = evol_rl_novelty(emb, [True] * 4, [0, 1, 0, 1])
    np.testing.assert_allclose(u, [1.0] * 4)


@FAST
@given(batches(max_d=4), st.data())
def test_evol_rl_matches_pair_loop_reference(batch, data):
    emb, _, groups = batch
    emb = emb + np.where(np.linalg.norm(emb, axis=1, keepdims=True) < 1e-3, 1.0, 0.0)  # no zero rows
    labels = np.array(data.draw(st.lists(st.booleans(), min_size=len(groups), max_size=len(groups))))
    has_answer = np.array(data.draw(st.lists(st.booleans(), min_size=len(groups), max_size=len(groups))))
    u = evol_rl_novelty(emb, labels, groups)
    np.testing.assert_allclose(u, ref_novelty(emb, labels, groups), atol=1e-9)
    rewards = evol_rl_rewards(u, labels, has_answer, groups)
    assert np.all(rewards[~has_answer] == -1.0)
    assert np.all((rewards[has_answer & labels] >= 0.5) & (rewards[has_answer & labels] <= 1.0))
    assert np.all((rewards[has_answer & ~labels] >= -1.0) & (rewards[has_answer & ~labels] <= -0.5))


def test_majority_labels():
    answers = ["5", "3", "5", None, "7", "7", None, "8"]
    groups = [0, 0, 0, 0, 1, 2, 2, 1]
    # group 0: "5" x2 -> (T, F, T, F); group 1: "7", "8" tie -> "7" (first); group 2: "7", None
    np.testing.assert_array_equal(majority_labels(answers, groups), [1, 0, 1, 0, 1, 1, 0, 0])


def test_majority_labels_ties_and_none():
    # tie "3" vs "5": "3" appears first (row order, not group-member order after sorting ids)
    np.testing.assert_array_equal(majority_labels(["3", "5", "5", "3"], [2, 2, 2, 2]), [1, 0, 0, 1])
    np.testing.assert_array_equal(majority_labels(["5", "3", "3", "5"], [2, 2, 2, 2]), [1, 0, 0, 1])
    np.testing.assert_array_equal(majority_labels([None, None], [0, 0]), [0, 0])
    np.testing.assert_array_equal(majority_labels([None, "4", None], [0, 0, 0]), [0, 1, 0])

"""Reward-shaping formulas of GRPO, EVOL-RL and G2RL (DESIGN 3), one function each.

Every function takes flat arrays for a whole generation batch plus ``groups``,
an int array (N,) giving each completion's group (prompt) id. Groups may be
interleaved and of unequal sizes; nothing assumes contiguity. Work is
vectorised within a group; at most one Python loop runs over the groups.

Pure numpy: no torch, so the formulas can be tested, plotted and reused in
notebooks without loading a model. Tags as in DESIGN: [paper] (G2RL,
arXiv 2512.15687), [EVOL-RL repo] (the public EVOL-RL code,
``verl/workers/reward_manager/semantic_novelty.py``), [TRL] (TRL 1.16), [ours].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from analysis.geometry import unit_rows
from trainers.registry import Registry

__all__ = [
    "SCALERS",
    "evol_rl_novelty",
    "evol_rl_rewards",
    "exploration_score",
    "g2rl_base_rewards",
    "g2rl_shaped_rewards",
    "group_standardize",
    "majority_labels",
    "minmax_in_group",
    "scaler_eq12",
    "scaler_paper_text",
    "uniform_rows",
    "unit_rows",
    "zero_variance_groups",
]

SCALE_MODES = ("group", "batch", "none")
UNIFORM_GROUPS = ("rank", "zero")
_EXP_CAP = 700.0  # exp(700) ~ 1e304 is the largest power float64 holds safely


# --------------------------------------------------------------------------- helpers


def _flat(name: str, x: object, n: int | None = None, dtype: type | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a flat array (N,), got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries but the batch has N={n}")
    return arr


def _group_codes(groups: object, n: int) -> tuple[np.ndarray, int]:
    """Group ids -> dense codes 0..G-1 (in sorted id order) and G."""
    g = _flat("groups", groups, n)
    if g.size and g.dtype.kind not in "iu":
        raise ValueError(f"groups must be an integer array of group ids, got dtype {g.dtype}")
    _, codes = np.unique(g, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)  # (N,)
    return codes, int(codes.max()) + 1 if codes.size else 0


def _members(codes: np.ndarray, n_groups: int) -> Iterator[np.ndarray]:
    """Row indices of each group, in ascending row order (one array per group)."""
    if n_groups == 0:
        return
    order = np.argsort(codes, kind="stable")  # (N,)
    bounds = np.cumsum(np.bincount(codes, minlength=n_groups))[:-1]
    yield from np.split(order, bounds)


# --------------------------------------------------------------------------- GRPO


def group_standardize(
    rewards: np.ndarray,
    groups: np.ndarray,
    *,
    scale: bool | str = True,
    eps: float = 1e-4,
) -> np.ndarray:
    """GRPO advantages A_i = (r_i - mean_g(r)) / (std_g(r) + eps). DESIGN 3.1 [paper], conventions [TRL].

    Mirrors TRL 1.16 ``GRPOTrainer._generate_and_score_completions``
    (``trl/trainer/grpo_trainer.py``, the ``sum_then_normalize`` branch) so the
    logged advantages equal what TRL trains on:

    - std is ``trl.trainer.utils.nanstd``: the unbiased (Bessel, n - 1) standard
      deviation over the non-NaN rewards; eps = 1e-4 is added to std, not to
      the variance.
    - ``scale``: True or ``"group"`` divides by the group's std; ``"batch"`` by
      the std of the whole batch (the mean stays per group); False or ``"none"``
      only centres (TRL maps True/False the same way in ``GRPOConfig``).
    - NaN rewards (TRL: completions no reward function could score) are left
      out of mean and std, and every NaN advantage becomes 0 at the end, as
      TRL's ``nan_to_num``. So a group with one scorable member gets A = 0
      (its std is NaN under Bessel's correction).

    Unlike TRL, groups need not be contiguous nor of equal size. For logging
    and tests only: TRL computes the advantages that train.
    """
    r = _flat("rewards", rewards, dtype=np.float64)  # (N,)
    codes, n_groups = _group_codes(groups, r.size)
    mode = {True: "group", False: "none"}[bool(scale)] if isinstance(scale, (bool, np.bool_)) else scale
    if mode not in SCALE_MODES:
        raise ValueError(f"unknown scale {scale!r}; valid: True, False, {', '.join(map(repr, SCALE_MODES))}")
    if r.size == 0:
        return r.copy()

    ok = ~np.isnan(r)  # (N,)
    r0 = np.where(ok, r, 0.0)
    count = np.bincount(codes, weights=ok.astype(np.float64), minlength=n_groups)  # (G,)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(codes, weights=r0, minlength=n_groups) / count  # (G,) NaN for empty groups
        adv = r - mean[codes]  # (N,)
        if mode == "group":
            sq = np.where(ok, adv, 0.0) ** 2
            var = np.bincount(codes, weights=sq, minlength=n_groups) / (count - 1)  # (G,) Bessel
            var[count <= 1] = np.nan
            adv = adv / (np.sqrt(var)[codes] + eps)
        elif mode == "batch":
            std = np.nanstd(r, ddof=1) if ok.sum() > 1 else 0.0
            adv = adv / (std + eps)
    return np.nan_to_num(adv, nan=0.0)


def zero_variance_groups(rewards: np.ndarray, groups: np.ndarray, *, atol: float = 0.0) -> int:
    """Number of groups whose rewards are all equal (max - min <= atol). DESIGN 3.4 [ours].

    Such a group gives GRPO no learning signal (every advantage is 0). A group
    of one completion counts as all equal. Logged as
    ``train/zero_variance_groups``. TRL's own ``frac_reward_zero_std`` is a
    fraction of completions, not a count of groups.
    """
    spread, _ = _group_spread(rewards, groups)
    return int(np.sum(spread <= atol))


def group_outcomes(correct: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Shares of groups whose completions are all correct, all wrong, or mixed (DESIGN 9 [ours]).

    Logged as ``train/all_correct_groups``, ``train/all_wrong_groups`` and ``train/mixed_groups``; they
    sum to 1. In all-wrong and all-correct groups GRPO's advantages are 0, while G2RL's follow nu_bar
    (the equal-reward groups of DESIGN 3.4); a group of one completion is all correct or all wrong.
    """
    c = _flat("correct", correct, dtype=np.float64)  # (N,)
    codes, n_groups = _group_codes(groups, c.size)
    right = np.bincount(codes, weights=c, minlength=n_groups)  # (G,) correct per group
    size = np.bincount(codes, minlength=n_groups)  # (G,)
    all_correct, all_wrong = float(np.mean(right == size)), float(np.mean(right == 0))
    return {"all_correct_groups": all_correct, "all_wrong_groups": all_wrong,
            "mixed_groups": 1.0 - all_correct - all_wrong}


def _group_spread(rewards: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max - min of each group's rewards (G,), each row's group code (N,))."""
    r = _flat("rewards", rewards, dtype=np.float64)  # (N,)
    codes, n_groups = _group_codes(groups, r.size)
    lo = np.full(n_groups, np.inf)
    hi = np.full(n_groups, -np.inf)
    np.minimum.at(lo, codes, r)
    np.maximum.at(hi, codes, r)
    return hi - lo, codes


# --------------------------------------------------------------------------- G2RL


def _nu_one_group(u: np.ndarray, r: np.ndarray, eps: float) -> np.ndarray:
    """nu for one group's unit features u (m, d) and rewards r (m,); see exploration_score."""
    m = r.size
    if m == 1:
        return np.ones(1)
    peer = ~np.eye(m, dtype=bool)  # (m, m) j != i
    s2 = (u @ u.T) ** 2  # (m, m) S_ij^2
    # w_ij = exp(r_j) / (sum_{k != i} exp(r_k) + eps), numerator and denominator both
    # multiplied by exp(-c_i), c_i = max_{k != i} r_k: identical, and no overflow.
    c = np.where(peer, r[None, :], -np.inf).max(axis=1)  # (m,)
    e = np.exp(np.where(peer, r[None, :] - c[:, None], -np.inf))  # (m, m) exp(r_j - c_i), 0 on the diagonal
    denom = e.sum(axis=1) + eps * np.exp(np.clip(-c, -_EXP_CAP, _EXP_CAP))  # (m,)
    w = e / denom[:, None]  # (m, m)
    return np.maximum(1.0 - (w * s2).sum(axis=1), 0.0)


def exploration_score(
    features: np.ndarray,
    rewards: np.ndarray,
    groups: np.ndarray,
    eps: float = 1e-8,
) -> np.ndarray:
    """G2RL exploration score nu_i in [0, 1]. DESIGN 3.4 "Exploration score" [paper, eqs. 9-11].

    - eq. 9: u_i = Phi_i / (||Phi_i|| + eps), S_ij = <u_i, u_j>.
    - eq. 10: w_ij = exp(r_j) 1{j != i} / (sum_{k != i} exp(r_k) + eps), over the
      other members of i's group: higher-reward peers weigh more.
    - eq. 11: nu_i = max(1 - sum_{j != i} w_ij S_ij^2, 0).

    nu_i is near 0 when u_i lies along the directions of high-reward peers
    (the square makes an opposed direction count as explained too) and near 1
    when it is orthogonal to them. ``rewards`` are the base rewards r_i (G2RL:
    -1/+1). The exponentials are evaluated as exp(r_j - c_i) / (sum_k exp(r_k -
    c_i) + eps exp(-c_i)) with c_i the largest peer reward: the same number,
    without overflow.

    [ours]: a group of one completion has no peers to explain it: nu = 1. A
    zero feature has u = 0, so nu = 1 for it and it explains nothing for its
    peers.
    """
    phi = np.asarray(features, dtype=np.float64)
    if phi.ndim != 2:
        raise ValueError(f"features must have shape (N, d), got {phi.shape}")
    r = _flat("rewards", rewards, phi.shape[0], dtype=np.float64)  # (N,)
    if not (np.all(np.isfinite(phi)) and np.all(np.isfinite(r))):
        raise ValueError("features and rewards must be finite (no NaN or inf)")
    codes, n_groups = _group_codes(groups, r.size)
    u = phi / (np.linalg.norm(phi, axis=1, keepdims=True) + eps)  # (N, d) eq. 9
    nu = np.empty(r.size)
    for idx in _members(codes, n_groups):
        nu[idx] = _nu_one_group(u[idx], r[idx], eps)
    return nu


def minmax_in_group(
    x: np.ndarray,
    groups: np.ndarray,
    *,
    fill: float = 0.0,
    single: float | None = None,
    atol: float = 1e-6,
) -> np.ndarray:
    """Min-max rescaling within each group: x_bar_i = (x_i - min_g) / (max_g - min_g) in [0, 1].

    G2RL's nu_bar: DESIGN 3.4 "Reward shaping" [paper gives min-max as the
    example]. ``fill`` is the value when all members of a group are equal:
    0 for G2RL [ours, DESIGN], 0.5 for EVOL-RL [EVOL-RL repo]. ``single`` is the
    value for a group of one member (default: ``fill``); EVOL-RL uses 1.0.

    [ours] "Equal" means max_g - min_g <= ``atol`` (values of order 1, as nu
    and novelty are): identical completions give scores equal only up to
    float rounding, and min-max would blow that noise up to 0 and 1.
    """
    v = _flat("x", x, dtype=np.float64)  # (N,)
    codes, n_groups = _group_codes(groups, v.size)
    lo = np.full(n_groups, np.inf)
    hi = np.full(n_groups, -np.inf)
    np.minimum.at(lo, codes, v)
    np.maximum.at(hi, codes, v)
    span = (hi - lo)[codes]  # (N,)
    flat = span <= atol
    out = np.where(flat, fill, (v - lo[codes]) / np.where(flat, 1.0, span))
    if single is not None:
        out = np.where(np.bincount(codes, minlength=n_groups)[codes] == 1, single, out)
    return out


def g2rl_base_rewards(correct: np.ndarray, has_answer: np.ndarray) -> np.ndarray:
    """G2RL base reward r_i = +1 if correct, else -1 (incorrect or no answer). DESIGN 3.4 [paper]."""
    c = _flat("correct", correct, dtype=bool)
    a = _flat("has_answer", has_answer, c.size, dtype=bool)
    return np.where(c & a, 1.0, -1.0)


SCALERS: Registry[Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = Registry("g2rl scaler")


@SCALERS.register("paper_text")
def scaler_paper_text(r: np.ndarray, nu_bar: np.ndarray, lam: float) -> np.ndarray:
    """f_i = 1 + lam * nu_bar_i. DESIGN 3.4 ``g2rl.scaler: paper_text`` [paper, sections 2.4 and 6].

    Multiplies |r|: new directions are boosted when correct and penalised
    harder when incorrect.
    """
    return 1.0 + lam * nu_bar


@SCALERS.register("eq12")
def scaler_eq12(r: np.ndarray, nu_bar: np.ndarray, lam: float) -> np.ndarray:
    """f_i = 1 + lam * r_i * nu_bar_i. DESIGN 3.4 ``g2rl.scaler: eq12`` [paper, eq. 12 as printed].

    For r = -1 it softens the penalty of new directions instead.
    """
    return 1.0 + lam * r * nu_bar


def uniform_rows(rewards: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """True (N,) for the members of groups whose rewards are all equal. DESIGN 3.4 "Equal-reward groups" [ours].

    Exact equality: G2RL's base rewards are exactly -1 or +1. A group of one
    counts as all equal.
    """
    spread, codes = _group_spread(rewards, groups)
    return (spread == 0)[codes]


def g2rl_shaped_rewards(
    base: np.ndarray,
    nu_bar: np.ndarray,
    lam: float,
    scaler: str = "paper_text",
    clip: float = 3.0,
    *,
    groups: np.ndarray | None = None,
    uniform_groups: str = "rank",
) -> np.ndarray:
    """r~_i = clip(r_i * f_i, -clip, clip). DESIGN 3.4 "Reward shaping" [paper, eqs. 12-13, section 2.5].

    f_i comes from the scaler named ``scaler`` in :data:`SCALERS`
    (``paper_text``: 1 + lam nu_bar, the default; ``eq12``: 1 + lam r nu_bar).
    lam >= 0 ([ours] default 1.0 lives in the config; lam <= 2 keeps the clip
    at 3 inactive for r in {-1, +1}). GRPO then standardises r~ per group.

    ``uniform_groups`` (DESIGN 3.4 "Equal-reward groups" [ours]) is what a
    group whose base rewards are all equal gets: ``rank`` (the paper's
    reading) shapes it like any other, so its members are ranked by nu_bar;
    ``zero`` leaves r~_i = r_i there, a constant, so group standardisation
    gives GRPO's zero advantage and G2RL only reorders within mixed groups.
    ``zero`` needs ``groups``.
    """
    f_of = SCALERS.get(scaler)  # unknown name: error listing the valid ones
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"g2rl lambda must be a finite number >= 0, got {lam!r}")
    if not clip > 0:
        raise ValueError(f"g2rl clip must be > 0, got {clip!r}")
    if uniform_groups not in UNIFORM_GROUPS:
        raise ValueError(f"g2rl uniform_groups {uniform_groups!r} is unknown; valid: {', '.join(UNIFORM_GROUPS)}")
    r = _flat("base", base, dtype=np.float64)  # (N,)
    nb = _flat("nu_bar", nu_bar, r.size, dtype=np.float64)  # (N,)
    shaped = np.clip(r * f_of(r, nb, float(lam)), -clip, clip)
    if uniform_groups == "rank":
        return shaped
    if groups is None:
        raise ValueError("g2rl uniform_groups='zero' needs the group of each completion (groups=...)")
    return np.where(uniform_rows(r, groups), r, shaped)


# --------------------------------------------------------------------------- EVOL-RL


def _novelty_one_group(e: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """u for one group's unit embeddings e (m, k) and labels lab (m,); see evol_rl_novelty."""
    m = lab.size
    if m == 1:
        return np.array([1.0 - (0.5 * 0.5 + 0.5 * 0.5)])  # s_mean = s_max = 0.5 [EVOL-RL repo]
    s = np.clip(e @ e.T, 0.0, 1.0)  # (m, m)
    peer = ~np.eye(m, dtype=bool)  # (m, m)
    same = peer & (lab[:, None] == lab[None, :])  # (m, m) other members of i's class
    n_same = same.sum(axis=1)  # (m,)
    ref = np.where(n_same[:, None] > 0, same, peer)  # (m, m) alone in class: all others
    s_mean = (s * ref).sum(axis=1) / ref.sum(axis=1)  # (m,)
    s_max = np.where(peer, s, -np.inf).max(axis=1)  # (m,)
    return 1.0 - (0.5 * s_mean + 0.5 * s_max)


def evol_rl_novelty(
    emb: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """EVOL-RL novelty u_i = 1 - (0.5 s_mean_i + 0.5 s_max_i). DESIGN 3.3 [EVOL-RL repo].

    S_ij = clip(<e_i, e_j>, 0, 1) on unit embeddings (rows are re-normalised,
    a no-op for unit input). s_mean_i: mean of S_ij over the other members of
    i's class (same label) in its group, or over all other members when i is
    alone in its class; s_max_i: max of S_ij over all other members.

    A group of one: s_mean = s_max = 0.5, so u = 0.5 [EVOL-RL repo's value for
    a lone answer]. ``valid`` (optional bool (N,)): only these completions take
    part, as peers or scored; the others get NaN. The repo leaves completions
    without a valid ``\\boxed`` answer out of the similarities this way; pass
    ``valid=has_answer`` to match it. Default: all take part.
    """
    e = unit_rows(emb)  # (N, k)
    lab = _flat("labels", labels, e.shape[0], dtype=bool)
    ok = np.ones(lab.size, bool) if valid is None else _flat("valid", valid, lab.size, dtype=bool)
    codes, n_groups = _group_codes(groups, lab.size)
    u = np.full(lab.size, np.nan)
    for idx in _members(codes, n_groups):
        idx = idx[ok[idx]]
        if idx.size:
            u[idx] = _novelty_one_group(e[idx], lab[idx])
    return u


def evol_rl_rewards(
    novelty: np.ndarray,
    labels: np.ndarray,
    has_answer: np.ndarray,
    groups: np.ndarray,
) -> np.ndarray:
    """EVOL-RL rewards from novelty and labels. DESIGN 3.3 [EVOL-RL repo].

    u_bar: min-max of novelty within each (group, class) among completions
    with an answer; two or more equal values -> 0.5 (equal within 1e-6:
    :func:`minmax_in_group` [ours]), a lone member of its class -> 1.0. Rewards: correct 0.5 + 0.5 u_bar (lone: 1.0, all equal:
    0.75); incorrect -1 + 0.5 u_bar (lone: -0.5, all equal: -0.75); no
    extractable answer -1, whatever its label. Completions without an answer
    take no part in the min-max [EVOL-RL repo: they are left out of the
    novelty computation altogether].

    Differs from the repo, following DESIGN: the repo gives -1 to every
    completion of a group with fewer than two valid answers; here a lone
    valid answer gets its lone-member reward (1.0 or -0.5).
    """
    u = _flat("novelty", novelty, dtype=np.float64)  # (N,)
    lab = _flat("labels", labels, u.size, dtype=bool)
    ans = _flat("has_answer", has_answer, u.size, dtype=bool)
    codes, _ = _group_codes(groups, u.size)
    if np.any(np.isnan(u[ans])):
        raise ValueError("novelty is NaN for a completion with an answer; compute it for every valid completion")
    out = np.full(u.size, -1.0)
    if ans.any():
        cls = codes[ans] * 2 + lab[ans]  # (n_ans,) one id per (group, class)
        u_bar = minmax_in_group(u[ans], cls, fill=0.5, single=1.0)
        out[ans] = np.where(lab[ans], 0.5 + 0.5 * u_bar, -1.0 + 0.5 * u_bar)
    return out


def majority_labels(answers: Sequence[str | None], groups: np.ndarray) -> np.ndarray:
    """Label-free EVOL-RL pseudo-labels: answer == the group's majority answer. DESIGN 3.3 [EVOL-RL repo].

    Answers compare as given (normalise them before). None never matches and
    never votes; a group with no answers has no majority (all False). Ties
    [ours]: the tied answer that appears first in the group (lowest row
    index) wins, as ``collections.Counter.most_common`` orders them.
    """
    ans = list(answers)
    codes, n_groups = _group_codes(groups, len(ans))
    labels = np.zeros(len(ans), bool)
    for idx in _members(codes, n_groups):
        votes: dict[str, int] = {}
        for i in idx:  # ascending row order, so dict order is first appearance
            if ans[i] is not None:
                votes[ans[i]] = votes.get(ans[i], 0) + 1
        if votes:
            top = max(votes.items(), key=lambda kv: kv[1])[0]  # max keeps the first of ties
            labels[idx] = [ans[i] == top for i in idx]
    return labels

"""Exploration geometry of a step's completions (DESIGN 4).

For each group (the completions of one prompt) and every pair i < j in it:
the gradient cosine g_ij = <u_i, u_j> of the unit gradient features, its
direction fractions, and the semantic cosine of the text embeddings; each
also split by pair type (correct-correct, correct-incorrect,
incorrect-incorrect). The trainers log :func:`geometry_metrics` every step;
the app and notebooks plot :func:`pairs_frame`, so all three agree.

Pure numpy/pandas: no torch, no ``workbench``, no ``trainers``.

Zero vectors: :func:`unit_rows` maps a row of norm <= eps to the zero
vector, so a zero feature has cosine 0 with everything (it counts as
orthogonal and as non-negative).

Speed: the cosines of a group are its Gram matrix, made for all groups of
one size by a batched product (no (P, d) gather of the pairs' rows), and
pair types are integer codes until a frame is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

from analysis.records import DIRECTION_NAMES, PAIR_TYPES, SEMANTIC_NAMES, geometry_key

if TYPE_CHECKING:  # pandas is imported where a frame is built: naming a method must stay fast
    import pandas as pd

_CHUNK_ELEMENTS = 1 << 20  # bound on rows x dims of one Gram block and of one norm pass (8 MiB of float64)
ZERO_NORM = 1e-12  # a row of norm <= this is the zero vector (DESIGN 4 [ours])


def stack(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A list-valued column of a dump (``grad_feature``, ``embedding``) as an (N, d) float array."""
    values = frame[column].tolist()
    if not values or any(v is None for v in values):
        raise ValueError(f"column {column!r} has missing vectors; was it recorded for this run?")
    return np.stack([np.asarray(v, dtype=np.float64) for v in values])


@dataclass(frozen=True, eq=False)  # arrays: no elementwise __eq__
class Pairs:
    """All pairs i < j within each group, as parallel arrays of length P.

    ``group``: the group id of the pair; ``i``, ``j``: row indices into the
    input (i < j); ``cos``: cosine of rows i and j.
    """

    group: np.ndarray  # (P,)
    i: np.ndarray  # (P,) int64
    j: np.ndarray  # (P,) int64
    cos: np.ndarray  # (P,) float64

    def __len__(self) -> int:
        return int(self.i.size)


def unit_rows(x: np.ndarray, eps: float = ZERO_NORM) -> np.ndarray:
    """Each row divided by its L2 norm: u_i = x_i / ||x_i||, in float64.

    DESIGN 4 [ours for zero rows]: a row with ||x_i|| <= eps becomes the zero
    vector, so its cosine with every row is 0. A finite row whose norm
    overflows to inf becomes the zero vector too; NaN or inf entries give NaN.
    """
    u = np.array(x, dtype=np.float64)  # (N, d), a new array, divided in place
    if u.ndim != 2:
        raise ValueError(f"expected a 2-D array (N, d), got shape {u.shape}")
    norms = np.empty(u.shape[0])  # (N,)
    step = max(1, _CHUNK_ELEMENTS // max(1, u.shape[1]))
    for lo in range(0, u.shape[0], step):  # chunks: no (N, d) temporary for the squares
        norms[lo : lo + step] = np.linalg.norm(u[lo : lo + step], axis=1)
    tiny = norms <= eps  # False for NaN norms, so NaN rows stay NaN
    u /= np.where(tiny, 1.0, norms)[:, None]
    u[tiny] = 0.0
    return u


def _check_features(name: str, x: np.ndarray, n_rows: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] != n_rows:
        raise ValueError(f"{name} must have shape (N, d) with N={n_rows} rows (one per completion), got {x.shape}")
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise ValueError(f"{name} has NaN or inf in rows {bad[:10].tolist()}; geometry needs finite features")
    return x


def _group_layout(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows stably sorted by group (``order``, (N,)), and each group's first sorted position and size ((G,) each)."""
    order = np.argsort(groups, kind="stable")  # (N,)
    sorted_groups = groups[order]
    is_start = np.ones(groups.size, dtype=bool)
    is_start[1:] = sorted_groups[1:] != sorted_groups[:-1]
    starts = np.flatnonzero(is_start)  # (G,)
    sizes = np.diff(np.append(starts, groups.size))  # (G,)
    return order, starts, sizes


def pair_indices(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (i, j), i < j, of all pairs within each group, no pair loop.

    Rows are stably sorted by group; the row at sorted position p pairs with
    positions p+1 .. end-1 of its group. Pairs come ordered by group id, then i,
    then j. DESIGN 4.
    """
    groups = np.asarray(groups).reshape(-1)  # (N,)
    if groups.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order, starts, sizes = _group_layout(groups)
    end_of_row = np.repeat(starts + sizes, sizes)  # (N,)
    partners = end_of_row - np.arange(groups.size) - 1  # (N,) rows after p in its group
    first = np.repeat(np.arange(groups.size), partners)  # (P,) sorted positions
    block_start = np.repeat(np.cumsum(partners) - partners, partners)  # (P,)
    second = first + 1 + np.arange(first.size) - block_start  # (P,)
    return order[first].astype(np.int64), order[second].astype(np.int64)


def _group_cosines(features: np.ndarray, groups: np.ndarray, eps: float = ZERO_NORM) -> np.ndarray:
    """g_ij = <x_i, x_j> / (||x_i|| ||x_j||) of all pairs i < j within each group, clipped to [-1, 1].

    DESIGN 4: <u_i, u_j> of :func:`unit_rows` up to float rounding, and like
    it a row of norm <= eps (or an overflowing norm) is the zero vector, with
    cosine 0. For each group size m, one batched product gives the float64
    Gram matrices of the groups' rows, in blocks of about ``_CHUNK_ELEMENTS``
    rows x dims; the norms are the square roots of their diagonals. Each
    group's upper triangle, read row by row (i, then j), is its run of pairs
    in :func:`pair_indices` order.
    """
    if groups.size == 0:
        return np.empty(0)
    order, starts, sizes = _group_layout(groups)
    n_pairs = sizes * (sizes - 1) // 2  # (G,)
    pair_start = np.cumsum(n_pairs) - n_pairs  # (G,) position of each group's first pair
    out = np.empty(int(n_pairs.sum()))  # (P,)
    d = features.shape[1]
    for m in np.unique(sizes[sizes > 1]):
        upper_i, upper_j = np.triu_indices(m, 1)  # (T,), T = m(m-1)/2, ordered by i, then j
        of_size = np.flatnonzero(sizes == m)  # groups with m rows
        step = max(1, _CHUNK_ELEMENTS // (m * max(1, d)))
        for lo in range(0, of_size.size, step):
            chunk = of_size[lo : lo + step]  # (g,)
            rows = order[starts[chunk][:, None] + np.arange(m)]  # (g, m)
            block = features[rows.ravel()].astype(np.float64).reshape(chunk.size, m, d)  # (g, m, d)
            with np.errstate(over="ignore", invalid="ignore"):  # overflowing rows: zeroed below
                gram = block @ block.transpose(0, 2, 1)  # (g, m, m)
                norms = np.sqrt(np.einsum("gii->gi", gram))  # (g, m)
                zero = ~((eps < norms) & (norms < math.inf))  # (g, m) rows that unit_rows maps to 0
                inv = 1.0 / np.where(zero, 1.0, norms)  # (g, m)
                cos = gram[:, upper_i, upper_j] * inv[:, upper_i] * inv[:, upper_j]  # (g, T)
            cos[zero[:, upper_i] | zero[:, upper_j]] = 0.0
            out[pair_start[chunk][:, None] + np.arange(upper_i.size)] = cos
    return np.clip(out, -1.0, 1.0, out=out)


def pairwise_cosines(features: np.ndarray, groups: np.ndarray) -> Pairs:
    """Cosines g_ij = <u_i, u_j> of all pairs i < j within each group.

    DESIGN 4 [paper]. ``features`` (N, d); ``groups`` (N,) any sortable ids.
    """
    groups = np.asarray(groups).reshape(-1)
    features = _check_features("features", features, groups.size)
    i, j = pair_indices(groups)
    return Pairs(group=groups[i], i=i, j=j, cos=_group_cosines(features, groups))


def _pair_codes(correct: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Number of correct completions in each pair (0, 1, 2): the index of its type in ``PAIR_TYPES``."""
    return correct[i].astype(np.int8) + correct[j].astype(np.int8)  # (P,)


def pair_types(pairs: Pairs, correct: np.ndarray) -> np.ndarray:
    """Type of each pair from the correctness of its two completions.

    "correct_correct", "correct_incorrect" or "incorrect_incorrect" (DESIGN 4).
    """
    flags = np.asarray(correct, dtype=bool).reshape(-1)
    return np.asarray(PAIR_TYPES)[_pair_codes(flags, pairs.i, pairs.j)]


def _check_tau(tau: float) -> None:
    if not 0.0 <= tau <= 1.0:  # also rejects NaN
        raise ValueError(f"tau={tau} is invalid; the orthogonality threshold must lie in [0, 1]")


def direction_terms(cos: np.ndarray, tau: float = 0.1) -> dict[str, np.ndarray]:
    """Per-pair terms whose means are the direction statistics of gradient cosines g (DESIGN 4 [paper]; tau [ours]).

    The one definition of the fractions: for each name of ``DIRECTION_NAMES``
    an array shaped like ``cos`` (flattened, float64): grad_cos_mean -> g;
    neg_frac -> [g < 0] (the paper's "negative similarity ratio");
    orth_frac -> [|g| <= tau]; opp_frac -> [g < -tau]; aligned_frac -> [g > tau]
    (opposing, orthogonal and aligned partition the pairs). A mean over any
    set of pairs is that set's statistic.
    """
    _check_tau(tau)
    g = np.asarray(cos, dtype=np.float64).reshape(-1)  # (P,)
    flags = {"neg_frac": g < 0.0, "orth_frac": np.abs(g) <= tau, "opp_frac": g < -tau, "aligned_frac": g > tau}
    return {"grad_cos_mean": g, **{name: flag.astype(np.float64) for name, flag in flags.items()}}


def direction_fractions(cos: np.ndarray, tau: float = 0.1) -> dict[str, float]:
    """Direction statistics of gradient cosines g: the means of :func:`direction_terms` (DESIGN 4 [paper]; tau [ours]).

    opp_frac = share of g < -tau; orth_frac = share of |g| <= tau;
    aligned_frac = share of g > tau (the three sum to 1); neg_frac = share of
    g < 0 (the paper's "negative similarity ratio"); grad_cos_mean = mean g.
    No cosines: all NaN.
    """
    terms = direction_terms(cos, tau)
    if terms["grad_cos_mean"].size == 0:
        return dict.fromkeys(DIRECTION_NAMES, math.nan)
    return {name: float(terms[name].mean()) for name in DIRECTION_NAMES}


def semantic_summary(cos: np.ndarray) -> dict[str, float]:
    """Semantic coherence of text-embedding cosines s (DESIGN 4 [paper]).

    sem_cos_mean = mean s; sem_dispersion = 1 - mean s. No cosines: NaN.
    """
    s = np.asarray(cos, dtype=np.float64).reshape(-1)
    mean = float(s.mean()) if s.size else math.nan
    return {"sem_cos_mean": mean, "sem_dispersion": 1.0 - mean}


def _summaries(grad_cos: np.ndarray, sem_cos: np.ndarray | None, tau: float) -> dict[str, float]:
    out = direction_fractions(grad_cos, tau)
    if sem_cos is not None:
        out.update(semantic_summary(sem_cos))
    return out


def _check_inputs(
    grad: np.ndarray, emb: np.ndarray | None, groups: np.ndarray, correct: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    groups = np.asarray(groups).reshape(-1)  # (N,)
    flags = np.asarray(correct, dtype=bool).reshape(-1)  # (N,)
    if flags.size != groups.size:
        raise ValueError(f"correct has {flags.size} entries but groups has {groups.size}; pass one per completion")
    grad = _check_features("features", grad, groups.size)
    emb = None if emb is None else _check_features("emb", emb, groups.size)
    return grad, emb, groups, flags


def pairs_frame(
    grad: np.ndarray,
    emb: np.ndarray | None,
    groups: np.ndarray,
    correct: np.ndarray,
) -> pd.DataFrame:
    """Tidy frame of all within-group pairs, for histograms (DESIGN 4).

    Columns: group, i, j (row indices, i < j), grad_cos, sem_cos (NaN when
    ``emb`` is None), pair_type (categorical, categories ``PAIR_TYPES``).
    Rows in :func:`pair_indices` order.
    """
    grad, emb, groups, flags = _check_inputs(grad, emb, groups, correct)
    i, j = pair_indices(groups)  # (P,) each
    sem = np.full(i.size, np.nan) if emb is None else _group_cosines(emb, groups)  # (P,)
    import pandas as pd

    return pd.DataFrame(
        {
            "group": groups[i],
            "i": i,
            "j": j,
            "grad_cos": _group_cosines(grad, groups),
            "sem_cos": sem,
            "pair_type": pd.Categorical.from_codes(_pair_codes(flags, i, j), categories=PAIR_TYPES),
        }
    )


def pair_cosines(
    grad: np.ndarray,
    emb: np.ndarray | None,
    groups: np.ndarray,
    correct: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Gradient cosines g, semantic cosines s and pair-type codes of all within-group pairs (DESIGN 4).

    Three (P,) arrays in :func:`pair_indices` order, the pairs of :func:`pairs_frame` without a frame:
    g and s (None when ``emb`` is None) as :func:`pairwise_cosines` computes them, and the number of
    correct completions in each pair (0, 1, 2), the index of its type in ``PAIR_TYPES``.
    """
    grad, emb, groups, flags = _check_inputs(grad, emb, groups, correct)
    i, j = pair_indices(groups)  # (P,) each
    g = _group_cosines(grad, groups)  # (P,)
    s = None if emb is None else _group_cosines(emb, groups)  # (P,)
    return g, s, _pair_codes(flags, i, j)


def geometry_metrics(
    grad: np.ndarray,
    emb: np.ndarray | None,
    groups: np.ndarray,
    correct: np.ndarray,
    tau: float = 0.1,
) -> dict[str, float]:
    """Per-step geometry metrics, named as logged to MLflow (DESIGN 4, 6).

    Keys ``geometry/<name>`` for name in grad_cos_mean, neg_frac, orth_frac,
    opp_frac, aligned_frac (:func:`direction_fractions`) and, when ``emb`` is
    given, sem_cos_mean, sem_dispersion (:func:`semantic_summary`); the same
    for each pair type as ``geometry/<pair_type>/<name>``. Keys whose value
    is NaN (no pairs of that kind) are left out, so the dict can be logged
    as is. The same pairs and cosines as :func:`pairs_frame`, without a frame.
    """
    _check_tau(tau)
    g, s, codes = pair_cosines(grad, emb, groups, correct)  # (P,) each
    metrics = {geometry_key(name): v for name, v in _summaries(g, s, tau).items()}
    for code, pair_type in enumerate(PAIR_TYPES):
        part = codes == code  # (P,)
        for name, v in _summaries(g[part], None if s is None else s[part], tau).items():
            metrics[geometry_key(name, pair_type)] = v
    return {key: float(v) for key, v in metrics.items() if not math.isnan(v)}

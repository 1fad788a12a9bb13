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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported where a frame is built: naming a method must stay fast
    import pandas as pd

PAIR_TYPES = ("incorrect_incorrect", "correct_incorrect", "correct_correct")  # index = number correct
DIRECTION_NAMES = ("grad_cos_mean", "neg_frac", "orth_frac", "opp_frac", "aligned_frac")
SEMANTIC_NAMES = ("sem_cos_mean", "sem_dispersion")
PREFIX = "geometry"
_CHUNK_ELEMENTS = 1 << 22  # bound on pairs x dims gathered at once (32 MiB of float64)


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


def unit_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Each row divided by its L2 norm: u_i = x_i / ||x_i||, in float64.

    DESIGN 4 [ours for zero rows]: a row with ||x_i|| <= eps becomes the zero
    vector, so its cosine with every row is 0.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array (N, d), got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    tiny = norms <= eps  # False for NaN norms, so NaN rows stay NaN
    return np.where(tiny, 0.0, x / np.where(tiny, 1.0, norms))  # (N, d)


def _check_features(name: str, x: np.ndarray, n_rows: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] != n_rows:
        raise ValueError(f"{name} must have shape (N, d) with N={n_rows} rows (one per completion), got {x.shape}")
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise ValueError(f"{name} has NaN or inf in rows {bad[:10].tolist()}; geometry needs finite features")
    return x


def pair_indices(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (i, j), i < j, of all pairs within each group, no pair loop.

    Rows are stably sorted by group; the row at sorted position p pairs with
    positions p+1 .. end-1 of its group. Pairs come ordered by group id, then i,
    then j. DESIGN 4.
    """
    groups = np.asarray(groups).reshape(-1)  # (N,)
    if groups.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(groups, kind="stable")  # (N,)
    sorted_groups = groups[order]
    is_start = np.ones(groups.size, dtype=bool)
    is_start[1:] = sorted_groups[1:] != sorted_groups[:-1]
    starts = np.flatnonzero(is_start)  # (G,)
    ends = np.append(starts[1:], groups.size)  # (G,)
    end_of_row = np.repeat(ends, ends - starts)  # (N,)
    partners = end_of_row - np.arange(groups.size) - 1  # (N,) rows after p in its group
    first = np.repeat(np.arange(groups.size), partners)  # (P,) sorted positions
    block_start = np.repeat(np.cumsum(partners) - partners, partners)  # (P,)
    second = first + 1 + np.arange(first.size) - block_start  # (P,)
    return order[first].astype(np.int64), order[second].astype(np.int64)


def cosines_at(unit: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """g_ij = <u_i, u_j> for the given index pairs of unit rows, clipped to [-1, 1].

    DESIGN 4. Gathers rows in chunks so memory stays bounded for wide features.
    """
    out = np.empty(i.size, dtype=np.float64)  # (P,)
    step = max(1, _CHUNK_ELEMENTS // max(1, unit.shape[1]))
    for lo in range(0, i.size, step):
        a, b = unit[i[lo : lo + step]], unit[j[lo : lo + step]]  # (p, d)
        out[lo : lo + step] = np.einsum("pd,pd->p", a, b)
    return np.clip(out, -1.0, 1.0)


def pairwise_cosines(features: np.ndarray, groups: np.ndarray) -> Pairs:
    """Cosines g_ij = <u_i, u_j> of all pairs i < j within each group.

    DESIGN 4 [paper]. ``features`` (N, d); ``groups`` (N,) any sortable ids.
    """
    groups = np.asarray(groups).reshape(-1)
    features = _check_features("features", features, groups.size)
    i, j = pair_indices(groups)
    return Pairs(group=groups[i], i=i, j=j, cos=cosines_at(unit_rows(features), i, j))


def pair_types(pairs: Pairs, correct: np.ndarray) -> np.ndarray:
    """Type of each pair from the correctness of its two completions.

    "correct_correct", "correct_incorrect" or "incorrect_incorrect" (DESIGN 4).
    """
    flags = np.asarray(correct, dtype=bool).reshape(-1)
    n_correct = flags[pairs.i].astype(np.int64) + flags[pairs.j].astype(np.int64)  # (P,)
    return np.asarray(PAIR_TYPES)[n_correct]


def _check_tau(tau: float) -> None:
    if not 0.0 <= tau <= 1.0:  # also rejects NaN
        raise ValueError(f"tau={tau} is invalid; the orthogonality threshold must lie in [0, 1]")


def direction_fractions(cos: np.ndarray, tau: float = 0.1) -> dict[str, float]:
    """Direction statistics of gradient cosines g (DESIGN 4 [paper]; tau [ours]).

    opp_frac = share of g < -tau; orth_frac = share of |g| <= tau;
    aligned_frac = share of g > tau (the three sum to 1); neg_frac = share of
    g < 0 (the paper's "negative similarity ratio"); grad_cos_mean = mean g.
    No cosines: all NaN.
    """
    _check_tau(tau)
    g = np.asarray(cos, dtype=np.float64).reshape(-1)
    if g.size == 0:
        return dict.fromkeys(DIRECTION_NAMES, math.nan)
    return {
        "grad_cos_mean": float(g.mean()),
        "neg_frac": float(np.mean(g < 0.0)),
        "orth_frac": float(np.mean(np.abs(g) <= tau)),
        "opp_frac": float(np.mean(g < -tau)),
        "aligned_frac": float(np.mean(g > tau)),
    }


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


def pairs_frame(
    grad: np.ndarray,
    emb: np.ndarray | None,
    groups: np.ndarray,
    correct: np.ndarray,
) -> pd.DataFrame:
    """Tidy frame of all within-group pairs, for histograms (DESIGN 4).

    Columns: group, i, j (row indices, i < j), grad_cos, sem_cos (NaN when
    ``emb`` is None), pair_type.
    """
    groups = np.asarray(groups).reshape(-1)
    flags = np.asarray(correct, dtype=bool).reshape(-1)
    if flags.size != groups.size:
        raise ValueError(f"correct has {flags.size} entries but groups has {groups.size}; pass one per completion")
    pairs = pairwise_cosines(grad, groups)
    if emb is None:
        sem = np.full(len(pairs), np.nan)
    else:
        sem = cosines_at(unit_rows(_check_features("emb", emb, groups.size)), pairs.i, pairs.j)
    import pandas as pd

    return pd.DataFrame(
        {
            "group": pairs.group,
            "i": pairs.i,
            "j": pairs.j,
            "grad_cos": pairs.cos,
            "sem_cos": sem,
            "pair_type": pair_types(pairs, flags),
        }
    )


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
    as is.
    """
    _check_tau(tau)
    frame = pairs_frame(grad, emb, groups, correct)
    sem_all = None if emb is None else frame["sem_cos"].to_numpy()
    metrics = {f"{PREFIX}/{name}": v for name, v in _summaries(frame["grad_cos"].to_numpy(), sem_all, tau).items()}
    for pair_type in PAIR_TYPES:
        part = frame[frame["pair_type"] == pair_type]
        sem = None if emb is None else part["sem_cos"].to_numpy()
        for name, v in _summaries(part["grad_cos"].to_numpy(), sem, tau).items():
            metrics[f"{PREFIX}/{pair_type}/{name}"] = v
    return {key: float(v) for key, v in metrics.items() if not math.isnan(v)}

"""Per-step pair summaries (``summary/pairs.parquet``): what the app's geometry page draws, without the dumps.

A step's pairs (every pair i < j within each group, DESIGN 4) become one row per pair type
(:data:`~analysis.records.SUMMARY_PAIR_TYPES`: ``all``, then each of
:data:`~analysis.geometry.PAIR_TYPES`) with the columns of
:data:`~analysis.records.SUMMARY_COLUMNS`: the pair count, the means, the direction fractions of
:func:`~analysis.geometry.direction_terms` at every tau of :data:`~analysis.records.SUMMARY_TAUS`,
and histogram counts of the gradient and semantic cosines on :data:`HIST_EDGES`. The cosines are
:func:`~analysis.geometry.pair_cosines`, the ones the logged ``geometry/*`` metrics come from.

Writing: :func:`step_summary` is one step's rows; :class:`PairSummaries` holds a run's rows for a
recorder, which writes :meth:`PairSummaries.table` whole at each flush; :func:`summaries_from_dumps`
makes the same rows from feature dumps (runs recorded before summaries existed).

Reading: :func:`summary_frame` turns the artifact into a flat frame, each list column spread
over numbered columns (``orth_frac/0`` ... ``orth_frac/20``, ``grad_hist/0`` ... ``grad_hist/49``;
:func:`flat_columns`), so a run's rows are a few float blocks, quick to cache. A statistic over
several rows (steps, runs) is the pair-weighted mean of the rows'
values, which is the statistic over all their pairs, since each row's value is a mean over its
pairs; histogram counts add. Fractions exist only on the tau grid: :func:`tau_index` snaps a tau
to the nearest grid value (no interpolation: a fraction is a step function of tau).

Pure numpy/pandas/pyarrow: no torch, no ``workbench``, no ``trainers``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis.geometry import DIRECTION_NAMES, PAIR_TYPES, direction_fractions, direction_terms, pair_cosines, stack, \
    semantic_summary
from analysis.records import SUMMARY_BINS, SUMMARY_COLUMNS, SUMMARY_PAIR_TYPES, SUMMARY_TAUS, summary_schema

ALL = SUMMARY_PAIR_TYPES[0]
HIST_EDGES = np.linspace(-1.0, 1.0, SUMMARY_BINS + 1)
"""Edges of the summaries' histogram bins over cosines in [-1, 1]."""
TAU_FRACTIONS = ("orth_frac", "opp_frac", "aligned_frac")
"""The fractions that depend on tau: one value per grid tau in a summary row."""
LIST_LENGTHS = {**dict.fromkeys(TAU_FRACTIONS, len(SUMMARY_TAUS)), "grad_hist": SUMMARY_BINS, "sem_hist": SUMMARY_BINS}
"""The list columns of a summary row and their lengths."""
if SUMMARY_PAIR_TYPES[1:] != PAIR_TYPES:  # the row order is the pair-type code + 1
    raise ImportError(f"records.SUMMARY_PAIR_TYPES {SUMMARY_PAIR_TYPES} must be 'all' then geometry.PAIR_TYPES")


# --------------------------------------------------------------------------- writing


def _counts(cos: np.ndarray) -> list[int]:
    return np.histogram(cos, bins=HIST_EDGES)[0].tolist()


def step_summary(step: int, grad: np.ndarray, emb: np.ndarray | None, groups: np.ndarray,
                 correct: np.ndarray) -> list[dict]:
    """The summary rows of one step: one per pair type with at least one pair, as dicts of ``SUMMARY_COLUMNS``.

    ``grad`` (N, d) gradient features, ``emb`` (N, e) text embeddings or None, ``groups`` (N,) group
    ids, ``correct`` (N,) flags, as :func:`analysis.geometry.geometry_metrics` takes them. Per row:
    ``grad_cos_mean`` and ``neg_frac`` of :func:`~analysis.geometry.direction_fractions`; ``orth_frac``,
    ``opp_frac``, ``aligned_frac`` as lists over ``SUMMARY_TAUS`` (the means of
    :func:`~analysis.geometry.direction_terms` at each tau); ``sem_cos_mean`` and ``sem_dispersion`` of
    :func:`~analysis.geometry.semantic_summary` (None without ``emb``); ``grad_hist``, ``sem_hist``
    the counts per bin of :data:`HIST_EDGES`.
    """
    g, s, codes = pair_cosines(grad, emb, groups, correct)  # (P,) each
    masks = np.stack([np.ones(g.size, dtype=bool), *(codes == k for k in range(len(PAIR_TYPES)))])  # (4, P)
    terms = [direction_terms(g, tau) for tau in SUMMARY_TAUS]
    counts = masks.sum(axis=1)  # (4,)
    with np.errstate(invalid="ignore", divide="ignore"):  # a type without pairs: its row is left out below
        by_tau = {name: np.stack([t[name] for t in terms]) @ masks.T / counts for name in TAU_FRACTIONS}  # (T, 4)
    rows = []
    for k, pair_type in enumerate(SUMMARY_PAIR_TYPES):
        mask, n = masks[k], int(counts[k])
        if not n:
            continue
        plain = direction_fractions(g[mask])  # grad_cos_mean and neg_frac do not depend on tau
        semantic = semantic_summary(s[mask]) if s is not None else dict.fromkeys(("sem_cos_mean", "sem_dispersion"))
        rows.append({
            "step": int(step), "pair_type": pair_type, "pairs": n,
            "grad_cos_mean": plain["grad_cos_mean"], "neg_frac": plain["neg_frac"],
            **{name: by_tau[name][:, k].tolist() for name in TAU_FRACTIONS},  # means of the terms over the type
            **semantic,
            "grad_hist": _counts(g[mask]), "sem_hist": None if s is None else _counts(s[mask]),
        })
    return rows


def summary_table(rows: list[dict]) -> pa.Table:
    """Summary rows (:func:`step_summary`) as an Arrow table of :func:`analysis.records.summary_schema`."""
    return pa.Table.from_pylist(rows, schema=summary_schema())


class PairSummaries:
    """A run's summary rows, step by step, for a recorder to write whole at each flush.

    ``earlier``: called once, at the first :meth:`table`, for the artifact an earlier process of
    the same run wrote (a resumed run), or None. Its rows before this process's first step are
    kept; later ones are steps trained again here. A step added twice keeps its last rows.
    """

    def __init__(self, earlier: Callable[[], pa.Table | None] | None = None) -> None:
        self._earlier = earlier
        self._kept: pa.Table | None = None
        self._rows: dict[int, list[dict]] = {}

    def add(self, step: int, grad: np.ndarray | None, emb: np.ndarray | None, groups: np.ndarray,
            correct: np.ndarray) -> None:
        """Summarise one step (:func:`step_summary`); nothing without gradient features (``grad`` None)."""
        if grad is not None:
            self._rows[int(step)] = step_summary(step, grad, emb, groups, correct)

    def table(self) -> pa.Table | None:
        """Every row so far, by step, with the earlier process's; None before the first :meth:`add`."""
        if not self._rows:
            return None
        if self._earlier is not None:
            earlier, self._earlier = self._earlier(), None
            if earlier is not None and earlier.num_rows:
                earlier = earlier.select(list(SUMMARY_COLUMNS)).cast(summary_schema())
                self._kept = earlier.filter(pc.less(earlier["step"], min(self._rows)))
        new = summary_table([row for step in sorted(self._rows) for row in self._rows[step]])
        return new if self._kept is None else pa.concat_tables([self._kept, new])


def summaries_from_dumps(dumps: pd.DataFrame) -> pd.DataFrame:
    """The summary rows of each step of feature dumps (:func:`analysis.loaders.load_dumps`), as a :func:`summary_frame`.

    Embeddings count only for a step whose every row has one.
    """

    rows = []
    for step, dump in dumps.groupby("step", sort=True) if not dumps.empty else ():
        emb = stack(dump, "embedding") if dump["embedding"].notna().all() else None
        rows += step_summary(int(step), stack(dump, "grad_feature"), emb, dump["group"].to_numpy(),
                             dump["correct"].to_numpy(dtype=bool))
    return summary_frame(summary_table(rows))


# --------------------------------------------------------------------------- reading


def flat_columns(name: str) -> list[str]:
    """The numbered columns of list column ``name`` in a :func:`summary_frame`: ``name/0``, ``name/1``, ..."""
    return [f"{name}/{k}" for k in range(LIST_LENGTHS[name])]


def summary_frame(table: pa.Table) -> pd.DataFrame:
    """A summary artifact (Arrow, :func:`analysis.records.summary_schema`) as a flat frame.

    The scalar columns as they are; each list column spread over its :func:`flat_columns` (NaN
    for a null list: no embeddings). A list of the wrong length is a ValueError.
    """
    missing = [c for c in SUMMARY_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"summary artifact lacks columns {missing}; expected {list(SUMMARY_COLUMNS)}")
    n = table.num_rows
    scalars = table.select([c for c in SUMMARY_COLUMNS if c not in LIST_LENGTHS]).to_pandas()
    blocks = [scalars]
    for name, length in LIST_LENGTHS.items():
        lists = table[name].combine_chunks()
        present = ~lists.is_null().to_numpy(zero_copy_only=False)  # (R,)
        lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)[present]
        if (lengths != length).any():
            raise ValueError(f"summary column {name!r} has lists of length {sorted(set(lengths.tolist()))}; "
                             f"expected {length} (records.SUMMARY_TAUS / SUMMARY_BINS)")
        values = np.full((n, length), np.nan)  # (R, K)
        values[present] = lists.flatten().to_numpy(zero_copy_only=False).reshape(-1, length)
        blocks.append(pd.DataFrame(values, columns=flat_columns(name)))
    return pd.concat(blocks, axis=1)


def tau_index(tau: float) -> int:
    """Index of the grid tau of ``SUMMARY_TAUS`` nearest to ``tau`` (in [0, 1])."""
    if not 0.0 <= tau <= 1.0:  # also rejects NaN
        raise ValueError(f"tau={tau} is invalid; the orthogonality threshold must lie in [0, 1]")
    return int(np.argmin(np.abs(np.asarray(SUMMARY_TAUS) - tau)))


def at_tau(summaries: pd.DataFrame, tau: float) -> pd.DataFrame:
    """``summaries`` with the tau-dependent fractions as plain columns at the grid tau nearest ``tau``."""
    k = tau_index(tau)
    return summaries.assign(**{name: summaries[f"{name}/{k}"] for name in TAU_FRACTIONS})


def _pooled(rows: pd.DataFrame, by: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """Per ``by``: the pair-weighted mean of each of ``columns`` over the rows where it is not NaN, and pairs."""
    keys = list(by)
    if rows.empty:
        return pd.DataFrame(columns=[*keys, *columns, "pairs"])
    w = rows["pairs"].to_numpy(dtype=np.float64)  # (R,)
    parts = {key: rows[key].to_numpy() for key in keys}
    for name in columns:
        v = pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=np.float64)  # (R,)
        ok = ~np.isnan(v)
        parts[name], parts[f"{name}:w"] = np.where(ok, v * w, 0.0), np.where(ok, w, 0.0)
    sums = pd.DataFrame(parts).assign(pairs=rows["pairs"].to_numpy()).groupby(keys, sort=True).sum()
    out = pd.DataFrame({name: sums[name] / sums[f"{name}:w"].replace(0.0, math.nan) for name in columns})
    return out.assign(pairs=sums["pairs"]).reset_index()


def fractions_by_step(summaries: pd.DataFrame, tau: float, by: Sequence[str] = ("run_id",)) -> pd.DataFrame:
    """Direction fractions over all pairs per ``by`` and step, at the grid tau nearest ``tau``.

    The summaries' counterpart of :func:`analysis.compare.fractions_by_step`: the ``by`` columns,
    step, then one column per name of ``DIRECTION_NAMES``.
    """
    rows = at_tau(summaries[summaries["pair_type"] == ALL], tau)
    return _pooled(rows, [*by, "step"], DIRECTION_NAMES).drop(columns="pairs")


def dispersion_by_step(summaries: pd.DataFrame, by: Sequence[str] = ("run_id",)) -> pd.DataFrame:
    """Gradient and semantic dispersion per ``by`` and step: 1 - mean cosine of each (DESIGN 4), and pairs.

    The summaries' counterpart of :func:`analysis.compare.dispersion_by_step`.
    """
    keys = [*by, "step"]
    out = _pooled(summaries[summaries["pair_type"] == ALL], keys, ("grad_cos_mean", "sem_cos_mean"))
    out["grad_dispersion"] = 1.0 - out.pop("grad_cos_mean")
    out["sem_dispersion"] = 1.0 - out.pop("sem_cos_mean")
    return out[[*keys, "grad_dispersion", "sem_dispersion", "pairs"]]


def pooled_stats(summaries: pd.DataFrame, tau: float, by: Sequence[str] = ("method",),
                 pair_type: str = ALL) -> pd.DataFrame:
    """Per ``by`` over all rows of ``pair_type``: mean g, the fractions at the grid tau nearest ``tau``,
    mean semantic cosine, pairs: the numbers the paper quotes beside its Figure 3 (DESIGN 4)."""
    rows = at_tau(summaries[summaries["pair_type"] == pair_type], tau)
    return _pooled(rows, by, (*DIRECTION_NAMES, "sem_cos_mean"))


def pooled_histogram(summaries: pd.DataFrame, column: str, by: Sequence[str], pair_type: str = ALL) -> pd.DataFrame:
    """The ``grad_hist`` or ``sem_hist`` counts added over the rows of ``pair_type``, per ``by`` group.

    One row per group and bin: the ``by`` columns, x (the bin's centre), count, density (count over
    the group's total times the bin width, as a density histogram draws it). Rows without the
    column (no embeddings) are left out.
    """
    keys = list(by)
    columns = flat_columns(column)
    rows = summaries[(summaries["pair_type"] == pair_type) & summaries[columns[0]].notna()]
    centres = (HIST_EDGES[:-1] + HIST_EDGES[1:]) / 2  # (B,)
    width = HIST_EDGES[1] - HIST_EDGES[0]
    parts = []
    for name, part in rows.groupby(keys, sort=True):
        counts = part[columns].to_numpy().sum(axis=0).astype(np.int64)  # (B,)
        total = counts.sum()
        parts.append(pd.DataFrame({**dict(zip(keys, name)), "x": centres, "count": counts,
                                   "density": counts / (total * width) if total else np.zeros_like(centres)}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*keys, "x", "count", "density"])

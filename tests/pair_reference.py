"""Per-step geometry recomputed from the dumps' pairs, one step at a time: the reference that the summaries'
pooled numbers (analysis.summary) and the logged metrics are checked against."""

from __future__ import annotations

import pandas as pd

from analysis.geometry import direction_fractions


def fractions_per_step(pairs: pd.DataFrame, tau: float, by: tuple[str, ...] = ("run_id",)) -> pd.DataFrame:
    """direction_fractions of each (by, step)'s gradient cosines: the by columns, step, one column per fraction."""
    keys = [*by, "step"]
    rows = [{**dict(zip(keys, key, strict=True)), **direction_fractions(block["grad_cos"].to_numpy(), tau)}
            for key, block in pairs.groupby(keys, sort=True)]
    return pd.DataFrame(rows)


def dispersion_per_step(pairs: pd.DataFrame, by: tuple[str, ...] = ("run_id",)) -> pd.DataFrame:
    """1 - mean cosine of each (by, step)'s gradient and semantic pairs, and the pair count."""
    keys = [*by, "step"]
    rows = [{**dict(zip(keys, key, strict=True)), "grad_dispersion": 1.0 - block["grad_cos"].mean(),
             "sem_dispersion": 1.0 - block["sem_cos"].mean(), "pairs": len(block)}
            for key, block in pairs.groupby(keys, sort=True)]
    return pd.DataFrame(rows)

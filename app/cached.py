"""Cached reads of the tracking store, for the pages (the only place the app touches MLflow data).

Every function is a thin ``st.cache_data`` wrapper around :mod:`analysis`,
keyed by the tracking URI and run ids. Per-run data is also keyed by a
*stamp* (the run's last step and status) so a run that is still training is
read again once it has moved on, while finished runs are read once.

A run whose artifacts cannot be read does not stop a page: the wrappers that
read artifacts return an error message beside the data, for a notice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

from analysis import compare, loaders, records, summary

Stamp = tuple[int, str]  # (last step, status) of a run: changes while it trains


def _error(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


@st.cache_data(ttl=60, show_spinner=False)
def experiments(uri: str) -> list[str]:
    """:func:`analysis.loaders.experiments`: names of the experiments that hold a run, most recent first."""
    return loaders.experiments(uri)


@st.cache_data(ttl=60, show_spinner="Reading runs ...")
def runs(experiment: str, uri: str) -> pd.DataFrame:
    """:func:`analysis.loaders.runs_table` of one experiment."""
    return loaders.runs_table(experiment, uri)


@st.cache_data(show_spinner=False, max_entries=2000)
def history(run_id: str, keys: tuple[str, ...], uri: str, stamp: Stamp) -> pd.DataFrame:
    """Tidy histories of ``keys`` for one run: columns run_id, key, step, value."""
    parts = [loaders.metric_history(run_id, key, uri).assign(key=key) for key in keys]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["step", "value", "key"])
    return frame.assign(run_id=run_id)[["run_id", "key", "step", "value"]]


def histories(runs: pd.DataFrame, keys: list[str], uri: str) -> pd.DataFrame:
    """Tidy histories of ``keys`` for all ``runs`` (only the keys each run logged), with method, seed, label."""
    parts = []
    for _, run in runs.iterrows():
        logged = tuple(k for k in keys if pd.notna(run.get(f"metric.{k}")))
        if logged:
            parts.append(history(run["run_id"], logged, uri, stamp_of(run)))
    if not parts:
        return pd.DataFrame(columns=["run_id", "key", "step", "value", "method", "seed", "label"])
    return compare.attach_runs(pd.concat(parts, ignore_index=True), runs)


def stamp_of(run: pd.Series) -> Stamp:
    """The (last step, status) of a runs-table row."""
    return int(run["last_step"]), str(run["status"])


@st.cache_data(show_spinner=False, max_entries=2000)
def artifact_steps(run_id: str, uri: str, folder: str, stamp: Stamp) -> tuple[list[int], str | None]:
    """Steps with a ``<folder>/step_<step>.parquet`` artifact, and an error message if the listing failed."""
    try:
        return loaders.artifact_steps(run_id, uri, folder), None
    except Exception as err:  # noqa: BLE001 - a broken artifact store must not stop the page
        return [], _error(err)


@dataclass
class RunSummaries:
    """One run's per-step pair summaries (:mod:`analysis.summary`), where they came from, what went wrong.

    ``source``: ``"summary"`` (its ``summary/pairs.parquet``), ``"dumps"`` (made from its feature
    dumps: a run recorded before summaries existed, or whose summary cannot be read, then
    ``summary_error`` says why) or ``""`` (neither: ``frame`` is empty).
    """

    frame: pd.DataFrame
    source: str = ""
    invalid_steps: list[int] = field(default_factory=list)
    error: str | None = None
    summary_error: str | None = None


@st.cache_data(show_spinner=False, max_entries=500)
def run_summaries(run_id: str, uri: str, stamp: Stamp, max_dump_steps: int) -> RunSummaries:
    """The pair summaries of one run: its summary artifact, else made from at most ``max_dump_steps`` of its dumps.

    Dumps are read only for a run without a readable summary artifact, evenly spaced over its steps
    (:func:`analysis.compare.evenly_spaced`).
    """
    summary_error = None
    try:
        frame = loaders.load_summaries(run_id, uri)
    except Exception as err:  # noqa: BLE001 - an unreadable summary: the dumps, with a notice
        frame, summary_error = None, _error(err)
    if frame is not None:
        return RunSummaries(frame, "summary")
    try:
        steps = loaders.artifact_steps(run_id, uri, loaders.DUMP_DIR)
        if not steps:
            return RunSummaries(pd.DataFrame(), summary_error=summary_error)
        dumps = loaders.load_dumps(run_id, uri, compare.evenly_spaced(steps, max_dump_steps))
        frame = summary.summaries_from_dumps(dumps)
    except Exception as err:  # noqa: BLE001 - an unreadable dump: a notice for this run, the others still draw
        return RunSummaries(pd.DataFrame(), error=_error(err), summary_error=summary_error)
    return RunSummaries(frame.assign(run_id=run_id), "dumps", list(dumps.attrs.get("invalid_steps", [])),
                        summary_error=summary_error)


@st.cache_data(show_spinner=False, max_entries=16)
def step_dump(run_id: str, uri: str, step: int, folder: str = loaders.DUMP_DIR) -> tuple[pd.DataFrame, str | None]:
    """One step's artifact of one run (feature dump or eval rows), and an error message if it cannot be read."""
    try:
        frame = loaders.load_dumps(run_id, uri, [step], folder=folder)
    except Exception as err:  # noqa: BLE001 - shown as a notice for this step
        return pd.DataFrame(), _error(err)
    if frame.attrs.get("invalid_steps"):
        return pd.DataFrame(), f"{records.step_path(folder, step)} is truncated or corrupt"
    return frame, None


def clear() -> None:
    """Forget everything read, so the next run of the page reads the store afresh."""
    st.cache_data.clear()

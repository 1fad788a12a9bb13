"""The sidebar: which store, which experiment, which runs, and how to draw them.

:func:`render` draws it on every rerun (from ``main.py``, so the choices
persist across pages) and stores a :class:`Selection`; pages read it with
:func:`selection`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cached
import pandas as pd
import streamlit as st

from analysis import compare
from analysis.records import DEFAULT_EXPERIMENT, tracking_uri

DEFAULT_SMOOTHING = 0.6  # TensorBoard's default
BAND_LABELS = {"min-max": "min to max over seeds", "std": "mean ± 1 std", "ci95": "95 % t-interval"}
FIRST_RUN = """No runs to show yet. Make a first run (a tiny model on the synthetic countdown task, minutes on a laptop CPU):

```
workbench run --method g2rl
```

or the comparison grid: `workbench sweep --methods grpo,entropy,evol_rl,g2rl --seeds 0,1,2`.
Start them from the folder you ran `streamlit run` in (they log to `mlruns.db` there), or point
*Tracking URI* in the sidebar at the store they log to (`MLFLOW_TRACKING_URI`)."""


@dataclass(frozen=True, eq=False)
class Selection:
    """What the sidebar chose: the store, the experiment, the runs (rows of the runs table), and the view."""

    uri: str
    experiment: str
    runs: pd.DataFrame
    group_by_method: bool
    band: str
    smoothing: float  # TensorBoard's EMA weight for curves over steps, 0 = off

    @property
    def run_ids(self) -> list[str]:
        return self.runs["run_id"].tolist()

    @property
    def labels(self) -> pd.Series:
        """Run label by run id."""
        return compare.run_labels(self.runs)

    @property
    def series(self) -> str:
        """The column that names a line: ``method`` when grouping over seeds, else the run ``label``."""
        return "method" if self.group_by_method else "label"


def render() -> Selection | None:
    """Draw the sidebar; the selection, or None when there is nothing to show (the page says why)."""
    with st.sidebar:
        uri = st.text_input("Tracking URI", value=tracking_uri(), key="uri",
                            help="Where the runs are logged: MLFLOW_TRACKING_URI, else mlruns.db here.").strip()
        try:
            names = cached.experiments(uri)
        except Exception as err:  # noqa: BLE001 - an unreachable server or a bad URI: say so, keep the app up
            st.error(f"Cannot read the tracking store at `{uri}`: {type(err).__name__}: {err}")
            return None
        if not names:
            return None
        index = names.index(DEFAULT_EXPERIMENT) if DEFAULT_EXPERIMENT in names else 0
        experiment = st.selectbox("Experiment", names, index=index, key="experiment")
        table = cached.runs(experiment, uri)
        if table.empty:
            return None
        labels = compare.run_labels(table)
        chosen = st.multiselect("Runs", table["run_id"].tolist(), default=table["run_id"].tolist(),
                                format_func=labels.get, key=f"runs::{uri}::{experiment}",
                                help="The runs every page compares.")
        group = st.toggle("Group runs by method", value=True, key="group_by_method",
                          help="One line per method: the mean over its seeds with a band. Off: one line per run.")
        band = st.selectbox("Band", list(BAND_LABELS), format_func=BAND_LABELS.get, key="band",
                            disabled=not group)
        smoothing = st.slider("Smoothing", 0.0, 0.99, DEFAULT_SMOOTHING, 0.01, key="smoothing",
                              help="As in TensorBoard: each run's curve over steps is an exponential moving "
                                   "average with this weight, debiased at the start; the raw curve stays faint "
                                   "behind it. 0: off. Tables and reports use the logged values.")
        if st.button("Reload from the store", key="reload",
                     help="Forget cached reads (new runs and steps appear within a minute anyway)."):
            cached.clear()
            st.rerun()
        st.caption(f"{len(chosen)} of {len(table)} runs in `{experiment}`")
    selected = table[table["run_id"].isin(chosen)].reset_index(drop=True)
    return Selection(uri, experiment, selected, group, band, smoothing)


def remember(sel: Selection | None) -> None:
    st.session_state["_selection"] = sel


def selection() -> Selection:
    """The sidebar's current selection; stops the page with a hint when no run is chosen."""
    sel = st.session_state.get("_selection")
    if sel is None:
        st.info(FIRST_RUN)
        st.stop()
    if sel.runs.empty:
        st.info("No run selected: choose some under **Runs** in the sidebar.")
        st.stop()
    return sel

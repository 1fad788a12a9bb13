"""Training dynamics: rewards, entropy, completion length, KL, zero-variance groups and the regime (shares of
mixed, all-wrong and all-correct groups) over steps."""

import cached
import charts
import streamlit as st
from sidebar import selection

from analysis import compare

PANELS = {
    "train/reward": "Verifier reward (share correct)",
    "train/base_reward": "Base reward (the method's scale)",
    "train/shaped_reward": "Shaped reward (what GRPO normalises)",
    "train/entropy": "Policy entropy (nats per token)",
    "train/completion_len": "Completion length (tokens)",
    "train/kl": "KL to the reference policy",
    "train/zero_variance_groups": "Groups with zero shaped-reward variance",
    "train/zero_variance_groups_base": "Groups with zero base-reward variance",
    "train/mixed_groups": "Mixed groups (some answers right, some wrong)",
    "train/all_wrong_groups": "All-wrong groups",
    "train/all_correct_groups": "All-correct groups",
}

st.title("Training dynamics")
sel = selection()
st.caption("By method: the mean over seeds with a band (sidebar). Otherwise one line per run; a run's seed sets "
           "its dash. G2RL's base reward is ±1, the others' 0/1; the zero-variance counts show how often a group "
           "gives GRPO no signal, before and after shaping; the group shares show the regime (G2RL's scaler acts on "
           "the mixed groups, and all-wrong or all-correct groups get its equal-reward advantages). "
           "Curves are smoothed as set in the sidebar (raw values faint behind).")

logged = [key for key in PANELS if key in compare.metric_keys(sel.runs, "train/")]
missing = [key for key in PANELS if key not in logged]
tidy = cached.histories(sel.runs, logged, sel.uri)

for row in range(0, len(logged), 2):
    for column, key in zip(st.columns(2), logged[row : row + 2]):
        fig = charts.over_steps(tidy[tidy["key"] == key], series=sel.series, band=sel.band, title=PANELS[key],
                                smoothing=sel.smoothing)
        column.plotly_chart(fig, key=f"dyn-{key}")
if missing:
    st.caption("Not logged by the selected runs: " + ", ".join(f"`{k}`" for k in missing))

st.subheader("Any other logged metric")
others = [k for k in compare.metric_keys(sel.runs) if k not in PANELS and not k.startswith("eval/")]
if others:
    key = st.selectbox("Metric", others, key="dyn_other")
    other = cached.histories(sel.runs, [key], sel.uri)
    st.plotly_chart(charts.over_steps(other, series=sel.series, band=sel.band, title=key, smoothing=sel.smoothing),
                    key="dyn-other")

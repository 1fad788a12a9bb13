"""Samples: for a run and a step, each group's completions with correctness, rewards, advantage and score."""

import cached
import streamlit as st
from sidebar import selection

from analysis import compare, loaders, records

st.title("Samples")
sel = selection()
st.caption(f"The completions a run dumped at a step (`{records.FEATURES_DIR}/step_*.parquet`). "
           "Click a column header to sort.")

left, right = st.columns([1, 2])
run_id = left.selectbox("Run", sel.run_ids, format_func=sel.labels.get, key="samples_run")
run = sel.runs.set_index("run_id").loc[run_id]
steps, error = cached.artifact_steps(run_id, sel.uri, loaders.DUMP_DIR, cached.stamp_of(run))
if error or not steps:
    st.warning(f"**{sel.labels[run_id]}** has no feature dumps to show"
               + (f" ({error})." if error else " (it ran with `features.dump_every=0`, or has not dumped yet)."))
    st.stop()
step = right.select_slider("Step", steps, value=steps[-1], key=f"samples_step::{run_id}") \
    if len(steps) > 1 else steps[0]
dump, error = cached.step_dump(run_id, sel.uri, int(step))
if error:
    st.warning(f"**{sel.labels[run_id]}**, step {step}: {error}. Choose another step.")
    st.stop()

st.subheader(f"Groups at step {step}")
groups = compare.group_table(dump)
st.dataframe(groups, width="stretch", hide_index=True, column_config={
    "base_reward_std": st.column_config.NumberColumn("base reward std", format="%.3f"),
    "shaped_reward_std": st.column_config.NumberColumn("shaped reward std", format="%.3f"),
})

st.subheader("Completions")
chosen = st.multiselect("Groups", groups["group"].tolist(), default=groups["group"].tolist(),
                        key=f"samples_groups::{run_id}::{step}")
table = compare.samples_table(dump[dump["group"].isin(chosen)])
scores = compare.score_columns(table)  # the built-ins' and a plug-in method's own
st.dataframe(table, width="stretch", hide_index=True, height=520, column_config={
    "correct": st.column_config.CheckboxColumn("correct"),
    **{c: st.column_config.NumberColumn(c, format="%.3f") for c in
       ("base_reward", "shaped_reward", "advantage", *scores)},
    "completion": st.column_config.TextColumn("completion", width="large"),
    "prompt": st.column_config.TextColumn("prompt", width="medium"),
})
st.caption("Method score: " + (", ".join(f"`{c}`" for c in scores) if scores else
                               "none (this method has no per-completion score)")
           + ". G2RL: ν (nu) and its min-max normalisation within the group ν̄ (nu_bar); EVOL-RL: novelty.")

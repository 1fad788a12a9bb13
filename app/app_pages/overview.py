"""Overview: the runs of the experiment as a table, and what differs between their configs."""

import pandas as pd
import streamlit as st
from sidebar import selection

from analysis import compare

FINAL_METRICS = ["train/reward", "train/shaped_reward", "train/entropy", "geometry/grad_cos_mean", "geometry/neg_frac",
                 "geometry/sem_cos_mean"]

st.title("Overview")
sel = selection()
runs = sel.runs
evals = compare.eval_keys(runs)
headline_eval = evals.loc[evals["k"] == 1, "key"].tolist()  # pass@1 and maj@1 of each benchmark

left, mid, right, last = st.columns(4)
left.metric("Runs", len(runs))
mid.metric("Methods", runs["method"].nunique())
right.metric("Seeds", runs["seed"].nunique())
last.metric("Steps (longest run)", int(runs["last_step"].max()))

st.subheader("Runs")
st.caption("Last logged value of each metric. Eval columns are `eval/<benchmark>/<kind>_at_<k>` (pass@k, maj@k).")
table = compare.overview_table(runs, FINAL_METRICS + [k for k in headline_eval if "/pass_at_" in k])
st.dataframe(table, width="stretch", column_config={
    key: st.column_config.NumberColumn(key, format="%.3f") for key in table.columns if "/" in key
})

st.subheader("What differs between their configs")
diff = compare.config_differences(runs)
n_params = sum(c.startswith("param.") for c in runs.columns)
if diff.empty:
    st.success(f"All {n_params} recorded config values are the same across the selected runs.")
else:
    st.caption(f"{len(diff)} of {n_params} recorded config values differ; the rest are identical.")
    st.dataframe(diff.astype(str), width="stretch")

with st.expander("Full config of one run"):
    run_id = st.selectbox("Run", sel.run_ids, format_func=sel.labels.get, key="overview_config_run")
    row = runs.set_index("run_id").loc[run_id]
    params = {c.removeprefix("param."): row[c] for c in runs.columns if c.startswith("param.") and pd.notna(row[c])}
    st.dataframe({"param": list(params), "value": [str(v) for v in params.values()]}, width="stretch",
                 hide_index=True)

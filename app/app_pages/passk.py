"""pass@k: pass@k and maj@k against k at the first and last evaluation (or one evaluation step; over all
problems or one problem level), the headline metrics over training, the paper's table."""

import cached
import charts
import streamlit as st
from sidebar import selection

from analysis import compare, loaders, records, report

KINDS = {"pass": "pass@k (unbiased)", "maj": "maj@k (majority vote)"}
ALL_PROBLEMS = "all problems"

st.title("pass@k")
sel = selection()
keys = compare.eval_keys(sel.runs)
if keys.empty:
    st.info("The selected runs logged no evaluation yet. Runs evaluate at the end (`eval.final`) and every "
            "`eval.every` steps, e.g. `workbench run --method g2rl --set eval.every=50`.")
    st.stop()

evals = cached.histories(sel.runs, keys["key"].tolist(), sel.uri).merge(keys, on="key")
benchmarks = sorted(evals["benchmark"].unique())

st.subheader("pass@k against k")
level_keys = compare.level_eval_keys(sel.runs)
left, middle, right = st.columns([2, 1, 1])
steps = sorted(evals["step"].unique())
FIRST_AND_LAST, LAST = "first and last of each run", "last of each run"
at = left.select_slider("Evaluation step", options=[FIRST_AND_LAST, LAST, *steps], value=FIRST_AND_LAST,
                        key="passk_step")
kind = right.radio("Metric", list(KINDS), format_func=KINDS.get, horizontal=True, key="passk_kind")
problems = ALL_PROBLEMS
if not level_keys.empty:  # the runs logged metrics per problem level (countdown: the fewest steps)
    levels = [f"level {lv}" for lv in sorted(level_keys["level"].unique())]
    problems = middle.selectbox("Problems", [ALL_PROBLEMS, *levels], key="passk_level")
shown = evals
if problems != ALL_PROBLEMS:
    keys = level_keys[level_keys["level"] == int(problems.removeprefix("level "))]
    shown = cached.histories(sel.runs, keys["key"].tolist(), sel.uri).merge(keys, on="key")
if at == FIRST_AND_LAST:
    st.caption("Solid: each run's last evaluation; dashed: its first, as the study report draws them.")
first = shown[shown["step"] == shown.groupby("run_id")["step"].transform("min")]
if at in (FIRST_AND_LAST, LAST):
    chosen = shown[shown["step"] == shown.groupby("run_id")["step"].transform("max")]
else:
    chosen = shown[shown["step"] == at]
    absent = sorted(set(sel.labels[sel.run_ids]) - set(chosen["label"]))
    if absent:
        st.caption("No evaluation at this step for: " + ", ".join(absent))
drawn = benchmarks if problems == ALL_PROBLEMS else sorted(shown["benchmark"].unique())  # those with the level
for row in range(0, len(drawn), 3):
    for column, benchmark in zip(st.columns(3), drawn[row : row + 3]):
        part = chosen[(chosen["benchmark"] == benchmark) & (chosen["kind"] == kind)].drop(columns="step")
        title = benchmark if problems == ALL_PROBLEMS else f"{benchmark}, {problems}"
        fig = charts.over_steps(part, x="k", series=sel.series, band=sel.band, title=title,
                                y_title=KINDS[kind].split()[0])
        if at == FIRST_AND_LAST:  # the start dashed behind the end, as the study report draws them
            start = first[(first["benchmark"] == benchmark) & (first["kind"] == kind)].drop(columns="step")
            fig = charts.with_start(fig, charts.over_steps(start, x="k", series=sel.series, band=sel.band,
                                                           title=title))
        column.plotly_chart(fig, key=f"passk-k-{benchmark}")

st.subheader("Over training steps")
st.caption("Held-out evaluations are drawn as measured, never smoothed: the sidebar's smoothing applies to "
           "per-step training curves only.")
benchmark = st.selectbox("Benchmark", benchmarks, key="passk_benchmark")
bench = evals[evals["benchmark"] == benchmark]
n = int(bench.loc[bench["kind"] == "pass", "k"].max())
for column, (kind_, k, title) in zip(st.columns(3), [("pass", 1, "pass@1"),
                                                     ("maj", n, f"maj@{n}"), ("pass", n, f"pass@{n}")]):
    part = bench[(bench["kind"] == kind_) & (bench["k"] == k)]
    column.plotly_chart(charts.over_steps(part, series=sel.series, band=sel.band, title=title),
                        key=f"passk-steps-{kind_}-{k}")
distinct = records.distinct_key(benchmark)
if f"metric.{distinct}" in sel.runs:  # the task writes canonical solutions (countdown)
    part = cached.histories(sel.runs, [distinct], sel.uri)
    st.plotly_chart(charts.over_steps(part, series=sel.series, band=sel.band,
                                      title="distinct correct solutions per problem"), key="passk-steps-distinct")

st.subheader("Table in the paper's shape")
table = report.report_table(sel.experiment, sel.uri, band=sel.band, runs=sel.runs)
st.caption(f"Each finished run's last evaluation, in percent: {report.describe_spread(sel.band)} (the sidebar's "
           "band; only the mean for one seed). The paper's Table 1 (Qwen3-4B-Base, AIME25 pass@1 / maj@16 / "
           "pass@16): GRPO 10.0 / 16.2 / 32.5, entropy 16.1 / 24.4 / 41.5, EVOL-RL 17.5 / 23.9 / 39.8, "
           "G2RL 20.1 / 29.0 / 45.0.")
notes = table.attrs["notes"]
table.attrs = {}  # the numbers behind it stay out of what the browser receives
st.dataframe(table, width="stretch")
if notes:
    st.caption("\n".join(f"- {note}" for note in notes))

with st.expander("Per-problem results of one run (from its eval artifact)"):
    run_id = st.selectbox("Run", sel.run_ids, format_func=sel.labels.get, key="passk_problem_run")
    run = sel.runs.set_index("run_id").loc[run_id]
    eval_steps, error = cached.artifact_steps(run_id, sel.uri, loaders.EVAL_DIR, cached.stamp_of(run))
    if error or not eval_steps:
        st.warning(f"No readable eval artifacts for {sel.labels[run_id]}" + (f" ({error})" if error else "."))
    else:
        step = st.select_slider("Step", eval_steps, value=eval_steps[-1], key="passk_problem_step")
        frame, error = cached.step_dump(run_id, sel.uri, step, loaders.EVAL_DIR)
        if error:
            st.warning(f"{sel.labels[run_id]}, step {step}: {error}")
        else:
            st.dataframe(compare.problem_table(frame), width="stretch", hide_index=True)

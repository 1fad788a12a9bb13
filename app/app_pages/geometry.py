"""Exploration geometry: how the completions of a group point, in gradient space and in meaning (DESIGN 4).

Histograms, fractions and dispersion come from each run's pair summaries (``summary/pairs.parquet``,
:mod:`analysis.summary`: one small artifact per run, every step with geometry). A run recorded before
summaries existed (and a probe) is summarised from up to ``MAX_DUMP_STEPS`` of its feature dumps, with a
notice for training runs. The summaries hold the fractions on a grid of τ (0, 0.05, ..., 1), so the τ
slider moves on that grid: no interpolation. Feature dumps are otherwise read only to map one group,
once that section is switched on.
"""

import cached
import charts
import pandas as pd
import streamlit as st
from sidebar import selection

from analysis import compare, loaders, records, summary
from analysis.records import SUMMARY_TAUS

MAX_DUMP_STEPS = 40  # dump steps read per run without summaries, evenly spaced: bounds the first load of long runs
TAU_STEP = SUMMARY_TAUS[1] - SUMMARY_TAUS[0]
FRACTIONS = {
    "neg_frac": "Negative: g < 0 (the paper's ratio)",
    "orth_frac": "Orthogonal: |g| ≤ τ",
    "opp_frac": "Opposing: g < −τ",
    "aligned_frac": "Aligned: g > τ",
}
PAIR_TYPES = {"all": "all pairs", "correct_correct": "correct–correct", "correct_incorrect": "correct–incorrect",
              "incorrect_incorrect": "incorrect–incorrect"}

SOURCES = {"training": "training rollouts", "probes": "probes (evaluation samples of a checkpoint)"}

st.title("Exploration geometry")
sel = selection()
source = st.radio("Samples", list(SOURCES), format_func=SOURCES.get, horizontal=True, key="geometry_source",
                  help="Training rollouts: the groups each run sampled while training. Probes: n samples per "
                       "benchmark problem from a checkpoint (`workbench probe`), as the paper's Figure 3 measures.")
probes = loaders.is_probe(sel.runs)
runs = sel.runs[probes if source == "probes" else ~probes]
if runs.empty:
    st.info("No probe among the selected runs. Probe a run's final checkpoint with `workbench probe RUN_ID` "
            "(or `workbench sweep ... --probe task`)." if source == "probes" else
            "Only probes are selected; choose *probes* above, or select training runs in the sidebar.")
    st.stop()
st.caption("Within each group (the completions of one prompt), every pair's cosine g of the gradient features Φ "
           "and cosine of the text embeddings, from each run's pair summaries "
           f"(`{records.SUMMARY_PATH}`: per step, "
           "histograms and fractions of its pairs)"
           + (": each probe's samples at its checkpoint's step." if source == "probes" else "."))

# ---- read the summaries (a run recorded without them: its dumps); a run without either gets a notice
loaded, notices = [], []
for _, run in runs.iterrows():
    label = sel.labels[run["run_id"]]
    with st.spinner(f"Reading {label} ..."):
        got = cached.run_summaries(run["run_id"], sel.uri, cached.stamp_of(run), MAX_DUMP_STEPS)
    if got.summary_error:
        notices.append(f"**{label}**: its pair summaries cannot be read ({got.summary_error}); "
                       f"read from up to {MAX_DUMP_STEPS} of its feature dumps instead.")
    elif got.source == "dumps" and source == "training":
        notices.append(f"**{label}**: no pair summaries (recorded before `{records.SUMMARY_PATH}` existed); read "
                       f"from up to {MAX_DUMP_STEPS} of its feature dumps, evenly spaced.")
    if got.error:
        notices.append(f"**{label}**: its feature dumps cannot be read ({got.error}).")
    elif got.frame.empty:
        notices.append(f"**{label}**: no pair summaries and no feature dumps (it ran with `features.geometry=false`, "
                       "or has not recorded geometry yet).")
    if got.source == "summary" and not got.frame.empty \
            and (reached := int(got.frame["step"].max())) < int(run["last_step"]):
        notices.append(f"**{label}**: pair summaries reach step {reached} of {int(run['last_step'])} (they are "
                       "written at checkpoints and at the end of training).")
    if got.invalid_steps:
        notices.append(f"**{label}**: dump of step {', '.join(map(str, got.invalid_steps))} is truncated "
                       "or corrupt (an interrupted write?) and was skipped.")
    if not got.frame.empty:
        loaded.append(got.frame)
for notice in notices:
    st.warning(notice, icon=":material/warning:")
if not loaded:
    st.info("None of the selected runs has readable geometry. Runs record it every step with `features.geometry=true` "
            "(the default).")
    st.stop()
rows = compare.attach_runs(pd.concat(loaded, ignore_index=True), runs)

tau_param = pd.to_numeric(runs.get("param.features.tau"), errors="coerce")
tau_logged = float(tau_param.dropna().iloc[0]) if tau_param is not None and tau_param.notna().any() else 0.1
tau_default = SUMMARY_TAUS[summary.tau_index(min(max(tau_logged, 0.0), 1.0))]
left, right = st.columns(2)
tau = left.slider("τ, the orthogonality threshold", 0.0, 1.0, tau_default, TAU_STEP, key="tau",
                  help="|g| ≤ τ counts as orthogonal, g < −τ as opposing, g > τ as aligned. The runs logged their "
                       f"geometry/* metrics at τ = {tau_logged:g}; the summaries hold the fractions at τ = 0, "
                       f"{TAU_STEP:g}, ..., 1, so τ moves in steps of {TAU_STEP:g} (no interpolation).")
tau = SUMMARY_TAUS[summary.tau_index(tau)]  # the slider's float steps, snapped onto the grid
all_steps = sorted(rows["step"].unique())
first, last = (all_steps[0], all_steps[-1]) if len(all_steps) > 1 else (all_steps[0], all_steps[0])
lo, hi = right.select_slider("Steps", all_steps, value=(first, last), key="geometry_steps") \
    if len(all_steps) > 1 else (first, last)
rows = rows[rows["step"].between(lo, hi)]

# ---- the paper's Figure 3: distributions of the pairwise cosines
st.subheader("Pairwise cosines within groups")
pair_type = st.radio("Pairs", list(PAIR_TYPES), format_func=PAIR_TYPES.get, horizontal=True, key="pair_type")
by = ["method"] if sel.series == "method" else [sel.series, "method", "seed"]  # method and seed: the colours
grad_col, sem_col = st.columns(2)
grad_hist = summary.pooled_histogram(rows, "grad_hist", by, pair_type)
grad_col.plotly_chart(charts.histograms(grad_hist, series=sel.series, title="Gradient cosines g",
                                        x_title="cosine of Φ_i, Φ_j", vlines=(-tau, tau)), key="geo-hist-grad")
sem_hist = summary.pooled_histogram(rows, "sem_hist", by, pair_type)
if not sem_hist.empty:
    sem_col.plotly_chart(charts.histograms(sem_hist, series=sel.series, title="Semantic cosines",
                                           x_title="cosine of text embeddings"), key="geo-hist-sem")
else:
    sem_col.info("No text embeddings recorded for these runs.")
stats = summary.pooled_stats(rows, tau, by=[sel.series], pair_type=pair_type)
st.caption(f"Over the pairs above, at τ = {tau:g}. The paper (AIME25, 8 samples per problem): mean g GRPO 0.208, "
           "G2RL 0.064; share of g < 0 GRPO 5.9 %, EVOL-RL 18.9 %, G2RL 28.1 %; "
           "semantic cosine GRPO 0.738, G2RL 0.769.")
st.dataframe(stats.set_index(sel.series), width="stretch", column_config={
    "grad_cos_mean": st.column_config.NumberColumn("mean g", format="%.3f"),
    **{name: st.column_config.NumberColumn(name, format="percent") for name in FRACTIONS},
    "sem_cos_mean": st.column_config.NumberColumn("mean semantic cosine", format="%.3f"),
})

# ---- direction fractions over steps, at the chosen tau
st.subheader(f"Direction fractions over steps (τ = {tau:g})")
fractions = compare.attach_runs(summary.fractions_by_step(rows, tau, by=["run_id"]), runs)
for row in range(0, len(FRACTIONS), 2):
    for column, name in zip(st.columns(2), list(FRACTIONS)[row : row + 2]):
        fig = charts.over_steps(fractions.rename(columns={name: "value"}), series=sel.series, band=sel.band,
                                title=FRACTIONS[name], y_title="share of pairs", smoothing=sel.smoothing)
        column.plotly_chart(fig, key=f"geo-frac-{name}")

# ---- gradient against semantic dispersion
st.subheader("Gradient against semantic dispersion")
st.caption("One point per run and step: 1 − mean cosine of each kind. G2RL's claim: more spread in gradient "
           "directions (up) without losing semantic coherence (not far right).")
dispersion = compare.attach_runs(summary.dispersion_by_step(rows, by=["run_id"]), runs)
st.plotly_chart(charts.scatter(dispersion, x="sem_dispersion", y="grad_dispersion", series=sel.series,
                               title="Dispersion per step", x_title="semantic dispersion",
                               y_title="gradient dispersion", hover=["label", "step", "pairs"]), key="geo-scatter")

# ---- one group's completions in 2-D, in both spaces (the paper's Figure 1, from real data): one dump, on demand
st.subheader("One group's completions, mapped")
if not st.toggle("Map one group's completions", key="map_open",
                 help=f"Reads the chosen step's feature dump (`{records.FEATURES_DIR}/step_*.parquet`) of one run."):
    st.caption("Switch on to place one group's completions by PCA of their gradient features and text embeddings.")
    st.stop()
run_col, step_col, group_col = st.columns(3)
run_id = run_col.selectbox("Run", rows["run_id"].unique().tolist(), format_func=sel.labels.get, key="map_run")
run = runs.set_index("run_id").loc[run_id]
dump_steps, error = cached.artifact_steps(run_id, sel.uri, loaders.DUMP_DIR, cached.stamp_of(run))
run_steps = [s for s in dump_steps if lo <= s <= hi]
if error or not run_steps:
    st.info(f"{sel.labels[run_id]} has no feature dump between steps {lo} and {hi}"
            + (f" ({error})." if error else " (it dumps every `features.dump_every` steps)."))
    st.stop()
step = step_col.select_slider("Step", run_steps, value=run_steps[-1], key=f"map_step::{run_id}") \
    if len(run_steps) > 1 else run_steps[0]
dump, error = cached.step_dump(run_id, sel.uri, int(step))
if error:
    st.warning(f"{sel.labels[run_id]}, step {step}: {error}")
    st.stop()
groups = compare.group_table(dump)
group = group_col.selectbox(
    "Group", groups["group"].tolist(), key=f"map_group::{run_id}::{step}",
    format_func=lambda g: f"{g}: {groups.set_index('group').at[g, 'correct']}/"
                          f"{groups.set_index('group').at[g, 'completions']} correct",
)
st.caption(f"Prompt: {groups.set_index('group').at[group, 'prompt']}. Each point is a completion (its sample "
           "number), placed by PCA of the unit vectors; hover for its answer, rewards and the method's score.")
maps = compare.group_maps(dump, group)
left, right = st.columns(2)
for column, space in zip((left, right), ("gradient feature", "text embedding")):
    if not maps.empty and (maps["space"] == space).any():
        column.plotly_chart(charts.group_map(maps, space), key=f"geo-map-{space}")
    else:
        column.info(f"No {space}s recorded for this run.")

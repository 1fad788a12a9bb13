"""The Streamlit app through ``streamlit.testing.v1.AppTest``, against a synthetic store (tests/app_store.py).

Every page must run without an exception and draw its charts and tables; the
sidebar's choices (experiment, runs, grouping by method) and the tau slider
must change what is drawn; damaged runs get notices; an empty store says how
to make a first run. A few checks of :mod:`analysis.compare` sit at the end.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from app_store import CORRUPT, NO_DUMPS, NO_SUMMARY, add_probes, build_store, session_store
from pair_reference import dispersion_per_step, fractions_per_step

from analysis import compare, loaders, records, summary
from analysis.passk import mean_ci_over_seeds
from analysis.smoothing import ema

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TIMEOUT = 60  # seconds per script run: a cold read of every dump on 2 slow cores takes a few
PAGES = {  # page file -> (title, plotly charts at least, dataframes at least)
    "app_pages/overview.py": ("Overview", 0, 2),
    "app_pages/passk.py": ("pass@k", 5, 1),
    "app_pages/dynamics.py": ("Training dynamics", 11, 0),  # 8 + the regime's three group shares
    "app_pages/geometry.py": ("Exploration geometry", 7, 1),  # the group maps are drawn once switched on
    "app_pages/samples.py": ("Samples", 0, 2),
}


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> str:
    return session_store(tmp_path_factory)


@pytest.fixture
def app(store_uri, monkeypatch):
    """A fresh session of the app pointed at the synthetic store by MLFLOW_TRACKING_URI (the sidebar's default)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def open_page(at, page: str):
    at.run()
    if page != "app_pages/overview.py":
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at) -> list[dict]:
    """The plotly figures on the page, as dicts."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def chart(at, title: str) -> dict:
    found = [c for c in charts(at) if c["layout"].get("title", {}).get("text") == title]
    assert found, f"no chart titled {title!r}; titles: {[c['layout'].get('title', {}).get('text') for c in charts(at)]}"
    return found[0]


def line_names(fig: dict) -> set[str]:
    """The names of the lines drawn, without their bands and the faint raw lines behind smoothed ones."""
    return {t["name"] for t in fig["data"] if not t["name"].endswith((" band", " (raw)"))}


def trace(fig: dict, name: str) -> dict:
    return next(t for t in fig["data"] if t["name"] == name)


def values(v) -> np.ndarray:
    """A trace's x or y: a list, or plotly's typed-array encoding {"dtype", "bdata"[, "shape"]}."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v)


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def label(method: str, seed: int) -> str:
    return f"{method} · seed {seed}"


# --------------------------------------------------------------------------- every page


@pytest.mark.parametrize("page", list(PAGES))
def test_page_opens_with_its_charts_and_tables(app, page):
    title, n_charts, n_tables = PAGES[page]
    at = open_page(app, page)
    assert at.title[0].value == title
    assert len(at.get("plotly_chart")) >= n_charts
    assert len(at.dataframe) >= n_tables
    assert not at.error


def test_overview_lists_runs_and_what_differs(app):
    at = open_page(app, "app_pages/overview.py")
    runs = at.dataframe[0].value
    assert len(runs) == 8  # the grid's cells; their sweep's parent run is no row
    assert set(runs["method"]) == {"grpo", "entropy", "evol_rl", "g2rl"}
    assert {"seed", "preset", "task", "steps", "status", "train/reward", "geometry/neg_frac"} <= set(runs.columns)
    assert (runs["steps"] == 20).all() and "KILLED" in set(runs["status"])
    diff = at.dataframe[1].value
    assert {"method", "seed", "entropy.coef", "features.dump_every"} <= set(diff.index)
    assert "training.learning_rate" not in diff.index  # the same everywhere


# --------------------------------------------------------------------------- sidebar


def test_sidebar_defaults_to_the_store_and_its_workbench_experiment(app, store_uri):
    at = open_page(app, "app_pages/overview.py")
    assert at.sidebar.text_input(key="uri").value == store_uri
    assert at.sidebar.selectbox(key="experiment").value == "workbench"
    assert set(at.sidebar.selectbox(key="experiment").options) == {"workbench", "scratch"}
    assert len(at.sidebar.multiselect[0].value) == 8


def test_choosing_another_experiment_shows_its_runs(app):
    at = open_page(app, "app_pages/overview.py")
    at.sidebar.selectbox(key="experiment").set_value("scratch").run()
    assert not at.exception
    assert list(at.dataframe[0].value["method"]) == ["g2rl"]
    at.switch_page("app_pages/passk.py").run()  # the scratch run has no evaluation: a hint, not an error
    assert not at.exception
    assert "logged no evaluation" in texts(at.info)


def test_run_selection_and_grouping_change_the_lines(app, store_uri):
    at = open_page(app, "app_pages/dynamics.py")
    assert line_names(chart(at, "Verifier reward (share correct)")) == {"grpo", "entropy", "evol_rl", "g2rl"}
    runs = loaders.runs_table("workbench", store_uri)
    g2rl = runs.loc[runs["method"] == "g2rl", "run_id"].tolist()
    at.sidebar.multiselect[0].set_value(g2rl).run()
    assert not at.exception
    assert line_names(chart(at, "Verifier reward (share correct)")) == {"g2rl"}
    at.sidebar.toggle(key="group_by_method").set_value(False).run()
    assert not at.exception
    assert line_names(chart(at, "Verifier reward (share correct)")) == {"g2rl · seed 0", "g2rl · seed 1"}


def test_band_choice_changes_the_band(app):
    at = open_page(app, "app_pages/dynamics.py")

    def band_width():
        band = next(t for t in chart(at, "Policy entropy (nats per token)")["data"] if t["name"] == "g2rl band")
        y = values(band["y"]).astype(float)
        half = len(y) // 2
        return float(np.mean(y[:half] - y[half:][::-1]))

    min_max = band_width()
    at.sidebar.selectbox(key="band").set_value("ci95").run()
    assert not at.exception
    assert band_width() > min_max  # two seeds: the t-interval (t = 12.7) is wider than their range


def test_smoothing_draws_each_runs_ema_over_the_faint_raw_curve(app, store_uri):
    at = open_page(app, "app_pages/dynamics.py")
    at.sidebar.toggle(key="group_by_method").set_value(False).run()
    runs = loaders.runs_table("workbench", store_uri)
    run_id = runs.loc[(runs["method"] == "g2rl") & (runs["seed"] == 0), "run_id"].item()
    logged = loaders.metric_history(run_id, "train/entropy", store_uri)
    name = label("g2rl", 0)

    def drawn():
        fig = chart(at, "Policy entropy (nats per token)")
        return fig, values(trace(fig, name)["y"]).astype(float)

    fig, smoothed = drawn()
    assert at.sidebar.slider(key="smoothing").value == 0.6
    np.testing.assert_allclose(smoothed, ema(logged["value"].to_numpy(), 0.6))
    raw = trace(fig, f"{name} (raw)")
    np.testing.assert_allclose(values(raw["y"]).astype(float), logged["value"])
    assert "rgba" in raw["line"]["color"] and not raw["showlegend"]  # faint, and not a legend entry of its own
    at.sidebar.slider(key="smoothing").set_value(0.0).run()
    assert not at.exception
    fig, shown = drawn()
    np.testing.assert_allclose(shown, logged["value"])  # 0: off, the raw curve alone
    assert not any(t["name"].endswith(" (raw)") for t in fig["data"])


def test_no_run_selected_says_so(app):
    at = open_page(app, "app_pages/geometry.py")
    at.sidebar.multiselect[0].set_value([]).run()
    assert not at.exception
    assert "No run selected" in texts(at.info)


# --------------------------------------------------------------------------- geometry


def test_geometry_notices_damaged_runs_and_draws_the_rest(app):
    at = open_page(app, "app_pages/geometry.py")
    warnings = texts(at.warning)
    assert f"{label(*NO_DUMPS)}**: no pair summaries and no feature dumps" in warnings
    assert f"{label(*NO_SUMMARY)}**: no pair summaries (recorded before" in warnings  # read from its dumps
    assert f"{label(*CORRUPT[:2])}**: dump of step {CORRUPT[2]} is truncated or corrupt" in warnings
    assert line_names(chart(at, "Gradient cosines g")) == {"grpo", "entropy", "evol_rl", "g2rl"}
    assert not any("PCA" in c["layout"]["title"]["text"] for c in charts(at))  # no group mapped until asked
    at.toggle(key="map_open").set_value(True).run()
    assert not at.exception
    maps = [c for c in charts(at) if "PCA" in c["layout"]["title"]["text"]]
    assert len(maps) == 2  # gradient features beside text embeddings
    assert {t["name"] for m in maps for t in m["data"]} <= {"correct", "incorrect"}


def test_geometry_draws_from_the_summaries_without_reading_a_dump(store_uri, monkeypatch):
    """Every run with a summary artifact draws from it alone: a dump read fails, and only the old run needs one."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    read = loaders._read_parquet_artifact
    dump_reads = []

    def no_dumps(repository, path):
        if path.startswith(f"{records.FEATURES_DIR}/"):
            dump_reads.append(repository.artifact_uri)
            raise OSError(f"dump read refused: {path}")
        return read(repository, path)

    monkeypatch.setattr(loaders, "_read_parquet_artifact", no_dumps)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    st.cache_data.clear()  # nothing read by an earlier test
    at = open_page(AppTest.from_file(APP, default_timeout=TIMEOUT), "app_pages/geometry.py")
    runs = loaders.runs_table("workbench", store_uri)
    old = runs.loc[(runs["method"] == NO_SUMMARY[0]) & (runs["seed"] == NO_SUMMARY[1]), "run_id"].item()
    assert dump_reads and all(old in uri for uri in dump_reads)  # the run without summaries, and no other
    assert f"{label(*NO_SUMMARY)}**: its feature dumps cannot be read (OSError: dump read refused" in texts(at.warning)
    assert line_names(chart(at, "Gradient cosines g")) == {"grpo", "entropy", "evol_rl", "g2rl"}
    assert line_names(chart(at, "Semantic cosines")) == {"grpo", "entropy", "evol_rl", "g2rl"}
    assert set(at.dataframe[0].value.index) == {"grpo", "entropy", "evol_rl", "g2rl"}
    assert len(at.get("plotly_chart")) == 7
    st.cache_data.clear()  # the refused reads are not left cached for later tests


def test_histograms_are_the_pooled_summary_counts(app, store_uri):
    """Per method, the drawn densities are the summaries' histogram counts of its runs and steps, added."""
    at = open_page(app, "app_pages/geometry.py")
    at.radio(key="pair_type").set_value("correct_incorrect").run()
    assert not at.exception
    runs = loaders.runs_table("workbench", store_uri)
    run_id = runs.loc[(runs["method"] == "grpo") & (runs["seed"] == 0), "run_id"].item()  # grpo's one run with them
    rows = loaders.load_summaries(run_id, store_uri)
    counts = rows.loc[rows["pair_type"] == "correct_incorrect", summary.flat_columns("grad_hist")].to_numpy().sum(0)
    width = summary.HIST_EDGES[1] - summary.HIST_EDGES[0]
    drawn = trace(chart(at, "Gradient cosines g"), "grpo")
    np.testing.assert_allclose(values(drawn["y"]).astype(float), counts / (counts.sum() * width))
    stats = at.dataframe[0].value
    assert stats.loc["grpo", "pairs"] == counts.sum()


def test_tau_slider_recomputes_the_fractions(app):
    at = open_page(app, "app_pages/geometry.py")
    before = at.dataframe[0].value  # the summary beside the histograms, one row per method
    at.slider(key="tau").set_value(0.3).run()
    assert not at.exception
    after = at.dataframe[0].value
    assert (after["orth_frac"] > before["orth_frac"]).all()
    assert (after["opp_frac"] <= before["opp_frac"]).all()
    assert np.allclose(after["neg_frac"], before["neg_frac"])  # g < 0 does not depend on tau
    assert any("τ = 0.3" in h.value for h in at.subheader)
    orth = chart(at, "Orthogonal: |g| ≤ τ")
    g2rl = next(t for t in orth["data"] if t["name"] == "g2rl")
    assert np.mean(values(g2rl["y"])) > 0.5  # most pairs lie within 0.3 of orthogonal


@pytest.mark.parametrize("logged, shown", [(0.7, 0.7), (0.07, 0.05)])
def test_tau_slider_covers_zero_to_one_and_starts_at_the_logged_tau_on_the_grid(tmp_path_factory, monkeypatch,
                                                                                logged, shown):
    """features.tau may be anything in [0, 1]: the page opens at the summaries' grid tau nearest it, 1 can be chosen."""
    from streamlit.testing.v1 import AppTest

    uri = build_store(tmp_path_factory.mktemp("tau-store"), methods=("g2rl",), seeds=(0,), steps=2, eval_steps=(),
                      scratch=False, tau=logged)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    at = open_page(AppTest.from_file(APP, default_timeout=TIMEOUT), "app_pages/geometry.py")
    slider = at.slider(key="tau")
    assert (slider.min, slider.max, slider.value, slider.step) == (0.0, 1.0, shown, 0.05)
    assert f"τ = {logged:g}" in slider.help  # the logged tau is named beside the grid
    assert any(f"τ = {shown:g})" in h.value for h in at.subheader)
    slider.set_value(1.0).run()
    assert not at.exception
    assert at.dataframe[0].value.loc["g2rl", "orth_frac"] == 1.0  # every |g| <= 1


def test_group_map_follows_the_chosen_run_step_and_group(app, store_uri):
    at = open_page(app, "app_pages/geometry.py")
    runs = loaders.runs_table("workbench", store_uri)
    g2rl0 = runs.loc[(runs["method"] == "g2rl") & (runs["seed"] == 0), "run_id"].item()
    at.toggle(key="map_open").set_value(True).run()
    at.selectbox(key="map_run").set_value(g2rl0).run()
    at.select_slider(key=f"map_step::{g2rl0}").set_value(2).run()
    at.selectbox(key=f"map_group::{g2rl0}::2").set_value(3).run()
    assert not at.exception
    grad_map = chart(at, "gradient features (PCA of unit vectors)")
    assert sum(len(values(t["x"])) for t in grad_map["data"]) == 8  # the group's eight completions
    assert any("to make" in c.value for c in at.caption)  # the group's countdown prompt


@pytest.fixture(scope="module")
def probe_store(tmp_path_factory) -> str:
    """A small store of its own: grpo and g2rl, two seeds, 4 steps, and a probe of each finished run."""
    uri = build_store(tmp_path_factory.mktemp("probe-store"), methods=("grpo", "g2rl"), steps=4, eval_steps=(4,),
                      problems=4, scratch=False)
    add_probes(uri, step=4)
    return uri


def test_geometry_shows_probes_or_training_rollouts(probe_store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MLFLOW_TRACKING_URI", probe_store)
    at = open_page(AppTest.from_file(APP, default_timeout=TIMEOUT), "app_pages/geometry.py")
    assert at.radio(key="geometry_source").value == "training"
    training = at.dataframe[0].value
    at.radio(key="geometry_source").set_value("probes").run()
    assert not at.exception
    assert line_names(chart(at, "Gradient cosines g")) == {"grpo", "g2rl"}  # grouped by method as for training
    shown = at.dataframe[0].value
    runs = loaders.runs_table("workbench", probe_store)
    probes = runs[loaders.is_probe(runs)]
    assert set(probes["method"]) == {"grpo", "g2rl"} and len(probes) == 3  # g2rl seed 1 was KILLED: not probed
    for method, part in probes.groupby("method"):  # equal pair counts per probe: the pooled mean is the mean
        logged = part["metric.geometry/grad_cos_mean"].mean()
        assert np.isclose(shown.loc[method, "grad_cos_mean"], logged), method
        assert not np.isclose(shown.loc[method, "grad_cos_mean"], training.loc[method, "grad_cos_mean"]), method
    at.sidebar.multiselect[0].set_value(probes["run_id"].tolist()).run()
    at.radio(key="geometry_source").set_value("training").run()
    assert not at.exception and "Only probes are selected" in texts(at.info)


# --------------------------------------------------------------------------- pass@k


def test_passk_step_and_metric_choice(app):
    at = open_page(app, "app_pages/passk.py")
    table = at.dataframe[0].value
    assert set(table.index) == {"grpo", "entropy", "evol_rl", "g2rl"}
    assert list(table.columns) == ["seeds", "aime25 pass@1", "aime25 maj@8", "aime25 pass@8", "task pass@1",
                                   "task maj@8", "task pass@8", "task distinct correct"]
    assert table.loc["g2rl", "seeds"] == "1"  # seed 1 was KILLED: only finished runs count, and the page says so
    assert "1 KILLED" in texts(at.caption)
    fig = chart(at, "aime25")
    g2rl = next(t for t in fig["data"] if t["name"] == "g2rl")
    assert list(values(g2rl["x"])) == [1, 2, 4, 8] and np.all(np.diff(values(g2rl["y"])) >= 0)  # pass@k rises with k
    start = trace(fig, "g2rl (first evaluation)")  # the default draws the first evaluation dashed behind the last
    assert start["line"]["dash"] == "dash" and list(values(start["x"])) == [1, 2, 4, 8]
    assert not np.allclose(values(start["y"]), values(g2rl["y"]))
    at.select_slider(key="passk_step").set_value(10).run()
    assert not any(t["name"].endswith("(first evaluation)") for t in chart(at, "aime25")["data"])
    at.radio(key="passk_kind").set_value("maj").run()
    assert not at.exception
    assert chart(at, "aime25")["layout"]["yaxis"]["title"]["text"] == "maj@k"
    at.selectbox(key="passk_benchmark").set_value("task").run()
    assert not at.exception
    assert {"pass@1", "maj@8", "pass@8", "distinct correct solutions per problem"} <= {
        c["layout"]["title"]["text"] for c in charts(at)}


def test_passk_over_steps_draws_the_evaluations_unsmoothed_whatever_the_slider(app, store_uri):
    at = open_page(app, "app_pages/passk.py")
    at.sidebar.toggle(key="group_by_method").set_value(False).run()
    at.sidebar.slider(key="smoothing").set_value(0.9).run()
    at.selectbox(key="passk_benchmark").set_value("task").run()
    assert not at.exception
    runs = loaders.runs_table("workbench", store_uri)
    run_id = runs.loc[(runs["method"] == "g2rl") & (runs["seed"] == 0), "run_id"].item()
    logged = loaders.metric_history(run_id, records.eval_key("task", "pass", 1), store_uri)
    fig = chart(at, "pass@1")
    assert len(logged) >= 2 and not any(t["name"].endswith(" (raw)") for t in fig["data"])
    np.testing.assert_allclose(values(trace(fig, label("g2rl", 0))["y"]).astype(float), logged["value"])
    assert "never smoothed" in texts(at.caption)


def test_passk_splits_by_problem_level(app, store_uri):
    """The task's problems have levels 2 and 3 (aime25's none): choosing one draws the task's level metrics."""
    at = open_page(app, "app_pages/passk.py")
    assert at.selectbox(key="passk_level").options == ["all problems", "level 2", "level 3"]
    at.selectbox(key="passk_level").set_value("level 3").run()
    assert not at.exception
    titles = [c["layout"].get("title", {}).get("text") for c in charts(at)]
    assert "task, level 3" in titles and "aime25" not in titles and "task" not in titles
    runs = loaders.runs_table("workbench", store_uri)
    key = records.level_eval_key("task", 3, "pass", 1)
    g2rl = next(t for t in chart(at, "task, level 3")["data"] if t["name"] == "g2rl")
    logged = runs.loc[runs["method"] == "g2rl", f"metric.{key}"]  # each run's last evaluation
    assert list(values(g2rl["x"])) == [1, 2, 4, 8] and np.isclose(values(g2rl["y"])[0], logged.mean())
    every = next(t for t in chart(at, "task, level 3")["data"] if t["name"] == "g2rl")
    at.selectbox(key="passk_level").set_value("all problems").run()
    overall = next(t for t in chart(at, "task")["data"] if t["name"] == "g2rl")
    assert not np.allclose(values(overall["y"]), values(every["y"]))


# --------------------------------------------------------------------------- samples


def test_samples_show_scores_and_notices(app, store_uri):
    at = open_page(app, "app_pages/samples.py")
    runs = loaders.runs_table("workbench", store_uri)
    run_of = {(r.method, r.seed): r.run_id for r in runs.itertuples()}
    at.selectbox(key="samples_run").set_value(run_of[("g2rl", 0)]).run()
    assert not at.exception
    table = at.dataframe[1].value
    assert {"group", "sample", "correct", "base_reward", "shaped_reward", "advantage", "nu", "nu_bar"} <= set(
        table.columns)
    assert len(table) == 32 and set(table["base_reward"]) == {-1.0, 1.0}
    at.selectbox(key="samples_run").set_value(run_of[NO_DUMPS]).run()
    assert not at.exception and "no feature dumps" in texts(at.warning)
    corrupt = run_of[CORRUPT[:2]]
    at.selectbox(key="samples_run").set_value(corrupt).run()
    at.select_slider(key=f"samples_step::{corrupt}").set_value(CORRUPT[2]).run()
    assert not at.exception and "truncated or corrupt" in texts(at.warning)


# --------------------------------------------------------------------------- empty or broken store


@pytest.fixture(scope="module")
def empty_uri(tmp_path_factory) -> str:
    """A store with MLflow's tables and its empty Default experiment, no runs (made once: migrations take seconds)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('empty-store') / 'mlruns.db'}"
    assert loaders.runs_table("Default", uri).empty
    return uri


@pytest.mark.parametrize("page", list(PAGES))
def test_empty_store_says_how_to_make_a_first_run(page, empty_uri, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MLFLOW_TRACKING_URI", empty_uri)
    at = open_page(AppTest.from_file(APP, default_timeout=TIMEOUT), page)
    assert "workbench run --method g2rl" in texts(at.info)


def test_unreadable_store_is_an_error_message_not_a_crash(app, tmp_path):
    at = open_page(app, "app_pages/overview.py")
    broken = tmp_path / "mlruns.db"
    broken.write_bytes(b"this is not an SQLite database" * 100)
    at.sidebar.text_input(key="uri").set_value(f"sqlite:///{broken}").run()
    assert not at.exception
    assert "Cannot read the tracking store" in texts(at.error)


# --------------------------------------------------------------------------- analysis.compare


def test_recomputed_fractions_equal_the_logged_metrics(store_uri):
    """At the logged tau, fractions from the dumps equal what the run logged (one function, two paths)."""
    runs = loaders.runs_table("workbench", store_uri)
    run_id = runs.loc[(runs["method"] == "g2rl") & (runs["seed"] == 0), "run_id"].item()
    pairs = compare.dump_pairs(loaders.load_dumps(run_id, store_uri)).assign(run_id=run_id)
    fractions = fractions_per_step(pairs, 0.1).set_index("step")
    for name in ("neg_frac", "orth_frac", "opp_frac", "grad_cos_mean"):
        logged = loaders.metric_history(run_id, f"geometry/{name}", store_uri).set_index("step")["value"]
        assert np.allclose(fractions[name], logged.loc[fractions.index]), name
    dispersion = dispersion_per_step(pairs).set_index("step")
    logged = loaders.metric_history(run_id, "geometry/sem_dispersion", store_uri).set_index("step")["value"]
    assert np.allclose(dispersion["sem_dispersion"], logged.loc[dispersion.index])


def test_summary_fractions_equal_the_logged_metrics_at_every_step(store_uri):
    """The summary artifact covers every step, and at the logged tau its fractions are the logged metrics."""
    runs = loaders.runs_table("workbench", store_uri)
    run_id = runs.loc[(runs["method"] == "g2rl") & (runs["seed"] == 0), "run_id"].item()
    rows = loaders.load_summaries(run_id, store_uri)
    fractions = summary.fractions_by_step(rows, 0.1).set_index("step")
    assert fractions.index.tolist() == list(range(1, 21))
    for name in ("neg_frac", "orth_frac", "opp_frac", "aligned_frac", "grad_cos_mean"):
        logged = loaders.metric_history(run_id, f"geometry/{name}", store_uri).set_index("step")["value"]
        assert np.allclose(fractions[name], logged.loc[fractions.index]), name
    dispersion = summary.dispersion_by_step(rows).set_index("step")
    logged = loaders.metric_history(run_id, "geometry/sem_dispersion", store_uri).set_index("step")["value"]
    assert np.allclose(dispersion["sem_dispersion"], logged.loc[dispersion.index])
    old = runs.loc[(runs["method"] == NO_SUMMARY[0]) & (runs["seed"] == NO_SUMMARY[1]), "run_id"].item()
    assert loaders.load_summaries(old, store_uri) is None


def test_ci_band_is_the_t_interval_over_seeds():
    tidy = pd.DataFrame({"method": ["a"] * 3, "step": [1] * 3, "value": [0.2, 0.5, 0.6]})
    band = compare.band_over_seeds(tidy, band="ci95").iloc[0]
    assert np.allclose([band["mean"], band["lo"], band["hi"]], mean_ci_over_seeds([0.2, 0.5, 0.6]))
    minmax = compare.band_over_seeds(tidy, band="min-max").iloc[0]
    assert (minmax["lo"], minmax["hi"]) == (0.2, 0.6)


def test_evenly_spaced_keeps_the_ends():
    assert compare.evenly_spaced(range(1, 101), 5) == [1, 26, 51, 75, 100]
    assert compare.evenly_spaced([3, 1, 2], 10) == [1, 2, 3]

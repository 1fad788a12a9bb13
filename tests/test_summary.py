"""Pair summaries (analysis.summary): each row equals what analysis.geometry computes from the same vectors,
pooling rows equals pooling their pairs, and the recorders write one artifact that a resumed run extends."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pair_reference import dispersion_per_step, fractions_per_step

from analysis import geometry, summary
from analysis.records import SUMMARY_COLUMNS, SUMMARY_PAIR_TYPES, SUMMARY_PATH, SUMMARY_TAUS, summary_schema


def _step(seed: int, groups: int = 5, m: int = 6, d: int = 12, e: int = 8):
    """Vectors of one step: a shared direction per group (cosines of both signs), a zero row, mixed correctness."""
    rng = np.random.default_rng(seed)
    shared = np.repeat(rng.standard_normal((groups, d)), m, axis=0)  # (N, d)
    grad = 0.6 * shared + rng.standard_normal((groups * m, d))  # (N, d)
    grad[3] = 0.0  # a zero feature: cosine 0 with every row
    emb = rng.standard_normal((groups * m, e))  # (N, e)
    group_ids = np.repeat(np.arange(groups) * 7 + 3, m)  # (N,) any ids
    correct = rng.random(groups * m) < 0.5  # (N,)
    correct[:m] = True  # one group all correct: no correct-incorrect pairs there
    return grad, emb, group_ids, correct


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_summary_row_is_what_geometry_computes_from_the_same_vectors(seed):
    grad, emb, groups, correct = _step(seed)
    rows = {row["pair_type"]: row for row in summary.step_summary(4, grad, emb, groups, correct)}
    pairs = geometry.pairs_frame(grad, emb, groups, correct)
    assert list(rows) == list(SUMMARY_PAIR_TYPES)
    for pair_type, row in rows.items():
        part = pairs if pair_type == "all" else pairs[pairs["pair_type"] == pair_type]
        g, s = part["grad_cos"].to_numpy(), part["sem_cos"].to_numpy()
        assert row["step"] == 4 and row["pairs"] == len(part) > 0
        assert row["grad_hist"] == np.histogram(g, bins=50, range=(-1, 1))[0].tolist()
        assert row["sem_hist"] == np.histogram(s, bins=50, range=(-1, 1))[0].tolist()
        for k, tau in enumerate(SUMMARY_TAUS):
            expected = geometry.direction_fractions(g, tau)
            for name in ("orth_frac", "opp_frac", "aligned_frac"):
                assert row[name][k] == expected[name], (pair_type, tau, name)
        key = "geometry" if pair_type == "all" else f"geometry/{pair_type}"
        for tau in (0.0, 0.1, 0.35, 1.0):  # the logged metrics of the step, at several grid tau
            logged = geometry.geometry_metrics(grad, emb, groups, correct, tau=tau)
            for name in ("orth_frac", "opp_frac", "aligned_frac"):
                assert np.isclose(row[name][SUMMARY_TAUS.index(tau)], logged[f"{key}/{name}"]), (pair_type, tau)
            for name in ("grad_cos_mean", "neg_frac", "sem_cos_mean", "sem_dispersion"):
                assert np.isclose(row[name], logged[f"{key}/{name}"]), (pair_type, name)


def test_the_counts_cover_every_pair_and_a_type_without_pairs_has_no_row():
    grad, emb, groups, _ = _step(3)
    rows = summary.step_summary(1, grad, None, groups, np.ones(len(groups), dtype=bool))  # all correct
    assert [r["pair_type"] for r in rows] == ["all", "correct_correct"]
    for row in rows:
        assert sum(row["grad_hist"]) == row["pairs"] and row["sem_hist"] is None and row["sem_cos_mean"] is None
    row = summary.step_summary(1, np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]), None, np.zeros(3),
                               np.zeros(3, dtype=bool))[0]  # cosines 1, -1, -1
    assert row["grad_hist"][0] == 2 and row["grad_hist"][-1] == 1  # -1 in the first bin, 1 in the last


def test_pooled_rows_equal_the_statistics_of_the_pooled_pairs():
    """Several steps and runs: the summaries' per-step and pooled numbers equal those of the dumps' pairs, step by step."""
    frames, dumps = [], []
    for run_id, seed in (("a", 0), ("b", 1)):
        for step in (1, 2, 3):
            grad, emb, groups, correct = _step(10 * seed + step, groups=3 + step)
            table = summary.summary_table(summary.step_summary(step, grad, emb, groups, correct))
            frames.append(summary.summary_frame(table).assign(run_id=run_id))
            pairs = geometry.pairs_frame(grad, emb, groups, correct)
            dumps.append(pairs.assign(run_id=run_id, step=step, method="m"))
    rows, pairs = pd.concat(frames, ignore_index=True).assign(method="m"), pd.concat(dumps, ignore_index=True)
    for tau in (0.0, 0.15, 0.5):
        got = summary.fractions_by_step(rows, tau).set_index(["run_id", "step"])
        want = fractions_per_step(pairs, tau).set_index(["run_id", "step"])
        pd.testing.assert_frame_equal(got, want[got.columns], check_dtype=False)
        pooled = summary.pooled_stats(rows, tau, by=["method"], pair_type="correct_incorrect").set_index("method")
        part = pairs[pairs["pair_type"] == "correct_incorrect"]
        expected = geometry.direction_fractions(part["grad_cos"].to_numpy(), tau)
        for name, value in expected.items():
            assert np.isclose(pooled.at["m", name], value), (tau, name)
        assert np.isclose(pooled.at["m", "sem_cos_mean"], part["sem_cos"].mean())
        assert pooled.at["m", "pairs"] == len(part)
    disp = summary.dispersion_by_step(rows).set_index(["run_id", "step"])
    want = dispersion_per_step(pairs).set_index(["run_id", "step"])
    pd.testing.assert_frame_equal(disp, want[disp.columns], check_dtype=False)
    hist = summary.pooled_histogram(rows, "grad_hist", by=["method"])
    counts = np.histogram(pairs["grad_cos"], bins=summary.HIST_EDGES)[0]
    assert hist["count"].tolist() == counts.tolist()
    assert np.isclose((hist["density"] * 0.04).sum(), 1.0)


def test_a_summary_without_embeddings_or_with_bad_lists_reads_as_said():
    grad, _, groups, correct = _step(6)
    table = summary.summary_table(summary.step_summary(2, grad, None, groups, correct))
    frame = summary.summary_frame(table)
    assert frame[summary.flat_columns("sem_hist")].isna().all().all() and frame["sem_cos_mean"].isna().all()
    assert summary.pooled_histogram(frame.assign(method="m"), "sem_hist", by=["method"]).empty
    short = table.set_column(table.schema.get_field_index("orth_frac"), "orth_frac",
                             pa.array([[0.5]] * table.num_rows, pa.list_(pa.float64())))
    with pytest.raises(ValueError, match="'orth_frac' has lists of length \\[1\\]; expected 21"):
        summary.summary_frame(short)


def test_tau_snaps_to_the_nearest_grid_value():
    assert [SUMMARY_TAUS[summary.tau_index(t)] for t in (0.0, 0.07, 0.08, 0.1, 0.30000000000000004, 1.0)] == \
        [0.0, 0.05, 0.1, 0.1, 0.3, 1.0]
    with pytest.raises(ValueError, match="tau=1.5 is invalid"):
        summary.tau_index(1.5)


def test_summaries_from_dumps_equal_step_summaries():
    grad, emb, groups, correct = _step(5)
    dump = pd.DataFrame({"step": 7, "group": groups, "correct": correct, "grad_feature": list(grad),
                         "embedding": list(emb)})
    frame = summary.summaries_from_dumps(dump)
    rows = summary.step_summary(7, grad, emb, groups, correct)
    pd.testing.assert_frame_equal(frame, summary.summary_frame(summary.summary_table(rows)))
    scalars = [c for c in SUMMARY_COLUMNS if c not in summary.LIST_LENGTHS]
    assert list(frame.columns) == scalars + [c for name in summary.LIST_LENGTHS for c in summary.flat_columns(name)]
    for row, (_, flat) in zip(rows, frame.iterrows(), strict=True):
        assert flat[summary.flat_columns("orth_frac")].tolist() == row["orth_frac"]
        assert flat[summary.flat_columns("sem_hist")].tolist() == row["sem_hist"]
    assert summary.summaries_from_dumps(pd.DataFrame()).empty


def test_a_resumed_run_keeps_the_earlier_steps_and_replaces_those_trained_again():
    first = summary.PairSummaries()
    for step in (1, 2, 3, 4):
        first.add(step, *_step(step))
    first.add(5, None, None, np.zeros(2), np.zeros(2, dtype=bool))  # no Phi this step: nothing
    written = first.table()
    assert written.schema.equals(summary_schema()) and sorted(set(written["step"].to_pylist())) == [1, 2, 3, 4]
    assert summary.PairSummaries().table() is None  # before the first step: nothing to write
    calls = []
    resumed = summary.PairSummaries(earlier=lambda: calls.append(1) or written)
    resumed.add(3, *_step(30))  # resumed from the checkpoint of step 2: steps 3 and 4 are trained again
    table = resumed.table()
    resumed.add(4, *_step(40))
    table = resumed.table()
    assert calls == [1]  # read once
    steps = table["step"].to_pylist()
    assert sorted(set(steps)) == [1, 2, 3, 4] and steps == sorted(steps)
    again = pd.DataFrame(summary.step_summary(3, *_step(30)))
    got = table.to_pandas()
    assert np.allclose(got.loc[got["step"] == 3, "grad_cos_mean"], again["grad_cos_mean"])
    old = written.to_pandas()
    assert np.allclose(got.loc[got["step"] <= 2, "grad_cos_mean"], old.loc[old["step"] <= 2, "grad_cos_mean"])


def test_the_recorder_writes_one_artifact_at_each_flush_and_a_resume_extends_it(tmp_path):
    from mlflow.tracking import MlflowClient

    from analysis import loaders
    from trainers.method import Shaped, StepBatch
    from trainers.step_record import StepRecord
    from workbench.config import FeaturesConfig
    from trainers.recorder import StepRecorder
    from workbench.tracking import MlflowTracker, experiment_id

    def record(step: int) -> StepRecord:
        grad, emb, groups, correct = _step(step)
        n = len(groups)
        batch = StepBatch(groups=groups, correct=correct, has_answer=np.ones(n, dtype=bool), answers=["1"] * n,
                          features=grad, embeddings=emb, rewards=correct.astype(float))
        return StepRecord(step=step, batch=batch, shaped=Shaped(batch.rewards, batch.rewards),
                          advantages=np.zeros(n), prompts=["p"] * n, prompt_ids=[""] * n, texts=["t"] * n,
                          num_tokens=[1] * n, timed_out=[False] * n)

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(experiment_id(client, "summary")).info.run_id
    recorder = StepRecorder(MlflowTracker(client, run_id), FeaturesConfig(dump_every=2))
    recorder.flush()  # nothing recorded yet: nothing written
    assert loaders.load_summaries(run_id, uri) is None
    for step in (1, 2, 3):
        recorder.record(record(step))
    recorder.flush()
    assert sorted(loaders.load_summaries(run_id, uri)["step"].unique()) == [1, 2, 3]  # every step, not the dumped
    resumed = StepRecorder(MlflowTracker(client, run_id), FeaturesConfig(dump_every=2))  # a new process, same run
    for step in (3, 4):
        resumed.record(record(step))
    resumed.flush()
    rows = loaders.load_summaries(run_id, uri)
    assert sorted(rows["step"].unique()) == [1, 2, 3, 4] and len(rows) == len(rows.drop_duplicates(["step",
                                                                                                     "pair_type"]))
    assert [f.path for f in client.list_artifacts(run_id, "summary")] == [SUMMARY_PATH]
    off = StepRecorder(MlflowTracker(client, run_id), FeaturesConfig(geometry=False, dump_every=0))
    off.record(record(5))
    off.flush()  # features.geometry=false: no geometry, so no rows and no write
    assert sorted(loaders.load_summaries(run_id, uri)["step"].unique()) == [1, 2, 3, 4]


def test_the_trainer_flushes_its_recorder_at_checkpoints_and_at_the_end():
    from trainers.geometry import RecorderFlush

    calls = []
    callback = RecorderFlush(lambda: calls.append(1))
    callback.on_save(None, SimpleNamespace(is_world_process_zero=True), None)
    callback.on_save(None, SimpleNamespace(is_world_process_zero=False), None)  # other ranks record nothing
    callback.on_train_end(None, SimpleNamespace(is_world_process_zero=True), None)
    assert calls == [1, 1]

"""Issue 4 acceptance: per-step feature dumps (DESIGN 6), the geometry metrics logged beside them
(DESIGN 4), the loaders that read them back, interrupted writes, and the float16 / projection options.

Two real short runs (one grpo, one g2rl) are made once for the whole module and shared by the tests
that read them; everything else is built by hand.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from analysis.geometry import DIRECTION_NAMES, SEMANTIC_NAMES, geometry_metrics
from analysis.loaders import RUN_COLUMNS, artifact_steps, load_dumps, metric_history, runs_table, stack
from workbench.config import ConfigError, FeaturesConfig, build_config, flatten
from analysis.records import DUMP_COLUMNS, dump_path
from trainers.step_record import StepRecord, random_projection
from trainers.recorder import StepRecorder
from workbench.tracking import MlflowTracker, NullTracker, experiment_id

from conftest import SMALL  # noqa: E402
STEPS, PROMPTS, GENERATIONS = [1, 2, 3], 4, 4
COMPLETIONS = PROMPTS * GENERATIONS
HIDDEN = 128  # hidden size of the tiny preset = length of Phi
EMBED = 384  # all-MiniLM-L6-v2
METHODS = ("grpo", "g2rl")
EXPERIMENT = "dumps"

# DESIGN 6, in the order the recorder writes the columns.
SCHEMA = {
    "step": pa.int64(),
    "group": pa.int64(),
    "sample": pa.int64(),
    "prompt_id": pa.string(),
    "prompt": pa.string(),
    "completion": pa.string(),
    "answer": pa.string(),
    "correct": pa.bool_(),
    "base_reward": pa.float64(),
    "shaped_reward": pa.float64(),
    "advantage": pa.float64(),
    "num_tokens": pa.int64(),
    "grad_feature": pa.list_(pa.float32()),
    "embedding": pa.list_(pa.float32()),
    "nu": pa.float64(),
    "nu_bar": pa.float64(),
    "novelty": pa.float64(),
}
NULLABLE = {"answer", "nu", "nu_bar", "novelty"}  # every other column must be filled in every row
OWN_SCORES = {"grpo": set(), "g2rl": {"nu", "nu_bar"}}
GEOMETRY_KEYS = [f"geometry/{name}" for name in (*DIRECTION_NAMES, *SEMANTIC_NAMES)]


@pytest.fixture(scope="module")
def store(tmp_path_factory, model_cache) -> str:
    """A private SQLite store holding one short real grpo run and one g2rl run.

    The conftest ``store`` fixture is per test; this one lives for the module so the two runs are
    made once. MLFLOW_TRACKING_URI is set only while training and restored afterwards.
    """
    from workbench.run.launch import start_tracker
    from workbench.run.train import train

    root = tmp_path_factory.mktemp("dumps-store")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        for method in METHODS:
            cfg = build_config([{"method": method}], [*SMALL, "features.dump_every=1", f"tracking.experiment={EXPERIMENT}",
                                                      f"training.output_dir={root / 'outputs'}"])
            tracker = start_tracker(cfg)
            train(cfg, tracker)
            tracker.finish()
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return uri


@pytest.fixture(scope="module")
def runs(store):
    table = runs_table(EXPERIMENT, store)
    return {row.method: row for row in table.itertuples()}


def _client(uri: str):
    return MlflowClient(tracking_uri=uri)


def _read_dump(uri: str, run_id: str, step: int) -> pa.Table:
    with tempfile.TemporaryDirectory() as tmp:
        local = _client(uri).download_artifacts(run_id, dump_path(step), tmp)
        return pq.read_table(local)


# (a) one dump per logged step, with the schema of DESIGN 6, and geometry metrics at every step


@pytest.mark.parametrize("method", METHODS)
def test_a_dump_per_logged_step_with_the_documented_schema(store, runs, method):
    run = runs[method]
    assert metric_history(run.run_id, "train/reward", store)["step"].tolist() == STEPS
    assert artifact_steps(run.run_id, store) == STEPS
    for step in STEPS:
        table = _read_dump(store, run.run_id, step)
        assert table.schema.names == list(SCHEMA) == list(DUMP_COLUMNS)
        for name, kind in SCHEMA.items():
            field = table.schema.field(name)
            assert field.type == kind, (step, name, field.type)
            assert field.nullable  # Parquet fields are optional; the values below say which hold nulls
            if name not in NULLABLE:
                assert table.column(name).null_count == 0, (step, name)
        frame = table.to_pandas()
        assert len(frame) == COMPLETIONS
        assert (frame["step"] == step).all()
        # group unique within the step, sample = index in its group
        assert frame.groupby("group")["sample"].apply(sorted).tolist() == [list(range(GENERATIONS))] * PROMPTS
        assert frame.groupby("group")["prompt_id"].nunique().eq(1).all()
        assert stack(frame, "grad_feature").shape == (COMPLETIONS, HIDDEN)
        emb = stack(frame, "embedding")
        assert emb.shape == (COMPLETIONS, EMBED)
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        assert (frame["num_tokens"] >= 1).all() and (frame["num_tokens"] <= 6).all()
        for score in ("nu", "nu_bar", "novelty"):
            filled = frame[score].notna()
            assert filled.all() if score in OWN_SCORES[method] else not filled.any(), (step, score)
    for key in GEOMETRY_KEYS:
        assert metric_history(run.run_id, key, store)["step"].tolist() == STEPS, key


# (b) the geometry recomputed from a dump equals what the trainer logged for that step


@pytest.mark.parametrize("method", METHODS)
def test_geometry_recomputed_from_dumps_equals_logged_metrics(store, runs, method):
    run_id = runs[method].run_id
    tau = float(_client(store).get_run(run_id).data.params["features.tau"])
    keys = [k for k in _client(store).get_run(run_id).data.metrics if k.startswith("geometry/")]
    logged = {key: metric_history(run_id, key, store).set_index("step")["value"] for key in keys}
    dumps = load_dumps(run_id, store)
    for step in STEPS:
        part = dumps[dumps["step"] == step]
        # The trainer measured float32 Phi (unprojected here: project_dim is None) and float32 embeddings.
        recomputed = geometry_metrics(
            stack(part, "grad_feature").astype(np.float32),
            stack(part, "embedding").astype(np.float32),
            part["group"].to_numpy(),
            part["correct"].to_numpy(),
            tau=tau,
        )
        at_step = {key: float(series[step]) for key, series in logged.items() if step in series.index}
        assert set(recomputed) == set(at_step), step
        for key, value in recomputed.items():
            assert value == pytest.approx(at_step[key], abs=1e-6), (step, key)


# (c) the loaders return the documented shapes


def test_loaders_return_documented_shapes(store, runs):
    table = runs_table(EXPERIMENT, store)
    assert len(table) == len(METHODS)
    assert set(RUN_COLUMNS) <= set(table.columns)
    assert sorted(table["method"]) == sorted(METHODS)
    assert (table["last_step"] == STEPS[-1]).all()
    assert {"param.features.dtype", "param.features.dump_every", "param.features.project_dim"} <= set(table.columns)
    assert table["param.features.dtype"].eq("float32").all()
    assert {f"metric.{key}" for key in GEOMETRY_KEYS} <= set(table.columns)
    assert runs_table("no such experiment", store).columns.tolist() == RUN_COLUMNS

    run_id = runs["g2rl"].run_id
    history = metric_history(run_id, "geometry/neg_frac", store)
    assert history.columns.tolist() == ["step", "value"]
    assert history["step"].tolist() == STEPS
    assert history["value"].between(0, 1).all()

    dumps = load_dumps(run_id, store)
    assert len(dumps) == len(STEPS) * COMPLETIONS
    assert dumps.columns.tolist() == ["run_id", *DUMP_COLUMNS]
    assert dumps.attrs["invalid_steps"] == []
    assert (dumps["run_id"] == run_id).all()
    assert stack(dumps, "grad_feature").shape == (len(STEPS) * COMPLETIONS, HIDDEN)
    assert stack(dumps, "embedding").shape == (len(STEPS) * COMPLETIONS, EMBED)
    some = load_dumps(run_id, store, steps=[3, 1, 99])  # chosen steps; unknown ones are ignored
    assert sorted(some["step"].unique()) == [1, 3] and len(some) == 2 * COMPLETIONS
    with pytest.raises(ValueError, match="novelty"):
        stack(dumps.assign(novelty=None), "novelty")


# (d) an interrupted dump write is never read as valid


def test_interrupted_dump_is_skipped_and_listed(store, runs):
    """Copies a real dump into a fresh run (own experiment) at steps 1-4, then cuts steps 2-4 short in
    the artifact store by hand, as a process killed mid-write would leave them: never parsed, always listed."""
    client = _client(store)
    good = _read_dump(store, runs["g2rl"].run_id, 1)
    run_id = client.create_run(experiment_id(client, "interrupted"), run_name="interrupted").info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        for step in (1, 2, 3, 4):
            local = Path(tmp) / Path(dump_path(step)).name
            pq.write_table(good.set_column(0, "step", pa.array([step] * good.num_rows, pa.int64())), local)
            client.log_artifact(run_id, str(local), "features")
    folder = Path(unquote(urlparse(client.get_run(run_id).info.artifact_uri).path)) / "features"
    cuts = {2: 0.5, 3: 0.999, 4: 0.0}  # share of the bytes that reached the disk
    for step, share in cuts.items():
        path = folder / Path(dump_path(step)).name
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(min(int(size * share), size - 1))
    assert artifact_steps(run_id, store) == [1, 2, 3, 4]  # the files are there ...
    dumps = load_dumps(run_id, store)
    assert dumps.attrs["invalid_steps"] == [2, 3, 4]  # ... but only step 1 is read
    assert dumps["step"].unique().tolist() == [1] and len(dumps) == good.num_rows
    only_bad = load_dumps(run_id, store, steps=[3])
    assert only_bad.empty and only_bad.attrs["invalid_steps"] == [3]


def test_dump_written_from_pandas_with_list_columns_is_read_back(tmp_path):
    """A dump logged from a pandas frame with Arrow list<float> columns (as ``DataFrame.to_parquet`` would
    write it) carries pandas metadata naming an Arrow dtype; the loader reads the columns by their Arrow types."""

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    grad = np.arange(12, dtype=np.float32).reshape(3, 4)  # (N, d)
    vectors = pa.array(list(grad), type=pa.list_(pa.float32()))
    frame = pd.DataFrame({"step": [2, 2, 2], "group": [0, 0, 1],
                          "grad_feature": pd.Series(pd.arrays.ArrowExtensionArray(vectors)),
                          "embedding": [[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]})
    frame.to_parquet(tmp_path / "direct.parquet")
    meta = pq.read_schema(tmp_path / "direct.parquet").pandas_metadata
    stored = {c["name"]: c["numpy_type"] for c in meta["columns"]}
    assert stored["grad_feature"] == "list<item: float>[pyarrow]"  # a dtype name pandas' reader cannot rebuild
    client = MlflowClient(tracking_uri=uri)
    tracker = MlflowTracker(client, client.create_run(experiment_id(client, "pandas")).info.run_id)
    tracker.log_parquet(frame, dump_path(2))
    tracker.flush()  # the upload runs on the tracker's writer thread
    back = load_dumps(tracker.run_id, uri)
    assert back.attrs["invalid_steps"] == [] and back.columns.tolist() == ["run_id", *frame.columns]
    assert back["step"].tolist() == [2, 2, 2] and back["group"].tolist() == [0, 0, 1]
    np.testing.assert_array_equal(stack(back, "grad_feature"), grad)
    np.testing.assert_array_equal(stack(back, "embedding"), [[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])


# (e) features.dtype and features.project_dim


def _fake_batch(n_groups: int, m: int, d: int, e: int, seed: int = 0):
    from trainers.method import Shaped, StepBatch

    rng = np.random.default_rng(seed)
    n = n_groups * m
    correct = rng.random(n) < 0.5
    emb = rng.standard_normal((n, e)).astype(np.float32)
    batch = StepBatch(
        groups=np.repeat(np.arange(n_groups), m),
        correct=correct,
        has_answer=np.ones(n, dtype=bool),
        answers=[str(i) if i % 3 else None for i in range(n)],
        features=rng.standard_normal((n, d)).astype(np.float32),
        embeddings=emb / np.linalg.norm(emb, axis=1, keepdims=True),
    )
    base = np.where(correct, 1.0, -1.0)
    shaped = Shaped(base_reward=base, shaped_reward=base, scores={"nu": rng.random(n)})
    texts = [f"completion {i}" for i in range(n)]
    return batch, shaped, dict(prompts=[f"p{g}" for g in batch.groups], prompt_ids=[str(g) for g in batch.groups],
                               texts=texts, num_tokens=[3] * n, timed_out=[False] * n)


@pytest.mark.parametrize(
    "dtype, project_dim, grad_dim",
    [("float32", None, 64), ("float16", None, 64), ("float32", 16, 16), ("float16", 16, 16), ("float32", 64, 64),
     ("float32", 100, 64)],  # project_dim >= d keeps Phi as it is
)
def test_dtype_and_projection_options_give_documented_columns(tmp_path, dtype, project_dim, grad_dim):
    d, e = 64, 24
    batch, shaped, text = _fake_batch(n_groups=3, m=4, d=d, e=e)
    recorder = StepRecorder(NullTracker(), FeaturesConfig(dtype=dtype, project_dim=project_dim), seed=7)
    table = recorder.frame(StepRecord(step=5, batch=batch, shaped=shaped, advantages=np.zeros(len(batch.groups)), **text))
    pq.write_table(table, tmp_path / "dump.parquet")
    back = pq.read_table(tmp_path / "dump.parquet")
    vector = pa.list_(pa.float16() if dtype == "float16" else pa.float32())
    assert back.schema.field("grad_feature").type == vector
    assert back.schema.field("embedding").type == vector  # the embedding is stored in the dtype, never projected
    frame = back.to_pandas()
    grad, emb = stack(frame, "grad_feature"), stack(frame, "embedding")
    assert grad.shape == (len(batch.groups), grad_dim) and emb.shape == (len(batch.groups), e)
    expected = batch.features if grad_dim == d else random_projection(batch.features, project_dim, seed=7)
    np.testing.assert_allclose(grad, expected, rtol=1e-3 if dtype == "float16" else 1e-6, atol=1e-6)
    np.testing.assert_allclose(emb, batch.embeddings, atol=1e-3 if dtype == "float16" else 0)
    # scalar columns keep DESIGN 6's types whatever the vector options
    for name, kind in SCHEMA.items():
        if name not in ("grad_feature", "embedding"):
            assert back.schema.field(name).type == kind, name


@pytest.mark.parametrize("geometry", [False, True])
@pytest.mark.parametrize("dump_every", [0, 1, 3])
def test_geometry_and_dumps_are_two_switches(geometry, dump_every):
    """features.geometry decides the geometry/* metrics, features.dump_every the dumps, each alone."""
    batch, shaped, text = _fake_batch(n_groups=3, m=4, d=8, e=6)
    dumped = []
    tracker = NullTracker()
    tracker.log_parquet = lambda frame, path: dumped.append(path)
    for step in (1, 2, 3):
        record = StepRecord(step=step, batch=batch, shaped=shaped, advantages=np.zeros(len(batch.groups)), **text)
        metrics = StepRecorder(tracker, FeaturesConfig(geometry=geometry, dump_every=dump_every)).record(record)
        logged = sorted(k for k in metrics if k.startswith("geometry/"))
        if geometry:
            assert logged and logged == sorted(geometry_metrics(batch.features, batch.embeddings, batch.groups,
                                                                batch.correct))
        else:
            assert logged == [] and metrics["train/reward"] == batch.correct.mean()
    assert dumped == [dump_path(s) for s in (1, 2, 3) if dump_every and (s % dump_every == 0 or s == 1)]


def test_features_every_names_its_two_replacements():
    """The old key, from a flag or from a YAML file, is refused with the two settings that replace it."""
    with pytest.raises(ConfigError, match=r"features\.every.*dump_every.*geometry"):
        build_config([{"method": "grpo"}], ["features.every=0"])
    with pytest.raises(ConfigError, match=r"features\.every=0 .*features\.geometry.*features\.dump_every"):
        build_config([{"method": "grpo"}, {"features": {"every": 0}}])


def test_feature_options_are_config_params():
    cfg = build_config([{"method": "grpo"}], ["features.dtype=float16", "features.project_dim=256"])
    params = flatten(cfg.model_dump(mode="json"))
    assert params["features.dtype"] == "float16" and params["features.project_dim"] == 256


def _cosines(x: np.ndarray) -> np.ndarray:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return (unit @ unit.T)[np.triu_indices(len(x), k=1)]  # (P,) pairs i < j


def test_random_projection_keeps_cosines():
    """Projecting 2048 -> 256 dims keeps pairwise cosines to within what Johnson-Lindenstrauss predicts.

    For a Gaussian projection to k dims, the projected coordinates of two unit vectors with cosine c
    are k i.i.d. pairs with correlation c, so the projected cosine is a sample correlation of k pairs:
    its error is about N(0, (1 - c^2)^2 / k). At k = 256, c = 0: sd 1/16 = 0.0625 and mean |error|
    sqrt(2/pi)/16 = 0.050, so a flat "mean < 0.05" would be a coin toss for unrelated vectors. The
    vectors below share a few latent directions, so their cosines spread over about [-0.7, 0.7]. Bounds:
    mean |error| within 1.2 x its prediction (at most 0.06), and every error within 5 predicted sd
    (at most 5/16 = 0.31; the largest of ~2000 errors is expected near 3.5 sd). Measured with these
    seeds: mean 0.047 (predicted 0.046), largest 0.22 (3.5 sd).
    """
    k, d, n = 256, 2048, 64
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((n, 4)) @ rng.standard_normal((4, d))  # (n, d) shared directions
    x = latent + 0.8 * np.sqrt(4) * rng.standard_normal((n, d))  # (n, d)
    projected = random_projection(x, k, seed=3)  # (n, k)
    assert projected.shape == (n, k)
    np.testing.assert_array_equal(projected, random_projection(x, k, seed=3))  # seeded
    assert not np.allclose(projected, random_projection(x, k, seed=4))
    before, after = _cosines(x), _cosines(projected)
    assert before.min() < -0.3 and before.max() > 0.6  # a spread of cosines, not only ~0
    error = after - before
    sd = (1 - before**2) / np.sqrt(k)  # (P,) predicted sd of each pair's error
    assert np.abs(error).mean() < 1.2 * np.sqrt(2 / np.pi) * sd.mean()
    assert (np.abs(error) / sd).max() < 5


# (f) metrics are batched in memory and reach the store by the time anyone can read the run


def test_metrics_are_buffered_until_flush_and_written_on_finish(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    tracker = MlflowTracker(client, client.create_run(experiment_id(client, "buffer")).info.run_id, flush_s=3600)
    for step in range(1, 4):
        tracker.log_metrics({"train/reward": step / 10, "skipped": float("nan")}, step=step)
    assert client.get_metric_history(tracker.run_id, "train/reward") == []  # held in memory
    tracker.log_metrics({"train/reward": 0.4}, step=4)
    tracker.log_text("x", "notes.txt")  # an artifact write flushes first
    assert [m.step for m in client.get_metric_history(tracker.run_id, "train/reward")] == [1, 2, 3, 4]
    tracker.log_metrics({"train/reward": 0.5}, step=5)
    tracker.finish()
    history = client.get_metric_history(tracker.run_id, "train/reward")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4), (5, 0.5)]
    assert client.get_metric_history(tracker.run_id, "skipped") == []
    assert client.get_run(tracker.run_id).info.status == "FINISHED"


def test_metrics_flush_when_the_interval_has_passed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    tracker = MlflowTracker(client, client.create_run(experiment_id(client, "interval")).info.run_id, flush_s=0)
    tracker.log_metrics({"train/reward": 0.25}, step=1)  # spooled at once, and written by the sender thread
    assert tracker.spool.last_seq == 1
    deadline = time.monotonic() + 60
    while not client.get_metric_history(tracker.run_id, "train/reward") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "train/reward")] == [(1, 0.25)]


def test_dump_vectors_are_not_dictionary_encoded(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    tracker = MlflowTracker(client, client.create_run(experiment_id(client, "dictionary")).info.run_id)
    table = pa.table({"step": [1, 1], "grad_feature": pa.array([[0.5, 1.0], [2.0, 3.0]], pa.list_(pa.float32()))})
    tracker.log_parquet(table, dump_path(1))
    tracker.flush()
    local = client.download_artifacts(tracker.run_id, dump_path(1), str(tmp_path))
    meta = pq.ParquetFile(local).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert any("DICTIONARY" in e for e in encodings["step"])
    assert not any("DICTIONARY" in e for e in encodings["grad_feature.list.element"])
    assert pq.read_table(local).equals(table)


def test_a_checkpoint_writes_the_held_metrics(tmp_path):
    """A run killed after a checkpoint keeps every step up to it (TrackerCallback.on_save flushes)."""
    from types import SimpleNamespace

    from workbench.run.recording import TrackerCallback

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    tracker = MlflowTracker(client, client.create_run(experiment_id(client, "save")).info.run_id, flush_s=3600)
    callback = TrackerCallback(tracker)
    state = SimpleNamespace(is_world_process_zero=True, global_step=2)
    callback.on_log(None, state, None, logs={"kl": 0.5, "loss": 1.5})
    assert client.get_metric_history(tracker.run_id, "train/kl") == []
    callback.on_save(None, state, None)
    assert [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "train/kl")] == [(2, 0.5)]


def test_metric_history_keeps_the_later_value_of_a_step_logged_twice(tmp_path):
    """What a resumed run leaves when the killed process had logged steps after its checkpoint."""
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    tracker = MlflowTracker(client, client.create_run(experiment_id(client, "twice")).info.run_id, flush_s=0)
    for step, value in [(1, 0.1), (2, 0.2), (3, 0.3), (2, 0.25), (3, 0.35), (4, 0.4)]:  # resumed from step 1
        tracker.log_metrics({"train/reward": value}, step=step)
        time.sleep(0.002)  # distinct timestamps, as two processes have
    tracker.flush()
    history = metric_history(tracker.run_id, "train/reward", uri)
    assert history["step"].tolist() == [1, 2, 3, 4] and history["value"].tolist() == [0.1, 0.25, 0.35, 0.4]


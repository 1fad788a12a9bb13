"""load_dumps reads through the run's artifact repository, resolved once (DESIGN 6): the same frames and
``invalid_steps`` as the per-file ``MlflowClient.download_artifacts`` it replaced, and one run lookup."""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.loaders import artifact_steps, load_dumps
from conftest import imported_packages  # noqa: E402

STEPS = [1, 2, 3, 4, 5, 6]
TRUNCATED = 4  # its file is cut short after logging, as an interrupted write leaves it


def reference_load_dumps(run_id: str, uri: str, steps=None, folder: str = "features") -> pd.DataFrame:
    """load_dumps as first written: one ``MlflowClient.download_artifacts`` (a run lookup) per file."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    available = artifact_steps(run_id, uri, folder)
    wanted = available if steps is None else [s for s in steps if s in set(available)]
    frames, invalid = [], []
    for step in wanted:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, f"{folder}/step_{step:06d}.parquet", tmp)
            try:
                frames.append(pq.read_table(local).to_pandas(ignore_metadata=True))
            except (pa.ArrowInvalid, OSError):
                invalid.append(step)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not out.empty:
        out.insert(0, "run_id", run_id)
    out.attrs["invalid_steps"] = invalid
    return out


@pytest.fixture(scope="module")
def dump_run(tmp_path_factory) -> tuple[str, str]:
    """A SQLite store with one run: feature dumps at STEPS (one truncated), a file that is not a dump,
    and two eval artifacts. Returns (uri, run_id); made once, the tests only read it."""
    from mlflow.tracking import MlflowClient

    tmp_path = tmp_path_factory.mktemp("loaders")
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("loaders", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    rng = np.random.default_rng(0)
    files = tmp_path / "files"
    (files / "features").mkdir(parents=True)
    (files / "eval").mkdir()
    for step in STEPS:
        vectors = rng.standard_normal((8, 5), dtype=np.float32)  # (rows, d)
        table = pa.table({"step": [step] * 8, "group": np.repeat(np.arange(2), 4), "correct": rng.random(8) < 0.5,
                          "grad_feature": pa.array(list(vectors), pa.list_(pa.float32()))})
        pq.write_table(table, files / "features" / f"step_{step:06d}.parquet")
    (files / "features" / "notes.txt").write_text("not a dump")
    for step in (0, 6):
        pq.write_table(pa.table({"problem_id": ["p1", "p2"], "answer": ["7", None], "correct": [True, False]}),
                       files / "eval" / f"step_{step:06d}.parquet")
    client.log_artifacts(run_id, str(files / "features"), "features")
    client.log_artifacts(run_id, str(files / "eval"), "eval")
    root = Path(unquote(urlparse(client.get_run(run_id).info.artifact_uri).path))
    cut = root / "features" / f"step_{TRUNCATED:06d}.parquet"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    return uri, run_id


@pytest.mark.parametrize(("steps", "folder"), [(None, "features"), ([5, 1, 99], "features"), ([TRUNCATED], "features"),
                                               ([], "features"), (None, "eval"), (None, "missing")])
def test_load_dumps_equals_per_file_reference(dump_run, steps, folder):
    uri, run_id = dump_run
    got = load_dumps(run_id, uri, steps, folder=folder)
    expected = reference_load_dumps(run_id, uri, steps, folder=folder)
    pd.testing.assert_frame_equal(got, expected)
    assert got.attrs["invalid_steps"] == expected.attrs["invalid_steps"]


def test_truncated_dump_is_listed_and_the_rest_read(dump_run):
    uri, run_id = dump_run
    dumps = load_dumps(run_id, uri)
    assert dumps.attrs["invalid_steps"] == [TRUNCATED]
    assert sorted(dumps["step"].unique()) == [s for s in STEPS if s != TRUNCATED]
    assert dumps.columns.tolist() == ["run_id", "step", "group", "correct", "grad_feature"]
    assert (dumps["run_id"] == run_id).all()


def test_load_dumps_looks_the_run_up_once(dump_run, monkeypatch):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri, run_id = dump_run
    calls = []
    get_run = SqlAlchemyStore.get_run

    def counting_get_run(self, *args, **kwargs):
        calls.append(args)
        return get_run(self, *args, **kwargs)

    monkeypatch.setattr(SqlAlchemyStore, "get_run", counting_get_run)
    dumps = load_dumps(run_id, uri)
    assert dumps["step"].nunique() == len(STEPS) - 1
    assert len(calls) == 1  # not one per file


def test_load_dumps_reads_the_given_uri_not_the_environment(dump_run, tmp_path, monkeypatch):
    uri, run_id = dump_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert load_dumps(run_id, uri)["step"].nunique() == len(STEPS) - 1


def test_unknown_run_raises(dump_run):
    from mlflow.exceptions import MlflowException

    uri, _ = dump_run
    with pytest.raises(MlflowException):
        load_dumps("0" * 32, uri)


def test_analysis_loaders_imports_only_data_libraries():
    imported = imported_packages("analysis/loaders.py")
    assert imported <= {"__future__", "os", "tempfile", "numpy", "pandas", "pyarrow", "mlflow", "analysis"}
    assert imported_packages("analysis/records.py") <= {"__future__", "os", "re", "pathlib", "pyarrow"}  # the record contract

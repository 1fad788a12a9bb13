"""The spool and its replay, against a real SQLite store behind a client that fails on purpose.

- An outage (every call raising what MLflow raises when the server does not answer) costs a
  logging call no wait; the records wait in the spool and reach the store, once, when it answers.
- A write that reached the store but whose answer was lost is not written again: metric values
  and table rows are checked against the store first (the client counts what was sent, so the
  check is tested, not the SQL store's own dedup of identical metric values).
- ``workbench sync`` writes a spool a process left, in order, the status last; a sync stopped in
  the middle of a window is completed by the next one, nothing missing and nothing twice.
- Bad input to ``workbench sync`` gets an error naming the value and the fix.
"""

from __future__ import annotations

import collections
import json
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.loaders import artifact_steps
from workbench.cli import main
from workbench.tracking.replay import is_outage, windows
from workbench.tracking.spool import Item, Session, sessions, spool_folder
from workbench.tracking.sync import sync_run
from workbench.tracking import MlflowTracker, experiment_id, write_parquet

UNREACHABLE = ("API request to http://127.0.0.1:5/api/2.0/mlflow/runs/log-batch failed with exception "
               "HTTPConnectionPool(host='127.0.0.1', port=5): Max retries exceeded (Connection refused)")


class Flaky:
    """An MlflowClient whose store does not answer while ``down``; each name in ``lose_answer`` has its
    next call done but its answer lost (a timeout raised after the write). Counts the metric values sent."""

    def __init__(self, real: MlflowClient) -> None:
        self.real, self.down, self.lose_answer = real, False, set()
        self.sent = collections.Counter()  # (key, step, timestamp) -> times handed to a log_batch that wrote
        self.kill_at_upload: int | None = None  # raise KeyboardInterrupt (a kill) at this artifact upload
        self.uploads = 0

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.down:
                raise MlflowException(UNREACHABLE)
            if name == "log_artifact":
                self.uploads += 1
                if self.uploads == self.kill_at_upload:
                    raise KeyboardInterrupt("killed")
            out = attr(*args, **kwargs)
            if name == "log_batch":
                self.sent.update((m.key, m.step, m.timestamp) for m in kwargs.get("metrics") or [])
            if name in self.lose_answer:
                self.lose_answer.discard(name)
                raise MlflowException(f"API request to http://127.0.0.1:5/{name} failed with exception Read timed out")
            return out

        return call


def _client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")


def _record(tracker, step: int) -> None:
    tracker.log_metrics({"train/reward": step / 10, "train/kl": step / 100}, step=step)
    tracker.log_table({"step": [step, step], "completion": [f"a{step}", f"b{step}"]}, "completions.json")
    tracker.log_parquet(pa.table({"step": [step]}), f"features/step_{step:06d}.parquet")


def _check_once(real: MlflowClient, run_id: str, steps: int, status: str = "FINISHED") -> None:
    """Every step's metrics, row pair and dump in the store exactly once, and the run's status."""
    for key in ("train/reward", "train/kl"):
        assert sorted(m.step for m in real.get_metric_history(run_id, key)) == list(range(1, steps + 1)), key
    with tempfile.TemporaryDirectory() as tmp:
        table = json.loads(Path(real.download_artifacts(run_id, "completions.json", tmp)).read_text())
    assert [row[table["columns"].index("step")] for row in table["data"]] == [s for s in range(1, steps + 1)
                                                                              for _ in range(2)]
    assert artifact_steps(run_id, real.tracking_uri) == list(range(1, steps + 1))
    assert real.get_run(run_id).info.status == status


def test_an_outage_costs_no_wait_and_the_spool_reaches_the_store_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = _client(tmp_path)
    flaky = Flaky(real)
    run_id = real.create_run(experiment_id(real, "outage")).info.run_id
    tracker = MlflowTracker(flaky, run_id, flush_s=0)
    tracker.log_params({"lr": 0.1})
    flaky.down = True
    slowest = 0.0
    for step in range(1, 31):
        t0 = time.perf_counter()
        _record(tracker, step)
        if step % 10 == 0:
            tracker.flush()  # a checkpoint: the store does not answer, so the records stay in the spool
        slowest = max(slowest, time.perf_counter() - t0)
    assert slowest < 0.5, f"a logging call waited {slowest:.2f} s on a store that does not answer"
    assert real.get_metric_history(run_id, "train/reward") == []
    (session,) = sessions(spool_folder(tmp_path / "outputs" / run_id))
    assert len(list(session.glob("*.parquet"))) == 30  # every dump, on disk
    flaky.down = False  # the server is back: the sender writes the spool, in order
    tracker.finish()
    _check_once(real, run_id, 30)
    assert max(flaky.sent.values()) == 1
    assert real.get_run(run_id).data.params == {"lr": "0.1"}
    assert not (tmp_path / "outputs" / run_id).exists()  # the spool is gone once written


def test_a_write_whose_answer_was_lost_is_not_written_twice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = _client(tmp_path)
    flaky = Flaky(real)
    run_id = real.create_run(experiment_id(real, "lost")).info.run_id
    tracker = MlflowTracker(flaky, run_id, flush_s=3600)
    for step in range(1, 5):
        _record(tracker, step)
    flaky.lose_answer = {"log_batch", "log_table", "log_artifact"}  # each written, then a timeout
    tracker.flush()
    for step in range(5, 9):
        _record(tracker, step)
    tracker.finish()
    assert not flaky.lose_answer, "every lost answer happened"
    _check_once(real, run_id, 8)
    assert max(flaky.sent.values()) == 1, "a metric value whose write was acknowledged late was sent again"


def _left_spool(tmp_path: Path, real: MlflowClient, run_id: str, steps: int) -> Path:
    """The spool a process leaves when the store never answered: every kind of record, the status last."""
    folder = tmp_path / "outputs" / run_id
    session = Session.create(spool_folder(folder), run_id, real.tracking_uri)
    session.append("params", {"params": {"lr": "0.1"}})
    session.append("tags", {"tags": {"method": "g2rl"}})
    session.append("text", {"file": "config.yaml", "text": "method: g2rl\n"})
    for step in range(1, steps + 1):
        session.append("metrics", {"metrics": [["train/reward", step / 10, 1000 + step, step],
                                               ["train/kl", step / 100, 1000 + step, step]]})
        session.append("table", {"file": "completions.json",
                                 "rows": {"step": [step, step], "completion": [f"a{step}", f"b{step}"]}})
        data = session.data_file()
        write_parquet(pa.table({"step": [step]}), data)
        session.append("artifact", {"file": f"features/step_{step:06d}.parquet"}, data)
    session.append("status", {"status": "FINISHED", "end_time_ms": 5000})
    session.close()  # the process ended
    return folder


def test_a_sync_stopped_halfway_is_completed_by_the_next(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real = _client(tmp_path)
    run_id = real.create_run(experiment_id(real, "sync")).info.run_id
    folder = _left_spool(tmp_path, real, run_id, steps=12)  # 40 records: 3 windows
    flaky = Flaky(real)
    # Windows of 16 records: the first uploads the dumps of steps 1-4; the second writes its metrics and
    # table rows, then is killed at its second upload (the dump of step 6).
    flaky.kill_at_upload = 6
    with pytest.raises(KeyboardInterrupt):
        sync_run(flaky, run_id, folder, show=False)
    (found,) = sessions(spool_folder(folder))
    session = Session.open(found)
    started, finished, _ = session.journal()
    session.close()
    assert finished == set(range(1, 17)) and started - finished == set(range(17, 33)), (started, finished)
    assert real.get_run(run_id).info.status == "RUNNING"  # the status is written last
    assert main(["sync", run_id]) == 0  # the same run, from where it stopped
    out = capsys.readouterr().out
    assert f"run {run_id}:" in out and "checked against the store first" in out and "status FINISHED" in out
    _check_once(real, run_id, 12)
    assert real.get_run(run_id).info.end_time == 5000 and real.get_run(run_id).data.params == {"lr": "0.1"}
    assert not folder.exists()
    assert main(["sync", "--all"]) == 0
    assert "No spool under outputs" in capsys.readouterr().err


def test_sync_refuses_bad_input_with_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real = _client(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", real.tracking_uri)
    run_id = real.create_run(experiment_id(real, "bad")).info.run_id
    unknown = "0123456789abcdef0123456789abcdef"
    for argv, needle in [
        (["sync"], "name the runs to write (workbench sync RUN_ID ...), or give --all"),
        (["sync", run_id, "--all"], "give RUN_IDs or --all, not both"),
        (["sync", "../etc"], "'../etc' is not an MLflow run id"),
        (["sync", unknown], f"no run '{unknown}' in the tracking store"),
        (["sync", run_id], f"run {run_id} has no spool in outputs/{run_id}/spool: nothing to write"),
    ]:
        assert main(argv) == 2, argv
        assert needle in capsys.readouterr().err, argv
    other = real.create_run(experiment_id(real, "bad")).info.run_id
    _left_spool(tmp_path, real, run_id, steps=1)
    (tmp_path / "outputs" / other).mkdir()
    next((tmp_path / "outputs" / run_id).iterdir()).rename(tmp_path / "outputs" / other / "spool")
    assert main(["sync", other]) == 2  # the spool of one run found in another's folder is not written there
    assert f"holds records of run {run_id}" in capsys.readouterr().err

    live = MlflowTracker(real, run_id, flush_s=0)  # a live process's session is left to it
    live.log_metrics({"train/reward": 1.0}, step=1)
    assert main(["sync", run_id]) == 1
    assert "is being written by another process" in capsys.readouterr().err
    live.finish()


def test_outages_are_told_from_refusals():
    import requests
    from mlflow.exceptions import RestException

    assert is_outage(MlflowException(UNREACHABLE))
    assert is_outage(requests.ConnectionError("refused"))
    assert is_outage(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "restarting"}))
    try:
        raise RuntimeError("wrapped") from ConnectionRefusedError(111, "Connection refused")
    except RuntimeError as err:
        assert is_outage(err)
    assert not is_outage(PermissionError("artifact store is read-only"))
    assert not is_outage(MlflowException.invalid_parameter_value("param lr changed"))
    assert not is_outage(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"}))


def test_windows_write_the_status_alone_and_last():
    items = [Item(k, "metrics", {}) for k in range(1, 21)] + [Item(21, "status", {"status": "FINISHED"})]
    got = [[i.seq for i in w] for w in windows(items, size=8)]
    assert got == [list(range(1, 9)), list(range(9, 17)), list(range(17, 21)), [21]]


def test_a_journal_line_cut_short_by_a_kill_counts_for_nothing(tmp_path):
    session = Session.create(tmp_path / "spool", "r1", "sqlite:///x")
    items = [session.append("tags", {"tags": {"k": str(k)}}) for k in range(3)]
    session.started(items[:2])
    session.done(items[:1])
    session.close()
    with open(Path(session.folder) / "journal", "a") as journal:
        journal.write("done 2")  # no newline: the kill came mid-line
    pending = Session.open(session.folder).pending()
    assert [(i.seq, i.in_doubt) for i in pending] == [(2, True), (3, False)]


def test_the_store_refusing_a_record_is_raised_and_the_rest_is_written(tmp_path, monkeypatch):
    from trainers.background import BackgroundError

    monkeypatch.chdir(tmp_path)
    real = _client(tmp_path)
    run_id = real.create_run(experiment_id(real, "refused")).info.run_id
    tracker = MlflowTracker(real, run_id, flush_s=0)
    tracker.log_params({"lr": 0.1})
    with pytest.raises(BackgroundError, match="INVALID_PARAMETER_VALUE|Changing param values is not allowed"):
        tracker.log_params({"lr": 0.2})  # MLflow keeps a parameter's first value
    tracker.log_metrics({"train/reward": 1.0}, step=1)
    tracker.finish()
    assert real.get_run(run_id).info.status == "FINISHED"
    assert [m.value for m in real.get_metric_history(run_id, "train/reward")] == [1.0]


def test_two_runs_logging_the_same_dataset_at_once_both_get_it(tmp_path):
    """A study's cells log one training set into one experiment at the same moment; neither is refused."""
    import threading

    from mlflow.tracking import MlflowClient

    from workbench.tracking import experiment_id
    from workbench.tracking.replay import _log_dataset

    uri = f"sqlite:///{tmp_path / 'race.db'}"
    store = MlflowClient(uri)
    exp = experiment_id(store, "race")
    for trial in range(8):
        payload = {"dataset": {"name": "train", "digest": f"d{trial}", "source_type": "code", "source": "{}"},
                   "context": "training"}
        runs = [store.create_run(exp).info.run_id for _ in range(2)]
        errors: list[BaseException] = []

        def log(run_id, payload=payload, errors=errors):
            try:
                _log_dataset(MlflowClient(uri), run_id, payload)
            except BaseException as err:  # noqa: BLE001 - collected for the assertion
                errors.append(err)

        threads = [threading.Thread(target=log, args=(r,)) for r in runs]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors
        assert all(len(store.get_run(r).inputs.dataset_inputs) == 1 for r in runs)

"""A real ``mlflow server`` killed in the middle of a run: training goes on, and the record reaches it once.

MLflow's own HTTP retries are made short through its documented settings
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES=1``, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1``,
``MLFLOW_HTTP_REQUEST_TIMEOUT=5``: a failed call gives up after a few seconds), and the server
stays down far longer than that: killed with SIGKILL, then started again on the same port, store
and artifact folder (a restart takes about 20 s on 2 busy cores).

- The server comes back before training ends: the run finishes, FINISHED, with every step's
  metrics, every dump, the pair summaries and the completion table in the store once, and no step
  after the first ``WARM_UP`` (which precede the outage) slower than 3 x their median (``perf/step_s``).
- The server does not come back before training ends: the run ends with its record in the spool
  and names the ``workbench sync`` command; after the server is back, a sync killed halfway and a
  second sync leave the same complete record, nothing twice.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from analysis.loaders import artifact_steps, load_summaries
from test_server import _free_port
from conftest import ONE_UPDATE  # noqa: E402
from workbench.cli import main
from workbench.tracking.spool import sessions, spool_folder
from workbench.tracking import client

WARM_UP = 10  # steps before the outage starts, left out of the step-time comparison
SHORT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
# Shrunk for 2 CPU cores: a 100-step warm start, 4 prompts x 4 completions of <= 6 tokens, no evaluation.
SHRUNK = ["model.warmstart_steps=100", "training.prompts_per_step=4", "training.num_generations=4",
          "training.max_completion_length=6", "eval.initial=false", "eval.final=false", "eval.every=0",
          "features.dump_every=1", *ONE_UPDATE]  # a dump every step: the record checked step by step


class Server:
    """``mlflow server`` on one port, store and artifact folder, which a test can kill and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.folder / "server.log", "a")  # noqa: SIM115  closed with the process
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port",
               str(self.port), "--workers", "1", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
               "--artifacts-destination", str(self.folder / "artifacts")]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 180
        while not self.up():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up:\n{(self.folder / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)

    def up(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).ok
        except requests.RequestException:
            return False

    def kill(self) -> None:
        """SIGKILL the server and the worker it started."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        assert not self.up()

    def dumps(self, step: int) -> list[Path]:
        return list(self.folder.glob(f"artifacts/*/*/artifacts/features/step_{step:06d}.parquet"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("mlflow-outage"))
    s.start()
    yield s
    s.kill()


def _train(tmp_path: Path, server: Server, name: str, steps: int, extra: list[str]) -> subprocess.Popen:
    argv = [sys.executable, "-m", "workbench.cli", "run", "--method", "g2rl", "--steps", str(steps),
            "--experiment", name, *[a for item in [*SHRUNK, *extra] for a in ("--set", item)]]
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115  closed with the process
    env = {**os.environ, **SHORT_RETRIES, "MLFLOW_TRACKING_URI": server.url}
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    return proc


def _wait_for_dump(proc: subprocess.Popen, server: Server, step: int, log: Path) -> str:
    """The id of the run ``proc`` trains, once the server holds its dump of ``step`` (not an earlier run's)."""
    earlier = set(server.dumps(step))
    deadline = time.monotonic() + 400  # includes the warm start when the model cache is cold
    while not (found := [p for p in server.dumps(step) if p not in earlier]):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    return found[0].parents[2].name


def _check_once(url: str, run_id: str, steps: int) -> dict[str, list[int]]:
    """Every step's metrics, dump, summary and completion rows in the store once; the raw metric steps."""
    c = client(url)
    run = c.get_run(run_id)
    raw = {key: [m.step for m in c.get_metric_history(run_id, key)] for key in run.data.metrics}
    for key in ("train/reward", "train/loss", "geometry/grad_cos_mean", "g2rl/nu_mean", "perf/step_s"):
        assert sorted(raw[key]) == list(range(1, steps + 1)), (key, collections.Counter(raw[key]))
    assert all(max(collections.Counter(s).values()) == 1 for s in raw.values()), "a metric value written twice"
    assert artifact_steps(run_id, url) == list(range(1, steps + 1))
    assert sorted(load_summaries(run_id, url)["step"].unique()) == list(range(1, steps + 1))
    with tempfile.TemporaryDirectory() as tmp:
        table = json.loads(Path(c.download_artifacts(run_id, "completions.json", tmp)).read_text())
    rows = collections.Counter(row[table["columns"].index("step")] for row in table["data"])
    assert sorted(rows) == list(range(1, steps + 1)) and set(rows.values()) == {4}  # one group of 4 a step
    return raw


@pytest.mark.timeout(900)
def test_the_server_killed_mid_run_costs_no_step_and_gets_the_whole_record(server, model_cache, tmp_path):
    steps = 250  # about 0.2 s a step: training outlasts the outage (kill, 10 s, a restart of about 20 s)
    proc = _train(tmp_path, server, "back", steps, ["tracking.flush_s=2"])
    log = tmp_path / "back.log"
    run_id = _wait_for_dump(proc, server, WARM_UP, log)
    server.kill()
    killed_at, killed_at_ms = time.monotonic(), int(time.time() * 1000)
    time.sleep(10)  # longer than MLflow's retry window (a few seconds with SHORT_RETRIES)
    spool = spool_folder(tmp_path / "outputs" / run_id)
    assert sessions(spool) and list(sessions(spool)[0].glob("*.parquet")), "dumps wait in the spool"
    server.start()
    outage, back_ms = time.monotonic() - killed_at, int(time.time() * 1000)
    assert proc.poll() is None, f"training ended during the outage:\n{log.read_text()[-3000:]}"
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]

    assert client(server.url).get_run(run_id).info.status == "FINISHED"
    _check_once(server.url, run_id, steps)
    history = sorted(client(server.url).get_metric_history(run_id, "perf/step_s"), key=lambda m: m.step)
    # The first steps are slower whatever the server does: the recorder's thread loads the text encoder and the
    # server answers the run's first writes, on the same 2 cores. The outage starts after them.
    times = [m.value for m in history[WARM_UP:]]
    median = statistics.median(times)
    during = [m.step for m in history if killed_at_ms <= m.timestamp <= back_ms]
    print(f"outage {outage:.0f} s, steps {min(during)}-{max(during)} trained in it; perf/step_s from step "
          f"{WARM_UP + 1}: median {median:.3f} s, slowest {max(times):.3f} s (step "
          f"{history[WARM_UP + times.index(max(times))].step}); steps 1-{WARM_UP}: "
          f"{', '.join(f'{m.value:.2f}' for m in history[:WARM_UP])} s")
    assert len(during) > 10, "training went on during the outage"
    assert max(times) <= 3 * median, (f"slowest step {max(times):.2f} s, median {median:.2f} s, outage "
                                      f"{outage:.0f} s")
    assert not (tmp_path / "outputs" / run_id / "spool").exists()


@pytest.mark.timeout(900)
def test_a_run_the_server_never_sees_again_is_written_by_sync_even_after_a_killed_sync(server, model_cache,
                                                                                         tmp_path, monkeypatch):
    steps = 12
    proc = _train(tmp_path, server, "gone", steps, ["tracking.finish_wait_s=2"])
    log = tmp_path / "gone.log"
    run_id = _wait_for_dump(proc, server, 2, log)
    server.kill()
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert f"workbench sync {run_id}" in text and "has written nothing for 2 s" in text, text[-3000:]
    spool = spool_folder(tmp_path / "outputs" / run_id)
    assert sessions(spool)

    server.start()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    assert client(server.url).get_run(run_id).info.status == "RUNNING"  # its status waits in the spool
    sync_log = open(tmp_path / "sync.log", "w")
    sync = subprocess.Popen([sys.executable, "-m", "workbench.cli", "sync", run_id], cwd=tmp_path, stdout=sync_log,
                            stderr=subprocess.STDOUT, env={**os.environ, **SHORT_RETRIES})
    journal = sessions(spool)[0] / "journal"
    try:  # SIGKILL once the sync has written its first window of records
        while sync.poll() is None and "done" not in (journal.read_text() if journal.exists() else ""):
            time.sleep(0.005)
    finally:
        sync.kill()
        sync.wait()
        sync_log.close()
    assert sync.returncode == -signal.SIGKILL, (tmp_path / "sync.log").read_text()[-3000:]
    assert sessions(spool), "the sync was killed before the end"
    lines = journal.read_text().splitlines()
    print(f"sync killed after {sum(line.startswith('done') for line in lines)} of its windows, "
          f"{sum(line.startswith('start') for line in lines)} started")
    assert client(server.url).get_run(run_id).info.status == "RUNNING"

    assert main(["sync", run_id]) == 0
    assert client(server.url).get_run(run_id).info.status == "FINISHED"
    _check_once(server.url, run_id, steps)
    assert not spool.exists()

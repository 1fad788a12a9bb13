"""A real MLflow tracking server: a short run logs to it over HTTP, and the loaders and the app read it back.

The server runs as ``mlflow server`` on 127.0.0.1 with a SQLite backend and
proxied local artifacts (``--artifacts-destination``), as a team server would
with a database and an object store; the run, the loaders and the app only see
``http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import ONE_UPDATE  # noqa: E402
from analysis.loaders import artifact_steps, load_dumps, metric_history, runs_table
from workbench.cli import main

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
STEPS = 2
# Shrunk for 2 CPU cores as in tests/test_train.py; the baseline and final evaluations kept but tiny
# (4 problems x 2 samples) so the run logs eval artifacts over HTTP too.
RUN = ["run", "--method", "g2rl", "--steps", str(STEPS), "--set", "model.warmstart_steps=100",
       "--set", "training.prompts_per_step=4", "--set", "training.num_generations=4",
       "--set", "training.max_completion_length=6", "--set", "eval.max_problems=4", "--set", "eval.n=2",
       *[a for o in ONE_UPDATE for a in ("--set", o)]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on a free localhost port; killed (with its workers) at the end."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(folder / "server.log", "w")
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
           "--artifacts-destination", str(folder / "artifacts")]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # about 25 s on 2 busy cores
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up:\n{(folder / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, folder
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.timeout(600)
def test_run_logs_over_http_and_loaders_and_app_read_it_back(server, model_cache, tmp_path, monkeypatch, capsys):
    url, folder = server
    monkeypatch.chdir(tmp_path)  # checkpoints and caches of the run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    assert main(RUN) == 0

    runs = runs_table("workbench", url)
    assert len(runs) == 1
    run = runs.iloc[0]
    assert (run["method"], run["status"], run["last_step"]) == ("g2rl", "FINISHED", STEPS)
    assert metric_history(run["run_id"], "train/reward", url)["step"].tolist() == list(range(1, STEPS + 1))
    assert metric_history(run["run_id"], "g2rl/nu_mean", url)["step"].tolist() == list(range(1, STEPS + 1))
    dumps = load_dumps(run["run_id"], url)
    assert sorted(dumps["step"].unique()) == list(range(1, STEPS + 1)) and len(dumps) == STEPS * 16
    assert artifact_steps(run["run_id"], url, "eval") == [0, STEPS]  # the baseline and the final evaluation
    pass1 = metric_history(run["run_id"], "eval/countdown_test/pass_at_1", url)["value"].tolist()
    headline = [line for line in capsys.readouterr().out.splitlines() if "held out" in line]
    expected = f"countdown_test (steps 0 -> {STEPS}): pass@1 {pass1[0]:.3f} -> {pass1[-1]:.3f}, maj@2"
    assert len(headline) == 1 and expected in headline[0], headline
    # The artifacts went through the server into its destination, not into this working directory.
    assert list(folder.glob(f"artifacts/**/{run['run_id']}/artifacts/features/step_000001.parquet"))
    assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "mlruns.db").exists()

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.text_input(key="uri").value == url
    table = at.dataframe[0].value
    assert list(table["method"]) == ["g2rl"] and list(table["status"]) == ["FINISHED"]
    at.switch_page("app_pages/geometry.py").run()  # reads the dumps over HTTP
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("plotly_chart")) > 0

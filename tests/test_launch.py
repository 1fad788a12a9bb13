"""Whether a run's process is still there (``workbench.run.launch.run_process``), and what resume and sweep make of it.

No training: the processes are a sleeping Python child (alive), one that has
exited (dead), this test process, and tags naming another host or no usable pid.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from analysis.records import HOST_TAG, PID_TAG
from workbench.run import launch
from workbench.run.launch import ProcessState, run_process
from workbench.experiments.sweep import _decide

HERE = socket.gethostname()
ELSEWHERE = f"not-{HERE}"


@pytest.fixture(scope="module")
def live_pid():
    """The pid of a process that runs for the module's tests."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_process_on_this_host_is_alive(live_pid):
    assert run_process({HOST_TAG: HERE, PID_TAG: str(live_pid)}) is ProcessState.ALIVE


def test_a_process_of_another_user_is_alive(monkeypatch):
    def kill(pid, sig):
        raise PermissionError(1, "Operation not permitted")  # what os.kill says of another user's process

    monkeypatch.setattr(launch.os, "kill", kill)
    assert run_process({HOST_TAG: HERE, PID_TAG: "4242"}) is ProcessState.ALIVE


def test_an_exited_process_on_this_host_is_dead(dead_pid):
    assert run_process({HOST_TAG: HERE, PID_TAG: str(dead_pid)}) is ProcessState.DEAD


def test_this_very_process_is_dead_to_itself():
    """A pid tag naming the asking process: the recorded process is gone (its pid reused), or this one left it."""
    assert run_process({HOST_TAG: HERE, PID_TAG: str(os.getpid())}) is ProcessState.DEAD


@pytest.mark.parametrize("which", ["live", "dead"])
def test_another_host_is_unknown_whatever_the_pid(which, live_pid, dead_pid):
    pid = live_pid if which == "live" else dead_pid
    assert run_process({HOST_TAG: ELSEWHERE, PID_TAG: str(pid)}) is ProcessState.UNKNOWN
    assert run_process({PID_TAG: str(pid)}) is ProcessState.UNKNOWN  # no host tag: where it ran is unknown


@pytest.mark.parametrize("pid", [None, "", "abc", "-5", "0", "007", "12x", " 12", "1.5", "\u00b2"])
def test_a_missing_or_garbage_pid_is_unknown(pid):
    tags = {HOST_TAG: HERE} if pid is None else {HOST_TAG: HERE, PID_TAG: pid}
    assert run_process(tags) is ProcessState.UNKNOWN


class _Client:
    """The MLflow client calls ``sweep._decide`` makes: it marks runs KILLED."""

    def __init__(self) -> None:
        self.killed: list[str] = []

    def set_terminated(self, run_id: str, status: str) -> None:
        assert status == "KILLED"
        self.killed.append(run_id)


def _run(run_id: str, tags: dict[str, str], status: str = "RUNNING"):
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, status=status), data=SimpleNamespace(tags=tags))


@pytest.mark.parametrize(("where", "action"), [("live", "running"), ("dead", "resume"), ("elsewhere", "running"),
                                                ("garbage", "running")])
def test_sweep_resumes_a_running_cell_only_when_its_process_is_dead(where, action, live_pid, dead_pid):
    tags = {"live": {HOST_TAG: HERE, PID_TAG: str(live_pid)}, "dead": {HOST_TAG: HERE, PID_TAG: str(dead_pid)},
            "elsewhere": {HOST_TAG: ELSEWHERE, PID_TAG: str(live_pid)}, "garbage": {HOST_TAG: HERE, PID_TAG: "x"}}
    mlflow_client = _Client()
    assert _decide(mlflow_client, [_run("r1", tags[where])], rerun_running=False) == (action, "r1")
    assert mlflow_client.killed == (["r1"] if action == "resume" else [])
    # --rerun-running: every RUNNING cell counts as killed
    assert _decide(_Client(), [_run("r1", tags[where])], rerun_running=True) == ("resume", "r1")


@pytest.mark.parametrize(("where", "refused"), [("live", True), ("dead", False), ("elsewhere", False),
                                                 ("garbage", False)])
def test_resume_refuses_a_running_run_only_when_its_process_is_alive(store, where, refused, live_pid, dead_pid):
    from workbench.config import build_config
    from workbench.run.launch import find_resume_point, start_tracker
    from workbench.tracking import TrackingError, client

    tags = {"live": {HOST_TAG: HERE, PID_TAG: str(live_pid)}, "dead": {HOST_TAG: HERE, PID_TAG: str(dead_pid)},
            "elsewhere": {HOST_TAG: ELSEWHERE, PID_TAG: str(live_pid)}, "garbage": {HOST_TAG: HERE, PID_TAG: "x"}}
    run_id = start_tracker(build_config([{"method": "grpo"}], ["training.save_steps=2"])).run_id  # RUNNING
    for key, value in tags[where].items():
        client(store).set_tag(run_id, key, value)
    if refused:
        with pytest.raises(TrackingError, match=f"still RUNNING in process {live_pid} on this host"):
            find_resume_point(run_id)
    else:
        point = find_resume_point(run_id)
        assert (point.run_id, point.checkpoint, point.step) == (run_id, None, 0)  # no checkpoint saved: step 0

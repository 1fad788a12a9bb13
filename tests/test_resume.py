"""Resume after a crash: a real training process is SIGKILLed mid-run and continued with
``workbench run --resume RUN_ID``; its record must equal an uninterrupted run's, step by step.

What "equal" means here (measured on CPU, one torch thread, the tiny preset): every
metric except the ``perf/`` timings, every feature dump, and the final weights
are bitwise equal to those of an uninterrupted run with the same seed, because
the checkpoint restores weights, optimizer, scheduler and the RNG states the
sampler uses, and the data sampler is seeded. Where this would not hold: GPU
kernels with non-deterministic reductions (atomic adds, split-K matmuls),
thread counts that change the order of CPU reductions, and vLLM generation,
whose sampler state is not in the Trainer's checkpoint; there the values agree
only in distribution, while the step structure (no step missing, none seen twice
by the loaders) holds regardless.

What the killed process had spooled but not yet written to the store is written
by ``workbench sync`` (``--resume`` does the same first). Steps the killed process
logged after its last checkpoint are logged again by the resumed one: MLflow appends metric values and cannot delete them, so the raw
history holds those steps twice and ``analysis.loaders.metric_history`` keeps the
later value. Dumps are files named by step and are overwritten.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from analysis.loaders import artifact_steps, load_dumps, metric_history
from conftest import SMALL
from trainers.method import Method, Shaped, StepBatch
from workbench.cli import main
from workbench.config import build_config
from conftest import ONE_UPDATE  # noqa: E402
from analysis.records import PID_TAG
from workbench.tracking import client
from workbench.run.launch import RESUMED_TAG, last_checkpoint, start_tracker

STEPS, SAVE = 20, 2  # SAVE: the default checkpoint interval, a tenth of the run
# Shrunk for 2 CPU cores: a 100-step warm start, 4 prompts x 4 completions of <= 6 tokens.
# g2rl, because its +-1 rewards shaped by nu give a gradient even when every answer of
# the weak tiny policy is wrong (GRPO's 0/1 rewards would leave the weights unchanged).
ARGS = [
    "--method", "g2rl", "--steps", str(STEPS),
    "--set", "model.warmstart_steps=100",
    "--set", "training.prompts_per_step=4",
    "--set", "training.num_generations=4",
    "--set", "training.max_completion_length=6",
    "--set", "eval.final=false",  # the baseline evaluation at step 0 is kept, small: 8 problems x 2 samples
    "--set", "eval.max_problems=8",
    "--set", "eval.n=2",
    "--set", "features.dump_every=1",  # every step's dump and semantic metrics, so every step is compared
    "--set", "features.semantic_every=1",
    *[a for o in ONE_UPDATE for a in ("--set", o)],
]


def _runs(uri: str, experiment: str = "workbench") -> list:
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else c.search_runs([exp.experiment_id])


def _raw_steps(uri: str, run_id: str) -> dict[str, list[int]]:
    c = client(uri)
    return {key: [m.step for m in c.get_metric_history(run_id, key)] for key in c.get_run(run_id).data.metrics}


def _start_and_kill(tmp_path: Path, dump_step: int) -> str:
    """Start ``workbench run`` in a subprocess and SIGKILL it once it has written the dump of ``dump_step``."""
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "run", *ARGS], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, env=dict(os.environ))
    deadline = time.monotonic() + 300  # includes the warm start when the model cache is cold
    dumps: list[Path] = []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            dumps = list(tmp_path.glob(f"mlartifacts/*/artifacts/features/step_{dump_step:06d}.parquet"))
            if dumps:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and not dumps:
            proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    return dumps[0].parents[2].name


def _vectors(frame, column: str) -> np.ndarray:
    return np.stack([np.asarray(v) for v in frame[column]])


@pytest.mark.timeout(600)
def test_killed_run_resumes_to_the_record_of_an_uninterrupted_run(store, model_cache, tmp_path):
    # A run with the default checkpoints (every tenth of it), SIGKILLed at 60 %: mid step 12, checkpoint-10 saved.
    run_id = _start_and_kill(tmp_path, dump_step=12)
    (killed,) = _runs(store)
    assert killed.info.run_id == run_id and killed.info.status == "RUNNING"  # SIGKILL leaves no chance to close
    assert main(["sync", run_id]) == 0  # what the killed process had spooled and not yet written
    before = _raw_steps(store, run_id)
    killed_at = max(max(steps) for steps in before.values())
    checkpoint, n = last_checkpoint(tmp_path / "outputs" / run_id)
    assert checkpoint is not None and 12 - SAVE <= n <= killed_at < STEPS  # lost at most a tenth of the run

    assert main(["run", "--resume", run_id]) == 0
    assert main(["run", *ARGS, "--experiment", "reference"]) == 0
    (resumed,) = _runs(store)
    (reference,) = _runs(store, "reference")
    assert resumed.info.status == "FINISHED" and resumed.data.tags[RESUMED_TAG] == str(n)

    # No step missing, none <= n logged again, those in (n, killed_at] at most twice (the loader keeps the last).
    raw = _raw_steps(store, run_id)
    assert set(raw) == set(reference.data.metrics)
    for key, steps in raw.items():
        counts = collections.Counter(steps)
        want = [0] if key.startswith("eval/") else list(range(1, STEPS + 1))  # eval: the baseline only
        assert sorted(counts) == want, key
        assert all(counts[s] == 1 for s in counts if s <= n or s > killed_at), (key, counts)
        assert all(counts[s] <= 2 for s in counts), (key, counts)
    # With metrics written every tracking.flush_s (10 s) and at checkpoints, the kill may or may not have left
    # steps after n in the store; the loader's handling of a step logged twice is tested in test_dumps.py.

    # Step by step equal to the uninterrupted run (bitwise on CPU with one thread; perf/ are timings).
    for key in raw:
        got = metric_history(run_id, key, store)
        want = metric_history(reference.info.run_id, key, store)
        assert got["step"].tolist() == want["step"].tolist(), key
        if not key.startswith("perf/"):
            np.testing.assert_array_equal(got["value"].to_numpy(), want["value"].to_numpy(), err_msg=key)

    assert artifact_steps(run_id, store) == list(range(1, STEPS + 1))
    assert artifact_steps(run_id, store, "eval") == [0]
    got, want = load_dumps(run_id, store), load_dumps(reference.info.run_id, store)
    assert len(got) == len(want) == STEPS * 16
    for column in want.columns.drop("run_id"):
        if column in ("grad_feature", "embedding"):
            np.testing.assert_array_equal(_vectors(got, column), _vectors(want, column), err_msg=column)
        else:
            assert got[column].equals(want[column]), column

    # The weights and optimizer state at the end are the same too, and training did move the weights.
    from safetensors.numpy import load_file

    ours = load_file(tmp_path / "outputs" / run_id / f"checkpoint-{STEPS}" / "model.safetensors")
    theirs = load_file(tmp_path / "outputs" / reference.info.run_id / f"checkpoint-{STEPS}" / "model.safetensors")
    early = load_file(tmp_path / "outputs" / run_id / f"checkpoint-{STEPS - SAVE}" / "model.safetensors")  # kept: 2
    assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)
    assert any(not np.array_equal(ours[k], early[k]) for k in early)


class TermOnSecondStep(Method):
    """GRPO's rewards; at the second step of the first run its process gets SIGTERM, as a scheduler's
    preemption sends it (once per test process: the resumed run goes through)."""

    shaped_steps = 0

    def shape(self, batch: StepBatch) -> Shaped:
        TermOnSecondStep.shaped_steps += 1
        if TermOnSecondStep.shaped_steps == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().shape(batch)


def test_sigterm_marks_the_run_killed_and_it_resumes(store, model_cache):
    argv = ["run", "--method", f"{__name__}:TermOnSecondStep"]
    for item in [*SMALL, "training.save_steps=1"]:  # 3 steps, shrunk for 2 cores; a checkpoint every step
        argv += ["--set", item]
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    (run,) = _runs(store)
    assert run.info.status == "KILLED"
    assert metric_history(run.info.run_id, "train/reward", store)["step"].tolist() == [1]
    assert main(["run", "--resume", run.info.run_id]) == 0
    (run,) = _runs(store)
    assert run.info.status == "FINISHED" and run.data.tags[RESUMED_TAG] == "1"
    assert metric_history(run.info.run_id, "train/reward", store)["step"].tolist() == [1, 2, 3]
    assert artifact_steps(run.info.run_id, store) == [1, 2, 3]


# --------------------------------------------------------------------------- what --resume refuses


def _recorded_run(save_steps: int = SAVE) -> str:
    """A run as `workbench run` opens it (params, config.yaml, tags), with no training."""
    cfg = build_config([{"method": "grpo"}], [f"training.save_steps={save_steps}"])
    return start_tracker(cfg).run_id


def _status(uri: str, run_id: str) -> str:
    return client(uri).get_run(run_id).info.status


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--resume", "../../etc"], "'../../etc' is not an MLflow run id"),
        (["run", "--resume", "abc", "--set", "training.steps=9"], "drop --set"),
        (["run", "--resume", "abc", "--method", "g2rl"], "drop --method"),
    ],
)
def test_resume_refuses_bad_run_ids_and_config_flags(store, capsys, argv, needle):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
    assert not Path(store.removeprefix("sqlite:///")).exists()  # refused before the store was opened


def test_resume_refuses_finished_live_and_checkpointless_runs(store, capsys):
    finished = _recorded_run()
    client(store).set_terminated(finished, "FINISHED")
    live = _recorded_run()  # RUNNING, and its pid tag names a live process on this host
    client(store).set_tag(live, PID_TAG, str(os.getppid()))
    unsaved = _recorded_run(save_steps=0)
    client(store).set_terminated(unsaved, "KILLED")
    unknown = "0123456789abcdef0123456789abcdef"
    assert main(["run", "--resume", unknown]) == 2
    assert f"no run '{unknown}' in the tracking store" in capsys.readouterr().err
    for run_id, needle in [(finished, "is FINISHED; nothing to resume"),
                           (live, f"still RUNNING in process {os.getppid()}"),
                           (unsaved, "saved no checkpoints (training.save_steps=0)")]:
        before = _status(store, run_id)
        assert main(["run", "--resume", run_id]) == 2
        assert needle in capsys.readouterr().err
        assert _status(store, run_id) == before  # a refused resume leaves the run as it was


def test_last_checkpoint_skips_an_incomplete_one(tmp_path):
    for step, complete in [(2, True), (4, True), (6, False), (10, True)]:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": 1')  # cut mid-write
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == (tmp_path / "checkpoint-4", 4)
    assert last_checkpoint(tmp_path / "missing") == (None, 0)

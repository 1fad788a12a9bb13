"""Two training processes on CPU (gloo): the full trainer under ``accelerate launch``, recorded by rank 0 only.

``tests/test_distributed.py`` shows the gather-then-shape step alone gives 1-process results
on 2 processes; here the whole ``workbench run`` runs in 2 processes and the record is checked:

- exactly one MLflow run (rank 1 records nothing and creates no run);
- every step's dump holds all 12 completions, 3 groups of 4 in TRL's order, each group
  with one prompt; with 6 completions per rank, group 1 spans both ranks;
- the shaped rewards, nu and nu-bar in the dump equal what one process computes from the
  same completions (their verdicts and Phi, read back from the dump);
- a rank-0 failure to open the run (an unreachable server) ends every rank with its
  message instead of leaving rank 1 waiting for a run id.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.loaders import load_dumps, metric_history, runs_table
from trainers.methods.g2rl import G2RL
from trainers.method import StepBatch
from conftest import ONE_UPDATE  # noqa: E402
from workbench.config import build_config, build_method
from workbench.tasks import build_task

BIN = Path(sys.executable).parent
PROMPTS, GENERATIONS, STEPS = 3, 4, 2  # 12 completions a step, 6 per rank: group 1 spans both ranks
# Shrunk for 2 CPU cores as in tests/test_train.py (no evaluation: it runs on rank 0 alone anyway).
OVERRIDES = ["model.warmstart_steps=100", f"training.steps={STEPS}", f"training.prompts_per_step={PROMPTS}",
             f"training.num_generations={GENERATIONS}", "training.max_completion_length=6",
             "eval.initial=false", "eval.final=false", *ONE_UPDATE]
RUN = ["-m", "workbench.cli", "run", "--method", "g2rl", *[a for o in OVERRIDES for a in ("--set", o)]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(launcher: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*launcher, *RUN], cwd=cwd, env=env, capture_output=True, text=True, timeout=540)


@pytest.mark.timeout(600)
def test_accelerate_launch_two_processes_trains_g2rl_recorded_once(store, model_cache, tmp_path):
    launcher = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                "--main_process_port", str(_free_port())]  # on CPU: gloo (DESIGN 8: --cpu would start one)
    proc = _launch(launcher, tmp_path, dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-4000:]

    runs = runs_table("workbench", store)
    assert len(runs) == 1, "rank 1 must not create a run"
    run_id = runs["run_id"].iloc[0]
    assert runs["status"].iloc[0] == "FINISHED"
    assert metric_history(run_id, "train/reward", store)["step"].tolist() == list(range(1, STEPS + 1))

    _check_shaped_as_on_one_process(run_id, store, build_config([{"method": "g2rl"}], OVERRIDES), STEPS)


def _check_shaped_as_on_one_process(run_id: str, store: str, cfg, steps: int) -> None:
    """Every step's dump holds the whole batch in TRL's order, and its shaping equals one process's."""
    task = build_task(cfg.task)
    gold = {p.id: p for p in task.problems("train")}
    dumps = load_dumps(run_id, store)
    assert sorted(dumps["step"].unique()) == list(range(1, steps + 1))
    for step, frame in dumps.groupby("step"):
        frame = frame.sort_index()
        n = PROMPTS * GENERATIONS
        assert len(frame) == n, f"step {step}: {len(frame)} completions, not {n}"
        np.testing.assert_array_equal(frame["group"], np.arange(n) // GENERATIONS)
        np.testing.assert_array_equal(frame["sample"], np.arange(n) % GENERATIONS)
        assert (frame.groupby("group")["prompt_id"].nunique() == 1).all(), "a group mixes prompts"
        for row in frame.itertuples():  # each completion sits beside its own prompt and verdict
            assert row.prompt == gold[row.prompt_id].prompt
            assert row.correct == task.verify(row.completion, gold[row.prompt_id].answer).correct

        # One process, the same completions: shape the whole batch again from what the dump holds.
        batch = StepBatch(groups=frame["group"].to_numpy(), correct=frame["correct"].to_numpy(),
                          has_answer=frame["answer"].notna().to_numpy(),
                          answers=[a if isinstance(a, str) else None for a in frame["answer"]],
                          features=np.stack(frame["grad_feature"].to_numpy()).astype(np.float32),
                          embeddings=np.stack(frame["embedding"].to_numpy()).astype(np.float32))
        single = build_method(cfg).shape(batch)
        np.testing.assert_allclose(frame["shaped_reward"], single.shaped_reward, rtol=0, atol=1e-6)
        np.testing.assert_allclose(frame["nu"], single.scores["nu"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(frame["nu_bar"], single.scores["nu_bar"], rtol=0, atol=1e-6)
        assert frame["shaped_reward"].nunique() > 2, "shaping must be non-trivial for the comparison to mean anything"


@pytest.mark.timeout(300)
def test_a_rank_0_failure_to_open_the_run_stops_every_rank(store, model_cache, tmp_path):
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    launcher = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port())]
    proc = _launch(launcher, tmp_path, {**os.environ, "MLFLOW_TRACKING_URI": dead})
    assert proc.returncode != 0
    assert f"MLflow tracking server {dead} is not reachable" in proc.stderr  # rank 0's own error
    assert "rank 0 could not open the MLflow run (TrackingError: MLflow tracking server" in proc.stderr  # rank 1's
    assert not (tmp_path / "outputs").exists()  # nobody started training


CELL_STEPS = 8  # a checkpoint every step (the default: a tenth of the run), the newest 2 kept
KILL_AT = 4  # the shaping of step 4: checkpoint-3 is saved
CELL = ["-m", "workbench.cli", "sweep", "--methods", f"{__name__}:KillsItsLaunchOnce", "--seeds", "0",
        "--experiment", "cell", *[a for o in OVERRIDES if not o.startswith("training.steps=") for a in ("--set", o)],
        "--steps", str(CELL_STEPS), "--cell", "0"]


class KillsItsLaunchOnce(G2RL):
    """G2RL; in the first launch in a folder, rank 0 SIGKILLs itself when it shapes step ``KILL_AT`` (the launcher
    then stops the other rank): a crash without warning, deterministically mid-run, after a checkpoint."""

    shaped = 0

    def shape(self, batch: StepBatch):
        KillsItsLaunchOnce.shaped += 1
        marker = Path("killed-once")
        if KillsItsLaunchOnce.shaped == KILL_AT and os.environ.get("RANK") == "0" and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().shape(batch)


@pytest.mark.timeout(900)
def test_a_sweep_cell_spans_two_processes_recorded_once_and_resumes_after_a_kill(store, model_cache, tmp_path):
    """``accelerate launch ... sweep --cell 0`` on 2 processes, rank 0 SIGKILLed at step 4, then launched again:
    one run, resumed from its checkpoint, every step once, shaped as one process shapes."""
    from analysis.records import RESUMED_TAG
    from workbench.tracking import client

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    launch = lambda: subprocess.run([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",  # noqa: E731
                                     "--main_process_port", str(_free_port()), *CELL], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=600)
    killed = launch()
    assert killed.returncode != 0 and "Signal 9 (SIGKILL) received" in killed.stderr, killed.stderr[-4000:]
    (run,) = runs_table("cell", store).itertuples()
    assert run.status == "RUNNING"
    run_id = run.run_id

    again = launch()
    assert again.returncode == 0, again.stderr[-4000:]
    runs = runs_table("cell", store)
    assert runs["run_id"].tolist() == [run_id] and runs["status"].tolist() == ["FINISHED"]  # recorded once
    assert client(store).get_run(run_id).data.tags[RESUMED_TAG] == str(KILL_AT - 1), again.stderr[-4000:]
    assert metric_history(run_id, "train/reward", store)["step"].tolist() == list(range(1, CELL_STEPS + 1))
    cfg = build_config([{"method": f"{__name__}:KillsItsLaunchOnce"}], [*OVERRIDES, f"training.steps={CELL_STEPS}"])
    _check_shaped_as_on_one_process(run_id, store, cfg, CELL_STEPS)


# --------------------------------------------------------------------------- GPU cluster configs (parsed, not run)

ACCELERATE_CONFIGS = {  # file -> (distributed type, what shards the weights or None)
    "deepspeed_zero2.yaml": ("DEEPSPEED", None),
    "deepspeed_zero3.yaml": ("DEEPSPEED", "DeepSpeed ZeRO-3"),
    "fsdp.yaml": ("FSDP", "FSDP"),
}
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


def _launch_env(path: Path) -> dict[str, str]:
    """The ACCELERATE_* variables `accelerate launch --config_file path` gives each process (accelerate's own code)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "workbench.cli", "run"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = list(defaults.deepspeed_config)  # as launch_command sets it
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}


def test_every_accelerate_config_is_listed():
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == sorted(ACCELERATE_CONFIGS)


@pytest.mark.parametrize("name", list(ACCELERATE_CONFIGS))
def test_accelerate_configs_parse_and_the_run_accepts_or_refuses_them_up_front(name, monkeypatch):
    from accelerate.commands.config.config_args import ClusterConfig

    from workbench.config import ConfigError
    from workbench.run.train import load_inputs, sharded_weights

    kind, sharding = ACCELERATE_CONFIGS[name]
    config = ClusterConfig.from_yaml_file(CONFIG_DIR / name)  # refuses unknown keys
    assert config.distributed_type.value == kind and config.mixed_precision == "bf16" and not config.use_cpu
    for key, value in _launch_env(CONFIG_DIR / name).items():
        monkeypatch.setenv(key, value)
    assert sharded_weights() == sharding
    g2rl = build_config([{"method": "g2rl"}], ["eval.initial=false", "eval.final=false"])
    if sharding is None:
        load_inputs(g2rl)  # ZeRO-2 keeps the LM head whole: every feature works
    else:
        with pytest.raises(ConfigError, match=f"{sharding} shards the weights, which gradient features"):
            load_inputs(g2rl)
        load_inputs(build_config([{"method": "grpo"}],
                                 ["features.geometry=false", "features.dump_every=0", "eval.initial=false", "eval.final=false", "eval.every=0"]))

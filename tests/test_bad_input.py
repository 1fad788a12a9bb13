"""Bad input: each case stops with a clear error before anything is recorded, or has a defined,
logged behaviour; what a run recorded before the failure is kept.

Cases covered by other test files and not repeated here:

- unknown method / task / preset on ``workbench run`` (exit 2, no run):
  ``test_cli.py::test_bad_input_fails_with_message_and_no_run``; the valid names listed:
  ``test_config.py::test_unknown_names_list_valid_ones``; unknown benchmark on ``workbench eval``:
  ``test_sweep_report.py::test_eval_command_rejects_bad_input_before_loading``;
- negative learning rate, fewer than 2 generations, lambda > 2, tau > 1:
  ``test_config.py::test_bad_values_name_field_value_and_rule``; k > n for pass@k:
  ``test_passk.py::test_pass_at_k_rejects_bad_values`` and ``test_tables_reject_k_above_a_benchmarks_n``;
- malformed data files, by reader: ``test_tasks.py::test_malformed_files_name_the_file_and_place``;
- a stalling symbolic check cut by the time limit: ``test_tasks.py::test_real_sympy_stall_is_cut``;
- a zero gradient feature in nu: ``test_shaping.py::test_nu_zero_feature_explains_nothing``.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SMALL
from trainers.method import Method, Shaped, StepBatch
from workbench.cli import main
from workbench.config import FeaturesConfig, TaskConfig, build_config
from workbench.tracking import NullTracker, client


def _untouched(uri: str) -> bool:
    """Nothing opened the SQLite store of ``uri``, so no run exists (and checking costs no migration)."""
    return not Path(uri.removeprefix("sqlite:///")).exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket closes: nothing listens there


GSM8K_ROW = {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}
FILES = {
    "bad.yaml": "training:\n  steps: 3\n  learning_rate: [1, 2\n",
    "empty.jsonl": "\n",
    "rows.jsonl": json.dumps(GSM8K_ROW) + "\n" + '{"question": "no answer"}\n',
    "latin1.jsonl": '{"question": "caf\u00e9?", "answer": "#### 1"}\n',  # written as Latin-1 below
    "train.jsonl": json.dumps(GSM8K_ROW) + "\n",
}


@pytest.fixture
def files(store, tmp_path):
    """Data and config files in the working directory of the test (the store's folder)."""
    for name, text in FILES.items():
        (tmp_path / name).write_bytes(text.encode("latin-1" if name.startswith("latin1") else "utf-8"))
    return tmp_path


# --------------------------------------------------------------------------- stopped before a run exists


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--config", "bad.yaml"], ["bad.yaml", "not valid YAML at line 4"]),
        (["--set", "g2rl.lam=-0.5"], ["g2rl.lam=-0.5", "greater than or equal to 0"]),
        (["--set", "g2rl.lam=2.5"], ["g2rl.lam=2.5", "less than or equal to 2"]),
        (["--set", "features.tau=-0.1"], ["features.tau=-0.1", "greater than or equal to 0"]),
        (["--set", "training.num_generations=1"], ["training.num_generations=1", "greater than or equal to 2"]),
        (["--set", "eval.benchmarks=[mmlu]"], ["unknown benchmark 'mmlu'", "math500"]),
        (["--task", "gsm8k", "--data", "missing.jsonl"], ["data file missing.jsonl: no such file"]),
        (["--task", "gsm8k", "--data", "empty.jsonl"], ["data file empty.jsonl", "holds no problems"]),
        (["--task", "gsm8k", "--data", "rows.jsonl"], ["data file rows.jsonl: line 2: no 'answer' field"]),
        (["--task", "gsm8k", "--data", "latin1.jsonl"], ["data file latin1.jsonl: not UTF-8 text"]),
        (["--task", "gsm8k", "--data", "train.jsonl"], ["task 'gsm8k' has no test file: set task.test_path"]),
    ],
)
def test_run_stops_before_creating_a_run(store, files, capsys, argv, needles):
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    assert _untouched(store)


def test_batch_that_does_not_split_over_processes_stops_every_rank_first(store, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc_per_node 3 sets it: 2 x 16 completions over 3
    assert main(["run"]) == 2
    assert "32 completions must divide evenly over 3 processes" in capsys.readouterr().err
    assert _untouched(store)


def test_unreachable_tracking_server_stops_before_training(store, capsys, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    started = time.monotonic()
    assert main(["run", "--steps", "1"]) == 2
    assert main(["run", "--resume", "0123456789abcdef0123456789abcdef"]) == 2
    assert time.monotonic() - started < 20
    err = capsys.readouterr().err
    assert err.count(f"MLflow tracking server {url} is not reachable") == 2 and "unset MLFLOW_TRACKING_URI" in err


def test_k_above_n_is_refused_by_the_evaluation_score():
    from workbench.run.evaluation import score

    frame = pd.DataFrame({"step": 0, "benchmark": "b", "problem_id": "p", "sample": range(4),
                          "answer": ["1", "2", "1", "1"], "correct": [True, False, True, True]})
    with pytest.raises(ValueError, match="k=8 is invalid for benchmark 'b', whose smallest problem has n=4"):
        score(frame, ks=[1, 8])


# --------------------------------------------------------------------------- completions the verifier gets


class _Capture(NullTracker):
    """A tracker that keeps the metrics and Parquet tables it is given."""

    run_id = None

    def __init__(self) -> None:
        self.metrics: dict[int, dict[str, float]] = {}
        self.tables: dict[str, object] = {}

    def log_metrics(self, metrics, step):
        self.metrics.setdefault(step, {}).update(metrics)

    def log_parquet(self, frame, artifact_file):
        self.tables[artifact_file] = frame



def _record(texts: list[str], verdicts) -> _Capture:
    """Record one step of ``texts`` (one group) as the trainer does; return what was logged."""
    from trainers.step_record import StepRecord
    from trainers.recorder import StepRecorder

    n = len(texts)
    correct = np.array([v.correct for v in verdicts])
    batch = StepBatch(groups=np.zeros(n, dtype=int), correct=correct,
                      has_answer=np.array([v.answer is not None for v in verdicts]),
                      answers=[v.answer for v in verdicts])
    base = correct.astype(float)
    tracker = _Capture()
    StepRecorder(tracker, FeaturesConfig()).record(StepRecord(
        step=1, advantages=base - base.mean(), batch=batch, shaped=Shaped(base, base),
        timed_out=[v.timed_out for v in verdicts], prompts=["p"] * n, prompt_ids=["0"] * n, texts=texts,
        num_tokens=[len(t) for t in texts]))
    return tracker


def test_a_completion_that_stalls_the_checker_is_cut_counted_wrong_and_logged():
    from trainers.trainer import VerifierReward
    from workbench.tasks import build_task

    verifier = VerifierReward(build_task(TaskConfig(name="math", answer_timeout_s=0.5)))
    texts = [r"\boxed{9^{9^{9^{9}}}}", r"\boxed{5}", "no answer"]  # a tower of powers stalls sympy
    verifier([""] * 3, texts, ["5"] * 3)  # starts the helper process; its start-up is not under a limit
    started = time.monotonic()
    rewards = verifier([""] * 3, texts, ["5"] * 3)
    assert time.monotonic() - started < 4  # 0.5 s limit + 2 s grace at most
    assert rewards == [0.0, 1.0, 0.0]
    assert [v.timed_out for v in verifier.last] == [True, False, False]
    logged = _record(texts, verifier.last).metrics[1]
    assert logged["train/answer_timeouts"] == 1.0 and logged["train/reward"] == pytest.approx(1 / 3)


NON_UTF8 = b"\xff\xfe 12 \xc3(".decode("utf-8", errors="replace")  # how tokenizers decode invalid bytes
ODD_COMPLETIONS = {
    "empty": "",
    "whitespace": " \n\t ",
    "huge text": "x" * 1_000_000,
    "non-UTF-8 bytes": NON_UTF8,
    "control characters": "\x00\x1b[m\u202e\u0000",
    "huge boxed number": r"\boxed{" + "9" * 3000 + "}",
}
GOLD = {"arithmetic": "12", "math": "5", "gsm8k": "5", "gpqa": "A"}


@pytest.mark.parametrize("task_name", list(GOLD))
def test_empty_huge_and_non_utf8_completions_are_judged_not_crashed_on(task_name):
    from workbench.tasks import build_task

    task = build_task(TaskConfig(name=task_name, answer_timeout_s=2.0))
    verdicts = []
    for label, text in ODD_COMPLETIONS.items():
        started = time.monotonic()
        verdict = task.verify(text, GOLD[task_name])
        assert time.monotonic() - started < 10, label  # start-up of the math helper (sympy) included
        assert verdict.correct is False, (label, verdict)
        verdicts.append(verdict)
    tracker = _record(list(ODD_COMPLETIONS.values()), verdicts)
    table = tracker.tables["features/step_000001.parquet"]
    assert table.column("completion").to_pylist() == list(ODD_COMPLETIONS.values())  # written as given


@pytest.mark.parametrize("task_name", ["arithmetic", "gsm8k"])
def test_a_number_of_5000_digits_is_judged_not_crashed_on(task_name):
    from workbench.tasks import build_task

    assert build_task(TaskConfig(name=task_name)).verify("9" * 5000, GOLD[task_name]).correct is False


# Extraction runs before the time limit, so it must itself be linear: one pass matches all braces.
@pytest.mark.parametrize("task_name", ["math", "gsm8k", "gpqa"])
def test_a_completion_that_stalls_answer_extraction_is_cut(task_name):
    from workbench.tasks import build_task

    started = time.monotonic()
    verdict = build_task(TaskConfig(name=task_name, answer_timeout_s=1.0)).verify("\\boxed{" * 10_000, GOLD[task_name])
    assert verdict.correct is False
    assert time.monotonic() - started < 10  # was 28-48 s when every unclosed box rescanned the rest


# --------------------------------------------------------------------------- rewards and features


class NanOnSecondStep(Method):
    """GRPO's rewards, except that the second step's come out NaN (a broken shaping formula)."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.calls = 0

    def shape(self, batch: StepBatch) -> Shaped:
        self.calls += 1
        shaped = super().shape(batch)
        if self.calls == 2:
            return Shaped(shaped.base_reward, np.full(len(batch.groups), np.nan))
        return shaped


def test_nan_rewards_stop_the_run_as_failed_and_keep_what_was_recorded(store, model_cache):
    from analysis.loaders import artifact_steps, metric_history

    argv = ["run", "--method", f"{__name__}:NanOnSecondStep"]
    for item in SMALL:  # 3 steps, shrunk for 2 cores
        argv += ["--set", item]
    with pytest.raises(FloatingPointError, match=r"16 shaped rewards are NaN or infinite \(indices \[0, 1, 2"):
        main(argv)
    (run,) = client(store).search_runs([client(store).get_experiment_by_name("workbench").experiment_id])
    assert run.info.status == "FAILED"
    assert metric_history(run.info.run_id, "train/reward", store)["step"].tolist() == [1]
    assert artifact_steps(run.info.run_id, store) == [1]


def test_infinite_rewards_are_refused_with_their_indices():
    from trainers.geometry import _check_finite

    with pytest.raises(FloatingPointError, match=r"2 shaped rewards are NaN or infinite \(indices \[1, 3\]\)"):
        _check_finite(Shaped(np.zeros(4), np.array([0.0, np.inf, 1.0, -np.inf])))


@pytest.mark.parametrize("method", ["g2rl", "evol_rl"])
def test_zero_gradient_features_and_embeddings_give_defined_scores(method):
    from analysis.geometry import geometry_metrics
    from workbench.config import build_method

    n = 8
    batch = StepBatch(groups=np.arange(n) // 4, correct=np.arange(n) % 3 == 0, has_answer=np.ones(n, bool),
                      answers=["1"] * n, features=np.zeros((n, 16), np.float32),
                      embeddings=np.zeros((n, 8), np.float32))
    shaped = build_method(build_config([{"method": method}])).shape(batch)
    assert np.isfinite(shaped.shaped_reward).all()
    for name, values in shaped.scores.items():
        assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all(), name
    if method == "g2rl":  # a zero direction explains nothing: nu = 1, so nu-bar = 0 and the rewards stay +-1
        np.testing.assert_array_equal(shaped.scores["nu"], 1.0)
        np.testing.assert_array_equal(shaped.shaped_reward, np.where(batch.correct, 1.0, -1.0))
    geometry = geometry_metrics(batch.features, batch.embeddings, batch.groups, batch.correct, tau=0.1)
    assert all(np.isfinite(v) for v in geometry.values())


# --------------------------------------------------------------------------- safety

ROOT = Path(__file__).resolve().parents[1]
UNPICKLING = re.compile(r"import pickle|pickle\.loads?\(|allow_pickle\s*=\s*True|torch\.load\(|read_pickle\(|"
                        r"joblib\.load\(|dill\.|cloudpickle")


def test_nothing_that_reads_run_data_unpickles():
    """Run data is read as Parquet, YAML (safe_load) and JSON; HF checkpoints load with weights_only=True."""
    sources = [p for d in ("analysis", "app", "workbench", "trainers", "notebooks") for p in (ROOT / d).rglob("*")
               if p.suffix in (".py", ".ipynb")]
    assert len(sources) > 20
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sources for m in UNPICKLING.finditer(p.read_text())]
    assert found == []


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "features/../../x", "a\\b", "", "c:/x", "a//b"])
def test_artifact_paths_cannot_leave_the_run(path):
    from workbench.tracking import MlflowTracker, check_artifact_path

    with pytest.raises(ValueError, match="must be relative and stay inside the run's artifacts"):
        check_artifact_path(path)
    with pytest.raises(ValueError):
        MlflowTracker(None, "r").log_text("x", path)  # refused before any store is touched


@pytest.mark.parametrize("run_id", ["../runs", "a/b", "a.b", "", " x", "x" * 300, "abc\n"])
def test_run_ids_that_could_name_another_folder_are_refused(run_id):
    from workbench.tracking import TrackingError, check_run_id

    with pytest.raises(TrackingError, match="is not an MLflow run id"):
        check_run_id(run_id)
    assert check_run_id("0123456789abcdef0123456789abcdef")


def test_the_app_binds_to_localhost_by_default():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"

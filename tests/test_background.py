"""The background worker, the background recorder and the MLflow tracker's writer thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from trainers.background import Background, BackgroundError, BackgroundRecorder
from trainers.method import Shaped, StepBatch
from trainers.step_record import StepRecord
from workbench.tracking import MlflowTracker, experiment_id


def test_calls_run_in_order_on_one_other_thread():
    worker = Background("order", max_pending=2)
    seen, threads = [], set()

    def note(i):
        seen.append(i)
        threads.add(threading.current_thread().name)

    for i in range(50):
        worker.submit(note, i)
    worker.wait()
    assert seen == list(range(50)) and threads == {"order"}
    worker.close()
    ran_on = []
    worker.submit(lambda: ran_on.append(threading.current_thread().name))  # closed: runs at once, here
    assert ran_on == [threading.current_thread().name]


def test_an_error_on_the_worker_is_raised_once_on_the_caller_and_later_calls_still_run():
    worker = Background("errors")
    seen = []

    def fail():
        raise OSError("disk full")

    worker.submit(fail)
    worker.submit(seen.append, 1)
    with pytest.raises(BackgroundError, match="errors: OSError: disk full") as info:
        worker.wait()
    assert isinstance(info.value.__cause__, OSError) and seen == [1]
    worker.wait()  # raised once
    worker.close()


def test_a_full_queue_makes_the_caller_wait():
    worker = Background("slow", max_pending=1)
    gate, seen = threading.Event(), []
    worker.submit(gate.wait)  # running
    worker.submit(seen.append, 1)  # waiting: the queue is full
    blocked = threading.Thread(target=worker.submit, args=(seen.append, 2))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # held until the worker catches up
    gate.set()
    blocked.join(5)
    worker.wait()
    assert seen == [1, 2]
    worker.close()


def _record(step: int, n: int = 4, embeddings=None) -> StepRecord:
    batch = StepBatch(groups=np.arange(n) // 2, correct=np.arange(n) % 2 == 0, has_answer=np.ones(n, bool),
                      answers=["1"] * n, features=np.eye(n, 3), embeddings=embeddings, rewards=np.zeros(n))
    return StepRecord(step=step, batch=batch, shaped=Shaped(np.zeros(n), np.zeros(n)), advantages=np.zeros(n),
                      prompts=["p"] * n, prompt_ids=[""] * n, texts=[f"t{i}" for i in range(n)],
                      num_tokens=[1] * n, timed_out=[False] * n)


class ListRecorder:
    def __init__(self):
        self.records, self.flushes, self.threads = [], 0, set()

    def record(self, record):
        self.threads.add(threading.current_thread().name)
        self.records.append(record)

    def flush(self):
        self.flushes += 1


def test_the_background_recorder_embeds_what_the_step_did_not_and_keeps_each_step():
    inner, texts_seen = ListRecorder(), []

    def embed(texts):
        texts_seen.append(list(texts))
        return np.ones((len(texts), 2), np.float32) / np.sqrt(2)

    recorder = BackgroundRecorder(inner, embed=embed)
    recorder.record(_record(1))
    recorder.record(_record(2, embeddings=np.zeros((4, 2))))  # embedded in the step (EVOL-RL): kept as it is
    recorder.flush()
    assert [r.step for r in inner.records] == [1, 2] and inner.flushes == 1
    assert inner.threads == {"step-recorder"} and texts_seen == [["t0", "t1", "t2", "t3"]]
    assert inner.records[0].batch.embeddings.shape == (4, 2) and inner.records[0].embed_s > 0
    assert not inner.records[1].batch.embeddings.any()
    recorder.close()


@pytest.mark.skipif(__import__("torch").get_num_threads() < 2, reason="needs torch on 2 threads to tell 1 from 2")
def test_the_recorder_encodes_on_one_thread_and_the_training_thread_keeps_its_own():
    import torch

    from trainers.background import WORKER_THREADS

    before, seen, inside, release = torch.get_num_threads(), {}, threading.Event(), threading.Event()

    def embed(texts):
        seen["worker"] = torch.get_num_threads()
        inside.set()
        release.wait(10)
        return np.ones((len(texts), 2), np.float32) / np.sqrt(2)

    recorder = BackgroundRecorder(ListRecorder(), embed=embed)
    recorder.record(_record(1))
    assert inside.wait(10)
    x = torch.randn(512, 512)
    torch.exp(x)  # a parallel op on this thread while the worker is inside its one-thread block
    seen["training, meanwhile"] = torch.get_num_threads()
    release.set()
    recorder.close()
    assert WORKER_THREADS == 1 and seen == {"worker": 1, "training, meanwhile": before}
    assert torch.get_num_threads() == before
    late = {}
    thread = threading.Thread(target=lambda: late.setdefault("n", torch.get_num_threads()))
    thread.start()
    thread.join()
    assert late["n"] == before  # threads started after the block get the default back


def test_the_tracker_writes_from_any_thread_and_a_flush_holds_everything_before_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    tracker = MlflowTracker(client, client.create_run(experiment_id(client, "threads")).info.run_id, flush_s=0)

    def log(key):
        for step in range(1, 21):
            tracker.log_metrics({key: float(step)}, step=step)

    threads = [threading.Thread(target=log, args=(f"train/k{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tracker.log_table({"step": [1], "completion": ["x"]}, "completions.json")
    tracker.flush()
    for i in range(3):
        assert sorted(m.step for m in client.get_metric_history(tracker.run_id, f"train/k{i}")) == list(range(1, 21))
    assert [f.path for f in client.list_artifacts(tracker.run_id)] == ["completions.json"]
    tracker.finish()
    assert client.get_run(tracker.run_id).info.status == "FINISHED"


def test_a_failed_write_surfaces_at_the_next_flush_and_the_run_still_ends(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    tracker = MlflowTracker(client, client.create_run(experiment_id(client, "fail")).info.run_id)

    def broken(*args):
        raise PermissionError("artifact store is read-only")

    tracker.client.log_artifact = broken
    tracker.log_parquet(__import__("pandas").DataFrame({"a": [1]}), "features/step_000001.parquet")
    with pytest.raises(BackgroundError, match="read-only"):
        tracker.flush()
    tracker.log_metrics({"train/reward": 1.0}, step=1)
    tracker.finish()  # what else was logged is written, and the run ends
    assert [m.value for m in client.get_metric_history(tracker.run_id, "train/reward")] == [1.0]
    assert client.get_run(tracker.run_id).info.status == "FINISHED"

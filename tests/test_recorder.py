"""The one step recorder (trainers.recorder): the same record through both sinks, and record names checked
at the first step."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_dumps import _fake_batch

from analysis.records import dump_path
from trainers.recorder import StepRecorder
from trainers.step_record import StepRecord
from workbench.config import FeaturesConfig
from workbench.tracking import NullTracker


@pytest.mark.parametrize(("key", "ok"), [("g2rl/nu_mean", True), ("plugin/x", True), ("train/made_up", False),
                                         ("perf/made_up", False), ("geometry/made_up", False), ("no_family", False)])
def test_an_undeclared_metric_name_fails_at_the_first_step(key, ok):
    """The step's keys come from analysis.records; a method's own metric may not invent a name in a declared family."""
    import dataclasses

    from trainers.step_record import step_metrics

    batch, shaped, text = _fake_batch(n_groups=2, m=4, d=8, e=6)
    shaped = dataclasses.replace(shaped, metrics={key: 1.0})
    record = StepRecord(step=1, batch=batch, shaped=shaped, advantages=np.zeros(len(batch.groups)), **text)
    if ok:
        assert step_metrics(record)[key] == 1.0
    else:
        with pytest.raises(ValueError, match=f"method metric {key!r} is not a record name"):
            step_metrics(record)


def test_both_sinks_record_the_same_metrics_dumps_and_summaries(tmp_path):
    """One recorder pipeline: through the workbench's tracker and through TRL's log (output_dir, no MLflow),
    a step gives the same metrics, the same dump and the same pair summaries."""
    from collections import defaultdict
    from types import SimpleNamespace

    from analysis.records import SUMMARY_PATH
    from trainers.recorder import TrainerLogSink

    class Capture(NullTracker):
        def __init__(self):
            super().__init__()
            self.metrics, self.files = {}, {}

        def log_metrics(self, metrics, step):
            self.metrics.update(metrics)

        def log_parquet(self, frame, artifact_file):
            self.files[artifact_file] = frame

    batch, shaped, text = _fake_batch(n_groups=3, m=4, d=8, e=6)
    record = StepRecord(step=1, batch=batch, shaped=shaped, advantages=np.linspace(-1, 1, len(batch.groups)), **text)
    features = FeaturesConfig(dump_every=1)
    tracker = Capture()
    workbench = StepRecorder(tracker, features, seed=3)
    trainer = SimpleNamespace(_metrics={"train": defaultdict(list)},
                              args=SimpleNamespace(report_to="none", output_dir=str(tmp_path)))
    trl = StepRecorder(TrainerLogSink(trainer), features, seed=3)
    assert workbench.background and not trl.background  # TRL logs at its own step: recorded in the step
    for recorder in (workbench, trl):
        recorder.record(record)
        recorder.flush()
    assert {k: v[0] for k, v in trainer._metrics["train"].items()} == tracker.metrics
    for path in (dump_path(1), SUMMARY_PATH):
        assert pq.read_table(tmp_path / path).equals(tracker.files[path]), path

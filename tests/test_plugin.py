"""A researcher's own method, in their own module, runs without editing this package."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from analysis.loaders import load_dumps, runs_table
from conftest import SMALL
from trainers.registry import resolve_method
from workbench.cli import main
from workbench.registry import UnknownNameError

PLUGIN = textwrap.dedent('''
    import numpy as np
    from trainers.method import Method, Shaped, StepBatch

    class NoAnswerPenalty(Method):
        """Verifier reward, minus 0.5 when no answer could be extracted."""

        score_columns = ("novelty",)

        def shape(self, batch: StepBatch) -> Shaped:
            base = batch.correct.astype(float)
            shaped = base - 0.5 * ~batch.has_answer
            return Shaped(base_reward=base, shaped_reward=shaped, scores={"novelty": np.full(len(base), 0.25)},
                          metrics={"plugin/no_answer": float((~batch.has_answer).mean())})

    class NotAMethod:
        pass
''')


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "my_methods.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_methods"
    sys.modules.pop("my_methods", None)


def test_module_path_resolves_and_is_checked(plugin_module):
    assert resolve_method("my_methods:NoAnswerPenalty").__name__ == "NoAnswerPenalty"
    with pytest.raises(UnknownNameError, match="not a subclass"):
        resolve_method("my_methods:NotAMethod")
    with pytest.raises(UnknownNameError, match="has no attribute"):
        resolve_method("my_methods:Missing")


def test_plugin_trains_and_records_its_rewards(store, model_cache, plugin_module):
    argv = ["run", "--method", "my_methods:NoAnswerPenalty", "--experiment", "plugin"]
    for override in SMALL:
        argv += ["--set", override]
    assert main(argv) == 0
    runs = runs_table("plugin", store)
    assert runs["method"].tolist() == ["my_methods:NoAnswerPenalty"]
    dumps = load_dumps(runs["run_id"].iloc[0], store)
    expected = dumps["correct"].astype(float) - 0.5 * dumps["answer"].isna()
    np.testing.assert_allclose(dumps["shaped_reward"], expected)
    assert (dumps["novelty"] == 0.25).all()
    assert "metric.plugin/no_answer" in runs.columns

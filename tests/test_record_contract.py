"""The record contract (DESIGN 6): what a real sweep writes is what ``analysis.records`` declares.

One small real sweep (grpo and g2rl, 3 steps, a final evaluation) is read back
through ``MlflowClient``: the parent run and its children, the datasets, the
completion table, every artifact path, column, metric key and tag. A source scan
checks that readers (loaders, app, notebooks) spell no record name themselves.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from analysis import records
from conftest import SMALL
from workbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3


@pytest.fixture
def sweep_store(store, model_cache):
    # semantic_every=1: every step embeds, so the check below sees whether the worker records every step it embeds.
    settings = [*SMALL, "eval.final=true", "eval.n=2", "eval.max_problems=4", "features.dump_every=2",
                "features.semantic_every=1"]
    argv = ["sweep", "--methods", "grpo,g2rl", "--seeds", "0", "--experiment", "contract"]
    assert main([*argv, *(a for s in settings for a in ("--set", s))]) == 0
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("contract").experiment_id])
    return client, runs


def _files(client, run_id, path=None):
    for f in client.list_artifacts(run_id, path):
        yield from _files(client, run_id, f.path) if f.is_dir else [f.path]


def test_a_sweep_is_a_parent_run_whose_cells_carry_datasets_and_completion_tables(sweep_store):
    client, runs = sweep_store
    parents = [r for r in runs if r.data.tags.get(records.KIND_TAG) == records.SWEEP_KIND]
    cells = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(cells) == 2
    assert {r.data.tags[records.PARENT_TAG] for r in cells} == {parents[0].info.run_id}
    for run in cells:
        inputs = {(d.dataset.name, tuple(t.value for t in d.tags)) for d in run.inputs.dataset_inputs}
        assert inputs == {("countdown-train", ("training",)), ("countdown_test", ("evaluation",))}
        assert all(d.dataset.digest for d in run.inputs.dataset_inputs)
        table = json.loads(Path(client.download_artifacts(run.info.run_id, records.COMPLETIONS_TABLE)).read_text())
        assert tuple(table["columns"]) == records.COMPLETION_COLUMNS
        steps = [row[0] for row in table["data"]]
        assert sorted(set(steps)) == list(range(1, STEPS + 1))  # every logged step, one group (4 samples) each
        assert all(steps.count(s) == 4 for s in set(steps))
        logged = json.loads(run.data.tags["mlflow.loggedArtifacts"])
        assert {"path": records.COMPLETIONS_TABLE, "type": "table"} in logged


def test_what_a_run_writes_is_what_the_record_module_declares(sweep_store):
    client, runs = sweep_store
    cells = [r for r in runs if r.data.tags.get(records.KIND_TAG) != records.SWEEP_KIND]
    for run in cells:
        run_id = run.info.run_id
        files = list(_files(client, run_id))
        steps = {records.parse_step_path(f) for f in files} - {None}
        assert set(files) == {records.CONFIG_ARTIFACT, records.COMPLETIONS_TABLE, records.SUMMARY_PATH} | {
            records.step_path(folder, step) for folder, step in steps}
        assert {s for f, s in steps if f == records.FEATURES_DIR} == {1, 2}  # dump_every=2: step 1, then every 2
        assert {s for f, s in steps if f == records.EVAL_DIR} == {STEPS}
        dump = pq.read_table(client.download_artifacts(run_id, records.dump_path(1)))
        assert dump.schema.equals(records.dump_schema()), dump.schema
        evaluation = pq.read_table(client.download_artifacts(run_id, records.eval_path(STEPS)))
        assert tuple(evaluation.column_names) == records.EVAL_COLUMNS
        assert evaluation.schema.equals(records.eval_schema()), evaluation.schema
        sections = [run.data.tags[records.METHOD_TAG]]
        undeclared = [k for k in run.data.metrics if not records.is_declared_metric(k, sections)]
        assert undeclared == []
        for key in run.data.metrics:
            assert client.get_metric_history(run_id, key)[0].step in range(STEPS + 1)
        # The recorder's worker embeds the texts after the step: the semantic metrics still carry every step.
        semantic = client.get_metric_history(run_id, records.geometry_key("sem_cos_mean"))
        assert sorted(m.step for m in semantic) == list(range(1, STEPS + 1))
        assert dump.column("embedding").null_count == 0
        tags = {k for k in run.data.tags if not k.startswith("mlflow.")}
        assert tags <= set(records.RUN_TAGS), tags - set(records.RUN_TAGS)


def test_a_metric_outside_the_record_is_not_declared():
    assert records.is_declared_metric("geometry/correct_correct/neg_frac")
    assert records.is_declared_metric("eval/aime25/pass_at_16")
    assert records.is_declared_metric("g2rl/nu_mean", ["g2rl"])
    for key in ("train/rewards", "geometry/neg_fraction", "geometry/correct_wrong/neg_frac", "eval/aime25/pass@16",
                "g2rl/nu_mean", "perf/"):
        assert not records.is_declared_metric(key, ["evol_rl"]), key
    with pytest.raises(ValueError, match="train/rewards is not a declared metric"):
        records.metric_key("train", "rewards")


# Record names that a reader must take from analysis.records rather than spell: artifact files and tags.
_RECORD_NAME = re.compile(r"\b(features|eval)/step_|step_\d|completions\.json|config\.yaml|summary/pairs|"
                          r"^workbench\.[a-z_]+$|"
                          r"^mlflow\.parentRunId$")
_METRIC = re.compile(r"^(train|geometry|perf|probe)/[a-z_/]+$")
READERS = ["analysis/loaders.py", "analysis/compare.py", "analysis/report.py", "analysis/study.py",
           "analysis/passk.py", "analysis/geometry.py", "analysis/paired.py", "analysis/study_values.py",
           "analysis/study_tables.py", *(str(p.relative_to(ROOT)) for p in (ROOT / "app").rglob("*.py"))]


def _strings(path: Path):
    """String constants of a source file or of a notebook's code cells (docstrings left out)."""
    if path.suffix == ".ipynb":
        sources = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    else:
        sources = [path.read_text()]
    for source in sources:
        tree = ast.parse(source)
        docstrings = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(
            n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body and isinstance(n.body[0], ast.Expr)}
        yield from (n.value for n in ast.walk(tree)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings)


@pytest.mark.parametrize("reader", READERS + [str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.ipynb")])
def test_readers_take_record_names_from_the_record_module(reader):
    """No reader spells an artifact path or a tag; every metric name it spells is a declared one."""
    strings = list(_strings(ROOT / reader))
    spelled = [s for s in strings if _RECORD_NAME.search(s)]
    assert spelled == [], f"{reader} spells record names {spelled}: import them from analysis.records"
    metrics = [s for s in strings if _METRIC.match(s)]
    assert [m for m in metrics if not records.is_declared_metric(m)] == []

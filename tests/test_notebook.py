"""notebooks/feature_analysis.ipynb runs top to bottom against an experiment of real short runs.

The experiment holds a grpo and a g2rl run made here, plus a run that stopped before its first
step (no dumps, no metrics), which the notebook must skip with a notice rather than fail on.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.config import build_config
from workbench.run.launch import start_tracker
from workbench.run.train import train

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "feature_analysis.ipynb"
EXPERIMENT = "notebook"
CELL_TIMEOUT = 300  # seconds per cell, cold imports on 2 slow cores included

from conftest import SMALL  # noqa: E402


def test_committed_notebook_has_no_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert any("parameters" in c["metadata"].get("tags", []) for c in code)


def test_notebook_runs_top_to_bottom(store, model_cache, monkeypatch):
    import nbformat
    from mlflow.tracking import MlflowClient
    from nbclient import NotebookClient

    from workbench.tracking import experiment_id

    for method in ("grpo", "g2rl"):
        cfg = build_config([{"method": method}], [*SMALL, f"tracking.experiment={EXPERIMENT}"])
        tracker = start_tracker(cfg)
        train(cfg, tracker)
        tracker.finish()
    client = MlflowClient(tracking_uri=store)
    crashed = client.create_run(experiment_id(client, EXPERIMENT), run_name="crashed",
                                tags={"method": "g2rl", "seed": "1"})
    client.set_terminated(crashed.info.run_id, status="FAILED")

    # The kernel inherits this environment: the notebook's parameter cell reads it.
    monkeypatch.setenv("TRACKING_URI", store)
    monkeypatch.setenv("EXPERIMENT", EXPERIMENT)
    monkeypatch.setenv("PLOTLY_RENDERER", "json")  # figures as plain JSON, without the 4 MB plotly.js bundle
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()  # raises on any cell error

    text = "\n".join(
        out.get("text", "") if out["output_type"] == "stream" else str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert f"tracking URI: {store}" in text
    assert "skipping crashed (g2rl, seed 1): no feature dumps" in text
    assert "2 runs with dumps, 1 skipped" in text
    figures = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
               if "application/vnd.plotly.v1+json" in out.get("data", {}) or "application/json" in out.get("data", {})]
    assert len(figures) == 4, "panels (a), (b), (c) and (d)"
    table = nb.cells[-1].outputs[-1]["text"]
    assert "paper_neg_frac" in table and "grpo" in table and "g2rl" in table and "5.9 %" in table, table
    print(table)  # visible with pytest -s: the measured numbers of these 3-step runs



def test_notebook_shows_probes(tmp_path, monkeypatch):
    """With SOURCE=probes the notebook reads the probe runs of a synthetic store (tests/app_store.py), by method."""
    import nbformat
    from app_store import add_probes, build_store
    from nbclient import NotebookClient

    uri = build_store(tmp_path / "store", methods=("grpo", "g2rl"), seeds=(0,), steps=4, eval_steps=(4,),
                      problems=4, scratch=False)
    add_probes(uri, step=4)
    monkeypatch.setenv("TRACKING_URI", uri)
    monkeypatch.setenv("EXPERIMENT", "workbench")
    monkeypatch.setenv("SOURCE", "probes")
    monkeypatch.setenv("PLOTLY_RENDERER", "json")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
                     if out["output_type"] == "stream")
    assert "2 probe runs and 2 other runs; showing the probes" in text
    assert "2 runs with dumps, 0 skipped" in text
    assert "probe-grpo-0 (grpo, seed 0): 1 steps, 32 completions" in text
    table = nb.cells[-1].outputs[-1]["text"]
    assert "grpo" in table and "g2rl" in table and "28.1 %" in table, table

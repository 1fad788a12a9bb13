"""``workbench study --config FILE``: the whole comparison of DESIGN 10 in one resumable command.

It trains arms x seeds (:mod:`workbench.study_spec` reads the file), probes each
finished cell's final checkpoint, and writes the report folder
(:mod:`workbench.study_report`). The cells run through the sweep's machinery
(:func:`workbench.sweep.run_cells`): a cell is identified by its method, seed,
config hash and its arm's tag ``workbench.arm``, so running the same study
again skips finished cells, resumes killed ones and reruns failed ones, and
probes are skipped where a finished probe of that benchmark exists
(:func:`workbench.probe.probe_runs`). In MLflow the cells are nested under the
experiment's one parent run tagged ``workbench.kind=study``, which running the
study again reuses. ``--report-only`` rewrites the report from the store and
trains nothing.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from workbench.study_spec import Study, load_study
from workbench.sweep import CellResult, TrainFn, run_cells, summary_table
from analysis.records import ARM_TAG, STUDY_KIND


def run_study(study: Study, *, train_fn: TrainFn | None = None, console=None) -> tuple[list[CellResult], list]:
    """Train every cell not yet finished, then probe every finished cell; (cell results, probe results)."""
    from workbench.probe import probe_runs

    results = run_cells(study.cells, study.experiment, train_fn=train_fn, console=console,
                        tags=[{ARM_TAG: arm} for arm in study.cell_arms], kind=STUDY_KIND)
    if study.probe is None:
        return results, []
    done = [r.run_id for r in results if r.status in ("finished", "resumed", "skipped") and r.run_id]
    options = {k: v for k, v in study.probe.items() if k != "benchmark"}
    return results, probe_runs(done, study.probe["benchmark"], console=console, **options)


def _check_probe(study: Study) -> None:
    """A bad probe benchmark or file fails before anything trains."""
    from workbench.probe import ProbeSource, load_problems

    if study.probe is not None:
        cfg = study.cells[0]
        load_problems(ProbeSource("", 0, cfg, "", cfg.model.preset), study.probe["benchmark"],
                      study.probe["data_dir"], 1)


def _check_recorded(study: Study, uri: str) -> None:
    """``--report-only`` needs finished runs of the study's arms; otherwise it would overwrite a report
    with an empty one (a wrong ``MLFLOW_TRACKING_URI``, say)."""
    from analysis.loaders import runs_table
    from analysis.study import study_runs
    from workbench.config import ConfigError

    train, _ = study_runs(runs_table(study.experiment, uri), [a.name for a in study.arms])
    if train.empty:
        raise ConfigError(f"--report-only: experiment {study.experiment!r} at {uri} has no finished runs of this "
                          f"study's arms, so {study.report_dir} is left as it is; run `workbench study --config "
                          f"{study.path}` first, or set MLFLOW_TRACKING_URI to the store that holds them")


def add_study_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("study", help="the whole comparison: arms x seeds, probes and a report folder "
                                            "(resumable; configs/study-default.yaml)")
    p.add_argument("--config", required=True, metavar="FILE.yaml",
                   help="study file: a run config plus arms, seeds, probe, experiment, report_dir")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the store; train nothing")
    p.add_argument("--report-dir", metavar="DIR", help="write the report here (default: the file's report_dir)")
    p.set_defaults(func=cmd_study)
    return p


def cmd_study(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from rich.console import Console

    from workbench.signals import sigterm_as_interrupt
    from workbench.study_report import write_study_report
    from workbench.tracking import tracking_uri

    study = load_study(args.config)  # every arm's config checked before anything is recorded
    if args.report_dir:
        study = replace(study, report_dir=Path(args.report_dir))
    command = shlex.join(["workbench", "study", "--config", args.config,
                          *(["--report-dir", args.report_dir] if args.report_dir else [])])
    console = Console(stderr=True)
    wall_s = None
    failed = 0
    if not args.report_only:
        _check_probe(study)
        console.print(f"Study: {len(study.arms)} arms x {len(study.seeds)} seeds = {len(study.cells)} cells in "
                      f"experiment {study.experiment!r} at {tracking_uri()}")
        t0 = time.perf_counter()
        with sigterm_as_interrupt():
            results, probed = run_study(study, console=console)
        wall_s = time.perf_counter() - t0
        Console().print(summary_table(results, study.experiment))
        failed = sum(r.status == "failed" for r in results) + sum(p[1] == "failed" for p in probed)
    if args.report_only:
        _check_recorded(study, tracking_uri())
    paths = write_study_report(study, tracking_uri(), command=command, wall_s=wall_s)
    print("wrote " + ", ".join(str(p) for p in paths))
    if failed:
        print(f"{failed} cell(s) or probe(s) failed; run the same command again to rerun only those.",
              file=sys.stderr)
        return 1
    return 0

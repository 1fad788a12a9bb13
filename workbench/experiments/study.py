"""``workbench study --config FILE``: the whole comparison of DESIGN 10 in one resumable command.

It trains arms x seeds (:mod:`workbench.experiments.study_spec` reads the file), probes each
finished cell's final checkpoint, and writes the report folder
(:mod:`workbench.experiments.study_report`). The cells run through the sweep's machinery
(:func:`workbench.experiments.sweep.run_cells`): a cell is identified by its method, seed,
config hash and its arm's tag ``workbench.arm``, so running the same study
again skips finished cells, resumes killed ones and reruns failed ones, and
probes are skipped where a finished probe of that benchmark exists
(:func:`workbench.experiments.probe.probe_runs`). In MLflow the cells are nested under the
experiment's one parent run tagged ``workbench.kind=study``, which running the
study again reuses. ``--report-only`` rewrites the report from the store and
trains nothing.

``jobs: N`` in the file (or ``--jobs N``) trains N cells at once, each shard of
cells (cell k goes to shard k mod N) in its own ``workbench study --shard J/N``
process: the tiny preset trains on one CPU thread, so on 2 cores two shards take
about half the time of one. The model is built (warm-started) once before the
shards start; shard 0 prints to the terminal, the others to
``outputs/<experiment>/shard-<J>.log``. When all have ended the command visits
every cell once more in this process (finished ones are skipped, a failed one is
trained again) and writes the report.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from workbench.config import ConfigError
from workbench.experiments.study_spec import Study, load_study
from workbench.experiments.sweep import CellResult, TrainFn, run_cells, summary_table
from analysis.records import ARM_TAG, STUDY_KIND


def run_study(study: Study, *, train_fn: TrainFn | None = None, console=None,
              cells: list[int] | None = None) -> tuple[list[CellResult], list]:
    """Train every cell (of ``cells``, default all) not yet finished, then probe every finished one;
    (cell results, probe results)."""
    from workbench.experiments.probe import probe_runs

    results = run_cells(study.cells, study.experiment, train_fn=train_fn, console=console, cells=cells,
                        tags=[{ARM_TAG: arm} for arm in study.cell_arms], kind=STUDY_KIND)
    if study.probe is None:
        return results, []
    done = [r.run_id for r in results if r.status in ("finished", "resumed", "skipped") and r.run_id]
    options = {k: v for k, v in study.probe.items() if k != "benchmark"}
    return results, probe_runs(done, study.probe["benchmark"], console=console, **options)


def shard_cells(study: Study, shard: int, jobs: int) -> list[int]:
    """The cells of shard ``shard`` of ``jobs``: every ``jobs``-th cell from cell ``shard``."""
    return list(range(shard, len(study.cells), jobs))


def parse_shard(text: str) -> tuple[int, int]:
    """``"J/N"`` -> (J, N), with 0 <= J < N."""
    j, _, n = text.partition("/")
    if not (j.isdigit() and n.isdigit() and 0 <= int(j) < int(n)):
        raise ConfigError(f"--shard {text!r}: give J/N with 0 <= J < N, e.g. --shard 0/2")
    return int(j), int(n)


def run_shards(study: Study, jobs: int, console) -> list[int]:
    """Build the model once, then train the study's cells in ``jobs`` processes; their exit codes."""
    import subprocess
    from pathlib import Path

    from workbench.models.presets import PRESETS
    from workbench.tracking import client, experiment_id, find_or_create_parent

    for preset in dict.fromkeys(cfg.model.preset for cfg in study.cells):  # a shared cache, built by one process
        if preset != "path":
            PRESETS.get(preset).load(next(c for c in study.cells if c.model.preset == preset))
    c = client()
    find_or_create_parent(c, experiment_id(c, study.experiment), STUDY_KIND, study.experiment)
    logs = Path("outputs") / study.experiment
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for j in range(jobs):
        argv = [sys.executable, "-m", "workbench.cli", "study", "--config", study.path, "--shard", f"{j}/{jobs}"]
        out = None if j == 0 else open(logs / f"shard-{j}.log", "w")  # noqa: SIM115  closed below
        procs.append((subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT if out else None), out))
        if out is not None:
            console.print(f"shard {j}/{jobs}: {len(shard_cells(study, j, jobs))} cells, log {out.name}")
    codes = []
    try:
        for proc, out in procs:
            codes.append(proc.wait())
            if out is not None:
                out.close()
    except KeyboardInterrupt:
        for proc, _ in procs:
            proc.terminate()
        raise
    return codes


def _check_probe(study: Study) -> None:
    """A bad probe benchmark or file fails before anything trains."""
    from workbench.experiments.probe import ProbeSource, load_problems

    if study.probe is not None:
        cfg = study.cells[0]
        load_problems(ProbeSource("", 0, cfg, "", cfg.model.preset), study.probe["benchmark"],
                      study.probe["data_dir"], 1)


def _check_recorded(study: Study, uri: str) -> None:
    """``--report-only`` needs finished runs of the study's arms; otherwise it would overwrite a report
    with an empty one (a wrong ``MLFLOW_TRACKING_URI``, say)."""
    from analysis.loaders import runs_table
    from analysis.study import study_runs

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
    p.add_argument("--jobs", type=int, metavar="N", help="cells trained at once, one process each "
                                                         "(default: the file's jobs, else 1)")
    p.add_argument("--shard", metavar="J/N", help=argparse.SUPPRESS)  # one process of --jobs N
    p.set_defaults(func=cmd_study)
    return p


def cmd_study(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from rich.console import Console

    from workbench.signals import sigterm_as_interrupt
    from workbench.experiments.study_report import write_study_report
    from workbench.tracking import tracking_uri

    study = load_study(args.config)  # every arm's config checked before anything is recorded
    if args.jobs is not None:
        if args.jobs < 1:
            raise ConfigError(f"--jobs {args.jobs} must be >= 1")
        study = replace(study, jobs=args.jobs)
    if args.shard:
        shard, jobs = parse_shard(args.shard)
        with sigterm_as_interrupt():
            results, probed = run_study(study, console=Console(stderr=True), cells=shard_cells(study, shard, jobs))
        return int(any(r.status == "failed" for r in results) or any(p[1] == "failed" for p in probed))
    if args.report_dir:
        study = replace(study, report_dir=Path(args.report_dir))
    command = shlex.join(["workbench", "study", "--config", args.config,
                          *(["--report-dir", args.report_dir] if args.report_dir else [])])
    console = Console(stderr=True)
    wall_s = None
    failed = 0
    if not args.report_only:
        _check_probe(study)
        console.print(f"Study: {study.grid_text()} = {len(study.cells)} cells in "
                      f"experiment {study.experiment!r} at {tracking_uri()}")
        t0 = time.perf_counter()
        with sigterm_as_interrupt():
            if study.jobs > 1:
                run_shards(study, study.jobs, console)
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

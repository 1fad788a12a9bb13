"""``workbench sync``: write what a run left in its spool into the same MLflow run, each record once.

A run's tracker spools every record before the store gets it (:mod:`workbench.tracking.spool`); a process
that ended while the store did not answer (or was killed) leaves the rest in
``<run folder>/spool/``. :func:`sync_run` writes those records in the order logged, the run's
status last, with :func:`workbench.tracking.replay.deliver`: each window of records is journaled before
and after, and a record whose write was started but not acknowledged is checked against the store
before it is written again. A sync killed halfway therefore loses nothing and doubles nothing: the
next one goes on where it stopped. A session still locked by a live process is left alone.

``workbench run --resume`` and ``workbench sweep`` call :func:`sync_run` on a stopped run before
they decide what to do with it, since its spool may hold its last steps and its status.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from analysis.records import CHECKPOINT_TAG, DEFAULT_OUTPUT_DIR

SHOW_FROM = 20
"""A spool with more records than this shows a progress bar while it is written."""


@dataclass
class SyncReport:
    """What :func:`sync_run` did for one run."""

    run_id: str
    written: int = 0  # records written to the store now
    in_doubt: int = 0  # of which had been started before (checked against the store first)
    refused: list[str] = field(default_factory=list)  # "record N (kind): reason" the store refused
    busy: list[str] = field(default_factory=list)  # sessions a live process still writes
    status: str | None = None  # the status written, if the spool held one


def run_folder_of(run_id: str, tags: dict[str, str], output_dir: str | Path = DEFAULT_OUTPUT_DIR) -> Path:
    """Where run ``run_id`` keeps its folder: the one it tagged (``workbench.checkpoint_dir``), else
    ``output_dir/<run id>``."""
    tagged = tags.get(CHECKPOINT_TAG)
    if tagged and Path(tagged).name == run_id and Path(tagged).is_dir():
        return Path(tagged)
    return Path(output_dir) / run_id


def has_spool(run_folder: Path) -> bool:
    from workbench.tracking.spool import sessions, spool_folder

    return bool(sessions(spool_folder(run_folder)))


def sync_run(mlflow_client, run_id: str, run_folder: Path, *, show: bool = True) -> SyncReport:
    """Write the spool of run ``run_id`` in ``run_folder`` to ``mlflow_client``'s store, oldest session first.

    Raises TrackingError where a session was spooled for another run or store, and where the store stops
    answering (what is written stays written; the next sync goes on from there).
    """
    from workbench.tracking.replay import Outage, deliver, windows
    from workbench.tracking.spool import Session, SpoolBusy, sessions, spool_folder
    from workbench.tracking import TrackingError

    report = SyncReport(run_id)
    uri = mlflow_client._tracking_client.tracking_uri
    for folder in sessions(spool_folder(run_folder)):
        try:
            session = Session.open(folder)
        except SpoolBusy as err:
            report.busy.append(str(err))
            continue
        try:
            if session.run_id != run_id or session.tracking_uri != uri:
                raise TrackingError(
                    f"spool session {folder} holds records of run {session.run_id} for the tracking store "
                    f"{session.tracking_uri}, not of run {run_id} for {uri}; set MLFLOW_TRACKING_URI="
                    f"{session.tracking_uri} (and run from the folder the run was started in) to write it there")
            items = session.pending()
            report.in_doubt += sum(item.in_doubt for item in items)
            with _shown(f"sync {run_id[:12]}: {folder.name}", len(items), show) as bar:
                for window in windows(items):
                    try:
                        refused = deliver(mlflow_client, run_id, session, window)
                    except Outage as err:
                        raise TrackingError(
                            f"the tracking store {uri} stopped answering after {report.written} records of run "
                            f"{run_id} ({err}); run `workbench sync {run_id}` again once it answers: it goes on "
                            "where it stopped") from err
                    report.written += len(window)
                    report.refused += [f"record {item.seq} ({item.kind}): {reason}" for item, reason in refused]
                    report.status = next((i.payload["status"] for i in window if i.kind == "status"), report.status)
                    bar.advance(len(window))
        finally:
            session.close()
        session.remove()
    return report


class _Quiet:
    def advance(self, k: int = 1, **fields: float) -> None: ...


def _shown(description: str, total: int, show: bool):
    import contextlib

    from workbench.progress import progress

    if show and total > SHOW_FROM:
        return progress(description, total)
    return contextlib.nullcontext(_Quiet())


# --------------------------------------------------------------------------- CLI


def add_sync_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sync", help="write what runs left in their spool (the tracking store did not "
                                           "answer) into the same MLflow runs")
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="runs whose spool to write")
    p.add_argument("--all", action="store_true", help="every run with a spool under --output-dir")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR,
                   help="the folder holding the runs' folders (training.output_dir; default %(default)s)")
    p.set_defaults(func=cmd_sync)
    return p


def spooled_runs(output_dir: Path) -> list[str]:
    """The ids of the runs with a spool under ``output_dir``, sorted."""
    from workbench.tracking import check_run_id

    if not output_dir.is_dir():
        return []
    found = []
    for folder in sorted(output_dir.iterdir()):
        if folder.is_dir() and has_spool(folder):
            found.append(check_run_id(folder.name))
    return found


def cmd_sync(args: argparse.Namespace) -> int:
    from workbench.config import ConfigError
    from workbench.tracking import TrackingError, check_run_id, client, get_run, tracking_uri

    output_dir = Path(args.output_dir)
    if args.all and args.run_ids:
        raise ConfigError(f"--all writes every spool under {output_dir}; give RUN_IDs or --all, not both")
    if not args.all and not args.run_ids:
        raise ConfigError("name the runs to write (workbench sync RUN_ID ...), or give --all for every run "
                          f"with a spool under {output_dir}")
    run_ids = spooled_runs(output_dir) if args.all else [check_run_id(r) for r in args.run_ids]
    if args.all and not run_ids:
        print(f"No spool under {output_dir}: every run's record is in its store.", file=sys.stderr)
        return 0
    c = client()
    folders = {}
    for run_id in run_ids:  # every run checked before any is written
        tags = get_run(c, run_id).data.tags
        folder = output_dir / run_id if has_spool(output_dir / run_id) else run_folder_of(run_id, tags, output_dir)
        if not has_spool(folder):
            raise TrackingError(f"run {run_id} has no spool in {folder / 'spool'}: nothing to write (its record is "
                                "in the store already, or it ran from another folder: give that folder's "
                                "training.output_dir with --output-dir)")
        folders[run_id] = folder
    failed = 0
    for run_id, folder in folders.items():
        report = sync_run(c, run_id, folder)
        status = f", status {report.status}" if report.status else ""
        checked = f" ({report.in_doubt} checked against the store first)" if report.in_doubt else ""
        print(f"run {run_id}: {report.written} records written to {tracking_uri()}{checked}{status}")
        for line in report.refused + report.busy:
            print(f"  {line}", file=sys.stderr)
        failed += bool(report.refused or report.busy)
    return 1 if failed else 0

"""A run's local spool: what its tracker logged, on disk, in order, until the tracking store holds it.

:class:`~workbench.tracking.MlflowTracker` writes every record of a run (parameters, tags, metrics,
table rows, text and Parquet artifacts, datasets, and last the run's status) to a spool folder
first, and a sender thread (:mod:`workbench.tracking.sender`) writes it from there to MLflow. Where the
store cannot be reached, records wait in the spool and training goes on; ``workbench sync RUN_ID``
(:mod:`workbench.tracking.sync`) replays what a process left behind.

Layout: ``<run folder>/spool/<session>/`` (the run folder is ``training.output_dir/<run id>``, by
default ``outputs/<run id>``), one session per process that wrote the run, named
``<time in ns>-<pid>`` so that sessions sort in the order they started. A session holds

- ``session.json``: the run id and the tracking URI the records are for, the host and pid;
- ``<seq>.json``: one record (:class:`Item`), numbered from 1 in the order it was logged, written
  whole or not at all (a temporary file, then a rename); ``<seq>.parquet``: its data, if any;
- ``journal``: a line ``start <seq> ...`` before a record is written to the store, ``done <seq> ...``
  after the store acknowledged it, ``failed <seq> <reason>`` for a record the store refused;
- ``lock``: held (``fcntl.flock``) by the process writing the session, so no replay touches it.

A record is pending until the journal says ``done`` or ``failed``; a pending record with a ``start``
line is *in doubt*: its write may have reached the store before the process stopped or the answer
was lost. :mod:`workbench.tracking.replay` checks the store before writing such a record again, so each
record reaches the store once. A session whose records are all done is removed.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPOOL_DIR = "spool"
"""The spool's folder inside a run's folder."""
KINDS = ("params", "tags", "metrics", "table", "text", "artifact", "dataset", "status")
"""What a record holds, one MLflow write each: see :func:`workbench.tracking.replay.send`."""
SESSION_FILE = "session.json"
JOURNAL = "journal"
LOCK = "lock"


class SpoolError(RuntimeError):
    """A spool folder that cannot be used; the message names it and the fix."""


class SpoolBusy(SpoolError):
    """Another live process holds the session's lock."""


@dataclass
class Item:
    """One spooled record: ``kind`` (one of :data:`KINDS`), its ``payload`` (JSON), its data file."""

    seq: int
    kind: str
    payload: dict[str, Any]
    data: Path | None = None
    in_doubt: bool = False  # its write was started before and may have reached the store


def spool_folder(run_folder: Path) -> Path:
    """The spool folder of a run whose folder (``training.output_dir/<run id>``) is ``run_folder``."""
    return Path(run_folder) / SPOOL_DIR


def sessions(spool: Path) -> list[Path]:
    """The session folders of a spool, oldest first; [] when there is no spool."""
    if not spool.is_dir():
        return []
    return sorted(p for p in spool.iterdir() if p.is_dir() and (p / SESSION_FILE).is_file())


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays as Python values (``.item()``, ``.tolist()``)."""
    for name in ("item", "tolist"):
        if callable(convert := getattr(value, name, None)):
            return convert()
    raise TypeError(f"cannot spool a value of type {type(value).__name__}")


class Session:
    """One session of a spool: append records (the writing process), or read and journal them (a replay).

    :meth:`create` makes a new session for this process and holds its lock; :meth:`open` reads one
    a process left and takes its lock, or raises :class:`SpoolBusy` while that process still holds it.
    The folder is made at the first :meth:`append`, so a tracker that records nothing leaves nothing.
    Appends from several threads are numbered in the order they take the session's lock.
    """

    def __init__(self, folder: Path, header: dict[str, Any], *, existing: bool) -> None:
        self.folder = Path(folder)
        self.header = header
        self._lock = threading.Lock()
        self._journal = None
        self._lock_file = None
        self._last = 0
        self._made = existing
        if existing:
            self._last = max((item.seq for item in self._items()), default=0)

    # ------------------------------------------------------------------ making, opening, removing

    @classmethod
    def create(cls, spool: Path, run_id: str, tracking_uri: str) -> Session:
        """A new session of this process in ``spool`` (made on disk at the first append)."""
        name = f"{time.time_ns():020d}-{os.getpid()}"
        header = {"run_id": run_id, "tracking_uri": tracking_uri, "host": socket.gethostname(), "pid": os.getpid(),
                  "created_ms": int(time.time() * 1000)}
        return cls(Path(spool) / name, header, existing=False)

    @classmethod
    def open(cls, folder: Path) -> Session:
        """The session a process left in ``folder``, locked for this process; SpoolBusy if it is held."""
        folder = Path(folder)
        try:
            header = json.loads((folder / SESSION_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise SpoolError(f"{folder} is not a readable spool session ({err}); move it away to replay the "
                             "others") from None
        session = cls(folder, header, existing=True)
        session._take_lock(block=False)
        return session

    @property
    def run_id(self) -> str:
        return self.header["run_id"]

    @property
    def tracking_uri(self) -> str:
        return self.header["tracking_uri"]

    def _make(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._take_lock(block=True)
        tmp = self.folder / f".{SESSION_FILE}.tmp"
        tmp.write_text(json.dumps(self.header), encoding="utf-8")
        tmp.replace(self.folder / SESSION_FILE)
        self._made = True

    def _take_lock(self, block: bool) -> None:
        handle = open(self.folder / LOCK, "a")  # noqa: SIM115  held until close()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            raise SpoolBusy(f"spool session {self.folder} is being written by another process "
                            f"(pid {self.header.get('pid')} on {self.header.get('host')}); replay it after "
                            "that process ends") from None
        self._lock_file = handle

    def close(self) -> None:
        """Release the session's lock and journal (the folder stays)."""
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            if self._lock_file is not None:
                self._lock_file.close()  # releases the flock
                self._lock_file = None

    def remove(self) -> None:
        """Delete the session's folder, then the spool folder and the run folder if that leaves them empty."""
        import shutil

        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        for parent in (self.folder.parent, self.folder.parent.parent):
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break

    # ------------------------------------------------------------------ writing records

    def data_file(self) -> Path:
        """A fresh file name in the session for a record's data, to be passed to :meth:`append`."""
        with self._lock:
            if not self._made:
                self._make()
        return self.folder / f".data-{uuid.uuid4().hex}.tmp"

    def append(self, kind: str, payload: dict[str, Any], data: Path | None = None) -> Item:
        """Spool one record (and move ``data``, a file from :meth:`data_file`, into the session) as the next."""
        if kind not in KINDS:
            raise ValueError(f"record kind {kind!r}: use one of {list(KINDS)}")
        text = json.dumps({"kind": kind, "payload": payload}, default=_json_default)
        with self._lock:
            if not self._made:
                self._make()
            seq = self._last + 1
            final = None
            if data is not None:
                final = self.folder / f"{seq:08d}.parquet"
                Path(data).replace(final)
            tmp = self.folder / f".{seq:08d}.json.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(self.folder / f"{seq:08d}.json")
            self._last = seq
        return Item(seq, kind, payload, final)

    @property
    def last_seq(self) -> int:
        """The number of the last record appended (0: none)."""
        return self._last

    # ------------------------------------------------------------------ the journal

    def _write_journal(self, line: str) -> None:
        with self._lock:
            if self._journal is None:
                self._journal = open(self.folder / JOURNAL, "a", encoding="utf-8")  # noqa: SIM115
            self._journal.write(line + "\n")
            self._journal.flush()  # in the OS's hands: a killed process loses nothing written

    def started(self, items: Iterable[Item]) -> None:
        """Journal that ``items`` are about to be written to the store."""
        self._write_journal("start " + " ".join(str(i.seq) for i in items))

    def done(self, items: Iterable[Item]) -> None:
        """Journal that the store holds ``items``, then delete their files."""
        items = list(items)
        self._write_journal("done " + " ".join(str(i.seq) for i in items))
        self._delete(items)

    def failed(self, item: Item, reason: str) -> None:
        """Journal that the store refused ``item`` (it is not written again), then delete its files."""
        self._write_journal(f"failed {item.seq} " + " ".join(reason.split())[:500])
        self._delete([item])

    def _delete(self, items: list[Item]) -> None:
        for item in items:
            (self.folder / f"{item.seq:08d}.json").unlink(missing_ok=True)
            if item.data is not None:
                item.data.unlink(missing_ok=True)

    def journal(self) -> tuple[set[int], set[int], dict[int, str]]:
        """(started, finished, failed reasons) from the journal; a line cut short by a kill is ignored."""
        started: set[int] = set()
        finished: set[int] = set()
        reasons: dict[int, str] = {}
        try:
            lines = (self.folder / JOURNAL).read_text(encoding="utf-8").split("\n")
        except OSError:
            return started, finished, reasons
        complete = lines[:-1]  # the text after the last newline is a line not finished
        for line in complete:
            word, _, rest = line.partition(" ")
            if word == "failed":
                seq, _, reason = rest.partition(" ")
                if seq.isdigit():
                    finished.add(int(seq))
                    reasons[int(seq)] = reason
                continue
            seqs = {int(s) for s in rest.split() if s.isdigit()}
            if word == "start":
                started |= seqs
            elif word == "done":
                finished |= seqs
        return started, finished, reasons

    # ------------------------------------------------------------------ reading records

    def _items(self) -> list[Item]:
        items = []
        if not self.folder.is_dir():
            return items
        for path in self.folder.glob("[0-9]*.json"):
            if not path.stem.isdigit():
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # deleted by a writer meanwhile
                continue
            seq = int(path.stem)
            data = self.folder / f"{seq:08d}.parquet"
            items.append(Item(seq, record["kind"], record["payload"], data if data.is_file() else None))
        return sorted(items, key=lambda item: item.seq)

    def pending(self) -> list[Item]:
        """The records not yet done or failed, in order, each marked ``in_doubt`` if its write was started."""
        started, finished, _ = self.journal()
        out = []
        for item in self._items():
            if item.seq in finished:
                self._delete([item])  # done, but the process stopped before deleting it
                continue
            item.in_doubt = item.seq in started
            out.append(item)
        return out

"""The thread that writes a live run's spooled records to MLflow, in order, while training goes on.

:class:`Sender` takes the records a tracker spools (:class:`~workbench.tracking.spool.Session`) and writes
them with :func:`workbench.tracking.replay.deliver`, a window of consecutive records at a time, on one daemon
thread. Nothing that trains waits for it. Where the store cannot be reached
(:func:`~workbench.tracking.replay.is_outage`) the window stays first in line and is tried again after 1, 2,
4, ... up to :data:`MAX_BACKOFF_S` seconds, marked in doubt, so the store gets each record once when
it answers again. A record the store refuses for another reason is journaled as failed, and its
error is handed to the tracker (:meth:`Sender.take_error`), which raises it on the thread that logs.

:meth:`Sender.close` asks the thread to remove the session once it has written every record;
:meth:`Sender.wait_closed` waits for that while the store answers, and gives up after a stretch
without progress. A sender given up on goes on in the background while the process lives; what it
has not written when the process ends stays in the spool for ``workbench sync``. At exit, the
session of a tracker that was never finished is removed if all its records are written.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

from workbench.tracking.replay import Outage, deliver, windows
from workbench.tracking.spool import Item, Session

MAX_BACKOFF_S = 10.0
"""The longest wait between two tries of a store that did not answer."""
_LIVE: weakref.WeakSet = weakref.WeakSet()  # senders not closed yet, looked at when the interpreter exits


class Sender:
    """Writes the records of ``session`` (run ``run_id``) to ``mlflow_client``'s store on thread ``name``."""

    def __init__(self, mlflow_client, run_id: str, session: Session, name: str) -> None:
        self.client, self.run_id, self.session, self.name = mlflow_client, run_id, session, name
        self._cond = threading.Condition()
        self._queue: deque[Item] = deque()
        self._closing = False
        self._closed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.written = 0  # records written to the store (or refused by it)
        self.offline_since: float | None = None  # since when no record could be written; None while writing
        self.last_progress = time.monotonic()
        _LIVE.add(self)

    def put(self, item: Item) -> None:
        """Queue a spooled record; the thread starts with the first."""
        with self._cond:
            self._queue.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    @property
    def backlog(self) -> int:
        """Records spooled and not yet written."""
        with self._cond:
            return len(self._queue)

    def newest(self, artifact_file: str) -> Item | None:
        """The newest queued record of artifact ``artifact_file`` (Parquet or text), or None."""
        with self._cond:
            return next((i for i in reversed(self._queue)
                         if i.kind in ("artifact", "text") and i.payload["file"] == artifact_file), None)

    def take_error(self) -> BaseException | None:
        """The first refusal since the last call (None if none), cleared."""
        with self._cond:
            err, self._error = self._error, None
            return err

    def wait_written(self, seq: int) -> None:
        """Return once the records up to number ``seq`` are written (or refused), or the store is unreachable."""
        with self._cond:
            while self._queue and self._queue[0].seq <= seq and self.offline_since is None:
                self._cond.wait(0.5)

    def close(self) -> None:
        """Remove the session once every record is written; then the thread ends."""
        with self._cond:
            self._closing = True
            if not self._queue:
                self._finish_locked()
            self._cond.notify_all()

    def wait_closed(self, patience_s: float, advance: Callable[[int], None] | None = None) -> bool:
        """Wait until :meth:`close` has removed the session (True), or until ``patience_s`` seconds have passed
        without a record written (False: the rest stays in the spool). ``advance(k)`` hears of each k written."""
        start, seen = time.monotonic(), self.written
        with self._cond:
            while not self._closed:
                if time.monotonic() - max(start, self.last_progress) > patience_s:
                    return False
                self._cond.wait(0.2)
                if advance is not None and self.written > seen:
                    advance(self.written - seen)
                    seen = self.written
        return True

    def _finish_locked(self) -> None:
        if not self._closed:
            self._closed = True
            self.session.remove()
            self._cond.notify_all()
            _LIVE.discard(self)

    def drop_if_written(self) -> None:
        """Remove the session if every record in it is written (a tracker that was never finished)."""
        with self._cond:
            if not self._queue:
                self._finish_locked()

    def _run(self) -> None:
        backoff = 1.0
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                window = next(windows(list(self._queue)))
            try:
                refused = deliver(self.client, self.run_id, self.session, window)
            except Outage:
                with self._cond:
                    self.offline_since = self.offline_since or time.monotonic()
                    self._cond.notify_all()
                    self._cond.wait(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_S)
                continue
            except Exception as err:  # noqa: BLE001  the spool itself failed (a full disk): handed over, tried again
                with self._cond:
                    self._error = self._error or err
                    self.offline_since = self.offline_since or time.monotonic()
                    self._cond.notify_all()
                    self._cond.wait(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_S)
                continue
            backoff = 1.0
            with self._cond:
                for _ in window:
                    self._queue.popleft()
                self.written += len(window)
                self.last_progress = time.monotonic()
                self.offline_since = None
                if refused and self._error is None:
                    item, reason = refused[0]
                    self._error = RuntimeError(f"the tracking store refused record {item.seq} ({item.kind}): "
                                               f"{reason}")
                if self._closing and not self._queue:
                    self._finish_locked()
                self._cond.notify_all()


@atexit.register
def _remove_written_sessions() -> None:
    """At exit, a session whose records are all written is removed even if its tracker was never finished;
    one with records left stays, for ``workbench sync``."""
    for sender in list(_LIVE):
        sender.drop_if_written()

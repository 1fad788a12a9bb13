"""One worker thread for what a training step need not wait for: text embeddings, metrics, dumps, writes.

:class:`Background` runs submitted calls in order on one daemon thread. At most ``max_pending``
calls wait at a time, so a worker that falls behind slows training down instead of holding an
ever longer queue of steps in memory. A call that raises stops nothing at once: the error is
re-raised, once, from the next :meth:`~Background.submit` or :meth:`~Background.wait`, on the
thread that trains, so a failed write ends training as it would have in the step itself. After
:meth:`~Background.close`, calls run at once on the caller's thread; at interpreter exit, every
worker still open runs what it holds first.

:class:`BackgroundRecorder` runs a recorder's ``record(StepRecord)`` on such a worker, after
embedding the completions' texts there when the step did not (a method that shapes rewards from
embeddings, EVOL-RL, embeds them in the step). Its ``flush`` waits for every step handed over,
then flushes the recorder, so a checkpoint still holds everything recorded before it. Its torch
ops (the encoder's, mostly) run on :data:`WORKER_THREADS` CPU threads: torch's OpenMP thread count
is per calling thread, so the training thread keeps its own.
"""

from __future__ import annotations

import atexit
import dataclasses
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainers.step_record import StepRecord

_OPEN: weakref.WeakSet = weakref.WeakSet()  # workers not closed yet, drained at interpreter exit

WORKER_THREADS = 1
"""torch CPU threads of a recording worker's ops. One thread encodes a step of the default's completions with
MiniLM in 18 % less CPU than two (0.41 s against 0.50 s, bfloat16, 256 texts): work the training threads of
a second cell on the same cores would otherwise wait for (``make bench``, two cells at once)."""


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block's torch CPU ops on ``count`` threads, then restore the calling thread's count.

    OpenMP keeps the thread count per calling thread (``omp_set_num_threads``), and torch starts each new
    thread at the count last set: other threads already running keep theirs, and the restore puts back
    the default for threads started later.
    """
    import torch

    before = torch.get_num_threads()
    if before == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class BackgroundError(RuntimeError):
    """A call on the worker thread failed; its exception is the ``__cause__``."""


class Background:
    """Calls run in submission order on one daemon thread named ``name``."""

    def __init__(self, name: str, max_pending: int = 4) -> None:
        self.name = name
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        _OPEN.add(self)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; blocks while ``max_pending`` calls wait. Raises an earlier call's error.

        On a closed worker, or on the worker's own thread, ``fn(*args)`` runs at once.
        """
        self._raise()
        if self._closed or threading.current_thread() is self._thread:
            fn(*args)
            return
        self._queue.put((fn, args))

    def wait(self) -> None:
        """Return when every call submitted so far has run; raise the first error among them."""
        if threading.current_thread() is not self._thread:  # on its own thread, what is queued runs after this call
            self._queue.join()
        self._raise()

    def close(self) -> None:
        """Run what is queued, then stop the thread (idempotent); raise the first error."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
            _OPEN.discard(self)
        self._raise()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args = item
            try:
                fn(*args)
            except BaseException as err:  # noqa: BLE001 - handed to the training thread by _raise
                if self._error is None:
                    self._error = err
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise BackgroundError(f"{self.name}: {type(err).__name__}: {err}") from err


@atexit.register
def _drain_at_exit() -> None:
    for worker in list(_OPEN):
        try:
            worker.close()
        except Exception as err:  # noqa: BLE001 - at exit there is no caller left to raise to
            print(f"{worker.name}: a background write failed at exit: {err}", file=sys.stderr)


class BackgroundRecorder:
    """``recorder.record`` on a :class:`Background` worker, embedding texts there first.

    Args:
        recorder: an object with ``record(StepRecord)`` and optionally ``flush()``. Its ``record`` runs
            on the worker thread, a step or so after the step it records, so it must write every value
            with ``record.step`` (the :class:`~trainers.recorder.StepRecorder` of a tracker does).
        embed: ``texts -> (N, e)`` unit rows, called on the worker for a record without embeddings;
            None: records go as they come.
        due: ``step -> bool``, whether the record of a generation batch first trained at that step is embedded (None: every step); the others
            go without embeddings (the semantic geometry's cadence).
    """

    def __init__(self, recorder: Any, embed: Callable[[list[str]], Any] | None = None,
                 max_pending: int = 4, due: Callable[[int], bool] | None = None) -> None:
        self.recorder = recorder
        self.embed = embed
        self.due = due
        self.worker = Background("step-recorder", max_pending)

    def record(self, record: StepRecord) -> None:
        self.worker.submit(self._record_on_worker, record)

    def _record_on_worker(self, record: StepRecord) -> None:
        with torch_threads(WORKER_THREADS):
            self._record(record)

    def _record(self, record: StepRecord) -> None:
        due = self.due is None or self.due(record.step)
        if self.embed is not None and record.batch.embeddings is None and due:
            start = time.perf_counter()
            embeddings = self.embed(record.texts)  # (N, e): the gathered texts, on the main process only
            record = dataclasses.replace(record, batch=dataclasses.replace(record.batch, embeddings=embeddings),
                                         embed_s=time.perf_counter() - start)
        self.recorder.record(record)

    def flush(self) -> None:
        """Wait for every record handed over, then flush the recorder."""
        self.worker.wait()
        if callable(flush := getattr(self.recorder, "flush", None)):
            flush()

    def close(self) -> None:
        """Flush, then stop the worker."""
        self.flush()
        self.worker.close()

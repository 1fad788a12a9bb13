"""SIGTERM as KeyboardInterrupt while a run trains, so that a scheduler's stop marks the run KILLED.

A scheduler (SLURM, Kubernetes) or torchrun stops a job with SIGTERM. Python's default is to die at once, which
would leave the MLflow run RUNNING; raised as KeyboardInterrupt instead, it lets the run be closed as KILLED,
and so resumable. Only the main thread can set signal handlers; elsewhere this does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt; the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

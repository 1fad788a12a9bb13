"""Progress for long loops, on a terminal and in a log file alike.

Rich redraws a bar in place, which is right on a terminal but shows nothing
until the end when output goes to a file or a pipe. :func:`progress` therefore
draws a rich bar on a terminal and otherwise prints one plain line every
``every_s`` seconds (and at the end), flushed at once.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class _Lines:
    """Plain progress lines: ``<description>: 120/1500 (8%) loss 1.234, 35 s``."""

    def __init__(self, description: str, total: int, every_s: float, stream) -> None:
        self.description, self.total, self.every_s, self.stream = description, total, every_s, stream
        self.done, self.fields = 0, {}
        self.start = self.last = time.monotonic()

    def advance(self, k: int = 1, **fields: float) -> None:
        self.done += k
        self.fields.update(fields)
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            self.write()

    def write(self) -> None:
        extra = "".join(f" {k} {v:.3f}" for k, v in self.fields.items())
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        print(f"{self.description}: {self.done}/{self.total}{share}{extra}, {time.monotonic() - self.start:.0f} s",
              file=self.stream, flush=True)


class _Bar:
    def __init__(self, progress, job) -> None:
        self.progress, self.job = progress, job

    def advance(self, k: int = 1, **fields: float) -> None:
        self.progress.update(self.job, advance=k, **fields)


@contextmanager
def progress(description: str, total: int, *, fields: tuple[str, ...] = (), every_s: float = 10.0,
             transient: bool = False, stream=None) -> Iterator[_Bar | _Lines]:
    """A progress reporter with ``advance(k, **fields)``; ``fields`` are numbers shown beside the count."""
    stream = stream or sys.stderr
    if not stream.isatty():
        print(f"{description}: 0/{total}", file=stream, flush=True)
        yield _Lines(description, total, every_s, stream)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    shown = "".join(f" {name} {{task.fields[{name}]:.3f}}" for name in fields)
    columns = [TextColumn(description), BarColumn(), MofNCompleteColumn(), TextColumn(shown), TimeRemainingColumn()]
    with Progress(*columns, transient=transient, console=Console(file=stream)) as bar:
        yield _Bar(bar, bar.add_task(description, total=total, **{name: float("nan") for name in fields}))

"""Answer checks under a time limit, and the math-verify equivalence check.

A symbolic check can stall (``\\boxed{9^{9^{9^9}}}`` makes sympy compute a tower
of powers), so every math check runs under a per-answer time limit, and a check
that does not finish in time counts as wrong with ``timed_out=True``.

How the limit works (:func:`call_with_time_limit`):

* math-verify's own timeouts (``parsing_timeout``, ``timeout_seconds``) are
  switched off. They use ``signal.alarm``, so they take whole seconds only, fail
  outside the main thread, and turn a timeout into "wrong" or "no parse", which
  would hide ``timed_out``.
* The check runs in a helper process: a ``python -c`` subprocess started on the
  first check (its start-up, mostly importing sympy, does not count against any
  limit) and reused for every later one. Inside it the check runs under
  ``signal.setitimer``; the alarm raises :class:`_TimeUp`, a ``BaseException``,
  so math-verify's and sympy's ``except Exception`` blocks do not swallow it.
  That cuts stalls in Python code (nearly all of sympy) and keeps the helper.
* The caller waits at most the limit plus :data:`PROCESS_GRACE_S` for the reply.
  A stall inside C code that the alarm cannot interrupt, or a crash of the
  helper (GMP aborts on huge powers when gmpy2 is installed), also ends the
  check as timed out; the helper is killed and a new one starts on the next
  check. So the caller never waits much longer than the limit, from any thread,
  and no answer can crash or hang training.
* Checks from several threads take turns on the one helper. A forked child
  process starts a helper of its own.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)

# How long past the limit the caller waits for the helper process before killing it.
PROCESS_GRACE_S = 2.0
# How long the helper process may take to start (import math-verify and sympy).
PROCESS_START_S = 120.0


class _TimeUp(BaseException):
    """Raised by the alarm; a BaseException so ``except Exception`` does not catch it."""


def _raise_time_up(signum: int, frame: Any) -> None:
    raise _TimeUp


def _call_with_alarm(fn: Callable[..., T], args: tuple, timeout_s: float) -> tuple[T | None, bool]:
    """Run ``fn(*args)`` in the main thread, interrupted by SIGALRM after ``timeout_s``.

    The previous SIGALRM handler is restored, and a timer that was running before
    gets back what remains of its time.
    """
    previous_handler = signal.signal(signal.SIGALRM, _raise_time_up)
    previous_delay, _ = signal.setitimer(signal.ITIMER_REAL, timeout_s)
    started = time.monotonic()
    try:
        try:
            result = fn(*args)
        finally:  # an alarm that fires in here still lands in the outer except
            signal.setitimer(signal.ITIMER_REAL, 0)
        return result, False
    except _TimeUp:
        return None, True
    finally:
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay > 0:
            remaining = previous_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-3))


def _helper_main() -> None:
    """The helper process: run ``(fn, args, timeout_s)`` requests under the alarm.

    Started as ``python -c`` with the request and reply pipe descriptors as arguments.
    """
    requests = Connection(int(sys.argv[1]), writable=False)
    replies = Connection(int(sys.argv[2]), readable=False)
    import math_verify  # noqa: F401  (imported before "ready": start-up does not count against a limit)

    _quiet_math_verify()
    replies.send("ready")
    while True:
        try:
            fn, args, timeout_s = requests.recv()
        except EOFError:  # the caller closed the pipe or exited
            return
        except Exception as error:  # noqa: BLE001  (e.g. fn cannot be imported here)
            replies.send(("error", RuntimeError(f"the helper process cannot run this call: {error!r}"), False))
            continue
        try:
            replies.send(("ok", *_call_with_alarm(fn, args, timeout_s)))
        except Exception as error:  # noqa: BLE001  (handed back to the caller)
            replies.send(("error", error, False))


class _HelperProcess:
    """One reusable helper process; killed and restarted after a stall or crash.

    A plain ``subprocess`` rather than ``multiprocessing``: spawn would re-import the
    caller's ``__main__`` (a script without a main guard would run again), and fork
    would copy a process that holds threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner = 0  # the pid that started the helper
        self._process: subprocess.Popen | None = None
        self._requests: Connection | None = None
        self._replies: Connection | None = None

    def call(self, fn: Callable[..., T], args: tuple, timeout_s: float) -> tuple[T | None, bool]:
        with self._lock:
            self._ensure_started()
            reply = None
            try:
                self._requests.send((fn, args, timeout_s))
                if self._replies.poll(timeout_s + PROCESS_GRACE_S):
                    reply = self._replies.recv()
            except (EOFError, OSError):  # the helper died during the check
                logger.warning("the answer-check helper process died during a check; counted as timed out")
            except BaseException:  # e.g. KeyboardInterrupt: the helper may still be busy, so replace it
                self.stop()
                raise
            if reply is None:
                self.stop()
                return None, True
        status, value, timed_out = reply
        if status == "error":
            raise value
        return value, timed_out

    def _ensure_started(self) -> None:
        if self._owner != os.getpid():  # a forked child must not share its parent's pipes
            self._process = self._requests = self._replies = None
        if self._process is not None and self._process.poll() is None:
            return
        self.stop()
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        code = "from workbench.tasks.verify import _helper_main; _helper_main()"
        process = subprocess.Popen(
            [sys.executable, "-c", code, str(request_read), str(reply_write)],
            pass_fds=(request_read, reply_write),
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a kill also ends what it started
        )
        os.close(request_read)
        os.close(reply_write)
        self._owner, self._process = os.getpid(), process
        self._requests = Connection(request_write, readable=False)
        self._replies = Connection(reply_read, writable=False)
        try:
            ready = self._replies.poll(PROCESS_START_S) and self._replies.recv() == "ready"
        except EOFError:
            ready = False
        if not ready:
            self.stop()
            raise RuntimeError(
                f"the answer-check helper process ({sys.executable} -c ...) did not start within "
                f"{PROCESS_START_S:.0f} s; check that workbench and math-verify import in that interpreter"
            )

    def close(self) -> None:
        """At exit: end the helper by closing its request pipe (it exits on EOF), else kill it."""
        if self._process is None or self._owner != os.getpid():
            return
        self._requests.close()
        try:
            self._process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        self.stop()

    def stop(self) -> None:
        """Kill the helper, if any; the next check starts a new one."""
        if self._process is not None and self._owner == os.getpid():
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self._process.kill()
            self._process.wait()
            self._requests.close()
            self._replies.close()
        self._process = self._requests = self._replies = None


_HELPER = _HelperProcess()
atexit.register(_HELPER.close)


def call_with_time_limit(fn: Callable[..., T], args: tuple = (), timeout_s: float | None = 5.0) -> tuple[T | None, bool]:
    """``(fn(*args), False)``, or ``(None, True)`` if it did not finish within ``timeout_s`` seconds.

    The call runs in the helper process (see the module docstring), so ``fn`` and
    its arguments must be picklable: module-level functions and plain data.
    Exceptions of ``fn`` propagate. ``timeout_s`` None or <= 0: no limit, and the
    call runs here.
    """
    if timeout_s is None or timeout_s <= 0:
        return fn(*args), False
    return _HELPER.call(fn, args, timeout_s)


# --------------------------------------------------------------------------- math-verify


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns that its timeouts are off; the limit above replaces them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


def _quiet_math_verify() -> None:
    for name in ("math_verify.parser", "math_verify.grader"):
        math_logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTimeoutDisabledWarning) for f in math_logger.filters):
            math_logger.addFilter(_DropTimeoutDisabledWarning())


def _parse_boxed(latex: str) -> list:
    from math_verify import parse

    return parse(f"\\boxed{{{latex}}}", parsing_timeout=None)


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    """Gold answers repeat (one per sample), so their parses are cached."""
    return _parse_boxed(gold)


def math_equal_untimed(gold: str, answer: str) -> bool:
    """Whether ``answer`` equals ``gold`` by math-verify (LaTeX without ``\\boxed``); no time limit.

    If either side has no parse, the stripped strings are compared.
    """
    from math_verify import verify

    _quiet_math_verify()
    gold_parsed, answer_parsed = _parse_gold(gold), _parse_boxed(answer)
    if not gold_parsed or not answer_parsed:
        return gold.strip() == answer.strip() != ""
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


def math_equal(gold: str, answer: str, timeout_s: float | None = 5.0) -> tuple[bool, bool]:
    """(correct, timed_out): math-verify's equivalence of ``answer`` to ``gold`` within ``timeout_s``.

    The gold answer goes first: math-verify's comparison is not symmetric.
    """
    correct, timed_out = call_with_time_limit(math_equal_untimed, (gold, answer), timeout_s)
    return bool(correct), timed_out

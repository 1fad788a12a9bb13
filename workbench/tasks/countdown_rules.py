"""Countdown's rules: check a written derivation, and enumerate every solution.

A derivation is one step per line, ``a op b = c``, with ``op`` one of ``+ - * /``
and non-negative integers. A step's operands come from a pool that starts as the
given numbers; a step takes its two operands out of the pool and puts its result
in, so a later step can build on it. Each given number is thus used at most once,
and so is each intermediate result: using a result twice (``3 + 4 = 7`` then
``7 * 7 = 49``) would use the given 3 and 4 twice. Not every number need be used.
The derivation solves the problem when its last result equals the target.

:func:`check_derivation` refuses, each as wrong with its reason:

- output longer than :data:`MAX_CHARS` characters, or more steps than a pool of
  ``len(numbers)`` can feed (``len(numbers) - 1``);
- a line that is not ``a op b = c`` (blank lines are skipped);
- an operand not in the pool;
- a wrong result, division by zero, division with a remainder, and a negative
  result (``3 - 7 = -4`` is malformed: results are non-negative).

:func:`solutions` enumerates every derivation by exhaustive search and returns
the distinct solutions, each as a canonical expression: the expression tree of
the final result with the operands of ``+`` and ``*`` flattened and sorted, so two
derivations are the same solution when they differ only in the order of
operands, of associative operations or of independent steps. Steps whose result
the final expression does not use do not make a solution distinct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CHARS = 400  # longer output is refused unread
STEP_RE = re.compile(r"(\d{1,9}) *([+\-*/]) *(\d{1,9}) *= *(\d{1,12})")


@dataclass(frozen=True)
class Checked:
    """What :func:`check_derivation` found."""

    value: int | None  # the last result of a legal derivation; None when refused
    steps: int  # legal steps read before the end or the refusal
    reason: str | None = None  # why it was refused (None: legal)
    expression: tuple | int | None = None  # canonical expression of the last result (see solutions())


def apply(a: int, op: str, b: int) -> int | None:
    """``a op b`` under the rules, or None when the step is not allowed."""
    if op == "+":
        return a + b
    if op == "*":
        return a * b
    if op == "-":
        return a - b if a >= b else None
    if op == "/":
        return a // b if b != 0 and a % b == 0 else None
    raise ValueError(f"unknown operation {op!r}")


def check_derivation(text: str, numbers: tuple[int, ...]) -> Checked:
    """Whether ``text`` is a legal derivation from ``numbers``, and its last result."""
    if len(text) > MAX_CHARS:
        return Checked(None, 0, f"output longer than {MAX_CHARS} characters")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return Checked(None, 0, "no steps")
    if len(lines) > len(numbers) - 1:
        return Checked(None, 0, f"{len(lines)} steps, but {len(numbers)} numbers allow at most {len(numbers) - 1}")
    pool: list[tuple[int, tuple | int]] = [(n, n) for n in numbers]  # (value, canonical expression)
    value, expr = None, None
    for i, line in enumerate(lines):
        match = STEP_RE.fullmatch(line)
        if match is None:
            return Checked(None, i, f"line {i + 1} is not 'a op b = c': {line[:40]!r}")
        a, op, b, c = int(match[1]), match[2], int(match[3]), int(match[4])
        left = _take(pool, a)
        right = _take(pool, b)
        if left is None or right is None:
            return Checked(None, i, f"line {i + 1} uses a number that is not available: {line!r}")
        result = apply(a, op, b)
        if result is None:
            why = "division by zero" if op == "/" and b == 0 else (
                "division with a remainder" if op == "/" else "a negative result")
            return Checked(None, i, f"line {i + 1}: {why}: {line!r}")
        if result != c:
            return Checked(None, i, f"line {i + 1}: {a} {op} {b} is {result}, not {c}")
        value, expr = c, _combine(op, left, right)
        pool.append((value, expr))
    return Checked(value, len(lines), expression=expr)


def _take(pool: list[tuple[int, tuple | int]], value: int) -> tuple | int | None:
    """Remove an entry of ``value`` from the pool (the newest, so a result is used before a given
    number of the same value) and return its expression; None if there is none."""
    for k in range(len(pool) - 1, -1, -1):
        if pool[k][0] == value:
            return pool.pop(k)[1]
    return None


# -- exhaustive search --------------------------------------------------------------------------
def _combine(op: str, x: tuple, y: tuple) -> tuple:
    """Canonical expression of ``x op y``: + and * flattened into sorted operand tuples."""
    if op in "+*":
        parts = []
        for e in (x, y):
            parts.extend(e[1] if isinstance(e, tuple) and e[0] == op else (e,))
        return (op, tuple(sorted(parts, key=repr)))
    return (op, (x, y))


def expression_text(expr: tuple | int) -> str:
    """A canonical expression as text, the form evaluation rows record as a sample's ``solution``:
    ``('+', (3, ('*', (5, 7))))`` -> ``"3+(5*7)"``; equal texts are the same solution."""
    if not isinstance(expr, tuple):
        return str(expr)
    op, parts = expr
    return op.join(p if not isinstance(e, tuple) else f"({p})" for e, p in ((e, expression_text(e)) for e in parts))


def derivations(numbers: tuple[int, ...]):
    """Every legal derivation: yields (steps, value, expression) after each step taken.

    ``steps`` is a tuple of (a, op, b, c); ``expression`` is the canonical
    expression of the step's result ``value``.
    """
    pool = [(n, n) for n in numbers]  # (value, canonical expression)

    def walk(pool: list[tuple[int, tuple | int]], steps: tuple):
        for i in range(len(pool)):
            for j in range(len(pool)):
                if i == j:
                    continue
                (a, ea), (b, eb) = pool[i], pool[j]
                for op in "+-*/":
                    if op in "+*" and i > j:  # commutative: take each pair once
                        continue
                    c = apply(a, op, b)
                    if c is None:
                        continue
                    expr = _combine(op, ea, eb)
                    rest = [p for k, p in enumerate(pool) if k not in (i, j)] + [(c, expr)]
                    taken = (*steps, (a, op, b, c))
                    yield taken, c, expr
                    yield from walk(rest, taken)

    yield from walk(pool, ())


def fewest_steps(numbers: tuple[int, ...], target: int, max_steps: int | None = None) -> int | None:
    """The fewest steps of a derivation from ``numbers`` whose last result is ``target``; None when none of at
    most ``max_steps`` steps (default ``len(numbers) - 1``) reaches it.

    Iterative deepening: depth 1 checks every pair, depth d every pool reachable in d - 1 steps, so a
    problem with a one-step solution costs a few dozen operations.
    """
    limit = len(numbers) - 1 if max_steps is None else min(max_steps, len(numbers) - 1)

    def reaches(pool: tuple[int, ...], depth: int) -> bool:
        for i in range(len(pool)):
            for j in range(len(pool)):
                if i == j or (i > j and pool[i] == pool[j]):
                    continue
                for op in "+-*/":
                    if op in "+*" and i > j:
                        continue
                    c = apply(pool[i], op, pool[j])
                    if c is None:
                        continue
                    if depth == 1:
                        if c == target:
                            return True
                    elif reaches(tuple(x for k, x in enumerate(pool) if k not in (i, j)) + (c,), depth - 1):
                        return True
        return False

    return next((d for d in range(1, limit + 1) if reaches(tuple(numbers), d)), None)


def solutions(numbers: tuple[int, ...], target: int) -> dict[tuple, tuple]:
    """The distinct solutions: canonical expression -> the shortest derivation reaching it."""
    found: dict[tuple, tuple] = {}
    for steps, value, expr in derivations(numbers):
        if value == target and (expr not in found or len(steps) < len(found[expr])):
            found[expr] = steps
    return found


def format_steps(steps: tuple) -> str:
    """``((3, '+', 4, 7), ...)`` -> ``"3 + 4 = 7\\n..."``: the written form the verifier reads."""
    return "".join(f"{a} {op} {b} = {c}\n" for a, op, b, c in steps)

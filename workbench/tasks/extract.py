"""Pulling answers out of completion text: boxed expressions, numbers, letters."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")

# A decimal number, with thousands separators allowed ("1,234.5"). A leading minus
# counts only where it cannot be a binary minus ("5-3" gives 5 and 3, not -3).
NUMBER_RE = re.compile(r"(?:(?<![\w.)}])-)?(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)|(?<![\w.])-?\.\d+")
_FRACTION_RE = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$|^(-?)(\d+)\s*/\s*(\d+)$")


MAX_NUMBER_CHARS = 1000  # longer digit strings are no answer (and int <-> str refuses > 4300 digits)


def _closing_braces(text: str) -> dict[int, int]:
    """Index of each ``{`` -> index of the ``}`` that closes it, in one pass.

    Escaped braces (``\\{``, ``\\}``) do not count; a group that never closes (a
    truncated completion) is absent. One pass keeps extraction linear even on a
    completion of thousands of unclosed ``\\boxed{``.
    """
    closing, stack, i = {}, [], 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            stack.append(i)
        elif char == "}" and stack:
            closing[stack.pop()] = i
        i += 1
    return closing


def last_boxed(text: str) -> str | None:
    """The contents of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``), stripped.

    Braces are matched, so ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``; the
    unbraced form ``\\boxed 5`` gives ``5``. A box that never closes (a completion
    cut off inside it) is skipped in favour of the one before it. None without a box.
    """
    matches = list(_BOX_RE.finditer(text))
    closing = _closing_braces(text) if matches else {}
    for match in reversed(matches):
        rest = match.end()
        while rest < len(text) and text[rest] == " ":
            rest += 1
        if rest < len(text) and text[rest] == "{":
            if rest in closing:
                return text[rest + 1 : closing[rest]].strip()
        elif rest > match.end():  # "\\boxed 5": up to the next space or "$"
            token = re.match(r"[^\s$]+", text[rest:])
            if token:
                return token.group(0)
    return None


def parse_number(text: str) -> Fraction | None:
    """The exact value of a plain number ("1,234", "-0.5", ".5", "3/4", "\\frac{3}{4}"), else None."""
    text = text.strip().replace(",", "")
    if len(text) > MAX_NUMBER_CHARS:
        return None
    fraction = _FRACTION_RE.match(text)
    if fraction:
        sign, num, den = [g for g in fraction.groups() if g is not None]
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return -value if sign else value
    try:
        return Fraction(Decimal(text))
    except (InvalidOperation, ValueError):
        return None


def format_number(value: Fraction) -> str:
    """A canonical string: "72" for 72.00, "0.5" for 1/2, "1/3" where no finite decimal exists."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for prime in (2, 5):
        while den % prime == 0:
            den //= prime
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    decimal = Decimal(value.numerator) / Decimal(value.denominator)
    return format(decimal.normalize(), "f")


def last_number(text: str) -> str | None:
    """The last number written in ``text`` (as written), or None."""
    numbers = NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


_SPACE_RE = re.compile(r"(?<![A-Za-z])\s+|\s+(?![A-Za-z])")
_SIZING_RE = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])")
_LATEX_NOISE = (
    ("\\!", ""),
    ("\\,", ""),
    ("\\;", ""),
    ("\\:", ""),
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
)


def normalize_latex(text: str) -> str:
    """A light normal form of a LaTeX answer, for grouping equal answers (maj@k).

    Drops sizing and spacing commands and surrounding ``$``, writes ``\\dfrac`` and
    ``\\tfrac`` as ``\\frac``, removes whitespace except between two letters, and
    drops a trailing full stop. It does not decide equivalence (math-verify does).
    """
    text = text.strip().strip("$").strip()
    text = _SIZING_RE.sub("", text)
    for old, new in _LATEX_NOISE:
        text = text.replace(old, new)
    text = _SPACE_RE.sub("", text)
    return text[:-1] if text.endswith(".") else text

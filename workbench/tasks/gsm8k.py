"""The ``gsm8k`` task: grade-school word problems with a numeric answer.

Reads json / jsonl / parquet files with ``question`` (or ``prompt``) and
``answer`` ("reasoning ... #### 72"); the gold answer is the number after
``####`` with thousands separators removed.

The answer of a completion is the number in its last ``\\boxed{}``, else the number
after its last ``####``, else the last number in the text; answers are compared
as exact numbers (72 = 72.00 = 72.0).
"""

from __future__ import annotations

import re

from workbench.tasks.base import BOXED_SYSTEM_PROMPT, register_task
from workbench.tasks.extract import format_number, last_boxed, last_number, parse_number
from workbench.tasks.files import FileTask, RecordError, get_field, prompt_and_system

_HASHES_RE = re.compile(r"####\s*(.*)")


def _number_in(text: str) -> str | None:
    """The normalised number that ``text`` is, or else the last number in it."""
    value = parse_number(text)
    if value is None:
        written = last_number(text)
        value = parse_number(written) if written is not None else None
    return format_number(value) if value is not None else None


def gold_number(answer: str) -> str | None:
    """The normalised number after the last "####" of a GSM8K answer (or the answer itself)."""
    hashes = _HASHES_RE.findall(answer)
    return _number_in(hashes[-1] if hashes else answer)


@register_task
class Gsm8kTask(FileTask):
    name = "gsm8k"
    chat = True
    default_system = BOXED_SYSTEM_PROMPT

    def parse_record(self, record: dict) -> tuple[str, str, str | None]:
        prompt, system = prompt_and_system(get_field(record, "question", "prompt"))
        raw = str(get_field(record, "answer"))
        answer = gold_number(raw)
        if answer is None:
            raise RecordError(f"the answer {raw[-60:]!r} ends in no '#### <number>'")
        return prompt, answer, system

    def extract(self, completion: str) -> str | None:
        boxed = last_boxed(completion)
        if boxed is not None:
            return _number_in(boxed)
        hashes = _HASHES_RE.findall(completion)
        if hashes:
            return _number_in(hashes[-1])
        written = last_number(completion)
        return _number_in(written) if written is not None else None

    def check(self, answer: str, gold: str) -> tuple[bool, bool]:
        value, gold_value = parse_number(answer), gold_number(gold)
        return value is not None and gold_value is not None and value == parse_number(gold_value), False

"""The ``gpqa`` task: multiple-choice science questions answered with a letter A-D.

Reads json / jsonl / parquet files with ``prompt`` (the question with lettered
options) and ``answer`` (a letter). The answer of a completion is, in this order
of preference, the letter in its last ``\\boxed{}``, in its last "answer is (X)",
in its last "Answer: X", else its last standalone capital A-D; the check is an
exact letter match.
"""

from __future__ import annotations

import re

from workbench.tasks.base import register_task
from workbench.tasks.extract import last_boxed
from workbench.tasks.files import FileTask, RecordError, get_field, prompt_and_system

LETTERS = "ABCD"
SYSTEM_PROMPT = (
    "Please reason step by step, and put the letter of your final answer (A, B, C or D) within \\boxed{}."
)

_BOX_LETTER_RE = re.compile(r"^\(?([A-Da-d])\)?(?:[\s.:)]|$)")
_BOX_WRAPPER_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}")
_PATTERNS = (
    re.compile(r"(?i:answer is)\s*:?\s*\**\s*\(?([A-D])\b"),  # "the answer is (B)"
    re.compile(r"(?i:answer)\s*\**\s*:\s*\**\s*\(?([A-D])\b"),  # "Answer: B", "**Answer:** B"
    re.compile(r"\b([A-D])\b"),  # the last standalone capital
)


def _boxed_letter(boxed: str) -> str | None:
    content = _BOX_WRAPPER_RE.sub(r"\1", boxed).strip()
    match = _BOX_LETTER_RE.match(content)
    return match.group(1).upper() if match else None


def extract_letter(completion: str) -> str | None:
    boxed = last_boxed(completion)
    if boxed is not None:
        letter = _boxed_letter(boxed)
        if letter is not None:
            return letter
    for pattern in _PATTERNS:
        matches = pattern.findall(completion)
        if matches:
            return matches[-1].upper()
    return None


@register_task
class GpqaTask(FileTask):
    name = "gpqa"
    chat = True
    default_system = SYSTEM_PROMPT

    def parse_record(self, record: dict) -> tuple[str, str, str | None]:
        prompt, system = prompt_and_system(get_field(record, "prompt", "question"))
        answer = str(get_field(record, "answer")).strip().strip("()").upper()
        if len(answer) != 1 or answer not in LETTERS:
            raise RecordError(f"the answer must be one letter of {LETTERS}, got {record['answer']!r}")
        return prompt, answer, system

    def extract(self, completion: str) -> str | None:
        return extract_letter(completion)

    def check(self, answer: str, gold: str) -> tuple[bool, bool]:
        return answer.strip().upper() == gold.strip().upper(), False

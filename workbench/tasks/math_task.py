"""The ``math`` task: competition problems answered in ``\\boxed{}``, checked by math-verify.

Reads json / jsonl / parquet files. A record's question is ``prompt`` (a string or
a list of chat messages, as in verl-style ``math_train.parquet``), ``problem`` or
``question``; its gold answer is ``answer``, ``reward_model.ground_truth``, or the
last ``\\boxed{}`` of ``solution`` (the original MATH files).

The answer of a completion is the contents of its last complete ``\\boxed{...}``
(or ``\\fbox{...}``), lightly normalised; no box, no answer. It is checked against
the gold answer with math-verify under ``task.answer_timeout_s`` (see
:mod:`workbench.tasks.verify`).
"""

from __future__ import annotations

from workbench.tasks.base import BOXED_SYSTEM_PROMPT, Verdict, register_task
from workbench.tasks.extract import last_boxed, normalize_latex
from workbench.tasks.files import FileTask, RecordError, get_field, prompt_and_system
from workbench.tasks.verify import math_equal


def _gold_answer(record: dict) -> str:
    if record.get("answer") is not None:
        return str(record["answer"])
    reward_model = record.get("reward_model")
    if isinstance(reward_model, dict) and reward_model.get("ground_truth") is not None:
        return str(reward_model["ground_truth"])
    if record.get("solution") is not None:
        boxed = last_boxed(str(record["solution"]))
        if boxed is None:
            raise RecordError("the 'solution' field has no \\boxed{} answer")
        return boxed
    raise RecordError(
        f"no 'answer', 'reward_model.ground_truth' or 'solution' field (fields present: {', '.join(sorted(record))})"
    )


@register_task
class MathTask(FileTask):
    name = "math"
    chat = True
    default_system = BOXED_SYSTEM_PROMPT

    def parse_record(self, record: dict) -> tuple[str, str, str | None]:
        prompt, system = prompt_and_system(get_field(record, "prompt", "problem", "question"))
        answer = _gold_answer(record).strip()
        if not answer:
            raise RecordError("the gold answer is empty")
        return prompt, answer, system

    def extract(self, completion: str) -> str | None:
        boxed = last_boxed(completion)
        if boxed is None:
            return None
        answer = normalize_latex(boxed)
        return answer or None

    def check(self, answer: str, gold: str) -> tuple[bool, bool]:
        return math_equal(gold, answer, self.options.answer_timeout_s)

    def verify(self, completion: str, gold: str) -> Verdict:
        # math-verify reads the box as written; the normalised form is only reported.
        boxed = last_boxed(completion)
        answer = normalize_latex(boxed) if boxed is not None else ""
        if not answer:
            return Verdict(answer=None, correct=False)
        correct, timed_out = self.check(boxed, gold)
        return Verdict(answer=answer, correct=correct and not timed_out, timed_out=timed_out)

"""The ``arithmetic`` task: synthetic, seeded integer arithmetic for tiny models.

A problem is ``"347+589="`` with answer ``"936"``: two operands of up to
``task.digits`` digits (0 to 10**digits - 1) and one operation of
``task.operations`` (a subset of + - *). Prompts are plain text (no chat
template): the tiny character-level models of the CPU default train on them.

Generation: the problem space (every operation with every operand pair) is
numbered; the test split draws ``num_test`` distinct problems with
``random.Random(data_seed)``, the train split then draws ``num_train`` distinct
problems outside the test split with a second generator seeded from
``data_seed``. So both splits are deterministic, free of repeats and disjoint,
and the test split does not change when ``num_train`` does.

The answer of a completion is its leading (optionally signed) integer, after
leading whitespace; the check is exact integer equality.
"""

from __future__ import annotations

import random
import re

from workbench.tasks.base import Problem, Task, TaskOptions, check_split, register_task

OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_LEADING_INT_RE = re.compile(r"[+-]?\d+")
_TRAIN_SEED_OFFSET = 1_000_003  # the train generator's seed is data_seed + this


def _sample_distinct(rng: random.Random, space: int, count: int, excluded: set[int]) -> list[int]:
    """``count`` distinct indices of ``range(space)`` outside ``excluded``, in draw order."""
    available = space - len(excluded)
    if count > available:
        raise ValueError(f"only {available} problems are left to draw")
    if count + len(excluded) <= space // 2:  # sparse: rejection sampling is fast
        chosen: list[int] = []
        taken = set(excluded)
        while len(chosen) < count:
            index = rng.randrange(space)
            if index not in taken:
                taken.add(index)
                chosen.append(index)
        return chosen
    pool = [i for i in range(space) if i not in excluded]
    rng.shuffle(pool)
    return pool[:count]


def canonical_int(text: str) -> str:
    """"-007" -> "-7", "+0" -> "0": an integer's canonical digits, without int() (no length limit)."""
    text = text.strip()
    digits = text.lstrip("+-").lstrip("0") or "0"
    return "-" + digits if text.startswith("-") and digits != "0" else digits


@register_task
class ArithmeticTask(Task):
    name = "arithmetic"
    chat = False

    def __init__(self, options: TaskOptions) -> None:
        super().__init__(options)
        if options.digits < 1:
            raise ValueError(f"task.digits must be >= 1, got {options.digits}")
        unknown = [op for op in options.operations if op not in OPERATIONS]
        if not options.operations or unknown or len(set(options.operations)) != len(options.operations):
            raise ValueError(
                f"task.operations must be distinct symbols from {' '.join(OPERATIONS)}, got {list(options.operations)}"
            )
        if options.num_train < 0 or options.num_test < 0:
            raise ValueError("task.num_train and task.num_test must be >= 0")
        self._base = 10**options.digits  # operands lie in [0, base)
        space = len(options.operations) * self._base**2
        if options.num_train + options.num_test > space:
            raise ValueError(
                f"task.num_train + task.num_test = {options.num_train + options.num_test} exceeds the "
                f"{space} distinct problems of {options.digits}-digit {' '.join(options.operations)}: "
                "raise task.digits, add operations, or lower num_train / num_test"
            )
        self._space = space
        self._splits: dict[str, list[Problem]] = {}

    def _problem(self, index: int) -> Problem:
        op_index, pair = divmod(index, self._base**2)
        a, b = divmod(pair, self._base)
        op = self.options.operations[op_index]
        text = f"{a}{op}{b}"
        return Problem(id=text, prompt=f"{text}=", answer=str(OPERATIONS[op](a, b)), system=self.options.system_prompt)

    def _generate(self) -> None:
        seed = self.options.data_seed
        test = _sample_distinct(random.Random(seed), self._space, self.options.num_test, set())
        train = _sample_distinct(random.Random(seed + _TRAIN_SEED_OFFSET), self._space, self.options.num_train, set(test))
        self._splits = {"train": [self._problem(i) for i in train], "test": [self._problem(i) for i in test]}

    def problems(self, split: str) -> list[Problem]:
        check_split(split)
        if not self._splits:
            self._generate()
        return self._cap(list(self._splits[split]))

    def extract(self, completion: str) -> str | None:
        match = _LEADING_INT_RE.match(completion.strip())
        return canonical_int(match.group(0)) if match else None

    def check(self, answer: str, gold: str) -> tuple[bool, bool]:
        return canonical_int(answer) == canonical_int(gold), False

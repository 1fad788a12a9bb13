"""The ``countdown`` task: reach a target from a few numbers, one step per line.

A problem gives ``task.count`` numbers (each drawn from 1..``task.max_number``)
and a target in [``task.min_target``, ``task.max_target``]::

    prompt:      "use 3 7 10 5 to make 48\\n"
    completion:  "7 * 5 = 35\\n35 + 10 = 45\\n45 + 3 = 48\\n"   (right: 48)

The rules and the refusals are those of :mod:`workbench.tasks.countdown_rules`.
Prompts are plain text (no chat template), for the tiny character-level models.

Why Countdown [ours]: solutions take several steps, so completions are 20-50
tokens and a gradient feature is a mean over many tokens, and most problems have
several distinct solutions (median 7 on the default test split, 93 % with two or more), so a group's
correct answers can differ in path and exploration has paths to find.

The answer maj@k votes on is the final value of a legal derivation (None for a
refused one), and it is correct when it equals the target. Derivations that
reach the same value by different paths then vote together, as different
reasoning paths to the same final answer do in math; a canonical form of the
whole solution would split the correct votes among the problem's solutions and
make maj@k reward a policy that repeats one path. A legal derivation that ends
elsewhere is a wrong answer with a value, as a wrong number is in math.

Generation: each problem's numbers are drawn, and its target is the result of a
random legal derivation of at least ``task.min_steps`` (and two) steps that is not one
of the numbers, so every problem is solvable; a problem that some shorter derivation
also solves is drawn again, so no problem can be solved in fewer than ``task.min_steps``
steps (:func:`countdown_rules.fewest_steps`). A problem's ``level`` is the fewest steps
of its solutions, which evaluation rows carry. The test split is drawn from ``random.Random(data_seed)``
first, the train split from a second generator, skipping any number-target pair
of the test split (numbers compared as sorted tuples), so the splits are
disjoint and the test split does not change with ``num_train``. The derivation
that made a target is kept as a witness (:meth:`CountdownTask.witness`), and
:meth:`CountdownTask.solution_counts` counts each problem's distinct solutions by
exhaustive search (:func:`countdown_rules.solutions`, about 7 ms a problem).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from workbench.tasks.base import Problem, Task, TaskOptions, Verdict, check_split, register_task
from workbench.tasks.countdown_rules import apply, check_derivation, expression_text, fewest_steps, solutions

_TRAIN_SEED_OFFSET = 1_000_003  # the train generator's seed is data_seed + this
_MAX_TRIES = 1000  # draws per problem before giving up on the settings


@dataclass(frozen=True)
class Puzzle:
    numbers: tuple[int, ...]
    target: int

    @property
    def key(self) -> tuple:
        return (tuple(sorted(self.numbers)), self.target)

    @property
    def gold(self) -> str:
        """The gold string the verifier reads: ``"3 7 12 5 -> 53"``."""
        return f"{' '.join(map(str, self.numbers))} -> {self.target}"

    @classmethod
    def parse(cls, gold: str) -> Puzzle:
        try:
            left, right = gold.split("->")
            return cls(tuple(int(x) for x in left.split()), int(right))
        except ValueError:
            raise ValueError(f"countdown gold {gold!r} must look like '3 7 12 5 -> 53'") from None


def prompt_of(puzzle: Puzzle) -> str:
    return f"use {' '.join(map(str, puzzle.numbers))} to make {puzzle.target}\n"


def random_steps(numbers: tuple[int, ...], count: int, rng: random.Random) -> tuple:
    """A random legal derivation of ``count`` steps (fewer when the pool runs dry)."""
    pool, steps = list(numbers), []
    for _ in range(count):
        options = [(i, j, op) for i in range(len(pool)) for j in range(len(pool)) if i != j
                   for op in "+-*/" if apply(pool[i], op, pool[j]) is not None]
        if not options:
            break
        i, j, op = rng.choice(options)
        a, b = pool[i], pool[j]
        c = apply(a, op, b)
        pool = [x for k, x in enumerate(pool) if k not in (i, j)] + [c]
        steps.append((a, op, b, c))
    return tuple(steps)


@register_task
class CountdownTask(Task):
    name = "countdown"
    chat = False

    def __init__(self, options: TaskOptions) -> None:
        super().__init__(options)
        o = options
        if not 3 <= o.count <= 5:
            raise ValueError(f"task.count must be 3, 4 or 5 numbers, got {o.count}")
        if o.max_number < 2:
            raise ValueError(f"task.max_number must be >= 2, got {o.max_number}")
        if not 0 <= o.min_target <= o.max_target:
            raise ValueError(f"need 0 <= task.min_target <= task.max_target, got {o.min_target} and {o.max_target}")
        if not 1 <= o.min_steps <= o.count - 1:
            raise ValueError(f"task.min_steps={o.min_steps}: {o.count} numbers allow derivations of 1 to "
                             f"{o.count - 1} steps; choose one of those, or raise task.count")
        if o.num_train < 0 or o.num_test < 0:
            raise ValueError("task.num_train and task.num_test must be >= 0")
        self._splits: dict[str, list[Problem]] = {}
        self._witness: dict[str, tuple] = {}  # problem id -> the derivation that made its target
        self._level: dict[str, int] = {}  # problem id -> the fewest steps of its solutions

    def _draw(self, rng: random.Random, taken: set) -> Puzzle:
        o = self.options
        for _ in range(_MAX_TRIES):
            numbers = tuple(rng.randint(1, o.max_number) for _ in range(o.count))
            least = max(2, o.min_steps)
            steps = random_steps(numbers, rng.randint(least, max(least, o.count - 1)), rng)
            puzzle = Puzzle(numbers, steps[-1][3])
            if (len(steps) >= least and o.min_target <= puzzle.target <= o.max_target
                    and puzzle.target not in numbers and puzzle.key not in taken):
                level = fewest_steps(numbers, puzzle.target, len(steps))
                if level < o.min_steps:
                    continue
                taken.add(puzzle.key)
                self._witness[puzzle.gold] = steps
                self._level[puzzle.gold] = level
                return puzzle
        raise ValueError(
            f"could not draw a new countdown problem in {_MAX_TRIES} tries with count={o.count}, "
            f"max_number={o.max_number}, targets {o.min_target}..{o.max_target}, min_steps={o.min_steps}: widen the "
            "target range, raise task.max_number, lower task.min_steps, or lower num_train / num_test"
        )

    def _problem(self, puzzle: Puzzle) -> Problem:
        return Problem(id=puzzle.gold, prompt=prompt_of(puzzle), answer=puzzle.gold, system=self.options.system_prompt,
                       level=self._level[puzzle.gold])

    def _generate(self) -> None:
        seed, taken = self.options.data_seed, set()
        test_rng, train_rng = random.Random(seed), random.Random(seed + _TRAIN_SEED_OFFSET)
        test = [self._draw(test_rng, taken) for _ in range(self.options.num_test)]
        train = [self._draw(train_rng, taken) for _ in range(self.options.num_train)]
        self._splits = {"test": [self._problem(p) for p in test], "train": [self._problem(p) for p in train]}

    def problems(self, split: str) -> list[Problem]:
        check_split(split)
        if not self._splits:
            self._generate()
        return self._cap(list(self._splits[split]))

    def witness(self, problem: Problem) -> tuple:
        """The legal derivation that made the problem's target: one of its solutions."""
        self.problems("test")
        return self._witness[problem.id]

    def solution_counts(self, split: str) -> dict[str, int]:
        """Problem id -> number of distinct solutions, by exhaustive search."""
        out = {}
        for p in self.problems(split):
            puzzle = Puzzle.parse(p.answer)
            out[p.id] = len(solutions(puzzle.numbers, puzzle.target))
        return out

    def verify(self, completion: str, gold: str) -> Verdict:
        puzzle = Puzzle.parse(gold)
        checked = check_derivation(completion, puzzle.numbers)
        if checked.value is None:
            return Verdict(answer=None, correct=False)
        correct = checked.value == puzzle.target
        return Verdict(answer=str(checked.value), correct=correct,
                       solution=expression_text(checked.expression) if correct else None)

    def extract(self, completion: str) -> str | None:
        """The last written result (syntax only; :meth:`verify` also checks the rules)."""
        lines = [line for line in completion.splitlines() if line.strip()]
        return lines[-1].rsplit("=", 1)[-1].strip() or None if lines and "=" in lines[-1] else None

    def check(self, answer: str, gold: str) -> tuple[bool, bool]:
        return answer.strip() == str(Puzzle.parse(gold).target), False

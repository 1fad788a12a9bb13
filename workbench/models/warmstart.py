"""What the tiny model is warm-started on: one supervised recipe per synthetic task.

RL needs a policy that is right some of the time and wrong some of the time. A
recipe draws (prompt, target text) pairs from the task's training split; the
targets teach the form of an answer and are deliberately not always right, so
the warm-started policy mixes sound and unsound answers, as a pretrained LLM
mixes sound and unsound reasoning, and RL has something to find [ours].

- ``countdown``: each target is a legal derivation (every step's arithmetic
  right, every number available). With probability ``hit_rate`` it is one of the
  problem's solutions, drawn uniformly among its distinct solutions; otherwise
  it is a random legal derivation of 1 to ``count - 1`` steps, which seldom ends
  on the target. The policy learns to write legal steps, and reaching the
  target only sometimes.
- ``arithmetic``: in a share ``label_noise`` of the additions the target drops
  every carry (``347+589=`` -> ``826``, not ``936``). Measured here: trained on
  clean targets, the model sits in a sharp optimum that GRPO steps only degrade
  (held-out accuracy 0.62 -> 0.57 in 100 steps at lr 3e-5); with carry-dropping
  noise it rises 0.24 -> 0.30 in 100 steps at lr 1e-4.

``RECIPES[task]`` holds the settings (part of the model's cache key) and the
sampler; a sampler is called once per example.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workbench.tasks import Task
from workbench.tasks.countdown import Puzzle, random_steps
from workbench.tasks.countdown_rules import format_steps, solutions

Sampler = Callable[[], tuple[str, str]]  # () -> (prompt, target text without EOS)


@dataclass(frozen=True)
class Recipe:
    settings: dict[str, Any]
    make: Callable[[Task, random.Random, dict[str, Any]], Sampler] = field(compare=False)


def carry_free_sum(a: int, b: int) -> int:
    """Digit-wise sum that drops every carry: 347 + 589 -> 826."""
    digits, place = 0, 1
    while a or b:
        digits += ((a % 10 + b % 10) % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return digits


def _arithmetic(task: Task, rng: random.Random, settings: dict[str, Any]) -> Sampler:
    problems = task.problems("train")

    def draw() -> tuple[str, str]:
        p = problems[rng.randrange(len(problems))]
        match = re.fullmatch(r"(\d+)\+(\d+)=", p.prompt)
        if match is None or rng.random() >= settings["label_noise"]:
            return p.prompt, p.answer
        return p.prompt, str(carry_free_sum(int(match[1]), int(match[2])))

    return draw


def _countdown(task: Task, rng: random.Random, settings: dict[str, Any]) -> Sampler:
    problems = task.problems("train")
    solved: dict[str, list[tuple]] = {}  # problem id -> shortest derivation of each distinct solution

    def draw() -> tuple[str, str]:
        p = problems[rng.randrange(len(problems))]
        puzzle = Puzzle.parse(p.answer)
        if rng.random() < settings["hit_rate"]:
            if p.id not in solved:
                solved[p.id] = sorted(solutions(puzzle.numbers, puzzle.target).values())
            steps = rng.choice(solved[p.id])
        else:
            steps = random_steps(puzzle.numbers, rng.randint(1, len(puzzle.numbers) - 1), rng)
        return p.prompt, format_steps(steps)

    return draw


RECIPES: dict[str, Recipe] = {
    "countdown": Recipe({"hit_rate": 0.9}, _countdown),
    "arithmetic": Recipe({"label_noise": 0.5}, _arithmetic),
}

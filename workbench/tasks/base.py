"""The task interface: problems to train and evaluate on, and a verifier for answers.

A :class:`Task` yields :class:`Problem` records for a split and turns a model
completion into a :class:`Verdict` (the extracted, normalised answer and whether
it is correct). Tasks register by name in :data:`TASKS`; :func:`build_task`
builds one from a task config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from trainers.registry import Registry

SPLITS = ("train", "test")

# The system prompt of the paper's protocol (DESIGN 5) for tasks answered in \boxed{}.
BOXED_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Problem:
    """One question of a task."""

    id: str  # stable id, unique within the task/split
    prompt: str  # the user-facing question text (before any chat template)
    answer: str  # gold answer as a string
    system: str | None = None  # system prompt, if the task has one
    level: int | None = None  # difficulty level where the task defines one (countdown: fewest steps; MATH: 1-5)


@dataclass(frozen=True)
class Verdict:
    """The verifier's judgement of one completion."""

    answer: str | None  # extracted, normalised answer (None: no extractable answer)
    correct: bool
    timed_out: bool = False  # the check ran past the time limit (and counts as wrong)
    solution: str | None = None  # a correct answer's solution in the task's canonical form (None: the task has none)


@dataclass(frozen=True)
class TaskOptions:
    """The task settings a task reads; defaults match the workbench task config.

    :meth:`of` copies the same-named attributes from any config-like object (the
    pydantic ``TaskConfig``, a ``SimpleNamespace``, another ``TaskOptions``), so the
    tasks do not depend on the config module.
    """

    name: str = "arithmetic"
    path: str | None = None  # file tasks: the train split's file
    test_path: str | None = None  # file tasks: the test split's file
    digits: int = 3  # arithmetic: operands have up to this many digits
    operations: tuple[str, ...] = ("+",)  # arithmetic: a subset of + - *
    num_train: int = 5000  # synthetic tasks: train split size
    num_test: int = 200  # synthetic tasks: test split size
    data_seed: int = 1234  # synthetic tasks: generation seed
    count: int = 4  # countdown: numbers per problem
    max_number: int = 10  # countdown: numbers are drawn from 1..max_number
    min_target: int = 10  # countdown: smallest target
    max_target: int = 50  # countdown: largest target
    min_steps: int = 2  # countdown: the fewest steps any solution of a problem needs
    max_problems: int | None = None  # cap on problems per split (None: no cap)
    answer_timeout_s: float | None = 5.0  # time limit per answer check (None or <= 0: none)
    system_prompt: str | None = None  # None: the file's system message, else the task default

    def __post_init__(self) -> None:
        object.__setattr__(self, "operations", tuple(self.operations))
        if self.max_problems is not None and self.max_problems < 0:
            raise ValueError(f"task.max_problems must be >= 0 or null, got {self.max_problems}")

    @classmethod
    def of(cls, cfg: Any) -> TaskOptions:
        """Options from a config-like object; attributes it lacks keep their defaults."""
        if cfg is None:
            return cls()
        if isinstance(cfg, TaskOptions):
            return cfg
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls) if hasattr(cfg, f.name)})


class Task(ABC):
    """Problems for the train and test splits, and the verifier of answers."""

    name: ClassVar[str]
    chat: ClassVar[bool]  # whether prompts are meant for a chat model (with a chat template)

    def __init__(self, options: TaskOptions) -> None:
        self.options = options

    @classmethod
    def from_config(cls, cfg: Any) -> Task:
        """Build the task from a task config (see :class:`TaskOptions` for the fields read)."""
        return cls(TaskOptions.of(cfg))

    @abstractmethod
    def problems(self, split: str) -> list[Problem]:
        """The problems of ``split`` ("train" or "test"), at most ``max_problems`` of them."""

    @abstractmethod
    def extract(self, completion: str) -> str | None:
        """The normalised answer in ``completion``, or None when there is none."""

    @abstractmethod
    def check(self, answer: str, gold: str) -> tuple[bool, bool]:
        """(correct, timed_out) for an extracted answer against the gold answer."""

    def verify(self, completion: str, gold: str) -> Verdict:
        """Extract the answer from ``completion`` and check it against ``gold``."""
        answer = self.extract(completion)
        if answer is None:
            return Verdict(answer=None, correct=False)
        correct, timed_out = self.check(answer, gold)
        return Verdict(answer=answer, correct=correct and not timed_out, timed_out=timed_out)

    def _cap(self, problems: list[Problem]) -> list[Problem]:
        cap = self.options.max_problems
        return problems if cap is None else problems[:cap]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


TASKS: Registry[type[Task]] = Registry("task")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a task under its ``name``."""
    TASKS.add(cls.name, cls)
    return cls


def build_task(cfg: Any) -> Task:
    """The task named ``cfg.name``, built from ``cfg``."""
    return TASKS.get(cfg.name).from_config(cfg)

"""Tests for the countdown task: the verifier's refusals, the generator, the solution counts."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from workbench.tasks import build_task
from workbench.tasks.countdown import Puzzle
from workbench.tasks.countdown_rules import MAX_CHARS, check_derivation, format_steps, solutions


def task(**fields):
    return build_task(SimpleNamespace(**{"name": "countdown", "num_train": 300, "num_test": 60, **fields}))


GOLD = "3 7 12 5 -> 53"


# --------------------------------------------------------------------------- the verifier
@pytest.mark.parametrize("text, answer", [
    ("12 * 5 = 60\n60 - 7 = 53\n", "53"),                     # the given 3 need not be used
    ("  12*5=60 \n\n60 - 7 = 53", "53"),                       # spaces optional, blank lines skipped
    ("7 + 5 = 12\n12 * 3 = 36\n36 + 12 = 48\n", "48"),         # a legal derivation that ends elsewhere
    ("12 / 3 = 4\n", "4"),                                     # exact division
])
def test_legal_derivations_give_their_last_value(text, answer):
    verdict = build_task(SimpleNamespace(name="countdown")).verify(text, GOLD)
    assert verdict.answer == answer
    assert verdict.correct == (answer == "53")


@pytest.mark.parametrize("text, reason", [
    ("7 / 3 = 2\n", "division with a remainder"),
    ("3 - 7 = 4\n", "a negative result"),
    ("3 - 7 = -4\n", "not 'a op b = c'"),                       # results are non-negative: a sign is malformed
    ("12 * 4 = 48\n", "not available"),                        # 4 is not given
    ("12 * 12 = 144\n", "not available"),                      # a given number used twice
    ("3 + 7 = 10\n10 * 10 = 100\n", "not available"),          # an intermediate result used twice
    ("12 * 5 = 61\n", "is 60, not 61"),                        # wrong arithmetic
    ("12 * 5 = 60\nso the answer is 53\n", "not 'a op b = c'"),
    ("12 x 5 = 60\n", "not 'a op b = c'"),
    ("", "no steps"),
    ("3 + 7 = 10\n10 + 12 = 22\n22 + 5 = 27\n27 + 3 = 30\n", "at most 3"),
    ("3 + 7 = 10\n" + " " * MAX_CHARS, f"longer than {MAX_CHARS}"),
])
def test_refusals_are_wrong_with_a_reason(text, reason):
    checked = check_derivation(text, (3, 7, 12, 5))
    assert checked.value is None and reason in checked.reason
    verdict = build_task(SimpleNamespace(name="countdown")).verify(text, GOLD)
    assert verdict.answer is None and not verdict.correct


def test_division_by_zero_is_refused():
    checked = check_derivation("5 - 5 = 0\n12 / 0 = 0\n", (5, 5, 12))
    assert checked.value is None and "division by zero" in checked.reason


def test_repeated_given_numbers_can_each_be_used_once():
    assert check_derivation("5 + 5 = 10\n", (5, 5, 2)).value == 10
    assert check_derivation("5 + 5 = 10\n10 * 5 = 50\n", (5, 5, 2)).value is None


def test_gold_must_name_numbers_and_target():
    with pytest.raises(ValueError, match="must look like '3 7 12 5 -> 53'"):
        Puzzle.parse("53")


# --------------------------------------------------------------------------- solution counts
def _brute_force(numbers: tuple[int, ...], target: int) -> set:
    """Every expression tree over a sub-multiset of ``numbers`` (by splitting sets, not by walking pools)."""
    def canon(op, x, y):
        if op in "+*":
            parts = [p for e in (x, y) for p in (e[1] if isinstance(e, tuple) and e[0] == op else (e,))]
            return (op, tuple(sorted(parts, key=repr)))
        return (op, (x, y))

    def exprs(idx: tuple[int, ...]) -> set:
        if len(idx) == 1:
            return {(numbers[idx[0]], numbers[idx[0]])}
        out = set()
        for r in range(1, len(idx)):
            for left in itertools.combinations(idx, r):
                right = tuple(i for i in idx if i not in left)
                for (a, ea), (b, eb) in itertools.product(exprs(left), exprs(right)):
                    for op, value in (("+", a + b), ("*", a * b), ("-", a - b if a >= b else None),
                                      ("/", a // b if b and a % b == 0 else None)):
                        if value is not None:
                            out.add((value, canon(op, ea, eb)))
        return out

    found = set()
    for size in range(2, len(numbers) + 1):
        for idx in itertools.combinations(range(len(numbers)), size):
            found |= {e for v, e in exprs(idx) if v == target}
    return found


def test_a_hand_counted_case():
    # 2*3+4 and 3*4-2, and nothing else reaches 10 from 2, 3, 4.
    assert len(solutions((2, 3, 4), 10)) == 2


@pytest.mark.parametrize("numbers, target", [((2, 3, 4), 10), ((1, 2, 3), 6), ((5, 5, 2), 10), ((3, 7, 12, 5), 53),
                                             ((1, 4, 6, 8), 24), ((2, 2, 9, 11), 40)])
def test_solution_counts_match_an_independent_brute_force(numbers, target):
    found = solutions(numbers, target)
    assert set(found) == _brute_force(numbers, target)
    for expression, steps in found.items():  # each solution's derivation is legal, reaches the target, reads back
        checked = check_derivation(format_steps(steps), numbers)
        assert (checked.value, checked.expression) == (target, expression)


# --------------------------------------------------------------------------- the generator
def test_every_problem_is_solvable_and_in_range():
    t = task()
    for split in ("train", "test"):
        counts = t.solution_counts(split)
        for p in t.problems(split):
            puzzle = Puzzle.parse(p.answer)
            assert len(puzzle.numbers) == 4 and all(1 <= n <= 10 for n in puzzle.numbers)
            assert 10 <= puzzle.target <= 50 and puzzle.target not in puzzle.numbers
            assert t.verify(format_steps(t.witness(p)), p.answer).correct
            assert counts[p.id] >= 1


def test_splits_are_seeded_disjoint_and_the_test_split_keeps_with_num_train():
    a, b = task(), task()
    assert a.problems("test") == b.problems("test") and a.problems("train") == b.problems("train")
    keys = lambda ps: {Puzzle.parse(p.answer).key for p in ps}  # noqa: E731
    assert not keys(a.problems("train")) & keys(a.problems("test"))
    assert len(keys(a.problems("train"))) == 300 and len(keys(a.problems("test"))) == 60
    assert task(num_train=50).problems("test") == a.problems("test")
    assert task(data_seed=7).problems("test") != a.problems("test")


def test_most_problems_have_several_solutions():
    counts = list(task().solution_counts("test").values())
    assert sum(c >= 2 for c in counts) > len(counts) / 2


def test_impossible_settings_name_the_fix():
    with pytest.raises(ValueError, match="widen the target range"):
        task(min_target=98, max_target=99, max_number=2, num_test=5).problems("test")
    with pytest.raises(ValueError, match="task.count must be 3, 4 or 5"):
        task(count=2)

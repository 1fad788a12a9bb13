"""The fair-test regime's parts (DESIGN 9, 10): countdown's fewest steps and levels, MATH levels, distinct correct
solutions, group outcomes, the semantic cadence, and G2RL with lambda = 0 against GRPO."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis.passk import by_level, distinct_correct_per_problem, distinct_correct_table, pass_at_k_per_problem
from trainers.method import StepBatch
from trainers.methods import resolve_method
from trainers.shaping import group_outcomes, group_standardize
from trainers.step_record import dump_due, embedding_due
from workbench.config import ConfigError, build_config
from workbench.tasks import build_task
from workbench.tasks.countdown import Puzzle
from workbench.tasks.countdown_rules import apply, fewest_steps, format_steps, solutions


# --------------------------------------------------------------------------- fewest steps and min_steps
def _subset_values(numbers: tuple[int, ...]) -> dict[int, set[int]]:
    """Independent brute force: values[mask] = every value an expression over exactly the numbers of ``mask``
    reaches (each used once), by dynamic programming over subsets."""
    n = len(numbers)
    values: dict[int, set[int]] = {1 << i: {numbers[i]} for i in range(n)}
    for mask in range(1, 1 << n):
        if mask in values:
            continue
        found: set[int] = set()
        sub = (mask - 1) & mask
        while sub:
            rest = mask ^ sub
            if sub in values and rest in values:
                for a in values[sub]:
                    for b in values[rest]:
                        found |= {c for op in "+-*/" if (c := apply(a, op, b)) is not None}
            sub = (sub - 1) & mask
        values[mask] = found
    return values


def _brute_fewest(numbers: tuple[int, ...], target: int) -> int | None:
    values = _subset_values(numbers)
    sizes = [bin(mask).count("1") - 1 for mask, vals in values.items() if bin(mask).count("1") >= 2 and target in vals]
    return min(sizes, default=None)


def test_fewest_steps_matches_a_subset_brute_force_on_small_cases():
    rng = random.Random(3)
    cases = [((2, 3, 4), 10), ((1, 2, 3), 6), ((5, 5, 2), 10), ((3, 7, 12, 5), 53), ((1, 4, 6, 8), 24)]
    cases += [(tuple(rng.randint(1, 10) for _ in range(rng.choice([3, 4]))), rng.randint(1, 60)) for _ in range(150)]
    for numbers, target in cases:
        assert fewest_steps(numbers, target) == _brute_fewest(numbers, target), (numbers, target)
    assert fewest_steps((2, 3, 4), 5) == 1 and fewest_steps((2, 3, 4), 10) == 2 and fewest_steps((2, 3), 99) is None


def _task(**fields):
    return build_task(SimpleNamespace(**{"name": "countdown", "num_train": 300, "num_test": 60, **fields}))


@pytest.mark.parametrize("min_steps", [1, 2, 3])
def test_no_problem_is_solvable_in_fewer_than_min_steps_and_its_level_is_the_fewest(min_steps):
    t = _task(min_steps=min_steps)
    for split in ("train", "test"):
        for p in t.problems(split):
            puzzle = Puzzle.parse(p.answer)
            assert p.level == _brute_fewest(puzzle.numbers, puzzle.target) >= min_steps
    assert {p.level for p in _task(min_steps=1, num_train=2000).problems("train")} >= {1, 2}


def test_the_default_regime_has_no_one_step_problem():
    cfg = build_config([], [])
    assert cfg.task.min_steps == 2
    assert min(p.level for p in build_task(cfg.task).problems("test")) == 2


def test_min_steps_beyond_the_numbers_names_the_fix():
    with pytest.raises(ValueError, match="min_steps=4"):
        _task(min_steps=4)


# --------------------------------------------------------------------------- levels in evaluation rows
def test_countdown_rows_carry_level_and_a_correct_samples_canonical_solution():
    from workbench.run.evaluation import Completion, eval_frame

    t = _task()
    problem = t.problems("test")[0]
    puzzle = Puzzle.parse(problem.answer)
    steps = sorted(solutions(puzzle.numbers, puzzle.target).values())[0]
    texts = [format_steps(steps), format_steps(steps), "1 + 1 = 2\n"]
    rows = eval_frame([Completion(0, i, problem, text, t.verify(text, problem.answer)) for i, text in
                       enumerate(texts)], "countdown_test", 5)
    assert rows["level"].tolist() == [problem.level] * 3
    assert rows["solution"].iloc[0] == rows["solution"].iloc[1] and pd.isna(rows["solution"].iloc[2])


def test_math500_rows_take_the_files_level(tmp_path, shared_data):
    from workbench.tasks.benchmarks import load_benchmark

    records = [{"problem": "1+1?", "answer": "2", "level": 1, "id": "a"},
               {"problem": "2+2?", "answer": "4", "level": "Level 3", "id": "b"},
               {"problem": "3+3?", "answer": "6", "level": "Level ?", "id": "c"}]
    path = tmp_path / "math500.json"
    path.write_text(json.dumps(records))
    _, problems = load_benchmark("math500", path)
    assert [p.level for p in problems] == [1, 3, None]
    _, shipped = load_benchmark("math500", data_dir=shared_data)
    assert len(shipped) == 500 and all(p.level is None for p in shipped)  # this copy of MATH500 has no level field


# --------------------------------------------------------------------------- distinct correct solutions
def _frame(rows):
    return pd.DataFrame(rows, columns=["step", "benchmark", "problem_id", "sample", "answer", "correct", "level",
                                       "solution"])


def test_distinct_correct_counts_different_solutions_among_correct_samples_only():
    frame = _frame([
        (0, "cd", "p", 0, "10", True, 2, "2*3+4"),
        (0, "cd", "p", 1, "10", True, 2, "2*3+4"),   # the same solution again
        (0, "cd", "p", 2, "10", True, 2, "(3*4)-2"),
        (0, "cd", "p", 3, "9", False, 2, None),
        (0, "cd", "q", 0, "7", False, 3, None),      # nothing right: 0
        (0, "cd", "q", 1, None, False, 3, None),
        (0, "cd", "q", 2, "8", False, 3, None),
        (0, "cd", "q", 3, "8", False, 3, None),
        (0, "math", "m", 0, "4", True, None, None),  # a task without a canonical form: no rows at all
    ])
    per = distinct_correct_per_problem(frame)
    assert per.set_index("problem_id")["value"].to_dict() == {"p": 2.0, "q": 0.0}
    assert distinct_correct_table(frame)["value"].tolist() == [1.0]
    levels = by_level(per, frame).set_index("level")["value"].to_dict()
    assert levels == {2: 2.0, 3: 0.0}


def test_by_level_averages_pass_at_k_over_each_levels_problems_and_skips_frames_without_levels():
    frame = _frame([(0, "cd", "p", 0, "1", True, 2, "x"), (0, "cd", "p", 1, "2", False, 2, None),
                    (0, "cd", "q", 0, "1", True, 3, "y"), (0, "cd", "q", 1, "1", True, 3, "y")])
    table = by_level(pass_at_k_per_problem(frame, [1]), frame).set_index("level")
    assert table.loc[2, "value"] == 0.5 and table.loc[3, "value"] == 1.0 and table["problems"].tolist() == [1, 1]
    old = frame.drop(columns=["level", "solution"])
    assert by_level(pass_at_k_per_problem(old, [1]), old).empty


# --------------------------------------------------------------------------- group outcomes
def test_group_outcomes_are_shares_of_all_correct_all_wrong_and_mixed_groups():
    correct = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0], dtype=bool)
    groups = np.repeat(np.arange(4), 4)
    assert group_outcomes(correct, groups) == {"all_correct_groups": 0.25, "all_wrong_groups": 0.5,
                                               "mixed_groups": 0.25}


def test_every_method_logs_group_outcomes():
    from trainers.step_record import StepRecord, step_metrics

    batch = StepBatch(groups=np.repeat(np.arange(2), 2), correct=np.array([1, 0, 1, 1], dtype=bool),
                      has_answer=np.ones(4, dtype=bool), answers=["1"] * 4)
    for method in ("grpo", "entropy", "g2rl"):
        m = resolve_method(method)()
        if m.needs_features:
            batch = StepBatch(**{**batch.__dict__, "features": np.eye(4, 3)})
        record = StepRecord(1, batch, m.shape(batch), np.zeros(4), [""] * 4, [""] * 4, [""] * 4, [1] * 4, [False] * 4)
        metrics = step_metrics(record, geometry=False)
        assert (metrics["train/all_correct_groups"], metrics["train/mixed_groups"]) == (0.5, 0.5), method


# --------------------------------------------------------------------------- lambda = 0 is GRPO
def test_g2rl_with_lambda_zero_gives_grpos_advantages():
    from trainers.methods.g2rl import G2RL, G2RLOptions

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(32), 16)
    correct = rng.random(groups.size) < rng.random(32).repeat(16)  # mixed, all-right and all-wrong groups
    batch = StepBatch(groups=groups, correct=correct, has_answer=np.ones(groups.size, dtype=bool),
                      answers=["x"] * groups.size, features=rng.standard_normal((groups.size, 8)))
    for uniform in ("rank", "zero"):
        shaped = G2RL(G2RLOptions(lam=0.0, uniform_groups=uniform)).shape(batch).shaped_reward
        assert set(shaped) <= {-1.0, 1.0}  # r~ = r: the +-1 base reward, unscaled
        # GRPO standardises c in {0, 1}; G2RL r = 2c - 1 in {-1, 1}: mean and std double, so with TRL's
        # eps the two agree exactly when G2RL's eps is doubled too, and to eps / (2 std) otherwise.
        grpo = group_standardize(correct.astype(float), groups)
        np.testing.assert_allclose(group_standardize(shaped, groups, eps=2e-4), grpo, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(group_standardize(shaped, groups), grpo, rtol=5e-4, atol=1e-12)
    assert G2RL(G2RLOptions(lam=0.0)).shape(batch).shaped_reward.tolist() == (2 * correct - 1.0).tolist()


# --------------------------------------------------------------------------- the semantic cadence
def test_a_generation_batch_is_due_when_a_multiple_of_the_cadence_lies_among_the_steps_it_trains():
    assert [s for s in range(1, 31) if dump_due(s, 10)] == [1, 10, 20, 30]
    assert [s for s in range(1, 41, 4) if dump_due(s, 10, span=4)] == [1, 9, 17, 29, 37]  # 9..12 holds 10, ...
    assert not any(dump_due(s, 0, 4) for s in range(1, 20))
    assert [s for s in range(1, 25) if embedding_due(s, 10, 4)] == [1, 4, 8, 10, 12, 16, 20, 24]


def test_semantic_every_is_validated_and_evol_rl_is_refused_a_cadence_above_one():
    features = build_config([], []).features
    assert (features.semantic_cadence(300, False), features.dump_cadence(300), features.dump_cadence(5)) == (30, 30, 1)
    assert build_config([], ["method=evol_rl"]).features.semantic_cadence(300, True) == 1
    assert build_config([], ["method=evol_rl", "features.semantic_every=1"]).features.semantic_every == 1
    with pytest.raises(ConfigError, match="semantic_every=5: method 'evol_rl' reads text embeddings"):
        build_config([], ["method=evol_rl", "features.semantic_every=5"])
    with pytest.raises(ConfigError, match="features.semantic_every=0"):
        build_config([], ["features.semantic_every=0"])


# --------------------------------------------------------------------------- the learning-rate rule
def test_the_lr_rule_takes_the_largest_rate_that_raises_pass1_without_losing_5_points_of_pass32():
    from bench.lr_choice import changes, choose

    rows = []
    for arm, d1, d32 in [("grpo-lr1e-5", 0.01, 0.0), ("grpo-lr3e-5", 0.04, -0.03), ("grpo-lr1e-4", 0.08, -0.06),
                         ("grpo-lr3e-4", -0.02, -0.2)]:
        for seed in (0, 1):
            for metric, start, change in (("pass@1", 0.3, d1), ("pass@32", 0.9, d32)):
                rows += [(arm, seed, "r", 0, "cd", "all", metric, start, 200),
                         (arm, seed, "r", 300, "cd", "all", metric, start + change, 200)]
    values = pd.DataFrame(rows, columns=["arm", "seed", "run_id", "step", "benchmark", "level", "metric", "value",
                                         "problems"])
    table = changes(values)
    assert table["eligible"].tolist() == [True, True, False, False] and choose(table) == 3e-5
    assert choose(changes(values[~values["arm"].isin(["grpo-lr1e-5", "grpo-lr3e-5"])])) == 1e-4  # none: smallest


def test_the_tiny_presets_use_the_rate_the_committed_sweep_chose():
    """docs/lr-sweep/per_run.csv (the committed sweep on GRPO alone) and the rule pick the tiny presets' rate."""
    from pathlib import Path

    from bench.lr_choice import changes, choose
    from workbench.models.presets import TINY_TRAINING

    values = pd.read_csv(Path(__file__).resolve().parents[1] / "docs" / "lr-sweep" / "per_run.csv")
    table = changes(values)
    assert list(table.index) == [1e-5, 3e-5, 1e-4, 3e-4] and (table["seeds"] == 2).all()
    assert choose(table) == TINY_TRAINING["learning_rate"]
    assert build_config([], []).training.learning_rate == TINY_TRAINING["learning_rate"]

"""Tests for workbench/tasks: generation, data files, extraction, checking, time limits."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainers.registry import UnknownNameError
from workbench.tasks import BENCHMARKS, TASKS, Problem, TaskOptions, Verdict, build_task, load_benchmark
from workbench.tasks import math_task as math_task_module
from workbench.tasks import verify as verify_module
from workbench.tasks.base import BOXED_SYSTEM_PROMPT
from workbench.tasks.extract import format_number, last_boxed, last_number, normalize_latex, parse_number

# Real benchmark files live beside the repository (shared/data); the product never reads them by default.
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "benchmarks" / "math500.json").is_file(), reason="shared/data not present")


def cfg(**fields):
    """A stand-in for the pydantic TaskConfig: only the attributes the tasks read."""
    return SimpleNamespace(**{"name": "arithmetic", **fields})


def run_in_thread(fn, *args):
    """fn(*args) in a non-main thread (where the alarm signal cannot be used)."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(value=fn(*args)))
    thread.start()
    thread.join(60)
    return box["value"]


# --------------------------------------------------------------------------- registry


def test_registries_list_the_tasks_and_benchmarks():
    assert TASKS.names() == ["arithmetic", "countdown", "gpqa", "gsm8k", "math"]
    assert set(BENCHMARKS.names()) == {"math500", "aime24", "aime25", "amc", "gpqa_diamond", "gsm8k", "countdown", "arithmetic"}
    assert [build_task(cfg(name=n)).chat for n in ("arithmetic", "countdown", "math", "gsm8k", "gpqa")] == [False, False, True, True, True]


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(UnknownNameError, match="unknown task 'mathh'; valid tasks: arithmetic, countdown, gpqa, gsm8k, math"):
        build_task(cfg(name="mathh"))
    with pytest.raises(UnknownNameError, match="valid benchmarks: aime24, aime25, amc"):
        load_benchmark("aime23", data_dir=".")


def test_options_read_any_config_like_object():
    options = TaskOptions.of(cfg(digits=2, operations=["+", "-"], unrelated=1))
    assert (options.digits, options.operations, options.num_test) == (2, ("+", "-"), 200)
    assert TaskOptions.of(None) == TaskOptions()


def test_builds_from_the_workbench_task_config():
    config = pytest.importorskip("workbench.config")
    task = build_task(config.TaskConfig(digits=2, operations=["+", "*"], num_train=20, num_test=10))
    assert task.options.operations == ("+", "*") and len(task.problems("test")) == 10


@pytest.mark.parametrize("name", ["arithmetic", "math"])
def test_unknown_split_is_named(name):
    with pytest.raises(ValueError, match="unknown split 'valid'; valid splits: train, test"):
        build_task(cfg(name=name, path="x.json", test_path="y.json")).problems("valid")


# --------------------------------------------------------------------------- arithmetic


def test_arithmetic_is_deterministic_disjoint_and_correct():
    settings = cfg(digits=2, operations=["+", "-", "*"], num_train=300, num_test=50, data_seed=7)
    first, second = build_task(settings), build_task(settings)
    train, test = first.problems("train"), first.problems("test")
    assert (train, test) == (second.problems("train"), second.problems("test"))
    assert (len(train), len(test)) == (300, 50)
    train_prompts = {p.prompt for p in train}
    assert len(train_prompts) == 300 and len({p.prompt for p in test}) == 50  # no repeats
    assert not train_prompts & {p.prompt for p in test}  # disjoint
    assert len({p.id for p in train}) == 300
    ops = set()
    for problem in train + test:
        expression = problem.prompt.removesuffix("=")
        assert problem.prompt.endswith("=") and problem.system is None
        assert int(problem.answer) == eval(expression)  # noqa: S307  (digits and one operator)
        op = next(c for c in expression[1:] if c in "+-*")
        ops.add(op)
        assert all(len(x) <= 2 for x in expression.split(op))
    assert ops == {"+", "-", "*"}
    other_seed = build_task(cfg(digits=2, operations=["+", "-", "*"], num_train=300, num_test=50, data_seed=8))
    assert other_seed.problems("test") != test


def test_arithmetic_test_split_does_not_depend_on_num_train():
    small = build_task(cfg(num_train=10, num_test=30)).problems("test")
    assert small == build_task(cfg(num_train=2000, num_test=30)).problems("test")
    assert build_task(cfg(num_test=30, max_problems=5)).problems("test") == small[:5]


def test_arithmetic_small_space_is_split_exactly_or_refused():
    task = build_task(cfg(digits=1, num_train=80, num_test=20))  # 100 problems: all of them
    prompts = [p.prompt for p in task.problems("train") + task.problems("test")]
    assert len(set(prompts)) == 100
    with pytest.raises(ValueError, match="exceeds the 100 distinct problems.*raise task.digits"):
        build_task(cfg(digits=1, num_train=90, num_test=20))


@pytest.mark.parametrize("operations", [["/"], [], ["+", "+"]])
def test_arithmetic_rejects_bad_operations(operations):
    with pytest.raises(ValueError, match="task.operations must be distinct symbols"):
        build_task(cfg(operations=operations))


@pytest.mark.parametrize(
    ("completion", "answer"),
    [("936", "936"), (" 936\n347+1=", "936"), ("0936", "936"), ("+936", "936"), ("-12abc", "-12"),
     ("93 6", "93"), ("", None), ("abc 936", None), ("-", None), ("=936", None)],
)
def test_arithmetic_extracts_the_leading_integer(completion, answer):
    task = build_task(cfg())
    assert task.extract(completion) == answer
    assert task.verify(completion, "936") == Verdict(answer, answer == "936")


def test_arithmetic_negative_gold():
    assert build_task(cfg()).verify("-333", "-333").correct


# --------------------------------------------------------------------------- extraction helpers


@pytest.mark.parametrize(
    ("text", "boxed"),
    [
        (r"so \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{1} then \boxed{ 2 }", "2"),
        (r"\fbox{\{1,2\}}", r"\{1,2\}"),
        (r"\boxed{x^{2}} and later \boxed{3", "x^{2}"),  # a box cut off by the length limit is skipped
        (r"the answer is \boxed 5$.", "5"),
        ("no box here", None),
        (r"\boxed{", None),
    ],
)
def test_last_boxed(text, boxed):
    assert last_boxed(text) == boxed


def test_numbers():
    assert last_number("16 - 3 - 4 = 9 eggs, $1,234.50 in all.") == "1,234.50"
    assert last_number("x = -3") == "-3" and last_number("5-3") == "3" and last_number("none") is None
    assert [format_number(parse_number(s)) for s in ["1,000", "-0.50", ".5", "3/4", r"\frac{1}{3}", "72.00"]] == [
        "1000", "-0.5", "0.5", "0.75", "1/3", "72"]
    assert parse_number("abc") is None and parse_number("1/0") is None


def test_normalize_latex_groups_spellings():
    assert normalize_latex(r" \left( 3, \dfrac{\pi}{2} \right). ") == r"(3,\frac{\pi}{2})"
    assert normalize_latex(r"\pi r^2") == r"\pi r^2" and normalize_latex(r"\leftarrow") == r"\leftarrow"


# --------------------------------------------------------------------------- math


def math_task(**fields):
    return build_task(cfg(name="math", **fields))


@needs_data
def test_math_verify_on_real_math500_answers():
    task, problems = load_benchmark("math500", data_dir=DATA, max_problems=20)
    assert len(problems) == 20
    for problem in problems:
        verdict = task.verify(f"Reasoning... so the answer is $\\boxed{{{problem.answer}}}$.", problem.answer)
        assert verdict.correct and not verdict.timed_out, problem
        assert verdict.answer == normalize_latex(problem.answer)
        assert not task.verify("\\boxed{-987654}", problem.answer).correct, problem
        assert task.verify("I do not know.", problem.answer) == Verdict(None, False)


@pytest.mark.parametrize(
    ("gold", "completion", "correct"),
    [
        (r"\frac{1}{2}", r"\boxed{0.5}", True),
        (r"\frac{1}{2}", r"\boxed{\dfrac12}", True),
        (r"\frac{1}{2}", r"\boxed{0.6}", False),
        ("p - q", r"\boxed{-q+p}", True),
        (r"\left( 3, \frac{\pi}{2} \right)", r"\boxed{(3, \pi/2)}", True),
        (r"\left( 3, \frac{\pi}{2} \right)", r"\boxed{(3, \pi)}", False),
        (r"90^\circ", r"\boxed{90}", True),
        (r"\text{Evelyn}", r"\boxed{\text{Evelyn}}", True),
        ("025", r"\boxed{25}", True),  # AIME answers are written with leading zeros
    ],
)
def test_math_equivalent_forms(gold, completion, correct):
    assert math_task().verify(completion, gold).correct is correct


@needs_data
def test_amc_decimal_answers_match_integers():
    task, problems = load_benchmark("amc", data_dir=DATA, max_problems=5)
    for problem in problems:
        assert problem.answer.endswith(".0")
        integer = problem.answer.removesuffix(".0")
        assert task.verify(f"\\boxed{{{integer}}}", problem.answer).correct
        assert not task.verify(f"\\boxed{{{int(integer) + 1}}}", problem.answer).correct


@needs_data
def test_math_reads_the_chat_format_parquet():
    problems = math_task(path=str(DATA / "benchmarks" / "math_train.parquet"), max_problems=50).problems("train")
    assert len(problems) == 50 and len({p.id for p in problems}) == 50
    first = problems[0]
    assert first.id == "MATH-TTT-0" and first.answer == "0" and first.prompt.startswith("Let \\[f(x)")
    assert first.system == "Please reason step by step, and put your final answer within \\boxed{}."


def test_math_system_prompt_order(tmp_path):
    rows = [{"prompt": [{"role": "system", "content": "file system"}, {"role": "user", "content": "1+1?"}],
             "answer": "2"}, {"problem": "2+2?", "solution": "It is $\\boxed{4}$.", "id": "b"}]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows))
    file_system, default_system = math_task(path=str(path)).problems("train")
    assert (file_system.prompt, file_system.system, file_system.id) == ("1+1?", "file system", "0")
    assert (default_system.answer, default_system.id, default_system.system) == ("4", "b", BOXED_SYSTEM_PROMPT)
    overridden = math_task(path=str(path), system_prompt="mine").problems("train")
    assert {p.system for p in overridden} == {"mine"}


def test_file_task_without_split_file_says_which_setting():
    with pytest.raises(ValueError, match="task 'math' has no test file: set task.test_path"):
        math_task(path="train.json").problems("test")


# --------------------------------------------------------------------------- time limit


def test_real_sympy_stall_is_cut():
    started = time.monotonic()
    verdict = math_task(answer_timeout_s=0.5).verify(r"\boxed{9^{9^{9^{9}}}}", "5")  # a tower of powers
    assert verdict == Verdict(answer="9^{9^{9^{9}}}", correct=False, timed_out=True)
    assert time.monotonic() - started < 3
    assert math_task(answer_timeout_s=0.5).verify(r"\boxed{5}", "5").correct  # the helper still works


def test_a_timed_out_check_counts_as_wrong(monkeypatch):
    monkeypatch.setattr(math_task_module, "math_equal", lambda gold, answer, timeout_s: (True, True))
    assert math_task().verify(r"\boxed{2}", "2") == Verdict(answer="2", correct=False, timed_out=True)


def test_a_slow_call_is_cut_in_the_helper():
    started = time.monotonic()
    assert verify_module.call_with_time_limit(time.sleep, (30,), 0.3) == (None, True)  # cut by the alarm
    assert time.monotonic() - started < 2
    assert verify_module.call_with_time_limit(abs, (-3,), 5.0) == (3, False)


def test_a_stall_in_c_code_kills_the_helper(monkeypatch):
    # os.system waits in C and runs no Python signal handler until the command ends:
    # only killing the helper cuts it.
    monkeypatch.setattr(verify_module, "PROCESS_GRACE_S", 0.3)
    started = time.monotonic()
    assert verify_module.call_with_time_limit(os.system, ("sleep 3",), 0.3) == (None, True)
    assert time.monotonic() - started < 1.5
    assert verify_module.call_with_time_limit(abs, (-3,), 5.0) == (3, False)  # a fresh helper


def test_checks_work_from_any_thread():
    task = math_task(answer_timeout_s=5.0)
    assert run_in_thread(task.verify, r"\boxed{0.5}", r"\frac{1}{2}") == Verdict("0.5", True)
    assert not run_in_thread(task.verify, r"\boxed{0.6}", r"\frac{1}{2}").correct
    stalled = run_in_thread(math_task(answer_timeout_s=0.5).verify, r"\boxed{9^{9^{9^{9}}}}", "5")
    assert stalled.timed_out and not stalled.correct


def test_errors_of_the_checked_call_propagate():
    with pytest.raises(ValueError, match="invalid literal"):
        verify_module.call_with_time_limit(int, ("x",), 5.0)
    assert verify_module.call_with_time_limit(abs, (-4,), None) == (4, False)  # no limit: runs here


def test_alarm_restores_the_callers_handler_and_timer():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        started = time.monotonic()
        assert verify_module._call_with_alarm(time.sleep, (30,), 0.2) == (None, True)
        assert time.monotonic() - started < 1
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert verify_module._call_with_alarm(abs, (-2,), 1.0) == (2, False)
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25 < remaining <= 30 and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- gsm8k


def gsm8k_task(**fields):
    return build_task(cfg(name="gsm8k", **fields))


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        (r"so 9*2 = 18 and \boxed{18} #### 20", "18"),  # the box first
        (r"\boxed{\$1,800.00}", "1800"),
        ("9 eggs at $2 is 18.\n#### 18", "18"),  # then ####
        ("#### 1,234 dollars", "1234"),
        ("She sells 9 eggs for $2 each, making $18 a day.", "18"),  # then the last number
        ("She makes -5.50 dollars.", "-5.5"),
        ("no numbers", None),
    ],
)
def test_gsm8k_extraction(completion, answer):
    assert gsm8k_task().extract(completion) == answer


def test_gsm8k_numeric_equality():
    task = gsm8k_task()
    assert task.verify("The answer is 18.00", "18").correct
    assert task.verify(r"\boxed{1,800}", "1800").correct
    assert not task.verify(r"\boxed{17}", "18").correct
    assert task.verify("#### 72", "She sold 48/2 = <<48/2=24>>24 clips... #### 72").correct  # a raw gold


@needs_data
def test_gsm8k_reads_the_real_file():
    problems = gsm8k_task(test_path=str(DATA / "gsm8k" / "test.jsonl")).problems("test")
    assert len(problems) == 1319 and problems[0].answer == "18" and problems[0].id == "0"
    assert all(parse_number(p.answer) is not None and "," not in p.answer for p in problems)


# --------------------------------------------------------------------------- gpqa


@pytest.mark.parametrize(
    ("completion", "letter"),
    [
        (r"I pick B first... \boxed{C}", "C"),
        (r"\boxed{\text{(d)}}", "D"),
        (r"\boxed{C. Cold atomic}", "C"),
        ("A or B? The answer is (B). Indeed.", "B"),
        ("The answer is a bit subtle. Answer: D", "D"),
        ("**Answer:** A", "A"),
        ("Options A and C fail, so D", "D"),  # the last standalone capital
        ("no letter here", None),
        ("AB CD", None),
    ],
)
def test_gpqa_extraction(completion, letter):
    task = build_task(cfg(name="gpqa"))
    assert task.extract(completion) == letter
    assert task.verify(completion, "D").correct is (letter == "D")


@needs_data
def test_gpqa_diamond_loads_letters():
    task, problems = load_benchmark("gpqa_diamond", DATA / "benchmarks" / "gpqa_diamond.json")
    assert len(problems) == 198 and {p.answer for p in problems} == set("ABCD")
    assert task.name == "gpqa" and "letter" in problems[0].system


# --------------------------------------------------------------------------- data file errors


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"question": "q", "answer": "#### 1"}\n{"question": "q2", answer\n', "line 2: invalid JSON"),
        ("bad.jsonl", '{"question": "q", "answer": "#### 1"}\n\n{"answer": "#### 2"}\n',
         "line 3: no 'question' or 'prompt' field"),
        ("bad.jsonl", '{"question": "q", "answer": "no number"}\n', "line 1: the answer 'no number' ends in no"),
        ("bad.jsonl", '[1, 2]\n', "line 1: expected a JSON object"),
        ("empty.jsonl", "\n\n", "holds no problems"),
        ("empty.json", "[]", "holds no problems"),
        ("bad.json", '[{"question": "q",\n "answer": }]', "line 2, column 12: invalid JSON"),
        ("lines.json", '{"question": "q", "answer": "#### 1"}\n{"question": "q", "answer": "#### 1"}\n',
         "rename it to .jsonl"),
        ("dup.json", json.dumps([{"id": "a", "question": "q", "answer": "#### 1"}] * 2),
         "record 2: id 'a' repeats record 1"),
        ("bad.parquet", "not parquet", "not a readable parquet file"),
        ("data.csv", "question,answer", "unsupported file type '.csv'"),
    ],
)
def test_malformed_files_name_the_file_and_place(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match="data file .*" + name) as error:
        gsm8k_task(path=str(path)).problems("train")
    assert message in str(error.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=f"data file {tmp_path}/nope.json: no such file; check the path"):
        math_task(test_path=str(tmp_path / "nope.json")).problems("test")


def test_gpqa_refuses_non_letter_answers(tmp_path):
    path = tmp_path / "gpqa.jsonl"
    path.write_text('{"prompt": "q", "answer": "E"}\n')
    with pytest.raises(ValueError, match="line 1: the answer must be one letter of ABCD, got 'E'"):
        build_task(cfg(name="gpqa", path=str(path))).problems("train")


# --------------------------------------------------------------------------- benchmarks


@needs_data
@pytest.mark.parametrize(
    ("name", "task", "size"),
    [("math500", "math", 500), ("aime24", "math", 30), ("aime25", "math", 30), ("amc", "math", 83),
     ("gpqa_diamond", "gpqa", 198), ("gsm8k", "gsm8k", 1319)],
)
def test_file_benchmarks_load(name, task, size):
    checker, problems = load_benchmark(name, data_dir=DATA)
    assert checker.name == task and len(problems) == size and len({p.id for p in problems}) == size
    assert all(isinstance(p, Problem) and p.prompt and p.answer for p in problems)
    assert load_benchmark(name, data_dir=DATA, max_problems=3)[1] == problems[:3]


def test_arithmetic_benchmark_is_the_configured_test_split():
    settings = cfg(digits=2, num_test=40, data_seed=3, max_problems=2)
    task, problems = load_benchmark("arithmetic", cfg=settings)
    assert task.name == "arithmetic"
    assert problems == build_task(cfg(digits=2, num_test=40, data_seed=3)).problems("test")  # the cap is not carried
    with pytest.raises(ValueError, match="generated, not read from a file"):
        load_benchmark("arithmetic", "x.json")


def test_benchmark_needs_a_location_and_keeps_its_own_task():
    with pytest.raises(ValueError, match="pass its path, or data_dir = the folder holding benchmarks/math500.json"):
        load_benchmark("math500")
    from workbench.tasks import benchmark_task

    gpqa = benchmark_task("gpqa_diamond", cfg(name="math", system_prompt="math only", answer_timeout_s=1.0))
    assert gpqa.name == "gpqa" and gpqa.options.system_prompt is None and gpqa.options.answer_timeout_s == 1.0

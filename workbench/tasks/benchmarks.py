"""Named evaluation benchmarks: which task checks them and which file holds them.

``load_benchmark("math500", data_dir="data")`` reads ``data/benchmarks/math500.json``
with the ``math`` task; ``load_benchmark("amc", "my/amc.jsonl")`` reads a given
file; ``load_benchmark("countdown", cfg=task_cfg)`` generates the countdown
test split of that config (``arithmetic`` likewise). No default data folder exists: the caller says where
the files are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.registry import Registry
from workbench.tasks.base import TASKS, Problem, Task, TaskOptions
from workbench.tasks.files import FileTask


@dataclass(frozen=True)
class Benchmark:
    name: str
    task: str  # the registered task that reads and checks it
    file: str | None  # default file, relative to a data folder (None: generated)


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
for _benchmark in (
    Benchmark("math500", "math", "benchmarks/math500.json"),
    Benchmark("aime24", "math", "benchmarks/aime24.json"),
    Benchmark("aime25", "math", "benchmarks/aime25.json"),
    Benchmark("amc", "math", "benchmarks/amc.json"),
    Benchmark("gpqa_diamond", "gpqa", "benchmarks/gpqa_diamond.json"),
    Benchmark("gsm8k", "gsm8k", "gsm8k/test.jsonl"),
    Benchmark("countdown", "countdown", None),
    Benchmark("arithmetic", "arithmetic", None),
):
    BENCHMARKS.add(_benchmark.name, _benchmark)


def benchmark_task(name: str, cfg: Any = None, *, max_problems: int | None = None) -> Task:
    """The task that checks benchmark ``name``.

    Settings come from ``cfg`` (a task config, e.g. the training task's), except
    that the benchmark's own task is used, ``max_problems`` replaces the config's
    cap, and a system prompt set for a different task is not carried over.
    """
    benchmark = BENCHMARKS.get(name)
    options = TaskOptions.of(cfg)
    system_prompt = options.system_prompt if options.name == benchmark.task else None
    options = TaskOptions(
        **{**vars(options), "name": benchmark.task, "max_problems": max_problems, "system_prompt": system_prompt}
    )
    return TASKS.get(benchmark.task).from_config(options)


def load_benchmark(
    name: str,
    path: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    max_problems: int | None = None,
    cfg: Any = None,
) -> tuple[Task, list[Problem]]:
    """The checking task and the problems (file order, at most ``max_problems``) of a benchmark.

    A file benchmark reads ``path``, or ``data_dir`` / its default file name; the
    synthetic benchmarks generate the test split of ``cfg`` (defaults otherwise).
    """
    benchmark = BENCHMARKS.get(name)
    task = benchmark_task(name, cfg, max_problems=max_problems)
    if benchmark.file is None:
        if path is not None:
            raise ValueError(f"benchmark {name!r} is generated, not read from a file: drop the path {path}")
        return task, task.problems("test")
    if path is None:
        if data_dir is None:
            raise ValueError(
                f"benchmark {name!r} reads a file: pass its path, or data_dir = the folder holding {benchmark.file}"
            )
        path = Path(data_dir) / benchmark.file
    assert isinstance(task, FileTask)
    return task, task.load_file(path)

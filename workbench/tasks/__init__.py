"""Tasks: datasets of problems and the verifiers of their answers (DESIGN 2, 5).

``build_task(cfg)`` builds the registered task ``cfg.name``: ``countdown``
(synthetic, seeded, several steps per solution), ``arithmetic`` (synthetic, one
step), ``math`` (\\boxed{} answers checked by math-verify under a time limit),
``gsm8k`` (numeric answers) or ``gpqa`` (letters A-D).
``load_benchmark(name, ...)`` loads a named evaluation benchmark.
"""

from workbench.tasks.base import SPLITS, TASKS, Problem, Task, TaskOptions, Verdict, build_task, register_task
from workbench.tasks.benchmarks import BENCHMARKS, Benchmark, benchmark_task, load_benchmark

# Imported for their @register_task side effect.
from workbench.tasks import arithmetic, countdown, gpqa, gsm8k, math_task  # noqa: E402, F401  isort: skip

__all__ = [
    "BENCHMARKS",
    "SPLITS",
    "TASKS",
    "Benchmark",
    "Problem",
    "Task",
    "TaskOptions",
    "Verdict",
    "benchmark_task",
    "build_task",
    "load_benchmark",
    "register_task",
]

"""Command-line help that lists registered names, built from the registries so that it cannot drift from them.

Each function reads its registry when called (when a parser is built), so a
method, task, preset or benchmark registered by then is listed; the default a
help text marks is the config's own default.
"""

from __future__ import annotations

from collections.abc import Iterable

OWN_METHOD = "'package.module:Class' (your own Method subclass)"


def listing(names: Iterable[str], default: str | None = None) -> str:
    """``names`` joined by commas, ``default`` marked ``(default)``."""
    return ", ".join(f"{name} (default)" if name == default else name for name in names)


def method_names() -> list[str]:
    """The registered methods: the built-ins and any registered before the call."""
    import trainers.methods  # noqa: F401  the built-ins register as it is imported
    from trainers.method import METHODS

    return METHODS.names()


def method_help() -> str:
    from workbench.config import WorkbenchConfig

    default = WorkbenchConfig.model_fields["method"].default
    return f"training method: {listing(method_names(), default)}, or {OWN_METHOD}"


def methods_help() -> str:
    """Help of ``--methods``, a comma-separated list."""
    return f"comma-separated methods, each one of {listing(method_names())}, or {OWN_METHOD}"


def preset_help() -> str:
    from workbench.config import ModelConfig
    from workbench.models.presets import PRESETS

    return f"model preset: {listing(PRESETS.names(), ModelConfig.model_fields['preset'].default)}"


def task_help() -> str:
    from workbench.config import TaskConfig
    from workbench.tasks import TASKS

    return f"training task: {listing(TASKS.names(), TaskConfig.model_fields['name'].default)}"


def benchmark_help() -> str:
    """What names a benchmark: ``task``, a registered benchmark, or ``NAME=FILE``."""
    from workbench.tasks import BENCHMARKS

    return (f"task (the test split of the run's task), one of {listing(BENCHMARKS.names())}, "
            "or NAME=FILE to read that file")

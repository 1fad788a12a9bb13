"""The pre-registered hypotheses of a study file (DESIGN 10 [ours]), checked against the study's arms.

A hypothesis states that ``arm`` - ``baseline`` on ``metric`` exceeds
``min_effect``; :func:`parse_hypotheses` checks every value against the arms'
seeds and evaluation settings before anything trains, and
:func:`analysis.study_tables.hypothesis_rows` gives each its verdict in the
report (:func:`analysis.paired.verdict`).
"""

from __future__ import annotations

import math
from typing import Any

from analysis.paired import parse_metric_label
from analysis.records import DISTINCT_CORRECT
from analysis.study_tables import Hypothesis
from workbench.config import ConfigError, WorkbenchConfig

HYPOTHESIS_KEYS = ("arm", "baseline", "metric", "min_effect", "benchmark", "level", "step")


def evaluation_steps(cfg: WorkbenchConfig) -> list[int]:
    """The steps a run of ``cfg`` evaluates at: 0 (``eval.initial``), every ``eval.every``, the last
    (``eval.final``)."""
    e, steps = cfg.eval, cfg.training.steps
    out = {0} if e.initial else set()
    out |= set(range(e.every, steps + 1, e.every)) if e.every else set()
    return sorted(out | ({steps} if e.final else set()))


def benchmark_samples(cfg: WorkbenchConfig) -> dict[str, int]:
    """The benchmarks a run of ``cfg`` evaluates, as recorded (``task`` is ``<task>_test``), with their samples
    per problem (``eval.n``, or its ``eval.n_per_benchmark`` entry)."""
    from workbench.run.evaluation import TASK_BENCHMARK

    names = [f"{cfg.task.name}_test" if b == TASK_BENCHMARK else b for b in cfg.eval.benchmarks]
    return {name: cfg.eval.n_per_benchmark.get(name, cfg.eval.n) for name in names}


def _hypothesis(raw: Any, where: str, seeds: dict[str, tuple[int, ...]], first: dict[str, WorkbenchConfig],
                baseline: str) -> Hypothesis:
    """One checked hypothesis; ConfigError naming the bad value and the fix."""
    example = "e.g. {arm: g2rl, baseline: grpo, metric: pass@32, min_effect: 0.03}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, {example}; got {raw!r}")
    unknown = sorted(set(raw) - set(HYPOTHESIS_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(map(repr, unknown))}; a hypothesis has "
                          f"{', '.join(HYPOTHESIS_KEYS)}")
    missing = [k for k in ("arm", "metric", "min_effect") if k not in raw]
    if missing:
        raise ConfigError(f"{where}: give {', '.join(missing)}, {example}")
    arm, base = raw["arm"], raw.get("baseline", baseline)
    for key, name in (("arm", arm), ("baseline", base)):
        if name not in seeds:
            raise ConfigError(f"{where}: {key} {name!r} is not an arm of the study; name one of {list(seeds)}")
    if arm == base:
        raise ConfigError(f"{where}: arm and baseline are both {arm!r}; compare an arm with another one")
    if not set(seeds[arm]) & set(seeds[base]):
        raise ConfigError(f"{where}: arm {arm!r} (seeds {list(seeds[arm])}) and baseline {base!r} (seeds "
                          f"{list(seeds[base])}) share no seed, so nothing can be paired; give them common seeds")
    effect = raw["min_effect"]
    if isinstance(effect, bool) or not isinstance(effect, (int, float)) or not math.isfinite(effect):
        raise ConfigError(f"{where}: min_effect {effect!r} must be a number in the metric's unit (a fraction for "
                          "pass@k and maj@k: 0.03 is 3 points), e.g. min_effect: 0.03")
    samples = {b: min(benchmark_samples(first[arm]).get(b, 0), benchmark_samples(first[base]).get(b, 0))
               for b in benchmark_samples(first[base])}
    benchmark = raw.get("benchmark")
    if benchmark is None:
        if len(samples) != 1:
            raise ConfigError(f"{where}: the study evaluates {list(samples)}; say which with `benchmark:`")
        benchmark = next(iter(samples))
    if benchmark not in samples or not samples[benchmark]:
        raise ConfigError(f"{where}: benchmark {benchmark!r} is not evaluated by both arms; name one of "
                          f"{[b for b, n in samples.items() if n]}")
    metric = raw["metric"]
    try:
        kind, k = parse_metric_label(metric)
    except ValueError:
        raise ConfigError(f"{where}: metric {metric!r} must be pass@k, maj@k or {DISTINCT_CORRECT}, "
                          "e.g. metric: pass@32") from None
    if k is not None and k > samples[benchmark]:
        raise ConfigError(f"{where}: metric {metric!r} needs k <= {samples[benchmark]}, the samples per problem "
                          f"of {benchmark} (eval.n); use {kind}@{samples[benchmark]} or raise eval.n")
    level = raw.get("level")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or level < 0):
        raise ConfigError(f"{where}: level {level!r} must be a problem level (a whole number >= 0, countdown: the "
                          "fewest steps), or left out for every problem")
    step = raw.get("step")
    if step is not None:
        steps = sorted(set(evaluation_steps(first[arm])) & set(evaluation_steps(first[base])))
        if isinstance(step, bool) or not isinstance(step, int) or step not in steps:
            raise ConfigError(f"{where}: step {step!r} is not an evaluation step of both arms; choose one of "
                              f"{steps}, or leave it out for the last")
    return Hypothesis(arm=arm, baseline=base, metric=metric, min_effect=float(effect), benchmark=benchmark,
                      level=level, step=step)


def parse_hypotheses(raw: Any, seeds: dict[str, tuple[int, ...]], first: dict[str, WorkbenchConfig], baseline: str,
                     where: str) -> tuple[Hypothesis, ...]:
    """The checked ``hypotheses:`` of a study file (None: none). ``seeds``: each arm's seeds; ``first``: each
    arm's first cell config (its evaluation settings); ``baseline``: the study's; ``where``: the file, for
    messages. Raises ConfigError naming the hypothesis, the bad value and the fix."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: `hypotheses` must be a list, e.g. hypotheses: [{{arm: g2rl, "
                          f"baseline: grpo, metric: pass@32, min_effect: 0.03}}]; got {raw!r}")
    return tuple(_hypothesis(h, f"{where}, hypotheses[{k}]", seeds, first, baseline) for k, h in enumerate(raw))

"""The config of ``workbench study`` (DESIGN 10): a base run config, arms, seeds, a probe, where to report.

A study file is a run config (the sections of ``workbench run``: ``model``,
``task``, ``training``, ...) plus these top-level keys::

    experiment: study-default        # the MLflow experiment of every run and probe
    report_dir: docs/study           # the report folder (relative to the working directory)
    seeds: [0, 1, 2, 3, 4]
    probe: {benchmark: task, n: 8, max_problems: 64}   # or `probe: null` for none
    baseline: grpo                   # the arm the others are paired with (default: grpo, else the first arm)
    arms:
      - name: grpo
        method: grpo
        seeds: [0, 1, 2, 3, 4, 5, 6, 7]   # this arm's own seeds (default: the study's `seeds`)
      - name: g2rl-eq12
        method: g2rl
        set: {g2rl.scaler: eq12, g2rl.lam: 1}   # `--set`-style overrides of this arm (or a list of "k=v")
    hypotheses:                      # pre-registered: arm - baseline on metric > min_effect
      - {arm: g2rl-eq12, metric: pass@32, min_effect: 0.03}
      - {arm: g2rl-eq12, baseline: grpo, metric: pass@1, min_effect: -0.01, level: 3, step: 100}

An arm is a sweep cell whose config differs: cell configs are built by
:func:`workbench.experiments.sweep.cell_configs`, one arm at a time, so they resolve
exactly as ``workbench sweep --set ...`` would. A cell is an (arm, seed) of the
arm's seeds, identified as a sweep's (method, seed, config hash) plus its arm's
tag, so adding seeds to an arm later trains only the new cells.

A hypothesis names an ``arm``, a ``baseline`` (default: the study's), a
``metric`` (``pass@k`` or ``maj@k`` with k <= the benchmark's samples per
problem, or ``distinct_correct``) and a ``min_effect`` (a number, in the
metric's unit: fractions for pass@k and maj@k); optionally a ``benchmark``
(default: the study's one evaluation benchmark, e.g. ``countdown_test``), a
``level`` (default: every problem) and an evaluation ``step`` (default: the
last). The report gives each its verdict (:func:`analysis.paired.verdict`).

:func:`load_study` checks every value (and builds every cell's config) before
anything is recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from analysis.study_tables import Hypothesis
from workbench.config import ConfigError, WorkbenchConfig, load_yaml
from workbench.experiments.study_hypotheses import parse_hypotheses
from workbench.experiments.sweep import CELL_KEYS, cell_configs, config_hash

STUDY_KEYS = ("experiment", "report_dir", "seeds", "probe", "arms", "jobs", "include", "baseline", "hypotheses")
ARM_KEYS = ("name", "method", "set", "seeds")
DEFAULT_BASELINE = "grpo"
PROBE_KEYS = ("benchmark", "n", "max_problems", "data_dir")
DEFAULT_PROBE = {"benchmark": "task", "n": 8, "max_problems": None, "data_dir": None}


@dataclass(frozen=True)
class Arm:
    name: str
    method: str
    overrides: tuple[str, ...] = ()  # ``key.path=value``, applied after the base config
    seeds: tuple[int, ...] = ()  # its own seeds; () until parse_study fills in the study's


@dataclass(frozen=True)
class Study:
    path: str  # the study file
    experiment: str
    report_dir: Path
    seeds: tuple[int, ...]
    arms: tuple[Arm, ...]
    base: dict[str, Any]  # the run-config layer shared by every arm
    probe: dict[str, Any] | None  # keyword arguments of workbench.experiments.probe.probe, with ``benchmark``
    cells: tuple[WorkbenchConfig, ...] = field(repr=False)  # arm-major, seeds inner
    cell_arms: tuple[str, ...] = field(repr=False)  # the arm of each cell
    jobs: int = 1  # cells trained at once, each in its own process
    include: tuple[Path, ...] = ()  # Markdown files appended to the report (a reading of it, related probes)
    baseline: str = DEFAULT_BASELINE  # the arm every other is paired with
    hypotheses: tuple[Hypothesis, ...] = ()  # pre-registered, in the file's order

    def arm_cells(self, arm: str) -> list[WorkbenchConfig]:
        """The cell configs of one arm, in its seeds' order."""
        return [cfg for cfg, name in zip(self.cells, self.cell_arms, strict=True) if name == arm]

    def grid_text(self) -> str:
        """"7 arms x 5 seeds [0, ..., 4]", or per arm where their seeds differ ("grpo x 8, entropy x 4 ...")."""
        if len({a.seeds for a in self.arms}) == 1:
            return f"{len(self.arms)} arms x {len(self.arms[0].seeds)} seeds {list(self.arms[0].seeds)}"
        return ", ".join(f"{a.name} x {len(a.seeds)} seeds" for a in self.arms)


def _where(path: str) -> str:
    return f"study file {path!r}"


def _yaml_text(value: Any) -> str:
    """``value`` as the text of a ``--set key=value`` that parses back to it (``eq12``, ``1``, ``"1"``)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if yaml.safe_load(text) == value else json.dumps(value)


def _overrides(raw: Any, where: str) -> tuple[str, ...]:
    """An arm's ``set``: a mapping {key.path: value} or a list of "key.path=value" strings."""
    if raw is None:
        return ()
    if isinstance(raw, dict):
        return tuple(f"{key}={_yaml_text(value)}" for key, value in raw.items())
    if isinstance(raw, list) and all(isinstance(t, str) and "=" in t for t in raw):
        return tuple(raw)
    raise ConfigError(f"{where}: `set` must be a mapping such as {{g2rl.scaler: eq12}} or a list of "
                      f"'key.path=value' strings, got {raw!r}")


def _arm(raw: Any, k: int, path: str) -> Arm:
    where = f"{_where(path)}, arms[{k}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(ARM_KEYS)}, got {raw!r}")
    unknown = sorted(set(raw) - set(ARM_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown arm key {', '.join(map(repr, unknown))}; an arm has only "
                          f"{', '.join(ARM_KEYS)} (put config fields under `set`, e.g. set: {{g2rl.lam: 0.5}})")
    name, method = raw.get("name"), raw.get("method")
    if not isinstance(name, str) or not name.strip() or "'" in name:
        raise ConfigError(f"{where}: `name` {name!r} must be a non-empty string without quotes, e.g. name: g2rl-eq12")
    if not isinstance(method, str) or not method:
        raise ConfigError(f"{where} ({name}): give a `method`, e.g. method: g2rl")
    overrides = _overrides(raw.get("set"), f"{where} ({name})")
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key in CELL_KEYS:
            raise ConfigError(f"{where} ({name}): `set` may not set {key}; the arm's `method` and its `seeds` "
                              "(or the study's) set it")
    seeds = _seeds(raw["seeds"], f"{where} ({name})") if "seeds" in raw else ()
    return Arm(name.strip(), method, overrides, seeds)


def _seeds(raw: Any, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: `seeds` {raw!r} must be a non-empty list of integers, e.g. seeds: [0, 1, 2]")
    bad = [s for s in raw if not isinstance(s, int) or isinstance(s, bool) or s < 0]
    if bad:
        raise ConfigError(f"{where}: seeds {bad!r} are not non-negative integers; e.g. seeds: [0, 1, 2]")
    dupes = sorted({s for s in raw if raw.count(s) > 1})
    if dupes:
        raise ConfigError(f"{where}: seeds {dupes} are listed more than once")
    return tuple(raw)


def _probe(raw: Any, path: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"benchmark": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{_where(path)}: `probe` must be a benchmark name, a mapping with keys "
                          f"{', '.join(PROBE_KEYS)}, or null, got {raw!r}")
    unknown = sorted(set(raw) - set(PROBE_KEYS))
    if unknown:
        raise ConfigError(f"{_where(path)}: unknown probe key {', '.join(map(repr, unknown))}; "
                          f"valid: {', '.join(PROBE_KEYS)}")
    probe = DEFAULT_PROBE | raw
    for key in ("n", "max_problems"):
        value = probe[key]
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{_where(path)}: probe.{key} {value!r} must be an integer >= 1"
                              + (" (or null: every problem)" if key == "max_problems" else ""))
    return probe


def _baseline(raw: Any, names: list[str], path: str) -> str:
    """The study's ``baseline`` arm: as given, else ``grpo`` where an arm has that name, else the first arm."""
    if raw is None:
        return DEFAULT_BASELINE if DEFAULT_BASELINE in names else names[0]
    if raw not in names:
        raise ConfigError(f"{_where(path)}: `baseline` {raw!r} is not an arm; name one of {names}")
    return raw


def parse_study(data: dict[str, Any], path: str) -> Study:
    """The checked study of a parsed study file; raises ConfigError naming the value and the fix."""
    data = dict(data)
    study = {key: data.pop(key) for key in STUDY_KEYS if key in data}
    if "arms" not in study or not isinstance(study["arms"], list) or not study["arms"]:
        raise ConfigError(f"{_where(path)}: give a non-empty list `arms`, each with a name and a method, e.g. "
                          "arms: [{name: grpo, method: grpo}]")
    if "seeds" not in study:
        raise ConfigError(f"{_where(path)}: give `seeds`, e.g. seeds: [0, 1, 2]")
    for key in ("method", "seed"):
        if key in data:
            raise ConfigError(f"{_where(path)}: a study sets {key} per cell; drop the top-level {key!r} "
                              "(each arm has a `method`, the study `seeds`)")
    if isinstance(data.get("tracking"), dict) and "experiment" in data["tracking"]:
        raise ConfigError(f"{_where(path)}: set the experiment with the top-level `experiment:`, not "
                          "tracking.experiment")
    experiment = study.get("experiment", "study")
    if not isinstance(experiment, str) or not experiment or "'" in experiment:
        raise ConfigError(f"{_where(path)}: `experiment` {experiment!r} must be a non-empty name without quotes")
    arms = tuple(_arm(raw, k, path) for k, raw in enumerate(study["arms"]))
    names = [a.name for a in arms]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{_where(path)}: arm name(s) {', '.join(map(repr, dupes))} appear more than once; "
                          "give every arm its own name")
    seeds = _seeds(study["seeds"], _where(path))
    arms = tuple(arm if arm.seeds else replace(arm, seeds=seeds) for arm in arms)
    jobs = study.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"{_where(path)}: `jobs` {jobs!r} must be a whole number >= 1 (cells trained at once)")
    cells, cell_arms = [], []
    by_hash: dict[str, str] = {}
    for arm in arms:
        try:
            configs = cell_configs([arm.method], arm.seeds, [data], list(arm.overrides), experiment)
        except ConfigError as err:
            raise ConfigError(f"{_where(path)}, arm {arm.name!r}: {err}") from None
        digest = config_hash(configs[0].model_copy(update={"seed": 0}))  # the arm's config, whatever its seeds
        if digest in by_hash:
            raise ConfigError(f"{_where(path)}: arms {by_hash[digest]!r} and {arm.name!r} resolve to the same "
                              "config; drop one, or make their `set` differ")
        by_hash[digest] = arm.name
        cells += configs
        cell_arms += [arm.name] * len(configs)
    baseline = _baseline(study.get("baseline"), names, path)
    first = {name: cfg for cfg, name in zip(reversed(cells), reversed(cell_arms), strict=True)}
    hypotheses = parse_hypotheses(study.get("hypotheses"), {a.name: a.seeds for a in arms}, first, baseline,
                                  _where(path))
    include = study.get("include", [])
    if not isinstance(include, list) or not all(isinstance(p, str) for p in include):
        raise ConfigError(f"{_where(path)}: `include` {include!r} must be a list of Markdown file paths")
    missing = [p for p in include if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"{_where(path)}: `include` file(s) {missing} do not exist (paths are relative to the "
                          "folder you run the study in)")
    return Study(path=path, experiment=experiment, report_dir=Path(study.get("report_dir") or f"reports/{experiment}"),
                 seeds=seeds, arms=arms, base=data, probe=_probe(study.get("probe", DEFAULT_PROBE), path),
                 cells=tuple(cells), cell_arms=tuple(cell_arms), jobs=jobs,
                 include=tuple(Path(p) for p in include), baseline=baseline, hypotheses=hypotheses)


def load_study(path: str | Path) -> Study:
    return parse_study(load_yaml(path), str(path))

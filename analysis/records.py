"""The record a run leaves in MLflow (DESIGN 6), declared once.

Writers (the trainer's recorders, evaluation, probes, sweeps) and readers
(loaders, the app, notebooks, reports) take every name from here: where the
store is, the tags that say what a run is, the metric-key rule, artifact paths,
the dump and eval columns and their Arrow schema. Imports no torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# --------------------------------------------------------------------------- where the store is

DEFAULT_DB = "mlruns.db"
"""The SQLite store in the working directory when ``MLFLOW_TRACKING_URI`` is unset."""
DEFAULT_ARTIFACTS = "mlartifacts"
"""Artifact folder beside :data:`DEFAULT_DB`."""
DEFAULT_EXPERIMENT = "workbench"
"""The MLflow experiment of ``workbench run``, ``eval``, ``probe`` and ``runs`` unless told otherwise."""
DEFAULT_OUTPUT_DIR = "outputs"
"""Folder of the runs' own folders (``<run id>/``: checkpoints, the spool of records not yet in the store),
relative to the working directory, unless ``training.output_dir`` says otherwise."""


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite file :data:`DEFAULT_DB` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


# --------------------------------------------------------------------------- tags

METHOD_TAG, SEED_TAG, PRESET_TAG, TASK_TAG = "method", "seed", "preset", "task"
HASH_TAG = "config_hash"
"""The digest of a cell's resolved config: a sweep reuses a finished run with the same one."""
HOST_TAG = "workbench.host"
PID_TAG = "workbench.pid"
"""Which process writes a run (the sweep and ``workbench run --resume`` read them)."""
KIND_TAG = "workbench.kind"
"""What a run is, where it is not a training cell (DESIGN 10): :data:`PROBE`, or a parent run."""
PROBE = "probe"
SWEEP_KIND = "sweep"
STUDY_KIND = "study"
PARENT_KINDS = (SWEEP_KIND, STUDY_KIND)
"""Parent runs of ``workbench sweep`` and ``workbench study``: they group their cells and record nothing."""
PARENT_TAG = "mlflow.parentRunId"
"""MLflow's own tag: its UI nests a run under the run it names."""
ARM_TAG = "workbench.arm"
"""The study arm of a run of ``workbench study`` and of its probe."""
PROBE_OF_TAG = "workbench.probe_of"
PROBE_BENCHMARK_TAG = "workbench.probe_benchmark"
PROBE_STEP_TAG = "workbench.probe_step"
CHECKPOINT_TAG = "workbench.checkpoint_dir"
"""Where a run's checkpoints are (``workbench run --resume`` and probes read it)."""
RESUMED_TAG = "workbench.resumed_from_step"
VERSION_TAG = "workbench_version"
RUN_TAGS = (METHOD_TAG, SEED_TAG, PRESET_TAG, TASK_TAG, HASH_TAG, HOST_TAG, PID_TAG, KIND_TAG, PARENT_TAG, ARM_TAG,
            PROBE_OF_TAG, PROBE_BENCHMARK_TAG, PROBE_STEP_TAG, CHECKPOINT_TAG, RESUMED_TAG, VERSION_TAG)
"""Every tag the workbench sets; MLflow adds its own ``mlflow.*`` tags."""
EVAL_METHOD = "eval"
"""The ``method`` tag of a ``workbench eval`` run."""

# --------------------------------------------------------------------------- metric keys

_MLFLOW_NAME = re.compile(r"^[A-Za-z0-9_\-./ ]+$")
METRIC_KINDS = ("pass", "maj")
DISTINCT_CORRECT = "distinct_correct"
"""``eval/<benchmark>/distinct_correct``: the mean over problems of the distinct correct solutions among a
problem's samples, under the task's own equivalence (tasks without one log none). DESIGN 10 [ours]."""
LEVEL_PREFIX = "level_"
_EVAL_KEY = re.compile(r"^eval/(?P<benchmark>[^/]+)/(?P<kind>pass|maj)_at_(?P<k>\d+)$")
_LEVEL_KEY = re.compile(r"^eval/(?P<benchmark>[^/]+)/level_(?P<level>\d+)/"
                        r"(?:(?P<kind>pass|maj)_at_(?P<k>\d+)|distinct_correct)$")


def check_metric_name(name: str) -> str:
    """``name`` if MLflow accepts it as a metric or benchmark name (letters, digits, ``_ - . /`` and space)."""
    if not _MLFLOW_NAME.match(name):
        raise ValueError(f"name {name!r} has characters MLflow rejects; use letters, digits, _ - . / and space")
    return name


def eval_key(benchmark: str, kind: str, k: int) -> str:
    """MLflow metric name ``eval/<benchmark>/<kind>_at_<k>`` (DESIGN 6).

    MLflow rejects '@', hence ``pass_at_16`` rather than ``pass@16``.
    """
    if kind not in METRIC_KINDS:
        raise ValueError(f"kind={kind!r} is unknown; choose one of {list(METRIC_KINDS)}")
    if int(k) < 1:
        raise ValueError(f"k={k} is invalid; need k >= 1")
    check_metric_name(benchmark)
    return f"eval/{benchmark}/{kind}_at_{int(k)}"


def parse_eval_key(key: str) -> tuple[str, str, int] | None:
    """(benchmark, kind, k) of an :func:`eval_key` name, else None."""
    m = _EVAL_KEY.match(key)
    return (m["benchmark"], m["kind"], int(m["k"])) if m else None


def distinct_key(benchmark: str, level: int | None = None) -> str:
    """``eval/<benchmark>/distinct_correct``, or ``eval/<benchmark>/level_<L>/distinct_correct``."""
    check_metric_name(benchmark)
    return f"eval/{benchmark}/{_level_part(level)}{DISTINCT_CORRECT}"


def level_eval_key(benchmark: str, level: int, kind: str, k: int) -> str:
    """``eval/<benchmark>/level_<L>/<kind>_at_<k>``: :func:`eval_key` over the problems of one level."""
    base = eval_key(benchmark, kind, k)
    return base.replace(f"eval/{benchmark}/", f"eval/{benchmark}/{_level_part(level)}", 1)


def parse_level_key(key: str) -> tuple[str, int, str, int | None] | None:
    """(benchmark, level, kind, k) of a :func:`level_eval_key` name (kind ``distinct_correct`` and k None for a
    :func:`distinct_key` with a level), else None."""
    m = _LEVEL_KEY.match(key)
    if not m:
        return None
    return (m["benchmark"], int(m["level"]), m["kind"] or DISTINCT_CORRECT, int(m["k"]) if m["k"] else None)


def _level_part(level: int | None) -> str:
    if level is None:
        return ""
    if isinstance(level, bool) or int(level) != level or level < 0:
        raise ValueError(f"level {level!r} must be a non-negative integer (countdown: the fewest steps; MATH: 1-5)")
    return f"{LEVEL_PREFIX}{int(level)}/"


METRIC_FAMILIES = ("train", "geometry", "perf", "eval", "probe", "system")
"""Metric keys are ``<family>/<name>``; a method's own metrics take its section name as family
(``g2rl/nu_mean``, ``evol_rl/novelty_mean``); ``system/*`` are MLflow's system metrics."""

TRAIN_METRICS = ("reward", "base_reward", "shaped_reward", "advantage_abs", "zero_variance_groups",
                 "zero_variance_groups_base", "all_correct_groups", "all_wrong_groups", "mixed_groups",
                 "no_answer_frac", "answer_timeouts", "completion_tokens",
                 "kl", "entropy", "completion_len", "loss", "grad_norm", "learning_rate", "clip_ratio",
                 "frac_reward_zero_std")
"""``train/<name>``: the step's rewards and batch statistics, then TRL's scalars under our names."""
PERF_METRICS = ("step_s", "feature_s", "embed_s", "eval_s", "probe_s")
PROBE_METRICS = ("accuracy", "completion_tokens")

PAIR_TYPES = ("incorrect_incorrect", "correct_incorrect", "correct_correct")  # index = number correct
DIRECTION_NAMES = ("grad_cos_mean", "neg_frac", "orth_frac", "opp_frac", "aligned_frac")
SEMANTIC_NAMES = ("sem_cos_mean", "sem_dispersion")
GEOMETRY = "geometry"
TRAIN, PERF, PROBE = "train", "perf", "probe"  # the families of fixed metric names
_FIXED = {TRAIN: TRAIN_METRICS, PERF: PERF_METRICS, PROBE: PROBE_METRICS}


def metric_key(family: str, name: str) -> str:
    """``<family>/<name>``, checked against the declared names where the family has a fixed list."""
    declared = _FIXED.get(family)
    if declared is not None and name not in declared:
        raise ValueError(f"{family}/{name} is not a declared metric; {family}/ holds {list(declared)}")
    return check_metric_name(f"{family}/{name}")


def geometry_key(name: str, pair_type: str | None = None) -> str:
    """``geometry/<name>``, or ``geometry/<pair_type>/<name>`` for one pair type."""
    if name not in DIRECTION_NAMES + SEMANTIC_NAMES:
        raise ValueError(f"geometry metric {name!r}: use one of {list(DIRECTION_NAMES + SEMANTIC_NAMES)}")
    if pair_type is not None and pair_type not in PAIR_TYPES:
        raise ValueError(f"pair type {pair_type!r}: use one of {list(PAIR_TYPES)}")
    return f"{GEOMETRY}/{name}" if pair_type is None else f"{GEOMETRY}/{pair_type}/{name}"


def is_declared_metric(key: str, method_sections=()) -> bool:
    """Whether ``key`` is a metric of the record: a declared name, an eval or geometry key, a system
    metric, or ``<section>/<name>`` of one of ``method_sections``."""
    family, _, rest = key.partition("/")
    if family == "eval":
        benchmark, _, name = rest.partition("/")
        plain = name == DISTINCT_CORRECT and "/" not in benchmark
        return parse_eval_key(key) is not None or parse_level_key(key) is not None or plain
    if family == GEOMETRY:
        pair, _, name = rest.rpartition("/")
        return name in DIRECTION_NAMES + SEMANTIC_NAMES and (not pair or pair in PAIR_TYPES)
    if family in _FIXED:
        return rest in _FIXED[family]
    return bool(rest) and (family == "system" or family in method_sections)

METHOD_COLORS = {"grpo": "#7f7f7f", "entropy": "#1f77b4", "evol_rl": "#2ca02c", "g2rl": "#d62728"}
"""The built-in methods in the order tables list them, each with the colour every plot draws it in (a plug-in
method comes after them, in a colour of its own). One declaration for the app, the reports and the study."""
METHOD_ORDER = tuple(METHOD_COLORS)

# --------------------------------------------------------------------------- artifacts

FEATURES_DIR = "features"
EVAL_DIR = "eval"
COMPLETIONS_TABLE = "completions.json"
"""One group's completions per logged step, in one MLflow table (``log_table``) with a ``step`` column.

One table, appended, rather than a file per step: MLflow lists every table of a run in
one tag of at most 8,000 characters, which a file per step would overflow after about
130 steps.
"""
SUMMARY_DIR = "summary"
SUMMARY_PATH = f"{SUMMARY_DIR}/pairs.parquet"
"""The run's per-step pair summaries, one artifact rewritten whole at checkpoints and at the end of training."""
CONFIG_ARTIFACT = "config.yaml"
"""The resolved run config (``--set`` overrides applied), as YAML."""
_STEP_FILE = re.compile(r"^(?P<folder>[a-z]+)/step_(?P<step>\d{6,})\.parquet$")


def step_path(folder: str, step: int) -> str:
    """Artifact path of the step-``step`` file of ``folder`` (:data:`FEATURES_DIR` or :data:`EVAL_DIR`)."""
    return f"{folder}/step_{step:06d}.parquet"


def parse_step_path(path: str) -> tuple[str, int] | None:
    """(folder, step) of a :func:`step_path`, else None."""
    m = _STEP_FILE.match(path)
    return (m["folder"], int(m["step"])) if m else None


def dump_path(step: int) -> str:
    """Artifact path of the feature dump of training step ``step``."""
    return step_path(FEATURES_DIR, step)


def eval_path(step: int) -> str:
    """Artifact path of the evaluation samples at step ``step``."""
    return step_path(EVAL_DIR, step)


# --------------------------------------------------------------------------- columns

DUMP_COLUMNS = ("step", "group", "sample", "prompt_id", "prompt", "completion", "answer", "correct", "base_reward",
                "shaped_reward", "advantage", "num_tokens", "grad_feature", "embedding", "nu", "nu_bar", "novelty")
"""Columns of a feature dump, in order; a method's own score columns follow them."""

SCORE_COLUMNS = ("nu", "nu_bar", "novelty")
"""The built-in methods' score columns (G2RL's nu and nu_bar, EVOL-RL's novelty), in every dump."""

EVAL_COLUMNS = ("step", "benchmark", "problem_id", "sample", "answer", "correct", "level", "solution")
"""Columns of an evaluation frame: one row per sample.

``level`` is the problem's level where its task defines one (countdown: the fewest steps of a solution;
MATH: the file's ``level``), else null; ``solution`` is a correct sample's solution in the task's canonical
form (countdown: the expression tree with + and * flattened and sorted), null for a wrong sample or a task
without one. Frames recorded before these two columns existed lack them; readers treat them as null."""
REQUIRED_EVAL_COLUMNS = EVAL_COLUMNS[:6]
"""The columns every evaluation frame has, also those recorded before ``level`` and ``solution``."""

COMPLETION_COLUMNS = ("step", "group", "sample", "prompt", "completion", "answer", "correct", "base_reward",
                      "shaped_reward", "advantage")
"""Columns of :data:`COMPLETIONS_TABLE`: the dump's columns without the vectors, for one group a step."""

SUMMARY_COLUMNS = ("step", "pair_type", "pairs", "grad_cos_mean", "neg_frac", "orth_frac", "opp_frac",
                   "aligned_frac", "sem_cos_mean", "sem_dispersion", "grad_hist", "sem_hist")
"""Columns of :data:`SUMMARY_PATH`: one row per step with geometry and pair type (:data:`SUMMARY_PAIR_TYPES`).

``pairs`` counts the row's pairs; ``grad_cos_mean``, ``neg_frac``, ``sem_cos_mean`` and ``sem_dispersion``
are the step's :mod:`analysis.geometry` statistics over them; ``orth_frac``, ``opp_frac`` and ``aligned_frac``
are lists, one value per tau of :data:`SUMMARY_TAUS`; ``grad_hist`` and ``sem_hist`` are the counts of the
gradient and semantic cosines in the :data:`SUMMARY_BINS` equal bins of [-1, 1] (the last bin includes 1).
Without text embeddings the semantic columns are null.
"""

SUMMARY_PAIR_TYPES = ("all", "incorrect_incorrect", "correct_incorrect", "correct_correct")
"""The ``pair_type`` of a summary row: every pair of the step, or those of one type (DESIGN 4)."""
SUMMARY_TAUS = tuple(k / 20 for k in range(21))
"""The tau grid of the summaries' fractions: 0.00, 0.05, ..., 1.00."""
SUMMARY_BINS = 50
"""Histogram bins of the summaries over cosines in [-1, 1] (width 0.04)."""

DATASET_CONTEXTS = ("training", "evaluation")
"""``mlflow.log_input`` contexts: the training split, and each benchmark a run evaluates on."""


def dump_schema(vector_dtype: str = "float32", extra_scores=()):
    """The Arrow schema of a feature dump; vectors are ``float16`` or ``float32`` lists."""
    import pyarrow as pa

    vec = pa.list_(pa.float16() if vector_dtype == "float16" else pa.float32())
    types = {"step": pa.int64(), "group": pa.int64(), "sample": pa.int64(), "prompt_id": pa.string(),
             "prompt": pa.string(), "completion": pa.string(), "answer": pa.string(), "correct": pa.bool_(),
             "base_reward": pa.float64(), "shaped_reward": pa.float64(), "advantage": pa.float64(),
             "num_tokens": pa.int64(), "grad_feature": vec, "embedding": vec}
    names = list(dict.fromkeys((*DUMP_COLUMNS, *extra_scores)))
    return pa.schema([(name, types.get(name, pa.float64())) for name in names])


def summary_schema():
    """The Arrow schema of :data:`SUMMARY_PATH`."""
    import pyarrow as pa

    fractions = pa.list_(pa.float64())
    counts = pa.list_(pa.int64())
    return pa.schema([("step", pa.int64()), ("pair_type", pa.string()), ("pairs", pa.int64()),
                      ("grad_cos_mean", pa.float64()), ("neg_frac", pa.float64()), ("orth_frac", fractions),
                      ("opp_frac", fractions), ("aligned_frac", fractions), ("sem_cos_mean", pa.float64()),
                      ("sem_dispersion", pa.float64()), ("grad_hist", counts), ("sem_hist", counts)])


def eval_schema():
    """The Arrow schema of an evaluation frame."""
    import pyarrow as pa

    return pa.schema([("step", pa.int64()), ("benchmark", pa.string()), ("problem_id", pa.string()),
                      ("sample", pa.int64()), ("answer", pa.string()), ("correct", pa.bool_()),
                      ("level", pa.int64()), ("solution", pa.string())])

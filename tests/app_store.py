"""A synthetic, contract-exact MLflow store (DESIGN 6) for the app's tests.

:func:`build_store` writes, with ``MlflowClient`` only, what ``workbench sweep``
would record for a grid of methods x seeds: tags, the flattened config as
params, per-step ``train/``, ``geometry/``, method and ``perf/`` metrics,
``eval/<benchmark>/{pass,maj}_at_<k>`` metrics (and the task's ``distinct_correct`` and per-level
metrics: its problems have levels 2 and 3, aime25's none), feature dumps
``features/step_<step:06d>.parquet``, the pair summaries ``summary/pairs.parquet`` (of every step,
through :class:`analysis.summary.PairSummaries`, as the recorders write them) and eval artifacts
``eval/step_<step:06d>.parquet``. Numbers are invented but shaped like the
paper's: GRPO's gradient features are more aligned than G2RL's, accuracy
rises with training. The geometry and pass@k metrics are computed from the
same dumps and eval rows with :mod:`analysis`, so they agree as a real run's do.

The grid's runs are nested under a parent run (tag ``workbench.kind=sweep``), as
``workbench sweep`` records them; the app must not take it for a run.

Two runs are damaged on purpose: ``grpo`` seed 1 has no dumps and no summaries at all
(``features.dump_every=0``) and ``g2rl`` seed 1 has a truncated dump (an
interrupted write), status KILLED and no summaries (a run recorded before they existed).

Run as a script to make a store to look at:
``python tests/app_store.py /tmp/store`` then
``MLFLOW_TRACKING_URI=sqlite:////tmp/store/mlruns.db streamlit run app/main.py``.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.geometry import geometry_metrics, unit_rows
from analysis.records import EVAL_COLUMNS, SUMMARY_PATH
from analysis.summary import PairSummaries
from trainers.shaping import group_outcomes
from workbench.run.evaluation import score
from workbench.tracking import write_parquet
from workbench.tasks.countdown import Puzzle, prompt_of, random_steps
from workbench.tasks.countdown_rules import format_steps

EXPERIMENT = "workbench"
METHODS = ("grpo", "entropy", "evol_rl", "g2rl")
SEEDS = (0, 1)
BENCHMARKS = ("task", "aime25")
NO_DUMPS = ("grpo", 1)  # (method, seed) of the run without feature dumps
CORRUPT = ("g2rl", 1, 10)  # (method, seed, step) of the truncated dump
NO_SUMMARY = CORRUPT[:2]  # (method, seed) of the run recorded before pair summaries existed
GRAD_DIM, EMB_DIM = 24, 16
# Weight of the shared direction in the gradient features: mean cosine ~ a^2 / (1 + a^2).
ALIGNMENT = {"grpo": 0.55, "entropy": 0.42, "evol_rl": 0.38, "g2rl": 0.26}
SKILL = {"grpo": 0.0, "entropy": 0.25, "evol_rl": 0.3, "g2rl": 0.45}  # logit bonus over the base policy
DUMP_SCHEMA = pa.schema([  # DESIGN 6, as trainers.recorder.StepRecorder.frame writes it
    ("step", pa.int64()), ("group", pa.int64()), ("sample", pa.int64()), ("prompt_id", pa.string()),
    ("prompt", pa.string()), ("completion", pa.string()), ("answer", pa.string()), ("correct", pa.bool_()),
    ("base_reward", pa.float64()), ("shaped_reward", pa.float64()), ("advantage", pa.float64()),
    ("num_tokens", pa.int64()), ("grad_feature", pa.list_(pa.float32())), ("embedding", pa.list_(pa.float32())),
    ("nu", pa.float64()), ("nu_bar", pa.float64()), ("novelty", pa.float64()),
])
DUMP_COLUMNS = tuple(DUMP_SCHEMA.names)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _vectors(x: np.ndarray) -> pd.Series:
    flat = pa.array(np.ascontiguousarray(x, dtype=np.float32).ravel(), type=pa.float32())
    lists = pa.FixedSizeListArray.from_arrays(flat, x.shape[1]).cast(pa.list_(pa.float32()))
    return pd.Series(pd.arrays.ArrowExtensionArray(lists))


def _standardise(r: np.ndarray, groups: np.ndarray) -> np.ndarray:
    out = np.zeros_like(r)
    for g in np.unique(groups):
        idx = groups == g
        out[idx] = (r[idx] - r[idx].mean()) / (r[idx].std() + 1e-4)
    return out


def _minmax(x: np.ndarray, equal: float) -> np.ndarray:
    span = np.ptp(x)
    return np.full_like(x, equal) if span == 0 else (x - x.min()) / span


def _shape(method: str, correct: np.ndarray, grad: np.ndarray, emb: np.ndarray, groups: np.ndarray):
    """Base and shaped rewards and the method's scores, group by group (DESIGN 3)."""
    n = len(correct)
    base = np.where(correct, 1.0, 0.0)
    shaped = base.copy()
    nu = nu_bar = novelty = np.full(n, np.nan)
    if method == "g2rl":
        base = np.where(correct, 1.0, -1.0)
        nu, nu_bar, shaped = np.zeros(n), np.zeros(n), np.zeros(n)
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            u = unit_rows(grad[idx])
            s2 = (u @ u.T) ** 2  # (m, m)
            w = np.exp(base[idx])[None, :] * (1 - np.eye(len(idx)))
            w = w / (w.sum(axis=1, keepdims=True) + 1e-8)
            nu[idx] = np.maximum(1 - (w * s2).sum(axis=1), 0)
            nu_bar[idx] = _minmax(nu[idx], 0.0)
            shaped[idx] = np.clip(base[idx] * (1 + 1.0 * nu_bar[idx]), -3, 3)
    elif method == "evol_rl":
        novelty = np.zeros(n)
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            s = np.clip(emb[idx] @ emb[idx].T, 0, 1)
            np.fill_diagonal(s, np.nan)
            u = 1 - (0.5 * np.nanmean(s, axis=1) + 0.5 * np.nanmax(s, axis=1))
            novelty[idx] = u
            for flag in (True, False):
                cls = correct[idx] == flag
                if cls.any():
                    resc = _minmax(u[cls], 0.5)
                    shaped[idx[cls]] = (0.5 + 0.5 * resc) if flag else (-1 + 0.5 * resc)
    return base, shaped, nu, nu_bar, novelty


def _step_batch(rng, method: str, step: int, steps: int, groups: int, group_size: int):
    """One training step's completions, as the trainer would dump them."""
    progress = step / steps
    a = ALIGNMENT[method] * (1.0 - 0.3 * progress) if method == "g2rl" else ALIGNMENT[method]
    rows, grads, embs = [], [], []
    for g in range(groups):
        numbers = tuple(int(v) for v in rng.integers(1, 11, size=4))
        solution = random_steps(numbers, 3, random.Random(int(rng.integers(1 << 30))))
        truth = str(solution[-1][3])
        difficulty = rng.normal(0, 1.2)
        p = _sigmoid(-0.6 + 2.2 * progress + SKILL[method] - difficulty)
        shared = rng.standard_normal(GRAD_DIM)
        shared /= np.linalg.norm(shared)
        topic = rng.standard_normal(EMB_DIM)
        topic /= np.linalg.norm(topic)
        for s in range(group_size):
            ok = bool(rng.random() < p)
            steps = solution if ok else random_steps(numbers, 2, random.Random(int(rng.integers(1 << 30))))
            answer = truth if ok else (None if rng.random() < 0.15 else str(steps[-1][3]))
            text = format_steps(steps) if answer is not None else format_steps(steps).replace("=", "?", 1)
            grads.append((a * shared + rng.standard_normal(GRAD_DIM) / np.sqrt(GRAD_DIM)) * rng.uniform(0.5, 2.0))
            e = 1.7 * topic + rng.standard_normal(EMB_DIM) / np.sqrt(EMB_DIM)
            embs.append(e / np.linalg.norm(e))
            rows.append({
                "step": step, "group": g, "sample": s, "prompt_id": f"train-{(step * 97 + g) % 500:04d}",
                "prompt": prompt_of(Puzzle(numbers, int(truth))), "completion": text, "answer": answer,
                "correct": ok and answer is not None, "num_tokens": int(rng.integers(12, 48)),
            })
    frame = pd.DataFrame(rows)
    grad, emb = np.array(grads), np.array(embs)
    group_ids = frame["group"].to_numpy()
    correct = frame["correct"].to_numpy(dtype=bool)
    base, shaped, nu, nu_bar, novelty = _shape(method, correct, grad, emb, group_ids)
    frame["base_reward"], frame["shaped_reward"] = base, shaped
    frame["advantage"] = _standardise(shaped, group_ids)
    dump = pd.DataFrame({
        "step": frame["step"].astype("int64"),
        "group": frame["group"].astype("int64"),
        "sample": frame["sample"].astype("int64"),
        "prompt_id": frame["prompt_id"].astype(str),
        "prompt": frame["prompt"].astype(str),
        "completion": frame["completion"].astype(str),
        "answer": pd.array(frame["answer"].tolist(), dtype="string"),
        "correct": frame["correct"].astype(bool),
        "base_reward": frame["base_reward"].astype("float64"),
        "shaped_reward": frame["shaped_reward"].astype("float64"),
        "advantage": frame["advantage"].astype("float64"),
        "num_tokens": frame["num_tokens"].astype("int64"),
        "grad_feature": _vectors(grad),
        "embedding": _vectors(emb),
        "nu": pd.array([None if np.isnan(v) else v for v in nu], dtype="Float64"),
        "nu_bar": pd.array([None if np.isnan(v) else v for v in nu_bar], dtype="Float64"),
        "novelty": pd.array([None if np.isnan(v) else v for v in novelty], dtype="Float64"),
    })[list(DUMP_COLUMNS)]
    return dump, grad, emb


def _step_metrics(rng, method: str, step: int, steps: int, dump: pd.DataFrame, grad, emb,
                  tau: float) -> dict[str, float]:
    progress = step / steps
    groups = dump["group"].to_numpy()
    correct = dump["correct"].to_numpy(dtype=bool)
    zero_var = sum(int(np.ptp(dump["shaped_reward"].to_numpy()[groups == g]) == 0) for g in np.unique(groups))
    zero_var_base = sum(int(np.ptp(dump["base_reward"].to_numpy()[groups == g]) == 0) for g in np.unique(groups))
    entropy_floor = 0.9 if method in ("entropy", "g2rl") else 0.55
    metrics = {
        "train/reward": float(correct.mean()),
        "train/base_reward": float(dump["base_reward"].mean()),
        "train/shaped_reward": float(dump["shaped_reward"].mean()),
        "train/advantage_abs": float(dump["advantage"].abs().mean()),
        "train/zero_variance_groups": zero_var,
        "train/zero_variance_groups_base": zero_var_base,
        **{f"train/{name}": share for name, share in group_outcomes(correct, groups).items()},
        "train/entropy": entropy_floor + (1.6 - entropy_floor) * np.exp(-3 * progress) + rng.normal(0, 0.03),
        "train/kl": 0.002 * step * (1 + 0.2 * rng.random()),
        "train/completion_len": float(dump["num_tokens"].mean()),
        "train/loss": float(rng.normal(0, 0.05)),
        "perf/step_s": 0.1 + 0.02 * rng.random(),
        "perf/feature_s": 0.002,
        "perf/embed_s": 0.01,
    }
    metrics |= geometry_metrics(grad, emb, groups, correct, tau=tau)
    if method == "g2rl":
        metrics["g2rl/nu_mean"] = float(dump["nu"].mean())
    if method == "evol_rl":
        metrics["evol_rl/novelty_mean"] = float(dump["novelty"].mean())
    return metrics


def _eval_frame(rng, method: str, step: int, steps: int, problems: int, n: int) -> pd.DataFrame:
    rows = []
    for benchmark, offset in zip(BENCHMARKS, (0.8, -1.8), strict=True):
        for p in range(problems):
            difficulty = np.random.default_rng(1000 * p + len(benchmark)).normal(0, 1.5)  # same problems for all
            prob = _sigmoid(offset + 1.5 * step / steps + SKILL[method] - difficulty)
            level = 2 + p % 2 if benchmark == "task" else None  # the task's problems have levels, aime25's none
            for s in range(n):
                ok = bool(rng.random() < prob)
                answer = "42" if ok else (None if rng.random() < 0.2 else str(int(rng.integers(0, 6))))
                solution = f"form-{s % 3}" if ok and benchmark == "task" else None  # aime25: no canonical form
                rows.append((step, benchmark, f"{benchmark}-{p:03d}", s, answer, ok, level, solution))
    return pd.DataFrame(rows, columns=list(EVAL_COLUMNS)).astype({"level": "Int64"})


def _eval_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """What a run logs for an evaluation (:func:`workbench.run.evaluation.score`): pass@k and maj@k, distinct
    correct solutions of the task, and both per level of the task's problems."""
    return score(frame)


def _params(method: str, seed: int, dumps: bool, tau: float) -> dict[str, str]:
    return {
        "method": method, "seed": seed, "model.preset": "tiny", "model.dtype": "float32",
        "task.name": "countdown", "training.learning_rate": 5e-5, "training.num_generations": 8,
        "training.beta": 0.001, "training.temperature": 1.0, "training.max_steps": 20,
        "entropy.coef": 0.01 if method == "entropy" else 0.0, "evol_rl.labels": "verifier",
        "g2rl.lam": 1.0, "g2rl.scaler": "paper_text", "g2rl.route": "sampling",
        "features.geometry": True, "features.dump_every": 2 if dumps else 0, "features.dtype": "float32", "features.tau": tau,
        "eval.n": 8, "eval.every": 10, "tracking.experiment": EXPERIMENT,
    }


def build_store(
    root: Path | str,
    methods: tuple[str, ...] = METHODS,
    seeds: tuple[int, ...] = SEEDS,
    steps: int = 20,
    groups: int = 4,
    group_size: int = 8,
    dump_every: int = 2,
    eval_steps: tuple[int, ...] = (10, 20),
    problems: int = 12,
    eval_n: int = 8,
    scratch: bool = True,
    tau: float = 0.1,
) -> str:
    """Write the synthetic store under ``root`` (``mlruns.db`` + ``mlartifacts/``) and return its URI.

    Experiment ``workbench`` holds the methods x seeds grid. With ``scratch``, a
    second experiment ``scratch`` holds one short G2RL run without evaluations.
    Every run records ``features.tau`` = ``tau`` and logs its geometry metrics at it.
    """
    from mlflow.tracking import MlflowClient

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    artifacts = (root / "mlartifacts").resolve().as_uri()
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=artifacts)
    parent = client.create_run(exp_id, run_name=EXPERIMENT, tags={"workbench.kind": "sweep"}).info.run_id
    shape = {"groups": groups, "group_size": group_size, "dump_every": dump_every, "problems": problems,
             "eval_n": eval_n, "tau": tau}
    for m_idx, method in enumerate(methods):
        for seed in seeds:
            rng = np.random.default_rng(100 * m_idx + seed)
            _write_run(client, exp_id, rng, method, seed, steps, eval_steps, parent=parent, **shape)
    client.set_terminated(parent, status="FINISHED")
    if scratch:
        scratch_id = client.create_experiment("scratch", artifact_location=artifacts)
        _write_run(client, scratch_id, np.random.default_rng(7), "g2rl", 0, 4, (), **shape)
    return uri


def _write_run(client, exp_id: str, rng, method: str, seed: int, steps: int, eval_steps: tuple[int, ...], *,
               groups: int, group_size: int, dump_every: int, problems: int, eval_n: int, tau: float,
               parent: str | None = None) -> str:
    """One run as the trainer records it: tags, params, config.yaml, metrics, dumps, eval artifacts.

    ``parent``: the run id of the sweep's parent run it is nested under (tag ``mlflow.parentRunId``).
    """
    from mlflow.entities import Metric, Param

    dumps = (method, seed) != NO_DUMPS
    tags = {"method": method, "seed": str(seed), "preset": "tiny", "task": "countdown", "workbench_version": "0.1.0",
            **({"mlflow.parentRunId": parent} if parent else {})}
    run_id = client.create_run(exp_id, run_name=f"{method}-{seed}", tags=tags).info.run_id
    params = [Param(k, str(v)) for k, v in _params(method, seed, dumps, tau).items()]
    client.log_batch(run_id, params=params)
    client.log_text(run_id, "\n".join(f"{p.key}: {p.value}" for p in params), "config.yaml")
    now = int(time.time() * 1000)
    metrics = []
    summaries = PairSummaries()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for step in range(1, steps + 1):
            dump, grad, emb = _step_batch(rng, method, step, steps, groups, group_size)
            metrics += [Metric(k, float(v), now + step, step)
                        for k, v in _step_metrics(rng, method, step, steps, dump, grad, emb, tau).items()]
            if dumps:  # geometry is recorded with features.every > 0
                summaries.add(step, grad, emb, dump["group"].to_numpy(), dump["correct"].to_numpy(dtype=bool))
            if dumps and (step % dump_every == 0 or step == 1):
                _log_parquet(client, run_id, dump, tmp / "features" / f"step_{step:06d}.parquet",
                             schema=DUMP_SCHEMA, truncate=(method, seed, step) == CORRUPT)
            if step in eval_steps:
                frame = _eval_frame(rng, method, step, steps, problems, eval_n)
                metrics += [Metric(k, v, now + step, step) for k, v in _eval_metrics(frame).items()]
                _log_parquet(client, run_id, frame, tmp / "eval" / f"step_{step:06d}.parquet")
        if (table := summaries.table()) is not None and (method, seed) != NO_SUMMARY:
            local = tmp / SUMMARY_PATH
            local.parent.mkdir(parents=True, exist_ok=True)
            write_parquet(table, local)  # as MlflowTracker.log_parquet writes it
            client.log_artifact(run_id, str(local), local.parent.name)
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    client.set_terminated(run_id, status="KILLED" if (method, seed) == CORRUPT[:2] else "FINISHED")
    return run_id


def _log_parquet(client, run_id: str, frame: pd.DataFrame, local: Path, schema: pa.Schema | None = None,
                 truncate: bool = False) -> None:
    """Write ``frame`` as Parquet and log it under the artifact folder named like ``local``'s parent.

    As the workbench writes them: with ``schema`` (feature dumps) a plain Arrow
    table of exactly that schema, as ``workbench.run.recording`` builds it; without
    (eval rows) ``pa.Table.from_pandas``, as ``MlflowTracker.log_parquet`` does.
    """
    local.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if schema is not None:
        table = table.cast(schema).replace_schema_metadata(None)
    pq.write_table(table, local)
    if truncate:  # an interrupted write: the footer is missing
        data = local.read_bytes()
        local.write_bytes(data[: len(data) // 2])
    client.log_artifact(run_id, str(local), local.parent.name)
    local.unlink()


def build_empty_store(root: Path | str) -> str:
    """A tracking URI of a store with no runs at all (the SQLite file is created on first use)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlruns.db'}"


def session_store(tmp_path_factory) -> str:
    """The synthetic store shared by every test of one pytest session (built on first use, about 15 s)."""
    root = tmp_path_factory.getbasetemp() / "app-store"
    done = root / ".complete"
    if not done.exists():
        if root.exists():  # a build that died half-way
            import shutil

            shutil.rmtree(root)
        uri = build_store(root)
        done.write_text(uri)
    return done.read_text()


def add_probes(uri: str, experiment: str = EXPERIMENT, step: int = 20, problems: int = 4, n: int = 8) -> list[str]:
    """Probe runs (DESIGN 10), as ``workbench probe`` records them, of every FINISHED run of ``experiment``.

    Each has the tags ``workbench.kind=probe``, ``workbench.probe_of`` and the source's ``method`` and ``seed``,
    one dump at ``step`` (one group of ``n`` samples per problem; base = shaped reward = the verifier's 1/0,
    advantage NaN, no method scores) and the ``geometry/*`` metrics of that dump. Returns their run ids.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    ids = []
    finished = client.search_runs([exp_id], filter_string="attributes.status = 'FINISHED' and tags.method != ''")
    for k, source in enumerate(finished):  # the training runs, not the sweep's parent
        method, seed = source.data.tags["method"], source.data.tags["seed"]
        tags = {"workbench.kind": "probe", "workbench.probe_of": source.info.run_id, "method": method, "seed": seed,
                "preset": "tiny", "task": "task", "workbench_version": "0.1.0"}
        run_id = client.create_run(exp_id, run_name=f"probe-{method}-{seed}", tags=tags).info.run_id
        dump, grad, emb = _step_batch(np.random.default_rng(500 + k), method, step, step, problems, n)
        reward = dump["correct"].astype("float64")
        dump = dump.assign(base_reward=reward, shaped_reward=reward, advantage=np.nan,
                           nu=pd.array([None] * len(dump), dtype="Float64"),
                           nu_bar=pd.array([None] * len(dump), dtype="Float64"),
                           novelty=pd.array([None] * len(dump), dtype="Float64"))
        metrics = geometry_metrics(grad, emb, dump["group"].to_numpy(), dump["correct"].to_numpy(dtype=bool))
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, value, now, step) for key, value in metrics.items()],
                         params=[Param("n", str(n)), Param("features.tau", "0.1")])
        with tempfile.TemporaryDirectory() as tmp:
            _log_parquet(client, run_id, dump, Path(tmp) / "features" / f"step_{step:06d}.parquet",
                         schema=DUMP_SCHEMA)
        client.set_terminated(run_id, status="FINISHED")
        ids.append(run_id)
    return ids


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "test-output/store")
    t0 = time.perf_counter()
    print(build_store(target), f"({time.perf_counter() - t0:.1f} s)")

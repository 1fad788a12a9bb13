"""Sample n answers per benchmark problem and score them (DESIGN 5): the one evaluation loop.

Training-time evaluation (:class:`EvalCallback`), ``workbench eval`` and
``workbench probe`` share:

- :func:`load_suite`: the benchmarks to evaluate on, as (name, task, problems);
- :func:`sample`: ``n`` completions per problem by plain temperature sampling
  (no top-k, no top-p), each cut after its first EOS and checked by the task's
  verifier; on request with its token ids (a probe computes Phi from them);
- :func:`evaluate_suite`: :func:`sample` over a suite with a progress bar per
  benchmark, as the per-sample frame of DESIGN 6 (``eval/step_<step>.parquet``,
  columns :data:`analysis.records.EVAL_COLUMNS`).

:func:`score` turns that frame into ``eval/<benchmark>/pass_at_<k>`` and
``maj_at_<k>`` metrics with the estimators of :mod:`analysis.passk`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from analysis.records import EVAL_COLUMNS, eval_key
from workbench.config import ConfigError, EvalConfig

if TYPE_CHECKING:  # imported where used: `workbench --help` loads this module and needs none of them
    import pandas as pd

    from workbench.tasks import Problem, Task, Verdict

    Suite = list[tuple[str, Task, list[Problem]]]  # (benchmark name, checking task, problems)

TASK_BENCHMARK = "task"
"""The benchmark name of the test split of the run's own task (recorded as ``<task>_test``)."""



# --------------------------------------------------------------------------- what to evaluate on


def parse_benchmarks(text: str, flag: str = "--benchmarks", *, task: bool = False) -> list[tuple[str, str | None]]:
    """``math500,amc=/data/amc.json`` -> [("math500", None), ("amc", "/data/amc.json")], names checked.

    ``task`` (the run's own test split) is a valid name only where ``task`` is true.
    """
    from workbench.tasks import BENCHMARKS

    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, path = (part.strip() for part in item.partition("="))
        if task and name == TASK_BENCHMARK:
            if path:
                raise ConfigError(f"{flag} {item!r}: {TASK_BENCHMARK!r} is the test split of the run's task; "
                                  "its file is task.test_path, so drop the file")
        else:
            BENCHMARKS.get(name)  # unknown names list the valid ones
        out.append((name, path or None))
    if not out:
        raise ConfigError(f"{flag} {text!r} names nothing; e.g. {flag} math500,gsm8k")
    return out


def load_suite(benchmarks: Sequence[tuple[str, str | None]], task_cfg=None, *, data_dir: str | None = None,
               max_problems: int | None = None, task: Task | None = None) -> Suite:
    """(name, task, problems) per (name, file or None) benchmark, at most ``max_problems`` problems each.

    ``task`` names the test split of ``task_cfg``'s task (``task``, when given,
    is that task already built), recorded as ``<task>_test``; the synthetic
    benchmarks take their settings from ``task_cfg`` too. A missing or malformed
    file is a :class:`ConfigError` naming it.
    """
    from workbench.tasks import build_task, load_benchmark

    suite = []
    for name, path in benchmarks:
        try:
            if name == TASK_BENCHMARK:
                own = task or build_task(task_cfg)
                suite.append((f"{own.name}_test", own, own.problems("test")[:max_problems]))
            else:
                suite.append((name, *load_benchmark(name, path, data_dir=data_dir, max_problems=max_problems,
                                                    cfg=task_cfg)))
        except (ValueError, OSError) as err:
            raise ConfigError(str(err)) from None
    return suite


def benchmark_suite(cfg, task: Task) -> Suite:
    """The suite of ``cfg.eval.benchmarks`` (:func:`load_suite`); ``task`` is the run's task, already built."""
    e = cfg.eval
    return load_suite([(name, None) for name in e.benchmarks], cfg.task, data_dir=e.data_dir,
                      max_problems=e.max_problems, task=task)


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Completion:
    """One sampled completion of ``problems[group]``, checked by the task's verifier."""

    group: int  # the problem's index in the sampled list
    sample: int  # 0 .. n - 1 within its problem
    problem: Problem
    text: str
    verdict: Verdict
    prompt_ids: list[int] | None = None  # token_ids=True: the prompt's tokens (chat template applied), unpadded
    completion_ids: list[int] | None = None  # token_ids=True: up to and including the first EOS


def format_prompt(problem: Problem, tokenizer, chat: bool) -> str:
    """The text a model is given: a chat template for chat tasks, the raw prompt otherwise."""
    if not chat or getattr(tokenizer, "chat_template", None) is None:
        return problem.prompt
    messages = ([{"role": "system", "content": problem.system}] if problem.system else []) + [
        {"role": "user", "content": problem.prompt}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def sample(model, tokenizer, task: Task, problems: Sequence[Problem], *, n: int, temperature: float,
           max_new_tokens: int, seed: int = 0, prompts_per_batch: int = 8, progress=None,
           token_ids: bool = False) -> list[Completion]:
    """``n`` sampled completions per problem, in problem order, each cut after its first EOS (as TRL cuts
    them) and checked; with ``token_ids`` also the prompt and completion token ids.

    Sampling is seeded by ``seed`` inside a forked RNG, so evaluating leaves the
    training run's random state (and hence its samples) exactly as it was.
    ``progress(k)`` is called after each generate call with its ``k`` problems.
    """
    import torch

    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    out: list[Completion] = []
    with eval_mode(model, tokenizer), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(problems), prompts_per_batch):
            chunk = problems[start : start + prompts_per_batch]
            enc = tokenizer([format_prompt(p, tokenizer, task.chat) for p in chunk], return_tensors="pt",
                            padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                generated = model.generate(
                    **enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                    max_new_tokens=max_new_tokens, num_return_sequences=n,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                )  # (len(chunk) * n, P + C)
            completions = [_cut_after_eos(row.tolist(), eos) for row in generated[:, enc["input_ids"].shape[1] :]]
            texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
            prompts = ([ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
                       if token_ids else None)
            for i, (ids, text) in enumerate(zip(completions, texts)):
                problem = chunk[i // n]
                out.append(Completion(start + i // n, i % n, problem, text, task.verify(text, problem.answer),
                                      prompts[i // n] if token_ids else None, ids if token_ids else None))
            if progress is not None:
                progress(len(chunk))
    return out


def _cut_after_eos(tokens: list[int], eos: int | None) -> list[int]:
    """The tokens up to and including the first EOS (all of them if there is none)."""
    if eos is not None and eos in tokens:
        return tokens[: tokens.index(eos) + 1]
    return tokens


@contextlib.contextmanager
def eval_mode(model, tokenizer):
    """Eval mode and left padding for generation; both restored afterwards."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = side
        model.train(was_training)


def eval_table(frame: pd.DataFrame):
    """The frame as Arrow with :func:`analysis.records.eval_schema` (an all-None answer column stays a string)."""
    import pyarrow as pa

    from analysis.records import eval_schema

    return pa.Table.from_pandas(frame[list(EVAL_COLUMNS)], schema=eval_schema(), preserve_index=False)


# --------------------------------------------------------------------------- the evaluation loop


def eval_frame(completions: Sequence[Completion], benchmark: str, step: int) -> pd.DataFrame:
    """The per-sample frame of DESIGN 6: one row per completion, columns :data:`EVAL_COLUMNS`."""
    import pandas as pd

    rows = [(step, benchmark, c.problem.id, c.sample, c.verdict.answer, c.verdict.correct, c.problem.level,
             c.verdict.solution) for c in completions]
    frame = pd.DataFrame(rows, columns=list(EVAL_COLUMNS))
    return frame.astype({"level": "Int64"})


def evaluate_suite(model, tokenizer, suite: Suite, settings: EvalConfig, *, max_new_tokens: int, seed: int,
                   step: int = 0, transient: bool = False) -> pd.DataFrame:
    """The per-sample frame of every benchmark of ``suite``, sampled with ``settings`` (``n`` or its
    ``n_per_benchmark`` entry, ``temperature``, ``prompts_per_batch``), with a progress bar per benchmark."""
    import pandas as pd

    from workbench.progress import progress

    frames = []
    for name, task, problems in suite:
        n = settings.n_per_benchmark.get(name, settings.n)
        with progress(f"eval {name} (n={n}) at step {step}", len(problems), transient=transient) as bar:
            completions = sample(model, tokenizer, task, problems, n=n, temperature=settings.temperature,
                                 max_new_tokens=max_new_tokens, seed=seed,
                                 prompts_per_batch=settings.prompts_per_batch, progress=bar.advance)
        frames.append(eval_frame(completions, name, step))
    return pd.concat(frames, ignore_index=True) if frames else eval_frame([], "", step)


def completion_tokens(cfg) -> int:
    """Completion tokens per evaluation sample of config ``cfg``: ``eval.max_new_tokens``, else
    ``training.max_completion_length``."""
    return cfg.eval.max_new_tokens or cfg.training.max_completion_length


def score(frame: pd.DataFrame, ks: Sequence[int] | None = None) -> dict[str, float]:
    """The evaluation metrics of a per-sample frame, with the estimators of :mod:`analysis.passk`:

    - ``eval/<benchmark>/{pass,maj}_at_<k>`` per benchmark;
    - ``eval/<benchmark>/distinct_correct`` where the benchmark's task writes solutions;
    - the same over the problems of each level, ``eval/<benchmark>/level_<L>/...``, where problems have levels.
    """
    from analysis.passk import (by_level, distinct_correct_per_problem, ks_for, maj_at_k_per_problem,
                                pass_at_k_per_problem)
    from analysis.records import distinct_key, level_eval_key

    if frame.empty:
        return {}
    n = int(frame.groupby(["benchmark", "problem_id"]).size().min())
    ks = list(ks) if ks is not None else ks_for(n)
    metrics: dict[str, float] = {}
    for per_problem in (pass_at_k_per_problem(frame, ks), maj_at_k_per_problem(frame, ks),
                        distinct_correct_per_problem(frame)):
        if per_problem.empty:
            continue
        means = per_problem.groupby(["benchmark", "metric", "k"], sort=True)["value"].mean()
        for (benchmark, metric, k), value in means.items():
            key = distinct_key(benchmark) if metric == "distinct_correct" else eval_key(benchmark, metric, int(k))
            metrics[key] = float(value)
        for r in by_level(per_problem, frame).itertuples():
            key = (distinct_key(r.benchmark, r.level) if r.metric == "distinct_correct"
                   else level_eval_key(r.benchmark, r.level, r.metric, r.k))
            metrics[key] = float(r.value)
    return metrics


class EvalCallback:
    """Evaluates every ``eval.every`` steps and at the end; logs metrics and the per-sample artifact."""

    def __init__(self, cfg, suite, tokenizer, tracker) -> None:
        from transformers import TrainerCallback

        self.cfg, self.suite, self.tokenizer, self.tracker = cfg, suite, tokenizer, tracker
        self.callback = type("EvalTrainerCallback", (TrainerCallback,), {"on_train_begin": self._on_train_begin,
                                                                            "on_step_end": self._on_step_end,
                                                                            "on_train_end": self._on_train_end})()
        self.last_step: int | None = None

    def _on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.cfg.eval.initial and state.global_step == 0 and state.is_world_process_zero and self.suite:
            self.evaluate(model, 0)

    def _on_step_end(self, args, state, control, model=None, **kwargs):
        every = self.cfg.eval.every
        if every and state.global_step % every == 0 and state.is_world_process_zero and self.suite:
            self.evaluate(model, state.global_step)

    def _on_train_end(self, args, state, control, model=None, **kwargs):
        if self.cfg.eval.final and state.is_world_process_zero and self.suite and self.last_step != state.global_step:
            self.evaluate(model, state.global_step)

    def evaluate(self, model, step: int) -> dict[str, float]:
        from analysis.records import eval_path

        frame = evaluate_suite(model, self.tokenizer, self.suite, self.cfg.eval, step=step, seed=self.cfg.seed + step,
                               max_new_tokens=completion_tokens(self.cfg), transient=True)
        metrics = score(frame)
        self.tracker.log_metrics(metrics, step=step)
        self.tracker.log_parquet(eval_table(frame), eval_path(step))
        self.last_step = step
        return metrics

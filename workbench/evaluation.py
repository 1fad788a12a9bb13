"""Sample n answers per benchmark problem and score them (DESIGN 5).

:func:`sample_problems` draws ``n`` completions per problem from a model with
plain temperature sampling (no top-k, no top-p) and checks each with the task's
verifier, giving the per-sample frame of DESIGN 6 (``eval/step_<step>.parquet``).
:func:`score` turns that frame into ``eval/<benchmark>/pass_at_<k>`` and
``maj_at_<k>`` metrics with the estimators of :mod:`analysis.passk`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pandas as pd

from analysis.passk import ks_for, maj_at_k_table, pass_at_k_table
from analysis.records import EVAL_COLUMNS, eval_key
from workbench.tasks import Problem, Task

def format_prompt(problem: Problem, tokenizer, chat: bool) -> str:
    """The text a model is given: a chat template for chat tasks, the raw prompt otherwise."""
    if not chat or getattr(tokenizer, "chat_template", None) is None:
        return problem.prompt
    messages = ([{"role": "system", "content": problem.system}] if problem.system else []) + [
        {"role": "user", "content": problem.prompt}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def sample_problems(model, tokenizer, task: Task, problems: Sequence[Problem], *, n: int, temperature: float,
                    max_new_tokens: int, benchmark: str, step: int = 0, prompts_per_batch: int = 8,
                    seed: int = 0, progress=None) -> pd.DataFrame:
    """``n`` sampled completions per problem, extracted and checked: one row per sample.

    Sampling is seeded by ``seed`` inside a forked RNG, so evaluating leaves the
    training run's random state (and hence its samples) exactly as it was.
    """
    import torch

    device = next(model.parameters()).device
    rows = []
    with _eval_mode(model, tokenizer), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(problems), prompts_per_batch):
            chunk = problems[start : start + prompts_per_batch]
            texts = [format_prompt(p, tokenizer, task.chat) for p in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                out = model.generate(
                    **enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                    max_new_tokens=max_new_tokens, num_return_sequences=n,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                )  # (len(chunk) * n, P + C)
            completions = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for i, text in enumerate(completions):
                problem = chunk[i // n]
                verdict = task.verify(text, problem.answer)
                rows.append((step, benchmark, problem.id, i % n, verdict.answer, verdict.correct))
            if progress is not None:
                progress(len(chunk))
    return pd.DataFrame(rows, columns=list(EVAL_COLUMNS))


@contextlib.contextmanager
def _eval_mode(model, tokenizer):
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


def score(frame: pd.DataFrame, ks: Sequence[int] | None = None) -> dict[str, float]:
    """pass@k and maj@k per benchmark as MLflow metrics ``eval/<benchmark>/{pass,maj}_at_<k>``."""
    if frame.empty:
        return {}
    n = int(frame.groupby(["benchmark", "problem_id"]).size().min())
    ks = list(ks) if ks is not None else ks_for(n)
    table = pd.concat([pass_at_k_table(frame, ks), maj_at_k_table(frame, ks)], ignore_index=True)
    return {eval_key(r.benchmark, r.metric, int(r.k)): float(r.value) for r in table.itertuples()}


def benchmark_suite(cfg, task: Task) -> list[tuple[str, Task, list[Problem]]]:
    """(name, task, problems) for each of ``cfg.eval.benchmarks``; ``task`` is the training task's test split."""
    from workbench.tasks import load_benchmark

    suite = []
    for name in cfg.eval.benchmarks:
        if name == "task":
            problems = task.problems("test")[: cfg.eval.max_problems]
            suite.append((f"{task.name}_test", task, problems))
        else:
            bench_task, problems = load_benchmark(name, data_dir=cfg.eval.data_dir, max_problems=cfg.eval.max_problems,
                                                  cfg=cfg.task)
            suite.append((name, bench_task, problems))
    return suite


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
        from workbench.progress import progress
        from analysis.records import eval_path

        e = self.cfg.eval
        frames = []
        with progress(f"evaluating at step {step}", sum(len(p) for _, _, p in self.suite), transient=True) as bar:
            for name, task, problems in self.suite:
                frames.append(sample_problems(
                    model, self.tokenizer, task, problems, n=e.n_per_benchmark.get(name, e.n), temperature=e.temperature,
                    max_new_tokens=e.max_new_tokens or self.cfg.training.max_completion_length,
                    benchmark=name, step=step, seed=self.cfg.seed + step,
                    progress=bar.advance,
                ))
        frame = pd.concat(frames, ignore_index=True)
        metrics = score(frame)
        self.tracker.log_metrics(metrics, step=step)
        self.tracker.log_parquet(eval_table(frame), eval_path(step))
        self.last_step = step
        return metrics

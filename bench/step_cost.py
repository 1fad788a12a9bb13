"""Benchmark 2: step time of each method relative to GRPO, same seed, batch and settings.

Each method's trainer is built once (as ``workbench run`` builds it, tracker: ``NullTracker``, the
policy held still: see ``HOLD``),
then all trainers run ``K`` steps each, round after round, in rotating order; a round's step
time is the median of its steps after the first (warm-up). Ratios pair the methods of one round.

- **logging on**: the default recording of these 8-step rounds (a tenth of 8 steps is every step: every method
  computes Phi and text embeddings for its dumps and geometry each step; the method then only changes the
  shaping).
- **logging off**: ``features.geometry=false features.dump_every=0``: a method pays only for what it needs itself (G2RL: Phi by
  the sampling route; EVOL-RL: the text encoder; GRPO and entropy: nothing).

On the tiny preset (the embedded default); on ``smollm2-135m`` with ``--smollm2`` (a few steps
only: ~10-30 s a step on a laptop CPU; reported as such).

Run: ``python -m bench.step_cost [--quick] [--smollm2]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.harness import SMOLLM2, build_trainer, config
from bench.results import Row, append, stat_row
from bench.timing import set_threads, summary

BENCH = "2 step cost"
METHODS = ("grpo", "entropy", "evol_rl", "g2rl")
# The policy is held still, so every method generates the same completions at the same step: a learning
# rate far below float32's resolution of the weights (an Adam step moves a weight by about lr). Otherwise a
# method's step time also carries what it taught the policy (completions that stop later cost more
# decoding steps): measured 1.29 for g2rl / grpo and 1.17 for entropy / grpo, which adds no work, in one run.
HOLD = "training.learning_rate=1e-12"


def interleaved_steps(trainers: dict, rounds: int, warmup_steps: int = 2, after_warmup=None,
                      skip: int = 0, inner: bool = False) -> dict[str, list[float]]:
    """Per round and trainer: the median step time of one ``train()`` call, rotating the order.

    ``inner``: also the median time inside ``training_step`` (key ``"<name> inner"``). Every round
    also records the process CPU time (user + sys of all threads: the recorder's worker and the
    MLflow writer included) of the whole ``train()`` call per step (key ``"<name> cpu"``); a
    ``train()`` call waits for those threads before it returns, so their work lies inside it.

    An untimed round of ``warmup_steps`` steps per trainer comes first (lazy loads, allocator);
    then ``after_warmup()`` is called, if given. ``skip`` drops the first steps of every call.
    """
    names = list(trainers)
    for trainer in trainers.values():
        if warmup_steps:
            steps, trainer.args.max_steps = trainer.args.max_steps, warmup_steps
            trainer.train()
            trainer.args.max_steps = steps
    if after_warmup is not None:
        after_warmup()
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            trainer = trainers[name]
            cpu = time.process_time()
            trainer.train()
            out.setdefault(f"{name} cpu", []).append((time.process_time() - cpu) / trainer.args.max_steps)
            out[name].append(statistics.median(trainer.clock.last(skip)))
            if inner:
                out.setdefault(f"{name} inner", []).append(statistics.median(trainer.clock.inner(skip)))
    return out


def method_rows(label: str, times: dict[str, list[float]], note: str = "") -> list[Row]:
    rows = []
    base = times["grpo"]
    for method in ("entropy", "evol_rl", "g2rl"):
        ratio = [t / b for t, b in zip(times[method], base, strict=True)]
        is_g2rl = method == "g2rl"
        extra = f"grpo step {summary(base).fmt('s')}" if is_g2rl else ""
        rows.append(stat_row(BENCH, f"{label}: {method} / grpo", summary(ratio), target="<= 1.05" if is_g2rl else "",
                             limit=1.05 if is_g2rl else None, note="; ".join(x for x in (extra, note) if x)))
    ratio = [e / g for e, g in zip(times["evol_rl"], times["g2rl"], strict=True)]
    rows.append(stat_row(BENCH, f"{label}: evol_rl / g2rl (price of an external encoder)", summary(ratio), note=note))
    if "g2rl inner" in times:
        ratio = [t / b for t, b in zip(times["g2rl inner"], times["grpo inner"], strict=True)]
        rows.append(stat_row(BENCH, f"{label}: g2rl / grpo, time inside training_step only", summary(ratio),
                             note="generation, scoring with every method hook, loss and backward; without the "
                                  "optimizer step, callbacks and the loop between steps"))
    return rows


def run(quick: bool = False, smollm2: bool = False) -> list[Row]:
    from workbench.tracking import NullTracker

    set_threads()
    rows: list[Row] = []
    steps, rounds = (6, 2) if quick else (8, 4)
    # Tiny preset, the embedded default: rollout batches of 8 countdown prompts x 16 completions of <= 64 tokens.
    for label, logging in [("tiny, logging on", []), ("tiny, logging off", ["features.geometry=false", "features.dump_every=0"])]:
        trainers = {m: build_trainer(config(m, f"training.steps={steps}", "training.cpu_threads=1", HOLD, *logging),
                                     NullTracker()) for m in METHODS}
        rows += method_rows(label, interleaved_steps(trainers, rounds, inner=True),
                            note=f"{rounds} rounds x {steps} steps after a warm-up round")
        del trainers
    if smollm2:
        # 3 steps per method, the first dropped, one round (see SMOLLM2); SmolLM2's rewards on the arithmetic
        # task are mostly 0, which changes no cost.
        overrides = [*SMOLLM2, "training.steps=3", HOLD, "features.geometry=false", "features.dump_every=0"]
        trainers = {m: build_trainer(config(m, *overrides), NullTracker()) for m in METHODS}
        rounds_s = 1
        times = interleaved_steps(trainers, rounds_s, warmup_steps=0, skip=1)
        rows += method_rows("smollm2-135m, logging off", times,
                            note="one round of 3 steps per method, the first dropped: the median of 2 steps each, "
                                 "so n=1 ratio; read it as +-10 %")
        del trainers
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps (a smoke run)")
    parser.add_argument("--smollm2", action="store_true", help="also a few steps of smollm2-135m (minutes)")
    args = parser.parse_args(argv)
    append(run(args.quick, args.smollm2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The embedded default's regime, measured: writes bench/REGIME.md and its plots.

    workbench sweep --methods grpo,entropy,evol_rl,g2rl --seeds 0,1,2 --experiment regime
    python -m bench.regime --experiment regime

It reports, on the held-out split of the default task:

- the task: distinct solutions per problem (exhaustive search);
- the warm-started policy, sampled n = eval.n times per evaluated problem at the
  evaluation temperature: pass@1, pass@n, maj@n, completion lengths, and how
  many distinct correct solutions it finds per problem;
- each method of the experiment, per seed: held-out pass@1, maj@k and pass@k at
  step 0 and at the end (from the runs' eval metrics), and the mean over steps of
  the per-step geometry metrics (mean gradient cosine g, neg_frac, orth_frac,
  semantic cosine), beside what random unit vectors of the same dimension give
  in groups of the same size.
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.compare import band_over_seeds
from analysis.geometry import direction_fractions, pairwise_cosines
from analysis.loaders import load_dumps, metric_history, runs_table, stack
from analysis.passk import maj_at_k, pass_at_k
from analysis.records import METHOD_ORDER
from analysis.report import report_table, to_markdown

OUT = Path(__file__).with_name("REGIME.md")
PLOTS = Path(__file__).with_name("regime")
GEOMETRY = {"geometry/grad_cos_mean": "mean g", "geometry/neg_frac": "neg_frac", "geometry/orth_frac": "orth_frac",
            "geometry/sem_cos_mean": "semantic cos"}
PAIR_TYPES = ("correct_correct", "correct_incorrect", "incorrect_incorrect")
BY_TYPE = {f"geometry/{t}/{m}": f"{t} {name}" for t in PAIR_TYPES for m, name in (("grad_cos_mean", "g"),
                                                                                   ("neg_frac", "neg"))}


def task_section(task, problems) -> tuple[list[str], list[int]]:
    counts = task.solution_counts("test")
    evaluated = [counts[p.id] for p in problems]
    every = list(counts.values())
    hist = Counter(min(c, 20) for c in evaluated)
    lines = [
        f"Distinct solutions per problem (up to reordering; exhaustive search), the {len(evaluated)} evaluated "
        f"problems: median {statistics.median(evaluated):g}, {np.mean([c >= 2 for c in evaluated]):.0%} with 2 or more; "
        f"the whole test split ({len(every)}): median {statistics.median(every):g}, "
        f"{np.mean([c >= 2 for c in every]):.0%} with 2 or more.",
        "",
        "| solutions | " + " | ".join("20+" if k == 20 else str(k) for k in sorted(hist)) + " |",
        "| --- | " + " | ".join("---" for _ in hist) + " |",
        "| problems | " + " | ".join(str(hist[k]) for k in sorted(hist)) + " |",
    ]
    return lines, evaluated


def warm_start_section(cfg, task, problems) -> tuple[list[str], dict]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.models.presets import PRESETS
    from workbench.tasks.countdown import Puzzle
    from workbench.tasks.countdown_rules import check_derivation

    folder = PRESETS.get(cfg.model.preset).load(cfg)
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    n, rows = cfg.eval.n, []
    torch.manual_seed(0)
    for start in range(0, len(problems), 8):
        chunk = problems[start : start + 8]
        enc = tok([p.prompt for p in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=cfg.eval.temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=cfg.training.max_completion_length, num_return_sequences=n,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        completion = out[:, enc["input_ids"].shape[1] :]
        lengths = (completion != tok.pad_token_id).sum(1).tolist()  # generated tokens, EOS included
        for i, text in enumerate(tok.batch_decode(completion, skip_special_tokens=True)):
            p = chunk[i // n]
            checked = check_derivation(text, Puzzle.parse(p.answer).numbers)
            verdict = task.verify(text, p.answer)
            rows.append((p.id, verdict.answer, verdict.correct, lengths[i],
                         repr(checked.expression) if verdict.correct else None))
    frame = pd.DataFrame(rows, columns=["problem", "answer", "correct", "tokens", "solution"])
    per = frame.groupby("problem", sort=False)
    c = per["correct"].sum()
    found = per["solution"].nunique()
    maj = np.mean([maj_at_k([a if isinstance(a, str) else None for a in g["answer"]], g["correct"].tolist(), n)
                   for _, g in per])
    stats = {"pass@1": np.mean([pass_at_k(n, int(x), 1) for x in c]),
             f"pass@{n}": np.mean([pass_at_k(n, int(x), n) for x in c]), f"maj@{n}": maj,
             "median tokens": float(frame["tokens"].median()), "legal": float(frame["answer"].notna().mean())}
    solved = found[found > 0]
    lines = [
        f"Warm-started policy, {len(problems)} held-out problems x {n} samples at T = {cfg.eval.temperature}:",
        "",
        "| pass@1 | maj@{0} | pass@{0} | pass@{0} / pass@1 | legal derivations | median completion tokens "
        "| tokens p10-p90 |".format(n),
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {stats['pass@1']:.3f} | {maj:.3f} | {stats[f'pass@{n}']:.3f} | {stats[f'pass@{n}'] / stats['pass@1']:.1f} "
        f"| {stats['legal']:.1%} | {stats['median tokens']:g} | {frame['tokens'].quantile(0.1):g}-"
        f"{frame['tokens'].quantile(0.9):g} |",
        "",
        f"Distinct correct solutions the policy itself wrote, over the {len(solved)} problems it solved at least once: "
        f"median {solved.median():g}, {np.mean(solved >= 2):.0%} with 2 or more.",
    ]
    return lines, stats


def random_unit_baseline(dim: int, group: int, tau: float, groups: int = 20000, seed: int = 0) -> dict[str, float]:
    """The geometry of random unit vectors in ``dim`` dimensions, in groups of ``group``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((groups * group, dim))
    cos = pairwise_cosines(x, np.repeat(np.arange(groups), group)).cos
    fr = direction_fractions(cos, tau)
    return {"mean g": float(cos.mean()), "neg_frac": fr["neg_frac"], "orth_frac": fr["orth_frac"]}


def methods_section(experiment: str, uri: str, tau: float, group: int) -> tuple[list[str], pd.DataFrame, int]:
    runs = runs_table(experiment, uri)
    runs = runs[runs["status"] == "FINISHED"]
    lines = []
    for step, title in ((0, "step 0 (the warm-started policy)"), ("last", "the end of the run")):
        table = report_table(experiment, uri, ks=(1, 32), maj_k=32, step=step, runs=runs)
        lines += [f"Held-out accuracy at {title}, % (mean ± 95 % CI over seeds):", "",
                  to_markdown(table).strip(), ""]
    per_seed = []
    for r in runs.itertuples():
        row = {"method": r.method, "seed": int(r.seed)}
        for key in ("eval/countdown_test/pass_at_1", "eval/countdown_test/pass_at_32"):
            h = metric_history(r.run_id, key, uri)
            row[key.rsplit("/", 1)[1] + " start"] = float(h["value"].iloc[0]) if len(h) else np.nan
            row[key.rsplit("/", 1)[1] + " end"] = float(h["value"].iloc[-1]) if len(h) else np.nan
        for key, name in {**GEOMETRY, **BY_TYPE}.items():  # steps without such pairs log no value
            row[name] = float(metric_history(r.run_id, key, uri)["value"].mean())
        per_seed.append(row)
    frame = pd.DataFrame(per_seed)
    frame = frame.assign(order=[METHOD_ORDER.index(m) if m in METHOD_ORDER else 99 for m in frame["method"]])
    frame = frame.sort_values(["order", "method", "seed"]).drop(columns="order")
    lines += ["Per seed: held-out pass@1 and pass@32, start -> end; geometry averaged over the run's steps:", "",
              "| method | seed | pass@1 | pass@32 | mean g | neg_frac | orth_frac | semantic cos |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in frame.iterrows():
        lines.append(f"| {r['method']} | {r['seed']} | {r['pass_at_1 start']:.3f} -> {r['pass_at_1 end']:.3f} | "
                     f"{r['pass_at_32 start']:.3f} -> {r['pass_at_32 end']:.3f} | "
                     + " | ".join(f"{r[name]:.3f}" for name in GEOMETRY.values()) + " |")
    lines += ["", "Held-out pass@1 rose (end > start) in: " + ", ".join(
        f"{m} {int((b['pass_at_1 end'] > b['pass_at_1 start']).sum())} of {len(b)} seeds"
        for m, b in frame.groupby("method", sort=False)) + "; pass@32 fell in: " + ", ".join(
        f"{m} {int((b['pass_at_32 end'] < b['pass_at_32 start']).sum())} of {len(b)}"
        for m, b in frame.groupby("method", sort=False)) + ". At step 0 every method evaluates the same policy: "
        "the spread over seeds there is the evaluation's own sampling noise (its seed is the run's)."]
    tidy = frame.melt(id_vars=["method", "seed"], value_vars=[*GEOMETRY.values(), *BY_TYPE.values()],
                      var_name="metric")
    band = band_over_seeds(tidy.assign(step=0), by=["method", "metric"])
    dim = 0
    if len(runs):
        dump = load_dumps(runs.iloc[0]["run_id"], uri, steps=[1])
        dim = stack(dump, "grad_feature").shape[1]
    base = random_unit_baseline(dim, group, tau) if dim else {}
    lines += ["", f"Geometry, mean over steps and then over seeds (± 95 % CI), beside random unit vectors "
              f"(dimension {dim}, groups of {group}, tau = {tau}):", "",
              "| method | " + " | ".join(GEOMETRY.values()) + " |", "| --- |" + " --- |" * len(GEOMETRY)]
    methods = list(dict.fromkeys(frame["method"]))
    for method in methods:
        block = band[band["method"] == method]
        cells = {r.metric: f"{r.mean:.3f} ± {(r.hi - r.lo) / 2:.3f}" for r in block.itertuples()}
        lines.append(f"| {method} | " + " | ".join(cells.get(m, "") for m in GEOMETRY.values()) + " |")
    if base:
        lines.append("| random unit vectors | " + " | ".join(f"{base[m]:.3f}" if m in base else "" for m in GEOMETRY.values())
                     + " |")
    lines += ["", "By pair type (c = correct, i = incorrect), mean over steps that have such pairs, then over seeds:", "",
              "| method | " + " | ".join(BY_TYPE.values()) + " |", "| --- |" + " --- |" * len(BY_TYPE)]
    for method in methods:
        block = band[band["method"] == method]
        cells = {r.metric: f"{r.mean:.3f}" for r in block.itertuples()}
        lines.append(f"| {method} | " + " | ".join(cells.get(m, "") for m in BY_TYPE.values()) + " |")
    return lines, frame, dim


def plot(solutions: list[int], experiment: str, uri: str, dim: int, group: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(np.minimum(solutions, 30), bins=np.arange(0.5, 31.5, 1))
    ax.set(xlabel="distinct solutions (30 = 30 or more)", ylabel="problems",
           title=f"The {len(solutions)} evaluated held-out problems")
    fig.tight_layout()
    fig.savefig(PLOTS / "solutions.png", dpi=120)
    plt.close(fig)
    runs = runs_table(experiment, uri)
    runs = runs[runs["status"] == "FINISHED"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(-1, 1, 41)
    for method, block in runs.groupby("method"):
        dumps = pd.concat([load_dumps(r, uri) for r in block["run_id"]], ignore_index=True)
        keys = dumps["run_id"].astype(str) + ":" + dumps["step"].astype(str) + ":" + dumps["group"].astype(str)
        cos = pairwise_cosines(stack(dumps, "grad_feature"), pd.factorize(keys)[0]).cos
        ax.hist(cos, bins=bins, histtype="step", density=True, label=method)
    rng = np.random.default_rng(0)
    cos = pairwise_cosines(rng.standard_normal((4000 * group, dim)), np.repeat(np.arange(4000), group)).cos
    ax.hist(cos, bins=bins, histtype="stepfilled", alpha=0.25, color="grey", density=True, label="random unit")
    ax.set(xlabel="gradient cosine g_ij within a group", ylabel="density", title="Training rollouts, all steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOTS / "grad_cos.png", dpi=120)
    plt.close(fig)
    return ["![solutions per problem](regime/solutions.png) ![gradient cosines](regime/grad_cos.png)"]


def main(argv: list[str] | None = None) -> int:
    from workbench.config import build_config
    from workbench.tasks import build_task
    from workbench.tracking import tracking_uri

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="the sweep's experiment")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    cfg = build_config([])
    uri = tracking_uri()
    task = build_task(cfg.task)
    problems = task.problems("test")[: cfg.eval.max_problems]
    task_lines, solutions = task_section(task, problems)
    warm_lines, _ = warm_start_section(cfg, task, problems)
    method_lines, _, dim = methods_section(args.experiment, uri, cfg.features.tau, cfg.training.num_generations)
    plots = plot(solutions, args.experiment, uri, dim, cfg.training.num_generations)
    text = "\n".join([
        "# The embedded default's regime",
        "",
        f"Task `{cfg.task.name}` ({cfg.task.count} numbers from 1..{cfg.task.max_number}, targets "
        f"{cfg.task.min_target}..{cfg.task.max_target}), preset `{cfg.model.preset}` "
        f"({cfg.model.warmstart_steps} warm-start steps), {cfg.training.steps} RL steps of "
        f"{cfg.training.prompts_per_step} prompts x {cfg.training.num_generations} completions. "
        f"Made by `python -m bench.regime --experiment {args.experiment}` after "
        f"`workbench sweep --methods grpo,entropy,evol_rl,g2rl --seeds 0,1,2 --experiment {args.experiment}`.",
        "", "## Task", "", *task_lines, "", "## Warm start", "", *warm_lines, "", "## Methods", "", *method_lines,
        "", *plots, "",
    ])
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

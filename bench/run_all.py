"""Run every benchmark and write bench/RESULTS.md: ``make bench`` (or ``python -m bench.run_all``).

Each benchmark runs in its own process (they patch modules and hold large tensors) and appends
its rows to the one table. Environment:

- ``BENCH_THREADS`` (default 1): torch threads; see ``bench/timing.py``.
- ``BENCH_SMOLLM2`` (default 1): include a few steps of smollm2-135m per method, and TRL vs ours
  on it (about 9 min).
- ``BENCH_QUICK`` (default 0): small sizes and few repeats, a smoke run of the scripts (minutes).
- ``BENCH_ONLY`` (default all): a comma-separated subset of :data:`BENCHMARKS`, e.g.
  ``BENCH_ONLY=engine_overhead,two_jobs``; RESULTS.md then says which ran.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.results import RESULTS, Row, append, start

BENCHMARKS = ("feature_cost", "step_cost", "engine_overhead", "two_jobs", "encoder_cost", "analysis_scale", "dump_size",
              "app_render")
PREPARE = {  # one-time, cached builds, run side by side before any timing (a fresh clone spends minutes here)
    "models": "from workbench.config import build_config\n"
              "from workbench.models.tiny import tiny_model_dir\n"
              "tiny_model_dir(build_config([], []))\n"
              "if {smollm2}:\n"
              "    from workbench.models.gguf import smollm2_dir\n"
              "    smollm2_dir(build_config([], ['model.preset=smollm2-135m']))\n",
    "app store": "from bench.app_render import store_uri\nstore_uri({quick})\n",
}


def only(text: str) -> tuple[str, ...]:
    """The benchmarks ``BENCH_ONLY`` names (all when empty), in :data:`BENCHMARKS` order."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"BENCH_ONLY names {', '.join(unknown)}; choose among {', '.join(BENCHMARKS)}")
    return tuple(b for b in BENCHMARKS if b in names) if names else BENCHMARKS


def prepare(quick: bool, smollm2: bool) -> float:
    """Build the cached tiny model, the SmolLM2 conversion and the app's store, in parallel processes."""
    start = time.perf_counter()
    procs = {name: subprocess.Popen([sys.executable, "-c", code.format(smollm2=smollm2, quick=quick)])
             for name, code in PREPARE.items()}
    failed = [name for name, proc in procs.items() if proc.wait()]
    if failed:
        raise SystemExit(f"bench preparation failed: {', '.join(failed)}")
    return time.perf_counter() - start


def main() -> int:
    quick = os.environ.get("BENCH_QUICK", "0") == "1"
    smollm2 = os.environ.get("BENCH_SMOLLM2", "1") == "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    chosen = only(os.environ.get("BENCH_ONLY", ""))
    print("=== preparing cached models and the app's store (once) ===", flush=True)
    prepared = prepare(quick, smollm2)
    start()
    took, failed = {}, []
    t0 = time.perf_counter()
    for name in chosen:
        argv = [sys.executable, "-m", f"bench.{name}"]
        if quick and name != "dump_size":
            argv.append("--quick")
        if name in ("step_cost", "engine_overhead") and smollm2:
            argv.append("--smollm2")
        print(f"\n=== bench.{name} ===", flush=True)
        t = time.perf_counter()
        code = subprocess.call(argv)
        took[name] = time.perf_counter() - t
        if code:
            failed.append(name)
            append([Row(name, "failed", f"exit code {code}", note="see the console output of make bench")])
    with RESULTS.open("a") as f:
        f.write("\nRun time of each benchmark: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in took.items())
                + f"; total {(time.perf_counter() - t0) / 60:.1f} min"
                + f" (plus {prepared / 60:.1f} min preparing cached models and the app's store)"
                + ("; quick mode (BENCH_QUICK=1)" if quick else "")
                + ("" if smollm2 else "; smollm2-135m step cost skipped (BENCH_SMOLLM2=0)")
                + ("" if chosen == BENCHMARKS else f"; only {', '.join(chosen)} (BENCH_ONLY): the others did not "
                   "run") + ".\n")
    print(f"\nwrote {RESULTS}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

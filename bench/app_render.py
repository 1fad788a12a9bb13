"""Benchmark 6: time to render the app's geometry and pass@k pages for 16 runs x 300 steps with dumps.

The store is built by ``tests/app_store.py``'s :func:`build_store` (contract-exact DESIGN 6
runs): methods grpo, entropy, evol_rl, g2rl x seeds 0, 2, 3, 4 (seed 1 holds the builder's two
damaged runs), 300 steps each, 4 prompts x 8 completions a step, a feature dump every 10 steps
(30 per run; the geometry page reads at most 40 per run) and evaluations at steps 100, 200, 300.
It is built once and cached under ``$WORKBENCH_CACHE/bench-store-<key>`` (about 3-4 minutes on
2 cores).

Each render is one ``streamlit.testing.v1.AppTest`` session: the default page (sidebar, runs
table), then ``switch_page`` to the page, all 16 runs selected. *Cold*: ``st.cache_data`` empty
(every metric history and dump read from the store), modules already imported (one untimed render
first). *Warm*: a new session with the caches filled by the cold one, as when a user opens the
page again. Cold and warm pairs are repeated; times are AppTest's wall time (script runs included).
Streamlit's scan of the installed packages for custom components, which a server runs once when it
starts and AppTest in every new instance, is done once before the timed renders (:func:`components`).

Run: ``python -m bench.app_render [--quick]``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
import time
from pathlib import Path

from bench.results import Row, append, stat_row
from bench.timing import set_threads, summary

BENCH = "6 app render"
ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "main.py")
STORE = {"methods": ("grpo", "entropy", "evol_rl", "g2rl"), "seeds": (0, 2, 3, 4), "steps": 300, "dump_every": 10,
         "eval_steps": (100, 200, 300)}
PAGES = {"geometry": "app_pages/geometry.py", "pass@k": "app_pages/passk.py"}


def store_params(quick: bool = False) -> dict:
    return dict(STORE, seeds=(0,), steps=40) if quick else STORE


def store_uri(quick: bool = False) -> str:
    """The cached synthetic store (built on first use)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import app_store

    params = store_params(quick)
    source = repr(sorted(params.items())) + Path(app_store.__file__).read_text()
    key = hashlib.sha256(source.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "g2rl-workbench")
    root = cache / f"bench-store-{key}"
    done = root / ".complete"
    if not done.exists():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        start = time.perf_counter()
        print(f"building the app benchmark's store in {root} (once) ...", flush=True)
        uri = app_store.build_store(root, scratch=False, **params)
        print(f"built in {time.perf_counter() - start:.0f} s", flush=True)
        done.write_text(uri)
    return done.read_text()


@functools.cache
def components():
    """Streamlit's registry of installed custom components, scanned once.

    ``streamlit run`` scans every installed package's metadata for components once, when the
    server starts; ``AppTest`` does it in each new instance's first run (0.67 s of a 1.48 s cold
    render here, cProfile). A user opening a page never waits for it, so the renders share one scan.
    """
    from streamlit.components.v2.component_manager import BidiComponentManager

    manager = BidiComponentManager()
    manager.discover_and_register_components(start_file_watching=False)
    return manager


def render(page: str) -> float:
    from streamlit.testing.v1 import AppTest

    registry = components()
    start = time.perf_counter()
    at = AppTest.from_file(APP, default_timeout=600)
    at._bidi_component_manager = registry  # what a running server already holds (see components())
    at.run()
    at.switch_page(page).run()
    elapsed = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(f"{page} raised: {[e.value for e in at.exception]}")
    return elapsed


def run(quick: bool = False) -> list[Row]:
    import streamlit as st

    set_threads()
    uri = store_uri(quick)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    render(PAGES["geometry"])  # untimed: imports, first connection
    repeats = 1 if quick else 2
    times: dict[str, dict[str, list[float]]] = {p: {"cold": [], "warm": []} for p in PAGES}
    for _ in range(repeats):
        for name, page in PAGES.items():
            st.cache_data.clear()
            times[name]["cold"].append(render(page))
            times[name]["warm"].append(render(page))
    params = store_params(quick)
    runs = len(params["methods"]) * len(params["seeds"])
    rows = []
    notes = {"cold": "AppTest wall time: default page + switch to this page; st.cache_data empty; the scan for "
                     "installed components that a server does once at start is done once before",
             "warm": "a new session, caches filled"}
    for name in PAGES:
        for kind in ("cold", "warm"):
            target = name == "geometry" and kind == "cold"
            rows.append(stat_row(BENCH, f"{name} page, {runs} runs x {params['steps']} steps: {kind}",
                                 summary(times[name][kind]), "s", target="<= 1.5 s" if target else "",
                                 limit=1.5 if target else None, note=notes[kind]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small store, one repeat (a smoke run)")
    args = parser.parse_args(argv)
    append(run(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

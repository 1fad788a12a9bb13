"""End to end: `streamlit run app/main.py` on a synthetic four-method store, opened in headless Chromium.

Each page must finish running without an error element; a screenshot of each
lands in ``test-output/screenshots/`` (or ``$WORKBENCH_TEST_OUTPUT/screenshots``),
with ``timings.json``: the cold and warm load time of the geometry page.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make browser`` installs
them) and the ``selenium`` package; skipped with the reason when either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from app_store import BENCHMARKS, EXPERIMENT, session_store

from analysis import loaders, records

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars")
# (url path, title on the page, plotly charts it must draw at least)
PAGES = [
    ("geometry", "Exploration geometry", 7),  # the group maps are drawn once switched on
    ("", "Overview", 0),
    ("passk", "pass@k", 5),
    ("dynamics", "Training dynamics", 8),
    ("samples", "Samples", 0),
]
PAGE_TIMEOUT = 120  # seconds for one page to finish running on 2 slow cores, cold caches included

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(f"no headless browser: {CHROMIUM} or {CHROMEDRIVER} is missing; install them with `make browser` "
                "(apt-get install chromium chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install selenium")
from selenium.webdriver.common.by import By
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def output_dir() -> Path:
    root = Path(os.environ.get("WORKBENCH_TEST_OUTPUT", REPO / "test-output"))
    path = root / "screenshots"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return session_store(tmp_path_factory)


@pytest.fixture(scope="module")
def server(store, output_dir):
    """The app served on a free local port against the synthetic store; yields its base URL."""
    uri = store
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    log = (output_dir / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"streamlit did not come up; see {output_dir / 'server.log'}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not look for downloads
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1500,1000")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def _count(driver, css: str) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, css))


STATE_JS = """
const status = document.querySelector('[data-testid="stStatusWidget"]');
return {
  titles: [...document.querySelectorAll('h1')].map(e => e.innerText),
  exceptions: document.querySelectorAll('[data-testid="stException"]').length,
  status: status ? status.innerText : '',
  running: document.querySelectorAll('[data-testid="stStatusWidget"] button, [data-stale="true"]').length,
  charts: [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
    .filter(e => e.querySelector('.main-svg')).length,
};
"""


def _finished(driver, title: str, charts: int) -> bool:
    """The page shows its title, has drawn its charts, and the script is no longer running (read in one go)."""
    state = driver.execute_script(STATE_JS)
    if not any(title in t for t in state["titles"]):
        return False
    if state["exceptions"]:
        return True  # finished, badly: the test reports it
    if "Running" in state["status"] or state["running"]:
        return False
    return state["charts"] >= charts


def _open(driver, url: str | None, title: str, charts: int) -> float:
    """Load ``url`` (None: click the sidebar's reload button) and wait until the page has finished; seconds taken."""
    start = time.perf_counter()
    if url is None:
        driver.find_element(By.XPATH, "//button[contains(., 'Reload from the store')]").click()
        while time.perf_counter() < start + 10 and not driver.execute_script(STATE_JS)["running"]:
            time.sleep(0.05)  # until the rerun has started
    else:
        driver.get(url)
    deadline = start + PAGE_TIMEOUT
    settled = 0
    while time.perf_counter() < deadline:
        settled = settled + 1 if _finished(driver, title, charts) else 0
        if settled >= 3:  # three polls in a row: no rerun still on its way
            return time.perf_counter() - start - 0.5
        time.sleep(0.25)
    pytest.fail(f"{url} did not finish within {PAGE_TIMEOUT} s (title {title!r}, {charts} charts expected)")


def _screenshot(driver, path: Path) -> None:
    """The whole page: grow the window to the height of Streamlit's scrolling main area first."""
    height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
        "return Math.max(m.scrollHeight, document.body.scrollHeight);"
    )
    driver.set_window_size(1500, min(int(height) + 120, 6000))
    time.sleep(1.0)  # let plotly redraw at the new size
    driver.save_screenshot(str(path))
    driver.set_window_size(1500, 1000)


@pytest.mark.slow  # 60-100 s on 2 shared cores: a fresh server, cold caches, five pages drawn by a real browser
def test_every_page_renders_in_chromium(server, browser, output_dir):
    timings = {}
    for path, title, charts in PAGES:
        seconds = _open(browser, f"{server}/{path}", title, charts)
        if path == "geometry":  # first page of a fresh server: imports, runs table and dumps all read now
            timings["geometry_cold_s"] = round(seconds, 2)
            timings["geometry_warm_s"] = round(_open(browser, f"{server}/{path}", title, charts), 2)
            timings["geometry_cold_cache_warm_server_s"] = round(_open(browser, None, title, charts), 2)
        else:
            timings[f"{path or 'overview'}_s"] = round(seconds, 2)
        errors = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        _screenshot(browser, output_dir / f"{path or 'overview'}.png")
        assert not errors, f"page {title!r} raised: {errors[0].text[:2000]}"
        assert _count(browser, '[data-testid="stSidebar"]'), f"page {title!r} has no sidebar"
        if path == "geometry":  # the two damaged runs get their notices, and the page still draws
            alerts = " ".join(a.text for a in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stAlert"]'))
            assert "no feature dumps" in alerts and "truncated or corrupt" in alerts
        if path == "samples":
            assert _count(browser, '[data-testid="stDataFrame"]') >= 2
    (output_dir / "timings.json").write_text(json.dumps(timings, indent=2))
    print("page load times (s):", timings)


TRACES_JS = """
const norm = s => s.replace(/[^a-zA-Z0-9_-]/g, '-');
const box = [...document.querySelectorAll('[class*="st-key-"]')].find(
  e => e.classList.contains('st-key-' + arguments[0]) || e.classList.contains('st-key-' + norm(arguments[0])));
const el = box && box.querySelector('.js-plotly-plot');
if (!el || !el._fullData) return null;
return el._fullData.filter(t => t.visible !== false).map(t => ({
  name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || []), fill: t.fill || 'none',
  dash: (t.line && t.line.dash) || 'solid', width: t.line ? t.line.width : null}));
"""


def _lines(driver, key: str) -> list[dict]:
    """The drawn line traces (no bands) of the plotly chart with Streamlit key ``key``, as plotly.js holds them."""
    traces = driver.execute_script(TRACES_JS, key)
    assert traces, f"no plotly chart with key {key!r} on the page"
    return [t for t in traces if t["fill"] == "none" and t["width"] != 0]


def _set_smoothing(driver, title: str, charts: int, key: Keys) -> None:
    """Move the sidebar's smoothing slider to one end with the keyboard and wait for the rerun."""
    thumb = driver.find_element(By.CSS_SELECTOR, '.st-key-smoothing input[type="range"]')  # react-aria's, hidden
    driver.execute_script("arguments[0].focus();", thumb)
    ActionChains(driver).send_keys(key).perform()
    start = time.perf_counter()
    while time.perf_counter() < start + 10 and not driver.execute_script(STATE_JS)["running"]:
        time.sleep(0.05)
    _open_settled(driver, title, charts)


def _open_settled(driver, title: str, charts: int) -> None:
    deadline = time.perf_counter() + PAGE_TIMEOUT
    settled = 0
    while time.perf_counter() < deadline and settled < 3:
        settled = settled + 1 if _finished(driver, title, charts) else 0
        time.sleep(0.25)
    assert settled >= 3, f"page {title!r} did not settle after moving the smoothing slider"


@pytest.mark.slow  # 30-60 s: two pages drawn, the slider moved on each
def test_held_out_curves_are_unsmoothed_and_start_and_end_are_drawn(server, browser, store):
    """The pass@k page draws the logged held-out values whatever the smoothing slider says (the mean over
    each method's seeds at each evaluation step), and pass@k against k shows the first evaluation dashed
    beside the last. The dynamics page's training curves do move with the slider: the control that the
    slider acts in this browser at all."""
    _open(browser, f"{server}/dynamics", "Training dynamics", 8)
    smoothed = _lines(browser, "dyn-train/reward")
    _set_smoothing(browser, "Training dynamics", 8, Keys.HOME)  # 0: off
    raw = _lines(browser, "dyn-train/reward")
    assert [t["y"] for t in smoothed] != [t["y"] for t in raw], "the slider did not change a training curve"

    _open(browser, f"{server}/passk", "pass@k", 5)
    runs = loaders.runs_table(EXPERIMENT, store)
    runs = runs[runs["kind"] != "probe"]
    benchmark = sorted(BENCHMARKS)[0]  # the benchmark the page shows first: its benchmarks, sorted
    key = records.eval_key(benchmark, "pass", 1)
    histories = pd.concat([loaders.metric_history(r.run_id, key, store).assign(method=r.method)
                           for r in runs.itertuples()])
    logged = histories.groupby(["method", "step"])["value"].mean()
    for slider in (None, Keys.END, Keys.HOME):  # the default 0.6, then 0.99, then 0
        if slider is not None:
            _set_smoothing(browser, "pass@k", 5, slider)
        drawn = _lines(browser, "passk-steps-pass-1")
        assert sorted(t["name"] for t in drawn) == sorted(runs["method"].unique()), drawn
        for trace in drawn:
            want = logged.loc[trace["name"]].loc[[int(x) for x in trace["x"]]].to_numpy()
            np.testing.assert_allclose(trace["y"], want, atol=1e-12, err_msg=f"{trace['name']} at {slider!r}")
        assert not [t for t in _lines(browser, "passk-steps-pass-1") if t["name"].endswith("(raw)")]
        by_k = _lines(browser, f"passk-k-{benchmark}")
        dashed = [t for t in by_k if t["dash"] == "dash" and t["name"].endswith("(first evaluation)")]
        solid = [t for t in by_k if t["dash"] == "solid"]
        assert len(dashed) == len(solid) == runs["method"].nunique(), by_k
        assert all(len(t["y"]) > 1 for t in dashed + solid)

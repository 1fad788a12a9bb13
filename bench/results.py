"""bench/RESULTS.md: one header (machine, versions, method) and one table that every benchmark appends rows to."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.timing import Stat

RESULTS = Path(__file__).resolve().with_name("RESULTS.md")
COLUMNS = ("bench", "case", "median", "IQR (q25 – q75)", "n", "target", "holds", "note")


def machine() -> dict[str, str]:
    import torch
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        mem_kb = int(next(line for line in lines if line.startswith("MemTotal")).split()[1])
        mem = f"{mem_kb / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        mem = "?"
    info = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": f"{cpu}, {os.cpu_count()} logical cores, RAM {mem}",
        "torch threads": os.environ.get("BENCH_THREADS", "1") + " (BENCH_THREADS; see bench/timing.py set_threads)",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    for name in ("numpy", "pyarrow", "mlflow", "streamlit", "sentence_transformers"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is just not listed
            pass
    try:
        root = Path(__file__).resolve().parents[1]
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        info["commit"] = rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def start(path: Path = RESULTS) -> None:
    """Write a fresh RESULTS.md: machine and versions, how to read the table, the table's header."""
    lines = ["# Benchmark results", "", "Written by `make bench` (`python -m bench.run_all`); do not edit by hand.", ""]
    lines += [f"- **{k}**: {v}" for k, v in machine().items()]
    lines += [
        "",
        "Every figure is a ratio of times measured side by side in one process, cases interleaved in rotating",
        "order and repeated; *median* and *IQR* are over the repeats' paired ratios (each round's case time",
        "divided by the same round's reference time), *n* is the number of repeats. Absolute times are",
        "given only where no ratio applies (analysis scale, app render), and they depend on how busy the",
        "machine was (load average above).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class Row:
    bench: str
    case: str
    median: str
    spread: str = ""
    n: int | str = ""
    target: str = ""
    holds: bool | None = None
    note: str = ""

    def markdown(self) -> str:
        holds = "" if self.holds is None else ("yes" if self.holds else "**no**")
        cells = (self.bench, self.case, self.median, self.spread, str(self.n), self.target, holds, self.note)
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def stat_row(bench: str, case: str, stat: Stat, kind: str = "ratio", target: str = "", limit: float | None = None,
             note: str = "") -> Row:
    """A row from a :class:`Stat`; ``limit`` (same unit as the stat) decides ``holds`` on the median."""
    holds = None if limit is None else stat.median <= limit
    return Row(bench, case, stat.fmt(kind), stat.spread(kind), stat.n, target, holds, note)


def append(rows: list[Row], path: Path = RESULTS) -> None:
    """Append rows to the table (writing the header first when the file is missing)."""
    if not path.exists():
        start(path)
    with path.open("a") as f:
        for row in rows:
            f.write(row.markdown() + "\n")
    for row in rows:
        print(row.markdown(), flush=True)

"""``workbench report``: the paper's Table 1 from the runs of one experiment, as Markdown and CSV (DESIGN 5).

The table itself (which runs count, which k, the interval over seeds) is
:mod:`analysis.report`, shared with the app's pass@k page; this module is the
command around it and the files it writes.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.records import DEFAULT_EXPERIMENT

if TYPE_CHECKING:  # pandas, scipy and mlflow load when a report is made, not when the CLI starts
    import pandas as pd


def write_report(table: pd.DataFrame, out_dir: str | Path, experiment: str = "") -> list[Path]:
    """Write ``table.md``, ``table.csv`` (the display table) and ``table_long.csv`` (the numbers)."""
    import pandas as pd

    from analysis.report import LONG_COLUMNS, to_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv, long_csv = out / "table.md", out / "table.csv", out / "table_long.csv"
    md.write_text(to_markdown(table, experiment))
    table.to_csv(csv)
    data = table.attrs.get("data", pd.DataFrame(columns=LONG_COLUMNS))
    data.drop(columns=["column"], errors="ignore").to_csv(long_csv, index=False)
    return [md, csv, long_csv]


# --------------------------------------------------------------------------- CLI


def _ks(text: str) -> list[int]:
    from workbench.config import ConfigError

    try:
        ks = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--ks {text!r} must be comma-separated integers, e.g. --ks 1,16") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"--ks {text!r} must list integers >= 1, e.g. --ks 1,16")
    return ks


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="the paper's Table 1 (methods x benchmark pass@k, maj@k)")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                   help=f"MLflow experiment name (default {DEFAULT_EXPERIMENT!r})")
    p.add_argument("--out", metavar="DIR", help="folder for table.md / table.csv / table_long.csv "
                   "(default reports/<experiment>)")
    p.add_argument("--ks", default="1,16", help="pass@k columns (default 1,16)")
    p.add_argument("--maj-k", type=int, default=16, help="maj@k column (default 16)")
    p.add_argument("--step", default="last", help="eval step to report: 'last' (default) or a step number")
    p.add_argument("--by-level", action="store_true", help="also split every column by problem level "
                   "(countdown: the fewest steps; MATH: its level), from the logged eval/<benchmark>/level_<L>/ "
                   "metrics")
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    from analysis.report import report_table, to_markdown
    from workbench.config import ConfigError
    from workbench.tracking import tracking_uri

    if args.step != "last" and not str(args.step).isdigit():
        raise ConfigError(f"--step {args.step!r} must be 'last' or a step number")
    step = args.step if args.step == "last" else int(args.step)
    uri = tracking_uri()
    table = report_table(args.experiment, uri, ks=_ks(args.ks), maj_k=args.maj_k, step=step, by_level=args.by_level)
    print(to_markdown(table, args.experiment), end="")
    if table.empty:
        print(f"\nNothing to report for experiment {args.experiment!r} at {uri}: no finished run has eval "
              "metrics. Train with eval enabled (eval.final: true) or run `workbench eval`.")
        return 1
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", args.experiment)
    paths = write_report(table, args.out or Path("reports") / safe, args.experiment)
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0

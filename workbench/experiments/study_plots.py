"""The figures of a ``workbench study`` report, each as a PNG (matplotlib) and an interactive HTML (plotly).

Every function takes the tidy frames of :mod:`analysis.study` and
:mod:`analysis.study_tables`, writes ``<name>.png`` and ``<name>.html`` into
the report folder and returns the two file names. Lines are the mean over
seeds, shaded bands the 95 % t-interval (for paired differences, the paired
one). :func:`small_multiples` draws every grid of line panels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.records import DISTINCT_CORRECT
from analysis.study import FIGURE3_METRICS

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
UNIT = (-0.02, 1.02)  # the axis of a share (pass@k, maj@k, group shares)
STAGE_DASH = {"start": ("--", "dash"), "end": ("-", "solid")}


def _color(arms: Sequence[str], arm: str) -> str:
    return COLORS[list(arms).index(arm) % len(COLORS)]


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _save(fig_png, fig_html, out: Path, name: str) -> list[str]:
    import matplotlib.pyplot as plt

    fig_png.tight_layout()
    fig_png.savefig(out / f"{name}.png", dpi=110)
    plt.close(fig_png)
    fig_html.write_html(out / f"{name}.html", include_plotlyjs="cdn")
    return [f"{name}.png", f"{name}.html"]


def _band(ax, fig, part: pd.DataFrame, x: str, label: str, color: str, dash: tuple[str, str], row: int, col: int,
          legend: bool) -> None:
    """One mean line with its band, on a matplotlib axis and a plotly subplot."""
    import plotly.graph_objects as go

    part = part.sort_values(x)
    ax.plot(part[x], part["mean"], dash[0], color=color, label=label, marker="o", markersize=2.5)
    ax.fill_between(part[x], part["lo"], part["hi"], color=color, alpha=0.15, linewidth=0)
    xs = part[x].tolist()
    fig.add_trace(go.Scatter(x=xs + xs[::-1], y=part["hi"].tolist() + part["lo"].tolist()[::-1], fill="toself",
                             fillcolor=_rgba(color, 0.15), line={"width": 0}, hoverinfo="skip", showlegend=False,
                             legendgroup=label), row=row, col=col)
    fig.add_trace(go.Scatter(x=xs, y=part["mean"], mode="lines+markers", name=label, legendgroup=label,
                             showlegend=legend, line={"color": color, "dash": dash[1]},
                             customdata=np.stack([part["lo"], part["hi"], part["n"]], axis=1),
                             hovertemplate="%{x}: %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}], "
                                           "%{customdata[2]} seeds"), row=row, col=col)


@dataclass(frozen=True)
class Panel:
    """One subplot: its title, the rows it draws (columns arm, the x column, mean, lo, hi, n, and ``stage``
    where dashed and solid lines differ) and its axes."""

    title: str
    rows: pd.DataFrame
    y_title: str = ""
    log_x: bool = False
    zero_line: bool = False
    y_range: tuple[float, float] | None = None  # the axis shown (a band may reach past a bounded metric's range)


def small_multiples(panels: Sequence[Panel], arms: Sequence[str], out: Path, name: str, title: str, *, x: str,
                    x_title: str, columns: int = 4) -> list[str]:
    """Panels in a grid, a line with its band per arm (and stage) in each; ``<name>.png`` and ``.html``."""
    import matplotlib.pyplot as plt
    from plotly.subplots import make_subplots

    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    html = make_subplots(rows=rows, cols=cols, subplot_titles=[p.title for p in panels])
    for i, panel in enumerate(panels):
        r, c = divmod(i, cols)
        ax = axes[r][c]
        stages = list(dict.fromkeys(panel.rows["stage"])) if "stage" in panel.rows else [None]
        for arm in arms:
            for stage in stages:
                part = panel.rows[(panel.rows["arm"] == arm) & ((panel.rows["stage"] == stage) if stage else True)]
                if len(part):
                    label = f"{arm} ({stage})" if stage else arm
                    _band(ax, html, part, x, label, _color(arms, arm), STAGE_DASH[stage or "end"], r + 1, c + 1,
                          legend=i == 0)
        if panel.zero_line:
            ax.axhline(0.0, color="black", linewidth=0.8)
            html.add_hline(y=0.0, line_color="black", line_width=1, row=r + 1, col=c + 1)
        if panel.y_range is not None:
            ax.set_ylim(*panel.y_range)
            html.update_yaxes(range=list(panel.y_range), row=r + 1, col=c + 1)
        if panel.log_x:
            ax.set_xscale("log", base=2)
            html.update_xaxes(type="log", row=r + 1, col=c + 1)
        ax.set(xlabel=x_title, ylabel=panel.y_title, title=panel.title)
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    for j in range(len(panels), rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=6, ncol=2 if "stage" in panels[0].rows else 1)
    html.update_xaxes(title_text=x_title)
    html.update_layout(height=380 * rows, width=480 * cols, title=title)
    return _save(fig, html, out, name)


def passk_figure(bands: pd.DataFrame, arms: Sequence[str], out: Path) -> list[str]:
    """pass@k and maj@k against every k, a row per level ("all" first), a column per benchmark x metric;
    dashed = each run's first evaluation, solid = its last; bands over seeds."""
    panels = []
    levels = sorted(set(bands["level"]), key=lambda v: (v != "all", v.zfill(4)))
    for level in levels:
        for benchmark in dict.fromkeys(bands["benchmark"]):
            for metric in ("pass", "maj"):
                part = bands[(bands["level"] == level) & (bands["benchmark"] == benchmark) &
                             (bands["metric"] == metric)]
                if len(part):
                    where = "all problems" if level == "all" else f"level {level}"
                    panels.append(Panel(f"{benchmark}, {where}: {metric}@k", part, f"{metric}@k", log_x=True,
                                        y_range=UNIT))
    return small_multiples(panels, arms, out, "passk", "pass@k and maj@k against k (dashed: first evaluation, "
                           "solid: last), mean and 95 % CI over seeds", x="k", x_title="k",
                           columns=2 * bands["benchmark"].nunique())


def curves_figure(bands: pd.DataFrame, arms: Sequence[str], out: Path) -> list[str]:
    """Figure 2: the held-out metrics (pass@1, maj@n, pass@n, distinct correct) over training steps per arm."""
    panels = [Panel(f"held-out {b}: {m.replace('_', ' ')}", part, m.replace("_", " "),
                    y_range=None if m == DISTINCT_CORRECT else UNIT)
              for (b, m), part in bands.groupby(["benchmark", "metric"], sort=False)]
    return small_multiples(panels, arms, out, "curves", "held-out metrics over training, mean and 95 % CI over "
                           "seeds", x="step", x_title="step")


def paired_figure(paired: pd.DataFrame, arms: Sequence[str], baseline: str, out: Path) -> list[str]:
    """Each arm minus the baseline over training steps, with the paired 95 % interval; 0 = no difference."""
    frame = paired.assign(n=paired["pairs"]).fillna({"lo": paired["mean"], "hi": paired["mean"]})
    panels = [Panel(f"{b}: {m.replace('_', ' ')} - {baseline}", part, "difference", zero_line=True)
              for (b, m), part in frame.groupby(["benchmark", "metric"], sort=False)]
    return small_multiples(panels, arms, out, "paired", f"paired difference to {baseline} over training "
                           "(mean over seeds, paired t 95 % interval)", x="step", x_title="step")


def dynamics_figure(dyn: pd.DataFrame, titles: dict[str, str], arms: Sequence[str], out: Path,
                    name: str = "dynamics", title: str = "training dynamics",
                    y_range: tuple[float, float] | None = None) -> list[str]:
    """Per-step metrics over training per arm, one panel per key of ``titles`` the runs logged."""
    panels = [Panel(titles[k], dyn[dyn["key"] == k], y_range=y_range) for k in titles if (dyn["key"] == k).any()]
    return small_multiples(panels, arms, out, name, f"{title}, mean and 95 % CI over seeds", x="step",
                           x_title="step")


def figure3(pairs: pd.DataFrame, summary: pd.DataFrame, arms: Sequence[str], out: Path) -> list[str]:
    """Figure 3: gradient-cosine and semantic-cosine histograms per arm (pairs pooled over seeds), and the
    negative-pair share per arm with its 95 % CI and the paper's value (a black marker)."""
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    html = make_subplots(rows=1, cols=3, subplot_titles=["gradient cosine g_ij", "semantic cosine",
                                                         "negative-pair share (g_ij < 0)"])
    for c, (column, lo) in enumerate((("grad_cos", -1.0), ("sem_cos", -1.0))):
        bins = np.linspace(lo, 1.0, 41)
        for arm in arms:
            values = pairs.loc[pairs["arm"] == arm, column].dropna().to_numpy()
            if len(values):
                axes[c].hist(values, bins=bins, density=True, histtype="step", color=_color(arms, arm), label=arm)
                html.add_trace(go.Histogram(x=values, xbins={"start": lo, "end": 1.0, "size": 2 / 40},
                                            histnorm="probability density", name=arm, legendgroup=arm,
                                            showlegend=c == 0, marker_color=_color(arms, arm), opacity=0.45),
                               row=1, col=c + 1)
        axes[c].set(xlabel=column.replace("_", " "), ylabel="density")
    axes[0].set_title("gradient cosine g_ij")
    axes[1].set_title("semantic cosine")
    axes[0].legend(fontsize=7)
    neg = summary[summary["metric"] == "neg_frac"].set_index("arm").reindex([a for a in arms
                                                                             if a in set(summary["arm"])])
    x = np.arange(len(neg))
    err = np.vstack([neg["mean"] - neg["lo"], neg["hi"] - neg["mean"]])
    axes[2].bar(x, neg["mean"], yerr=err, color=[_color(arms, a) for a in neg.index], capsize=3)
    axes[2].scatter(x, neg["paper"], color="black", marker="D", zorder=3, label="paper")
    axes[2].set_xticks(x, neg.index, rotation=30, ha="right", fontsize=8)
    axes[2].set(ylabel="share of pairs with g < 0", title="negative-pair share")
    axes[2].legend(fontsize=7)
    html.add_trace(go.Bar(x=list(neg.index), y=neg["mean"], showlegend=False,
                          marker_color=[_color(arms, a) for a in neg.index],
                          error_y={"type": "data", "symmetric": False, "array": err[1], "arrayminus": err[0]}),
                   row=1, col=3)
    html.add_trace(go.Scatter(x=list(neg.index), y=neg["paper"], mode="markers", name="paper",
                              marker={"color": "black", "symbol": "diamond"}), row=1, col=3)
    html.update_layout(barmode="overlay", height=450, width=1500,
                       title="Figure 3 from the probes: " + ", ".join(FIGURE3_METRICS.values()))
    return _save(fig, html, out, "figure3")

"""The figures of a ``workbench study`` report, each as a PNG (matplotlib) and an interactive HTML (plotly).

Every function takes the tidy frames of :mod:`analysis.study`, writes
``<name>.png`` and ``<name>.html`` into the report folder and returns the two
file names. Lines are the mean over seeds, shaded bands the 95 % t-interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.study import FIGURE3_METRICS, TRAIN_DYNAMICS

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
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


def passk_figure(bands: pd.DataFrame, arms: Sequence[str], out: Path) -> list[str]:
    """pass@k (and maj@k) against k, one panel per benchmark x metric; dashed = step 0, solid = the end."""
    import matplotlib.pyplot as plt
    from plotly.subplots import make_subplots

    panels = sorted(set(bands[["benchmark", "metric"]].itertuples(index=False, name=None)),
                    key=lambda p: (p[0], p[1] != "pass"))  # pass@k before maj@k
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    html = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"{b}: {m}@k" for b, m in panels])
    for c, (benchmark, metric) in enumerate(panels):
        ax = axes[0][c]
        for arm in arms:
            for stage in ("start", "end"):
                part = bands[(bands["benchmark"] == benchmark) & (bands["metric"] == metric) &
                             (bands["arm"] == arm) & (bands["stage"] == stage)]
                if len(part):
                    _band(ax, html, part, "k", f"{arm} ({stage})", _color(arms, arm), STAGE_DASH[stage], 1, c + 1,
                          legend=c == 0)
        ax.set(xscale="log", xlabel="k", ylabel=f"{metric}@k", title=f"{benchmark}: {metric}@k "
               "(dashed: step 0, solid: end)")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    html.update_xaxes(type="log", title_text="k")
    html.update_layout(height=480, width=620 * len(panels), title="pass@k against k, mean and 95 % CI over seeds")
    return _save(fig, html, out, "passk")


def dynamics_figure(dyn: pd.DataFrame, held_out: Sequence[str], arms: Sequence[str], out: Path) -> list[str]:
    """Figure 2: held-out accuracy, completion length and entropy over steps per arm."""
    import matplotlib.pyplot as plt
    from plotly.subplots import make_subplots

    titles = {**{k: f"held-out {k.split('/')[1]} pass@1" for k in held_out}, **TRAIN_DYNAMICS}
    keys = [k for k in titles if (dyn["key"] == k).any()]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4), squeeze=False)
    html = make_subplots(rows=1, cols=len(keys), subplot_titles=[titles[k] for k in keys])
    for c, key in enumerate(keys):
        ax = axes[0][c]
        for arm in arms:
            part = dyn[(dyn["key"] == key) & (dyn["arm"] == arm)]
            if len(part):
                _band(ax, html, part, "step", arm, _color(arms, arm), STAGE_DASH["end"], 1, c + 1, legend=c == 0)
        ax.set(xlabel="step", title=titles[key])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    html.update_xaxes(title_text="step")
    html.update_layout(height=450, width=520 * len(keys), title="training dynamics, mean and 95 % CI over seeds")
    return _save(fig, html, out, "dynamics")


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

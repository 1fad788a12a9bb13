"""Plotly figures from the tidy frames of :mod:`analysis.compare`.

One colour per method everywhere (a run takes its method's colour, its seed
picks the dash), so a method reads the same on every page.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis import compare
from analysis.records import METHOD_COLORS

OTHER_COLORS = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
CORRECTNESS_COLORS = {"correct": "#2ca02c", "incorrect": "#d62728"}
HEIGHT = 350
FAINT_ALPHA = 0.3  # opacity of the raw line behind a smoothed one


def method_color(method: str) -> str:
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return OTHER_COLORS[sum(map(ord, str(method))) % len(OTHER_COLORS)]


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _style(frame: pd.DataFrame, series: str, name) -> tuple[str, str]:
    """(colour, dash) of one line: its method's colour; runs of one method differ by dash."""
    rows = frame[frame[series] == name]
    method = rows["method"].iloc[0] if "method" in rows and len(rows) else str(name)
    dash = "solid"
    if series != "method" and "seed" in rows and len(rows):
        seeds = sorted(frame.loc[frame["method"] == method, "seed"].unique())
        dash = DASHES[seeds.index(rows["seed"].iloc[0]) % len(DASHES)]
    return method_color(method), dash


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, height: int = HEIGHT) -> go.Figure:
    fig.update_layout(
        title={"text": title, "font": {"size": 15}}, height=height, margin={"l": 10, "r": 10, "t": 45, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.3, "x": 0}, hovermode="x unified",
    )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return fig


def lines(frame: pd.DataFrame, *, x: str, y: str, series: str, title: str, y_title: str = "",
          x_title: str | None = None, lo: str | None = None, hi: str | None = None, log2_x: bool = False,
          faint: pd.DataFrame | None = None) -> go.Figure:
    """One line per value of ``series`` (a method or a run), with a shaded band from ``lo`` to ``hi`` if given.

    ``faint``: the same lines unsmoothed (columns ``x``, ``y``, ``series``), drawn faint behind them as
    ``<name> (raw)``, as TensorBoard draws the raw curve behind the smoothed one.
    """
    fig = go.Figure()
    for name, part in frame.sort_values(x).groupby(series, sort=True):
        color, dash = _style(frame, series, name)
        if faint is not None:
            raw = faint[faint[series] == name].sort_values(x)
            fig.add_trace(go.Scatter(x=raw[x], y=raw[y], mode="lines", name=f"{name} (raw)", legendgroup=str(name),
                                     showlegend=False, line={"color": _rgba(color, FAINT_ALPHA), "dash": dash}))
        if lo and hi and (part[hi] - part[lo]).abs().max() > 0:
            fig.add_trace(go.Scatter(
                x=pd.concat([part[x], part[x][::-1]]), y=pd.concat([part[hi], part[lo][::-1]]),
                mode="lines", fill="toself", fillcolor=_rgba(color, 0.15), line={"width": 0}, hoverinfo="skip",
                showlegend=False, legendgroup=str(name), name=f"{name} band",
            ))
        fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="lines+markers" if len(part) < 12 else "lines",
                                 name=str(name), legendgroup=str(name), line={"color": color, "dash": dash}))
    if log2_x:
        ticks = sorted(frame[x].unique())
        fig.update_xaxes(type="log", tickvals=ticks, ticktext=[str(v) for v in ticks])
    return _layout(fig, title, x_title or x, y_title)


def _drawn(tidy: pd.DataFrame, series: str, band: str, x: str) -> pd.DataFrame:
    """The lines of run-level rows: by method, the mean over seeds as ``value`` with lo and hi; else the rows."""
    if series != "method":
        return tidy
    agg = compare.band_over_seeds(tidy.rename(columns={x: "step"}), by="method", band=band)
    return agg.rename(columns={"step": x, "mean": "value"})


def over_steps(tidy: pd.DataFrame, *, series: str, band: str, title: str, y_title: str = "",
               x: str = "step", smoothing: float = 0.0) -> go.Figure:
    """A metric over ``x`` (default step): mean and band over seeds by method, or one line per run.

    ``tidy`` has run-level rows: run_id, method, seed, label, ``x`` and value. ``smoothing`` > 0 (the
    sidebar's, TensorBoard's weight): each run is smoothed over ``x`` first
    (:func:`analysis.compare.smooth_runs`), so means and bands are of the smoothed runs, and the
    unsmoothed lines are drawn faint behind.
    """
    bands = {"lo": "lo", "hi": "hi"} if series == "method" else {}
    shown = compare.smooth_runs(tidy, smoothing, x=x) if smoothing else tidy
    faint = _drawn(tidy, series, band, x) if smoothing else None
    return lines(_drawn(shown, series, band, x), x=x, y="value", series=series, title=title, y_title=y_title,
                 log2_x=x == "k", faint=faint, **bands)


def with_start(end: go.Figure, start: go.Figure) -> go.Figure:
    """``end`` with the lines of ``start`` (the same runs or methods at their first evaluation) drawn dashed
    behind, named ``<name> (first evaluation)``: the start -> end comparison of the paper's pass@k plots."""
    for trace in start.data:
        trace.name = f"{trace.name} (first evaluation)"
        trace.legendgroup = f"{trace.legendgroup} (first evaluation)"
        if trace.line is not None and trace.line.width != 0:
            trace.line.dash = "dash"
        end.add_trace(trace)
    return end


def histograms(hist: pd.DataFrame, *, series: str, title: str, x_title: str,
               x_range: tuple[float, float] = (-1.0, 1.0), vlines: tuple[float, ...] = ()) -> go.Figure:
    """Overlaid density histograms, one per ``series`` (the paper's Figure 3 panels), from binned counts.

    ``hist``: one row per ``series`` value and bin, with the bin centre ``x`` and its ``density``
    (:func:`analysis.summary.pooled_histogram`), and method and seed columns for the colours.
    """
    fig = go.Figure()
    centres = np.sort(hist["x"].unique())
    width = float(centres[1] - centres[0]) if len(centres) > 1 else x_range[1] - x_range[0]
    for name, part in hist.groupby(series, sort=True):
        color, _ = _style(hist, series, name)
        fig.add_trace(go.Bar(x=part["x"], y=part["density"], width=width, name=str(name), opacity=0.45,
                             marker_color=color, customdata=part["count"],
                             hovertemplate="%{x:.2f}: %{y:.3f} (%{customdata} pairs)"))
    for v in vlines:
        fig.add_vline(x=v, line={"color": "#555", "width": 1, "dash": "dot"})
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(range=list(x_range))
    fig = _layout(fig, title, x_title, "density")
    fig.update_layout(hovermode="closest")
    return fig


def scatter(frame: pd.DataFrame, *, x: str, y: str, series: str, title: str, x_title: str, y_title: str,
            hover: list[str] | None = None) -> go.Figure:
    """Points coloured by ``series``."""
    fig = go.Figure()
    for name, part in frame.groupby(series, sort=True):
        color, _ = _style(frame, series, name)
        fig.add_trace(go.Scatter(
            x=part[x], y=part[y], mode="markers", name=str(name), marker={"color": color, "size": 8, "opacity": 0.75},
            customdata=part[hover].to_numpy() if hover else None,
            hovertemplate=("<br>".join(f"{h}: %{{customdata[{i}]}}" for i, h in enumerate(hover)) + "<extra></extra>")
            if hover else None,
        ))
    fig = _layout(fig, title, x_title, y_title, height=380)
    fig.update_layout(hovermode="closest")
    return fig


def group_map(maps: pd.DataFrame, space: str) -> go.Figure:
    """One group's completions in 2-D (PCA of unit vectors in ``space``), coloured by correctness."""
    part = maps[maps["space"] == space]
    fig = go.Figure()
    hover = ["sample", "answer", "base_reward", "shaped_reward", "advantage", "score", "text"]
    part = part.assign(text=part["completion"].str.slice(0, 90), score=part["score"].astype(object))
    for label, block in part.groupby("correctness", sort=True):
        fig.add_trace(go.Scatter(
            x=block["x"], y=block["y"], mode="markers+text", name=label, text=block["sample"].astype(str),
            textposition="top center", marker={"color": CORRECTNESS_COLORS.get(label, "#555"), "size": 13,
                                                    "line": {"width": 1, "color": "white"}},
            customdata=block[hover].to_numpy(),
            hovertemplate="<br>".join(f"{h}: %{{customdata[{i}]}}" for i, h in enumerate(hover)) + "<extra></extra>",
        ))
    fig = _layout(fig, f"{space}s (PCA of unit vectors)", "PC 1", "PC 2", height=380)
    fig.update_layout(hovermode="closest")
    return fig

"""Plotly figures shared by the app and `galaxygan evaluate`: every axis titled, with units."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

REAL, FAKE, OTHER = "#8fb8ff", "#ffb86b", "#b8e986"
PALETTE = ("#8fb8ff", "#ffb86b", "#b8e986", "#ff7eb6", "#c3a6ff", "#7ee0d8")


def _layout(fig: go.Figure, *, title: str, x: str, y: str, height: int = 300) -> go.Figure:
    # the legend below the x-axis title: above the plot it ran into long titles
    fig.update_layout(title=dict(text=title, font=dict(size=15), y=0.98, yanchor="top"), height=height + 40,
                      margin=dict(l=10, r=10, t=48, b=10), hovermode="x unified",
                      legend=dict(orientation="h", yanchor="top", y=-0.28, xanchor="left", x=0.0))
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    return fig


def lines(x: Sequence[float], series: dict[str, Sequence[float]], *, title: str, x_title: str,
          y_title: str, height: int = 300, log_y: bool = False) -> go.Figure:
    """Several named series against one x axis (None values leave gaps)."""
    fig = go.Figure()
    for i, (name, y) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=list(x), y=list(y), name=name, mode="lines+markers" if len(x) < 30 else "lines",
                                 line=dict(color=PALETTE[i % len(PALETTE)], width=2)))
    xs = [v for v in x if v is not None]
    if len(set(xs)) == 1 and float(xs[0]).is_integer():  # one step logged: whole-number ticks, not 9.5 / 10.5
        fig.update_xaxes(range=[xs[0] - 1, xs[0] + 1], dtick=1)
    if log_y:  # full numbers at every labelled tick (plotly's default writes only the leading digit between decades)
        fig.update_yaxes(type="log", tickformat=".2~g", dtick="D2")
    return _layout(fig, title=title, x=x_title, y=y_title, height=height)


def histograms(groups: dict[str, np.ndarray], *, title: str, x_title: str, bins: int = 30,
               height: int = 280, density: bool = True) -> go.Figure:
    """Overlaid histograms over shared bin edges (probability density by default)."""
    values = [np.asarray(v, float)[np.isfinite(v)] for v in groups.values()]
    both = np.concatenate([v for v in values if len(v)]) if any(len(v) for v in values) else np.zeros(1)
    edges = np.histogram_bin_edges(both, bins=bins)
    fig = go.Figure()
    for i, (name, v) in enumerate(zip(groups, values)):
        counts, _ = np.histogram(v, bins=edges, density=density and len(v) > 0)
        fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), name=f"{name} (n={len(v)})",
                             marker=dict(color=PALETTE[i % len(PALETTE)]), opacity=0.6))
    fig.update_layout(barmode="overlay", hovermode="closest")
    return _layout(fig, title=title, x=x_title, y="probability density" if density else "count", height=height)


def colour_magnitude(groups: dict[str, tuple[np.ndarray, np.ndarray]], *, box: dict | None, title: str,
                     mag_title: str, colour_title: str, height: int = 420) -> go.Figure:
    """Colour (y) against magnitude (x, bright to the left) with an optional acceptance box.

    ``box`` has ``mag_min``, ``mag_max``, ``colour_min``, ``colour_max`` (any may be missing).
    """
    fig = go.Figure()
    for i, (name, (mag, col)) in enumerate(groups.items()):
        fig.add_trace(go.Scattergl(x=mag, y=col, mode="markers", name=f"{name} (n={len(mag)})",
                                   marker=dict(size=5, color=PALETTE[i % len(PALETTE)], opacity=0.55)))
    if box:
        fig.add_shape(type="rect", x0=box.get("mag_min"), x1=box.get("mag_max"), y0=box.get("colour_min"),
                      y1=box.get("colour_max"), line=dict(color="#ffffff", width=2, dash="dash"),
                      fillcolor="rgba(255,255,255,0.05)")
    fig.update_layout(hovermode="closest")
    return _layout(fig, title=title, x=mag_title, y=colour_title, height=height)

"""Figures of the memorisation check, shared by ``galaxygan evaluate`` and the Memorisation page.

* :func:`distance_histogram` - nearest-training distances of generated samples, held-out real
  images and training images, as outlined step histograms in strong colours (legible on light
  and dark backgrounds, none hiding another) with the suspect threshold as a labelled line;
* :func:`labelled_matches` - one image: each generated sample beside its nearest training
  images, every tile captioned with its name and distance.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

__all__ = ["SERIES_COLOURS", "distance_histogram", "labelled_matches"]

SERIES_COLOURS = {"generated": "#e4572e", "held-out": "#2e86de", "training": "#8e8e8e"}
THRESHOLD_COLOUR = "#f0a202"


def distance_histogram(gen_d, held_d, train_d, *, threshold: float | None, title: str, x_title: str,
                       bins: int = 30, height: int = 320) -> go.Figure:
    """Step histograms (probability density) of the three sets, and the threshold line.

    Parameters
    ----------
    gen_d, train_d : array_like, 1-D, float
        Nearest-training distances of generated samples and of training images (to another).
    held_d : array_like, 1-D, float, or None
        Of held-out images; left out when None.
    threshold : float or None
        Suspect threshold; no line when None.
    title, x_title : str
        Figure and x-axis titles (the x title carries the unit).
    """
    groups = {"generated → nearest training": (gen_d, "generated", "solid"),
              "held-out real → nearest training": (held_d, "held-out", "solid"),
              "training → nearest other training": (train_d, "training", "dot")}
    groups = {k: (np.asarray(v, float)[np.isfinite(v)], c, dash) for k, (v, c, dash) in groups.items()
              if v is not None}
    every = np.concatenate([v for v, _, _ in groups.values()] + ([np.array([threshold])] if threshold else []))
    edges = np.histogram_bin_edges(every, bins=bins)
    fig = go.Figure()
    for name, (v, colour, dash) in groups.items():
        counts, _ = np.histogram(v, bins=edges, density=len(v) > 0)
        x = np.repeat(edges, 2)[1:-1]  # a closed outline: each bin's left and right edge
        fig.add_trace(go.Scatter(x=x, y=np.repeat(counts, 2), name=f"{name} (n={len(v)})", mode="lines",
                                 line=dict(color=SERIES_COLOURS[colour], width=2.5, dash=dash),
                                 fill="tozeroy" if colour == "generated" else None,
                                 fillcolor="rgba(228,87,46,0.15)"))
    if threshold is not None:
        fig.add_vline(x=threshold, line=dict(color=THRESHOLD_COLOUR, width=2.5, dash="dash"),
                      annotation_text=f"suspect threshold {threshold:.3g}", annotation_position="top right",
                      annotation_font_color=THRESHOLD_COLOUR)
    fig.update_layout(title=dict(text=title, font=dict(size=15)), height=height, hovermode="closest",
                      margin=dict(l=10, r=10, t=64, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="left", x=0.0))
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text="probability density", rangemode="tozero")
    return fig


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` shortened from the left (keeping the file name's end) to fit ``width`` px."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 2 and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Words of ``text`` in lines of at most ``width`` px."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line] if line else lines


def labelled_matches(gen_rgb: np.ndarray, train_rgb: np.ndarray, *, gen_labels: list[str],
                     train_labels: list[list[str]], distances: np.ndarray, flagged: np.ndarray | None,
                     header: str, tile: int = 112) -> np.ndarray:
    """Generated samples (rows) beside their nearest training images, each tile captioned.

    Parameters
    ----------
    gen_rgb : ndarray, (R, h, w, 3), uint8
        Generated samples, one per row.
    train_rgb : ndarray, (R, k, h, w, 3), uint8
        Their k nearest training images, nearest first.
    gen_labels : list of str, length R
        Caption of each generated sample (e.g. ``"generated #5"``).
    train_labels : list of list of str, (R, k)
        Name of each training image (file name, or dataset and index).
    distances : ndarray, (R, k), float
        Distance of each training image to its row's sample.
    flagged : ndarray, (R,), bool, or None
        Rows flagged as suspects (marked in red); None when there is no threshold.
    header : str
        A line above the grid: which distance, in which unit.
    tile : int
        Displayed tile side, px (images are enlarged by nearest neighbour).

    Returns
    -------
    ndarray, (H, W, 3), uint8
    """
    rows, k = train_rgb.shape[:2]
    cap, pad = 34, 6
    width = (1 + k) * (tile + pad) + pad
    small, big = _font(11), _font(13)
    header_lines = _wrap(ImageDraw.Draw(Image.new("RGB", (1, 1))), header, big, width - 2 * pad)
    head = 8 + 17 * len(header_lines)
    height = head + rows * (tile + cap + pad) + pad
    img = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(header_lines):
        draw.text((pad, 5 + 17 * i), line, fill=(235, 235, 235), font=big)
    for r in range(rows):
        y = head + r * (tile + cap + pad)
        tiles = [gen_rgb[r]] + [train_rgb[r, j] for j in range(k)]
        for j, t in enumerate(tiles):
            x = pad + j * (tile + pad)
            img.paste(Image.fromarray(t).resize((tile, tile), Image.NEAREST), (x, y))
            if j == 0:
                suspect = flagged is not None and bool(flagged[r])
                colour = (255, 110, 90) if suspect else (150, 220, 150)
                lines = [gen_labels[r], "SUSPECT" if suspect else ("new" if flagged is not None else "")]
                draw.rectangle([x, y, x + tile - 1, y + tile - 1], outline=colour, width=2)
            else:
                colour = (220, 220, 220)
                lines = [train_labels[r][j - 1], f"d = {distances[r, j - 1]:.4g}"]
            for i, line in enumerate(lines):
                draw.text((x, y + tile + 2 + 15 * i), _fit(draw, line, small, tile), fill=colour, font=small)
    return np.asarray(img)

"""Rendering model-range images for display: RGB mapping, grids, PNG files.

Model-range data is ``(N, C, H, W)`` in [-1, 1]. For 8-bit image datasets that is the pixel value
(``(x + 1) * 127.5``). For physical data it is already the dataset's per-band asinh stretch, so the
display is that stretch; bands listed blue to red (g, r, i) map to RGB as i->R, r->G, g->B (the SDSS
convention). Every function here states the stretch it used in :func:`display_note`.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from galaxy_core.io.atomic import atomic_write_bytes
from galaxy_core.io.units import model_to_uint8


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[-1, 1] float -> uint8 0..255 (clipped)."""
    return model_to_uint8(np.asarray(x, np.float32))


# Colours of grid classes (empty, small, medium, large, ...), uint8 RGB.
GRID_PALETTE = np.array([[0, 0, 0], [70, 140, 255], [255, 200, 60], [255, 70, 70], [160, 255, 160]], np.uint8)

# Seed of the class draw when a position model's output is displayed (:func:`to_rgb`): fixed, so
# the same output always shows the same grid and training samples stay comparable step to step.
GRID_DISPLAY_SEED = 0


def sample_cells(probs: np.ndarray, *, mode: str = "argmax", rng: np.random.Generator | None = None) -> np.ndarray:
    """Discrete grids from a position model's one-hot-like output.

    Parameters
    ----------
    probs : array (n, K, G, G), float
        Output of the position generator in [-1, 1] (``2 p - 1`` of class probabilities p).
    mode : {"argmax", "sample"}
        Most likely class per cell, or a class drawn from p per cell.
    rng : numpy Generator
        Needed for ``"sample"``.

    Returns
    -------
    ndarray (n, G, G), int64
    """
    p = (np.asarray(probs, float) + 1) / 2
    if mode == "argmax":
        return p.argmax(axis=1).astype(np.int64)
    if mode != "sample":
        raise ValueError(f"sample_cells: mode must be 'argmax' or 'sample', got {mode!r}")
    if rng is None:
        raise ValueError("sample_cells: mode 'sample' needs an rng")
    p = p / p.sum(axis=1, keepdims=True)
    c = np.cumsum(p, axis=1)  # (n, K, G, G)
    u = rng.random((p.shape[0], 1) + p.shape[2:])
    return np.minimum((u > c).sum(axis=1), p.shape[1] - 1).astype(np.int64)


def grid_rgb(cells: np.ndarray) -> np.ndarray:
    """Class grids (..., G, G) int (0 = empty) to uint8 RGB (..., G, G, 3) in :data:`GRID_PALETTE`
    (classes past the palette take its last colour)."""
    return GRID_PALETTE[np.clip(np.asarray(cells, np.int64), 0, len(GRID_PALETTE) - 1)]


def grid_channels(num_classes: int) -> list[str]:
    """Channel names of a position model's one-hot output over ``num_classes`` cell classes:
    ``["class0", ..., "class{K-1}"]`` (class 0 = empty)."""
    return [f"class{k}" for k in range(int(num_classes))]


def is_grid_channels(channels: list[str] | None) -> bool:
    """True for the channel names of a position model's one-hot output (``class0``, ``class1``, ...)."""
    return bool(channels) and all(str(c).startswith("class") for c in channels)


def to_rgb(x: np.ndarray, channels: list[str] | None = None) -> np.ndarray:
    """Model-range images to displayable uint8 RGB.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or (C, H, W), float in [-1, 1]
    channels : list of str
        Channel names in array order. ``["R", "G", "B"]`` is shown as is, ``["L"]`` (or any
        single band) as grey, and survey bands ordered blue to red (e.g. g, r, i) as
        reddest->R, middle->G, bluest->B. ``class0``, ``class1``, ... (a position model's
        class probabilities, :func:`is_grid_channels`): one class is drawn per cell, as the
        sky composer draws it (:func:`sample_cells`, seed :data:`GRID_DISPLAY_SEED`), and shown
        in :data:`GRID_PALETTE` (black = empty), one pixel per cell.

    Returns
    -------
    ndarray, (N, H, W, 3) or (H, W, 3), uint8
    """
    x = np.asarray(x)
    single = x.ndim == 3
    if single:
        x = x[None]
    if is_grid_channels(channels) and x.shape[1] == len(channels) > 1:
        cells = sample_cells(x, mode="sample", rng=np.random.default_rng(GRID_DISPLAY_SEED))
        out = grid_rgb(cells)
        return out[0] if single else out
    rgb, _ = rgb_planes(x, channels)
    out = to_uint8(np.transpose(rgb, (0, 2, 3, 1)))
    return out[0] if single else out


def rgb_planes(x: np.ndarray, channels: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """The display's red, green and blue planes of (N, C, H, W) images, and what each holds.

    The band-to-colour rule of :func:`to_rgb`: ``R, G, B`` as is; one band grey; survey bands
    listed blue to red as reddest->R, middle->G, bluest->B (two bands: their mean in G).

    Returns
    -------
    planes : ndarray (N, 3, H, W), dtype of ``x``
    names : list of 3 str
        The band (or band mean) in each plane, e.g. ``["i", "r", "g"]``.
    """
    x = np.asarray(x)
    c = x.shape[1]
    names = rgb_plane_names(channels, c)
    if c == 1:
        return np.repeat(x, 3, axis=1), names
    if [s.upper() for s in _band_names(channels, c)] == ["R", "G", "B"]:
        return x, names
    if c == 3:
        return x[:, ::-1], names  # blue-to-red bands -> (reddest, middle, bluest) = (R, G, B)
    if c == 2:
        return np.stack([x[:, 1], (x[:, 0] + x[:, 1]) / 2, x[:, 0]], axis=1), names
    return x[:, [c - 1, c // 2, 0]], names  # more bands: reddest, middle, bluest


def rgb_plane_names(channels: list[str] | None, c: int | None = None) -> list[str]:
    """What each of the display's R, G, B planes holds for ``c`` bands named ``channels``
    (:func:`rgb_planes`), e.g. ``["i", "r", "g"]`` for g, r, i."""
    names = _band_names(channels, len(channels) if c is None else c)
    c = len(names)
    if c == 1:
        return names * 3
    if [s.upper() for s in names] == ["R", "G", "B"]:
        return names
    if c == 3:
        return names[::-1]
    if c == 2:
        return [names[1], f"({names[0]}+{names[1]})/2", names[0]]
    return [names[c - 1], names[c // 2], names[0]]


def _band_names(channels: list[str] | None, c: int) -> list[str]:
    return [str(b) for b in channels] if channels is not None and len(channels) == c else [f"band{i + 1}" for i in range(c)]


def display_note(channels: list[str], stretch: dict | None) -> str:
    """One line saying how an image was rendered (shown beside every image)."""
    if is_grid_channels(channels) and len(channels) > 1:
        names = {2: ("empty", "occupied"), 4: ("empty", "small", "medium", "large")}.get(
            len(channels), ("empty",) + tuple(f"class {k}" for k in range(1, len(channels))))
        colours = ("black", "blue", "yellow", "red", "green")
        key = ", ".join(f"{n} {c}" for n, c in zip(names, colours))
        return (f"class grid, one pixel per cell: one class drawn per cell from the model's class probabilities "
                f"(seed {GRID_DISPLAY_SEED}); {key}")
    if stretch is None:
        return "8-bit pixel values as stored (linear display)"
    if stretch.get("type") == "minmax":
        return "per-image min-max normalised (not flux-preserving); " + _band_map(channels)
    return f"per-band asinh stretch of the dataset; {_band_map(channels)}"


def _band_map(channels: list[str]) -> str:
    if len(channels) == 3:
        return f"{channels[2]}->R, {channels[1]}->G, {channels[0]}->B"
    return "grey" if len(channels) == 1 else ", ".join(channels)


def make_grid(rgb: np.ndarray, *, ncols: int | None = None, pad: int = 2, fill: int = 0) -> np.ndarray:
    """Tile ``(N, H, W, 3)`` uint8 images into one ``(rows*H', cols*W', 3)`` image."""
    n, h, w, c = rgb.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), fill, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x0 = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x0 : x0 + w] = rgb[i]
    return grid


def png_bytes(rgb: np.ndarray, *, scale: int = 1) -> bytes:
    """Encode an (H, W, 3) uint8 image as PNG, optionally enlarged by nearest-neighbour."""
    img = Image.fromarray(rgb)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | os.PathLike, rgb: np.ndarray, *, scale: int = 1) -> None:
    """Write an (H, W, 3) uint8 image as PNG atomically."""
    atomic_write_bytes(path, png_bytes(rgb, scale=scale))

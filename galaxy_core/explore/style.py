"""StyleGAN exploration: generation from z, w or w+, truncation, noise modes and style mixing.

Style mixing (Karras, Laine & Aila 2019, section 3.1 and Fig. 3): every styled layer of the
synthesis network takes its own w (``ws``, shape ``(n, num_ws, w_dim)``). A mixing grid has a
row latent per row and a column latent per column; cell ``(i, j)`` takes **column j's** w at the
layers selected by a mask and **row i's** w everywhere else. Layer ranges follow the paper:

==========  =====================  =============================================
range       resolutions            what it carries (paper, and for galaxies)
==========  =====================  =============================================
``coarse``  4-8 px                 pose, overall shape: orientation, size, bulge
``middle``  16-32 px               smaller structure: arms, disc thickness, bars
``fine``    64 px and up           colour and fine texture: knots, noise, sky
==========  =====================  =============================================

The functions take a :class:`~galaxy_core.models.pretrained.Pretrained` StyleGAN checkpoint (its
``G``, the EMA generator) or a bare :class:`~galaxy_core.models.stylegan.Generator`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from galaxy_core.errors import CheckpointError
from galaxy_core.models.stylegan import NOISE_MODES, Generator

LAYER_RANGES: dict[str, tuple[int, int]] = {"coarse": (4, 8), "middle": (16, 32), "fine": (64, 1 << 30)}
SPACES = ("z", "w", "w+")


def generator_of(model) -> Generator:
    """The StyleGAN generator of a checkpoint (or the generator itself).

    Raises
    ------
    CheckpointError
        The model is not a StyleGAN (say which checkpoint and what it is).
    """
    G = getattr(model, "G", model)
    if not isinstance(G, Generator):
        name = getattr(model, "name", type(model).__name__)
        arch = getattr(model, "meta", {}).get("arch", type(G).__name__)
        raise CheckpointError(f"{name}: style mixing needs a stylegan checkpoint, this one is {arch}")
    return G


def _device(G: Generator) -> torch.device:
    return G.synthesis.const.device


def layers(model) -> list[tuple[str, int, str]]:
    """Styled layers by w index: ``(name, resolution in px, "conv" | "rgb")``."""
    return list(generator_of(model).synthesis.layers)


def layer_mask(model, which: str | Sequence[bool] | Sequence[str]) -> np.ndarray:
    """Boolean mask over the w indices of the styled layers.

    Parameters
    ----------
    which : str, sequence of str, or sequence of bool
        A range name (``"coarse"``, ``"middle"``, ``"fine"``, see :data:`LAYER_RANGES`), several
        names, or an explicit per-layer mask of length ``num_ws``.

    Returns
    -------
    ndarray (num_ws,) of bool

    Raises
    ------
    ValueError
        An unknown range name or a mask of the wrong length.
    """
    table = layers(model)
    if isinstance(which, str):
        which = [which]
    which = list(which)
    if which and all(isinstance(x, (bool, np.bool_)) for x in which):
        if len(which) != len(table):
            raise ValueError(f"layer mask has {len(which)} entries; this generator has {len(table)} styled layers")
        return np.asarray(which, dtype=bool)
    mask = np.zeros(len(table), dtype=bool)
    for name in which:
        if name not in LAYER_RANGES:
            raise ValueError(f"unknown layer range {name!r}; use one of {', '.join(LAYER_RANGES)} or a per-layer mask")
        lo, hi = LAYER_RANGES[name]
        mask |= np.array([lo <= r <= hi for _, r, _ in table])
    return mask


@torch.no_grad()
def mapping(model, z, *, psi: float = 1.0) -> np.ndarray:
    """z (n, z_dim) -> w (n, w_dim) float32, truncated towards ``w_avg`` by ``psi`` (1 = none;
    Karras et al. 2019, section 3.2 / appendix B)."""
    G = generator_of(model)
    z = torch.as_tensor(np.asarray(z, np.float32), device=_device(G))
    if z.ndim != 2 or z.shape[1] != G.z_dim:
        raise ValueError(f"z must be (n, {G.z_dim}), got {tuple(z.shape)}")
    return G.mapping(z, psi=psi).float().cpu().numpy()


def w_plus(w, num_ws: int) -> np.ndarray:
    """w (n, w_dim) -> ws (n, num_ws, w_dim): the same w for every layer."""
    w = np.asarray(w, np.float32)
    return np.repeat(w[:, None, :], num_ws, axis=1)


def truncate(model, ws, psi: float) -> np.ndarray:
    """``w_avg + psi (w - w_avg)`` for w (n, w_dim) or ws (n, num_ws, w_dim)."""
    G = generator_of(model)
    avg = G.mapping.w_avg.float().cpu().numpy()
    ws = np.asarray(ws, np.float32)
    return avg + psi * (ws - avg)


@torch.no_grad()
def synthesize(model, ws, *, noise_mode: str = "const", batch: int = 256, share_prefixes: bool = False) -> np.ndarray:
    """ws (n, num_ws, w_dim) -> images float32 (n, C, H, W) clamped to [-1, 1].

    ``share_prefixes``: run each layer once per distinct prefix of styles (see
    :meth:`galaxy_core.models.stylegan.SynthesisNetwork.forward`); what a mixing grid uses.

    Raises
    ------
    ValueError
        Wrong shape or noise mode.
    """
    G = generator_of(model)
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
    ws = torch.as_tensor(np.asarray(ws, np.float32))
    if ws.ndim != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
        raise ValueError(f"ws must be (n, {G.num_ws}, {G.w_dim}), got {tuple(ws.shape)}")
    out = [G.synthesis(ws[i : i + batch].to(_device(G)), noise_mode=noise_mode, share_prefixes=share_prefixes)
           .clamp(-1, 1).float().cpu() for i in range(0, len(ws), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0,), np.float32)


def to_ws(model, latents, *, space: str, psi: float = 1.0) -> np.ndarray:
    """Latents of a space (``z`` (n, z_dim), ``w`` (n, w_dim) or ``w+`` (n, num_ws, w_dim)) as ws,
    with truncation ``psi`` applied (for z through the mapping network, else around w_avg)."""
    G = generator_of(model)
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    lat = np.asarray(latents, np.float32)
    if space == "z":
        return w_plus(mapping(G, lat, psi=psi), G.num_ws)
    want = (G.w_dim,) if space == "w" else (G.num_ws, G.w_dim)
    if tuple(lat.shape[1:]) != want:
        raise ValueError(f"{space} latents must be (n, {', '.join(map(str, want))}), got {lat.shape}")
    ws = w_plus(lat, G.num_ws) if space == "w" else lat
    return truncate(G, ws, psi) if psi != 1.0 else ws


def generate(model, latents, *, space: str = "z", psi: float = 1.0, noise_mode: str = "const") -> np.ndarray:
    """Images float32 (n, C, H, W) in [-1, 1] from z, w or w+ latents (see :func:`to_ws`)."""
    return synthesize(model, to_ws(model, latents, space=space, psi=psi), noise_mode=noise_mode)


@dataclass
class MixingGrid:
    """A style-mixing grid.

    Attributes
    ----------
    rows : ndarray (R, C, H, W)
        The row sources' own images (every layer from the row latent).
    columns : ndarray (K, C, H, W)
        The column sources' own images.
    grid : ndarray (R, K, C, H, W)
        Cell (i, j): column j's styles at the masked layers, row i's elsewhere.
    ws : ndarray (R, K, num_ws, w_dim)
        The styles of each cell (to regenerate or download).
    mask : ndarray (num_ws,) of bool
    """

    rows: np.ndarray
    columns: np.ndarray
    grid: np.ndarray
    ws: np.ndarray
    mask: np.ndarray


def mixing_ws(row_w: np.ndarray, col_w: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Cell styles: (R, w_dim) and (K, w_dim) with a (num_ws,) mask -> (R, K, num_ws, w_dim)."""
    mask = np.asarray(mask, bool)
    R, K = len(row_w), len(col_w)
    rows = np.broadcast_to(row_w[:, None, None, :], (R, K, len(mask), row_w.shape[1]))
    cols = np.broadcast_to(col_w[None, :, None, :], (R, K, len(mask), col_w.shape[1]))
    return np.where(mask[None, None, :, None], cols, rows).astype(np.float32)


def style_mix(model, row_z, col_z, *, mask, psi: float = 1.0, noise_mode: str = "const") -> MixingGrid:
    """Style-mixing grid for row latents z (R, z_dim) and column latents z (K, z_dim).

    The mapping runs once for the R + K latents and the synthesis once for the R + K + R*K
    images, each layer once per distinct prefix of styles (``share_prefixes``): the layers
    before the first mixed one run once per source, not once per cell. So a grid costs at most
    one synthesis forward of those images (less with a ``fine`` or ``middle`` mask).

    Parameters
    ----------
    mask : str, sequence of str or bool
        Layers that take the column's styles (see :func:`layer_mask`).
    psi : float
        Truncation of every w.
    noise_mode : {"const", "random", "none"}

    Returns
    -------
    MixingGrid
    """
    G = generator_of(model)
    m = layer_mask(G, mask)
    row_z, col_z = np.asarray(row_z, np.float32), np.asarray(col_z, np.float32)
    w = mapping(G, np.concatenate([row_z, col_z]), psi=psi)
    R, K = len(row_z), len(col_z)
    cells = mixing_ws(w[:R], w[R:], m)
    x = synthesize(G, np.concatenate([w_plus(w, G.num_ws), cells.reshape(R * K, G.num_ws, G.w_dim)]),
                   noise_mode=noise_mode, share_prefixes=True)
    return MixingGrid(rows=x[:R], columns=x[R : R + K], grid=x[R + K :].reshape(R, K, *x.shape[1:]),
                      ws=cells, mask=m)


def grid_with_headers(mix: MixingGrid, *, blank: float = -1.0) -> np.ndarray:
    """The (R + 1) x (K + 1) layout of the paper's Fig. 3: column sources along the top, row
    sources down the left, the mixes inside, an empty corner. Returns (R + 1) * (K + 1) images
    (N, C, H, W) in row-major order, ready for :func:`galaxy_core.io.render.make_grid`."""
    R, K = mix.grid.shape[:2]
    corner = np.full_like(mix.columns[:1], blank)
    out = [corner, mix.columns]
    for i in range(R):
        out += [mix.rows[i : i + 1], mix.grid[i]]
    return np.concatenate(out)


def mixing_grid_rgb(model, row_z, col_z, *, mask, psi: float = 1.0, noise_mode: str = "const",
                    channels: Sequence[str] | None = None) -> tuple[np.ndarray, MixingGrid]:
    """The displayed grid: :func:`style_mix` laid out by :func:`grid_with_headers` and rendered.

    Parameters
    ----------
    channels : sequence of str, optional
        Band names for :func:`galaxy_core.io.render.to_rgb` (default: the checkpoint's).

    Returns
    -------
    rgb : ndarray uint8 (H', W', 3)
        ``K + 1`` columns by ``R + 1`` rows of tiles.
    mix : MixingGrid
    """
    from galaxy_core.io.render import make_grid, to_rgb

    mix = style_mix(model, row_z, col_z, mask=mask, psi=psi, noise_mode=noise_mode)
    if channels is None:
        channels = model.channels if hasattr(model, "channels") else None
    tiles = to_rgb(grid_with_headers(mix), list(channels) if channels is not None else None)
    return make_grid(tiles, ncols=mix.grid.shape[1] + 1), mix


def layer_label(model, i: int) -> str:
    """``"w[3] · 8 px · conv0"``: how the page names styled layer ``i``."""
    name, res, _ = layers(model)[i]
    return f"w[{i}] · {res} px · {name.rsplit('.', 1)[-1]}"


def mixing_fits_bytes(model, mix: MixingGrid, *, row_seeds: Sequence[int] | None = None,
                      column_seeds: Sequence[int] | None = None, psi: float = 1.0, noise_mode: str = "const") -> bytes:
    """A mixing grid's images as a FITS flux cube (band models trained with the asinh stretch).

    The cube is (R + K + R*K, C, H, W) float32: the R row images, the K column images, then the
    cells row by row (cell (i, j) at ``R + K + i*K + j``), in the flux unit of the training data
    (``BUNIT``, e.g. nanomaggy for ``sim``) with the band names (``BAND1..n``), zero point and pixel
    scale of the checkpoint's card, and the mixed layers (``MIXLAYRS``) in the header.

    Raises
    ------
    ValueError
        The checkpoint's samples cannot be turned back into flux (display-image data or a
        non-invertible normalisation); the message says why.
    """
    from galaxy_core.explore.sampling import fits_skip_reason
    from galaxy_core.io.fits import write_fits_cube

    why = fits_skip_reason(model)
    if why is not None:
        raise ValueError(why)
    R, K = mix.grid.shape[:2]
    x = np.concatenate([mix.rows, mix.columns, mix.grid.reshape(R * K, *mix.grid.shape[2:])])
    flux = model.to_flux(x).astype(np.float32)
    data = model.meta.get("data") or {}
    cards = {
        "CKPT": model.name,
        "CKPTID": model.id,
        "ARCH": model.meta.get("arch"),
        "GENERATD": "synthetic image from a GAN, not an observation",
        "STRETCH": "asinh (inverted to flux)",
        "LAYOUT": f"{R} row images, {K} column images, then cell (i, j) at {R + K} + i*{K} + j",
        "MIXLAYRS": ",".join(str(i) for i in np.flatnonzero(mix.mask)),
        "PSI": float(psi),
        "NOISE": noise_mode,
    }
    if row_seeds is not None:
        cards["ROWSEEDS"] = ",".join(map(str, row_seeds))
    if column_seeds is not None:
        cards["COLSEEDS"] = ",".join(map(str, column_seeds))
    if data.get("zero_point") is not None:
        cards["ZP"] = data["zero_point"]
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "mix.fits"
        write_fits_cube(p, flux, bands=model.channels, header_cards=cards, bunit=model.flux_unit,
                        pixel_scale_arcsec=data.get("pixel_scale_arcsec"))
        return p.read_bytes()

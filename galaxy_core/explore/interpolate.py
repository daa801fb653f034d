"""Paths through latent space and their rendering as strips and animations.

Linear interpolation (``lerp``) walks the straight chord between two latents. For Gaussian
latents the chord's midpoint has a smaller norm than typical samples (about ``1/sqrt(2)`` of it
for independent endpoints), so images there can look washed out; spherical interpolation
(``slerp``, Shoemake 1985; recommended for GAN latents by White 2016, "Sampling Generative
Networks", arXiv:1609.04468) follows the great circle instead and keeps the norm for unit
vectors. Both take fractions ``t`` in [0, 1] and include the endpoints exactly.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

METHODS = ("slerp", "lerp")


def _fractions(t) -> np.ndarray:
    return np.atleast_1d(np.asarray(t, dtype=np.float64))


def lerp(z0, z1, t) -> np.ndarray:
    """Linear interpolation ``(1 - t) z0 + t z1``.

    Parameters
    ----------
    z0, z1 : array_like, (D,), float
        Endpoint latents.
    t : float or array_like, (T,)
        Fractions; 0 gives ``z0`` and 1 gives ``z1``.

    Returns
    -------
    ndarray, (T, D), float32
    """
    z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    t = _fractions(t)[:, None]
    return ((1.0 - t) * z0 + t * z1).astype(np.float32)


def slerp(z0, z1, t, *, eps: float = 1e-6) -> np.ndarray:
    """Spherical linear interpolation (Shoemake 1985) along the arc from ``z0`` to ``z1``.

    ``slerp = sin((1 - t) w) / sin(w) z0 + sin(t w) / sin(w) z1`` with ``w`` the angle between
    the two vectors. For unit vectors every point has unit norm; for vectors of different
    norms the norm varies smoothly between them. Nearly parallel endpoints (``sin w < eps``,
    same direction) fall back to :func:`lerp`, which is then the same path. Opposite endpoints
    have no single great circle between them; the path then follows a fixed one (through
    the coordinate axis least aligned with ``z0``) with the norm interpolated linearly, so it
    never passes through the origin as the chord would.

    Parameters
    ----------
    z0, z1 : array_like, (D,), float
        Endpoint latents (not necessarily unit length).
    t : float or array_like, (T,)
        Fractions in [0, 1].

    Returns
    -------
    ndarray, (T, D), float32
    """
    z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    n0, n1 = np.linalg.norm(z0), np.linalg.norm(z1)
    if n0 == 0 or n1 == 0:
        return lerp(z0, z1, t)
    cos_w = np.clip(np.dot(z0 / n0, z1 / n1), -1.0, 1.0)
    w = np.arccos(cos_w)
    sin_w = np.sin(w)
    if sin_w < eps and cos_w > 0:
        return lerp(z0, z1, t)
    if sin_w < eps:  # opposite: a fixed great circle through an axis orthogonalised against z0
        u = z0 / n0
        e = np.zeros_like(u)
        e[np.argmin(np.abs(u))] = 1.0
        v = e - np.dot(e, u) * u
        v /= np.linalg.norm(v)
        t = _fractions(t)[:, None]
        out = ((1.0 - t) * n0 + t * n1) * (np.cos(np.pi * t) * u + np.sin(np.pi * t) * v)
        out[t[:, 0] == 0] = z0
        out[t[:, 0] == 1] = z1
        return out.astype(np.float32)
    t = _fractions(t)[:, None]
    return (np.sin((1.0 - t) * w) / sin_w * z0 + np.sin(t * w) / sin_w * z1).astype(np.float32)


def interpolation_path(keys, frames: int, *, method: str = "slerp") -> np.ndarray:
    """Latents for ``frames`` evenly spaced points on a path through two or more key latents.

    The path visits the keys in order and every key is a frame, exactly: key i is frame
    ``round(i (frames - 1) / (K - 1))`` (:func:`key_frames`), so each segment between two
    keys gets ``(frames - 1) / (K - 1)`` steps, rounded, and its frames are evenly spaced
    along it. (Frames spread evenly over the key index would miss the middle keys whenever
    ``frames - 1`` is not a multiple of ``K - 1``.)

    Parameters
    ----------
    keys : array_like, (K, D), float
        Key latents, K >= 2.
    frames : int
        Number of frames, >= K (so every key can appear) and >= 2.
    method : {"slerp", "lerp"}

    Returns
    -------
    ndarray, (frames, D), float32
    """
    keys = np.asarray(keys, np.float64)
    if keys.ndim != 2 or len(keys) < 2:
        raise ValueError(f"need at least two key latents as a (K, D) array, got shape {keys.shape}")
    if method not in METHODS:
        raise ValueError(f"unknown interpolation {method!r}; use one of {', '.join(METHODS)}")
    if frames < max(2, len(keys)):
        raise ValueError(f"{frames} frames cannot show {len(keys)} key latents; use at least {len(keys)}")
    fn = slerp if method == "slerp" else lerp
    at = key_frames(len(keys), frames)
    out = np.empty((frames, keys.shape[1]), np.float32)
    for s in range(len(keys) - 1):  # frames at[s] .. at[s + 1] - 1 run from key s towards key s + 1
        steps = at[s + 1] - at[s]
        out[at[s] : at[s + 1]] = fn(keys[s], keys[s + 1], np.arange(steps) / steps)
    out[-1] = keys[-1]
    return out


def styles_path(keys_ws, frames: int) -> np.ndarray:
    """A StyleGAN path through per-layer styles: :func:`interpolation_path` with ``lerp``, layer by layer.

    w is not Gaussian (it is the mapping network's output), so the norm argument for ``slerp``
    does not hold there and paths in w are linear (Karras et al. 2019 measure perceptual path
    length in w with lerp, section 4.1).

    Parameters
    ----------
    keys_ws : array_like, (K, num_ws, w_dim), float
        Key styles (a mapped w repeated for every layer, or a w+ from a projection), K >= 2.
    frames : int

    Returns
    -------
    ndarray, (frames, num_ws, w_dim), float32
    """
    keys = np.asarray(keys_ws, np.float32)
    if keys.ndim != 3:
        raise ValueError(f"need key styles as a (K, num_ws, w_dim) array, got shape {keys.shape}")
    flat = interpolation_path(keys.reshape(len(keys), -1), frames, method="lerp")
    return flat.reshape(frames, *keys.shape[1:])


def key_frames(n_keys: int, frames: int) -> list[int]:
    """Indices of the frames of :func:`interpolation_path` that are exactly the keys:
    ``floor(i (frames - 1) / (n_keys - 1) + 1/2)`` for key i, strictly increasing when
    ``frames >= n_keys``. Raises ValueError for fewer than two keys or frames."""
    if n_keys < 2 or frames < 2:
        raise ValueError(f"a path needs at least two keys and two frames, got {n_keys} keys and {frames} frames")
    return [int(np.floor(i * (frames - 1) / (n_keys - 1) + 0.5)) for i in range(n_keys)]


def gif_bytes(frames_rgb: np.ndarray, *, fps: float = 8.0, scale: int = 1, boomerang: bool = True) -> bytes:
    """Encode frames as an endlessly looping GIF.

    Parameters
    ----------
    frames_rgb : ndarray, (T, H, W, 3), uint8
        The frames, e.g. from :func:`galaxy_core.io.render.to_rgb`.
    fps : float
        Frames per second (GIF timing is in 10 ms units, so it is rounded).
    scale : int
        Nearest-neighbour enlargement factor (small galaxies are easier to see enlarged).
    boomerang : bool
        Play forwards then backwards so the loop has no jump.

    Returns
    -------
    bytes
        The GIF file.
    """
    frames_rgb = np.asarray(frames_rgb)
    if frames_rgb.ndim != 4 or frames_rgb.shape[-1] != 3 or frames_rgb.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames_rgb.shape} {frames_rgb.dtype}")
    seq = list(frames_rgb)
    if boomerang and len(seq) > 2:
        seq = seq + seq[-2:0:-1]
    # One palette for the whole animation, found once from all frames stacked: consistent
    # colours from frame to frame, and far cheaper than quantising every frame on its own.
    palette = Image.fromarray(np.concatenate(list(frames_rgb), axis=0)).quantize(
        colors=256, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in seq]
    if scale > 1:
        images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(20, int(round(1000.0 / fps / 10.0)) * 10), disposal=1)
    return buf.getvalue()

"""Exact SSIM between every query image and every reference image, batched on torch.

The structural similarity of Wang et al. 2004 (IEEE TIP 13, 600), with the defaults of
``skimage.metrics.structural_similarity(a, b, data_range=R, channel_axis=0)``: a 7 x 7 uniform
window, ``K1 = 0.01``, ``K2 = 0.03``, sample covariances (``49 / 48``), the map averaged over the
positions whose window lies inside the image and over the channels. At every such position ``p``

``S(p) = (2 mu_x mu_y + C1) (2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (s_x^2 + s_y^2 + C2))``

with ``C1 = (K1 R)^2``, ``C2 = (K2 R)^2``.

What is done once per image and what once per pair
--------------------------------------------------
``mu``, ``s^2`` of each image (:func:`local_statistics`) depend on that image alone and are
computed once. Only the window mean of the product ``x y`` needs both images; it is a dot
product of the two 7 x 7 patches at ``p``, so for a block of ``q`` queries and ``m``
references it is one batched matrix product ``(C P, q, 49) @ (C P, 49, m)``. The patch of the
denominator is a rank-4 bilinear form in per-image terms (a second, small batched product); the
rest of ``S`` is a few in-place operations on ``(rows, q, m)`` blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from galaxy_core.progress import ProgressFn

__all__ = ["SSIM_K1", "SSIM_K2", "SSIM_WINDOW", "SSIMStatistics", "local_statistics", "ssim_matrix"]

SSIM_WINDOW = 7  # side of the uniform window, px (scikit-image's default)
SSIM_K1 = 0.01
SSIM_K2 = 0.03


@dataclass(frozen=True)
class SSIMStatistics:
    """Per-image quantities of the SSIM map, flattened over (channel, window position).

    Attributes
    ----------
    mean : torch.Tensor, (N, C * P), float32
        Window means ``mu``; ``P = (H - 6) (W - 6)`` positions.
    var : torch.Tensor, (N, C * P), float32
        Sample variances ``s^2`` in each window (divided by 48).
    patches : torch.Tensor, (C * P, 49, N), float32
        The 7 x 7 window of every position, for the cross term.
    """

    mean: torch.Tensor
    var: torch.Tensor
    patches: torch.Tensor


def _as_tensor(images) -> torch.Tensor:
    """``(N, C, H, W)`` float32 tensor; ``(N, H, W)`` gets a channel axis."""
    x = torch.as_tensor(np.asarray(images, np.float32))
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W) or (N, H, W), got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} px a side, got {tuple(x.shape[-2:])}")
    return x


def local_statistics(images) -> SSIMStatistics:
    """Window means, variances and patches of each image, computed once.

    Parameters
    ----------
    images : array_like, (N, C, H, W) or (N, H, W), float
        Images in any range (the same as the ``data_range`` later used); H, W >= 7.

    Returns
    -------
    SSIMStatistics
    """
    x = _as_tensor(images)
    n, c, h, w = x.shape
    k = SSIM_WINDOW
    mu = F.avg_pool2d(x, k, 1)  # (N, C, h', w'), windows inside the image only
    var = (F.avg_pool2d(x * x, k, 1) - mu * mu) * (k * k / (k * k - 1))
    hp, wp = h - k + 1, w - k + 1
    xt = x.permute(1, 2, 3, 0).contiguous()  # (C, H, W, N): images last, so a patch row is contiguous
    windows = xt.as_strided((c, hp, wp, k, k, n), (h * w * n, w * n, n, w * n, n, 1))
    patches = windows.reshape(c * hp * wp, k * k, n)  # the one copy: (C P, 49, N)
    return SSIMStatistics(mu.reshape(n, -1), var.reshape(n, -1), patches)


def _block_ssim(qs: SSIMStatistics, rs: SSIMStatistics, *, c1: float, c2: float, rows: int) -> torch.Tensor:
    """Mean SSIM ``(q, m)`` float64 of every query of ``qs`` with every reference of ``rs``."""
    k = SSIM_WINDOW**2 / (SSIM_WINDOW**2 - 1)  # sample-covariance factor 49/48
    q, m = qs.mean.shape[0], rs.mean.shape[0]
    cp = qs.mean.shape[1]
    a, b = qs.mean.T.contiguous(), rs.mean.T.contiguous()  # (CP, q), (CP, m)
    qp = qs.patches.transpose(1, 2).contiguous()  # (CP, q, 49)
    # denominator (mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2) = (l_x + l_y)(v_x + v_y): rank 4 in (x, y)
    lq, lr = a * a + c1 / 2, b * b + c1 / 2
    vq, vr = qs.var.T + c2 / 2, rs.var.T + c2 / 2
    dq = torch.stack([lq * vq, lq, vq, torch.ones_like(lq)], dim=2)  # (CP, q, 4)
    dr = torch.stack([torch.ones_like(lr), vr, lr, lr * vr], dim=1)  # (CP, 4, m)
    c1_t, const = torch.tensor(c1), torch.tensor(k * c1 + c2)
    total = torch.zeros(q, m, dtype=torch.float64)
    for s in range(0, cp, rows):
        sl = slice(s, s + rows)
        # 2 s_xy + C2 = 2k <xy> - 2k mu_x mu_y + C2 = 2k <xy> - k (2 mu_x mu_y + C1) + (k C1 + C2)
        lum = torch.addcmul(c1_t, a[sl, :, None], b[sl, None, :], value=2.0)  # (r, q, m): 2 mu_x mu_y + C1
        num = torch.baddbmm(const, qp[sl], rs.patches[sl], alpha=2 * k / SSIM_WINDOW**2)
        num.add_(lum, alpha=-k).mul_(lum)
        total += num.div_(torch.bmm(dq[sl], dr[sl])).sum(0)
    return total / cp


def ssim_matrix(
    queries,
    references,
    *,
    data_range: float = 2.0,
    chunk: int = 128,
    query_chunk: int = 64,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Mean SSIM of every query with every reference, exact (scikit-image's definition).

    Parameters
    ----------
    queries : array_like, (Q, C, H, W) or (Q, H, W), float
        Images, e.g. in the model range [-1, 1].
    references : array_like, (N, C, H, W) or (N, H, W), float
        Reference images of the same shape (a memory-mapped array is read ``chunk`` at a time).
    data_range : float
        ``max - min`` of the value range (2.0 for [-1, 1]); sets ``C1``, ``C2``.
    chunk : int
        References per block (memory ~ ``chunk * C * P * 200`` bytes for the patches).
    query_chunk : int
        Queries per block.
    progress : callable, optional
        ``progress(done, total)`` after each reference block, in references.

    Returns
    -------
    ndarray, (Q, N), float64
        SSIM in [-1, 1]; 1 for identical images. Agrees with
        ``structural_similarity(q, r, data_range=data_range, channel_axis=0)`` to float32
        round-off (below 1e-4; window sums of 49 values are accumulated in float32).

    Raises
    ------
    ValueError
        Images smaller than the 7 px window, or shapes that differ.
    """
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    qx = _as_tensor(queries)
    n = len(references)
    out = np.empty((len(qx), n))
    q_stats = [local_statistics(qx[i : i + query_chunk]) for i in range(0, len(qx), query_chunk)]
    for s in range(0, n, chunk):
        r = _as_tensor(references[s : s + chunk])
        if r.shape[1:] != qx.shape[1:]:
            raise ValueError(f"references are {tuple(r.shape[1:])}, queries {tuple(qx.shape[1:])}: shapes must match")
        rs = local_statistics(r)
        rows = max(1, 2**18 // max(1, query_chunk * len(r)))  # (rows, q, m) float32 blocks of ~1 MB, cache-sized
        for j, qs in enumerate(q_stats):
            q0 = j * query_chunk
            out[q0 : q0 + len(qs.mean), s : s + len(r)] = _block_ssim(qs, rs, c1=c1, c2=c2, rows=rows).numpy()
        if progress is not None:
            progress(min(s + chunk, n), n)
    return out

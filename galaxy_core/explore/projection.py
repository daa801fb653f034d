"""Projection of a real galaxy into a StyleGAN's latent space (w or w+).

After the projector of Karras et al. (2020), "Analyzing and Improving the Image Quality of
StyleGAN", section 5 and appendix D: start from the mean ``w_avg`` (here: from the best of
``w_avg`` and a few sampled w, which avoids poor local minima of one start), optimise w (one w for all
layers, or one per layer for ``w+``, Abdal et al. 2019 "Image2StyleGAN") and the per-layer noise
maps with Adam, adding decaying Gaussian noise to w early on (scaled by the spread of sampled
w), under a learning-rate ramp-up and cosine ramp-down; the noise maps are regularised towards
white noise (their autocorrelation at every scale of a pyramid is pushed to zero) and
re-normalised to zero mean and unit variance after each step.

The StyleGAN2 projector compares images with LPIPS (VGG features), which cannot be downloaded
here; instead the loss is a pixel term (mean squared error in model range) plus a feature term
from the project's shipped galaxy encoder
(:func:`galaxy_core.metrics.features.load_extractor` ``("galaxy")``): one minus the cosine
similarity of the encoder features of target and reconstruction. The encoder expects 3 channels,
so it is used only for models with 1 or 3 bands (otherwise the feature weight must be 0).

For models of flux data (an invertible stretch stored with the checkpoint) a third term can be
added: the reduced chi^2 of the residual in flux units, ``mean(((f_target - f_model) / sigma)^2)``
with ``sigma`` the per-band noise of the target (by default a robust estimate from its outer
pixels, :func:`noise_sigma`). It weighs faint outskirts by their signal-to-noise rather than by
their stretched brightness, and reads as the usual goodness of fit: about 1 when the residual is
pure noise.

The reconstruction is made with the optimised noise maps, so ``ws`` alone does not regenerate it
(the checkpoint's constant noise gives other fine texture): :func:`projection_npz` stores ``ws``,
the noise maps and the checkpoint id together and :func:`render_projection` renders them again,
exactly. The figures of the fit (:attr:`ProjectionResult.final`) are measured on the returned
reconstruction itself, not on the last optimisation step.

Targets (:func:`target_from_dataset`, :func:`target_from_file`) are checked against the model:
the kind of data, the number of bands, the band names and the pixel unit where the file names
them, and the share of pixels outside the model's value range (at most :data:`CLIP_LIMIT`); what
may still make a fit poor (another pixel scale, a small image enlarged) and what was done (a grey
image copied into R, G and B) comes back with the target as text to show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from galaxy_core.explore.style import generator_of, mapping

ProgressFn = Callable[[int, int, float], None]
BORDER_FRACTION = 0.125  # outer ring (1/8 of the side) used by noise_sigma
CLIP_LIMIT = 0.05  # a target with more of its pixels outside the model's range is refused
# a pixel beyond +-1 by no more than this (model range) counts as in range: a generated image's pixels
# clamped at -1 come back from a FITS file at -1.0002 (float16 storage, two stretches); 8 bits step 0.0078
CLIP_TOLERANCE = 0.005
PIXEL_SCALE_TOLERANCE = 0.02  # relative difference of pixel scales that is warned about
MIN_SIDE_FRACTION = 0.5  # a target enlarged from under this fraction of the model's side is warned about
NPZ_FORMAT = "galaxygan-projection/1"  # the `format` entry of a projection_npz file


@dataclass
class ProjectionResult:
    """What :func:`project` found.

    Attributes
    ----------
    latent : ndarray
        ``(w_dim,)`` for space ``w``, ``(num_ws, w_dim)`` for ``w+``; float32.
    ws : ndarray (num_ws, w_dim)
        The styles every layer gets (feed to :func:`galaxy_core.explore.style.synthesize`).
    noise : list of ndarray (1, 1, r, r)
        The optimised noise maps, one per convolution layer.
    reconstruction : ndarray (C, H, W) in [-1, 1]
    residual : ndarray (C, H, W)
        ``target - reconstruction`` (model range).
    losses : list of dict
        Per step: ``pixel``, ``feature``, ``chi2`` (NaN when not computed), ``noise_reg`` and
        ``total`` (the weighted pixel, feature and chi^2 terms, measured at the noisy w of that
        step, before its update and before clamping): the optimisation's trace, not the fit of
        the reconstruction.
    space : str
    chi2 : float or None
        Reduced chi^2 of ``residual`` in flux units (None without an invertible stretch):
        ``mean(((inverse(target) - inverse(reconstruction)) / sigma)^2)``.
    sigma : ndarray (C,) or None
        The per-band flux noise used for ``chi2`` (flux units).
    final : dict
        The terms of a ``losses`` record measured on ``reconstruction`` itself (final w without
        the optimisation's w noise, the returned noise maps, clamped): ``pixel`` is
        ``mean(residual**2)`` (float64), ``chi2`` equals :attr:`chi2` (NaN without one),
        ``feature``, ``noise_reg`` and the weighted ``total``. What to report as the fit.
    """

    latent: np.ndarray
    ws: np.ndarray
    noise: list[np.ndarray]
    reconstruction: np.ndarray
    residual: np.ndarray
    losses: list[dict] = field(default_factory=list)
    space: str = "w"
    chi2: float | None = None
    sigma: np.ndarray | None = None
    final: dict = field(default_factory=dict)

    @property
    def pixel_mse(self) -> float:
        """Mean squared ``residual`` (model range) of the returned reconstruction."""
        return float(self.final["pixel"])


def noise_regularisation(noise: list[torch.Tensor]) -> torch.Tensor:
    """Sum over maps and pyramid levels (down to 8 px) of squared autocorrelations at a shift of
    one pixel in x and y (StyleGAN2 appendix D)."""
    total = noise[0].new_zeros(())
    for n in noise:
        while True:
            total = total + (n * torch.roll(n, 1, dims=3)).mean().square() + (n * torch.roll(n, 1, dims=2)).mean().square()
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return total


def noise_sigma(flux, *, border: float = BORDER_FRACTION) -> np.ndarray:
    """Per-band noise of a galaxy stamp from its outer ring: 1.4826 x the median absolute
    deviation of the pixels within ``border`` x side of the edge (robust to a few sources there).

    Parameters
    ----------
    flux : array (C, H, W), float, flux units
    border : float
        Width of the ring as a fraction of the side (0 < border <= 0.5).

    Returns
    -------
    ndarray (C,) float64, flux units, > 0 (the band's overall std, or 1, where the ring is flat)
    """
    f = np.asarray(flux, np.float64)
    if f.ndim != 3:
        raise ValueError(f"flux must be (C, H, W), got shape {f.shape}")
    if not 0 < border <= 0.5:
        raise ValueError(f"border must be in (0, 0.5], got {border}")
    h, w = f.shape[1:]
    b = max(1, int(round(border * min(h, w))))
    ring = np.ones((h, w), bool)
    ring[b : h - b, b : w - b] = False
    out = []
    for band in f:
        px = band[ring]
        s = 1.4826 * float(np.median(np.abs(px - np.median(px))))
        out.append(s if s > 0 else (float(band.std()) or 1.0))
    return np.asarray(out)


def torch_inverse_stretch(stretch: dict | None):
    """Differentiable model range -> flux for a stored stretch, or None when it is not invertible.

    The torch counterpart of :meth:`galaxy_core.io.stretch.AsinhStretch.inverse` (same
    parameters, same formula ``f = s sinh((y + 1) / 2 (u_hi - u_lo) + u_lo)``), so gradients of a
    flux-space loss reach w. Takes and returns (N, C, H, W).
    """
    from galaxy_core.io.stretch import stretch_from_dict

    st = stretch_from_dict(stretch)
    if st is None:
        return None
    soft = np.asarray(st.softening, np.float64)
    s, ulo, uhi = (torch.as_tensor(a, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1) each
                   for a in (soft, np.arcsinh(np.asarray(st.lo) / soft), np.arcsinh(np.asarray(st.hi) / soft)))

    def inverse(y: torch.Tensor) -> torch.Tensor:
        s_, lo, hi = (a.to(y.device) for a in (s, ulo, uhi))
        return s_ * torch.sinh((y + 1.0) / 2.0 * (hi - lo) + lo)

    return inverse


def _feature_fn(extractor, num_bands: int):
    if extractor is None:
        return None
    if isinstance(extractor, str):
        from galaxy_core.metrics.features import load_extractor

        extractor = load_extractor(extractor)
    if num_bands not in (1, 3):
        raise ValueError(f"the {extractor.name} feature loss takes 1 or 3 bands, the model has {num_bands}; "
                         "use feature_weight=0")

    def features(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(extractor.forward(x.float()), dim=1)  # differentiable (no inference_mode)

    return features


def project(model, target, *, space: str = "w", steps: int = 300, lr: float = 0.1, pixel_weight: float = 1.0,
            feature_weight: float = 0.1, noise_reg_weight: float = 1e4, initial_noise: float = 0.05,
            noise_ramp: float = 0.75, lr_rampdown: float = 0.25, lr_rampup: float = 0.05,
            optimize_noise: bool = True, extractor="galaxy", w_avg_samples: int = 2000, init_candidates: int = 64,
            seed: int = 0, chi2_weight: float = 0.0, stretch: dict | None = None, sigma=None,
            progress: ProgressFn | None = None) -> ProjectionResult:
    """Find w (or w+) and noise maps whose image matches ``target``.

    Parameters
    ----------
    model : Pretrained or Generator
        A StyleGAN.
    target : array (C, H, W), float, in [-1, 1]
        A real galaxy in the model's range and bands (e.g. a dataset image, or an uploaded PNG/FITS
        brought to the model's stretch and size).
    space : {"w", "w+"}
    steps : int
        Adam steps.
    lr : float
        Peak learning rate (ramped up over ``lr_rampup`` and down over ``lr_rampdown`` of the steps).
    pixel_weight, feature_weight : float
        Weights of the mean squared pixel error and of the encoder-feature term.
    noise_reg_weight : float
        Weight of :func:`noise_regularisation` (1e5 in StyleGAN2; lower for small maps).
    initial_noise, noise_ramp : float
        Noise added to w, ``initial_noise * std(w) * max(0, 1 - t / noise_ramp)^2``.
    optimize_noise : bool
        Optimise the noise maps (else the checkpoint's constant noise is used).
    extractor : str, Extractor or None
        Features for the feature term (``"galaxy"`` = the shipped encoder; None = pixels only).
    w_avg_samples : int
        Latents mapped to estimate the spread of w.
    init_candidates : int
        Start from the best (lowest pixel + feature loss) of ``w_avg`` and this many sampled w,
        which avoids poor local minima of a single start; 0 starts from ``w_avg`` as StyleGAN2.
    seed : int
        Seeds the initial noise maps and the w noise.
    chi2_weight : float
        Weight of the reduced chi^2 of the residual in flux units (0 = off; it is still reported
        when the stretch is invertible). Needs an invertible stretch.
    stretch : dict, optional
        The stored stretch of the model's data (default: ``model.stretch`` of a checkpoint).
    sigma : array_like (C,), optional
        Per-band flux noise of the target (default: :func:`noise_sigma` of the target's flux).
    progress : callable, optional
        ``progress(step, steps, total_loss)`` after each step.

    Returns
    -------
    ProjectionResult

    Raises
    ------
    ValueError
        Wrong target shape, range or space; a chi^2 weight without an invertible stretch.
    """
    G = generator_of(model)
    dev = G.synthesis.const.device
    tgt = torch.as_tensor(np.asarray(target, np.float32))
    res, bands = G.cfg.resolution, G.cfg.num_bands
    if tgt.shape != (bands, res, res):
        raise ValueError(f"target must be ({bands}, {res}, {res}) like the model's images, got {tuple(tgt.shape)}")
    if not torch.isfinite(tgt).all() or tgt.min() < -1.001 or tgt.max() > 1.001:
        raise ValueError("target must be finite and in [-1, 1] (the model's range); stretch it first")
    if space not in ("w", "w+"):
        raise ValueError(f"space must be 'w' or 'w+', got {space!r}")
    tgt = tgt[None].to(dev)
    to_flux = torch_inverse_stretch(stretch if stretch is not None else getattr(model, "stretch", None))
    if chi2_weight > 0 and to_flux is None:
        raise ValueError("chi2_weight needs a model of flux data with an invertible stretch; use chi2_weight=0")
    if to_flux is not None:
        with torch.no_grad():
            tgt_flux = to_flux(tgt)
        sig = noise_sigma(tgt_flux[0].cpu().numpy()) if sigma is None else np.asarray(sigma, np.float64)
        if sig.shape != (bands,) or not np.all(sig > 0):
            raise ValueError(f"sigma must hold {bands} positive per-band noise values, got {sig}")
        inv_var = torch.as_tensor(1.0 / sig**2, dtype=torch.float32, device=dev).view(1, -1, 1, 1)

    def chi2_of(img: torch.Tensor) -> torch.Tensor:
        return ((to_flux(img) - tgt_flux).square() * inv_var).mean()

    from galaxy_core.models.family import latent_generator, standard_normal

    gen = latent_generator(seed, "projection")  # never the weights' own initialisation stream
    z = standard_normal(w_avg_samples, G.z_dim, generator=gen)
    w_samples = mapping(G, z.numpy())
    w_std = float(np.sqrt(((w_samples - w_samples.mean(0)) ** 2).sum(1).mean()))
    feat = _feature_fn(extractor, bands) if feature_weight > 0 else None
    tgt_feat = feat(tgt).detach() if feat is not None else None
    w0 = G.mapping.w_avg.detach().float().to(dev)
    if init_candidates > 0:
        cand = torch.cat([w0[None], torch.from_numpy(w_samples[:init_candidates]).to(dev)])
        with torch.no_grad():
            best, best_loss = w0, float("inf")
            for i in range(0, len(cand), 64):
                c = cand[i : i + 64]
                img = G.synthesis(c[:, None, :].expand(-1, G.num_ws, -1), noise_mode="const")
                loss = pixel_weight * (img - tgt).square().mean(dim=(1, 2, 3))
                if feat is not None:
                    loss = loss + feature_weight * (1 - (feat(img) * tgt_feat).sum(1))
                j = int(loss.argmin())
                if float(loss[j]) < best_loss:
                    best, best_loss = c[j], float(loss[j])
        w0 = best.clone()
    w_opt = (w0[None].repeat(G.num_ws, 1) if space == "w+" else w0.clone())[None].requires_grad_(True)
    noise = [G.synthesis.get_submodule(n).noise_const.detach().clone().to(dev) for n in G.synthesis.noise_layers]
    if optimize_noise:
        noise = [torch.randn(n.shape, generator=gen).to(dev).requires_grad_(True) for n in noise]
    params = [w_opt] + (noise if optimize_noise else [])
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    losses: list[dict] = []
    for step in range(steps):
        t = step / max(steps, 1)
        ramp = min(1.0, (1 - t) / lr_rampdown) if lr_rampdown > 0 else 1.0
        ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
        ramp = ramp * (min(1.0, t / lr_rampup) if lr_rampup > 0 else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr * ramp
        sigma = w_std * initial_noise * max(0.0, 1.0 - t / noise_ramp) ** 2
        w_noisy = w_opt + torch.randn(w_opt.shape, generator=gen).to(dev) * sigma
        ws = w_noisy if space == "w+" else w_noisy[:, None, :].expand(-1, G.num_ws, -1)
        img = G.synthesis(ws, noise=noise)
        pix = (img - tgt).square().mean()
        fl = (1 - (feat(img) * tgt_feat).sum(1)).mean() if feat is not None else img.new_zeros(())
        reg = noise_regularisation(noise) if optimize_noise else img.new_zeros(())
        if to_flux is None:
            c2 = img.new_full((), float("nan"))
        else:
            c2 = chi2_of(img if chi2_weight > 0 else img.detach())
        loss = pixel_weight * pix + feature_weight * fl + noise_reg_weight * reg
        if chi2_weight > 0:
            loss = loss + chi2_weight * c2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if optimize_noise:
            with torch.no_grad():
                for n in noise:
                    n.sub_(n.mean()).div_(n.square().mean().sqrt() + 1e-8)
        pix, fl, reg, c2 = float(pix.detach()), float(fl.detach()), float(reg.detach()), float(c2.detach())
        total = pixel_weight * pix + feature_weight * fl + (chi2_weight * c2 if chi2_weight > 0 else 0.0)
        rec = {"total": total, "pixel": pix, "feature": fl, "chi2": c2, "noise_reg": reg}
        losses.append(rec)
        if progress is not None:
            progress(step + 1, steps, rec["total"])
    with torch.no_grad():
        w_final = w_opt.detach()
        ws = w_final if space == "w+" else w_final[:, None, :].expand(-1, G.num_ws, -1)
        img = G.synthesis(ws, noise=noise).clamp(-1, 1)
        fl = float((1 - (feat(img) * tgt_feat).sum(1)).mean()) if feat is not None else 0.0
        reg = float(noise_regularisation(noise)) if optimize_noise else 0.0
    recon = img[0].float().cpu().numpy()
    target_np = tgt[0].float().cpu().numpy()
    residual = target_np - recon
    final = _final_terms(residual, target_np, recon, feature=fl, noise_reg=reg,
                         stretch=stretch if stretch is not None else getattr(model, "stretch", None),
                         sigma=None if to_flux is None else sig, weights=(pixel_weight, feature_weight, chi2_weight))
    return ProjectionResult(latent=w_final[0].float().cpu().numpy(), ws=ws[0].float().cpu().numpy(),
                            noise=[n.detach().float().cpu().numpy() for n in noise], reconstruction=recon,
                            residual=residual, losses=losses, space=space,
                            chi2=None if to_flux is None else final["chi2"], sigma=None if to_flux is None else sig,
                            final=final)


def _final_terms(residual: np.ndarray, target: np.ndarray, recon: np.ndarray, *, feature: float, noise_reg: float,
                 stretch: dict | None, sigma: np.ndarray | None, weights: tuple[float, float, float]) -> dict:
    """The loss terms of the returned reconstruction, from the returned arrays (float64)."""
    from galaxy_core.io.stretch import stretch_from_dict

    pixel_weight, feature_weight, chi2_weight = weights
    pixel = float(np.mean(np.square(residual, dtype=np.float64)))
    chi2 = float("nan")
    if sigma is not None:
        st = stretch_from_dict(stretch)
        chi2 = float(np.mean(((st.inverse(target) - st.inverse(recon)) / np.asarray(sigma).reshape(-1, 1, 1)) ** 2))
    total = pixel_weight * pixel + feature_weight * feature + (chi2_weight * chi2 if chi2_weight > 0 else 0.0)
    return {"total": total, "pixel": pixel, "feature": feature, "chi2": chi2, "noise_reg": noise_reg}


def reconstruction_loss(result: ProjectionResult) -> float:
    """Weighted pixel + feature (+ chi^2) loss of the returned reconstruction (what :func:`project`
    lowers, without the noise term), from :attr:`ProjectionResult.final`."""
    return float(result.final["total"]) if result.final else float("nan")


# ------------------------------------------------------------------------- saved projections


def projection_npz(result: ProjectionResult, *, model) -> bytes:
    """What regenerates a projection's reconstruction exactly, as ``.npz`` file contents.

    ``ws`` alone re-renders with the checkpoint's constant noise, which differs from the
    optimised noise maps the reconstruction was made with; this file holds both, with the
    checkpoint they belong to. Read it back with :func:`read_projection_npz`, render it with
    :func:`render_projection`.

    Parameters
    ----------
    result : ProjectionResult
    model : Pretrained or Generator
        The StyleGAN the projection was made with (its ``id`` and ``name`` are recorded; a bare
        generator has neither, and an empty id is then stored).

    Returns
    -------
    bytes
        An uncompressed ``.npz`` (no pickled objects) with the arrays ``ws`` float32
        ``(num_ws, w_dim)``, ``latent`` (``(w_dim,)`` for w, ``(num_ws, w_dim)`` for w+),
        ``noise_0 .. noise_{k-1}`` float32 ``(1, 1, r, r)`` (one per convolution layer, in the
        order of ``noise_layers``), ``noise_layers`` (their layer names), and the strings
        ``checkpoint_id``, ``checkpoint``, ``space`` and ``format`` (:data:`NPZ_FORMAT`).
    """
    import io

    G = generator_of(model)
    arrays = {"ws": np.asarray(result.ws, np.float32), "latent": np.asarray(result.latent, np.float32),
              "noise_layers": np.asarray(G.synthesis.noise_layers, dtype=str),
              "checkpoint_id": np.asarray(str(getattr(model, "id", "") or "")),
              "checkpoint": np.asarray(str(getattr(model, "name", "") or "")),
              "space": np.asarray(result.space), "format": np.asarray(NPZ_FORMAT)}
    arrays.update({f"noise_{i}": np.asarray(n, np.float32) for i, n in enumerate(result.noise)})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def read_projection_npz(source, *, name: str | None = None) -> dict:
    """Read a file written by :func:`projection_npz`.

    Parameters
    ----------
    source : bytes or path
    name : str, optional
        What to call the file in errors (default: the path, or ``projection.npz``).

    Returns
    -------
    dict
        ``ws`` float32 (num_ws, w_dim), ``latent``, ``noise`` (list of float32 (1, 1, r, r)),
        ``noise_layers`` (list of str), ``checkpoint_id``, ``checkpoint``, ``space`` (str).

    Raises
    ------
    DataError
        Not an ``.npz`` file, one with pickled objects, or one without the arrays listed above.
    """
    import io
    import zipfile

    from galaxy_core.errors import DataError

    if isinstance(source, (bytes, bytearray)):
        name, handle = name or "projection.npz", io.BytesIO(source)
    else:
        name, handle = name or str(source), source
    try:
        with np.load(handle, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{name}: not a projection file saved by the projection panel (an .npz of ws and noise "
                        f"maps): {e}") from e
    need = ["ws", "latent", "noise_layers", "checkpoint_id", "checkpoint", "space", "format"]
    missing = [k for k in need if k not in arrays]
    if missing or str(arrays["format"]) != NPZ_FORMAT:
        what = f"it lacks {', '.join(missing)}" if missing else f"its format is {str(arrays['format'])!r}"
        raise DataError(f"{name}: not a {NPZ_FORMAT} file ({what}); save the projection again with the "
                        "panel's ws + noise maps download")
    layers = [str(n) for n in arrays["noise_layers"]]
    absent = [f"noise_{i}" for i in range(len(layers)) if f"noise_{i}" not in arrays]
    if absent:
        raise DataError(f"{name}: names {len(layers)} noise maps but {', '.join(absent)} are missing; the file "
                        "is incomplete, save the projection again")
    return {"ws": arrays["ws"].astype(np.float32), "latent": arrays["latent"].astype(np.float32),
            "noise": [arrays[f"noise_{i}"].astype(np.float32) for i in range(len(layers))], "noise_layers": layers,
            "checkpoint_id": str(arrays["checkpoint_id"]), "checkpoint": str(arrays["checkpoint"]),
            "space": str(arrays["space"])}


def render_projection(model, saved, *, name: str | None = None) -> np.ndarray:
    """The reconstruction of a saved projection: its ``ws`` with its own noise maps.

    Parameters
    ----------
    model : Pretrained or Generator
        The checkpoint the projection was made with.
    saved : dict, bytes or path
        What :func:`read_projection_npz` returns, or a file for it to read.
    name : str, optional
        What to call the file in errors.

    Returns
    -------
    ndarray (C, H, W) float32 in [-1, 1]
        The same image as the projection's ``reconstruction`` (same device and software: to
        float precision).

    Raises
    ------
    DataError
        The file was made with another checkpoint (both ids named), or its ws or noise maps do
        not fit this generator.
    """
    from galaxy_core.errors import DataError

    if not isinstance(saved, dict):
        saved = read_projection_npz(saved, name=name)
    name = name or "the projection file"
    G = generator_of(model)
    mine = str(getattr(model, "id", "") or "")
    if saved["checkpoint_id"] and mine and saved["checkpoint_id"] != mine:
        raise DataError(f"{name}: made with checkpoint {saved['checkpoint'] or '?'} (id {saved['checkpoint_id']}), "
                        f"not {getattr(model, 'name', 'this one')} (id {mine}); open the checkpoint it was made with")
    if tuple(saved["ws"].shape) != (G.num_ws, G.w_dim) or saved["noise_layers"] != list(G.synthesis.noise_layers):
        raise DataError(f"{name}: ws {tuple(saved['ws'].shape)} and noise maps of layers {saved['noise_layers']} "
                        f"do not fit this generator (ws ({G.num_ws}, {G.w_dim}), layers "
                        f"{list(G.synthesis.noise_layers)})")
    dev = G.synthesis.const.device
    want = [tuple(G.synthesis.get_submodule(n).noise_const.shape) for n in G.synthesis.noise_layers]
    if [tuple(n.shape) for n in saved["noise"]] != want:
        raise DataError(f"{name}: noise maps of shapes {[tuple(n.shape) for n in saved['noise']]}, but this "
                        f"generator's are {want}")
    with torch.no_grad():
        img = G.synthesis(torch.from_numpy(saved["ws"])[None].to(dev),
                          noise=[torch.from_numpy(n).to(dev) for n in saved["noise"]]).clamp(-1, 1)
    return img[0].float().cpu().numpy()


# ---------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class ProjectionTarget:
    """A real galaxy ready for :func:`project`, and what a user should know about it.

    Attributes
    ----------
    image : ndarray (C, H, W) float32 in [-1, 1]
        In the model's bands, stretch and size; clipped to the model's range.
    clipped : float
        Fraction of the pixels that were outside [-1, 1] by more than :data:`CLIP_TOLERANCE` before
        clipping (at most :data:`CLIP_LIMIT`).
    label : str
        The image's name: its file (``file#i`` for image i of a multi-image FITS cube) or
        ``dataset #index``.
    notes : tuple of str
        What was done to the image beyond the usual preparation (a grey image copied into R, G, B).
    warnings : tuple of str
        What may make the fit poor though the image is usable (another pixel scale than the
        model's training data, a small image enlarged).
    names : tuple of str
        For :func:`target_from_file`: the names of the file's usable images (``index`` counts
        them); empty for a dataset stamp.
    """

    image: np.ndarray
    clipped: float
    label: str
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    names: tuple[str, ...] = ()


def target_from_dataset(data, index: int, *, model) -> ProjectionTarget:
    """One stamp of a prepared dataset as a projection target in ``model``'s range.

    Parameters
    ----------
    data : PreparedDataset
        Same kind of data (flux or 8-bit), bands and resolution as the model (its training data,
        say). A grey 8-bit dataset serves a model of R, G, B images: the grey values are copied
        into the three channels (a note says so).
    index : int
        Stamp number, 0 <= index < len(data).
    model : Pretrained
        The StyleGAN checkpoint (its ``name``, ``stretch``, ``channels``, ``resolution``,
        ``physical``, ``flux_unit`` and ``pixel_scale_arcsec``).

    Returns
    -------
    ProjectionTarget
        The stamp expressed in the model's stretch (a no-op for its own training data) and
        clipped, with warnings when its pixel scale (arcsec/pixel after the crop and resize)
        differs from the model's training data by more than :data:`PIXEL_SCALE_TOLERANCE`, or
        when it was enlarged from under :data:`MIN_SIDE_FRACTION` of the model's side.

    Raises
    ------
    DataError
        Naming the image: another kind of data or size than the model's; another number of
        bands; band names that differ from the model's where both name them; a pixel unit
        (``BUNIT``) that differs from the model's where both record one
        (:func:`galaxy_core.explore.evaluation.bands_and_unit_problem`); more than
        :data:`CLIP_LIMIT` of its pixels outside the model's value range.
    IndexError
        ``index`` out of range.
    """
    from galaxy_core.errors import DataError
    from galaxy_core.explore.evaluation import bands_and_unit_problem, restretch

    if not 0 <= index < len(data):
        raise IndexError(f"{data.name} has {len(data)} images; stamp {index} does not exist")
    label = _image_label(data, index)
    if data.resolution != model.resolution:
        raise DataError(f"{label}: prepared at {data.resolution} px, but {model.name} makes {model.resolution} px "
                        "images; prepare it at the model's resolution")
    if data.physical != model.physical:
        want = "a FITS stamp in flux units" if model.physical else "a PNG or JPG image"
        raise DataError(f"{label}: {'flux' if data.physical else '8-bit'} data, but {model.name} was trained on "
                        f"{'flux' if model.physical else '8-bit'} data; give {want}")
    x = data.to_model_range(np.array([index]))  # (1, C, H, W)
    channels, notes = list(data.channels), []
    if not data.physical and channels == ["L"] and len(model.channels) == 3:
        x, channels = np.repeat(x, 3, axis=1), list(model.channels)
        notes.append(f"{label} is a grey (one-channel) image; its values were copied into "
                     f"{', '.join(model.channels)} for {model.name}, which makes colour images, so the fit "
                     "cannot use colour and the reconstruction's colour is the model's guess.")
    if len(channels) != len(model.channels):
        raise DataError(f"{label}: {len(channels)}-band images ({', '.join(channels)}), but {model.name} makes "
                        f"{len(model.channels)}-band images ({', '.join(model.channels)}); give a stamp with the "
                        "model's bands")
    problem = bands_and_unit_problem(channels, data.manifest.get("flux_unit"), of=model.name,
                                     like_channels=model.channels, like_unit=model.flux_unit)
    if problem:
        raise DataError(f"{label}: {problem}; give a stamp in the model's bands and unit")
    x = restretch(x, source=data.stretch, target=model.stretch)[0]
    low, high = float(np.mean(x < -1.0 - CLIP_TOLERANCE)), float(np.mean(x > 1.0 + CLIP_TOLERANCE))
    clipped = low + high
    if clipped > CLIP_LIMIT:
        unit = model.flux_unit
        raise DataError(f"{label}: {clipped:.1%} of its pixels lie outside {model.name}'s value range "
                        f"({low:.1%} fainter than its faintest and {high:.1%} brighter than its brightest training "
                        f"values), more than the {CLIP_LIMIT:.0%} a fit can ignore; the stamp is not like the "
                        f"model's data. Check that it is a sky-subtracted galaxy stamp"
                        + (f" in {unit} (the model's unit)" if unit else "") + ", or choose another stamp")
    warnings = _scale_warnings(data, index, label=label, model=model)
    return ProjectionTarget(np.clip(x, -1.0, 1.0).astype(np.float32), clipped, label, tuple(notes), tuple(warnings))


def _image_label(data, index: int) -> str:
    """An image's name in messages: its source file from the catalogue, else ``dataset #index``."""
    cat = data.catalog
    if cat is not None and "file" in cat.colnames:
        return str(cat["file"][index])
    return f"{data.name} #{index}"


def _scale_warnings(data, index: int, *, label: str, model) -> list[str]:
    """Warnings on the angular scale and size of a target (see :func:`target_from_dataset`)."""
    out = []
    res = model.resolution
    cat = data.catalog
    ratio = float(cat["source_pixels_per_pixel"][index]) if cat is not None and \
        "source_pixels_per_pixel" in cat.colnames else None
    side = None if ratio is None else math.sqrt(ratio) * res  # source pixels across, after the crop
    scale, trained = data.manifest.get("pixel_scale_arcsec"), model.pixel_scale_arcsec
    if scale and trained and abs(scale / trained - 1) > PIXEL_SCALE_TOLERANCE:
        card = "" if side is None or round(side) == res else \
            f" ({scale * res / side:.3g} arcsec in its header, resized from {side:.0f} to {res} px)"
        out.append(f"{label}: pixels of {scale:.3g} arcsec as prepared{card}, but {model.name} was trained on "
                   f"{trained:.3g} arcsec pixels, so a galaxy appears {trained / scale:.2g} times the size it would "
                   "have in its training data; the fit may be poorer for it.")
    if side is not None and side < MIN_SIDE_FRACTION * res:
        out.append(f"{label}: {side:.0f} px across (after the centre crop), enlarged {res / side:.1f} times to "
                   f"{model.name}'s {res} px; an image under half the model's size holds too little detail "
                   "for its fine layers, so the fit of fine structure means little.")
    return out


def target_from_file(path, *, model, crop: float = 1.0, index: int = 0) -> ProjectionTarget:
    """Image ``index`` of a file (PNG, JPG, TIFF or FITS) or folder as a projection target.

    The file is prepared like any user data (:func:`galaxy_core.data.load_dataset`: centre
    crop, resize to the model's resolution, its own stretch for flux data), then checked and
    brought to the model's stretch by :func:`target_from_dataset`. A FITS file of several images
    (an ``(N, C, H, W)`` cube such as ``samples.fits``) gives its usable images in file order; a
    blank one is left out, so ``index`` counts the usable images. A grey PNG/JPG/TIFF (8 or 16
    bits) serves a model of R, G, B images, copied into the three channels.

    Returns
    -------
    ProjectionTarget
        As :func:`target_from_dataset` gives it, with ``names``: the names of the usable images
        (``file`` or ``file#i``, ``i`` the image's place in the file), ``index`` into them.

    Raises
    ------
    DataError
        Unreadable file, ``index`` out of range, or a file :func:`target_from_dataset` refuses
        (another kind of data, other bands by number or name, another pixel unit, out of the
        model's value range).
    """
    import dataclasses

    from galaxy_core.data import load_dataset
    from galaxy_core.errors import DataError

    data = load_dataset(path, resolution=model.resolution, crop=crop, progress=False)
    if not 0 <= index < len(data):
        raise DataError(f"{path}: holds {len(data)} usable image(s); image {index} is out of range")
    cat = data.catalog
    names = [str(n) for n in cat["file"]] if cat is not None and "file" in cat.colnames else \
        [f"{data.name} #{i}" for i in range(len(data))]
    return dataclasses.replace(target_from_dataset(data, index, model=model), names=tuple(names))

"""Principal directions of a generator's latent space, for walking along them.

Three ways to find directions:

* :func:`latent_pca`: PCA over sampled latents ``z``. For an isotropic Gaussian prior the
  components are close to arbitrary orthonormal axes with nearly equal variance; they are a
  neutral, reproducible basis for a grid walk.
* :func:`activation_pca`: PCA over an intermediate layer's activations for sampled latents,
  transferred back to ``z`` by linear regression (the GANSpace recipe of Härkönen et al. 2020,
  NeurIPS, "GANSpace: Discovering Interpretable GAN Controls", for generators without a
  mapping network). These directions follow what the generator actually varies most (size,
  brightness, orientation), ordered by the variance they explain in that layer.

* :func:`w_pca`: for a StyleGAN, PCA of the intermediate latents ``w = mapping(z)`` (GANSpace's
  recipe for StyleGAN, Härkönen et al. 2020, section 2: "the principal components of w"). The
  mapping network makes w far from isotropic, so its leading components carry most of its
  variance and often one visible property each. :func:`edit_ws` applies them to chosen styled
  layers only (a range from :data:`galaxy_core.explore.style.LAYER_RANGES` or an explicit
  per-layer mask), as the paper does to separate, say, orientation (coarse layers) from colour
  (fine layers); :func:`edit_grid` lays out a walk.

All return :class:`Directions`; :func:`walk` moves a latent along them in units of each
direction's standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Directions:
    """Unit-length latent directions with their spread.

    Attributes
    ----------
    vectors : ndarray, (k, z_dim), float32
        Unit-norm directions in latent space, most important first.
    std : ndarray, (k,), float32
        Standard deviation of the sampled latents projected on each direction (so a step of
        ``1`` in :func:`walk` is one typical deviation).
    explained : ndarray, (k,), float32
        Fraction of the variance (of ``z`` or of the layer's activations) each component explains.
    source : str
        ``"z"``, ``"layer <name>"`` or ``"w"`` (:func:`w_pca`: vectors live in w, not z).
    """

    vectors: np.ndarray
    std: np.ndarray
    explained: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.vectors)


def _pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k principal axes of the rows of ``x``: (axes (k, F), coords (N, k), explained (k,)).

    Few features: exact eigen-decomposition of the (F, F) covariance. Many features: randomised
    SVD (Halko, Martinsson & Tropp 2011, via :func:`torch.svd_lowrank`) with a fixed seed, which
    finds the leading axes at a fraction of the cost of a full SVD. Each axis's sign is fixed so
    its largest entry is positive, so results are reproducible.
    """
    xc = x - x.mean(axis=0, keepdims=True)
    total = float((xc**2).sum())
    k = min(k, *xc.shape)
    if xc.shape[1] <= 512:
        w, v = np.linalg.eigh(xc.T @ xc)  # ascending eigenvalues
        axes, var = v[:, ::-1][:, :k].T, w[::-1][:k]
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _, s, v = torch.svd_lowrank(torch.from_numpy(xc), q=min(k + 10, *xc.shape), niter=4)
        axes, var = v[:, :k].T.numpy(), (s[:k] ** 2).numpy()
    signs = np.sign(axes[np.arange(k), np.abs(axes).argmax(axis=1)])
    axes = axes * signs[:, None]
    return axes, xc @ axes.T, (var / max(total, 1e-300)).astype(np.float32)


def latent_pca(z: np.ndarray, *, k: int = 8) -> Directions:
    """PCA directions over sampled latents.

    Parameters
    ----------
    z : ndarray, (N, z_dim), float
        Sampled latents, N > 1.
    k : int
        Number of directions (at most ``min(N, z_dim)``).

    Returns
    -------
    Directions
        Orthonormal ``vectors``.
    """
    z = np.asarray(z, np.float64)
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"need (N, z_dim) latents with N > 1, got shape {z.shape}")
    axes, coords, explained = _pca(z, k)
    return Directions(axes.astype(np.float32), coords.std(axis=0).astype(np.float32), explained, "z")


_CONTAINERS = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)
_ACTIVATIONS = (torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.SiLU, torch.nn.GELU, torch.nn.PReLU, torch.nn.ELU,
                torch.nn.SELU, torch.nn.CELU, torch.nn.GLU, torch.nn.Mish)


def layer_names(G: torch.nn.Module) -> list[str]:
    """Names of the generator's modules whose outputs :func:`activation_pca` can read, in the
    order they are declared (a block before its parts): every leaf module and every block of
    its own (a module with children that is not a plain container), since a block may apply
    its activation as a function (FastGAN's up-sampling blocks end in ``F.glu``) so that no
    leaf holds its output."""
    return [name for name, m in G.named_modules()
            if name and (not list(m.children()) or not isinstance(m, _CONTAINERS))]


class _Captured(Exception):
    """Raised by the forward hook to skip the layers after the one being read."""


def default_layer(G: torch.nn.Module) -> str:
    """The first activation (the output of the first block), a good GANSpace layer: the first
    activation module (ReLU, ELU, GLU, ...), else the first block of the generator's own (for a
    generator that applies its activations as functions inside blocks), else the first leaf.
    The layers before it are linear in ``z``, so their principal directions are those of ``z``."""
    names = [name for name, m in G.named_modules() if isinstance(m, _ACTIVATIONS)]
    if names:
        return names[0]
    blocks = [name for name, m in G.named_modules() if name and list(m.children()) and not isinstance(m, _CONTAINERS)]
    return blocks[0] if blocks else layer_names(G)[0]


@torch.no_grad()
def layer_activations(G: torch.nn.Module, z: np.ndarray, *, layer: str, batch: int = 500,
                      label: int | None = None) -> np.ndarray:
    """Flattened output of module ``layer`` of ``G`` for latents ``z``: (N, F) float32.

    The output is captured with a forward hook (a copy, so in-place operations later cannot
    alter it), and the forward pass is cut short after that layer, so early layers are cheap.
    ``label``: the class label of every latent, for a conditional generator (called as
    ``G(z, labels)``); without it a conditional generator would pick labels by position in
    the batch, which the activations would then vary with.
    """
    modules = dict(G.named_modules())
    if layer not in modules:
        raise ValueError(f"generator has no layer {layer!r}; known: {', '.join(layer_names(G))}")
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, out):
        captured.append(out.detach().flatten(1).clone())
        raise _Captured

    handle = modules[layer].register_forward_hook(hook)
    try:
        device = next(G.parameters()).device
        zt = torch.as_tensor(np.asarray(z, np.float32))
        for i in range(0, len(zt), batch):
            zb = zt[i : i + batch].to(device)
            try:
                if label is None:
                    G(zb)
                else:
                    G(zb, torch.full((len(zb),), int(label), dtype=torch.int64, device=device))
            except _Captured:
                pass
    finally:
        handle.remove()
    return torch.cat(captured).float().cpu().numpy()


def activation_pca(G: torch.nn.Module, z: np.ndarray, *, layer: str, k: int = 8,
                   label: int | None = None) -> Directions:
    """GANSpace directions: PCA of a layer's activations, regressed back onto ``z``.

    With ``X`` the (N, k) principal coordinates of the activations of latents ``Z`` (N, z_dim),
    the latent directions are the rows of ``U = argmin ||X U - (Z - mean Z)||``, normalised to
    unit length (Härkönen et al. 2020, section 2). They are not exactly orthogonal.

    Parameters
    ----------
    G : torch.nn.Module
        The generator, in eval mode.
    z : ndarray, (N, z_dim), float
        Sampled latents; N should be well above the number of activation features that matter
        (a few thousand for a 64 px DCGAN's first layer).
    layer : str
        A name from :func:`layer_names`, e.g. ``"main.2"`` (after the first block of a DCGAN).
    k : int
        Number of directions.
    label : int, optional
        Class label held for every latent (conditional generators; see
        :func:`layer_activations`). The directions are then those of that class.
    """
    z = np.asarray(z, np.float64)
    acts = layer_activations(G, z, layer=layer, label=label).astype(np.float64)
    _, coords, explained = _pca(acts, k)
    zc = z - z.mean(axis=0, keepdims=True)
    u, *_ = np.linalg.lstsq(coords, zc, rcond=None)  # (k, z_dim)
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    std = (zc @ u.T).std(axis=0)
    return Directions(u.astype(np.float32), std.astype(np.float32), explained, f"layer {layer}")


def walk(z0, directions: Directions, coeffs) -> np.ndarray:
    """Move latents along directions: ``z0 + sum_i c_i std_i u_i``.

    Parameters
    ----------
    z0 : array_like, (z_dim,)
        Start latent.
    directions : Directions
    coeffs : array_like, (k,) or (M, k)
        Steps in standard deviations along each direction (missing trailing ones are 0).

    Returns
    -------
    ndarray, (z_dim,) or (M, z_dim), float32
    """
    c = np.asarray(coeffs, np.float64)
    single = c.ndim == 1
    c = np.atleast_2d(c)
    k = min(c.shape[1], len(directions))
    step = (c[:, :k] * directions.std[:k]) @ directions.vectors[:k]
    out = (np.asarray(z0, np.float64)[None] + step).astype(np.float32)
    return out[0] if single else out


def walk_grid(z0, directions: Directions, *, components: list[int], span: float = 3.0, steps: int = 7,
              base_coeffs=None) -> np.ndarray:
    """Latents for a grid: one row per component, ``steps`` columns from ``-span`` to ``+span``.

    Returns
    -------
    ndarray, (len(components) * steps, z_dim), float32
        Row-major: all columns of the first component, then the next.
    """
    base = np.zeros(len(directions)) if base_coeffs is None else np.asarray(base_coeffs, np.float64).copy()
    offsets = np.linspace(-span, span, steps)
    coeffs = []
    for comp in components:
        for off in offsets:
            c = base.copy()
            c[comp] += off
            coeffs.append(c)
    return walk(z0, directions, np.array(coeffs))


# ------------------------------------------------------------------------ GANSpace in StyleGAN w


W_PCA_SAMPLES = 10_000  # GANSpace samples 10^6 w for StyleGAN2 at 512-d; w here is 128-d or less


def w_pca(model, *, n: int = W_PCA_SAMPLES, k: int = 8, seed: int = 0) -> Directions:
    """GANSpace directions of a StyleGAN: principal components of w over sampled z.

    ``n`` latents ``z ~ N(0, I)`` are mapped to ``w`` (no truncation) and the top ``k`` principal
    axes of the w cloud are returned, most variance first (Härkönen et al. 2020, "GANSpace:
    Discovering Interpretable GAN Controls", NeurIPS, section 2). Unlike the z-space directions
    of :func:`activation_pca` they need no regression: w is where the styles are read from.

    Parameters
    ----------
    model : Pretrained or galaxy_core.models.stylegan.Generator
        A StyleGAN checkpoint (anything :func:`galaxy_core.explore.style.generator_of` accepts).
    n : int
        Sampled latents (> k); 10,000 takes well under a second for a 128-d mapping on a CPU.
    k : int
        Number of components, at most ``w_dim``.
    seed : int
        Seed of the sampled z (so the directions of a checkpoint are reproducible).

    Returns
    -------
    Directions
        Orthonormal ``vectors`` (k, w_dim) float32; ``std`` the spread of w along each (w units);
        ``explained`` the fraction of the total variance of w, non-increasing; ``source`` ``"w"``.

    Raises
    ------
    CheckpointError
        The model is not a StyleGAN.
    ValueError
        ``n`` or ``k`` out of range.
    """
    from galaxy_core.explore.style import generator_of, mapping
    from galaxy_core.models.family import latent_generator, standard_normal

    G = generator_of(model)
    if not 1 <= k <= G.w_dim or n <= k:
        raise ValueError(f"need 1 <= k <= w_dim ({G.w_dim}) and n > k, got k={k}, n={n}")
    z = standard_normal(n, G.z_dim, generator=latent_generator(seed, "directions"))
    w = np.concatenate([mapping(G, z[i : i + 4096].numpy()) for i in range(0, n, 4096)]).astype(np.float64)
    axes, coords, explained = _pca(w, k)
    return Directions(axes.astype(np.float32), coords.std(axis=0).astype(np.float32), explained, "w")


def w_step(directions: Directions, coeffs) -> np.ndarray:
    """The w offset ``sum_i c_i std_i u_i`` for coefficients (k,) or (M, k): (w_dim,) or (M, w_dim) float64."""
    c = np.asarray(coeffs, np.float64)
    k = min(c.shape[-1], len(directions))
    return (c[..., :k] * directions.std[:k]) @ directions.vectors[:k].astype(np.float64)


def edit_ws(ws, directions: Directions, coeffs, *, mask) -> np.ndarray:
    """Move the styles of the masked layers along w directions; the others are left untouched.

    ``ws'[l] = ws[l] + sum_i c_i std_i u_i`` for every layer ``l`` with ``mask[l]``, and
    ``ws'[l] = ws[l]`` (bit for bit) elsewhere.

    Parameters
    ----------
    ws : array_like, (num_ws, w_dim) or (n, num_ws, w_dim), float
        Per-layer styles (e.g. :func:`galaxy_core.explore.style.w_plus` of a mapped w, or a
        projection's ``ws``).
    directions : Directions
        From :func:`w_pca` (``source == "w"``).
    coeffs : array_like, (k,) or (n, k)
        Strength along each direction in standard deviations of w along it (missing trailing
        ones are 0); one row per ws when 2-d.
    mask : array_like of bool, (num_ws,)
        Layers to edit (:func:`galaxy_core.explore.style.layer_mask`).

    Returns
    -------
    ndarray, same shape as ``ws``, float32

    Raises
    ------
    ValueError
        Directions not in w, or a mask that does not fit ``ws``.
    """
    if directions.source != "w":
        raise ValueError(f"edit_ws needs directions in w (from w_pca), got {directions.source!r}")
    out = np.array(ws, dtype=np.float32, copy=True)
    mask = np.asarray(mask, bool)
    if out.ndim not in (2, 3) or mask.shape != (out.shape[-2],):
        raise ValueError(f"mask of shape {mask.shape} does not fit ws of shape {out.shape} (num_ws, w_dim)")
    step = w_step(directions, coeffs)  # (w_dim,) or (n, w_dim)
    if out.ndim == 3 and step.ndim == 2:
        step = step[:, None, :]
    out[..., mask, :] = (out[..., mask, :].astype(np.float64) + step).astype(np.float32)
    return out


def edit_grid(ws, directions: Directions, *, mask, components: list[int], span: float = 3.0, steps: int = 7,
              base_coeffs=None) -> np.ndarray:
    """Styles for a walk grid: one row per component, ``steps`` columns from ``-span`` to ``+span``
    (in std of w) around ``base_coeffs``, applied to the masked layers of one ``ws`` (num_ws, w_dim).

    Returns
    -------
    ndarray, (len(components) * steps, num_ws, w_dim), float32
        Row-major, like :func:`walk_grid`.
    """
    base = np.zeros(len(directions)) if base_coeffs is None else np.asarray(base_coeffs, np.float64)
    coeffs = []
    for comp in components:
        for off in np.linspace(-span, span, steps):
            c = base.copy()
            c[comp] += off
            coeffs.append(c)
    ws = np.asarray(ws, np.float32)
    return edit_ws(np.broadcast_to(ws, (len(coeffs), *ws.shape)), directions, np.array(coeffs), mask=mask)

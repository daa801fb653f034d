"""Chained StackGAN 128 px against its stage I at 64 px and against stage I upsampled x2.

Usage::

    python scripts/stackgan_compare.py [checkpoints/stackgan_sim128.json] [--n 256] [--stage1-input MODE]

Prints the live-evaluation FID/KID (shipped galaxy encoder, ``n`` samples of latent seed 2024,
the protocol of :func:`galaxy_core.train.live.make_live_evaluator`) of

* stage I alone at its own side against the data at that side,
* stage I upsampled x2 (bilinear, and nearest) against the data at the chain's side,
* the chain with stage II as trained (EMA weights with the copied batch-norm statistics),
* the chain with stage II's batch-norm statistics re-estimated on stage-I output (the default),

the super-resolution error of stage II on real inputs (the last ``n`` stamps; input = 2x2
mean of the real high-resolution image) for both statistics and for plain upsampling, and, for
flux data, the median over ``n`` chained galaxies (latents ``chain.latents(2024, n)``) of the
128 px image's total flux, peak surface brightness and sky surface-brightness rms over those of
its own stage-I image, per band (:func:`surface`).

``--stage1-input`` chains stage I as ``restretch`` or ``as_is`` instead of the card's
``model.stage1_input`` (how stage-I images enter stage II, see :mod:`galaxy_core.models.stackgan`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from galaxy_core.data import load_dataset
from galaxy_core.models.pretrained import load_pretrained
from galaxy_core.models.stackgan import stage1_encoder
from galaxy_core.train.live import make_live_evaluator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", nargs="?", default="checkpoints/stackgan_sim128.json")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--stage1-input", choices=["restretch", "as_is"], help="instead of the card's model.stage1_input")
    args = ap.parse_args()
    torch.set_num_threads(1)
    chain = load_pretrained(args.checkpoint)
    s1 = chain.refs["stage1"]
    dev = torch.device("cpu")
    G = chain.nets["G"]
    if args.stage1_input:
        G.cfg = chain.model_cfg = dataclasses.replace(G.cfg, stage1_input=args.stage1_input)
    G_copied = copy.deepcopy(G).eval()  # statistics as stored in the checkpoint
    encode = stage1_encoder(s1, G)  # stage-I images in the encoding of stage II's inputs (model.stage1_input)
    name = chain.meta["data"]["name"]
    hi = load_dataset(name, resolution=chain.resolution, count=10000, seed=0, progress=False)
    lo = load_dataset(name, resolution=chain.resolution // 2, count=10000, seed=0, progress=False)
    ev_hi = make_live_evaluator(hi, n_samples=args.n, device=dev)
    ev_lo = make_live_evaluator(lo, n_samples=args.n, device=dev)

    def stage1(z):
        x = s1.family.generate(s1.nets, z, refs=s1.refs)
        return list(x.values())[-1] if isinstance(x, dict) else x

    def sz(n, g):
        return s1.family.sample_latents(s1.model_cfg, n, generator=g)

    rows = {
        f"stage I alone at {chain.resolution // 2} px": ev_lo(stage1, sz),
        "stage I, bilinear x2": ev_hi(lambda z: F.interpolate(stage1(z), scale_factor=2, mode="bilinear",
                                                               align_corners=False).clamp(-1, 1), sz),
        "stage I, nearest x2": ev_hi(lambda z: F.interpolate(stage1(z), scale_factor=2, mode="nearest"), sz),
        "chain, stage II with copied statistics": ev_hi(lambda z: G_copied(encode(stage1(z))), sz),
        "chain, stage II re-estimated statistics": ev_hi(
            lambda z: chain.family.generate(chain.nets, z, refs=chain.refs)["stage2"], sz),
    }
    for k, v in rows.items():
        print(f"{k:45s} " + "  ".join(f"{m} {x:.1f}" for m, x in v.items()))
    # super-resolution of real inputs
    real = torch.as_tensor(hi.to_model_range(slice(len(hi) - args.n, len(hi)))).float()
    low = F.avg_pool2d(real, 2)
    with torch.no_grad():
        chain.family.generate(chain.nets, s1.latents(0, 2), refs=chain.refs)  # calibrate
        outs = {"stage II, copied statistics": G_copied(low), "stage II, re-estimated statistics": G(low),
                "bilinear x2": F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False),
                "nearest x2": F.interpolate(low, scale_factor=2, mode="nearest")}
    for k, x in outs.items():
        rmse = float(((x - real) ** 2).mean().sqrt())
        bs = float(((x.sum(1) - real.sum(1)) ** 2).mean())
        print(f"SR {k:40s} RMSE {rmse:.3f}  band-sum MSE {bs:.4f}")
    if chain.physical and s1.physical:  # what the chain keeps of its stage-I images, in flux
        out = chain.generate_stages(chain.latents(2024, args.n))
        f1, f2 = s1.to_flux(out["stage1"]), chain.to_flux(out["stage2"])  # (n, C, R/2, R/2), (n, C, R, R)
        for what, ratio in (("total flux", f2.sum((2, 3)) / f1.sum((2, 3))),
                            ("peak surface brightness", surface(f2, "peak") / surface(f1, "peak")),
                            ("sky surface-brightness rms", surface(f2, "sky_rms") / surface(f1, "sky_rms"))):
            print(f"chained image / its stage-I image, {what}, median: "
                  + " / ".join(f"{b} {float(r):.2f}" for b, r in zip(chain.channels, np.median(ratio, 0))))


def surface(flux: np.ndarray, what: str) -> np.ndarray:
    """Per image and band (n, C) of flux images (n, C, H, W): the brightest pixel of the central
    quarter of the side (``"peak"``) or the standard deviation over the outer eighth of the side
    on every edge (``"sky_rms"``), per unit of area (times H^2, so the two sides compare)."""
    h = flux.shape[-1]
    if what == "peak":
        value = flux[..., 3 * h // 8 : 5 * h // 8, 3 * h // 8 : 5 * h // 8].max((2, 3))
    else:
        edge = np.ones((h, h), bool)
        edge[h // 8 : -(h // 8), h // 8 : -(h // 8)] = False
        value = flux[..., edge].std(-1)
    return value * h**2


if __name__ == "__main__":
    main()

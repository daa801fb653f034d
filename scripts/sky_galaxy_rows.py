"""Galaxy models of the sky composer side by side: a PNG of sample rows and flux percentiles.

    python scripts/sky_galaxy_rows.py --out docs/families/sky_results/galaxies_real_began_dcgan.png \
        checkpoints/began_hdf32.json checkpoints/began_cond_hdf32.json checkpoints/dcgan_hdf32.json

The first row holds real ``hdf`` 32 px stamps, then one row per checkpoint (``--n`` samples each,
seed ``--seed``; a size-conditional model gets the classes small / medium / large in turn).
Each tile is shown as the model draws it (model range [-1, 1] mapped to [0, 1], no stretch).
Printed: the galaxy flux (band sum of :func:`galaxy_core.sky.stamps.galaxy_flux`, the flux the
composer adds, field units) at the 10th / 50th / 90th percentiles over all real stamps and over
``--flux-n`` samples of each model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="32 px galaxy checkpoints (.json)")
    ap.add_argument("--out", required=True, help="PNG path")
    ap.add_argument("--n", type=int, default=12, help="samples per row")
    ap.add_argument("--flux-n", type=int, default=384, help="samples per model for the flux percentiles")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch
    from PIL import Image

    from galaxy_core.data.hdf import prepare_hdf
    from galaxy_core.io.atomic import atomic_open
    from galaxy_core.sky.stamps import galaxy_flux
    from galaxy_core.sky.pipeline import load_model

    torch.set_num_threads(1)
    ds = prepare_hdf(resolution=32, progress=False)
    real = np.asarray(ds.to_model_range(), np.float32)
    rng = np.random.default_rng(args.seed)
    rows = [real[rng.choice(len(real), args.n, replace=False)]]
    fluxes = {"real hdf stamps": galaxy_flux(real).sum(axis=(1, 2, 3))}
    for path in args.checkpoints:
        model = load_model(path)
        if model.resolution != 32:
            raise SystemExit(f"{path}: a {model.resolution} px model; this comparison is of 32 px galaxies")
        labels = (np.arange(args.flux_n) % model.num_classes) if model.num_classes else None
        g = torch.Generator().manual_seed(args.seed)
        z = model.family.sample_latents(model.model_cfg, args.flux_n, generator=g)
        x = np.asarray(model.generate(z, labels=labels), np.float32)
        rows.append(x[: args.n])
        fluxes[Path(path).stem] = galaxy_flux(x).sum(axis=(1, 2, 3))
    tiles = np.concatenate([np.concatenate(list(r[:, :3]), axis=-1) for r in rows], axis=-2)  # (3, R*32, n*32)
    rgb = (np.clip((tiles + 1) / 2, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out) as f:
        Image.fromarray(rgb).resize((rgb.shape[1] * 3, rgb.shape[0] * 3), Image.NEAREST).save(f, format="PNG")
    print(f"{out}: rows {', '.join(['real hdf stamps'] + [Path(p).stem for p in args.checkpoints])}")
    for name, f in fluxes.items():
        p10, p50, p90 = np.percentile(f, [10, 50, 90])
        print(f"galaxy flux {name:28s} 10/50/90th percentiles {p10:6.1f} / {p50:6.1f} / {p90:6.1f}  (n = {len(f)})")


if __name__ == "__main__":
    main()

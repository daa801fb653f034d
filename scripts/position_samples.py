"""Grids of a position model, drawn as the composer draws them, beside the data's grids.

    python scripts/position_samples.py CHECKPOINT OUT.png [--n 8] [--seed 0] [--match-classes]

Left block: ``n`` grids of the deep field's grid catalogue; right block: ``n`` grids of the
model (a class drawn per cell; ``--match-classes`` thins them to the data's class fractions
as the composer does by default). Cells are drawn 4 x 4 px in the training sample grids'
palette (black empty; blue / yellow / red small / medium / large, or blue occupied), with a
grey gap between grids and a wider one between the blocks.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=8, help="grids per block (a multiple of 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--match-classes", action="store_true")
    args = ap.parse_args()

    from PIL import Image

    from galaxy_core.io.render import grid_rgb, make_grid
    from galaxy_core.sky.grids import catalogue_grids
    from galaxy_core.sky.compose import ModelPositions
    from galaxy_core.sky.pipeline import load_model

    model = load_model(args.checkpoint)
    k = int(model.model_cfg.num_classes)
    positions = ModelPositions(model, match_classes=args.match_classes)
    fake = np.stack([positions(np.random.default_rng([args.seed, i])) for i in range(args.n)])
    data = np.asarray(catalogue_grids(classes=k > 2))
    real = data[np.random.default_rng(args.seed).choice(len(data), args.n, replace=False)]

    def block(grids: np.ndarray) -> np.ndarray:
        rgb = grid_rgb(grids)
        rgb = np.repeat(np.repeat(rgb, 4, axis=1), 4, axis=2)
        return make_grid(rgb, ncols=2, pad=4, fill=90)

    left, right = block(real), block(fake)
    gap = np.full((left.shape[0], 16, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([left, gap, right], axis=1)).save(args.out)
    print(f"written: {args.out} (left: catalogue grids, right: {args.checkpoint})")


if __name__ == "__main__":
    main()

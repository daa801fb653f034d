"""Data kinds: how a family's training data is batched, augmented and shown in a sample grid.

=========  ================================================================  ==================
kind       batch (dict of CPU tensors, images float32 in [-1, 1])            used by
=========  ================================================================  ==================
``image``  ``image`` (B, C, R, R)                                             DCGAN, StyleGAN, FastGAN
``pair``   ``image`` (B, C, R, R) and ``low`` (B, C, R/2, R/2), the low one   StackGAN stage II
           the 2x2 mean of the high one, so both are flipped/turned together
``label``  ``image`` and ``label`` (B,) int64 (from the family's labels)      conditional BEGAN
``grid``   ``grid`` (B, G, G) int64 class per cell (0 empty) and ``image``     position GAN
           its one-hot (B, K, G, G) in {-1, 1}
=========  ================================================================  ==================

Every kind draws its batch order from a permutation per epoch seeded by ``(seed, epoch)`` and
its augmentation from the step's generator, so a resumed run repeats the uninterrupted one.
Under torchrun each rank takes its own slice of the step's global batch.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from galaxy_core.data.prepared import PreparedDataset
from galaxy_core.data.transforms import Augment
from galaxy_core.errors import ConfigError
from galaxy_core.io.render import grid_channels, grid_rgb, make_grid, to_rgb
from galaxy_core.io.units import uint8_to_model


class BatchSource:
    """Yields the real batch for a given step from a prepared dataset, deterministically.

    Parameters
    ----------
    data : PreparedDataset
    batch_size : int
        The global batch of one step.
    seed : int
    rank, world_size : int
        This process's slice ``[rank * B / world, (rank + 1) * B / world)`` of every batch.
    """

    def __init__(self, data: PreparedDataset, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1):
        arr = data.images
        self.n = len(data)
        self.uint8 = arr.dtype == np.uint8
        # Small datasets are held in memory; large ones are gathered from the memory map.
        self.images = torch.from_numpy(np.array(arr)) if arr.nbytes < 2**31 else arr
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self._perm_epoch = -1
        self._perm = None

    def steps_per_epoch(self) -> float:
        return self.n / self.batch_size

    def _perm_for(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 104_729 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm

    def indices(self, step: int) -> list[int]:
        """Dataset indices of this rank's part of the batch of ``step``."""
        start = step * self.batch_size
        idx: list[int] = []
        while len(idx) < self.batch_size:
            epoch, offset = divmod(start + len(idx), self.n)
            take = min(self.batch_size - len(idx), self.n - offset)
            idx.extend(self._perm_for(epoch)[offset : offset + take].tolist())
        per = self.batch_size // self.world_size
        return idx[self.rank * per : (self.rank + 1) * per]

    def gather(self, idx: Sequence[int]) -> torch.Tensor:
        if isinstance(self.images, torch.Tensor):
            return self.images[list(idx)]
        order = np.argsort(idx)
        return torch.from_numpy(np.array(self.images[np.asarray(idx)[order]]))[np.argsort(order)]

    def batch(self, step: int) -> torch.Tensor:
        """Float32 (B, C, H, W) in [-1, 1]."""
        x = self.gather(self.indices(step))
        x = x if self.uint8 else x.float()
        return uint8_to_model(x) if self.uint8 else x


class ImageKind:
    """Single images (see module docstring)."""

    name = "image"

    def __init__(self, data: PreparedDataset, *, batch_size: int, seed: int, augment: Augment,
                 rank: int = 0, world_size: int = 1, family: Any = None, model_cfg: Any = None):
        self.data, self.augment = data, augment
        self.channels = data.channels
        self.source = BatchSource(data, batch_size, seed, rank=rank, world_size=world_size)
        self.augment.check_channels(self.channels)

    def steps_per_epoch(self) -> float:
        return self.source.steps_per_epoch()

    def batch(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"image": self.augment(self.source.batch(step), generator, channels=self.channels)}

    def images(self, out: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """The final images of a generator output (the last stage of a chained model)."""
        return list(out.values())[-1] if isinstance(out, dict) else out

    def render(self, out: torch.Tensor | dict[str, torch.Tensor]) -> np.ndarray:
        """A sample grid (H, W, 3) uint8 of a generator output; stages side by side."""
        stages = list(out.values()) if isinstance(out, dict) else [out]
        size = max(s.shape[-1] for s in stages)
        ncols = int(math.sqrt(len(stages[0])))
        grids = []
        for s in stages:
            s = s.detach().float().cpu()
            if s.shape[-1] != size:
                s = F.interpolate(s, size=(size, size), mode="nearest")
            grids.append(make_grid(to_rgb(s.numpy(), self.channels), ncols=ncols))
        gap = np.zeros((grids[0].shape[0], 8, 3), np.uint8)
        return np.concatenate([g if i == 0 else np.concatenate([gap, g], 1) for i, g in enumerate(grids)], 1)


class PairKind(ImageKind):
    """(R/2, R) pairs made from one image, for super-resolution stages (see module docstring)."""

    name = "pair"

    def batch(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        hi = super().batch(step, generator)["image"]
        return {"image": hi, "low": F.avg_pool2d(hi, 2)}


class LabelKind(ImageKind):
    """Images with an integer label per image, from ``family.dataset_labels(model_cfg, data)``."""

    name = "label"

    def __init__(self, data, *, family, model_cfg, **kw):
        super().__init__(data, family=family, model_cfg=model_cfg, **kw)
        labels = np.asarray(family.dataset_labels(model_cfg, data))
        if labels.shape != (len(data),):
            raise ConfigError(f"{data.name}: {family.name} needs one label per image, got shape {labels.shape}")
        self.labels = torch.as_tensor(labels, dtype=torch.int64)

    def batch(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = self.source.indices(step)
        x = self.source.gather(idx)
        x = uint8_to_model(x) if self.source.uint8 else x.float()
        return {"image": self.augment(x, generator, channels=self.channels), "label": self.labels[idx]}


def grid_num_classes(data: PreparedDataset) -> int:
    """Cell classes of a grid dataset, the empty class included (its manifest's ``num_classes``)."""
    return int(data.manifest.get("num_classes", 2))


class GridKind(ImageKind):
    """Coarse grids with a class per cell (0 = empty); the dataset's images are (N, 1, G, G)
    uint8 class indices and its manifest names ``num_classes`` (including the empty class).

    Only exact symmetries augment a grid: flips and quarter turns move whole cells. A rotation
    by another angle (``augment.rotate``) is refused: no resampling keeps one class per cell
    (bilinear invents classes between neighbours; nearest neighbour at 45 degrees drops 18% of
    the galaxies of an ``hdf_grid_classes`` grid, into the corners it brings in or by taking
    a neighbour twice, and doubles the pairs of adjacent galaxies of one class, the clustering
    the position model learns)."""

    name = "grid"

    def __init__(self, data, **kw):
        super().__init__(data, **kw)
        self.num_classes = grid_num_classes(data)
        if self.augment.rotate != "none":
            raise ConfigError(f"augment.rotate = {self.augment.rotate!r}: {data.name} holds grids of cell classes, which "
                              "a rotation by other than a multiple of 90 degrees cannot resample without dropping, "
                              "copying or inventing cells; the exact ones are augment.flip_h, flip_v and rot90: "
                              "set augment.rotate = \"none\"")

    def batch(self, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cells = self.source.gather(self.source.indices(step))[:, :1].float()  # (B, 1, G, G) class ids
        cells = self.augment(cells, generator, channels=["L"])  # geometric only on a class map
        grid = cells[:, 0].round().long()
        onehot = F.one_hot(grid, self.num_classes).permute(0, 3, 1, 2).float() * 2 - 1
        return {"grid": grid, "image": onehot}

    def render(self, out) -> np.ndarray:
        """Sample grids as the composer would draw them (:func:`~galaxy_core.io.render.to_rgb`
        on the class probabilities), four pixels per cell."""
        x = self.images(out).detach().float().cpu().numpy()
        rgb = to_rgb(x, grid_channels(x.shape[1])) if x.shape[1] > 1 else grid_rgb(x[:, 0] > 0)
        rgb = np.repeat(np.repeat(rgb, 4, axis=1), 4, axis=2)
        return make_grid(rgb, ncols=int(math.sqrt(len(rgb))))


KINDS = {k.name: k for k in (ImageKind, PairKind, LabelKind, GridKind)}


def make_kind(name: str, data: PreparedDataset, **kw) -> ImageKind:
    if name not in KINDS:
        raise ConfigError(f"unknown data kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name](data, **kw)

"""Load a trained generator from a checkpoint and generate images from latents or seeds.

This is the one implementation behind ``galaxygan sample``, the app's pages and the evaluation
code. Loading rebuilds the network from the checkpoint JSON through the registry, then loads
safetensors; nothing is unpickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from galaxy_core.errors import CheckpointError
from galaxy_core.io.stretch import stretch_from_dict
from galaxy_core.models.registry import ArchSpec, get_arch, make_config
from galaxy_core.io.checkpoint import checkpoint_id, load_checkpoint, subdict


@dataclass
class Pretrained:
    """A generator ready to sample, with the checkpoint's description.

    Attributes
    ----------
    path : Path
        The checkpoint JSON.
    meta : dict
        The checkpoint description (model card).
    G : torch.nn.Module
        ``G_ema`` when present, else ``G``; in eval mode.
    """

    path: Path
    meta: dict
    G: torch.nn.Module
    spec: ArchSpec
    model_cfg: object
    device: torch.device

    @property
    def z_dim(self) -> int:
        return int(self.model_cfg.z_dim)

    @property
    def resolution(self) -> int:
        return int(self.model_cfg.resolution)

    @property
    def channels(self) -> list[str]:
        return list(self.meta["data"]["channels"])

    @property
    def stretch(self) -> dict | None:
        return self.meta["data"].get("stretch")

    @property
    def physical(self) -> bool:
        return self.meta["data"].get("kind") == "physical"

    @cached_property
    def id(self) -> str:
        """Short content hash of the checkpoint (recorded with every generated image)."""
        return checkpoint_id(self.path)

    @property
    def name(self) -> str:
        return self.path.stem

    def latents(self, seed: int, n: int) -> torch.Tensor:
        """(n, z_dim) latents for a seed: ``latents(s, n)[i]`` is the same for every n > i."""
        return self.spec.sample_z(self.model_cfg, n, generator=torch.Generator().manual_seed(int(seed)))

    @torch.no_grad()
    def generate(self, z: torch.Tensor | np.ndarray, *, batch: int = 256) -> np.ndarray:
        """Images for latents ``z`` (n, z_dim): float32 (n, C, H, W) in [-1, 1]."""
        z = torch.as_tensor(np.asarray(z, dtype=np.float32))
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"latents must be (n, {self.z_dim}), got {tuple(z.shape)}")
        out = [self.G(z[i : i + batch].to(self.device)).float().cpu() for i in range(0, len(z), batch)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.channels), self.resolution, self.resolution), np.float32)

    def to_flux(self, x: np.ndarray) -> np.ndarray:
        """Model-range images back to flux with the stored stretch (physical data only)."""
        st = stretch_from_dict(self.stretch)
        if st is None:
            raise ValueError(f"{self.path.name}: trained on {self.meta['data'].get('kind')} data "
                             f"with stretch {self.stretch and self.stretch.get('type')}; fluxes cannot be recovered")
        return st.inverse(x)


def load_pretrained(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Pretrained:
    """Load a checkpoint (``NAME.json`` or ``NAME.safetensors``) for sampling."""
    path = Path(path)
    if path.suffix not in (".json", ".safetensors"):
        path = path.with_suffix(".json")
    if not path.with_suffix(".json").exists():
        raise CheckpointError(f"{path.with_suffix('.json')}: no such checkpoint")
    tensors, meta = load_checkpoint(path)
    try:
        spec = get_arch(meta["arch"])
        model_cfg = make_config(meta["arch"], {k: v for k, v in meta["model"].items() if k != "arch"})
    except KeyError as e:
        raise CheckpointError(f"{path}: description lacks {e}; not a Galaxy GAN Studio checkpoint") from e
    device = torch.device(device)
    G = spec.build_G(model_cfg)
    prefix = "G_ema" if any(k.startswith("G_ema.") for k in tensors) else "G"
    try:
        G.load_state_dict(subdict(tensors, prefix))
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the {meta['arch']} model it describes ({e})") from e
    G.to(device).eval()
    return Pretrained(path=path.with_suffix(".json"), meta=meta, G=G, spec=spec, model_cfg=model_cfg, device=device)


def is_generator_checkpoint(path: str | os.PathLike) -> bool:
    """True for a GAN checkpoint of a registered architecture (not, e.g., a feature extractor)."""
    from galaxy_core.models.registry import known_archs
    from galaxy_core.io.checkpoint import read_meta

    try:
        meta = read_meta(path)
    except CheckpointError:
        return False
    return meta.get("kind", "gan") == "gan" and meta.get("arch") in known_archs()


def list_checkpoints(*folders: str | os.PathLike) -> list[Path]:
    """GAN checkpoint JSONs in the given folders (and their run sub-folders' ``checkpoints/``)."""
    found: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.exists():
            continue
        for p in sorted(folder.glob("*.json")) + sorted(folder.glob("*/checkpoints/*.json")):
            if p.with_suffix(".safetensors").exists() and is_generator_checkpoint(p):
                found.append(p)
    return found

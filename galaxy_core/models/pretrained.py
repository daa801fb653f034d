"""Load a trained generator from a checkpoint and generate images from latents or seeds.

This is the one implementation behind ``galaxygan sample``, the app's pages and the evaluation
code. Loading rebuilds the network from the checkpoint JSON through the registry, then loads
safetensors; nothing is unpickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from galaxy_core.errors import CheckpointError
from galaxy_core.io.stretch import stretch_from_dict
from galaxy_core.io.render import grid_channels
from galaxy_core.models.family import Family
from galaxy_core.models.registry import get_arch, make_config
from galaxy_core.io.checkpoint import checkpoint_id, load_checkpoint, subdict


@dataclass
class Pretrained:
    """A trained model ready to sample, with the checkpoint's description.

    Attributes
    ----------
    path : Path
        The checkpoint JSON.
    meta : dict
        The checkpoint description (model card).
    nets : dict of str to nn.Module
        The sampling networks (EMA copies where the checkpoint has them), in eval mode.
    family : Family
        The model family (see :mod:`galaxy_core.models.family`).
    model_cfg : dataclass
        The family's config.
    refs : dict of str to Pretrained
        Referenced checkpoints (the stage-I generator of a chained model), by role.
    """

    path: Path
    meta: dict
    nets: dict
    family: Family
    model_cfg: object
    device: torch.device
    refs: dict = field(default_factory=dict)

    @property
    def G(self) -> torch.nn.Module:
        """The family's sampling network (``G_ema`` when present, else ``G``)."""
        return self.nets[self.family.sampler]

    @property
    def spec(self) -> Family:
        return self.family

    @property
    def latent_spaces(self) -> dict[str, int]:
        """Latent spaces by name and size, e.g. ``{"z": 100}``; StyleGAN adds ``w``."""
        return self.family.latent_spaces(self.model_cfg)

    @property
    def z_dim(self) -> int:
        return int(self.latent_spaces["z"])

    @property
    def num_classes(self) -> int:
        return self.family.num_classes(self.model_cfg)

    @property
    def resolution(self) -> int:
        return int(self.model_cfg.resolution)

    @property
    def channels(self) -> list[str]:
        if self.meta["data"].get("kind") == "grid":  # one-hot output: one channel per cell class
            return grid_channels(self.model_cfg.num_classes)
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
        return self.family.sample_latents(self.model_cfg, n, generator=torch.Generator().manual_seed(int(seed)))

    @torch.no_grad()
    def generate_stages(self, latents: torch.Tensor | np.ndarray, *, labels=None, psi: float = 1.0,
                        noise_mode: str = "const", batch: int = 256) -> dict[str, np.ndarray]:
        """Every stage of the model for ``latents``: ``{stage: float32 (n, C, H, W) in [-1, 1]}``.

        A single-stage model returns ``{"image": ...}``; a chained model (DCGAN -> StackGAN)
        returns each stage by name, the final one last.

        Parameters
        ----------
        latents : array (n, z_dim)
        labels : array (n,) of int, optional
            Class labels for conditional families (default: cycling through the classes).
        psi : float
            Truncation towards the mean latent (families with a mapping network; 1 = none).
        noise_mode : {"const", "random", "none"}
            Per-pixel noise inputs (families that have them).

        Raises
        ------
        ValueError
            Latents of the wrong shape.
        """
        z = torch.as_tensor(np.asarray(latents, dtype=np.float32))
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"latents must be (n, {self.z_dim}), got {tuple(z.shape)}")
        k = self.num_classes
        if labels is None and k:
            labels = torch.arange(len(z)) % k
        labels = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        out: dict[str, list[torch.Tensor]] = {}
        for i in range(0, len(z), batch):
            lab = labels[i : i + batch].to(self.device) if labels is not None else None
            res = self.family.generate(self.nets, z[i : i + batch].to(self.device), labels=lab, psi=psi,
                                       noise_mode=noise_mode, refs=self.refs)
            for name, x in (res.items() if isinstance(res, dict) else [("image", res)]):
                out.setdefault(name, []).append(x.float().cpu())
        if not out:
            return {"image": np.zeros((0, len(self.channels), self.resolution, self.resolution), np.float32)}
        return {k: torch.cat(v).numpy() for k, v in out.items()}

    def generate(self, latents: torch.Tensor | np.ndarray, *, labels=None, psi: float = 1.0,
                 noise_mode: str = "const", batch: int = 256) -> np.ndarray:
        """Final images for ``latents`` (n, z_dim): float32 (n, C, H, W) in [-1, 1].

        See :meth:`generate_stages` for the parameters.
        """
        stages = self.generate_stages(latents, labels=labels, psi=psi, noise_mode=noise_mode, batch=batch)
        return list(stages.values())[-1]

    @property
    def flux_unit(self) -> str | None:
        """Unit of :meth:`to_flux` (``BUNIT``), or None where the training data did not say.

        From the card's data block (``flux_unit``; ``bunit`` in cards of folders prepared before
        the name was unified); cards of the built-in ``sim`` written before units were recorded
        get its unit (nanomaggy).
        """
        data = self.meta.get("data", {})
        unit = data.get("flux_unit") or data.get("bunit")
        if unit:
            return str(unit)
        if data.get("source") == "builtin:sim" or (data.get("name") == "sim" and data.get("kind") == "physical"):
            from galaxy_core.data.sim import FLUX_UNIT

            return FLUX_UNIT
        return None

    def to_flux(self, x: np.ndarray) -> np.ndarray:
        """Model-range images back to flux with the stored stretch (physical data only)."""
        st = stretch_from_dict(self.stretch)
        if st is None:
            raise ValueError(f"{self.path.name}: trained on {self.meta['data'].get('kind')} data "
                             f"with stretch {self.stretch and self.stretch.get('type')}; fluxes cannot be recovered")
        return st.inverse(x)


def load_pretrained(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Pretrained:
    """Load a checkpoint (``NAME.json`` or ``NAME.safetensors``) for sampling.

    Raises
    ------
    CheckpointError
        Not a checkpoint, an unknown family, weights that do not fit, or non-finite weights.
    """
    from galaxy_core.paths import with_suffix_of

    path = with_suffix_of(path, ".json", (".json", ".safetensors"))  # "my_model.v2" -> "my_model.v2.json"
    if not path.exists():
        raise CheckpointError(f"{path.with_suffix('.json')}: no such checkpoint")
    tensors, meta = load_checkpoint(path)
    try:
        family = get_arch(meta["arch"])
        model_cfg = make_config(meta["arch"], {k: v for k, v in meta["model"].items() if k != "arch"})
    except (KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: description lacks {e}; not a Galaxy GAN Studio checkpoint") from e
    device = torch.device(device)
    built = family.build(model_cfg)
    nets = {}
    for name, net in built.items():
        prefix = f"{name}_ema" if any(k.startswith(f"{name}_ema.") for k in tensors) else name
        state = subdict(tensors, prefix)
        if not state and name != family.sampler:
            continue  # e.g. a discriminator left out of an exported checkpoint
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit the {meta['arch']} model it describes ({e})") from e
        nets[name] = net.to(device).eval()
    refs = {role: load_pretrained(p, device=device) for role, p in family.references(model_cfg).items()}
    return Pretrained(path=path.with_suffix(".json"), meta=meta, nets=nets, family=family, model_cfg=model_cfg,
                      device=device, refs=refs)


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


def verify_checkpoint(path: str | os.PathLike, *, n: int = 4) -> dict:
    """Check one checkpoint: it loads, its weights fit the architecture its card describes,
    and it generates ``n`` finite images of the card's shape and range.

    Returns
    -------
    dict
        ``{"path", "kind", "arch", "ok": bool, "problem": str | None}``.
    """
    from dataclasses import asdict

    from galaxy_core.io.checkpoint import read_meta

    path = Path(path)
    out = {"path": str(path), "kind": None, "arch": None, "ok": False, "problem": None}
    try:
        meta = read_meta(path)
        out["kind"], out["arch"] = meta.get("kind", "gan"), meta.get("arch")
        if out["kind"] != "gan":
            load_checkpoint(path)  # tensors present and matching the card's hash
            out["ok"] = True
            return out
        model = load_pretrained(path)
        rebuilt = {"arch": meta["arch"], **asdict(model.model_cfg)}
        if rebuilt != meta["model"]:
            raise CheckpointError(f"{path}: card's model {meta['model']} resolves to {rebuilt}")
        x = model.generate(model.latents(0, n))
        want = (n, len(model.channels))
        if x.shape[:2] != want or x.shape[2] != x.shape[3]:
            raise CheckpointError(f"{path}: generated shape {x.shape}, card says {len(model.channels)} channels")
        if not np.isfinite(x).all():
            raise CheckpointError(f"{path}: generated images hold NaN or infinite values")
        if x.min() < -1.0001 or x.max() > 1.0001:
            raise CheckpointError(f"{path}: generated values {x.min():.3g}..{x.max():.3g} outside [-1, 1]")
        out["ok"] = True
    except CheckpointError as e:
        out["problem"] = str(e)
    return out


def verify_folder(folder: str | os.PathLike) -> list[dict]:
    """:func:`verify_checkpoint` for every ``*.json`` checkpoint in ``folder`` (and its runs)."""
    folder = Path(folder)
    paths = sorted(folder.glob("*.json")) + sorted(folder.glob("*/checkpoints/*.json"))
    return [verify_checkpoint(p) for p in paths if p.with_suffix(".safetensors").exists()]

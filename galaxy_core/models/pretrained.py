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

from galaxy_core.errors import CheckpointError, GalaxyGanError
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
    def class_names(self) -> tuple[str, ...]:
        """Name of each class label of a conditional model (``()`` for an unconditional one)."""
        return self.family.class_names(self.model_cfg)

    @property
    def resolution(self) -> int:
        return int(self.model_cfg.resolution)

    @property
    def _card_data(self) -> dict:
        """The card's ``data`` block (empty when the card has none)."""
        data = self.meta.get("data")
        return data if isinstance(data, dict) else {}

    @property
    def channels(self) -> list[str]:
        """Channel names of the generated images.

        Raises
        ------
        CheckpointError
            The card's data block does not list them (a card not written by galaxygan).
        """
        if self._card_data.get("kind") == "grid":  # one-hot output: one channel per cell class
            return grid_channels(self.model_cfg.num_classes)
        if "channels" not in self._card_data:
            raise CheckpointError(f"{self.path}: the model card does not list the channels (data.channels); "
                                  "restore the NAME.json galaxygan wrote")
        return list(self._card_data["channels"])

    @property
    def stretch(self) -> dict | None:
        return self._card_data.get("stretch")

    @property
    def physical(self) -> bool:
        return self._card_data.get("kind") == "physical"

    @cached_property
    def id(self) -> str:
        """Short content hash of the checkpoint (recorded with every generated image)."""
        return checkpoint_id(self.path)

    @property
    def name(self) -> str:
        """What the checkpoint is called in titles, records and file names: its file's stem, and
        for a run's own checkpoint (``RUN/checkpoints/last.json``) the run's too (``RUN_last``),
        so samples of two runs' ``last`` never share a name."""
        if self.path.parent.name == "checkpoints" and self.path.parent.parent.name:
            run = self.path.parent.parent
            if (run / "config.toml").exists() or (run / "status.json").exists():
                return f"{run.name}_{self.path.stem}"
        return self.path.stem

    def latents(self, seed: int, n: int) -> torch.Tensor:
        """(n, z_dim) latents for a seed: ``latents(s, n)[i]`` is the same for every n > i.

        Drawn from :func:`~galaxy_core.models.family.latent_generator` (a stream of its own for
        each seed, never the one the weights were initialised from)."""
        from galaxy_core.models.family import latent_generator

        return self.family.sample_latents(self.model_cfg, n, generator=latent_generator(seed))

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
        data = self._card_data
        unit = data.get("flux_unit") or data.get("bunit")
        if unit:
            return str(unit)
        if data.get("source") == "builtin:sim" or (data.get("name") == "sim" and data.get("kind") == "physical"):
            from galaxy_core.data.sim import FLUX_UNIT

            return FLUX_UNIT
        return None

    @property
    def pixel_scale_arcsec(self) -> float | None:
        """Pixel scale of the training images as the model saw them (arcsec/pixel, after their
        crop and resize), or None where the training data did not say."""
        value = self._card_data.get("pixel_scale_arcsec")
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    def to_flux(self, x: np.ndarray) -> np.ndarray:
        """Model-range images back to flux with the stored stretch (physical data only)."""
        st = stretch_from_dict(self.stretch)
        if st is None:
            raise ValueError(f"{self.path.name}: trained on {self._card_data.get('kind')} data "
                             f"with stretch {self.stretch and self.stretch.get('type')}; fluxes cannot be recovered")
        return st.inverse(x)


def load_pretrained(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                    _chain: tuple[Path, ...] = ()) -> Pretrained:
    """Load a checkpoint (``NAME.json`` or ``NAME.safetensors``) for sampling.

    Raises
    ------
    CheckpointError
        Not a checkpoint, a malformed card, an unknown family, a card that does not describe a
        buildable model (a field of the wrong type or value, keys of another family, channels
        that do not match the bands), weights that do not fit, non-finite weights, or a
        referenced checkpoint (StackGAN's stage I) other than the one the card records. The
        message starts with the file.
    """
    from galaxy_core.paths import with_suffix_of

    path = with_suffix_of(path, ".json", (".json", ".safetensors"))  # "my_model.v2" -> "my_model.v2.json"
    if not path.exists():
        raise CheckpointError(f"{path.with_suffix('.json')}: no such checkpoint")
    if path.resolve() in _chain:
        loop = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise CheckpointError(f"{path}: the model cards refer to each other in a loop ({loop})")
    tensors, meta = load_checkpoint(path)  # the card's structure is checked here (read_meta)
    family, model_cfg, built, references = _build_from_card(path, meta, tensors)
    device = torch.device(device)
    nets = {}
    for name, net in built.items():
        state = _stored_state(tensors, name)
        if not state and name != family.sampler:
            continue  # e.g. a discriminator left out of an exported checkpoint
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit the {meta['arch']} model it describes ({e})") from e
        nets[name] = net.to(device).eval()
    refs = {role: load_pretrained(p, device=device, _chain=(*_chain, path.resolve()))
            for role, p in references.items()}
    return Pretrained(path=path.with_suffix(".json"), meta=meta, nets=nets, family=family, model_cfg=model_cfg,
                      device=device, refs=refs)


# What a family's config or constructor raises for values it cannot build (a hand-edited card).
_BUILD_ERRORS = (GalaxyGanError, ValueError, TypeError, AttributeError, KeyError, IndexError, RuntimeError,
                 OverflowError, ZeroDivisionError, MemoryError)


def _stored_state(tensors: dict, name: str) -> dict:
    """The weights of network ``name`` in a checkpoint: its EMA copy where one was saved."""
    prefix = f"{name}_ema" if any(k.startswith(f"{name}_ema.") for k in tensors) else name
    return subdict(tensors, prefix)


_RANDOM_FILLS = frozenset({"normal_", "uniform_", "trunc_normal_", "orthogonal_", "kaiming_normal_",
                           "kaiming_uniform_", "xavier_normal_", "xavier_uniform_"})
_RANDOM_FACTORIES = frozenset({"randn", "rand"})
_SPECTRAL_NORM_OPS = frozenset({"mv", "normalize", "vdot"})


class _ShapesOnlyOnMeta(torch.overrides.TorchFunctionMode):
    """Skips the value computations a constructor runs, where they would run on ``meta`` tensors.

    A meta tensor holds no values, so random initial weights (``normal_``, ``randn``, ...) and
    the power iteration spectral normalisation runs at construction (``mv``, ``F.normalize``,
    ``vdot``; FastGAN's D) only need the shape of their result. torch runs them on meta through
    its Python references, whose first call imports ``torch._dynamo`` and sympy and each call of
    which is slow: seconds of CPU in every process that only loads a checkpoint. Inside the mode
    those calls return an empty tensor of the right shape; every other call passes through
    unchanged. (A spectrally normalised weight's division by sigma still takes the slow path, so
    loading a FastGAN checkpoint still imports ``torch._dynamo``.)
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _RANDOM_FILLS:
            tensor = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes it by keyword
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        elif name in _RANDOM_FACTORIES and kwargs.get("device") in (None, "meta", torch.device("meta")):
            kwargs = {k: v for k, v in kwargs.items() if k != "generator"}
            return torch.empty(*args, **{**kwargs, "device": "meta"})
        elif name in _SPECTRAL_NORM_OPS and args and all(t.is_meta for t in args if isinstance(t, torch.Tensor)):
            # spectral normalisation: its power iteration u = normalize(W v), 15 times at construction,
            # and sigma = vdot(u, W v) when the parametrised weight is first computed
            if name == "vdot":
                return args[0].new_empty(())
            if name == "mv":
                return args[0].new_empty(args[0].shape[:1])
            return kwargs["out"] if kwargs.get("out") is not None else args[0].new_empty(args[0].shape)
        return func(*args, **kwargs)


def _check_shapes(path: Path, arch: str, family: Family, model_cfg, tensors: dict) -> None:
    """Compare the stored weights with the networks the card describes, before building them.

    The networks are built on torch's ``meta`` device (shapes only, no memory), so a hand-edited
    card asking for, say, ``width = 100000`` is refused at once instead of allocating it. A family
    whose constructor cannot run on ``meta`` is left to the real build's own check.

    Raises
    ------
    CheckpointError
        A stored network's tensor names or shapes differ from the described one's.
    """
    try:
        with torch.device("meta"), _ShapesOnlyOnMeta():
            ghosts = family.build(model_cfg)
    except Exception:  # noqa: BLE001 - e.g. a constructor that reads a tensor's values; checked when built
        return
    for name, net in ghosts.items():
        state = _stored_state(tensors, name)
        if not state and name == family.sampler:
            raise CheckpointError(f"{path}: the file holds no weights for {name}, the network that makes the "
                                  f"images (tensors named {name}.* or {name}_ema.*); not a {arch} generator checkpoint")
        if not state:
            continue
        want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in state.items()}
        if want == have:
            continue
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        wrong = [k for k in want if k in have and want[k] != have[k]]
        if wrong:
            k = wrong[0]
            what = (f"{name}.{k} is {list(have[k])} in the file but {list(want[k])} in the model the card describes"
                    + (f" ({len(wrong) - 1} more tensors differ)" if len(wrong) > 1 else ""))
        elif missing:
            what = f"the file lacks {name}.{missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        else:
            what = f"the file holds {name}.{extra[0]}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else "") \
                + ", which the described model does not have"
        raise CheckpointError(f"{path}: weights do not fit the {arch} model its card describes ({what}); "
                              "restore the NAME.json galaxygan wrote")


def _build_from_card(path: Path, meta: dict, tensors: dict | None = None) -> tuple[Family, object, dict, dict]:
    """The family, config, fresh networks and referenced checkpoints a card describes.

    With ``tensors`` (the checkpoint's weights) their shapes are checked against the described
    networks before those are built (:func:`_check_shapes`).

    Raises
    ------
    CheckpointError
        No ``arch`` or ``model``, an unknown ``arch``, a ``model.arch`` of another family, model
        fields of the wrong type, values the family refuses or cannot build, weights of other
        shapes than the described networks', a ``grid`` data kind for an image family, an asinh
        ``data.stretch`` that cannot be used, ``data.channels`` missing or not matching the
        model's bands, or a referenced checkpoint that is not the one the card records
        (:func:`pinned_references`); the message names ``path``.
    """
    import dataclasses
    import typing

    from galaxy_core.models.registry import known_archs

    arch, model = meta.get("arch"), meta.get("model")
    if arch is None:
        raise CheckpointError(f"{path}: the model card names no architecture ('arch'); "
                              "not a Galaxy GAN Studio generator checkpoint")
    if model is None:
        raise CheckpointError(f"{path}: the model card has no 'model' block; not a Galaxy GAN Studio generator checkpoint")
    if arch not in known_archs():
        raise CheckpointError(f"{path}: the model card's arch {arch!r} is not a known architecture (known: "
                              f"{', '.join(known_archs())}); a family from a plugin must be registered first "
                              "(GALAXYGAN_FAMILIES)")
    if model.get("arch", arch) != arch:
        raise CheckpointError(f"{path}: the model card is inconsistent: arch is {arch!r} but model.arch is "
                              f"{model['arch']!r}; restore the NAME.json galaxygan wrote")
    what = f"{path}: the model card does not describe a buildable {arch} model"
    family = get_arch(arch)
    values = {k: v for k, v in family.card_model(model).items() if k != "arch"}
    try:
        hints = typing.get_type_hints(family.config_cls)
    except Exception:  # a plugin's annotations that cannot be resolved: leave the checks to the family
        hints = {}
    for f in dataclasses.fields(family.config_cls):
        if f.name in values and not _json_fits(values[f.name], hints.get(f.name)):
            raise CheckpointError(f"{what}: model.{f.name} must be {_TYPE_NAMES[hints[f.name]]}, "
                                  f"not {values[f.name]!r}; restore the NAME.json galaxygan wrote")
    try:
        model_cfg = make_config(arch, values)
    except _BUILD_ERRORS as e:
        raise CheckpointError(f"{what}: {e}; restore the NAME.json galaxygan wrote") from e
    if tensors is not None:
        _check_shapes(path, arch, family, model_cfg, tensors)
    try:
        built = family.build(model_cfg)
        family.attach_data(built, meta.get("data") or {})
    except _BUILD_ERRORS as e:
        raise CheckpointError(f"{what}: {e}; restore the NAME.json galaxygan wrote") from e
    references = pinned_references(path, (meta.get("engine") or {}).get("references"), family, model_cfg)
    data = meta.get("data") or {}
    bands, channels = getattr(model_cfg, "num_bands", None), data.get("channels")
    if data.get("kind") == "grid":
        if not isinstance(getattr(model_cfg, "num_classes", None), int):
            raise CheckpointError(f"{path}: the model card is inconsistent: data.kind is 'grid' but a {arch} model "
                                  "makes images, not grids of cell classes; restore the NAME.json galaxygan wrote")
        return family, model_cfg, built, references
    stretch = data.get("stretch")
    if isinstance(stretch, dict) and stretch.get("type") == "asinh":
        try:
            st = stretch_from_dict(stretch)
            st.inverse(np.zeros((1, bands if isinstance(bands, int) else len(channels or [0]), 1, 1), np.float32))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise CheckpointError(f"{path}: malformed model card: data.stretch (asinh) cannot be used "
                                  f"({type(e).__name__}: {e}); restore the NAME.json galaxygan wrote") from e
    if channels is None:
        raise CheckpointError(f"{path}: the model card does not list the channels (data.channels); "
                              "restore the NAME.json galaxygan wrote")
    if isinstance(bands, int) and len(channels) != bands:
        raise CheckpointError(f"{path}: the model card is inconsistent: data.channels lists {len(channels)} "
                              f"channel(s) {channels} but model.num_bands is {bands}; restore the NAME.json "
                              "galaxygan wrote")
    return family, model_cfg, built, references


def pinned_references(card: Path, recorded: dict | None, family: Family, model_cfg) -> dict[str, Path]:
    """The checkpoints a model runs after (:meth:`Family.references`, e.g. StackGAN's stage I),
    each the very one it was trained with.

    A model card records every reference by path and id (``engine.references.ROLE``:
    ``{"path", "sha"}``, the id being :func:`~galaxy_core.io.checkpoint.checkpoint_id`). The
    path the model config names (``model.stage1``, resolved as the family resolves it) is
    tried first, then the recorded path (absolute, or relative to the card's folder, the
    working folder or the project folder); the first that holds the recorded id is used. A
    card without a recorded id (written by hand) takes the configured path as it is.

    Parameters
    ----------
    card : Path
        The model card (or run checkpoint) that references the others; named in errors.
    recorded : dict or None
        Its ``engine.references``.
    family, model_cfg
        The model's family and config.

    Returns
    -------
    dict of str to Path
        Checkpoint JSON by role.

    Raises
    ------
    CheckpointError
        A reference that was recorded with an id and that no candidate path holds any more
        (replaced by a retrained model, or gone); the message names the card, the file it was
        trained with and the one found instead. Or a configured path that cannot be resolved
        where nothing was recorded.
    """
    from galaxy_core.paths import REPO_ROOT, with_suffix_of

    recorded = recorded if isinstance(recorded, dict) else {}
    try:
        named = {role: Path(p) for role, p in family.references(model_cfg).items()}
        problem = None
    except _BUILD_ERRORS as e:  # e.g. model.stage1 no longer where the config says: the record may find it
        named, problem = {}, e
    pins = {role: rec for role, rec in recorded.items() if isinstance(rec, dict) and rec.get("sha")}
    if problem is not None and not pins:
        raise CheckpointError(f"{card}: the model card does not describe a buildable {family.name} model: {problem}; "
                              "restore the NAME.json galaxygan wrote") from problem
    out: dict[str, Path] = {}
    for role in dict.fromkeys([*named, *pins]):
        if role not in pins:
            out[role] = named[role]
            continue
        want, was = str(pins[role]["sha"]), str(pins[role].get("path") or "")
        places = [named[role]] if role in named else []
        if was:
            p = Path(was).expanduser()
            places += [p] if p.is_absolute() else [card.parent / p, Path.cwd() / p, REPO_ROOT / p]
        seen: dict[Path, str] = {}
        for place in places:
            place = with_suffix_of(place, ".json", (".json", ".safetensors"))
            if not place.exists() or place.resolve() in seen:
                continue
            try:
                seen[place.resolve()] = found = checkpoint_id(place)
            except CheckpointError:
                seen[place.resolve()] = found = "unreadable"
            if found == want:
                out[role] = place
                break
        else:
            where = f"{was or named.get(role)} (id {want})"
            if not seen:
                raise CheckpointError(f"{card}: was trained after the {role} checkpoint {where}, which is not there "
                                      "any more; put that checkpoint back, or train this model again")
            other = ", ".join(f"{q} (id {i})" for q, i in seen.items())
            raise CheckpointError(f"{card}: was trained after the {role} checkpoint {where}, but {other} holds another "
                                  f"model; chained after it this model would make other images than it was trained "
                                  f"and measured with. Put the {role} checkpoint it was trained with back, or train "
                                  "this model again after the new one")
    return out


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _json_fits(value, hint) -> bool:
    """Whether a card value has the type a config field declares (int, float, bool, str; others pass)."""
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


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

    Nothing is raised: any failure, expected or not, becomes the entry's ``problem``.

    Returns
    -------
    dict
        ``{"path", "kind", "arch", "ok": bool, "problem": str | None}``; ``problem`` starts with
        the file.
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
        if rebuilt != model.family.card_model(meta["model"]):
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
    except GalaxyGanError as e:
        out["problem"] = str(e)
    except Exception as e:  # one unusable checkpoint must not stop the others being checked
        out["problem"] = f"{path}: cannot be loaded or sampled ({type(e).__name__}: {e})"
    if out["problem"] and out["kind"] is None:  # a card refused before its kind was read
        _, out["kind"], out["arch"] = _card_kind(path)
    return out


def _card_kind(path: Path) -> tuple[bool, str | None, str | None]:
    """Whether a JSON file is a galaxygan model card (by its ``format``), with its kind and arch."""
    import json

    from galaxy_core.io.checkpoint import FORMAT

    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return False, None, None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return False, None, None
    kind, arch = meta.get("kind", "gan"), meta.get("arch")
    return True, kind if isinstance(kind, str) else None, arch if isinstance(arch, str) else None


def verify_folder(folder: str | os.PathLike) -> list[dict]:
    """:func:`verify_checkpoint` for every checkpoint in ``folder`` and its runs' ``checkpoints/``.

    Half pairs are failed entries: a model card (a JSON with the galaxygan checkpoint
    ``format``) with no ``NAME.safetensors`` beside it, and a ``NAME.safetensors`` with no
    ``NAME.json``. Other JSON files (a realism scorer, metrics) are not checkpoints and are
    left out.

    Returns
    -------
    list of dict
        One entry per checkpoint or half pair, as :func:`verify_checkpoint` returns them.
    """
    folder = Path(folder)
    places = [folder, *sorted(p for p in folder.glob("*/checkpoints") if p.is_dir())]
    results = []
    for place in places:
        stems = {p.name[: -len(p.suffix)] for ext in ("*.json", "*.safetensors") for p in place.glob(ext)
                 if p.is_file()}
        for stem in sorted(stems):
            js, st = place / f"{stem}.json", place / f"{stem}.safetensors"
            pending = place / f"{stem}.safetensors.next"  # a save interrupted before its last rename
            if js.is_file() and (st.is_file() or pending.is_file()):
                results.append(verify_checkpoint(js))
            elif js.is_file():
                is_card, kind, arch = _card_kind(js)
                if is_card:
                    results.append({"path": str(js), "kind": kind, "arch": arch, "ok": False,
                                    "problem": f"{js}: no {st.name} beside it; a checkpoint is NAME.json + "
                                               "NAME.safetensors: copy the tensor file next to the card"})
            elif st.is_file():
                results.append({"path": str(st), "kind": None, "arch": None, "ok": False,
                                "problem": f"{st}: no {js.name} card beside it; a checkpoint is NAME.json + "
                                           "NAME.safetensors: copy the model card next to the tensors"})
    return results

"""What a model family is: networks, an objective with phases, and how it generates.

A family is one model file (``galaxy_core/models/NAME.py``) that defines a config dataclass, its
networks and a subclass of :class:`Family`, plus an :class:`Objective`. The training loop
(:mod:`galaxy_core.train.loop`) owns everything common to all families (data order, device, AMP,
EMA, differentiable augmentation and its probability, schedules, metrics, sample grids,
checkpoints, resume, live evaluation, torchrun) and never names a family.

The objective interface, in short::

    class MyObjective(Objective):
        phases = (Phase("D", optimizer="D"), Phase("D_reg", optimizer="D", every=16),
                  Phase("G", optimizer="G"))

        def begin_step(self, batch, ctx):          # once per step, before the phases
            ctx.stash["z"] = ctx.sample_latents(ctx.batch_size)

        def run(self, phase, batch, ctx):          # one phase -> (loss or None, {name: value})
            ...
            return loss, {"loss_D": loss.detach()}

For each phase due at this step (``step % every == 0``) the loop zeroes the gradients of the
phase's optimiser, calls :meth:`Objective.run` under autocast, back-propagates the loss and
steps that optimiser, then logs the returned statistics (averaged over the steps of a metrics
record). Phases share tensors within a step through ``ctx.stash`` (the DCGAN's generator
output, for example, is computed once in the D phase and reused in the G phase). The pattern
follows the loss-with-phases split of StyleGAN2-ADA (Karras et al. 2020, "Training Generative
Adversarial Networks with Limited Data").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn


def latent_generator(seed: int, stream: str = "latents") -> torch.Generator:
    """A CPU ``torch.Generator`` for the latents of a user's ``seed``, on a named ``stream``.

    Seeded with a hash of ``(seed, stream)`` (numpy ``SeedSequence``), not with ``seed`` itself:
    training initialises the weights from ``torch.manual_seed(train.seed)``, so latents drawn
    from ``torch.Generator().manual_seed(seed)`` with the same seed would repeat the numbers of
    the first weight matrix. A StyleGAN's mapping network then meets its own weight rows as
    latents (``W z`` has ``|z|^2`` in one coordinate) and draws atypical images for seed 0.
    Distinct streams (``"latents"``, ``"live"``, ``"grid"``, ...) never share numbers either.
    """
    import numpy as np

    state = np.random.SeedSequence([int(seed), *stream.encode()]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(((int(state[0]) << 32) | int(state[1])) >> 1)  # 63 bits


def standard_normal(n: int, dim: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, dim) float32 draws of N(0, 1) whose rows do not depend on ``n``.

    ``torch.randn`` on the CPU transforms its uniforms in blocks of 16 and, when the element
    count is not a multiple of 16, draws the last block again, so ``torch.randn(n, 100)[0]``
    differs between ``n = 1`` and ``n = 4``. Here the draw is rounded up to whole blocks and
    cut back to ``n`` rows, so a seed's first rows are the same for every ``n`` (a sample's
    image then depends only on its seed and index). Draws whose count is already a multiple
    of 16 are exactly ``torch.randn``'s.
    """
    import math

    step = 16 // math.gcd(int(dim), 16)
    rows = -(-int(n) // step) * step
    return torch.randn(rows, int(dim), generator=generator)[:n].contiguous()


@dataclass(frozen=True)
class Phase:
    """One part of a training step.

    Parameters
    ----------
    name : str
        Passed to :meth:`Objective.run`; also names the phase in logs.
    optimizer : str
        Name of the optimiser (see :meth:`Family.optimizers`) that steps after this phase.
    every : int
        Run when ``step % every == 0`` (lazy regularisation runs every k steps).
    """

    name: str
    optimizer: str
    every: int = 1


class StepContext:
    """What an objective may use during one step (built by the loop).

    Attributes
    ----------
    step : int
        The step being trained (0-based).
    batch_size : int
        Images this process trains on in this step.
    device : torch.device
    generator : torch.Generator
        CPU generator seeded by ``(seed, step)``: draw every random number from it so a resumed
        run repeats the uninterrupted one.
    stash : dict
        Scratch space shared by the phases of this step; emptied before each step.
    model_cfg : object
        The family's config dataclass.
    """

    def __init__(self, *, step: int, batch_size: int, device: torch.device, generator: torch.Generator,
                 model_cfg: Any, family: "Family", augment: Callable[[torch.Tensor], torch.Tensor],
                 observe: Callable[[torch.Tensor], None], amp: bool):
        self.step, self.batch_size, self.device = step, batch_size, device
        self.generator, self.model_cfg, self.family = generator, model_cfg, family
        self.stash: dict[str, Any] = {}
        self._augment, self._observe, self.amp = augment, observe, amp

    def sample_latents(self, n: int) -> torch.Tensor:
        """(n, ...) latents of the family on the device, drawn from this step's generator."""
        return self.family.sample_latents(self.model_cfg, n, generator=self.generator).to(self.device)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable augmentation for images shown to a discriminator (real and fake alike)."""
        return self._augment(x)

    def observe_real_logits(self, logits: torch.Tensor) -> None:
        """Report D's logits on real images; adaptive augmentation tunes p from their sign."""
        self._observe(logits)


class Objective:
    """Base class of a family's training objective (see module docstring).

    Parameters
    ----------
    model_cfg : dataclass
        The family's config.
    train_cfg : galaxy_core.config.TrainConfig
        Learning rates, loss choice and the like.
    nets : dict of str to nn.Module
        The trainable networks by name (wrapped for DistributedDataParallel under torchrun;
        call them, do not reach into their attributes).
    """

    phases: tuple[Phase, ...] = ()

    def __init__(self, model_cfg: Any, train_cfg: Any, nets: Mapping[str, nn.Module]):
        self.model_cfg, self.train_cfg, self.nets = model_cfg, train_cfg, nets

    def begin_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> None:
        """Called once per step before the phases (sample latents into ``ctx.stash`` here)."""

    def run(self, phase: str, batch: dict[str, torch.Tensor], ctx: StepContext
            ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Compute one phase: ``(loss to minimise or None, {statistic: scalar tensor})``, the
        statistics on the networks' device like the loss (``torch.tensor(x, device=loss.device)``
        for a number kept on the host)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """JSON-able state that must survive a resume (BEGAN's k_t, a path-length mean, ...)."""
        return {}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict` on resume."""


class Family:
    """Base class of a model family; subclass it in the family's model file and register it.

    Class attributes
    ----------------
    name : str
        The ``model.arch`` value.
    config_cls : type
        Dataclass of hyper-parameters; fields ``resolution`` and ``num_bands`` (when present)
        are filled from the data. Document each field with ``metadata={"doc": "..."}``.
    objective_cls : type[Objective]
    ema : tuple of str
        Networks that get an exponential-moving-average copy named ``NAME_ema``.
    sampler : str
        The network :meth:`generate` is given as ``nets["G"]`` by default (its EMA copy when it
        has one).
    data_kind : str
        ``"image"``, ``"pair"``, ``"label"`` or ``"grid"`` (see :mod:`galaxy_core.train.kinds`).
    description : str
        One line with the paper the family comes from.
    data_fields : tuple of str
        Config fields filled from the data by :meth:`resolve_config` (not asked in forms).
    """

    name: str = ""
    config_cls: type = object
    objective_cls: type[Objective] = Objective
    ema: tuple[str, ...] = ("G",)
    sampler: str = "G"
    data_kind: str = "image"
    description: str = ""
    data_fields: tuple[str, ...] = ("resolution", "num_bands")  # config fields the data decides

    # networks ---------------------------------------------------------------------------
    def build(self, cfg: Any) -> dict[str, nn.Module]:
        """Every network of the family by name, freshly initialised."""
        raise NotImplementedError

    def build_G(self, cfg: Any) -> nn.Module:
        return self.build(cfg)["G"]

    def build_D(self, cfg: Any) -> nn.Module:
        return self.build(cfg)["D"]

    def optimizers(self, cfg: Any, train_cfg: Any, params: Mapping[str, list[nn.Parameter]]
                   ) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per trainable network: Adam with ``lr_d`` for names starting with D,
        ``lr_g`` for the rest, betas from the train config. ``params`` holds only the
        parameters that are not frozen."""
        t = train_cfg
        return {name: torch.optim.Adam(ps, lr=t.lr_d if name.startswith("D") else t.lr_g, betas=(t.beta1, t.beta2))
                for name, ps in params.items()}

    def base_lr(self, name: str, train_cfg: Any) -> float:
        """The learning rate (before the schedule) of optimiser ``name``."""
        return train_cfg.lr_d if name.startswith("D") else train_cfg.lr_g

    def resolve_config(self, values: dict, data: Any) -> dict:
        """Config values with what the data decides filled in: ``resolution`` and ``num_bands``
        from the prepared dataset, for the fields the config has."""
        names = {f.name for f in dataclasses.fields(self.config_cls)}
        values = dict(values)
        if "resolution" in names:
            values["resolution"] = data.resolution
        if "num_bands" in names:
            values["num_bands"] = data.num_bands
        return values

    def dataset_labels(self, cfg: Any, data: Any):
        """One integer label per training image (``label`` data kind): the catalogue's
        ``label`` column by default."""
        cat = data.catalog
        if cat is None or "label" not in cat.colnames:
            from galaxy_core.errors import ConfigError

            raise ConfigError(f"{data.name}: the {self.name} model needs a label per image "
                              "(a 'label' column in the dataset catalogue)")
        return cat["label"]

    # latents and generation ---------------------------------------------------------------
    def latent_spaces(self, cfg: Any) -> dict[str, int]:
        """Latent spaces by name and size, e.g. ``{"z": 100}`` or ``{"z": 512, "w": 512}``."""
        return {"z": int(cfg.z_dim)}

    def sample_latents(self, cfg: Any, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents for ``n`` images: (n, z_dim) standard normal by default
        (:func:`standard_normal`: row ``i`` of a seeded draw is the same for every ``n > i``)."""
        return standard_normal(n, int(cfg.z_dim), generator=generator)

    def sample_z(self, cfg: Any, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample_latents(cfg, n, generator=generator)

    def num_classes(self, cfg: Any) -> int:
        """Number of labels a conditional family takes (0 = unconditional)."""
        return 0

    def class_names(self, cfg: Any) -> tuple[str, ...]:
        """Name of each label ``0 .. num_classes - 1`` (``"class i"`` unless the family knows them)."""
        return tuple(f"class {i}" for i in range(self.num_classes(cfg)))

    def generate(self, nets: Mapping[str, nn.Module], latents: torch.Tensor, *, labels: torch.Tensor | None = None,
                 psi: float = 1.0, noise_mode: str = "const", refs: Mapping[str, Any] | None = None
                 ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Images for ``latents``: (n, C, H, W) in [-1, 1], or for a chained family a dict of
        every stage by name, the last being the final image.

        ``nets`` maps network names to the sampling copies (EMA where there is one); ``refs``
        holds referenced checkpoints (:meth:`references`) loaded for sampling.
        """
        return nets["G"](latents)

    def references(self, cfg: Any) -> dict[str, str]:
        """Other checkpoints this model needs (e.g. a stage-I generator), by role: path."""
        return {}

    def attach_data(self, nets: Mapping[str, nn.Module], data: Mapping) -> None:
        """Give built networks what the description of the model's training data (a card's
        ``data`` block) says that generation needs, e.g. StackGAN stage II the stretch of its
        inputs. The engine and the loader call it right after :meth:`build`; by default it
        does nothing."""

    def card_model(self, model: Mapping) -> dict:
        """A card's ``model`` table as this version reads it. A field added to the config after
        the card was written takes the value that reproduces what the card's model did, which
        may differ from the default new runs get (StackGAN's ``stage1_input``). By default the
        table as it is."""
        return dict(model)

    # fine-tuning -------------------------------------------------------------------------
    def freeze_units(self, net_name: str, net: nn.Module, unit: str) -> list[list[str]]:
        """The network's freezable units from the input end: lists of parameter/buffer names.

        ``unit`` is ``"layer"`` or ``"block"``. The default treats each module that owns
        parameters (a convolution with the normalisation that follows it) as a layer, and
        each top-level child as a block; families override where their blocks differ.
        """
        if unit == "block":
            children = [(n, m) for n, m in net.named_children() if any(True for _ in m.parameters())]
            if len(children) > 1:
                return [[f"{n}.{k}" for k in m.state_dict()] for n, m in children]
        units: list[list[str]] = []
        for mname, m in net.named_modules():
            own = [f"{mname}.{k}" if mname else k for k in list(m._parameters) + list(m._buffers)
                   if getattr(m, k, None) is not None]
            if not own:
                continue
            if isinstance(m, nn.modules.batchnorm._NormBase) and units:
                units[-1].extend(own)  # a normalisation belongs to the layer before it
            else:
                units.append(own)
        return units


def config_fields(config_cls: type) -> list[dict]:
    """Name, type, default and documentation of each field of a family's config dataclass."""
    out = []
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append({"name": f.name, "type": type(default).__name__ if default is not None else str(f.type),
                    "default": default, "doc": f.metadata.get("doc", "")})
    return out

"""Position GAN: one-hot-like output, training through the engine on a grid dataset, verify."""

import numpy as np
import torch

from galaxy_core.config import load_config
from galaxy_core.models.positions import PositionsConfig
from galaxy_core.models.pretrained import load_pretrained, verify_checkpoint
from galaxy_core.models.registry import get_arch
from galaxy_core.paths import configs_dir
from galaxy_core.sky.grids import GridOptions, prepare_catalogue_grids, sample_cells
from galaxy_core.train.loop import train


def test_generator_output_is_a_probability_map():
    fam = get_arch("positions")
    cfg = PositionsConfig(resolution=16, num_classes=4, z_dim=8, width=4)
    G = fam.build(cfg)["G"].eval()
    with torch.no_grad():
        x = G(torch.randn(3, 8))
    assert x.shape == (3, 4, 16, 16)
    p = (x + 1) / 2
    torch.testing.assert_close(p.sum(dim=1), torch.ones(3, 16, 16))
    assert float(x.min()) >= -1 and float(x.max()) <= 1


def test_train_on_grids_and_verify(tmp_path):
    rng = np.random.default_rng(0)
    src = {"x": rng.uniform(0, 255, 60), "y": rng.uniform(0, 255, 60), "area": rng.uniform(10, 100, 60),
           "shape": (256, 256)}
    ds = prepare_catalogue_grids(src, tmp_path / "grids", GridOptions(grid=16, cell_px=16, count=64), source="test")
    assert ds.manifest["num_classes"] == 4 and ds.images.shape == (64, 1, 16, 16)
    cfg = load_config(configs_dir() / "positions_hdf_cond.toml",
                      [f"data.dataset={str(ds.root)!r}", "train.steps=3", "train.batch_size=8", "model.width=4",
                       "log.sample_every=3", "log.checkpoint_every=3", "train.threads=1"])
    status = train(cfg, tmp_path / "run", progress=False)
    assert status["state"] == "finished"
    ck = tmp_path / "run" / "checkpoints" / "last.json"
    assert verify_checkpoint(ck)["ok"], verify_checkpoint(ck)
    model = load_pretrained(ck)
    cells = sample_cells(model.generate(model.latents(0, 2)), mode="sample", rng=np.random.default_rng(0))
    assert cells.shape == (2, 16, 16) and cells.min() >= 0 and cells.max() <= 3

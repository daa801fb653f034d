"""Position GAN: one-hot-like output, training through the engine on a grid dataset, verify."""

import numpy as np
import pytest
import torch

from galaxy_core.config import load_config
from galaxy_core.errors import ConfigError
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


def test_live_grid_evaluation_picks_the_best_snapshot(tmp_path):
    """Position models get a live metric of their own (FID does not apply to grids): the grid
    statistics' distance from the data's, recorded every eval step and used for ``best``."""
    import json

    rng = np.random.default_rng(1)
    src = {"x": rng.uniform(0, 255, 60), "y": rng.uniform(0, 255, 60), "area": rng.uniform(10, 100, 60),
           "shape": (256, 256)}
    ds = prepare_catalogue_grids(src, tmp_path / "grids", GridOptions(grid=16, cell_px=16, count=64), source="test")
    cfg = load_config(configs_dir() / "positions_hdf_uncond.toml",
                      [f"data.dataset={str(ds.root)!r}", "train.steps=4", "train.batch_size=8", "model.width=4",
                       "log.sample_every=4", "log.checkpoint_every=4", "log.metrics_every=2", "log.eval_every=2",
                       "log.eval_samples=32", "train.threads=1"])
    assert train(cfg, tmp_path / "run", progress=False)["state"] == "finished"
    recs = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    evals = [r for r in recs if "grid_distance_32" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(np.isfinite(r["grid_distance_32"]) and r["grid_distance_32"] >= 0 for r in evals)
    assert all(0 <= r["grid_occupancy"] <= 1 and "grid_var_over_mean_8" in r for r in evals)
    from galaxy_core.train.live import split_record_keys

    quality, statistics = split_record_keys(recs)  # occupancy is a statistic, not "lower is better"
    assert quality == ["grid_distance_32"] and {"grid_occupancy", "grid_var_over_mean_8"} <= set(statistics)
    best = json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())["best"]
    assert best["metric"] == "grid_distance_32"
    assert best["value"] == min(r["grid_distance_32"] for r in evals)


def test_grid_distance_is_zero_for_the_data_and_grows_with_the_difference():
    from galaxy_core.sky.grids import grid_distance, grid_statistics

    rng = np.random.default_rng(2)
    data = grid_statistics((rng.random((200, 16, 16)) < 0.1).astype(int))
    assert grid_distance(data, data) == 0.0
    denser = grid_statistics((rng.random((200, 16, 16)) < 0.2).astype(int))
    densest = grid_statistics((rng.random((200, 16, 16)) < 0.3).astype(int))
    clumped = grid_statistics(np.kron(rng.random((200, 8, 8)) < 0.025, np.ones((2, 2), int)).astype(int))
    # twice the occupancy: |ln 2| from the occupancy, more from the neighbours and counts it changes
    assert grid_distance(denser, data) > abs(np.log(denser["occupancy"] / data["occupancy"]))
    assert grid_distance(densest, data) > grid_distance(denser, data)
    assert grid_distance(clumped, data) > 1.0  # same occupancy, every galaxy in a 2 x 2 clump
    assert grid_distance({**data, "occupancy": 0.0}, data) == float("inf")


def test_straight_through_cells_draw_the_categorical_distribution_and_pass_gradients():
    from galaxy_core.models.positions import straight_through_cells

    p = torch.tensor([0.7, 0.2, 0.1]).view(1, 3, 1, 1).expand(4000, 3, 1, 1).clone()
    maps = (2 * p - 1).requires_grad_(True)
    y = straight_through_cells(maps, torch.Generator().manual_seed(0))
    assert set(torch.unique(y).tolist()) == {-1.0, 1.0}
    assert torch.all((y > 0).sum(dim=1) == 1)  # exactly one class per cell, like a real grid
    freq = ((y + 1) / 2).mean(dim=(0, 2, 3))
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.025, rtol=0)
    w = torch.randn_like(y)
    (w * y).sum().backward()
    torch.testing.assert_close(maps.grad, w)  # straight through: d y / d maps = 1
    again = straight_through_cells(maps.detach(), torch.Generator().manual_seed(0))
    assert torch.equal(again, y.detach())  # the step's generator makes the draw repeatable


def test_sampled_cells_training_resumes_exactly(tmp_path, straight_and_split):
    rng = np.random.default_rng(5)
    src = {"x": rng.uniform(0, 255, 60), "y": rng.uniform(0, 255, 60), "area": rng.uniform(10, 100, 60),
           "shape": (256, 256)}
    ds = prepare_catalogue_grids(src, tmp_path / "grids", GridOptions(grid=16, cell_px=16, count=64), source="test")
    root = straight_and_split(tmp_path / "runs", "configs/positions_hdf_cond.toml",
                              [f"data.dataset={str(ds.root)!r}", "train.batch_size=8", "model.width=4",
                               "model.sampled_cells=true", "log.eval_every=0"])
    a = load_pretrained(root / "straight" / "checkpoints" / "last.json")
    b = load_pretrained(root / "split" / "checkpoints" / "last.json")
    assert a.meta["model"]["sampled_cells"] is True
    for (k, va), (_, vb) in zip(a.G.state_dict().items(), b.G.state_dict().items()):
        assert torch.equal(va, vb), k


def _tiny_grids(tmp_path, seed=7):
    rng = np.random.default_rng(seed)
    src = {"x": rng.uniform(0, 255, 60), "y": rng.uniform(0, 255, 60), "area": rng.uniform(10, 100, 60),
           "shape": (256, 256)}
    return prepare_catalogue_grids(src, tmp_path / "grids", GridOptions(grid=16, cell_px=16, count=64), source="test")


@pytest.mark.parametrize("fill", ["constant", "reflect"])
def test_rotation_of_class_grids_is_refused_before_a_step(tmp_path, fill):
    # bilinear resampling put fractions of classes (reflect) or class -1 (constant) into cells
    ds = _tiny_grids(tmp_path)
    cfg = load_config(configs_dir() / "positions_hdf_cond.toml",
                      [f"data.dataset={str(ds.root)!r}", "train.steps=2", "train.batch_size=8", "model.width=4",
                       "augment.rotate=45", f"augment.rotate_fill={fill}", "train.threads=1"])
    with pytest.raises(ConfigError, match=r"augment.rotate = '45'.*grids of cell classes.*rot90"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints" / "last.json").exists()


def _is_one_hot(x: torch.Tensor) -> bool:
    return bool(((x == 1) | (x == -1)).all() and ((x == 1).sum(dim=1) == 1).all())


def test_differentiable_augmentation_of_grids_moves_whole_cells_and_brings_in_empty_ones(tmp_path):
    from galaxy_core.config import AugmentConfig
    from galaxy_core.data import load_dataset
    from galaxy_core.train.kinds import GridKind
    from galaxy_core.train.loop import build_augment

    ds = load_dataset(str(_tiny_grids(tmp_path).root), progress=False)
    classic, _ = build_augment(AugmentConfig(), ds.channels, grid_classes=4)
    real = GridKind(ds, batch_size=32, seed=0, augment=classic).batch(0, torch.Generator().manual_seed(0))["image"]
    assert real.shape == (32, 4, 16, 16) and _is_one_hot(real)
    for policy in ("auto", "translation,cutout"):
        _, diff = build_augment(AugmentConfig(diff="fixed", diff_p=1.0, diff_policy=policy), ds.channels,
                                grid_classes=4)
        out = diff(real, torch.Generator().manual_seed(3))
        assert _is_one_hot(out), policy  # every cell still holds exactly one class
        galaxies = (real[:, 1:] == 1).sum(dim=(1, 2, 3))
        assert ((out[:, 1:] == 1).sum(dim=(1, 2, 3)) <= galaxies).all()  # moved out or emptied, never invented
        assert not torch.equal(out, real)
    _, diff = build_augment(AugmentConfig(diff="ada"), ds.channels, grid_classes=4)
    assert diff.ops == ("flip", "rot90", "translation") and diff.fill == (1.0, -1.0, -1.0, -1.0)
    for policy in ("shift", "bands", "flip,noise"):
        with pytest.raises(ConfigError, match="cannot augment grids of cell classes"):
            build_augment(AugmentConfig(diff="fixed", diff_policy=policy), ds.channels, grid_classes=4)


def test_position_gan_trains_with_adaptive_augmentation(tmp_path):
    ds = _tiny_grids(tmp_path)
    cfg = load_config(configs_dir() / "positions_hdf_cond.toml",
                      [f"data.dataset={str(ds.root)!r}", "train.steps=2", "train.batch_size=8", "model.width=4",
                       "augment.diff=ada", "augment.diff_p=0.5", "log.eval_every=0", "train.threads=1"])
    assert train(cfg, tmp_path / "run", progress=False)["state"] == "finished"

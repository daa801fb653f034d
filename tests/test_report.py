"""``galaxygan evaluate`` on a shipped checkpoint: every file of the report, with sane numbers."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from galaxy_core.metrics.report import evaluate_checkpoint
from galaxy_core.paths import checkpoints_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    summary = evaluate_checkpoint(checkpoints_dir() / "dcgan_hdf32.json", report_dir=out, n=96,
                                  extractors=("galaxy", "pix8"), n_queries=16, png=True)
    return out, summary


def test_report_files_and_names(report):
    out, summary = report
    for name in ("summary.json", "metrics.csv", "morphology_real.csv", "morphology_generated.csv",
                 "memorisation_cosine.html", "nearest_matches.png", "nearest_matches.csv", "morphology_ellipticity.html"):
        assert (out / name).exists(), name
    assert summary["png_note"] is None and (out / "memorisation_l1.png").stat().st_size > 1000
    rows = {r["metric"]: r for r in csv.DictReader((out / "metrics.csv").open())}
    # metric names record the extractor and the sample size; extractors never share a name
    assert {"fid_galaxy_96v96", "kid_galaxy_96v96", "fid_pix8_96v96", "mifid_galaxy_96v96",
            "recall_galaxy_96v96"} <= set(rows)
    written = json.loads((out / "summary.json").read_text())
    assert written["checkpoint_id"] == summary["checkpoint_id"]
    # where the numbers came from: the checkpoint file and its tensors' hash, the software, the date
    assert written["checkpoint_path"] == str((checkpoints_dir() / "dcgan_hdf32.json").resolve())
    assert written["checkpoint_sha256"].startswith(written["checkpoint_id"])
    assert written["software"].startswith("Galaxy GAN Studio") and written["created"][:2] == "20"


def test_generated_is_further_from_real_than_the_real_floor(report):
    _, summary = report
    fm = summary["features"]["galaxy"]
    assert fm["generated"]["fid_galaxy_96v96"] > fm["floor"]["fid_galaxy_96v96"] > 0
    # a 1,500-step CPU model is still clearly better than noise: within 20x of the real floor
    assert fm["fid_ratio_to_floor"] < 20
    mem = summary["memorisation"]
    assert set(mem["distances"]) == {"cosine", "l1", "ssim"} and mem["default_distance"] == "cosine"
    assert all(d["what_it_is_sensitive_to"] for d in mem["distances"].values())
    assert "16 generated samples searched against all 383 training images of hdf" in mem["compared"]
    # hdf has no held-out images, so the report gives the distances but no verdict
    assert summary["memorised"] is None and summary["memorised_note"].startswith("No verdict")
    assert mem["distances"]["cosine"]["flagged_samples"] is None
    # 96 samples: below both feature dimensions, said up front
    assert len(summary["warnings"]) == 2 and "128 dimensions of the galaxy features" in summary["warnings"][0]


def test_nearest_matches_csv_names_images(report):
    out, _ = report
    rows = list(csv.DictReader((out / "nearest_matches.csv").open()))
    assert len(rows) == 16 and rows[0]["flagged_cosine"] == ""  # no held-out data: nothing flagged
    assert all(r["cosine_nn1_image"].startswith("hdf #") for r in rows)
    d = [float(r["cosine_nn1_distance"]) for r in rows]
    assert d == sorted(d)  # closest first


def test_held_out_folder_gives_a_threshold(tmp_path):
    from PIL import Image

    from galaxy_core.data import load_dataset

    stamps = np.asarray(load_dataset("hdf", resolution=32, progress=False).images[:30]).transpose(0, 2, 3, 1)
    (tmp_path / "held").mkdir()
    for i, im in enumerate(stamps):  # mirrored stamps: not pixel copies of training images
        Image.fromarray(np.ascontiguousarray(im[:, ::-1])).save(tmp_path / "held" / f"g{i:02d}.png")
    summary = evaluate_checkpoint(checkpoints_dir() / "dcgan_hdf32.json", report_dir=tmp_path / "r", n=32,
                                  extractors=("pix8",), morphology=False, n_queries=8, png=False,
                                  held_out=tmp_path / "held")
    mem = summary["memorisation"]
    assert "threshold from 30 held-out real images (30 real images from" in mem["compared"]
    cos = mem["distances"]["cosine"]
    assert cos["percentile"] == 5.0 and cos["threshold"] > 0 and len(cos["flagged_samples"]) == cos["n_flagged"]
    # but mirrored training stamps are no new galaxies (the model was trained with flips): they sit
    # much closer to the training set than training images sit to each other, and the report says so
    assert cos["heldout_copies"] == 0 and cos["reference_ratio"] < 2 / 3
    assert "may be near-copies of training images" in cos["reference_warning"]
    # a threshold that low cannot show copying: the statistics are there, the verdict is not
    assert summary["memorised"] is None and mem["memorised"] is None
    assert summary["memorised_note"].startswith("No verdict: the held-out reference is not independent of the "
                                                "training set: the held-out images sit only 0.")


def test_cli_evaluate_reports_bad_checkpoint(tmp_path):
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "evaluate", str(tmp_path / "none.json"),
                        "--report", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "none.json" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists() and list(tmp_path.iterdir()) == []  # no empty or partial report
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "evaluate", str(checkpoints_dir() / "dcgan_hdf32.json"),
                        "--report", str(tmp_path / "r"), "--held-out", str(tmp_path / "nosuch")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "nosuch: no such file or folder (--held-out)" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_evaluating_again_into_a_report_folder_replaces_the_earlier_report(report, tmp_path):
    """The earlier report's memorisation files go when the new run has no memorisation section; a
    file of the user's stays; a run that fails leaves the folder as it was."""
    import shutil

    folder = tmp_path / "rep"
    shutil.copytree(report[0], folder)
    (folder / "notes.txt").write_text("mine")
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(Exception):
        evaluate_checkpoint(tmp_path / "none.json", report_dir=folder, n=24)
    assert sorted(p.name for p in folder.iterdir()) == before
    summary = evaluate_checkpoint(checkpoints_dir() / "dcgan_hdf32.json", report_dir=folder, n=24,
                                  extractors=("pix8",), morphology=False, memorisation=False, seed=3)
    names = {p.name for p in folder.iterdir()}
    assert "notes.txt" in names and not any(n.startswith(("memorisation_", "nearest_", "morphology_")) for n in names)
    assert json.loads((folder / "summary.json").read_text())["seed"] == 3 == summary["seed"]
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no staging folder left beside it


def test_record_in_card_keeps_tensors_valid(report, tmp_path):
    import shutil

    from galaxy_core.metrics.report import record_in_card
    from galaxy_core.io.checkpoint import load_checkpoint

    _, summary = report
    for ext in (".json", ".safetensors"):
        shutil.copy(checkpoints_dir() / f"dcgan_hdf32{ext}", tmp_path / f"m{ext}")
    meta = record_in_card(tmp_path / "m.json", summary, command="galaxygan evaluate m.json")
    assert meta["metrics"]["fid_galaxy_96v96"] == summary["features"]["galaxy"]["generated"]["fid_galaxy_96v96"]
    assert meta["evaluation"]["real_vs_real_floor"]["fid_galaxy_96v96"] > 0
    assert "fid_pix8_256" in meta["metrics"]  # the live metric from training is kept
    _, reloaded = load_checkpoint(tmp_path / "m.json")  # tensor hash still matches
    assert reloaded["evaluation"]["n"] == 96


def _summary(extractor: str, values: dict, floors: dict, *, memorised=None) -> dict:
    names = {kind: next(k for k in values if k.startswith(kind + "_")) for kind in ("fid", "kid")}
    return {"features": {extractor: {"names": names, "generated": values, "floor": floors}},
            "data": "hdf", "n": 64, "floor_definition": "two halves of the held-out stamps", "memorised": memorised}


def test_record_in_card_refuses_an_evaluation_of_another_checkpoint(tmp_path):
    import shutil

    from galaxy_core.errors import CheckpointError
    from galaxy_core.io.checkpoint import read_meta
    from galaxy_core.metrics.report import record_in_card

    for ext in (".json", ".safetensors"):
        shutil.copy(checkpoints_dir() / f"dcgan_hdf32{ext}", tmp_path / f"m{ext}")
    path = tmp_path / "m.json"
    summary = {**_summary("pix8", {"fid_pix8_64": 9.0, "kid_pix8_64": 0.5}, {"fid_pix8_64": 0.9, "kid_pix8_64": 0.05}),
               "checkpoint_path": "/elsewhere/other.json", "checkpoint_id": "0123456789ab",
               "checkpoint_sha256": "0123456789ab" + "0" * 52}
    card = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"measured on /elsewhere/other.json \(id 0123456789ab\)"):
        record_in_card(path, summary, command="galaxygan evaluate other.json")
    assert path.read_bytes() == card
    meta = record_in_card(path, {**summary, "checkpoint_sha256": read_meta(path)["tensors_sha256"]}, command="here")
    assert meta["evaluation"]["command"] == "here"


def test_record_in_card_keeps_each_metric_with_the_evaluation_that_measured_it(tmp_path):
    import shutil

    from galaxy_core.io.checkpoint import read_meta
    from galaxy_core.metrics.report import card_evaluations, metric_provenance, record_in_card

    for ext in (".json", ".safetensors"):
        shutil.copy(checkpoints_dir() / f"dcgan_hdf32{ext}", tmp_path / f"m{ext}")
    path = tmp_path / "m.json"
    shipped = read_meta(path)
    shipped_keys = set(shipped["evaluation"]["real_vs_real_floor"])
    # a card from before the list: its one evaluation measured the metrics it has floors for
    assert [e["metrics"] for e in card_evaluations(shipped)] == [list(shipped["evaluation"]["real_vs_real_floor"])]

    record_in_card(path, _summary("pix8", {"fid_pix8_64": 9.0, "kid_pix8_64": 0.5},
                                  {"fid_pix8_64": 0.9, "kid_pix8_64": 0.05}, memorised=False), command="first")
    meta = read_meta(path)
    assert [e["command"] for e in meta["evaluations"]] == [shipped["evaluation"]["command"], "first"]
    prov = metric_provenance(meta)
    assert {k for k, (i, _) in prov.items() if i == 1} == shipped_keys
    assert prov["fid_pix8_64"][1]["real_vs_real_floor"]["fid_pix8_64"] == 0.9
    assert meta["evaluation"]["command"] == "first"  # the latest, where cards always carried it

    # measuring one metric again takes it over, with its own floor; the other stays with "first"
    record_in_card(path, _summary("pix8", {"fid_pix8_64": 7.0, "kid_pix8_128": 0.4},
                                  {"fid_pix8_64": 1.1, "kid_pix8_128": 0.04}), command="second")
    meta = read_meta(path)
    prov = metric_provenance(meta)
    assert meta["metrics"]["fid_pix8_64"] == 7.0 and prov["fid_pix8_64"][1]["command"] == "second"
    assert prov["fid_pix8_64"][1]["real_vs_real_floor"]["fid_pix8_64"] == 1.1
    first = next(e for e in meta["evaluations"] if e["command"] == "first")
    assert first["metrics"] == ["kid_pix8_64"] and set(first["real_vs_real_floor"]) == {"kid_pix8_64"}

    # an evaluation left with no metric is dropped, unless it holds the only memorisation verdict
    record_in_card(path, _summary("pix8", {"fid_pix8_64": 6.0, "kid_pix8_64": 0.3},
                                  {"fid_pix8_64": 1.0, "kid_pix8_64": 0.03}), command="third")
    meta = read_meta(path)
    commands = [e["command"] for e in meta["evaluations"]]
    assert "first" in commands and next(e for e in meta["evaluations"] if e["command"] == "first")["metrics"] == []
    record_in_card(path, _summary("pix8", {"fid_pix8_64": 5.0, "kid_pix8_64": 0.2},
                                  {"fid_pix8_64": 1.0, "kid_pix8_64": 0.03}, memorised=False), command="fourth")
    commands = [e["command"] for e in read_meta(path)["evaluations"]]
    assert "first" not in commands and "third" not in commands and commands[-1] == "fourth"


def test_record_in_card_keeps_only_the_latest_memorisation_verdict_and_says_when_floors_may_be_lost(tmp_path):
    import shutil

    from galaxy_core.io.checkpoint import read_meta
    from galaxy_core.metrics.report import (floors_may_be_lost, memorisation_status, metric_provenance,
                                            record_in_card)

    for ext in (".json", ".safetensors"):
        shutil.copy(checkpoints_dir() / f"dcgan_hdf32{ext}", tmp_path / f"m{ext}")
    path = tmp_path / "m.json"
    pix = ({"fid_pix8_64": 9.0, "kid_pix8_64": 0.5}, {"fid_pix8_64": 0.9, "kid_pix8_64": 0.05})
    gal = ({"fid_galaxy_64": 30.0, "kid_galaxy_64": 0.02}, {"fid_galaxy_64": 3.0, "kid_galaxy_64": 0.001})
    record_in_card(path, _summary("pix8", *pix, memorised=True), command="A")
    record_in_card(path, _summary("galaxy", *gal, memorised=False), command="B")
    both = _summary("pix8", *pix)
    both["features"].update(_summary("galaxy", *gal)["features"])
    record_in_card(path, both, command="C")  # no verdict, measures everything again
    entries = [(e["command"], e["metrics"], e["memorised"]) for e in read_meta(path)["evaluations"]]
    assert [c for c, _, _ in entries] == [read_meta(checkpoints_dir() / "dcgan_hdf32.json")["evaluation"]["command"],
                                          "B", "C"]
    assert entries[1] == ("B", [], False)  # B's verdict replaced A's; A is gone
    # B is kept for its verdict and numbered, so Home can name the evaluation a verdict comes from
    assert {i for i, _ in metric_provenance(read_meta(path)).values()} == {1, 3}
    status = memorisation_status(read_meta(path))
    assert status["memorised"] is False and status["number"] == 2 and status["entry"]["command"] == "B"
    assert status["later"][0] == 3 and status["later"][1]["command"] == "C"  # C looked later and gave none
    record_in_card(path, _summary("galaxy", *gal, memorised=True), command="D")
    status = memorisation_status(read_meta(path))
    assert status["memorised"] is True and status["entry"]["command"] == "D" and status["later"] is None
    # the shipped cards list their evaluations; a card from before the list may have lost floors
    assert not floors_may_be_lost(read_meta(checkpoints_dir() / "dcgan_hdf32.json"))
    legacy = read_meta(checkpoints_dir() / "dcgan_hdf32.json")
    legacy.pop("evaluations")
    assert floors_may_be_lost(legacy) and not floors_may_be_lost({"metrics": {"fid_pix8_256": 1.0}})
    assert memorisation_status({"metrics": {"fid_pix8_256": 1.0}}) is None  # no evaluation looked


def test_the_colour_magnitude_floor_is_what_a_perfect_generator_scores():
    """Three disjoint sets of simulated galaxies: one draws the box, one is the held-out floor, one
    stands in for a perfect generator (placed at the median redshift, as generated galaxies are).
    The floor is treated the same way, so the reading is "consistent"; with the held-out galaxies at
    their own redshifts it read "too narrow" in about half of all splits."""
    from galaxy_core.data.sources import load_dataset
    from galaxy_core.explore import evaluation as ev
    from galaxy_core.metrics.report import cmd_section
    from galaxy_core.models.pretrained import load_pretrained

    ds = load_dataset("sim", count=480, seed=11, progress=False)
    model = load_pretrained(checkpoints_dir() / "stylegan_sim64_gri.json")  # its bands and zero point
    flux = ev.to_linear(np.asarray(ds.images, np.float32), stretch=ds.stretch)
    readings = []
    for s in range(4):
        a, b, c = np.split(np.random.default_rng(s).permutation(len(ds)), 3)
        out = cmd_section(model, ds, flux[a], a, flux[b], b, flux[c])
        readings.append(out["reading"]["reading"])
        assert abs(out["fraction_in_box_generated"] - out["fraction_in_box_heldout"]) < 0.1
    assert readings.count("consistent") >= 3, readings


def test_small_data_still_searches_as_many_generated_samples_as_asked(tmp_path):
    """A reference of 11 images gives 5 real images per split, and the memorisation search took
    the same 5 generated samples whatever --queries said; it now draws as many as it searches
    (the first ones from the same seed, as the Memorisation page does)."""
    from PIL import Image

    from galaxy_core.data import load_dataset
    from galaxy_core.explore.evaluation import generated_sample
    from galaxy_core.metrics.report import load_pretrained

    stamps = np.asarray(load_dataset("hdf", resolution=32, progress=False).images[:11]).transpose(0, 2, 3, 1)
    (tmp_path / "small").mkdir()
    for i, im in enumerate(stamps):
        Image.fromarray(np.ascontiguousarray(im)).save(tmp_path / "small" / f"g{i:02d}.png")
    summary = evaluate_checkpoint(checkpoints_dir() / "dcgan_hdf32.json", report_dir=tmp_path / "r", n=32,
                                  data=str(tmp_path / "small"), extractors=("pix8",), morphology=False,
                                  n_queries=16, evidence=(), png=False, seed=2)
    assert summary["n"] == 5  # the distribution metrics: 5 against 5
    assert summary["memorisation"]["compared"].startswith("16 generated samples searched against all 383 training")
    rows = list(csv.DictReader((tmp_path / "r" / "nearest_matches.csv").open()))
    assert sorted(int(r["sample"].split("#")[-1]) for r in rows) == list(range(16))
    # the samples searched are the page's: the first 16 of the seed's stream
    from galaxy_core.metrics.memorisation import feature_extractor, nearest, search_space
    from galaxy_core.explore.evaluation import open_reference, training_data

    model = load_pretrained(checkpoints_dir() / "dcgan_hdf32.json")
    train = open_reference(**training_data(model.meta))
    _, page = generated_sample(model, 16, seed=2)
    ext = feature_extractor()
    _, d = nearest(page, search_space(train, "cosine", extractor=ext), "cosine", k=1, extractor=ext)
    got = {int(r["sample"].split("#")[-1]): float(r["cosine_nn1_distance"]) for r in rows}
    assert [got[i] for i in range(16)] == pytest.approx(d[:, 0].tolist(), rel=1e-4, abs=1e-6)


def test_morphology_skipped_for_every_generated_image_is_warned_about(tmp_path, monkeypatch):
    """Blank generated images give no galaxy to measure: the morphology rows drop out of the
    report, and the run now says so (before, the reason sat only in summary.json)."""
    from galaxy_core.explore import evaluation as ev

    real = ev.generated_sample

    def blank(model, n, **kw):
        z, x = real(model, n, **kw)
        return z, np.full_like(x, -1.0)

    monkeypatch.setattr(ev, "generated_sample", blank)
    said = []
    summary = evaluate_checkpoint(checkpoints_dir() / "dcgan_hdf32.json", report_dir=tmp_path / "r", n=24,
                                  extractors=("pix8",), morphology=True, memorisation=False, png=False,
                                  warn=said.append)
    morph = summary["morphology"]
    assert morph["failed"]["generated"] == morph["count"]["generated"] == 24
    (line,) = [s for s in said if s.startswith("morphology was skipped for all 24 generated images")]
    assert morph["failure_reasons"]["generated"] and next(iter(morph["failure_reasons"]["generated"])) in line
    assert line in summary["warnings"]
    assert "morphology_generated.csv" in line

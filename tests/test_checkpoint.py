import json
import subprocess
import sys

import pytest
import torch

from galaxy_core.errors import CheckpointError
from galaxy_core.models.registry import get_arch, known_archs, make_config
from galaxy_core.io.checkpoint import (
    NonFiniteTensorError,
    NotACheckpointError,
    check_finite,
    find_nonfinite,
    flatten_optimizer,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    unflatten_optimizer,
)


def _trained_adam():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()
    return net, opt


def test_optimizer_state_round_trip(tmp_path):
    net, opt = _trained_adam()
    tensors, meta = flatten_optimizer("opt", opt)
    save_checkpoint(tmp_path / "c", tensors, {"optimizer": meta})
    t2, m2 = load_checkpoint(tmp_path / "c.json")
    opt2 = torch.optim.Adam(net.parameters(), lr=5.0)
    opt2.load_state_dict(unflatten_optimizer("opt", t2, m2["optimizer"]))
    a, b = opt.state_dict(), opt2.state_dict()
    assert b["param_groups"][0]["lr"] == 1e-3
    for idx in a["state"]:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(torch.as_tensor(a["state"][idx][k]), torch.as_tensor(b["state"][idx][k]))


def test_files_are_safetensors_and_json(tmp_path):
    save_checkpoint(tmp_path / "m", {"G.w": torch.ones(2, 2)}, {"arch": "dcgan"})
    assert (tmp_path / "m.safetensors").read_bytes()[8:9] == b"{"  # safetensors header, not a pickle
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["format"] == "galaxygan-checkpoint/1" and len(meta["tensors_sha256"]) == 64
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_mismatched_or_missing_files_are_reported(tmp_path):
    save_checkpoint(tmp_path / "m", {"G.w": torch.ones(2)}, {"arch": "dcgan"})
    save_checkpoint(tmp_path / "other", {"G.w": torch.zeros(2)}, {"arch": "dcgan"})
    (tmp_path / "m.safetensors").write_bytes((tmp_path / "other.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "m.json")
    with pytest.raises(CheckpointError, match="not found"):
        read_meta(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="something-else"):
        read_meta(tmp_path / "bad.json")


# ------------------------------------------------------------------- not a checkpoint


def _pair(tmp_path, name="m", tensors=None):
    tensors = tensors if tensors is not None else {"G.w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
                                                   "rng.torch": torch.zeros(4, dtype=torch.uint8)}
    return save_checkpoint(tmp_path / name, tensors, {"arch": "dcgan"})


def _pickle_as_json(tmp_path):
    torch.save({"G.w": torch.ones(2)}, tmp_path / "x.json")  # a real pickle under a .json name
    return tmp_path / "x.json"


def _json_list(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2, 3]")
    return tmp_path / "x.json"


def _json_text(tmp_path):
    (tmp_path / "x.json").write_text('"galaxy"')
    return tmp_path / "x.json"


def _broken_json(tmp_path):
    (tmp_path / "x.json").write_text('{"format": "galaxygan-checkpoint/1", ')
    return tmp_path / "x.json"


def _folder(tmp_path):
    (tmp_path / "x.json").mkdir()
    return tmp_path / "x.json"


def _no_tensors(tmp_path):
    js = _pair(tmp_path)
    js.with_suffix(".safetensors").unlink()
    return js


def _truncated(tmp_path):
    js = _pair(tmp_path)
    st = js.with_suffix(".safetensors")
    st.write_bytes(st.read_bytes()[:-7])
    return js


def _wrong_hash(tmp_path):
    js = _pair(tmp_path)
    meta = json.loads(js.read_text())
    meta["tensors_sha256"] = "0" * 64
    js.write_text(json.dumps(meta))
    return js


def _malformed_hash(tmp_path):
    js = _pair(tmp_path)
    meta = json.loads(js.read_text())
    meta["tensors_sha256"] = 12345
    js.write_text(json.dumps(meta))
    return js


def _truncated_unhashed(tmp_path):
    js = _truncated(tmp_path)
    meta = json.loads(js.read_text())
    del meta["tensors_sha256"]
    js.write_text(json.dumps(meta))
    return js


def _not_safetensors(tmp_path):
    js = _pair(tmp_path)
    meta = json.loads(js.read_text())
    del meta["tensors_sha256"]
    js.write_text(json.dumps(meta))
    torch.save({"G.w": torch.ones(2)}, js.with_suffix(".safetensors"))  # a pickle in place of the tensors
    return js


@pytest.mark.parametrize(
    "make, why",
    [
        (_pickle_as_json, "is binary data, not a JSON model card"),
        (_json_list, "holds a JSON list, not a model card object"),
        (_json_text, "holds a JSON str, not a model card object"),
        (_broken_json, "is not valid JSON"),
        (_folder, "is a folder"),
        (_no_tensors, "has no tensor file: m.safetensors is missing"),
        (_truncated, "tensors do not match the recorded SHA-256"),
        (_wrong_hash, "tensors do not match the recorded SHA-256"),
        (_malformed_hash, "malformed tensors_sha256 12345"),
        (_truncated_unhashed, "is not a complete safetensors file"),
        (_not_safetensors, "is not a complete safetensors file"),
    ],
)
def test_anything_but_a_card_with_matching_tensors_is_not_a_checkpoint(tmp_path, make, why):
    path = make(tmp_path)
    with pytest.raises(NotACheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert message.startswith("Not a galaxygan checkpoint: ") and why in message
    assert path.stem in message  # the file is named


def test_the_cli_reports_a_pickle_without_a_traceback(tmp_path):
    path = _pickle_as_json(tmp_path)
    for cmd in (["info", str(path)], ["sample", str(path), "--out", str(tmp_path / "out")]):
        r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", *cmd], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "Not a galaxygan checkpoint:" in r.stderr and "x.json" in r.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ finite values


def test_find_nonfinite_counts_only_floating_tensors():
    tensors = {"a": torch.tensor([1.0, float("nan"), float("inf"), -float("inf")]),
               "b": torch.zeros(3), "c": torch.tensor([1, 2], dtype=torch.int64),
               "d": torch.tensor([float("nan")], dtype=torch.float16)}
    assert find_nonfinite(tensors) == {"a": 3, "d": 1}
    check_finite({"b": tensors["b"], "c": tensors["c"]}, where="ok")  # nothing raised


def test_check_finite_names_the_tensor_and_the_file():
    with pytest.raises(NonFiniteTensorError) as e:
        check_finite({"G.ok": torch.ones(2), "G.main.0.weight": torch.tensor([1.0, float("nan")])},
                     where="run/checkpoints/last.safetensors")
    message = str(e.value)
    assert message.startswith("run/checkpoints/last.safetensors: ")
    assert "G.main.0.weight (1 of 2 values)" in message and "G.ok" not in message


def test_check_finite_lists_at_most_five_tensors():
    tensors = {f"t{i}": torch.tensor([float("inf")]) for i in range(8)}
    with pytest.raises(NonFiniteTensorError, match=r"t4 \(1 of 1 values\) and 3 more"):
        check_finite(tensors)


@pytest.mark.parametrize("name", ["G_ema.main.0.weight", "opt_D.state.0.exp_avg_sq"])
def test_loading_refuses_non_finite_tensors(tmp_path, name):
    w = torch.ones(3)
    w[1] = float("nan") if name.startswith("G") else float("inf")
    js = save_checkpoint(tmp_path / "diverged", {"G.w": torch.ones(3), name: w}, {"arch": "dcgan"})
    with pytest.raises(NonFiniteTensorError, match=rf"{name} \(1 of 3 values\)"):
        load_checkpoint(js)
    tensors, _ = load_checkpoint(js, finite=False)  # still readable on purpose, e.g. to inspect it
    assert torch.isnan(tensors[name]).any() or torch.isinf(tensors[name]).any()


def test_a_good_pair_loads(tmp_path):
    js = _pair(tmp_path)
    tensors, meta = load_checkpoint(js)
    assert torch.equal(tensors["G.w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert meta["arch"] == "dcgan" and read_meta(js.with_suffix(".safetensors")) == meta


@pytest.mark.parametrize("killed_after", ["tensors", "json"])
def test_a_save_killed_between_its_steps_leaves_a_usable_pair(tmp_path, monkeypatch, killed_after):
    """The three steps of a save (tensors to .next, JSON, rename) stopped after step 1 or 2."""
    import galaxy_core.io.checkpoint as ck

    save_checkpoint(tmp_path / "last", {"G.w": torch.zeros(3)}, {"arch": "dcgan", "step": 1})

    class Killed(Exception):
        pass

    real_replace, real_json = ck.os.replace, ck.atomic_write_json

    def stop_json(path, obj):
        raise Killed

    def stop_rename(src, dst):  # only the save's last step: .next over the tensor file
        if str(src).endswith(".next"):
            raise Killed
        real_replace(src, dst)

    if killed_after == "tensors":
        monkeypatch.setattr(ck, "atomic_write_json", stop_json)
    else:
        monkeypatch.setattr(ck.os, "replace", stop_rename)
    with pytest.raises(Killed):
        save_checkpoint(tmp_path / "last", {"G.w": torch.ones(3)}, {"arch": "dcgan", "step": 2})
    monkeypatch.setattr(ck.os, "replace", real_replace)
    monkeypatch.setattr(ck, "atomic_write_json", real_json)
    tensors, meta = load_checkpoint(tmp_path / "last.json")
    if killed_after == "tensors":  # the JSON still names the old tensors: the old pair, whole
        assert meta["step"] == 1 and torch.equal(tensors["G.w"], torch.zeros(3))
    else:  # the JSON names the new tensors, still in .next: found, and the rename completed
        assert meta["step"] == 2 and torch.equal(tensors["G.w"], torch.ones(3))
        assert not (tmp_path / "last.safetensors.next").exists()
        assert load_checkpoint(tmp_path / "last.json")[1]["step"] == 2
    save_checkpoint(tmp_path / "last", {"G.w": torch.full((3,), 5.0)}, {"arch": "dcgan", "step": 3})
    assert load_checkpoint(tmp_path / "last.json")[1]["step"] == 3 and not (tmp_path / "last.safetensors.next").exists()


def test_shipped_cards_name_their_run_folder_relative_to_the_project():
    """A shipped card's provenance must make sense on a user's machine: the run folder is the
    project-relative ``runs/NAME``, never a path of the machine that trained it."""
    from pathlib import Path

    cards = sorted((Path(__file__).resolve().parents[1] / "checkpoints").glob("*.json"))
    runs = {c.name: json.loads(c.read_text()).get("training", {}).get("run") for c in cards}
    runs = {k: v for k, v in runs.items() if v is not None}
    assert len(runs) >= 10
    bad = {k: v for k, v in runs.items() if Path(v).is_absolute() or not v.startswith("runs/")}
    assert not bad, f"shipped cards with a machine-specific run folder: {bad}"


def test_a_checkpoint_name_with_dots_keeps_them(tmp_path):
    """``my_model.v2`` is the checkpoint ``my_model.v2.json`` + ``.safetensors`` (never
    ``my_model.json``), whichever of the three names is given."""
    import shutil

    from galaxy_core.io.checkpoint import checkpoint_paths
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir

    for given in ("my_model.v2", "my_model.v2.json", "my_model.v2.safetensors"):
        assert [p.name for p in checkpoint_paths(tmp_path / given)] == ["my_model.v2.safetensors", "my_model.v2.json"]
    for suffix in (".json", ".safetensors"):
        shutil.copy(checkpoints_dir() / f"dcgan_hdf32{suffix}", tmp_path / f"my_model.v2{suffix}")
    assert load_pretrained(tmp_path / "my_model.v2").path.name == "my_model.v2.json"


# ------------------------------------------------------------ hand-edited model cards


def _shipped_copy(tmp_path, edit, name="edited"):
    """A copy of the shipped dcgan_hdf32 pair in ``tmp_path`` whose card ``edit(meta)`` changed."""
    import shutil

    from galaxy_core.paths import checkpoints_dir

    src = checkpoints_dir() / "dcgan_hdf32"
    meta = json.loads(src.with_suffix(".json").read_text())
    edit(meta)
    card = tmp_path / f"{name}.json"
    card.write_text(json.dumps(meta))
    shutil.copy(src.with_suffix(".safetensors"), tmp_path / f"{name}.safetensors")
    return card


def _set_model(key, value):
    return lambda meta: meta["model"].__setitem__(key, value)


def _to_stylegan(meta):
    meta["arch"] = meta["model"]["arch"] = "stylegan"


_BAD_CARDS = [
    (_set_model("z_dim", 100.5), "model.z_dim must be an integer, not 100.5"),
    (_set_model("z_dim", "abc"), "model.z_dim must be an integer, not 'abc'"),
    (_set_model("z_dim", True), "model.z_dim must be an integer, not True"),
    (_set_model("z_dim", -5), "does not describe a buildable dcgan model: model.width, model.z_dim and model.num_bands must be positive"),
    (_set_model("resolution", 33), "does not describe a buildable dcgan model: model.resolution must be"),
    # shapes are compared on torch's meta device before anything is built: width 100000 would
    # otherwise allocate gigabytes before load_state_dict could object
    (_set_model("width", 100_000), "weights do not fit the dcgan model its card describes (G.main.0.weight is "
                                   "[100, 128, 4, 4] in the file but [100, 400000, 4, 4] in the model the card "
                                   "describes (15 more tensors differ))"),
    (_set_model("resolution", 64), "weights do not fit the dcgan model its card describes ("),
    (_to_stylegan, "does not describe a buildable stylegan model: model: unknown key(s) d_dropout, width"),
    (lambda m: m.__setitem__("arch", "nosuch"), "arch 'nosuch' is not a known architecture"),
    (lambda m: m.pop("arch"), "names no architecture ('arch')"),
    (lambda m: m["model"].__setitem__("arch", "stylegan"), "arch is 'dcgan' but model.arch is 'stylegan'"),
    (lambda m: m.__setitem__("data", "oops"), "malformed model card: 'data' must be a JSON object, not 'oops'"),
    (lambda m: m.__setitem__("model", [1]), "malformed model card: 'model' must be a JSON object, not [1]"),
    (lambda m: m.__setitem__("arch", [1]), "malformed model card: 'arch' must be a string, not [1]"),
    (lambda m: m["data"].__setitem__("channels", "RGB"), "data.channels must be a list of channel names"),
    (lambda m: m["data"].__setitem__("channels", [1, 2, 3]), "data.channels must be a list of channel names"),
    (lambda m: m["data"].__setitem__("channels", ["R", "G"]), "data.channels lists 2 channel(s) ['R', 'G'] but model.num_bands is 3"),
    (lambda m: m["data"].pop("channels"), "does not list the channels (data.channels)"),
    (lambda m: m["data"].__setitem__("kind", "grid"), "data.kind is 'grid' but a dcgan model makes images"),
    (lambda m: m["data"].__setitem__("stretch", {"type": "asinh"}), "data.stretch (asinh) cannot be used"),
    (lambda m: m["data"].__setitem__("stretch", "x"), "data.stretch must be a JSON object or null, not 'x'"),
]


def test_a_checkpoint_without_generator_weights_is_refused_before_building(tmp_path):
    from galaxy_core.io.checkpoint import load_checkpoint, save_checkpoint
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir

    tensors, meta = load_checkpoint(checkpoints_dir() / "dcgan_hdf32.json")
    only_d = {k: v for k, v in tensors.items() if not k.startswith("G")}
    assert only_d and len(only_d) < len(tensors)
    meta.pop("tensors_sha256", None)
    card = save_checkpoint(tmp_path / "no_g", only_d, meta)
    with pytest.raises(CheckpointError, match=r"no_g.json: the file holds no weights for G, the network that makes "
                                              r"the images \(tensors named G\.\* or G_ema\.\*\)"):
        load_pretrained(card)


@pytest.mark.parametrize("edit, why", _BAD_CARDS)
def test_loading_a_hand_edited_card_names_the_file_and_the_problem(tmp_path, edit, why):
    from galaxy_core.models.pretrained import load_pretrained

    card = _shipped_copy(tmp_path, edit)
    with pytest.raises(CheckpointError) as e:
        load_pretrained(card)
    message = str(e.value)
    assert message.startswith(f"{card}: ") and why in message, message


@pytest.mark.parametrize("edit, why", [_BAD_CARDS[i] for i in (0, 1, 3, 5, 7, 11, 12)])
def test_sample_with_a_hand_edited_card_is_a_clear_error(tmp_path, capsys, edit, why):
    from galaxy_core.cli import main

    card = _shipped_copy(tmp_path, edit)
    out = tmp_path / "out"
    assert main(["sample", str(card), "-n", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"galaxygan: error: {card}: " in err and why in err and "Traceback" not in err, err
    assert not out.exists()  # nothing was written


@pytest.mark.parametrize("edit, why", [
    (lambda m: m.__setitem__("data", "oops"), "'data' must be a JSON object, not 'oops'"),
    (lambda m: m.__setitem__("model", [1]), "'model' must be a JSON object, not [1]"),
    (lambda m: m.__setitem__("training", "x"), "'training' must be a JSON object, not 'x'"),
    (lambda m: m.__setitem__("metrics", [1]), "'metrics' must be a JSON object or null, not [1]"),
    (lambda m: m["training"].__setitem__("kimg", "many"), "a field cannot be shown"),
])
def test_info_with_a_malformed_card_is_a_clear_error(tmp_path, capsys, edit, why):
    from galaxy_core.cli import main

    card = _shipped_copy(tmp_path, edit)
    before = card.read_bytes()
    assert main(["info", str(card)]) == 2
    err = capsys.readouterr().err
    assert f"galaxygan: error: {card}: malformed model card: " in err and why in err, err
    assert card.read_bytes() == before  # the card is left as it was


@pytest.mark.parametrize("times, shown", [
    ({"wall_time_s": 1080.0, "cpu_time_s": 594.0}, "epochs on cpu; 18.0 min wall time, 9.9 min CPU time (24 img/s)"),
    ({"wall_time_s": 1080.0}, "epochs on cpu; 18.0 min wall time (24 img/s)"),  # a card from before cpu_time_s
])
def test_info_names_the_wall_time_and_the_cpu_time(tmp_path, capsys, times, shown):
    """The wall time once read "18.0 min on cpu", which reads as CPU time; each clock is named."""
    from galaxy_core.cli import main

    def edit(meta):
        meta["training"].pop("cpu_time_s", None)
        meta["training"].update(times)

    assert main(["info", str(_shipped_copy(tmp_path, edit))]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("training: "))
    assert line.endswith(shown), line


def test_info_describes_the_galaxy_encoder_in_its_own_terms(capsys):
    """The feature extractor's card has no generator fields: it once printed "data: None — None
    images, Nonepx" and "training: None steps"; it says what the encoder is, what it was trained
    on, its held-out R^2 and its references."""
    from galaxy_core.cli import main
    from galaxy_core.paths import checkpoints_dir

    card = checkpoints_dir() / "galaxy_encoder.json"
    meta = json.loads(card.read_text())
    assert main(["info", str(card)]) == 0
    out = capsys.readouterr().out
    assert "None" not in out and "Nonepx" not in out, out
    lines = out.splitlines()
    assert lines[0].startswith("galaxy_encoder: feature extractor (architecture galaxy_encoder: resolution=64")
    assert f"what: {meta['description']}" in lines
    assert "trained on sim: 9000 of 10000 images, g/r/i, 64 px; 1000 held out, last 10% of the images" in lines
    assert "trained on hdf: 300 of 375 images; 75 held out, every 5th stamp (index % 5 == 4)" in lines
    r2 = next(ln for ln in lines if ln.startswith("held-out R^2 on sim (the images as they are"))
    assert f"mag_r {meta['r2_heldout']['unaugmented']['mag_r']:.3f}" in r2 and "mag_r 0.984" in r2
    assert [ln.removeprefix("reference: ") for ln in lines if ln.startswith("reference: ")] == meta["references"]


def test_info_and_sample_of_a_bad_card_print_no_traceback(tmp_path):
    card = _shipped_copy(tmp_path, lambda m: m.__setitem__("data", "oops"))
    for cmd in (["info", str(card)], ["sample", str(card), "--out", str(tmp_path / "out")]):
        r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", *cmd], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert f"{card}: malformed model card: 'data' must be a JSON object" in r.stderr


def test_info_reads_the_card_without_importing_torch():
    """Printing a model card reads JSON only: ``galaxygan info`` must not pay torch's import
    (several CPU-seconds), in text or JSON form, and prints the card's note."""
    from galaxy_core.paths import checkpoints_dir

    card = checkpoints_dir() / "dcgan_hdf32.json"
    probe = ("import sys, runpy; sys.argv = ['galaxygan', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('galaxy_core.cli', run_name='__main__')\n"
             "except SystemExit as e:\n    code = e.code\n"
             "print('TORCH-IMPORTED' if 'torch' in sys.modules else 'NO-TORCH', code)")
    for extra in ([], ["--json"]):
        r = subprocess.run([sys.executable, "-c", probe, "info", str(card), *extra], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().splitlines()[-1] == "NO-TORCH 0", r.stdout[-500:]
        assert "Classroom preset" in r.stdout  # the card itself was printed


def test_output_into_a_closed_pipe_is_not_reported_as_a_path_error():
    """``galaxygan info X | head -1``: the reader leaving early is no fault of the user's paths,
    so no "galaxygan: error" and no traceback, only a non-zero status."""
    import os

    from galaxy_core.paths import checkpoints_dir

    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first write
    try:
        card = checkpoints_dir() / "dcgan_hdf32.json"
        r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "info", str(card)],
                           stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert r.returncode == 1, r.stderr
    assert "galaxygan: error" not in r.stderr and "Traceback" not in r.stderr and "Exception" not in r.stderr, r.stderr


def test_the_realism_scorer_is_named_as_such_not_as_a_foreign_file(capsys):
    """``checkpoints/`` also holds the sky's realism scorer: asked to load it as a model, the error
    says what it is instead of "written by another program"."""
    from galaxy_core.cli import main
    from galaxy_core.paths import checkpoints_dir

    scorer = checkpoints_dir() / "realism_hdf.json"
    assert main(["info", str(scorer)]) == 2
    err = capsys.readouterr().err
    assert f"Not a galaxygan checkpoint: {scorer} is a realism scorer (realism/2" in err, err
    assert "another program" not in err and "galaxygan sky experiments --scorer" in err


def test_init_from_a_card_without_arch_names_the_file(tmp_path):
    from galaxy_core.config import load_config
    from galaxy_core.train.loop import train

    card = _shipped_copy(tmp_path, lambda m: m.pop("arch"))
    cfg = load_config(None, ["data.dataset=hdf", "data.resolution=32", "model.arch=dcgan", "model.width=8",
                             "train.steps=1", "log.eval_every=0"])
    with pytest.raises(CheckpointError) as e:
        train(cfg, tmp_path / "run", init_from=str(card), progress=False)
    assert str(e.value).startswith(f"{card}: the model card names no architecture ('arch')")


def test_init_from_a_malformed_card_names_the_file(tmp_path):
    from galaxy_core.config import load_config
    from galaxy_core.train.loop import train

    card = _shipped_copy(tmp_path, lambda m: m.__setitem__("model", "dcgan"))
    cfg = load_config(None, ["data.dataset=hdf", "data.resolution=32", "model.arch=dcgan", "model.width=8",
                             "train.steps=1", "log.eval_every=0"])
    with pytest.raises(CheckpointError) as e:
        train(cfg, tmp_path / "run", init_from=str(card), progress=False)
    assert str(e.value).startswith(f"{card}: malformed model card: 'model' must be a JSON object")


# ------------------------------------------------------------------ checkpoints verify


def test_verify_reports_half_pairs_and_bad_cards_and_keeps_going(tmp_path, capsys):
    import shutil

    from galaxy_core.cli import main
    from galaxy_core.paths import checkpoints_dir

    good = _shipped_copy(tmp_path, lambda m: None, name="good")
    bad_data = _shipped_copy(tmp_path, lambda m: m.__setitem__("data", "oops"), name="a_bad_data")
    bad_z = _shipped_copy(tmp_path, _set_model("z_dim", 100.5), name="b_bad_z")
    card_only = _shipped_copy(tmp_path, lambda m: None, name="card_only")
    card_only.with_suffix(".safetensors").unlink()
    tensors_only = _shipped_copy(tmp_path, lambda m: None, name="tensors_only")
    tensors_only.unlink()
    for name in ("realism_hdf.json", "realism_hdf.npz", "galaxy_encoder.json", "galaxy_encoder.safetensors"):
        shutil.copy(checkpoints_dir() / name, tmp_path / name)  # not a GAN; the realism scorer not a checkpoint
    (tmp_path / "metrics.json").write_text('{"fid": 3.0}')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    assert main(["checkpoints", "verify", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    out = captured.out
    assert "Traceback" not in captured.err
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith(("ok", "FAIL"))}
    assert set(lines) == {str(good), str(bad_data), str(bad_z), str(card_only),
                          str(tensors_only.with_suffix(".safetensors")), str(tmp_path / "galaxy_encoder.json")}
    assert lines[str(good)].startswith("ok") and lines[str(tmp_path / "galaxy_encoder.json")].startswith("ok")
    assert lines[str(bad_data)].startswith("FAIL") and "'data' must be a JSON object, not 'oops'" in lines[str(bad_data)]
    assert lines[str(bad_z)].startswith("FAIL") and "model.z_dim must be an integer" in lines[str(bad_z)]
    assert lines[str(card_only)].startswith("FAIL") and "no card_only.safetensors beside it" in lines[str(card_only)]
    st_line = lines[str(tensors_only.with_suffix(".safetensors"))]
    assert st_line.startswith("FAIL") and "no tensors_only.json card" in st_line
    assert "2 of 6 checkpoints verified" in out
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing changed


def test_verify_without_a_folder_checks_the_shipped_checkpoints_from_any_directory(tmp_path, monkeypatch, capsys):
    """The default was ./checkpoints, so run from another folder it found nothing; it is now the
    shipped folder (paths.checkpoints_dir), named in the output."""
    from galaxy_core.cli import main

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    good = _shipped_copy(shipped, lambda m: None, name="good")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("GALAXYGAN_CHECKPOINTS", str(shipped))
    assert main(["checkpoints", "verify"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"checking {shipped}"
    assert lines[1].startswith(f"ok   {good} (gan/dcgan)") and lines[-1] == "1 of 1 checkpoints verified"


def test_verify_folder_finds_half_pairs_in_run_folders(tmp_path):
    from galaxy_core.models.pretrained import verify_folder

    run = tmp_path / "myrun" / "checkpoints"
    run.mkdir(parents=True)
    card = _shipped_copy(run, lambda m: None, name="last")
    card.with_suffix(".safetensors").unlink()
    results = verify_folder(tmp_path)
    assert [(r["path"], r["ok"], r["kind"], r["arch"]) for r in results] == [(str(card), False, "gan", "dcgan")]
    assert results[0]["problem"].startswith(f"{card}: no last.safetensors beside it")


@pytest.mark.parametrize("arch", known_archs())
def test_the_shape_check_builds_every_family_with_the_real_networks_shapes(arch):
    # The shape check builds the networks on meta with their random fills skipped; the tensors
    # it compares must have exactly the names and shapes a real build gives.
    from galaxy_core.models.pretrained import _ShapesOnlyOnMeta

    family, cfg = get_arch(arch), make_config(arch, {})
    with torch.device("meta"), _ShapesOnlyOnMeta():
        ghosts = family.build(cfg)
    real = family.build(cfg)
    assert set(ghosts) == set(real)
    for name, net in real.items():
        want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in ghosts[name].state_dict().items()} == want, name
        assert all(v.is_meta for v in ghosts[name].state_dict().values())

"""Faults and bad input, as a table: each case is a reproduction and the exact outcome it must have (the same weights
as an uninterrupted run, a one-line error naming the file or setting with exit code 2, nothing lost)."""
import json
import os
import re
import socket
import stat
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from _shared import Stop, free_port, stop_at, weights
import dropclass.data.io as io_module
import dropclass.build as build_module
import dropclass.checkpoints as checkpoints_module
import dropclass.train as train_module
from dropclass.cli import main as cli
from dropclass.core import DropClass
from dropclass.losses import DropClassLoss, DropSchedule
from dropclass.data.datasets import CityscapesSegmentation
from dropclass.data.synthetic import write_synthetic
from dropclass.build import build_model
from dropclass.checkpoints import load_checkpoint, load_model, save_checkpoint
from dropclass.config import config_from
from dropclass.train import prepare_run, train


def one_line_error(argv, capsys, message):
    "Run the CLI on argv: exit code 2, one line on stderr that contains `message`, no traceback."
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and message in err, err
    return err


# ------------------------------------------------------------------------------------------ resume, on every family
SMALL = {"train_length": 16, "eval_length": 4, "diag_length": 2, "crop_size": (64, 128), "batch_size": 4, "eval_batch_size": 4,
         "max_iters": 6, "ckpt_every": 2, "log_every": 1, "progress": False}
FAMILIES = {  # preset, settings: an smp model with dropout and BatchNorm (both methods), and the tiny group-norm net
    "fpn-dropout-bn-baseline": ("demo-quick", {"method": "baseline"}),
    "fpn-dropout-bn-dropclass": ("demo-quick", {"method": "dropclass"}),
    "tiny-dropclass": ("tiny", {"method": "dropclass"}),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_after_a_kill_gives_the_weights_of_an_uninterrupted_run(family, tmp_path):
    preset, kw = FAMILIES[family]
    cfg = lambda name: config_from(preset, {**SMALL, **kw, "out_dir": str(tmp_path / name)})
    if preset == "demo-quick":  # FPN: dropout in the decoder, BatchNorm in the encoder and the decoder
        modules = [type(m).__name__ for m in build_model(cfg("probe"), 19).modules()]
        assert "Dropout2d" in modules or "Dropout" in modules and "BatchNorm2d" in modules
    train(cfg("full"))
    with pytest.raises(Stop): train(cfg("cut"), callbacks=[stop_at(3)])  # killed after iteration 3: last.pt is at 2
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["step"] == 2
    train(cfg("cut"))
    a, b = weights(tmp_path / "full" / "last.pt"), weights(tmp_path / "cut" / "last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    history = [json.loads(l) for l in (tmp_path / "cut" / "history.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in history if "ce" in e]
    assert steps == sorted(set(steps)) == list(range(1, 7))  # no step logged twice after the resume


def test_a_cached_class_statistics_file_does_not_change_the_model(tmp_path):
    kw = {**SMALL, "class_weights": "median", "method": "dropclass"}
    first = prepare_run(config_from("tiny", {**kw, "out_dir": str(tmp_path / "a")}))
    assert (tmp_path / "a" / "class_stats.json").is_file()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "class_stats.json").write_bytes((tmp_path / "a" / "class_stats.json").read_bytes())
    cached = prepare_run(config_from("tiny", {**kw, "out_dir": str(tmp_path / "b")}))
    a, b = first.model.state_dict(), cached.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    images = lambda run: next(run.batches)[0]
    assert torch.equal(images(first), images(cached))


# ----------------------------------------------------------------------------------------- weights that do not fit
def _resnet_file(tmp_path, name, drop_prefix=None):
    import torchvision
    sd = getattr(torchvision.models, name)(weights=None).state_dict()
    if drop_prefix: sd = {k: v for k, v in sd.items() if not k.startswith(drop_prefix)}
    path = tmp_path / f"{name}.pth"
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("source, drop, message", [
    # every resnet18 tensor fits by name and shape: the extra blocks tell
    ("resnet34", None, "tensors of the file are not in it"),
    ("resnet18", "layer4.1.", "10 of its 100 tensors are missing"),
])
def test_encoder_weights_of_another_network_are_refused(source, drop, message, tmp_path):
    path = _resnet_file(tmp_path, source, drop)
    with pytest.raises(ValueError, match=message): build_model(config_from(None, {"encoder_weights": str(path), "method": "baseline"}), 19)


def test_the_right_encoder_weights_load_every_tensor(tmp_path):
    path = _resnet_file(tmp_path, "resnet18")
    model = build_model(config_from(None, {"encoder_weights": str(path), "method": "baseline", "init_std": None}), 19)
    src = torch.load(path)
    assert torch.equal(model.encoder.state_dict()["layer4.1.conv2.weight"], src["layer4.1.conv2.weight"])


# ------------------------------------------------------------------------------------------------ NaN weights
def _nan_checkpoint(tmp_path):
    cfg = config_from("tiny", {**SMALL, "max_iters": 2, "out_dir": str(tmp_path / "run")})
    train(cfg)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    state["model"] = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state["model"].items()}
    save_checkpoint(tmp_path / "run" / "nan.pt", {k: v for k, v in state.items() if k != "dropclass_checkpoint"})
    return tmp_path / "run" / "nan.pt"


def test_nan_weights_are_an_error_at_load_and_in_eval(tmp_path, capsys):
    path = _nan_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="NaN or infinite weights"): load_model(path)
    one_line_error(["eval", "--checkpoint", str(path)], capsys, "NaN or infinite weights")


def test_nan_logits_are_an_error_in_evaluation(tmp_path):
    from dropclass.metrics import evaluate
    model = torch.nn.Conv2d(3, 2, 1)
    with torch.no_grad(): model.weight.fill_(float("nan"))
    batch = [(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))]
    with pytest.raises(ValueError, match="NaN or infinite logits"): evaluate(model, batch, 2, progress=False)


# ------------------------------------------------------------------------------------------------ label files
@pytest.fixture
def cityscapes(tmp_path):
    root = tmp_path / "cs"
    for split in ("train", "val"): write_synthetic(root, split, length=2, size=(32, 64), progress=False)
    return root


def _label_file(root, split="val"):
    return sorted((root / "gtFine" / split).rglob("*_labelIds.png"))[0]


def test_a_label_value_that_is_no_label_id_fails_naming_the_file(cityscapes):
    path = _label_file(cityscapes)
    mask = np.array(Image.open(path)); mask[0, :5] = 200
    Image.fromarray(mask).save(path)
    with pytest.raises(ValueError, match=rf"{path.name}: 5 pixels have label values \[200\]"):
        CityscapesSegmentation(cityscapes, "val")[0]
    with pytest.warns(UserWarning, match="5 pixels"):
        mask = CityscapesSegmentation(cityscapes, "val", unknown_labels="warn")[0][1]
    assert (mask[0, :5] == 255).all()


def test_a_16_bit_label_file_fails(cityscapes):
    path = _label_file(cityscapes)
    mask = np.array(Image.open(path)).astype(np.uint16) * 256  # values scaled as a 16-bit export would
    Image.fromarray(mask).save(path)
    with pytest.raises(ValueError, match="16-bit"): CityscapesSegmentation(cityscapes, "val")[0]


def test_an_image_smaller_than_its_label_fails_before_training(cityscapes, tmp_path, capsys):
    image = sorted((cityscapes / "leftImg8bit" / "val").rglob("*.png"))[0]
    Image.open(image).resize((32, 16)).save(image)
    with pytest.raises(ValueError, match=f"{image.name} is 32x16 but its label"): CityscapesSegmentation(cityscapes, "val")[0]
    one_line_error(["train", "--config", "tiny", "--set", "dataset=cityscapes", "--set", f"data_root={cityscapes}",
                    "--set", "eval_splits=", "--set", "train_length=2", "--out", str(tmp_path / "run")], capsys,
                   f"differ in size from their labels (e.g. {image.name} 32x16")
    assert not (tmp_path / "run" / "last.pt").exists()


# -------------------------------------------------------------------------------- bad input through the CLI: one line
def _json(tmp_path, value):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(value))
    return str(path)


CLI_CASES = [  # (argv, or a function of tmp_path giving it; the message)
    (["train", "--config", "tiny", "--set", "alpha=-5"], "alpha must be at least 0"),
    (["train", "--config", "tiny", "--set", "eval_every=-5"], "eval_every must be at least 0"),
    (["train", "--config", "tiny", "--set", "iters_per_epoch=0"], "iters_per_epoch must be at least 1"),
    (["train", "--config", "demo-quick", "--set", "model_args={\"decoder_channels\": 8}"], "FPN does not take: decoder_channels"),
    (["train", "--config", "demo-quick", "--set", "momentum=0.5"], "momentum applies to optimizer='sgd' only"),
    (["train", "--config", "tiny", "--set", "poly_power=-1"], "poly_power must be at least 0"),
    (["train", "--config", "tiny", "--set", "device=tpu"], "device must be"),
    (["train", "--config", "tiny", "--set", "max_iters=abc"], "max_iters"),
    (["train", "--config", "tiny", "--set", "encoder_weights=/tmp/w.pth"], "encoder_weights must be None for arch='tiny'"),
    (["train", "--config", "tiny", "--set", "arch=NoSuchNet"], "FPN, Linknet, MAnet, PAN, PSPNet"),
    (lambda t: ["train", "--config", _json(t, [1, 2])], "holds a JSON list"),
    (lambda t: ["train", "--config", _json(t, {"lr": "0.1"})], "lr must be a number; got '0.1'"),
    (lambda t: ["train", "--config", _json(t, {"alpha": "10"})], "alpha must be a number; got '10'"),
    (["demo", "--quick", "--set", "method=baseline"], "the demo sets method itself"),
    # NaN and inf pass every comparison, so each numeric setting checks for them on its own
    (["train", "--config", "tiny", "--set", "init_std=nan"], "init_std must be a finite number"),
    (["train", "--config", "tiny", "--set", "compensation_init_std=nan"], "compensation_init_std must be a finite number"),
    (["train", "--config", "tiny", "--set", "compensation_momentum=nan"], "compensation_momentum must be a finite number"),
    (["train", "--config", "tiny", "--set", "poly_power=nan"], "poly_power must be a finite number"),
    (["train", "--config", "tiny", "--set", "lr=inf"], "lr must be a finite number"),
    (["train", "--config", "tiny", "--set", "seed=100000000000000"], "seed must be in [0, 4294967295]"),
    (["train", "--config", "tiny", "--set", "device=meta"], "device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'; got 'meta'"),
    (["train", "--config", "tiny", "--set", "device=mps"], "device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'; got 'mps'"),
    (["explore", "--length", "0", "--no-browser"], "length must be at least 1 scene"),
]


@pytest.mark.parametrize("case", range(len(CLI_CASES)), ids=[str(c[1])[:40] for c in CLI_CASES])
def test_bad_settings_are_one_line_with_exit_code_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, message = CLI_CASES[case]
    one_line_error(argv(tmp_path) if callable(argv) else argv, capsys, message)
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_eval_refuses_settings_of_the_model(tmp_path, capsys):
    train(config_from("tiny", {**SMALL, "max_iters": 2, "out_dir": str(tmp_path / "run")}))
    one_line_error(["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--set", "arch=FPN"], capsys,
                   "arch cannot change here")


def test_an_empty_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"")
    one_line_error(["train", "--config", "tiny", "--out", str(tmp_path / "run")], capsys, "is not a readable checkpoint")
    one_line_error(["eval", "--checkpoint", str(tmp_path / "run" / "last.pt")], capsys, "is empty, truncated, corrupt")


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["train", "--config", "tiny", "--set", "train_length=16", "--set", "eval_length=4", "--set", "ckpt_every=2",
            "--out", str(out), "--quiet"]
    assert cli(argv + ["--set", "max_iters=2"]) == 0
    capsys.readouterr()
    before = (out / "last.pt").read_bytes()
    real = io_module.atomic_write_bytes
    def full(path, data):
        if str(path).endswith(".pt"): raise OSError(28, "No space left on device")
        return real(path, data)
    monkeypatch.setattr(checkpoints_module, "atomic_write_bytes", full)
    one_line_error(argv + ["--set", "max_iters=4"], capsys, "No space left on device); the previous checkpoint there is unchanged")
    assert (out / "last.pt").read_bytes() == before


def test_float64_images_into_dropclass_say_what_to_do():
    model = build_model(config_from("tiny"), 19).eval()
    with pytest.raises(ValueError, match=r"torch.float64 but the model is torch.float32: convert them with x.to"):
        model(torch.randn(1, 3, 32, 64, dtype=torch.float64))


def test_a_nan_image_stops_training_naming_the_data_and_the_1_based_iteration(tmp_path, monkeypatch):
    from dropclass.sampling import SeededAugment
    real = SeededAugment.__getitem__
    def poisoned(self, key):
        image, mask = real(self, key)
        return image.fill_(float("nan")) if key[1] == 4 else image, mask  # the first sample of iteration 2
    monkeypatch.setattr(SeededAugment, "__getitem__", poisoned)
    with pytest.raises(FloatingPointError, match="input images of iteration 2 hold NaN"):
        train(config_from("tiny", {**SMALL, "out_dir": str(tmp_path / "run")}))


def _train_on(cityscapes, tmp_path, *extra):
    return ["train", "--config", "tiny", "--set", "dataset=cityscapes", "--set", f"data_root={cityscapes}", "--set", "eval_splits=",
            "--set", "train_length=2", "--set", "max_iters=2", *extra, "--out", str(tmp_path / "run")]


@pytest.mark.parametrize("damage", ["truncated image", "truncated label", "RGB label"])
def test_a_bad_val_file_fails_before_training(damage, cityscapes, tmp_path, capsys):
    images = sorted((cityscapes / "leftImg8bit" / "val").rglob("*.png"))
    path = images[-1] if "image" in damage else _label_file(cityscapes).with_name(
        images[-1].name.replace("leftImg8bit", "gtFine_labelIds"))
    if damage.startswith("truncated"): path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 2 // 3])
    else: Image.open(path).convert("RGB").save(path)
    message = "truncated or corrupt" if damage.startswith("truncated") else "is a RGB image with 3 channels"
    err = one_line_error(_train_on(cityscapes, tmp_path), capsys, message)
    assert path.name in err
    assert not (tmp_path / "run" / "last.pt").exists()  # refused before the first iteration


@pytest.mark.parametrize("settings, message", [
    (['dataset_args={"size": [72, 136]}'], "the val split is 72x136 (HxW), but FPN needs a height and width divisible by 32: use a size such as 96x160"),
    (["crop_size=100x200"], "the training crop is 100x200 (HxW), but FPN needs a height and width divisible by 32"),
])
def test_sizes_the_model_cannot_take_fail_before_training(settings, message, tmp_path, capsys):
    argv = ["train", "--config", "demo-quick", "--set", "encoder_weights=None", "--set", "train_length=8", "--set", "eval_length=4",
            "--set", "max_iters=2", *[a for s in settings for a in ("--set", s)], "--out", str(tmp_path / "run")]
    one_line_error(argv, capsys, message)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_the_last_checkpoint_is_written_before_the_final_evaluation(tmp_path, monkeypatch):
    cfg = config_from("tiny", {**SMALL, "max_iters": 3, "ckpt_every": 2, "out_dir": str(tmp_path / "run")})
    real = train_module.evaluate_split
    def broken(*a, **k): raise ValueError("a val file went bad during training")
    monkeypatch.setattr(train_module, "evaluate_split", broken)
    with pytest.raises(ValueError, match="went bad"): train(cfg)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 3  # the training is kept
    monkeypatch.setattr(train_module, "evaluate_split", real)
    calls = []
    monkeypatch.setattr(train_module, "train_step", lambda *a: calls.append(a))
    metrics = train(cfg)  # evaluates the trained model, trains nothing
    assert not calls and metrics["splits"]["val"]["miou"] >= 0 and (tmp_path / "run" / "metrics.json").is_file()


def test_a_data_error_in_a_worker_is_one_line(cityscapes, tmp_path, capsys):
    path = _label_file(cityscapes, "train")
    mask = np.array(Image.open(path)); mask[0, :5] = 200
    Image.fromarray(mask).save(path)
    one_line_error(_train_on(cityscapes, tmp_path, "--set", "num_workers=1", "--set", "batch_size=2"), capsys,
                   "5 pixels have label values [200]")


@pytest.mark.parametrize("state, message", [({"dropclass_checkpoint": "1"}, "checkpoint format '1', not a number"),
                                            ({"dropclass_checkpoint": 1}, "without 'model' and 'config'")])
def test_a_checkpoint_with_a_bad_header_is_one_line(state, message, tmp_path, capsys):
    torch.save(state, tmp_path / "last.pt")
    one_line_error(["eval", "--checkpoint", str(tmp_path / "last.pt")], capsys, message)


def test_explore_checks_its_checkpoints_before_serving(tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"xx")
    one_line_error(["explore", "--baseline", str(tmp_path / "bad.pt"), "--dropclass", str(tmp_path / "bad.pt"), "--no-browser",
                    "--port", str(free_port())], capsys, "is not a readable checkpoint")


# ------------------------------------------------------------------------------------------------ housekeeping
def test_stale_temporary_files_are_removed_when_a_run_starts(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".last.pt.abc123.tmp").write_bytes(b"x" * 1000)  # a write killed half way
    train(config_from("tiny", {**SMALL, "max_iters": 2, "out_dir": str(out)}))
    assert not list(out.glob(".*.tmp"))


def test_only_the_runs_own_temporaries_are_removed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".notes.txt.tmp").write_text("a user's file")  # not a file of the run: kept
    (out / ".history.jsonl.x1y2.tmp").write_text("{")  # a write of the run killed half way: removed
    train(config_from("tiny", {**SMALL, "max_iters": 2, "out_dir": str(out)}))
    assert (out / ".notes.txt.tmp").read_text() == "a user's file" and not (out / ".history.jsonl.x1y2.tmp").exists()


def test_a_partial_last_history_line_does_not_block_resume(tmp_path):
    cfg = config_from("tiny", {**SMALL, "out_dir": str(tmp_path / "run")})
    with pytest.raises(Stop): train(cfg, callbacks=[stop_at(3)])
    history = tmp_path / "run" / "history.jsonl"
    history.write_text(history.read_text() + '{"step": 4, "lr": 0.00')  # killed during an append
    train(cfg)
    steps = [json.loads(l)["step"] for l in history.read_text().splitlines() if '"ce"' in l]
    assert steps == list(range(1, 7))
    history.write_text('{"step": 1}\nnot json\n{"step": 2}\n')  # a bad line in the middle is not guessed at
    with pytest.raises(ValueError, match=r"history.jsonl, line 2, is not JSON"): checkpoints_module.read_history(history)


def test_resume_false_starts_a_new_run_without_the_old_files(tmp_path):
    out = tmp_path / "run"
    kw = {**SMALL, "class_weights": "median", "max_iters": 2, "out_dir": str(out)}
    train(config_from("tiny", {**kw, "train_length": 16}))
    fresh = train(config_from("tiny", {**kw, "train_length": 48, "out_dir": str(tmp_path / "fresh")}))
    again = train(config_from("tiny", {**kw, "train_length": 48, "resume": False}))
    assert json.loads((out / "class_stats.json").read_text())["counts"].__len__() == 48  # counted again, not reused
    assert again["splits"]["val"]["miou"] == fresh["splits"]["val"]["miou"]  # the same as a run in a new folder
    steps = [json.loads(l)["step"] for l in (out / "history.jsonl").read_text().splitlines() if '"ce"' in l]
    assert steps == [1, 2]  # the old run's entries are gone, not appended to


def test_a_second_writer_to_a_run_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    # holds the folder, as a training in progress
    first = prepare_run(config_from("tiny", {**SMALL, "out_dir": str(out)}))
    try:
        one_line_error(["train", "--config", "tiny", "--out", str(out)], capsys, f"another training is writing to {out}")
    finally:
        first.release()
    train(config_from("tiny", {**SMALL, "max_iters": 2, "out_dir": str(out)}))  # free again


@pytest.mark.parametrize("argv", [["train", "--config", "tiny", "--out", ""], ["train", "--config", "tiny", "--set", "out_dir="]])
def test_an_empty_run_folder_is_refused(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(argv, capsys, "out_dir must name a folder")
    assert not list(tmp_path.iterdir())


def test_a_failed_child_training_is_one_line(tmp_path, capsys):
    err = one_line_error(["demo", "--quick", "--quiet", "--out", str(tmp_path / "demo"), "--set", "train_length=16",
                          "--set", "batch_size=32"], capsys, "fewer than one global batch of 32")
    assert "failed (exit code 2)" in err and "train.log" in err


def test_files_are_written_with_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try: path = io_module.atomic_write_bytes(tmp_path / "f.json", b"{}")
    finally: os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_final_best_checkpoint_is_the_same_file_as_last(tmp_path):
    out = tmp_path / "run"
    metrics = train(config_from("tiny", {**SMALL, "max_iters": 2, "out_dir": str(out)}))
    assert metrics["best"]["step"] == 2
    assert os.path.samefile(out / "best.pt", out / "last.pt")


def test_rerunning_a_finished_run_says_so(tmp_path, capsys):
    argv = ["train", "--config", "tiny", "--set", "max_iters=2", "--set", "train_length=16", "--set", "eval_length=4",
            "--out", str(tmp_path / "run")]
    assert cli(argv) == 0
    capsys.readouterr()
    assert cli(argv) == 0
    assert "is already trained (2 iterations)" in capsys.readouterr().out


def test_eval_prints_n_a_for_a_class_absent_from_the_split(tmp_path, capsys):
    train(config_from("tiny", {**SMALL, "max_iters": 2, "out_dir": str(tmp_path / "run")}))
    capsys.readouterr()
    assert cli(["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--set", "eval_length=1", "--quiet"]) == 0
    per_class = capsys.readouterr().out.splitlines()[1]  # the IoU of every class
    assert "n/a" in per_class and "nan" not in per_class


def test_the_explorer_port_is_free_again_right_after_a_server_stops():
    from dropclass.app import _check_port
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("localhost", 0)); server.listen(1)
    port = server.getsockname()[1]
    client = socket.create_connection(("localhost", port))
    conn, _ = server.accept()
    conn.close(); server.close()  # the server side closes first: its port waits in TIME_WAIT
    client.close()
    _check_port(port)  # no "port in use"


def test_drop_prob_refuses_nan():
    model = build_model(config_from("tiny", {"method": "dropclass"}), 19)
    with pytest.raises(ValueError, match="drop_prob must be a finite number"): model.drop_prob = float("nan")


# ------------------------------------------------------------------------------------------------ the Python API
def _drop_output(C=5, B=2, h=4, w=8):
    model = DropClass(features=torch.nn.Conv2d(3, 6, 1), classifier=torch.nn.Conv2d(6, C, 1))
    model.train(); model.drop_prob = 1.0
    return model, model(torch.randn(B, 3, h, w))


@pytest.mark.parametrize("make, error, message", [
    (lambda: DropClassLoss(alpha=-1.0), ValueError, "alpha (the weight of L_sup, Eq. 9) must be a finite number >= 0"),
    (lambda: DropClassLoss(alpha=float("nan")), ValueError, "alpha"),
    (lambda: DropClassLoss(weight=torch.ones(30))(_drop_output()[1], torch.zeros(2, 16, 32, dtype=torch.long), lam=0.5),
     ValueError, "weight has 30 class weights, but the logits have 5 classes"),
    (lambda: DropClassLoss(weight=torch.ones(3))(_drop_output()[1], torch.zeros(2, 16, 32, dtype=torch.long), lam=0.5),
     ValueError, "weight has 3 class weights"),
    (lambda: DropClassLoss()(_drop_output()[1], torch.zeros(2, 32, 16, dtype=torch.long), lam=0.5),
     ValueError, "labels are 32x16 but the logits 4x8"),
    (lambda: DropClassLoss()(_drop_output()[0].eval()(torch.randn(2, 3, 4, 8)), torch.zeros(2, 4, 8, dtype=torch.long), lam=0.5),
     TypeError, "call model.train() first"),
    (lambda: DropSchedule(100, iters_per_epoch=200), ValueError, "is longer than the whole run (100 iterations), so p and lambda"),
])
def test_the_python_api_refuses_what_would_go_wrong_silently(make, error, message):
    with pytest.raises(error, match=re.escape(message)): make()


def test_a_scaled_label_is_still_accepted():
    out = _drop_output()[1]
    loss, parts = DropClassLoss()(out, torch.zeros(2, 16, 32, dtype=torch.long), lam=0.5)  # 4x the logits' size
    assert torch.isfinite(loss)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_compensation_layer_is_made_where_the_model_is():
    model = DropClass(features=torch.nn.Conv2d(3, 6, 1).cuda(), classifier=torch.nn.Conv2d(6, 5, 1).cuda())
    assert all(p.is_cuda for p in model.compensate.parameters())


def test_the_compensation_layer_takes_the_models_dtype():
    model = DropClass(features=torch.nn.Conv2d(3, 6, 1).double(), classifier=torch.nn.Conv2d(6, 5, 1).double())
    assert all(p.dtype == torch.float64 for p in model.compensate.parameters())


# ------------------------------------------------------------------------------------------------ small ones
@pytest.fixture
def tiny_run(tmp_path):
    train(config_from("tiny", {**SMALL, "max_iters": 6, "out_dir": str(tmp_path / "run")}))
    return tmp_path / "run"


def test_eval_refuses_a_drop_branch_for_a_baseline(tmp_path, capsys):
    train(config_from("tiny", {**SMALL, "method": "baseline", "max_iters": 2, "out_dir": str(tmp_path / "run")}))
    one_line_error(["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--set", "inference=drop"], capsys,
                   "holds a baseline model, which has no drop branch")


def test_eval_and_load_model_both_ignore_settings_newer_than_this_version(tiny_run, capsys):
    state = load_checkpoint(tiny_run / "last.pt")
    state["config"]["a_setting_of_a_later_version"] = 1
    save_checkpoint(tiny_run / "newer.pt", state)
    load_model(tiny_run / "newer.pt")
    assert cli(["eval", "--checkpoint", str(tiny_run / "newer.pt"), "--quiet"]) == 0
    assert "val: mIoU" in capsys.readouterr().out


def test_a_run_with_more_iterations_than_asked_says_how_many(tiny_run, capsys):
    train(config_from("tiny", {**SMALL, "max_iters": 4, "out_dir": str(tiny_run)}))
    assert "already trained (6 iterations, more than the max_iters=4 asked for)" in capsys.readouterr().out


def test_a_corrupt_metrics_file_is_named(tiny_run, capsys):
    (tiny_run / "metrics.json").write_text('{"config": {')
    one_line_error(["train", "--config", "tiny", "--set", "max_iters=6", "--set", "train_length=16", "--set", "eval_length=4",
                    "--set", "diag_length=2", "--set", "crop_size=64x128", "--set", "batch_size=4", "--set", "eval_batch_size=4",
                    "--set", "ckpt_every=2", "--set", "log_every=1", "--out", str(tiny_run)], capsys,
                   f"{tiny_run / 'metrics.json'} is not valid JSON")


def test_data_root_once(tmp_path, capsys):
    one_line_error(["train", "--config", "tiny", "--set", "dataset=cityscapes", "--data-root", str(tmp_path), "--set",
                    f"data_root={tmp_path}"], capsys, "give the dataset folder once")
    (tmp_path / "file").write_text("x")
    one_line_error(["train", "--config", "tiny", "--set", "dataset=cityscapes", "--data-root", str(tmp_path / "file"),
                    "--out", str(tmp_path / "run")], capsys, "is a file, not a folder")


def test_a_resampled_class_that_does_not_exist_is_refused_before_counting(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(build_module, "class_statistics", lambda *a, **k: pytest.fail("counted before the check"))
    one_line_error(["train", "--config", "tiny", "--set", "resample=class:nosuch:2", "--out", str(tmp_path / "run")], capsys,
                   "resample names the class 'nosuch', which synthetic does not have")


# ------------------------------------------------------------------------------------------------ sets of runs
def test_a_set_of_runs_refuses_finished_runs_with_other_settings(tmp_path, capsys):
    base = ["compare", "--preset", "tiny", "--seeds", "0", "1", "--jobs", "1", "--bias-scenes", "0", "--quiet", "--runs",
            str(tmp_path / "R"), "--set", "train_length=16", "--set", "eval_length=4", "--set", "max_iters=2"]
    assert cli(base) == 0
    first = json.loads((tmp_path / "R" / "comparison.json").read_text())
    capsys.readouterr()
    one_line_error(base + ["--set", "max_iters=4", "--set", "lr=0.1"], capsys, "were trained with other settings than asked for")
    assert json.loads((tmp_path / "R" / "comparison.json").read_text()) == first  # the report was not rewritten
    one_line_error(["ablate", "--preset", "tiny", "--seeds", "0", "1", "--variants", "baseline", "dropclass", "--quiet", "--runs",
                    str(tmp_path / "R"), "--set", "train_length=16", "--set", "eval_length=4", "--set", "max_iters=4"], capsys,
                   "were trained with other settings than asked for")


def test_repeated_seeds_are_refused(tmp_path, capsys):
    one_line_error(["ablate", "--preset", "tiny", "--seeds", "0", "0", "--runs", str(tmp_path / "A")], capsys, "seeds must differ")
    with pytest.raises(SystemExit) as e: cli(["compare", "--preset", "tiny", "--seeds", "0", "0", "--runs", str(tmp_path / "C")])
    assert e.value.code == 2  # argparse's usage error
    assert "--seeds must differ" in capsys.readouterr().err and not (tmp_path / "C").exists()


def test_a_comparison_stopped_part_way_keeps_its_finished_seeds(tmp_path, monkeypatch):
    import dropclass.experiments as ex
    real, runs = ex.train_runs, tmp_path / "R"

    def stop_at_seed_1(cfgs, *a, **k):
        if any(name.startswith("seed1/") for name in cfgs): raise KeyboardInterrupt  # a stop while seed 1 trains
        return real(cfgs, *a, **k)

    monkeypatch.setattr(ex, "train_runs", stop_at_seed_1)
    with pytest.raises(KeyboardInterrupt):
        ex.compare_methods("tiny", [0, 1], runs, ["train_length=16", "eval_length=4", "max_iters=2"], jobs=2, bias_scenes=2,
                           progress=False)
    assert (runs / "seed0" / "dropclass" / "plain.json").is_file()  # seed 0 was read through h(A)...
    assert "seed0" in json.loads((runs / "bias_2.json").read_text())  # ... and on I* before seed 1 started
    # its weights gone, as on a new machine
    for m in ("baseline", "dropclass"): (runs / "seed0" / m / "last.pt").unlink()
    monkeypatch.setattr(ex, "train_runs", real)
    checked, check = [], ex.check_reusable
    monkeypatch.setattr(ex, "check_reusable", lambda cfgs: (checked.append(sorted(cfgs)), check(cfgs))[1])
    result = ex.compare_methods("tiny", [0, 1], runs, ["train_length=16", "eval_length=4", "max_iters=2"], jobs=2,
                                bias_scenes=2, progress=False)
    assert set(result["per_seed"]) == {0, 1} and "I*" in result["per_seed"][0]
    # once, every seed, up front
    assert checked == [["seed0/baseline", "seed0/dropclass", "seed1/baseline", "seed1/dropclass"]]

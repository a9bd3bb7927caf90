"""The data_tools command-line tools end to end at tiny size: help, outputs, resumption, clear errors."""
import json
import subprocess
import sys

import pytest
import torch

from data_tools import build_unbiased, class_stats, resample_list, write_synthetic
from data_tools._cli import run
from dropclass.data.balance import ClassStats, read_index_list
from dropclass.data.datasets import CityscapesSegmentation
from dropclass.data.synthetic import RIDER, SyntheticStreets

TOOLS = [write_synthetic, class_stats, build_unbiased, resample_list]


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.__name__.split(".")[-1])
def test_help(tool):
    out = subprocess.run([sys.executable, "-m", tool.__name__, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: python -m " + tool.__name__ in out.stdout and "--out" in out.stdout


def test_pipeline_from_synthetic_scenes_on_disk(tmp_path, capsys):
    root = tmp_path / "synthetic"
    assert run(write_synthetic.main, ["--out", str(root), "--length", "6", "--size", "64x128", "--quiet"]) == 0
    cs = CityscapesSegmentation(root, "train")
    assert len(cs) == 6 and len(CityscapesSegmentation(root / "counterfactual", "val")) == 6
    gen = SyntheticStreets(length=6, size=(64, 128))
    assert torch.equal(cs.load_mask(3), gen.load_mask(3))

    stats_file, weights_file = tmp_path / "stats.json", tmp_path / "weights.json"
    assert run(class_stats.main, ["--dataset", "cityscapes", "--root", str(root), "--out", str(stats_file),
                                  "--weights-out", str(weights_file), "--quiet"]) == 0
    stats = ClassStats.from_json(stats_file.read_text())
    expected = torch.stack([torch.bincount(gen.load_mask(i).flatten(), minlength=256)[:19] for i in range(6)])
    assert torch.equal(stats.counts, expected)
    info = json.loads(weights_file.read_text())
    assert len(info["rare_classes"]) == 9 and set(info["classes"]) == set(cs.labels.classes)

    listing = tmp_path / "list.txt"
    assert run(resample_list.main, ["--stats", str(stats_file), "--repeat-class", "car", "--times", "3",
                                    "--out", str(listing)]) == 0
    with_car = (expected[:, 13] > 0).tolist()
    assert read_index_list(listing) == [i for i, h in enumerate(with_car) for _ in range(3 if h else 1)]

    out = tmp_path / "unbiased"
    args = ["--dataset", "cityscapes", "--root", str(root), "--split", "val", "--classes", "rider", "car", "--out", str(out), "--quiet"]
    assert run(build_unbiased.main, args) == 0
    erased = CityscapesSegmentation(out / "rider", "val")
    assert len(erased) == 6 and all((erased.load_mask(i) != RIDER).all() for i in range(6))
    assert run(build_unbiased.main, args) == 0  # everything is there already: a rerun is a no-op
    capsys.readouterr()


@pytest.mark.parametrize("tool, argv, message", [
    (class_stats, ["--dataset", "cityscapes", "--out", "x.json"], "--root is required"),
    (class_stats, ["--dataset", "cityscapes", "--root", "/nonexistent", "--out", "x.json"], "Expected layout"),
    (class_stats, ["--dataset", "imagenet", "--root", ".", "--out", "x.json"], "unknown dataset 'imagenet'"),
    (class_stats, ["--dataset", "voc", "--root", ".", "--length", "3", "--out", "x.json"], "VOCdevkit/VOC2012 is missing"),
    (class_stats, ["--length", "0", "--out", "x.json"], "length must be positive"),
    (resample_list, ["--stats", "/nonexistent.json", "--repeat-factor", "0.1", "--out", "x.txt"], "write them with data_tools.class_stats"),
    (build_unbiased, ["--length", "2", "--fill", "blur", "--out", "x"], "fill"),
])
def test_errors_are_one_line_messages(tool, argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(tool.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_bad_size_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        run(write_synthetic.main, ["--out", "x", "--size", "12"])
    assert e.value.code == 2 and "size must be written HxW" in capsys.readouterr().err


def test_resample_class_by_unknown_name(tmp_path, capsys):
    stats_file = tmp_path / "s.json"
    run(class_stats.main, ["--length", "3", "--out", str(stats_file), "--quiet"])
    assert run(resample_list.main, ["--stats", str(stats_file), "--repeat-class", "bike", "--out", str(tmp_path / "l")]) == 2
    assert "'bike' is not a class here" in capsys.readouterr().err

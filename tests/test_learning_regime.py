"""Pretrained weights from a registry package, the official compensation settings, drop-branch diagnostics, the
paired-difference statistics, fast class statistics, and the demo and explorer plumbing around them."""
import json
import math

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import skimage.data
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from dropclass import DropClass
from dropclass.adapters import FeaturesClassifier
from dropclass.core import DropClassOptions, compensation
from dropclass.data.balance import class_statistics, mask_counts
from dropclass.data.synthetic import SyntheticStreets, render_street
from dropclass.diagnostics import DropDiagnostics, batch_diagnostics, drop_diagnostics
from dropclass.losses import DropSchedule
from dropclass.metrics import paired_difference, t_quantile_975
from dropclass.models import (convert_by_position, efficientnet_lite_state_dict, imagenet_state_dict, load_imagenet)
from dropclass.build import build_model, init_convs
from dropclass.config import PRESETS, TrainConfig, config_from
from dropclass.train import train

CATS = range(281, 286)  # ImageNet's domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian cat


def _top(model, photo, k=3):
    x = torch.from_numpy(photo).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad(): return model((x - mean) / std).softmax(1)[0].topk(k).indices.tolist()


# ---------------------------------------------------------------------------------------------- ImageNet weights
@pytest.fixture(scope="module")
def lite0():
    net = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    net.load_state_dict(efficientnet_lite_state_dict("efficientnet_lite0"))
    return net


def test_converted_weights_classify_photos(lite0):
    "A wrong pairing of tensors would run but recognise nothing: the cat must be a cat, the espresso an espresso."
    assert all(c in CATS for c in _top(lite0, skimage.data.chelsea()))
    assert _top(lite0, skimage.data.coffee())[0] in (967, 968)


def test_random_weights_fail_the_same_check():
    torch.manual_seed(0)
    net = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    assert not all(c in CATS for c in _top(net, skimage.data.chelsea()))


def test_a_shuffled_pairing_is_refused():
    src = {"a.weight": torch.zeros(3, 2), "b.bias": torch.zeros(3)}
    with pytest.raises(ValueError, match="does not correspond"):
        convert_by_position(src, {"x.bias": torch.zeros(3), "y.weight": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="another network"):
        convert_by_position(src, {"x.weight": torch.zeros(3, 2)})


def test_smp_encoder_gets_every_tensor_and_the_classifier_features(lite0):
    fpn = smp.FPN("tu-efficientnet_lite0", encoder_weights=None, classes=19)
    assert load_imagenet(fpn, "tu-efficientnet_lite0") == len(fpn.encoder.state_dict())
    ref = lite0.state_dict()
    for k, v in fpn.encoder.state_dict().items(): torch.testing.assert_close(v, ref[k[len("model."):]])
    x = torch.randn(1, 3, 64, 128)
    fpn.eval()
    with torch.no_grad():  # the deepest encoder features equal timm's own stage output
        deepest = fpn.encoder(x)[-1]
        torch.testing.assert_close(deepest, lite0.blocks(lite0.bn1(lite0.conv_stem(x))))


def test_imagenet_weights_errors():
    with pytest.raises(ValueError, match="no packaged ImageNet weights"): imagenet_state_dict("resnet18")
    with pytest.raises(ValueError, match="do not fit"):
        load_imagenet(smp.FPN("resnet18", encoder_weights=None, classes=19), "tu-efficientnet_lite0")
    with pytest.raises(ValueError, match="local checkpoint"):
        build_model(TrainConfig(arch="hrnetv2_w18_small_v1", encoder_weights="imagenet"), 19)
    with pytest.raises(ValueError, match="must be None for arch='tiny'"):
        TrainConfig(arch="tiny", encoder_weights="imagenet")


def test_demo_presets_start_from_imagenet(lite0):
    for name in ("demo", "demo-quick", "study", "bite"):
        assert PRESETS[name]["encoder"] == "tu-efficientnet_lite0" and PRESETS[name]["encoder_weights"] == "imagenet"
    official = build_model(config_from("demo", {"method": "baseline", "init_std": 0.001}), 19)
    torch.testing.assert_close(official.encoder.state_dict()["model.conv_stem.weight"], lite0.state_dict()["conv_stem.weight"])
    assert official.segmentation_head[0].weight.std() < 0.002  # the non-pretrained parts start as N(0, 0.001)...
    # ... the official default; the CPU presets keep smp's own init (notebook 22)
    assert TrainConfig().init_std == 0.001
    smp_init = build_model(config_from("demo", {"method": "baseline"}), 19)
    assert smp_init.segmentation_head[0].weight.std() > 0.01
    torch.testing.assert_close(smp_init.encoder.state_dict()["model.conv_stem.weight"], lite0.state_dict()["conv_stem.weight"])


# ------------------------------------------------------------------------------------- official initialisation
def test_compensation_defaults_are_the_official_ones():
    comp = DropClass(smp.FPN("resnet18", encoder_weights=None, classes=5)).compensate
    assert comp[1].momentum == 0.01
    assert abs(comp[0].weight.std().item() - 0.001) < 2e-4 and comp[0].bias.abs().max() == 0
    torch_default = compensation(128, compensation_momentum=0.1, compensation_init_std=None)
    assert torch_default[1].momentum == 0.1 and torch_default[0].weight.std() > 0.02
    with pytest.raises(ValueError, match="compensation_momentum"): compensation(8, compensation_momentum=1.5)


def test_config_reaches_the_compensation_layer():
    cfg = TrainConfig(arch="tiny", method="dropclass", init_std=None,
                      dropclass=DropClassOptions(compensation_momentum=0.2, compensation_init_std=None))
    assert build_model(cfg, 19).compensate[1].momentum == 0.2


def test_init_convs_draws_every_conv():
    torch.manual_seed(0)
    net = init_convs(nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.Conv2d(64, 64, 1)), 0.001)
    for m in (net[0], net[2]):
        assert abs(m.weight.std().item() - 0.001) < 1e-4 and m.bias.abs().max() == 0
    assert net[1].weight.eq(1).all()  # norms untouched


# ------------------------------------------------------------------------------------------------ diagnostics
def _onehot_toy(C=3, bias=None):
    toy = DropClass(features=nn.Identity(), classifier=nn.Conv2d(C, C, 1, bias=bias is not None), compensation_norm="none").eval()
    with torch.no_grad():
        toy.classifier.weight.copy_(torch.eye(C)[:, :, None, None])
        if bias is not None: toy.classifier.bias.copy_(bias)
        toy.compensate[0].weight.copy_(torch.eye(C)[:, :, None, None]); toy.compensate[0].bias.zero_()
    return toy


def test_diagnostics_by_hand():
    "One-hot features, identity classifier: dropping class z zeroes z's logits, and argmax ties fall on class 0."
    y = torch.tensor([[[0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 2, 255]]])
    x = F.one_hot(y.clamp(max=2), 3).permute(0, 3, 1, 2).float()
    d = batch_diagnostics(_onehot_toy(), x, y)
    assert d.gt.tolist() == [3, 4, 4] and d.kept.tolist() == [3, 0, 0] and d.before.tolist() == [3, 4, 4]
    assert d.agreement == 1.0 and math.isclose(d.still_predicted, 3 / 11)
    assert d.plain_right == 11 and d.accuracy_plain == d.accuracy_drop == 1.0 and math.isclose(d.still_predicted_relative, 3 / 11)
    d2 = batch_diagnostics(_onehot_toy(bias=torch.tensor([-1e-3, 0.0, 0.0])), x, y)
    assert d2.kept.tolist() == [0, 4, 0]  # zero features: the bias decides, and the tie of classes 1 and 2 falls on 1


def test_diagnostics_match_a_loop_over_the_training_api():
    torch.manual_seed(3)
    model = DropClass(smp.FPN("resnet18", encoder_weights=None, classes=4, decoder_segmentation_channels=32)).eval()
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    y[1, :, :10] = 255
    d = drop_diagnostics(model, [(x[:1], y[:1]), (x[1:], y[1:])])

    def predictions(z):  # both branches through the training API, on the same batches of one image as the diagnostics
        outs = [model.branches(x[i:i + 1], z) for i in range(2)]  # (a batch of two rounds otherwise: near-ties of
        return (torch.cat([o.upsample(o.logits).argmax(1) for o in outs]),  # random weights could flip)
                torch.cat([o.upsample(o.drop_logits).argmax(1) for o in outs]))
    with torch.no_grad():
        plain, drop = predictions(None)
        assert d.agree == int(((plain == drop) & (y != 255)).sum()) and d.pixels == int((y != 255).sum())
        valid = y != 255
        assert d.plain_right == int(((plain == y) & valid).sum()) and d.accuracy_plain == d.plain_right / d.pixels
        assert d.accuracy_drop == int(((drop == y) & valid).sum()) / int(valid.sum())
        for z in range(4):
            assert int(d.kept[z]) == int(((predictions(z)[1] == z) & (y == z)).sum())
            assert int(d.before[z]) == int(((drop == z) & (y == z)).sum())
    assert drop_diagnostics(model.model, [(x, y)]) is None
    assert not model.training
    assert math.isclose(d.still_predicted_relative, int(d.kept.sum()) / int(d.before.sum()))
    summary = d.to_dict(["a", "b", "c", "d"])
    assert summary["accuracy_drop"] == round(d.accuracy_drop, 5) and summary["still_predicted_relative"] == round(d.still_predicted_relative, 5)
    assert set(summary["still_predicted_per_class"]) == {"a", "b", "c", "d"} and 0 <= summary["agreement"] <= 1


def test_head_is_the_prediction():
    torch.manual_seed(0)
    model = DropClass(smp.FPN("resnet18", encoder_weights=None, classes=5)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        A = model.features(x)
        torch.testing.assert_close(model.head(A, x, "drop"), model(x))
        torch.testing.assert_close(model.head(A, x, "plain"), model.model(x))
    with pytest.raises(ValueError, match="drops nothing"): model.head(A, x, "plain", 2)
    with pytest.raises(ValueError, match="branch must be"): model.head(A, x, "other")


def test_training_logs_and_reports_diagnostics(tmp_path):
    metrics = train(config_from("tiny", {"out_dir": str(tmp_path), "eval_every": 3, "diag_length": 4}))
    hist = [json.loads(l) for l in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert any("still_predicted" in e and "agreement" in e and "val_miou" in e for e in hist)
    assert all({"ce", "ce_drop", "sup"} <= set(e) for e in hist if "lr" in e)
    diag = metrics["diagnostics"]
    assert diag["split"] == "val" and diag["scenes"] == 4 and 0 <= diag["still_predicted"] <= 1
    base = train(config_from("tiny", {"out_dir": str(tmp_path / "b"), "method": "baseline"}))
    assert "diagnostics" not in base


def test_eval_reads_h_of_a_when_asked(tmp_path, capsys):
    from dropclass.cli import main
    train(config_from("tiny", {"out_dir": str(tmp_path)}))
    outs = {}
    for inference in ("drop", "plain"):
        assert main(["eval", "--checkpoint", str(tmp_path / "last.pt"), "--set", f"inference={inference}", "--set",
                     "diag_length=4", "--quiet", "--json", str(tmp_path / f"{inference}.json")]) == 0
        outs[inference] = json.loads((tmp_path / f"{inference}.json").read_text())["splits"]["val"]
    assert "still predicted" in capsys.readouterr().out
    from dropclass.checkpoints import load_model
    model, cfg = load_model(tmp_path / "last.pt")
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        model.inference = "plain"; a = model(x)
        model.inference = "drop"; b = model(x)
    assert not torch.equal(a, b)  # the two readings are different functions, so the flag must reach the model
    assert outs["drop"]["diagnostics"] == outs["plain"]["diagnostics"]


# ------------------------------------------------------------------------------------------------- statistics
def test_paired_difference_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    base = rng.normal(60, 2, 7); other = base + rng.normal(0.5, 1, 7)
    r = paired_difference(base.tolist(), other.tolist())
    d = other - base
    res = stats.ttest_rel(other, base)
    ci = res.confidence_interval(0.95)
    assert math.isclose(r["ci95"][0], ci.low, rel_tol=1e-4) and math.isclose(r["ci95"][1], ci.high, rel_tol=1e-4)
    assert math.isclose(r["mean"], d.mean()) and r["wins"] == int((d > 0).sum()) and r["n"] == 7
    for df in range(1, 400): assert abs(t_quantile_975(df) - stats.t.ppf(0.975, df)) < 1e-3
    assert paired_difference([1.0, None], [2.0, 3.0])["ci95"] is None
    with pytest.raises(ValueError): t_quantile_975(0)


def test_ramp_end():
    s = DropSchedule(200, by="iter", ramp_end=0.25)
    assert s.lam(25) == 0.5 and s.lam(50) == 1.0 and s.p(199) == 1.0
    e = DropSchedule(100, iters_per_epoch=10, ramp_end=0.5)
    assert [e.lam(i) for i in (0, 10, 49, 50, 99)] == [0.0, 0.2, 0.8, 1.0, 1.0]


# ---------------------------------------------------------------------------------------------- class statistics
def test_mask_counts_equal_bincount_and_reject_bad_values():
    rng = np.random.default_rng(1)
    for dtype in (torch.uint8, torch.int64, torch.int32):
        m = torch.from_numpy(rng.integers(0, 19, (37, 41))).to(dtype)
        m[:3] = 255
        ref = torch.bincount(m.long()[m.long() != 255], minlength=19)
        assert torch.equal(mask_counts(m, 19), ref)
    with pytest.raises(ValueError, match=r"\[20\]"): mask_counts(torch.tensor([[0, 20, 255]]), 19)
    with pytest.raises(ValueError, match="outside"): mask_counts(torch.tensor([[-1, 2]]), 19)


def test_labels_only_rendering_gives_the_same_labels():
    for i in range(5):
        for split in ("train", "counterfactual"):
            img, lab = render_street(0, i, split, (96, 192))
            none, lab2 = render_street(0, i, split, (96, 192), labels_only=True)
            assert none is None and np.array_equal(lab, lab2)


def test_class_statistics_leave_the_global_generator_alone():
    ds = SyntheticStreets(split="train", length=20, size=(64, 128))
    state = torch.get_rng_state()
    stats = class_statistics(ds, progress=False)
    assert torch.equal(state, torch.get_rng_state())
    ref = torch.stack([torch.bincount(ds[i][1].flatten(), minlength=256)[:19] for i in range(20)])
    assert torch.equal(stats.counts, ref)


# ------------------------------------------------------------------------------------------ demo and explorer plumbing
TINY_DEMO = ["arch=tiny", "encoder_weights=none", "train_length=32", "eval_length=8", "crop_size=64x128", "scale_range=1,1",
             "batch_size=4", "max_iters=4", "compensation_norm=group", "model_args={}", "ckpt_every=2", "diag_length=4"]


def test_demo_side_by_side_writes_both_runs_and_the_report(tmp_path):
    from dropclass.demo import run_demo
    run_demo(tmp_path, quick=True, progress=False, overrides=TINY_DEMO, jobs=2)
    for m in ("baseline", "dropclass"):
        assert (tmp_path / m / "config.json").is_file() and (tmp_path / m / "metrics.json").is_file()
    # one training set: the class statistics were counted once and shared
    assert (tmp_path / "baseline" / "class_stats.json").read_bytes() == (tmp_path / "dropclass" / "class_stats.json").read_bytes()
    results = json.loads((tmp_path / "results.json").read_text())
    assert "dropclass" in results["diagnostics"] and set(results["plain_reading"]["dropclass"]) == {"val", "counterfactual"}
    assert "still predicted as that class" in (tmp_path / "report.md").read_text()


def test_demo_child_failure_is_reported_with_its_log(tmp_path):
    from dropclass.demo import run_demo
    # the children fail on a bad dataset argument, the parent says where
    from dropclass.experiments import TrainingFailed
    with pytest.raises(TrainingFailed, match="failed .*train.log"):
        run_demo(tmp_path, quick=True, progress=False, overrides=TINY_DEMO + ["class_weights=none", 'dataset_args={"bogus": 1}'], jobs=2)


def test_explorer_opens_on_a_finished_demo(tmp_path, monkeypatch):
    from dropclass.app import default_checkpoints
    from dropclass.explorer import ClassDropExplorer
    from dropclass.demo import run_demo
    run_demo(tmp_path / "demo", quick=True, progress=False, overrides=TINY_DEMO, jobs=1)
    def no_training(cfg): raise AssertionError("the demo's finished runs should have been used")
    monkeypatch.setattr("dropclass.experiments.train", no_training)
    monkeypatch.setattr("dropclass.experiments._side_by_side", lambda *a: no_training(None))
    ckpts = default_checkpoints(tmp_path / "cache", progress=False, demo_dir=tmp_path / "demo", bite=False)
    assert ckpts == {"baseline": tmp_path / "demo" / "baseline" / "last.pt", "DropClass": tmp_path / "demo" / "dropclass" / "last.pt"}
    ex = ClassDropExplorer.from_checkpoints(ckpts, length=2)
    for change in ({"model": "DropClass"}, {"drop": "road"}, {"drop": None}, {"model": "baseline"}, {"drop": "car"}):
        ex.set(**change)
        assert ex.error is None, (change, ex.error)
    ex.set(model="DropClass", drop="road")
    assert "road dropped;" in ex.readout.value and "Over 4 val scenes" in ex.readout.value  # the run's diagnostics
    assert "road" in ex.captions["bars"].value and "pixels predicted <b>road</b>:" in ex.captions["drop"].value


def test_files_written_before_the_rename_read_with_todays_names(tmp_path):
    "metrics.json and history.jsonl of older runs named the share still predicted 'suppression': every reader maps it."
    from types import SimpleNamespace
    from dropclass.ablations import _diagnostics
    from dropclass.diagnostics import diagnostics_figure, read_diagnostics
    from dropclass.checkpoints import read_history
    d = DropDiagnostics(torch.tensor([4, 2]), torch.tensor([1, 0]), torch.tensor([4, 1]), agree=5, pixels=6, plain_right=5)
    new = {"split": "val", "scenes": 2, **d.to_dict(["a", "b"])}
    old = {**{k: v for k, v in new.items() if not k.startswith("still_predicted")}, "suppression_rate": new["still_predicted"],
           "suppression_mean": new["still_predicted_class_mean"], "suppression_relative": new["still_predicted_relative"],
           "suppression": new["still_predicted_per_class"]}  # the keys as older runs wrote them
    assert "suppression_rate" in old and "suppression_mean" in old and "suppression" in old and "still_predicted" not in old
    assert read_diagnostics(old) == new
    (tmp_path / "metrics.json").write_text(json.dumps({"diagnostics": old}))
    assert _diagnostics(SimpleNamespace(out_dir=str(tmp_path))) == new
    (tmp_path / "history.jsonl").write_text(json.dumps({"step": 4, "val_miou": 0.5, "suppression": 0.25}) + "\n")
    assert read_history(tmp_path / "history.jsonl") == [{"step": 4, "val_miou": 0.5, "still_predicted": 0.25}]
    fig_old, fig_new = diagnostics_figure(old, ["a", "b"]), diagnostics_figure(d, ["a", "b"])
    assert fig_old.axes[0].get_title() == fig_new.axes[0].get_title()
    assert fig_old.axes[0].lines[0].get_ydata().tolist() == fig_new.axes[0].lines[0].get_ydata().tolist() == [25.0, 0.0]

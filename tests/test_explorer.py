"""The class-drop explorer: the pure state function against the library's own functions, the widget driven from Python,
the default pair's cache, `dropclass explore`'s errors, and the served page driven in headless Chromium."""
import dataclasses
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from _shared import CHROMIUM_FLAGS, free_port, scaled
import dropclass.app as app_module
from dropclass.adapters import model_head
from dropclass.cli import main
from dropclass.core import DropClass
from dropclass.data.labels import CITYSCAPES
from dropclass.data.synthetic import SyntheticStreets
from dropclass.data.transforms import eval_transforms
from dropclass.app import default_checkpoints, default_explorer
from dropclass.explorer import ClassDropExplorer, ExploreState, as_dropclass, explore_state, explorer_dataset
from dropclass.features import class_features
from dropclass.importance import conv1x1_importance, gradcam, importance_scores, region_weights
from dropclass.checkpoints import load_model
from dropclass.config import config_from
from dropclass.train import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "A tiny baseline and a tiny DropClass model, trained in seconds."
    root = tmp_path_factory.mktemp("explorer_runs")
    out = {}
    for method in ("baseline", "dropclass"):
        cfg = config_from("tiny", {"method": method, "out_dir": str(root / method), "eval_splits": ()})
        train(cfg)
        out[method] = root / method / "last.pt"
    return out


@pytest.fixture(scope="module")
def dc(runs):
    return load_model(runs["dropclass"])[0]


@pytest.fixture(scope="module")
def data(runs):
    return explorer_dataset(load_model(runs["dropclass"])[1], None, 6)


@pytest.fixture(scope="module")
def fpn():
    "A small smp FPN with random weights, wrapped in DropClass: the pure functions work with any wrapped model."
    torch.manual_seed(1)
    model = smp.FPN("resnet18", encoder_weights=None, classes=CITYSCAPES.num_classes, decoder_segmentation_channels=32)
    return DropClass(model, convert_head=True).eval()


def _up(out, x):
    return F.interpolate(out.upsample(out.drop_logits), size=x.shape[-2:], mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------------------- pure state
@pytest.mark.parametrize("which", ["tiny", "fpn"])
@pytest.mark.parametrize("z", [None, 0, 13])
def test_drop_prediction_is_the_drop_branch(which, z, dc, fpn, data):
    model = dc if which == "tiny" else fpn
    image = data[1][0] if which == "tiny" else torch.randn(3, 64, 128)
    s = explore_state(model, image, z, 5)
    x = image[None]
    with torch.no_grad():
        out = model.branches(x, z)
        up = lambda l: F.interpolate(out.upsample(l), size=x.shape[-2:], mode="bilinear", align_corners=False)
        np.testing.assert_array_equal(s.drop_prediction, up(out.drop_logits).argmax(1)[0].numpy())
        np.testing.assert_array_equal(s.prediction, up(out.logits).argmax(1)[0].numpy())
        np.testing.assert_allclose(s.drop_logits, up(out.drop_logits).mean((0, 2, 3)).numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.drop_probs, up(out.drop_logits).softmax(1).mean((0, 2, 3)).numpy(), atol=1e-6)
        np.testing.assert_allclose(s.plain_probs, up(out.logits).softmax(1).mean((0, 2, 3)).numpy(), atol=1e-6)
        # inference="drop": the model's prediction
        np.testing.assert_array_equal(s.kept_prediction, model(x).argmax(1)[0].numpy())
    assert s.dropped == z and s.inspected == 5


@pytest.mark.parametrize("z", [0, 2, 13])
def test_where_z_was_and_its_suppression(z, dc, data):
    "Bars and suppression over the pixels of z, against the drop branch computed by `DropClass.branches`."
    image, mask = data[1]
    s = explore_state(dc, image, z, 0, mask=mask)
    x = image[None]
    with torch.no_grad():
        out, kept = dc.branches(x, z), dc.branches(x, None)
        up = lambda l, o: F.interpolate(o.upsample(l), size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
        before, after = up(kept.drop_logits, kept), up(out.drop_logits, out)
    output = before.argmax(0)
    region = (output == z) | (mask == z)
    assert s.output == "drop"
    np.testing.assert_array_equal(s.region, region.numpy())
    if region.any():
        np.testing.assert_allclose(s.before_probs, before.softmax(0)[:, region].mean(1).numpy(), atol=1e-5)
        np.testing.assert_allclose(s.after_logits, after[:, region].mean(1).numpy(), rtol=1e-4, atol=1e-4)
    else: assert np.isnan(s.after_probs).all()
    predicted = output == z
    if predicted.any(): assert s.still_predicted == pytest.approx(float((after.argmax(0)[predicted] == z).float().mean()))
    else: assert s.still_predicted is None
    assert s.logit_range == pytest.approx((float(before.min()), float(before.max())), rel=1e-5)
    with pytest.raises(ValueError, match="the mask has shape"): explore_state(dc, image, z, 0, mask=mask[:-1])


def test_nothing_dropped_means_the_whole_image(dc, data):
    s = explore_state(dc, data[0][0], None, 0, mask=data[0][1])
    assert s.region is None and s.still_predicted is None
    np.testing.assert_allclose(s.before_probs, s.kept_probs, atol=1e-6)


@pytest.mark.parametrize("c", [0, 7, 18])
def test_class_map_is_eq2_summed_over_channels(c, dc, data):
    image = data[0][0]
    s = explore_state(dc, image, None, c)
    with torch.no_grad():
        A = dc.features(image[None])
        maps = class_features(A, conv1x1_importance(dc.classifier.weight))[0].sum(1)  # (C, h1, w1), every class's A^c
        expected = maps[c]
        by_hand = F.relu(A[0] * dc.classifier.weight[c, :, 0, 0][:, None, None]).sum(0)
    np.testing.assert_allclose(s.class_map, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.class_map, by_hand.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.class_map_relative, (maps[c] - maps.mean(0)).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("which", ["tiny", "fpn"])
def test_gradcam_is_gradcam_of_eq1_scores(which, dc, fpn, data):
    model = dc if which == "tiny" else fpn
    image = data[2][0] if which == "tiny" else torch.randn(3, 64, 128)
    x = image[None]
    with torch.no_grad(): A = model.features(x)
    head = lambda a: F.interpolate(model_head(model.model, x)(a), size=x.shape[-2:],
                                   mode="bilinear", align_corners=False)
    S = importance_scores(A, head, region_weights(torch.zeros(1, *x.shape[-2:], dtype=torch.long), model.num_classes, "all"))
    cams = gradcam(A, S).detach()
    for c in (2, 13):
        np.testing.assert_allclose(explore_state(model, image, None, c).gradcam, cams[0, c].numpy(), rtol=1e-4, atol=1e-8)


def test_dropping_a_class_changes_its_drop_branch(dc, data):
    image = data[0][0]
    kept = explore_state(dc, image, None, 0)
    for z in (0, 11, 13):
        s = explore_state(dc, image, z, 0)
        np.testing.assert_array_equal(s.kept_logits, kept.kept_logits)
        assert not np.isclose(s.drop_logits[z], kept.kept_logits[z])
    np.testing.assert_array_equal(kept.drop_logits, kept.kept_logits)  # nothing dropped: the same branch


def test_classes_by_name_and_errors(dc, data):
    image = data[0][0]
    s = explore_state(dc, image, "rider", "person", labels=CITYSCAPES)
    assert (s.dropped, s.inspected) == (CITYSCAPES.index("rider"), CITYSCAPES.index("person"))
    with pytest.raises(ValueError, match="labels="): explore_state(dc, image, "rider", 0)
    with pytest.raises(ValueError, match="not a cityscapes class"): explore_state(dc, image, "unicorn", 0, labels=CITYSCAPES)
    with pytest.raises(ValueError, match=r"\[0, 19\)"): explore_state(dc, image, None, 19)
    from dropclass.data.labels import VOC
    with pytest.raises(ValueError, match="the labels have 21"): explore_state(dc, image, 0, 0, labels=VOC)
    with pytest.raises(ValueError, match="one image"): explore_state(dc, torch.randn(2, 3, 64, 128), None, 0)
    with pytest.raises(TypeError, match="DropClass"): explore_state(dc.model, image, None, 0)
    dc.train()
    try:
        with pytest.raises(ValueError, match="model.eval()"): explore_state(dc, image, None, 0)
    finally: dc.eval()


def test_a_plain_model_is_wrapped_as_a_baseline(runs, data):
    base = load_model(runs["baseline"])[0]
    wrapped, has_drop = as_dropclass(base)
    assert not has_drop and wrapped.inference == "plain" and not wrapped.training
    image = data[0][0]
    with torch.no_grad(): np.testing.assert_array_equal(explore_state(wrapped, image, None, 0).prediction, base(image[None]).argmax(1)[0].numpy())
    dc = load_model(runs["dropclass"])[0]
    assert as_dropclass(dc) == (dc, True)


# ---------------------------------------------------------------------------------------------------------- the widget
@pytest.fixture
def explorer(runs, data):
    return ClassDropExplorer({"baseline": load_model(runs["baseline"])[0], "DropClass": load_model(runs["dropclass"])[0]}, data)


def test_widget_state_and_panels(explorer, data):
    ex = explorer
    # it opens on the DropClass model, the baseline beside it, and inspects a class of the first scene
    gt0 = [c for c in np.unique(data[0][1].numpy()).tolist() if c < 19]
    inspect = "car" if CITYSCAPES.index("car") in gt0 else CITYSCAPES.classes[min(gt0)]
    assert ex.state == {"image": 0, "drop": None, "inspect": inspect, "model": "DropClass", "compare": "baseline"}
    assert ex.error is None and ex.panels["changed"] is None and ex.panels["after_probs"] is None
    assert all(v.value.startswith("<img") for v in ex.views.values())  # every panel drawn
    # the output is the drop branch, nothing dropped
    np.testing.assert_array_equal(ex.panels["output"], ex.result.kept_prediction)
    ex.set(model="baseline")
    assert ex.panels["drop_prediction"] is None and "no drop branch" in ex.captions["drop"].value
    np.testing.assert_array_equal(ex.panels["output"], ex.result.prediction)  # a baseline's output is h(A)
    ex.set(model="DropClass")
    assert isinstance(ex.result, ExploreState) and ex.panels["drop_prediction"] is not None
    z = int(np.bincount(ex.result.output_prediction.ravel()).argmax())  # the class it predicts most: dropping it shows
    before = {p: v.value for p, v in ex.views.items()}
    ex.set(drop=z)
    assert ex.state["drop"] == CITYSCAPES.classes[z] and ex.result.dropped == z
    np.testing.assert_array_equal(ex.panels["changed"], ex.result.drop_prediction != ex.result.output_prediction)
    assert ex.panels["changed"].any()
    changed = {p for p in before if ex.views[p].value != before[p]}
    assert {"drop", "changed", "bars", "before", "after"} <= changed
    assert not changed & {"image", "ground_truth", "output", "plain", "class_map", "gradcam"}
    expected = explore_state(ex.models["DropClass"][0], data[0][0], z, ex.state["inspect"], CITYSCAPES, mask=data[0][1])
    np.testing.assert_allclose(ex.artists["before"][1].get_array(), expected.before_map)  # z's probability, as drawn
    np.testing.assert_allclose(ex.artists["after"][1].get_array(), expected.after_map)
    assert f"{CITYSCAPES.classes[z]} dropped;" in ex.readout.value and "% of the" in ex.readout.value
    ex.set(image=3, drop="rider", inspect="person")
    assert ex.state == {"image": 3, "drop": "rider", "inspect": "person", "model": "DropClass", "compare": "baseline"}
    np.testing.assert_array_equal(ex.panels["ground_truth"], data[3][1].numpy())
    expected = explore_state(ex.models["DropClass"][0], data[3][0], "rider", "person", CITYSCAPES, mask=data[3][1])
    np.testing.assert_array_equal(ex.panels["class_map"], expected.class_map_relative)
    np.testing.assert_array_equal(ex.panels["after_probs"], expected.after_probs)
    assert "scene 4 of 6" in ex.captions["image"].value  # numbered from 1 in the page
    ex.set(drop=None)
    assert ex.state["drop"] is None and ex.result.dropped is None and "choose a class to drop" in ex.captions["drop"].value


def test_legend_alt_text_tooltips_and_marked_lists(explorer, data):
    ex = explorer.set(image=1, drop=None)
    ids = lambda a: {c for c in np.unique(a).tolist() if c < 19}
    gt = ids(data[1][1].numpy())
    predicted = set().union(*(ids(s.output_prediction) for s in ex.results.values())) - gt  # by either model shown
    assert len(ex.results) == 2 and predicted
    for control in (ex.drop_control, ex.inspect_control):  # both lists mark the two kinds apart
        marked = dict(control.options)
        assert {n for n, v in marked.items() if n.endswith(" · in ground truth")} == {f"{CITYSCAPES.classes[c]} · in ground truth" for c in gt}
        assert {v for n, v in marked.items() if n.endswith(" · predicted only")} == {CITYSCAPES.classes[c] for c in predicted}
    for c in gt: assert f"</span>{CITYSCAPES.classes[c]}</span>" in ex.legend.value
    for c in predicted: assert f"</span><i>{CITYSCAPES.classes[c]}</i></span>" in ex.legend.value
    for c in set(range(19)) - gt - predicted: assert f">{CITYSCAPES.classes[c]}<" not in ex.legend.value.replace("<i>", "")
    assert all('alt="' in v.value and 'alt=""' not in v.value for row in ex.rows for v in row.views.values())
    controls = (ex.image_control, ex.previous_button, ex.next_button, ex.model_control, ex.compare_control, ex.drop_control,
                ex.inspect_control, ex.find_control, ex.find_button)
    assert all(w.tooltip for w in controls) and all(w.description for w in controls)  # the label is the accessible name


def test_bars_keep_their_axes_per_model(explorer):
    ex = explorer.set(image=0, drop=None, model="DropClass")
    ylim = lambda: ex.figures["bars"].axes[1].get_ylim()
    first = ylim()
    ex.set(image=2, drop="road")
    later = ylim()
    # kept, or widened for a bar that would not fit; never narrowed
    assert later[0] <= first[0] and later[1] >= first[1]
    assert ex.figures["bars"].axes[0].get_ylim() == (0.0, 1.0)
    legend = [t.get_text() for t in ex.figures["bars"].axes[0].get_legend().get_texts()]
    assert legend == ["before: the model's output", "after: drop branch, road dropped"]
    ex.set(image=0, drop=None)
    assert ylim() == later  # back on the first scene: the same axis, not one fitted to it
    ex.set(model="baseline")
    assert [t.get_text() for t in ex.figures["bars"].axes[0].get_legend().get_texts()] == ["before: the model's output"]


def test_changes_from_the_page_skip_stale_states(explorer):
    "In a kernel, changes arrive on its event loop while an update runs: only the last state is drawn."
    import asyncio
    ex = explorer.set(image=0, drop=None, model="DropClass")
    drawn = ex.updates

    async def press_keys():
        for i in (2, 3, 4, 5, 2):
            ex.image_control.value = i  # as five key presses on the slider
        await asyncio.sleep(ex.settle + 0.5)

    asyncio.run(press_keys())
    assert ex.updates == drawn + 1 and ex.state["image"] == 1 and "scene 2 of 6" in ex.captions["image"].value


def test_controls_update_like_clicks(explorer):
    ex = explorer
    ex.model_control.value = "DropClass"
    ex.inspect_control.value = "road"
    assert ex.result.inspected == CITYSCAPES.index("road")
    ex.drop_control.value = "sky"
    assert ex.result.dropped == CITYSCAPES.index("sky") and "sky" in ex.status.value
    ex.image_control.value = 3  # the page numbers scenes from 1
    assert ex.state["image"] == 2 and ex.panels["ground_truth"].shape == ex.result.prediction.shape


def test_set_checks_its_arguments(explorer):
    with pytest.raises(ValueError, match="image must be"): explorer.set(image=99)
    with pytest.raises(ValueError, match="model must be one of"): explorer.set(model="resnet")
    with pytest.raises(ValueError, match="the dropped class 'unicorn' is not a cityscapes class"): explorer.set(drop="unicorn")
    with pytest.raises(ValueError, match="at least one model"): ClassDropExplorer({}, [])


def test_methods_are_the_class_own():
    for name in ("set", "_update", "_captions"):
        assert getattr(ClassDropExplorer, name).__qualname__ == f"ClassDropExplorer.{name}"
    assert isinstance(ClassDropExplorer.state, property) and ClassDropExplorer.from_checkpoints.__self__ is ClassDropExplorer


def test_pixel_accuracy_leaves_out_the_label_sets_ignore_index(dc, data):
    labels = dataclasses.replace(CITYSCAPES, name="cityscapes-250", ignore_index=250)
    image, mask = data[0]
    mask = mask.clone()
    mask[:, : mask.shape[1] // 2] = 250  # the left half unlabelled
    ex = ClassDropExplorer({"DropClass": dc}, [(image, mask)], labels=labels)
    gt = mask.numpy()
    # each on what it shows
    for panel, pred in (("output", ex.result.output_prediction), ("plain", ex.result.prediction)):
        expected = (pred[gt != 250] == gt[gt != 250]).mean()
        assert f"right on {100 * expected:.1f}% of the labelled pixels" in ex.captions[panel].value


def test_update_errors_go_to_the_output(dc, data):
    class Broken(torch.utils.data.Dataset):
        labels = CITYSCAPES
        def __len__(self): return 4
        def __getitem__(self, i):
            if i == 2: raise OSError("scene 2 cannot be read")
            return data[i]

    ex = ClassDropExplorer({"DropClass": dc}, Broken())
    shown, png = ex.panels, ex.views["image"].value
    ex.image_control.value = 3  # scene 2, from the page (numbered from 1): no exception escapes the callback
    assert "scene 2 cannot be read" in ex.error
    assert len(ex.log.outputs) == 1 and "scene 2 cannot be read" in ex.log.outputs[0]["text"]
    assert ex.panels is shown and ex.views["image"].value == png
    ex.set(image=1)
    assert ex.error is None and ex.log.outputs == ()


def test_images_of_different_sizes(dc, data):
    small = lambda t: F.interpolate(t[None].float(), size=(48, 80))[0]  # nearest
    scenes = [data[0], (small(data[1][0]), small(data[1][1][None])[0].long())]
    ex = ClassDropExplorer({"DropClass": dc}, scenes, labels=CITYSCAPES)
    ex.set(image=1, drop="road")
    assert ex.error is None and ex.panels["image"].shape == (48, 80, 3) and ex.result.drop_prediction.shape == (48, 80)
    assert ex.artists["image"].get_extent() == [-0.5, 79.5, 47.5, -0.5]


def test_models_must_match_the_labels(dc):
    from dropclass.data.labels import VOC
    with pytest.raises(ValueError, match="predicts 19 classes"): ClassDropExplorer({"m": dc}, [(torch.zeros(3, 8, 8), torch.zeros(8, 8))], labels=VOC)


# ------------------------------------------------------------------------------------------------------ the default pair
def test_default_checkpoints_train_once_then_load(tmp_path, monkeypatch):
    monkeypatch.setattr(app_module, "EXPLORER_PRESET", "tiny")
    small = {"max_iters": 2, "ckpt_every": 2, "train_length": 16, "eval_length": 4}
    assert "training the demo's baseline and DropClass models" in app_module.default_pair_plan(tmp_path, small, bite=False)
    ckpts = default_checkpoints(tmp_path, progress=False, overrides=small, bite=False)
    assert list(ckpts) == ["baseline", "DropClass"] and all(p.is_file() for p in ckpts.values())
    assert not list(tmp_path.rglob("best.pt")), "the cache keeps a best.pt the explorer never reads"
    assert app_module.default_pair_plan(tmp_path, small, bite=False) is None
    assert isinstance(load_model(ckpts["DropClass"])[0], DropClass) and not isinstance(load_model(ckpts["baseline"])[0], DropClass)

    def no_training(cfg): raise AssertionError("the cached pair was trained again")
    monkeypatch.setattr("dropclass.experiments.train", no_training)
    monkeypatch.setattr("dropclass.experiments._side_by_side", lambda *a: no_training(None))
    assert default_checkpoints(tmp_path, progress=False, overrides=small, bite=False) == ckpts
    # with the cache: nothing to train
    ex = default_explorer(tmp_path, length=3, progress=False, overrides=small, bite=False)
    assert list(ex.models) == ["baseline", "DropClass"] and len(ex.dataset) == 3


def test_default_models_add_the_bite_model_once(tmp_path, monkeypatch):
    monkeypatch.setattr(app_module, "EXPLORER_PRESET", "tiny")
    monkeypatch.setattr(app_module, "BITE_PRESET", "tiny")
    small = {"max_iters": 2, "ckpt_every": 2, "train_length": 16, "eval_length": 4}
    pair = default_checkpoints(tmp_path, progress=False, overrides=small, bite=False)
    plan = app_module.default_pair_plan(tmp_path, small)
    # the pair is cached; only the third model is missing
    assert app_module.BITE_NAME in plan and "the demo's baseline" not in plan
    ckpts = default_checkpoints(tmp_path, progress=False, overrides=small)
    assert list(ckpts) == ["baseline", "DropClass", app_module.BITE_NAME] and {k: ckpts[k] for k in pair} == pair
    assert ckpts[app_module.BITE_NAME] == tmp_path / app_module.BITE_DIR / "last.pt"
    model, cfg = load_model(ckpts[app_module.BITE_NAME])
    assert isinstance(model, DropClass) and cfg.method == "dropclass" and cfg.max_iters == 2
    assert app_module.default_pair_plan(tmp_path, small) is None

    def no_training(cfg): raise AssertionError("the cached models were trained again")
    monkeypatch.setattr("dropclass.experiments.train", no_training)
    monkeypatch.setattr("dropclass.experiments._side_by_side", lambda *a: no_training(None))
    ex = default_explorer(tmp_path, length=2, progress=False, overrides=small)
    assert list(ex.models) == ["baseline", "DropClass", app_module.BITE_NAME]
    ex.set(model=app_module.BITE_NAME, drop="road")
    assert ex.error is None


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert app_module.default_cache_dir() == tmp_path / "dropclass" / "explorer"


# --------------------------------------------------------------------------------------------------------------- the CLI
def test_explore_errors_are_one_line(capsys, monkeypatch):
    assert main(["explore", "--dropclass", "/nonexistent/last.pt", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert ("no checkpoint at" in err or "needs Voila" in err) and "Traceback" not in err
    monkeypatch.setitem(sys.modules, "voila", None)  # as if Voila were not installed
    monkeypatch.setitem(sys.modules, "voila.app", None)
    assert main(["explore", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "needs Voila" in err and 'pip install "dropclass[explore]"' in err


def test_explore_refuses_a_busy_port(runs, capsys):
    if importlib.util.find_spec("voila") is None: pytest.skip("Voila is not installed")
    with socket.socket() as busy:
        busy.bind(("localhost", 0))
        port = busy.getsockname()[1]
        assert main(["explore", "--dropclass", str(runs["dropclass"]), "--port", str(port), "--no-browser"]) == 2
    assert "is in use" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------- the browser
def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"dropclass explore exited with status {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("localhost", port), timeout=1): return
        except OSError: time.sleep(0.5)
    raise AssertionError(f"dropclass explore did not listen on port {port} within {timeout} s")


def _browser_ready():
    "Skip reasons for the browser test, or None."
    if shutil.which("chromium") is None: return "Debian's chromium is not installed (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None: return "playwright (the Python package) is not installed (pip install playwright)"
    if importlib.util.find_spec("voila") is None: return "Voila is not installed (pip install voila)"
    return None


def _start_explore(tmp_path, port, *args, cwd=None, path=()) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, path), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_PLATFORM_DIRS": "1", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "explore.log"
    proc = subprocess.Popen([sys.executable, "-m", "dropclass.cli", "explore", "--port", str(port), "--no-browser", *args],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd or tmp_path)
    return proc, log


def _stop(proc: subprocess.Popen):
    proc.terminate()  # Voila stops on SIGTERM and shuts its kernels down
    try: proc.wait(scaled(30))
    except subprocess.TimeoutExpired:
        proc.kill(); proc.wait()


def _wait_for_text(log: Path, text: str, proc: subprocess.Popen, timeout: float) -> float:
    "Seconds until `text` appears in the log of `proc`."
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if text in log.read_text(): return time.monotonic() - start
        if proc.poll() is not None: raise AssertionError(f"dropclass explore exited with status {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"{text!r} did not appear within {timeout} s:\n{log.read_text()}")


_TORCH_WATCH = """
import sys, importlib.abc
class _Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            sys.stdout.write(MARK + "\\n"); sys.stdout.flush()
        return None
sys.meta_path.insert(0, _Watch())
sys.stdout.write(READY + "\\n"); sys.stdout.flush()
"""
_TORCH_MARK, _WATCH_READY = "[the import of torch begins]", "[watching for the import of torch]"


def test_explore_says_what_it_does_at_once(tmp_path):
    """Without models, `dropclass explore` says that it will train first, and for how long, before it imports torch (the
    slow part of starting), and within 2 s on the reference machine."""
    watch = tmp_path / "watch"
    watch.mkdir()
    # says when torch starts to load
    (watch / "sitecustomize.py").write_text(f"MARK, READY = {_TORCH_MARK!r}, {_WATCH_READY!r}\n" + _TORCH_WATCH)
    guard, limit = scaled(60), scaled(2.0)  # measured before the process starts, not while it does
    proc, log = _start_explore(tmp_path, free_port(), "--cache-dir", str(tmp_path / "cache"), path=[watch])
    try:
        seconds = _wait_for_text(log, "dropclass explore: no trained models found", proc, guard)
        assert "minutes" in log.read_text()
        for _ in range(int(scaled(120))):  # the trainings start once `default_checkpoints` has run (it imports torch)
            if _processes_with(str(tmp_path / "cache")): break
            assert proc.poll() is None, log.read_text()
            time.sleep(1)
        assert _processes_with(str(tmp_path / "cache")), "the training of the default pair did not start"
        text = log.read_text()
        assert proc.poll() is None and text.count("no trained models found") == 1, text  # the plan is said once
        # the watch is on (a sitecustomize on PYTHONPATH; it hides one the environment may have, which this test does not
        # need); a `dropclass.cli` that imports torch at the top puts the mark before the first line and fails here
        assert text.startswith(_WATCH_READY), f"the watch for the import of torch did not start:\n{text}"
        first = text.index("no trained models found")
        assert _TORCH_MARK not in text[:first], f"torch was imported before the first line:\n{text}"
    finally: _stop(proc)
    assert seconds < limit, f"the first line came after {seconds:.1f} s (limit {limit:.1f} s on this machine)"
    for _ in range(int(scaled(30))):  # SIGTERM to `dropclass explore` stops the trainings it started
        if not _processes_with(str(tmp_path / "cache")): break
        time.sleep(0.5)
    assert not _processes_with(str(tmp_path / "cache")), "training processes outlived the stopped `dropclass explore`"


def _processes_with(text: str) -> list[int]:
    "Process ids whose command line mentions `text` (Linux: /proc)."
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"): found.append(int(cmdline.parent.name))
        except OSError: pass  # the process ended meanwhile
    return found


@pytest.mark.skipif(importlib.util.find_spec("voila") is None, reason="Voila is not installed")
def test_explore_prints_its_url_soon_and_answers_alive(runs, tmp_path):
    port, guard, limit = free_port(), scaled(60), scaled(30)
    proc, log = _start_explore(tmp_path, port, "--baseline", str(runs["baseline"]), "--dropclass", str(runs["dropclass"]))
    try:
        seconds = _wait_for_text(log, f"is at http://localhost:{port}/", proc, guard)
        _wait_for_port(port, proc, log, scaled(60))
        import urllib.request
        with urllib.request.urlopen(f"http://localhost:{port}{app_module.ALIVE_PATH}", timeout=scaled(10)) as r:
            assert r.read() == b"ok"
    finally: _stop(proc)
    assert seconds < limit, f"the URL came after {seconds:.1f} s (limit {limit:.1f} s on this machine)"


def test_the_explorer_in_a_jupyter_kernel(runs, tmp_path):
    "As in JupyterLab: a notebook run headless in a real kernel builds the widget, sets a state and reads panels back."
    import nbformat
    from nbclient import NotebookClient
    code = f"""
import json, numpy as np
from dropclass.explorer import ClassDropExplorer
ex = ClassDropExplorer.from_checkpoints({{"baseline": {str(runs["baseline"])!r}, "DropClass": {str(runs["dropclass"])!r}}}, length=4)
ex.set(image=1, drop="road", inspect="car")
print(json.dumps({{"state": ex.state, "model": ex.state["model"], "changed": int(ex.panels["changed"].sum()),
                  "shape": list(ex.panels["output"].shape), "error": ex.error, "readout": "road dropped;" in ex.readout.value}}))
ex"""
    keys = """
drawn = ex.updates
for i in (2, 3, 4):
    ex.image_control.value = i  # as key presses in the page: on the kernel's event loop, only the last is drawn
"""
    after = """
import asyncio
await asyncio.sleep(ex.settle + 1.0)
print(json.dumps({"extra_updates": ex.updates - drawn, "image": ex.state["image"], "caption": ex.captions["image"].value}))"""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (code, keys, after)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env_path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = env_path
    try: NotebookClient(nb, timeout=int(scaled(300)), kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if old is None: os.environ.pop("PYTHONPATH", None)
        else: os.environ["PYTHONPATH"] = old
    outputs = nb.cells[0].outputs
    import json
    printed = json.loads(next(o for o in outputs if o.output_type == "stream").text.strip().splitlines()[-1])
    assert printed["state"] == {"image": 1, "drop": "road", "inspect": "car", "model": "DropClass", "compare": "baseline"}
    assert printed["error"] is None and printed["readout"] and printed["shape"] == [64, 128]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), "no widget was displayed"
    skipped = json.loads(nb.cells[2].outputs[0].text)
    assert skipped["extra_updates"] == 1 and skipped["image"] == 3 and "scene 4 of 4" in skipped["caption"], skipped


def _artifacts() -> Path:
    "Where the browser test leaves its screenshots: $DROPCLASS_ARTIFACTS, else artifacts/explorer in the repository."
    folder = Path(os.environ.get("DROPCLASS_ARTIFACTS") or REPO / "artifacts" / "explorer")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


_NO_OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('.dropclass-explorer .dropclass-caption, .dropclass-explorer img, .dropclass-readout')]
    .filter(el => el.getBoundingClientRect().right > width + 1).map(el => el.className);
  return {scroll: document.documentElement.scrollWidth, width: width, wide: wide};
}"""


_GEOMETRY = """() => [...document.querySelectorAll(
    '.dropclass-explorer .dropclass-cell, .dropclass-explorer img, .dropclass-readout, .dropclass-legend, ' +
    '.dropclass-status, .dropclass-explorer select, .dropclass-explorer input, .dropclass-explorer button')]
  .filter(e => e.offsetParent !== null).map(e => { const r = e.getBoundingClientRect();
    return [e.className || e.tagName, r.x, r.y, r.width, r.height]; })"""


def _kernels_of(proc: subprocess.Popen) -> list[int]:
    "The kernel processes the server `proc` started (Linux: /proc)."
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == proc.pid and b"ipykernel" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError): pass  # the process ended meanwhile
    return found


@pytest.mark.skipif(_browser_ready() is not None, reason=str(_browser_ready()))
def test_explore_in_a_browser(runs, tmp_path):
    """Serve the explorer and use it in headless Chromium at 1280x800 by the controls' accessible names: both models
    side by side, a class dropped, the busy cue, nothing moving, the first rows above the fold, the page's kernel ended
    when it closes, and the banner beside the title when the server stops."""
    from playwright.sync_api import sync_playwright

    # the class predicted in the first scene whose drop changes the DropClass model's output most, found without a browser
    model, cfg = load_model(runs["dropclass"])
    image, mask = explorer_dataset(cfg, None, 4)[0]
    out = explore_state(model, image, None, 0).output_prediction
    changes = {z: int((explore_state(model, image, z, 0).drop_prediction != out).sum()) for z in np.unique(out).tolist()}
    z = CITYSCAPES.classes[max(changes, key=changes.get)]
    assert max(changes.values()) > 0

    port, requests = free_port(), []
    proc, log = _start_explore(tmp_path, port, "--baseline", str(runs["baseline"]), "--dropclass", str(runs["dropclass"]), "--length", "4")
    try:
        _wait_for_port(port, proc, log, scaled(120))
        ms = lambda seconds: int(1000 * scaled(seconds))  # playwright's waits, in milliseconds, for this machine
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
                page.on("request", lambda r: requests.append(r.url))
                page.goto(f"http://localhost:{port}/", timeout=ms(120))
                drop = page.get_by_role("combobox", name="drop class", exact=True)
                drop.wait_for(state="visible", timeout=ms(240))  # the kernel ran the app notebook and the widgets rendered
                assert page.title() == "DropClass explorer"
                page.locator(".dropclass-readout").get_by_text("nothing dropped").first.wait_for(timeout=ms(60))
                # every control by its accessible name
                for role, name in (("spinbutton", "scene"), ("button", "previous scene"), ("button", "next scene"),
                                   ("combobox", "model"), ("combobox", "beside it"), ("combobox", "inspect class"),
                                   ("combobox", "find class"), ("button", "next scene with it")):
                    assert page.get_by_role(role, name=name, exact=True).count() == 1, (role, name)
                # side by side: the DropClass model, the baseline beside it
                assert page.get_by_role("combobox", name="model", exact=True).evaluate("e => e.value") == "DropClass"
                assert page.get_by_role("combobox", name="beside it", exact=True).evaluate("e => e.value") == "baseline"
                rows = page.locator(".dropclass-rowlabel").all_inner_texts()
                assert [r.strip() for r in rows] == ["DropClass", "baseline", "DropClass", "baseline"], rows
                page.wait_for_timeout(500)
                before = page.evaluate(_GEOMETRY)
                label = next(t for t in drop.evaluate("e => [...e.options].map(o => o.text)")
                             if t.replace("\xa0", " ").split(" · ")[0] == z)
                drop.select_option(label=label)
                page.locator(".dropclass-busy").wait_for(state="attached", timeout=ms(10))  # the busy cue shows at once
                assert page.locator(".dropclass-grid.dropclass-stale").count() == 1  # and the panels are dimmed
                page.locator(".dropclass-busy").wait_for(state="detached", timeout=ms(120))  # and clears once drawn
                assert page.locator(".dropclass-grid.dropclass-stale").count() == 0
                page.wait_for_timeout(500)
                after = page.evaluate(_GEOMETRY)
                assert len(before) == len(after)
                moved = [(a[0], [round(v) for v in a[1:]], [round(v) for v in b[1:]]) for a, b in zip(before, after)
                         if max(abs(x - y) for x, y in zip(a[1:], b[1:])) > 2]
                assert not moved, f"moved by more than 2 px when {z} was dropped: {moved[:4]}"
                captions = page.locator(".dropclass-changed-caption").all_inner_texts()
                assert re.search(r"^[1-9]\d* pixels", captions[0].strip()), f"the changed-pixel map is empty: {captions}"
                assert "no drop branch" in captions[1], captions
                readout = page.locator(".dropclass-still-predicted").inner_text()
                assert f"DropClass: {z} dropped;" in readout and "% of the" in readout and "baseline: no drop branch" in readout
                # above the fold at 1280x800: both models' predictions, drops and changed pixels, and the readout
                fold = page.evaluate("() => [...document.querySelectorAll('.dropclass-output-cell, .dropclass-drop-cell, "
                                     ".dropclass-changed-cell, .dropclass-readout')].map(e => e.getBoundingClientRect().bottom)")
                assert len(fold) == 7 and max(fold) <= 800, fold
                # the figures are shown at about their own size, so that their 9-pt text is at least 9 pt on screen
                ppi = page.evaluate("""() => [...document.querySelectorAll('.dropclass-explorer img')].map(
                    i => i.getBoundingClientRect().width / (i.naturalWidth / 200))""")
                assert min(ppi) >= 96, ppi
                page.screenshot(path=str(_artifacts() / "explorer_1280x800.png"))

                def drawn(action):
                    "Do `action` by a control's name and wait until the busy cue has come and gone."
                    action()
                    page.locator(".dropclass-busy").wait_for(state="attached", timeout=ms(10))
                    page.locator(".dropclass-busy").wait_for(state="detached", timeout=ms(120))

                scene = page.get_by_role("spinbutton", name="scene", exact=True)
                drawn(lambda: page.get_by_role("button", name="next scene", exact=True).click())
                assert scene.input_value() == "2" and "scene 2 of 4" in page.locator(".dropclass-status").inner_text()
                drawn(lambda: page.get_by_role("combobox", name="beside it", exact=True).select_option(label="nothing"))
                assert [r.strip() for r in page.locator(".dropclass-rowlabel").all_inner_texts()] == ["DropClass", "DropClass"]
                drawn(lambda: page.get_by_role("combobox", name="beside it", exact=True).select_option(label="baseline"))
                assert len(page.locator(".dropclass-rowlabel").all_inner_texts()) == 4
                nulls = page.evaluate("() => [...document.querySelectorAll('[title=null]')].map(e => e.tagName + '.' + e.className + ':' + e.textContent)")
                assert not nulls, f"elements with a 'null' tooltip: {nulls[:5]}"
                assert all(img.get_attribute("alt") for img in page.locator(".dropclass-explorer img").all())
                assert page.locator(".dropclass-log").inner_text().strip() == "", "the explorer reported an error"
                for width, height in ((1920, 1080), (1024, 768)):
                    page.set_viewport_size({"width": width, "height": height})
                    page.wait_for_timeout(500)
                    fit = page.evaluate(_NO_OVERFLOW)
                    page.screenshot(path=str(_artifacts() / f"explorer_{width}x{height}.png"))
                    assert fit["scroll"] <= fit["width"] and not fit["wide"], f"at {width}x{height}: {fit}"
                outside = [u for u in requests if not u.startswith(("http://localhost", "data:", "blob:", "ws://localhost"))]
                assert not outside, f"the page fetched from the internet: {outside[:3]}"
                # closing the page ends its kernel
                assert len(_kernels_of(proc)) == 1
                page.close(run_before_unload=True)
                for _ in range(int(scaled(40))):
                    if not _kernels_of(proc): break
                    time.sleep(0.5)
                assert not _kernels_of(proc), "the closed page's kernel runs on"
                # the server stops: a new page says so beside its title, over nothing
                page = browser.new_page(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
                page.goto(f"http://localhost:{port}/", timeout=ms(120))
                page.get_by_role("combobox", name="drop class", exact=True).wait_for(state="visible", timeout=ms(240))
                _stop(proc)
                banner = page.get_by_text("Disconnected: the server has stopped")
                banner.wait_for(timeout=ms(20))
                box, title = banner.bounding_box(), page.locator("h3").first.bounding_box()
                top = page.evaluate("() => document.querySelector('.dropclass-explorer').getBoundingClientRect().top")
                assert box["y"] + box["height"] <= top and box["x"] >= title["x"], (box, title, top)
                page.screenshot(path=str(_artifacts() / "explorer_disconnected.png"))
            finally:
                browser.close()
    finally:
        _stop(proc)
    output = log.read_text()
    assert f"http://localhost:{port}/" in output, output


def _assert_rows_are_full(ex):
    "The grid places its cells row by row: every row is full, and each model's name starts its row's second column."
    from dropclass.explorer_page import grid_columns
    from dropclass.explorer_panels import PANELS
    width, column, starts = grid_columns(PANELS) + 2, 0, []
    for w in ex.grid.children:
        span = 2 if "dropclass-wide" in w._dom_classes else 1
        assert column + span <= width, "a cell runs past the end of its row"
        starts.append(column)
        column = (column + span) % width
    assert column == 0, f"the last row is not full ({column} of {width} columns)"
    labels = [c for w, c in zip(ex.grid.children, starts) if "dropclass-rowlabel-cell" in w._dom_classes]
    assert labels and all(c == 1 for c in labels), labels


def test_an_added_top_panel_keeps_the_rows_in_step(runs, data):
    from dropclass.explorer_panels import PANELS, Panel, _images, register_panel
    register_panel(Panel("probe_top", _images(), key=lambda v: (v.controls["image"],), draw=lambda im, fig, v: None,
                         title=lambda v: ("probe", ""), caption=lambda v: "", block="top"))
    try:
        ex = ClassDropExplorer({"DropClass": load_model(runs["dropclass"])[0], "baseline": load_model(runs["baseline"])[0]}, data)
        _assert_rows_are_full(ex)  # six top panels: the rows under them are padded, not shifted
        ex.set(compare=None)
        _assert_rows_are_full(ex)
    finally:
        del PANELS["probe_top"]


def test_a_panel_is_one_registry_entry(runs, data):
    "Every panel comes from PANELS; a registered entry is built, drawn, titled and captioned with no other change."
    from dropclass.explorer_panels import PANELS, Panel, register_panel
    assert list(PANELS) == ["image", "ground_truth", "output", "drop", "changed", "before", "after", "plain", "class_map",
                            "gradcam", "bars"]
    drawn = []
    def build(w, h, labels):
        from dropclass.explorer_panels import _figure
        fig, (ax,) = _figure(w, h)
        return fig, ax.imshow(np.zeros((2, 2, 3), np.uint8))
    extra = Panel("probe", build, key=lambda v: (v.controls["image"], v.controls["drop"]),
                  draw=lambda im, fig, v: drawn.append((v.controls["image"], v.controls["drop"])),
                  title=lambda v: ("A probe panel", "test"), caption=lambda v: f"image {v.controls['image']}")
    register_panel(extra)
    try:
        ex = ClassDropExplorer({"DropClass": load_model(runs["dropclass"])[0]}, data)
        assert list(ex.views)[-1] == "probe" and "A probe panel" in ex.titles["probe"].value
        ex.set(inspect="person")  # its key does not change: not drawn again
        ex.set(image=2)
        assert drawn == [(0, None), (2, None)] and "image 2" in ex.captions["probe"].value
        assert 'alt="A probe panel (scene 3, model DropClass)"' in ex.views["probe"].value
        assert ex.rows[0].cells["probe"] in ex.grid.children  # in the rows under the top ones (its block is "more")
        _assert_rows_are_full(ex)
    finally:
        del PANELS["probe"]
    with pytest.raises(TypeError, match="takes a Panel"): register_panel("probe")


# ----------------------------------------------------------------------------------------- side by side, cues, finding
def test_two_models_side_by_side_share_scene_drop_and_axes(explorer, data):
    ex = explorer.set(image=2, drop="road", inspect="car")
    assert list(ex.results) == ["DropClass", "baseline"] and ex.state["compare"] == "baseline"
    for name, s in ex.results.items():  # each row is its own model's state for the same controls
        expected = explore_state(ex.models[name][0], data[2][0], "road", "car", CITYSCAPES, mask=data[2][1])
        np.testing.assert_array_equal(s.output_prediction, expected.output_prediction)
        np.testing.assert_allclose(s.before_map, expected.before_map)
    top, below = (r.figures["bars"].axes[1].get_ylim() for r in ex.rows)
    assert top == below  # one logit axis for both models
    for what in ("class_map", "gradcam"):  # heat maps on one scale: 1 is the largest |value| of either model
        shown = [np.abs(r.artists[what][1].get_array()).max() for r in ex.rows]
        assert max(shown) == pytest.approx(1.0) and all(v <= 1.0 + 1e-6 for v in shown)
    assert ex.rows[1].artists["after"][2].get_visible() and "no drop branch" in ex.rows[1].captions["drop"].value
    labels = [w.value for w in ex.grid.children if "dropclass-rowlabel-cell" in w._dom_classes]
    assert [re.sub("<[^>]+>", "", v) for v in labels] == ["DropClass", "baseline", "DropClass", "baseline"]
    _assert_rows_are_full(ex)
    ex.set(model="baseline")  # the first row's model was the one beside it: they trade places
    assert ex.state["model"] == "baseline" and ex.state["compare"] == "DropClass" and list(ex.results) == ["baseline", "DropClass"]
    ex.set(compare=None)  # one model: the second row leaves the grid
    assert ex.state["compare"] is None and list(ex.results) == ["baseline"]
    assert not set(map(id, ex.rows[1].cells.values())) & set(map(id, ex.grid.children))
    assert ex.drop_control.disabled and "no model shown has a drop branch" in ex.drop_control.tooltip
    assert "n/a" in ex.status.value and "no drop branch" in ex.readout.value
    ex.set(model="DropClass", compare="baseline")
    assert not ex.drop_control.disabled


def test_a_change_shows_the_busy_cue_until_it_is_drawn(explorer):
    ex = explorer.set(image=0, drop=None, compare="baseline")
    stale, status = [], []
    ex.grid.observe(lambda c: stale.append("dropclass-stale" in c.new), "_dom_classes")
    ex.status.observe(lambda c: status.append(c.new), "value")
    ex.drop_control.value = "road"  # as a choice in the page
    assert stale[0] and not stale[-1], stale  # dimmed from the change until the draw
    assert "computing" in status[0] and "computing" not in status[-1] and "dropped: <b>road</b>" in status[-1]
    assert "dropclass-busy" not in ex.status._dom_classes and ex.seconds > 0


def test_next_scene_with_a_class_and_rare_classes_first(explorer, data):
    ex = explorer.set(image=0)
    gt = [{c for c in np.unique(data[i][1].numpy()).tolist() if c < 19} for i in range(len(data))]
    counts = {c: sum(c in s for s in gt) for c in range(19)}
    listed = [v for _, v in ex.find_control.options]
    assert sorted(listed, key=lambda n: (counts[CITYSCAPES.index(n)] == 0, counts[CITYSCAPES.index(n)])) == listed
    assert ex.find_control.value == listed[0] and counts[CITYSCAPES.index(listed[0])] > 0
    c = next(c for c in range(19) if 0 < counts[c] < len(data))  # in some scenes, not all
    here = 0
    for _ in range(counts[c] + 1):
        found = ex.next_scene_with(CITYSCAPES.classes[c])
        expected = next(i % len(data) for i in range(here + 1, here + 1 + len(data)) if c in gt[i % len(data)])
        assert found == expected and ex.state["image"] == expected and c in gt[found]
        here = found
    absent = [c for c in range(19) if counts[c] == 0]
    if absent:
        assert ex.next_scene_with(absent[0]) is None and "no scene has" in ex.status.value and ex.state["image"] == here
        ex.find_control.value = CITYSCAPES.classes[absent[0]]  # a class in no scene: the button says so and is off
        assert ex.find_button.disabled and "no scene has" in ex.find_button.tooltip
    ex.find_control.value = listed[0]
    assert not ex.find_button.disabled


def test_inspected_class_defaults_to_one_in_the_scene(dc, data):
    for i in range(len(data)):
        ex = ClassDropExplorer({"DropClass": dc}, data, image=i)
        assert CITYSCAPES.index(ex.state["inspect"]) in set(np.unique(data[i][1].numpy()).tolist())


def test_figure_text_is_at_least_9_pt(explorer):
    from matplotlib.text import Text
    from dropclass.explorer_panels import FONT
    ex = explorer.set(image=1, drop="road", inspect="car")
    small = [(p, t.get_text(), t.get_fontsize()) for row in ex.rows for p, fig in row.figures.items()
             for t in fig.findobj(Text) if t.get_text().strip() and t.get_fontsize() < FONT]
    assert FONT >= 9 and not small, small[:5]


def test_the_readout_says_when_the_drop_has_not_bitten(explorer):
    from dropclass.explorer_page import HIGH_SHARE
    ex = explorer
    for z in [CITYSCAPES.classes[c] for c in np.unique(ex.set(drop=None).result.output_prediction).tolist()]:
        s = ex.set(drop=z).results["DropClass"]
        high = s.still_predicted is not None and s.still_predicted > HIGH_SHARE
        assert ("has not bitten" in ex.readout.value) == high
        if high: assert "bite-group" in ex.readout.value


def test_the_display_palette_tells_car_from_motorcycle():
    from dropclass.plotting import display_labels
    shown = display_labels(CITYSCAPES)
    distance = lambda a, b: float(np.linalg.norm(np.subtract(shown.palette[CITYSCAPES.index(a)], shown.palette[CITYSCAPES.index(b)], dtype=float)))
    assert distance("car", "motorcycle") > 150 and distance("person", "rider") > 150
    others = [n for n in CITYSCAPES.classes if n != "motorcycle"]
    assert min(distance("motorcycle", n) for n in others) > 100


def test_from_checkpoints_reads_the_diagnostics_before_its_one_update(runs):
    ex = ClassDropExplorer.from_checkpoints({"DropClass": runs["dropclass"], "baseline": runs["baseline"]}, length=3)
    assert ex.updates == 1  # the readout has the val-split figures from the first draw: no second update for them
    assert ex.run_diagnostics["baseline"] is None and ex.run_diagnostics["DropClass"]["split"] == "val"
    assert f"Over {ex.run_diagnostics['DropClass']['scenes']} val scenes" in ex.readout.value

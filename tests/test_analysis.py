"Tests of dropclass.analysis: the co-location bias benchmark (Table 4), class correlations (Table 5) and Grad-CAM (Figure 4)."
import json
import math

import matplotlib
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch.utils.data import DataLoader

from dropclass.analysis.bias import (PAPER_TABLE4, BiasTable, ErasureIoU, delta_figure, drop_figure, influential_classes,
                                     iou_after_erasing, iou_drop, shift_table, table4, unbiased_iou, vulnerable_classes)
from dropclass.analysis.correlation import (PAPER_TABLE5, class_correlation, classifier_weights, correlation_figure,
                                            correlation_table, cosine_matrix, offdiagonal_sums, sums_figure)
from dropclass.analysis.gradcam import (class_gradcam, class_regions, gradcam_figure, gradcam_pair, gradcam_ratios,
                                        normalize_cams, overlay, prediction_path, region_means, scenes_with, upsample_cams)
from dropclass.core import DropClass
from dropclass.data.labels import CITYSCAPES, LabelSet
from dropclass.data.synthetic import SyntheticStreets
from dropclass.data.transforms import eval_transforms
from dropclass.data.unbiased import ErasedClass
from dropclass.metrics import evaluate, miou
from dropclass.build import tiny_net

NAN = float("nan")
SIZE = (64, 128)


def val_set(n=5, **kw):
    return SyntheticStreets(split="val", length=n, size=SIZE, **kw)


def seeded_tiny(seed):
    torch.manual_seed(seed)
    return tiny_net(19).eval()


# ------------------------------------------------------------------------------------------ IoU after erasing a class

def direct_iou(model, dataset):
    "Per-class IoU by a plain evaluation of a whole dataset, batches of 3 (the code under test uses other batches)."
    return evaluate(model, DataLoader(dataset, batch_size=3), 19, progress=False).iou.numpy()


@pytest.mark.parametrize("fill", ["mean", "inpaint"])
def test_iou_after_erasing_equals_an_evaluation_of_every_copy(fill):
    model, base = seeded_tiny(0), val_set()
    classes = list(range(19)) if fill == "mean" else ["car", "person", "sky"]  # inpainting is slower: three copies
    res = iou_after_erasing(model, base, classes=classes, fill=fill, batch_size=2, progress=False)
    ids = [CITYSCAPES.index(c) if isinstance(c, str) else c for c in classes]
    assert res.erased == ids and res.after.shape == (len(ids), 19)
    np.testing.assert_allclose(res.iou, direct_iou(model, val_set(transforms=eval_transforms())), rtol=0, atol=1e-12)
    changed = 0
    for r, x in enumerate(ids):
        expected = direct_iou(model, ErasedClass(base, x, fill=fill, transforms=eval_transforms()))
        expected[x] = NAN
        np.testing.assert_allclose(res.after[r], expected, rtol=0, atol=1e-12)
        changed += not np.allclose(res.after[r], res.iou, equal_nan=True)
        assert res.images[r] == sum(bool((base.load_mask(i) == x).any()) for i in range(len(base)))
    assert changed >= 2  # erasing must change some results, or the comparison proves nothing


def test_iou_after_erasing_several_models_share_the_copies_and_modes_are_restored():
    models = {"a": seeded_tiny(0), "b": seeded_tiny(1).train()}
    base = val_set(4)
    both = iou_after_erasing(models, base, classes=[0, 13], fill="mean", progress=False)
    assert list(both) == ["a", "b"] and models["b"].training and not models["a"].training
    for name, m in models.items():
        alone = iou_after_erasing(m, base, classes=[0, 13], fill="mean", progress=False)
        np.testing.assert_array_equal(both[name].after, alone.after)
        np.testing.assert_array_equal(both[name].iou, alone.iou)
    assert not np.allclose(both["a"].after, both["b"].after, equal_nan=True)


def test_iou_after_erasing_refuses_bad_input():
    with pytest.raises(TypeError, match="nn.Module or a non-empty dict"):
        iou_after_erasing([seeded_tiny(0)], val_set(2))
    with pytest.raises(TypeError, match="nn.Module or a non-empty dict"):
        iou_after_erasing({}, val_set(2))
    with pytest.raises(ValueError, match="erased before any transform"):
        iou_after_erasing(seeded_tiny(0), val_set(2, transforms=eval_transforms()))
    with pytest.raises(ValueError, match="not a cityscapes class"):
        iou_after_erasing(seeded_tiny(0), val_set(2), classes=["unicorn"])


def test_erasure_results_round_trip_and_check_their_shapes():
    r = ErasureIoU(["a", "b", "c"], [2, 0], [0.5, NAN, 0.25], [[0.4, NAN, NAN], [NAN, 0.1, 0.2]], [3, 1])
    back = ErasureIoU.from_json(r.to_json())
    np.testing.assert_array_equal(back.after, r.after)
    np.testing.assert_array_equal(back.iou, r.iou)
    assert back.erased == [2, 0] and back.images.tolist() == [3, 1]
    np.testing.assert_allclose(r.drop, [[0.1, NAN, NAN], [NAN, NAN, 0.05]])
    with pytest.raises(ValueError, match=r"expected iou \(3,\), after \(2, 3\)"):
        ErasureIoU(["a", "b", "c"], [2, 0], [0.5, 0.1, 0.2], [[0.4, 0.1, 0.2]], [3, 1])


# ----------------------------------------------------------------------------- influential classes, unbiased IoU, mIoU*

# Four classes. IoU on I, and on each copy (row X erased): the diagonal is undefined.
IOU = np.array([0.9, 0.6, 0.5, 0.3])
AFTER = np.array([[NAN, 0.3, 0.5, 0.1],
                  [0.8, NAN, 0.4, 0.3],
                  [0.9, 0.5, NAN, 0.2],
                  [0.7, 0.6, 0.45, NAN]])
# drop D[X, Y] = IOU[Y] - AFTER[X, Y]:
#   Y=0: X=1 0.1, X=2 0.0, X=3 0.2 -> top2 [3, 1]
#   Y=1: X=0 0.3, X=2 0.1, X=3 0.0 -> top2 [0, 2]
#   Y=2: X=0 0.0, X=1 0.1, X=3 0.05 -> top2 [1, 3]
#   Y=3: X=0 0.2, X=1 0.0, X=2 0.1 -> top2 [0, 2]
TOP2 = [[3, 1], [0, 2], [1, 3], [0, 2]]
UNBIASED2 = [(0.7 + 0.8) / 2, (0.3 + 0.5) / 2, (0.4 + 0.45) / 2, (0.1 + 0.2) / 2]  # 0.75, 0.4, 0.425, 0.15


def test_drop_matrix_and_influential_classes_by_hand():
    D = iou_drop(IOU, AFTER)
    assert D[3, 0] == pytest.approx(0.2) and D[0, 1] == pytest.approx(0.3) and math.isnan(D[2, 2])
    assert influential_classes(D, k=2).tolist() == TOP2
    assert influential_classes(D, k=1).tolist() == [[3], [0], [1], [0]]
    # rows given as a subset of classes, in any order
    assert influential_classes(D[[3, 1]], k=1, erased=[3, 1]).tolist() == [[3], [3], [1], [1]]


def test_influential_classes_break_ties_by_train_id_and_rank_nan_last():
    D = np.array([[NAN, 0.2, NAN], [0.2, NAN, NAN], [0.2, 0.2, NAN]])
    assert influential_classes(D, k=1).tolist() == [[1], [0], [0]]  # ties: the smaller id; column 2 all NaN: still ids
    assert influential_classes(D, k=2).tolist() == [[1, 2], [0, 2], [0, 1]]


def test_unbiased_iou_and_vulnerable_classes_by_hand():
    ub = unbiased_iou(AFTER, TOP2)
    np.testing.assert_allclose(ub, UNBIASED2)
    # vulnerability IOU - ub = [0.15, 0.2, 0.075, 0.15]: class 1, then the tie 0 / 3 by id, then 2
    assert vulnerable_classes(IOU, ub, n=4) == [1, 0, 3, 2]
    assert vulnerable_classes(IOU, ub) == [1, 0]  # C // 2 by default
    assert miou(ub, vulnerable_classes(IOU, ub)) == pytest.approx((0.4 + 0.75) / 2)  # mIoU*
    assert vulnerable_classes([0.5, NAN, 0.4], [0.4, 0.3, 0.4], n=3) == [0, 2, 1]  # NaN last


def test_unbiased_iou_ignores_undefined_copies_and_refuses_missing_ones():
    after = np.array([[NAN, NAN], [0.5, NAN]])
    np.testing.assert_array_equal(unbiased_iou(after, [[1], [0]]), [0.5, NAN])
    with pytest.raises(ValueError, match=r"classes \[2\] are in `top` but were not erased"):
        unbiased_iou(AFTER[:2], [[1], [2], [1], [0]], erased=[0, 1])
    with pytest.raises(ValueError, match="fewer than k=4"):
        influential_classes(iou_drop(IOU, AFTER), k=4)
    with pytest.raises(ValueError, match="k must be at least 1"):
        influential_classes(iou_drop(IOU, AFTER), k=0)
    with pytest.raises(ValueError, match="one row per class"):
        unbiased_iou(AFTER, [[1, 2]])


# ------------------------------------------------------------------------------------------------------------ Table 4

FOUR = LabelSet("four", ("w", "x", "y", "z"), ((0, 0, 0),) * 4, pixel_share={"w": 50.0, "x": 1.0, "y": 10.0, "z": 0.5})


def hand_results():
    base = ErasureIoU(list(FOUR.classes), [0, 1, 2, 3], IOU, AFTER, [1, 1, 1, 1])
    ours = ErasureIoU(list(FOUR.classes), [0, 1, 2, 3], IOU + 0.05, AFTER + 0.1, [1, 1, 1, 1])
    return {"Baseline": base, "Ours": ours}


def test_table4_by_hand():
    t = table4(hand_results(), FOUR, k=2)
    assert t.rows == ["Baseline (I)", "Baseline (I*)", "Δ (Baseline)", "Ours (I)", "Ours (I*)", "Δ (Ours)"]
    assert t.kinds == ["model", "model", "delta"] * 2
    assert t.classes == ["x", "w", "z", "y"]  # by the baseline's vulnerability, largest first
    assert t.rare == ["x", "w"]  # mIoU*'s classes: the C // 2 most vulnerable
    assert t.influential == {"w": ["z", "x"], "x": ["w", "y"], "y": ["x", "z"], "z": ["w", "y"]}
    ub = np.array(UNBIASED2)
    np.testing.assert_allclose(t.values[1], 100 * np.array([ub[1], ub[0], ub[3], ub[2], ub.mean(), (ub[0] + ub[1]) / 2]))
    np.testing.assert_allclose(t.values[0][:4], 100 * IOU[[1, 0, 3, 2]])
    # the other model is evaluated on the baseline's influential classes: its own would be the same here, so shift
    np.testing.assert_allclose(t["Ours (I*)"]["x"], 100 * (ub[1] + 0.1))
    np.testing.assert_allclose(t.values[2], t.values[1] - t.values[0])
    np.testing.assert_allclose(t["Δ (Ours)"]["mIoU"], 100 * (ub.mean() + 0.1 - IOU.mean() - 0.05))
    assert table4(hand_results(), FOUR, k=2, order="share").classes == ["z", "x", "y", "w"]
    assert table4(hand_results(), FOUR, k=2, order=["y", "z", 0, 1]).classes == ["y", "z", "w", "x"]
    assert table4(hand_results(), FOUR, k=2, n=1).rare == ["x"]


def test_table4_influential_classes_come_from_the_baseline():
    r = hand_results()
    other = ErasureIoU(list(FOUR.classes), [0, 1, 2, 3], IOU, AFTER[::-1].copy(), [1, 1, 1, 1])
    t = table4({"Baseline": r["Baseline"], "Other": other}, FOUR, k=2)
    top = influential_classes(r["Baseline"].drop, 2)
    np.testing.assert_allclose([t["Other (I*)"][c] for c in FOUR.classes], 100 * unbiased_iou(other.after, top))
    t2 = table4({"Baseline": r["Baseline"], "Other": other}, FOUR, k=2, baseline="Other")
    assert t2.influential != t.influential


def test_table4_renderers():
    t = table4(hand_results(), FOUR, k=2)
    md = t.to_markdown().splitlines()
    assert md[0] == "| Model | x* | w* | z | y | mIoU | mIoU* |"
    assert md[4].startswith("| Δ (Baseline) | -20.0 | -15.0 |")
    assert t.to_text().splitlines()[0].split() == ["Model", "x*", "w*", "z", "y", "mIoU", "mIoU*"]
    rows = t.to_csv(decimals=1).splitlines()
    assert rows[0] == "row,kind,x,w,z,y,mIoU,mIoU_star"
    assert rows[2].startswith("Baseline (I*),model,40.0")
    d = json.loads(t.to_json(decimals=2))
    assert d["star"] == ["x", "w"] and d["influential"]["w"] == ["z", "x"] and "rare" not in d
    assert d["rows"][2]["values"]["mIoU_star"] == pytest.approx(-17.5)
    assert isinstance(t, BiasTable) and "| Ours (I*) |" in t._repr_markdown_()


def test_table4_and_shift_table_refuse_bad_input():
    r = hand_results()
    sub = ErasureIoU(list(FOUR.classes), [0, 1, 2], IOU, AFTER[:3], [1, 1, 1])
    with pytest.raises(ValueError, match="same copies"):
        table4({"Baseline": r["Baseline"], "Ours": sub}, FOUR)
    with pytest.raises(ValueError, match="other classes than"):
        table4(r, CITYSCAPES)
    with pytest.raises(KeyError, match="no model 'nobody'"):
        table4(r, FOUR, k=2, baseline="nobody")
    with pytest.raises(ValueError, match="results is empty"):
        table4({}, FOUR)
    with pytest.raises(ValueError, match="fractions"):
        shift_table({"a": IOU * 100}, {"a": IOU}, FOUR)
    with pytest.raises(ValueError, match="same models"):
        shift_table({"a": IOU}, {"b": IOU}, FOUR)
    with pytest.raises(ValueError, match="one IoU per class"):
        shift_table({"a": IOU[:3]}, {"a": IOU[:3]}, FOUR)
    with pytest.raises(ValueError, match="order must be"):
        table4(r, FOUR, k=2, order="alphabet")
    with pytest.raises(ValueError, match="each of the 4 classes once"):
        table4(r, FOUR, k=2, order=[0, 1, 2])


def test_shift_table_for_a_second_split():
    t = shift_table({"A": IOU, "B": IOU}, {"A": IOU - [0.1, 0.3, 0.0, 0.2], "B": IOU}, FOUR, sets=("val", "cf"), n=1)
    assert t.rows[:3] == ["A (val)", "A (cf)", "Δ (A)"] and t.classes == ["x", "z", "w", "y"] and t.rare == ["x"]
    assert t["Δ (A)"]["mIoU_star"] == pytest.approx(-30.0) and t["Δ (B)"]["mIoU"] == pytest.approx(0.0)


def test_paper_table4_is_self_consistent():
    for row in ("Baseline (I*)", "Ours (I)"):
        v = np.array(PAPER_TABLE4[row])
        assert np.mean(v[:19]) == pytest.approx(v[19], abs=0.05) and np.mean(v[:9]) == pytest.approx(v[20], abs=0.05)
    assert sorted(PAPER_TABLE4["classes"]) == sorted(CITYSCAPES.classes)


def test_bias_figures():
    r = hand_results()
    fig = drop_figure(r, FOUR)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(shown[0, 2], 100 * (IOU[2] - AFTER[3, 2]))  # rows and columns by share: z, x, y, w
    assert len(fig.axes[0].lines) == 4 * 3  # three influential classes marked per column
    drops = np.abs(np.concatenate([100 * d.drop[np.isfinite(d.drop)] for d in r.values()]))
    np.testing.assert_allclose(fig.axes[0].images[0].get_clim(), (-np.percentile(drops, 98), np.percentile(drops, 98)))
    assert drop_figure(r, FOUR, vmax=5.0).axes[0].images[0].get_clim() == (-5.0, 5.0)
    assert len(delta_figure(table4(r, FOUR, k=2)).axes[0].patches) == 2 * 6
    with pytest.raises(ValueError, match="orders by 'share'"):
        drop_figure(r, FOUR, order="vulnerability")


# -------------------------------------------------------------------------------------------------------- correlation

def test_cosine_matrix_by_hand():
    r = 2 ** -0.5
    W = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]])
    S = cosine_matrix(W)
    np.testing.assert_allclose(S, [[1, r, 0], [r, 1, -r], [0, -r, 1]], atol=1e-15)
    np.testing.assert_allclose(cosine_matrix(np.array([[2.0, 0.0], [3.0, 3.0], [0.0, -0.1]])), S, atol=1e-15)
    np.testing.assert_allclose(offdiagonal_sums(S), [r, 0, -r], atol=1e-15)
    with pytest.raises(ValueError, match=r"classes \[1\] have all-zero"):
        cosine_matrix(torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\(C, D\) matrix"):
        cosine_matrix(torch.ones(3))
    with pytest.raises(ValueError, match="square"):
        offdiagonal_sums(np.ones((2, 3)))


def deeplab():
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large
    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=19)


def classifier_of(name, m):
    return {"tiny": lambda: m.classifier, "dropclass": lambda: m.model.classifier, "fpn": lambda: m.segmentation_head[0],
            "unet": lambda: m.segmentation_head[0], "deeplab": lambda: m.classifier[4]}[name]()


MODELS = {"tiny": lambda: tiny_net(19), "dropclass": lambda: DropClass(tiny_net(19)),
          "fpn": lambda: smp.FPN("resnet18", encoder_weights=None, classes=19),
          "unet": lambda: smp.Unet("resnet18", encoder_weights=None, classes=19), "deeplab": deeplab}


@pytest.mark.parametrize("name", list(MODELS))
def test_class_correlation_of_every_model_family(name):
    m = MODELS[name]()
    w = classifier_of(name, m).weight.detach().double().flatten(1)
    assert classifier_weights(m).shape == w.shape  # the 3x3 Unet head: K * 9 per class
    S = class_correlation(m)
    expected = np.array([[float(F.cosine_similarity(w[i], w[j], dim=0)) for j in range(19)] for i in range(19)])
    np.testing.assert_allclose(S, expected, atol=1e-12)
    np.testing.assert_array_equal(S, S.T)
    np.testing.assert_array_equal(np.diag(S), np.ones(19))


def test_classifier_weights_errors():
    class Odd(nn.Module):
        pass
    with pytest.raises(TypeError, match="don't know where the features"):
        classifier_weights(Odd())
    with pytest.raises(ValueError, match="one row per class"):
        classifier_weights(torch.ones(5))


def test_correlation_table_by_hand_and_renderers():
    three = LabelSet("three", ("a", "b", "c"), ((0, 0, 0),) * 3, pixel_share={"a": 5.0, "b": 1.0, "c": 2.0})
    Sa = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, -0.1], [0.2, -0.1, 1.0]])
    Sb = np.array([[1.0, 0.1, 0.0], [0.1, 1.0, 0.3], [0.0, 0.3, 1.0]])
    t = correlation_table({"Baseline": Sa, "Ours": Sb}, three)
    assert t.rows == ["Baseline", "Ours", "Δ"] and t.classes == ["b", "c", "a"] and t.rare == ["b"]
    np.testing.assert_allclose(t.values[0], [0.4, 0.1, 0.7, 0.4])  # sums of b, c, a and their mean
    np.testing.assert_allclose(t.values[1], [0.4, 0.3, 0.1, 0.8 / 3])
    np.testing.assert_allclose(t.values[2], t.values[0] - t.values[1])  # Table 5's sign: baseline - DropClass
    assert t.to_markdown().splitlines()[0] == "| Model | b† | c | a | mean |"
    assert "| Δ | 0.00 | -0.20 | 0.60 | 0.13 |" in t.to_markdown()
    assert t.to_csv().splitlines()[0] == "row,kind,b,c,a,mean"
    d = json.loads(t.to_json())
    assert d["unit"] == "sum of cosine similarities" and d["rows"][2]["name"] == "Δ"
    assert t.to_text().splitlines()[0].split() == ["Model", "b†", "c", "a", "mean"]
    assert correlation_table({"Baseline": Sa, "Ours": Sb}, three, baseline="Ours")["Δ"]["a"] == pytest.approx(-0.6)
    with pytest.raises(ValueError, match="choose one with other="):
        correlation_table({"x": Sa, "y": Sb, "z": Sa}, three)
    with pytest.raises(ValueError, match="has 3 classes"):
        correlation_table({"x": np.eye(2)}, three)
    with pytest.raises(ValueError, match="matrices is empty"):
        correlation_table({}, three)


def test_paper_table5_and_correlation_figures():
    b, o, d = (np.array(PAPER_TABLE5[k]) for k in ("Baseline", "Ours", "Δ"))
    np.testing.assert_allclose(b - o, d, atol=0.011)
    assert (d > 0).all()  # the paper: DropClass less correlated for every class
    mats = {"a": class_correlation(tiny_net(19)), "b": class_correlation(tiny_net(19))}
    fig = correlation_figure(mats, CITYSCAPES)
    assert len(fig.axes) == 3
    assert fig.axes[1].images[0].get_array()[0, 1] == mats["b"][17, 12]  # motorcycle, rider first
    assert len(sums_figure(correlation_table(mats, CITYSCAPES)).axes[0].lines) == 2 + 1


# ----------------------------------------------------------------------------------------------------------- Grad-CAM

class LogitsOnly(nn.Module):
    "torchvision's models return a dict; pytorch-grad-cam needs a tensor."
    def __init__(self, m): super().__init__(); self.m = m
    def forward(self, x): return self.m(x)["out"]


CAM_MODELS = {  # name -> (model, the module whose output is A, what pytorch-grad-cam calls)
    "tiny": lambda: (lambda m: (m, m.features, m))(tiny_net(19)),
    "dropclass": lambda: (lambda m: (m, m.model.features, m))(DropClass(tiny_net(19))),
    "dropclass-plain": lambda: (lambda m: (m, m.model.features, m))(DropClass(tiny_net(19), inference="plain")),
    "fpn": lambda: (lambda m: (m, m.decoder, m))(smp.FPN("resnet18", encoder_weights=None, classes=19)),
    "dropclass-fpn": lambda: (lambda m: (m, m.model.decoder, m))(DropClass(smp.FPN("resnet18", encoder_weights=None, classes=19))),
    "deeplab": lambda: (lambda m: (m, m.classifier[3], LogitsOnly(m)))(deeplab()),
}


def grad_cam_library(model, layer, x, c, region):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
    targets = [SemanticSegmentationTarget(c, r.float().numpy()) for r in region]
    with GradCAM(model=model, target_layers=[layer]) as cam:
        return torch.from_numpy(cam(input_tensor=x, targets=targets))


def ours_like_library(model, x, c, region):
    "Our map with pytorch-grad-cam's scale and normalisation: times |region|, min-max, resize to the input, min-max again."
    # their sum, our mean
    cam = class_gradcam(model, x, [c], region[:, None]) * region.sum((-2, -1))[:, None, None, None]
    return normalize_cams(upsample_cams(normalize_cams(cam), x.shape[-2:]))[:, 0]


@pytest.mark.parametrize("name", list(CAM_MODELS))
def test_gradcam_matches_pytorch_grad_cam(name):
    torch.manual_seed(0)
    model, layer, wrapped = CAM_MODELS[name]()
    model.eval()
    x = torch.randn(2, 3, 64, 96)
    labels = torch.randint(0, 19, (2, 64, 96))
    labels[1, :, :40] = 5  # a large region as well
    for c in (0, 5, 18):
        region = labels == c
        torch.testing.assert_close(ours_like_library(model, x, c, region), grad_cam_library(wrapped, layer, x, c, region),
                                   rtol=0, atol=1e-4)


def test_gradcam_of_dropclass_follows_the_drop_branch_it_predicts_with():
    "The maps through the plain classifier differ from those of the prediction: the library check can fail."
    torch.manual_seed(0)
    model = DropClass(tiny_net(19)).eval()
    with torch.no_grad():  # make the compensating layer far from the identity, as training does
        model.compensate[0].weight.normal_(0, 0.5)
    plain = DropClass(model.model, inference="plain").eval()
    plain.compensate = model.compensate
    x, labels = torch.randn(1, 3, 64, 96), torch.randint(0, 19, (1, 64, 96))
    region = labels == 3
    theirs = grad_cam_library(model, model.model.features, x, 3, region)
    torch.testing.assert_close(ours_like_library(model, x, 3, region), theirs, rtol=0, atol=1e-4)
    assert (ours_like_library(plain, x, 3, region) - theirs).abs().max() > 0.05


def test_prediction_path_gives_the_models_output_and_class_gradcam_restores_the_mode():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 96)
    for name in ("tiny", "dropclass", "dropclass-plain", "fpn"):
        model = CAM_MODELS[name]()[0].eval()
        A, head = prediction_path(model, x)
        with torch.no_grad(): torch.testing.assert_close(head(A), model(x), rtol=1e-5, atol=1e-5)
        assert not A.requires_grad
    model = DropClass(tiny_net(19)).train()
    cams = class_gradcam(model, x, [1, 2], torch.ones(2, 2, 64, 96, dtype=torch.bool))
    assert model.training and cams.shape == (2, 2, 32, 48) and (cams >= 0).all()


def test_class_gradcam_regions():
    torch.manual_seed(0)
    model = tiny_net(19).eval()
    x, labels = torch.randn(1, 3, 64, 96), torch.randint(0, 4, (1, 64, 96))
    R = class_regions(labels, [0, 2, 7])
    assert R.shape == (1, 3, 64, 96) and R.dtype == torch.bool and not R[0, 2].any()
    cams = class_gradcam(model, x, [0, 2, 7], R)
    assert (cams[0, 2] == 0).all() and cams[0, 0].max() > 0  # an empty region gives an empty map
    weighted = class_gradcam(model, x, [0], R[:, :1].float() * 3)  # weights are normalised: the scale does not matter
    torch.testing.assert_close(weighted[:, 0], cams[:, 0])
    with pytest.raises(ValueError, match=r"regions must have shape \(B, n, H, W\) = \(1, 2, 64, 96\)"):
        class_gradcam(model, x, [0, 1], R[:, :1])


def test_normalize_upsample_and_overlay():
    c = torch.tensor([[[[0.0, 2.0], [1.0, 4.0]], [[1.0, 1.0], [1.0, 2.0]]]])
    torch.testing.assert_close(normalize_cams(c)[0, 0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(normalize_cams(c, "image")[0, 1], torch.tensor([[0.25, 0.25], [0.25, 0.5]]), atol=1e-6, rtol=0)
    assert normalize_cams(torch.zeros(1, 1, 2, 2)).eq(0).all()  # a flat map stays 0, no NaN
    with pytest.raises(ValueError, match="per must be"):
        normalize_cams(c, "pixel")
    assert upsample_cams(c, (4, 4))[0, 0].shape == (4, 4)
    img = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    o = overlay(img, torch.zeros(2, 2), alpha=0.25)
    assert o.shape == (2, 2, 3) and 0 <= o.min() and o.max() <= 1
    np.testing.assert_allclose(o[0, 0], 0.75 + 0.25 * np.array(matplotlib.colormaps["jet"](0.0)[:3]))
    with pytest.raises(ValueError, match="uint8"):
        overlay(img.float(), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"\(H, W\) map"):
        overlay(img, torch.zeros(3, 3))


def test_scenes_pairs_and_the_figure():
    raw, val = val_set(30), val_set(30, transforms=eval_transforms())  # scenes 25 and 28 have motorcycles
    moto = CITYSCAPES.index("motorcycle")
    counts = [int((raw.load_mask(i) == moto).sum()) for i in range(30)]
    found = scenes_with(raw, "motorcycle", n=30)
    assert len(found) >= 2 and found == sorted([i for i in range(30) if counts[i]], key=lambda i: (-counts[i], i))
    assert scenes_with(raw, moto, n=1, search=0) == []
    i = found[0]
    image, mask = val[i]
    torch.manual_seed(0)
    model = DropClass(tiny_net(19)).eval()
    cams, R = gradcam_pair(model, image, mask, moto, CITYSCAPES.index("bicycle"))
    assert cams.shape == (2, *SIZE) and cams.max() <= 1 + 1e-6 and cams.min() >= 0
    assert torch.equal(R, mask == moto)
    assert region_means(cams, R).shape == (2,) and region_means(cams, torch.zeros_like(R)).isnan().all()
    m = region_means(torch.tensor([[[1.0, 3.0]], [[0.0, 2.0]]]), torch.tensor([[True, True]]))
    torch.testing.assert_close(m, torch.tensor([2.0, 1.0]))
    _, R_pred = gradcam_pair(model, image, mask, moto, CITYSCAPES.index("bicycle"), region="pred")
    with torch.no_grad(): assert torch.equal(R_pred, model(image[None]).argmax(1)[0] == moto)
    with pytest.raises(ValueError, match="region must be 'gt' or 'pred'"):
        gradcam_pair(model, image, mask, moto, 0, region="box")
    fig = gradcam_figure({"a": tiny_net(19), "b": model}, val, [(i, "motorcycle", "bicycle"), (i, moto, 0)], CITYSCAPES)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 5 + 1  # two rows of five panels, one colour bar
    assert all(ax.collections for ax in fig.axes[:10]), "every panel outlines the object"
    assert fig.axes[-1].get_ylabel().startswith("Grad-CAM")
    pairs_of = [i, *found[1:3]]
    ratios = gradcam_ratios(model, val, pairs_of, moto, CITYSCAPES.index("bicycle"))
    by_hand = [region_means(*gradcam_pair(model, *val[j], moto, CITYSCAPES.index("bicycle"))) for j in pairs_of]
    np.testing.assert_allclose(ratios, [float(m[1] / m[0]) for m in by_hand], rtol=1e-6)
    assert fig.axes[3].get_title().startswith("a: non-GT (bicycle)")

"Tests of dropclass.metrics: the confusion matrix, the metrics computed from it, and evaluation."
import math

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from dropclass.data.labels import CITYSCAPES, VOC
from dropclass.metrics import (ConfusionMatrix, class_accuracy, class_stats, confusion_matrix, evaluate, iou_per_class,
                               mean_class_accuracy, miou, miou_dagger, pixel_accuracy, rare_classes)

from _shared import random_batch

NAN = float("nan")


# ---------------------------------------------------------------------------------------------------- confusion matrix

@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.int32])
def test_matrix_by_hand_with_ignored_pixels(dtype):
    target = torch.tensor([[[0, 0, 1], [1, 2, 255]]], dtype=dtype)
    pred = torch.tensor([[[0, 1, 1], [1, 1, 2]]], dtype=dtype)
    m = confusion_matrix(pred, target, 3)
    assert m.dtype == torch.int64
    # rows truth, columns prediction; the 255 pixel counts nowhere
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]


def test_prediction_at_ignored_pixels_does_not_count():
    pred, target = random_batch()
    other = torch.where(target == 255, (pred + 1) % 5, pred)
    assert torch.equal(confusion_matrix(pred, target, 5), confusion_matrix(other, target, 5))
    assert confusion_matrix(pred, target, 5).sum() == (target != 255).sum()


def test_logits_at_lower_resolution_by_hand():
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]]).view(1, 2, 1, 2)  # (B, C, h, w): class 0 left, 1 right
    target = torch.tensor([[[0, 0, 1, 1], [0, 255, 1, 0]]])  # (B, 2, 4): upsampled, left half 0, right half 1
    assert confusion_matrix(logits, target, 2).tolist() == [[3, 1], [0, 3]]


def test_logits_are_upsampled_bilinearly_then_argmaxed():
    logits = torch.randn(2, 4, 5, 7)
    _, target = random_batch(B=2, C=4, H=20, W=28)
    up = F.interpolate(logits, size=(20, 28), mode="bilinear", align_corners=False).argmax(1)
    assert torch.equal(confusion_matrix(logits, target, 4), confusion_matrix(up, target, 4))
    same = torch.randn(2, 4, 20, 28)
    assert torch.equal(confusion_matrix(same, target, 4), confusion_matrix(same.argmax(1), target, 4))


@pytest.mark.parametrize("seed,C", [(0, 2), (1, 5), (2, 19)])
def test_matches_sklearn(seed, C):
    pred, target = random_batch(B=2, C=C, H=31, W=29, seed=seed)
    valid = target != 255
    expected = sk_confusion_matrix(target[valid].numpy(), pred[valid].numpy(), labels=list(range(C)))
    np.testing.assert_array_equal(confusion_matrix(pred, target, C).numpy(), expected)


def test_stats_match_smp_get_stats():
    pred, target = random_batch(C=6)
    tp, fp, fn, tn = smp.metrics.get_stats(pred, target, mode="multiclass", num_classes=6, ignore_index=255)
    ours = class_stats(confusion_matrix(pred, target, 6))
    for a, b in zip(ours, (tp, fp, fn, tn)): assert torch.equal(a, b.sum(0))


@pytest.mark.parametrize("pred,target,C,message", [
    (torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2), 3, "integer tensor"),
    (torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7), 3, "values [7]"),
    (torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 1, 2, 2, dtype=torch.long), 3, "squeeze(1)"),
    (torch.full((1, 2, 2), 3), torch.zeros(1, 2, 2, dtype=torch.long), 3, "class ids [3]"),
    (torch.full((1, 2, 2), -1), torch.zeros(1, 2, 2, dtype=torch.long), 3, "class ids [-1]"),
    (torch.zeros(1, 2, 1, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long), 3, "nearest interpolation"),
    (torch.zeros(1, 2, 2, dtype=torch.bool), torch.zeros(1, 2, 2, dtype=torch.long), 3, "dtype torch.bool"),
    (torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 3, "4 channels"),
    (torch.zeros(2, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 3, "batch size 2"),
    (torch.zeros(1, 3, 4, 2), torch.zeros(1, 2, 2, dtype=torch.long), 3, "larger than the labels"),
    (torch.zeros(3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long).float(), 3, "integer tensor"),
    (torch.zeros(3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 3, "shape (B, C, H, W)"),
    (np.zeros((1, 2, 2), dtype=np.int64), torch.zeros(1, 2, 2, dtype=torch.long), 3, "torch.Tensor"),
])
def test_input_errors(pred, target, C, message):
    with pytest.raises((TypeError, ValueError)) as e: confusion_matrix(pred, target, C)
    assert message in str(e.value)


# ------------------------------------------------------------------------------------------------------------- metrics

def hand_matrix():
    "Truth 0 0 1 1 2 (and one ignored pixel), prediction 0 1 1 1 1; class 3 occurs nowhere."
    target = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 1, 2]]])
    return confusion_matrix(pred, target, 4)


def test_iou_by_hand_and_nan_for_absent_class():
    iou = iou_per_class(hand_matrix())
    assert iou.dtype == torch.float64
    np.testing.assert_allclose(iou[:3].numpy(), [1 / 2, 2 / 4, 0.0])  # class 2: in the truth, never predicted -> 0
    assert math.isnan(iou[3])  # neither in truth nor prediction -> undefined
    assert miou(iou) == pytest.approx(1 / 3)  # nanmean: the absent class does not count
    assert miou(iou, [0, 3]) == pytest.approx(0.5)


def test_predicted_but_absent_class_has_iou_zero_and_counts_in_the_mean():
    m = confusion_matrix(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 0]]]), 2)
    assert iou_per_class(m).tolist() == [0.5, 0.0]
    assert miou(iou_per_class(m)) == pytest.approx(0.25)
    assert math.isnan(class_accuracy(m)[1])  # but it has no accuracy: no ground truth


def test_iou_matches_smp_iou_score():
    pred, target = random_batch(C=6, seed=3)
    tp, fp, fn, tn = smp.metrics.get_stats(pred, target, mode="multiclass", num_classes=6, ignore_index=255)
    expected = smp.metrics.iou_score(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0), reduction="none")
    np.testing.assert_allclose(iou_per_class(confusion_matrix(pred, target, 6)).numpy(), expected.numpy(), rtol=1e-6)


def test_accuracies_by_hand():
    m = hand_matrix()
    assert pixel_accuracy(m) == pytest.approx(3 / 5)
    np.testing.assert_allclose(class_accuracy(m)[:3].numpy(), [1 / 2, 1.0, 0.0])
    assert math.isnan(class_accuracy(m)[3])
    assert mean_class_accuracy(m) == pytest.approx(0.5)
    empty = torch.zeros(3, 3, dtype=torch.long)
    assert math.isnan(pixel_accuracy(empty)) and math.isnan(miou(iou_per_class(empty)))


def test_miou_inputs():
    assert miou([0.2, NAN, 0.6]) == pytest.approx(0.4)
    assert miou(np.array([0.2, 0.4])) == pytest.approx(0.3)
    assert math.isnan(miou([NAN, NAN]))
    assert math.isnan(miou([0.5, 0.5], classes=[]))
    with pytest.raises(ValueError, match="1-D"): miou(torch.zeros(2, 2))


def test_rare_classes_and_miou_dagger():
    assert [CITYSCAPES.classes[c] for c in rare_classes(CITYSCAPES)] == [
        "motorcycle", "rider", "traffic light", "train", "bus", "truck", "bicycle", "traffic sign", "wall"]
    assert rare_classes([50, 10, 30, 10, 5]) == [4, 1]  # the rarer half of 5 is 2; the tie keeps the lower id
    assert rare_classes(torch.tensor([3, 2, 1, 0]), n=3) == [3, 2, 1]
    iou = torch.rand(19, dtype=torch.float64)
    assert miou_dagger(iou, CITYSCAPES) == pytest.approx(iou[CITYSCAPES.rarest()].mean().item())
    assert miou_dagger([0.1, 0.2, 0.3, 0.4], pixel_counts=[9, 1, 8, 2]) == pytest.approx(0.3)
    assert miou_dagger([0.1, 0.2, 0.3, 0.4], pixel_counts=[9, 1, 8, 2], n=1) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="exactly one"): miou_dagger(iou)
    with pytest.raises(ValueError, match="exactly one"): miou_dagger(iou, CITYSCAPES, pixel_counts=torch.ones(19))
    with pytest.raises(ValueError, match="non-negative"): rare_classes([1, -1])
    with pytest.raises(ValueError, match="no published pixel shares"): rare_classes(VOC)


# ----------------------------------------------------------------------------------------------------- ConfusionMatrix

def test_merge_and_accumulation_equal_everything_at_once():
    logits = torch.randn(6, 5, 6, 8)  # a quarter of the label size
    _, target = random_batch(B=6, C=5, H=24, W=32, seed=4)
    whole = confusion_matrix(logits, target, 5)
    one_by_one = ConfusionMatrix(5)
    for i in range(6): one_by_one.update(logits[i:i + 1], target[i:i + 1])
    assert torch.equal(one_by_one.mat, whole)
    a, b = ConfusionMatrix(5).update(logits[:2], target[:2]), ConfusionMatrix(5).update(logits[2:], target[2:])
    a_before = a.mat.clone()
    total = a + b
    assert torch.equal(total.mat, whole) and torch.equal(a.mat, a_before)  # + leaves its operands alone
    assert a.merge(b) is a and torch.equal(a.mat, whole)
    assert torch.equal(one_by_one.support, torch.stack([(target == c).sum() for c in range(5)]))


def test_matrix_properties_and_reset():
    cm = ConfusionMatrix(4).update(torch.tensor([[[0, 1, 1], [1, 1, 2]]]), torch.tensor([[[0, 0, 1], [1, 2, 255]]]))
    assert cm.miou == pytest.approx(1 / 3)
    assert cm.pixel_accuracy == pytest.approx(3 / 5)
    assert cm.mean_class_accuracy == pytest.approx(0.5)
    assert cm.miou_dagger(pixel_counts=[5, 4, 3, 0]) == pytest.approx(0.0)  # classes 3 (NaN, skipped) and 2 (0)
    assert [t.tolist() for t in cm.stats] == [[1, 2, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [3, 1, 4, 5]]
    assert "5 pixels" in repr(cm) and "mIoU 33.3 %" in repr(cm)
    assert cm.reset().mat.sum() == 0 and "empty" in repr(cm)


def test_matrix_errors():
    with pytest.raises(ValueError, match="at least num_classes"): ConfusionMatrix(19, ignore_index=3)
    with pytest.raises(ValueError, match="at least num_classes"): ConfusionMatrix(19, ignore_index=-1)
    with pytest.raises(ValueError, match="at least num_classes"): confusion_matrix(*random_batch(), 5, ignore_index=0)
    with pytest.raises(ValueError, match="positive int"): ConfusionMatrix(0)
    with pytest.raises(ValueError, match="cannot merge"): ConfusionMatrix(3).merge(ConfusionMatrix(4))
    with pytest.raises(ValueError, match="cannot merge"): ConfusionMatrix(3) + ConfusionMatrix(3, ignore_index=254)
    with pytest.raises(TypeError, match="ConfusionMatrix"): ConfusionMatrix(3).merge(torch.zeros(3, 3))


def test_other_ignore_index():
    target = torch.tensor([[[0, 100, 1, 255]]])
    with pytest.raises(ValueError, match="values \\[255\\]"): ConfusionMatrix(2, ignore_index=100).update(torch.zeros_like(target), target)
    cm = ConfusionMatrix(2, ignore_index=100).update(torch.zeros_like(target[..., :3]), target[..., :3])
    assert cm.mat.tolist() == [[1, 0], [1, 0]]


def test_update_inside_inference_mode_then_use_outside():
    pred, target = random_batch()
    cm = ConfusionMatrix(5)
    with torch.inference_mode(): cm.update(pred, target)
    cm.update(pred, target)
    cm.merge(ConfusionMatrix(5).update(pred, target))
    assert torch.equal(cm.mat, 3 * confusion_matrix(pred, target, 5))


def test_all_reduce_without_process_group_is_a_no_op():
    assert not torch.distributed.is_initialized()
    pred, target = random_batch()
    cm = ConfusionMatrix(5).update(pred, target)
    assert torch.equal(cm.all_reduce().mat, confusion_matrix(pred, target, 5))


def _all_reduce_worker(rank, world, path, out):
    torch.distributed.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    try:
        pred, target = random_batch(B=4, seed=7)
        cm = ConfusionMatrix(5).update(pred[rank::world], target[rank::world]).all_reduce()
        torch.save(cm.mat, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.skipif("fork" not in torch.multiprocessing.get_all_start_methods(), reason="needs the fork start method")
def test_all_reduce_sums_over_two_processes(tmp_path):
    # fork: the workers start in a fraction of a second instead of importing torch again
    torch.multiprocessing.start_processes(_all_reduce_worker, args=(2, tmp_path / "store", tmp_path / "mat"), nprocs=2,
                                          start_method="fork")
    pred, target = random_batch(B=4, seed=7)
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"mat.{rank}"), confusion_matrix(pred, target, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    logits = torch.randn(2, 5, 8, 8)
    _, target = random_batch(B=2, C=5, H=32, W=32)
    expected = confusion_matrix(logits, target, 5)
    assert torch.equal(confusion_matrix(logits.cuda(), target.cuda(), 5).cpu(), expected)
    on_gpu = ConfusionMatrix(5, device="cuda").update(logits.cuda(), target.cuda())
    assert on_gpu.mat.is_cuda and torch.equal(on_gpu.mat.cpu(), expected)
    on_cpu = ConfusionMatrix(5).update(logits.cuda(), target.cuda())  # counted on the GPU, kept on the CPU
    assert not on_cpu.mat.is_cuda and torch.equal(on_cpu.mat, expected)
    assert torch.equal((on_gpu + on_cpu.to("cuda")).mat.cpu(), 2 * expected)


# ------------------------------------------------------------------------------------------------------------ evaluate

class Oracle(nn.Module):
    "Sees one-hot labels, returns their class shares at 1/stride of the size; records the mode it ran in."
    def __init__(self, stride, as_dict=False):
        super().__init__()
        self.pool, self.as_dict, self.modes = nn.AvgPool2d(stride), as_dict, []
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        self.modes.append((self.training, torch.is_inference_mode_enabled()))
        out = self.pool(x) * self.scale
        return {"out": out} if self.as_dict else out


def one_hot_batches(n=3, B=2, C=4, H=16, W=24):
    out = []
    for i in range(n):
        _, target = random_batch(B=B, C=C, H=H, W=W, seed=10 + i)
        x = F.one_hot(torch.where(target == 255, C, target), C + 1)[..., :C].permute(0, 3, 1, 2).float()
        out.append((x, target))
    return out


@pytest.mark.parametrize("as_dict", [False, True])
def test_evaluate_accumulates_like_update(as_dict):
    batches = one_hot_batches()
    model = Oracle(4, as_dict).train()
    cm = evaluate(model, batches, 4, progress=False)
    expected = ConfusionMatrix(4)
    for x, y in batches: expected.update(F.avg_pool2d(x, 4), y)
    assert torch.equal(cm.mat, expected.mat)
    assert model.modes == [(False, True)] * 3  # eval mode, inference mode
    assert model.training  # mode restored


def test_evaluate_full_resolution_oracle_is_perfect():
    cm = evaluate(Oracle(1), one_hot_batches(), 4, device="cpu", progress=False)
    assert cm.pixel_accuracy == 1.0 and cm.miou == 1.0


def test_evaluate_errors():
    class Pair(nn.Module):
        def forward(self, x): return x, x
    batches = one_hot_batches(n=1)
    with pytest.raises(TypeError, match="returned tuple"): evaluate(Pair(), batches, 4, progress=False)
    with pytest.raises(ValueError, match=r"\(image, mask\)"): evaluate(Oracle(1), [batches[0][0]], 4, progress=False)
    model = Oracle(1).train()
    with pytest.raises(ValueError, match="4 channels"): evaluate(model, batches, 5, progress=False)
    assert model.training  # restored after an error too

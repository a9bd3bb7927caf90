"""Eq. 5-9 against torch's cross_entropy and hand-computed values; label checks; schedules."""
import math

import pytest
import torch
import torch.nn.functional as F

from dropclass.conventions import check_labels
from dropclass.losses import (DropClassLoss, DropSchedule, cross_entropy, cross_entropy_drop,
                              drop_labels, seg_loss, suppression_loss, total_loss)

C = 6


def batch(h=8, w=10, scale=4, dtype=torch.float64):
    logits = torch.randn(2, C, h, w, dtype=dtype)
    labels = torch.randint(0, C, (2, h * scale, w * scale))
    labels[0, :5] = 255
    return logits, labels


def upsampled(logits, labels):
    return F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("scale", [1, 4])
def test_cross_entropy_matches_torch(weighted, scale):
    logits, labels = batch(scale=scale)
    w = torch.rand(C, dtype=torch.float64) + 0.2 if weighted else None
    expected = F.cross_entropy(upsampled(logits, labels), labels, weight=w, ignore_index=255)
    torch.testing.assert_close(cross_entropy(logits, labels, w), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("z", [0, 3])
def test_cross_entropy_drop_matches_torch_with_masked_labels(z):
    logits, labels = batch()
    w = torch.rand(C, dtype=torch.float64) + 0.2
    masked = labels.clone()
    masked[labels == z] = 255
    expected = F.cross_entropy(upsampled(logits, labels), masked, weight=w, ignore_index=255)
    torch.testing.assert_close(cross_entropy_drop(logits, labels, z, w), expected, rtol=1e-12, atol=1e-12)
    assert (drop_labels(labels, z) == z).sum() == 0


def test_hand_computed_losses():
    logits = torch.tensor([[0.0, math.log(3)], [0.0, 0.0]]).view(1, 2, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    assert cross_entropy(logits, labels).item() == pytest.approx(1.5 * math.log(2))
    assert cross_entropy_drop(logits, labels, 1).item() == pytest.approx(math.log(2))
    assert cross_entropy_drop(logits, labels, 0).item() == pytest.approx(math.log(4))
    assert suppression_loss(logits, 1).item() == pytest.approx(3 / 8)
    assert suppression_loss(logits, 0).item() == pytest.approx(5 / 8)
    assert seg_loss(torch.tensor(1.0), torch.tensor(3.0), 0.25).item() == pytest.approx(1.5)
    assert total_loss(torch.tensor(1.0), torch.tensor(0.5), 10).item() == pytest.approx(6.0)


def test_suppression_matches_softmax_mean():
    logits, _ = batch()
    expected = torch.softmax(logits, 1)[:, 4].mean()
    torch.testing.assert_close(suppression_loss(logits, 4), expected)


def test_edge_cases_absent_class_ignored_pixels_nothing_dropped():
    logits, labels = batch(dtype=torch.float32)
    labels = labels.clamp(max=C - 2).masked_fill(labels == 255, 255)  # class C-1 absent
    crit = DropClassLoss()
    # the dropped class is absent from the batch: CE_drop is plain CE of the drop branch
    _, parts = crit((logits, logits, C - 1), labels, lam=0.5)
    assert parts["ce_drop"] == pytest.approx(cross_entropy(logits, labels).item())
    # nothing dropped: L_sup = 0 and L_total = L_seg
    _, parts = crit((logits, logits * 2, None), labels, lam=0.3)
    assert parts["sup"] == 0.0 and parts["total"] == pytest.approx(parts["seg"])
    # every pixel ignored: finite loss and finite (zero) gradients for both branches
    lo, dlo = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss, parts = crit((lo, dlo, 2), torch.full_like(labels, 255), lam=0.5)
    loss.backward()
    assert math.isfinite(loss.item()) and parts["ce"] == 0.0 and parts["ce_drop"] == 0.0
    assert torch.isfinite(lo.grad).all() and lo.grad.abs().sum() == 0
    assert torch.isfinite(dlo.grad).all()  # only L_sup reaches the drop branch


def test_total_loss_composition():
    logits, labels = batch(dtype=torch.float32)
    drop = torch.randn_like(logits)
    lam, z = 0.4, 2
    loss, parts = DropClassLoss(alpha=10.0)((logits, drop, z), labels, lam=lam)
    expected = ((1 - lam) * cross_entropy(logits, labels) + lam * cross_entropy_drop(drop, labels, z)
                + 10.0 * suppression_loss(drop, z))
    torch.testing.assert_close(loss, expected)
    _, parts = DropClassLoss(suppress=False)((logits, drop, z), labels, lam=lam)
    assert parts["sup"] == 0.0


def test_class_weights_in_module_follow_logits_dtype():
    logits, labels = batch(dtype=torch.float64)
    w = torch.rand(C) + 0.5
    loss, _ = DropClassLoss(weight=w)((logits, logits, None), labels, lam=0.0)
    expected = F.cross_entropy(upsampled(logits, labels), labels, weight=w.double(), ignore_index=255)
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("labels, message", [
    (torch.zeros(2, 4, 4), "integer tensor"),
    (torch.zeros(2, 1, 4, 4, dtype=torch.long), "squeeze"),
    (torch.zeros(4, 4, dtype=torch.long), r"\(B, H, W\)"),
    (torch.full((2, 4, 4), 7), r"values \[7\] outside \[0, 6\)"),
    (torch.full((2, 4, 4), -1), r"values \[-1\]"),
])
def test_bad_labels_are_explained(labels, message):
    with pytest.raises((TypeError, ValueError), match=message):
        check_labels(labels, C)


def test_batch_mismatch_is_explained():
    with pytest.raises(ValueError, match="batch size"):
        cross_entropy(torch.randn(2, C, 4, 4), torch.zeros(3, 4, 4, dtype=torch.long))


def test_schedules():
    s = DropSchedule(max_iters=1000, iters_per_epoch=100)
    assert [s.p(i) for i in (0, 99, 100, 550, 999, 5000)] == [0.0, 0.0, 0.1, 0.5, 0.9, 1.0]
    s = DropSchedule(max_iters=1000, by="iter", lam_max=0.5)
    assert s.lam(250) == pytest.approx(0.125) and s.p(250) == pytest.approx(0.25)
    s = DropSchedule(max_iters=1050, iters_per_epoch=100)  # a partial last epoch still counts as an epoch
    assert s.p(1000) == pytest.approx(10 / 11)
    with pytest.raises(ValueError, match="iters_per_epoch"):
        DropSchedule(max_iters=10)
    with pytest.raises(ValueError, match="by must be one of"):
        DropSchedule(max_iters=10, by="step")
    with pytest.raises(ValueError, match=r"lambda must be in \[0, 1\]"):
        seg_loss(torch.tensor(1.0), torch.tensor(1.0), -0.1)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("void", [False, True])
def test_upsampled_cross_entropy_matches_torch_values_and_gradients(weighted, align_corners, void):
    from dropclass.losses import upsampled_cross_entropy
    logits, labels = batch(scale=4)
    if void: labels = torch.full_like(labels, 255)
    w = torch.rand(C, dtype=torch.float64) + 0.2 if weighted else None
    up = lambda t: F.interpolate(t, scale_factor=4, mode="bilinear", align_corners=align_corners)
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ref = F.cross_entropy(up(a), labels, weight=w, ignore_index=255) if not void else (up(a) * 0).sum()
    ref.backward()
    lean = upsampled_cross_entropy(b, labels, up, w)
    lean.backward()
    torch.testing.assert_close(lean, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # no gradient wanted: the same value, nothing saved
        torch.testing.assert_close(upsampled_cross_entropy(logits, labels, up, w), ref.detach())


def test_upsampled_cross_entropy_gradcheck_and_half_precision():
    from dropclass.losses import upsampled_cross_entropy
    logits, labels = batch(h=3, w=4, scale=2)
    assert torch.autograd.gradcheck(lambda t: upsampled_cross_entropy(t, labels), (logits.requires_grad_(),))
    lo32 = torch.randn(2, C, 8, 8)
    lab = torch.randint(0, C, (2, 32, 32))
    bf = upsampled_cross_entropy(lo32.bfloat16(), lab)
    assert bf.dtype == torch.bfloat16
    assert bf.float().item() == pytest.approx(cross_entropy(lo32, lab).item(), rel=2e-2)


def test_nothing_dropped_gives_a_positive_zero_that_keeps_the_graph():
    logits = -torch.rand(1, 3, 2, 2, requires_grad=True)  # a negative sum would give -0.0 without care
    sup = suppression_loss(logits, None)
    assert sup.item() == 0.0 and str(sup.item()) == "0.0" and sup.requires_grad

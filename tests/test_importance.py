"""Eq. 1: exact importance scores, the 1x1 shortcut, and Grad-CAM against pytorch-grad-cam."""
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dropclass.conventions import IGNORE_INDEX
from dropclass.importance import (REGIONS, conv1x1_importance, gradcam, importance_scores,
                                  region_weights, upsample_adjoint)

K, C, h1, w1 = 4, 3, 5, 6


def loop_reference(A, head, weights):
    "Eq. 1 by one backward pass per class and per image: slow and independent of the batched code."
    out = torch.zeros(A.shape[0], weights.shape[1], *A.shape[1:], dtype=A.dtype)
    for b in range(A.shape[0]):
        for c in range(weights.shape[1]):
            a = A[b:b + 1].detach().requires_grad_()
            (head(a)[0, c] * weights[b, c]).sum().backward()
            out[b, c] = a.grad[0]
    return out


def make_head(kind):
    if kind == "1x1": return nn.Conv2d(K, C, 1)
    if kind == "3x3": return nn.Conv2d(K, C, 3, padding=1)
    return nn.Sequential(nn.Conv2d(K, 6, 3, padding=1), nn.BatchNorm2d(6), nn.Tanh(), nn.Conv2d(6, C, 1)).eval()


@pytest.mark.parametrize("kind", ["1x1", "3x3", "nonlinear"])
@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("scale", [1, 2, 3.5])
def test_batched_scores_equal_per_class_backward(kind, region, scale):
    head = make_head(kind).double()
    H, W = int(h1 * scale), int(w1 * scale)
    up = partial(F.interpolate, size=(H, W), mode="bilinear", align_corners=False)
    full = lambda a: up(head(a))
    A = torch.randn(2, K, h1, w1, dtype=torch.float64)
    labels = torch.randint(0, C, (2, H, W))
    labels[1, : H // 2] = IGNORE_INDEX
    M = region_weights(labels, C, region, dtype=torch.float64)
    S = importance_scores(A, full, M)
    assert S.shape == (2, C, K, h1, w1)
    torch.testing.assert_close(S, loop_reference(A, full, M), rtol=0, atol=1e-12)


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(10, 12), (15, 17)])
def test_1x1_shortcut_is_exact(region, align_corners, size):
    head = nn.Conv2d(K, C, 1).double()
    up = partial(F.interpolate, size=size, mode="bilinear", align_corners=align_corners)
    A = torch.randn(2, K, h1, w1, dtype=torch.float64)
    M = region_weights(torch.randint(0, C, (2, *size)), C, region, dtype=torch.float64)
    exact = importance_scores(A, lambda a: up(head(a)), M)
    m = upsample_adjoint(M, (h1, w1), up)
    assert (m >= 0).all()
    torch.testing.assert_close(exact, conv1x1_importance(head.weight, m), rtol=0, atol=1e-12)


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_all_pixel_scores_are_the_weight_up_to_a_constant(factor):
    "For integer upsampling (align_corners=False) and the all-pixel average, S^c = W_c / (h1 w1) everywhere."
    head = nn.Conv2d(K, C, 1).double()
    H, W = h1 * factor, w1 * factor
    up = partial(F.interpolate, size=(H, W), mode="bilinear", align_corners=False)
    A = torch.randn(1, K, h1, w1, dtype=torch.float64)
    S = importance_scores(A, lambda a: up(head(a)), region_weights(torch.zeros(1, H, W, dtype=torch.long), C,
                                                                    dtype=torch.float64))
    expected = head.weight[:, :, 0, 0][None, :, :, None, None].expand_as(S) / (h1 * w1)
    torch.testing.assert_close(S, expected, rtol=0, atol=1e-15)


def test_region_weights_values():
    y = torch.tensor([[[0, 0, 1], [255, 0, 1]]])
    M = region_weights(y, 3, "class")
    torch.testing.assert_close(M[0, 0], torch.tensor([[1 / 3, 1 / 3, 0], [0, 1 / 3, 0]]))
    torch.testing.assert_close(M[0, 1], torch.tensor([[0, 0, 0.5], [0, 0, 0.5]]))
    assert M[0, 2].sum() == 0
    torch.testing.assert_close(region_weights(y, 3, "all").sum((2, 3)), torch.ones(1, 3))
    with pytest.raises(ValueError, match="region must be one of"):
        region_weights(y, 3, "gt")
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        region_weights(y[0], 3)


def test_scores_shape_mismatch_is_explained():
    head = nn.Conv2d(K, C, 1)
    with pytest.raises(ValueError, match="label size"):
        importance_scores(torch.randn(1, K, h1, w1), head, torch.ones(1, C, 2 * h1, 2 * w1))


def test_gradcam_matches_pytorch_grad_cam():
    "Eq. 1 over the pixels of class c gives Grad-CAM's channel weights up to |region|, and the same normalised maps."
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    class Recorder(GradCAM):
        def get_cam_weights(self, *args):
            self.weights = super().get_cam_weights(*args)
            return self.weights

    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    head = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, C, 1))
    model = nn.Sequential(features, head).eval()
    x = torch.randn(1, 3, 12, 14)
    labels = torch.randint(0, C, (1, 12, 14))
    with torch.no_grad(): A = features(x)
    S = importance_scores(A, head, region_weights(labels, C, "class"))
    sizes = torch.stack([(labels == c).sum() for c in range(C)]).float()  # |region of c|
    ours = gradcam(A, S * sizes[None, :, None, None, None])  # Grad-CAM scale: sum, not mean, over the region
    for c in range(C):
        mask = (labels[0] == c).numpy().astype(np.float32)
        cam = Recorder(model=model, target_layers=[features])
        theirs = cam(input_tensor=x, targets=[SemanticSegmentationTarget(c, mask)])
        np.testing.assert_allclose(S[0, c].mean((-2, -1)).numpy() * mask.sum(), cam.weights[0], rtol=1e-5, atol=1e-7)
        ours_map = ours[0, c].numpy()
        ours_map = (ours_map - ours_map.min()) / (ours_map.max() - ours_map.min() + 1e-7)  # their normalisation
        np.testing.assert_allclose(ours_map, theirs[0], atol=1e-5)

"""Eq. 2-4: the closed form equals the reference form, values and gradients; sampling the dropped class."""
import pytest
import torch

from dropclass.features import (AVERAGES, class_features, drop_average, dropped_features, keep_mask,
                                sample_drop)
from dropclass.importance import conv1x1_importance

B, K, C, h1, w1 = 2, 7, 6, 3, 4


def with_zeros(x, frac=0.3):
    return torch.where(torch.rand_like(x) < frac, torch.zeros_like(x), x)


def reference(A, W, z, average, m):
    return drop_average(class_features(A, conv1x1_importance(W, m)), z, average)


@pytest.mark.parametrize("z", [None, 0, C - 1])
@pytest.mark.parametrize("average", AVERAGES)
@pytest.mark.parametrize("pixel_factor", [False, True])
@pytest.mark.parametrize("sign", ["mixed", "nonnegative"])
def test_closed_form_equals_reference_values_and_gradients(z, average, pixel_factor, sign):
    A0 = with_zeros(torch.randn(B, K, h1, w1, dtype=torch.float64))
    if sign == "nonnegative": A0 = A0.relu()  # the official case: A comes out of a ReLU
    W0 = with_zeros(torch.randn(C, K, dtype=torch.float64))
    m = torch.rand(B, C, h1, w1, dtype=torch.float64) if pixel_factor else None
    cot = torch.randn(B, K, h1, w1, dtype=torch.float64)
    results = []
    for fn in (reference, dropped_features):
        A, W = A0.clone().requires_grad_(), W0.clone().requires_grad_()
        out = fn(A, W, z, average, m)
        out.backward(cot)
        results.append((out, A.grad, W.grad))
    for ref, closed in zip(*results):
        torch.testing.assert_close(closed, ref, rtol=0, atol=1e-10)


def test_nonnegative_features_reduce_to_mean_positive_weight():
    "With A >= 0 (the official setting), A'_drop = A * mean over kept c of ReLU(W_c)."
    A = torch.rand(B, K, h1, w1, dtype=torch.float64)
    W = torch.randn(C, K, dtype=torch.float64)
    keep = [c for c in range(C) if c != 2]
    expected = A * W[keep].relu().mean(0)[:, None, None]
    torch.testing.assert_close(dropped_features(A, W, 2), expected, rtol=0, atol=1e-12)


def test_averages_differ_by_the_expected_factor():
    A, W = torch.randn(B, K, h1, w1), torch.randn(C, K)
    torch.testing.assert_close(dropped_features(A, W, 1, "kept") * (C - 1) / C, dropped_features(A, W, 1, "all"))
    torch.testing.assert_close(dropped_features(A, W, None, "kept"), dropped_features(A, W, None, "all"))


def test_hand_computed_example():
    A = torch.tensor([2.0, -1.0]).view(1, 2, 1, 1)
    W = torch.tensor([[1.0, 1.0], [-1.0, 3.0], [0.5, -2.0]])
    # A^0 = (2, 0), A^1 = (0, 0), A^2 = (1, 2); drop class 1, average over 2 kept classes
    torch.testing.assert_close(dropped_features(A, W, 1).flatten(), torch.tensor([1.5, 1.0]))
    torch.testing.assert_close(reference(A, W, 1, "kept", None).flatten(), torch.tensor([1.5, 1.0]))


def test_sample_drop_is_reproducible_and_respects_p():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert [sample_drop(19, 0.7, g1) for _ in range(50)] == [sample_drop(19, 0.7, g2) for _ in range(50)]
    assert all(sample_drop(19, 0.0) is None for _ in range(200))
    draws = [sample_drop(19, 1.0) for _ in range(3800)]
    assert set(draws) == set(range(19))
    counts = torch.bincount(torch.tensor(draws), minlength=19).float()
    chi2 = ((counts - 200) ** 2 / 200).sum()
    assert chi2 < 45  # 18 degrees of freedom: p < 0.001 under uniformity
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
            sample_drop(19, bad)


def test_keep_mask_and_bad_z():
    assert keep_mask(4, 2).tolist() == [1, 1, 0, 1]
    assert keep_mask(4).tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match=r"must be in \[0, 4\)"):
        keep_mask(4, 4)
    with pytest.raises(ValueError, match="average must be one of"):
        dropped_features(torch.randn(1, 2, 1, 1), torch.randn(3, 2), 0, "median")


@pytest.mark.parametrize("shape", [(K, 1, 1), (B, K, h1, w1)])
def test_signed_scale_gradcheck(shape):
    from dropclass.features import SignedScale
    A = torch.randn(B, K, h1, w1, dtype=torch.float64)
    A = torch.where(A.abs() < 0.05, torch.full_like(A, -0.7), A).requires_grad_()  # away from the kink at 0
    P = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    Q = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SignedScale.apply, (A, P, Q))
    torch.testing.assert_close(SignedScale.apply(A, P, Q), A.relu() * P + (-A).relu() * Q)

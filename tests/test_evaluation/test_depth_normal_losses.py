"""The Probe3D losses on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from anyup_plugin.evaluation import (
    depth_loss,
    log_depth_gradient_loss,
    normal_angular_loss,
    scale_invariant_log_loss,
)

TARGET = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]])  # (1, 1, 3, 3)
ALL = torch.ones_like(TARGET, dtype=torch.bool)


def test_si_log_loss_of_a_constant_scale_error():
    # g = log(2) at every pixel: sqrt(g^2 - 0.85 g^2) = sqrt(0.15) log 2.
    loss = scale_invariant_log_loss(2.0 * TARGET, TARGET, ALL, eps=0.0)
    assert loss.item() == pytest.approx(math.sqrt(0.15) * math.log(2.0), rel=1e-5)
    # Fully scale-invariant: zero.
    assert scale_invariant_log_loss(2 * TARGET, TARGET, ALL, sigma=1.0, eps=0.0).item() < 1e-5


def test_si_log_loss_uses_valid_pixels_of_the_whole_batch():
    pred = torch.cat([TARGET, 4.0 * TARGET])  # image 0 exact, image 1 off by 4x
    target = torch.cat([TARGET, TARGET])
    valid = torch.cat([ALL, ALL])
    # g is 0 on 9 pixels and log 4 on 9: mean g^2 = (log 4)^2 / 2, mean g = log 4 / 2.
    g = math.log(4.0)
    expected = math.sqrt(g**2 / 2 - 0.85 * (g / 2) ** 2)
    assert scale_invariant_log_loss(pred, target, valid, eps=0.0).item() == pytest.approx(
        expected, rel=1e-5
    )
    valid[1] = False  # the wrong image no longer counts
    assert scale_invariant_log_loss(pred, target, valid, eps=0.0).item() < 1e-5


def test_gradient_loss_of_a_log_ramp():
    # log(pred) - log(target) = column index j: the difference over two columns is 2 on each
    # of the 3 rows, vertical differences are 0, over N = 9 valid pixels -> 6 / 9. The coarser
    # scales (steps 2, 4, 6) leave maps too small for a two-pixel difference.
    ramp = torch.arange(3.0).view(1, 1, 1, 3).expand(1, 1, 3, 3)
    pred = TARGET * ramp.exp()
    assert log_depth_gradient_loss(pred, TARGET, ALL, eps=0.0).item() == pytest.approx(6 / 9)
    # A constant scale error has no gradient error.
    assert log_depth_gradient_loss(3.0 * TARGET, TARGET, ALL, eps=0.0).item() < 1e-6


def test_gradient_loss_counts_only_pairs_of_valid_pixels():
    ramp = torch.arange(3.0).view(1, 1, 1, 3).expand(1, 1, 3, 3)
    valid = ALL.clone()
    valid[..., 0, 0] = False  # row 0 loses its only horizontal pair; N = 8
    loss = log_depth_gradient_loss(TARGET * ramp.exp(), TARGET, valid, eps=0.0)
    assert loss.item() == pytest.approx(4 / 8)


def test_depth_loss_weights_and_ignores_invalid_pixels():
    pred = 2.0 * TARGET
    expected = 10.0 * math.sqrt(0.15) * math.log(2.0)  # gradient term 0
    assert depth_loss(pred, TARGET, eps=0.0).item() == pytest.approx(expected, rel=1e-5)
    target = TARGET.clone()
    target[..., 0, 0] = 0.0  # missing
    target[..., 2, 2] = 11.0  # beyond max_depth
    pred = 2.0 * target
    pred[..., 0, 0] = 50.0
    pred[..., 2, 2] = 0.01
    assert depth_loss(pred, target, eps=0.0).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match='differ'):
        depth_loss(pred[..., :2], target)


def test_depth_loss_without_valid_pixels_is_zero_with_a_graph():
    pred = torch.ones(1, 1, 3, 3, requires_grad=True)
    loss = depth_loss(pred, torch.zeros(1, 1, 3, 3))
    loss.backward()
    assert loss.item() == 0.0 and pred.grad is not None


def _normals(vec, n=4):
    return torch.tensor(vec, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 1, n).clone()


def test_angular_loss_is_the_angle():
    target = _normals([0.0, 0.0, 1.0])
    pred = _normals([0.0, 2.0, 0.0])  # 90 degrees, length 2
    valid = torch.ones(1, 1, 4, dtype=torch.bool)
    assert normal_angular_loss(pred, target, valid).item() == pytest.approx(math.pi / 2, rel=1e-4)


def test_uncertainty_aware_angular_loss():
    target = _normals([0.0, 0.0, 1.0])
    pred = torch.cat([_normals([0.0, 1.0, 0.0]), torch.full((1, 1, 1, 4), 2.0)], 1)
    valid = torch.ones(1, 1, 4, dtype=torch.bool)
    kappa, angle = 2.0, math.pi / 2
    expected = math.log(1 + math.exp(-kappa * math.pi)) - math.log(kappa**2 + 1) + kappa * angle
    assert normal_angular_loss(pred, target, valid).item() == pytest.approx(expected, rel=1e-4)


def test_angular_loss_ignores_invalid_pixels_and_has_finite_gradients_at_zero_error():
    target = _normals([0.0, 0.0, 1.0])
    target[..., 3] = math.nan
    pred = _normals([0.0, 0.0, 1.0]).requires_grad_(True)
    valid = torch.tensor([[[True, True, True, False]]])
    loss = normal_angular_loss(pred, target, valid)
    loss.backward()
    assert loss.item() == pytest.approx(math.acos(1 - 1e-4), rel=1e-3)  # the clamp's margin
    assert torch.isfinite(pred.grad).all()

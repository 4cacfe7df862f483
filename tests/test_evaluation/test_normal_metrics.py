"""normal_metrics on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from anyup_plugin.evaluation import NORMAL_METRIC_KEYS, normal_metrics


def _field(normal, h: int = 2, w: int = 3) -> torch.Tensor:
    """(1, 3, h, w) map of one normal."""
    return torch.tensor(normal, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, h, w).clone()


def _rotated_about_x(normals: torch.Tensor, degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    rot = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    return torch.einsum('ij,bjhw->bihw', rot, normals)


TARGET = _field([0.0, 0.6, 0.8])
VALID = torch.ones(1, 2, 3, dtype=torch.bool)


def test_exact_prediction_scores_perfectly():
    out = normal_metrics(TARGET.clone(), TARGET, VALID)
    assert set(out) == set(NORMAL_METRIC_KEYS)
    assert out['rmse'].item() == pytest.approx(0.0, abs=1e-6)
    assert all(out[k].item() == 1.0 for k in ('within_11_25', 'within_22_5', 'within_30'))


def test_rotation_by_a_known_angle_gives_that_angle():
    pred = _rotated_about_x(TARGET, 20.0) * 3.0  # lengths do not matter
    out = normal_metrics(pred, TARGET, VALID)
    assert out['rmse'].item() == pytest.approx(20.0, abs=1e-4)
    assert (out['within_11_25'].item(), out['within_22_5'].item()) == (0.0, 1.0)
    assert out['within_30'].item() == 1.0


def test_mixed_errors_and_the_ignored_fourth_channel():
    pred = TARGET.clone()
    pred[..., 0] = _rotated_about_x(TARGET, 40.0)[..., 0]  # one column of 3 at 40 degrees
    kappa = torch.full((1, 1, 2, 3), 123.0)
    out = normal_metrics(torch.cat([pred, kappa], 1), TARGET, VALID)
    assert out['rmse'].item() == pytest.approx(math.sqrt(40.0**2 / 3), abs=1e-4)
    assert out['within_30'].item() == pytest.approx(2 / 3)


def test_invalid_pixels_are_ignored_even_when_they_hold_garbage():
    target = TARGET.clone()
    target[..., 2] = math.nan  # a column without ground truth
    valid = VALID.clone()
    valid[..., 2] = False
    pred = _rotated_about_x(TARGET, 20.0)
    pred[..., 2] = -pred[..., 2]  # 180 degrees off where it is not scored
    out = normal_metrics(pred, target, valid[:, None])  # (B, 1, H, W) mask accepted
    assert out['rmse'].item() == pytest.approx(20.0, abs=1e-4)


def test_image_without_valid_pixels_is_nan():
    target = torch.cat([TARGET, TARGET])
    valid = torch.stack([VALID[0], torch.zeros(2, 3, dtype=torch.bool)])
    out = normal_metrics(target.clone(), target, valid)
    for key in NORMAL_METRIC_KEYS:
        assert math.isnan(out[key][1].item()) and not math.isnan(out[key][0].item()), key


def test_zero_length_ground_truth_at_a_valid_pixel_is_an_error():
    target = torch.cat([TARGET, TARGET])
    target[1, :, 0, 1] = 0.0
    with pytest.raises(ValueError, match=r'zero length.*image\(s\) \[1\].*\[1\] pixels'):
        normal_metrics(target.clone(), target, torch.cat([VALID, VALID]))


def test_nan_prediction_is_an_error():
    pred = TARGET.clone()
    pred[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match='predicted normals'):
        normal_metrics(pred, TARGET, VALID)

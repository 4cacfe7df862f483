"""depth_metrics on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from anyup_plugin.evaluation import DEPTH_METRIC_KEYS, depth_metrics, fit_scale_shift

# One 2x2 image with depths 1, 2, 3, 4 m: mean square 30 / 4.
TARGET = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])


def test_exact_prediction_scores_perfectly():
    out = depth_metrics(TARGET.clone(), TARGET)
    assert set(out) == set(DEPTH_METRIC_KEYS)
    for key in ('rmse', 'rel_rmse'):
        assert out[key].item() == pytest.approx(0.0, abs=1e-9)
    for key in ('delta1', 'delta2', 'delta3', 'rel_delta1', 'rel_delta2', 'rel_delta3'):
        assert out[key].item() == 1.0


def test_constant_scale_error_has_known_scores_and_none_after_scale_and_shift():
    out = depth_metrics(1.5 * TARGET, TARGET)
    # errors 0.5 * t: rmse = 0.5 * sqrt(30 / 4)
    assert out['rmse'].item() == pytest.approx(0.5 * math.sqrt(7.5))
    # ratio 1.5: not < 1.25, but < 1.25^2 = 1.5625 and 1.25^3
    assert (out['delta1'].item(), out['delta2'].item(), out['delta3'].item()) == (0.0, 1.0, 1.0)
    assert out['rel_rmse'].item() == pytest.approx(0.0, abs=1e-9)
    assert out['rel_delta1'].item() == 1.0


def test_half_the_pixels_off_by_a_factor_two():
    pred = TARGET * torch.tensor([[[1.0, 2.0], [1.0, 2.0]]])
    out = depth_metrics(pred, TARGET)
    assert out['delta1'].item() == 0.5 and out['delta3'].item() == 0.5  # 2 > 1.25^3 = 1.95
    assert out['rmse'].item() == pytest.approx(math.sqrt((2.0**2 + 4.0**2) / 4))


def test_invalid_pixels_are_ignored():
    # 0 (missing) and 12 m (beyond max_depth) pixels; the prediction there is nonsense.
    target = torch.tensor([[[1.0, 2.0, 0.0], [3.0, 4.0, 12.0]]])
    pred = torch.tensor([[[1.5, 3.0, 99.0], [4.5, 6.0, -5.0]]])
    out = depth_metrics(pred[:, None], target[:, None])  # (B, 1, H, W) accepted too
    ref = depth_metrics(1.5 * TARGET, TARGET)
    for key in DEPTH_METRIC_KEYS:
        assert out[key].item() == pytest.approx(ref[key].item(), abs=1e-9), key


def test_image_without_valid_pixels_is_nan_and_leaves_the_others_alone():
    target = torch.stack([TARGET[0], torch.zeros(2, 2)])
    out = depth_metrics(target.clone(), target)
    for key in DEPTH_METRIC_KEYS:
        assert math.isnan(out[key][1].item()), key
        assert not math.isnan(out[key][0].item()), key
    assert torch.nanmean(out['delta1']).item() == 1.0


def test_scale_and_shift_fit_is_least_squares():
    target = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    pred = 0.5 * target - 0.25  # exact affine map: the fit inverts it
    valid = torch.ones_like(target, dtype=torch.bool)
    assert torch.allclose(fit_scale_shift(pred, target, valid), target, atol=1e-6)
    # A constant prediction: the best fit is the mean target; rel_rmse its standard deviation.
    flat = torch.full_like(target, 7.0)
    assert torch.allclose(fit_scale_shift(flat, target, valid), torch.full_like(target, 2.5))
    out = depth_metrics(flat, target)
    assert out['rel_rmse'].item() == pytest.approx(math.sqrt(1.25))
    # The fit ignores invalid pixels.
    valid[..., 3] = False
    fitted = fit_scale_shift(pred, target, valid)
    assert torch.allclose(fitted[..., :3], target[..., :3], atol=1e-6)


def test_a_zero_or_negative_prediction_is_never_within_delta():
    pred = torch.tensor([[[0.0, -2.0], [3.0, 4.0]]])
    out = depth_metrics(pred, TARGET)
    assert out['delta3'].item() == 0.5


@pytest.mark.parametrize(
    ('target', 'pred', 'message'),
    [
        (torch.tensor([[[1.0, math.nan]]]), None, 'NaN or infinity in image'),
        (torch.tensor([[[1.0, -1.0]]]), None, 'negative values in image'),
        (torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[1.0, math.nan]]]), 'predicted depth'),
    ],
)
def test_bad_values_are_errors_naming_the_image(target, pred, message):
    target = torch.cat([torch.ones_like(target), target])  # the bad one is image 1
    pred = target.nan_to_num().abs() if pred is None else torch.cat([torch.ones_like(pred), pred])
    with pytest.raises(ValueError, match=rf'{message}.*\[1\]'):
        depth_metrics(pred, target)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match='same shape'):
        depth_metrics(torch.ones(1, 2, 2), torch.ones(1, 4, 4))

"""ToImageNetNorm: a framework's input normalisation mapped to RGB ImageNet normalisation."""

from __future__ import annotations

import pytest
import torch

from anyup_plugin.constants import IMAGENET_MEAN, IMAGENET_MEAN_255, IMAGENET_STD, IMAGENET_STD_255
from anyup_plugin.core.input_norm import ToImageNetNorm


def _imagenet(rgb_pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rgb_pixels / 255 - mean) / std


def test_rgb_source_statistics_are_undone():
    rgb = torch.rand(2, 3, 5, 7) * 255
    mean, std = [10.0, 20.0, 30.0], [2.0, 4.0, 8.0]
    x = (rgb - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    norm = ToImageNetNorm(mean, std)
    assert not norm.identity
    torch.testing.assert_close(norm(x), _imagenet(rgb))


def test_bgr_input_is_reordered():
    rgb = torch.rand(1, 3, 8, 8) * 255
    bgr_mean, bgr_std = [103.53, 116.28, 123.675], [1.0, 1.0, 1.0]  # Detectron2's defaults
    bgr_input = rgb.flip(1) - torch.tensor(bgr_mean).view(1, 3, 1, 1)
    norm = ToImageNetNorm(bgr_mean, bgr_std, channel_order='BGR')
    torch.testing.assert_close(norm(bgr_input), _imagenet(rgb))
    assert norm.source_mean == pytest.approx((123.675, 116.28, 103.53))  # reported in RGB


def test_imagenet_rgb_is_the_identity_and_unnormalised_input_works():
    x = torch.randn(1, 3, 4, 4)
    norm = ToImageNetNorm(IMAGENET_MEAN_255, IMAGENET_STD_255)
    assert norm.identity and norm(x) is x
    assert not ToImageNetNorm(channel_order='BGR').identity  # a flip is still needed
    pixels = torch.rand(1, 3, 4, 4) * 255
    raw = ToImageNetNorm()
    raw.set_source([0, 0, 0], [1, 1, 1])
    torch.testing.assert_close(raw(pixels), _imagenet(pixels))


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        (dict(channel_order='YUV'), 'channel_order'),
        (dict(mean=[1.0, 2.0]), 'mean must be 3 finite'),
        (dict(std=[1.0, float('nan'), 1.0]), 'std must be 3 finite'),
        (dict(std=[1.0, 0.0, 1.0]), 'std must be positive'),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ToImageNetNorm(**kwargs)


def test_bad_image_shape():
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        ToImageNetNorm()(torch.zeros(1, 4, 2, 2))

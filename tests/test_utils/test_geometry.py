"""Resize and crop arithmetic: torchvision's conventions, checked against torchvision itself."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from anyup_plugin.utils.geometry import center_crop_offsets, short_side_size


@pytest.mark.parametrize(
    ('height', 'width', 'size', 'expected'),
    [(60, 90, 30, (30, 45)), (90, 60, 30, (45, 30)), (448, 448, 224, (224, 224)),
     (375, 500, 448, (448, 597)), (97, 1001, 448, (448, 4623))],
)  # fmt: skip
def test_short_side_size_truncates_the_long_side(height, width, size, expected):
    assert short_side_size(height, width, size) == expected


@pytest.mark.parametrize(('height', 'width'), [(375, 500), (500, 375), (97, 1001), (449, 450)])
def test_short_side_size_matches_torchvision(height, width):
    out = v2.functional.resize(torch.zeros(1, height, width), [448], antialias=True)
    assert short_side_size(height, width, 448) == tuple(out.shape[-2:])


@pytest.mark.parametrize(('height', 'width'), [(448, 597), (449, 451), (450, 450), (455, 460)])
def test_center_crop_offsets_match_torchvision(height, width):
    image = torch.arange(height * width, dtype=torch.float32).view(1, height, width)
    expected = v2.functional.center_crop(image, [448, 448])
    top, left = center_crop_offsets(height, width, 448, 448)
    assert torch.equal(image[:, top : top + 448, left : left + 448], expected)


def test_center_crop_offsets_hand_computed():
    assert center_crop_offsets(10, 10, 4, 4) == (3, 3)
    assert center_crop_offsets(5, 6, 4, 4) == (0, 1)  # round(0.5) = 0, round(1.0) = 1
    assert center_crop_offsets(7, 4, 4, 4) == (2, 0)  # round(1.5) = 2

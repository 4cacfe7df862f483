"""The batch-level multi-crop step: patch-aligned crops and offsets that pick the right cells."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip('mmengine', reason='the AnyUp trainer is built on MMEngine')

from anyup_plugin.training import (
    MultiCrop,
    crop_feature_windows,
    offsets_from_keys,
    resize_square,
)


@pytest.mark.parametrize('patch_size', [14, 16])
def test_published_shapes_and_patch_alignment(patch_size):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 448, 448)
    views = MultiCrop(input_size=224, crop_size=224, num_crops=4)(images, patch_size)
    grid = 448 // patch_size
    assert views.guidance.shape == (2, 3, 224, 224)
    assert views.crops.shape == (2, 4, 3, 224, 224)
    assert views.offsets.shape == (2, 4, 2)
    assert views.output_size == grid
    assert views.crop_patches == 224 // patch_size
    assert views.offsets.min() >= 0 and views.offsets.max() <= grid - 224 // patch_size
    for b in range(2):
        for k in range(4):
            top, left = (views.offsets[b, k] * patch_size).tolist()
            # Each crop is exactly the pixels at its patch-aligned origin.
            assert torch.equal(views.crops[b, k], images[b, :, top : top + 224, left : left + 224])
    # The guidance is the whole image, resized.
    assert torch.allclose(views.guidance, resize_square(images, 224))


def test_offsets_pick_the_matching_cells_of_the_full_grid(patch_encoder):
    """Features of a crop == the offsets' window of the full image's features.

    With a patch-local teacher (a strided patch embedding), the full image's 32x32 feature
    grid is what a perfect upsampler would output; cutting each crop's window out of it with
    the offsets must reproduce the teacher's features of the crop exactly.
    """
    torch.manual_seed(0)
    encoder = patch_encoder(patch_size=14, channels=8)
    images = torch.randn(3, 3, 448, 448)
    views = MultiCrop(224, 224, 4)(images, 14)
    with torch.no_grad():
        full = encoder(images)  # (3, 8, 32, 32): the ideal upsampled output
        assert full.shape[-1] == views.output_size
        targets = encoder(views.crops.flatten(0, 1))  # (12, 8, 16, 16)
    windows = crop_feature_windows(full, views.offsets, views.crop_patches)
    assert windows.shape == targets.shape
    assert torch.allclose(windows, targets, atol=1e-5)
    # A window one patch off does not match.
    shifted = (views.offsets + 1).clamp(max=16)
    moved = shifted.ne(views.offsets).any(-1)
    wrong = crop_feature_windows(full, shifted, views.crop_patches)
    assert not torch.allclose(wrong[moved.flatten()], targets[moved.flatten()], atol=1e-3)


def test_given_offsets_and_generator_are_reproducible():
    images = torch.randn(2, 3, 64, 64)
    mc = MultiCrop(32, 32, 3)
    a = mc(images, 8, generator=torch.Generator().manual_seed(5))
    b = mc(images, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.offsets, b.offsets)
    c = mc(images, 8, offsets=a.offsets)
    assert torch.equal(c.crops, a.crops)
    keys = offsets_from_keys(['a.jpg', 'b.jpg'], 3, 4)
    assert torch.equal(keys, offsets_from_keys(['a.jpg', 'b.jpg'], 3, 4))
    assert keys.min() >= 0 and keys.max() <= 4
    with pytest.raises(ValueError, match='offsets must be'):
        mc(images, 8, offsets=torch.full((2, 3, 2), 5))


def test_patch_size_that_does_not_divide_the_crop_fails():
    mc = MultiCrop(224, 224, 4)
    with pytest.raises(ValueError, match='patch size 48.*crop size 224'):
        mc.check_patch_size(48, 448, name='teacher x')
    with pytest.raises(ValueError, match='square'):
        mc(torch.randn(1, 3, 448, 224), 14)

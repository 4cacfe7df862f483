"""The inference API: image loading, ImageNet normalisation, upsampling, all-or-nothing saving."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from anyup_plugin import AnyUp
from anyup_plugin.apis import (
    image_to_tensor,
    load_image,
    sample_image_path,
    save_upsampled_features,
    upsample_image,
)
from anyup_plugin.constants import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / 'in.png'
    Image.new('RGB', (90, 60), (200, 30, 60)).save(path)  # width 90, height 60
    return path


def test_load_image_resizes_short_side_and_crops_to_the_patch_multiple(picture):
    # 90x60 -> short side 30 -> 45x30 -> multiples of 14: 42x28
    assert load_image(picture, 30, 14).size == (42, 28)
    assert load_image(picture, 60).size == (90, 60)


def test_load_image_errors(picture, tmp_path):
    with pytest.raises(ValueError, match='at least the patch size 14'):
        load_image(picture, 10, 14)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / 'missing.png', 30)
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'not an image')
    with pytest.raises(ValueError, match='broken.png'):
        load_image(broken, 30)


def test_image_to_tensor_normalises_with_imagenet_statistics():
    x = image_to_tensor(Image.new('RGB', (3, 2), (255, 0, 51)))
    assert x.shape == (1, 3, 2, 3)
    expected = [(v - m) / s for v, m, s in zip((1.0, 0.0, 0.2), IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(x[0, :, 1, 2], torch.tensor(expected))


class _PatchEncoder(torch.nn.Module):
    """A 14-pixel patch average: a stand-in encoder with the FrozenTimmEncoder interface."""

    patch_size = 14

    def forward(self, image):
        return [torch.nn.functional.avg_pool2d(image, 14)]


def test_upsample_and_save_all_or_nothing(tmp_path, monkeypatch):
    torch.manual_seed(0)
    image = load_image(sample_image_path(), 28, 14)
    result = upsample_image(image, _PatchEncoder(), AnyUp().eval())
    assert result.lowres.shape == (1, 3, 2, 2) and result.upsampled.shape == (1, 3, 28, 28)
    panel, feats = tmp_path / 'panel.png', tmp_path / 'feats.pt'
    save_upsampled_features(result, panel, feats, {'encoder': 'patch-average'})
    with Image.open(panel) as img:
        assert img.size == (3 * 28, 28)
    payload = torch.load(feats, weights_only=True)
    assert payload['encoder'] == 'patch-average'
    torch.testing.assert_close(payload['upsampled'], result.upsampled.contiguous())

    def failing_save(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', failing_save)
    panel2, feats2 = tmp_path / 'p2.png', tmp_path / 'f2.pt'
    with pytest.raises(OSError, match='disk full'):
        save_upsampled_features(result, panel2, feats2)
    assert not panel2.exists() and not feats2.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['feats.pt', 'panel.png']

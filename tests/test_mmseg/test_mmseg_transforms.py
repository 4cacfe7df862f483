"""ResizeShortSide and SegCenterCrop reproduce torchvision's Resize(448) / CenterCrop(448)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import CenterCrop, InterpolationMode, Resize

from anyup_plugin.mmseg.transforms import ResizeShortSide, SegCenterCrop


def test_resize_and_crop_match_torchvision_pixels():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(300, 457, 3), dtype=np.uint8)
    label = rng.integers(0, 151, size=(300, 457), dtype=np.uint8)
    results = dict(img=img.copy(), gt_seg_map=label.copy(), seg_fields=['gt_seg_map'])
    results = ResizeShortSide(size=224).transform(results)
    results = SegCenterCrop(size=224, set_ori_shape=True).transform(results)

    ref_img = CenterCrop(224)(Resize(224, interpolation=InterpolationMode.BILINEAR)(
        Image.fromarray(img)))  # fmt: skip
    ref_label = CenterCrop(224)(TF.resize(
        Image.fromarray(label), 224, interpolation=InterpolationMode.NEAREST))  # fmt: skip
    np.testing.assert_array_equal(results['img'], np.asarray(ref_img))
    np.testing.assert_array_equal(results['gt_seg_map'], np.asarray(ref_label))
    assert results['img_shape'] == (224, 224)
    assert results['ori_shape'] == (224, 224)
    assert set(np.unique(results['gt_seg_map'])) <= set(np.unique(label))


def test_resize_records_scale_and_keeps_labels_nearest():
    label = np.zeros((100, 200), np.uint8)
    label[:, 100:] = 7
    results = ResizeShortSide(size=50).transform(
        dict(img=np.zeros((100, 200, 3), np.uint8), gt_seg_map=label)
    )
    assert results['img'].shape == (50, 100, 3)
    assert results['scale_factor'] == (0.5, 0.5)
    assert set(np.unique(results['gt_seg_map'])) == {0, 7}


def test_crop_without_ori_shape_keeps_it_and_pads_small_inputs():
    results = dict(
        img=np.full((10, 30, 3), 9, np.uint8),
        gt_seg_map=np.ones((10, 30), np.uint8),
        ori_shape=(10, 30),
    )
    results = SegCenterCrop(size=(20, 20)).transform(results)
    assert results['img'].shape == (20, 20, 3)
    assert results['ori_shape'] == (10, 30)
    # 5 padded rows above and below: image 0, label ignore (255)
    assert (results['img'][:5] == 0).all() and (results['gt_seg_map'][:5] == 255).all()
    assert (results['gt_seg_map'][5:15] == 1).all()


@pytest.mark.parametrize('bad', [0, -3, 2.5])
def test_bad_sizes_raise(bad):
    with pytest.raises(ValueError):
        ResizeShortSide(size=bad)
    with pytest.raises(ValueError):
        SegCenterCrop(size=bad)

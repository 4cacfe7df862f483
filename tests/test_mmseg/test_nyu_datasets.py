"""The NYU datasets and transforms on files in the converter's layout; their bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

from mmengine.registry import init_default_scope

import anyup_plugin.mmseg  # noqa: F401  (registers the NYU modules)
from anyup_plugin.evaluation.nyu_layout import sample_paths, write_sample, write_split
from anyup_plugin.mmseg.datasets import NYUv2DepthDataset, NYUv2NormalsDataset
from anyup_plugin.mmseg.transforms import (
    LoadNYUAnnotations,
    NYURandomResizedCrop,
    NYUResize,
    PackNYUInputs,
    RandomColorJitter,
)
from anyup_plugin.testing.nyu_scenes import make_nyu_scene, write_nyu_scenes_dataset

init_default_scope('mmseg')

H, W = 12, 16  # a 3:4 frame like NYU's 480x640

TEST_PIPELINE = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='LoadNYUAnnotations', with_normals=True),
    dict(type='SegCenterCrop', size=H),
    dict(type='NYUResize', size=6),
    dict(type='PackNYUInputs'),
]


def _sample(depth_value: float = 2.0):
    # Columns tell where a pixel came from: the centre crop keeps columns 2..13.
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = np.arange(W, dtype=np.uint8)[None] * 10
    depth = np.full((H, W), depth_value, np.float32)
    depth[:, 2:8] = 12.0  # beyond 10 m: invalid
    normals = np.zeros((H, W, 3), np.float32)
    normals[..., 2] = -1.0
    return image, depth, normals


def _root(tmp_path, samples):
    for name, arrays in samples.items():
        write_sample(tmp_path, name, *arrays)
    write_split(tmp_path, 'test', list(samples))
    return tmp_path


def test_pipeline_crops_the_centre_resizes_and_packs(tmp_path):
    root = _root(tmp_path, {'nyu_0001': _sample()})
    ds = NYUv2NormalsDataset(data_root=str(root), ann_file='splits/test.txt',
                             pipeline=TEST_PIPELINE, test_mode=True)  # fmt: skip
    assert len(ds) == 1
    item = ds[0]
    img, sample = item['inputs'], item['data_samples']
    assert img.shape == (3, 6, 6) and sample.gt_depth_map.data.shape == (1, 6, 6)
    assert sample.gt_normal_map.data.shape == (3, 6, 6)
    assert sample.metainfo['ori_shape'] == (6, 6)
    # Columns 2..13 kept and halved (nearest for depth): 2..7 were 12 m -> 0, the rest 2 m.
    depth = sample.gt_depth_map.data[0]
    assert torch.equal(depth[:, :3], torch.zeros(6, 3)) and torch.all(depth[:, 3:] == 2.0)
    assert torch.allclose(sample.gt_normal_map.data.norm(dim=0), torch.ones(6, 6))
    # BGR from LoadImageFromFile: red is channel 2; the crop starts at column 2 (value 20).
    assert 20 <= int(img[2, 0, 0]) <= 40


def test_random_resized_crop_moves_labels_with_the_image():
    # The image's red channel encodes depth: after any crop they must still match.
    image, depth, normals = make_nyu_scene(np.random.default_rng(0), 48, 48)
    depth = np.tile(np.arange(48, dtype=np.float32)[None] / 8 + 0.5, (48, 1))
    image = np.zeros((48, 48, 3), np.uint8)
    image[..., 2] = (depth * 40).astype(np.uint8)
    results = dict(img=image, gt_depth_map=depth, gt_normal_map=normals,
                   seg_fields=['gt_depth_map', 'gt_normal_map'])  # fmt: skip
    np.random.seed(0)
    crop = NYURandomResizedCrop(size=24, scale=(0.3, 0.5), prob=1.0)
    out = crop(results)
    assert out['img'].shape == (24, 24, 3) and out['gt_depth_map'].shape == (24, 24)
    assert out['ori_shape'] == (24, 24)
    err = np.abs(out['img'][..., 2].astype(float) - out['gt_depth_map'] * 40)
    assert err.max() <= 40 * 0.25  # within a source pixel's step
    # A crop of at most half the area: the depth range shrinks.
    assert np.ptp(out['gt_depth_map']) < 0.75 * np.ptp(depth)
    assert np.allclose(np.linalg.norm(out['gt_normal_map'], axis=2), 1.0, atol=1e-5)


def test_resize_renormalises_normals_and_never_averages_depth():
    normals = np.zeros((4, 4, 3), np.float32)
    normals[:, :2] = [1.0, 0.0, 0.0]
    normals[:, 2:] = [0.0, 1.0, 0.0]
    depth = np.zeros((4, 4), np.float32)
    depth[:, 2:] = 4.0
    results = dict(img=np.zeros((4, 4, 3), np.uint8), gt_depth_map=depth, gt_normal_map=normals,
                   seg_fields=['gt_depth_map', 'gt_normal_map'])  # fmt: skip
    out = NYUResize(size=(2, 3))(results)
    assert set(np.unique(out['gt_depth_map'])) <= {0.0, 4.0}
    length = np.linalg.norm(out['gt_normal_map'], axis=2)
    assert np.allclose(length, 1.0, atol=1e-5)
    mixed = out['gt_normal_map'][0, 1]  # the middle column averages both sides
    assert mixed[0] > 0.3 and mixed[1] > 0.3


def test_colour_jitter_keeps_shape_and_changes_the_image():
    torch.manual_seed(0)
    img = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    out = RandomColorJitter(prob=1.0)(dict(img=img.copy()))['img']
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    assert np.array_equal(RandomColorJitter(prob=0.0)(dict(img=img.copy()))['img'], img)


def test_generated_scenes_have_exact_geometry(tmp_path):
    root = write_nyu_scenes_dataset(tmp_path, num_train=2, num_test=1, height=30, width=40)
    paths = sample_paths(root, 'nyu_0003')
    depth, normals = np.load(paths['depth']), np.load(paths['normals'])
    assert depth.shape == (30, 40) and 0 < depth.max() <= 10 and (depth == 0).any()
    assert np.allclose(np.linalg.norm(normals, axis=2), 1.0, atol=1e-5)
    # Normals face the camera: negative dot product with the viewing ray of each pixel.
    v, u = np.mgrid[0:30, 0:40]
    rays = np.stack([u - 20 + 0.5, v - 15 + 0.5, np.full(u.shape, 518.86 * 40 / 640)], -1)
    assert (np.einsum('hwc,hwc->hw', rays, normals) < 0).all()


def test_missing_root_names_the_converter_command(tmp_path):
    ds = NYUv2DepthDataset(data_root=str(tmp_path / 'nowhere'), lazy_init=True)
    with pytest.raises(FileNotFoundError, match='tools/convert_nyuv2.py labeled'):
        ds.full_init()


def test_missing_split_file_and_missing_sample_files(tmp_path):
    root = _root(tmp_path, {'nyu_0001': _sample()})
    with pytest.raises(FileNotFoundError, match='geonet_trainval.txt.*not found'):
        NYUv2DepthDataset(data_root=str(root), ann_file='splits/geonet_trainval.txt')
    (root / 'normals' / 'nyu_0001.npy').unlink()
    NYUv2DepthDataset(data_root=str(root), ann_file='splits/test.txt')  # depth needs no normals
    with pytest.raises(FileNotFoundError, match="'nyu_0001'.*no normals file"):
        NYUv2NormalsDataset(data_root=str(root), ann_file='splits/test.txt')


def _load(tmp_path, image, depth, normals, **kwargs):
    write_sample(tmp_path, 's', image, depth, normals)
    paths = sample_paths(tmp_path, 's')
    results = dict(img=image, img_path=paths['image'], depth_path=paths['depth'],
                   normal_path=paths['normals'])  # fmt: skip
    return LoadNYUAnnotations(with_normals=True, **kwargs)(results), paths


@pytest.mark.parametrize('bad', [np.nan, -1.0])
def test_nan_or_negative_depth_is_an_error_naming_the_file(tmp_path, bad):
    image, depth, normals = _sample()
    depth[1, 1] = bad
    with pytest.raises(ValueError, match=r'depth[/\\]s\.npy: depth holds'):
        _load(tmp_path, image, depth, normals)


def test_size_mismatch_and_zero_length_normals(tmp_path):
    image, depth, normals = _sample()
    write_sample(tmp_path, 's', image, depth, normals)
    paths = sample_paths(tmp_path, 's')
    results = dict(img=image[:, :10], img_path=paths['image'], depth_path=paths['depth'])
    with pytest.raises(ValueError, match='depth is \\(12, 16\\), image .* is \\(12, 10\\)'):
        LoadNYUAnnotations()(results)

    normals[5, 12] = 0.0  # a valid-depth pixel
    with pytest.raises(ValueError, match=r'normals[/\\]s\.npy: 1 pixels .* zero-length'):
        _load(tmp_path, image, depth, normals)
    out, _ = _load(tmp_path, image, depth, normals, zero_normals='invalid')
    assert out['gt_depth_map'][5, 12] == 0.0 and out['gt_depth_map'][5, 13] == 2.0


def test_pack_puts_maps_in_the_data_sample():
    results = dict(img=np.zeros((4, 5, 3), np.uint8), gt_depth_map=np.ones((4, 5), np.float32),
                   img_path='x.png', ori_shape=(4, 5))  # fmt: skip
    packed = PackNYUInputs()(results)
    assert packed['inputs'].shape == (3, 4, 5)
    assert packed['data_samples'].gt_depth_map.data.shape == (1, 4, 5)
    assert 'gt_normal_map' not in packed['data_samples']
    assert packed['data_samples'].metainfo['img_path'] == 'x.png'

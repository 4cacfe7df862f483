"""Benchmark datasets: class sets, label handling, and the checks that run before training."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

from mmengine.registry import init_default_scope
from PIL import Image

from anyup_plugin.mmseg.datasets import (
    COARSE_CLASSES,
    FINE_TO_COARSE,
    ADE20K151Dataset,
    CocoStuff27Dataset,
    DatasetCheckError,
    VOC2012Dataset,
)

init_default_scope('mmseg')

_LOAD = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]
_ADE_TRAIN = dict(img_path='images/training', seg_map_path='annotations/training')


def test_ade20k_has_151_classes_with_other_first(ade_root):
    ds = ADE20K151Dataset(data_root=str(ade_root), data_prefix=_ADE_TRAIN, pipeline=_LOAD)
    classes = ds.metainfo['classes']
    assert len(classes) == 151 and classes[0] == 'other' and classes[1] == 'wall'
    assert len(ds.metainfo['palette']) == 151
    assert len(ds) == 4
    labels = np.unique(ds[0]['gt_seg_map'])
    # raw ADE values, no reduce_zero_label shift: the generated scenes use 2, 3, 5, 7, 10, 21
    assert set(labels.tolist()) <= {2, 3, 5, 7, 10, 21}


def test_ade20k_refuses_reduce_zero_label(ade_root):
    with pytest.raises(ValueError, match='151'):
        ADE20K151Dataset(data_root=str(ade_root), data_prefix=_ADE_TRAIN, reduce_zero_label=True)


def test_coco_stuff27_fine_to_coarse_map():
    assert len(COARSE_CLASSES) == 27 and len(set(COARSE_CLASSES)) == 27
    assert len(FINE_TO_COARSE) == 80 + 91  # COCO things + COCO-Stuff stuff
    assert set(FINE_TO_COARSE.values()) == set(range(27))
    name = {fine: COARSE_CLASSES[c] for fine, c in FINE_TO_COARSE.items()}
    # fine value = COCO category id - 1
    assert name[0] == 'person' and name[2] == 'vehicle' and name[15] == 'animal'
    assert name[91] == 'textile'  # banner
    assert name[156] == 'sky'  # sky-other
    assert name[181] == 'solid'  # wood
    assert 11 not in FINE_TO_COARSE  # id 12 is unused in COCO


def test_coco_stuff27_maps_labels_to_coarse(coco_root):
    ds = CocoStuff27Dataset(data_root=str(coco_root), pipeline=_LOAD)
    assert len(ds) == 4 and len(ds.metainfo['classes']) == 27
    seen = set()
    for i in range(len(ds)):
        seen |= set(np.unique(ds[i]['gt_seg_map']).tolist())
    expected = {FINE_TO_COARSE[f] for f in (0, 2, 15, 91, 104, 122, 156, 181)} | {255}
    assert seen <= expected and seen & {9, 11}  # person / vehicle present


def test_voc2012_reads_palette_labels(voc_root):
    ds = VOC2012Dataset(data_root=str(voc_root), pipeline=_LOAD)
    val = VOC2012Dataset(
        data_root=str(voc_root), ann_file='ImageSets/Segmentation/val.txt', pipeline=_LOAD
    )
    assert len(ds.metainfo['classes']) == 21 and len(ds) == 4 and len(val) == 2
    assert set(np.unique(ds[0]['gt_seg_map']).tolist()) <= {0, 1, 7, 15, 20, 255}


# ----------------------------------------------------------------------------- root checks


def _ade_copy(ade_root, tmp_path):
    root = tmp_path / 'ADEChallengeData2016'
    shutil.copytree(ade_root, root)
    return root


def test_missing_root_fails_naming_it(tmp_path):
    missing = tmp_path / 'nowhere'
    with pytest.raises(FileNotFoundError, match='nowhere'):
        ADE20K151Dataset(data_root=str(missing), data_prefix=_ADE_TRAIN)


def test_empty_root_fails(tmp_path):
    for sub in ('images/training', 'annotations/training'):
        (tmp_path / sub).mkdir(parents=True)
    with pytest.raises(DatasetCheckError, match='no samples'):
        ADE20K151Dataset(data_root=str(tmp_path), data_prefix=_ADE_TRAIN)


def test_image_without_label_fails_naming_the_image(ade_root, tmp_path):
    root = _ade_copy(ade_root, tmp_path)
    (root / 'annotations/training/ADE_train_00000003.png').unlink()
    with pytest.raises(DatasetCheckError, match='ADE_train_00000003.jpg'):
        ADE20K151Dataset(data_root=str(root), data_prefix=_ADE_TRAIN)


def test_label_out_of_range_fails_naming_file_and_value(ade_root, tmp_path):
    root = _ade_copy(ade_root, tmp_path)
    path = root / 'annotations/training/ADE_train_00000002.png'
    label = np.array(Image.open(path))
    label[0, 0] = 200
    Image.fromarray(label).save(path)
    with pytest.raises(DatasetCheckError, match=r'ADE_train_00000002\.png.*200'):
        ADE20K151Dataset(data_root=str(root), data_prefix=_ADE_TRAIN)
    # the check can be limited or switched off
    ADE20K151Dataset(data_root=str(root), data_prefix=_ADE_TRAIN, check_labels=1)
    ADE20K151Dataset(data_root=str(root), data_prefix=_ADE_TRAIN, check_labels=False)


def test_rgb_label_fails(ade_root, tmp_path):
    root = _ade_copy(ade_root, tmp_path)
    path = root / 'annotations/training/ADE_train_00000001.png'
    Image.open(path).convert('RGB').save(path)
    with pytest.raises(DatasetCheckError, match='single-channel'):
        ADE20K151Dataset(data_root=str(root), data_prefix=_ADE_TRAIN)


def test_missing_curated_list_fails(coco_root, tmp_path):
    root = tmp_path / 'cocostuff'
    shutil.copytree(coco_root, root)
    (root / 'curated/train2017/Coco164kFull_Stuff_Coarse.txt').unlink()
    with pytest.raises(FileNotFoundError, match='Coco164kFull_Stuff_Coarse.txt'):
        CocoStuff27Dataset(data_root=str(root))


def test_listed_image_missing_fails(voc_root, tmp_path):
    root = tmp_path / 'VOC2012'
    shutil.copytree(voc_root, root)
    (root / 'JPEGImages/2007_000001.jpg').unlink()
    with pytest.raises(FileNotFoundError, match='2007_000001.jpg'):
        VOC2012Dataset(data_root=str(root))


def test_voc_label_value_outside_21_classes_fails(voc_root, tmp_path):
    root = tmp_path / 'VOC2012'
    shutil.copytree(voc_root, root)
    path = root / 'SegmentationClass/2007_000000.png'
    img = Image.open(path)
    label = np.array(img)
    label[1, 1] = 21
    out = Image.frombytes('P', img.size, label.tobytes())
    out.putpalette(img.getpalette())
    out.save(path)
    with pytest.raises(DatasetCheckError, match=r'2007_000000\.png.*21'):
        VOC2012Dataset(data_root=str(root))

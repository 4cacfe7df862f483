"""The scene generator and the generated datasets: deterministic, labelled, in their layouts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anyup_plugin.testing import (
    COCO_STUFF_DEMO_FINE_LABELS,
    DEMO_CLASSES,
    VOC_DEMO_LABELS,
    make_scene,
    write_ade20k_layout_dataset,
    write_coco_stuff27_layout_dataset,
    write_image_folder,
    write_voc2012_layout_dataset,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs' / 'mmseg'


def test_scene_is_deterministic_and_uses_only_the_demo_classes():
    img_a, label_a = make_scene(np.random.default_rng(3), 48, 64)
    img_b, label_b = make_scene(np.random.default_rng(3), 48, 64)
    assert img_a.shape == (48, 64, 3) and img_a.dtype == np.uint8
    assert label_a.shape == (48, 64) and label_a.dtype == np.uint8
    assert np.array_equal(img_a, img_b) and np.array_equal(label_a, label_b)
    assert set(np.unique(label_a).tolist()) <= set(DEMO_CLASSES)
    assert 3 in label_a  # the sky is always there, above the horizon
    assert label_a[0].tolist() == [3] * 64


def test_ade20k_layout_dataset(tmp_path):
    root = write_ade20k_layout_dataset(tmp_path, num_train=2, num_val=1, height=32, width=40)
    assert root.name == 'ADEChallengeData2016'
    images = sorted((root / 'images' / 'training').iterdir())
    labels = sorted((root / 'annotations' / 'training').iterdir())
    assert [p.name for p in images] == ['ADE_train_00000001.jpg', 'ADE_train_00000002.jpg']
    assert [p.stem for p in labels] == [p.stem for p in images]
    assert len(list((root / 'annotations' / 'validation').glob('*.png'))) == 1
    label = np.array(Image.open(labels[0]))
    assert label.shape == (32, 40) and set(np.unique(label).tolist()) <= set(DEMO_CLASSES)
    assert json.loads((root / 'anyup_demo_dataset.json').read_text())['num_val'] == 1
    # The same arguments again: the files are kept as they are (an old time stamp, so that a
    # rewrite shows whatever the file system's time resolution).
    os.utime(images[0], (1, 1))
    write_ade20k_layout_dataset(tmp_path, num_train=2, num_val=1, height=32, width=40)
    assert images[0].stat().st_mtime == 1
    # A folder it did not write (a real ADE20K copy) is refused.
    (tmp_path / 'real' / 'ADEChallengeData2016').mkdir(parents=True)
    with pytest.raises(FileExistsError, match='not a generated demo dataset'):
        write_ade20k_layout_dataset(tmp_path / 'real')


def test_image_folder_with_small_and_corrupt_files(tmp_path):
    paths = write_image_folder(tmp_path, num_images=3, min_size=40, num_small=2, num_corrupt=1)
    assert len(paths) == 6
    for path in paths[:3]:
        with Image.open(path) as img:
            assert min(img.size) == 40 and max(img.size) <= 56
    for path in paths[3:5]:
        with Image.open(path) as img:
            assert min(img.size) < 40
    with pytest.raises(OSError):
        Image.open(paths[5])
    again = write_image_folder(tmp_path / 'again', num_images=3, min_size=40, num_small=2)
    with Image.open(paths[0]) as a, Image.open(again[0]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def _build_val_dataset(config: str, data_root: Path):
    """The demo config's validation dataset, read from ``data_root``."""
    pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import anyup_plugin.mmseg  # noqa: F401  (registers the dataset classes and transforms)

    init_default_scope('mmseg')
    cfg = Config.fromfile(str(CONFIG_DIR / config))
    cfg.val_dataloader.dataset.data_root = str(data_root)
    return DATASETS.build(cfg.val_dataloader.dataset)


def test_coco_stuff27_layout_loads_as_coarse_classes(tmp_path):
    root = write_coco_stuff27_layout_dataset(tmp_path, num_train=2, num_val=2, height=48, width=64)
    assert root.name == 'cocostuff'
    curated = (root / 'curated' / 'val2017' / 'Coco164kFull_Stuff_Coarse.txt').read_text()
    assert curated.split() == ['000000000003', '000000000004']
    fine = np.array(Image.open(root / 'annotations' / 'val2017' / '000000000003.png'))
    assert set(np.unique(fine).tolist()) <= set(COCO_STUFF_DEMO_FINE_LABELS.values())
    # The loader maps the fine labels to the coarse classes: building-other (95) -> building
    # (20), sky-other (156) -> sky (23), tree (168) and grass (123) -> plant (22), road (148)
    # -> ground (21), car (2) -> vehicle (11).
    dataset = _build_val_dataset('demo_coco_stuff27_layout.py', root)
    assert len(dataset.metainfo['classes']) == 27 and len(dataset) == 2
    expected = {95: 20, 156: 23, 168: 22, 123: 22, 148: 21, 2: 11}
    sample = dataset[0]['data_samples']
    coarse = sample.gt_sem_seg.data[0].numpy()
    assert coarse.shape == (224, 224)
    assert set(np.unique(coarse).tolist()) <= set(expected.values())
    assert 23 in coarse  # the sky, always above the horizon
    # Nearest resizing and cropping keep the labels: the first crop row is all sky.
    assert coarse[0].tolist() == [23] * 224
    names = dataset.metainfo['classes']
    assert [names[i] for i in (20, 21, 22, 23, 11)] == [
        'building',
        'ground',
        'plant',
        'sky',
        'vehicle',
    ]


def test_voc2012_layout_loads_with_palette_labels_and_borders(tmp_path):
    root = write_voc2012_layout_dataset(tmp_path, num_train=3, num_val=6, height=80, width=96)
    assert root.parts[-2:] == ('VOCdevkit', 'VOC2012')
    val = (root / 'ImageSets' / 'Segmentation' / 'val.txt').read_text().split()
    assert val == [f'2012_{i:06d}' for i in range(4, 10)]
    labels = {}
    for name in val:
        with Image.open(root / 'SegmentationClass' / f'{name}.png') as png:
            assert png.mode == 'P'
            # VOC's colours: car (7) is (128, 128, 128), the border (255) is (224, 224, 192).
            assert png.getpalette()[7 * 3 : 8 * 3] == [128, 128, 128]
            assert png.getpalette()[255 * 3 : 256 * 3] == [224, 224, 192]
            labels[name] = np.array(png)
    values = set(np.unique(np.stack(list(labels.values()))).tolist())
    assert values <= {0, 7, 255} and {0, 7, 255} <= values  # some car in six scenes
    for label in labels.values():
        car = label == 7
        if car.any():
            # Every car pixel is inside a 255 band: none touches the background directly.
            near_background = np.zeros_like(car)
            near_background[1:] |= label[:-1] == 0
            near_background[:-1] |= label[1:] == 0
            near_background[:, 1:] |= label[:, :-1] == 0
            near_background[:, :-1] |= label[:, 1:] == 0
            assert not (car & near_background).any()
    dataset = _build_val_dataset('demo_voc2012_layout.py', root)
    assert len(dataset.metainfo['classes']) == 21 and len(dataset) == 6
    assert dataset.metainfo['classes'][VOC_DEMO_LABELS[21]] == 'car'
    loaded = set()
    for i in range(len(dataset)):
        loaded |= set(np.unique(dataset[i]['data_samples'].gt_sem_seg.data.numpy()).tolist())
    assert loaded == {0, 7, 255}

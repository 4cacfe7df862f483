"""Tiny generated datasets in each benchmark's layout, and a helper that shrinks a config."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY = 56  # crop size used in tests: 4x4 tokens for patch 14


def _save_pair(img_path: Path, ann_path: Path, rng: np.random.Generator, labels, palette=False):
    """Writes a random image and a blocky label map using the given label values."""
    h, w = int(rng.integers(60, 80)), int(rng.integers(60, 90))
    img = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    blocks = rng.choice(np.asarray(labels, dtype=np.uint8), size=(4, 4))
    label = np.kron(blocks, np.ones((h // 4 + 1, w // 4 + 1), np.uint8))[:h, :w]
    img_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(img_path, quality=95)
    if palette:  # like VOC's SegmentationClass: indices in a palette image
        ann = Image.frombytes('P', (w, h), label.tobytes())
        ann.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    else:
        ann = Image.fromarray(label)
    ann.save(ann_path)


@pytest.fixture(scope='session')
def ade_root(tmp_path_factory) -> Path:
    """ADEChallengeData2016 layout, written by the demo generator (4 train / 2 val)."""
    from anyup_plugin.testing import write_ade20k_layout_dataset

    root = tmp_path_factory.mktemp('ade')
    return write_ade20k_layout_dataset(root, num_train=4, num_val=2, height=64, width=80, seed=1)


@pytest.fixture(scope='session')
def coco_root(tmp_path_factory) -> Path:
    """STEGO's cocostuff layout with curated lists; fine labels 0..181 and 255."""
    root = tmp_path_factory.mktemp('cocostuff')
    rng = np.random.default_rng(2)
    fine = [0, 2, 15, 91, 104, 122, 156, 181, 255]
    for split, count in (('train2017', 4), ('val2017', 2)):
        ids = [f'{i:012d}' for i in rng.choice(10**6, size=count, replace=False)]
        for img_id in ids:
            _save_pair(
                root / 'images' / split / f'{img_id}.jpg',
                root / 'annotations' / split / f'{img_id}.png',
                rng,
                fine,
            )
        curated = root / 'curated' / split
        curated.mkdir(parents=True)
        (curated / 'Coco164kFull_Stuff_Coarse.txt').write_text('\n'.join(ids) + '\n')
    return root


@pytest.fixture(scope='session')
def voc_root(tmp_path_factory) -> Path:
    """VOCdevkit/VOC2012 layout with palette PNG labels (0..20 and 255 borders)."""
    root = tmp_path_factory.mktemp('voc') / 'VOC2012'
    rng = np.random.default_rng(3)
    lists = {'train': [], 'val': []}
    for i in range(6):
        name = f'2007_{i:06d}'
        lists['train' if i < 4 else 'val'].append(name)
        _save_pair(
            root / 'JPEGImages' / f'{name}.jpg',
            root / 'SegmentationClass' / f'{name}.png',
            rng,
            [0, 1, 7, 15, 20, 255],
            palette=True,
        )
    sets = root / 'ImageSets' / 'Segmentation'
    sets.mkdir(parents=True)
    for split, names in lists.items():
        (sets / f'{split}.txt').write_text('\n'.join(names) + '\n')
    return root


@pytest.fixture
def shrink_config():
    """The :func:`_shrink_config` helper."""
    return _shrink_config


def _shrink_config(cfg, data_root: Path, work_dir: Path, size: int = TINY):
    """Makes a benchmark config run in seconds on a CPU, without weights or downloads.

    Random 2-block backbone and random AnyUp, ``size`` px crops, the given data root, one
    epoch, no worker processes; everything else (model types, pipeline, schedule kinds,
    evaluator) stays as the config has it.
    """
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'test_{uuid.uuid4().hex[:8]}'
    backbone = cfg.model.backbone
    backbone.checkpoint = None
    backbone.pretrained = False
    backbone.depth = 2
    neck = cfg.model.get('neck')
    if neck is not None and 'checkpoint' in neck:
        neck.checkpoint = None
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if loader is None:
            continue
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.data_root = str(data_root)
        for step in loader.dataset.pipeline:
            if step['type'] in ('ResizeShortSide', 'SegCenterCrop'):
                step['size'] = size
    cfg.train_cfg.max_epochs = 1
    for scheduler in cfg.param_scheduler:
        if 'T_max' in scheduler:
            scheduler.T_max = 1
            scheduler.end = 1
    cfg.default_hooks.logger.interval = 1
    return cfg

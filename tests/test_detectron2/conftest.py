"""Tiny generated benchmarks and tiny-model configs for the Detectron2 adapter's tests.

Nothing here imports detectron2 at module level, so that collection works without it and the
test modules skip with their own reason.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from d2_tiny import (
    ADE_LABELS,
    COCO_FINE_LABELS,
    CONFIGS,
    TINY_OPTS,
    VOC_LABELS,
    write_pair,
)


@pytest.fixture(scope='session')
def ade_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ADEChallengeData2016 layout with 4 training and 2 validation images."""
    root = tmp_path_factory.mktemp('d2_ade') / 'ADEChallengeData2016'
    rng = np.random.default_rng(0)
    for folder, count in (('training', 4), ('validation', 2)):
        for i in range(count):
            stem = f'ADE_{folder[:5]}_{i:08d}'
            write_pair(
                root / 'images' / folder / f'{stem}.jpg',
                root / 'annotations' / folder / f'{stem}.png',
                rng,
                ADE_LABELS,
            )
    return root


@pytest.fixture(scope='session')
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """COCO-Stuff layout (fine labels, curated lists) with 4 training and 2 validation images."""
    root = tmp_path_factory.mktemp('d2_coco') / 'cocostuff'
    rng = np.random.default_rng(1)
    for folder, count in (('train2017', 4), ('val2017', 2)):
        ids = [f'{i + (0 if folder == "train2017" else 100):012d}' for i in range(count)]
        for image_id in ids:
            write_pair(
                root / 'images' / folder / f'{image_id}.jpg',
                root / 'annotations' / folder / f'{image_id}.png',
                rng,
                COCO_FINE_LABELS,
            )
        # An image that is not on the curated list must not be registered.
        write_pair(
            root / 'images' / folder / '999999999999.jpg',
            root / 'annotations' / folder / '999999999999.png',
            rng,
            COCO_FINE_LABELS,
        )
        curated = root / 'curated' / folder / 'Coco164kFull_Stuff_Coarse.txt'
        curated.parent.mkdir(parents=True)
        curated.write_text(''.join(f'{i}\n' for i in ids))
    return root


@pytest.fixture(scope='session')
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VOC2012 layout (palette PNGs) with 4 training and 2 validation images."""
    root = tmp_path_factory.mktemp('d2_voc') / 'VOC2012'
    rng = np.random.default_rng(2)
    lists = root / 'ImageSets' / 'Segmentation'
    lists.mkdir(parents=True)
    for split, count in (('train', 4), ('val', 2)):
        ids = [f'2007_{i + (0 if split == "train" else 100):06d}' for i in range(count)]
        for image_id in ids:
            write_pair(
                root / 'JPEGImages' / f'{image_id}.jpg',
                root / 'SegmentationClass' / f'{image_id}.png',
                rng,
                VOC_LABELS,
                palette=True,
            )
        (lists / f'{split}.txt').write_text(''.join(f'{i}\n' for i in ids))
    return root


@pytest.fixture
def dataset_roots(ade_root: Path, coco_root: Path, voc_root: Path) -> dict[str, Path]:
    """``DATASETS`` root key -> the tiny benchmark in that layout."""
    return {'ADE20K151_ROOT': ade_root, 'COCO_STUFF27_ROOT': coco_root, 'VOC2012_ROOT': voc_root}


@pytest.fixture
def make_cfg() -> Callable[..., Any]:
    """Returns ``make(config='ade20k_dinov2_anyup.yaml', *opts)``: the config shrunk to tiny.

    ``config`` may also be ``'anyup'`` or ``'bilinear'``, short for the ADE20K probes.
    """

    def make(config: str = 'anyup', *opts: Any) -> Any:
        from detectron2.config import get_cfg

        from anyup_plugin.detectron2 import add_anyup_config

        if config in ('anyup', 'bilinear'):
            config = f'ade20k_dinov2_{config}.yaml'
        cfg = add_anyup_config(get_cfg())
        cfg.merge_from_file(str(CONFIGS / config))
        cfg.merge_from_list([*TINY_OPTS, *opts])
        return cfg

    return make


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f'network access attempted: {args!r}')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'getaddrinfo', refuse)

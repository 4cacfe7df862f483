"""A tiny ADE20K-layout dataset and a tiny-model config for the Detectron2 adapter's tests.

Nothing here imports detectron2 at module level, so that collection works without it and the
test modules skip with their own reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

TINY = 56  # short side and crop in tests: 4x4 tokens for patch 14
# ADE20K-151 labels the tiny scenes use (0 "other" is a class), plus 255 (ignored).
CLASSES = (0, 3, 10, 21)
# A two-block, narrow DINOv2-style ViT with random weights (fast on a CPU).
TINY_TIMM_KWARGS = [['depth', 2], ['embed_dim', 48], ['num_heads', 2]]


def _write_pair(image_path: Path, label_path: Path, rng: np.random.Generator) -> None:
    """A 60-70 x 70-90 image of four coloured bands with their labels, and an ignored corner."""
    h, w = int(rng.integers(60, 70)), int(rng.integers(70, 90))
    label = np.zeros((h, w), np.uint8)
    for i, cls in enumerate(rng.permutation(CLASSES)):
        label[i * h // 4 : (i + 1) * h // 4] = cls
    label[:6, :6] = 255
    colours = {c: rng.integers(0, 255, 3) for c in (*CLASSES, 255)}
    image = np.stack([colours[int(v)] for v in label.ravel()]).reshape(h, w, 3)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_path, quality=95)
    Image.fromarray(label, mode='L').save(label_path)


@pytest.fixture(scope='session')
def ade_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ADEChallengeData2016 layout with 4 training and 2 validation images."""
    root = tmp_path_factory.mktemp('d2_ade') / 'ADEChallengeData2016'
    rng = np.random.default_rng(0)
    for folder, count in (('training', 4), ('validation', 2)):
        for i in range(count):
            stem = f'ADE_{folder[:5]}_{i:08d}'
            _write_pair(
                root / 'images' / folder / f'{stem}.jpg',
                root / 'annotations' / folder / f'{stem}.png',
                rng,
            )
    return root


@pytest.fixture
def make_cfg() -> Callable[..., Any]:
    """Returns ``make(upsampler='anyup', *opts)``: the ADE20K yaml shrunk to the tiny setting."""

    def make(upsampler: str = 'anyup', *opts: Any) -> Any:
        from detectron2.config import get_cfg

        from anyup_plugin.detectron2 import add_anyup_config

        root = Path(__file__).resolve().parents[2]
        cfg = add_anyup_config(get_cfg())
        cfg.merge_from_file(
            str(root / 'configs' / 'detectron2' / f'ade20k_dinov2_{upsampler}.yaml')
        )
        cfg.merge_from_list(
            [
                'MODEL.DEVICE', 'cpu',
                'MODEL.TIMM.CHECKPOINT', '',
                'MODEL.TIMM.KWARGS', TINY_TIMM_KWARGS,
                'MODEL.ANYUP.CHECKPOINT', '',
                'INPUT.MIN_SIZE_TRAIN', (TINY,),
                'INPUT.MIN_SIZE_TEST', TINY,
                'INPUT.CENTER_CROP_SIZE', TINY,
                'DATALOADER.NUM_WORKERS', 0,
                *opts,
            ]
        )  # fmt: skip
        return cfg

    return make

"""Constants and file writers of the tiny benchmarks (imported by conftest.py and the tests).

A module of its own, with a name no other test folder uses: ``from conftest import`` would be
ambiguous with several ``conftest.py`` files outside packages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / 'configs' / 'detectron2'
#: Every runnable config (the base is only inherited).
CONFIG_NAMES = sorted(p.name for p in CONFIGS.glob('*.yaml') if not p.name.startswith('Base-'))

TINY = 56  # short side and crop in tests: 4x4 tokens for patch 14, a multiple of 28
# Label values the tiny scenes hold, as stored in each benchmark's files (255 is ignored).
ADE_LABELS = (0, 3, 10, 21)  # ADE20K-151: label 0 "other" is a class
COCO_FINE_LABELS = (0, 2, 105, 170, 182)  # person, car, sky-other, wall-concrete, "other"
VOC_LABELS = (0, 1, 15, 20)  # background, aeroplane, person, tvmonitor
# A narrow DINOv2-style ViT with random weights (fast on a CPU; 12 blocks, so that every
# config's LAYERS exist).
TINY_TIMM_KWARGS = [['embed_dim', 48], ['num_heads', 2]]
# Tiny stand-ins for the big parts of the configs.
TINY_OPTS = [
    'MODEL.DEVICE', 'cpu',
    'MODEL.WEIGHTS', '',
    'MODEL.TIMM.CHECKPOINT', '',
    'MODEL.TIMM.KWARGS', TINY_TIMM_KWARGS,
    'MODEL.ANYUP.CHECKPOINT', '',
    'MODEL.RESNETS.DEPTH', 18,
    'MODEL.RESNETS.RES2_OUT_CHANNELS', 64,
    'MODEL.SEM_SEG_HEAD.CONVS_DIM', 32,  # GroupNorm's 32 groups
    'INPUT.MIN_SIZE_TRAIN', (TINY,),
    'INPUT.MIN_SIZE_TEST', TINY,
    'INPUT.CENTER_CROP_SIZE', TINY,
    'DATALOADER.NUM_WORKERS', 0,
]  # fmt: skip


def write_pair(
    image_path: Path,
    label_path: Path,
    rng: np.random.Generator,
    labels: Sequence[int],
    palette: bool = False,
) -> None:
    """A 60-70 x 70-90 image of coloured bands with their labels, and an ignored corner."""
    h, w = int(rng.integers(60, 70)), int(rng.integers(70, 90))
    label = np.zeros((h, w), np.uint8)
    for i, cls in enumerate(rng.permutation(labels)):
        label[i * h // len(labels) : (i + 1) * h // len(labels)] = cls
    label[:6, :6] = 255
    colours = {c: rng.integers(0, 255, 3) for c in (*labels, 255)}
    image = np.stack([colours[int(v)] for v in label.ravel()]).reshape(h, w, 3)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_path, quality=95)
    if palette:  # as VOC's SegmentationClass: indices into a colour palette
        png = Image.frombytes('P', (w, h), label.tobytes())
        png.putpalette(rng.integers(0, 255, 768, dtype=np.uint8).tolist())
    else:
        png = Image.frombytes('L', (w, h), label.tobytes())
    png.save(label_path)

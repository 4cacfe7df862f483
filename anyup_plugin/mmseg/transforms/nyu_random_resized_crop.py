"""Probe3D's random resized crop of an NYUv2 sample, labels moved with the image."""

from __future__ import annotations

import math

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from .nyu_resize import _pair, resize_nyu_sample

__all__ = ['NYURandomResizedCrop']


@TRANSFORMS.register_module()
class NYURandomResizedCrop(BaseTransform):
    """With probability ``prob``, a random crop resized to ``size``; otherwise a plain resize.

    Probe3D's ``RandomResizedCrop(scale=(0.5, 1.0), ratio=(1.0, 1.0), p=0.5)``: the crop covers
    a random share in ``scale`` of the image area with an aspect ratio in ``ratio`` (sampled
    log-uniformly, 10 tries, then the whole image, as torchvision/albumentations do) at a
    uniform random position. Image, depth and normals are cut and resized together by
    :func:`resize_nyu_sample` (depth nearest, normals renormalised), so labels stay aligned;
    the output is always ``size``, as the batch needs.

    Required keys: ``img``, the ``seg_fields`` maps. Modified keys: those, ``img_shape``,
    ``ori_shape``.

    Args:
        size: Output size (int or (height, width)).
        scale: Range of the crop's share of the image area.
        ratio: Range of the crop's width / height.
        prob: Probability of cropping.
    """

    def __init__(
        self,
        size: int | tuple[int, int] = 224,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = (1.0, 1.0),
        prob: float = 0.5,
    ) -> None:
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f'bad scale {scale!r} or ratio {ratio!r}')
        if not 0 <= prob <= 1:
            raise ValueError(f'prob must be in [0, 1], got {prob!r}')
        self.size = _pair(size)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.prob = prob

    def _box(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * np.random.uniform(*self.scale)
            aspect = math.exp(np.random.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = np.random.randint(0, height - h + 1)
                left = np.random.randint(0, width - w + 1)
                return top, left, h, w
        return None

    def transform(self, results: dict) -> dict:
        """Crops (maybe) and resizes ``results`` in place."""
        box = None
        if np.random.rand() < self.prob:
            box = self._box(*results['img'].shape[:2])
        return resize_nyu_sample(results, box, self.size)

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, '
            f'prob={self.prob})'
        )

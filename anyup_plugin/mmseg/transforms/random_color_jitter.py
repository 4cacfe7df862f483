"""torchvision's ColorJitter, applied with a probability, on MMCV's BGR or RGB images."""

from __future__ import annotations

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS
from torchvision.transforms import ColorJitter

__all__ = ['RandomColorJitter']


@TRANSFORMS.register_module()
class RandomColorJitter(BaseTransform):
    """``RandomApply([ColorJitter(b, c, s, h)], p=prob)`` on the image only (Probe3D's NYU jitter).

    The image is converted to RGB for torchvision (hue and saturation depend on the channel
    order) and back. torchvision draws from torch's generator, which MMEngine seeds.

    Required keys: ``img`` (H, W, 3) uint8. Modified keys: ``img``.

    Args:
        brightness: As torchvision's ``ColorJitter``.
        contrast: Likewise.
        saturation: Likewise.
        hue: Likewise.
        prob: Probability of jittering an image.
        channel_order: ``'bgr'`` (MMCV's ``LoadImageFromFile`` default) or ``'rgb'``.
    """

    def __init__(
        self,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.2,
        prob: float = 0.8,
        channel_order: str = 'bgr',
    ) -> None:
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        if not 0 <= prob <= 1:
            raise ValueError(f'prob must be in [0, 1], got {prob!r}')
        self.jitter = ColorJitter(brightness, contrast, saturation, hue)
        self.prob = prob
        self.channel_order = channel_order

    def transform(self, results: dict) -> dict:
        """Jitters ``results['img']`` with probability ``prob``."""
        if torch.rand(()).item() >= self.prob:
            return results
        img = results['img']
        rgb = img[..., ::-1] if self.channel_order == 'bgr' else img
        out = self.jitter(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
        out = out.permute(1, 2, 0).numpy()
        results['img'] = np.ascontiguousarray(
            out[..., ::-1] if self.channel_order == 'bgr' else out
        )
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.jitter!r}, prob={self.prob}, {self.channel_order!r})'

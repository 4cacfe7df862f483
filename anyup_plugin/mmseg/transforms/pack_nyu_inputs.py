"""Packs an NYUv2 sample: image, depth and normal maps as a SegDataSample."""

from __future__ import annotations

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import PixelData
from mmseg.registry import TRANSFORMS
from mmseg.structures import SegDataSample

__all__ = ['PackNYUInputs']


@TRANSFORMS.register_module()
class PackNYUInputs(BaseTransform):
    """``PackSegInputs`` for depth and normals.

    Outputs ``inputs`` (3, H, W) uint8 and a ``SegDataSample`` with ``gt_depth_map`` (1, H, W)
    float32 metres (0 = invalid) and, when loaded, ``gt_normal_map`` (3, H, W) float32, plus
    the meta keys present (paths, shapes, ...).

    Args:
        meta_keys: Keys of ``results`` copied into the data sample's metainfo.
    """

    def __init__(
        self,
        meta_keys: tuple[str, ...] = (
            'img_path',
            'depth_path',
            'normal_path',
            'ori_shape',
            'img_shape',
            'pad_shape',
            'scale_factor',
            'flip',
            'flip_direction',
        ),
    ) -> None:
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        """Returns ``dict(inputs=..., data_samples=...)``."""
        img = results['img']
        img = img[..., None] if img.ndim == 2 else img
        packed = {'inputs': torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))}
        sample = SegDataSample()
        if 'gt_depth_map' in results:
            depth = torch.from_numpy(np.ascontiguousarray(results['gt_depth_map'], np.float32))
            sample.gt_depth_map = PixelData(data=depth[None])
        if 'gt_normal_map' in results:
            normals = np.ascontiguousarray(results['gt_normal_map'].transpose(2, 0, 1), np.float32)
            sample.gt_normal_map = PixelData(data=torch.from_numpy(normals))
        sample.set_metainfo({k: results[k] for k in self.meta_keys if k in results})
        packed['data_samples'] = sample
        return packed

    def __repr__(self) -> str:
        return f'{type(self).__name__}(meta_keys={self.meta_keys})'

"""Loads the depth (and normal) maps of a converted NYUv2 sample, checking them."""

from __future__ import annotations

import logging

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from mmseg.registry import TRANSFORMS

__all__ = ['LoadNYUAnnotations']


@TRANSFORMS.register_module()
class LoadNYUAnnotations(BaseTransform):
    """Reads the ``depth_path`` (and ``normal_path``) ``.npy`` files into ground-truth maps.

    Depth beyond ``max_depth`` becomes 0 (invalid), as in Probe3D. Both maps join
    ``seg_fields``, so geometric transforms (``SegCenterCrop``, ``NYUResize``, ...) move them
    with the image. Every problem is an error naming the file: NaN or negative depth, normals
    that are NaN or of zero length where the depth is valid, or maps whose size differs from
    the image's.

    Required keys: ``img``, ``depth_path`` (and ``normal_path``). Added keys: ``gt_depth_map``
    (H, W) float32 metres, ``gt_normal_map`` (H, W, 3) float32, ``seg_fields``.

    Args:
        with_normals: Also load the normals (the normal task; depth then only marks validity).
        max_depth: Largest valid depth in metres.
        zero_normals: ``'error'`` (default) or ``'invalid'``: mark pixels whose normal has zero
            length as invalid (depth 0) instead, logging how many. Only with ``with_normals``.
    """

    def __init__(
        self, with_normals: bool = False, max_depth: float = 10.0, zero_normals: str = 'error'
    ) -> None:
        if zero_normals not in ('error', 'invalid'):
            raise ValueError(f"zero_normals must be 'error' or 'invalid', got {zero_normals!r}")
        self.with_normals = bool(with_normals)
        self.max_depth = float(max_depth)
        self.zero_normals = zero_normals

    def transform(self, results: dict) -> dict:
        """Adds the maps to ``results`` (see the class docstring)."""
        path = results['depth_path']
        depth = np.load(path).astype(np.float32, copy=False)
        if depth.ndim != 2:
            raise ValueError(f'{path}: depth must be (H, W), got {depth.shape}')
        if not np.isfinite(depth).all() or (depth < 0).any():
            bad = int((~np.isfinite(depth)).sum()), int((depth < 0).sum())
            raise ValueError(f'{path}: depth holds {bad[0]} NaN/inf and {bad[1]} negative values')
        img_shape = results['img'].shape[:2]
        if depth.shape != img_shape:
            raise ValueError(
                f'{path}: depth is {depth.shape}, image {results.get("img_path")} is {img_shape}'
            )
        depth = np.where(depth > self.max_depth, 0.0, depth).astype(np.float32)
        fields = list(results.get('seg_fields', []))
        if self.with_normals:
            npath = results['normal_path']
            normals = np.load(npath).astype(np.float32, copy=False)
            if normals.shape != (*img_shape, 3):
                raise ValueError(f'{npath}: normals are {normals.shape}, image is {img_shape}')
            if not np.isfinite(normals).all():
                raise ValueError(f'{npath}: normals hold NaN or infinity')
            zero = (np.linalg.norm(normals, axis=2) < 1e-6) & (depth > 0)
            if zero.any():
                if self.zero_normals == 'error':
                    raise ValueError(
                        f'{npath}: {int(zero.sum())} pixels with valid depth have a zero-length '
                        "normal (zero_normals='invalid' scores them as invalid)"
                    )
                print_log(
                    f'{npath}: {int(zero.sum())} zero-length normals marked invalid',
                    logger='current',
                    level=logging.WARNING,
                )
                depth[zero] = 0.0
            results['gt_normal_map'] = normals
            fields.append('gt_normal_map')
        results['gt_depth_map'] = depth
        fields.append('gt_depth_map')
        results['seg_fields'] = list(dict.fromkeys(fields))
        return results

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(with_normals={self.with_normals}, max_depth={self.max_depth}, '
            f'zero_normals={self.zero_normals!r})'
        )

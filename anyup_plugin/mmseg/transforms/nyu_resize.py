"""Resizes an NYUv2 sample: image antialiased bilinear, depth nearest, normals renormalised."""

from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS
from PIL import Image

from .resize_short_side import pil_resize

__all__ = ['NYUResize', 'resize_nyu_sample']


def _resize_normals(normals: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) -> (h, w, 3): antialiased bilinear per channel, then unit length again."""
    out = pil_resize(normals.astype(np.float32), size[0], size[1], Image.BILINEAR)
    length = np.linalg.norm(out, axis=2, keepdims=True)
    # Opposite normals averaging to ~0 (thin edges) stay 0: never a made-up direction.
    return np.where(length > 1e-3, out / np.maximum(length, 1e-12), 0.0).astype(np.float32)


def resize_nyu_sample(
    results: dict, box: tuple[int, int, int, int] | None, size: tuple[int, int]
) -> dict:
    """Crops ``box`` = (top, left, height, width) (``None``: all) and resizes to ``size``.

    The image uses PIL's antialiased bilinear filter (as torchvision on PIL images), depth
    nearest neighbour (averaging would mix missing readings and depth edges into values no
    surface has), normals antialiased bilinear then renormalised. ``img_shape`` and
    ``ori_shape`` become ``size``: MMSeg resizes predictions to ``ori_shape``, and the protocol
    scores them at this size.
    """
    keys = ['img', *results.get('seg_fields', [])]
    for key in dict.fromkeys(keys):
        array = results[key]
        if box is not None:
            top, left, h, w = box
            array = array[top : top + h, left : left + w]
        if key == 'img':
            array = pil_resize(np.ascontiguousarray(array), size[0], size[1], Image.BILINEAR)
        elif key == 'gt_normal_map':
            array = _resize_normals(array, size)
        else:
            array = pil_resize(np.ascontiguousarray(array), size[0], size[1], Image.NEAREST)
        results[key] = np.ascontiguousarray(array)
    results['img_shape'] = results['ori_shape'] = tuple(size)
    return results


@TRANSFORMS.register_module()
class NYUResize(BaseTransform):
    """Resizes the image and its NYU maps to ``size`` (see :func:`resize_nyu_sample`).

    Required keys: ``img``, the ``seg_fields`` maps. Modified keys: those, ``img_shape``,
    ``ori_shape``.

    Args:
        size: Output size, an int for a square or (height, width). Probe3D/AnyUp: 224.
    """

    def __init__(self, size: int | tuple[int, int] = 224) -> None:
        self.size = _pair(size)

    def transform(self, results: dict) -> dict:
        """Resizes ``results`` in place."""
        return resize_nyu_sample(results, None, self.size)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or any(int(s) != s or s < 1 for s in pair):
        raise ValueError(f'size must be a positive int or (height, width), got {size!r}')
    return int(pair[0]), int(pair[1])

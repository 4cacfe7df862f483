"""Short-side resize with torchvision's size arithmetic and PIL's antialiased filters."""

from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS
from PIL import Image

from anyup_plugin.utils.geometry import short_side_size

__all__ = ['ResizeShortSide']

_FILTERS = {
    'nearest': Image.NEAREST,
    'bilinear': Image.BILINEAR,
    'bicubic': Image.BICUBIC,
    'lanczos': Image.LANCZOS,
}


def pil_resize(array: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """Resizes an (H, W) or (H, W, C) array with PIL, keeping its dtype.

    uint8 arrays with 1, 3 or 4 channels go through PIL in one piece (PIL's bilinear and
    bicubic filters antialias when shrinking); other dtypes are resized channel by channel
    in PIL's 32-bit modes.
    """
    if (array.shape[0], array.shape[1]) == (height, width):
        return array.copy()
    if array.dtype == np.uint8 and (array.ndim == 2 or array.shape[2] in (1, 3, 4)):
        squeezed = array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array
        out = np.asarray(Image.fromarray(squeezed).resize((width, height), resample))
        return out.reshape(height, width, *array.shape[2:])
    is_int = np.issubdtype(array.dtype, np.integer)
    channels = array[..., None] if array.ndim == 2 else array
    planes = []
    for c in range(channels.shape[2]):
        plane = channels[..., c].astype(np.int32 if is_int else np.float32)
        planes.append(np.asarray(Image.fromarray(plane).resize((width, height), resample)))
    out = np.stack(planes, axis=2).astype(array.dtype)
    return out[..., 0] if array.ndim == 2 else out


@TRANSFORMS.register_module()
class ResizeShortSide(BaseTransform):
    """Resizes the image so that its shorter side is ``size``, keeping the aspect ratio.

    Reproduces torchvision's ``Resize(size)`` on PIL images, which the AnyUp/JAFAR probes use:
    the longer side is truncated to ``int(size * long / short)``, the image is resampled with
    PIL's antialiased bilinear filter, label maps with nearest neighbour. (MMCV's ``Resize``
    rounds the longer side and its default OpenCV backend does not antialias.)

    Required keys: ``img``. Modified keys: ``img``, ``gt_seg_map`` and every key in
    ``seg_fields``, ``img_shape``. Added keys: ``scale_factor`` (w_scale, h_scale),
    ``keep_ratio``.

    Args:
        size: Target length of the shorter side.
        interpolation: Image filter: ``'bilinear'`` (default), ``'bicubic'``, ``'lanczos'`` or
            ``'nearest'``. Label maps always use nearest neighbour.
    """

    def __init__(self, size: int = 448, interpolation: str = 'bilinear') -> None:
        if int(size) != size or size < 1:
            raise ValueError(f'size must be a positive integer, got {size!r}')
        if interpolation not in _FILTERS:
            raise ValueError(
                f'interpolation must be one of {sorted(_FILTERS)}, got {interpolation!r}'
            )
        self.size = int(size)
        self.interpolation = interpolation

    def transform(self, results: dict) -> dict:
        """Resizes ``results['img']`` (H, W, C) and its label maps in place."""
        img = results['img']
        height, width = img.shape[:2]
        new_h, new_w = short_side_size(height, width, self.size)
        results['img'] = pil_resize(img, new_h, new_w, _FILTERS[self.interpolation])
        for key in _seg_keys(results):
            results[key] = pil_resize(results[key], new_h, new_w, Image.NEAREST)
        results['img_shape'] = (new_h, new_w)
        results['scale_factor'] = (new_w / width, new_h / height)
        results['keep_ratio'] = True
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, interpolation={self.interpolation!r})'


def _seg_keys(results: dict) -> list[str]:
    """The label-map keys present in ``results``: ``gt_seg_map`` and ``seg_fields``."""
    keys = list(results.get('seg_fields', []))
    if 'gt_seg_map' in results and 'gt_seg_map' not in keys:
        keys.append('gt_seg_map')
    return [k for k in keys if k in results]

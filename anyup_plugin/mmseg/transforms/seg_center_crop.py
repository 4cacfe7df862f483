"""Centre crop of an image and its label maps, with torchvision's offsets."""

from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from anyup_plugin.utils.geometry import center_crop_offsets

from .resize_short_side import _seg_keys

__all__ = ['SegCenterCrop']


@TRANSFORMS.register_module()
class SegCenterCrop(BaseTransform):
    """Crops the centre ``size`` region of the image and of every label map.

    The offsets are torchvision's ``CenterCrop``: ``int(round((H - h) / 2))`` rows from the
    top and likewise for columns. A side shorter than the crop is padded (image with
    ``pad_val``, labels with ``seg_pad_val``, i.e. ignored) before cropping.

    With ``set_ori_shape=True`` the crop's shape is also recorded as ``ori_shape``. MMSeg
    resizes each prediction to ``ori_shape`` before the metric compares it with
    ``gt_seg_map``; the linear-probe protocol evaluates on the cropped label, so its test
    pipeline sets this.

    Required keys: ``img``. Modified keys: ``img``, ``gt_seg_map`` and the keys in
    ``seg_fields``, ``img_shape`` (and ``ori_shape`` if asked).

    Args:
        size: Crop size, an int for a square or (height, width).
        pad_val: Image fill value where padding is needed.
        seg_pad_val: Label fill value where padding is needed (the ignore index).
        set_ori_shape: Also set ``ori_shape`` to the crop's shape (see above).
    """

    def __init__(
        self,
        size: int | tuple[int, int] = 448,
        pad_val: float = 0,
        seg_pad_val: int = 255,
        set_ori_shape: bool = False,
    ) -> None:
        crop = (size, size) if isinstance(size, (int, float)) else tuple(size)
        if len(crop) != 2 or any(int(s) != s or s < 1 for s in crop):
            raise ValueError(f'size must be a positive int or (height, width), got {size!r}')
        self.size = (int(crop[0]), int(crop[1]))
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val
        self.set_ori_shape = set_ori_shape

    def transform(self, results: dict) -> dict:
        """Crops ``results['img']`` and its label maps in place."""
        crop_h, crop_w = self.size
        results['img'] = self._crop(results['img'], self.pad_val)
        for key in _seg_keys(results):
            results[key] = self._crop(results[key], self.seg_pad_val)
        results['img_shape'] = (crop_h, crop_w)
        if self.set_ori_shape:
            results['ori_shape'] = (crop_h, crop_w)
        return results

    def _crop(self, array: np.ndarray, fill: float) -> np.ndarray:
        crop_h, crop_w = self.size
        height, width = array.shape[:2]
        if height < crop_h or width < crop_w:
            pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
            widths = [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)]
            widths += [(0, 0)] * (array.ndim - 2)
            array = np.pad(array, widths, constant_values=fill)
            height, width = array.shape[:2]
        top, left = center_crop_offsets(height, width, crop_h, crop_w)
        return np.ascontiguousarray(array[top : top + crop_h, left : left + crop_w])

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(size={self.size}, pad_val={self.pad_val}, '
            f'seg_pad_val={self.seg_pad_val}, set_ori_shape={self.set_ori_shape})'
        )

"""Data transforms of the linear-probe protocol (short-side resize, centre crop)."""

from .resize_short_side import ResizeShortSide
from .seg_center_crop import SegCenterCrop

__all__ = ['ResizeShortSide', 'SegCenterCrop']

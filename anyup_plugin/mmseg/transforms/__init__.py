"""Data transforms of the linear-probe protocol (short-side resize, centre crop) and of NYUv2."""

from .load_nyu_annotations import LoadNYUAnnotations
from .nyu_random_resized_crop import NYURandomResizedCrop
from .nyu_resize import NYUResize
from .pack_nyu_inputs import PackNYUInputs
from .random_color_jitter import RandomColorJitter
from .resize_short_side import ResizeShortSide
from .seg_center_crop import SegCenterCrop

__all__ = [
    'LoadNYUAnnotations',
    'NYURandomResizedCrop',
    'NYUResize',
    'PackNYUInputs',
    'RandomColorJitter',
    'ResizeShortSide',
    'SegCenterCrop',
]

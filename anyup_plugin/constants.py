"""Constants shared by every part of the package, each defined once.

Import them from here (``from anyup_plugin.constants import IMAGENET_MEAN``) rather than
restating the numbers: AnyUp's guidance and the timm encoders expect exactly these statistics.
"""

from __future__ import annotations

__all__ = [
    'IMAGENET_MEAN',
    'IMAGENET_MEAN_255',
    'IMAGENET_STD',
    'IMAGENET_STD_255',
]

#: ImageNet per-channel mean of RGB images scaled to [0, 1]: AnyUp's input normalisation.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: ImageNet per-channel standard deviation of RGB images scaled to [0, 1].
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: The same statistics on the 0-255 scale, the convention of MMSeg and Detectron2 configs.
IMAGENET_MEAN_255: tuple[float, float, float] = tuple(round(255 * m, 6) for m in IMAGENET_MEAN)
IMAGENET_STD_255: tuple[float, float, float] = tuple(round(255 * s, 6) for s in IMAGENET_STD)

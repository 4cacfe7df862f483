"""Bilinear upsampling with the AnyUpNeck interface: the baseline of every benchmark."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from mmseg.registry import MODELS
from torch import Tensor

from anyup_plugin.core.upsampler import FeatureUpsampler

from .image_guided_neck import ImageGuidedNeck
from .neck_config import check_neck_keys

__all__ = ['BilinearNeck']

# What ``**kwargs`` may hold: the arguments of the shared base.
_BASE_ARGUMENTS = tuple(inspect.signature(ImageGuidedNeck.__init__).parameters)[1:]


@MODELS.register_module()
class BilinearNeck(ImageGuidedNeck):
    """Upsamples backbone maps bilinearly to a stride of the input (``align_corners=False``).

    The "bilinear" row of the AnyUp/JAFAR tables. Same arguments and behaviour as
    :class:`AnyUpNeck` (minus the weights), so a baseline config differs from its AnyUp twin
    in the neck's ``type`` only. The image is used for its size only. Without an image
    (MMSeg's stock ``EncoderDecoder``) it needs ``scale_factor``.

    Args:
        scale_factor: Upsampling factor used when the neck gets no image; ``None`` makes a
            call without image an error.
        align_corners: Passed to ``F.interpolate``.
        antialias: Passed to ``F.interpolate`` (only matters when shrinking).
        **kwargs: ``in_index``, ``output_stride``, ``upsample_in_training``, ... of
            :class:`ImageGuidedNeck`.

    Shapes:
        Each selected (B, C, h, w) map becomes (B, C, ceil(H / s), ceil(W / s)); which levels
        come out (pyramids, ``[map, cls_token]`` levels): see :class:`ImageGuidedNeck`.
    """

    def __init__(
        self,
        scale_factor: float | None = None,
        align_corners: bool = False,
        antialias: bool = False,
        in_index: int | Sequence[int] | None = None,
        output_stride: int | Sequence[int] = 1,
        **kwargs,
    ) -> None:
        check_neck_keys(type(self).__name__, kwargs, _BASE_ARGUMENTS)
        super().__init__(in_index=in_index, output_stride=output_stride, **kwargs)
        if scale_factor is not None and scale_factor <= 0:
            raise ValueError(f'scale_factor must be positive, got {scale_factor!r}')
        self.scale_factor = scale_factor
        self.upsampler = FeatureUpsampler(
            'bilinear', align_corners=align_corners, antialias=antialias
        )

    def _output_size(self, features: Tensor, image: Tensor | None, stride: int) -> tuple[int, int]:
        if image is None and self.scale_factor is not None:
            height, width = features.shape[-2:]
            return round(height * self.scale_factor), round(width * self.scale_factor)
        return super()._output_size(features, image, stride)

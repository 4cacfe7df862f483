"""Bilinear upsampling with the AnyUpNeck interface: the baseline of every benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmseg.registry import MODELS

from anyup_plugin.core.upsampler import method_key

from .upsampler_neck import UpsamplerNeck

__all__ = ['BilinearNeck']


@MODELS.register_module()
class BilinearNeck(UpsamplerNeck):
    """Upsamples backbone maps bilinearly to a stride of the input (``align_corners=False``).

    The "bilinear" row of the AnyUp/JAFAR tables: :class:`UpsamplerNeck` with
    ``method='bilinear'``, so a baseline config differs from its AnyUp twin in the neck's
    ``type`` only. The image is used for its size only. Without an image (MMSeg's stock
    ``EncoderDecoder``) it needs ``scale_factor``. Another ``method`` runs that method instead.

    Args:
        scale_factor: Upsampling factor used when the neck gets no image; ``None`` makes a
            call without image an error.
        align_corners: Passed to ``F.interpolate``.
        antialias: Passed to ``F.interpolate`` (only matters when shrinking).
        in_index: Backbone levels to upsample (``None``: all).
        output_stride: Input pixels per output cell: one, one per level, or a pyramid.
        method: The upsampling method (see :class:`UpsamplerNeck`).
        **kwargs: ``upsample_in_training``, ``input_mean``, ... of :class:`UpsamplerNeck`, or
            the method's own arguments.

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
        method: str = 'bilinear',
        **kwargs: Any,
    ) -> None:
        # Interpolation settings: the bilinear method's own; another method gets them only
        # when set (its signature then decides).
        interpolation = {'align_corners': align_corners, 'antialias': antialias}
        if method_key(method) != 'bilinear':
            interpolation = {k: v for k, v in interpolation.items() if v}
        super().__init__(
            method=method,
            in_index=in_index,
            output_stride=output_stride,
            scale_factor=scale_factor,
            **interpolation,
            **kwargs,
        )

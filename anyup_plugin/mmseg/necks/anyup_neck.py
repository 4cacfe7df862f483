"""AnyUp as an MMSegmentation neck: the upsampling neck whose method defaults to AnyUp."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mmseg.registry import MODELS

from anyup_plugin.core.upsampler import method_key

from .upsampler_neck import UpsamplerNeck

__all__ = ['AnyUpNeck']

logger = logging.getLogger(__name__)


@MODELS.register_module()
class AnyUpNeck(UpsamplerNeck):
    """Upsamples backbone maps with AnyUp, guided by the network's input image.

    :class:`UpsamplerNeck` with ``method='anyup'``: every output vector is a convex
    combination of input vectors, so a head trained on the backbone's features applies
    unchanged. E.g. ``in_index=-1, output_stride=[4, 8, 16, 32]`` makes UPerHead's four-level
    pyramid from a ViT's last stride-16 map. The input image arrives normalised as the
    segmentor's data preprocessor does it and is converted to the ImageNet normalisation
    AnyUp expects (see ``input_mean``/``input_std``). Needs ``type='AnyUpEncoderDecoder'``.

    Another ``method`` (``--cfg-options model.neck.method=guided_filter``) runs that method
    instead; the AnyUp keys an AnyUp config sets are then left out (``window_ratio``, logged)
    or ignored (AnyUp's published checkpoint names, with a warning).

    Args:
        checkpoint: AnyUp weights: a local file, or a published name (``'anyup_paper'``,
            ``'anyup_multi_backbone'``; offline, the error says where to put the file).
            ``None`` keeps a random initialisation and logs a warning.
        frozen: Keep AnyUp frozen (the paper's probes); ``False`` fine-tunes it.
        window_ratio: Attention window half-size relative to the image; ``None`` (default)
            keeps the checkpoint's value (stored beside trained exports; 0.1 otherwise).
        in_index: Backbone levels to upsample (``None``: all).
        output_stride: Input pixels per output cell: one, one per level, or a pyramid.
        upsample_in_training: ``False`` upsamples in eval mode only (feature preservation).
        input_mean: Mean (RGB, 0-255) of the input normalisation (default: the segmentor's).
        input_std: Standard deviation (RGB, 0-255), likewise.
        init_cfg: MMEngine init config; not together with ``checkpoint``.
        method: The upsampling method (see :class:`UpsamplerNeck`).
        **kwargs: Other AnyUp (or method) constructor arguments (e.g. ``attention_kernel``)
            and :class:`UpsamplerNeck` keys (``scale_factor``).
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        frozen: bool = True,
        window_ratio: float | None = None,
        in_index: int | Sequence[int] | None = None,
        output_stride: int | Sequence[int] = 1,
        upsample_in_training: bool = True,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        init_cfg: dict | None = None,
        method: str = 'anyup',
        **kwargs: Any,
    ) -> None:
        if window_ratio is not None:
            if method_key(method) == 'anyup':
                kwargs['window_ratio'] = window_ratio
            else:
                logger.info(
                    '%s: window_ratio is an AnyUp argument; method %r leaves it out',
                    type(self).__name__,
                    method,
                )
        super().__init__(
            method=method,
            checkpoint=checkpoint,
            frozen=frozen,
            in_index=in_index,
            output_stride=output_stride,
            upsample_in_training=upsample_in_training,
            input_mean=input_mean,
            input_std=input_std,
            init_cfg=init_cfg,
            **kwargs,
        )

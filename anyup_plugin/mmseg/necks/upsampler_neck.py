"""One upsampling neck for every method: AnyUp, bilinear or any registered method, by config key."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from mmseg.registry import MODELS
from torch import Tensor

from anyup_plugin.core.upsampler import (
    FeatureUpsampler,
    method_arguments,
    method_checkpoint,
    method_key,
)

from ..init_cfg import refuse_init_cfg_over_loaded_weights
from .image_guided_neck import ImageGuidedNeck, missing_image_error
from .neck_config import check_neck_keys
from .neck_levels import Level

__all__ = ['UpsamplerNeck']


@MODELS.register_module()
class UpsamplerNeck(ImageGuidedNeck):
    """Upsamples backbone maps with the method named by ``method``, one config key.

    Each selected (B, C, h, w) map becomes (B, C, ceil(H / s), ceil(W / s)) for the input
    size (H, W) and ``output_stride`` s; which levels come out (pyramids from one map,
    ``[map, cls_token]`` levels): see :class:`ImageGuidedNeck`. ``AnyUpNeck`` and
    ``BilinearNeck`` are this neck with another default ``method``, so any config switches
    methods from the command line, e.g. ``--cfg-options model.neck.method=guided_filter`` or
    ``model.neck.method=jafar model.neck.checkpoint=/path/jafar.pth``.

    Methods that use the image (AnyUp, the guided filters, JAFAR, ...) need it: use the neck
    with ``type='AnyUpEncoderDecoder'`` (or the depth/normal estimators), which pass it;
    MMSeg's ``EncoderDecoder`` does not, and the neck then raises an error saying so. Methods
    that do not use it (``'bilinear'``, ``'bicubic'``) also run in ``EncoderDecoder`` given
    ``scale_factor``. Keys that neither the neck nor the method takes (left from a base
    config's neck that the config merged it into) raise a ``TypeError`` naming both.

    Args:
        method: ``'anyup'``, ``'bilinear'`` or a method of :mod:`anyup_plugin.core.methods`
            (an unknown name lists the known ones).
        checkpoint: The method's weights (see :class:`FeatureUpsampler`; AnyUp also takes
            ``'anyup_paper'``/``'anyup_multi_backbone'``, which the other methods ignore).
            ``None`` keeps a random initialisation and logs a warning.
        frozen: Keep the method frozen (no parameter trains, eval mode, no graph recorded
            unless the features need gradients), as in the paper's probes; ``False`` trains it.
        in_index: Backbone levels to upsample (``None``: all).
        output_stride: Input pixels per output cell: one, one per level, or a pyramid.
        upsample_in_training: ``False`` passes the maps through in training mode and
            upsamples only in eval mode (feature-preservation protocol).
        input_mean: Mean (RGB, 0-255) of the input normalisation; default from the data
            preprocessor via ``AnyUpEncoderDecoder``, else ImageNet's.
        input_std: Standard deviation (RGB, 0-255), likewise.
        scale_factor: Output size factor when the neck gets no image (methods that do not use
            it only); ``None`` makes a call without image an error.
        init_cfg: MMEngine init config; not together with a checkpoint the method loads.
        **method_kwargs: The method's own constructor arguments (AnyUp's ``window_ratio``,
            bilinear's ``align_corners``, ...), checked against its signature.
    """

    def __init__(
        self,
        method: str = 'anyup',
        checkpoint: str | None = None,
        frozen: bool = True,
        in_index: int | Sequence[int] | None = None,
        output_stride: int | Sequence[int] = 1,
        upsample_in_training: bool = True,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        scale_factor: float | None = None,
        init_cfg: dict | None = None,
        **method_kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        method = method_key(method)
        check_neck_keys(
            owner, method_kwargs, method_arguments(method), neck_keys=_NECK_KEYS, method=method
        )
        checkpoint = method_checkpoint(method, checkpoint, owner)
        refuse_init_cfg_over_loaded_weights(owner, init_cfg, checkpoint is not None)
        super().__init__(
            in_index=in_index,
            output_stride=output_stride,
            upsample_in_training=upsample_in_training,
            input_mean=input_mean,
            input_std=input_std,
            init_cfg=init_cfg,
        )
        if scale_factor is not None and scale_factor <= 0:
            raise ValueError(f'scale_factor must be positive, got {scale_factor!r}')
        self.scale_factor = scale_factor
        self.upsampler = FeatureUpsampler(
            method, checkpoint=checkpoint, frozen=frozen, owner=owner, **method_kwargs
        )

    def forward(self, inputs: Level | Sequence[Level], image: Tensor | None = None) -> tuple:
        """Upsamples the selected maps, guided by ``image``; see :class:`ImageGuidedNeck`.

        Args:
            inputs: Backbone levels, each a (B, C_i, h_i, w_i) map or ``[map, cls_token]``.
            image: (B, 3, H, W) network input; required by methods that use the image.

        Returns:
            The levels, upsampled ones at (B, C_i, ceil(H / s), ceil(W / s)).
        """
        passing_through = self.training and not self.upsample_in_training
        if image is None and self.upsampler.uses_image and not passing_through:
            raise missing_image_error(type(self).__name__)
        return super().forward(inputs, image)

    def _output_size(self, features: Tensor, image: Tensor | None, stride: int) -> tuple[int, int]:
        if image is None and self.scale_factor is not None:
            height, width = features.shape[-2:]
            return round(height * self.scale_factor), round(width * self.scale_factor)
        return super()._output_size(features, image, stride)

    def extra_repr(self) -> str:
        up = self.upsampler
        return (
            f'method={up.method!r}, checkpoint={up.checkpoint!r}, frozen={up.frozen}, '
            f'in_index={self.in_index}, output_stride={self.output_stride}, '
            f'upsample_in_training={self.upsample_in_training}'
        )


#: The neck's own config keys (the rest go to the method).
_NECK_KEYS = tuple(inspect.signature(UpsamplerNeck.__init__).parameters)[1:-1]

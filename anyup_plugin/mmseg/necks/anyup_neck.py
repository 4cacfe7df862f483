"""AnyUp as an MMSegmentation neck: image-guided upsampling of backbone maps."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from mmseg.registry import MODELS
from torch import Tensor

from anyup_plugin.core.anyup import AnyUp
from anyup_plugin.core.upsampler import FeatureUpsampler

from ..init_cfg import refuse_init_cfg_over_loaded_weights
from .image_guided_neck import ImageGuidedNeck, missing_image_error
from .neck_config import check_neck_keys
from .neck_levels import Level

__all__ = ['AnyUpNeck']

# What ``**anyup_kwargs`` may hold: AnyUp's own constructor arguments.
_ANYUP_ARGUMENTS = tuple(inspect.signature(AnyUp.__init__).parameters)[1:]


@MODELS.register_module()
class AnyUpNeck(ImageGuidedNeck):
    """Upsamples backbone maps with AnyUp, guided by the network's input image.

    Each selected (B, C, h, w) map becomes (B, C, ceil(H / s), ceil(W / s)) for the input
    size (H, W) and ``output_stride`` s; every output vector is a convex combination of input
    vectors, so a head trained on the backbone's features applies unchanged. Which levels come
    out, pyramids from one map and ``[map, cls_token]`` levels: see :class:`ImageGuidedNeck`.
    E.g. ``in_index=-1, output_stride=[4, 8, 16, 32]`` makes UPerHead's four-level pyramid
    from a ViT's last stride-16 map; ``output_stride=8`` upsamples every level. The input image
    arrives normalised as the segmentor's data preprocessor does it and is converted to the
    ImageNet normalisation AnyUp expects (see ``input_mean``/``input_std``).

    Needs the image: use it with ``type='AnyUpEncoderDecoder'``; MMSeg's ``EncoderDecoder``
    does not pass the image, and the neck then raises an error saying so. Keys it does not
    take (left from a base config's neck that the config merged it into) raise a
    ``TypeError`` saying how to replace that neck or keep it after AnyUp.

    Args:
        checkpoint: AnyUp weights: a local file, or a published name (``'anyup_paper'``,
            ``'anyup_multi_backbone'``; offline, the error says where to put the file).
            ``None`` keeps a random initialisation and logs a warning.
        frozen: Keep AnyUp frozen (no parameter trains, eval mode, no graph recorded unless
            the features themselves need gradients), as in the paper's probes. ``False``
            trains it with the rest of the model (fine-tuning).
        window_ratio: Attention window half-size relative to the image; ``None`` (default)
            keeps the checkpoint's value (stored beside trained exports; 0.1, the published
            value, otherwise).
        in_index: Backbone levels to upsample (``None``: all).
        output_stride: Input pixels per output cell (1: input size): one, one per selected
            level, or several for one selected level (a pyramid).
        upsample_in_training: ``False`` passes the maps through in training mode and
            upsamples only in eval mode (feature-preservation protocol).
        input_mean: Mean (RGB, 0-255) of the input normalisation; default from the data
            preprocessor via ``AnyUpEncoderDecoder``, else ImageNet's.
        input_std: Standard deviation (RGB, 0-255), likewise.
        init_cfg: MMEngine init config, applied by ``init_weights()`` over AnyUp's own
            initialisation. Not together with ``checkpoint``: it would overwrite the loaded
            weights.
        **anyup_kwargs: Other ``AnyUp`` constructor arguments (e.g. ``max_tile_elements``).
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
        **anyup_kwargs: Any,
    ) -> None:
        check_neck_keys(type(self).__name__, anyup_kwargs, _ANYUP_ARGUMENTS)
        refuse_init_cfg_over_loaded_weights(type(self).__name__, init_cfg, bool(checkpoint))
        super().__init__(
            in_index=in_index,
            output_stride=output_stride,
            upsample_in_training=upsample_in_training,
            input_mean=input_mean,
            input_std=input_std,
            init_cfg=init_cfg,
        )
        self.upsampler = FeatureUpsampler(
            'anyup',
            checkpoint=checkpoint,
            frozen=frozen,
            owner=type(self).__name__,
            **({} if window_ratio is None else {'window_ratio': window_ratio}),
            **anyup_kwargs,
        )

    def forward(self, inputs: Level | Sequence[Level], image: Tensor | None = None) -> tuple:
        """Upsamples the selected maps guided by ``image``; see :class:`ImageGuidedNeck`.

        Args:
            inputs: Backbone levels, each a (B, C_i, h_i, w_i) map or ``[map, cls_token]``.
            image: (B, 3, H, W) network input. Required.

        Returns:
            The levels, upsampled ones at (B, C_i, ceil(H / s), ceil(W / s)).
        """
        if image is None and not (self.training and not self.upsample_in_training):
            raise missing_image_error(type(self).__name__)
        return super().forward(inputs, image)

    def extra_repr(self) -> str:
        return (
            f'checkpoint={self.upsampler.checkpoint!r}, frozen={self.upsampler.frozen}, '
            f'in_index={self.in_index}, '
            f'output_stride={self.output_stride}, upsample_in_training={self.upsample_in_training}'
        )

"""EncoderDecoder whose neck sees the network's input image."""

from __future__ import annotations

import logging

from mmengine.logging import print_log
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor

__all__ = ['AnyUpEncoderDecoder']


@MODELS.register_module()
class AnyUpEncoderDecoder(EncoderDecoder):
    """MMSeg's ``EncoderDecoder``, passing the input image to image-guided necks.

    A drop-in replacement: same arguments, same training, inference (whole or slide, where
    each window is its own guidance) and outputs. Two things change:

    * :meth:`extract_feat` calls ``neck(features, image)`` for necks that declare
      ``takes_image = True`` (``AnyUpNeck``, ``BilinearNeck``), ``neck(features)`` for any
      other neck;
    * after building, the data preprocessor's mean/std are handed to the backbone and neck
      (``set_input_normalization``) unless their configs set ``input_mean``/``input_std``, so
      they can undo MMSeg's normalisation whatever statistics the config uses.

    Args:
        *args: As for ``EncoderDecoder``.
        **kwargs: As for ``EncoderDecoder``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._share_input_normalization()

    def extract_feat(self, inputs: Tensor) -> list[Tensor]:
        """Backbone maps of (B, 3, H, W) ``inputs``, through the neck with the image."""
        x = self.backbone(inputs)
        if self.with_neck:
            x = self.neck(x, inputs) if getattr(self.neck, 'takes_image', False) else self.neck(x)
        return x

    def _share_input_normalization(self) -> None:
        preprocessor = self.data_preprocessor
        if getattr(preprocessor, '_enable_normalize', False):
            mean = preprocessor.mean.flatten().tolist()
            std = preprocessor.std.flatten().tolist()
        elif hasattr(preprocessor, '_enable_normalize'):
            mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        else:
            return  # unknown preprocessor: keep the modules' own settings
        if not getattr(preprocessor, '_channel_conversion', True):
            print_log(
                'AnyUpEncoderDecoder: the data preprocessor does not convert BGR to RGB; the '
                'backbone and AnyUp expect RGB input (set data_preprocessor.bgr_to_rgb=True '
                'unless the pipeline already loads RGB).',
                logger='current',
                level=logging.WARNING,
            )
        for name in ('backbone', 'neck'):
            module = getattr(self, name, None)
            if module is None or not hasattr(module, 'set_input_normalization'):
                continue
            if getattr(module, 'norm_from_config', False):
                continue
            module.set_input_normalization(mean, std)

"""EncoderDecoder whose neck sees the network's input image."""

from __future__ import annotations

import logging

from mmengine.logging import print_log
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor, nn

from anyup_plugin.constants import IMAGENET_MEAN_255, IMAGENET_STD_255
from anyup_plugin.core.input_norm import ToImageNetNorm

__all__ = ['AnyUpEncoderDecoder']


@MODELS.register_module()
class AnyUpEncoderDecoder(EncoderDecoder):
    """MMSeg's ``EncoderDecoder``, passing the input image to image-guided necks.

    A drop-in replacement: same arguments, same training, inference (whole or slide, where
    each window is its own guidance) and outputs. Two things change:

    * :meth:`extract_feat` calls ``neck(features, image)`` for necks that declare
      ``takes_image = True`` (``UpsamplerNeck`` with any method, ``AnyUpNeck``,
      ``BilinearNeck``), ``neck(features)`` for any other neck. A list of necks in the
      config (``neck=[dict(type='AnyUpNeck', ...), dict(type='FPN', ...)]``, which MMEngine
      builds into a ``Sequential``) runs in order, each image-guided neck of it getting the
      image: AnyUp can refine a backbone's maps before a config's own neck;
    * the input is converted to ImageNet normalisation once per forward, from the data
      preprocessor's mean/std, and that image goes to every module that takes ImageNet input
      (those with ``set_input_normalization``: the timm backbone and the necks), unless their
      configs set ``input_mean``/``input_std`` themselves. Other backbones (e.g. MMSeg's
      ResNet) receive the preprocessor's output unchanged.

    Args:
        *args: As for ``EncoderDecoder``.
        **kwargs: As for ``EncoderDecoder``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.input_norm: ToImageNetNorm | None = self._imagenet_conversion()
        if self.input_norm is not None:
            for module in (self.backbone, *self._necks()):
                if self._takes_imagenet_input(module):
                    module.set_input_normalization(IMAGENET_MEAN_255, IMAGENET_STD_255)

    def extract_feat(self, inputs: Tensor) -> list[Tensor]:
        """Backbone maps of (B, 3, H, W) ``inputs``, through the neck(s) with the image."""
        image = inputs if self.input_norm is None else self.input_norm(inputs)
        x = self.backbone(image if self._takes_imagenet_input(self.backbone) else inputs)
        for neck in self._necks():
            if getattr(neck, 'takes_image', False):
                x = neck(x, image if self._takes_imagenet_input(neck) else inputs)
            else:
                x = neck(x)
        return x

    def _necks(self) -> list[nn.Module]:
        """The necks in the order they run: none, the one neck, or those of a config list."""
        if not self.with_neck:
            return []
        # MMEngine builds a list config into a Sequential, whose own forward would call each
        # neck with the features only.
        if isinstance(self.neck, nn.Sequential):
            return list(self.neck)
        return [self.neck]

    def _takes_imagenet_input(self, module: nn.Module | None) -> bool:
        """Whether ``module`` gets the ImageNet-normalised image this segmentor computes."""
        return (
            self.input_norm is not None
            and hasattr(module, 'set_input_normalization')
            and not getattr(module, 'norm_from_config', False)
        )

    def _imagenet_conversion(self) -> ToImageNetNorm | None:
        """The conversion from the data preprocessor's normalisation to ImageNet's.

        ``None`` for a preprocessor of unknown kind: the modules then keep their own settings.
        """
        preprocessor = self.data_preprocessor
        if not isinstance(preprocessor, SegDataPreProcessor):
            return None
        if not preprocessor.channel_conversion:
            print_log(
                'AnyUpEncoderDecoder: the data preprocessor does not convert BGR to RGB; the '
                'backbone and AnyUp expect RGB input (set data_preprocessor.bgr_to_rgb=True '
                'unless the pipeline already loads RGB).',
                logger='current',
                level=logging.WARNING,
            )
        # SegDataPreProcessor registers mean/std buffers only when it normalises.
        if isinstance(getattr(preprocessor, 'mean', None), Tensor):
            return ToImageNetNorm(
                preprocessor.mean.flatten().tolist(), preprocessor.std.flatten().tolist()
            )
        return ToImageNetNorm([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])

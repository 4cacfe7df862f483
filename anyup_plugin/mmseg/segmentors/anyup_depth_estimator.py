"""MMSeg's DepthEstimator whose neck sees the network's input image."""

from __future__ import annotations

from mmseg.models.segmentors import DepthEstimator
from mmseg.registry import MODELS
from torch import Tensor

from .anyup_encoder_decoder import AnyUpEncoderDecoder

__all__ = ['AnyUpDepthEstimator']


@MODELS.register_module()
class AnyUpDepthEstimator(AnyUpEncoderDecoder, DepthEstimator):
    """``DepthEstimator`` with :class:`AnyUpEncoderDecoder`'s image-guided neck call.

    Everything is MMSeg's ``DepthEstimator`` (losses from the decode head, whole/slide
    inference, ``pred_depth_map`` resized to ``ori_shape``) except feature extraction, which
    is ``AnyUpEncoderDecoder``'s: the neck (``UpsamplerNeck``, ``AnyUpNeck``, ...) gets the
    input image, converted once to ImageNet normalisation from the data preprocessor's
    statistics.
    ``DepthEstimator`` calls ``extract_feat(inputs, batch_img_metas)``; the metas are only used
    there for class-embedding backbones, which this project has none of.

    Args:
        *args: As for ``DepthEstimator``.
        **kwargs: As for ``DepthEstimator``.
    """

    def extract_feat(self, inputs: Tensor, batch_img_metas: list[dict] | None = None):
        """Backbone maps of (B, 3, H, W) ``inputs``, through the neck with the image."""
        return AnyUpEncoderDecoder.extract_feat(self, inputs)

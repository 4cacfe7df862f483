"""A Detectron2 backbone: frozen timm encoder + image-guided AnyUp (or bilinear) upsampling."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor

from anyup_plugin.core.anyup import AnyUp
from anyup_plugin.core.encoder import FrozenTimmEncoder
from anyup_plugin.core.input_norm import ToImageNetNorm

__all__ = ['AnyUpTimmBackbone', 'build_anyup_timm_backbone']

logger = logging.getLogger(__name__)


class AnyUpTimmBackbone(Backbone):
    """A backbone that owns a frozen timm encoder and upsamples its maps guided by the image.

    Like Detectron2's FPN (a backbone built around another backbone), it receives the
    normalised network input, runs the encoder on it, and upsamples every selected map to
    ``output_stride`` with AnyUp guided by that same image (or bilinearly, the baseline).

    Args:
        encoder: The frozen encoder (ImageNet-normalised RGB input).
        upsampler: An :class:`AnyUp`, or ``None`` for bilinear upsampling.
        input_norm: Maps the backbone input to ImageNet normalisation.
        output_stride: Input pixels per output cell (1: input size).
        frozen: Keep AnyUp frozen (eval mode, no gradients); ``False`` trains it.

    Shapes:
        Input: (B, 3, H, W) images normalised as ``input_norm`` expects.
        Output: ``{'feat<i>': (B, C_i, ceil(H / s), ceil(W / s))}`` for the i-th encoder layer
        and ``s = output_stride``.
    """

    def __init__(
        self,
        encoder: FrozenTimmEncoder,
        upsampler: AnyUp | None,
        input_norm: ToImageNetNorm,
        output_stride: int = 1,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(output_stride, int) or output_stride < 1:
            raise ValueError(f'MODEL.ANYUP.OUTPUT_STRIDE must be an int >= 1, got {output_stride}')
        self.encoder = encoder
        self.upsampler = upsampler
        self.input_norm = input_norm
        self.output_stride = output_stride
        self.frozen = bool(frozen) or upsampler is None
        if upsampler is not None:
            upsampler.set_trainable(not self.frozen)
        self._out_features = [f'feat{i}' for i in range(len(encoder.layers))]
        self._out_feature_channels = dict(zip(self._out_features, encoder.out_channels))
        self._out_feature_strides = {name: output_stride for name in self._out_features}
        self.train(self.training)

    def train(self, mode: bool = True) -> AnyUpTimmBackbone:
        """Sets the mode; the encoder, and a frozen AnyUp, stay in eval mode."""
        super().train(mode)
        if self.frozen and self.upsampler is not None:
            self.upsampler.eval()
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """(B, 3, H, W) normalised images -> ``{'feat<i>': (B, C_i, H / s, W / s)}``."""
        image = self.input_norm(x)
        size = (
            math.ceil(x.shape[-2] / self.output_stride),
            math.ceil(x.shape[-1] / self.output_stride),
        )
        feats = self.encoder(image)
        out = {}
        for name, feat in zip(self._out_features, feats):
            out[name] = self._upsample(image, feat, size)
        return out

    def _upsample(self, image: Tensor, feat: Tensor, size: tuple[int, int]) -> Tensor:
        """(B, C, h, w) features guided by (B, 3, H, W) image -> (B, C, *size)."""
        if self.upsampler is None:
            if tuple(feat.shape[-2:]) == size:
                return feat
            return F.interpolate(feat, size=size, mode='bilinear', align_corners=False)
        if self.frozen:
            with torch.no_grad():
                return self.upsampler(image, feat, output_size=size)
        return self.upsampler(image, feat, output_size=size)

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and (upsampled) stride of each output."""
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self.output_stride)
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        """0: the encoder pads to its patch size itself, and outputs keep the input size."""
        return 0


def _timm_kwargs(pairs: Any) -> dict[str, Any]:
    try:
        return {str(key): value for key, value in pairs}
    except (TypeError, ValueError) as exc:
        raise ValueError(f'MODEL.TIMM.KWARGS must be [key, value] pairs, got {pairs!r}') from exc


@BACKBONE_REGISTRY.register()
def build_anyup_timm_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> AnyUpTimmBackbone:
    """Builds :class:`AnyUpTimmBackbone` from ``MODEL.TIMM.*`` and ``MODEL.ANYUP.*``.

    Args:
        cfg: Config with :func:`add_anyup_config`'s keys.
        input_shape: Input channels (must be 3).

    Returns:
        The backbone.
    """
    if input_shape.channels not in (None, 3):
        raise ValueError(f'AnyUp needs 3-channel images, got {input_shape.channels} channels')
    timm_cfg, anyup_cfg = cfg.MODEL.TIMM, cfg.MODEL.ANYUP
    encoder = FrozenTimmEncoder(
        timm_cfg.NAME,
        layers=list(timm_cfg.LAYERS),
        apply_norm=timm_cfg.APPLY_NORM,
        pretrained=timm_cfg.PRETRAINED,
        checkpoint=timm_cfg.CHECKPOINT or None,
        **_timm_kwargs(timm_cfg.KWARGS),
    )
    kind = anyup_cfg.UPSAMPLER.lower()
    if kind == 'bilinear':
        upsampler = None
    elif kind == 'anyup' and anyup_cfg.CHECKPOINT:
        upsampler = AnyUp.from_pretrained(anyup_cfg.CHECKPOINT, window_ratio=anyup_cfg.WINDOW_RATIO)
        logger.info('AnyUp weights loaded from %s', anyup_cfg.CHECKPOINT)
    elif kind == 'anyup':
        upsampler = AnyUp(window_ratio=anyup_cfg.WINDOW_RATIO)
        logger.warning(
            'MODEL.ANYUP.CHECKPOINT is empty: AnyUp keeps its random initialisation. Set it to '
            "'anyup_multi_backbone' (or a local .pth path) for the published weights."
        )
    else:
        raise ValueError(f"MODEL.ANYUP.UPSAMPLER must be 'anyup' or 'bilinear', got {kind!r}")
    if cfg.INPUT.FORMAT not in ('RGB', 'BGR'):
        raise ValueError(
            f"INPUT.FORMAT must be 'RGB' or 'BGR' for AnyUp's colour guidance, got "
            f'{cfg.INPUT.FORMAT!r}'
        )
    input_norm = ToImageNetNorm(
        cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, channel_order=cfg.INPUT.FORMAT
    )
    return AnyUpTimmBackbone(
        encoder, upsampler, input_norm, anyup_cfg.OUTPUT_STRIDE, anyup_cfg.FROZEN
    )

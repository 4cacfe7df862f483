"""A frozen timm encoder as a Detectron2 backbone (the bottom-up network of the AnyUp wrapper)."""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor

from anyup_plugin.core.encoder import FrozenTimmEncoder
from anyup_plugin.core.input_norm import ToImageNetNorm

from .backbone import build_input_norm
from .config import keyword_pairs

__all__ = ['FrozenTimmD2Backbone', 'build_frozen_timm_backbone']


class FrozenTimmD2Backbone(Backbone):
    """Any timm model (ViT or CNN), frozen, returning the maps of chosen layers.

    Registered for configs as its builder, ``MODEL.ANYUP.BOTTOM_UP =
    'build_frozen_timm_backbone'``. MMSegmentation's counterpart is
    :class:`anyup_plugin.mmseg.FrozenTimmMMSegBackbone`.

    The maps of ``encoder.layers`` are named ``'feat0'``, ``'feat1'``, ... in that order, at
    the layer's own stride (the patch size for a ViT, e.g. 14 for DINOv2). The meta-architecture
    pads the input to :attr:`size_divisibility`, the encoder's patch size (its coarsest
    stride), so every token covers image pixels only.

    Args:
        encoder: The frozen encoder (takes ImageNet-normalised RGB images).
        input_norm: Maps the network input (Detectron2's normalisation and channel order) to
            what the encoder takes.

    Shapes:
        Input: (B, 3, H, W) images normalised as ``input_norm`` expects.
        Output: ``{'feat<i>': (B, C_i, ceil(H / s_i), ceil(W / s_i))}``.
    """

    def __init__(self, encoder: FrozenTimmEncoder, input_norm: ToImageNetNorm) -> None:
        super().__init__()
        self.encoder = encoder
        self.input_norm = input_norm
        self._out_features = [f'feat{i}' for i in range(len(encoder.layers))]
        self._out_feature_channels = dict(zip(self._out_features, encoder.out_channels))
        self._out_feature_strides = dict(zip(self._out_features, encoder.strides))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """(B, 3, H, W) normalised images -> ``{'feat<i>': (B, C_i, H / s_i, W / s_i)}``."""
        return dict(zip(self._out_features, self.encoder(self.input_norm(x))))

    @property
    def size_divisibility(self) -> int:
        """The encoder's patch size (its coarsest stride)."""
        return int(self.encoder.patch_size)


@BACKBONE_REGISTRY.register()
def build_frozen_timm_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FrozenTimmD2Backbone:
    """Builds :class:`FrozenTimmD2Backbone` from ``MODEL.TIMM.*``.

    Args:
        cfg: Config with :func:`add_anyup_config`'s keys.
        input_shape: Input channels (must be 3).

    Returns:
        The backbone.

    Raises:
        ValueError: An unknown ``MODEL.TIMM.NAME`` (with close matches), bad ``LAYERS`` or
            ``KWARGS``, or an ``INPUT.FORMAT`` other than RGB/BGR.
        FileNotFoundError: ``MODEL.TIMM.CHECKPOINT`` does not exist.
    """
    if input_shape.channels not in (None, 3):
        raise ValueError(f'timm encoders need 3-channel images, got {input_shape.channels}')
    timm_cfg = cfg.MODEL.TIMM
    input_norm = build_input_norm(cfg)
    kwargs = keyword_pairs(timm_cfg.KWARGS, 'MODEL.TIMM.KWARGS', '[["depth", 2]]')
    try:
        encoder = FrozenTimmEncoder(
            timm_cfg.NAME,
            layers=list(timm_cfg.LAYERS),
            apply_norm=timm_cfg.APPLY_NORM,
            pretrained=timm_cfg.PRETRAINED,
            checkpoint=timm_cfg.CHECKPOINT or None,
            **kwargs,
        )
    except (ValueError, FileNotFoundError) as exc:
        # The encoder's message says what is wrong; say which config keys hold it.
        raise type(exc)(
            f'MODEL.TIMM (NAME {timm_cfg.NAME!r}, LAYERS {list(timm_cfg.LAYERS)}, CHECKPOINT '
            f'{timm_cfg.CHECKPOINT!r}): {exc}'
        ) from exc
    return FrozenTimmD2Backbone(encoder, input_norm)

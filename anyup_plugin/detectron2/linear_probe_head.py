"""The linear probe of the AnyUp/JAFAR segmentation benchmarks as a Detectron2 head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

__all__ = ['LinearProbeSemSegHead']


@SEM_SEG_HEADS_REGISTRY.register()
class LinearProbeSemSegHead(nn.Module):
    """One 1x1 convolution with bias from features to class logits: no norm, no dropout.

    The features named in ``in_features`` are concatenated along channels (they must share a
    stride). Logits at a stride above 1 are upsampled bilinearly to the label size, as
    Detectron2's own heads do. The loss is cross-entropy averaged over the pixels whose label
    is not ``ignore_value``; with no such pixel it is 0 (and still part of the graph). The
    convolution keeps PyTorch's default initialisation.

    Args:
        input_shape: Shapes of the backbone outputs to classify.
        num_classes: Number of classes K.
        ignore_value: Label value excluded from the loss (255 for ADE20K-151).
        loss_weight: Multiplier of the loss.

    Shapes:
        Input: ``{name: (B, C_name, H / s, W / s)}``; targets (B, H, W) int64.
        Output: in training ``(None, {'loss_sem_seg': scalar})``; in inference
        ``((B, K, H, W) logits, {})``.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not input_shape:
            raise ValueError('LinearProbeSemSegHead needs at least one input feature')
        strides = {spec.stride for spec in input_shape.values()}
        if len(strides) != 1:
            raise ValueError(f'all input features must share a stride, got {input_shape}')
        self.in_features = list(input_shape)
        self.common_stride = int(strides.pop() or 1)
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        channels = sum(int(spec.channels) for spec in input_shape.values())
        self.predictor = nn.Conv2d(channels, num_classes, kernel_size=1, bias=True)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        missing = [name for name in head.IN_FEATURES if name not in input_shape]
        if missing:
            raise ValueError(
                f'MODEL.SEM_SEG_HEAD.IN_FEATURES {missing} are not backbone outputs '
                f'(available: {sorted(input_shape)})'
            )
        return {
            'input_shape': {name: input_shape[name] for name in head.IN_FEATURES},
            'num_classes': head.NUM_CLASSES,
            'ignore_value': head.IGNORE_VALUE,
            'loss_weight': head.LOSS_WEIGHT,
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        """Backbone outputs -> (B, K, H / s, W / s) logits."""
        x = torch.cat([features[name] for name in self.in_features], dim=1)
        return self.predictor(x)

    def forward(
        self, features: dict[str, Tensor], targets: Tensor | None = None
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Classifies every pixel; see the class docstring for shapes."""
        logits = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError('LinearProbeSemSegHead needs targets in training mode')
            return None, self.losses(logits, targets)
        if self.common_stride != 1:
            logits = F.interpolate(
                logits, scale_factor=self.common_stride, mode='bilinear', align_corners=False
            )
        return logits, {}

    def losses(self, logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """(B, K, h, w) logits and (B, H, W) labels -> ``{'loss_sem_seg': mean CE}``."""
        logits = logits.float()
        if tuple(logits.shape[-2:]) != tuple(targets.shape[-2:]):
            logits = F.interpolate(
                logits, size=targets.shape[-2:], mode='bilinear', align_corners=False
            )
        if not bool((targets != self.ignore_value).any()):
            return {'loss_sem_seg': logits.sum() * 0.0}
        loss = F.cross_entropy(logits, targets.long(), ignore_index=self.ignore_value)
        return {'loss_sem_seg': loss * self.loss_weight}

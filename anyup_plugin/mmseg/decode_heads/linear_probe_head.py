"""The linear probe of the AnyUp/JAFAR segmentation benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import Tensor

__all__ = ['LinearProbeHead']


@MODELS.register_module()
class LinearProbeHead(BaseDecodeHead):
    """One 1x1 convolution with bias from features to class logits: no BN, no dropout.

    The logits keep the resolution of the features they are computed on; the loss resizes
    them to the label size (bilinear) if they differ, which for upsampled features they do
    not. The convolution keeps PyTorch's default initialisation (as a plain ``nn.Conv2d``
    probe would), not MMSeg's ``Normal(std=0.01)``. The loss defaults to cross-entropy
    averaged over the pixels whose label is not ``ignore_index`` (255).

    Args:
        in_channels: Feature channels C.
        num_classes: Number of classes K.
        in_index: Which input map to classify.
        loss_decode: Loss config; default ``CrossEntropyLoss`` with ``avg_non_ignore=True``.
        init_cfg: MMEngine init config; ``None`` keeps PyTorch's initialisation.
        **kwargs: Other ``BaseDecodeHead`` arguments (``ignore_index``, ``align_corners``, ...).

    Shapes:
        Input: a sequence of maps, the ``in_index``-th being (B, C, H, W).
        Output: (B, K, H, W) logits.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        in_index: int = -1,
        loss_decode: dict | Sequence[dict] | None = None,
        init_cfg: dict | None = None,
        **kwargs,
    ) -> None:
        for key in ('channels', 'dropout_ratio', 'input_transform'):
            if key in kwargs:
                raise TypeError(f'LinearProbeHead does not take {key!r}: it is a single 1x1 conv')
        if loss_decode is None:
            loss_decode = dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True
            )
        super().__init__(
            in_channels=in_channels,
            channels=in_channels,
            num_classes=num_classes,
            in_index=in_index,
            dropout_ratio=0.0,
            loss_decode=loss_decode,
            init_cfg=init_cfg,
            **kwargs,
        )

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """(B, C, H, W) map ``inputs[in_index]`` -> (B, K, H, W) logits."""
        return self.cls_seg(self._transform_inputs(inputs))

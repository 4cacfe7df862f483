"""Probe3D's bin-depth probe: scores over 256 depth bins -> expected depth."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmseg.registry import MODELS
from torch import Tensor

from .dense_probe_head import DenseProbeHead

__all__ = ['DepthProbeHead']


@MODELS.register_module()
class DepthProbeHead(DenseProbeHead):
    """Depth as the expectation over uniform bins (Probe3D's bin-depth ``DepthHead``).

    The probe (linear or DPT, see :class:`DenseProbeHead`) scores ``num_bins`` bin centres
    uniformly spaced in [``min_depth``, ``max_depth``]; the scores go through ``relu + 0.1``
    and are normalised to sum to 1 (AdaBins' "linear" normalisation, not a softmax), and the
    depth is the expected bin centre. Predictions are resized bilinearly to the target (in the
    loss) or the input (at inference).

    Args:
        in_channels: Feature channels (linear) or the four maps' channels (DPT).
        num_bins: Number of depth bins (256).
        min_depth: First bin centre in metres (0.001).
        max_depth: Last bin centre in metres (10).
        loss_decode: Loss config; default :class:`ProbeDepthLoss` (10 SI-log + 0.5 gradient).
        align_corners: Of the bilinear resize (Probe3D since 2025-11-28: True).
        **kwargs: ``probe``, ``in_index``, ``dpt_cfg``, ... of :class:`DenseProbeHead`.

    Shapes:
        ``forward``: (B, 1, h, w) depth in metres.
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        num_bins: int = 256,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        loss_decode: dict | None = None,
        align_corners: bool = True,
        **kwargs,
    ) -> None:
        if loss_decode is None:
            loss_decode = dict(type='ProbeDepthLoss', max_depth=max_depth)
        super().__init__(
            in_channels,
            num_outputs=num_bins,
            loss_decode=loss_decode,
            align_corners=align_corners,
            **kwargs,
        )
        self.register_buffer(
            'bins', torch.linspace(min_depth, max_depth, num_bins), persistent=False
        )
        self.min_depth, self.max_depth = min_depth, max_depth
        # What the segmentor sees: one output channel (MMSeg's slide inference sizes by it).
        self.num_classes = self.out_channels = 1

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Maps -> (B, 1, h, w) expected depth."""
        scores = torch.relu(self.raw_outputs(inputs)) + 0.1
        prob = scores / scores.sum(dim=1, keepdim=True)
        return torch.einsum('bkhw,k->bhw', prob, self.bins.to(prob.dtype)).unsqueeze(1)

    def predict_by_feat(self, depth: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """(B, 1, h, w) -> (B, 1, H, W) at the (padded) input size."""
        return self.resize(depth, self.output_size(batch_img_metas), 'bilinear')

    def loss_by_feat(self, depth: Tensor, batch_data_samples: list) -> dict[str, Tensor]:
        """Loss against ``gt_depth_map`` (resized bilinearly to its size)."""
        target = self.stack_field(batch_data_samples, 'gt_depth_map').to(depth.dtype)
        depth = self.resize(depth, tuple(target.shape[-2:]), 'bilinear')
        return {self.loss_decode.loss_name: self.loss_decode(depth, target)}

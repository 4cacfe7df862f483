"""Probe3D's surface-normal probe: 3 normal channels and an uncertainty (kappa) per pixel."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from .dense_probe_head import DenseProbeHead

__all__ = ['NormalProbeHead', 'activate_normals']


def activate_normals(raw: Tensor) -> Tensor:
    """(B, 3 or 4, H, W) raw outputs -> unit normals (+ ``kappa = elu(x) + 1.01`` > 0.01)."""
    normals = F.normalize(raw[:, :3], dim=1, eps=1e-6)
    if raw.shape[1] == 3:
        return normals
    return torch.cat([normals, F.elu(raw[:, 3:4]) + 1.01], dim=1)


@MODELS.register_module()
class NormalProbeHead(DenseProbeHead):
    """Normals (+ concentration kappa) per pixel (Probe3D ``SurfaceNormalHead``).

    The probe (linear or DPT) outputs 4 raw channels (3 without ``uncertainty``); they are
    resized bicubically to the target (loss) or input (inference) size first, as Probe3D
    does, and then activated (:func:`activate_normals`). The loss is
    :class:`ProbeNormalLoss` over the pixels whose ground-truth depth is valid.

    Args:
        in_channels: Feature channels (linear) or the four maps' channels (DPT).
        uncertainty: Predict kappa (Probe3D's default, uncertainty-aware loss).
        max_depth: Pixels with ground-truth depth in (0, max_depth] are scored.
        loss_decode: Loss config; default :class:`ProbeNormalLoss`.
        align_corners: Of the bicubic resize (Probe3D since 2025-11-28: True).
        **kwargs: ``probe``, ``in_index``, ``dpt_cfg``, ... of :class:`DenseProbeHead`.

    Shapes:
        ``forward``: raw (B, 4, h, w); predictions: (B, 4, H, W) unit normals and kappa.
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        uncertainty: bool = True,
        max_depth: float = 10.0,
        loss_decode: dict | None = None,
        align_corners: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(
            in_channels,
            num_outputs=4 if uncertainty else 3,
            loss_decode=loss_decode or dict(type='ProbeNormalLoss'),
            align_corners=align_corners,
            **kwargs,
        )
        self.uncertainty = uncertainty
        self.max_depth = max_depth

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Maps -> (B, 4, h, w) raw outputs (resize before :func:`activate_normals`)."""
        return self.raw_outputs(inputs)

    def predict_by_feat(self, raw: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """Raw outputs -> (B, 4, H, W) unit normals and kappa at the (padded) input size."""
        return activate_normals(self.resize(raw, self.output_size(batch_img_metas), 'bicubic'))

    def loss_by_feat(self, raw: Tensor, batch_data_samples: list) -> dict[str, Tensor]:
        """Loss against ``gt_normal_map`` where ``gt_depth_map`` is valid."""
        target = self.stack_field(batch_data_samples, 'gt_normal_map').to(raw.dtype)
        depth = self.stack_field(batch_data_samples, 'gt_depth_map')[:, 0]
        valid = (depth > 0) & (depth <= self.max_depth)
        pred = activate_normals(self.resize(raw, tuple(target.shape[-2:]), 'bicubic'))
        return {self.loss_decode.loss_name: self.loss_decode(pred, target, valid)}

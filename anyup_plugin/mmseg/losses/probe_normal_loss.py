"""Probe3D's uncertainty-aware angular loss as an MMSeg loss module."""

from __future__ import annotations

from mmseg.registry import MODELS
from torch import Tensor, nn

from anyup_plugin.evaluation.losses import normal_angular_loss

__all__ = ['ProbeNormalLoss']


@MODELS.register_module()
class ProbeNormalLoss(nn.Module):
    """Angular loss, uncertainty-aware for 4-channel predictions (:func:`normal_angular_loss`).

    Args:
        eps: Cosine clamp margin (Probe3D: 1e-4).
        loss_weight: Overall factor.
        loss_name: Key in the log; must start with ``loss_`` to be optimised.
    """

    def __init__(
        self, eps: float = 1e-4, loss_weight: float = 1.0, loss_name: str = 'loss_normal'
    ) -> None:
        super().__init__()
        self.eps, self.loss_weight = eps, loss_weight
        self._loss_name = loss_name

    def forward(self, pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        """(B, 3 or 4, H, W) normals (+ kappa), (B, 3, H, W) target, (B, H, W) mask -> loss."""
        return self.loss_weight * normal_angular_loss(pred, target, valid, eps=self.eps)

    @property
    def loss_name(self) -> str:
        """Name of the loss in MMSeg's loss dict."""
        return self._loss_name

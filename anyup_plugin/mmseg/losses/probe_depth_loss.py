"""Probe3D's depth loss as an MMSeg loss module."""

from __future__ import annotations

from mmseg.registry import MODELS
from torch import Tensor, nn

from anyup_plugin.evaluation.losses import depth_loss

__all__ = ['ProbeDepthLoss']


@MODELS.register_module()
class ProbeDepthLoss(nn.Module):
    """``si_weight * SI-log + grad_weight * log-depth gradient`` (:func:`depth_loss`).

    Args:
        max_depth: Largest valid ground-truth depth (metres).
        si_weight: Weight of the scale-invariant log loss (Probe3D: 10).
        grad_weight: Weight of the gradient loss (Probe3D: 0.5).
        sigma: Scale-invariance weight (0.85).
        eps: Added inside the logarithms (1e-3).
        loss_weight: Overall factor.
        loss_name: Key in the log; must start with ``loss_`` to be optimised.
    """

    def __init__(
        self,
        max_depth: float = 10.0,
        si_weight: float = 10.0,
        grad_weight: float = 0.5,
        sigma: float = 0.85,
        eps: float = 1e-3,
        loss_weight: float = 1.0,
        loss_name: str = 'loss_depth',
    ) -> None:
        super().__init__()
        self.max_depth, self.si_weight, self.grad_weight = max_depth, si_weight, grad_weight
        self.sigma, self.eps, self.loss_weight = sigma, eps, loss_weight
        self._loss_name = loss_name

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """(B, 1, H, W) depth and ground truth (0 = invalid) -> scalar loss."""
        return self.loss_weight * depth_loss(
            pred, target, self.max_depth, self.si_weight, self.grad_weight, self.sigma, self.eps
        )

    @property
    def loss_name(self) -> str:
        """Name of the loss in MMSeg's loss dict."""
        return self._loss_name

"""The reconstruction loss of AnyUp's training recipe.

``reconstruction = cosine + min-max MSE``, both averaged over pixels:

- cosine: ``1 - cos(pred, target)`` over the channels, at every pixel;
- min-max MSE: at every pixel, both prediction and target are rescaled with the *target's*
  minimum and maximum over the channels, ``(x - min) / (max - min + eps)``, and the squared
  difference is averaged over channels and pixels.

Computed in float32 whatever the inputs' dtype (bf16 autocast included).
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

__all__ = ['ReconstructionLoss', 'cosine_loss_map', 'minmax_mse_map', 'reconstruction_loss']


class ReconstructionLoss(NamedTuple):
    """Terms of :func:`reconstruction_loss` (scalars, or per-sample (N,) with ``per_sample``)."""

    total: Tensor
    cosine: Tensor
    mse: Tensor


def _check(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(
            f'pred and target must both be (N, C, H, W) of the same shape, got '
            f'{tuple(pred.shape)} and {tuple(target.shape)}'
        )


def cosine_loss_map(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-pixel ``1 - cos(pred, target)`` over channels.

    Args:
        pred: (N, C, H, W).
        target: (N, C, H, W).
        eps: Added to the norms (``F.cosine_similarity``).

    Returns:
        (N, H, W) float32.
    """
    _check(pred, target)
    return 1.0 - F.cosine_similarity(pred.float(), target.float(), dim=1, eps=eps)


def minmax_mse_map(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-pixel mean squared error after min-max normalising with the target's range.

    Args:
        pred: (N, C, H, W).
        target: (N, C, H, W).
        eps: Added to the target's per-pixel range.

    Returns:
        (N, H, W) float32: the squared difference averaged over channels.
    """
    _check(pred, target)
    pred, target = pred.float(), target.float()
    lo = target.amin(dim=1, keepdim=True)
    scale = 1.0 / (target.amax(dim=1, keepdim=True) - lo + eps)
    return (((pred - lo) * scale - (target - lo) * scale) ** 2).mean(dim=1)


def reconstruction_loss(
    pred: Tensor, target: Tensor, per_sample: bool = False
) -> ReconstructionLoss:
    """Cosine + min-max MSE loss between predicted and target feature maps.

    Args:
        pred: (N, C, H, W) predictions.
        target: (N, C, H, W) targets (not detached here; detach if needed).
        per_sample: Average over each sample's pixels only, giving (N,) terms.

    Returns:
        :class:`ReconstructionLoss` with ``total = cosine + mse``.
    """
    dims = (1, 2) if per_sample else (0, 1, 2)
    cosine = cosine_loss_map(pred, target).mean(dim=dims)
    mse = minmax_mse_map(pred, target).mean(dim=dims)
    return ReconstructionLoss(cosine + mse, cosine, mse)

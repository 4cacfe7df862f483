"""Training losses of the Probe3D depth and surface-normal probes, in plain torch.

Depth: ``10 * scale-invariant log loss + 0.5 * multi-scale log-depth gradient loss`` over the
valid pixels (Probe3D ``evals/utils/losses.py``, ``DepthLoss``). Normals: the angular loss with
Bae et al.'s uncertainty term (Probe3D ``angular_loss(uncertainty_aware=True)``).

The gradient loss is the version after Probe3D's fix of 2025-11-14 (commit ac00369): the
multi-scale subsampling and the finite differences act on the image axes. Before the fix they
indexed the batch axis (differences between *images* of a batch, depending on its order),
which AnyUp's paper (October 2025) may have trained with; that variant is not reproduced.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'depth_loss',
    'log_depth_gradient_loss',
    'normal_angular_loss',
    'scale_invariant_log_loss',
]

#: Subsampling steps of the gradient loss's scales: Probe3D uses ``[1] + [2 * i for i in 1..3]``.
GRADIENT_STEPS: tuple[int, ...] = (1, 2, 4, 6)


def _maps(depth: Tensor) -> Tensor:
    """(B, 1, H, W) or (B, H, W) -> (B, H, W)."""
    if depth.dim() == 4 and depth.shape[1] == 1:
        return depth[:, 0]
    if depth.dim() != 3:
        raise ValueError(f'depth must be (B, H, W) or (B, 1, H, W), got {tuple(depth.shape)}')
    return depth


def _zero(pred: Tensor) -> Tensor:
    """A zero loss that keeps ``pred`` in the graph (a batch without valid pixels)."""
    return pred.sum() * 0.0


def scale_invariant_log_loss(
    pred: Tensor, target: Tensor, valid: Tensor, sigma: float = 0.85, eps: float = 1e-3
) -> Tensor:
    """Eigen et al.'s scale-invariant log loss over the valid pixels of the whole batch.

    With ``g = log(pred + eps) - log(target + eps)`` over every valid pixel of the batch,
    ``sqrt(mean(g^2) - sigma * mean(g)^2)`` (AdaBins/DINOv2 ``SigLoss``, as Probe3D).

    Args:
        pred: (B, 1, H, W) or (B, H, W) predicted depth (> -eps).
        target: Ground truth of the same shape.
        valid: Bool mask of the same shape.
        sigma: Weight of the squared mean (1 = fully scale-invariant).
        eps: Added inside the logarithms.

    Returns:
        Scalar loss (0 with a graph when no pixel is valid).
    """
    pred, target, valid = _maps(pred), _maps(target), _maps(valid).bool()
    if not valid.any():
        return _zero(pred)
    g = torch.log(pred[valid] + eps) - torch.log(target[valid] + eps)
    mean = g.mean()
    # mean(g^2) - sigma mean(g)^2 written as var(g) + (1 - sigma) mean(g)^2: the same value
    # without float32 cancellation (which leaves ~1e-4 for an exact scale error). The clamp
    # keeps the square root's gradient finite at a perfect prediction.
    value = (g - mean).pow(2).mean() + (1.0 - sigma) * mean.pow(2)
    return value.clamp(min=1e-12).sqrt()


def log_depth_gradient_loss(
    pred: Tensor,
    target: Tensor,
    valid: Tensor,
    steps: tuple[int, ...] = GRADIENT_STEPS,
    eps: float = 1e-3,
) -> Tensor:
    """Multi-scale gradient-matching loss on log depth (MegaDepth), as Probe3D computes it.

    At each scale the maps are subsampled with step ``s`` along both image axes. With ``d =
    (log(pred + eps) - log(target + eps))`` on valid pixels (0 elsewhere), the scale adds
    ``(sum |d[i, j] - d[i, j + 2]| + sum |d[i, j] - d[i + 2, j]|) / N`` over pairs of valid
    pixels two apart, ``N`` being the number of valid pixels of the batch at that scale.

    Args:
        pred: (B, 1, H, W) or (B, H, W) predicted depth.
        target: Ground truth of the same shape.
        valid: Bool mask of the same shape.
        steps: Subsampling step of each scale.
        eps: Added inside the logarithms.

    Returns:
        Scalar loss, the sum over scales (a scale without valid pixels adds 0).
    """
    pred, target, valid = _maps(pred), _maps(target), _maps(valid).bool()
    total = _zero(pred)
    for step in steps:
        p, t, m = (x[:, ::step, ::step] for x in (pred, target, valid))
        n = m.sum()
        if n == 0:
            continue
        mf = m.to(p.dtype)
        # Invalid pixels (0 depth, garbage predictions) are replaced before the logarithm, so
        # that neither the value nor the gradient can become inf * 0 = NaN there.
        p, t = torch.where(m, p, torch.ones_like(p)), torch.where(m, t, torch.ones_like(t))
        d = (torch.log(p + eps) - torch.log(t + eps)) * mf
        v = (d[:, :-2, :] - d[:, 2:, :]).abs() * mf[:, :-2, :] * mf[:, 2:, :]
        h = (d[:, :, :-2] - d[:, :, 2:]).abs() * mf[:, :, :-2] * mf[:, :, 2:]
        total = total + (v.sum() + h.sum()) / n
    return total


def depth_loss(
    pred: Tensor,
    target: Tensor,
    max_depth: float = 10.0,
    si_weight: float = 10.0,
    grad_weight: float = 0.5,
    sigma: float = 0.85,
    eps: float = 1e-3,
) -> Tensor:
    """Probe3D's depth loss: ``si_weight * SI-log + grad_weight * gradient`` on valid pixels.

    Args:
        pred: (B, 1, H, W) or (B, H, W) predicted depth in metres, at the target's size.
        target: Ground truth of the same shape; valid where ``0 < target <= max_depth``.
        max_depth: Largest valid depth (deeper ground truth is ignored, as Probe3D's 0).
        si_weight: Weight of :func:`scale_invariant_log_loss`.
        grad_weight: Weight of :func:`log_depth_gradient_loss`.
        sigma: Scale-invariance weight of the SI-log loss.
        eps: Added inside the logarithms.

    Returns:
        Scalar loss.
    """
    if pred.shape != target.shape:
        raise ValueError(f'pred {tuple(pred.shape)} and target {tuple(target.shape)} differ')
    valid = (target > 0) & (target <= max_depth)
    loss = si_weight * scale_invariant_log_loss(pred, target, valid, sigma=sigma, eps=eps)
    if grad_weight:
        loss = loss + grad_weight * log_depth_gradient_loss(pred, target, valid, eps=eps)
    return loss


def normal_angular_loss(pred: Tensor, target: Tensor, valid: Tensor, eps: float = 1e-4) -> Tensor:
    """Angular loss for surface normals, uncertainty-aware when ``pred`` has 4 channels.

    The angle is ``acos`` of the cosine similarity, clamped to ``[-1 + eps, 1 - eps]`` (a
    finite gradient). With a 4th channel, the concentration ``kappa > 0`` of Bae et al.'s
    angular von Mises model, the per-pixel loss is
    ``log(1 + exp(-kappa * pi)) - log(kappa^2 + 1) + kappa * angle``; otherwise the angle.

    Args:
        pred: (B, 3, H, W) normals or (B, 4, H, W) normals and kappa (already positive,
            e.g. ``elu(x) + 1.01`` as Probe3D).
        target: (B, 3, H, W) ground-truth normals.
        valid: (B, H, W) or (B, 1, H, W) bool mask.
        eps: Cosine clamp margin.

    Returns:
        Scalar mean over the valid pixels of the batch (0 with a graph when none is).
    """
    if pred.dim() != 4 or pred.shape[1] not in (3, 4) or target.shape[1] != 3:
        raise ValueError(
            f'pred must be (B, 3 or 4, H, W) and target (B, 3, H, W), got '
            f'{tuple(pred.shape)} and {tuple(target.shape)}'
        )
    valid = valid[:, 0] if valid.dim() == 4 else valid
    valid = valid.bool()
    if not valid.any():
        return _zero(pred)
    # Invalid pixels may hold NaN ground truth: zero it, or its NaN reaches the gradient.
    target = torch.where(valid[:, None], target, torch.zeros_like(target))
    cos = F.cosine_similarity(pred[:, :3], target, dim=1)
    angle = cos.clamp(min=-1 + eps, max=1 - eps).acos()
    if pred.shape[1] == 4:
        kappa = pred[:, 3]
        loss = torch.log1p(torch.exp(-kappa * math.pi)) - torch.log1p(kappa.pow(2))
        loss = loss + kappa * angle
    else:
        loss = angle
    return loss[valid].mean()

"""Per-image depth metrics of the Probe3D protocol: RMSE and delta accuracies, raw and relative."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['DEPTH_METRIC_KEYS', 'depth_metrics', 'fit_scale_shift']

#: The keys :func:`depth_metrics` returns, in the order the tables list them.
DEPTH_METRIC_KEYS: tuple[str, ...] = (
    'rmse',
    'delta1',
    'delta2',
    'delta3',
    'rel_rmse',
    'rel_delta1',
    'rel_delta2',
    'rel_delta3',
)


def _as_maps(depth: Tensor, name: str) -> Tensor:
    """(B, H, W) or (B, 1, H, W) -> (B, H, W)."""
    if not isinstance(depth, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(depth).__name__}')
    if depth.dim() == 4 and depth.shape[1] == 1:
        depth = depth[:, 0]
    if depth.dim() != 3:
        raise ValueError(f'{name} must be (B, H, W) or (B, 1, H, W), got {tuple(depth.shape)}')
    return depth


def _bad_images(values: Tensor) -> list[int]:
    """Indices of the images in (B, H, W) ``values`` that hold NaN or infinity."""
    return torch.nonzero(~torch.isfinite(values).flatten(1).all(1)).flatten().tolist()


def fit_scale_shift(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Per-image least-squares scale and shift of ``pred`` onto ``target`` over ``valid``.

    Solves ``min_{s, t} sum_valid (s * pred + t - target)^2`` in closed form (float64) for each
    image. When ``pred`` is constant on the valid pixels the minimiser is not unique but its
    fitted values are: the mean target, which is what is returned there.

    Args:
        pred: (B, H, W) predicted depth.
        target: (B, H, W) ground truth.
        valid: (B, H, W) bool mask of the pixels to fit on.

    Returns:
        (B, H, W) ``s * pred + t`` in ``pred``'s dtype (unchanged for images without a valid
        pixel).
    """
    p, g, m = pred.double(), target.double(), valid.double()
    n = m.sum((1, 2))
    sp, sg = (m * p).sum((1, 2)), (m * g).sum((1, 2))
    spp, spg = (m * p * p).sum((1, 2)), (m * p * g).sum((1, 2))
    det = n * spp - sp * sp
    # det ~ 0 relative to its terms: constant prediction, the fit is the mean target.
    degenerate = det.abs() <= 1e-12 * (n * spp).clamp(min=1e-300)
    safe_det = torch.where(degenerate, torch.ones_like(det), det)
    scale = torch.where(degenerate, torch.zeros_like(det), (n * spg - sp * sg) / safe_det)
    mean_g = sg / n.clamp(min=1)
    shift = torch.where(degenerate, mean_g, (spp * sg - sp * spg) / safe_det)
    scale = torch.where(n > 0, scale, torch.ones_like(scale))
    shift = torch.where(n > 0, shift, torch.zeros_like(shift))
    return (scale[:, None, None] * p + shift[:, None, None]).to(pred.dtype)


def _scores(pred: Tensor, target: Tensor, valid: Tensor) -> dict[str, Tensor]:
    m = valid.double()
    n = m.sum((1, 2))
    p, g = pred.double(), target.double()
    rmse = ((m * (p - g) ** 2).sum((1, 2)) / n).sqrt()
    # max(g / p, p / g); a prediction <= 0 is never within any threshold.
    ratio = torch.maximum(g / p.clamp(min=1e-12), p / g.clamp(min=1e-12))
    ratio = torch.where(p > 0, ratio, torch.full_like(ratio, torch.inf))
    out = {'rmse': rmse}
    for k in (1, 2, 3):
        out[f'delta{k}'] = (m * (ratio < 1.25**k).double()).sum((1, 2)) / n
    return out


def depth_metrics(pred: Tensor, target: Tensor, max_depth: float = 10.0) -> dict[str, Tensor]:
    """Probe3D's depth metrics for each image, over its valid pixels.

    Valid pixels are ``0 < target <= max_depth`` (NYUv2: 0 marks a missing Kinect reading).
    ``delta_k`` is the share of valid pixels with ``max(target / pred, pred / target) <
    1.25 ** k``; ``rel_*`` are the same metrics after a per-image least-squares scale and shift
    of ``pred`` fitted on the valid pixels (:func:`fit_scale_shift`). Unlike Probe3D, which
    clamps the valid count to 1 (so an empty image scores 0 and lowers the mean), an image
    without any valid pixel gets NaN in every entry: average with ``nanmean`` and count them.

    Args:
        pred: (B, H, W) or (B, 1, H, W) predicted depth in metres.
        target: Ground truth of the same shape, in metres.
        max_depth: Largest valid ground-truth depth.

    Returns:
        Dict of (B,) float64 tensors with the keys of :data:`DEPTH_METRIC_KEYS`.

    Raises:
        ValueError: Shapes differ, ``target`` holds NaN, infinity or negative values, or
            ``pred`` holds NaN or infinity; the message lists the offending image indices.
    """
    pred, target = _as_maps(pred, 'pred'), _as_maps(target, 'target')
    if pred.shape != target.shape:
        raise ValueError(
            f'pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same '
            'shape (resize the prediction to the target first)'
        )
    if bad := _bad_images(target):
        raise ValueError(f'target depth holds NaN or infinity in image(s) {bad}')
    if bad := torch.nonzero((target < 0).flatten(1).any(1)).flatten().tolist():
        raise ValueError(f'target depth holds negative values in image(s) {bad}')
    if bad := _bad_images(pred):
        raise ValueError(f'predicted depth holds NaN or infinity in image(s) {bad}')
    pred, target = pred.detach(), target.detach()
    valid = (target > 0) & (target <= max_depth)
    out = _scores(pred, target, valid)
    rel = _scores(fit_scale_shift(pred, target, valid), target, valid)
    out.update({f'rel_{key}': value for key, value in rel.items()})
    empty = valid.flatten(1).sum(1) == 0
    return {key: torch.where(empty, torch.nan, out[key]) for key in DEPTH_METRIC_KEYS}

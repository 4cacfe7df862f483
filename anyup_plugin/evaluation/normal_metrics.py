"""Per-image surface-normal metrics of the Probe3D protocol: angular RMSE and recalls."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ['NORMAL_METRIC_KEYS', 'THRESHOLDS', 'angular_error', 'normal_metrics']

#: Angle thresholds in degrees and the key of the share of pixels under each.
THRESHOLDS: dict[str, float] = {'within_11_25': 11.25, 'within_22_5': 22.5, 'within_30': 30.0}
#: The keys :func:`normal_metrics` returns.
NORMAL_METRIC_KEYS: tuple[str, ...] = ('rmse', *THRESHOLDS)


def angular_error(pred: Tensor, target: Tensor) -> Tensor:
    """Angle in degrees between (B, 3, H, W) vectors, per pixel, as (B, H, W) float64.

    ``atan2(|p x t|, p . t)`` rather than ``acos`` of the cosine: exact near 0 and 180 degrees,
    where ``acos`` of a float32 cosine is off by up to ~0.03 degrees. Lengths do not matter; a
    zero vector gives 90 degrees against anything.
    """
    p, t = pred.double(), target.double()
    cross = torch.linalg.cross(p, t, dim=1).norm(dim=1)
    dot = (p * t).sum(1)
    return torch.rad2deg(torch.atan2(cross, dot))


def normal_metrics(pred: Tensor, target: Tensor, valid: Tensor) -> dict[str, Tensor]:
    """Probe3D's surface-normal metrics for each image, over its valid pixels.

    The error is the angle between predicted and ground-truth normals (their lengths do not
    matter). ``rmse`` is the root mean square angle of an image in degrees, ``within_*`` the
    share of its valid pixels under 11.25, 22.5 and 30 degrees. An image with no valid pixel
    gets NaN in every entry (Probe3D scores it 0).

    Args:
        pred: (B, 3, H, W) predicted normals, or (B, 4, H, W) with the uncertainty (kappa) as
            4th channel, which is ignored.
        target: (B, 3, H, W) ground-truth normals.
        valid: (B, H, W) or (B, 1, H, W) bool mask (NYUv2: ground-truth depth > 0).

    Returns:
        Dict of (B,) float64 tensors with the keys of :data:`NORMAL_METRIC_KEYS`.

    Raises:
        ValueError: Shapes do not match, ``pred`` holds NaN or infinity, or a valid pixel
            has a ground-truth normal of zero length (or NaN); the message lists the images.
    """
    if pred.dim() != 4 or pred.shape[1] not in (3, 4):
        raise ValueError(f'pred must be (B, 3 or 4, H, W), got {tuple(pred.shape)}')
    if target.dim() != 4 or target.shape[1] != 3:
        raise ValueError(f'target must be (B, 3, H, W), got {tuple(target.shape)}')
    if valid.dim() == 4 and valid.shape[1] == 1:
        valid = valid[:, 0]
    pred = pred[:, :3].detach()
    shape = (target.shape[0], *target.shape[2:])
    if pred.shape != target.shape or tuple(valid.shape) != shape:
        raise ValueError(
            f'shapes do not match: pred {tuple(pred.shape)}, target {tuple(target.shape)}, '
            f'valid {tuple(valid.shape)} (expected {shape})'
        )
    valid = valid.bool()
    if bad := torch.nonzero(~torch.isfinite(pred).flatten(1).all(1)).flatten().tolist():
        raise ValueError(f'predicted normals hold NaN or infinity in image(s) {bad}')
    length = target.detach().double().norm(dim=1)
    broken = valid & ~(length > 1e-6)  # also catches NaN
    if bad := torch.nonzero(broken.flatten(1).any(1)).flatten().tolist():
        counts = [int(broken[i].sum()) for i in bad]
        raise ValueError(
            f'ground-truth normals of zero length (or NaN) at valid pixels in image(s) {bad} '
            f'({counts} pixels): mark them invalid or fix the data'
        )
    # Invalid pixels may hold anything (NaN included): keep them out of the sums.
    err = torch.where(valid, angular_error(pred, target.detach()), 0.0)
    m = valid.double()
    n = m.sum((1, 2))
    out = {'rmse': ((m * err**2).sum((1, 2)) / n).sqrt()}
    for key, thr in THRESHOLDS.items():
        out[key] = (m * (err < thr).double()).sum((1, 2)) / n
    empty = n == 0
    return {key: torch.where(empty, math.nan, out[key]) for key in NORMAL_METRIC_KEYS}

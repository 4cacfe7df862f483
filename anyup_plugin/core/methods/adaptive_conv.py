"""FeatUp's ``AdaptiveConv`` in PyTorch: a convolution with its own kernel at every pixel.

FeatUp ships this operation as a C++/CUDA extension. Its definition: for input ``x``
(B, C, H + I - 1, W + J - 1) and per-pixel filters ``k`` (B, H, W, I, J),

    ``out[b, c, h, w] = sum_{i, j} k[b, h, w, i, j] * x[b, c, h + i, w + j]``

(a correlation, no flipping; the same filter for every channel). Here it runs as one
vectorised multiply-add per kernel tap, accumulating the taps in the extension's order (``i``
outer, ``j`` inner). Memory is the output plus views: unlike an ``unfold``, which would
materialise ``I * J`` copies of the input (49 for FeatUp's 7 x 7 kernels, tens of GiB for a
1024 x 1024 map of 384 channels), nothing of the input's size is copied. Autograd
differentiates it with respect to both arguments.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['adaptive_conv']


def adaptive_conv(padded: Tensor, filters: Tensor) -> Tensor:
    """Correlates each output pixel's neighbourhood with that pixel's own filter.

    Args:
        padded: (B, C, H + I - 1, W + J - 1) input, already padded (FeatUp pads by
            reflection with ``I // 2`` on every side).
        filters: (B, H, W, I, J) one filter per output pixel, shared by all channels.

    Returns:
        (B, C, H, W) with ``out[b, c, h, w] = sum_{i, j} filters[b, h, w, i, j] *
        padded[b, c, h + i, w + j]``, in the dtype and on the device of ``padded``.

    Raises:
        ValueError: Shapes, dtypes or devices that do not fit together.
    """
    if padded.dim() != 4 or filters.dim() != 5:
        raise ValueError(
            'adaptive_conv takes (B, C, H + I - 1, W + J - 1) inputs and (B, H, W, I, J) '
            f'filters, got shapes {tuple(padded.shape)} and {tuple(filters.shape)}'
        )
    batch, _, height_in, width_in = padded.shape
    f_batch, height, width, taps_h, taps_w = filters.shape
    if f_batch != batch or height + taps_h - 1 != height_in or width + taps_w - 1 != width_in:
        raise ValueError(
            f'filters of shape {tuple(filters.shape)} (B, H, W, I, J) need an input of shape '
            f'({f_batch}, C, {height + taps_h - 1}, {width + taps_w - 1}), got '
            f'{tuple(padded.shape)}'
        )
    if padded.dtype != filters.dtype or padded.device != filters.device:
        raise ValueError(
            f'adaptive_conv needs inputs and filters of one dtype and device, got '
            f'{padded.dtype} on {padded.device} and {filters.dtype} on {filters.device}'
        )
    # (B, I, J, H, W): each tap's weights as one (B, 1, H, W) view broadcast over channels.
    per_tap = filters.permute(0, 3, 4, 1, 2).unsqueeze(3)
    out = torch.zeros(
        (batch, padded.shape[1], height, width), dtype=padded.dtype, device=padded.device
    )
    for i in range(taps_h):
        for j in range(taps_w):
            # In place: no temporary of the output's size per tap.
            out.addcmul_(padded[:, :, i : i + height, j : j + width], per_tap[:, i, j])
    return out

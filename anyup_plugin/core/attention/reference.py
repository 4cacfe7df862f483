"""The dense masked attention of the published code: the windowed attention's definition.

Every output pixel's logits against all ``h w`` feature tokens, those outside its window
(:func:`~anyup_plugin.core.attention.geometry.window_bounds`) masked to ``-inf``, a softmax per
head, the heads' maps averaged, times the values. It shares nothing with the kernels but the
window bounds, which is what makes it their parity reference; memory grows with
``H' W' h w``: for tests and benchmarks only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..precision import compute_dtype
from .geometry import window_bounds

__all__ = ['dense_window_attention_reference']


def dense_window_attention_reference(
    queries: Tensor, keys: Tensor, values: Tensor, window_ratio: float, num_heads: int
) -> Tensor:
    """Dense masked attention over all ``H'W' x hw`` pairs.

    Args:
        queries: (B, H', W', D) projected, scaled queries.
        keys: (B, h, w, D) projected keys.
        values: (B, h, w, C) values.
        window_ratio: As in :func:`~anyup_plugin.core.attention.windowed_attention`.
        num_heads: As in :func:`~anyup_plugin.core.attention.windowed_attention`.

    Returns:
        (B, H', W', C).
    """
    batch, out_h, out_w, dim = queries.shape
    _, feat_h, feat_w, _ = keys.shape
    head_dim = dim // num_heads
    q = queries.reshape(batch, out_h * out_w, num_heads, head_dim).transpose(1, 2)
    k = keys.reshape(batch, feat_h * feat_w, num_heads, head_dim).transpose(1, 2)
    # The softmax in float32 at least (float64 inputs stay float64).
    logits = q @ k.transpose(-1, -2)
    logits = logits.to(compute_dtype(logits.dtype))
    row_start, row_end = window_bounds(out_h, feat_h, window_ratio, queries.device)
    col_start, col_end = window_bounds(out_w, feat_w, window_ratio, queries.device)
    fr = torch.arange(feat_h, device=queries.device)
    fc = torch.arange(feat_w, device=queries.device)
    row_ok = (fr[None, :] >= row_start[:, None]) & (fr[None, :] < row_end[:, None])
    col_ok = (fc[None, :] >= col_start[:, None]) & (fc[None, :] < col_end[:, None])
    allowed = (row_ok[:, None, :, None] & col_ok[None, :, None, :]).reshape(
        out_h * out_w, feat_h * feat_w
    )
    attn = logits.masked_fill(~allowed, float('-inf')).softmax(dim=-1).mean(dim=1)
    out = attn.to(values.dtype) @ values.reshape(batch, feat_h * feat_w, -1)
    return out.view(batch, out_h, out_w, -1)

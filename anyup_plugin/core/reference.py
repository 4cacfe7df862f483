"""The straightforward formulation of AnyUp, as in the published code: the parity reference.

:func:`reference_upsample` runs AnyUp's modules one by one and the attention as dense masked
attention over all ``H'W' x hw`` (query, feature token) pairs
(:func:`~anyup_plugin.core.attention.dense_window_attention_reference`). It shares no fast path with
:meth:`AnyUp.forward <anyup_plugin.core.anyup.AnyUp.forward>` (no fused encoders, no
windowed tiling, no folded norm weights), which is what makes it a reference. Memory grows
with ``H' W' h w``: use it for tests and benchmarks only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import dense_window_attention_reference
from .checks import check_output_size

if TYPE_CHECKING:
    from .anyup import AnyUp

__all__ = ['reference_upsample']


def reference_upsample(
    model: AnyUp,
    image: Tensor,
    features: Tensor,
    output_size: int | tuple[int, int] | None = None,
) -> Tensor:
    """AnyUp's forward, module by module with dense attention (the published formulation).

    Args:
        model: The AnyUp model whose parameters are used.
        image: (B, 3, H, W) guidance, normalised with ImageNet mean/std.
        features: (B, C, h, w) features.
        output_size: (H', W') or an int for a square; default (H, W).

    Returns:
        (B, C, H', W'), equal to ``model(image, features, output_size)`` up to float rounding.
    """
    out_size = check_output_size(output_size, image.shape[-2:])
    d, heads = model.qk_dim, model.num_heads
    enc = model.rope(model.image_encoder(image))
    queries = F.adaptive_avg_pool2d(model.query_encoder(enc), out_size)
    keys = F.adaptive_avg_pool2d(model.key_encoder(enc), features.shape[-2:])
    unified = model.key_features_encoder(F.normalize(features, dim=1))
    keys = model.aggregation(torch.cat([keys, unified], dim=1))
    queries = model.cross_decode.conv2d(queries)

    attn = model.cross_decode.cross_attn
    weight, bias = attn.attention.in_proj_weight, attn.attention.in_proj_bias
    queries = attn.norm_q(queries.permute(0, 2, 3, 1))
    keys = attn.norm_k(keys.permute(0, 2, 3, 1))
    queries = F.linear(queries, weight[:d], bias[:d]) * (d // heads) ** -0.5
    keys = F.linear(keys, weight[d : 2 * d], bias[d : 2 * d])
    values = features.permute(0, 2, 3, 1)
    out = dense_window_attention_reference(queries, keys, values, model.window_ratio, heads)
    return out.permute(0, 3, 1, 2)

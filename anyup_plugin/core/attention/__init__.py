"""AnyUp's windowed cross-attention: every output pixel attends only to its window's keys.

The one entry point is :func:`windowed_attention`; it dispatches to one of the kernels, which
all compute the same thing. Where to read what:

- :mod:`~anyup_plugin.core.attention.geometry`: the window (which keys a query sees), the
  mathematics every kernel shares.
- :mod:`~anyup_plugin.core.attention.reference`: the attention as written in the published
  code, dense and masked: the definition and parity reference.
- :mod:`~anyup_plugin.core.attention.tiles`: the PyTorch kernels ``'matmul'`` and ``'sdpa'``
  (tiles of dense products over exactly the window's keys; CPU speed work).
- :mod:`~anyup_plugin.core.attention.triton`: the fused Triton kernel ``'triton'`` (GPU).
- :mod:`~anyup_plugin.core.attention.queries`: query maps held in bands of rows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..checks import is_tracing
from .geometry import AxisGroups, window_bounds, window_groups, window_pair_count
from .queries import QUERY_BAND_ELEMENTS, QueryBands, QueryTransform
from .reference import dense_window_attention_reference
from .tiles import DEFAULT_MAX_TILE_ELEMENTS, tiled_attention
from .triton import check_triton_importable, triton_attention, triton_is_available

__all__ = [
    'ATTENTION_KERNELS',
    'AUTO_USES_TRITON',
    'DEFAULT_MAX_TILE_ELEMENTS',
    'QUERY_BAND_ELEMENTS',
    'AxisGroups',
    'QueryBands',
    'QueryTransform',
    'check_triton_importable',
    'dense_window_attention_reference',
    'resolve_attention_kernel',
    'window_bounds',
    'window_groups',
    'window_pair_count',
    'windowed_attention',
]

#: How a tile's attention is computed:
#:
#: - ``'matmul'``: the heads' logits as batched matrix products, their softmaxes averaged
#:   into one map per tile, then one value product with that map (the fewest multiply-adds).
#: - ``'sdpa'``: :func:`torch.nn.functional.scaled_dot_product_attention` per head with the
#:   full-width features as every head's values, then the mean over heads. Exact as well
#:   (averaging attention maps commutes with the value product) at ``num_heads`` times the
#:   value multiply-adds, for the fused kernels of accelerators.
#: - ``'triton'``: fused Triton kernels, no tiles
#:   (:mod:`~anyup_plugin.core.attention.triton`): per block of queries, every head's
#:   logits against exactly the keys of its window, the softmaxes, their mean and the value
#:   product, each output written once; exact (IEEE float32 products), with a Triton
#:   backward. CUDA tensors only (CPU tensors under Triton's interpreter,
#:   ``TRITON_INTERPRET=1``, for tests); the query transform runs on the whole query map
#:   first; while tracing, the ``'matmul'`` tiles run instead. Not yet run on GPU hardware.
#: - ``'auto'`` (the default): ``'matmul'`` for now; ``'triton'`` on CUDA (when triton
#:   imports) once the Triton kernel has been run on a GPU (see
#:   :func:`resolve_attention_kernel`).
ATTENTION_KERNELS = ('auto', 'matmul', 'sdpa', 'triton')

#: Whether ``'auto'`` picks the Triton kernel on CUDA: not until it has run on a GPU.
AUTO_USES_TRITON = False


def resolve_attention_kernel(kernel: str, device: torch.device) -> str:
    """The attention kernel ``kernel`` stands for on ``device``.

    ``'auto'`` is ``'triton'`` on CUDA when triton imports and :data:`AUTO_USES_TRITON` is
    set, ``'matmul'`` otherwise; every other name stands for itself.

    Args:
        kernel: One of :data:`ATTENTION_KERNELS`.
        device: Where the attention runs.

    Returns:
        ``'matmul'``, ``'sdpa'`` or ``'triton'``.
    """
    if kernel not in ATTENTION_KERNELS:
        raise ValueError(f'kernel must be one of {ATTENTION_KERNELS}, got {kernel!r}')
    if kernel != 'auto':
        return kernel
    if AUTO_USES_TRITON and device.type == 'cuda' and triton_is_available():
        return 'triton'
    return 'matmul'


def windowed_attention(
    queries: Tensor | QueryBands,
    keys: Tensor,
    values: Tensor,
    window_ratio: float,
    num_heads: int,
    query_transform: QueryTransform | None = None,
    max_tile_elements: int = DEFAULT_MAX_TILE_ELEMENTS,
    out: Tensor | None = None,
    logit_bound: float | None = None,
    kernel: str = 'auto',
) -> Tensor:
    """Head-averaged softmax attention of every output pixel over its feature window.

    Args:
        queries: (B, H', W', D_in) queries in channels-last layout. If ``query_transform``
            is given it is applied tile by tile (e.g. normalisation and projection), so the
            transformed queries never exist at full resolution at once. As
            :class:`QueryBands` they are released band by band as the tiles pass them.
        keys: (B, h, w, D) projected keys.
        values: (B, h, w, C) values (the raw features).
        window_ratio: Window half-size relative to the image; ``<= 0`` attends to all keys.
        num_heads: Number of heads; D is split evenly among them. Each head's logits are
            ``q_n . k_n`` (scale the queries beforehand), softmax over the window's keys is
            taken in float32 (float64 for float64 inputs), and the heads' attention maps are
            averaged.
        query_transform: Optional per-query map, called as ``query_transform(q, out)`` on a
            tile's gathered queries (G, N, D_in); it returns (G, N, D), written into ``out``
            when ``out`` is not None (a reused buffer, given without autograd).
        max_tile_elements: Upper bound on the number of logits computed at once.
        out: Optional (B, H', W', C) tensor of the result's dtype to write the result into;
            only without autograd and outside tracing.
        logit_bound: Optional upper bound on ``|q_n . k_n|`` over every query (after
            ``query_transform``), key and head. Without autograd, a bound within
            :data:`~anyup_plugin.core.softmax_bounds.MAX_UNSHIFTED_LOGIT` lets the softmax skip its
            maximum subtraction.
        kernel: How the attention is computed, one of :data:`ATTENTION_KERNELS` (see
            :func:`resolve_attention_kernel` for ``'auto'``). ``'triton'`` applies
            ``query_transform`` to the whole query map at once, ignores ``max_tile_elements``
            and ``logit_bound``, and outside tracing needs a CUDA device (or Triton's
            interpreter); while tracing the ``'matmul'`` tiles run instead.

    Returns:
        (B, H', W', C) attention output, the convex combination of window values (``out`` if
        given).

    Raises:
        ImportError: ``kernel='triton'`` without triton.
        RuntimeError: ``kernel='triton'`` on a device Triton cannot run on.
    """
    kernel = resolve_attention_kernel(kernel, queries.device)
    if kernel == 'triton':
        if not is_tracing():
            return triton_attention(
                queries, keys, values, window_ratio, num_heads, query_transform, out
            )
        # Compilers and exporters cannot take the Triton launches: the tiles compute the same.
        kernel = 'matmul'
    return tiled_attention(
        queries,
        keys,
        values,
        window_ratio,
        num_heads,
        query_transform,
        max_tile_elements,
        out,
        logit_bound,
        kernel,
    )

"""Neighbourhood attention (NATTEN's 2-D ``na2d``) in plain PyTorch, in bounded chunks of queries.

The definition followed is NATTEN's (``natten.functional.na2d_qk``/``na2d_av`` of 0.17, and
``natten.na2d`` of 0.20, which share it), per axis of length ``n`` with odd ``kernel_size``
``k`` and ``dilation`` ``d`` (``k * d <= n``, which NATTEN requires):

* positions split into ``d`` dilation groups by ``index % d``; group ``r`` holds
  ``n_r = ceil((n - r) / d)`` positions, and position ``i`` is number ``p = i // d`` of its group;
* the query at ``i`` sees the ``k`` positions of its own group numbered
  ``s, s + 1, ..., s + k - 1`` with ``s = clamp(p - k // 2, 0, n_r - k)``: the window is
  centred on the query and shifted inward at the borders, so every query has a full window;
* in 2-D the window is the product of the row and the column windows (``k * k`` keys), and the
  attention is ``softmax(scale * q . k)`` over them, applied to the values.

This is NATTEN's ``get_window_start`` in closed form; ``tests/test_core/test_methods/test_naf.py``
checks it against a line-by-line port of that function and the attention against a per-query
brute force.

Keys and values may live on a coarser grid than the queries: ``key_rows``/``key_cols`` map each
query-grid row/column to the key-map row/column that holds its key (NAF's keys are the
nearest-exact upsampling of a low-resolution map, so they are read where they are stored
instead of being upsampled). Queries go in rectangular steps about one dilated window wide;
per step the scores are one batched product of the queries with the key-map rows and columns
their windows touch (about twice a window's columns), then gathered to the window, and the
softmax weights go back through one product with the values: memory per query is about
``heads * kernel_size * 2 * kernel_size`` numbers, and the work a small multiple of NATTEN's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'check_window_fits',
    'nearest_exact_source',
    'neighborhood_attention_2d',
    'neighborhood_window',
]

#: Query positions (summed over the batch) per step of :func:`neighborhood_attention_2d`.
DEFAULT_MAX_QUERY_CHUNK = 8192


def check_window_fits(length: int, kernel_size: int, dilation: int, axis: str = 'axis') -> None:
    """Raises ``ValueError`` unless NATTEN accepts the window on an axis of ``length``.

    NATTEN takes an odd ``kernel_size > 1``, ``dilation >= 1`` and ``kernel_size * dilation <=
    length``; the last one makes every dilation group hold at least one full window.
    """
    if kernel_size < 2 or kernel_size % 2 == 0:
        raise ValueError(f'kernel_size must be an odd number greater than 1, got {kernel_size}')
    if dilation < 1:
        raise ValueError(f'dilation must be at least 1 on the {axis}, got {dilation}')
    if kernel_size * dilation > length:
        raise ValueError(
            f'the {axis} has {length} positions, fewer than kernel_size x dilation = '
            f'{kernel_size} x {dilation}'
        )


def neighborhood_window(
    length: int, kernel_size: int, dilation: int = 1, device: torch.device | str | None = None
) -> Tensor:
    """The positions each query attends to on one axis, NATTEN's window (see the module doc).

    Args:
        length: Positions on the axis.
        kernel_size: Window size, odd.
        dilation: Spacing of the window's positions.
        device: Of the result.

    Returns:
        (length, kernel_size) int64: row ``i`` lists the positions query ``i`` sees, ascending.
    """
    check_window_fits(length, kernel_size, dilation)
    index = torch.arange(length, device=device)
    group = index % dilation
    group_length = (length - group + dilation - 1) // dilation
    start = (index // dilation - kernel_size // 2).clamp(min=0)
    start = torch.minimum(start, group_length - kernel_size)
    offsets = torch.arange(kernel_size, device=device)
    return group[:, None] + (start[:, None] + offsets) * dilation


def nearest_exact_source(out_length: int, in_length: int) -> Tensor:
    """Which input position ``F.interpolate(mode='nearest-exact')`` copies to each output one.

    Read off PyTorch's own interpolation of the positions (exact integers in float64), so the
    rule, rounding included, is PyTorch's.

    Returns:
        (out_length,) int64 on the CPU.
    """
    positions = torch.arange(in_length, dtype=torch.float64).view(1, 1, in_length)
    picked = F.interpolate(positions, size=out_length, mode='nearest-exact')
    return picked.view(out_length).round().long()


def neighborhood_attention_2d(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    kernel_size: int | tuple[int, int],
    dilation: int | tuple[int, int] = 1,
    *,
    scale: float | None = None,
    key_rows: Tensor | None = None,
    key_cols: Tensor | None = None,
    max_query_chunk: int = DEFAULT_MAX_QUERY_CHUNK,
) -> Tensor:
    """Multi-head 2-D neighbourhood attention on channel-first maps.

    Args:
        query: (B, heads, D, H, W).
        key: (B, heads, D, Hk, Wk): the keys, on the query grid (``Hk, Wk = H, W``) or on a
            grid that ``key_rows``/``key_cols`` map the query grid onto.
        value: (B, heads, Dv, Hk, Wk), on the grid of ``key``.
        kernel_size: Window size per axis (odd), ``k`` or ``(kh, kw)``.
        dilation: Window spacing on the query grid per axis, ``d`` or ``(dh, dw)``.
        scale: Multiplies the scores before the softmax; ``None``: ``D ** -0.5`` (NATTEN's).
        key_rows: (H,) int64: the key-map row holding the key of each query-grid row;
            ``None``: the identity (then ``Hk`` must be ``H``).
        key_cols: (W,) int64, the same for columns.
        max_query_chunk: Query positions, summed over the batch, attended per step; bounds the
            memory (each costs about ``heads * kh * (key columns its step touches)`` scores).

    Returns:
        (B, heads, Dv, H, W) in the dtype of ``query``.
    """
    b, heads, dim, h, w = query.shape
    hk, wk = key.shape[-2:]
    if key.shape[:3] != (b, heads, dim) or value.shape[:2] != (b, heads):
        raise ValueError(
            f'query {tuple(query.shape)}, key {tuple(key.shape)} and value '
            f'{tuple(value.shape)} do not share batch, heads and query/key channels'
        )
    if tuple(value.shape[-2:]) != (hk, wk):
        raise ValueError(f'value {tuple(value.shape)} is not on the grid of key {(hk, wk)}')
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    if max_query_chunk < 1:
        raise ValueError(f'max_query_chunk must be positive, got {max_query_chunk}')
    check_window_fits(h, kh, dh, 'query height')
    check_window_fits(w, kw, dw, 'query width')
    key_rows = torch.arange(h) if key_rows is None else key_rows.cpu()
    key_cols = torch.arange(w) if key_cols is None else key_cols.cpu()
    if key_rows.shape != (h,) or key_cols.shape != (w,):
        raise ValueError(f'key_rows/key_cols must have {h}/{w} entries')
    if int(key_rows.max()) >= hk or int(key_cols.max()) >= wk:
        raise ValueError(f'key_rows/key_cols point outside the {hk}x{wk} key map')
    scale = dim**-0.5 if scale is None else scale

    # The key-map row and column of every window position, built on the CPU so that the column
    # span of each step is known without waiting on the device.
    rows = key_rows[neighborhood_window(h, kh, dh)]  # (H, kh)
    cols = key_cols[neighborhood_window(w, kw, dw)]  # (W, kw)
    device = query.device
    rows_dev = rows.to(device)

    # Keys and values channels-last per head, so each step's gathers are ready for bmm.
    key = key.permute(0, 1, 3, 4, 2)  # (B, n, Hk, Wk, D)
    value = value.permute(0, 1, 3, 4, 2)  # (B, n, Hk, Wk, Dv)
    dv = value.shape[-1]
    out = query.new_empty(b, heads, dv, h, w)
    # Steps about one dilated window wide: the key columns a step touches (its span) stay near
    # twice the window's, instead of the whole key map's width for whole rows.
    cols_per_step = min(w, max(1, max_query_chunk // b), kw * dw)
    rows_per_step = max(1, max_query_chunk // (b * cols_per_step))
    for c0 in range(0, w, cols_per_step):
        c1 = min(w, c0 + cols_per_step)
        nc = c1 - c0
        span0, span1 = int(cols[c0:c1].min()), int(cols[c0:c1].max()) + 1
        span = span1 - span0
        # (1, 1, 1, nc, 1, kw): where each window column lies in the step's key columns.
        where = (cols[c0:c1] - span0).to(device)[None, None, None, :, None, :]
        key_span = key[:, :, :, span0:span1].contiguous()
        value_span = value[:, :, :, span0:span1].contiguous()
        for r0 in range(0, h, rows_per_step):
            r1 = min(h, r0 + rows_per_step)
            nr = r1 - r0
            window_rows = rows_dev[r0:r1]  # (nr, kh)
            q = query[..., r0:r1, c0:c1].permute(0, 1, 3, 4, 2).reshape(-1, nc, dim)
            k = key_span[:, :, window_rows].view(-1, kh * span, dim)
            # Scores against every key column the step touches, then the window's own.
            scores = torch.bmm(q, k.transpose(1, 2)).view(b, heads, nr, nc, kh, span)
            index = where.expand(b, heads, nr, nc, kh, kw)
            logits = scores.gather(-1, index) * scale  # (B, n, nr, nc, kh, kw)
            weights = logits.flatten(-2).softmax(-1).view_as(logits)
            # Back onto the step's key columns (adding, as a column can repeat in a window
            # when keys are copies), so that the values enter through one batched product.
            dense = torch.zeros_like(scores, dtype=weights.dtype).scatter_add_(-1, index, weights)
            v = value_span[:, :, window_rows].view(-1, kh * span, dv)
            step = torch.bmm(dense.view(-1, nc, kh * span), v).view(b, heads, nr, nc, dv)
            out[..., r0:r1, c0:c1] = step.permute(0, 1, 4, 2, 3)
    return out

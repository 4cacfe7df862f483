"""AnyUp's windowed cross-attention, computed only over each query's window.

Output pixel ``(i, j)`` of an ``H' x W'`` output attends to feature rows
``[floor(clamp(y - r, 0, 1) * h), ceil(clamp(y + r, 0, 1) * h))`` with ``y = (i + 0.5) / H'``
and to the analogous columns. The window is a rectangle whose rows depend only on ``i`` and
whose columns depend only on ``j``. Consecutive output rows with the same feature-row range
form a *row group*, likewise for columns; all queries of one (row group, column group) block
share exactly the same keys. The attention is therefore computed block by block as small dense
matrix products over exactly those keys: no ``H'W' x hw`` mask or logit matrix ever exists.
Blocks of one row group are batched together (column groups padded to the widest one, padded
keys masked, padded queries dropped), and row groups are split into tiles so that the largest
intermediate stays under a fixed element budget at any output size.

:func:`dense_window_attention_reference` is the straightforward dense masked formulation (as
in the published code), kept as the parity reference for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    'AxisGroups',
    'dense_window_attention_reference',
    'window_bounds',
    'window_groups',
    'windowed_attention',
]

DEFAULT_MAX_TILE_ELEMENTS = 2**22


def window_bounds(
    out_size: int, in_size: int, window_ratio: float, device: torch.device | str = 'cpu'
) -> tuple[Tensor, Tensor]:
    """Feature index range ``[start, end)`` seen by every output index along one axis.

    The bounds are computed in float32, as the published models were trained with; float64
    would pick a different window for some boundary pixels.

    Args:
        out_size: Output length ``H'``.
        in_size: Feature length ``h``.
        window_ratio: Window half-size relative to the image; ``<= 0`` means the whole axis.
        device: Device of the returned tensors.

    Returns:
        ``(start, end)``, two int64 tensors of shape (out_size,).
    """
    if window_ratio <= 0:
        start = torch.zeros(out_size, dtype=torch.long, device=device)
        return start, torch.full_like(start, in_size)
    centre = (torch.arange(out_size, device=device, dtype=torch.float32) + 0.5) / out_size
    start = torch.floor((centre - window_ratio).clamp(0, 1) * in_size).long()
    end = torch.ceil((centre + window_ratio).clamp(0, 1) * in_size).long()
    return start, end


@dataclass(frozen=True)
class AxisGroups:
    """Runs of consecutive output indices that share one feature window along an axis.

    Attributes:
        query_start, query_end: Output index range ``[start, end)`` of each group.
        key_start, key_end: Feature index range ``[start, end)`` of each group.
    """

    query_start: list[int]
    query_end: list[int]
    key_start: list[int]
    key_end: list[int]

    def __len__(self) -> int:
        return len(self.query_start)

    @property
    def max_queries(self) -> int:
        return max(e - s for s, e in zip(self.query_start, self.query_end))

    @property
    def max_keys(self) -> int:
        return max(e - s for s, e in zip(self.key_start, self.key_end))

    def split(self, max_queries: int) -> AxisGroups:
        """Splits groups wider than ``max_queries`` into near-equal parts with the same keys.

        Border groups are often twice as wide as the others; splitting them keeps the padding
        of a batched layout small without changing which keys any query sees.
        """
        qs, qe, ks, ke = [], [], [], []
        for start, end, k0, k1 in zip(
            self.query_start, self.query_end, self.key_start, self.key_end
        ):
            parts = -(-(end - start) // max_queries)
            bounds = [start + (end - start) * i // parts for i in range(parts + 1)]
            qs += bounds[:-1]
            qe += bounds[1:]
            ks += [k0] * parts
            ke += [k1] * parts
        return AxisGroups(qs, qe, ks, ke)

    def balanced_width(self, cost_per_group: float = 2.0) -> int:
        """The split width minimising padded queries plus a per-group overhead."""
        sizes = [e - s for s, e in zip(self.query_start, self.query_end)]

        def cost(width: int) -> float:
            parts = sum(-(-n // width) for n in sizes)
            return parts * (width + cost_per_group)

        return min(range(1, max(sizes) + 1), key=cost)

    def padded_indices(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Gather indices padded to the widest group.

        Returns:
            ``query_index`` (G, Q) output indices (padding repeats the group's last index),
            ``query_valid`` (G * Q,) positions of real queries in the flattened padded layout,
            ``key_index`` (G, K) feature indices (padding repeats the last key) and
            ``key_valid`` (G, K) whether each padded key slot is real.
        """

        def padded(starts: list[int], ends: list[int], width: int) -> tuple[Tensor, Tensor]:
            start = torch.tensor(starts, device=device)[:, None]
            count = torch.tensor(ends, device=device)[:, None] - start
            offset = torch.arange(width, device=device)[None, :]
            return start + torch.minimum(offset, count - 1), offset < count

        query_index, query_valid = padded(self.query_start, self.query_end, self.max_queries)
        key_index, key_valid = padded(self.key_start, self.key_end, self.max_keys)
        return query_index, query_valid.flatten().nonzero().squeeze(1), key_index, key_valid


def window_groups(out_size: int, in_size: int, window_ratio: float) -> AxisGroups:
    """Groups the output indices of one axis by their feature window (see :class:`AxisGroups`)."""
    start, end = window_bounds(out_size, in_size, window_ratio)
    changed = (start[1:] != start[:-1]) | (end[1:] != end[:-1])
    first = [0] + (changed.nonzero().squeeze(1) + 1).tolist()
    last = first[1:] + [out_size]
    return AxisGroups(
        query_start=first,
        query_end=last,
        key_start=start[first].tolist(),
        key_end=end[first].tolist(),
    )


def windowed_attention(
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    window_ratio: float,
    num_heads: int,
    query_transform: Callable[[Tensor], Tensor] | None = None,
    max_tile_elements: int = DEFAULT_MAX_TILE_ELEMENTS,
) -> Tensor:
    """Head-averaged softmax attention of every output pixel over its feature window.

    Args:
        queries: (B, H', W', D) queries in channels-last layout. If ``query_transform`` is
            given it is applied tile by tile (e.g. normalisation and projection), so the
            transformed queries never exist at full resolution at once.
        keys: (B, h, w, D) projected keys.
        values: (B, h, w, C) values (the raw features).
        window_ratio: Window half-size relative to the image; ``<= 0`` attends to all keys.
        num_heads: Number of heads; D is split evenly among them. Each head's logits are
            ``q_n . k_n`` (scale the queries beforehand), softmax over the window's keys is
            taken in float32, and the heads' attention maps are averaged.
        query_transform: Optional map (B, n, W', D_in) -> (B, n, W', D).
        max_tile_elements: Upper bound on the number of logits computed at once.

    Returns:
        (B, H', W', C) attention output, the convex combination of window values.
    """
    batch, out_h, out_w, _ = queries.shape
    _, feat_h, feat_w, dim = keys.shape
    channels = values.shape[-1]
    head_dim = dim // num_heads
    device = queries.device

    rows = window_groups(out_h, feat_h, window_ratio)
    cols = window_groups(out_w, feat_w, window_ratio)
    cols = cols.split(cols.balanced_width())
    q_index, _, k_index, k_valid = cols.padded_indices(device)
    n_groups, q_width = q_index.shape
    k_width = k_index.shape[1]
    # Keys and values gathered once per column group, laid out so that any range of feature
    # rows is a strided view usable by batched matrix products without a copy:
    # keys (heads, B*G, head_dim, h, K), values (B*G, h, K, C), key mask (G, h, K).
    # Each is a single gather whose broadcast indices produce that (contiguous) order directly;
    # a permuted view would cost a copy of every row range instead.
    row_idx = torch.arange(feat_h, device=device)
    k_cols = (
        keys.view(batch, feat_h, feat_w, num_heads, head_dim)
        .permute(3, 0, 4, 1, 2)[
            :,
            :,
            torch.arange(head_dim, device=device)[None, :, None, None],
            row_idx[None, None, :, None],
            k_index[:, None, None, :],
        ]
        .reshape(num_heads, batch * n_groups, head_dim, feat_h, k_width)
    )
    v_cols = values[:, row_idx[None, :, None], k_index[:, None, :]].reshape(
        batch * n_groups, feat_h, k_width, channels
    )
    key_pad = None
    if not bool(k_valid.all()):
        key_pad = (~k_valid)[:, None, :].expand(n_groups, feat_h, k_width)
    # Where each output column sits in the padded (group, query) layout.
    col_group = torch.repeat_interleave(
        torch.arange(n_groups, device=device),
        torch.tensor([e - s for s, e in zip(cols.query_start, cols.query_end)], device=device),
    )
    col_offset = (
        torch.arange(out_w, device=device)
        - torch.tensor(cols.query_start, device=device)[col_group]
    )

    # With autograd the tiles are concatenated; without, they are written into one buffer.
    # (A query transform may hold parameters, so it counts as needing gradients.)
    track_grad = torch.is_grad_enabled() and (
        query_transform is not None or any(t.requires_grad for t in (queries, keys, values))
    )
    out_dtype = values.dtype if torch.is_autocast_enabled() else torch.result_type(values, keys)
    output = None
    if not track_grad:
        output = values.new_empty(batch, out_h, out_w, channels, dtype=out_dtype)
    pieces = []

    for q_start, q_end, k_start, k_end in zip(
        rows.query_start, rows.query_end, rows.key_start, rows.key_end
    ):
        n_keys = (k_end - k_start) * k_width
        k_tile = k_cols[:, :, :, k_start:k_end].reshape(
            num_heads, batch * n_groups, head_dim, n_keys
        )
        v_tile = v_cols[:, k_start:k_end].reshape(batch * n_groups, n_keys, channels)
        mask = None
        if key_pad is not None:
            mask = key_pad[:, k_start:k_end].reshape(1, n_groups, 1, n_keys)
            mask = mask.expand(batch, -1, -1, -1).reshape(1, batch * n_groups, 1, n_keys)

        per_row = batch * num_heads * n_groups * q_width * n_keys
        rows_per_tile = max(1, max_tile_elements // per_row)
        for r0 in range(q_start, q_end, rows_per_tile):
            n_rows = min(r0 + rows_per_tile, q_end) - r0
            q_tile = queries[:, r0 : r0 + n_rows]
            if query_transform is not None:
                q_tile = query_transform(q_tile)
            # Gather the padded (group, row, query) layout: (B*G, n*Q, D).
            gather = (
                torch.arange(n_rows, device=device)[None, :, None] * out_w + q_index[:, None, :]
            ).flatten()
            q_tile = q_tile.reshape(batch, n_rows * out_w, dim).index_select(1, gather)
            q_tile = q_tile.view(batch * n_groups, n_rows * q_width, dim)
            attn = _head_averaged_softmax(q_tile, k_tile, mask, in_place=not track_grad)
            out = torch.bmm(attn.to(v_tile.dtype), v_tile).view(
                batch, n_groups * n_rows * q_width, channels
            )
            # Back to output order: column j of row r sits at (group(j), r, offset(j)).
            scatter = (
                col_group[None, :] * (n_rows * q_width)
                + torch.arange(n_rows, device=device)[:, None] * q_width
                + col_offset[None, :]
            ).flatten()
            if output is None:
                pieces.append(out.index_select(1, scatter).view(batch, n_rows, out_w, channels))
                continue
            out = out.to(output.dtype)
            for b in range(batch):
                torch.index_select(
                    out[b], 0, scatter, out=output[b, r0 : r0 + n_rows].view(-1, channels)
                )
    return output if output is not None else torch.cat(pieces, dim=1)


def _head_averaged_softmax(
    queries: Tensor, keys: Tensor, mask: Tensor | None, in_place: bool
) -> Tensor:
    """Softmax attention maps of every head, averaged over the heads.

    Args:
        queries: (G, N, D) queries, D split evenly among the heads.
        keys: (heads, G, D / heads, K) keys.
        mask: None, or a boolean mask broadcastable to (heads, G, N, K), True at padded keys.
        in_place: Compute the logits into one float32 buffer and normalise it in place (no
            autograd); otherwise build the graph with out-of-place operations.

    Returns:
        (G, N, K) float32 attention maps.
    """
    num_heads, groups, head_dim, n_keys = keys.shape
    heads = [queries[..., h * head_dim : (h + 1) * head_dim] for h in range(num_heads)]
    if not in_place:
        logits = torch.stack([torch.bmm(q, k) for q, k in zip(heads, keys)]).float()
        if mask is not None:
            logits = logits.masked_fill(mask, float('-inf'))
        return logits.softmax(dim=-1).mean(dim=0)
    # Without autograd the tile's logits are the largest intermediate: keep one buffer and
    # normalise it in place rather than materialising the stacked, float and softmax copies.
    logits = queries.new_empty(num_heads, groups, queries.shape[1], n_keys, dtype=torch.float32)
    for h, (q, k) in enumerate(zip(heads, keys)):
        if q.dtype == torch.float32 and k.dtype == torch.float32:
            torch.bmm(q, k, out=logits[h])
        else:
            logits[h] = torch.bmm(q, k)
    if mask is not None:
        logits.masked_fill_(mask, float('-inf'))
    logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()
    logits.div_(logits.sum(dim=-1, keepdim=True))
    return logits.mean(dim=0)


def dense_window_attention_reference(
    queries: Tensor, keys: Tensor, values: Tensor, window_ratio: float, num_heads: int
) -> Tensor:
    """Dense masked attention over all ``H'W' x hw`` pairs: the parity reference.

    Memory grows with ``H' * W' * h * w``; use only for tests and benchmarks.

    Args:
        queries: (B, H', W', D) projected, scaled queries.
        keys: (B, h, w, D) projected keys.
        values: (B, h, w, C) values.
        window_ratio: As in :func:`windowed_attention`.
        num_heads: As in :func:`windowed_attention`.

    Returns:
        (B, H', W', C).
    """
    batch, out_h, out_w, dim = queries.shape
    _, feat_h, feat_w, _ = keys.shape
    head_dim = dim // num_heads
    q = queries.reshape(batch, out_h * out_w, num_heads, head_dim).transpose(1, 2)
    k = keys.reshape(batch, feat_h * feat_w, num_heads, head_dim).transpose(1, 2)
    logits = (q @ k.transpose(-1, -2)).float()
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

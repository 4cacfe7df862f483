"""The PyTorch tiles of the windowed attention: the ``'matmul'`` and ``'sdpa'`` kernels.

The attention is computed block by block (a row group of :func:`~.geometry.window_groups`
against column groups) as small dense matrix products over exactly the keys of the block's
window: no ``H'W' x hw`` mask or logit matrix ever exists. Blocks of one row group are batched
together (column groups padded to the widest one, padded keys masked, padded queries dropped),
and row groups are split into tiles so that the largest intermediate stays under a fixed
element budget at any output size. Without autograd on the CPU a tile is a run of column
groups over enough rows for efficient matrix products, small enough for the softmax's passes
to stay in cache (see :data:`CPU_CACHE_TILE_ELEMENTS`).

The layout is fixed by the shapes alone, so the forward has no data-dependent control flow
and traces with ``torch.export`` and ``torch.compile``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import is_tracing
from ..constant_cache import device_table
from ..precision import compute_dtype
from ..softmax_bounds import softmax_needs_shift
from .geometry import AxisGroups, window_groups
from .queries import QueryBands, QueryTransform

__all__ = [
    'CPU_CACHE_TILE_ELEMENTS',
    'DEFAULT_MAX_TILE_ELEMENTS',
    'MIN_TILE_QUERIES',
    'tiled_attention',
]

#: Logits (queries x keys x heads, float32) computed at once: a tile's logits are its largest
#: intermediate, and 2**22 (16 MiB) bounds them at any output size while each batched matrix
#: product stays large enough to run at the full matrix-multiply rate.
DEFAULT_MAX_TILE_ELEMENTS = 2**22

#: On the CPU, without autograd, a tile's logits stay under this (8 MiB of float32): its
#: softmax makes several passes over them, which run from cache rather than main memory.
#: At 1024 px (256 keys per window) this is 20 % faster than tiles of
#: :data:`DEFAULT_MAX_TILE_ELEMENTS`.
CPU_CACHE_TILE_ELEMENTS = 2**21

#: Queries per column group in a CPU tile (whole rows, at most a row group): the value
#: products are (queries x keys) @ (keys x C) per group, and below about a hundred rows they
#: run far from the matrix-multiply rate. Tiles take fewer column groups instead.
MIN_TILE_QUERIES = 128


def tiled_attention(
    queries: Tensor | QueryBands,
    keys: Tensor,
    values: Tensor,
    window_ratio: float,
    num_heads: int,
    query_transform: QueryTransform | None,
    max_tile_elements: int,
    out: Tensor | None,
    logit_bound: float | None,
    kernel: str,
) -> Tensor:
    """:func:`~anyup_plugin.core.attention.windowed_attention` by tiles (its arguments).

    ``kernel`` is ``'matmul'`` or ``'sdpa'`` (see
    :data:`~anyup_plugin.core.attention.ATTENTION_KERNELS`).
    """
    batch, out_h, out_w, _ = queries.shape
    feat_h, feat_w = keys.shape[1:3]
    rows = window_groups(out_h, feat_h, window_ratio)
    cols = window_groups(out_w, feat_w, window_ratio)
    layout = _ColumnLayout.build(cols.split(cols.balanced_width()), queries.device)
    # Without autograd (and outside tracing) the tiles are written into one buffer and the
    # softmax runs in place; otherwise tiles are built out of place and concatenated. (A query
    # transform may hold parameters, so it counts as needing gradients.)
    functional = is_tracing() or (
        torch.is_grad_enabled()
        and (query_transform is not None or any(t.requires_grad for t in (queries, keys, values)))
    )
    output = buffers = None
    if functional and out is not None:
        raise ValueError('out= is only supported without autograd and outside tracing')
    if not functional:
        out_dtype = values.dtype if torch.is_autocast_enabled() else torch.result_type(values, keys)
        shape = (batch, out_h, out_w, values.shape[-1])
        if out is None:
            output = values.new_empty(shape, dtype=out_dtype)
        elif out.shape != shape or out.dtype != out_dtype or out.device != values.device:
            raise ValueError(
                f'out must be a {out_dtype} tensor of shape {tuple(shape)} on {values.device}, '
                f'got {out.dtype} {tuple(out.shape)} on {out.device}'
            )
        else:
            output = out
        buffers = _TileBuffers(queries.device)
    shift = softmax_needs_shift(logit_bound)
    # The fused kernel masks padded keys itself; the buffered matrix products zero them.
    window_keys = _WindowColumns(
        keys,
        values,
        layout,
        num_heads,
        2 * rows.max_keys,
        buffers,
        mask_padded=buffers is None or kernel == 'sdpa',
    )
    pieces = []
    n_groups = layout.num_groups
    for q_start, q_end, k_start, k_end in zip(
        rows.query_start, rows.query_end, rows.key_start, rows.key_end
    ):
        k_tile, v_tile, bias = window_keys.rows(k_start, k_end)
        per_query = num_heads * k_tile.shape[-2]
        if output is None:
            rows_per_tile = max(
                1, max_tile_elements // (batch * per_query * n_groups * layout.width)
            )
            groups_per_tile = n_groups
        else:
            rows_per_tile, groups_per_tile = _tile_shape(
                q_end - q_start,
                n_groups,
                layout.width,
                per_query,
                max_tile_elements,
                queries.device,
            )
        for r0 in range(q_start, q_end, rows_per_tile):
            n_rows = min(r0 + rows_per_tile, q_end) - r0
            if isinstance(queries, QueryBands):
                # A reused buffer for rows that span two bands (a fresh one faults pages in).
                across = None
                if buffers is not None:
                    shape = (batch, n_rows, *queries.shape[2:])
                    across = buffers.get('query rows', shape, queries.dtype)
                q_rows = queries.rows(r0, r0 + n_rows, out=across)
            else:
                q_rows = queries[:, r0 : r0 + n_rows]
            if output is None:
                out = _attend_tile(
                    layout.gather_queries(q_rows),
                    k_tile,
                    v_tile,
                    bias,
                    query_transform,
                    None,
                    kernel=kernel,
                )
                pieces.append(layout.scatter_outputs(out.view(batch, -1, out.shape[-1]), n_rows))
                continue
            for b in range(batch):
                for g0 in range(0, n_groups, groups_per_tile):
                    groups = slice(g0, min(g0 + groups_per_tile, n_groups))
                    tile = slice(b * n_groups + groups.start, b * n_groups + groups.stop)
                    out = _attend_tile(
                        layout.gather_queries(q_rows[b : b + 1], groups, buffers),
                        k_tile[:, tile],
                        v_tile[tile],
                        None if bias is None else bias[tile],
                        query_transform,
                        buffers,
                        padded_slots=window_keys.padded_slots(groups, k_end - k_start),
                        shift=shift,
                        kernel=kernel,
                    )
                    layout.scatter_outputs(
                        out.view(1, -1, out.shape[-1]),
                        n_rows,
                        groups,
                        into=output[b : b + 1, r0 : r0 + n_rows],
                        buffers=buffers,
                    )
        if isinstance(queries, QueryBands):
            queries.release_before(q_end)
    return output if output is not None else torch.cat(pieces, dim=1)


def _tile_shape(
    height: int,
    n_groups: int,
    width: int,
    per_query: int,
    max_tile_elements: int,
    device: torch.device,
) -> tuple[int, int]:
    """``(rows, column groups)`` per tile of a row group, without autograd.

    On the CPU a tile's logits stay within :data:`CPU_CACHE_TILE_ELEMENTS` and every group
    gets at least :data:`MIN_TILE_QUERIES` queries (whole rows, at most the row group's
    height), taking fewer column groups per tile rather than fewer rows. Otherwise (and when
    every group fits) the tile takes all groups and as many rows as ``max_tile_elements``
    allows.

    Args:
        height: Output rows of the row group.
        n_groups: Column groups (batch items are separate tiles).
        width: Query slots per column group and row.
        per_query: Logits per query slot (heads x window keys).
        max_tile_elements: Upper bound on a tile's logits.
        device: Where the attention runs.
    """
    budget = max_tile_elements
    rows = 1
    if device.type == 'cpu':
        budget = min(budget, CPU_CACHE_TILE_ELEMENTS)
        rows = min(height, -(-MIN_TILE_QUERIES // width))
    groups = max(1, min(n_groups, budget // (per_query * width * rows)))
    if groups == n_groups:
        rows = min(height, max(rows, budget // (per_query * width * n_groups)))
    return rows, groups


def _attend_tile(
    q_tile: Tensor,
    k_tile: Tensor,
    v_tile: Tensor,
    bias: Tensor | None,
    query_transform: QueryTransform | None,
    buffers: _TileBuffers | None,
    padded_slots: Tensor | None = None,
    shift: bool = True,
    kernel: str = 'matmul',
) -> Tensor:
    """One tile: (G, N, D_in) gathered queries -> (G, N, C) head-averaged window sums.

    Padded key slots are masked by ``bias`` (autograd, or the ``'sdpa'`` kernel) or zeroed
    at ``padded_slots`` (buffered matrix products); see :func:`_head_averaged_softmax`.
    """
    if query_transform is not None:
        out = None
        if buffers is not None:
            shape = (*q_tile.shape[:2], k_tile.shape[0] * k_tile.shape[-1])
            out = buffers.get('projected queries', shape, q_tile.dtype)
        q_tile = query_transform(q_tile, out)
    if kernel == 'sdpa':
        return _fused_head_averaged_attention(q_tile, k_tile, v_tile, bias)
    attn = _head_averaged_softmax(q_tile, k_tile, bias, buffers, padded_slots, shift)
    return _value_product(attn, v_tile, buffers)


def _fused_head_averaged_attention(
    queries: Tensor, keys: Tensor, values: Tensor, bias: Tensor | None
) -> Tensor:
    """Every head's softmax attention by the fused kernel, with shared values, head-averaged.

    Args:
        queries: (G, N, D) queries, D split evenly among the heads (already scaled: the
            logits are plain dot products).
        keys: (heads, G, K, D / heads) keys.
        values: (G, K, C) values, the same for every head.
        bias: None, or (G, K, 1): 0 at real keys, -inf at padded ones.

    Returns:
        (G, N, C) head-averaged attention output.
    """
    num_heads, groups, n_keys, head_dim = keys.shape
    q = queries.unflatten(-1, (num_heads, head_dim)).transpose(1, 2)  # (G, heads, N, hd)
    k = keys.transpose(0, 1)  # (G, heads, K, hd)
    v = values.unsqueeze(1).expand(groups, num_heads, n_keys, values.shape[-1])
    mask = None if bias is None else (bias == 0).view(groups, 1, 1, n_keys)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
    return out.mean(dim=1)


@dataclass(frozen=True)
class _ColumnLayout:
    """The padded (column group, query slot) layout of the output columns.

    Attributes:
        query_index: (G, Q) output column of every query slot (padding repeats the last one).
        key_index: (G, K) feature column of every key slot (padding repeats the last one).
        key_padding: (G, K) True at padded key slots, or None when every group is full.
        key_count: Real keys of every group (host-side numbers, so that using them never
            waits for the device).
        column_group: (W',) group of every output column.
        column_offset: (W',) slot of every output column within its group.
        column_start: First output column of every group, and W' at the end.
    """

    query_index: Tensor
    key_index: Tensor
    key_padding: Tensor | None
    key_count: tuple[int, ...]
    column_group: Tensor
    column_offset: Tensor
    column_start: tuple[int, ...]

    @classmethod
    def build(cls, cols: AxisGroups, device: torch.device) -> _ColumnLayout:
        """The layout of column groups ``cols`` on ``device``, built once per both.

        Its tables are host-to-device copies, each a wait for the device on CUDA: cached, a
        call with shapes seen before copies nothing. While tracing they are built afresh, as
        part of the traced program.
        """
        groups = (
            tuple(cols.query_start),
            tuple(cols.query_end),
            tuple(cols.key_start),
            tuple(cols.key_end),
        )
        if is_tracing():
            return _build_column_layout(*groups, device)
        return _cached_column_layout(*groups, device)

    @property
    def num_groups(self) -> int:
        return self.query_index.shape[0]

    @property
    def width(self) -> int:
        """Query slots per group."""
        return self.query_index.shape[1]

    def gather_queries(
        self, q_rows: Tensor, groups: slice | None = None, buffers: _TileBuffers | None = None
    ) -> Tensor:
        """(B, n, W', D) queries of ``n`` output rows -> (B*g, n*Q, D), (group, row, slot) order.

        Args:
            q_rows: The rows' queries.
            groups: The column groups to gather (default: all).
            buffers: If given, the result is a view of a reused buffer.
        """
        batch, n_rows, out_w, dim = q_rows.shape
        index = self.query_index[groups or slice(None)]
        gather = (
            torch.arange(n_rows, device=q_rows.device)[None, :, None] * out_w + index[:, None, :]
        ).flatten()
        q_rows = q_rows.reshape(batch, n_rows * out_w, dim)
        shape = (batch * index.shape[0], n_rows * self.width, dim)
        if buffers is None:
            return q_rows.index_select(1, gather).view(shape)
        out = buffers.get('queries', shape, q_rows.dtype).view(batch, -1, dim)
        for b in range(batch):
            torch.index_select(q_rows[b], 0, gather, out=out[b])
        return out.view(shape)

    def scatter_outputs(
        self,
        out: Tensor,
        n_rows: int,
        groups: slice | None = None,
        into: Tensor | None = None,
        buffers: _TileBuffers | None = None,
    ) -> Tensor:
        """(B, g*n*Q, C) padded-layout outputs of column groups ``groups`` -> output order.

        Args:
            out: Outputs of ``n_rows`` rows of the groups.
            n_rows: Output rows in ``out``.
            groups: The column groups ``out`` holds (default: all), covering output columns
                [c0, c1).
            into: Optional (B, n, W', C) rows of the output; columns [c0, c1) are written
                (through a reused staging buffer from ``buffers`` unless they are all).
            buffers: Needed with ``into`` when the groups do not cover every column.

        Returns:
            (B, n, c1 - c0, C): ``into``'s columns if given.
        """
        batch, _, channels = out.shape
        groups = groups or slice(0, self.num_groups)
        c0, c1 = self.column_start[groups.start], self.column_start[groups.stop]
        # Column j of row r sits at (group(j), r, offset(j)).
        scatter = (
            (self.column_group[c0:c1] - groups.start)[None, :] * (n_rows * self.width)
            + torch.arange(n_rows, device=out.device)[:, None] * self.width
            + self.column_offset[c0:c1][None, :]
        ).flatten()
        if into is None:
            return out.index_select(1, scatter).view(batch, n_rows, -1, channels)
        out, target = out.to(into.dtype), into[:, :, c0:c1]
        whole = c1 - c0 == into.shape[2]
        for b in range(batch):
            staged = target[b] if whole else buffers.get('staged', target.shape[1:], out.dtype)
            torch.index_select(out[b], 0, scatter, out=staged.view(-1, channels))
            if not whole:
                target[b].copy_(staged)
        return target


def _build_column_layout(
    query_start: tuple[int, ...],
    query_end: tuple[int, ...],
    key_start: tuple[int, ...],
    key_end: tuple[int, ...],
    device: torch.device,
) -> _ColumnLayout:
    """The :class:`_ColumnLayout` of the column groups given by their ranges (see
    :class:`~anyup_plugin.core.attention.geometry.AxisGroups`)."""
    cols = AxisGroups(list(query_start), list(query_end), list(key_start), list(key_end))
    query_index, key_index, key_valid = cols.padded_indices(device)
    group, offset = [], []
    for g, (start, end) in enumerate(zip(query_start, query_end)):
        group += [g] * (end - start)
        offset += range(end - start)
    return _ColumnLayout(
        query_index=query_index,
        key_index=key_index,
        key_padding=~key_valid if cols.keys_padded else None,
        key_count=tuple(e - s for s, e in zip(key_start, key_end)),
        column_group=device_table(group, device),
        column_offset=device_table(offset, device),
        column_start=(*query_start, query_end[-1]),
    )


@functools.lru_cache(maxsize=64)
def _cached_column_layout(
    query_start: tuple[int, ...],
    query_end: tuple[int, ...],
    key_start: tuple[int, ...],
    key_end: tuple[int, ...],
    device: torch.device,
) -> _ColumnLayout:
    """:func:`_build_column_layout`, kept for later calls (its tables are never written)."""
    # Cached tables outlive the call that builds them: normal tensors (not inference tensors,
    # even when built under torch.inference_mode) also serve later calls with autograd.
    with torch.inference_mode(False):
        return _build_column_layout(query_start, query_end, key_start, key_end, device)


@functools.lru_cache(maxsize=256)
def _padded_slot_table(
    key_count: tuple[int, ...], width: int, n_rows: int, device: torch.device
) -> Tensor | None:
    """Flat indices of the padded slots of (g, n_rows * width) key slots, group-major.

    Group ``i`` has ``key_count[i]`` real keys in each of its ``width`` slots per row; None
    when no slot is padded. Cached: the tiles ask for the same few tables in every call.
    """
    slots = [
        (g * n_rows + r) * width + j
        for g, count in enumerate(key_count)
        for r in range(n_rows)
        for j in range(count, width)
    ]
    if not slots:
        return None
    with torch.inference_mode(False):  # as in _cached_column_layout
        return device_table(slots, device)


class _WindowColumns:
    """Keys and values of every column group, gathered band of feature rows by band.

    Each column group's key columns are copied side by side, so that any range of feature
    rows inside the current band is a view usable by batched matrix products. The copies
    repeat every feature column in about ``2 r w`` groups, so only a band of rows (twice the
    tallest window) exists at once, refilled as the row groups move down: at 1024 px all rows
    at once would take some 350 MB.

    Args:
        keys: (B, h, w, D) projected keys.
        values: (B, h, w, C) values.
        layout: The column groups.
        num_heads: Heads D is split into.
        band_rows: Feature rows gathered at once (at least the tallest window).
        buffers: Reused storage for the bands, or None to allocate each (autograd).
        mask_padded: Whether :meth:`rows` gives padded key slots a -inf bias; without it the
            tiles zero them instead (:meth:`padded_slots`).
    """

    def __init__(
        self,
        keys: Tensor,
        values: Tensor,
        layout: _ColumnLayout,
        num_heads: int,
        band_rows: int,
        buffers: _TileBuffers | None,
        mask_padded: bool = True,
    ) -> None:
        batch, feat_h, feat_w, dim = keys.shape
        self.batch, self.feat_h, self.feat_w = batch, feat_h, feat_w
        self.num_heads, self.band_rows, self.buffers = num_heads, min(band_rows, feat_h), buffers
        self.key_index = layout.key_index  # (G, K)
        # (heads, B, h*w, head_dim) and (B, h*w, C): gathering whole vectors is a row copy each.
        self.keys = keys.reshape(batch, feat_h * feat_w, num_heads, dim // num_heads).permute(
            2, 0, 1, 3
        )
        self.values = values.reshape(batch, feat_h * feat_w, values.shape[-1])
        self.key_count = layout.key_count
        self.key_bias = None
        if layout.key_padding is not None and mask_padded:
            bias = torch.zeros(layout.key_padding.shape, dtype=keys.dtype, device=keys.device)
            self.key_bias = bias.masked_fill_(layout.key_padding, float('-inf'))  # (G, K)
        self.band = (0, 0)
        self.band_keys = self.band_values = None

    def _gather_band(self, start: int) -> None:
        end = min(self.feat_h, start + self.band_rows)
        n_groups, k_width = self.key_index.shape
        rows = torch.arange(start, end, device=self.key_index.device)
        flat = (rows[None, :, None] * self.feat_w + self.key_index[:, None, :]).flatten()
        heads, batch, _, head_dim = self.keys.shape
        n = flat.numel()
        if self.buffers is None:
            keys = self.keys.index_select(2, flat)
            values = self.values.index_select(1, flat)
        else:
            keys = self.buffers.get('band keys', (heads, batch, n, head_dim), self.keys.dtype)
            values = self.buffers.get(
                'band values', (batch, n, self.values.shape[-1]), self.values.dtype
            )
            torch.index_select(self.keys, 2, flat, out=keys)
            torch.index_select(self.values, 1, flat, out=values)
        shape = (batch * n_groups, end - start, k_width)
        self.band_keys = keys.view(heads, *shape, head_dim)
        self.band_values = values.view(*shape, self.values.shape[-1])
        self.band = (start, end)

    def rows(self, start: int, end: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Keys (heads, B*G, n, head_dim), values (B*G, n, C) and bias of feature rows [start, end).

        The bias, None when nothing is padded or padding is not masked, is (B*G, n, 1): 0 at
        real keys, -inf at padded slots, to be added to the (B*G, n, queries) logits.
        """
        if not (self.band[0] <= start and end <= self.band[1]):
            self._gather_band(start)
        offset = start - self.band[0]
        n_rows = end - start
        bg, k_width = self.band_values.shape[0], self.band_values.shape[2]
        n_keys = n_rows * k_width
        k_tile = self.band_keys[:, :, offset : offset + n_rows].reshape(
            self.num_heads, bg, n_keys, -1
        )
        v_tile = self.band_values[:, offset : offset + n_rows].reshape(bg, n_keys, -1)
        bias = None
        if self.key_bias is not None:
            n_groups = self.key_bias.shape[0]
            bias = self.key_bias[None, :, None, :].expand(self.batch, n_groups, n_rows, k_width)
            bias = bias.reshape(bg, n_keys, 1)
        return k_tile, v_tile, bias

    def padded_slots(self, groups: slice, n_rows: int) -> Tensor | None:
        """Flat indices of the padded key slots of column groups ``groups`` over ``n_rows`` rows.

        They index the (g, n_rows * K) key slots of those groups (group-major, as the tiles lay
        them out); None when none of the groups is padded, or when :meth:`rows` masks them
        with a bias instead. Built from host-side counts once per shape and device
        (:func:`_padded_slot_table`): only the first call with a shape copies them to the
        device; later tiles and calls neither copy nor wait.
        """
        if self.key_bias is not None:
            return None
        return _padded_slot_table(
            self.key_count[groups], self.key_index.shape[1], n_rows, self.key_index.device
        )


class _TileBuffers:
    """Reused buffers for the intermediates of the tiles of one call, without autograd.

    Every tile's logits, attention maps and value products are views of these: allocating
    them afresh per tile costs page faults comparable to the tile's arithmetic.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._flat: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A (possibly dirty) ``shape`` view of buffer ``name``, grown when too small."""
        numel = math.prod(shape)
        flat = self._flat.get(name)
        if flat is None or flat.numel() < numel or flat.dtype != dtype:
            flat = torch.empty(numel, dtype=dtype, device=self.device)
            self._flat[name] = flat
        return flat[:numel].view(shape)


def _value_product(attn_t: Tensor, values: Tensor, buffers: _TileBuffers | None) -> Tensor:
    """(G, K, N) transposed attention maps and (G, K, C) values -> (G, N, C) weighted sums.

    Into a reused buffer if ``buffers`` is given.
    """
    attn = attn_t.to(values.dtype).transpose(1, 2)
    if buffers is None:
        return torch.bmm(attn, values)
    shape = (attn.shape[0], attn.shape[1], values.shape[-1])
    return torch.bmm(attn, values, out=buffers.get('values', shape, values.dtype))


def _head_averaged_softmax(
    queries: Tensor,
    keys: Tensor,
    bias: Tensor | None,
    buffers: _TileBuffers | None,
    padded_slots: Tensor | None = None,
    shift: bool = True,
) -> Tensor:
    """Softmax attention maps of every head, averaged over the heads, keys first.

    The maps are laid out (keys, queries): the softmax's maximum and sum then reduce over
    an outer dimension, several times faster than over a short inner one. Padded keys get
    their -inf inside the matrix product (its added term), not in a pass of their own. In
    the buffered path they need none: a padded slot repeats its group's last key, so it
    leaves the maximum unchanged, and its exponentials (whole rows of the (K, N) layout)
    are zeroed before the sum, with no copy of a bias into every tile.

    Args:
        queries: (G, N, D) queries, D split evenly among the heads.
        keys: (heads, G, K, D / heads) keys.
        bias: None, or (G, K, 1): 0 at real keys, -inf at padded ones.
        buffers: Without autograd, compute the logits into a reused float32 (float64) buffer
            and normalise it in place; None builds the graph with out-of-place operations.
        padded_slots: With ``buffers``, flat indices into the (G * K) key slots of the padded
            ones (repeats of a real key), or None.
        shift: With ``buffers``, whether to subtract each query's maximum logit before the
            exponentials (False only when the logits are known to be small, see
            :mod:`anyup_plugin.core.softmax_bounds`).

    Returns:
        (G, K, N) attention maps, float32 (float64 for float64 queries or keys): entry
        (g, k, n) is query n's weight of key k.
    """
    num_heads, groups, n_keys, head_dim = keys.shape
    # Half-precision logits (autocast) are normalised in float32; float64 stays float64.
    dtype = compute_dtype(queries.dtype, keys.dtype)
    heads = [
        (queries[..., h * head_dim : (h + 1) * head_dim].transpose(1, 2), keys[h])
        for h in range(num_heads)
    ]

    def logits_of(q: Tensor, k: Tensor, out: Tensor | None = None) -> Tensor:
        if bias is None:
            return torch.bmm(k, q, out=out)
        return torch.baddbmm(bias.to(k.dtype), k, q, out=out)

    if buffers is None:
        logits = torch.stack([logits_of(q, k) for q, k in heads]).to(dtype)
        return logits.softmax(dim=-2).mean(dim=0)
    # The tile's logits are its largest intermediate: one buffer, normalised in place, rather
    # than the stacked, float and softmax copies.
    shape = (num_heads, groups, n_keys, queries.shape[1])
    logits = buffers.get('logits', shape, dtype)
    for h, (q, k) in enumerate(heads):
        if q.dtype == dtype and k.dtype == dtype:
            logits_of(q, k, out=logits[h])
        else:
            logits[h] = logits_of(q, k)
    if shift:
        logits.sub_(_max_over_keys(logits, buffers))
    logits.exp_()
    if padded_slots is not None:
        logits.view(num_heads, groups * n_keys, -1).index_fill_(1, padded_slots, 0.0)
    # The mean of the heads' softmaxes: sum_h exp_h / (heads * sum_h), one pass per head.
    weights = logits.sum(dim=-2, keepdim=True).mul_(num_heads).reciprocal_()
    attn = torch.mul(logits[0], weights[0], out=buffers.get('attention', shape[1:], dtype))
    for h in range(1, num_heads):
        attn.addcmul_(logits[h], weights[h])
    return attn


def _max_over_keys(logits: Tensor, buffers: _TileBuffers) -> Tensor:
    """(heads, G, K, N) -> (heads, G, 1, N) maximum over K, by pairwise element-wise maxima.

    ``amax`` over an outer dimension is fast only for some inner sizes (on the CPU, several
    times slower when N is not a multiple of 32); halving K with ``torch.maximum`` costs about
    one pass over the logits whatever the sizes.
    """
    n_keys = logits.shape[2]
    if n_keys == 1:
        return logits
    half = n_keys // 2
    shape = (*logits.shape[:2], half, logits.shape[3])
    best = torch.maximum(
        logits[:, :, :half],
        logits[:, :, half : 2 * half],
        out=buffers.get('max', shape, logits.dtype),
    )
    if n_keys % 2:
        torch.maximum(best[:, :, :1], logits[:, :, -1:], out=best[:, :, :1])
    while best.shape[2] > 1:
        rows = best.shape[2]
        half = rows // 2
        torch.maximum(best[:, :, :half], best[:, :, half : 2 * half], out=best[:, :, :half])
        if rows % 2:
            torch.maximum(best[:, :, :1], best[:, :, rows - 1 : rows], out=best[:, :, :1])
        best = best[:, :, :half]
    return best

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
intermediate stays under a fixed element budget at any output size. Without autograd on the
CPU a tile is a run of column groups over enough rows for efficient matrix products, small
enough for the softmax's passes to stay in cache (see :data:`CPU_CACHE_TILE_ELEMENTS`).

The windows are computed in plain Python (emulating the float32 arithmetic the published
models were trained with), so the layout is fixed by the shapes alone: the forward has no
data-dependent control flow and traces with ``torch.export`` and ``torch.compile``. The dense
masked formulation of the published code, the parity reference, is
:func:`anyup_plugin.core.reference.dense_window_attention_reference`.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import is_tracing
from .precision import compute_dtype
from .softmax_bounds import softmax_needs_shift
from .triton_window_attention import triton_is_available, triton_windowed_attention

Size = tuple[int, int]

#: ``query_transform(q, out)``: (G, N, D_in) queries -> (G, N, D), into ``out`` unless None.
QueryTransform = Callable[[Tensor, 'Tensor | None'], Tensor]

__all__ = [
    'ATTENTION_KERNELS',
    'AUTO_USES_TRITON',
    'DEFAULT_MAX_TILE_ELEMENTS',
    'AxisGroups',
    'QueryBands',
    'resolve_attention_kernel',
    'window_bounds',
    'window_groups',
    'window_pair_count',
    'windowed_attention',
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

#: Elements per band of :class:`QueryBands` (32 MiB of float32): small against the map at
#: large sizes, large enough for the convolution to run at its full rate.
QUERY_BAND_ELEMENTS = 2**23

#: How a tile's attention is computed:
#:
#: - ``'matmul'``: the heads' logits as batched matrix products, their softmaxes averaged
#:   into one map per tile, then one value product with that map (the fewest multiply-adds).
#: - ``'sdpa'``: :func:`torch.nn.functional.scaled_dot_product_attention` per head with the
#:   full-width features as every head's values, then the mean over heads. Exact as well
#:   (averaging attention maps commutes with the value product) at ``num_heads`` times the
#:   value multiply-adds, for the fused kernels of accelerators.
#: - ``'triton'``: fused Triton kernels, no tiles
#:   (:mod:`~anyup_plugin.core.triton_window_attention`): per block of queries, every head's
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

#: float32 has a 24-bit significand.
_FLOAT32_SIGNIFICAND_BITS = 24


def _float32(x: float) -> float:
    """``x`` rounded to the nearest float32 (ties to even), as a Python float.

    One IEEE operation on float32 operands, done in float64 and rounded once to float32,
    gives the float32 result exactly (53 >= 2 * 24 + 2 bits), so chaining this after every
    operation reproduces float32 arithmetic in plain Python.
    """
    if x == 0 or not math.isfinite(x):
        return x
    mantissa, exponent = math.frexp(x)
    scaled = round(mantissa * (1 << _FLOAT32_SIGNIFICAND_BITS))  # exact, ties to even
    return math.ldexp(scaled, exponent - _FLOAT32_SIGNIFICAND_BITS)


@torch.compiler.assume_constant_result
def _axis_window_bounds(
    out_size: int, in_size: int, window_ratio: float
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(start, end)`` feature indices of every output index, in emulated float32.

    A function of its arguments alone: compilers evaluate it at trace time and keep the
    result as a constant instead of tracing the Python loop.
    """
    return _axis_window_bounds_cached(out_size, in_size, window_ratio)


@functools.lru_cache(maxsize=256)
def _axis_window_bounds_cached(
    out_size: int, in_size: int, window_ratio: float
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if window_ratio <= 0:
        return (0,) * out_size, (in_size,) * out_size
    ratio, size_out, size_in = _float32(window_ratio), float(out_size), float(in_size)
    starts, ends = [], []
    for i in range(out_size):
        centre = _float32((i + 0.5) / size_out)
        low = min(max(_float32(centre - ratio), 0.0), 1.0)
        high = min(max(_float32(centre + ratio), 0.0), 1.0)
        starts.append(math.floor(_float32(low * size_in)))
        ends.append(math.ceil(_float32(high * size_in)))
    return tuple(starts), tuple(ends)


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
    start, end = _axis_window_bounds(int(out_size), int(in_size), float(window_ratio))
    return (
        torch.tensor(start, dtype=torch.long, device=device),
        torch.tensor(end, dtype=torch.long, device=device),
    )


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

    @property
    def keys_padded(self) -> bool:
        """Whether some group has fewer keys than the widest one."""
        return any(e - s != self.max_keys for s, e in zip(self.key_start, self.key_end))

    def padded_indices(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Gather indices padded to the widest group.

        Returns:
            ``query_index`` (G, Q) output indices (padding repeats the group's last index),
            ``key_index`` (G, K) feature indices (padding repeats the last key) and
            ``key_valid`` (G, K) whether each padded key slot is real.
        """

        def padded(starts: list[int], ends: list[int], width: int) -> tuple[Tensor, Tensor]:
            start = torch.tensor(starts, device=device)[:, None]
            count = torch.tensor(ends, device=device)[:, None] - start
            offset = torch.arange(width, device=device)[None, :]
            return start + torch.minimum(offset, count - 1), offset < count

        query_index, _ = padded(self.query_start, self.query_end, self.max_queries)
        key_index, key_valid = padded(self.key_start, self.key_end, self.max_keys)
        return query_index, key_index, key_valid


def window_groups(out_size: int, in_size: int, window_ratio: float) -> AxisGroups:
    """Groups the output indices of one axis by their feature window (see :class:`AxisGroups`)."""
    start, end = _axis_window_bounds(int(out_size), int(in_size), float(window_ratio))
    first = [0] + [
        i for i in range(1, out_size) if start[i] != start[i - 1] or end[i] != end[i - 1]
    ]
    return AxisGroups(
        query_start=first,
        query_end=first[1:] + [out_size],
        key_start=[start[i] for i in first],
        key_end=[end[i] for i in first],
    )


def window_pair_count(out_size: Size, in_size: Size, window_ratio: float) -> int:
    """Number of (query, key) pairs the windows hold: the attention's exact work.

    Args:
        out_size: Output (H', W').
        in_size: Feature (h, w).
        window_ratio: As in :func:`windowed_attention`.

    Returns:
        ``sum over output pixels of the keys in their window``.
    """
    per_axis = []
    for n_out, n_in in zip(out_size, in_size):
        start, end = _axis_window_bounds(int(n_out), int(n_in), float(window_ratio))
        per_axis.append(sum(e - s for s, e in zip(start, end)))
    return per_axis[0] * per_axis[1]


class QueryBands:
    """A (B, H', W', D) query map held as bands of whole rows, released front to back.

    The attention walks the output rows top to bottom; with the queries in bands it drops each
    band once past it, while the output fills up, so the two never exist in full at once (at
    1024 px and 384 channels that is 0.5 of 2 GiB).

    Args:
        bands: (B, rows_i, W', D) tensors, in row order.
    """

    def __init__(self, bands: Sequence[Tensor]) -> None:
        if not bands:
            raise ValueError('QueryBands needs at least one band')
        self._bands = list(bands)
        self._starts = [0]
        for band in self._bands:
            self._starts.append(self._starts[-1] + band.shape[1])
        batch, _, width, dim = self._bands[0].shape
        self.shape = torch.Size((batch, self._starts[-1], width, dim))
        self.device, self.dtype = self._bands[0].device, self._bands[0].dtype
        self.requires_grad = any(b.requires_grad for b in self._bands)

    @classmethod
    def convolve(
        cls, queries: Tensor, conv: nn.Conv2d, band_elements: int | None = None
    ) -> QueryBands:
        """``conv(queries)`` band by band: (B, D_in, H', W') -> bands of (B, rows, W', D).

        Each band reads its rows plus the convolution's halo, zero-padded at the map's top
        and bottom exactly as the convolution's own padding.

        Args:
            queries: (B, D_in, H', W') map.
            conv: A stride-1, zero-padded convolution that keeps the size.
            band_elements: Output elements per band (at least one row); default
                :data:`QUERY_BAND_ELEMENTS`.
        """
        same_size = tuple(k // 2 for k in conv.kernel_size)
        if (
            conv.stride != (1, 1)
            or conv.dilation != (1, 1)
            or conv.padding_mode != 'zeros'
            or conv.padding != same_size
        ):
            raise ValueError(
                'QueryBands.convolve needs a stride-1, zero-padded convolution that keeps the '
                f'size, got {conv}'
            )
        batch, _, height, width = queries.shape
        halo = conv.padding[0]
        band_elements = QUERY_BAND_ELEMENTS if band_elements is None else band_elements
        rows = max(1, band_elements // (batch * width * conv.out_channels))
        bands = []
        for r0 in range(0, height, rows):
            r1 = min(r0 + rows, height)
            lo, hi = max(r0 - halo, 0), min(r1 + halo, height)
            # Rows missing at the map's top or bottom come from the convolution's own zero
            # padding (a padded copy of the band would be a fresh allocation); the padding is
            # symmetric, so surplus output rows are cut off.
            missing_top, missing_bottom = lo - (r0 - halo), (r1 + halo) - hi
            pad = max(missing_top, missing_bottom)
            band = queries[:, :, lo:hi].contiguous(memory_format=torch.channels_last)
            out = F.conv2d(band, conv.weight, conv.bias, padding=(pad, conv.padding[1]))
            first = pad - missing_top
            bands.append(out.permute(0, 2, 3, 1)[:, first : first + r1 - r0].contiguous())
        return cls(bands)

    def rows(self, start: int, end: int, out: Tensor | None = None) -> Tensor:
        """(B, end - start, W', D) rows [start, end): a view when inside one band.

        Rows across bands are concatenated, into ``out`` ((B, end - start, W', D)) if given.
        """
        first = bisect.bisect_right(self._starts, start) - 1
        last = bisect.bisect_left(self._starts, end) - 1
        pieces = []
        for i in range(first, last + 1):
            band = self._bands[i]
            if band is None:
                raise RuntimeError(f'query rows {start}-{end} were already released')
            b0 = self._starts[i]
            pieces.append(band[:, max(start - b0, 0) : min(end, self._starts[i + 1]) - b0])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1, out=out)

    def release_before(self, row: int) -> None:
        """Drops every band that ends at or before ``row``."""
        for i, band_end in enumerate(self._starts[1:]):
            if band_end <= row:
                self._bands[i] = None

    def copy(self) -> QueryBands:
        """Another handle on the same bands, whose releases leave this one intact."""
        return QueryBands(self._bands)

    def to_tensor(self) -> Tensor:
        """The whole (B, H', W', D) map (all bands must still be held)."""
        return self.rows(0, self.shape[1])


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
            return _triton_attention(
                queries, keys, values, window_ratio, num_heads, query_transform, out
            )
        # Compilers and exporters cannot take the Triton launches: the tiles compute the same.
        kernel = 'matmul'
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


def _triton_attention(
    queries: Tensor | QueryBands,
    keys: Tensor,
    values: Tensor,
    window_ratio: float,
    num_heads: int,
    query_transform: QueryTransform | None,
    out: Tensor | None,
) -> Tensor:
    """:func:`windowed_attention` by the fused Triton kernels.

    The query transform runs once on the whole (B, H'W', D_in) map (in PyTorch, which also
    carries its gradient): the kernels take projected queries. Memory is one projected query
    map more than the tiles hold. Under autocast, queries, keys and values enter the kernels
    in autocast's dtype and the output keeps the values' dtype.
    """
    if isinstance(queries, QueryBands):
        queries = queries.to_tensor()
    if query_transform is not None:
        batch, out_h, out_w, dim_in = queries.shape
        flat = queries.reshape(batch, out_h * out_w, dim_in)
        queries = query_transform(flat, None).view(batch, out_h, out_w, -1)
    differentiable = torch.is_grad_enabled() and any(
        t.requires_grad for t in (queries, keys, values)
    )
    if out is not None and differentiable:
        raise ValueError('out= is only supported without autograd and outside tracing')
    device_type = values.device.type
    autocast = torch.is_autocast_enabled(device_type)
    out_dtype = values.dtype if autocast else torch.result_type(values, keys)
    if autocast:
        # The kernels' products are matrix products, which autocast runs in its dtype (the
        # tiles' batched products do): the fast mode, softmax and sums still in float32.
        low = torch.get_autocast_dtype(device_type)
        queries, keys, values = (t.to(low) for t in (queries, keys, values))
    if out is not None and not out.is_contiguous():
        # The kernels write contiguous (B, H', W', C) rows.
        return out.copy_(
            triton_windowed_attention(
                queries, keys, values, window_ratio, num_heads, out_dtype=out_dtype
            )
        )
    return triton_windowed_attention(
        queries, keys, values, window_ratio, num_heads, out=out, out_dtype=out_dtype
    )


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
        query_index, key_index, key_valid = cols.padded_indices(device)
        group, offset = [], []
        for g, (start, end) in enumerate(zip(cols.query_start, cols.query_end)):
            group += [g] * (end - start)
            offset += range(end - start)
        return cls(
            query_index=query_index,
            key_index=key_index,
            key_padding=~key_valid if cols.keys_padded else None,
            key_count=tuple(e - s for s, e in zip(cols.key_start, cols.key_end)),
            column_group=torch.tensor(group, device=device),
            column_offset=torch.tensor(offset, device=device),
            column_start=(*cols.query_start, cols.query_end[-1]),
        )

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
        self._padded_slots: dict[tuple[int, int, int], Tensor | None] = {}
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
        with a bias instead. Built from host-side counts, so no device synchronisation is
        needed.
        """
        if self.key_bias is not None:
            return None
        cache_key = (groups.start, groups.stop, n_rows)
        if cache_key not in self._padded_slots:
            width = self.key_index.shape[1]
            slots = [
                (g * n_rows + r) * width + j
                for g, count in enumerate(self.key_count[groups])
                for r in range(n_rows)
                for j in range(count, width)
            ]
            device = self.key_index.device
            self._padded_slots[cache_key] = (
                torch.tensor(slots, dtype=torch.long, device=device) if slots else None
            )
        return self._padded_slots[cache_key]


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

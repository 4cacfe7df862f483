"""AnyUp's windowed attention as fused Triton kernels: the ``'triton'`` attention kernel.

What it computes is :func:`~anyup_plugin.core.attention.windowed_attention`'s contract
(and :func:`~anyup_plugin.core.attention.reference.dense_window_attention_reference`'s
definition): every output pixel attends, per head, to exactly the keys of its window
(:mod:`~anyup_plugin.core.attention.geometry`, the one definition of the window),
the heads' softmax maps are averaged, and the average weighs the full-width values. Averaging
the maps commutes with the value product, so one value product per query block serves all
heads; nothing is approximated.

The algorithm
-------------
Window tables (int32, on the device, cached per output size, feature size, ratio and
device): the key-row range of every output row, the key-column range of every output
column, and, for the backward, the output-row (column) range whose windows may hold each
feature row (column). Bounds are non-decreasing along each axis, so all of these are ranges.

A program of the forward owns ``BQ`` consecutive output columns of one output row. Their
windows share their rows and their column ranges overlap, so the union of their windows is
one rectangle of keys; the program walks that rectangle (flattened) in blocks of ``BK`` keys
and masks every (query, key) pair outside the query's own window.

1. ``forward_stats_kernel``, grid (B H', W'/BQ): all heads' logits at once as one batched
   ``tl.dot`` of (heads, BQ, head dim) queries with (heads, head dim, BK) keys; an online
   maximum ``m`` and sum ``l = sum exp(s - m)`` per head and query (the sum rescaled whenever
   the maximum grows), written out (B, H', W', heads).
2. ``forward_values_kernel``, grid (B H', W'/BQ, C/BC): the logits again, each head's
   probabilities ``exp(s - m) / (heads l)`` summed over heads into one (BQ, BK) map, times
   the (BK, BC) values, accumulated over the window; each output element is written once.

The backward recomputes the window softmax from ``m`` and ``l`` (``dP = dO . V``,
``delta_n = sum_k p_n dP``, ``dS_n = p_n (dP - delta_n) / heads``):

3. ``backward_query_kernel``, grid (B H', W'/BQ): two passes over the window, one for
   ``delta`` (stored), one for ``dQ_n = sum_k dS_n K_n``.
4. ``backward_key_kernel``, grid (B h, w/BK): a program owns ``BK`` consecutive keys of one
   feature row and walks the rectangle of queries whose windows may hold them:
   ``dK_n = sum_q dS_n Q_n``.
5. ``backward_value_kernel``, grid (B h, w/BK, C/BC): likewise, ``dV = sum_q P dO``.

The key-centric passes own their outputs: no atomics, and the summation order is fixed.

Block shapes are powers of two, at least 16 in every ``tl.dot`` dimension (the head
dimension is zero-padded to a power of two of at least 16, the heads to a power of two);
ragged edges are masked. ``BQ = 32`` queries (16 for outputs at most 16 wide), ``BK`` 16 or
32 keys, ``BC`` up to 128 channels. Channels above ``BC`` are further grid programs, which
recompute the logits; the values are never copied.

Precision: float32 inputs use IEEE float32 products (``input_precision='ieee'``: no TF32
unless the caller asks for it); the softmax runs in float32, in float64 as soon as an input
is float64 (then everything is float64). Half-precision queries and keys (autocast) keep
their dtype in the products, with float32 accumulation and softmax: the documented fast mode.

Queries are taken as they are: a query transform (AnyUp's normalisation and projection) is
applied to the whole query map beforehand, in PyTorch, which also carries its gradient.
A logit bound is not needed: the kernels always subtract the maximum.

Running it: on CUDA tensors with Triton installed, or on CPU tensors under
``TRITON_INTERPRET=1`` (Triton's interpreter: slow, for tests). The forward has no host
synchronisation: tables are cached, grids and block shapes come from shapes alone.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import functools
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..constant_cache import device_table
from ..precision import compute_dtype
from .geometry import _axis_window_bounds
from .queries import QueryBands, QueryTransform

__all__ = [
    'TRITON_INPUT_PRECISIONS',
    'check_triton_can_run',
    'check_triton_importable',
    'recorded_launches',
    'triton_attention',
    'triton_is_available',
    'triton_windowed_attention',
]

logger = logging.getLogger(__name__)

#: ``input_precision`` of the kernels' float32 products: ``'ieee'`` (the default, exact
#: float32) or TF32 variants a caller may opt into.
TRITON_INPUT_PRECISIONS = ('ieee', 'tf32', 'tf32x3')

#: The other attention kernels, named in errors.
_ALTERNATIVES = "attention_kernel='matmul', 'sdpa' or 'auto'"

_KERNEL_MODULE = 'anyup_plugin.core.attention._triton_kernels'


@functools.cache
def triton_is_available() -> bool:
    """Whether ``triton`` (and its language module) imports."""
    try:
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``), read now."""
    import triton

    knobs = getattr(triton, 'knobs', None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


def check_triton_importable() -> None:
    """Raises ``ImportError`` naming the other attention kernels unless triton imports."""
    if not triton_is_available():
        raise ImportError(
            "attention_kernel='triton' needs the triton package, which does not import; "
            f'install triton or use {_ALTERNATIVES}'
        )


def check_triton_can_run(device: torch.device) -> None:
    """Raises unless the Triton kernels can run on ``device``.

    Raises:
        ImportError: ``triton`` does not import.
        RuntimeError: ``device`` is not a CUDA device and Triton's interpreter is off.
    """
    check_triton_importable()
    if device.type != 'cuda' and not _interpreting():
        raise RuntimeError(
            f"attention_kernel='triton' cannot run on {device.type} tensors: Triton runs on "
            'CUDA devices (on the CPU only in its interpreter, TRITON_INTERPRET=1, for '
            f'testing); use {_ALTERNATIVES}'
        )


@functools.lru_cache(maxsize=2)
def _kernel_module(interpret: bool) -> ModuleType:
    """The kernels, executed as a fresh module for the Triton mode ``interpret``.

    ``@triton.jit`` chooses between the compiler and the interpreter when the module runs, so
    each mode gets its own instance (the cache key is the mode in force when it runs).
    """
    spec = importlib.util.find_spec(_KERNEL_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    logger.debug('Triton window-attention kernels loaded (interpreter: %s)', interpret)
    return module


def kernels() -> ModuleType | _RecordedLaunches:
    """The kernel module for the Triton mode in force now (compiled or interpreted).

    Inside :func:`recorded_launches`, a stand-in that records each launch instead.
    """
    module = _kernel_module(_interpreting())
    if _launch_records:
        return _RecordedLaunches(module, _launch_records[-1])
    return module


#: The counters of the :func:`recorded_launches` blocks in force, innermost last.
_launch_records: list[collections.Counter[str]] = []


class _RecordedLaunches:
    """The kernel module's stand-in while launches are recorded: ``kernel[grid](...)``
    counts one launch of ``kernel`` and runs nothing (its outputs stay unwritten)."""

    def __init__(self, module: ModuleType, counter: collections.Counter[str]) -> None:
        self.tl = module.tl
        self._module, self._counter = module, counter

    def __getattr__(self, name: str) -> _RecordedKernel:
        getattr(self._module, name)  # only the module's own kernels
        return _RecordedKernel(name, self._counter)


@dataclass(frozen=True)
class _RecordedKernel:
    name: str
    counter: collections.Counter[str]

    def __getitem__(self, grid: tuple[int, ...]) -> Callable[..., None]:
        def launch(*args: object, **kwargs: object) -> None:
            self.counter[self.name] += 1

        return launch


@contextlib.contextmanager
def recorded_launches() -> Iterator[collections.Counter[str]]:
    """Records the Triton kernels' launches (by kernel name) instead of running them.

    For counting the kernels a forward launches (see :mod:`anyup_plugin.core.kernel_count`)
    without a GPU: the attention's outputs are left unwritten, so results inside the block
    are meaningless. Not thread-safe.
    """
    counter: collections.Counter[str] = collections.Counter()
    _launch_records.append(counter)
    try:
        yield counter
    finally:
        _launch_records.pop()


@dataclass(frozen=True)
class _AxisTables:
    """Window tables of one axis, int32 on the device.

    Attributes:
        start, end: (out_size,) key range ``[start, end)`` of every output index.
        first, last: (in_size,) output range ``[first, last)`` whose windows may hold each
            feature index (empty when ``first >= last``).
        max_keys: The widest window along the axis.
    """

    start: Tensor
    end: Tensor
    first: Tensor
    last: Tensor
    max_keys: int


@functools.lru_cache(maxsize=128)
def _axis_tables(
    out_size: int, in_size: int, window_ratio: float, device: torch.device
) -> _AxisTables:
    """The window tables of one axis, built once per arguments and kept on ``device``."""
    start, end = _axis_window_bounds(out_size, in_size, window_ratio)
    # Both bounds are non-decreasing, so the outputs whose window holds feature index r,
    # {i: start_i <= r < end_i}, are the range [#(end <= r), #(start <= r)).
    first = [bisect.bisect_right(end, r) for r in range(in_size)]
    last = [bisect.bisect_right(start, r) for r in range(in_size)]

    def table(values: list[int] | tuple[int, ...]) -> Tensor:
        # Written by the device: no host copy, even on the first call for a shape.
        with torch.inference_mode(False):
            return device_table(values, device, torch.int32)

    return _AxisTables(
        table(start),
        table(end),
        table(first),
        table(last),
        max(e - s for s, e in zip(start, end)),
    )


def _power_of_two_at_least(n: int, minimum: int = 1) -> int:
    return max(minimum, 1 << max(0, n - 1).bit_length())


@dataclass(frozen=True)
class _Geometry:
    """Everything the kernels need besides the tensors: tables, sizes and block shapes."""

    rows: _AxisTables
    cols: _AxisTables
    out_h: int
    out_w: int
    feat_h: int
    feat_w: int
    channels: int
    num_heads: int
    head_dim: int
    heads_padded: int  # NHP
    head_dim_padded: int  # HDP
    query_block: int  # BQ
    key_block: int  # BK: keys per block of a query block's window
    key_column_block: int  # BK of the key-centric kernels: feature columns per program
    channel_block: int  # BC

    @classmethod
    def build(
        cls,
        out_size: tuple[int, int],
        feat_size: tuple[int, int],
        channels: int,
        num_heads: int,
        head_dim: int,
        window_ratio: float,
        device: torch.device,
    ) -> _Geometry:
        rows = _axis_tables(out_size[0], feat_size[0], window_ratio, device)
        cols = _axis_tables(out_size[1], feat_size[1], window_ratio, device)
        geometry = cls(
            rows=rows,
            cols=cols,
            out_h=out_size[0],
            out_w=out_size[1],
            feat_h=feat_size[0],
            feat_w=feat_size[1],
            channels=channels,
            num_heads=num_heads,
            head_dim=head_dim,
            heads_padded=_power_of_two_at_least(num_heads),
            head_dim_padded=_power_of_two_at_least(head_dim, 16),
            query_block=16 if out_size[1] <= 16 else 32,
            key_block=16 if rows.max_keys * cols.max_keys <= 16 else 32,
            key_column_block=16 if feat_size[1] <= 16 else 32,
            channel_block=min(128, _power_of_two_at_least(channels, 16)),
        )
        geometry.check_block_shapes()
        return geometry

    def check_block_shapes(self) -> None:
        """Asserts what the compiler (not the interpreter) needs of the block shapes."""
        for name in ('head_dim_padded', 'query_block', 'key_block', 'key_column_block'):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise AssertionError(f'{name} must be a power of two >= 16, got {value}')
        for name in ('heads_padded', 'channel_block'):
            value = getattr(self, name)
            if value & (value - 1):
                raise AssertionError(f'{name} must be a power of two, got {value}')

    def constants(self, precision: str, acc: torch.dtype, channels: bool = True) -> dict:
        """The kernels' compile-time arguments."""
        tl = kernels().tl
        consts = {
            'NH': self.num_heads,
            'HD': self.head_dim,
            'NHP': self.heads_padded,
            'HDP': self.head_dim_padded,
            'BQ': self.query_block,
            'PRECISION': precision,
            'ACC': tl.float64 if acc == torch.float64 else tl.float32,
        }
        if channels:
            consts['BC'] = self.channel_block
        return consts


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _forward(
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    geo: _Geometry,
    out: Tensor,
    acc: torch.dtype,
    precision: str,
) -> tuple[Tensor, Tensor]:
    """Runs passes 1 and 2 into ``out``; returns the softmax statistics ``(m, l)``."""
    batch = queries.shape[0]
    kern = kernels()
    stats_shape = (batch, geo.out_h, geo.out_w, geo.num_heads)
    m = torch.empty(stats_shape, dtype=acc, device=queries.device)
    l = torch.empty(stats_shape, dtype=acc, device=queries.device)  # noqa: E741
    grid = (batch * geo.out_h, _cdiv(geo.out_w, geo.query_block))
    tables = (geo.rows.start, geo.rows.end, geo.cols.start, geo.cols.end)
    sizes = (geo.out_h, geo.out_w, geo.feat_h, geo.feat_w)
    kern.forward_stats_kernel[grid](
        queries,
        keys,
        m,
        l,
        *tables,
        *sizes,
        BK=geo.key_block,
        **geo.constants(precision, acc, channels=False),
    )
    kern.forward_values_kernel[(*grid, _cdiv(geo.channels, geo.channel_block))](
        queries,
        keys,
        values,
        m,
        l,
        out,
        *tables,
        *sizes,
        geo.channels,
        BK=geo.key_block,
        **geo.constants(precision, acc),
    )
    return m, l


def _backward(
    grad_out: Tensor,
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    m: Tensor,
    l: Tensor,  # noqa: E741
    geo: _Geometry,
    precision: str,
    needs: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Runs kernels 3-5 for the gradients ``needs`` asks for (queries, keys, values)."""
    kern = kernels()
    batch = queries.shape[0]
    acc = m.dtype
    sizes = (geo.out_h, geo.out_w, geo.feat_h, geo.feat_w)
    grad_q = grad_k = grad_v = None
    consts = geo.constants(precision, acc)
    key_grid = (batch * geo.feat_h, _cdiv(geo.feat_w, geo.key_column_block))
    key_tables = (geo.rows.first, geo.rows.last, geo.cols.first, geo.cols.last)
    if needs[0] or needs[1]:
        delta = torch.empty_like(m)
        grad_q = torch.empty_like(queries)
        kern.backward_query_kernel[(batch * geo.out_h, _cdiv(geo.out_w, geo.query_block))](
            queries,
            keys,
            values,
            grad_out,
            m,
            l,
            delta,
            grad_q,
            geo.rows.start,
            geo.rows.end,
            geo.cols.start,
            geo.cols.end,
            *sizes,
            geo.channels,
            BK=geo.key_block,
            **consts,
        )
    if needs[1]:
        grad_k = torch.empty_like(keys)
        kern.backward_key_kernel[key_grid](
            queries,
            keys,
            values,
            grad_out,
            m,
            l,
            delta,
            grad_k,
            geo.cols.start,
            geo.cols.end,
            *key_tables,
            *sizes,
            geo.channels,
            BK=geo.key_column_block,
            **consts,
        )
    if needs[2]:
        grad_v = torch.empty_like(values)
        kern.backward_value_kernel[(*key_grid, _cdiv(geo.channels, geo.channel_block))](
            queries,
            keys,
            grad_out,
            m,
            l,
            grad_v,
            geo.cols.start,
            geo.cols.end,
            *key_tables,
            *sizes,
            geo.channels,
            BK=geo.key_column_block,
            **consts,
        )
    return (grad_q if needs[0] else None), grad_k, grad_v


class _TritonWindowAttention(torch.autograd.Function):
    """The kernels as an autograd function: forward passes 1-2, backward kernels 3-5."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        geo: _Geometry,
        out_dtype: torch.dtype,
        acc: torch.dtype,
        precision: str,
    ) -> Tensor:
        out = values.new_empty(
            (queries.shape[0], geo.out_h, geo.out_w, geo.channels), dtype=out_dtype
        )
        m, l = _forward(queries, keys, values, geo, out, acc, precision)  # noqa: E741
        ctx.save_for_backward(queries, keys, values, m, l)
        ctx.geo, ctx.precision = geo, precision
        return out

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor
    ) -> tuple[Tensor | None, ...]:
        queries, keys, values, m, l = ctx.saved_tensors  # noqa: E741
        grads = _backward(
            grad_out.contiguous(),
            queries,
            keys,
            values,
            m,
            l,
            ctx.geo,
            ctx.precision,
            tuple(ctx.needs_input_grad[:3]),
        )
        return (*grads, None, None, None, None)


def triton_windowed_attention(
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    window_ratio: float,
    num_heads: int,
    out: Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    input_precision: str = 'ieee',
) -> Tensor:
    """Head-averaged softmax attention of every output pixel over its window, fused in Triton.

    The contract of :func:`~anyup_plugin.core.attention.windowed_attention` without a
    query transform (apply it to the queries first); differentiable in all three inputs.

    Args:
        queries: (B, H', W', D) projected, scaled queries, channels-last.
        keys: (B, h, w, D) projected keys.
        values: (B, h, w, C) values.
        window_ratio: Window half-size relative to the image; ``<= 0`` attends to all keys.
        num_heads: Heads D is split evenly among.
        out: Optional contiguous (B, H', W', C) tensor of dtype ``out_dtype`` to write into
            (only without autograd).
        out_dtype: The result's dtype; default ``torch.result_type(values, keys)``.
        input_precision: Of the float32 products, one of :data:`TRITON_INPUT_PRECISIONS`;
            ``'ieee'`` keeps IEEE float32 (no TF32).

    Returns:
        (B, H', W', C) attention output (``out`` if given).

    Raises:
        ImportError: Triton does not import.
        RuntimeError: The tensors are on a device Triton cannot run on.
        ValueError: Inconsistent shapes, devices or arguments.
    """
    if input_precision not in TRITON_INPUT_PRECISIONS:
        raise ValueError(
            f'input_precision must be one of {TRITON_INPUT_PRECISIONS}, got {input_precision!r}'
        )
    _check_shapes(queries, keys, values, num_heads)
    check_triton_can_run(queries.device)
    batch, out_h, out_w, dim = queries.shape
    _, feat_h, feat_w, channels = values.shape
    if out_dtype is None:
        out_dtype = torch.result_type(values, keys)
    # float64 anywhere means float64 throughout; otherwise the softmax runs in float32 and
    # the queries and keys meet in one dtype (half precision under autocast: the fast mode).
    acc = compute_dtype(queries.dtype, keys.dtype, values.dtype)
    if acc == torch.float64:
        queries, keys, values = (t.to(acc) for t in (queries, keys, values))
    elif queries.dtype != keys.dtype:
        qk = torch.promote_types(queries.dtype, keys.dtype)
        queries, keys = queries.to(qk), keys.to(qk)
    queries, keys, values = (t.contiguous() for t in (queries, keys, values))
    geo = _Geometry.build(
        (out_h, out_w),
        (feat_h, feat_w),
        channels,
        num_heads,
        dim // num_heads,
        float(window_ratio),
        queries.device,
    )
    differentiable = torch.is_grad_enabled() and any(
        t.requires_grad for t in (queries, keys, values)
    )
    if differentiable:
        if out is not None:
            raise ValueError('out= is only supported without autograd')
        return _TritonWindowAttention.apply(
            queries, keys, values, geo, out_dtype, acc, input_precision
        )
    shape = (batch, out_h, out_w, channels)
    if out is None:
        out = values.new_empty(shape, dtype=out_dtype)
    elif (
        tuple(out.shape) != shape
        or out.dtype != out_dtype
        or out.device != values.device
        or not out.is_contiguous()
    ):
        raise ValueError(
            f'out must be a contiguous {out_dtype} tensor of shape {shape} on {values.device}, '
            f'got {out.dtype} {tuple(out.shape)} on {out.device}'
        )
    _forward(queries, keys, values, geo, out, acc, input_precision)
    return out


def _check_shapes(queries: Tensor, keys: Tensor, values: Tensor, num_heads: int) -> None:
    if queries.dim() != 4 or keys.dim() != 4 or values.dim() != 4:
        raise ValueError(
            'queries, keys and values must be 4-D (B, H, W, channels), got shapes '
            f'{tuple(queries.shape)}, {tuple(keys.shape)}, {tuple(values.shape)}'
        )
    if (
        queries.shape[0] != keys.shape[0]
        or keys.shape[:3] != values.shape[:3]
        or queries.shape[-1] != keys.shape[-1]
    ):
        raise ValueError(
            "queries (B, H', W', D), keys (B, h, w, D) and values (B, h, w, C) disagree: "
            f'{tuple(queries.shape)}, {tuple(keys.shape)}, {tuple(values.shape)}'
        )
    if num_heads < 1 or queries.shape[-1] % num_heads:
        raise ValueError(
            f'num_heads must divide the query width {queries.shape[-1]}, got {num_heads}'
        )
    if not (queries.device == keys.device == values.device):
        raise ValueError(
            f'queries, keys and values must be on one device, got {queries.device}, '
            f'{keys.device}, {values.device}'
        )


def triton_attention(
    queries: Tensor | QueryBands,
    keys: Tensor,
    values: Tensor,
    window_ratio: float,
    num_heads: int,
    query_transform: QueryTransform | None,
    out: Tensor | None,
) -> Tensor:
    """:func:`~anyup_plugin.core.attention.windowed_attention` by the fused Triton kernels.

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

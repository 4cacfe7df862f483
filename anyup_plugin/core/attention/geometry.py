"""The window every kernel attends over: AnyUp's one definition of which keys a query sees.

Output pixel ``(i, j)`` of an ``H' x W'`` output attends to feature rows
``[floor(clamp(y - r, 0, 1) * h), ceil(clamp(y + r, 0, 1) * h))`` with ``y = (i + 0.5) / H'``
and to the analogous columns. The window is a rectangle whose rows depend only on ``i`` and
whose columns depend only on ``j``. Consecutive output rows with the same feature-row range
form a *row group* (:func:`window_groups`), likewise for columns; all queries of one
(row group, column group) block share exactly the same keys, which is what the kernels
exploit.

The bounds are computed in plain Python emulating the float32 arithmetic the published models
were trained with, so the windows are fixed by the shapes alone: no data-dependent control
flow, and compilers keep them as constants.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..constant_cache import device_table

Size = tuple[int, int]

__all__ = ['AxisGroups', 'window_bounds', 'window_groups', 'window_pair_count']

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
    return device_table(start, device), device_table(end, device)


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
            start = device_table(starts, device)[:, None]
            count = device_table(ends, device)[:, None] - start
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
        window_ratio: As in :func:`~anyup_plugin.core.attention.windowed_attention`.

    Returns:
        ``sum over output pixels of the keys in their window``.
    """
    per_axis = []
    for n_out, n_in in zip(out_size, in_size):
        start, end = _axis_window_bounds(int(n_out), int(n_in), float(window_ratio))
        per_axis.append(sum(e - s for s, e in zip(start, end)))
    return per_axis[0] * per_axis[1]

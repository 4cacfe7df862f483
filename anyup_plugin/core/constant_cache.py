"""Tensors that depend on shapes alone, built once per shape and device and kept.

On CUDA every small operation is a kernel launch; a table or map that is a function of the
shapes (window tables, tap counts, grid coordinates) would cost a few launches per call, and a
table built from a Python list a host-to-device copy. :func:`shape_constant` builds such a
tensor on the first call for its arguments and hands out the same tensor afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

import torch
from torch import Tensor

from .checks import is_tracing

__all__ = ['device_table', 'shape_constant']

P = ParamSpec('P')
R = TypeVar('R')


def shape_constant(maxsize: int = 64) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorates a function of hashable arguments (sizes, devices, dtypes) that builds tensors.

    The result is cached per arguments (least recently used beyond ``maxsize``). It is built
    outside ``torch.inference_mode`` (an inference tensor could not serve a later call with
    autograd) and never while tracing, where it is built afresh so that a compiled or exported
    graph holds no tensor made outside it. Callers must not write into what they get.
    """

    def decorate(build: Callable[P, R]) -> Callable[P, R]:
        @functools.lru_cache(maxsize=maxsize)
        def cached(*args: P.args, **kwargs: P.kwargs) -> R:
            with torch.inference_mode(False):
                return build(*args, **kwargs)

        @functools.wraps(build)
        def get(*args: P.args, **kwargs: P.kwargs) -> R:
            if is_tracing():
                return build(*args, **kwargs)
            return cached(*args, **kwargs)

        get.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return get

    return decorate


def device_table(
    values: Sequence[int], device: torch.device | str, dtype: torch.dtype = torch.long
) -> Tensor:
    """A 1-D integer tensor of ``values`` made on ``device`` without copying host data.

    ``torch.tensor(values, device='cuda')`` copies a host buffer to the device and waits for
    it (``torch.cuda.set_sync_debug_mode('error')`` refuses it). Here the values are written
    by the device itself: each run of an arithmetic progression (window bounds and group
    tables are made of a few such runs) is one ``arange`` (or ``fill_``) into its slice.

    Args:
        values: The integers.
        device: Where the table lives.
        dtype: Its integer dtype.

    Returns:
        (len(values),) tensor equal to ``torch.tensor(values, dtype=dtype)``.
    """
    if is_tracing():
        # A constant of the graph: placed on the device once, with the compiled program.
        return torch.tensor(values, dtype=dtype, device=device)
    table = torch.empty(len(values), dtype=dtype, device=device)
    start = 0
    while start < len(values):
        step = values[start + 1] - values[start] if start + 1 < len(values) else 0
        end = start + 1
        while end < len(values) and values[end] - values[end - 1] == step:
            end += 1
        if step == 0:
            table[start:end].fill_(values[start])
        else:
            first = values[start]
            torch.arange(first, first + step * (end - start), step, out=table[start:end])
        start = end
    return table

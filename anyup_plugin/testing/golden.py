"""Golden tests of published upsamplers: reproducible perturbed weights and one error measure.

A golden file holds inputs and the published implementation's outputs, not weights: both the
script that ran the published code and this project's test rebuild the same weights with
:func:`perturbed_state_dict`, from the key names and shapes alone. Every floating-point entry
is drawn afresh, so an implementation that ignores a parameter (or a buffer) fails.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ['GOLDEN_TOLERANCE', 'golden_errors', 'perturbed_state_dict']

#: An output is exact when its relative Frobenius error and its largest absolute error
#: relative to the largest |expected| are both at most these (float32 against float64).
GOLDEN_TOLERANCE: dict[str, float] = {'relative_frobenius': 1e-4, 'max_abs_relative': 1e-3}


def perturbed_state_dict(template: Mapping[str, Tensor], seed: int = 0) -> dict[str, Tensor]:
    """Random, well-scaled values for every floating-point entry of ``template``.

    Each entry depends only on ``seed``, its key and its shape: weights with a fan-in (2-D and
    more) are N(0, 1 / fan_in), running variances U(0.5, 1.5), other vectors and scalars
    N(0, 0.1) around their role's neutral value (1 for ``weight``/``scale``/``gamma`` of one
    dimension, 0 otherwise). Integer buffers (``num_batches_tracked``) are copied.

    Args:
        template: A state dict (values only give shapes and dtypes).
        seed: Selects the draw.

    Returns:
        A new state dict with the same keys, shapes and dtypes.
    """
    out: dict[str, Tensor] = {}
    for key, value in template.items():
        if not torch.is_floating_point(value):
            out[key] = value.clone()
            continue
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
        shape = tuple(value.shape)
        leaf = key.rsplit('.', 1)[-1]
        if leaf == 'running_var':
            drawn = 0.5 + torch.rand(shape, generator=generator, dtype=torch.float64)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            drawn = torch.randn(shape, generator=generator, dtype=torch.float64) / math.sqrt(fan_in)
        else:
            neutral = 1.0 if leaf in ('weight', 'scale', 'gamma') else 0.0
            drawn = neutral + 0.1 * torch.randn(shape, generator=generator, dtype=torch.float64)
        out[key] = drawn.to(value.dtype)
    return out


def golden_errors(actual: Tensor, expected: Tensor) -> dict[str, float]:
    """Relative Frobenius error and largest absolute error relative to the largest |expected|.

    Args:
        actual: Any shape.
        expected: The same shape.

    Returns:
        ``{'relative_frobenius': ..., 'max_abs_relative': ...}``, comparable with
        :data:`GOLDEN_TOLERANCE`.
    """
    if actual.shape != expected.shape:
        raise ValueError(f'shapes differ: {tuple(actual.shape)} vs {tuple(expected.shape)}')
    a, e = actual.detach().double(), expected.detach().double()
    scale = e.abs().max().clamp_min(1e-30)
    return {
        'relative_frobenius': float((a - e).norm() / e.norm().clamp_min(1e-30)),
        'max_abs_relative': float((a - e).abs().max() / scale),
    }

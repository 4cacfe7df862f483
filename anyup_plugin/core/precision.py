"""The floating-point type AnyUp computes in.

AnyUp's softmaxes, normalisations and rotary angles run in float32 even when their inputs are
half precision (under autocast, or a model cast to bfloat16): their exponentials and sums of
squares would lose too much in 8 or 11 significand bits. float64 is how numerics are checked,
so a float64 model or input must compute in float64 throughout, never round through float32.
"""

from __future__ import annotations

import torch

__all__ = ['compute_dtype']


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The widest of ``dtypes`` and float32: float32 for half-precision or float32 inputs,
    float64 as soon as one of them is float64.

    Args:
        *dtypes: Floating-point dtypes of the tensors (and parameters) that meet.

    Returns:
        ``torch.float32`` or ``torch.float64``.
    """
    result = torch.float32
    for dtype in dtypes:
        result = torch.promote_types(result, dtype)
    return result

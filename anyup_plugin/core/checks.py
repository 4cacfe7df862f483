"""Input validation shared by every public entry point.

Each check raises ``ValueError`` (or ``TypeError`` for non-tensors) with a message that
names the argument, what it got and what it expected, so a user can fix the call without
reading the source.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    'check_feature_map',
    'check_finite',
    'check_image',
    'check_output_size',
    'check_same_batch_and_device',
]


def _check_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(x).__name__}')
    return x


def check_finite(x: Tensor, name: str) -> None:
    """Raises if ``x`` holds NaN or infinite values."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f'{name} contains {n_bad} NaN or infinite value(s); expected finite values '
            f'(shape {tuple(x.shape)})'
        )


def check_feature_map(x: object, name: str = 'features', channels: int | None = None) -> Tensor:
    """Checks a (B, C, H, W) floating-point map with no empty dimension and finite values.

    Args:
        x: The tensor to check.
        name: Argument name used in error messages.
        channels: If given, the required channel count.

    Returns:
        The tensor itself.
    """
    x = _check_tensor(x, name)
    if x.dim() != 4:
        raise ValueError(
            f'{name} must have 4 dimensions (B, C, H, W), got {x.dim()} with shape {tuple(x.shape)}'
        )
    if any(s == 0 for s in x.shape):
        raise ValueError(f'{name} must have no zero-sized dimension, got shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise ValueError(f'{name} must be a floating-point tensor, got dtype {x.dtype}')
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f'{name} must have {channels} channels (dim 1), got shape {tuple(x.shape)}'
        )
    check_finite(x, name)
    return x


def check_image(x: object, name: str = 'image') -> Tensor:
    """Checks a (B, 3, H, W) image tensor (see :func:`check_feature_map`)."""
    return check_feature_map(x, name, channels=3)


def check_same_batch_and_device(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Raises unless ``a`` and ``b`` share batch size and device."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f'{name_a} and {name_b} must have the same batch size, got {a.shape[0]} '
            f'({name_a} {tuple(a.shape)}) and {b.shape[0]} ({name_b} {tuple(b.shape)})'
        )
    if a.device != b.device:
        raise ValueError(
            f'{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}'
        )


def check_output_size(
    size: object, default: tuple[int, int], name: str = 'output_size'
) -> tuple[int, int]:
    """Normalises an output size to ``(height, width)``.

    Args:
        size: ``None`` (use ``default``), a positive int (square) or a pair of positive ints.
        default: The size used when ``size`` is ``None``.
        name: Argument name used in error messages.

    Returns:
        ``(height, width)`` as Python ints.
    """
    if size is None:
        return int(default[0]), int(default[1])
    if isinstance(size, Tensor):
        size = size.tolist()
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, Sequence)
        or isinstance(size, str)
        or len(size) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) for s in size)
    ):
        raise ValueError(f'{name} must be None, an int or a pair of ints (H, W), got {size!r}')
    if any(s <= 0 for s in size):
        raise ValueError(f'{name} must be positive, got {tuple(size)}')
    return int(size[0]), int(size[1])

"""Input validation shared by every public entry point.

Each check raises ``ValueError`` (or ``TypeError`` for non-tensors) with a message that
names the argument, what it got and what it expected, so a user can fix the call without
reading the source.

Checks of shapes and types run at trace time too (``torch.export``, ``torch.compile``);
checks of values (NaN, infinities) need the data, so they are skipped while tracing rather
than putting data-dependent control flow into the graph.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    'available_memory_bytes',
    'check_all_finite',
    'check_feature_map',
    'check_finite',
    'check_image',
    'check_output_size',
    'check_output_sizes',
    'check_result_fits',
    'check_same_batch_and_device',
    'is_tracing',
]

logger = logging.getLogger(__name__)

Size = tuple[int, int]


def is_tracing() -> bool:
    """Whether ``torch.compile`` or ``torch.export`` is tracing the call."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _check_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(x).__name__}')
    return x


def check_finite(x: Tensor, name: str) -> None:
    """Raises if ``x`` holds NaN or infinite values (skipped while tracing)."""
    check_all_finite([(x, name)])


def check_all_finite(named: Sequence[tuple[Tensor, str]], wait: bool | None = None) -> None:
    """Raises if any tensor holds NaN or infinite values, naming the first that does.

    On the CPU (or with ``wait=True``; not under ``forced_device_profile('accelerator')``,
    which takes the asynchronous path) all tensors are tested with one host-device
    synchronisation (one on the error path per tensor) and a ``ValueError`` names the
    offending tensor. On other devices the default (``wait=None``) never synchronises: the
    test is queued as an asynchronous device assertion (``torch._assert_async``) naming all
    the tensors, which fails at a later CUDA call and, as every device-side assertion, leaves
    the CUDA context unusable; pass ``wait=True`` for the clear error at the cost of one
    synchronisation. Skipped while tracing, where the values are not known.
    """
    floats = [(x, name) for x, name in named if x.is_floating_point()]
    if not floats or is_tracing():
        return
    # A tensor's minimum and maximum are finite exactly when all its values are (both
    # propagate NaN): one reduction per tensor, then one test of them all. isfinite().all()
    # is five operations per tensor (five kernels on CUDA) and ten times slower on the CPU.
    # float64 values beyond float32's range are finite too.
    dtype = torch.float64 if any(x.dtype == torch.float64 for x, _ in floats) else torch.float32
    extremes = torch.stack([v for x, _ in floats for v in _extremes(x, dtype)])
    all_finite = (extremes.abs() < math.inf).all()
    if wait is None:
        # Imported here: device_budget reads memory with this module's helpers.
        from .device_budget import reads_host_values

        wait = reads_host_values(floats[0][0].device)
    if not wait:
        names = ', '.join(name for _, name in floats)
        torch._assert_async(all_finite, f'AnyUp: one of {names} contains NaN or infinite value(s)')
        return
    if bool(all_finite):
        return
    for x, name in floats:
        n_bad = int((~torch.isfinite(x)).sum())
        if n_bad:
            raise ValueError(
                f'{name} contains {n_bad} NaN or infinite value(s); expected finite values '
                f'(shape {tuple(x.shape)})'
            )


def _extremes(x: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(min, max) of ``x`` as 0-d tensors of ``dtype``, NaN if ``x`` holds one; 0 if empty."""
    if x.numel() == 0:
        zero = x.new_zeros((), dtype=dtype)
        return zero, zero
    low, high = torch.aminmax(x.detach())
    return low.to(dtype), high.to(dtype)


def check_feature_map(
    x: object, name: str = 'features', channels: int | None = None, values: bool = True
) -> Tensor:
    """Checks a (B, C, H, W) floating-point map with no empty dimension and finite values.

    Args:
        x: The tensor to check.
        name: Argument name used in error messages.
        channels: If given, the required channel count.
        values: Also check that the values are finite (:func:`check_finite`); ``False`` leaves
            that to the caller (e.g. one :func:`check_all_finite` over several maps).

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
    if values:
        check_finite(x, name)
    return x


def check_image(x: object, name: str = 'image', values: bool = True) -> Tensor:
    """Checks a (B, 3, H, W) image tensor (see :func:`check_feature_map`)."""
    return check_feature_map(x, name, channels=3, values=values)


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


def check_output_sizes(size: object, count: int, default: Sequence[int]) -> list[Size]:
    """One ``(height, width)`` per map from one size for all maps or a sequence of them.

    Args:
        size: ``None`` (``default`` for every map), an int or an (H, W) pair for every map, or
            a sequence of ``count`` such sizes (``None``, int or pair each), one per map.
        count: Number of maps.
        default: The size ``None`` stands for.

    Returns:
        ``count`` sizes as pairs of Python ints.
    """
    if _is_one_size(size):
        return [check_output_size(size, default)] * count
    if len(size) != count:
        raise ValueError(
            f'output_size holds {len(size)} sizes for {count} feature map(s); give one size '
            'for all maps or one per map'
        )
    return [check_output_size(s, default, f'output_size[{i}]') for i, s in enumerate(size)]


def _is_one_size(size: object) -> bool:
    """Whether ``size`` is one size (or not a sequence of sizes, left to check_output_size)."""
    if not isinstance(size, Sequence) or isinstance(size, str):
        return True
    return not any(s is None or isinstance(s, (Sequence, Tensor)) for s in size)


def available_memory_bytes(device: torch.device) -> int | None:
    """Bytes a new allocation can take on ``device``, or None where that is not known.

    CUDA: the device's free memory plus what PyTorch's caching allocator holds but does not
    use (reserved minus allocated), which a new tensor reuses. CPU (Linux): ``MemAvailable``
    of ``/proc/meminfo``.
    """
    if device.type == 'cuda':
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free) + max(0, int(cached))
    if device.type == 'cpu':
        try:
            with open('/proc/meminfo') as meminfo:
                for line in meminfo:
                    if line.startswith('MemAvailable:'):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_result_fits(nbytes: int, device: torch.device, what: str) -> None:
    """Raises before allocating when ``nbytes`` exceed the memory ``device`` has available.

    Skipped while tracing (the exported program runs elsewhere).

    Args:
        nbytes: Bytes the result needs.
        device: Where it will be allocated.
        what: Names the result in the error message.
    """
    if is_tracing():
        return
    available = available_memory_bytes(device)
    if available is not None and nbytes > available:
        raise ValueError(
            f'{what} needs {nbytes} bytes ({nbytes / 2**30:.2f} GiB) but only {available} bytes '
            f'({available / 2**30:.2f} GiB) are available on {device}; ask for a smaller '
            'output_size or fewer channels'
        )

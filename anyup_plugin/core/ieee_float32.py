"""IEEE float32 arithmetic on CUDA for the span of a forward, whatever the global TF32 flags.

CUDA's cuDNN convolutions use TF32 (a 10-bit mantissa) for float32 inputs by default, and a
user may have allowed it for matrix products (``torch.backends.cuda.matmul.allow_tf32``,
``torch.set_float32_matmul_precision('high')``, ``fp32_precision = 'tf32'``): either would
make AnyUp's float32 output differ from the exact computation by about 1e-3 relative.
:func:`ieee_float32` switches TF32 off for a ``with`` block and restores the previous settings
when it ends, so the model never changes the user's flags outside its own calls. The settings
are process-wide while the block runs: another thread's float32 products at that moment are
also computed in IEEE float32 (slower, never less accurate).

On the CPU the flags have no effect (TF32 is a CUDA format).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ['ieee_float32']


def _precision_settings() -> list[object]:
    """The per-backend precision settings (``fp32_precision``) of this PyTorch, if it has them.

    PyTorch 2.9 and later: setting them through the legacy flags after the new ones were used
    is refused, so the new ones are used wherever they exist.
    """
    settings = [torch.backends.cuda.matmul, getattr(torch.backends.cudnn, 'conv', None)]
    return [s for s in settings if s is not None and hasattr(s, 'fp32_precision')]


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """Within the block, float32 convolutions and matrix products run in IEEE float32.

    Example:
        >>> with ieee_float32():
        ...     compiled = torch.compile(model, mode='reduce-overhead')
        ...     out = compiled(image, features)
    """
    settings = _precision_settings()
    if len(settings) == 2:
        previous = [s.fp32_precision for s in settings]
        for s in settings:
            s.fp32_precision = 'ieee'
        try:
            yield
        finally:
            for s, value in zip(settings, previous):
                s.fp32_precision = value
        return
    # Older PyTorch: the legacy flags.
    matmul_precision = torch.get_float32_matmul_precision()
    cudnn = torch.backends.cudnn
    with cudnn.flags(
        enabled=cudnn.enabled,
        benchmark=cudnn.benchmark,
        deterministic=cudnn.deterministic,
        allow_tf32=False,
    ):
        torch.set_float32_matmul_precision('highest')
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(matmul_precision)

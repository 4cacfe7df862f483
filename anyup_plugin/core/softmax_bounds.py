"""When a float32 softmax may skip subtracting its maximum.

A softmax is usually computed as ``exp(x - max(x)) / sum(exp(x - max(x)))`` so that ``exp``
cannot overflow. The maximum and the subtraction are two passes over the inputs. When every
input is known to lie within :data:`MAX_UNSHIFTED_LOGIT` of zero, ``exp`` of the inputs as
they are is a normal float32 (between 1e-26 and 1e26), nothing overflows or underflows (sums
of up to 1e12 such terms stay finite), and the result is the same to rounding (weights below
float32's smallest normal number, about 1e-38, aside: the shifted form flushes those too).

Callers derive the bound from their weights and inputs (see ``AnyUp._logit_bound`` and
``LearnedFeatureUnification.response_bound``); a bound is a host-side number, so they do so
only where :func:`bound_is_free`.
"""

from __future__ import annotations

import torch

from .checks import is_tracing
from .device_budget import reads_host_values

__all__ = ['MAX_UNSHIFTED_LOGIT', 'bound_is_free', 'softmax_needs_shift']

#: The largest |input| for which a float32 softmax may exponentiate its inputs unshifted:
#: exp(60) is about 1.1e26, far from float32's 3.4e38, and exp(-60) about 8.8e-27, far above
#: its smallest normal number, 1.2e-38.
MAX_UNSHIFTED_LOGIT = 60.0


def softmax_needs_shift(bound: float | None) -> bool:
    """Whether inputs bounded by ``|x| <= bound`` (None: unknown) need the maximum subtracted."""
    return bound is None or not bound <= MAX_UNSHIFTED_LOGIT


def bound_is_free(device: torch.device) -> bool:
    """Whether reading a bound computed on ``device`` as a Python number costs nothing.

    On the CPU it does not wait for a device (unless the accelerator profile is forced, see
    :func:`~anyup_plugin.core.device_budget.reads_host_values`); under ``torch.compile`` or
    ``torch.export`` it would be data-dependent control flow, so the shifted softmax is kept
    there.
    """
    return reads_host_values(device) and not is_tracing()

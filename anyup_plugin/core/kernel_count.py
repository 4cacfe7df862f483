"""How many kernels one AnyUp forward launches on an accelerator, counted without one.

On CUDA every PyTorch operation that computes something is at least one kernel launch (a few
microseconds of launch and Python dispatch each), so at 448 px the launches, not the
arithmetic, would set the forward's time if there were thousands of them. This module counts
them on any machine:

- the forward runs with the accelerator's sizes forced
  (:func:`~anyup_plugin.core.device_budget.forced_device_profile`), which also takes CUDA's
  path without host reads of tensor values;
- a :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees every ATen operation; those
  that only make a view or read metadata (:data:`KERNEL_FREE_OPS`) launch nothing;
- the Triton attention's launches are recorded, not run
  (:func:`~anyup_plugin.core.attention.triton.recorded_launches`), so ``'triton'`` counts
  without a GPU (CPU tensors need ``TRITON_INTERPRET=1`` for the kernel's device check);
- by default one call warms the caches first (window tables, constant maps), and the second
  call is counted: the steady state of an evaluation loop.

It counts operations, not the device's launches: some operations launch several kernels on
CUDA (a GroupNorm computes its moments, then normalises; cuDNN may add a layout kernel to a
convolution). ``tools/count_kernels.py`` prints the count; with ``--device cuda`` (as in
``tools/benchmark_gpu.sh``) it also profiles the real launches with ``torch.profiler``.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from .attention.triton import recorded_launches
from .device_budget import forced_device_profile

__all__ = [
    'DEVICE_BYTES',
    'HOST_COPY_OPS',
    'HOST_READ_OPS',
    'KERNEL_FREE_OPS',
    'KernelCount',
    'OpCounter',
    'count_forward_kernels',
    'kernel_launches',
]

#: The device memory :func:`count_forward_kernels` budgets with by default: an 80 GiB GPU.
DEVICE_BYTES = 80 * 2**30

#: ATen operations that only make a view, allocate, or compute metadata: no kernel launch.
KERNEL_FREE_OPS = frozenset(
    {
        'alias',
        'as_strided',
        'chunk',
        'detach',
        'empty',
        'empty_like',
        'empty_strided',
        'expand',
        'is_same_size',
        'lift_fresh',
        'narrow',
        'new_empty',
        'new_empty_strided',
        'permute',
        'promote_types',
        'reshape',
        'select',
        'slice',
        'split',
        'split_with_sizes',
        'squeeze',
        't',
        'transpose',
        'unbind',
        'unflatten',
        'unfold',
        'unsqueeze',
        'view',
        '_unsafe_view',
    }
)

#: Operations that read a tensor's value on the host: on CUDA, each waits for the device.
HOST_READ_OPS = frozenset({'_local_scalar_dense', 'item', 'nonzero', 'masked_select', 'unique'})

#: Operations that make a tensor from host data (``torch.tensor(list)``); on CUDA, the data
#: is then copied to the device, which waits for the device too.
HOST_COPY_OPS = frozenset({'lift_fresh', 'lift_fresh_copy'})


class OpCounter(TorchDispatchMode):
    """Counts the ATen operations dispatched inside it, by name (``self.ops``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """All operations, views included."""
        return sum(self.ops.values())

    @property
    def kernels(self) -> int:
        """Operations that launch a kernel (not in :data:`KERNEL_FREE_OPS`)."""
        return kernel_launches(self.ops)


def kernel_launches(ops: collections.Counter[str]) -> int:
    """The operations of ``ops`` (counts by name) that launch a kernel."""
    return sum(n for name, n in ops.items() if name not in KERNEL_FREE_OPS)


@dataclasses.dataclass(frozen=True)
class KernelCount:
    """The kernels of one forward, by stage.

    Attributes:
        stages: Kernel-launching ATen operations per stage of
            :data:`~anyup_plugin.core.anyup.STAGES`, plus ``'checks'``: what runs outside
            the stages (the input checks, the output's allocation).
        triton: Triton launches by kernel name.
        ops: Every ATen operation by name, views included.
        host_reads: Operations that read a value on the host (:data:`HOST_READ_OPS`).
        host_copies: Tensors made from host data (:data:`HOST_COPY_OPS`).
    """

    stages: dict[str, int]
    triton: dict[str, int]
    ops: dict[str, int]
    host_reads: int
    host_copies: int

    @property
    def total(self) -> int:
        """Every kernel launch: PyTorch's and Triton's."""
        return sum(self.stages.values()) + sum(self.triton.values())


def count_forward_kernels(
    model: nn.Module,
    image: Tensor,
    features: Tensor | Sequence[Tensor],
    output_size: Any = None,
    warm: bool = True,
    available_bytes: int = DEVICE_BYTES,
) -> KernelCount:
    """Counts the kernels one no-grad forward of ``model`` launches with the accelerator sizing.

    Args:
        model: An :class:`~anyup_plugin.core.anyup.AnyUp` (any device; its attention kernel
            as configured: ``'triton'`` is what CUDA runs fused).
        image: (B, 3, H, W) guidance.
        features: (B, C, h, w) map or a sequence of maps.
        output_size: As in :meth:`~anyup_plugin.core.anyup.AnyUp.forward`.
        warm: Count a second call, after one that fills the caches (the steady state);
            ``False`` counts the first call for these shapes (if none ran before).
        available_bytes: The device memory the sizing budgets with (whole maps when they
            fit): by default an 80 GiB GPU's, whatever the machine counting.

    Returns:
        The counts. With ``'triton'`` the attention's outputs are not computed (its launches
        are recorded, not run).
    """
    maps = [features] if isinstance(features, Tensor) else list(features)
    stages: collections.Counter[str] = collections.Counter()

    def run_stage(name: str, fn: Any, *args: Any) -> Any:
        with OpCounter() as counter:
            result = fn(*args)
        stages[name] += counter.kernels
        return result

    profile = forced_device_profile('accelerator', available_bytes)
    with torch.no_grad(), profile, recorded_launches() as launches:
        if warm:
            model.upsample_maps(image, maps, output_size)
            launches.clear()
        with OpCounter() as whole:
            model.upsample_maps(image, maps, output_size, run_stage=run_stage)
    counts = {'checks': whole.kernels - sum(stages.values()), **stages}
    return KernelCount(
        stages=counts,
        triton=dict(launches),
        ops=dict(whole.ops),
        host_reads=sum(whole.ops[name] for name in HOST_READ_OPS),
        host_copies=sum(whole.ops[name] for name in HOST_COPY_OPS),
    )

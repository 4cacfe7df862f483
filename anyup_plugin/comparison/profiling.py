"""Per-image time and peak memory of a module (the upsampling neck) while a model evaluates."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import statistics
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from anyup_plugin.utils.process_memory import reset_peak_resident, status_bytes

__all__ = ['CallRecord', 'UpsamplerProfiler', 'current_rss_bytes']


def current_rss_bytes() -> int | None:
    """This process's resident memory in bytes (Linux); ``None`` where unavailable."""
    return status_bytes('VmRSS')


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` (another C library)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').malloc_trim
    except (OSError, AttributeError):
        return None


def _start_cpu_peak() -> int | None:
    """Prepares a peak measurement; returns the resident memory it is measured from.

    Freed heap memory goes back to the system first (``malloc_trim``), so that memory the
    allocator kept from earlier calls counts again when this call reuses it.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    if not reset_peak_resident():
        return None
    return current_rss_bytes()


def _cpu_peak_since(base: int | None) -> int | None:
    peak = status_bytes('VmHWM')
    return None if base is None or peak is None else max(peak - base, 0)


@dataclass
class CallRecord:
    """One call of the profiled module.

    Attributes:
        seconds: Wall time of the call (CUDA: between synchronisations).
        peak_bytes: Memory the call added at its peak (see :class:`UpsamplerProfiler`);
            ``None`` when it cannot be measured.
        batch: Images in the call.
    """

    seconds: float
    peak_bytes: int | None
    batch: int


def _batch_size(inputs: object) -> int:
    """The batch of the first tensor found in a neck's (nested) inputs."""
    if isinstance(inputs, Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    if isinstance(inputs, (list, tuple)):
        for item in inputs:
            size = _batch_size(item)
            if size:
                return size
    return 0


class UpsamplerProfiler:
    """Times every call of ``module`` and measures the memory it adds at its peak.

    Forward hooks on the module: nothing of the model changes. On CUDA the time is taken
    between ``torch.cuda.synchronize()`` calls and the memory is
    ``torch.cuda.max_memory_allocated()`` during the call minus the allocation before it
    (PyTorch's tensors; the peak statistics are reset before each call). On the CPU (Linux)
    it is the process's peak resident memory during the call (``VmHWM``, reset before the
    call) minus its resident memory at the start, after freed heap memory was returned to the
    system (glibc ``malloc_trim``): everything the call touched, the allocator's and the
    libraries' overhead included; ``None`` where ``/proc`` does not allow it.

    Use as a context manager, or call :meth:`attach` and :meth:`detach`; ``enabled`` switches
    recording off and on.

    Args:
        module: The module to profile (the segmentor's neck).
        device: Where it runs: ``'cuda...'`` or ``'cpu'``.
    """

    def __init__(self, module: nn.Module, device: str | torch.device) -> None:
        self.module = module
        self.device = torch.device(device)
        self.records: list[CallRecord] = []
        self.enabled = True
        self._handles: list = []
        self._start: tuple[float, int | None, int] | None = None

    @property
    def memory_kind(self) -> str:
        """How memory is measured, for the table's note."""
        if self.device.type == 'cuda':
            return 'CUDA peak allocated (torch.cuda.max_memory_allocated) above the start'
        return 'CPU peak resident memory (VmHWM) above the start, freed heap trimmed before'

    def attach(self) -> UpsamplerProfiler:
        """Registers the hooks."""
        self._handles = [
            self.module.register_forward_pre_hook(self._before),
            self.module.register_forward_hook(self._after),
        ]
        return self

    def detach(self) -> None:
        """Removes the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> UpsamplerProfiler:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _before(self, module: nn.Module, args: tuple) -> None:
        if not self.enabled:
            return
        batch = _batch_size(args)
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
        else:
            base = _start_cpu_peak()
        self._start = (time.perf_counter(), base, batch)

    def _after(self, module: nn.Module, args: tuple, output: object) -> None:
        if not self.enabled or self._start is None:
            return
        start, base, batch = self._start
        self._start = None
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - start
            peak = torch.cuda.max_memory_allocated(self.device) - base
        else:
            seconds = time.perf_counter() - start
            peak = _cpu_peak_since(base)
        self.records.append(CallRecord(seconds, peak, max(batch, 1)))

    def summary(self) -> dict[str, float | int | str | None]:
        """Per-image figures over the recorded calls.

        Returns:
            ``time_ms_per_image``: median over calls of the call's time / its batch;
            ``peak_memory_mb_per_image``: the largest call peak / its batch, in MiB (``None``
            when unmeasured); ``profiled_images``; ``memory_kind``.
        """
        times = [r.seconds * 1e3 / r.batch for r in self.records]
        peaks = [r.peak_bytes / r.batch for r in self.records if r.peak_bytes is not None]
        return {
            'time_ms_per_image': statistics.median(times) if times else None,
            'peak_memory_mb_per_image': max(peaks) / 2**20 if peaks else None,
            'profiled_images': sum(r.batch for r in self.records),
            'memory_kind': self.memory_kind,
        }

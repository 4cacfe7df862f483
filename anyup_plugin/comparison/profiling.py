"""Per-image time and peak memory of a module (the upsampling neck) while a model evaluates."""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ['CallRecord', 'UpsamplerProfiler', 'current_rss_bytes']

_PAGE_SIZE = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096


def current_rss_bytes() -> int | None:
    """This process's resident memory in bytes (Linux ``/proc``); ``None`` where unavailable."""
    try:
        with open('/proc/self/statm', encoding='ascii') as handle:
            return int(handle.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


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


class _RssSampler:
    """Samples the resident memory in a thread (torch releases the GIL in its kernels)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.base = current_rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = current_rss_bytes()
            if rss is not None and self.peak is not None:
                self.peak = max(self.peak, rss)
            time.sleep(self.interval)

    def stop(self) -> int | None:
        self._stop.set()
        self._thread.join()
        rss = current_rss_bytes()
        if self.base is None or rss is None or self.peak is None:
            return None
        return max(self.peak, rss) - self.base


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
    (PyTorch's tensors; the peak statistics are reset before each call). On the CPU the memory
    is the increase of the process's resident set size, sampled every ``rss_interval`` seconds
    in a thread during the call: an estimate (short peaks between samples are missed, memory
    the allocator kept from earlier calls is not counted again).

    Use as a context manager, or call :meth:`attach` and :meth:`detach`; ``enabled`` switches
    recording on and off (e.g. only during the test loop).

    Args:
        module: The module to profile (the segmentor's neck).
        device: Where it runs: ``'cuda...'`` or ``'cpu'``.
        rss_interval: CPU sampling interval in seconds.
    """

    def __init__(self, module: nn.Module, device: str | torch.device, rss_interval=0.001):
        self.module = module
        self.device = torch.device(device)
        self.rss_interval = rss_interval
        self.records: list[CallRecord] = []
        self.enabled = True
        self._handles: list = []
        self._start: tuple[float, int, int, _RssSampler | None] | None = None

    @property
    def memory_kind(self) -> str:
        """How memory is measured, for the table's note."""
        if self.device.type == 'cuda':
            return 'CUDA peak allocated (torch.cuda.max_memory_allocated) above the start'
        return 'CPU peak resident-memory increase (RSS, sampled every 1 ms)'

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
        sampler = None
        base = 0
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
        else:
            sampler = _RssSampler(self.rss_interval)
        self._start = (time.perf_counter(), base, batch, sampler)

    def _after(self, module: nn.Module, args: tuple, output: object) -> None:
        if not self.enabled or self._start is None:
            return
        start, base, batch, sampler = self._start
        self._start = None
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - start
            peak: int | None = torch.cuda.max_memory_allocated(self.device) - base
        else:
            seconds = time.perf_counter() - start
            peak = sampler.stop() if sampler is not None else None
        self.records.append(CallRecord(seconds, peak, max(batch, 1)))

    def summary(self) -> dict[str, float | int | str | None]:
        """Per-image figures over the recorded calls.

        Returns:
            ``time_ms_per_image``: median over calls of the call's time / its batch;
            ``peak_memory_mb_per_image``: the largest call peak / its batch, in MiB (``None``
            when unmeasured); ``profiled_images``; ``memory_kind``.
        """
        if not self.records:
            return {
                'time_ms_per_image': None,
                'peak_memory_mb_per_image': None,
                'profiled_images': 0,
                'memory_kind': self.memory_kind,
            }
        times = [r.seconds * 1e3 / r.batch for r in self.records]
        peaks = [r.peak_bytes / r.batch for r in self.records if r.peak_bytes is not None]
        return {
            'time_ms_per_image': statistics.median(times),
            'peak_memory_mb_per_image': max(peaks) / 2**20 if peaks else None,
            'profiled_images': sum(r.batch for r in self.records),
            'memory_kind': self.memory_kind,
        }

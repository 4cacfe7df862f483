"""The upsampler profiler: calls, batch sizes, per-image summaries, CPU peak memory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anyup_plugin.comparison.profiling import CallRecord, UpsamplerProfiler
from anyup_plugin.utils.process_memory import reset_peak_resident


class _Allocates(nn.Module):
    """Touches ``mib`` MiB in a temporary tensor, returns the levels unchanged."""

    def __init__(self, mib: int) -> None:
        super().__init__()
        self.mib = mib

    def forward(self, levels, image=None):
        scratch = torch.ones(self.mib * 2**18)  # float32: 4 bytes each
        del scratch
        return levels


def test_records_each_call_with_its_batch_and_only_while_attached():
    neck = _Allocates(1)
    profiler = UpsamplerProfiler(neck, 'cpu')
    neck((torch.zeros(3, 8, 2, 2),))
    with profiler:
        neck((torch.zeros(3, 8, 2, 2),), torch.zeros(3, 3, 28, 28))
        neck([[torch.zeros(2, 8, 2, 2), torch.zeros(2, 8)]])  # [map, cls_token] level
        profiler.enabled = False
        neck((torch.zeros(5, 8, 2, 2),))
    neck((torch.zeros(7, 8, 2, 2),))
    assert [r.batch for r in profiler.records] == [3, 2]
    assert all(r.seconds >= 0 for r in profiler.records)
    assert profiler.summary()['profiled_images'] == 5


def test_summary_is_per_image():
    profiler = UpsamplerProfiler(nn.Identity(), 'cpu')
    profiler.records = [
        CallRecord(0.2, 4 * 2**20, 2),  # 100 ms, 2 MiB per image
        CallRecord(0.3, 1 * 2**20, 1),  # 300 ms, 1 MiB
        CallRecord(0.4, None, 4),  # 100 ms, memory unknown
    ]
    summary = profiler.summary()
    assert summary['time_ms_per_image'] == pytest.approx(100.0)
    assert summary['peak_memory_mb_per_image'] == pytest.approx(2.0)
    assert summary['profiled_images'] == 7
    assert 'CPU' in summary['memory_kind']
    empty = UpsamplerProfiler(nn.Identity(), 'cpu').summary()
    assert empty['time_ms_per_image'] is None and empty['peak_memory_mb_per_image'] is None


@pytest.mark.skipif(not reset_peak_resident(), reason='needs Linux /proc/self/clear_refs')
def test_cpu_peak_memory_counts_a_temporary_allocation_every_call():
    neck = _Allocates(64)
    with UpsamplerProfiler(neck, 'cpu') as profiler:
        for _ in range(3):  # the allocator's reuse of freed memory must not hide later calls
            neck((torch.zeros(2, 8, 2, 2),))
    for record in profiler.records:
        assert 60 * 2**20 <= record.peak_bytes <= 96 * 2**20
    assert 30 <= profiler.summary()['peak_memory_mb_per_image'] <= 48

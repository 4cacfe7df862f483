"""Kernels per forward with the CUDA sizing, counted on the CPU (deterministic counts)."""

from __future__ import annotations

import pytest
import torch

from anyup_plugin import AnyUp
from anyup_plugin.core.attention.triton import recorded_launches, triton_is_available
from anyup_plugin.core.kernel_count import OpCounter, count_forward_kernels

needs_triton = pytest.mark.skipif(not triton_is_available(), reason='needs triton')


def test_op_counter_counts_kernels_not_views():
    x = torch.randn(4, 6)
    with OpCounter() as ops:
        y = x.view(6, 4).t()  # views: no kernel
        z = y + 1  # one kernel
        z.sum()  # one kernel
    assert ops.kernels == 2
    assert ops.total == 4


@needs_triton
def test_recorded_launches_count_and_do_not_run(monkeypatch):
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    model = AnyUp(qk_dim=16, attention_kernel='triton').eval()
    image, features = torch.randn(1, 3, 28, 28), torch.randn(1, 8, 2, 2)
    with torch.no_grad(), recorded_launches() as launches:
        model(image, features)
    assert dict(launches) == {'forward_stats_kernel': 1, 'forward_values_kernel': 1}


@needs_triton
def test_forward_at_448_launches_at_most_150_kernels_whatever_the_size(monkeypatch):
    """Issue 19's bound: at most 150 kernels at 448 px (32 x 32 features), 300 at 1024.

    Every stage runs on whole maps on an accelerator, so the count does not grow with the
    size: 224 and 448 count the same, and so does 1024 (``tools/count_kernels.py``, 133 at
    both with the published widths). The width does not change the count either; a narrow
    model (d = 16, C = 8) keeps this test to seconds.
    """
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    torch.manual_seed(0)
    model = AnyUp(qk_dim=16, attention_kernel='triton').eval()
    counts = {
        size: count_forward_kernels(
            model, torch.randn(1, 3, size, size), torch.randn(1, 8, size // 14, size // 14)
        )
        for size in (224, 448)
    }
    count = counts[448]
    assert count.total <= 150, count.stages
    assert counts[224].stages == count.stages
    assert count.triton == {'forward_stats_kernel': 1, 'forward_values_kernel': 1}
    # 15 + 4 + 5 convolutions of the encoders, unification and aggregation, one query conv.
    assert count.ops['convolution'] == 25
    # Nothing waits for the device: no host reads, no tensors made from host data.
    assert (count.host_reads, count.host_copies) == (0, 0)


@pytest.mark.parametrize('kernel', ['matmul', 'sdpa', 'triton'])
def test_first_call_for_a_shape_copies_nothing_to_the_device(monkeypatch, kernel):
    """Window and tile tables are written on the device by torch operations: even the first
    call for a shape (tables not cached yet) makes no tensor from host data, which on CUDA
    would be a copy that waits (``set_sync_debug_mode('error')`` refuses it)."""
    if kernel == 'triton' and not triton_is_available():
        pytest.skip('needs triton')
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    model = AnyUp(qk_dim=16, attention_kernel=kernel).eval()
    # Sizes no other test uses, so that no table is cached yet (with padded key slots).
    image, features = torch.randn(1, 3, 67, 59), torch.randn(1, 8, 7, 6)
    count = count_forward_kernels(model, image, features, warm=False)
    assert (count.host_reads, count.host_copies) == (0, 0)
    assert count_forward_kernels(model, image, features).host_copies == 0

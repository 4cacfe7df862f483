"""When a float32 softmax may skip its maximum: the limit, and why it is safe."""

from __future__ import annotations

import math

import pytest
import torch

from anyup_plugin.core.softmax_bounds import (
    MAX_UNSHIFTED_LOGIT,
    bound_is_free,
    softmax_needs_shift,
)


@pytest.mark.parametrize(
    ('bound', 'needs_shift'),
    [(None, True), (0.0, False), (MAX_UNSHIFTED_LOGIT, False), (60.001, True), (math.nan, True)],
)
def test_shift_is_skipped_only_under_a_known_small_bound(bound, needs_shift):
    assert softmax_needs_shift(bound) is needs_shift


def test_unshifted_softmax_at_the_limit_equals_the_shifted_one():
    """Inputs anywhere in [-limit, limit], many of them: nothing overflows or underflows."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 100_000, generator=g) * 2 - 1) * MAX_UNSHIFTED_LOGIT
    x[:, 0], x[:, 1] = MAX_UNSHIFTED_LOGIT, -MAX_UNSHIFTED_LOGIT
    # All inputs at the bottom of the range: the case a shift exists for, far below the top.
    low = torch.full((1, 1000), -MAX_UNSHIFTED_LOGIT)
    for logits in (x, low):
        unshifted = logits.exp() / logits.exp().sum(dim=-1, keepdim=True)
        assert torch.isfinite(unshifted).all()
        # Equal to rounding; only weights below float32's normal range (1e-38) may differ.
        tiny = torch.finfo(torch.float32).tiny
        torch.testing.assert_close(unshifted, logits.softmax(dim=-1), rtol=1e-5, atol=tiny)
    # Beyond float32's range the shift is what keeps it finite.
    assert not torch.isfinite(torch.tensor([100.0]).exp()).all()


def test_bounds_are_read_only_where_that_is_free():
    assert bound_is_free(torch.device('cpu'))
    assert not bound_is_free(torch.device('meta'))
    # Under compilation a bound read on the host would be data-dependent control flow.
    traced = torch.compile(lambda x: x + bound_is_free(x.device), backend='eager', fullgraph=True)
    assert traced(torch.zeros(1)).item() == 0

"""When a float32 softmax may skip its maximum: the limit, and why it is safe."""

from __future__ import annotations

import math

import pytest
import torch

from anyup_plugin.core.attention import windowed_attention
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
    """Logits anywhere in [-limit, limit] through the attention's unshifted softmax: exact.

    One-hot values make the attention output the softmax weights themselves. The bound
    ``MAX_UNSHIFTED_LOGIT`` tells :func:`windowed_attention` to skip the maximum (that it is
    taken at its word is checked in test_attention/test_tiles.py); the reference is a float64
    softmax, which cannot overflow here.
    """
    g = torch.Generator().manual_seed(0)
    n_keys = 1000
    spread = (torch.rand(n_keys, generator=g) * 2 - 1) * MAX_UNSHIFTED_LOGIT
    spread[0], spread[1] = MAX_UNSHIFTED_LOGIT, -MAX_UNSHIFTED_LOGIT
    # All logits at the bottom of the range: the case a shift exists for, far below the top.
    low = torch.full((n_keys,), -MAX_UNSHIFTED_LOGIT)
    values = torch.eye(n_keys).view(1, 1, n_keys, n_keys)
    # Two queries, +1 and -1: logits k and -k, so both ends of the range are the maximum once.
    queries = torch.tensor([1.0, -1.0]).view(1, 1, 2, 1)
    tiny = torch.finfo(torch.float32).tiny
    for logits in (spread, low):
        keys = logits.view(1, 1, n_keys, 1)
        with torch.no_grad():
            weights = windowed_attention(
                queries, keys, values, 0.0, 1, logit_bound=MAX_UNSHIFTED_LOGIT
            )[0, 0]
        expected = torch.stack([logits, -logits]).double().softmax(dim=-1).float()
        assert torch.isfinite(weights).all()
        # Equal to rounding; only weights below float32's normal range (1e-38) may differ.
        torch.testing.assert_close(weights, expected, rtol=1e-5, atol=tiny)


def test_bounds_are_read_only_where_that_is_free():
    assert bound_is_free(torch.device('cpu'))
    assert not bound_is_free(torch.device('meta'))
    # Under compilation a bound read on the host would be data-dependent control flow.
    traced = torch.compile(lambda x: x + bound_is_free(x.device), backend='eager', fullgraph=True)
    assert traced(torch.zeros(1)).item() == 0

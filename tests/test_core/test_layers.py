"""Building blocks: feature unification against its dense definition, window bounds in float32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anyup_plugin import AnyUp
from anyup_plugin.core.attention import window_bounds, window_pair_count
from anyup_plugin.core.layers import LearnedFeatureUnification


def _dense_unification(basis: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The published formulation: every (channel, basis) response at once, softmax, mean."""
    b, c, h, w = features.shape
    d, _, k, _ = basis.shape
    taps = F.conv2d(torch.ones(1, 1, h, w), torch.ones(1, 1, k, k), padding=k // 2)
    resp = F.conv2d(features.reshape(b * c, 1, h, w), basis, padding=k // 2) / taps
    return resp.view(b, d, c, h, w).softmax(dim=1).mean(dim=2)


@pytest.mark.parametrize(
    ('batch', 'channels', 'size', 'chunk'),
    [(1, 7, (5, 6), 2**18), (2, 3, (1, 9), 1), (1, 130, (4, 4), 1000), (2, 1, (3, 2), 2**18)],
)
@pytest.mark.parametrize('scale', [1.0, 60.0], ids=['plain', 'large-basis'])
def test_unification_matches_the_dense_definition(batch, channels, size, chunk, scale):
    torch.manual_seed(0)
    lfu = LearnedFeatureUnification(16, 5, max_chunk_elements=chunk)
    with torch.no_grad():
        lfu.basis.mul_(scale)
    features = F.normalize(torch.randn(batch, channels, *size), dim=1)
    with torch.no_grad():
        out = lfu(features)
        ref = _dense_unification(lfu.basis, features)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('size', [(1, 1), (2, 7), (9, 8)])
def test_response_bound_covers_every_response(size):
    """Largest entries at the corners, where the fewest taps fall inside, make it near-tight."""
    from anyup_plugin.core.softmax_bounds import MAX_UNSHIFTED_LOGIT

    torch.manual_seed(2)
    lfu = LearnedFeatureUnification(16, 5)
    features = torch.randn(2, 3, *size) * 4
    basis = lfu.basis.detach()
    h, w = size
    taps = F.conv2d(torch.ones(1, 1, h, w), torch.ones(1, 1, 5, 5), padding=2)
    resp = F.conv2d(features.reshape(6, 1, h, w), basis, padding=2) / taps
    bound = lfu.response_bound(features)
    assert resp.abs().max() <= bound
    # Unit-normalised features at the published basis scale take the fast path.
    assert lfu.response_bound(F.normalize(features, dim=1)) <= MAX_UNSHIFTED_LOGIT


def test_unification_gradients_match_the_dense_definition():
    torch.manual_seed(1)
    lfu = LearnedFeatureUnification(8, 3, max_chunk_elements=64)
    features = F.normalize(torch.randn(1, 5, 4, 3), dim=1).requires_grad_()
    lfu(features).square().sum().backward()
    grads = (features.grad.clone(), lfu.basis.grad.clone())
    features.grad = None
    lfu.basis.grad = None
    _dense_unification(lfu.basis, features).square().sum().backward()
    torch.testing.assert_close(grads[0], features.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads[1], lfu.basis.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('ratio', [0.1, 0.05, 0.25, 1 / 3])
def test_window_bounds_are_those_of_float32_torch_arithmetic(ratio):
    """The plain-Python windows equal the float32 tensor formula the models were trained with."""
    for out_size in [*range(1, 100), 224, 448, 1024]:
        for in_size in (1, 2, 7, 15, 32, 73):
            centre = (torch.arange(out_size, dtype=torch.float32) + 0.5) / out_size
            start = torch.floor((centre - ratio).clamp(0, 1) * in_size).long()
            end = torch.ceil((centre + ratio).clamp(0, 1) * in_size).long()
            got_start, got_end = window_bounds(out_size, in_size, ratio)
            assert torch.equal(got_start, start), (out_size, in_size)
            assert torch.equal(got_end, end), (out_size, in_size)


def test_window_pair_count_counts_every_query_key_pair():
    # Worked by hand: 4x2 outputs over 2x2 features, half-size 0.25. Output row centres
    # 1/8, 3/8, 5/8, 7/8 see feature rows [0, 1), [0, 2), [0, 2), [1, 2): 6 row pairs;
    # column centres 1/4, 3/4 see [0, 1), [1, 2): 2 column pairs; 6 x 2 query-key pairs.
    assert window_pair_count((4, 2), (2, 2), 0.25) == 12
    assert window_pair_count((6, 7), (3, 2), 0.0) == 6 * 7 * 3 * 2


def test_multiply_adds_follow_the_model_sizes():
    d = 128
    counts = AnyUp().multiply_adds((448, 448), [(384, 32, 32)], [(448, 448)])
    pixels, tokens = 448 * 448, 32 * 32
    assert counts['encoders'] == pixels * (3 * d + 4 * d * d + 2 * 5 * d * d)
    assert counts['query conv'] == pixels * 9 * d * d
    assert counts['feature unification'] == tokens * (384 * d * 25 + 4 * d * d)
    assert counts['aggregation'] == tokens * (2 * d * d * 9 + 4 * d * d)
    pairs = window_pair_count((448, 448), (32, 32), 0.1)
    assert counts['attention'] == (pixels + tokens) * d * d + pairs * (d + 384)
    small = AnyUp(qk_dim=16, num_heads=2).multiply_adds((448, 448), [(384, 32, 32)], [(448, 448)])
    assert small['encoders'] < counts['encoders'] / 50

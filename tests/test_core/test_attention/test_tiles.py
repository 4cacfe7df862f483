"""Window bounds, grouping and the windowed attention against the dense masked reference."""

from __future__ import annotations

import pytest
import torch

from anyup_plugin.core import attention
from anyup_plugin.core.attention import (
    QueryBands,
    dense_window_attention_reference,
    resolve_attention_kernel,
    window_bounds,
    window_groups,
    windowed_attention,
)


def test_bounds_hand_computed():
    # Centres 1/8, 3/8, 5/8, 7/8 of a 4-pixel axis over 2 features, r = 0.1:
    # [floor(0.025*2), ceil(0.225*2)) = [0, 1), [floor(0.55), ceil(0.95)) = [0, 1), ...
    start, end = window_bounds(4, 2, 0.1)
    assert start.tolist() == [0, 0, 1, 1]
    assert end.tolist() == [1, 1, 2, 2]


def test_bounds_are_computed_in_float32():
    # (1/6 - 0.1) * 15 is exactly 1 in real arithmetic; float32 rounds to 1, float64 to
    # 0.999..., so the published (float32) window starts at row 1, and the last at 10, not 11.
    start, end = window_bounds(3, 15, 0.1)
    assert start.tolist() == [1, 6, 10]
    assert end.tolist() == [4, 9, 14]


def test_global_window_covers_everything():
    start, end = window_bounds(5, 7, 0.0)
    assert start.tolist() == [0] * 5 and end.tolist() == [7] * 5


def test_groups_partition_the_axis():
    groups = window_groups(448, 32, 0.1)
    assert groups.query_start[0] == 0 and groups.query_end[-1] == 448
    assert groups.query_start[1:] == groups.query_end[:-1]
    start, end = window_bounds(448, 32, 0.1)
    for qs, qe, ks, ke in zip(
        groups.query_start, groups.query_end, groups.key_start, groups.key_end
    ):
        assert (start[qs:qe] == ks).all() and (end[qs:qe] == ke).all()
    # At most (2 r h + 2) keys per axis, as the model description states.
    assert groups.max_keys <= 2 * 0.1 * 32 + 2


def _random_qkv(b, out_hw, feat_hw, d, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, *out_hw, d, generator=g)
    k = torch.randn(b, *feat_hw, d, generator=g)
    v = torch.randn(b, *feat_hw, c, generator=g)
    return q, k, v


@pytest.mark.parametrize(
    ('out_hw', 'feat_hw', 'ratio', 'heads'),
    [
        ((64, 64), (8, 8), 0.1, 4),
        ((40, 60), (4, 6), 0.1, 4),
        ((21, 15), (7, 5), 0.25, 2),
        ((48, 48), (6, 6), 0.0, 4),
        ((5, 3), (9, 11), 0.1, 1),
        ((97, 13), (16, 3), 0.05, 4),
        ((30, 30), (30, 30), 0.5, 4),
    ],
)
def test_matches_dense_reference(out_hw, feat_hw, ratio, heads):
    q, k, v = _random_qkv(2, out_hw, feat_hw, 16, 5)
    ref = dense_window_attention_reference(q, k, v, ratio, heads)
    for tile in (2**23, 97, 1):
        out = windowed_attention(q, k, v, ratio, heads, max_tile_elements=tile)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_padded_key_slots_weigh_nothing():
    """Column groups padded to the widest repeat their last key; the repeats must weigh zero."""
    assert window_groups(50, 23, 0.1).keys_padded
    q, k, v = _random_qkv(2, (30, 50), (9, 23), 8, 4)
    ref = dense_window_attention_reference(q, k, v, 0.1, 2)
    with torch.no_grad():
        for tile in (2**23, 300):
            out = windowed_attention(q, k, v, 0.1, 2, max_tile_elements=tile)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_a_repeated_call_copies_no_tables_to_the_device(monkeypatch):
    """The tiles' index tables are built once per shape and device: a call with known shapes
    makes no host-to-device copy (on CUDA each would wait for the device), per call or tile."""
    q, k, v = _random_qkv(2, (30, 50), (9, 23), 8, 4)  # padded column groups, many tiles
    with torch.no_grad():
        first = windowed_attention(q, k, v, 0.1, 2, max_tile_elements=300)
        copies = []
        real = torch.tensor
        monkeypatch.setattr(torch, 'tensor', lambda *a, **kw: copies.append(a) or real(*a, **kw))
        again = windowed_attention(q, k, v, 0.1, 2, max_tile_elements=300)
    assert copies == []
    assert torch.equal(first, again)


def test_tables_cached_under_inference_mode_serve_autograd():
    """Cached tables are normal tensors: built under torch.inference_mode, they still serve a
    later call whose backward needs them."""
    q, k, v = _random_qkv(1, (26, 38), (7, 19), 8, 3)  # shapes no other test uses
    with torch.inference_mode():
        windowed_attention(q, k, v, 0.1, 2)
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    windowed_attention(*inputs, 0.1, 2).square().sum().backward()
    dense_window_attention_reference(*ref_inputs, 0.1, 2).square().sum().backward()
    for a, b in zip(inputs, ref_inputs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ('out_hw', 'feat_hw', 'ratio', 'heads'),
    [
        ((30, 50), (9, 23), 0.1, 2),  # padded column groups
        ((40, 60), (4, 6), 0.1, 4),
        ((48, 48), (6, 6), 0.0, 4),  # every query sees every key
        ((97, 13), (16, 3), 0.05, 4),
    ],
)
def test_sdpa_kernel_matches_dense_reference(out_hw, feat_hw, ratio, heads):
    """The fused kernel, with and without autograd, at several tile sizes."""
    q, k, v = _random_qkv(2, out_hw, feat_hw, 16, 5)
    ref = dense_window_attention_reference(q, k, v, ratio, heads)
    for grad in (False, True):
        for tile in (2**23, 300):
            with torch.set_grad_enabled(grad):
                out = windowed_attention(
                    q, k, v, ratio, heads, max_tile_elements=tile, kernel='sdpa'
                )
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_sdpa_kernel_gradients_match_dense_reference():
    q, k, v = _random_qkv(1, (30, 50), (9, 23), 8, 3)
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    windowed_attention(*inputs, 0.1, 2, kernel='sdpa').square().sum().backward()
    dense_window_attention_reference(*ref_inputs, 0.1, 2).square().sum().backward()
    for a, b in zip(inputs, ref_inputs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


def test_unknown_kernel_is_rejected():
    q, k, v = _random_qkv(1, (8, 8), (2, 2), 8, 3)
    with pytest.raises(
        ValueError, match=r"kernel must be one of \('auto', 'matmul', 'sdpa', 'triton'\), got 'x'"
    ):
        windowed_attention(q, k, v, 0.1, 2, kernel='x')


def test_auto_kernel_is_matmul_until_triton_is_tried(monkeypatch):
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    for device in (cpu, cuda):
        assert resolve_attention_kernel('auto', device) == 'matmul'
        for name in ('matmul', 'sdpa', 'triton'):
            assert resolve_attention_kernel(name, device) == name
    # Once the kernel has run on a GPU, 'auto' takes it on CUDA where triton imports.
    monkeypatch.setattr(attention, 'AUTO_USES_TRITON', True)
    monkeypatch.setattr(attention, 'triton_is_available', lambda: True)
    assert resolve_attention_kernel('auto', cuda) == 'triton'
    assert resolve_attention_kernel('auto', cpu) == 'matmul'
    monkeypatch.setattr(attention, 'triton_is_available', lambda: False)
    assert resolve_attention_kernel('auto', cuda) == 'matmul'


def test_triton_kernel_runs_the_tiles_while_tracing(monkeypatch):
    """Compilers and exporters cannot take the Triton launches: traced calls use the
    'matmul' tiles (here on the CPU, where the kernel itself would refuse to run)."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    monkeypatch.setattr(attention, 'is_tracing', lambda: True)
    monkeypatch.setattr(attention.tiles, 'is_tracing', lambda: True)
    q, k, v = _random_qkv(1, (12, 10), (3, 4), 8, 3)
    out = windowed_attention(q, k, v, 0.1, 2, kernel='triton')
    ref = dense_window_attention_reference(q, k, v, 0.1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def _max_abs_logit(q, k, heads):
    qh = q.unflatten(-1, (heads, -1)).flatten(1, 2)
    kh = k.unflatten(-1, (heads, -1)).flatten(1, 2)
    return torch.einsum('bqnd,bknd->bnqk', qh, kh).abs().max().item()


def test_logit_bound_skips_the_maximum_only_when_small():
    q, k, v = _random_qkv(1, (24, 30), (6, 7), 8, 3)
    with torch.no_grad():
        ref = dense_window_attention_reference(q, k, v, 0.1, 2)
        out = windowed_attention(q, k, v, 0.1, 2, logit_bound=_max_abs_logit(q, k, 2))
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        # Logits of several hundred: exp overflows unless the maximum is subtracted.
        big = 60 * q
        bound = _max_abs_logit(big, k, 2)
        assert bound > 100
        ref = dense_window_attention_reference(big, k, v, 0.1, 2)
        out = windowed_attention(big, k, v, 0.1, 2, logit_bound=bound)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        # A small bound is taken at its word (the caller's promise): the shift is skipped.
        assert not windowed_attention(big, k, v, 0.1, 2, logit_bound=1.0).isfinite().all()


def test_keys_outside_every_window_are_never_touched():
    """NaN values outside a query's window must not reach that query (0 * NaN is NaN)."""
    q, k, v = _random_qkv(1, (56, 56), (8, 8), 8, 3)
    k = k.clone()
    v = v.clone()
    k[:, :, 7] = float('nan')
    v[:, :, 7] = float('nan')
    out = windowed_attention(q, k, v, 0.1, 2)
    _, col_end = window_bounds(56, 8, 0.1)
    sees_col_7 = col_end > 7
    assert torch.isnan(out[:, :, sees_col_7]).all()
    assert torch.isfinite(out[:, :, ~sees_col_7]).all()


def test_query_transform_is_applied_per_tile():
    q, k, v = _random_qkv(1, (20, 20), (4, 4), 8, 2)
    calls = []

    def double(x, out):
        calls.append(out is None)
        return 2 * x if out is None else torch.mul(x, 2, out=out)

    for grad in (True, False):
        calls.clear()
        with torch.set_grad_enabled(grad):
            out = windowed_attention(q, k, v, 0.1, 2, query_transform=double, max_tile_elements=64)
        ref = dense_window_attention_reference(2 * q, k, v, 0.1, 2)
        torch.testing.assert_close(out, ref)
        # Tile by tile; into a reused buffer exactly when autograd is off.
        assert len(calls) > 1 and set(calls) == {grad}


def test_writes_into_a_given_output():
    q, k, v = _random_qkv(1, (20, 18), (4, 3), 8, 5)
    ref = dense_window_attention_reference(q, k, v, 0.1, 2)
    out = torch.full((1, 20, 18, 5), float('nan'))
    with torch.no_grad():
        result = windowed_attention(q, k, v, 0.1, 2, out=out)
        assert result is out
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match=r'out must be a torch.float32 tensor of shape'):
            windowed_attention(q, k, v, 0.1, 2, out=torch.empty(1, 20, 18, 4))
        with pytest.raises(ValueError, match='out must be a torch.float32'):
            windowed_attention(q, k, v, 0.1, 2, out=out.double())
    with pytest.raises(ValueError, match='only supported without autograd'):
        windowed_attention(q, k.requires_grad_(), v, 0.1, 2, out=out)


def test_gradients_match_dense_reference():
    q, k, v = _random_qkv(1, (12, 10), (3, 4), 8, 3)
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    windowed_attention(*inputs, 0.2, 2).sum().backward()
    dense_window_attention_reference(*ref_inputs, 0.2, 2).sum().backward()
    for a, b in zip(inputs, ref_inputs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ('kernel', 'band_rows', 'height'), [(5, 1, 9), (5, 3, 4), (5, 2, 3), (3, 20, 9)]
)
def test_query_bands_of_any_halo_convolve_like_the_whole_map(kernel, band_rows, height):
    """Halos that reach past the top, the bottom or both, in part or in full."""
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 4, kernel, padding=kernel // 2)
    queries = torch.randn(1, 3, height, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        bands = QueryBands.convolve(queries, conv, band_elements=band_rows * 6 * 4)
        expected = conv(queries).permute(0, 2, 3, 1)
    torch.testing.assert_close(bands.to_tensor(), expected)


def test_query_bands_convolve_like_the_whole_map():
    """Bands of 2 rows (plus halo, zero-padded at the borders) give the full convolution."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, 3, padding=1, bias=False)
    queries = torch.randn(2, 6, 9, 7).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        bands = QueryBands.convolve(queries, conv, band_elements=2 * 2 * 7 * 5)
        expected = conv(queries).permute(0, 2, 3, 1)
    assert bands.shape == expected.shape
    torch.testing.assert_close(bands.to_tensor(), expected)
    # Rows inside one band are a view; rows across bands are joined.
    torch.testing.assert_close(bands.rows(3, 8), expected[:, 3:8])
    joined = torch.empty(2, 5, 7, 5)
    assert bands.rows(3, 8, out=joined) is joined
    torch.testing.assert_close(joined, expected[:, 3:8])
    handle = bands.copy()
    handle.release_before(4)
    with pytest.raises(RuntimeError, match='released'):
        handle.rows(1, 5)
    torch.testing.assert_close(handle.rows(4, 9), expected[:, 4:9])
    torch.testing.assert_close(bands.rows(0, 2), expected[:, :2])  # the original keeps them


@pytest.mark.parametrize(
    'conv',
    [torch.nn.Conv2d(4, 4, 3, padding=1, stride=2), torch.nn.Conv2d(4, 4, 3, padding=0)],
    ids=['strided', 'shrinking'],
)
def test_query_bands_reject_a_convolution_that_changes_the_size(conv):
    with pytest.raises(ValueError, match='stride-1'):
        QueryBands.convolve(torch.randn(1, 4, 6, 6), conv)


def test_attention_over_query_bands_matches_and_releases_them():
    q, k, v = _random_qkv(1, (23, 17), (5, 4), 8, 3)
    bands = QueryBands([q[:, r : r + 3] for r in range(0, 23, 3)])
    with torch.no_grad():
        expected = windowed_attention(q, k, v, 0.1, 2, max_tile_elements=200)
        out = windowed_attention(bands, k, v, 0.1, 2, max_tile_elements=200)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # Every band was released once the attention had passed it.
    with pytest.raises(RuntimeError, match='released'):
        bands.rows(0, 1)

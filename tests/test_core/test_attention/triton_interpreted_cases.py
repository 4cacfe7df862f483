"""Cases for the fused Triton attention kernel, run by Triton's interpreter on CPU tensors.

Not collected by itself (no ``test_`` prefix): ``test_triton.py`` runs this
file with pytest in a subprocess with ``TRITON_INTERPRET=1``. Triton decides at import time
whether its own library functions (``tl.zeros``, ``tl.sum``, ...) are compiled or
interpreted, so the variable must be set before anything imports triton; a fresh process
guarantees that, whatever other test files imported, and keeps the variable out of them.
The interpreter is slow: the shapes are tiny.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if os.environ.get('TRITON_INTERPRET') != '1':
    pytest.skip(
        'run by test_triton.py with TRITON_INTERPRET=1 (set before triton is imported)',
        allow_module_level=True,
    )
pytest.importorskip('triton', reason='the Triton kernel needs the triton package')

from anyup_plugin import AnyUp
from anyup_plugin.core.attention import dense_window_attention_reference
from anyup_plugin.core.attention import triton as twa
from anyup_plugin.core.reference import reference_upsample

GOLDEN = Path(__file__).parents[2] / 'data' / 'anyup_golden.pt'


def _random_qkv(b, out_hw, feat_hw, d, c, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, *out_hw, d, generator=g, dtype=dtype)
    k = torch.randn(b, *feat_hw, d, generator=g, dtype=dtype)
    v = torch.randn(b, *feat_hw, c, generator=g, dtype=dtype)
    return q, k, v


# (batch, output (H', W'), features (h, w), window ratio, heads, D, C)
CASES = {
    'batch-non-square': (2, (16, 20), (4, 5), 0.1, 4, 16, 5),
    'padded-windows': (1, (30, 50), (9, 23), 0.1, 2, 8, 4),
    'global': (1, (12, 12), (12, 12), 0.0, 4, 16, 3),  # 144 keys: several key blocks
    'global-negative-ratio': (1, (6, 9), (5, 7), -1.0, 2, 16, 3),
    'output-smaller-than-features': (1, (5, 3), (9, 11), 0.1, 1, 16, 7),
    'tall-wide-windows': (2, (20, 13), (16, 3), 0.25, 4, 32, 6),
    'one-channel': (1, (8, 8), (4, 4), 0.1, 4, 16, 1),
    'anyup-heads': (1, (8, 12), (4, 6), 0.1, 4, 128, 9),  # 4 heads of 32 channels
    '1024-channels': (1, (4, 3), (2, 2), 0.1, 2, 16, 1024),  # 8 channel blocks
}


@pytest.mark.parametrize('case', CASES.values(), ids=CASES.keys())
def test_forward_matches_dense_reference(case):
    batch, out_hw, feat_hw, ratio, heads, d, c = case
    q, k, v = _random_qkv(batch, out_hw, feat_hw, d, c)
    ref = dense_window_attention_reference(q, k, v, ratio, heads)
    out = twa.triton_windowed_attention(q, k, v, ratio, heads)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_large_logits_are_shifted():
    """Logits of several hundred overflow exp unless each head's maximum is subtracted,
    including when the maximum grows from one key block to the next (online rescaling)."""
    q, k, v = _random_qkv(1, (6, 6), (8, 8), 16, 3)
    q = 40 * q
    ref = dense_window_attention_reference(q, k, v, 0.0, 2)
    out = twa.triton_windowed_attention(q, k, v, 0.0, 2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


GRAD_CASES = {k: CASES[k] for k in ('padded-windows', 'global', 'output-smaller-than-features')}
GRAD_CASES['anyup-heads-batch'] = (2, (6, 10), (3, 5), 0.1, 4, 128, 40)


@pytest.mark.parametrize('case', GRAD_CASES.values(), ids=GRAD_CASES.keys())
def test_gradients_match_dense_reference(case):
    batch, out_hw, feat_hw, ratio, heads, d, c = case
    q, k, v = _random_qkv(batch, out_hw, feat_hw, d, c)
    grad_out = torch.randn(batch, *out_hw, c, generator=torch.Generator().manual_seed(1))
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = twa.triton_windowed_attention(*inputs, ratio, heads)
    ref = dense_window_attention_reference(*ref_inputs, ratio, heads)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.backward(grad_out)
    ref.backward(grad_out)
    for name, a, b in zip('qkv', inputs, ref_inputs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=f'grad of {name}')


def test_gradient_of_one_input_only():
    """Only the asked gradients are computed; the others stay None."""
    q, k, v = _random_qkv(1, (6, 7), (3, 4), 16, 5)
    v.requires_grad_()
    twa.triton_windowed_attention(q, k, v, 0.1, 2).sum().backward()
    v_ref = v.detach().clone().requires_grad_()
    dense_window_attention_reference(q, k, v_ref, 0.1, 2).sum().backward()
    torch.testing.assert_close(v.grad, v_ref.grad, rtol=1e-5, atol=1e-5)
    assert q.grad is None and k.grad is None


def test_float64_stays_float64():
    q, k, v = _random_qkv(1, (10, 7), (5, 4), 16, 3, dtype=torch.float64)
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = twa.triton_windowed_attention(*inputs, 0.1, 2)
    ref = dense_window_attention_reference(*ref_inputs, 0.1, 2)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    out.square().sum().backward()
    ref.square().sum().backward()
    for a, b in zip(inputs, ref_inputs):
        assert a.grad.dtype == torch.float64
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_half_precision_queries_and_keys_are_the_fast_mode():
    """Autocast's half-precision queries and keys: half products, float32 softmax, float32
    values and output, within half precision of the float32 result. (float16 only: the
    interpreter's products of bfloat16 blocks are wrong, it multiplies their raw bits.)"""
    q, k, v = _random_qkv(1, (8, 10), (4, 5), 32, 6)
    ref = dense_window_attention_reference(q, k, v, 0.1, 2)
    out = twa.triton_windowed_attention(q.half(), k.half(), v, 0.1, 2)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05)


def test_writes_into_out():
    q, k, v = _random_qkv(2, (7, 9), (3, 4), 16, 5)
    out = torch.full((2, 7, 9, 5), float('nan'))
    with torch.no_grad():
        result = twa.triton_windowed_attention(q, k, v, 0.1, 2, out=out)
    assert result is out
    torch.testing.assert_close(out, dense_window_attention_reference(q, k, v, 0.1, 2))
    with pytest.raises(ValueError, match='out must be a contiguous'):
        twa.triton_windowed_attention(q, k, v, 0.1, 2, out=torch.empty(2, 7, 9, 4))


def test_default_precision_reaches_the_kernels(monkeypatch):
    seen = []
    real = twa._forward

    def spy(*args):
        seen.append(args[-1])
        return real(*args)

    monkeypatch.setattr(twa, '_forward', spy)
    q, k, v = _random_qkv(1, (4, 4), (2, 2), 16, 2)
    twa.triton_windowed_attention(q, k, v, 0.1, 2)
    assert seen == ['ieee']


@pytest.fixture(scope='module')
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def _published(golden, kernel: str) -> AnyUp:
    config = golden['config']
    model = AnyUp(
        config['qk_dim'], config['num_heads'], config['kernel_size_lfu'], attention_kernel=kernel
    )
    model.load_state_dict(golden['state_dict'])
    return model.eval()


@pytest.mark.parametrize(
    ('case_index', 'grad'),
    [(0, False), (1, False), (2, False), (3, False), (4, False), (1, True), (2, True)],
)
def test_golden_cases_with_the_triton_kernel(golden, case_index, grad):
    """AnyUp(attention_kernel='triton') on the published model's outputs, within the golden
    tolerance: the query transform on the whole map, then the kernels (autograd: the
    autograd function)."""
    case = golden['cases'][case_index]
    model = _published(golden, 'triton')
    model.window_ratio = case['window_ratio']
    with torch.set_grad_enabled(grad):
        out = model(case['image'], case['features'], case['output_size'])
    out, expected = out[:, case['channel_index']].detach(), case['expected']
    assert out.shape == expected.shape
    rel = ((out - expected).norm() / expected.norm()).item()
    max_abs = ((out - expected).abs().max() / expected.abs().max()).item()
    assert rel <= 1e-4, f'relative Frobenius error {rel:.2e}'
    assert max_abs <= 1e-3, f'max abs error {max_abs:.2e} of max |expected|'


def test_training_gradients_match_the_tiles(golden):
    """Gradients of every parameter and of the features through the Triton backward equal
    those through the 'matmul' tiles (autograd all the way)."""
    case = golden['cases'][2]
    grads = {}
    for kernel in ('triton', 'matmul'):
        model = _published(golden, kernel)
        model.window_ratio = case['window_ratio']
        features = case['features'].clone().requires_grad_()
        out = model(case['image'], features, case['output_size'])
        weights = torch.linspace(-1, 1, out.numel()).view(out.shape)
        (out * weights).sum().backward()
        grads[kernel] = {'features': features.grad}
        grads[kernel].update({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads['triton'].keys() == grads['matmul'].keys() and len(grads['triton']) > 10
    for name, grad in grads['matmul'].items():
        torch.testing.assert_close(grads['triton'][name], grad, rtol=1e-3, atol=1e-5, msg=name)


def test_float64_model_stays_float64(golden):
    """A float64 model through the kernels equals the float64 dense reference to float64
    rounding (float32 anywhere would leave ~1e-7)."""
    case = golden['cases'][1]
    model = _published(golden, 'triton').double()
    image, features = case['image'].double(), case['features'].double()
    with torch.no_grad():
        out = model(image, features, case['output_size'])
        expected = reference_upsample(model, image, features, case['output_size'])
    assert out.dtype == torch.float64
    rel = ((out - expected).norm() / expected.norm()).item()
    assert rel <= 1e-10, f'relative error {rel:.2e}'


def test_autocast_is_the_fast_mode(golden):
    """Under float16 autocast the kernels take float16 queries, keys and values (the
    interpreter's bfloat16 products are wrong, see above) and stay within half precision of
    the golden output; the output keeps the features' dtype."""
    case = golden['cases'][1]
    model = _published(golden, 'triton')
    model.window_ratio = case['window_ratio']
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.float16):
        out = model(case['image'], case['features'], case['output_size'])
    assert out.dtype == torch.float32
    out, expected = out[:, case['channel_index']], case['expected']
    rel = ((out - expected).norm() / expected.norm()).item()
    # float32 kernels land at 2e-6, float16 ones at about 5e-4.
    assert 5e-5 < rel < 0.05, f'relative Frobenius error {rel:.2e}'


def test_windowed_attention_dispatches_to_the_kernels():
    """windowed_attention(kernel='triton'): the query transform on the whole map (bands
    joined), results into a contiguous or strided ``out``; ``out`` refused under autograd."""
    from anyup_plugin.core.attention import QueryBands, windowed_attention

    q, k, v = _random_qkv(1, (10, 12), (4, 5), 16, 6)
    proj = torch.nn.Linear(16, 16)

    def transform(x, out):
        return proj(x)

    with torch.no_grad():
        ref = dense_window_attention_reference(proj(q), k, v, 0.1, 2)
        bands = QueryBands([q[:, :3], q[:, 3:]])
        out = windowed_attention(bands, k, v, 0.1, 2, query_transform=transform, kernel='triton')
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        strided = torch.empty(1, 6, 10, 12).permute(0, 2, 3, 1)  # channels-last, not contiguous
        result = windowed_attention(
            q, k, v, 0.1, 2, query_transform=transform, out=strided, kernel='triton'
        )
        assert result is strided
        torch.testing.assert_close(strided, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='out= is only supported without autograd'):
        windowed_attention(q, k, v, 0.1, 2, query_transform=transform, out=strided, kernel='triton')

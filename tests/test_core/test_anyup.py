"""AnyUp: parity with the published model, shapes, precision modes, gradients, bad input."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from anyup_plugin import AnyUp
from anyup_plugin.core.fused_encoder import fused_encoder_forward
from anyup_plugin.core.reference import reference_upsample

GOLDEN = Path(__file__).parents[1] / 'data' / 'anyup_golden.pt'


@pytest.fixture(scope='module')
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


@pytest.fixture(scope='module')
def published(golden) -> AnyUp:
    model = AnyUp(
        qk_dim=golden['config']['qk_dim'],
        num_heads=golden['config']['num_heads'],
        lfu_kernel_size=golden['config']['kernel_size_lfu'],
    )
    model.load_state_dict(golden['state_dict'])
    return model.eval()


def _errors(out: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    rel = ((out - expected).norm() / expected.norm()).item()
    max_abs = ((out - expected).abs().max() / expected.abs().max()).item()
    return rel, max_abs


@pytest.mark.parametrize('kernel', ['matmul', 'sdpa'])
@pytest.mark.parametrize('grad', [False, True], ids=['inference', 'autograd'])
@pytest.mark.parametrize('case_index', range(5))
def test_matches_published_model(golden, published, case_index, grad, kernel, monkeypatch):
    """Every reference case within the stated tolerance, on both execution paths and with
    either attention kernel."""
    case = golden['cases'][case_index]
    # The model is module-scoped: monkeypatch restores what a test sets on it.
    monkeypatch.setattr(published, 'window_ratio', case['window_ratio'])
    monkeypatch.setattr(published, 'attention_kernel', kernel)
    with torch.set_grad_enabled(grad):
        out = published(case['image'], case['features'], case['output_size'])
    out = out[:, case['channel_index']]
    assert out.shape == case['expected'].shape
    rel, max_abs = _errors(out.detach(), case['expected'])
    assert rel <= 1e-4, f'relative Frobenius error {rel:.2e}'
    assert max_abs <= 1e-3, f'max abs error {max_abs:.2e} of max |expected|'


def test_golden_catches_a_skipped_parameter(golden, published):
    """The parity check is sensitive: perturbing one norm weight breaks it."""
    case = golden['cases'][1]
    model = AnyUp()
    state = {k: v.clone() for k, v in golden['state_dict'].items()}
    state['cross_decode.cross_attn.norm_k.weight'] += 0.5
    model.load_state_dict(state)
    model.window_ratio = case['window_ratio']
    with torch.no_grad():
        out = model.eval()(case['image'], case['features'], case['output_size'])
    rel, _ = _errors(out[:, case['channel_index']], case['expected'])
    assert rel > 1e-3


@pytest.mark.parametrize(
    'query_sizes',
    [[(20, 30), (37, 29)], [(9, 7), (20, 30)], [(50, 40)], [(37, 29)]],
    ids=['smaller-and-same', 'smaller', 'larger', 'same'],
)
@pytest.mark.parametrize('batch', [1, 2])
def test_fused_encoders_match_modules(published, batch, query_sizes):
    """Sizes smaller than the image take the last 1x1 convolution after pooling."""
    torch.manual_seed(0)
    image = torch.randn(batch, 3, 37, 29)
    key_sizes = [(5, 4), (3, 3), (37, 29)]
    m = published
    with torch.no_grad():
        q_fused, k_fused = fused_encoder_forward(
            image, m.image_encoder, m.query_encoder, m.key_encoder, m.rope, query_sizes, key_sizes
        )
        enc = m.rope(m.image_encoder(image))
        pool = torch.nn.functional.adaptive_avg_pool2d
        q = [pool(m.query_encoder(enc), s) for s in query_sizes]
        k = [pool(m.key_encoder(enc), s) for s in key_sizes]
    torch.testing.assert_close(q_fused, q, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(k_fused, k, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('batch', [1, 2])
def test_fused_encoders_work_in_lent_memory(published, batch):
    """The same maps with the working maps carved from lent memory; keys never stay in it."""
    torch.manual_seed(3)
    image = torch.randn(batch, 3, 13, 11)
    m = published
    args = (m.image_encoder, m.query_encoder, m.key_encoder, m.rope, [(13, 11)], [(13, 11)])
    memory = torch.full((batch * 3 * 13 * 11 * 128 + 7,), float('nan'))
    with torch.no_grad():
        queries, keys = fused_encoder_forward(image, *args)
        lent_queries, lent_keys = fused_encoder_forward(image, *args, memory=memory)
    torch.testing.assert_close(lent_queries, queries, rtol=0, atol=0)
    torch.testing.assert_close(lent_keys, keys, rtol=0, atol=0)
    start, end = memory.data_ptr(), memory.data_ptr() + memory.numel() * 4
    assert start <= lent_queries[0].data_ptr() < end or batch > 1  # at batch 1, a view
    assert not start <= lent_keys[0].data_ptr() < end
    assert not torch.isnan(memory[: 3 * 13 * 11 * 128]).any()  # all three maps were carved
    with pytest.raises(ValueError, match='memory must be a contiguous float32 tensor'):
        fused_encoder_forward(image, *args, memory=memory.double())


def test_named_parts_are_the_checkpoint_layers(golden):
    """Named accessors point at the layers the published key names hold."""
    model = AnyUp()
    assert set(model.state_dict()) == set(golden['state_dict'])
    block = model.query_encoder.blocks[1]
    assert block is model.query_encoder[2]
    params = dict(model.named_parameters())
    assert block.norm1.weight is params['query_encoder.2.block.0.weight']
    assert block.conv1.weight is params['query_encoder.2.block.2.weight']
    assert block.norm2.bias is params['query_encoder.2.block.3.bias']
    assert block.conv2.weight is params['query_encoder.2.block.5.weight']
    assert model.image_encoder.first_layer.weight is params['image_encoder.0.weight']
    assert model.key_features_encoder.first_layer.basis is params['key_features_encoder.0.basis']


@pytest.mark.parametrize(
    ('image_size', 'feat_size', 'channels', 'output_size'),
    [
        ((56, 56), (4, 4), 1, None),
        ((30, 70), (3, 5), 7, None),
        ((64, 48), (8, 6), 16, (5, 3)),  # smaller than the features
        ((32, 32), (16, 16), 5, (97, 61)),  # larger than the image
        ((16, 16), (1, 1), 4, (9, 9)),  # a single feature token
    ],
)
def test_shapes_and_convexity(image_size, feat_size, channels, output_size):
    torch.manual_seed(1)
    model = AnyUp().eval()
    image = torch.randn(2, 3, *image_size)
    features = torch.randn(2, channels, *feat_size)
    with torch.no_grad():
        out = model(image, features, output_size)
    expected = output_size or image_size
    assert out.shape == (2, channels, *expected)
    # Each output vector is a convex combination of input vectors.
    lo = features.amin(dim=(2, 3), keepdim=True) - 1e-5
    hi = features.amax(dim=(2, 3), keepdim=True) + 1e-5
    assert bool(((out >= lo) & (out <= hi)).all())


def test_constant_features_are_reproduced():
    model = AnyUp().eval()
    features = torch.ones(1, 3, 4, 5) * torch.tensor([1.0, -2.0, 3.0])[None, :, None, None]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 28, 35), features)
    torch.testing.assert_close(out, features[:, :, :1, :1].expand_as(out), rtol=1e-5, atol=1e-5)


def test_int_output_size_means_square():
    model = AnyUp().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 20, 30), torch.randn(1, 2, 2, 3), output_size=12)
    assert out.shape == (1, 2, 12, 12)


@pytest.mark.parametrize('window_ratio', [0.1, 0.3, 0.0])
def test_tiling_does_not_change_the_result(window_ratio):
    torch.manual_seed(2)
    big = AnyUp(window_ratio=window_ratio).eval()
    small = AnyUp(window_ratio=window_ratio, max_tile_elements=1).eval()
    small.load_state_dict(big.state_dict())
    image, features = torch.randn(1, 3, 40, 44), torch.randn(1, 6, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(small(image, features), big(image, features))


def test_gradients_reach_every_used_parameter_and_the_inputs():
    torch.manual_seed(3)
    model = AnyUp().train()
    image = torch.randn(2, 3, 28, 28, requires_grad=True)
    features = torch.randn(2, 8, 4, 4, requires_grad=True)
    model(image, features).square().mean().backward()
    unused = {
        'cross_decode.cross_attn.attention.out_proj.weight',
        'cross_decode.cross_attn.attention.out_proj.bias',
    }
    for name, param in model.named_parameters():
        if name in unused:
            continue
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert image.grad is not None and features.grad is not None


def test_bf16_autocast_on_cpu_is_close_to_float32():
    torch.manual_seed(4)
    model = AnyUp().eval()
    image, features = torch.randn(1, 3, 28, 42), torch.randn(1, 16, 2, 3)
    with torch.no_grad():
        ref = model(image, features)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(image, features)
    assert torch.isfinite(out).all()
    assert ((out.float() - ref).norm() / ref.norm()) < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize(
    'kernel',
    [
        'matmul',
        'sdpa',
        pytest.param(
            'triton',
            marks=pytest.mark.skipif(
                importlib.util.find_spec('triton') is None, reason='needs triton'
            ),
        ),
    ],
)
def test_cuda_matches_cpu(published, golden, kernel):
    case = golden['cases'][0]
    model = AnyUp(window_ratio=case['window_ratio'], attention_kernel=kernel)
    model.load_state_dict(published.state_dict())
    model = model.cuda().eval()
    with torch.no_grad():
        out = model(case['image'].cuda(), case['features'].cuda())
        for dtype in (torch.float16, torch.bfloat16):
            with torch.autocast('cuda', dtype=dtype):
                low = model(case['image'].cuda(), case['features'].cuda())
            rel, _ = _errors(low[:, case['channel_index']].float().cpu(), case['expected'])
            assert rel < 0.05, f'{dtype}: relative Frobenius error {rel:.2e}'
    rel, _ = _errors(out[:, case['channel_index']].cpu(), case['expected'])
    assert rel < 1e-4


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'qk_dim': 130}, r'qk_dim must be divisible by num_heads \(4\) and by 4, got 130'),
        ({'window_ratio': float('nan')}, 'window_ratio must be finite, got nan'),
        (
            {'attention_kernel': 'flash'},
            r"attention_kernel must be one of \('auto', 'matmul', 'sdpa', 'triton'\), got 'flash'",
        ),
    ],
)
def test_constructor_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AnyUp(**kwargs)


def test_triton_kernel_without_triton_fails_at_construction(monkeypatch):
    from anyup_plugin.core.attention import triton as triton_kernel

    monkeypatch.setattr(triton_kernel, 'triton_is_available', lambda: False)
    with pytest.raises(ImportError, match=r"needs the triton package.*'matmul', 'sdpa' or 'auto'"):
        AnyUp(qk_dim=16, num_heads=2, attention_kernel='triton')
    AnyUp(qk_dim=16, num_heads=2, attention_kernel='auto')  # 'auto' never needs it


@pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='needs triton')
def test_triton_kernel_on_cpu_tensors_fails_at_the_first_call(monkeypatch):
    """Without Triton's interpreter a CPU tensor cannot run the kernel: the call says so."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    model = AnyUp(qk_dim=16, num_heads=2, attention_kernel='triton').eval()
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"cannot run on cpu tensors.*'sdpa'"):
        model(torch.randn(1, 3, 16, 16), torch.randn(1, 4, 2, 2))


@pytest.fixture(scope='module')
def model() -> AnyUp:
    return AnyUp().eval()


@pytest.mark.parametrize(
    ('image', 'features', 'output_size', 'match'),
    [
        (torch.randn(3, 8, 8), torch.randn(1, 4, 2, 2), None, r'image must have 4 dimensions'),
        (torch.randn(1, 4, 8, 8), torch.randn(1, 4, 2, 2), None, r'image must have 3 channels'),
        (torch.randn(1, 3, 8, 8), torch.randn(4, 2, 2), None, r'features must have 4 dim'),
        (torch.randn(2, 3, 8, 8), torch.randn(1, 4, 2, 2), None, r'same batch size, got 2'),
        (torch.randn(1, 3, 0, 8), torch.randn(1, 4, 2, 2), None, r'image must have no zero'),
        (torch.randn(1, 3, 8, 8), torch.randn(1, 0, 2, 2), None, r'features must have no zero'),
        (torch.randn(1, 3, 8, 8), torch.randn(1, 4, 2, 2), (0, 4), r'output_size must be pos'),
        (torch.randn(1, 3, 8, 8), torch.randn(1, 4, 2, 2), (-3, 4), r'output_size must be pos'),
        (torch.randn(1, 3, 8, 8), torch.randn(1, 4, 2, 2), (4.5, 4), r'output_size must be'),
        (torch.randn(1, 3, 8, 8), torch.randn(1, 4, 2, 2), (4, 4, 4), r'output_size must be'),
        (
            torch.full((1, 3, 8, 8), math.nan),
            torch.randn(1, 4, 2, 2),
            None,
            r'image contains 192 NaN or infinite',
        ),
        (
            torch.randn(1, 3, 8, 8),
            torch.tensor([math.inf]).expand(1, 4, 2, 2),
            None,
            r'features contains 16 NaN',
        ),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(model, image, features, output_size, match):
    with pytest.raises(ValueError, match=match):
        model(image, features, output_size)


def test_non_tensor_input_is_rejected(model):
    with pytest.raises(TypeError, match='image must be a torch.Tensor'):
        model([[1.0]], torch.randn(1, 4, 2, 2))


def test_devices_must_match(model):
    if not torch.cuda.is_available():
        pytest.skip('needs a CUDA device to have two devices')
    with pytest.raises(ValueError, match='same device'):
        model(torch.randn(1, 3, 8, 8), torch.randn(1, 4, 2, 2).cuda())


def test_checkpoint_with_wrong_keys_names_them(golden):
    state = dict(golden['state_dict'])
    state.pop('rope.freqs')
    state['extra.weight'] = torch.zeros(1)
    state['image_encoder.0.weight'] = torch.zeros(64, 3, 1, 1)
    with pytest.raises(RuntimeError) as err:  # what torch's load_state_dict raises
        AnyUp().load_state_dict(state)
    assert str(err.value) == (
        'AnyUp checkpoint does not fit this AnyUp: 1 missing key(s): rope.freqs; '
        '1 unexpected key(s): extra.weight; 1 key(s) with the wrong shape: '
        'image_encoder.0.weight (checkpoint (64, 3, 1, 1), model (128, 3, 1, 1))'
    )


def test_from_pretrained_local_file(tmp_path, golden):
    path = tmp_path / 'weights.pth'
    torch.save({'state_dict': golden['state_dict']}, path)
    model = AnyUp.from_pretrained(path)
    assert not model.training
    torch.testing.assert_close(model.rope.freqs, golden['state_dict']['rope.freqs'])
    assert sum(p.numel() for p in model.parameters()) == 878_080


def test_from_pretrained_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError('network unreachable')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    with pytest.raises(FileNotFoundError) as err:
        AnyUp.from_pretrained('anyup_paper')
    assert str(tmp_path / 'checkpoints' / 'anyup_paper.pth') in str(err.value)
    with pytest.raises(FileNotFoundError, match='does not exist or is not a file. Pass the path'):
        AnyUp.from_pretrained(tmp_path / 'missing.pth')


@pytest.mark.parametrize('case_index', [1, 2])
def test_reference_matches_forward_and_golden(published, golden, case_index, monkeypatch):
    case = golden['cases'][case_index]
    monkeypatch.setattr(published, 'window_ratio', case['window_ratio'])
    with torch.no_grad():
        fast = published(case['image'], case['features'], case['output_size'])
        ref = reference_upsample(published, case['image'], case['features'], case['output_size'])
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
    rel, max_abs = _errors(ref[:, case['channel_index']], case['expected'])
    assert rel <= 1e-4 and max_abs <= 1e-3


def test_set_trainable_keeps_the_unused_parameters_frozen():
    model = AnyUp(qk_dim=16, num_heads=2)
    unused = {'cross_decode.cross_attn.attention.out_proj.weight',
              'cross_decode.cross_attn.attention.out_proj.bias'}  # fmt: skip
    model.set_trainable(True)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == unused
    model.set_trainable(False)
    assert not any(p.requires_grad for p in model.parameters())


def test_fused_encoders_match_modules_over_many_chunks(published):
    """Chunks of two image rows: statistics and rotary angles assembled across chunks."""
    torch.manual_seed(1)
    image = torch.randn(1, 3, 23, 29)
    m = published
    with torch.no_grad():
        (q_fused,), (k_fused,) = fused_encoder_forward(
            image,
            m.image_encoder,
            m.query_encoder,
            m.key_encoder,
            m.rope,
            [(23, 29)],
            [(4, 5)],
            chunk_tokens=2 * 29 + 5,
        )
        enc = m.rope(m.image_encoder(image))
        q = m.query_encoder(enc)
        k = torch.nn.functional.adaptive_avg_pool2d(m.key_encoder(enc), (4, 5))
    torch.testing.assert_close(q_fused, q, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(k_fused, k, rtol=1e-4, atol=1e-4)


def test_fused_group_norm_statistics_survive_a_large_mean():
    """Every channel far from zero: a group's mean dwarfs its spread.

    Sums of squares alone lose that variance to cancellation (they even go negative); the
    fused path detects it and recomputes the variance from the centred map.
    """
    from anyup_plugin.core.fused_encoder import _ChannelStats, _Workspace

    torch.manual_seed(2)
    tokens = 300.0 + 0.05 * torch.randn(2000, 128)
    norm = torch.nn.GroupNorm(8, 128)
    rows = [slice(r, min(r + 300, 2000)) for r in range(0, 2000, 300)]
    work = _Workspace(300, 128, tokens.device)
    stats = _ChannelStats(128, len(rows), tokens.device)
    for r in rows:
        stats.add(tokens[r], work)
    scale, shift = stats.group_norm_affine(norm, tokens, rows, work)
    with torch.no_grad():
        expected = norm(tokens.t()[None])[0].t()
    torch.testing.assert_close(tokens * scale + shift, expected, rtol=0, atol=2e-3)


@pytest.mark.parametrize('weights', ['published', 'initial'])
def test_logit_bound_holds_and_is_small_for_real_weights(golden, weights):
    """The bound covers every logit, also of the worst-aligned queries, and allows the fast path."""
    from anyup_plugin.core.softmax_bounds import MAX_UNSHIFTED_LOGIT

    model = AnyUp()
    if weights == 'published':
        model.load_state_dict(golden['state_dict'])
    attn = model.cross_decode.cross_attn
    q_weight, q_bias, k_weight, k_bias = model.query_key_projections()
    torch.manual_seed(0)
    # Random queries, and per head the one its projection stretches most.
    worst = torch.linalg.svd(q_weight.detach().view(4, 32, 128)).Vh[:, 0]
    raw_q = torch.cat([torch.randn(200, 128) * 5, worst, -worst])
    raw_k = torch.randn(1, 7, 9, 128) * 3
    with torch.no_grad():
        keys = torch.nn.functional.linear(model._rms_norm(raw_k, attn.norm_k), k_weight, k_bias)
        queries = torch.nn.functional.linear(model._rms_norm(raw_q, attn.norm_q), q_weight, q_bias)
        bound = model._logit_bound(q_weight, q_bias, keys)
    logits = torch.einsum('qnd,knd->nqk', queries.view(-1, 4, 32), keys.view(-1, 4, 32))
    assert logits.abs().max() <= bound
    assert bound <= MAX_UNSHIFTED_LOGIT

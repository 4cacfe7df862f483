"""NAF: golden parity with the published code, NATTEN's neighbourhood attention, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from anyup_plugin.core.checkpoints import CheckpointMismatchError
from anyup_plugin.core.methods import WrongFeaturesError, build_method
from anyup_plugin.core.methods.naf import NAF, NAF_CHECKPOINT_URL
from anyup_plugin.core.methods.neighborhood_attention import (
    nearest_exact_source,
    neighborhood_attention_2d,
    neighborhood_window,
)
from anyup_plugin.core.methods.registry import METHOD_CLASSES, method_class
from anyup_plugin.testing.golden import GOLDEN_TOLERANCE, golden_errors, perturbed_state_dict

GOLDEN = Path(__file__).parents[2] / 'data' / 'golden' / 'naf' / 'naf.pt'


@pytest.fixture(scope='module')
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def _model(seed: int, dtype: torch.dtype = torch.float32, **kwargs) -> NAF:
    model = NAF(**kwargs).to(dtype).eval()
    model.load_state_dict(perturbed_state_dict(model.state_dict(), seed))
    return model


# --- NATTEN's definition -------------------------------------------------------------------


def natten_window_start(index: int, length: int, kernel_size: int, dilation: int) -> int:
    """NATTEN's get_window_start (csrc, CPU naive kernels), line by line."""
    neighborhood_size = kernel_size // 2
    if dilation <= 1:
        return max(index - neighborhood_size, 0) + (index + neighborhood_size >= length) * (
            length - index - neighborhood_size - 1
        )
    ni = index - neighborhood_size * dilation
    if ni < 0:
        return index % dilation
    if index + neighborhood_size * dilation >= length:
        imodd = index % dilation
        a = int(length / dilation) * dilation
        b = length - a
        if imodd < b:
            return length - b + imodd - 2 * neighborhood_size * dilation
        return a + imodd - kernel_size * dilation
    return ni


@pytest.mark.parametrize('kernel_size', [3, 5, 9])
def test_window_is_natten_get_window_start(kernel_size):
    for dilation in range(1, 6):
        for length in range(kernel_size * dilation, kernel_size * dilation + 2 * dilation + 8):
            window = neighborhood_window(length, kernel_size, dilation)
            for i in range(length):
                start = natten_window_start(i, length, kernel_size, dilation)
                expected = [start + j * dilation for j in range(kernel_size)]
                assert window[i].tolist() == expected, (length, kernel_size, dilation, i)


def test_window_refuses_what_natten_refuses():
    with pytest.raises(ValueError, match='fewer than kernel_size x dilation'):
        neighborhood_window(17, 9, 2)
    with pytest.raises(ValueError, match='odd'):
        neighborhood_window(20, 4, 1)


def test_nearest_exact_source_is_pytorch_interpolation():
    for n_in, n_out in [(9, 31), (10, 20), (11, 40), (73, 1024), (8, 12), (7, 7), (13, 100)]:
        grid = torch.arange(n_in, dtype=torch.float32).view(1, 1, n_in, 1).expand(1, 1, n_in, 3)
        picked = F.interpolate(grid, size=(n_out, 5), mode='nearest-exact')[0, 0, :, 0]
        assert nearest_exact_source(n_out, n_in).tolist() == picked.long().tolist()


def brute_force_attention(q, k, v, kernel_size, dilation, scale, key_rows, key_cols):
    """Per query: NATTEN's window from get_window_start, softmax(scale q.k) over it, times v."""
    b, n, _, h, w = q.shape
    out = torch.zeros(b, n, v.shape[2], h, w, dtype=q.dtype)
    for i in range(h):
        si = natten_window_start(i, h, kernel_size[0], dilation[0])
        rows = [key_rows[si + a * dilation[0]] for a in range(kernel_size[0])]
        for j in range(w):
            sj = natten_window_start(j, w, kernel_size[1], dilation[1])
            cols = [key_cols[sj + c * dilation[1]] for c in range(kernel_size[1])]
            keys = torch.stack([k[..., r, c] for r in rows for c in cols], -1)  # (B, n, D, kk)
            values = torch.stack([v[..., r, c] for r in rows for c in cols], -1)
            weights = (scale * (q[..., i, j, None] * keys).sum(2)).softmax(-1)  # (B, n, kk)
            out[..., i, j] = (values * weights[:, :, None]).sum(-1)
    return out


@pytest.mark.parametrize(
    ('size', 'key_size', 'kernel_size', 'dilation', 'chunk'),
    [
        ((11, 13), (11, 13), (3, 5), (1, 2), 10_000),  # keys on the query grid
        ((11, 13), (11, 13), (3, 5), (3, 2), 7),  # steps of part of a row
        ((14, 19), (6, 7), (5, 3), (2, 3), 40),  # keys on a coarse grid, window-wide steps
        ((12, 10), (8, 10), (9, 9), (1, 1), 1),  # one query per step
    ],
)
def test_attention_is_the_brute_force_definition(size, key_size, kernel_size, dilation, chunk):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 4, *size, generator=g, dtype=torch.float64)
    k = torch.randn(2, 3, 4, *key_size, generator=g, dtype=torch.float64)
    v = torch.randn(2, 3, 5, *key_size, generator=g, dtype=torch.float64)
    key_rows = nearest_exact_source(size[0], key_size[0])
    key_cols = nearest_exact_source(size[1], key_size[1])
    expected = brute_force_attention(
        q, k, v, kernel_size, dilation, 0.7, key_rows.tolist(), key_cols.tolist()
    )
    out = neighborhood_attention_2d(
        q, k, v, kernel_size, dilation, scale=0.7, key_rows=key_rows, key_cols=key_cols,
        max_query_chunk=chunk,
    )  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


# --- Golden parity with the published code -------------------------------------------------


def _case_ids() -> list[str]:
    return [case['name'] for case in torch.load(GOLDEN, weights_only=True)['cases']]


@pytest.mark.parametrize('index', range(len(_case_ids())), ids=_case_ids())
def test_golden_float32(golden, index):
    case = golden['cases'][index]
    model = _model(golden['seed'])
    with torch.no_grad():
        out = model(case['image'], case['features'], case['output_size'])
    errors = golden_errors(out, case['expected'])
    assert all(errors[key] <= GOLDEN_TOLERANCE[key] for key in GOLDEN_TOLERANCE), errors


@pytest.mark.parametrize('index', range(len(_case_ids())), ids=_case_ids())
def test_golden_float64(golden, index):
    # The published run was float64 from the same float32 inputs: only the file's float32
    # rounding of the outputs remains.
    case = golden['cases'][index]
    model = _model(golden['seed'], torch.float64)
    with torch.no_grad():
        out = model(case['image'].double(), case['features'].double(), case['output_size'])
    assert out.dtype == torch.float64
    errors = golden_errors(out, case['expected'])
    assert errors['relative_frobenius'] < 1e-7 and errors['max_abs_relative'] < 1e-7, errors


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_chunked_equals_unchunked(golden, dtype):
    # Steps differ only in how the products are blocked: equal up to rounding.
    case = golden['cases'][1]
    model = _model(1, dtype, max_query_chunk=10**9)
    image, features = case['image'].to(dtype), case['features'].to(dtype)
    with torch.no_grad():
        whole = model(image, features, case['output_size'])
        model.max_query_chunk = 7  # steps of part of a row
        chunked = model(image, features, case['output_size'])
    tolerance = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(chunked, whole, rtol=tolerance, atol=tolerance)


def test_key_names_are_the_published_ones():
    keys = set(NAF().state_dict())
    assert len(keys) == 37
    assert {
        'image_encoder.encoder.0.weight',
        'image_encoder.encoder.2.conv2.bias',
        'image_encoder.sem_encoder.1.norm1.weight',
        'image_encoder.rope.periods',
    } <= keys
    periods = NAF().image_encoder.rope.periods
    torch.testing.assert_close(periods, 100.0 ** (torch.arange(16) / 16))


def test_gradients_reach_weights_image_and_features():
    model = _model(2).train()
    image = torch.randn(2, 3, 30, 36, requires_grad=True)
    features = torch.randn(2, 8, 10, 12, requires_grad=True)
    out = model(image, features, (23, 27))
    assert out.shape == (2, 8, 23, 27)
    (out * torch.randn_like(out)).sum().backward()
    for tensor in (image, features, *model.parameters()):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0


def test_training_rescales_rope_coordinates_per_call():
    model = _model(3)
    image, features = torch.randn(1, 3, 20, 20), torch.randn(1, 4, 10, 10)
    with torch.no_grad():
        evaluated = model(image, features, (20, 20))
        torch.testing.assert_close(model(image, features, (20, 20)), evaluated)
        model.train()
        trained = [model(image, features, (20, 20)) for _ in range(2)]
        model.image_encoder.rope.rescale_coords = None
        plain = model(image, features, (20, 20))
    assert not torch.allclose(trained[0], trained[1])
    torch.testing.assert_close(plain, evaluated)


def test_output_is_a_convex_combination_of_features():
    # Constant features stay constant: the attention weights sum to one.
    model = _model(4)
    features = torch.ones(1, 4, 9, 9) * torch.tensor([1.0, -2.0, 3.0, 0.5]).view(1, 4, 1, 1)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 36, 36), features, (36, 36))
    torch.testing.assert_close(out, features[:, :, :1, :1].expand_as(out))


# --- Checkpoints ------------------------------------------------------------------------------


def test_from_checkpoint_loads_the_published_format(tmp_path):
    model = _model(5)
    path = tmp_path / 'naf_release.pth'
    torch.save(model.state_dict(), path)
    loaded = build_method('naf', checkpoint=path).eval()
    image, features = torch.randn(1, 3, 28, 28), torch.randn(1, 8, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(image, features, (18, 18)), model(image, features, (18, 18))
        )


def test_from_checkpoint_reads_the_shape_arguments(tmp_path):
    small = NAF(dim=64, heads_rope=2, img_layers=1, heads_attn=2)
    torch.save(small.state_dict(), tmp_path / 'small.pth')
    loaded = NAF.from_checkpoint(tmp_path / 'small.pth', heads_attn=2)
    assert loaded.image_encoder.encoder[0].out_channels == 32
    assert len(loaded.image_encoder.encoder) == 2
    assert loaded.image_encoder.rope.heads == 2


def test_missing_checkpoint_says_where_to_download(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        NAF.from_checkpoint(tmp_path / 'naf_release.pth')
    assert NAF_CHECKPOINT_URL in str(info.value) and 'local' in str(info.value)


def test_checkpoint_of_another_method_is_named(tmp_path, monkeypatch):
    class Other(NAF):
        checkpoint_keys_hint = ('decoder.special.weight',)

    monkeypatch.setitem(METHOD_CLASSES, 'other_method', Other)
    torch.save({'decoder.special.weight': torch.zeros(2)}, tmp_path / 'other.pth')
    with pytest.raises(
        CheckpointMismatchError, match="Other checkpoint \\(method 'other_method'\\)"
    ):
        NAF.from_checkpoint(tmp_path / 'other.pth')
    anyup = {
        'image_encoder.0.weight': torch.zeros(1),
        'key_features_encoder.0.basis': torch.zeros(1),
    }
    torch.save(anyup, tmp_path / 'anyup.pth')
    with pytest.raises(CheckpointMismatchError, match='AnyUp checkpoint'):
        NAF.from_checkpoint(tmp_path / 'anyup.pth')


def test_prefixed_or_wrapped_naf_weights_are_explained(tmp_path):
    state = NAF().state_dict()
    torch.save({'model.' + k: v for k, v in state.items()}, tmp_path / 'prefixed.pth')
    with pytest.raises(CheckpointMismatchError, match="prefix 'model.'"):
        NAF.from_checkpoint(tmp_path / 'prefixed.pth')
    torch.save({'state_dict': state, 'epoch': 3}, tmp_path / 'training.ckpt')
    with pytest.raises(CheckpointMismatchError, match="NAF weights inside {'state_dict'"):
        NAF.from_checkpoint(tmp_path / 'training.ckpt')
    torch.save({'state_dict': {'w': torch.zeros(1)}}, tmp_path / 'other.ckpt')
    with pytest.raises(CheckpointMismatchError, match='training checkpoint'):
        NAF.from_checkpoint(tmp_path / 'other.ckpt')


@pytest.mark.parametrize('method', ['jafar', 'loftup', 'featup'])
def test_checkpoints_of_the_other_published_methods_are_named(tmp_path, method):
    other = method_class(method)
    state = {key: torch.zeros(2) for key in other.checkpoint_keys_hint}
    for name, saved in (('plain.pth', state), ('wrapped.ckpt', {'state_dict': state})):
        torch.save(saved, tmp_path / name)
        with pytest.raises(CheckpointMismatchError, match=f'holds a {other.__name__} checkpoint'):
            NAF.from_checkpoint(tmp_path / name)


def test_extra_or_missing_keys_are_named(tmp_path):
    state = NAF().state_dict()
    state['image_encoder.extra.weight'] = torch.zeros(3)
    del state['image_encoder.sem_encoder.2.conv1.bias']
    del state['image_encoder.encoder.0.weight']  # the key the channel count is read from
    torch.save(state, tmp_path / 'edited.pth')
    with pytest.raises(CheckpointMismatchError) as info:
        NAF.from_checkpoint(tmp_path / 'edited.pth')
    assert 'image_encoder.extra.weight' in str(info.value)
    assert 'image_encoder.sem_encoder.2.conv1.bias' in str(info.value)
    assert 'image_encoder.encoder.0.weight' in str(info.value)


# --- Inputs NAF cannot take --------------------------------------------------------------------


def test_any_channels_and_patch_size_but_whole_heads():
    model = NAF()
    assert model.feature_channels is None and model.patch_size is None
    model.check_features(torch.zeros(1, 3, 100, 30), torch.zeros(1, 12, 9, 9))
    with pytest.raises(WrongFeaturesError, match='multiple of 4, got 10'):
        model(torch.zeros(1, 3, 18, 18), torch.zeros(1, 10, 9, 9), (18, 18))


def test_output_smaller_than_features_is_refused():
    with pytest.raises(ValueError, match='only upsamples.*at least 10'):
        NAF()(torch.zeros(1, 3, 20, 20), torch.zeros(1, 4, 10, 10), (9, 20))


def test_output_the_window_does_not_fit_names_the_sizes_it_can_make():
    model = NAF()
    # 8 cells, kernel 9: 9-15, 18-23, 27-31, 36-39, 45-47, 54-55, 63 work; 16 (x2) does not.
    with pytest.raises(ValueError, match='from 8 cells it makes 9-15, 18-23, 27-31, 36-39') as info:
        model(torch.zeros(1, 3, 16, 16), torch.zeros(1, 4, 8, 9), (16, 18))
    assert '54-55, 63' in str(info.value)
    with pytest.raises(ValueError, match='makes none from 4 cells'):
        model(torch.zeros(1, 3, 16, 16), torch.zeros(1, 4, 4, 9), (16, 18))
    for height in (9, 15, 18, 23, 63):  # the sizes named are made
        assert (
            model(torch.zeros(1, 3, 16, 16), torch.zeros(1, 4, 8, 9), (height, 9)).shape[2]
            == height
        )


def test_image_is_required():
    with pytest.raises(ValueError, match='needs the image'):
        NAF()(None, torch.zeros(1, 4, 9, 9), (18, 18))


def test_runs_under_autocast():
    # Softmax weights in float32 next to bfloat16 scores must not break the scatter.
    model = _model(6)
    image, features = torch.randn(1, 3, 36, 40), torch.randn(1, 8, 9, 10)
    with torch.no_grad():
        expected = model(image, features, (18, 20))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(image, features, (18, 20))
    # bfloat16 keeps 8 bits: close, not exact (an unrelated map would be about 1.4 off).
    assert out.dtype == torch.bfloat16
    assert golden_errors(out.float(), expected)['relative_frobenius'] < 0.2

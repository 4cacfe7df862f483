"""JAFAR: golden parity with the published model, chunked attention, checkpoints and errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from anyup_plugin.constants import IMAGENET_MEAN, IMAGENET_STD
from anyup_plugin.core.checkpoints import CheckpointMismatchError, CheckpointReadError
from anyup_plugin.core.methods import (
    METHOD_CLASSES,
    UpsamplingMethod,
    WrongFeaturesError,
    build_method,
)
from anyup_plugin.core.methods.jafar import JAFAR
from anyup_plugin.testing.golden import GOLDEN_TOLERANCE, golden_errors, perturbed_state_dict

GOLDEN = Path(__file__).resolve().parents[2] / 'data' / 'golden' / 'jafar' / 'jafar.pt'


@pytest.fixture(scope='module')
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def _model(channels: int, seed: int = 0, **kwargs) -> JAFAR:
    model = JAFAR(feature_channels=channels, **kwargs).eval()
    model.load_state_dict(perturbed_state_dict(model.state_dict(), seed), strict=True)
    return model


def _within_tolerance(errors: dict[str, float]) -> bool:
    return all(errors[k] <= GOLDEN_TOLERANCE[k] for k in GOLDEN_TOLERANCE)


def _case_names() -> list[str]:
    return [case['name'] for case in torch.load(GOLDEN, weights_only=True)['cases']]


@pytest.mark.parametrize('name', _case_names())
def test_golden_case_float32(golden, name):
    case = next(c for c in golden['cases'] if c['name'] == name)
    model = _model(golden['small_channels'], golden['seed'])
    with torch.no_grad():
        out = model(case['image'], case['features'], case['output_size'])
    errors = golden_errors(out, case['expected'])
    assert _within_tolerance(errors), errors
    # As close as the published code's own float32 run, give or take rounding.
    assert (
        errors['relative_frobenius'] < 10 * case['published_float32_errors']['relative_frobenius']
    )


def test_golden_cases_float64_match_to_the_stored_precision(golden):
    model = _model(golden['small_channels'], golden['seed']).double()
    for case in golden['cases']:
        with torch.no_grad():
            out = model(case['image'].double(), case['features'].double(), case['output_size'])
        # The expected outputs are float64 results rounded to float32.
        assert golden_errors(out, case['expected'])['max_abs_relative'] < 1e-6, case['name']


def test_golden_at_the_published_dimensions(golden):
    case = golden['published_dims']
    generator = torch.Generator().manual_seed(case['input_seed'])
    image = torch.randn(1, 3, 224, 224, generator=generator)
    features = torch.randn(1, 384, 16, 16, generator=generator)
    assert math.isclose(float(image.double().sum()), case['image_sum'], rel_tol=1e-12)
    assert math.isclose(float(features.double().sum()), case['features_sum'], rel_tol=1e-12)
    model = _model(384, golden['seed'])
    with torch.no_grad():
        out = model(image, features, case['output_size'])
    errors = golden_errors(out.flatten(2)[..., case['pixels']], case['expected'])
    assert _within_tolerance(errors), errors


def test_defaults_are_the_published_dinov2_vits14_release():
    model = JAFAR()
    assert (model.feature_channels, model.patch_size) == (384, 14)
    state = model.state_dict()
    assert state['key_features_encoder.0.weight'].shape == (128, 384, 1, 1)
    assert state['cross_decode.cross_attn.attention.v_proj_weight'].shape == (128, 384)
    assert state['rope.freqs'].shape == (2, 128)
    assert model.cross_decode.cross_attn.attention.num_heads == 4


def test_rope_initial_frequencies():
    freqs = JAFAR().rope.freqs.detach()
    two_pi = 2 * math.pi
    # Rows: 2 pi * 100^t for t = 0, -1/31, ..., -1 on channels 0-31 and again on 32-63.
    expected = two_pi * 100 ** torch.linspace(0, -1, 32)
    torch.testing.assert_close(freqs[0, :32], expected)
    torch.testing.assert_close(freqs[0, 32:64], expected)
    assert freqs[0, 64:].eq(0).all() and freqs[1, :64].eq(0).all()
    torch.testing.assert_close(freqs[1, 64:], torch.cat([expected, expected]))
    assert math.isclose(float(freqs[0, 31]), two_pi / 100, rel_tol=1e-6)


def _inputs(batch=2, channels=8, h=3, w=5, dtype=torch.float64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, 14 * h, 14 * w, generator=generator, dtype=dtype)
    features = torch.randn(batch, channels, h, w, generator=generator, dtype=dtype)
    return image, features


@pytest.mark.parametrize('chunk', [1, 7, 10**9])
def test_chunked_attention_equals_unchunked(chunk):
    image, features = _inputs()
    reference = _model(8, max_query_chunk=10**9).double()
    chunked = _model(8, max_query_chunk=chunk).double()
    with torch.no_grad():
        expected = reference(image, features, (11, 13))
        out = chunked(image, features, (11, 13))
    # Each query's attention is independent of the others: equal up to float64 rounding of
    # the differently blocked products.
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


class _LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in tree_leaves(out) if isinstance(t, Tensor)]
        self.largest = max([self.largest, *sizes])
        return out


def test_chunks_bound_the_attention_memory():
    # 48 x 48 queries attend to 12 x 12 tokens with 4 heads: 1.3 M scores at once, while no
    # other tensor exceeds the 128-channel query map (295 k); a small image (patch size not
    # checked) keeps the image encoders below that too.
    generator = torch.Generator().manual_seed(2)
    image = torch.randn(1, 3, 16, 16, generator=generator)
    features = torch.randn(1, 8, 12, 12, generator=generator)
    attention = 4 * 48 * 48 * 144
    largest = {}
    for chunk in (64, 10**9):
        model = _model(8, patch_size=None, max_query_chunk=chunk)
        with torch.no_grad(), _LargestTensor() as record:
            model(image, features, (48, 48))
        largest[chunk] = record.largest
    assert largest[10**9] >= attention
    assert largest[64] == 128 * 48 * 48


def test_output_is_features_mixed_by_head_averaged_attention():
    """Every output pixel is a convex combination of the feature tokens."""
    image, features = _inputs(batch=1, channels=6, h=2, w=2)
    model = _model(6).double()
    with torch.no_grad():
        out = model(image, features, (9, 11))
    # With features constant over tokens the output is that constant everywhere.
    constant = features[..., :1, :1].expand_as(features).contiguous()
    with torch.no_grad():
        flat = model(image, constant, (9, 11))
    torch.testing.assert_close(flat, constant[..., :1, :1].expand(1, 6, 9, 11))
    low = features.amin(dim=(2, 3), keepdim=True)
    high = features.amax(dim=(2, 3), keepdim=True)
    assert ((out >= low - 1e-12) & (out <= high + 1e-12)).all()


def test_gradients_reach_inputs_and_every_used_parameter():
    image, features = _inputs(batch=1, dtype=torch.float32)
    image.requires_grad_(True)
    features.requires_grad_(True)
    model = _model(8, max_query_chunk=16).train()
    model(image, features, (17, 19)).square().sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert features.grad is not None and features.grad.abs().sum() > 0
    # The published model averages the attention weights over heads and mixes the raw
    # features with them: the value path of nn.MultiheadAttention is never used.
    unused = {
        'cross_decode.cross_attn.norm_v.weight',
        'cross_decode.cross_attn.attention.v_proj_weight',
        'cross_decode.cross_attn.attention.out_proj.weight',
        'cross_decode.cross_attn.attention.out_proj.bias',
    }
    for name, parameter in model.named_parameters():
        if name in unused:
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_image_normalisation_of_another_backbone_is_converted():
    clip_mean, clip_std = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)
    image, features = _inputs(batch=1)
    weights = _model(8).state_dict()
    imagenet = JAFAR(feature_channels=8).double().eval()
    clip = JAFAR(feature_channels=8, image_mean=clip_mean, image_std=clip_std).double().eval()
    imagenet.load_state_dict(weights)
    clip.load_state_dict(weights)
    column = lambda v: torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1)  # noqa: E731
    rgb = image * column(IMAGENET_STD) + column(IMAGENET_MEAN)
    clip_normalised = (rgb - column(clip_mean)) / column(clip_std)
    with torch.no_grad():
        # The ImageNet model sees the CLIP-normalised image: what the CLIP model must see.
        expected = imagenet(clip_normalised, features, (20, 30))
        out = clip(image, features, (20, 30))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_runs_in_float32_and_float64_with_the_same_result():
    image, features = _inputs()
    model = _model(8)
    with torch.no_grad():
        out32 = model(image.float(), features.float(), (20, 30))
        out64 = model.double()(image, features, (20, 30))
    assert out32.dtype == torch.float32 and out64.dtype == torch.float64
    assert golden_errors(out32, out64)['relative_frobenius'] < 1e-5


def test_wrong_features_are_refused():
    model = JAFAR(feature_channels=8)
    image, features = _inputs()
    with pytest.raises(WrongFeaturesError, match='8-channel'):
        model(image.float(), features.float().repeat(1, 2, 1, 1), (10, 10))
    with pytest.raises(WrongFeaturesError, match='patch size 14'):
        model(image.float()[..., :28, :], features.float(), (10, 10))


@pytest.mark.parametrize('size', [(0, 5), (5, -1), (5,), (5.0, 6), (True, 6)])
def test_impossible_output_size_says_what_is_possible(size):
    image, features = _inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match='any output size'):
        JAFAR(feature_channels=8)(image, features, size)


def test_output_size_may_be_any_integers():
    image, features = _inputs(batch=1, dtype=torch.float32)
    model = JAFAR(feature_channels=8)
    with torch.no_grad():
        out = model(image, features, (torch.tensor(9), np.int64(11)))
    assert out.shape == (1, 8, 9, 11)


def test_image_is_required():
    _, features = _inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match='needs the image'):
        JAFAR(feature_channels=8)(None, features, (10, 10))


def _saved(tmp_path, obj, name='jafar.pth') -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_published_checkpoint_layout_loads_strictly(tmp_path):
    source = _model(8, seed=3)
    weights = source.state_dict()
    # What JAFAR's train.py saves (its Hydra config aside, see the next test).
    training_file = {'jafar': weights, 'epoch': 0, 'optimizer_jafar': {'state': {}}}
    image, features = _inputs(batch=1, dtype=torch.float32)
    with torch.no_grad():
        expected = source(image, features, (15, 20))
    for obj in (training_file, weights):
        model = JAFAR.from_checkpoint(_saved(tmp_path, obj))
        assert not model.training and model.feature_channels == 8
        with torch.no_grad():
            assert torch.equal(model(image, features, (15, 20)), expected)
    built = build_method('jafar', checkpoint=_saved(tmp_path, training_file), patch_size=16)
    assert isinstance(built, JAFAR) and built.patch_size == 16


class _Pickled:
    """Stands for the Hydra config JAFAR's train.py pickles beside the weights."""


def test_checkpoint_with_pickled_objects_explains_how_to_extract_the_weights(tmp_path):
    path = _saved(tmp_path, {'jafar': JAFAR(feature_channels=8).state_dict(), 'cfg': _Pickled()})
    with pytest.raises(CheckpointReadError, match=r"weights_only=False\)\['jafar'\]"):
        JAFAR.from_checkpoint(path)


def test_checkpoint_of_another_backbone_says_what_it_holds(tmp_path):
    path = _saved(tmp_path, {'jafar': JAFAR(feature_channels=768).state_dict()})
    with pytest.raises(CheckpointMismatchError, match='JAFAR checkpoint for 768-channel') as info:
        JAFAR.from_checkpoint(path, feature_channels=384)
    assert 'feature_channels=384' in str(info.value)
    # Without a contradicting argument the file's own channel count is used.
    assert JAFAR.from_checkpoint(path).feature_channels == 768


def test_checkpoint_of_another_method_is_named(tmp_path, monkeypatch):
    class _Other(UpsamplingMethod):
        name = 'other'
        checkpoint_keys_hint = ('upsampler.weight', 'upsampler.bias')

    monkeypatch.setitem(METHOD_CLASSES, 'other', _Other)
    other = {'upsampler.weight': torch.zeros(2, 2), 'upsampler.bias': torch.zeros(2)}
    path = _saved(tmp_path, other)
    with pytest.raises(
        CheckpointMismatchError, match=r"holds a _Other checkpoint \(method 'other'\)"
    ) as info:
        JAFAR.from_checkpoint(path)
    assert 'not a JAFAR checkpoint' in str(info.value)
    # Inside a training checkpoint too.
    nested = _saved(tmp_path, {'model': other, 'epoch': 3}, 'nested.pth')
    with pytest.raises(
        CheckpointMismatchError, match=r"holds a _Other checkpoint \(method 'other'\)"
    ):
        JAFAR.from_checkpoint(nested)
    unknown = _saved(tmp_path, {'something.weight': torch.zeros(2)}, 'unknown.pth')
    with pytest.raises(CheckpointMismatchError, match='something.weight'):
        JAFAR.from_checkpoint(unknown)


def test_prefixed_jafar_weights_name_the_prefix(tmp_path):
    weights = {f'module.{k}': v for k, v in JAFAR(feature_channels=8).state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="under the prefix 'module.'"):
        JAFAR.from_checkpoint(_saved(tmp_path, weights))


def test_runs_on_the_meta_device():
    model = JAFAR(feature_channels=8).to('meta')
    image = torch.empty(2, 3, 28, 42, device='meta')
    features = torch.empty(2, 8, 2, 3, device='meta')
    out = model(image, features, (30, 50))
    assert out.device.type == 'meta' and out.shape == (2, 8, 30, 50)


def test_incomplete_jafar_checkpoint_names_the_missing_keys(tmp_path):
    weights = JAFAR(feature_channels=8).state_dict()
    del weights['rope.freqs']
    with pytest.raises(CheckpointMismatchError, match=r'missing key\(s\): rope\.freqs'):
        JAFAR.from_checkpoint(_saved(tmp_path, weights))


def test_missing_checkpoint_says_where_to_download(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        JAFAR.from_checkpoint(tmp_path / 'absent.pth')
    message = str(info.value)
    assert 'github.com/PaulCouairon/JAFAR/releases/download/Weights/' in message
    assert 'local path' in message and 'nothing is downloaded' in message

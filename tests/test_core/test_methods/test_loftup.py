"""LoftUp: golden parity with the published code, exact chunking, checkpoints and errors."""

from __future__ import annotations

import os

import pytest
import torch

from anyup_plugin.core.checkpoints import CheckpointMismatchError
from anyup_plugin.core.methods import (
    METHOD_CLASSES,
    UpsamplingMethod,
    WrongFeaturesError,
    build_method,
)
from anyup_plugin.core.methods.loftup import LoftUp
from anyup_plugin.testing.golden import GOLDEN_TOLERANCE, golden_errors, perturbed_state_dict

GOLDEN = os.path.join(
    os.path.dirname(__file__), '..', '..', 'data', 'golden', 'loftup', 'loftup.pt'
)


@pytest.fixture(scope='module')
def golden():
    return torch.load(GOLDEN, weights_only=True)


def _model(channels: int = 8, seed: int = 0, **kwargs) -> LoftUp:
    model = LoftUp(feature_channels=channels, **kwargs).eval()
    model.load_state_dict(perturbed_state_dict(model.state_dict(), seed))
    return model


def _inputs(channels: int = 8, batch: int = 2, size=(40, 30), seed: int = 0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, *size, generator=generator, dtype=dtype)
    features = torch.randn(batch, channels, size[0] // 14, size[1] // 14, generator=generator)
    return image, features.to(dtype)


def test_parameter_names_and_shapes_are_the_published_ones(golden):
    ours = {k: tuple(v.shape) for k, v in LoftUp().state_dict().items()}
    assert ours == golden['published_keys']


@pytest.mark.parametrize('case', ['same_size', 'smaller', 'larger', 'published_dims'])
def test_golden_float32_matches_published_float64(golden, case):
    (entry,) = [c for c in golden['cases'] if c['name'] == case]
    model = _model(entry['feature_channels'], entry['seed'])
    image = entry['image_int8'].float() / entry['input_divisor']
    features = entry['features_int8'].float() / entry['input_divisor']
    with torch.no_grad():
        out = model(image, features, entry['output_size'])
    assert out.dtype == torch.float32
    assert out.shape == (*features.shape[:2], *entry['output_size'])
    c_step, p_step = entry['channel_step'], entry['pixel_step']
    errors = golden_errors(out[:, ::c_step, ::p_step, ::p_step], entry['expected'])
    for measure, limit in GOLDEN_TOLERANCE.items():
        assert errors[measure] <= limit, (case, errors)


def test_chunked_queries_and_row_bands_equal_one_pass():
    # 40 rows: bands of 16 rows (three, the last one short), 50 queries per chunk (a band of
    # 480 pixels ends in a short chunk).
    image, features = _inputs(dtype=torch.float64)
    model = _model().double()
    whole = LoftUp(feature_channels=8, max_query_chunk=None).double().eval()
    whole.load_state_dict(model.state_dict())
    chunked = LoftUp(feature_channels=8, max_query_chunk=50).double().eval()
    chunked.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = whole(image, features, (40, 30))
        torch.testing.assert_close(
            chunked(image, features, (40, 30)), expected, rtol=1e-12, atol=1e-12
        )
        torch.testing.assert_close(
            model(image, features, (40, 30)), expected, rtol=1e-12, atol=1e-12
        )


def test_training_mode_uses_whole_map_statistics_and_chunks_exactly():
    image, features = _inputs(size=(30, 16), dtype=torch.float64)
    chunked = _model(max_query_chunk=50).double().train()
    whole = _model(max_query_chunk=None).double().train()
    torch.testing.assert_close(
        chunked(image, features, (30, 16)), whole(image, features, (30, 16)), rtol=1e-12, atol=1e-12
    )


def test_memory_is_bounded_by_row_bands_and_query_chunks():
    # 70 rows of 30 pixels, 100 queries at once: bands of 16 rows (ceil(100 / 30) is fewer),
    # each convolved with 2 rows of context either side, attended 100 queries at a time.
    model = _model(max_query_chunk=100)
    conv_rows, queries = [], []
    model.upsampler.first_conv.register_forward_pre_hook(
        lambda _, args: conv_rows.append(args[0].shape[-2])
    )
    model.upsampler.ca_transformer.register_forward_pre_hook(
        lambda _, args: queries.append(args[0].shape[1])
    )
    image, features = _inputs(batch=1, size=(70, 30))
    with torch.no_grad():
        model(image, features, (70, 30))
    assert conv_rows == [18, 20, 20, 20, 8]
    assert max(queries) == 100 and sum(queries) == 70 * 30


def test_gradients_reach_every_parameter_and_the_features():
    image, features = _inputs()
    features.requires_grad_(True)
    model = _model(max_query_chunk=100)
    model(image, features, (20, 17)).square().mean().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_float64_stays_float64_and_agrees_with_float32():
    image, features = _inputs()
    model = _model()
    with torch.no_grad():
        out32 = model(image, features, (12, 9))
        out64 = model.double()(image.double(), features.double(), (12, 9))
    assert out64.dtype == torch.float64
    assert golden_errors(out32, out64)['relative_frobenius'] < 1e-5


def test_the_batch_shares_the_colour_scaling_as_published():
    # An image alone and the same image batched with a brighter one differ only through the
    # colour min-max scaling (the published MinMaxScaler reduces over the batch too).
    image, features = _inputs(batch=1)
    model = _model()
    with torch.no_grad():
        alone = model(image, features, (8, 8))
        batched = model(torch.cat([image, image + 3]), features.repeat(2, 1, 1, 1), (8, 8))
        repeated = model(image.repeat(2, 1, 1, 1), features.repeat(2, 1, 1, 1), (8, 8))
    torch.testing.assert_close(repeated[:1], alone, rtol=1e-5, atol=1e-5)
    assert (batched[:1] - alone).abs().max() > 1e-3


def test_wrong_channels_or_patch_size_are_refused():
    model = _model()
    image, features = _inputs()
    with pytest.raises(WrongFeaturesError, match='8-channel'):
        model(image, features[:, :4], (10, 10))
    with pytest.raises(WrongFeaturesError, match='patch size 14'):
        model(image, features[..., :1], (10, 10))


def test_impossible_output_sizes_and_a_missing_image_are_refused():
    model = _model()
    image, features = _inputs()
    with pytest.raises(ValueError, match='any positive size'):
        model(image, features, (0, 10))
    with pytest.raises(ValueError, match='needs the image'):
        model(None, features, (10, 10))


def _save(tmp_path, state_dict, name='pytorch_model.bin'):
    path = tmp_path / name
    torch.save(state_dict, path)
    return path


def test_from_checkpoint_loads_the_released_layout_strictly(tmp_path):
    source = _model(channels=24, seed=4, num_layers=3, n_freqs=6)
    path = _save(tmp_path, source.state_dict())
    loaded = build_method('loftup', checkpoint=path, max_query_chunk=64)
    assert isinstance(loaded, LoftUp)
    assert (loaded.feature_channels, loaded.patch_size, loaded.max_query_chunk) == (24, 14, 64)
    assert len(loaded.upsampler.ca_transformer.layers) == 3
    assert loaded.upsampler.fourier_feat[1].n_freqs == 6
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


@pytest.fixture(scope='module')
def clip_checkpoint(tmp_path_factory):
    """A checkpoint laid out as the released CLIP ViT-B/16 one (512 channels)."""
    path = tmp_path_factory.mktemp('loftup') / 'pytorch_model.bin'
    torch.save(LoftUp(feature_channels=512).state_dict(), path)
    return path


def test_from_checkpoint_takes_the_patch_size_of_the_release(clip_checkpoint):
    assert LoftUp.from_checkpoint(clip_checkpoint).patch_size == 16
    assert LoftUp.from_checkpoint(clip_checkpoint, patch_size=14).patch_size == 14


def test_missing_checkpoint_says_where_to_download(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        LoftUp.from_checkpoint(tmp_path / 'nope.bin')
    message = str(info.value)
    assert 'https://huggingface.co/haiwen/loftup-dinov2s' in message
    assert 'local path' in message and 'nope.bin' in message


def test_checkpoint_of_another_backbone_names_both(clip_checkpoint):
    with pytest.raises(CheckpointMismatchError) as info:
        LoftUp.from_checkpoint(clip_checkpoint, feature_channels=384)
    message = str(info.value)
    assert 'LoftUp checkpoint for 512-channel features (CLIP ViT-B/16)' in message
    assert 'expected one for 384-channel features (DINOv2 ViT-S/14' in message


def test_checkpoint_of_another_method_is_named(tmp_path, monkeypatch):
    class _Other(UpsamplingMethod):
        name = 'test_other'
        checkpoint_keys_hint = ('encoder.weight', 'decoder.bias')

    monkeypatch.setitem(METHOD_CLASSES, 'test_other', _Other)
    weights = {'encoder.weight': torch.zeros(4, 3), 'decoder.bias': torch.zeros(4)}
    # Plain, and nested as training checkpoints are (with a prefix on the keys).
    nested = {'state_dict': {'model.' + k: v for k, v in weights.items()}, 'epoch': 3}
    for checkpoint in (weights, nested):
        with pytest.raises(CheckpointMismatchError) as info:
            LoftUp.from_checkpoint(_save(tmp_path, checkpoint))
        message = str(info.value)
        assert "holds a _Other checkpoint (method 'test_other')" in message
        assert 'expected a LoftUp checkpoint for 384-channel features' in message


def test_anyup_and_unknown_checkpoints_are_described(tmp_path):
    anyup = {k: torch.zeros(2) for k in ('image_encoder.0.weight', 'key_features_encoder.0.basis')}
    with pytest.raises(CheckpointMismatchError, match='holds an AnyUp checkpoint'):
        LoftUp.from_checkpoint(_save(tmp_path, anyup))
    with pytest.raises(CheckpointMismatchError, match=r'holds 1 key\(s\) \(head.weight\)'):
        LoftUp.from_checkpoint(_save(tmp_path, {'head.weight': torch.zeros(2)}))


def test_network_without_channel_norm_and_training_checkpoints_are_explained(tmp_path):
    model = _model()
    with pytest.raises(CheckpointMismatchError, match='without the feature LayerNorm'):
        LoftUp.from_checkpoint(_save(tmp_path, model.upsampler.state_dict()))
    # The published training scripts' layout: LoftUp under 'upsampler.', its LayerNorm under
    # 'model.1.norm.', all in {'state_dict': ...}.
    lightning = {'state_dict': {**model.state_dict(), 'model.1.norm.weight': torch.ones(8)}}
    with pytest.raises(CheckpointMismatchError, match='LoftUp weights in a training checkpoint'):
        LoftUp.from_checkpoint(_save(tmp_path, lightning))


def test_runs_on_the_device_of_its_inputs():
    # The meta device computes shapes only: any tensor made on another device would fail.
    model = LoftUp(feature_channels=8).eval().to('meta')
    image = torch.empty(2, 3, 40, 30, device='meta')
    features = torch.empty(2, 8, 2, 2, device='meta')
    out = model(image, features, (1024, 1000))
    assert (out.shape, out.device, out.dtype) == ((2, 8, 1024, 1000), image.device, torch.float32)

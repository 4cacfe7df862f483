"""FeatUp's JBU stack: the extension's AdaptiveConv, golden parity, checkpoints, errors."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest
import torch

from anyup_plugin.core.checkpoints import CheckpointMismatchError, CheckpointReadError
from anyup_plugin.core.methods import (
    METHOD_CLASSES,
    WrongFeaturesError,
    build_method,
    method_class,
)
from anyup_plugin.core.methods.adaptive_conv import adaptive_conv
from anyup_plugin.core.methods.base import UpsamplingMethod
from anyup_plugin.core.methods.featup import FeatUpJBU
from anyup_plugin.testing.golden import GOLDEN_TOLERANCE, golden_errors, perturbed_state_dict

GOLDEN = Path(__file__).resolve().parents[2] / 'data' / 'golden' / 'featup' / 'featup.pt'


# --- the published C++ extension (featup/adaptive_conv_cuda/adaptive_conv.cpp), loop by loop,
# on nested lists of Python floats (IEEE doubles, as the C++ on float64 tensors).


def cpp_forward(input, filters):
    B, C_in, H_in, W_in = input.shape
    _, H_out, W_out, I, J = filters.shape  # noqa: E741
    assert H_out + I - 1 == H_in and W_out + J - 1 == W_in
    x, f = input.tolist(), filters.tolist()
    out = [[[[0.0] * W_out for _ in range(H_out)] for _ in range(C_in)] for _ in range(B)]
    for b in range(B):
        for c in range(C_in):
            for h in range(H_out):
                for w in range(W_out):
                    for i in range(I):
                        for j in range(J):
                            weight = f[b][h][w][i][j]
                            input_val = x[b][c][h + i][w + j]
                            out[b][c][h][w] += weight * input_val
    return torch.tensor(out, dtype=input.dtype)


def cpp_grad_input(grad_output, filters):
    B, C, H_out, W_out = grad_output.shape
    I, J = filters.shape[3], filters.shape[4]  # noqa: E741
    H_in, W_in = H_out + I - 1, W_out + J - 1
    g, f = grad_output.tolist(), filters.tolist()
    out = [[[[0.0] * W_in for _ in range(H_in)] for _ in range(C)] for _ in range(B)]
    for b in range(B):
        for c in range(C):
            for h in range(H_in):
                for w in range(W_in):
                    for i in range(I):
                        for j in range(J):
                            h_out = h - i
                            w_out = w - j
                            if h_out >= 0 and w_out >= 0 and h_out < H_out and w_out < W_out:
                                grad = g[b][c][h_out][w_out]
                                weight = f[b][h_out][w_out][i][j]
                                out[b][c][h][w] += grad * weight
    return torch.tensor(out, dtype=grad_output.dtype)


def cpp_grad_filters(grad_output, input):
    B, C, H_out, W_out = grad_output.shape
    H_in, W_in = input.shape[2], input.shape[3]
    I = W_in - W_out + 1  # noqa: E741
    J = H_in - H_out + 1
    g, x = grad_output.tolist(), input.tolist()
    out = [
        [[[[0.0] * J for _ in range(I)] for _ in range(W_out)] for _ in range(H_out)]
        for _ in range(B)
    ]
    for b in range(B):
        for h in range(H_out):
            for w in range(W_out):
                for i in range(I):
                    for j in range(J):
                        for c in range(C):
                            grad = g[b][c][h][w]
                            input_val = x[b][c][h + i][w + j]
                            out[b][h][w][i][j] += grad * input_val
    return torch.tensor(out, dtype=grad_output.dtype)


@pytest.mark.parametrize(
    ('batch', 'channels', 'height', 'width', 'taps'), [(2, 3, 4, 5, 3), (1, 2, 3, 6, 7)]
)
def test_adaptive_conv_is_the_extensions_forward_and_backward(batch, channels, height, width, taps):
    generator = torch.Generator().manual_seed(height * width + taps)
    padded = torch.randn(
        batch,
        channels,
        height + taps - 1,
        width + taps - 1,
        generator=generator,
        dtype=torch.float64,
    )
    filters = torch.randn(
        batch, height, width, taps, taps, generator=generator, dtype=torch.float64
    )
    grad_output = torch.randn(
        batch, channels, height, width, generator=generator, dtype=torch.float64
    )
    padded.requires_grad_(True)
    filters.requires_grad_(True)

    out = adaptive_conv(padded, filters)
    grad_input, grad_filters = torch.autograd.grad(out, [padded, filters], grad_output)

    torch.testing.assert_close(
        out, cpp_forward(padded.detach(), filters.detach()), rtol=0, atol=1e-13
    )
    torch.testing.assert_close(
        grad_input, cpp_grad_input(grad_output, filters.detach()), rtol=0, atol=1e-13
    )
    torch.testing.assert_close(
        grad_filters, cpp_grad_filters(grad_output, padded.detach()), rtol=0, atol=1e-13
    )


def test_adaptive_conv_is_a_correlation_with_each_pixels_own_kernel():
    # A filter that is 1 at tap (i, j) and 0 elsewhere picks the input shifted by (i, j).
    padded = torch.arange(2 * 1 * 5 * 6, dtype=torch.float32).reshape(2, 1, 5, 6)
    filters = torch.zeros(2, 3, 4, 3, 3)
    filters[0, :, :, 0, 2] = 1.0
    filters[1, :, :, 2, 1] = 2.0
    out = adaptive_conv(padded, filters)
    torch.testing.assert_close(out[0, 0], padded[0, 0, 0:3, 2:6])
    torch.testing.assert_close(out[1, 0], 2.0 * padded[1, 0, 2:5, 1:5])


def test_adaptive_conv_refuses_shapes_that_do_not_fit():
    with pytest.raises(ValueError, match=r'need an input of shape \(1, C, 6, 6\)'):
        adaptive_conv(torch.zeros(1, 2, 5, 6), torch.zeros(1, 4, 4, 3, 3))


# --- golden parity with the published JBUStack (tests/data/golden/featup/README.md).


@functools.lru_cache(maxsize=1)
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def test_state_dict_has_the_published_keys_and_shapes():
    model = FeatUpJBU(feature_channels=384)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == golden()['keys']
    assert list(model.state_dict()) == list(golden()['keys'])


@pytest.mark.parametrize(
    'case', ['batch2_nonsquare', 'smallest_map', 'uneven_image', 'published_dims']
)
def test_golden_parity_with_the_published_stack(case):
    data = golden()['cases'][case]
    model = FeatUpJBU(feature_channels=data['channels'])
    model.load_state_dict(perturbed_state_dict(model.state_dict(), golden()['seed']))
    model.eval()
    with torch.no_grad():
        out = model(data['image'], data['features'], data['output_size'])
    assert out.dtype == torch.float32
    assert out.shape[-2:] == data['output_size']
    kept = data['stored_channels']
    errors = golden_errors(out[:, :kept], data['expected'])
    for name, limit in GOLDEN_TOLERANCE.items():
        assert errors[name] <= limit, (case, errors)
    # In float64 only the file's float32 rounding (about 3e-8) remains.
    with torch.no_grad():
        out64 = model.double()(
            data['image'].double(), data['features'].double(), data['output_size']
        )
    assert golden_errors(out64[:, :kept], data['expected'])['relative_frobenius'] < 1e-7


def test_golden_weights_matter():
    # Another draw of the weights misses the golden output by far: the parity is not vacuous.
    data = golden()['cases']['batch2_nonsquare']
    model = FeatUpJBU(feature_channels=data['channels'])
    model.load_state_dict(perturbed_state_dict(model.state_dict(), golden()['seed'] + 1))
    with torch.no_grad():
        out = model.eval()(data['image'], data['features'], data['output_size'])
    assert golden_errors(out, data['expected'])['relative_frobenius'] > 1e-2


# --- dtypes, devices, gradients.


def small_model(channels: int = 4, seed: int = 0) -> FeatUpJBU:
    model = FeatUpJBU(feature_channels=channels)
    model.load_state_dict(perturbed_state_dict(model.state_dict(), seed))
    return model.eval()


def test_float64_matches_float32_and_gradients_reach_every_input_and_parameter():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 28, 42, generator=generator, dtype=torch.float64)
    features = torch.randn(2, 4, 2, 3, generator=generator, dtype=torch.float64)
    model = small_model().double()
    image.requires_grad_(True)
    features.requires_grad_(True)
    out = model(image, features, (32, 48))
    assert out.dtype == torch.float64 and out.shape == (2, 4, 32, 48)
    out.square().sum().backward()
    for name, tensor in [('image', image), ('features', features), *model.named_parameters()]:
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, name
    single = small_model()(image.detach().float(), features.detach().float(), (32, 48))
    assert golden_errors(single, out.detach())['relative_frobenius'] < 1e-5


def test_runs_on_another_device_without_host_tensors():
    # The meta device computes shapes only: any tensor made on the CPU inside would fail.
    model = FeatUpJBU(feature_channels=4).to('meta')
    out = model(
        torch.empty(1, 3, 42, 28, device='meta'), torch.empty(1, 4, 3, 2, device='meta'), (48, 32)
    )
    assert out.device.type == 'meta' and out.shape == (1, 4, 48, 32)


# --- errors users meet.


def test_refuses_other_output_sizes_naming_the_one_it_produces():
    model = small_model()
    image, features = torch.zeros(1, 3, 42, 70), torch.zeros(1, 4, 3, 5)
    with pytest.raises(
        ValueError, match=r'exactly 16.*3 x 5 features give 48 x 80.*Ask for \(48, 80\) and resize'
    ):
        model(image, features, (42, 70))
    assert FeatUpJBU.output_size_for((3, 5)) == (48, 80)


def test_refuses_maps_smaller_than_two_by_two():
    with pytest.raises(ValueError, match='at least 2 x 2'):
        small_model()(torch.zeros(1, 3, 14, 28), torch.zeros(1, 4, 1, 2), (16, 32))


def test_refuses_a_missing_image():
    with pytest.raises(ValueError, match='guided by the image'):
        small_model()(None, torch.zeros(1, 4, 2, 2), (32, 32))


def test_refuses_features_of_another_backbone():
    model = FeatUpJBU()  # DINOv2 ViT-S/14: 384 channels, patch 14
    with pytest.raises(WrongFeaturesError, match='384-channel'):
        model(torch.zeros(1, 3, 28, 28), torch.zeros(1, 768, 2, 2), (32, 32))
    with pytest.raises(WrongFeaturesError, match='patch size 14'):
        model(torch.zeros(1, 3, 48, 48), torch.zeros(1, 384, 2, 2), (32, 32))


# --- checkpoints: FeatUp's Lightning .ckpt files, strictly among the 'upsampler.' keys.


def lightning_checkpoint(weights: dict, norm_channels: int | None = None) -> dict:
    """What FeatUp's training saves: the featurizer, its ChannelNorm, the upsampler, more."""
    state = {'model.0.model.cls_token': torch.zeros(1, 1, 4)}
    if norm_channels is not None:
        state['model.1.norm.weight'] = torch.ones(norm_channels)
        state['model.1.norm.bias'] = torch.zeros(norm_channels)
    state.update({f'upsampler.{k}': v for k, v in weights.items()})
    state['downsampler.kernel_bias'] = torch.zeros(1)
    state['scale_net.net.weight'] = torch.zeros(1, 8, 1, 1)
    return {
        'epoch': 0,
        'global_step': 2000,
        'pytorch-lightning_version': '1.9.5',
        'state_dict': state,
        'loops': {},
        'callbacks': {},
        'optimizer_states': [],
        'lr_schedulers': [],
    }


def test_loads_a_published_checkpoint_strictly_and_reads_its_backbone(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger='anyup_plugin.core.methods.featup')
    weights = perturbed_state_dict(FeatUpJBU(feature_channels=8).state_dict(), 5)
    path = tmp_path / 'dino16_jbu_stack_cocostuff.ckpt'
    torch.save(lightning_checkpoint(weights, norm_channels=8), path)

    model = FeatUpJBU.from_checkpoint(path)
    assert (model.feature_channels, model.patch_size) == (8, 16)
    loaded = model.state_dict()
    assert list(loaded) == list(weights)
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)

    assert 'channel LayerNorm (model.1.norm.*)' in caplog.text

    built = build_method('jbu', checkpoint=str(path), patch_size=None)
    assert isinstance(built, FeatUpJBU) and built.patch_size is None


def test_loads_the_hub_models_plain_state_dict(tmp_path):
    weights = perturbed_state_dict(FeatUpJBU(feature_channels=6).state_dict(), 1)
    path = tmp_path / 'mine.pth'
    torch.save(lightning_checkpoint(weights)['state_dict'], path)
    model = FeatUpJBU.from_checkpoint(path)
    assert (model.feature_channels, model.patch_size) == (6, 14)
    assert torch.equal(model.up3.range_temp, weights['up3.range_temp'])


def test_a_missing_file_says_where_to_download_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'dinov2_jbu_stack_cocostuff\.ckpt.*local path'):
        FeatUpJBU.from_checkpoint(tmp_path / 'absent.ckpt')


def test_an_unreadable_file_is_named(tmp_path):
    path = tmp_path / 'dinov2_jbu_stack_cocostuff.ckpt'
    path.write_text('<html>Not found</html>')
    with pytest.raises(CheckpointReadError, match='jbu_stack_cocostuff'):
        FeatUpJBU.from_checkpoint(path)


def test_a_checkpoint_for_another_feature_width_is_named(tmp_path):
    weights = perturbed_state_dict(FeatUpJBU(feature_channels=512).state_dict(), 0)
    path = tmp_path / 'clip_jbu_stack_cocostuff.ckpt'
    torch.save(lightning_checkpoint(weights), path)
    with pytest.raises(
        CheckpointMismatchError, match=r'for 512-channel features.*clip.*384-channel'
    ):
        FeatUpJBU.from_checkpoint(path, feature_channels=384)


def test_an_anyup_checkpoint_is_named(tmp_path):
    path = tmp_path / 'anyup_paper.pth'
    torch.save(
        {
            'image_encoder.0.weight': torch.zeros(4, 3, 1, 1),
            'key_features_encoder.0.basis': torch.zeros(4, 1, 3, 3),
        },
        path,
    )
    with pytest.raises(CheckpointMismatchError, match=r'holds an AnyUp checkpoint.*384-channel'):
        FeatUpJBU.from_checkpoint(path)


def test_another_methods_checkpoint_is_named_by_its_keys(tmp_path, monkeypatch):
    class OtherMethod(UpsamplingMethod):
        name = 'other'
        checkpoint_keys_hint = ('encoder.weight', 'decoder.weight')

    monkeypatch.setitem(METHOD_CLASSES, 'other', OtherMethod)
    path = tmp_path / 'other.pth'
    torch.save(
        {
            'state_dict': {
                'net.encoder.weight': torch.zeros(1),
                'net.decoder.weight': torch.zeros(1),
            }
        },
        path,
    )
    with pytest.raises(CheckpointMismatchError, match=r"OtherMethod checkpoint \(method 'other'\)"):
        FeatUpJBU.from_checkpoint(path)


@pytest.mark.parametrize('other', ['jafar', 'loftup', 'naf'])
def test_the_other_published_methods_checkpoints_are_named(tmp_path, other):
    # LoftUp's released files keep their network under 'upsampler.' too.
    cls = method_class(other)
    path = tmp_path / f'{other}.pth'
    torch.save({key: torch.zeros(2, 2) for key in cls.checkpoint_keys_hint}, path)
    with pytest.raises(CheckpointMismatchError, match=f'holds a {cls.__name__} checkpoint'):
        FeatUpJBU.from_checkpoint(path)


def test_weights_without_the_published_prefix_are_explained(tmp_path):
    path = tmp_path / 'stack.pth'
    torch.save(FeatUpJBU(feature_channels=4).state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="without the 'upsampler.' prefix"):
        FeatUpJBU.from_checkpoint(path)


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    weights = perturbed_state_dict(FeatUpJBU(feature_channels=4).state_dict(), 0)
    weights['up2.range_proj.0.weight'] = torch.zeros(16, 3, 1, 1)
    del weights['up4.sigma_spatial']
    path = tmp_path / 'dinov2_jbu_stack_cocostuff.ckpt'
    torch.save(lightning_checkpoint(weights), path)
    with pytest.raises(
        CheckpointMismatchError, match=r'up4\.sigma_spatial.*up2\.range_proj\.0\.weight'
    ):
        FeatUpJBU.from_checkpoint(path)

"""Tests of FrozenTimmEncoder on tiny randomly initialised timm models (no downloads)."""

from __future__ import annotations

import math
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from anyup_plugin.constants import IMAGENET_MEAN, IMAGENET_STD
from anyup_plugin.core.encoder import FrozenTimmEncoder

# Tiny ViT configurations: real timm architectures, shrunk so that tests take milliseconds.
TINY_VIT = dict(img_size=28, depth=3, embed_dim=32, num_heads=2)
TINY_VIT16 = dict(img_size=32, depth=2, embed_dim=32, num_heads=2)


def tiny_encoder(name: str = 'vit_small_patch14_dinov2', seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    cfg = dict(TINY_VIT16 if 'patch16' in name else TINY_VIT)
    cfg.update(kwargs)
    return FrozenTimmEncoder(name, **cfg)


def image(h: int = 30, w: int = 45, b: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope='module')
def resnet():
    torch.manual_seed(0)
    return FrozenTimmEncoder('resnet18', layers=[1, 2, 3, 4])


# ---------------------------------------------------------------------------------- shapes


def test_vit_patch14_odd_size_is_padded_then_cropped():
    enc = tiny_encoder(layers=-1)
    (out,) = enc(image(30, 45))
    assert enc.patch_size == 14 and enc.strides == [14] and enc.out_channels == [32]
    assert out.shape == (2, 32, 3, 4)  # ceil(30/14) x ceil(45/14)
    assert enc.feature_sizes(30, 45) == [(3, 4)]


def test_padding_matches_explicit_zero_padding():
    enc = tiny_encoder(layers=[0, -1])
    x = image(30, 45)
    padded = F.pad(x, (0, 56 - 45, 0, 42 - 30))  # zeros = mean colour, both normalisations equal
    for a, b in zip(enc(x), enc(padded)):
        assert torch.equal(a, b[..., :3, :4])


def test_vit_patch16_shapes_and_any_size():
    enc = tiny_encoder('vit_base_patch16_clip_224.openai', layers=-1)
    assert enc.patch_size == 16
    for h, w, expected in ((32, 32, (2, 2)), (17, 100, (2, 7)), (1, 1, (1, 1))):
        (out,) = enc(image(h, w, b=1))
        assert out.shape == (1, 32, *expected)


def test_prefix_and_register_tokens_are_dropped():
    enc = tiny_encoder('vit_small_patch14_reg4_dinov2', layers=-1)
    assert enc.num_prefix_tokens == 5  # CLS + 4 registers
    x = image(28, 42, b=1)
    (out,) = enc(x)
    tokens = enc.model.forward_features(x)  # (1, 5 + 2*3, C), final norm applied
    expected = tokens[:, 5:].reshape(1, 2, 3, 32).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    'name, prefix_tokens',
    [
        ('vit_small_patch14_dinov2', 1),
        ('vit_small_patch14_reg4_dinov2', 5),
        ('vit_base_patch16_clip_224.openai', 1),
        ('vit_base_patch16_siglip_224', 0),
        ('vit_base_patch16_siglip_256.v2_webli', 0),
        ('vit_base_patch16_224.mae', 1),
        ('deit_tiny_distilled_patch16_224', 2),
    ],
)
def test_vit_families(name, prefix_tokens):
    enc = tiny_encoder(name, layers=[0, -1])
    assert enc.num_prefix_tokens == prefix_tokens
    patch = enc.patch_size
    outs = enc(image(2 * patch + 1, 3 * patch, b=1))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 3, 3)] * 2


@pytest.mark.skipif(not timm.is_model('vit_small_patch16_dinov3'), reason='timm has no DINOv3')
def test_dinov3():
    enc = tiny_encoder('vit_small_patch16_dinov3', layers=[-2, -1], img_size=32)
    outs = enc(image(33, 20, b=1))
    assert [o.shape for o in outs] == [(1, 32, 3, 2)] * 2


def test_cnn_shapes_and_strides(resnet):
    assert resnet.out_channels == [64, 128, 256, 512]
    assert resnet.strides == [4, 8, 16, 32] and resnet.patch_size == 32
    assert resnet.num_prefix_tokens == 0
    outs = resnet(image(30, 45))
    expected = [
        (2, c, math.ceil(30 / s), math.ceil(45 / s))
        for c, s in zip([64, 128, 256, 512], [4, 8, 16, 32])
    ]
    assert [tuple(o.shape) for o in outs] == expected


def test_convnext_last_stage():
    torch.manual_seed(0)
    enc = FrozenTimmEncoder('convnext_atto', layers=-1)
    (out,) = enc(image(64, 70, b=1))
    assert enc.out_channels == [320] and enc.patch_size == 32
    assert out.shape == (1, 320, 2, 3)


# ---------------------------------------------------------------------------------- layers


def test_layer_order_negative_indices_and_duplicates():
    enc = tiny_encoder(layers=[-1, 0, 2, -3])
    assert enc.layers == [2, 0, 2, 0]
    outs = enc(image(28, 28, b=1))
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[1], outs[3])
    assert not torch.allclose(outs[0], outs[1])
    (only_first,) = tiny_encoder(layers=0)(image(28, 28, b=1))
    torch.testing.assert_close(only_first, outs[1])


def test_norm_on_and_off_differ_and_norm_matches_forward_features():
    x = image(28, 28, b=1)
    (with_norm,) = tiny_encoder(layers=-1, apply_norm=True)(x)
    enc_raw = tiny_encoder(layers=-1, apply_norm=False)
    (without_norm,) = enc_raw(x)
    assert not torch.allclose(with_norm, without_norm)
    normed = enc_raw.model.norm(without_norm.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(normed, with_norm)


@pytest.mark.parametrize('layers', [3, -4, [], [0, 'a'], [True], 1.5])
def test_bad_layers(layers):
    with pytest.raises(ValueError, match='layers'):
        tiny_encoder(layers=layers)


# ---------------------------------------------------------------------------------- frozen


def test_frozen_and_stays_in_eval():
    enc = tiny_encoder()
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    x = image(28, 28, b=1).requires_grad_(True)
    (out,) = enc(x)
    assert not out.requires_grad and out.grad_fn is None
    # Not inference-mode tensors: they can enter a graph built later.
    weight = torch.ones(1, requires_grad=True)
    (out * weight).sum().backward()
    assert weight.grad is not None


# ---------------------------------------------------------------------------- normalisation


def test_renormalises_for_clip_statistics():
    enc = tiny_encoder('vit_base_patch16_clip_224.openai', layers=[0, -1])
    assert enc.model_mean == pytest.approx(OPENAI_CLIP_MEAN)
    assert enc.model_std == pytest.approx(OPENAI_CLIP_STD)
    assert enc.renormalises
    raw = torch.rand(1, 3, 32, 48)
    imagenet = (raw - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        3, 1, 1
    )
    clip = (raw - torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)) / torch.tensor(
        OPENAI_CLIP_STD
    ).view(3, 1, 1)
    expected = enc.model.forward_intermediates(
        clip, indices=[0, 1], norm=True, output_fmt='NCHW', intermediates_only=True
    )
    for got, want in zip(enc(imagenet), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_no_renormalisation_when_statistics_match():
    enc = tiny_encoder(
        'vit_base_patch16_clip_224.openai', input_mean=OPENAI_CLIP_MEAN, input_std=OPENAI_CLIP_STD
    )
    assert not enc.renormalises
    assert not tiny_encoder().renormalises  # DINOv2 uses the ImageNet statistics


@pytest.mark.parametrize(
    'kwargs', [dict(input_mean=(0.5, 0.5)), dict(input_std=(0.2, 0.0, 0.2)), dict(input_std=3)]
)
def test_bad_statistics(kwargs):
    with pytest.raises(ValueError, match='input_'):
        tiny_encoder(**kwargs)


# ------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize('layout', ['plain', 'state_dict', 'model', 'wrapper'])
def test_checkpoint_round_trip(tmp_path, layout):
    source = tiny_encoder(seed=3)
    sd = source.state_dict() if layout == 'wrapper' else source.model.state_dict()
    payload = {layout: sd} if layout in ('state_dict', 'model') else sd
    path = tmp_path / 'encoder.pth'
    torch.save(payload, path)
    loaded = tiny_encoder(seed=4, checkpoint=str(path))
    x = image(28, 28, b=1)
    torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)
    assert not torch.allclose(tiny_encoder(seed=4)(x)[0], source(x)[0])


def test_checkpoint_with_classifier_head_loads(tmp_path):
    torch.manual_seed(5)
    full = timm.create_model('resnet18', num_classes=10)
    path = tmp_path / 'resnet.pth'
    torch.save(full.state_dict(), path)
    enc = FrozenTimmEncoder('resnet18', checkpoint=path)
    torch.testing.assert_close(enc.model.conv1.weight, full.conv1.weight)


def test_bad_checkpoint_names_keys(tmp_path):
    sd = tiny_encoder().model.state_dict()
    sd.pop('blocks.0.attn.qkv.weight')
    sd['blocks.9.bogus'] = torch.zeros(1)
    sd['blocks.1.mlp.fc1.bias'] = torch.zeros(7)
    path = tmp_path / 'bad.pth'
    torch.save(sd, path)
    with pytest.raises(ValueError) as info:
        tiny_encoder(checkpoint=path)
    message = str(info.value)
    assert 'missing' in message and 'blocks.0.attn.qkv.weight' in message
    assert 'unexpected' in message and 'blocks.9.bogus' in message
    assert 'wrong shape' in message and 'blocks.1.mlp.fc1.bias' in message


def test_checkpoint_of_another_architecture_fails(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save(timm.create_model('resnet18', num_classes=0).state_dict(), path)
    with pytest.raises(ValueError, match=re.escape(f'checkpoint {str(path)!r} does not fit timm')):
        tiny_encoder(checkpoint=path)


def test_missing_checkpoint_file_says_where_to_download_it_and_where_to_put_it(tmp_path):
    path = tmp_path / 'nope.pth'
    with pytest.raises(FileNotFoundError) as info:
        tiny_encoder(checkpoint=path)
    message = str(info.value)
    assert f'backbone checkpoint {str(path)!r} does not exist' in message
    assert 'https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m' in message
    assert message.endswith(f'place the file at {path}')


def test_pretrained_and_checkpoint_are_exclusive(tmp_path):
    with pytest.raises(ValueError, match='not both'):
        tiny_encoder(pretrained=True, checkpoint=tmp_path / 'x.pth')


def test_pretrained_offline_says_to_pass_checkpoint(monkeypatch):
    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError('Network is unreachable')
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, 'create_model', offline_create)
    with pytest.raises(RuntimeError, match='checkpoint=') as info:
        tiny_encoder(pretrained=True)
    assert 'Network is unreachable' in str(info.value)
    assert 'from https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m' in str(info.value)


# ------------------------------------------------------------------------------ bad inputs


def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError, match='vit_small_patch14_dinov2') as info:
        FrozenTimmEncoder('vit_smal_patch14_dinov2')
    assert 'not a timm model' in str(info.value)


@pytest.mark.parametrize(
    'bad, fragment',
    [
        (torch.randn(3, 28, 28), '4 dimensions'),
        (torch.randn(1, 4, 28, 28), '3 channels'),
        (torch.randn(1, 3, 0, 28), 'zero-sized'),
        (torch.full((1, 3, 28, 28), float('nan')), 'NaN'),
        (torch.full((1, 3, 28, 28), float('inf')), 'infinite'),
    ],
)
def test_bad_images_raise_value_error(bad, fragment):
    enc = tiny_encoder()
    with pytest.raises(ValueError, match=fragment) as info:
        enc(bad)
    assert 'image' in str(info.value)


def test_unknown_pretrained_tag_lists_available_tags():
    with pytest.raises(ValueError, match='no pretrained tag') as info:
        FrozenTimmEncoder('resnet18.nope')
    assert 'tv_in1k' in str(info.value)


def test_extract_features_lets_gradients_reach_unfrozen_blocks():
    enc = tiny_encoder(layers=-1)
    x = image(28, 28, b=1)
    enc.model.blocks[-1].requires_grad_(True)
    (out,) = enc.extract_features(x)
    torch.testing.assert_close(out, enc(x)[0])
    out.sum().backward()
    assert enc.model.blocks[-1].mlp.fc2.weight.grad is not None
    assert enc.model.blocks[0].mlp.fc2.weight.grad is None
    assert not enc(x)[0].requires_grad  # forward itself stays gradient-free

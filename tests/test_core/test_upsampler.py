"""FeatureUpsampler: the one upsampling policy of every adapter (build, freeze, sizes, bilinear)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from anyup_plugin.core import AnyUp, FeatureUpsampler, build_anyup, stride_output_size


def _inputs(channels=8):
    torch.manual_seed(0)
    return torch.randn(2, 3, 28, 35), torch.randn(2, channels, 2, 3)


@pytest.mark.parametrize(
    ('size', 'stride', 'expected'),
    [
        ((28, 35), 1, (28, 35)),
        ((28, 35), 4, (7, 9)),
        ((448, 448), 14, (32, 32)),
        ((5, 3), 8, (1, 1)),
    ],
)
def test_stride_output_size_rounds_up(size, stride, expected):
    assert stride_output_size(size, stride) == expected


@pytest.mark.parametrize('stride', [0, -2, 1.5, True])
def test_stride_output_size_rejects_bad_strides(stride):
    with pytest.raises(ValueError, match='stride must be an int >= 1'):
        stride_output_size((28, 28), stride)


def test_bilinear_matches_interpolate_and_passes_same_size_through():
    _, feats = _inputs()
    up = FeatureUpsampler('bilinear')
    expected = F.interpolate(feats, size=(28, 35), mode='bilinear', align_corners=False)
    torch.testing.assert_close(up(None, feats, (28, 35)), expected)
    assert up(None, feats, (2, 3)) is feats
    assert up.frozen and not list(up.parameters())


def test_frozen_anyup_equals_the_model_and_records_no_graph():
    image, feats = _inputs()
    up = FeatureUpsampler('anyup').train()
    assert not up.anyup.training  # a frozen AnyUp stays in eval mode
    assert not any(p.requires_grad for p in up.parameters())
    out = up(image, feats, (14, 14))
    assert out.grad_fn is None
    with torch.no_grad():
        torch.testing.assert_close(out, up.anyup(image, feats, output_size=(14, 14)))
    leaf = feats.clone().requires_grad_(True)  # a backbone being fine-tuned
    up(image, leaf, (14, 14)).sum().backward()
    assert leaf.grad is not None and bool(leaf.grad.abs().sum() > 0)


def test_trainable_anyup_trains_every_used_parameter():
    image, feats = _inputs()
    up = FeatureUpsampler('anyup', frozen=False).train()
    assert up.anyup.training
    trainable = {n for n, p in up.named_parameters() if p.requires_grad}
    assert trainable and not any('out_proj' in n for n in trainable)
    up(image, feats, (14, 14)).square().mean().backward()
    assert all(p.grad is not None for p in up.parameters() if p.requires_grad)


def test_many_maps_each_to_its_size_equal_single_calls():
    image, feats = _inputs()
    other = torch.randn(2, 5, 4, 5)
    up = FeatureUpsampler('anyup')
    outs = up(image, [feats, other], [(28, 35), (7, 9)])
    assert isinstance(outs, list) and [tuple(o.shape) for o in outs] == [
        (2, 8, 28, 35),
        (2, 5, 7, 9),
    ]
    torch.testing.assert_close(outs[0], up(image, feats, (28, 35)))
    torch.testing.assert_close(outs[1], up(image, other, (7, 9)))
    assert tuple(up(image, feats, None).shape[-2:]) == (28, 35)  # None: the image size
    same = up(image, [feats, other], (14, 14))  # one size for every map
    assert [tuple(o.shape[-2:]) for o in same] == [(14, 14), (14, 14)]


def test_checkpoints_and_plain_anyup_state_dicts_load(tmp_path):
    torch.manual_seed(1)
    reference = AnyUp()
    path = tmp_path / 'anyup.pth'
    torch.save(reference.state_dict(), path)
    loaded = FeatureUpsampler('anyup', checkpoint=path)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(loaded.anyup.state_dict()[key], value)
    torch.manual_seed(2)  # other random weights, which the load must replace
    fresh = FeatureUpsampler('anyup')
    fresh.load_state_dict(reference.state_dict())  # plain AnyUp keys, without 'anyup.'
    # Every entry, not only rope.freqs: that one starts at the same fixed initialisation.
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(fresh.anyup.state_dict()[key], value)


def test_random_initialisation_warns_naming_the_owner(caplog):
    with caplog.at_level(logging.WARNING, logger='anyup_plugin.core.upsampler'):
        build_anyup(None, owner='MyNeck')
    assert 'MyNeck: no checkpoint given' in caplog.text and 'anyup_multi_backbone' in caplog.text


def test_bad_arguments_fail_clearly():
    image, feats = _inputs()
    with pytest.raises(ValueError, match="method must be one of \\('anyup', 'bilinear'\\)"):
        FeatureUpsampler('bicubic')
    up = FeatureUpsampler('anyup')
    with pytest.raises(ValueError, match='holds 1 sizes for 2 feature map'):
        up(image, [feats, feats], [(4, 4)])
    with pytest.raises(ValueError, match='needs the guidance image'):
        up(None, feats, (4, 4))
    with pytest.raises(FileNotFoundError):
        FeatureUpsampler('anyup', checkpoint='missing.pth')

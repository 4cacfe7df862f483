"""FeatureUpsampler: the one upsampling policy of every adapter (build, freeze, sizes, methods)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyup_plugin.core import (
    UPSAMPLER_METHODS,
    AnyUp,
    FeatureUpsampler,
    build_anyup,
    stride_output_size,
)
from anyup_plugin.core.methods import (
    METHOD_ALIASES,
    METHOD_CLASSES,
    UpsamplingMethod,
    WrongFeaturesError,
)
from anyup_plugin.core.upsampler import method_arguments, method_checkpoint


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
    with pytest.raises(ValueError, match='unknown upsampling method') as info:
        FeatureUpsampler('nearest_neighbour')
    for name in UPSAMPLER_METHODS:  # the message lists every known method
        assert name in str(info.value)
    up = FeatureUpsampler('anyup')
    with pytest.raises(ValueError, match='holds 1 sizes for 2 feature map'):
        up(image, [feats, feats], [(4, 4)])
    with pytest.raises(ValueError, match='needs the guidance image'):
        up(None, feats, (4, 4))
    with pytest.raises(FileNotFoundError):
        FeatureUpsampler('anyup', checkpoint='missing.pth')


# --- methods of the registry, through a test-local third-party method ----------------------------


class _ImageShift(UpsamplingMethod):
    """Bilinear upsampling scaled by a learnable gain, plus ``shift`` x the image's mean."""

    name = 'test_image_shift'

    def __init__(self, shift: float = 0.0, channels: int | None = None) -> None:
        super().__init__()
        self.shift = shift
        self.feature_channels = channels
        self.gain = nn.Parameter(torch.ones(1))
        self.calls = 0

    def forward(self, image: Tensor | None, features: Tensor, output_size) -> Tensor:
        self.calls += 1
        out = F.interpolate(features, size=output_size, mode='bilinear', align_corners=False)
        return self.gain * out + self.shift * image.mean()

    @classmethod
    def from_checkpoint(cls, path, **kwargs) -> _ImageShift:
        method = cls(**kwargs)
        method.load_state_dict(torch.load(path, weights_only=True))
        return method


class _Imageless(UpsamplingMethod):
    name = 'test_imageless'
    uses_image = False

    def forward(self, image, features, output_size):
        return F.interpolate(features, size=output_size, mode='nearest')


@pytest.fixture
def registered(monkeypatch):
    """The two test methods, registered for one test only."""
    monkeypatch.setitem(METHOD_CLASSES, 'test_image_shift', _ImageShift)
    monkeypatch.setitem(METHOD_CLASSES, 'test_imageless', _Imageless)
    monkeypatch.setitem(METHOD_ALIASES, 'shifty', 'test_image_shift')


def test_the_method_list_is_the_registry_plus_anyup_and_bilinear():
    assert UPSAMPLER_METHODS == ('anyup', 'bilinear', *METHOD_CLASSES)
    assert 'guided_filter' in UPSAMPLER_METHODS and 'jafar' in UPSAMPLER_METHODS


def test_a_registered_method_runs_per_map_with_its_own_arguments(registered):
    image, feats = _inputs()
    other = torch.randn(2, 5, 4, 5)
    up = FeatureUpsampler('SHIFTY', shift=2.0)  # an alias, any case
    assert up.method == 'test_image_shift' and up.anyup is None
    assert isinstance(up.method_module, _ImageShift) and up.method_module.shift == 2.0
    outs = up(image, [feats, other], [(28, 35), (7, 9)])
    assert up.method_module.calls == 2  # once per map
    for out, f, size in zip(outs, [feats, other], [(28, 35), (7, 9)]):
        expected = F.interpolate(f, size=size, mode='bilinear') + 2.0 * image.mean()
        torch.testing.assert_close(out, expected)


def test_a_frozen_method_keeps_eval_and_no_grads_an_unfrozen_one_trains(registered):
    image, feats = _inputs()
    up = FeatureUpsampler('test_image_shift').train()
    assert not up.method_module.training and not up.method_module.gain.requires_grad
    assert up(image, feats, (4, 6)).grad_fn is None
    leaf = feats.clone().requires_grad_(True)  # a backbone being fine-tuned
    up(image, leaf, (4, 6)).sum().backward()
    assert leaf.grad is not None and up.method_module.gain.grad is None

    trained = FeatureUpsampler('test_image_shift', frozen=False).train()
    assert not trained.frozen and trained.method_module.training
    trained(image, feats, (4, 6)).sum().backward()
    assert trained.method_module.gain.grad is not None
    # A method without parameters has nothing to train: frozen whatever is asked.
    assert FeatureUpsampler('test_imageless', frozen=False).frozen


def test_arguments_come_from_the_method_signature(registered):
    assert method_arguments('test_image_shift') == ('shift', 'channels')
    assert method_arguments('bilinear') == ('align_corners', 'antialias')
    assert 'window_ratio' in method_arguments('anyup')
    assert method_arguments('test_imageless') == ()  # nn.Module's constructor: nothing
    with pytest.raises(TypeError, match="'test_imageless' does not take scale; it takes no "):
        FeatureUpsampler('test_imageless', scale=2)
    with pytest.raises(TypeError, match="method 'test_image_shift' does not take window_ratio; "
                       'it takes shift, channels'):  # fmt: skip
        FeatureUpsampler('test_image_shift', window_ratio=0.1)
    with pytest.raises(TypeError, match='it takes align_corners, antialias'):
        FeatureUpsampler('bilinear', attention_kernel='matmul')
    with pytest.raises(TypeError, match='does not take shift'):
        FeatureUpsampler('anyup', shift=1.0)
    _, feats = _inputs()
    up = FeatureUpsampler('bilinear', align_corners=True)
    expected = F.interpolate(feats, size=(28, 35), mode='bilinear', align_corners=True)
    torch.testing.assert_close(up(None, feats, (28, 35)), expected)


def test_image_is_refused_as_none_only_when_the_method_uses_it(registered):
    image, feats = _inputs()
    with pytest.raises(ValueError, match='test_image_shift needs the guidance image'):
        FeatureUpsampler('test_image_shift')(None, feats, (4, 6))
    out = FeatureUpsampler('test_imageless')(None, feats, (4, 6))
    torch.testing.assert_close(out, F.interpolate(feats, size=(4, 6), mode='nearest'))


def test_features_are_checked_by_the_method_before_each_call(registered):
    image, feats = _inputs(channels=8)
    up = FeatureUpsampler('test_image_shift', channels=8)
    assert tuple(up(image, feats, (4, 6)).shape) == (2, 8, 4, 6)
    with pytest.raises(WrongFeaturesError, match='trained for 8-channel features, got 5'):
        up(image, [feats, torch.randn(2, 5, 2, 3)], (4, 6))
    assert up.method_module.calls == 1  # refused before any map ran


def test_method_checkpoints_load_and_anyup_names_are_left_to_anyup(registered, tmp_path, caplog):
    path = tmp_path / 'shift.pth'
    torch.save({'gain': torch.tensor([3.0])}, path)
    up = FeatureUpsampler('test_image_shift', checkpoint=path, shift=1.0)
    assert up.checkpoint == str(path) and float(up.method_module.gain) == 3.0
    assert up.method_module.shift == 1.0
    with caplog.at_level(logging.WARNING, logger='anyup_plugin.core.upsampler'):
        up = FeatureUpsampler('test_image_shift', checkpoint='anyup_paper')  # no download
    assert up.checkpoint is None and float(up.method_module.gain) == 1.0
    assert "'anyup_paper' holds AnyUp weights; method 'test_image_shift' ignores it" in caplog.text
    assert method_checkpoint('anyup', 'anyup_paper') == 'anyup_paper'
    assert method_checkpoint('bilinear', path) is None
    assert method_checkpoint('test_image_shift', '') is None


def test_plain_and_prefixed_method_state_dicts_load(registered):
    source = FeatureUpsampler('test_image_shift')
    with torch.no_grad():
        source.method_module.gain.fill_(5.0)
    assert list(source.state_dict()) == ['method_module.gain']
    for state in (source.state_dict(), source.method_module.state_dict()):
        target = FeatureUpsampler('test_image_shift')
        target.load_state_dict(state)
        assert float(target.method_module.gain) == 5.0


def test_the_classical_methods_run_through_the_upsampler():
    from anyup_plugin.core.methods.classical import GuidedFilterUpsampler

    image, feats = _inputs()
    up = FeatureUpsampler('guided_filter', radius=2)
    assert up.frozen and up.uses_image and not list(up.parameters())
    expected = GuidedFilterUpsampler(radius=2)(image, feats, (28, 35))
    torch.testing.assert_close(up(image, feats, (28, 35)), expected)
    bicubic = FeatureUpsampler('BICUBIC')
    expected = F.interpolate(feats, size=(28, 35), mode='bicubic', align_corners=False)
    torch.testing.assert_close(bicubic(None, feats, (28, 35)), expected)
    with pytest.raises(ValueError, match='has no weights'):
        FeatureUpsampler('bicubic', checkpoint='weights.pth')


class _Doubler(UpsamplingMethod):
    """Makes exactly twice the map's size (as FeatUp's JBU makes 16 times): nearest, x 3."""

    name = 'test_doubler'
    uses_image = False

    @staticmethod
    def output_size_for(feature_size):
        return 2 * feature_size[0], 2 * feature_size[1]

    def forward(self, image, features, output_size):
        assert tuple(output_size) == self.output_size_for(features.shape[-2:])
        return 3 * F.interpolate(features, scale_factor=2, mode='nearest')


def test_a_method_of_one_output_size_is_resized_to_the_size_asked_for(monkeypatch):
    monkeypatch.setitem(METHOD_CLASSES, 'test_doubler', _Doubler)
    _, feats = _inputs()  # 2 x 3 maps
    up = FeatureUpsampler('test_doubler')
    doubled = 3 * F.interpolate(feats, scale_factor=2, mode='nearest')
    torch.testing.assert_close(up(None, feats, (4, 6)), doubled)  # its own size: as it is
    expected = F.interpolate(doubled, size=(5, 7), mode='bilinear', align_corners=False)
    torch.testing.assert_close(up(None, feats, (5, 7)), expected)


def test_featup_runs_at_its_16x_and_is_resized():
    from anyup_plugin.core.methods.featup import FeatUpJBU

    torch.manual_seed(0)
    image, feats = torch.randn(1, 3, 56, 70), torch.randn(1, 384, 4, 5)
    up = FeatureUpsampler('jbu')
    with torch.no_grad():
        own = up.method_module(image, feats, FeatUpJBU.output_size_for((4, 5)))
    expected = F.interpolate(own, size=(28, 35), mode='bilinear', align_corners=False)
    torch.testing.assert_close(up(image, feats, (28, 35)), expected)

"""The method registry and the interface every upsampling method shares."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from anyup_plugin.core.methods import (
    METHOD_ALIASES,
    METHOD_CLASSES,
    UpsamplingMethod,
    WrongFeaturesError,
    build_method,
    method_class,
    register_method,
)


class _Nearest(UpsamplingMethod):
    name = 'test_nearest'
    uses_image = False

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, image: Tensor | None, features: Tensor, output_size) -> Tensor:
        return self.scale * torch.nn.functional.interpolate(features, size=output_size)


class _PerBackbone(UpsamplingMethod):
    name = 'test_per_backbone'

    def __init__(self) -> None:
        super().__init__()
        self.feature_channels = 8
        self.patch_size = 14


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(METHOD_CLASSES, 'test_nearest', _Nearest)
    return 'test_nearest'


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match='unknown upsampling method') as info:
        method_class('nope')
    for name in ('anyup', 'bilinear', *METHOD_CLASSES):
        assert name in str(info.value)


def test_aliases_resolve_to_registered_methods():
    for alias, target in METHOD_ALIASES.items():
        assert target in METHOD_CLASSES, alias


def test_registered_class_builds_with_its_keyword_arguments(registered):
    method = build_method('TEST_NEAREST', scale=2.0)
    features = torch.arange(4.0).view(1, 1, 2, 2)
    out = method(None, features, (4, 4))
    assert out.shape == (1, 1, 4, 4)
    assert torch.equal(out[0, 0, ::2, ::2], 2.0 * features[0, 0])


def test_register_method_by_dotted_path_imports_lazily(monkeypatch):
    monkeypatch.setattr('anyup_plugin.core.methods.registry.METHOD_CLASSES', dict(METHOD_CLASSES))
    register_method('test_dotted', 'anyup_plugin.core.methods.base:UpsamplingMethod')
    assert method_class('test_dotted') is UpsamplingMethod


@pytest.mark.parametrize('name', ['anyup', 'bilinear', 'jbu'])
def test_register_method_refuses_a_taken_name(name):
    with pytest.raises(ValueError, match='already registered'):
        register_method(name, _Nearest)


def test_base_class_has_no_weights_to_load():
    with pytest.raises(NotImplementedError, match='no weights'):
        _Nearest.from_checkpoint('weights.pth')


def test_per_backbone_method_refuses_other_channels_and_patch_sizes():
    method = _PerBackbone()
    image = torch.zeros(1, 3, 56, 42)
    method.check_features(image, torch.zeros(1, 8, 4, 3))
    with pytest.raises(WrongFeaturesError, match='8-channel features, got 16'):
        method.check_features(image, torch.zeros(1, 16, 4, 3))
    with pytest.raises(WrongFeaturesError, match='patch size 14'):
        method.check_features(image, torch.zeros(1, 8, 3, 3))
    # Without an image only the channels can be checked.
    method.check_features(None, torch.zeros(1, 8, 3, 3))


def test_encoder_agnostic_method_takes_any_features(registered):
    method = build_method(registered)
    method.check_features(torch.zeros(1, 3, 50, 50), torch.zeros(2, 5, 3, 7))

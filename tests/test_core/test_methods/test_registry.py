"""The method registry and the interface every upsampling method shares."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch import Tensor

from anyup_plugin.core.checkpoints import CheckpointMismatchError
from anyup_plugin.core.methods import (
    METHOD_ALIASES,
    METHOD_CLASSES,
    UpsamplingMethod,
    WrongFeaturesError,
    build_method,
    method_class,
    register_method,
)
from anyup_plugin.core.methods.base import load_tensors, positive_output_size, read_state_dict
from anyup_plugin.core.methods.registry import (
    ANYUP_CHECKPOINT_KEYS,
    CheckpointIdentity,
    describe_checkpoint,
    identify_checkpoint,
    locate_keys,
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


# --- Which method's checkpoint a state dict is ----------------------------------------------


class _Hinted(UpsamplingMethod):
    name = 'test_hinted'
    checkpoint_keys_hint = ('encoder.weight', 'decoder.bias')


@pytest.fixture
def hinted(monkeypatch):
    monkeypatch.setitem(METHOD_CLASSES, 'test_hinted', _Hinted)
    return 'test_hinted'


def _state(*keys: str) -> dict[str, Tensor]:
    return {key: torch.zeros(1) for key in keys}


def test_locate_keys_finds_them_bare_prefixed_or_one_entry_down():
    hints = ('encoder.weight', 'decoder.bias')
    assert locate_keys(_state('encoder.weight', 'decoder.bias', 'x'), hints) == (None, '')
    prefixed = _state('module.encoder.weight', 'module.decoder.bias')
    assert locate_keys(prefixed, hints) == (None, 'module.')
    wrapped = {'epoch': 3, 'state_dict': _state('model.encoder.weight', 'model.decoder.bias')}
    assert locate_keys(wrapped, hints) == ('state_dict', 'model.')
    # All keys under one prefix: two half checkpoints are not one.
    assert locate_keys(_state('a.encoder.weight', 'b.decoder.bias'), hints) is None
    # A prefix ends at a dot: 'myencoder.weight' is another key.
    assert locate_keys(_state('myencoder.weight', 'decoder.bias'), hints) is None
    assert locate_keys(_state('encoder.weight'), hints) is None
    assert locate_keys(_state('encoder.weight'), ()) is None


def test_identify_checkpoint_names_anyup_and_registered_methods(hinted):
    assert identify_checkpoint(_state(*ANYUP_CHECKPOINT_KEYS)) == CheckpointIdentity(
        'anyup', 'AnyUp'
    )
    found = identify_checkpoint({'state_dict': _state('net.encoder.weight', 'net.decoder.bias')})
    assert found == CheckpointIdentity(hinted, '_Hinted', 'state_dict', 'net.')
    assert identify_checkpoint(_state('encoder.weight', 'head.bias')) is None
    # The state dict's own keys before those of its entries.
    both = {**_state('encoder.weight', 'decoder.bias'), 'ema': _state(*ANYUP_CHECKPOINT_KEYS)}
    assert identify_checkpoint(both) == CheckpointIdentity(hinted, '_Hinted')


@pytest.mark.parametrize('name', ['featup', 'jafar', 'loftup', 'naf'])
def test_identify_checkpoint_tells_the_published_methods_apart(name):
    cls = method_class(name)
    found = identify_checkpoint(_state(*cls.checkpoint_keys_hint))
    assert found == CheckpointIdentity(name, cls.__name__)


def test_describe_checkpoint_says_what_a_method_cannot_load(hinted):
    other = _state('encoder.weight', 'decoder.bias')
    assert describe_checkpoint(other, 'naf') == (
        "this holds a _Hinted checkpoint (method 'test_hinted')"
    )
    assert describe_checkpoint(_state(*ANYUP_CHECKPOINT_KEYS), 'naf') == (
        'this holds an AnyUp checkpoint (load it with AnyUp.from_pretrained)'
    )
    # The method's own weights in another layout: where they are and how to take them out.
    prefixed = _state('module.encoder.weight', 'module.decoder.bias')
    assert describe_checkpoint(prefixed, hinted) == (
        "this holds _Hinted weights under the prefix 'module.' (strip 'module.' from every key)"
    )
    assert describe_checkpoint({'state_dict': other}, hinted) == (
        "this holds _Hinted weights inside {'state_dict': ...} (save its 'state_dict' entry alone)"
    )
    wrapped = {'state_dict': {'m.' + k: v for k, v in other.items()}}
    assert describe_checkpoint(wrapped, hinted) == (
        "this holds _Hinted weights inside {'state_dict': ...} and under the prefix 'm.' "
        "(save its 'state_dict' entry with 'm.' stripped from every key)"
    )


def test_describe_checkpoint_lists_the_first_keys_of_an_unknown_file():
    unknown = _state(*(f'layer{i}.weight' for i in range(7)))
    assert describe_checkpoint(unknown, 'naf') == (
        'this holds 7 key(s) (layer0.weight, layer1.weight, layer2.weight, layer3.weight, '
        'layer4.weight, ...), not those of any known method'
    )
    training = {'state_dict': _state('w'), 'epoch': 3}
    assert describe_checkpoint(training, 'naf') == (
        "this holds 2 key(s) (state_dict, epoch): a training checkpoint ({'state_dict': ...}) "
        "without any known method's weights"
    )


def test_positive_output_size_takes_integers_of_any_kind():
    assert positive_output_size((np.int64(3), torch.tensor(5)), 'M') == (3, 5)
    assert positive_output_size([7, 2], 'M') == (7, 2)
    for size in [(0, 5), (5, -1), (5,), (1, 2, 3), (5.0, 6), (True, 6), 4, None]:
        with pytest.raises(ValueError, match=r"^M takes \(H', W'\), got "):
            positive_output_size(size, "M takes (H', W')")


def test_load_tensors_reads_tensors_but_runs_no_pickled_code(tmp_path):
    torch.save({'w': torch.arange(3.0), 'meta': {'epoch': 2}}, tmp_path / 'plain.pth')
    loaded = load_tensors(str(tmp_path / 'plain.pth'))
    assert torch.equal(loaded['w'], torch.arange(3.0)) and loaded['meta'] == {'epoch': 2}
    torch.save({'w': torch.zeros(1), 'code': _Hinted}, tmp_path / 'pickled.pth')
    with pytest.raises(pickle.UnpicklingError, match='weights_only'):
        load_tensors(str(tmp_path / 'pickled.pth'))


def test_read_state_dict_takes_the_entry_and_refuses_what_is_no_state_dict(tmp_path):
    def read(name, entry=None):
        return read_state_dict(tmp_path / name, 'X checkpoint', 'an X file', 'Get X.', entry)

    weights = {'w': torch.ones(2)}
    torch.save({'state_dict': weights, 'epoch': 1}, tmp_path / 'training.ckpt')
    assert read('training.ckpt', 'state_dict').keys() == {'w'}
    # Without an entry (or one the file lacks) the file itself is the state dict.
    assert read('training.ckpt').keys() == {'state_dict', 'epoch'}
    assert read('training.ckpt', 'model').keys() == {'state_dict', 'epoch'}
    torch.save([torch.ones(2)], tmp_path / 'list.pth')
    with pytest.raises(
        CheckpointMismatchError, match=r'holds a list, not a state dict; expected an X file'
    ):
        read('list.pth')
    torch.save({0: torch.ones(2)}, tmp_path / 'int_keys.pth')
    with pytest.raises(CheckpointMismatchError, match='holds a dict, not a state dict'):
        read('int_keys.pth')
    with pytest.raises(FileNotFoundError, match='X checkpoint .*absent.pth.* Get X.'):
        read('absent.pth')

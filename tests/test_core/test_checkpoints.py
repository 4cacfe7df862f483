"""Checkpoint files: the missing-file, unreadable-file and mismatch errors of every loader."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from anyup_plugin.core import AnyUp, FrozenTimmEncoder
from anyup_plugin.core.checkpoints import (
    MAX_KEYS_IN_ERROR,
    CheckpointMismatchError,
    CheckpointReadError,
    check_state_dict_fits,
    read_checkpoint,
    state_dict_mismatch,
)

TINY_VIT = dict(model_name='vit_small_patch14_dinov2', depth=1)
ANYUP_VALID = "A valid one is a state dict saved by torch.save (plain, or under 'state_dict'"
ENCODER_VALID = 'A valid one is a state dict saved by torch.save, or a .safetensors file'


# ------------------------------------------------------------------------ the helpers, once


def test_mismatch_names_every_kind_in_the_models_order():
    reference = {'a': torch.zeros(2), 'b': torch.zeros(3, 1), 'c': torch.zeros(1)}
    state = {'b': torch.zeros(3, 2), 'c': 'not a tensor', 'z': torch.zeros(1), 'a2': 1}
    mismatch = state_dict_mismatch(state, reference)
    assert mismatch.missing == ['a']
    assert mismatch.unexpected == ['z', 'a2']
    assert mismatch.wrong_shape == [
        'b (checkpoint (3, 2), model (3, 1))',
        'c (checkpoint str, model (1,))',
    ]
    assert mismatch.count == 5
    with pytest.raises(CheckpointMismatchError) as info:
        check_state_dict_fits(state, reference, "checkpoint 'w.pth'", 'the model')
    assert str(info.value) == (
        "checkpoint 'w.pth' does not fit the model: 1 missing key(s): a; 2 unexpected key(s): "
        'z, a2; 2 key(s) with the wrong shape: b (checkpoint (3, 2), model (3, 1)), '
        'c (checkpoint str, model (1,))'
    )
    # Both what torch's load_state_dict raises and what a bad argument raises.
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, ValueError)


def test_mismatch_lists_the_first_keys_and_counts_the_rest():
    reference = {f'k{i}': torch.zeros(1) for i in range(MAX_KEYS_IN_ERROR + 3)}
    with pytest.raises(CheckpointMismatchError) as info:
        check_state_dict_fits({}, reference, 'weights', 'model')
    shown = ', '.join(f'k{i}' for i in range(MAX_KEYS_IN_ERROR))
    assert str(info.value) == (
        f'weights does not fit model: {MAX_KEYS_IN_ERROR + 3} missing key(s): {shown}, ... (3 more)'
    )


def test_fitting_weights_pass():
    reference = {'a': torch.zeros(2, 3)}
    assert not state_dict_mismatch({'a': torch.ones(2, 3)}, reference)
    check_state_dict_fits({'a': torch.ones(2, 3)}, reference, 'weights', 'model')


def test_read_checkpoint_names_a_missing_file_and_what_to_do(tmp_path):
    path = tmp_path / 'none.pth'
    with pytest.raises(FileNotFoundError) as info:
        read_checkpoint(path, torch.load, 'AnyUp checkpoint', 'x', 'Put it there.')
    assert (
        str(info.value)
        == f'AnyUp checkpoint {str(path)!r} does not exist or is not a file. Put it there.'
    )
    with pytest.raises(FileNotFoundError, match='does not exist or is not a file'):
        read_checkpoint(tmp_path, torch.load, 'AnyUp checkpoint', 'x', 'Put it there.')


def test_read_checkpoint_chains_the_readers_error(tmp_path):
    path = tmp_path / 'w.pth'
    path.write_bytes(b'\x80\x04junk')

    def reader(name):
        raise pickle.UnpicklingError('invalid load key')

    with pytest.raises(CheckpointReadError) as info:
        read_checkpoint(path, reader, 'weights file', 'a file saved by torch.save', '')
    assert str(info.value) == (
        f'weights file {str(path)!r} could not be read (UnpicklingError: invalid load key). It '
        'may be truncated or corrupt (download it again), or not a checkpoint at all. A valid '
        'one is a file saved by torch.save.'
    )
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------- every loader, broken files


def _truncated(path, source):
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _text(path):
    path.write_text('<html><body>404 Not Found</body></html>\n', encoding='utf-8')
    return path


@pytest.fixture
def anyup_file(tmp_path):
    path = tmp_path / 'anyup_good.pth'
    torch.save(AnyUp(qk_dim=16).state_dict(), path)
    return path


@pytest.fixture(scope='module')
def encoder_files(tmp_path_factory):
    root = tmp_path_factory.mktemp('encoder')
    state = FrozenTimmEncoder(**TINY_VIT).model.state_dict()
    torch.save(state, root / 'good.pth')
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / 'good.safetensors'))
    return root


@pytest.mark.parametrize('broken', ['truncated', 'text'])
def test_anyup_from_pretrained_says_which_file_is_unreadable(tmp_path, anyup_file, broken):
    path = tmp_path / 'anyup.pth'
    path = _truncated(path, anyup_file) if broken == 'truncated' else _text(path)
    with pytest.raises(CheckpointReadError) as info:
        AnyUp.from_pretrained(path)
    message = str(info.value)
    assert message.startswith(f'AnyUp checkpoint {str(path)!r} could not be read (')
    assert ANYUP_VALID in message and 'anyup_paper' in message
    assert info.value.__cause__ is not None
    assert f'({type(info.value.__cause__).__name__}: ' in message


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
@pytest.mark.parametrize('broken', ['truncated', 'text'])
def test_encoder_checkpoint_says_which_file_is_unreadable(tmp_path, encoder_files, suffix, broken):
    path = tmp_path / f'backbone{suffix}'
    if broken == 'truncated':
        _truncated(path, encoder_files / f'good{suffix}')
    else:
        _text(path)
    with pytest.raises(CheckpointReadError) as info:
        FrozenTimmEncoder(**TINY_VIT, checkpoint=path)
    message = str(info.value)
    assert message.startswith(f'backbone checkpoint {str(path)!r} could not be read (')
    assert ENCODER_VALID in message and "timm model 'vit_small_patch14_dinov2'" in message
    assert info.value.__cause__ is not None
    if suffix == '.safetensors':
        assert type(info.value.__cause__).__name__ == 'SafetensorError'


def test_intact_encoder_checkpoints_still_load(encoder_files):
    for name in ('good.pth', 'good.safetensors'):
        FrozenTimmEncoder(**TINY_VIT, checkpoint=encoder_files / name)


def test_anyup_mismatch_names_the_file_and_the_architecture(anyup_file):
    with pytest.raises(CheckpointMismatchError) as info:
        AnyUp.from_pretrained(anyup_file, num_heads=2, lfu_kernel_size=3)
    assert str(info.value) == (
        f'AnyUp checkpoint {str(anyup_file)!r} does not fit AnyUp(qk_dim=16, lfu_kernel_size=3, '
        'num_heads=2): 1 key(s) with the wrong shape: key_features_encoder.0.basis '
        '(checkpoint (16, 1, 5, 5), model (16, 1, 3, 3))'
    )

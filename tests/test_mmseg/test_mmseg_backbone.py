"""FrozenTimmMMSegBackbone: outputs, freezing, eval mode, partial unfreezing, weights."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

from safetensors.torch import save_file

from anyup_plugin.core.checkpoints import CheckpointReadError
from anyup_plugin.mmseg.backbones import FrozenTimmMMSegBackbone

TINY_VIT = dict(model_name='vit_small_patch14_dinov2', depth=2)


def test_outputs_and_frozen_state():
    backbone = FrozenTimmMMSegBackbone(**TINY_VIT, layers=[0, 1])
    out = backbone(torch.randn(2, 3, 56, 70))
    assert isinstance(out, tuple)
    assert [tuple(o.shape) for o in out] == [(2, 384, 4, 5)] * 2
    assert backbone.out_channels == [384, 384] and backbone.patch_size == 14
    assert not any(p.requires_grad for p in backbone.parameters())
    assert out[0].grad_fn is None
    backbone.train()
    assert not backbone.encoder.training and not backbone.encoder.model.training


def test_pads_sizes_that_are_not_multiples_of_the_patch():
    out = FrozenTimmMMSegBackbone(**TINY_VIT)(torch.randn(1, 3, 57, 40))
    assert tuple(out[0].shape) == (1, 384, 5, 3)  # ceil(57 / 14), ceil(40 / 14)


def test_trainable_last_blocks_get_gradients():
    backbone = FrozenTimmMMSegBackbone(**TINY_VIT, trainable_blocks=1)
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(('encoder.model.blocks.1.', 'encoder.model.norm.'))
                             for n in trainable)  # fmt: skip
    backbone.train()
    backbone(torch.randn(1, 3, 28, 28))[0].square().mean().backward()
    for name, param in backbone.named_parameters():
        assert (param.grad is not None) == (name in trainable), name
    with pytest.raises(ValueError, match='at most 2'):
        FrozenTimmMMSegBackbone(**TINY_VIT, trainable_blocks=3)


def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError, match='vit_small_patch14_dinov2'):
        FrozenTimmMMSegBackbone(model_name='vit_small_patch14_dinov3_typo')


def test_missing_checkpoint_says_where_to_get_it(tmp_path):
    path = tmp_path / 'model.safetensors'
    with pytest.raises(FileNotFoundError) as info:
        FrozenTimmMMSegBackbone(**TINY_VIT, checkpoint=str(path))
    message = str(info.value)
    assert message.startswith(f'backbone checkpoint {str(path)!r} does not exist or is not a file')
    assert 'https://huggingface.co/timm/vit_small_patch14_dinov2' in message


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
@pytest.mark.parametrize('broken', ['truncated', 'text'])
def test_unreadable_checkpoint_names_the_file_and_what_a_valid_one_is(tmp_path, suffix, broken):
    path = tmp_path / f'model{suffix}'
    if broken == 'truncated':
        state = FrozenTimmMMSegBackbone(**TINY_VIT).encoder.model.state_dict()
        whole = tmp_path / f'whole{suffix}'
        if suffix == '.pth':
            torch.save(state, whole)
        else:
            save_file({k: v.contiguous() for k, v in state.items()}, str(whole))
        path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    else:
        path.write_text('version https://git-lfs.github.com/spec/v1\n', encoding='utf-8')
    with pytest.raises(CheckpointReadError) as info:
        FrozenTimmMMSegBackbone(**TINY_VIT, checkpoint=str(path))
    message = str(info.value)
    assert message.startswith(f'backbone checkpoint {str(path)!r} could not be read (')
    assert 'A valid one is a state dict saved by torch.save, or a .safetensors file' in message
    assert info.value.__cause__ is not None


def test_local_checkpoint_loads(tmp_path):
    source = FrozenTimmMMSegBackbone(**TINY_VIT)
    path = tmp_path / 'vit.pth'
    torch.save(source.encoder.model.state_dict(), path)
    torch.manual_seed(123)
    loaded = FrozenTimmMMSegBackbone(**TINY_VIT, checkpoint=str(path))
    for key, value in source.encoder.model.state_dict().items():
        torch.testing.assert_close(loaded.encoder.model.state_dict()[key], value)
    # An init_cfg as well would let the runner's init_weights() overwrite what was loaded.
    init_cfg = dict(type='Normal', layer='Linear', std=1.0)
    with pytest.raises(ValueError, match=r'init_cfg=.* would re-initialise the weights loaded'):
        FrozenTimmMMSegBackbone(**TINY_VIT, checkpoint=str(path), init_cfg=init_cfg)
    # Without weights to protect, init_cfg initialises as MMEngine does.
    initialised = FrozenTimmMMSegBackbone(**TINY_VIT, init_cfg=init_cfg)
    before = {k: v.clone() for k, v in initialised.state_dict().items()}
    initialised.init_weights()
    changed = [k for k, v in initialised.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(k.endswith(('.weight', '.bias')) for k in changed)


def test_input_normalisation_is_undone():
    backbone = FrozenTimmMMSegBackbone(**TINY_VIT).eval()
    torch.manual_seed(0)
    pixels = torch.rand(1, 3, 28, 28) * 255
    imagenet_mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    imagenet_std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    reference = backbone((pixels - imagenet_mean) / imagenet_std)[0]
    backbone.set_input_normalization([0, 0, 0], [255, 255, 255])
    torch.testing.assert_close(backbone(pixels / 255)[0], reference, rtol=1e-4, atol=1e-4)


def test_old_config_name_builds_the_backbone_and_warns_once():
    from mmseg.registry import MODELS

    # _scope_: as a config's default_scope does; the process's current scope is whichever
    # runner ran last in this test session.
    with pytest.warns(DeprecationWarning) as record:
        backbone = MODELS.build(
            dict(type='FrozenTimmBackbone', _scope_='mmseg', **TINY_VIT, layers=[0])
        )
    messages = [str(w.message) for w in record if w.category is DeprecationWarning]
    assert messages == [
        'FrozenTimmBackbone was renamed FrozenTimmMMSegBackbone; the old name is deprecated and '
        'will be removed: write FrozenTimmMMSegBackbone (same arguments)'
    ]
    assert isinstance(backbone, FrozenTimmMMSegBackbone)
    assert backbone.out_channels == [384]
    with warnings.catch_warnings():
        warnings.simplefilter('error', DeprecationWarning)
        # The new name: silent.
        MODELS.build(dict(type='FrozenTimmMMSegBackbone', _scope_='mmseg', **TINY_VIT))

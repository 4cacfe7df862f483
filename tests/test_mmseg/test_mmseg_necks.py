"""UpsamplerNeck, AnyUpNeck, BilinearNeck: shapes, strides, guidance, freezing, methods, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

from anyup_plugin.constants import IMAGENET_MEAN_255, IMAGENET_STD_255
from anyup_plugin.core.anyup import AnyUp
from anyup_plugin.core.methods import METHOD_CLASSES, UpsamplingMethod
from anyup_plugin.mmseg.necks import AnyUpNeck, BilinearNeck, UpsamplerNeck


def _inputs(batch=2, channels=8, h=4, w=5, size=(28, 35)):
    torch.manual_seed(0)
    feats = (torch.randn(batch, channels, h, w), torch.randn(batch, 2 * channels, h, w))
    image = torch.randn(batch, 3, *size)
    return feats, image


@pytest.mark.parametrize('neck_type', [AnyUpNeck, BilinearNeck])
def test_upsamples_every_level_to_input_size(neck_type):
    feats, image = _inputs()
    out = neck_type().eval()(feats, image)
    assert [tuple(o.shape) for o in out] == [(2, 8, 28, 35), (2, 16, 28, 35)]


@pytest.mark.parametrize('neck_type', [AnyUpNeck, BilinearNeck])
def test_stride_and_in_index(neck_type):
    feats, image = _inputs()
    out = neck_type(in_index=1, output_stride=4).eval()(feats, image)
    assert out[0] is feats[0]  # not selected: passed through
    assert tuple(out[1].shape) == (2, 16, 7, 9)  # ceil(28 / 4), ceil(35 / 4)
    out = neck_type(in_index=[0, 1], output_stride=[2, 7]).eval()(feats, image)
    assert tuple(out[0].shape[-2:]) == (14, 18) and tuple(out[1].shape[-2:]) == (4, 5)


def test_per_level_strides_need_matching_in_index():
    # known at construction: three selected levels, two strides
    with pytest.raises(ValueError, match='neck.in_index'):
        BilinearNeck(in_index=[0, 1, 2], output_stride=[2, 4])
    with pytest.raises(ValueError):
        AnyUpNeck(output_stride=0)
    # in_index=None: one stride per backbone level, checked against the maps at the forward
    feats, image = _inputs()
    out = BilinearNeck(output_stride=[2, 4])(feats, image)
    assert [tuple(o.shape[-2:]) for o in out] == [(14, 18), (7, 9)]


def test_bilinear_neck_is_plain_interpolation():
    feats, image = _inputs()
    out = BilinearNeck()(feats, image)
    expected = F.interpolate(feats[0], size=(28, 35), mode='bilinear', align_corners=False)
    torch.testing.assert_close(out[0], expected)


def test_anyup_neck_without_image_names_the_segmentor():
    feats, _ = _inputs()
    with pytest.raises(RuntimeError, match="type='AnyUpEncoderDecoder'"):
        AnyUpNeck().eval()(feats)
    with pytest.raises(RuntimeError, match='AnyUpEncoderDecoder'):
        BilinearNeck()(feats)
    # the bilinear baseline can run in a stock EncoderDecoder given a factor
    assert tuple(BilinearNeck(scale_factor=14)(feats)[0].shape[-2:]) == (56, 70)


def test_attention_kernel_is_passed_to_anyup_and_changes_nothing():
    feats, image = _inputs()
    necks = []
    for kernel in ('matmul', 'sdpa'):
        torch.manual_seed(0)  # the same random weights for both
        necks.append(AnyUpNeck(in_index=[0, 1], attention_kernel=kernel).eval())
        assert necks[-1].upsampler.anyup.attention_kernel == kernel
    with torch.no_grad():
        for a, b in zip(*(neck(feats, image) for neck in necks)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_anyup_output_is_a_convex_combination_of_inputs():
    feats, image = _inputs(batch=1, channels=3)
    out = AnyUpNeck().eval()(feats, image)[0]
    lo = feats[0].amin(dim=(2, 3), keepdim=True)
    hi = feats[0].amax(dim=(2, 3), keepdim=True)
    assert bool(((out >= lo - 1e-4) & (out <= hi + 1e-4)).all())


class _Recorder(torch.nn.Module):
    """Stands in for the neck's FeatureUpsampler and records the guidance it receives."""

    def forward(self, image, features, output_size):
        self.image = image
        return [F.interpolate(f, size=s, mode='nearest') for f, s in zip(features, output_size)]


def test_guidance_is_converted_to_imagenet_normalisation():
    neck = AnyUpNeck().eval()
    neck.upsampler = _Recorder()
    torch.manual_seed(0)
    pixels = torch.rand(1, 3, 14, 14) * 255
    mean, std = [127.5, 127.5, 127.5], [127.5, 127.5, 127.5]
    neck.set_input_normalization(mean, std)
    x = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    neck([torch.randn(1, 4, 2, 2)], x)
    imagenet = (pixels - torch.tensor(IMAGENET_MEAN_255).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD_255
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(neck.upsampler.image, imagenet, rtol=1e-5, atol=1e-5)

    # ImageNet statistics: the image is passed through untouched
    neck.set_input_normalization(IMAGENET_MEAN_255, IMAGENET_STD_255)
    neck([torch.randn(1, 4, 2, 2)], x)
    assert neck.upsampler.image is x


def test_frozen_neck_stays_eval_and_passes_gradients_to_features():
    neck = AnyUpNeck()
    neck.train()
    assert neck.training and not neck.upsampler.anyup.training
    assert not any(p.requires_grad for p in neck.parameters())
    feats, image = _inputs(batch=1)
    out = neck(feats, image)
    assert out[0].grad_fn is None  # nothing to differentiate: no graph recorded
    leaf = feats[0].clone().requires_grad_(True)
    neck([leaf], image)[0].sum().backward()
    assert leaf.grad is not None and bool(leaf.grad.abs().sum() > 0)


def test_trainable_neck_gives_every_trainable_parameter_a_gradient():
    neck = AnyUpNeck(frozen=False).train()
    assert neck.upsampler.anyup.training
    trainable = {n for n, p in neck.named_parameters() if p.requires_grad}
    assert trainable and not any('out_proj' in n for n in trainable)
    feats, image = _inputs(batch=1)
    neck(feats, image)[0].square().mean().backward()
    missing = [n for n, p in neck.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing  # distributed training would report these as unused


def test_upsample_only_in_eval_mode():
    neck = AnyUpNeck(upsample_in_training=False)
    feats, image = _inputs()
    assert neck.train()(feats, image)[0] is feats[0]
    assert neck.train()(feats)[0] is feats[0]  # no image needed while passing through
    assert tuple(neck.eval()(feats, image)[0].shape[-2:]) == (28, 35)


def test_checkpoint_loading_and_mismatch(tmp_path):
    reference = AnyUp()
    path = tmp_path / 'anyup.pth'
    torch.save(reference.state_dict(), path)
    neck = AnyUpNeck(checkpoint=str(path))
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(neck.upsampler.anyup.state_dict()[key], value)

    broken = dict(reference.state_dict())
    broken.pop('rope.freqs')
    torch.save(broken, path)
    with pytest.raises(RuntimeError, match='rope.freqs'):
        AnyUpNeck(checkpoint=str(path))
    with pytest.raises(FileNotFoundError):
        AnyUpNeck(checkpoint=str(tmp_path / 'missing.pth'))


def test_init_cfg_is_refused_over_a_checkpoint_and_applied_without_one(tmp_path):
    path = tmp_path / 'anyup.pth'
    torch.save(AnyUp().state_dict(), path)
    init_cfg = dict(type='Kaiming', layer='Conv2d')
    # The runner's init_weights() would overwrite the loaded weights.
    with pytest.raises(ValueError, match=r'init_cfg=.* would re-initialise the weights loaded'):
        AnyUpNeck(checkpoint=str(path), init_cfg=init_cfg)
    neck = AnyUpNeck(init_cfg=init_cfg)
    before = {k: v.clone() for k, v in neck.state_dict().items()}
    neck.init_weights()
    changed = [k for k, v in neck.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(k.endswith('.weight') or k.endswith('.bias') for k in changed)


def test_trained_export_loads_by_path_with_its_own_hyper_parameters(tmp_path):
    from anyup_plugin.core.hub import save_pretrained

    torch.manual_seed(0)
    student = AnyUp(qk_dim=32, num_heads=2, window_ratio=0.25)
    path = tmp_path / 'anyup_student_latest.pth'
    save_pretrained(student, path)
    neck = AnyUpNeck(checkpoint=str(path)).eval()
    loaded = neck.upsampler.anyup
    assert (loaded.qk_dim, loaded.num_heads, loaded.window_ratio) == (32, 2, 0.25)
    feats, image = _inputs(batch=1)
    with torch.no_grad():
        torch.testing.assert_close(neck(feats, image)[0], student.eval()(image, feats[0]))
    assert AnyUpNeck(checkpoint=str(path), window_ratio=0.1).upsampler.anyup.window_ratio == 0.1


# --- [map, cls_token] levels, pyramids from one map, and what misfits are told -----------------


@pytest.mark.parametrize('neck_type', [AnyUpNeck, BilinearNeck])
def test_class_token_levels_keep_their_token_and_container(neck_type):
    feats, image = _inputs()
    tokens = torch.randn(2, 8), torch.randn(2, 16)
    levels = [[feats[0], tokens[0]], (feats[1], tokens[1])]  # as a ViT with output_cls_token
    torch.manual_seed(0)
    neck = neck_type(output_stride=4).eval()
    out = neck(levels, image)
    assert isinstance(out[0], list) and isinstance(out[1], tuple)
    assert out[0][1] is tokens[0] and out[1][1] is tokens[1]
    with torch.no_grad():  # the maps are upsampled as if given without their tokens
        plain = neck(feats, image)
    for level, expected in zip(out, plain):
        assert tuple(level[0].shape[-2:]) == (7, 9)
        torch.testing.assert_close(level[0], expected)


def test_bilinear_pyramid_from_one_map_is_interpolation_to_each_stride():
    feats, _ = _inputs()  # maps 4x5: stride 16 of a 64x80 image
    image = torch.randn(2, 3, 64, 80)
    out = BilinearNeck(in_index=-1, output_stride=[4, 8, 16, 32])(feats, image)
    assert len(out) == 4  # the pyramid only: the first backbone map is dropped
    for level, size in zip(out, [(16, 20), (8, 10), (4, 5), (2, 3)]):
        expected = F.interpolate(feats[1], size=size, mode='bilinear', align_corners=False)
        torch.testing.assert_close(level, expected)
    assert out[2] is feats[1]  # its own stride: the map as it is


def test_anyup_pyramid_levels_equal_single_stride_runs_and_stay_convex():
    feats, _ = _inputs(batch=1)
    image = torch.randn(1, 3, 64, 80)
    torch.manual_seed(0)
    pyramid = AnyUpNeck(in_index=1, output_stride=[4, 8, 16, 32]).eval()
    token = torch.randn(1, 16)
    with torch.no_grad():
        out = pyramid([feats[0], [feats[1], token]], image)
    assert [tuple(level[0].shape) for level in out] == [
        (1, 16, 16, 20),
        (1, 16, 8, 10),
        (1, 16, 4, 5),
        (1, 16, 2, 3),  # fewer cells than the map has
    ]
    assert all(level[1] is token for level in out)
    lo = feats[1].amin(dim=(2, 3), keepdim=True) - 1e-4
    hi = feats[1].amax(dim=(2, 3), keepdim=True) + 1e-4
    for level, stride in zip(out, [4, 8, 16, 32]):
        single = AnyUpNeck(in_index=1, output_stride=stride).eval()
        single.load_state_dict(pyramid.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(level[0], single(feats, image)[1], rtol=1e-4, atol=1e-5)
        assert bool(((level[0] >= lo) & (level[0] <= hi)).all())


def test_one_backbone_map_and_several_strides_make_a_pyramid():
    feats, _ = _inputs()
    out = BilinearNeck(output_stride=[4, 8])(feats[:1], torch.randn(2, 3, 32, 40))
    assert [tuple(o.shape[-2:]) for o in out] == [(8, 10), (4, 5)]


def test_misfit_settings_name_the_key_the_number_of_maps_and_their_shapes():
    feats, image = _inputs()
    shapes = 'The backbone gave 2 map(s): (2, 8, 4, 5), (2, 16, 4, 5)'
    with pytest.raises(IndexError) as info:
        BilinearNeck(in_index=[0, 2])(feats, image)
    assert 'neck.in_index=[0, 2] selects map 2, which does not exist' in str(info.value)
    assert shapes in str(info.value)
    with pytest.raises(ValueError) as info:
        BilinearNeck(output_stride=[4, 8, 16])(feats, image)
    assert 'neck.output_stride=[4, 8, 16] gives 3 strides for 2 selected map(s)' in str(info.value)
    assert shapes in str(info.value)
    with pytest.raises(ValueError, match=r'neck.in_index=\[1, -1\] lists a map twice'):
        BilinearNeck(in_index=[1, -1], output_stride=[4, 8])(feats, image)
    with pytest.raises(TypeError, match='backbone output 1 is a str'):
        BilinearNeck()([feats[0], 'x'], image)


def test_pyramid_cannot_pass_maps_through_in_training():
    with pytest.raises(ValueError, match='pyramid'):
        BilinearNeck(in_index=0, output_stride=[4, 8], upsample_in_training=False)
    neck = BilinearNeck(output_stride=[4, 8], upsample_in_training=False).train()
    feats, image = _inputs()
    assert neck(feats, image)[1] is feats[1]  # one stride per map: passed through
    with pytest.raises(ValueError, match='pyramid'):
        neck(feats[:1], image)  # one map: a pyramid


@pytest.mark.parametrize('neck_type', [AnyUpNeck, BilinearNeck])
def test_keys_of_a_merged_base_neck_say_how_to_replace_or_keep_it(neck_type):
    name = neck_type.__name__
    with pytest.raises(TypeError) as info:
        neck_type(in_index=-1, in_channels=[768] * 4, out_channels=768, scales=[4, 2, 1, 0.5])
    message = str(info.value)
    assert (
        f'{name} got config key(s) it does not take: in_channels, out_channels, scales' in message
    )
    assert f"neck=dict(_delete_=True, type='{name}', ...)" in message
    assert f"neck=[dict(type='{name}', ...), {{{{_base_.model.neck}}}}]" in message
    assert "type='AnyUpEncoderDecoder'" in message


# --- the method is a config key: UpsamplerNeck, and AnyUpNeck/BilinearNeck switched ---------------


class _Shift(UpsamplingMethod):
    """A third-party method: nearest upsampling plus ``shift`` x the guidance's mean."""

    name = 'test_shift'

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, image, features, output_size):
        return F.interpolate(features, size=output_size, mode='nearest') + self.shift * image.mean()


class _Nearest(UpsamplingMethod):
    name = 'test_nearest'
    uses_image = False

    def forward(self, image, features, output_size):
        return F.interpolate(features, size=output_size, mode='nearest')


@pytest.fixture
def third_party(monkeypatch):
    """Two methods registered for one test (as register_method would, then removed)."""
    monkeypatch.setitem(METHOD_CLASSES, 'test_shift', _Shift)
    monkeypatch.setitem(METHOD_CLASSES, 'test_nearest', _Nearest)


def test_upsampler_neck_builds_any_method_from_its_config(third_party):
    from mmseg.registry import MODELS

    feats, image = _inputs()
    neck = MODELS.build(dict(type='UpsamplerNeck', method='test_shift', shift=2.0, output_stride=4))
    assert isinstance(neck, UpsamplerNeck) and neck.upsampler.method_module.shift == 2.0
    out = neck.eval()(feats, image)
    for got, level in zip(out, feats):
        expected = F.interpolate(level, size=(7, 9), mode='nearest') + 2.0 * image.mean()
        torch.testing.assert_close(got, expected)
    assert isinstance(UpsamplerNeck().upsampler.anyup, AnyUp)  # the default method


@pytest.mark.parametrize('neck_type', [AnyUpNeck, BilinearNeck])
def test_anyup_and_bilinear_necks_switch_method_by_one_key(neck_type, third_party, caplog):
    feats, image = _inputs()
    # As an AnyUp config overridden by --cfg-options model.neck.method=test_shift: AnyUp's
    # own keys stay in the config and are left to AnyUp (nothing is downloaded).
    anyup_keys = dict(checkpoint='anyup_paper', window_ratio=0.1) if neck_type is AnyUpNeck else {}
    neck = neck_type(method='test_shift', shift=1.0, **anyup_keys).eval()
    assert neck.upsampler.method == 'test_shift' and neck.upsampler.checkpoint is None
    expected = F.interpolate(feats[1], size=(28, 35), mode='nearest') + image.mean()
    torch.testing.assert_close(neck(feats, image)[1], expected)
    assert 'method=' in repr(neck) and "'test_shift'" in repr(neck)


def test_methods_without_the_image_run_without_it_given_a_scale_factor(third_party):
    feats, _ = _inputs()
    out = BilinearNeck(method='test_nearest', scale_factor=2)(feats)  # stock EncoderDecoder
    torch.testing.assert_close(out[0], F.interpolate(feats[0], scale_factor=2, mode='nearest'))
    with pytest.raises(RuntimeError, match='AnyUpEncoderDecoder'):
        UpsamplerNeck(method='test_shift', scale_factor=2).eval()(feats)


def test_unknown_method_and_keys_name_what_is_known(third_party):
    with pytest.raises(ValueError, match='unknown upsampling method') as info:
        UpsamplerNeck(method='nearest_neighbour')
    assert 'anyup' in str(info.value) and 'test_shift' in str(info.value)
    with pytest.raises(TypeError) as info:
        AnyUpNeck(method='test_shift', radius=3, in_channels=[8])
    message = str(info.value)
    assert 'AnyUpNeck got config key(s) it does not take: in_channels, radius.' in message
    assert "method 'test_shift''s arguments (shift)" in message
    assert 'its own keys (method, checkpoint, frozen, in_index' in message
    assert "neck=dict(_delete_=True, type='AnyUpNeck', ...)" in message
    with pytest.raises(
        TypeError, match=r"method 'bilinear''s arguments \(align_corners, antialias\)"
    ):
        UpsamplerNeck(method='bilinear', window_ratio=0.1)


def test_old_state_dicts_keep_their_keys_and_load():
    torch.manual_seed(0)
    reference = AnyUp()
    neck = AnyUpNeck()
    assert all(key.startswith('upsampler.anyup.') for key in neck.state_dict())
    # an older neck that held AnyUp directly as `upsampler`
    neck.load_state_dict({f'upsampler.{k}': v for k, v in reference.state_dict().items()})
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(neck.upsampler.anyup.state_dict()[key], value)
    assert BilinearNeck().state_dict() == {}

"""Detectron2 adapter: config keys, any upsampler around any backbone, timm backbone, head."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip(
    'detectron2',
    reason='detectron2 is not installed (it is not on PyPI); install it with '
    '`make setup-detectron2` (the prebuilt wheel in ../shared/wheels, or upstream source: '
    "`pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'`)",
)

from d2_tiny import CONFIG_NAMES, CONFIGS, TINY
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model

from anyup_plugin.constants import IMAGENET_MEAN, IMAGENET_STD
from anyup_plugin.core.anyup import AnyUp
from anyup_plugin.core.methods import METHOD_CLASSES, UpsamplingMethod
from anyup_plugin.detectron2 import (
    AnyUpBackbone,
    AnyUpSemSegTrainer,
    EpochCosineParamScheduler,
    FrozenTimmD2Backbone,
    LinearProbeSemSegHead,
    add_anyup_config,
)
from anyup_plugin.detectron2.config import keyword_pairs

R50 = 'ade20k_r50_anyup_semsegfpn.yaml'
DINO_FPN = 'ade20k_dinov2_anyup_semsegfpn.yaml'


def _rgb_pixels(*size: int) -> torch.Tensor:
    return torch.randint(0, 256, (1, 3, *size), generator=torch.Generator().manual_seed(0)).float()


def _imagenet(rgb: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rgb / 255 - mean) / std


def _network_input(cfg, rgb: torch.Tensor) -> torch.Tensor:
    """What SemanticSegmentor gives the backbone: pixels in INPUT.FORMAT, normalised."""
    pixels = rgb.flip(1) if cfg.INPUT.FORMAT == 'BGR' else rgb
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def test_add_anyup_config_defaults_and_yaml_twins():
    cfg = add_anyup_config(get_cfg())
    anyup = cfg.MODEL.ANYUP
    assert anyup.BOTTOM_UP == 'build_frozen_timm_backbone' and anyup.UPSAMPLER == 'anyup'
    assert anyup.IN_FEATURES == ['feat0'] and anyup.STRIDES == [1]
    assert anyup.FROZEN and anyup.FREEZE_BOTTOM_UP and anyup.WINDOW_RATIO is None
    assert anyup.ATTENTION_KERNEL == 'auto' and anyup.METHOD_KWARGS == []
    assert cfg.MODEL.TIMM.LAYERS == [-1] and cfg.MODEL.TIMM.APPLY_NORM
    assert cfg.MODEL.TIMM.CHECKPOINT == '' and anyup.CHECKPOINT == ''
    classes = {'ade20k': 151, 'coco_stuff27': 27, 'voc2012': 21}
    for dataset, num_classes in classes.items():
        merged = {}
        for upsampler in ('anyup', 'bilinear'):
            c = add_anyup_config(get_cfg())
            c.merge_from_file(str(CONFIGS / f'{dataset}_dinov2_{upsampler}.yaml'))
            assert c.MODEL.BACKBONE.NAME == 'build_anyup_backbone'
            assert c.MODEL.ANYUP.UPSAMPLER == upsampler and c.MODEL.ANYUP.STRIDES == [1]
            assert c.MODEL.ANYUP.WINDOW_RATIO == 0.1  # the protocol pins the published window
            assert c.MODEL.SEM_SEG_HEAD.NAME == 'LinearProbeSemSegHead'
            assert c.MODEL.SEM_SEG_HEAD.IN_FEATURES == ['feat0_s1']
            assert c.MODEL.SEM_SEG_HEAD.NUM_CLASSES == num_classes
            assert c.MODEL.SEM_SEG_HEAD.IGNORE_VALUE == 255
            assert c.SOLVER.OPTIMIZER == 'AdamW' and c.SOLVER.BASE_LR == 5e-4
            assert c.SOLVER.WEIGHT_DECAY == 1e-5 and c.SOLVER.IMS_PER_BATCH == 2
            assert c.SOLVER.LR_EPOCHS == 20 and c.SOLVER.LR_SCHEDULER_NAME == 'EpochCosineLR'
            assert c.INPUT.CENTER_CROP_SIZE == 448 and c.INPUT.FORMAT == 'RGB'
            assert all(name.startswith(dataset) for name in (*c.DATASETS.TRAIN, *c.DATASETS.TEST))
            c.MODEL.ANYUP.UPSAMPLER = 'x'
            merged[upsampler] = c.dump()
        assert merged['anyup'] == merged['bilinear']  # the twins differ in the upsampler only


@pytest.mark.parametrize('config', CONFIG_NAMES)
def test_every_config_builds_offline_with_random_weights(config, no_network):
    cfg = add_anyup_config(get_cfg())
    cfg.merge_from_file(str(CONFIGS / config))
    # Full-size models; only the weight files are replaced by random initialisation.
    cfg.merge_from_list(['MODEL.DEVICE', 'cpu', 'MODEL.TIMM.CHECKPOINT', '',
                         'MODEL.ANYUP.CHECKPOINT', ''])  # fmt: skip
    model = build_model(cfg)
    backbone = model.backbone
    assert isinstance(backbone, AnyUpBackbone)
    shapes = backbone.output_shape()
    assert set(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES) <= set(shapes)
    assert {s.stride for s in shapes.values()} == set(cfg.MODEL.ANYUP.STRIDES)
    assert (backbone.upsampler.method == 'anyup') == isinstance(backbone.upsampler.anyup, AnyUp)
    if config == R50:
        assert type(backbone.bottom_up).__name__ == 'ResNet'
        assert [shapes[f'res{i}_s4'].channels for i in (2, 3, 4, 5)] == [256, 512, 1024, 2048]
    else:
        assert isinstance(backbone.bottom_up, FrozenTimmD2Backbone)
        assert backbone.bottom_up.size_divisibility == 14
        assert all(s.channels == 384 for s in shapes.values())  # ViT-S
    assert backbone.size_divisibility % max(cfg.MODEL.ANYUP.STRIDES) == 0


def test_timm_backbone_shapes_and_divisibility(make_cfg):
    from detectron2.modeling import BACKBONE_REGISTRY

    cfg = make_cfg('anyup', 'MODEL.TIMM.LAYERS', [-2, -1])
    timm_backbone = BACKBONE_REGISTRY.get('build_frozen_timm_backbone')(cfg, ShapeSpec(channels=3))
    assert timm_backbone.size_divisibility == 14
    assert timm_backbone.output_shape() == {
        'feat0': ShapeSpec(channels=48, stride=14),
        'feat1': ShapeSpec(channels=48, stride=14),
    }
    out = timm_backbone(torch.randn(1, 3, 42, 70))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        'feat0': (1, 48, 3, 5),
        'feat1': (1, 48, 3, 5),
    }


@pytest.mark.parametrize('upsampler', ['anyup', 'bilinear'])
@pytest.mark.parametrize('channel_order', ['RGB', 'BGR'])
def test_stride_1_output_equals_the_upsampler_called_directly(make_cfg, upsampler, channel_order):
    opts = ['INPUT.FORMAT', channel_order]
    if channel_order == 'BGR':
        opts += ['MODEL.PIXEL_MEAN', [103.53, 116.28, 123.675], 'MODEL.PIXEL_STD', [1, 1, 1]]
    cfg = make_cfg(upsampler, *opts)
    backbone = build_backbone(cfg).eval()
    rgb = _rgb_pixels(TINY, TINY + 14)
    out = backbone(_network_input(cfg, rgb))
    assert list(out) == ['feat0_s1']
    image = _imagenet(rgb)  # what AnyUp and the encoder take, computed independently
    feats = backbone.bottom_up.encoder(image)[0]
    assert feats.shape[-2:] == (4, 5)
    if upsampler == 'anyup':
        with torch.no_grad():
            expected = backbone.upsampler.anyup(image, feats, output_size=(TINY, TINY + 14))
    else:
        assert backbone.upsampler.anyup is None
        expected = F.interpolate(feats, size=(TINY, TINY + 14), mode='bilinear')
    torch.testing.assert_close(out['feat0_s1'], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ('config', 'opts', 'size'),
    [
        ('anyup', ['MODEL.TIMM.LAYERS', [-2, -1], 'MODEL.ANYUP.IN_FEATURES', ['feat0', 'feat1'],
                   'MODEL.ANYUP.STRIDES', [1, 2, 4, 8]], (50, 62)),
        (R50, ['MODEL.ANYUP.STRIDES', [1, 2, 4]], (45, 61)),
        (DINO_FPN, [], (TINY, TINY)),
    ],
)  # fmt: skip
def test_output_shape_matches_forward_at_every_stride(make_cfg, config, opts, size):
    cfg = make_cfg(config, *opts)
    backbone = build_backbone(cfg).eval()
    shapes = backbone.output_shape()
    expected_names = [
        f'{f}_s{s}' for f in cfg.MODEL.ANYUP.IN_FEATURES for s in cfg.MODEL.ANYUP.STRIDES
    ]
    assert list(shapes) == expected_names
    bottom_up = backbone.bottom_up.output_shape()
    out = backbone(torch.randn(2, 3, *size))
    assert list(out) == expected_names
    for name, spec in shapes.items():
        assert spec.channels == bottom_up[name.rsplit('_s', 1)[0]].channels
        assert tuple(out[name].shape) == (
            2,
            spec.channels,
            math.ceil(size[0] / spec.stride),
            math.ceil(size[1] / spec.stride),
        )
    # Padded as the meta-architecture pads, every output covers exactly H / s x W / s.
    div = backbone.size_divisibility
    padded = [math.ceil(v / div) * div for v in size]
    out = backbone(torch.randn(1, 3, *padded))
    for name, spec in shapes.items():
        assert [v * spec.stride for v in out[name].shape[-2:]] == padded


def test_wrapper_calls_the_upsampler_once_for_all_maps_and_strides(make_cfg):
    cfg = make_cfg(DINO_FPN, 'MODEL.ANYUP.STRIDES', [2, 4])
    backbone = build_backbone(cfg).eval()
    calls = []
    original = backbone.upsampler.forward

    def spy(image, features, output_size):
        calls.append((len(features), list(output_size)))
        return original(image, features, output_size)

    backbone.upsampler.forward = spy
    backbone(torch.randn(1, 3, TINY, TINY))
    assert calls == [(8, [(28, 28), (14, 14)] * 4)]


def _bn_cfg(make_cfg, *opts):
    """The ResNet config with BatchNorm that Detectron2 itself does not freeze."""
    return make_cfg(
        R50, 'MODEL.RESNETS.NORM', 'BN', 'MODEL.BACKBONE.FREEZE_AT', 0,
        'MODEL.SEM_SEG_HEAD.NUM_CLASSES', 5, *opts
    )  # fmt: skip


def _train_step(model):
    images = torch.randint(0, 256, (2, 3, TINY, TINY), generator=torch.Generator().manual_seed(1))
    batch = [{'image': im.float(), 'sem_seg': torch.randint(0, 5, (TINY, TINY))} for im in images]
    losses = model(batch)
    sum(losses.values()).backward()


@pytest.mark.parametrize('config', ['anyup', R50])
def test_frozen_anyup_and_bottom_up_get_no_gradients_and_stay_in_eval(make_cfg, config):
    cfg = _bn_cfg(make_cfg) if config == R50 else make_cfg(config)
    model = build_model(cfg).train()
    backbone = model.backbone
    assert backbone.training and model.sem_seg_head.training
    frozen = [backbone.bottom_up, backbone.upsampler.anyup]
    assert not any(m.training for part in frozen for m in part.modules())
    assert not any(p.requires_grad for p in backbone.parameters())
    bn_stats = {k: v.clone() for k, v in backbone.state_dict().items() if 'running' in k}
    assert bn_stats or config != R50
    _train_step(model)
    assert all(p.grad is None for p in backbone.parameters())
    assert all(p.grad is not None for p in model.sem_seg_head.parameters())
    for key, value in backbone.state_dict().items():
        if key in bn_stats:
            torch.testing.assert_close(value, bn_stats[key])  # eval-mode BN: stats unchanged
    model.train()  # again, after training started
    assert not any(m.training for part in frozen for m in part.modules())


def test_unfrozen_anyup_trains_bottom_up_stays_frozen(make_cfg):
    model = build_model(make_cfg('anyup', 'MODEL.ANYUP.FROZEN', False)).train()
    anyup = model.backbone.upsampler.anyup
    assert anyup.training and not model.backbone.bottom_up.training
    used = [
        p for n, p in anyup.named_parameters() if not n.startswith(AnyUp.UNUSED_PARAMETER_PREFIXES)
    ]
    assert used and all(p.requires_grad for p in used)
    _train_step(model)
    assert all(p.grad is not None for p in used)
    assert all(p.grad is None for p in model.backbone.bottom_up.parameters())


def test_unfrozen_bottom_up_gets_gradients_through_frozen_anyup(make_cfg):
    model = build_model(_bn_cfg(make_cfg, 'MODEL.ANYUP.FREEZE_BOTTOM_UP', False)).train()
    backbone = model.backbone
    assert backbone.bottom_up.training and not backbone.upsampler.anyup.training
    _train_step(model)
    assert all(p.grad is None for p in backbone.upsampler.parameters())
    grads = [p.grad for p in backbone.bottom_up.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def test_attention_kernel_reaches_anyup_and_changes_nothing(make_cfg):
    outputs = []
    for kernel in ('matmul', 'sdpa'):
        torch.manual_seed(0)  # the same random weights for both
        backbone = build_backbone(make_cfg('anyup', 'MODEL.ANYUP.ATTENTION_KERNEL', kernel))
        assert backbone.upsampler.anyup.attention_kernel == kernel
        torch.manual_seed(1)
        with torch.no_grad():
            outputs.append(backbone.eval()(torch.randn(1, 3, TINY, TINY))['feat0_s1'])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('upsampler', ['anyup', 'bilinear'])
def test_image_guides_the_upsampler(make_cfg, upsampler):
    backbone = build_backbone(make_cfg(upsampler)).eval()
    feats = torch.randn(1, 48, 4, 4)
    backbone.bottom_up.forward = lambda x: {'feat0': feats}  # same features, different images
    images = torch.randn(2, 1, 3, TINY, TINY)
    out_a, out_b = (backbone(x)['feat0_s1'] for x in images)
    if upsampler == 'anyup':
        assert not torch.allclose(out_a, out_b)
    else:
        torch.testing.assert_close(out_a, out_b)


def test_model_receives_pixels_in_input_format(make_cfg):
    model = build_model(make_cfg('anyup', 'INPUT.FORMAT', 'BGR')).eval()
    encoder = model.backbone.bottom_up.encoder
    seen = []
    encoder.forward = lambda image: seen.append(image) or [torch.zeros(1, 48, 4, 4)]
    rgb = _rgb_pixels(TINY, TINY)[0]
    with torch.no_grad():
        out = model([{'image': rgb.flip(0)}])  # a BGR image
    assert out[0]['sem_seg'].shape == (151, TINY, TINY)
    torch.testing.assert_close(seen[0], _imagenet(rgb[None]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ('opts', 'error', 'words'),
    [
        (['MODEL.ANYUP.BOTTOM_UP', 'build_nope'], ValueError,
         ['MODEL.ANYUP.BOTTOM_UP', 'build_resnet_backbone', 'build_frozen_timm_backbone']),
        (['MODEL.ANYUP.BOTTOM_UP', 'build_anyup_backbone'], ValueError,
         ['MODEL.ANYUP.BOTTOM_UP', 'build_resnet_backbone']),
        (['MODEL.TIMM.NAME', 'vit_smal_patch14_dinov2'], ValueError,
         ['MODEL.TIMM', 'not a timm model', 'vit_small_patch14_dinov2']),
        (['MODEL.ANYUP.UPSAMPLER', 'nearest'], ValueError,
         ['MODEL.ANYUP.UPSAMPLER', "unknown upsampling method 'nearest'", 'anyup, ',
          'bilinear, ', 'guided_filter', 'jafar']),
        (['MODEL.ANYUP.METHOD_KWARGS', ['window_ratio']], ValueError,
         ['MODEL.ANYUP.METHOD_KWARGS', '[key, value] pairs']),
        (['MODEL.ANYUP.METHOD_KWARGS', [['radius', 2]]], TypeError,
         ['MODEL.ANYUP.METHOD_KWARGS', "method 'anyup' does not take radius", 'window_ratio']),
        (['MODEL.ANYUP.ATTENTION_KERNEL', 'flash'], ValueError,
         ['MODEL.ANYUP.ATTENTION_KERNEL', "'matmul', 'sdpa'", "'flash'"]),
        (['MODEL.ANYUP.STRIDES', [3]], ValueError,
         ['MODEL.ANYUP.STRIDES', 'powers of two', '[1, 2, 4, 8]']),
        (['MODEL.ANYUP.STRIDES', [16]], ValueError,
         ['MODEL.ANYUP.STRIDES', 'coarser', '[1, 2, 4, 8]']),
        (['MODEL.ANYUP.STRIDES', []], ValueError, ['MODEL.ANYUP.STRIDES']),
        (['MODEL.ANYUP.IN_FEATURES', ['res5']], ValueError,
         ['MODEL.ANYUP.IN_FEATURES', "['res5']", "['feat0']"]),
        (['INPUT.FORMAT', 'YUV-BT.601'], ValueError, ['INPUT.FORMAT', "('RGB', 'BGR')"]),
        (['MODEL.ANYUP.CHECKPOINT', '/nonexistent/anyup.pth'], FileNotFoundError,
         ['MODEL.ANYUP.CHECKPOINT', 'anyup_paper']),
        (['MODEL.SEM_SEG_HEAD.IN_FEATURES', ['feat0']], ValueError,
         ['MODEL.SEM_SEG_HEAD.IN_FEATURES', 'feat0_s1']),
    ],
)  # fmt: skip
def test_bad_config_fails_at_build_naming_key_and_allowed_values(make_cfg, opts, error, words):
    with pytest.raises(error) as info:
        build_model(make_cfg('anyup', *opts))
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_resnet_feature_not_produced_names_the_outputs(make_cfg):
    with pytest.raises(ValueError) as info:
        build_model(make_cfg(R50, 'MODEL.RESNETS.OUT_FEATURES', ['res4', 'res5']))
    message = str(info.value)
    assert 'MODEL.ANYUP.IN_FEATURES' in message and "['res4', 'res5']" in message


def test_linear_probe_head_loss_ignores_255():
    shape = {'feat0': ShapeSpec(channels=8, stride=1)}
    head = LinearProbeSemSegHead(shape, num_classes=5, ignore_value=255).train()
    assert [type(m).__name__ for m in head.modules()] == ['LinearProbeSemSegHead', 'Conv2d']
    assert head.predictor.kernel_size == (1, 1) and head.predictor.bias is not None
    feats = torch.randn(2, 8, 6, 6)
    targets = torch.randint(0, 5, (2, 6, 6))
    targets[:, :3] = 255
    _, losses = head({'feat0': feats}, targets)
    logits = head.layers({'feat0': feats})
    valid = targets != 255
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], targets[valid])
    torch.testing.assert_close(losses['loss_sem_seg'], expected)
    changed = feats.clone()
    changed[:, :, :3] = 100.0  # features under ignored pixels do not matter
    torch.testing.assert_close(head({'feat0': changed}, targets)[1]['loss_sem_seg'], expected)
    zero = head({'feat0': feats}, torch.full((2, 6, 6), 255))[1]['loss_sem_seg']
    zero.backward()
    assert zero.item() == 0.0
    head.eval()
    head4 = LinearProbeSemSegHead({'f': ShapeSpec(channels=8, stride=4)}, num_classes=5).eval()
    assert head4({'f': feats})[0].shape == (2, 5, 24, 24)


def test_epoch_cosine_matches_cosine_annealing_stepped_per_epoch():
    epochs, iters_per_epoch, lr = 4, 3, 0.5
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    torch_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    sched = EpochCosineParamScheduler(epochs)
    max_iter = epochs * iters_per_epoch
    for epoch in range(epochs):
        for i in range(iters_per_epoch):
            it = epoch * iters_per_epoch + i
            assert lr * sched(it / max_iter) == pytest.approx(opt.param_groups[0]['lr'])
        opt.step()
        torch_sched.step()


def test_optimiser_trains_only_the_head(make_cfg):
    cfg = make_cfg('anyup')
    model = build_model(cfg)
    optimizer = AnyUpSemSegTrainer.build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    group_params = [p for group in optimizer.param_groups for p in group['params']]
    probe = model.sem_seg_head.predictor
    assert {id(p) for p in group_params} == {id(probe.weight), id(probe.bias)}
    assert all(
        g['weight_decay'] == 1e-5 and g['betas'] == (0.9, 0.999) for g in optimizer.param_groups
    )
    assert all(g['lr'] == 5e-4 for g in optimizer.param_groups)
    fpn_cfg = make_cfg(R50)
    fpn = build_model(fpn_cfg)
    params = {id(p) for g in AnyUpSemSegTrainer.build_optimizer(fpn_cfg, fpn).param_groups
              for p in g['params']}  # fmt: skip
    assert params == {id(p) for p in fpn.sem_seg_head.parameters()}


# --- any registered method by MODEL.ANYUP.UPSAMPLER, with MODEL.ANYUP.METHOD_KWARGS --------------


class _GuidedScale(UpsamplingMethod):
    """Nearest upsampling times a learnable gain, plus ``offset`` x the image's mean."""

    name = 'test_guided_scale'

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__()
        self.offset = offset
        self.gain = torch.nn.Parameter(torch.full((1,), 2.0))

    def forward(self, image, features, output_size):
        out = F.interpolate(features, size=output_size, mode='nearest')
        return self.gain * out + self.offset * image.mean()


@pytest.fixture
def guided_scale(monkeypatch):
    monkeypatch.setitem(METHOD_CLASSES, 'test_guided_scale', _GuidedScale)
    return 'test_guided_scale'


def test_command_line_switches_the_method_and_passes_its_arguments(
    make_cfg, guided_scale, no_network
):
    # The AnyUp config with its AnyUp keys (CHECKPOINT 'anyup_paper', WINDOW_RATIO 0.1),
    # switched by command-line overrides: the other method ignores them, nothing is downloaded.
    cfg = make_cfg('anyup', 'MODEL.ANYUP.CHECKPOINT', 'anyup_paper')
    cfg.merge_from_list(['MODEL.ANYUP.UPSAMPLER', 'Test_Guided_Scale',
                         'MODEL.ANYUP.METHOD_KWARGS', "[['offset', 3.0]]"])  # fmt: skip
    assert cfg.MODEL.ANYUP.CHECKPOINT == 'anyup_paper' and cfg.MODEL.ANYUP.WINDOW_RATIO == 0.1
    model = build_model(cfg).train()
    upsampler = model.backbone.upsampler
    assert upsampler.method == 'test_guided_scale' and upsampler.anyup is None
    assert upsampler.checkpoint is None and upsampler.method_module.offset == 3.0
    assert not upsampler.method_module.training and not upsampler.method_module.gain.requires_grad
    _train_step(model)  # frozen: no gradient reaches the method
    assert upsampler.method_module.gain.grad is None

    backbone = model.backbone.eval()
    rgb = _rgb_pixels(TINY, TINY)
    out = backbone(_network_input(cfg, rgb))['feat0_s1']
    image = _imagenet(rgb)  # the guidance, computed independently
    feats = backbone.bottom_up.encoder(image)[0]
    expected = 2.0 * F.interpolate(feats, size=(TINY, TINY), mode='nearest') + 3.0 * image.mean()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_unfrozen_method_trains(make_cfg, guided_scale):
    model = build_model(make_cfg('anyup', 'MODEL.ANYUP.UPSAMPLER', guided_scale,
                                 'MODEL.ANYUP.FROZEN', False)).train()  # fmt: skip
    method = model.backbone.upsampler.method_module
    assert method.training and method.gain.requires_grad
    _train_step(model)
    assert method.gain.grad is not None


def test_bilinear_takes_its_arguments_from_the_command_line(make_cfg):
    cfg = make_cfg('bilinear', 'MODEL.ANYUP.METHOD_KWARGS', "[['align_corners', True]]")
    backbone = build_backbone(cfg).eval()
    feats = torch.randn(1, 48, 4, 4)
    backbone.bottom_up.forward = lambda x: {'feat0': feats}
    out = backbone(torch.randn(1, 3, TINY, TINY))['feat0_s1']
    expected = F.interpolate(feats, size=(TINY, TINY), mode='bilinear', align_corners=True)
    torch.testing.assert_close(out, expected)


def test_guided_filter_from_the_command_line_on_a_shipped_config(make_cfg, no_network):
    from anyup_plugin.core.methods.classical import GuidedFilterUpsampler

    # MODEL.ANYUP.UPSAMPLER guided_filter MODEL.ANYUP.METHOD_KWARGS "[['radius', 2]]" on the
    # AnyUp config, whose CHECKPOINT 'anyup_paper' is left to AnyUp.
    cfg = make_cfg('anyup', 'MODEL.ANYUP.CHECKPOINT', 'anyup_paper')
    cfg.merge_from_list(['MODEL.ANYUP.UPSAMPLER', 'guided_filter',
                         'MODEL.ANYUP.METHOD_KWARGS', "[['radius', 2]]"])  # fmt: skip
    backbone = build_backbone(cfg).eval()
    assert backbone.upsampler.method == 'guided_filter' and backbone.upsampler.checkpoint is None
    rgb = _rgb_pixels(TINY, TINY + 14)
    out = backbone(_network_input(cfg, rgb))['feat0_s1']
    image = _imagenet(rgb)
    feats = backbone.bottom_up.encoder(image)[0]
    expected = GuidedFilterUpsampler(radius=2)(image, feats, (TINY, TINY + 14))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_keyword_pairs_become_a_dict_and_malformed_ones_name_the_key():
    assert keyword_pairs([['depth', 2], ('img_size', 28)], 'MODEL.TIMM.KWARGS', '[]') == {
        'depth': 2,
        'img_size': 28,
    }
    assert keyword_pairs([], 'MODEL.TIMM.KWARGS', '[]') == {}
    for bad in ([['depth']], ['depth'], [['depth', 2, 3]], 5):
        with pytest.raises(ValueError, match=r'MODEL\.TIMM\.KWARGS must be \[key, value\] pairs'):
            keyword_pairs(bad, 'MODEL.TIMM.KWARGS', '[["depth", 2]]')

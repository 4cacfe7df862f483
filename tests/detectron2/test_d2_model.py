"""Detectron2 adapter: config keys, backbone (shapes, strides, frozen state, guidance), head."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip(
    'detectron2',
    reason='detectron2 is not installed (it is not on PyPI); install it from source with '
    "`pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'`",
)

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model

from anyup_plugin.constants import IMAGENET_MEAN, IMAGENET_STD
from anyup_plugin.core.anyup import AnyUp
from anyup_plugin.detectron2 import (
    AnyUpSemSegTrainer,
    EpochCosineParamScheduler,
    LinearProbeSemSegHead,
    add_anyup_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'detectron2'
TINY = 56  # as in conftest.py


def test_add_anyup_config_defaults_and_yaml_twins():
    cfg = add_anyup_config(get_cfg())
    assert cfg.MODEL.ANYUP.UPSAMPLER == 'anyup' and cfg.MODEL.ANYUP.FROZEN
    assert cfg.MODEL.ANYUP.WINDOW_RATIO == 0.1 and cfg.MODEL.ANYUP.OUTPUT_STRIDE == 1
    assert cfg.MODEL.TIMM.LAYERS == [-1] and cfg.MODEL.TIMM.APPLY_NORM
    assert cfg.MODEL.TIMM.CHECKPOINT == '' and cfg.MODEL.ANYUP.CHECKPOINT == ''
    merged = {}
    for upsampler in ('anyup', 'bilinear'):
        c = add_anyup_config(get_cfg())
        c.merge_from_file(str(CONFIGS / f'ade20k_dinov2_{upsampler}.yaml'))
        assert c.MODEL.ANYUP.UPSAMPLER == upsampler
        assert c.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 151
        assert c.MODEL.SEM_SEG_HEAD.IGNORE_VALUE == 255
        assert c.SOLVER.OPTIMIZER == 'AdamW' and c.SOLVER.BASE_LR == 5e-4
        assert c.SOLVER.WEIGHT_DECAY == 1e-5 and c.SOLVER.IMS_PER_BATCH == 2
        assert c.INPUT.CENTER_CROP_SIZE == 448 and c.INPUT.FORMAT == 'RGB'
        c.MODEL.ANYUP.UPSAMPLER = 'x'
        merged[upsampler] = c.dump()
    assert merged['anyup'] == merged['bilinear']  # the twins differ in the upsampler only


def test_backbone_shapes_strides_and_frozen_state(make_cfg):
    cfg = make_cfg('anyup')
    backbone = build_backbone(cfg)
    channels = backbone.encoder.out_channels[0]
    assert backbone.output_shape() == {'feat0': ShapeSpec(channels=channels, stride=1)}
    assert backbone.size_divisibility == 0
    backbone.train()
    assert not backbone.encoder.training and not backbone.upsampler.training
    assert not any(p.requires_grad for p in backbone.parameters())
    for size in ((TINY, TINY), (50, 62)):
        out = backbone(torch.randn(2, 3, *size))
        assert list(out) == ['feat0']
        assert out['feat0'].shape == (2, channels, *size)
        assert not out['feat0'].requires_grad

    cfg = make_cfg('anyup', 'MODEL.ANYUP.OUTPUT_STRIDE', 4, 'MODEL.TIMM.LAYERS', [-2, -1])
    backbone = build_backbone(cfg)
    assert {k: v.stride for k, v in backbone.output_shape().items()} == {'feat0': 4, 'feat1': 4}
    out = backbone(torch.randn(1, 3, 50, 62))
    assert out['feat1'].shape[-2:] == (math.ceil(50 / 4), math.ceil(62 / 4))


def test_trainable_anyup_gets_gradients_encoder_stays_frozen(make_cfg):
    backbone = build_backbone(make_cfg('anyup', 'MODEL.ANYUP.FROZEN', False)).train()
    assert backbone.upsampler.training and not backbone.encoder.training
    assert not any(p.requires_grad for p in backbone.encoder.parameters())
    trainable = [p for p in backbone.upsampler.parameters() if p.requires_grad]
    assert trainable
    backbone(torch.randn(1, 3, TINY, TINY))['feat0'].square().mean().backward()
    assert all(p.grad is not None for p in trainable)


@pytest.mark.parametrize('upsampler', ['anyup', 'bilinear'])
def test_image_guides_the_upsampler(make_cfg, upsampler):
    backbone = build_backbone(make_cfg(upsampler)).eval()
    feats = torch.randn(1, backbone.encoder.out_channels[0], 4, 4)
    backbone.encoder.forward = lambda image: [feats]  # same features, different images
    images = torch.randn(2, 1, 3, TINY, TINY)
    out_a, out_b = (backbone(x)['feat0'] for x in images)
    if upsampler == 'anyup':
        assert isinstance(backbone.upsampler, AnyUp)
        assert not torch.allclose(out_a, out_b)
    else:
        assert backbone.upsampler is None
        torch.testing.assert_close(out_a, out_b)
        torch.testing.assert_close(
            out_a, F.interpolate(feats, size=(TINY, TINY), mode='bilinear', align_corners=False)
        )


def test_input_format_must_be_a_colour_order(make_cfg):
    with pytest.raises(ValueError, match='INPUT.FORMAT'):
        build_backbone(make_cfg('anyup', 'INPUT.FORMAT', 'YUV-BT.601'))


def test_model_receives_pixels_in_input_format(make_cfg):
    model = build_model(make_cfg('anyup', 'INPUT.FORMAT', 'BGR')).eval()
    seen = []
    model.backbone.encoder.forward = lambda image: (
        seen.append(image) or [torch.zeros(1, model.backbone.encoder.out_channels[0], 4, 4)]
    )
    rgb = torch.randint(0, 256, (3, TINY, TINY)).float()
    with torch.no_grad():
        out = model([{'image': rgb.flip(0)}])  # a BGR image
    assert out[0]['sem_seg'].shape == (151, TINY, TINY)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(seen[0][0], (rgb / 255 - mean) / std, rtol=1e-4, atol=1e-4)


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


def test_optimiser_trains_only_the_probe(make_cfg):
    model = build_model(make_cfg('anyup'))
    optimizer = AnyUpSemSegTrainer.build_optimizer(make_cfg('anyup'), model)
    assert isinstance(optimizer, torch.optim.AdamW)
    group_params = [p for group in optimizer.param_groups for p in group['params']]
    probe = model.sem_seg_head.predictor
    assert {id(p) for p in group_params} == {id(probe.weight), id(probe.bias)}
    assert all(
        g['weight_decay'] == 1e-5 and g['betas'] == (0.9, 0.999) for g in optimizer.param_groups
    )
    assert all(g['lr'] == 5e-4 for g in optimizer.param_groups)

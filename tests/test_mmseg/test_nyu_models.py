"""NYU probe heads, estimators and MMEngine metrics on hand-computed cases."""

from __future__ import annotations

import logging
import math

import pytest
import torch

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from anyup_plugin.mmseg.evaluation import NYUDepthMetric, NYUNormalMetric

init_default_scope('mmseg')


def _sample(depth: torch.Tensor, normals: torch.Tensor | None = None) -> SegDataSample:
    s = SegDataSample(metainfo=dict(img_shape=depth.shape[-2:], ori_shape=depth.shape[-2:]))
    s.gt_depth_map = PixelData(data=depth[None])
    if normals is not None:
        s.gt_normal_map = PixelData(data=normals)
    return s


def test_depth_head_is_the_expectation_over_bins():
    head = MODELS.build(dict(type='DepthProbeHead', in_channels=3, num_bins=5, min_depth=1.0,
                             max_depth=5.0))  # fmt: skip
    assert (head.num_classes, head.out_channels) == (1, 1)
    with torch.no_grad():
        head.conv_seg.weight.zero_()
        head.conv_seg.bias.zero_()
    feats = [torch.randn(2, 3, 4, 4)]
    # All scores 0: relu + 0.1 is uniform, the depth the mean bin centre, 3 m.
    assert torch.allclose(head(feats), torch.full((2, 1, 4, 4), 3.0))
    with torch.no_grad():
        head.conv_seg.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 9.9]))
    # Scores 0.1 x 4 and 10 at 5 m: (0.1 (1 + 2 + 3 + 4) + 10 * 5) / 10.4
    expected = (0.1 * 10 + 50.0) / 10.4
    assert torch.allclose(head(feats), torch.full((2, 1, 4, 4), expected))
    # The loss is Probe3D's against gt_depth_map; 0 where the prediction is exact.
    target = torch.full((4, 4), expected)
    losses = head.loss_by_feat(head(feats), [_sample(target), _sample(target)])
    assert set(losses) == {'loss_depth'} and losses['loss_depth'].item() < 1e-4


def test_normal_head_resizes_raw_outputs_then_activates():
    head = MODELS.build(dict(type='NormalProbeHead', in_channels=3))
    raw = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    out = head.predict_by_feat(raw, [dict(img_shape=(6, 6))])
    assert out.shape == (1, 4, 6, 6)
    assert torch.allclose(out[:, :3].norm(dim=1), torch.ones(1, 6, 6), atol=1e-5)
    assert (out[:, 3] > 0.01).all()  # kappa = elu + 1.01
    target = torch.zeros(3, 6, 6)
    target[2] = 1.0
    depth = torch.ones(6, 6)
    depth[:, :3] = 0.0  # invalid half: not in the loss
    loss = head.loss_by_feat(raw, [_sample(depth, target)])['loss_normal']
    assert math.isfinite(loss.item())
    # Garbage normals where the depth is invalid change nothing; where it is valid they do.
    garbage = target.clone()
    garbage[:, :, :3] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    same = head.loss_by_feat(raw, [_sample(depth, garbage)])['loss_normal']
    torch.testing.assert_close(same, loss)
    garbage[:, :, 3:] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    changed = head.loss_by_feat(raw, [_sample(depth, garbage)])['loss_normal']
    assert not torch.allclose(changed, loss)


def test_dpt_head_maps_four_levels_to_the_input_size():
    cfg = dict(type='DepthProbeHead', in_channels=[4] * 4, in_index=[0, 1, 2, 3], probe='dpt')
    head = MODELS.build(dict(cfg, dpt_cfg=dict(channels=8, upsample=(1, 4, 1))))
    feats = [torch.randn(2, 4, 5, 5) for _ in range(4)]
    depth = head(feats)
    assert depth.shape == (2, 1, 20, 20) and (depth >= 1e-3).all() and (depth <= 10).all()
    with pytest.raises(ValueError, match='4 maps of one size'):
        head.dpt(feats[:3])
    with pytest.raises(ValueError, match="probe must be 'linear' or 'dpt'"):
        MODELS.build(dict(type='DepthProbeHead', in_channels=4, probe='mlp'))


def _estimator(kind: str, neck: dict) -> torch.nn.Module:
    head = (dict(type='DepthProbeHead', in_channels=32) if kind == 'depth'
            else dict(type='NormalProbeHead', in_channels=32))  # fmt: skip
    cfg = dict(
        type='AnyUpDepthEstimator' if kind == 'depth' else 'AnyUpNormalEstimator',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, size_divisor=1),
        backbone=dict(type='FrozenTimmMMSegBackbone', model_name='vit_small_patch14_dinov2',
                      pretrained=False, depth=1, embed_dim=32, num_heads=2, img_size=28),
        neck=neck,
        decode_head=head,
        test_cfg=dict(mode='whole'),
    )  # fmt: skip
    return MODELS.build(ConfigDict(cfg)).eval()  # ConfigDict: MMSeg reads test_cfg.mode


@pytest.mark.parametrize('kind', ['depth', 'normals'])
def test_estimators_pass_the_image_to_the_neck_and_predict_at_ori_shape(kind):
    seen = {}
    model = _estimator(kind, dict(type='BilinearNeck'))
    model.neck.register_forward_hook(lambda m, args, out: seen.update(n=len(args)))
    inputs = torch.randint(0, 255, (2, 3, 28, 28)).float()
    samples = [SegDataSample(metainfo=dict(img_shape=(28, 28), ori_shape=(14, 14),
                                           pad_shape=(28, 28))) for _ in range(2)]  # fmt: skip
    with torch.no_grad():
        out = model.predict(inputs, samples)
    assert seen['n'] == 2  # features and image
    key = 'pred_depth_map' if kind == 'depth' else 'pred_normal_map'
    assert out[0].get(key).data.shape == ((1, 14, 14) if kind == 'depth' else (4, 14, 14))


def test_anyup_estimator_trains_only_the_head():
    model = _estimator('depth', dict(type='AnyUpNeck', checkpoint=None)).train()
    inputs = torch.randint(0, 255, (2, 3, 28, 28)).float()
    samples = [_sample(torch.rand(28, 28) * 5 + 0.5) for _ in range(2)]
    losses = model.loss(inputs, samples)
    losses['decode.loss_depth'].backward()
    assert model.decode_head.conv_seg.weight.grad is not None
    assert all(p.grad is None for p in model.neck.parameters())
    assert all(p.grad is None for p in model.backbone.parameters())


def _depth_result(pred, gt, path='a.png'):
    return dict(img_path=path, pred_depth_map=dict(data=pred[None]),
                gt_depth_map=dict(data=gt[None]))  # fmt: skip


def test_depth_metric_averages_per_image_and_leaves_out_empty_images(caplog):
    gt = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    metric = NYUDepthMetric()
    metric.process({}, [_depth_result(gt.clone(), gt), _depth_result(1.5 * gt, gt)])
    metric.process({}, [_depth_result(gt, torch.zeros(2, 2), 'empty.png')])
    with caplog.at_level(logging.WARNING):
        out = metric.compute_metrics(metric.results)
    assert out['rmse'] == pytest.approx(0.25 * math.sqrt(7.5))  # mean of 0 and 0.5 sqrt(7.5)
    assert out['delta1'] == pytest.approx(0.5) and out['rel_rmse'] == pytest.approx(0, abs=1e-6)
    assert {'rmse', 'delta1', 'delta2', 'delta3', 'rel_delta1'} <= set(out)


def test_depth_metric_errors_name_the_file():
    gt = torch.tensor([[1.0, math.nan]])
    with pytest.raises(ValueError, match='broken.png: target depth holds NaN'):
        NYUDepthMetric().process({}, [_depth_result(torch.ones(1, 2), gt, 'broken.png')])


def test_normal_metric_scores_where_depth_is_valid():
    gt = torch.zeros(3, 2, 2)
    gt[2] = 1.0
    pred = torch.zeros(4, 2, 2)
    pred[1] = 1.0  # 90 degrees off everywhere...
    pred[:, 0, 0] = torch.tensor([0.0, 0.0, 1.0, 5.0])  # ...except one exact pixel
    depth = torch.tensor([[1.0, 0.0], [1.0, 11.0]])  # two valid pixels
    metric = NYUNormalMetric()
    result = dict(img_path='a.png', pred_normal_map=dict(data=pred), gt_normal_map=dict(data=gt))
    metric.process({}, [dict(result, gt_depth_map=dict(data=depth[None]))])
    out = metric.compute_metrics(metric.results)
    assert out['rmse'] == pytest.approx(math.sqrt(90.0**2 / 2))
    assert out['within_30'] == pytest.approx(0.5) and out['within_11_25'] == pytest.approx(0.5)

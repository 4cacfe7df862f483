"""AnyUpEncoderDecoder passes the image to the neck and shares the preprocessor's statistics."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import anyup_plugin.mmseg  # noqa: F401  (registers the modules)
from anyup_plugin.constants import IMAGENET_MEAN_255, IMAGENET_STD_255

init_default_scope('mmseg')


def _model_cfg(segmentor='AnyUpEncoderDecoder', neck=None, mean=None, std=None):
    return ConfigDict(
        type=segmentor,
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=mean or [123.675, 116.28, 103.53],
            std=std or [58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            seg_pad_val=255,
        ),
        backbone=dict(
            type='FrozenTimmMMSegBackbone', model_name='vit_small_patch14_dinov2', depth=2
        ),
        neck=neck if neck is not None else dict(type='AnyUpNeck'),
        decode_head=dict(type='LinearProbeHead', in_channels=384, num_classes=5),
        test_cfg=dict(mode='whole'),
    )


def _batch(n=2, size=28):
    torch.manual_seed(0)
    inputs = torch.randn(n, 3, size, size)
    samples = []
    for _ in range(n):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, size, size)))
        sample.set_metainfo(
            dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size))
        )
        samples.append(sample)
    return inputs, samples


def test_loss_and_predict_with_full_resolution_features():
    model = MODELS.build(_model_cfg())
    inputs, samples = _batch()
    feats = model.extract_feat(inputs)
    assert tuple(feats[0].shape) == (2, 384, 28, 28)
    losses = model.loss(inputs, samples)
    assert torch.isfinite(losses['decode.loss_ce'])
    losses['decode.loss_ce'].backward()
    assert model.decode_head.conv_seg.weight.grad is not None
    model.eval()
    preds = model.predict(inputs, samples)
    assert tuple(preds[0].pred_sem_seg.data.shape) == (1, 28, 28)


def _record_inputs(model):
    """Records the image the backbone and the neck receive (hooks return None: no change)."""
    seen = {}

    def record(name, position):
        def hook(module, args):
            seen[name] = args[position]

        return hook

    model.backbone.register_forward_pre_hook(record('backbone', 0))
    model.neck.register_forward_pre_hook(record('neck', 1))
    return seen


def test_input_is_converted_to_imagenet_once_from_the_preprocessor_statistics():
    mean, std = [100.0, 110.0, 120.0], [50.0, 60.0, 70.0]
    model = MODELS.build(_model_cfg(mean=mean, std=std))
    assert model.input_norm.source_mean == pytest.approx(tuple(mean))
    assert model.input_norm.source_std == pytest.approx(tuple(std))
    # the segmentor converts; backbone and neck take the converted image as it is
    assert model.backbone.input_norm.identity and model.neck.input_norm.identity
    seen = _record_inputs(model)
    inputs, _ = _batch(n=1)
    model.extract_feat(inputs)
    assert seen['backbone'] is seen['neck']
    pixels = inputs * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    imagenet = (pixels - torch.tensor(IMAGENET_MEAN_255).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD_255
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(seen['neck'], imagenet, rtol=1e-5, atol=1e-5)


def test_module_statistics_from_its_config_win():
    mean, std = [100.0, 110.0, 120.0], [50.0, 60.0, 70.0]
    neck = dict(type='AnyUpNeck', input_mean=mean, input_std=std)
    model = MODELS.build(_model_cfg(neck=neck, mean=mean, std=std))
    assert not model.neck.input_norm.identity and model.backbone.input_norm.identity
    seen = _record_inputs(model)
    inputs, _ = _batch(n=1)
    model.extract_feat(inputs)
    assert seen['neck'] is inputs  # the neck converts from its own statistics


def test_preprocessor_without_normalisation_means_raw_pixels():
    cfg = _model_cfg()
    cfg.data_preprocessor = dict(type='SegDataPreProcessor', bgr_to_rgb=True)
    model = MODELS.build(cfg)
    assert model.input_norm.source_mean == (0.0, 0.0, 0.0)
    assert model.input_norm.source_std == (1.0, 1.0, 1.0)


def test_stock_encoder_decoder_fails_naming_the_replacement():
    model = MODELS.build(_model_cfg(segmentor='EncoderDecoder'))
    inputs, samples = _batch()
    with pytest.raises(RuntimeError, match="type='AnyUpEncoderDecoder'"):
        model.loss(inputs, samples)


@pytest.mark.parametrize('method', ['bicubic', 'bilinear'])
def test_stock_encoder_decoder_runs_methods_that_do_not_use_the_image(method):
    import torch.nn.functional as F

    neck = dict(type='UpsamplerNeck', method=method, scale_factor=14)
    model = MODELS.build(_model_cfg(segmentor='EncoderDecoder', neck=neck))
    inputs, samples = _batch()
    feats = model.extract_feat(inputs)
    levels = model.backbone(inputs)
    torch.testing.assert_close(feats[0], F.interpolate(levels[0], size=(28, 28), mode=method))
    assert all(torch.isfinite(v).all() for v in model.loss(inputs, samples).values())
    # an image-guided method says which segmentor gives it the image
    neck = dict(type='UpsamplerNeck', method='guided_filter', scale_factor=14)
    model = MODELS.build(_model_cfg(segmentor='EncoderDecoder', neck=neck))
    with pytest.raises(RuntimeError, match="type='AnyUpEncoderDecoder'"):
        model.extract_feat(inputs)


def test_other_necks_are_called_without_image():
    neck = dict(type='MultiLevelNeck', in_channels=[384], out_channels=384, scales=[2])
    model = MODELS.build(_model_cfg(neck=neck))
    inputs, _ = _batch()
    assert tuple(model.extract_feat(inputs)[0].shape) == (2, 384, 4, 4)


def test_slide_inference_guides_each_window():
    cfg = _model_cfg()
    cfg.test_cfg = ConfigDict(mode='slide', crop_size=(28, 28), stride=(14, 14))
    model = MODELS.build(cfg).eval()
    inputs, samples = _batch(n=1, size=42)
    preds = model.predict(inputs, samples)
    assert tuple(preds[0].seg_logits.data.shape) == (5, 42, 42)


def test_a_list_of_necks_runs_in_order_with_the_image_for_image_guided_ones():
    # as written in a config: AnyUp before a neck the config already has
    necks = [
        dict(type='AnyUpNeck', output_stride=7),
        dict(type='MultiLevelNeck', in_channels=[384], out_channels=384, scales=[2]),
    ]
    model = MODELS.build(_model_cfg(neck=necks))
    anyup = model.neck[0]
    assert anyup.input_norm.identity  # the segmentor converts to ImageNet once, for it too
    seen = {}

    def record(module, args, out):  # returns None: changes nothing
        seen.update(image=args[1], out=out)

    anyup.register_forward_hook(record)
    inputs, samples = _batch()
    feats = model.extract_feat(inputs)
    assert tuple(seen['image'].shape) == (2, 3, 28, 28)
    assert tuple(seen['out'][0].shape) == (2, 384, 4, 4)  # 28 / 7: AnyUp's output
    assert tuple(feats[0].shape) == (2, 384, 8, 8)  # then MultiLevelNeck's 2x
    assert torch.isfinite(model.loss(inputs, samples)['decode.loss_ce'])

    stock = MODELS.build(_model_cfg(segmentor='EncoderDecoder', neck=necks))
    with pytest.raises(RuntimeError, match="type='AnyUpEncoderDecoder'"):
        stock.extract_feat(inputs)

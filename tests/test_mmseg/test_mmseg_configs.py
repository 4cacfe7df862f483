"""Every config in configs/mmseg trains a few iterations and validates on tiny generated data."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs' / 'mmseg'
# The NYUv2 depth and normal configs are tested in test_nyu_configs.py (they report RMSE and
# angles, not mIoU).
CONFIGS = [
    p for p in sorted(CONFIG_DIR.glob('*.py')) if not p.stem.startswith(('nyu_', 'demo_nyu_'))
]
PAPER_CONFIGS = ['ade20k_dinov2', 'coco_stuff27_dinov2', 'voc2012_dinov2']


def _data_fixture(stem: str) -> str:
    if stem.startswith(('ade20k', 'demo_ade20k')):
        return 'ade_root'
    if stem.startswith(('coco_stuff27', 'demo_coco_stuff27')):
        return 'coco_root'
    if stem.startswith(('voc2012', 'demo_voc2012')):
        return 'voc_root'
    raise AssertionError(
        f'no test dataset for config {stem}: add one to tests/test_mmseg/conftest.py'
    )


class _Watch(Hook):
    """Records validation metrics and the modes/gradients seen during training iterations."""

    def __init__(self) -> None:
        self.metrics: list[dict] = []
        self.train_states: list[dict] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        model = runner.model
        encoder = model.backbone.encoder
        self.train_states.append(
            dict(
                model_training=model.training,
                encoder_training=encoder.model.training,
                frozen_grads=[
                    p.grad is not None for p in encoder.parameters() if not p.requires_grad
                ],
                head_grad=model.decode_head.conv_seg.weight.grad is not None,
                loss=float(outputs['loss']),
            )
        )

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.metrics.append(dict(metrics or {}))


def test_every_config_has_a_test_dataset_and_a_docstring():
    assert len(CONFIGS) >= 9
    for path in CONFIGS:
        _data_fixture(path.stem)
        doc = ast.get_docstring(ast.parse(path.read_text())) or ''
        assert 'Protocol' in doc or 'Not a paper protocol' in doc, path.name
        assert 'Paper number' in doc or 'no paper number' in doc, path.name


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: p.stem)
def test_config_trains_and_validates(config, request, tmp_path, shrink_config):
    cfg = Config.fromfile(str(config))
    shrink_config(cfg, request.getfixturevalue(_data_fixture(config.stem)), tmp_path)
    runner = Runner.from_cfg(cfg)
    watch = _Watch()
    runner.register_hook(watch)
    runner.train()

    assert len(watch.train_states) == 2  # 4 training images, batch 2, one epoch
    for state in watch.train_states:
        assert state['model_training'] and not state['encoder_training']
        assert not any(state['frozen_grads'])
        assert math.isfinite(state['loss'])
    assert len(watch.metrics) == 1
    metrics = watch.metrics[0]
    assert {'mIoU', 'aAcc'} <= set(metrics)
    assert math.isfinite(metrics['mIoU']) and 0 <= metrics['aAcc'] <= 100
    assert list(tmp_path.glob('epoch_1.pth'))


@pytest.mark.parametrize('stem', PAPER_CONFIGS)
def test_bilinear_twin_differs_only_in_the_neck(stem):
    anyup = Config.fromfile(str(CONFIG_DIR / f'{stem}.py')).to_dict()
    bilinear = Config.fromfile(str(CONFIG_DIR / f'{stem}_bilinear.py')).to_dict()
    assert anyup['model'].pop('neck')['type'] == 'AnyUpNeck'
    assert bilinear['model'].pop('neck') == dict(type='BilinearNeck')
    assert anyup == bilinear


@pytest.mark.parametrize('stem', PAPER_CONFIGS)
def test_paper_configs_pin_the_protocol(stem):
    cfg = Config.fromfile(str(CONFIG_DIR / f'{stem}.py'))
    assert cfg.custom_imports.imports == ['anyup_plugin.mmseg'] and cfg.default_scope == 'mmseg'
    backbone, neck, head = cfg.model.backbone, cfg.model.neck, cfg.model.decode_head
    assert cfg.model.type == 'AnyUpEncoderDecoder'
    assert backbone.model_name == 'vit_small_patch14_dinov2.lvd142m'
    assert (
        backbone.layers == -1 and backbone.apply_norm and backbone.get('trainable_blocks', 0) == 0
    )
    assert neck.frozen and neck.output_stride == 1 and neck.window_ratio == 0.1
    assert head.type == 'LinearProbeHead' and head.ignore_index == 255
    assert head.num_classes == {'ade20k_dinov2': 151, 'coco_stuff27_dinov2': 27,
                                'voc2012_dinov2': 21}[stem]  # fmt: skip
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 5e-4, 1e-5)
    assert tuple(optimizer.betas) == (0.9, 0.999)
    (scheduler,) = cfg.param_scheduler
    assert scheduler.type == 'CosineAnnealingLR' and scheduler.by_epoch
    assert scheduler.T_max == cfg.train_cfg.max_epochs == 20 and cfg.train_cfg.val_interval == 1
    assert cfg.train_dataloader.batch_size == 2 and cfg.val_dataloader.batch_size == 1
    train_steps = [s['type'] for s in cfg.train_dataloader.dataset.pipeline]
    assert train_steps == ['LoadImageFromFile', 'LoadAnnotations', 'ResizeShortSide',
                           'SegCenterCrop', 'RandomFlip', 'PackSegInputs']  # fmt: skip
    for step in cfg.train_dataloader.dataset.pipeline + cfg.val_dataloader.dataset.pipeline:
        if step['type'] in ('ResizeShortSide', 'SegCenterCrop'):
            assert step['size'] == 448
    assert cfg.test_dataloader == cfg.val_dataloader
    assert cfg.val_evaluator.type == 'IoUMetric'


# --- every config runs any upsampling method by one override -------------------------------------

#: Segmentation, depth and normal configs: each has an upsampling neck.
NECK_CONFIGS = sorted(CONFIG_DIR.glob('*.py'))


def _with_method(config: Path, method: str) -> Config:
    """The config as ``--cfg-options model.neck.method=<method>`` makes it, CPU-sized.

    Only the backbone shrinks (random weights, 2 blocks; 4 for the DPT probes); the neck keeps
    what the config sets, AnyUp's checkpoint name and ``window_ratio`` included.
    """
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict({'model.neck.method': method})
    backbone = cfg.model.backbone
    backbone.checkpoint, backbone.pretrained, backbone.depth = None, False, 2
    if cfg.model.decode_head.get('probe') == 'dpt':
        backbone.depth, backbone.layers = 4, [0, 1, 2, 3]
        cfg.model.decode_head.dpt_cfg.channels = 16
    return cfg


@pytest.mark.parametrize('config', NECK_CONFIGS, ids=lambda p: p.stem)
def test_every_config_runs_another_method_by_one_override(config):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from anyup_plugin.core.methods.classical import GuidedFilterUpsampler

    init_default_scope('mmseg')
    cfg = _with_method(config, 'guided_filter')
    neck_cfg = cfg.model.neck
    assert neck_cfg.type in ('AnyUpNeck', 'BilinearNeck') and neck_cfg.method == 'guided_filter'
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    upsampler = model.neck.upsampler
    assert upsampler.method == 'guided_filter' and upsampler.anyup is None
    assert upsampler.checkpoint is None  # 'anyup_paper' is AnyUp's: left alone, no download

    # The configs normalise with ImageNet's statistics: this input is the guidance itself.
    height, width = 28, 42  # 2x3 patches: small, as the guided filter works per channel
    image = torch.randn(1, 3, height, width)
    with torch.no_grad():
        levels = model.backbone(image)
        out = model.extract_feat(image)
        logits = model.decode_head(out)
    strides = model.neck.output_stride * (len(levels) // len(model.neck.output_stride))
    reference = GuidedFilterUpsampler()
    for level, got, stride in zip(levels, out, strides):
        level_map = level[0] if isinstance(level, (list, tuple)) else level
        got_map = got[0] if isinstance(got, (list, tuple)) else got
        size = (math.ceil(height / stride), math.ceil(width / stride))
        torch.testing.assert_close(got_map, reference(image, level_map, size))
    assert torch.isfinite(logits).all()

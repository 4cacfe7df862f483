"""The config each method runs with: demo sizes, neck, weights, overrides, resuming."""

from __future__ import annotations

import pytest

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

from mmengine.config import Config

from anyup_plugin.comparison import DemoSettings, build_method_config
from anyup_plugin.comparison.benchmarks import default_config_dir
from anyup_plugin.comparison.run import backbone_geometry, comparison_notes, set_epochs

TINY = DemoSettings(num_train=2, num_val=2, image_size=56, epochs=3, backbone_depth=2)


def _steps(cfg, loader: str) -> dict[str, dict]:
    return {step['type']: step for step in cfg[loader].dataset.pipeline}


def test_demo_config_for_a_per_backbone_method(tmp_path):
    cfg = build_method_config('ade20k', 'JAFAR', tmp_path / 'jafar', demo=TINY, data_root='gen')
    neck = cfg.model.neck
    assert neck.type == 'AnyUpNeck' and neck.method == 'jafar' and neck.checkpoint is None
    # What the demo's 2-block ViT-S/14 gives, so the method is built for these features.
    assert (neck.feature_channels, neck.patch_size) == (384, 14)
    assert 'window_ratio' not in neck
    assert cfg.model.backbone.depth == 2 and cfg.model.backbone.checkpoint is None
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == 'gen' and cfg[loader].num_workers == 0
        steps = _steps(cfg, loader)
        assert steps['ResizeShortSide']['size'] == steps['SegCenterCrop']['size'] == 56
    assert cfg.train_cfg.max_epochs == 3 and cfg.param_scheduler[0].T_max == 3
    assert cfg.train_cfg.val_begin == 4  # no validation in training: the test pass scores it
    assert cfg.work_dir == str(tmp_path / 'jafar')
    assert 'WeightsOnlyCheckpointHook' in [h['type'] for h in cfg.custom_hooks]
    assert not cfg.resume and cfg.load_from is None  # nothing to resume from yet


def test_demo_nyu_crops_the_frame_then_resizes_to_the_input_side(tmp_path):
    cfg = build_method_config('nyu_depth', 'bilinear', tmp_path, demo=TINY, data_root='gen')
    assert cfg.model.neck == dict(type='BilinearNeck', output_stride=1)
    steps = _steps(cfg, 'test_dataloader')
    assert steps['SegCenterCrop']['size'] == 112 and steps['NYUResize']['size'] == 56


def test_protocol_config_keeps_the_paper_weights_and_applies_overrides_last(tmp_path):
    cfg = build_method_config(
        'voc2012', 'anyup', tmp_path, data_root='/data/VOC2012',
        cfg_options={'model.neck.window_ratio': 0.2, 'train_dataloader.batch_size': 4},
    )  # fmt: skip
    paper = Config.fromfile(str(default_config_dir() / 'voc2012_dinov2.py'))
    assert cfg.model.neck.checkpoint == 'anyup_paper' and cfg.model.neck.window_ratio == 0.2
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.val_dataloader.dataset.data_root == '/data/VOC2012'
    assert cfg.train_cfg.max_epochs == paper.train_cfg.max_epochs == 20
    assert cfg.model.backbone.checkpoint == paper.model.backbone.checkpoint
    with_ckpt = build_method_config('voc2012', 'naf', tmp_path, checkpoint='naf.pth')
    assert with_ckpt.model.neck.method == 'naf' and with_ckpt.model.neck.checkpoint == 'naf.pth'


def test_set_epochs_stretches_the_nyu_schedule_and_drops_a_sub_epoch_warm_up():
    cfg = Config.fromfile(str(default_config_dir() / 'nyu_depth_dinov2.py'))
    set_epochs(cfg, 4)
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end) == ('LinearLR', 1)
    assert (cosine.begin, cosine.end, cfg.train_cfg.max_epochs) == (1, 4, 4)
    cfg = Config.fromfile(str(default_config_dir() / 'nyu_depth_dinov2.py'))
    set_epochs(cfg, 1)
    (cosine,) = cfg.param_scheduler
    assert (cosine.type, cosine.begin, cosine.end) == ('CosineAnnealingLR', 0, 1)


def test_backbone_geometry_reads_channels_and_patch_size():
    vits14 = dict(type='FrozenTimmMMSegBackbone', model_name='vit_small_patch14_dinov2.lvd142m',
                  layers=-1, apply_norm=True, checkpoint=None, depth=2)  # fmt: skip
    assert backbone_geometry(vits14) == (384, 14)
    assert backbone_geometry(dict(vits14, model_name='vit_tiny_patch16_224')) == (192, 16)


def test_notes_say_where_each_row_ran_when_machines_differ():
    cpu = {'device': 'cpu (2 threads)', 'memory_kind': 'CPU peak'}
    gpu = {'device': 'cuda (H200)', 'memory_kind': 'CUDA peak'}
    same = comparison_notes([{'method': 'anyup', **cpu}, {'method': 'bilinear', **cpu}], None)
    assert same[0] == 'device: cpu (2 threads); memory: CPU peak' and len(same) == 2
    mixed = comparison_notes([{'method': 'anyup', **gpu}, {'method': 'naf', **cpu}], TINY)
    assert mixed[:2] == [
        'anyup ran on cuda (H200); memory: CUDA peak',
        'naf ran on cpu (2 threads); memory: CPU peak',
    ]
    assert mixed[-1].startswith('DEMO: generated data (2 train / 2 test images, 56 px, 3 epochs)')

"""Every NYU config trains a few iterations and validates on generated scenes; protocol pins;
tools/train.py and MMSegmentation's own tools/train.py run a depth config unchanged."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from anyup_plugin.testing.nyu_scenes import write_nyu_scenes_dataset

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / 'configs' / 'mmseg'
CONFIGS = sorted(CONFIG_DIR.glob('nyu_*.py'))
LINEAR = ['nyu_depth_dinov2', 'nyu_normals_dinov2']
DEPTH_KEYS = {'rmse', 'delta1', 'delta2', 'delta3', 'rel_rmse', 'rel_delta1', 'rel_delta2',
              'rel_delta3'}  # fmt: skip
NORMAL_KEYS = {'rmse', 'within_11_25', 'within_22_5', 'within_30'}


@pytest.fixture(scope='module')
def nyu_root(tmp_path_factory) -> Path:
    """Generated scenes in the converter's layout: 4 train / 2 test frames of 60x80."""
    root = tmp_path_factory.mktemp('nyu')
    return write_nyu_scenes_dataset(root, num_train=4, num_test=2, height=60, width=80, seed=3)


def shrink(cfg: Config, data_root: Path, work_dir: Path) -> Config:
    """CPU-sized: random 2-block backbone (4 for DPT), 56 px, one epoch, no workers.

    Model types, pipeline steps, losses, schedulers and evaluators stay as the config has them.
    """
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'test_{uuid.uuid4().hex[:8]}'
    backbone = cfg.model.backbone
    backbone.checkpoint, backbone.pretrained = None, False
    if cfg.model.decode_head.probe == 'dpt':
        backbone.depth, backbone.layers = 4, [0, 1, 2, 3]
        cfg.model.decode_head.dpt_cfg.channels = 16
    else:
        backbone.depth = 2
    if 'checkpoint' in cfg.model.neck:
        cfg.model.neck.checkpoint = None
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[name]
        loader.num_workers, loader.persistent_workers, loader.batch_size = 0, False, 2
        loader.dataset.data_root = str(data_root)
        for step in loader.dataset.pipeline:
            if step['type'] == 'SegCenterCrop':
                step['size'] = 60
            if step['type'] in ('NYUResize', 'NYURandomResizedCrop'):
                step['size'] = 56
    cfg.train_dataloader.dataset.ann_file = 'splits/train.txt'
    cfg.train_cfg.max_epochs = 1
    warmup, cosine = cfg.param_scheduler
    warmup.end = cosine.begin = 0.5
    cosine.end = 1
    cfg.default_hooks.logger.interval = 1
    return cfg


class _Watch(Hook):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.frozen_grads: list[bool] = []
        self.metrics: list[dict] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.losses.append(float(outputs['loss']))
        model = runner.model
        frozen = [p for p in model.backbone.parameters()] + [p for p in model.neck.parameters()]
        self.frozen_grads.append(any(p.grad is not None for p in frozen))

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.metrics.append(dict(metrics or {}))


def test_there_are_the_eight_nyu_configs_with_docstrings():
    import ast

    assert [p.stem for p in CONFIGS] == sorted(
        f'nyu_{task}_dinov2{probe}{twin}' for task in ('depth', 'normals')
        for probe in ('', '_dpt') for twin in ('', '_bilinear')
    )  # fmt: skip
    for path in CONFIGS:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ''
        assert 'Protocol' in doc and ('Paper number' in doc or 'No paper number' in doc), path


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: p.stem)
def test_config_trains_and_validates(config, nyu_root, tmp_path):
    cfg = shrink(Config.fromfile(str(config)), nyu_root, tmp_path)
    runner = Runner.from_cfg(cfg)
    watch = _Watch()
    runner.register_hook(watch)
    runner.train()
    assert len(watch.losses) == 2 and all(math.isfinite(v) for v in watch.losses)
    assert not any(watch.frozen_grads)
    (metrics,) = watch.metrics
    keys = DEPTH_KEYS if 'depth' in config.stem else NORMAL_KEYS
    assert set(metrics) >= keys and all(math.isfinite(metrics[k]) for k in keys)
    if 'depth' in config.stem:
        assert 0 <= metrics['delta1'] <= metrics['delta3'] <= 1
    else:
        assert 0 <= metrics['rmse'] <= 180 and 0 <= metrics['within_30'] <= 1
    assert (tmp_path / 'epoch_1.pth').is_file()


@pytest.mark.parametrize('stem', [c.stem for c in CONFIGS if not c.stem.endswith('_bilinear')])
def test_bilinear_twin_differs_only_in_the_neck(stem):
    anyup = Config.fromfile(str(CONFIG_DIR / f'{stem}.py')).to_dict()
    bilinear = Config.fromfile(str(CONFIG_DIR / f'{stem}_bilinear.py')).to_dict()
    neck_a, neck_b = anyup['model'].pop('neck'), bilinear['model'].pop('neck')
    assert neck_a['type'] == 'AnyUpNeck' and neck_b['type'] == 'BilinearNeck'
    assert neck_a.get('in_index') == neck_b.get('in_index')
    assert neck_a.get('output_stride', 1) == neck_b.get('output_stride', 1)
    assert anyup == bilinear


@pytest.mark.parametrize('stem', ['nyu_depth_dinov2', 'nyu_normals_dinov2',
                                  'nyu_depth_dinov2_dpt', 'nyu_normals_dinov2_dpt'])  # fmt: skip
def test_configs_pin_the_probe3d_protocol(stem):
    cfg = Config.fromfile(str(CONFIG_DIR / f'{stem}.py'))
    assert cfg.custom_imports.imports == ['anyup_plugin.mmseg'] and cfg.default_scope == 'mmseg'
    backbone, neck, head = cfg.model.backbone, cfg.model.neck, cfg.model.decode_head
    assert backbone.model_name == 'vit_small_patch14_dinov2.lvd142m' and backbone.apply_norm
    assert neck.type == 'AnyUpNeck' and neck.frozen and neck.window_ratio == 0.1
    if stem.endswith('_dpt'):
        assert backbone.layers == [2, 5, 8, 11] and head.probe == 'dpt'
        assert neck.in_index == [0, 1, 2, 3] and neck.output_stride == 4
        assert head.dpt_cfg.channels == 512 and head.dpt_cfg.kernel_size == 3
    else:
        assert backbone.layers == -1 and head.probe == 'linear' and neck.output_stride == 1
    if 'depth' in stem:
        assert cfg.model.type == 'AnyUpDepthEstimator' and head.type == 'DepthProbeHead'
        assert (head.num_bins, head.min_depth, head.max_depth) == (256, 0.001, 10.0)
        loss = head.loss_decode
        assert (loss.type, loss.si_weight, loss.grad_weight) == ('ProbeDepthLoss', 10.0, 0.5)
        assert cfg.val_evaluator.type == 'NYUDepthMetric'
    else:
        assert cfg.model.type == 'AnyUpNormalEstimator' and head.type == 'NormalProbeHead'
        assert head.uncertainty and head.loss_decode.type == 'ProbeNormalLoss'
        assert cfg.val_evaluator.type == 'NYUNormalMetric'
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 5e-4, 0.01)
    warmup, cosine = cfg.param_scheduler
    assert dict(warmup) == dict(type='LinearLR', start_factor=0.01, begin=0, end=1.5,
                                by_epoch=True, convert_to_iter_based=True)  # fmt: skip
    assert dict(cosine) == dict(type='CosineAnnealingLR', begin=1.5, end=10, eta_min_ratio=0.01,
                                by_epoch=True, convert_to_iter_based=True)  # fmt: skip
    assert cfg.train_cfg.max_epochs == 10 and cfg.train_dataloader.batch_size == 8
    train = {s['type']: s for s in cfg.train_dataloader.dataset.pipeline}
    assert train['SegCenterCrop']['size'] == 480
    crop = train['NYURandomResizedCrop']
    expected = (224, (0.5, 1.0), (1.0, 1.0), 0.5)
    assert (crop['size'], crop['scale'], crop['ratio'], crop['prob']) == expected
    jitter = train['RandomColorJitter']
    assert [jitter[k] for k in ('brightness', 'contrast', 'saturation', 'hue', 'prob')] == [
        0.2, 0.2, 0.2, 0.2, 0.8]  # fmt: skip
    test = {s['type']: s for s in cfg.val_dataloader.dataset.pipeline}
    assert test['NYUResize']['size'] == 224 and 'RandomColorJitter' not in test
    assert cfg.val_dataloader.dataset.ann_file == 'splits/test.txt'
    assert cfg.default_hooks.checkpoint.save_best is None  # no selection on the test split


@pytest.mark.slow
def test_tools_train_and_mmsegs_own_train_run_the_depth_config(nyu_root, tmp_path, run_python):
    cfg = shrink(Config.fromfile(str(CONFIG_DIR / 'nyu_depth_dinov2.py')), nyu_root, tmp_path)
    path = tmp_path / 'nyu_depth_tiny.py'
    cfg.dump(str(path))
    proc = run_python(['tools/train.py', str(path), '--work-dir', str(tmp_path / 'ours')], REPO)
    assert 'delta1' in proc.stdout + proc.stderr
    assert (tmp_path / 'ours' / 'epoch_1.pth').is_file()

    import mmseg

    mmseg_train = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'train.py'
    if not mmseg_train.is_file():
        pytest.skip(f'this mmsegmentation install ships no tools/train.py ({mmseg_train})')
    run_python([str(mmseg_train), str(path), '--work-dir', str(tmp_path / 'mmseg')], tmp_path)
    assert (tmp_path / 'mmseg' / 'epoch_1.pth').is_file()


@pytest.mark.parametrize('stem', LINEAR)
def test_visualize_nyu_writes_panels(stem, nyu_root, tmp_path, load_tool):
    import torch
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    from PIL import Image

    cfg = shrink(Config.fromfile(str(CONFIG_DIR / f'{stem}.py')), nyu_root, tmp_path)
    path = tmp_path / 'tiny.py'
    cfg.dump(str(path))
    init_default_scope('mmseg')
    torch.save({'state_dict': MODELS.build(cfg.model).state_dict()}, tmp_path / 'w.pth')
    tool = load_tool('visualize_nyu')
    out = tmp_path / 'vis'
    assert tool.main([str(path), str(tmp_path / 'w.pth'), '--out-dir', str(out), '--num', '5']) == 0
    pngs = sorted(out.glob('*.png'))
    assert [p.name for p in pngs] == ['nyu_0005.png', 'nyu_0006.png']  # the 2 test frames
    panel = np.asarray(Image.open(pngs[0]).convert('RGB'))
    assert panel.shape == (56 + 14, 4 * 56, 3)
    # Pixels without ground truth (the scenes' depth holes) are grey in the ground-truth tile.
    gt_tile = panel[14:, 56:112]
    depth = np.load(nyu_root / 'depth' / 'nyu_0005.npy')
    assert (depth == 0).any() and (gt_tile == 128).all(axis=2).any()


@pytest.mark.slow
@pytest.mark.parametrize('task', ['depth', 'normals'])
def test_demo_task_trains_anyup_and_the_bilinear_twin(task, tmp_path, capsys, load_tool):
    demo = load_tool('demo')
    sizes = ['--epochs', '1', '--num-train', '8', '--num-val', '2']  # 2 steps: warm-up, cosine
    dirs = ['--demo-dir', str(tmp_path / 'data'), '--work-dir', str(tmp_path / 'w')]
    rc = demo.main(['--task', task, *sizes, *dirs])
    out = capsys.readouterr().out
    assert rc == 0
    header = 'AnyUp rmse' if task == 'depth' else 'AnyUp within_30'
    assert header in out and 'bilinear rmse' in out
    row = next(line for line in out.splitlines() if line.strip().startswith('1 '))
    values = [float(v) for v in row.split()[1:]]
    assert len(values) == 4 and all(math.isfinite(v) for v in values)
    assert (tmp_path / 'data' / 'splits' / 'test.txt').is_file()  # the converter's layout
    assert (tmp_path / 'w' / 'AnyUp' / 'epoch_1.pth').is_file()
    assert (tmp_path / 'w' / 'bilinear' / 'epoch_1.pth').is_file()

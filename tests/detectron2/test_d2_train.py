"""Detectron2 adapter end to end: tools/train_net_d2.py trains, checkpoints and evaluates mIoU."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    'detectron2',
    reason='detectron2 is not installed (it is not on PyPI); install it from source with '
    "`pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'`",
)

from detectron2.data import DatasetCatalog, MetadataCatalog

from anyup_plugin.detectron2 import (
    ADE20K151_CLASSES,
    AnyUpSemSegTrainer,
    ProbeDatasetMapper,
    register_ade20k151,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = 56  # as in conftest.py


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'train_net_d2', ROOT / 'tools' / 'train_net_d2.py'
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_register_ade20k151(ade_root, tmp_path):
    names = register_ade20k151(ade_root)
    assert names == ['ade20k151_sem_seg_train', 'ade20k151_sem_seg_val']
    assert len(DatasetCatalog.get(names[0])) == 4 and len(DatasetCatalog.get(names[1])) == 2
    meta = MetadataCatalog.get(names[1])
    assert len(meta.stuff_classes) == 151 and meta.stuff_classes[0] == 'other'
    assert meta.ignore_label == 255 and meta.evaluator_type == 'sem_seg'
    assert len(ADE20K151_CLASSES) == 151
    with pytest.raises(FileNotFoundError, match='ADEChallengeData2016 layout'):
        register_ade20k151(tmp_path)


def test_mapper_and_evaluator_see_the_same_centre_crop(ade_root, make_cfg):
    register_ade20k151(ade_root)
    cfg = make_cfg('bilinear')
    record = DatasetCatalog.get('ade20k151_sem_seg_val')[0]
    train = ProbeDatasetMapper(cfg, is_train=True)(dict(record))
    assert train['image'].shape == (3, TINY, TINY) and train['sem_seg'].shape == (TINY, TINY)
    test = ProbeDatasetMapper(cfg, is_train=False)(dict(record))
    assert (test['height'], test['width']) == (TINY, TINY)
    evaluator = AnyUpSemSegTrainer.build_evaluator(cfg, 'ade20k151_sem_seg_val')
    labels = evaluator.sem_seg_loading_fn(record['sem_seg_file_name'], dtype=int)
    assert labels.shape == (TINY, TINY)
    assert set(np.unique(labels)) <= {0, 3, 10, 21, 255}
    assert (test['sem_seg'].numpy() == labels).all()
    # the training crop equals the test crop, up to the random flip
    sem_seg = train['sem_seg'].numpy()
    assert (sem_seg == labels).all() or (sem_seg[:, ::-1] == labels).all()


def test_train_then_evaluate_with_the_tool(ade_root, tmp_path):
    tool = _load_tool()
    out = tmp_path / 'run'
    opts = [
        'MODEL.DEVICE', 'cpu',
        'MODEL.TIMM.CHECKPOINT', '',
        'MODEL.TIMM.KWARGS', "[['depth', 2], ['embed_dim', 48], ['num_heads', 2]]",
        'MODEL.ANYUP.CHECKPOINT', '',
        'INPUT.MIN_SIZE_TRAIN', f'({TINY},)',
        'INPUT.MIN_SIZE_TEST', str(TINY),
        'INPUT.CENTER_CROP_SIZE', str(TINY),
        'DATALOADER.NUM_WORKERS', '0',
        'SOLVER.MAX_ITER', '4',
        'SOLVER.LR_EPOCHS', '2',
        'SOLVER.CHECKPOINT_PERIOD', '1000',
        'OUTPUT_DIR', str(out),
    ]  # fmt: skip
    config = str(ROOT / 'configs' / 'detectron2' / 'ade20k_dinov2_anyup.yaml')
    args = tool.build_parser().parse_args(
        ['--config-file', config, '--data-root', str(ade_root), *opts]
    )
    tool.main(args)
    assert (out / 'model_final.pth').is_file()
    metrics = [json.loads(line) for line in (out / 'metrics.json').read_text().splitlines()]
    losses = [m['total_loss'] for m in metrics if 'total_loss' in m]
    assert losses and all(math.isfinite(v) for v in losses)
    lrs = [m['lr'] for m in metrics if 'lr' in m]
    assert lrs and max(lrs) <= 5e-4 + 1e-12

    # --resume continues from model_final.pth (iteration 4) to the new MAX_ITER
    args = tool.build_parser().parse_args(
        ['--config-file', config, '--data-root', str(ade_root), '--resume', *opts,
         'SOLVER.MAX_ITER', '5']
    )  # fmt: skip
    tool.main(args)
    metrics = [json.loads(line) for line in (out / 'metrics.json').read_text().splitlines()]
    assert max(m['iteration'] for m in metrics if 'total_loss' in m) == 4  # 0-based: the 5th

    args = tool.build_parser().parse_args(
        ['--config-file', config, '--data-root', str(ade_root), '--eval-only', *opts,
         'MODEL.WEIGHTS', str(out / 'model_final.pth')]
    )  # fmt: skip
    results = tool.main(args)
    sem_seg = results['sem_seg']
    assert 0.0 <= sem_seg['mIoU'] <= 100.0 and 0.0 <= sem_seg['pACC'] <= 100.0
    assert 'IoU-other' in sem_seg  # label 0 is a class

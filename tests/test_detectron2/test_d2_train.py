"""Detectron2 adapter end to end: datasets, every config trains and evaluates, the train tool."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

pytest.importorskip(
    'detectron2',
    reason='detectron2 is not installed (it is not on PyPI); install it with '
    '`make setup-detectron2` (the prebuilt wheel in ../shared/wheels, or upstream source: '
    "`pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'`)",
)

from d2_tiny import (
    ADE_LABELS,
    CONFIG_NAMES,
    CONFIGS,
    TINY,
    VOC_LABELS,
)
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from anyup_plugin.class_names import COCO_STUFF27_CLASSES
from anyup_plugin.detectron2 import (
    ADE20K151_CLASSES,
    VOC2012_CLASSES,
    AnyUpSemSegTrainer,
    ProbeDatasetMapper,
    register_ade20k151,
    register_coco_stuff27,
    register_datasets_from_cfg,
    register_voc2012,
)
from anyup_plugin.detectron2.datasets import root_key_of

# person -> person, car -> vehicle, sky-other -> sky, wall-concrete -> wall; "other" is ignored
COCO_COARSE_LABELS = {
    COCO_STUFF27_CLASSES.index(name) for name in ('person', 'vehicle', 'sky', 'wall')
}


@pytest.mark.parametrize(
    ('register', 'root_fixture', 'prefix', 'classes', 'first'),
    [
        (register_ade20k151, 'ade_root', 'ade20k151_sem_seg', 151, 'other'),
        (register_coco_stuff27, 'coco_root', 'coco_stuff27_sem_seg', 27, 'electronic'),
        (register_voc2012, 'voc_root', 'voc2012_sem_seg', 21, 'background'),
    ],
)
def test_register_benchmarks(register, root_fixture, prefix, classes, first, request, tmp_path):
    names = register(request.getfixturevalue(root_fixture))
    assert names == [f'{prefix}_train', f'{prefix}_val']
    assert len(DatasetCatalog.get(names[0])) == 4 and len(DatasetCatalog.get(names[1])) == 2
    for name in names:
        meta = MetadataCatalog.get(name)
        assert len(meta.stuff_classes) == classes and meta.stuff_classes[0] == first
        assert meta.ignore_label == 255 and meta.evaluator_type == 'sem_seg'
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / 'missing'))):
        register(tmp_path / 'missing')
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(empty))):
        register(empty)
    assert len(ADE20K151_CLASSES) == 151 and len(VOC2012_CLASSES) == 21
    assert len(COCO_STUFF27_CLASSES) == 27


def test_empty_split_folder_or_list_fails_naming_it(ade_root, voc_root, tmp_path):
    import shutil

    ade = tmp_path / 'ade'
    shutil.copytree(ade_root, ade)
    for f in (ade / 'images' / 'validation').iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=str(ade / 'images' / 'validation')):
        register_ade20k151(ade)
    voc = tmp_path / 'voc'
    shutil.copytree(voc_root, voc)
    (voc / 'ImageSets' / 'Segmentation' / 'val.txt').write_text('')
    with pytest.raises(ValueError, match='val.txt'):
        register_voc2012(voc)
    (voc / 'ImageSets' / 'Segmentation' / 'val.txt').write_text('2007_999999\n')
    register_voc2012(voc, prefix='broken_voc')
    with pytest.raises(ValueError, match='2007_999999'):
        DatasetCatalog.get('broken_voc_val')


def test_register_from_cfg_and_root_keys(make_cfg, dataset_roots):
    cfg = make_cfg('anyup')
    for key, root in dataset_roots.items():
        cfg.DATASETS[key] = str(root)
    names = register_datasets_from_cfg(cfg)
    assert len(names) == 6
    assert {root_key_of(n) for n in names} == set(dataset_roots)


@pytest.mark.parametrize(
    ('config', 'root_key', 'labels'),
    [
        ('ade20k_dinov2_bilinear.yaml', 'ADE20K151_ROOT', set(ADE_LABELS)),
        ('coco_stuff27_dinov2_bilinear.yaml', 'COCO_STUFF27_ROOT', COCO_COARSE_LABELS),
        ('voc2012_dinov2_bilinear.yaml', 'VOC2012_ROOT', set(VOC_LABELS)),
    ],
)
def test_mapper_and_evaluator_read_the_same_labels_and_crop(
    make_cfg, dataset_roots, config, root_key, labels
):
    cfg = make_cfg(config, f'DATASETS.{root_key}', str(dataset_roots[root_key]))
    register_datasets_from_cfg(cfg)
    test_name = cfg.DATASETS.TEST[0]
    record = DatasetCatalog.get(test_name)[0]
    train = ProbeDatasetMapper(cfg, is_train=True)(dict(record))
    assert train['image'].shape == (3, TINY, TINY) and train['sem_seg'].shape == (TINY, TINY)
    test = ProbeDatasetMapper(cfg, is_train=False, dataset_names=[test_name])(dict(record))
    assert (test['height'], test['width']) == (TINY, TINY)
    evaluator = AnyUpSemSegTrainer.build_evaluator(cfg, test_name)
    gt = evaluator.sem_seg_loading_fn(record['sem_seg_file_name'], dtype=int)
    assert gt.shape == (TINY, TINY)
    assert labels <= set(np.unique(gt)) <= labels | {255}  # train ids (coarse, palette indices)
    assert (test['sem_seg'].numpy() == gt).all()
    # the training crop equals the test crop, up to the random flip
    sem_seg = train['sem_seg'].numpy()
    assert (sem_seg == gt).all() or (sem_seg[:, ::-1] == gt).all()
    if root_key == 'VOC2012_ROOT':  # stored palette indices, not the palette's grey levels
        assert Image.open(record['sem_seg_file_name']).mode == 'P'


@pytest.mark.parametrize('config', CONFIG_NAMES)
def test_every_config_trains_and_evaluates(make_cfg, dataset_roots, config, tmp_path):
    cfg = make_cfg(config, 'SOLVER.MAX_ITER', 2, 'SOLVER.LR_EPOCHS', 2,
                   'SOLVER.CHECKPOINT_PERIOD', 1000, 'TEST.EVAL_PERIOD', 0,
                   'OUTPUT_DIR', str(tmp_path))  # fmt: skip
    key = root_key_of(cfg.DATASETS.TRAIN[0])
    cfg.DATASETS[key] = str(dataset_roots[key])
    register_datasets_from_cfg(cfg)
    trainer = AnyUpSemSegTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    metrics = [json.loads(line) for line in (tmp_path / 'metrics.json').read_text().splitlines()]
    losses = [m['total_loss'] for m in metrics if 'total_loss' in m]
    assert losses and all(math.isfinite(v) for v in losses)
    assert max(m['iteration'] for m in metrics if 'total_loss' in m) == 1
    results = AnyUpSemSegTrainer.test(cfg, trainer.model)['sem_seg']
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert len([k for k in results if k.startswith('IoU-')]) == num_classes
    assert 0.0 <= results['mIoU'] <= 100.0 and 0.0 <= results['pACC'] <= 100.0


def test_train_resume_and_evaluate_with_the_tool(ade_root, tmp_path, load_tool):
    tool = load_tool('train_net_d2')
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
    config = str(CONFIGS / 'ade20k_dinov2_anyup.yaml')
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


def test_tool_data_root_needs_one_benchmark(make_cfg, load_tool):
    tool = load_tool('train_net_d2')
    cfg = make_cfg('anyup')
    assert tool.data_root_key(cfg) == 'ADE20K151_ROOT'
    cfg.DATASETS.TEST = ('voc2012_sem_seg_val',)
    with pytest.raises(ValueError, match='--data-root'):
        tool.data_root_key(cfg)

#!/usr/bin/env python
"""The main job, end to end: generate an ADE20K-layout dataset, train the AnyUp probe, print mIoU.

Runs on a CPU in a few minutes with random weights (nothing is downloaded)::

    python tools/demo.py

Real data and weights, same config::

    python tools/demo.py --data-root data/ade/ADEChallengeData2016 \\
        --backbone-checkpoint checkpoints/vit_small_patch14_dinov2.lvd142m.safetensors \\
        --anyup-checkpoint anyup_paper

NYUv2 depth or surface normals (Probe3D probes) on generated rooms whose depth and normals are
exact, written in tools/convert_nyuv2.py's layout; trains AnyUp and its bilinear twin and
prints the per-epoch RMSE and delta1 (depth) or angular RMSE and within-30 share (normals)::

    python tools/demo.py --task depth
    python tools/demo.py --task normals
"""

from __future__ import annotations

import argparse
import math
import os.path as osp
import sys
import time

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from anyup_plugin.testing import DEMO_CLASSES, write_ade20k_layout_dataset
from anyup_plugin.testing.nyu_scenes import write_nyu_scenes_dataset

DEFAULT_CONFIG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'mmseg',
                          'demo_ade20k_layout.py')  # fmt: skip
NYU_CONFIGS = {task: osp.join(osp.dirname(DEFAULT_CONFIG), f'demo_nyu_{task}.py')
               for task in ('depth', 'normals')}  # fmt: skip
#: What the NYU demos print per epoch (the issue's headline metrics of each task).
NYU_KEYS = {'depth': ('rmse', 'delta1'), 'normals': ('rmse', 'within_30')}


class _RecordValMetrics(Hook):
    """Keeps every validation's metrics, to print a summary at the end."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.history: list[tuple[int, dict]] = []

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        self.history.append((runner.epoch, dict(metrics or {})))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--task',
        choices=('segmentation', 'depth', 'normals'),
        default='segmentation',
        help='segmentation (ADE20K layout, the default), or NYUv2 depth / surface normals '
        '(generated scenes; AnyUp and its bilinear twin)',
    )
    parser.add_argument('--config', help="MMSeg config to train (default: the task's demo)")
    parser.add_argument(
        '--data-root',
        help='an ADEChallengeData2016 folder; default: generate one under --demo-dir',
    )
    parser.add_argument('--demo-dir', help='where to generate data (default: data/demo_<task>)')
    parser.add_argument('--num-train', type=int, help='generated training images (40; NYU 16)')
    parser.add_argument('--num-val', type=int, help='generated validation images (12; NYU 8)')
    parser.add_argument('--work-dir', help='logs, checkpoints (default: work_dirs/<demo>)')
    parser.add_argument('--epochs', type=int, help='override the number of epochs')
    parser.add_argument('--backbone-checkpoint', help='local timm backbone weights')
    parser.add_argument('--anyup-checkpoint', help="AnyUp weights: a path or 'anyup_paper'")
    args = parser.parse_args(argv)
    nyu = args.task != 'segmentation'
    defaults = dict(
        config=NYU_CONFIGS[args.task] if nyu else DEFAULT_CONFIG,
        demo_dir='data/demo_nyu' if nyu else 'data/demo_ade20k',
        num_train=16 if nyu else 40,
        num_val=8 if nyu else 12,
        work_dir=f'work_dirs/demo_nyu_{args.task}' if nyu else 'work_dirs/demo_ade20k_layout',
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def build_config(args: argparse.Namespace, data_root: str) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.work_dir = args.work_dir
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(loader) is not None:
            cfg[loader].dataset.data_root = data_root
    if args.backbone_checkpoint:
        cfg.model.backbone.checkpoint = args.backbone_checkpoint
        cfg.model.backbone.pretrained = False
    if args.anyup_checkpoint:
        cfg.model.neck.checkpoint = args.anyup_checkpoint
    if args.epochs:
        cfg.train_cfg.max_epochs = args.epochs
        warmup = 0
        for scheduler in cfg.param_scheduler:
            if scheduler.get('by_epoch', True) and 'T_max' in scheduler:
                scheduler.T_max = args.epochs
                scheduler.end = args.epochs
            elif scheduler.type == 'LinearLR':  # the NYU schedule: warm-up, then cosine
                warmup = min(scheduler.end, args.epochs / 2)
                scheduler.end = warmup
            elif scheduler.type == 'CosineAnnealingLR':
                scheduler.begin, scheduler.end = warmup, args.epochs
    return cfg


def train_and_record(cfg: Config) -> list[tuple[int, dict]]:
    """Trains ``cfg`` and returns its ``(epoch, metrics)`` after every validation.

    An empty list (reported on stderr) means no validation ran.
    """
    runner = Runner.from_cfg(cfg)
    recorder = _RecordValMetrics()
    runner.register_hook(recorder)
    runner.train()
    if not recorder.history:
        print('[demo] no validation ran', file=sys.stderr)
    return recorder.history


def main_nyu(args: argparse.Namespace) -> int:
    """Depth or normals on generated scenes: trains AnyUp and the bilinear twin, prints both."""
    start = time.perf_counter()
    if args.data_root:
        data_root = args.data_root
    else:
        data_root = str(write_nyu_scenes_dataset(args.demo_dir, args.num_train, args.num_val))
        print(
            f'[demo] NYU-layout scenes: {data_root} ({args.num_train} train / {args.num_val} test)'
        )
    keys = NYU_KEYS[args.task]
    histories = {}
    for name, neck in (('AnyUp', None), ('bilinear', dict(type='BilinearNeck'))):
        cfg = build_config(args, data_root)
        cfg.work_dir = osp.join(args.work_dir, name)
        if neck is not None:  # the twin: the same config with the bilinear neck
            cfg.model.neck = neck
        history = train_and_record(cfg)
        if not history:
            return 1
        histories[name] = history
    print(f'\n[demo] NYU {args.task}: test-split scores after each epoch (per image, averaged)')
    print('  epoch  ' + '  '.join(f'{n + " " + k:>18}' for n in histories for k in keys))
    for rows in zip(*histories.values()):
        values = [m.get(k, math.nan) for _, m in rows for k in keys]
        print(f'  {rows[0][0]:5d}  ' + '  '.join(f'{v:18.4f}' for v in values))
    if not args.data_root:
        print('[demo] generated rooms with exact depth and normals; random backbone and AnyUp')
    print(f'[demo] {time.perf_counter() - start:.0f} s; logs in {osp.abspath(args.work_dir)}')
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.task != 'segmentation':
        return main_nyu(args)
    start = time.perf_counter()
    if args.data_root:
        data_root = args.data_root
    else:
        data_root = str(write_ade20k_layout_dataset(args.demo_dir, args.num_train, args.num_val))
        print(f'[demo] dataset: {data_root} ({args.num_train} train / {args.num_val} val)')
    cfg = build_config(args, data_root)

    history = train_and_record(cfg)
    if not history:
        return 1
    print(
        '\n[demo] validation after each epoch (MMSeg mIoU: the mean over every class that occurs '
        'in the labels or in the predictions, so stray predictions of absent classes count as 0):'
    )
    print('  epoch    mIoU  mIoU (present classes)    aAcc')
    for epoch, metrics in history:
        miou, aacc = metrics.get('mIoU', math.nan), metrics.get('aAcc', math.nan)
        present = metrics.get('mIoU_present', math.nan)
        print(f'  {epoch:5d}  {miou:6.2f}  {present:22.2f}  {aacc:6.2f}')
    final = history[-1][1]
    if not args.data_root:
        present = ', '.join(DEMO_CLASSES.values())
        print(f'[demo] generated classes: {present}; random backbone and AnyUp weights')
    elapsed = time.perf_counter() - start
    print(
        f'[demo] final val mIoU {final.get("mIoU", math.nan):.2f}, '
        f'pixel accuracy {final.get("aAcc", math.nan):.2f} ({elapsed:.0f} s; '
        f'logs and checkpoints in {osp.abspath(args.work_dir)})'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())

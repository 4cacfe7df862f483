#!/usr/bin/env python
"""The main job, end to end: generate an ADE20K-layout dataset, train the AnyUp probe, print mIoU.

Runs on a CPU in a few minutes with random weights (nothing is downloaded)::

    python tools/demo.py

Real data and weights, same config::

    python tools/demo.py --data-root data/ade/ADEChallengeData2016 \\
        --backbone-checkpoint checkpoints/vit_small_patch14_dinov2.lvd142m.safetensors \\
        --anyup-checkpoint anyup_paper
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

DEFAULT_CONFIG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'mmseg',
                          'demo_ade20k_layout.py')  # fmt: skip


class _RecordValMetrics(Hook):
    """Keeps every validation's metrics, to print a summary at the end."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.history: list[tuple[int, dict]] = []

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        self.history.append((runner.epoch, dict(metrics or {})))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='MMSeg config to train')
    parser.add_argument(
        '--data-root',
        help='an ADEChallengeData2016 folder; default: generate one under --demo-dir',
    )
    parser.add_argument('--demo-dir', default='data/demo_ade20k', help='where to generate data')
    parser.add_argument('--num-train', type=int, default=40, help='generated training images')
    parser.add_argument('--num-val', type=int, default=12, help='generated validation images')
    parser.add_argument('--work-dir', default='work_dirs/demo_ade20k_layout', help='logs, ckpts')
    parser.add_argument('--epochs', type=int, help='override the number of epochs')
    parser.add_argument('--backbone-checkpoint', help='local timm backbone weights')
    parser.add_argument('--anyup-checkpoint', help="AnyUp weights: a path or 'anyup_paper'")
    return parser.parse_args(argv)


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
        for scheduler in cfg.param_scheduler:
            if scheduler.get('by_epoch', True) and 'T_max' in scheduler:
                scheduler.T_max = args.epochs
                scheduler.end = args.epochs
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.data_root:
        data_root = args.data_root
    else:
        data_root = str(write_ade20k_layout_dataset(args.demo_dir, args.num_train, args.num_val))
        print(f'[demo] dataset: {data_root} ({args.num_train} train / {args.num_val} val)')
    cfg = build_config(args, data_root)

    runner = Runner.from_cfg(cfg)
    recorder = _RecordValMetrics()
    runner.register_hook(recorder)
    runner.train()

    if not recorder.history:
        print('[demo] no validation ran', file=sys.stderr)
        return 1
    print(
        '\n[demo] validation after each epoch (MMSeg mIoU: the mean over every class that occurs '
        'in the labels or in the predictions, so stray predictions of absent classes count as 0):'
    )
    print('  epoch    mIoU  mIoU (present classes)    aAcc')
    for epoch, metrics in recorder.history:
        miou, aacc = metrics.get('mIoU', math.nan), metrics.get('aAcc', math.nan)
        present = metrics.get('mIoU_present', math.nan)
        print(f'  {epoch:5d}  {miou:6.2f}  {present:22.2f}  {aacc:6.2f}')
    final = recorder.history[-1][1]
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

#!/usr/bin/env python
"""Trains with an MMEngine config: AnyUp trainer configs and MMSegmentation configs alike.

Examples::

    python tools/train.py configs/anyup/anyup_tiny_cpu_demo.py
    python tools/train.py CONFIG --work-dir work_dirs/run1 --cfg-options train_cfg.max_iters=1000
    python tools/train.py CONFIG --resume                  # newest checkpoint in the work dir
    python tools/train.py CONFIG --resume work_dirs/run1/iter_5000.pth
    tools/dist_train.sh CONFIG 2                           # 2 processes (GPUs, or gloo on CPU)

Every run gets ``WeightsOnlyCheckpointHook``, so its checkpoints load with torch's
``weights_only=True`` default and ``--resume`` works with torch >= 2.6, and ``RandomStateHook``,
so a resumed run draws the augmentations and crops the uninterrupted run would have drawn and
ends with the same weights (bit for bit on CPU with the same number of loader workers; another
number of processes or workers resumes with a warning).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from mmengine.config import DictAction

# Allow `python tools/train.py` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from anyup_plugin.engine import LAUNCHERS, build_runner, prepare_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model with an MMEngine config')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where to save logs and checkpoints')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        default=None,
        metavar='CHECKPOINT',
        help='resume from CHECKPOINT, or without a value from the newest complete checkpoint '
        'in the work directory',
    )
    parser.add_argument('--amp', action='store_true', help='mixed precision (GPU only)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. train_cfg.max_iters=1000',
    )
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local_rank (newer versions --local-rank).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    args = parse_args(argv)
    cfg = prepare_config(
        args.config,
        work_dir=args.work_dir,
        cfg_options=args.cfg_options,
        launcher=args.launcher,
        amp=args.amp,
        resume=args.resume,
    )
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    main()

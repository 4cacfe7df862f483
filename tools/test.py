#!/usr/bin/env python
"""Tests (evaluates) a checkpoint with an MMEngine config.

Examples::

    python tools/test.py configs/anyup/anyup_tiny_cpu_demo.py \
        work_dirs/anyup_tiny_cpu_demo/anyup_student_latest.pth
    python tools/test.py configs/mmseg/<config>.py work_dirs/<run>/iter_8000.pth --show-dir vis

For the AnyUp trainer configs the checkpoint may be an MMEngine checkpoint or a plain AnyUp
state dict (published or exported by ``ExportStudentHook``). Checkpoints are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from mmengine.config import DictAction

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from anyup_plugin.engine import LAUNCHERS, build_runner, prepare_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a checkpoint with an MMEngine config')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where to save logs and metrics')
    parser.add_argument(
        '--show-dir',
        help='save drawn predictions here (needs a visualization hook in default_hooks, as '
        'MMSegmentation configs have)',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. test_dataloader.batch_size=1',
    )
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_visualization(cfg, show_dir: str) -> None:
    """Switches the config's visualization hook on, drawing into ``show_dir``."""
    hooks = cfg.get('default_hooks', {})
    if 'visualization' not in hooks:
        raise RuntimeError(
            '--show-dir needs a visualization hook in default_hooks, e.g. '
            "visualization=dict(type='SegVisualizationHook') for MMSegmentation configs"
        )
    hooks['visualization']['draw'] = True
    cfg.visualizer['save_dir'] = show_dir


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    args = parse_args(argv)
    cfg = prepare_config(
        args.config,
        work_dir=args.work_dir,
        cfg_options=args.cfg_options,
        launcher=args.launcher,
        load_from=args.checkpoint,
    )
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    runner = build_runner(cfg)
    runner.test()


if __name__ == '__main__':
    main()

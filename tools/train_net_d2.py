#!/usr/bin/env python
"""Train or evaluate a Detectron2 segmentation model on AnyUp-upsampled features.

Usage::

    python tools/train_net_d2.py --config-file configs/detectron2/ade20k_dinov2_anyup.yaml \\
        --data-root data/ade/ADEChallengeData2016 OUTPUT_DIR work_dirs/d2_anyup
    python tools/train_net_d2.py --config-file ... --resume            # continue a run
    python tools/train_net_d2.py --config-file ... --eval-only MODEL.WEIGHTS <model_final.pth>
    python tools/train_net_d2.py --config-file ... --num-gpus 8

The benchmarks whose ``DATASETS.<X>_ROOT`` is set (``ADE20K151_ROOT``, ``COCO_STUFF27_ROOT``,
``VOC2012_ROOT``) are registered; ``--data-root`` sets the root of the benchmark the config
trains and tests on. Other options are Detectron2's ``default_argument_parser`` ones
(``--num-gpus``, ``--resume``, ``--eval-only``, ``KEY VALUE`` overrides); on a CPU-only machine
add ``MODEL.DEVICE cpu``.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch

from anyup_plugin.detectron2 import (
    AnyUpSemSegTrainer,
    add_anyup_config,
    register_datasets_from_cfg,
)
from anyup_plugin.detectron2.datasets import DATASET_ROOT_KEYS, root_key_of

logger = logging.getLogger('anyup_plugin.train_net_d2')


def setup(args: argparse.Namespace) -> CfgNode:
    """Builds the frozen config from ``--config-file``, ``--data-root`` and overrides."""
    cfg = add_anyup_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if args.data_root:
        cfg.DATASETS[data_root_key(cfg)] = args.data_root
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def data_root_key(cfg: CfgNode) -> str:
    """The ``DATASETS`` root key of the benchmark in ``DATASETS.TRAIN`` and ``DATASETS.TEST``."""
    names = [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
    keys = {root_key_of(name) for name in names}
    if len(keys) != 1 or None in keys:
        prefixes = [f'{prefix}_*' for prefix in DATASET_ROOT_KEYS]
        raise ValueError(
            f'--data-root needs DATASETS.TRAIN and DATASETS.TEST from one benchmark ({prefixes}), '
            f'got {names}; set DATASETS.<X>_ROOT for each instead'
        )
    return keys.pop()


def main(args: argparse.Namespace) -> Any:
    """Registers the datasets, then trains (or, with ``--eval-only``, evaluates)."""
    cfg = setup(args)
    register_datasets_from_cfg(cfg)
    if args.eval_only:
        model = AnyUpSemSegTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return AnyUpSemSegTrainer.test(cfg, model)
    trainer = AnyUpSemSegTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def build_parser() -> argparse.ArgumentParser:
    """Detectron2's argument parser plus ``--data-root``."""
    parser = default_argument_parser()
    parser.add_argument(
        '--data-root',
        default='',
        help='root folder of the benchmark the config trains and tests on (sets its '
        'DATASETS.ADE20K151_ROOT, COCO_STUFF27_ROOT or VOC2012_ROOT)',
    )
    return parser


if __name__ == '__main__':
    args = build_parser().parse_args()
    logger.info('Command line arguments: %s', args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )

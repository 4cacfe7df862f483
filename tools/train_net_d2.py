#!/usr/bin/env python
"""Train or evaluate a Detectron2 segmentation probe on AnyUp-upsampled features.

Usage::

    python tools/train_net_d2.py --config-file configs/detectron2/ade20k_dinov2_anyup.yaml \\
        --data-root data/ade/ADEChallengeData2016 OUTPUT_DIR work_dirs/d2_anyup
    python tools/train_net_d2.py --config-file ... --eval-only MODEL.WEIGHTS <model_final.pth>

``--data-root`` (or ``DATASETS.ADE20K151_ROOT``) registers ``ade20k151_sem_seg_{train,val}``.
Other options are Detectron2's ``default_argument_parser`` ones (``--num-gpus``,
``--resume``, ``KEY VALUE`` overrides); on a CPU-only machine add ``MODEL.DEVICE cpu``.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch

from anyup_plugin.detectron2 import AnyUpSemSegTrainer, add_anyup_config, register_ade20k151

logger = logging.getLogger('anyup_plugin.train_net_d2')


def setup(args: argparse.Namespace) -> CfgNode:
    """Builds the frozen config from ``--config-file``, ``--data-root`` and overrides."""
    cfg = add_anyup_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if args.data_root:
        cfg.DATASETS.ADE20K151_ROOT = args.data_root
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args: argparse.Namespace) -> Any:
    """Registers the datasets, then trains (or, with ``--eval-only``, evaluates)."""
    cfg = setup(args)
    if cfg.DATASETS.ADE20K151_ROOT:
        register_ade20k151(cfg.DATASETS.ADE20K151_ROOT)
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
        help='ADEChallengeData2016 folder to register as ade20k151_sem_seg_{train,val} '
        '(overrides DATASETS.ADE20K151_ROOT)',
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

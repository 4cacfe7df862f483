"""A ``DefaultTrainer`` for the segmentation probe: probe data pipeline, AdamW, SemSegEvaluator."""

from __future__ import annotations

import os

import torch
from detectron2.config import CfgNode
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import DatasetEvaluator, SemSegEvaluator

from .data import (
    CroppedGroundTruthLoader,
    ProbeDatasetMapper,
    build_probe_augmentations,
    label_reader_for,
)
from .solver import build_probe_lr_scheduler, build_probe_optimizer

__all__ = ['AnyUpSemSegTrainer']


class AnyUpSemSegTrainer(DefaultTrainer):
    """``DefaultTrainer`` with the linear-probe protocol's data, optimiser and evaluation.

    * Data: :class:`ProbeDatasetMapper` (short-side resize, centre crop, train flip).
    * Optimiser and schedule: :func:`build_probe_optimizer`, :func:`build_probe_lr_scheduler`.
    * Evaluation: ``SemSegEvaluator`` on datasets with ``evaluator_type='sem_seg'``, labels read
      as training reads them (the dataset's ``label_map``), scoring the centre crop when
      ``INPUT.CENTER_CROP_SIZE`` is set (the labels get the same crop).
    """

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None
    ) -> DatasetEvaluator:
        """``SemSegEvaluator`` for ``dataset_name`` (must have ``evaluator_type='sem_seg'``)."""
        evaluator_type = MetadataCatalog.get(dataset_name).get('evaluator_type')
        if evaluator_type != 'sem_seg':
            raise NotImplementedError(
                f'no evaluator for dataset {dataset_name!r} of evaluator_type {evaluator_type!r}'
            )
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, 'inference')
        augs = build_probe_augmentations(cfg, is_train=False) if cfg.INPUT.CENTER_CROP_SIZE else []
        loader = CroppedGroundTruthLoader(augs, label_reader_for([dataset_name]))
        return SemSegEvaluator(
            dataset_name, distributed=True, output_dir=output_folder, sem_seg_loading_fn=loader
        )

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> torch.utils.data.DataLoader:
        """Training loader over ``DATASETS.TRAIN`` with the probe's training pipeline."""
        return build_detection_train_loader(cfg, mapper=ProbeDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str) -> torch.utils.data.DataLoader:
        """Test loader for ``dataset_name`` with the probe's test pipeline (batch 1)."""
        mapper = ProbeDatasetMapper(cfg, is_train=False, dataset_names=[dataset_name])
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        """AdamW (``SOLVER.OPTIMIZER``) over the trainable parameters."""
        return build_probe_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(
        cls, cfg: CfgNode, optimizer: torch.optim.Optimizer
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """Per-epoch cosine (``LR_SCHEDULER_NAME: EpochCosineLR``) or Detectron2's schedules."""
        return build_probe_lr_scheduler(cfg, optimizer)

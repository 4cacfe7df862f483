"""Detectron2 integration of AnyUp (needs detectron2, installed from its upstream source).

Importing this package registers ``build_anyup_backbone`` (AnyUp around any backbone of
``BACKBONE_REGISTRY``, as ``FPN`` owns its bottom-up network) and ``build_frozen_timm_backbone``
(a frozen timm encoder) in ``BACKBONE_REGISTRY``, and ``LinearProbeSemSegHead`` in
``SEM_SEG_HEADS_REGISTRY``. Use it as Detectron2 projects do::

    from detectron2.config import get_cfg
    from anyup_plugin.detectron2 import add_anyup_config, register_ade20k151

    cfg = add_anyup_config(get_cfg())
    cfg.merge_from_file('configs/detectron2/ade20k_dinov2_anyup.yaml')
    register_ade20k151('datasets/ADEChallengeData2016')
"""

from __future__ import annotations

try:
    import detectron2  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'anyup_plugin.detectron2 needs detectron2, which is not on PyPI: install it from source '
        "with `pip install --no-build-isolation 'git+https://github.com/facebookresearch/"
        "detectron2.git'` (after torch)"
    ) from exc

from .backbone import AnyUpBackbone, build_anyup_backbone, build_input_norm, output_name
from .config import add_anyup_config
from .data import (
    CenterCrop,
    CroppedGroundTruthLoader,
    LabelReader,
    ProbeDatasetMapper,
    label_reader_for,
)
from .datasets import (
    ADE20K151_CLASSES,
    COCO_STUFF27_CLASSES,
    VOC2012_CLASSES,
    register_ade20k151,
    register_coco_stuff27,
    register_datasets_from_cfg,
    register_voc2012,
)
from .linear_probe_head import LinearProbeSemSegHead
from .solver import EpochCosineParamScheduler, build_probe_lr_scheduler, build_probe_optimizer
from .timm_backbone import FrozenTimmD2Backbone, build_frozen_timm_backbone
from .trainer import AnyUpSemSegTrainer

__all__ = [
    'ADE20K151_CLASSES',
    'COCO_STUFF27_CLASSES',
    'VOC2012_CLASSES',
    'AnyUpBackbone',
    'AnyUpSemSegTrainer',
    'CenterCrop',
    'CroppedGroundTruthLoader',
    'EpochCosineParamScheduler',
    'FrozenTimmD2Backbone',
    'LabelReader',
    'LinearProbeSemSegHead',
    'ProbeDatasetMapper',
    'add_anyup_config',
    'build_anyup_backbone',
    'build_frozen_timm_backbone',
    'build_input_norm',
    'build_probe_lr_scheduler',
    'build_probe_optimizer',
    'label_reader_for',
    'output_name',
    'register_ade20k151',
    'register_coco_stuff27',
    'register_datasets_from_cfg',
    'register_voc2012',
]

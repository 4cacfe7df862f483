"""An MMEngine trainer for AnyUp upsamplers (the published recipe, as registered components).

Importing this package registers, in the ``'anyup_plugin'`` scope (see :mod:`.registry`):

- datasets: :class:`ImageFolderDataset`;
- transforms: :class:`LoadImage`, :class:`ResizeCenterCrop`, :class:`GuidanceAugmentation`,
  :class:`PackAnyUpInputs`;
- models: :class:`AnyUpDistillationModel`, :class:`AnyUpDataPreprocessor`, :class:`MultiCrop`,
  :class:`Teacher`, and the core's ``AnyUp`` and ``FrozenTimmEncoder``;
- metrics: :class:`UpsamplingMetric`; hooks: :class:`ExportStudentHook`;
- sampler and loop: :class:`ResumableInfiniteSampler`, :class:`ResumableIterBasedTrainLoop`.

It also imports :mod:`anyup_plugin.engine` (the weights-only checkpoint hook). Configs select
the scope with ``default_scope = 'anyup_plugin'`` and
``custom_imports = dict(imports=['anyup_plugin.training'])``.
"""

from anyup_plugin import engine  # noqa: F401  (registers WeightsOnlyCheckpointHook)

from .dataset import IMAGE_EXTENSIONS, ImageFolderDataset, build_size_index
from .hooks import ExportStudentHook
from .loops import ResumableInfiniteSampler, ResumableIterBasedTrainLoop
from .losses import ReconstructionLoss, cosine_loss_map, minmax_mse_map, reconstruction_loss
from .metric import UpsamplingMetric
from .model import AnyUpDataPreprocessor, AnyUpDistillationModel
from .model import AnyUpTrainer as AnyUpTrainer  # deprecated name
from .multicrop import MultiCrop, MultiCropViews, crop_feature_windows, offsets_from_keys
from .registry import DATA_SAMPLERS, DATASETS, HOOKS, LOOPS, METRICS, MODELS, SCOPE, TRANSFORMS
from .teachers import Teacher, TeacherPool, build_teachers
from .transforms import (
    GuidanceAugmentation,
    LoadImage,
    PackAnyUpInputs,
    ResizeCenterCrop,
    resize_square,
)

__all__ = [
    'DATASETS',
    'DATA_SAMPLERS',
    'HOOKS',
    'IMAGE_EXTENSIONS',
    'LOOPS',
    'METRICS',
    'MODELS',
    'SCOPE',
    'TRANSFORMS',
    'AnyUpDataPreprocessor',
    'AnyUpDistillationModel',
    'ExportStudentHook',
    'GuidanceAugmentation',
    'ImageFolderDataset',
    'LoadImage',
    'MultiCrop',
    'MultiCropViews',
    'PackAnyUpInputs',
    'ReconstructionLoss',
    'ResizeCenterCrop',
    'ResumableInfiniteSampler',
    'ResumableIterBasedTrainLoop',
    'Teacher',
    'TeacherPool',
    'UpsamplingMetric',
    'build_size_index',
    'build_teachers',
    'cosine_loss_map',
    'crop_feature_windows',
    'minmax_mse_map',
    'offsets_from_keys',
    'reconstruction_loss',
    'resize_square',
]

"""MMSegmentation integration of AnyUp.

Importing this package registers its backbone, necks, segmentor, decode head, metric, datasets
and transforms in MMSegmentation's registries. Configs load it with::

    custom_imports = dict(imports=['anyup_plugin.mmseg'], allow_failed_imports=False)
    default_scope = 'mmseg'
"""

from .backbones import FrozenTimmBackbone
from .datasets import (
    ADE20K151Dataset,
    CheckedSegDataset,
    CocoStuff27Dataset,
    DatasetCheckError,
    VOC2012Dataset,
)
from .decode_heads import LinearProbeHead
from .evaluation import PresentClassIoUMetric
from .necks import AnyUpNeck, BilinearNeck, ImageGuidedNeck
from .segmentors import AnyUpEncoderDecoder
from .transforms import ResizeShortSide, SegCenterCrop

__all__ = [
    'ADE20K151Dataset',
    'AnyUpEncoderDecoder',
    'AnyUpNeck',
    'BilinearNeck',
    'CheckedSegDataset',
    'CocoStuff27Dataset',
    'DatasetCheckError',
    'FrozenTimmBackbone',
    'ImageGuidedNeck',
    'LinearProbeHead',
    'PresentClassIoUMetric',
    'ResizeShortSide',
    'SegCenterCrop',
    'VOC2012Dataset',
]

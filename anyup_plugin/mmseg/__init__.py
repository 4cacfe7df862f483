"""MMSegmentation integration of AnyUp.

Importing this package registers its backbone, necks, segmentor, decode head, metric, datasets
and transforms in MMSegmentation's registries. Configs load it with::

    custom_imports = dict(imports=['anyup_plugin.mmseg'], allow_failed_imports=False)
    default_scope = 'mmseg'
"""

from .backbones import FrozenTimmBackbone as FrozenTimmBackbone  # deprecated name
from .backbones import FrozenTimmMMSegBackbone
from .datasets import (
    ADE20K151Dataset,
    CheckedSegDataset,
    CocoStuff27Dataset,
    DatasetCheckError,
    NYUv2DepthDataset,
    NYUv2NormalsDataset,
    VOC2012Dataset,
)
from .decode_heads import DepthProbeHead, LinearProbeHead, NormalProbeHead
from .evaluation import NYUDepthMetric, NYUNormalMetric, PresentClassIoUMetric
from .losses import ProbeDepthLoss, ProbeNormalLoss
from .necks import AnyUpNeck, BilinearNeck, ImageGuidedNeck, UpsamplerNeck
from .segmentors import AnyUpDepthEstimator, AnyUpEncoderDecoder, AnyUpNormalEstimator
from .transforms import (
    LoadNYUAnnotations,
    NYURandomResizedCrop,
    NYUResize,
    PackNYUInputs,
    RandomColorJitter,
    ResizeShortSide,
    SegCenterCrop,
)

__all__ = [
    'ADE20K151Dataset',
    'AnyUpDepthEstimator',
    'AnyUpEncoderDecoder',
    'AnyUpNeck',
    'AnyUpNormalEstimator',
    'BilinearNeck',
    'CheckedSegDataset',
    'CocoStuff27Dataset',
    'DatasetCheckError',
    'DepthProbeHead',
    'FrozenTimmMMSegBackbone',
    'ImageGuidedNeck',
    'LinearProbeHead',
    'LoadNYUAnnotations',
    'NYUDepthMetric',
    'NYUNormalMetric',
    'NYURandomResizedCrop',
    'NYUResize',
    'NYUv2DepthDataset',
    'NYUv2NormalsDataset',
    'NormalProbeHead',
    'PackNYUInputs',
    'PresentClassIoUMetric',
    'ProbeDepthLoss',
    'ProbeNormalLoss',
    'RandomColorJitter',
    'ResizeShortSide',
    'SegCenterCrop',
    'UpsamplerNeck',
    'VOC2012Dataset',
]

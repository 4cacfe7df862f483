"""Datasets of the linear-probe benchmarks, each checking its files when it is built."""

from .ade20k151 import ADE20K151Dataset
from .checked_dataset import CheckedSegDataset, DatasetCheckError
from .coco_stuff27 import COARSE_CLASSES, FINE_TO_COARSE, CocoStuff27Dataset
from .nyu_dataset import NYUv2Dataset
from .nyu_depth import NYUv2DepthDataset
from .nyu_normals import NYUv2NormalsDataset
from .voc2012 import VOC2012Dataset

__all__ = [
    'COARSE_CLASSES',
    'FINE_TO_COARSE',
    'ADE20K151Dataset',
    'CheckedSegDataset',
    'CocoStuff27Dataset',
    'DatasetCheckError',
    'NYUv2Dataset',
    'NYUv2DepthDataset',
    'NYUv2NormalsDataset',
    'VOC2012Dataset',
]

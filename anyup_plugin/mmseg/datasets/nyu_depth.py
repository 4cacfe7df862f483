"""NYUv2 depth (Probe3D protocol)."""

from __future__ import annotations

from mmseg.registry import DATASETS

from .nyu_dataset import NYUv2Dataset

__all__ = ['NYUv2DepthDataset']


@DATASETS.register_module()
class NYUv2DepthDataset(NYUv2Dataset):
    """NYUv2 images with ground-truth depth (metres; 0 = missing).

    Splits of the converted layout: ``test`` (654 labelled images, rawDepths: the
    evaluation set), ``train`` (795 labelled), ``geonet_trainval`` (Probe3D's training set).
    See :class:`NYUv2Dataset` and ``tools/convert_nyuv2.py``.
    """

    METAINFO = dict(task='depth', max_depth=10.0)
    required = ('image', 'depth')

"""NYUv2 surface normals (Probe3D protocol)."""

from __future__ import annotations

from mmseg.registry import DATASETS

from .nyu_dataset import NYUv2Dataset

__all__ = ['NYUv2NormalsDataset']


@DATASETS.register_module()
class NYUv2NormalsDataset(NYUv2Dataset):
    """NYUv2 images with ground-truth normals (Ladicky et al. for the labelled set, Bansal et al.
    for GeoNet) and depth, which marks where normals are scored (depth > 0).

    Same splits as :class:`NYUv2DepthDataset`; see :class:`NYUv2Dataset`.
    """

    METAINFO = dict(task='normals', max_depth=10.0)
    required = ('image', 'depth', 'normals')

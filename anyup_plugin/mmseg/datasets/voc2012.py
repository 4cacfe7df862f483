"""PASCAL VOC 2012 segmentation, official train/val split (no SBD augmentation)."""

from __future__ import annotations

from mmseg.datasets import PascalVOCDataset
from mmseg.registry import DATASETS

from .checked_dataset import CheckedSegDataset

__all__ = ['VOC2012Dataset']


@DATASETS.register_module()
class VOC2012Dataset(CheckedSegDataset):
    """PASCAL VOC 2012: 21 classes (background + 20 objects), border pixels 255 ignored.

    The AnyUp/JAFAR probes use the official ``ImageSets/Segmentation/train.txt`` (1,464
    images) and ``val.txt`` (1,449 images) with the ``SegmentationClass`` palette PNGs, not
    the 10,582-image SBD-augmented train set of MMSeg's ``voc12aug`` configs. Class names
    and colours are MMSeg's ``PascalVOCDataset``'s.

    Layout::

        VOCdevkit/VOC2012/
            JPEGImages/*.jpg
            SegmentationClass/*.png          (palette PNGs: values 0..20 and 255)
            ImageSets/Segmentation/{train,val}.txt

    Args:
        ann_file: Split list relative to ``data_root``.
        **kwargs: Passed to :class:`CheckedSegDataset`.
    """

    METAINFO = dict(
        classes=tuple(PascalVOCDataset.METAINFO['classes']),
        palette=[list(c) for c in PascalVOCDataset.METAINFO['palette']],
    )

    def __init__(
        self,
        ann_file: str = 'ImageSets/Segmentation/train.txt',
        img_suffix: str = '.jpg',
        seg_map_suffix: str = '.png',
        **kwargs,
    ) -> None:
        kwargs.setdefault(
            'data_prefix', dict(img_path='JPEGImages', seg_map_path='SegmentationClass')
        )
        super().__init__(
            ann_file=ann_file, img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs
        )

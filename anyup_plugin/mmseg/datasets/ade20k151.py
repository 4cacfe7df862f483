"""ADE20K with 151 classes: label 0 ("other") is a class, as in the AnyUp/JAFAR probes."""

from __future__ import annotations

from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS

from .checked_dataset import CheckedSegDataset

__all__ = ['ADE20K151Dataset']


@DATASETS.register_module()
class ADE20K151Dataset(CheckedSegDataset):
    """ADEChallengeData2016 (SceneParsing) with all 151 label values as classes.

    MMSeg's ``ADE20KDataset`` uses ``reduce_zero_label=True``: label 0 ("other", pixels of
    none of the 150 benchmark classes) becomes the ignore index and the rest shift down by
    one, giving 150 classes. The AnyUp and JAFAR linear probes instead train and evaluate on
    the raw annotation values 0..150, so "other" is class 0 and counts in mIoU. The other
    150 names and colours are MMSeg's, shifted up by one.

    Layout (20,210 training / 2,000 validation images in the official release)::

        ADEChallengeData2016/
            images/{training,validation}/ADE_*_XXXXXXXX.jpg
            annotations/{training,validation}/ADE_*_XXXXXXXX.png   (values 0..150)

    Args:
        **kwargs: Passed to :class:`CheckedSegDataset` (``data_root``, ``data_prefix``,
            ``pipeline``, ``check_labels``, ...).
    """

    METAINFO = dict(
        classes=('other',) + tuple(ADE20KDataset.METAINFO['classes']),
        palette=[[0, 0, 0]] + [list(c) for c in ADE20KDataset.METAINFO['palette']],
    )

    def __init__(self, img_suffix: str = '.jpg', seg_map_suffix: str = '.png', **kwargs) -> None:
        if kwargs.get('reduce_zero_label'):
            raise ValueError(
                "ADE20K151Dataset keeps label 0 as a class; use MMSeg's ADE20KDataset for the "
                '150-class reduce_zero_label setting'
            )
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

"""COCO-Stuff with the 27 coarse classes on the curated image lists (IIC/STEGO protocol)."""

from __future__ import annotations

from mmseg.registry import DATASETS

from anyup_plugin.class_names import (
    COCO_STUFF27_CLASSES,
    COCO_STUFF27_FINE_TO_COARSE,
    COCO_STUFF_NUM_FINE_LABELS,
)

from .checked_dataset import CheckedSegDataset

__all__ = ['COARSE_CLASSES', 'FINE_TO_COARSE', 'CocoStuff27Dataset']

#: The 27 coarse classes and the fine-to-coarse label map, shared with the Detectron2 adapter.
COARSE_CLASSES: tuple[str, ...] = COCO_STUFF27_CLASSES
FINE_TO_COARSE: dict[int, int] = COCO_STUFF27_FINE_TO_COARSE
_NUM_FINE_LABELS = COCO_STUFF_NUM_FINE_LABELS


@DATASETS.register_module()
class CocoStuff27Dataset(CheckedSegDataset):
    """COCO-Stuff 164k reduced to 27 coarse classes, on the curated train/val lists.

    This is the setting of IIC, STEGO, FeatUp, LoftUp, JAFAR and AnyUp: the images listed in
    ``curated/{train2017,val2017}/Coco164kFull_Stuff_Coarse.txt`` (images whose labels are
    mostly stuff), with the COCO-Stuff fine labels of ``stuffthingmaps_trainval2017`` mapped
    to their super-category (:data:`FINE_TO_COARSE`). It is not MMSeg's 171-class
    ``COCOStuffDataset``. Fine values without a coarse class (unused ids, 182 "other") and 255
    become 255 (ignored). The mapping is applied by MMSeg's ``LoadAnnotations`` through each
    sample's ``label_map``, so the stock pipeline works unchanged.

    Layout (the one STEGO's download script produces)::

        cocostuff/
            images/{train2017,val2017}/000000XXXXXX.jpg
            annotations/{train2017,val2017}/000000XXXXXX.png   (fine ids 0..181, 255)
            curated/{train2017,val2017}/Coco164kFull_Stuff_Coarse.txt  (one image id a line)

    Args:
        ann_file: Curated list relative to ``data_root``.
        **kwargs: Passed to :class:`CheckedSegDataset`; ``data_prefix`` defaults to the
            ``train2017`` folders.
    """

    METAINFO = dict(
        classes=COARSE_CLASSES,
        palette=[
            [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3],
            [120, 120, 80], [140, 140, 140], [204, 5, 255], [230, 230, 230], [220, 20, 60],
            [224, 5, 255], [0, 0, 142], [120, 120, 70], [80, 80, 80], [250, 170, 30],
            [255, 6, 82], [143, 255, 140], [204, 255, 4], [255, 51, 7], [204, 70, 3],
            [70, 70, 70], [150, 100, 100], [107, 142, 35], [70, 130, 180], [120, 80, 60],
            [190, 153, 153], [0, 102, 200],
        ],
    )  # fmt: skip

    def __init__(
        self,
        ann_file: str = 'curated/train2017/Coco164kFull_Stuff_Coarse.txt',
        img_suffix: str = '.jpg',
        seg_map_suffix: str = '.png',
        **kwargs,
    ) -> None:
        kwargs.setdefault(
            'data_prefix', dict(img_path='images/train2017', seg_map_path='annotations/train2017')
        )
        kwargs.setdefault('num_raw_labels', _NUM_FINE_LABELS)
        super().__init__(
            ann_file=ann_file, img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs
        )

    def load_data_list(self) -> list[dict]:
        """Loads the curated list and attaches the fine-to-coarse map to every sample."""
        label_map = {fine: FINE_TO_COARSE.get(fine, 255) for fine in range(_NUM_FINE_LABELS)}
        data_list = super().load_data_list()
        for info in data_list:
            info['label_map'] = label_map
        return data_list

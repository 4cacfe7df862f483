"""COCO-Stuff with the 27 coarse classes on the curated image lists (IIC/STEGO protocol)."""

from __future__ import annotations

from mmseg.registry import DATASETS

from .checked_dataset import CheckedSegDataset

__all__ = ['COARSE_CLASSES', 'FINE_TO_COARSE', 'CocoStuff27Dataset']

#: The 27 coarse classes: the 12 COCO thing super-categories, then the 15 COCO-Stuff stuff
#: super-categories, in the index order of the IIC/STEGO evaluation. The thing and stuff
#: "food" and "furniture" super-categories are distinct classes, hence the suffixes.
COARSE_CLASSES: tuple[str, ...] = (
    'electronic', 'appliance', 'food', 'furniture', 'indoor', 'kitchen', 'accessory',
    'animal', 'outdoor', 'person', 'sports', 'vehicle',
    'ceiling', 'floor', 'food-stuff', 'furniture-stuff', 'raw-material', 'textile', 'wall',
    'window', 'building', 'ground', 'plant', 'sky', 'solid', 'structural', 'water',
)  # fmt: skip

# COCO / COCO-Stuff category ids (1..182) of each super-category. Thing ids have gaps
# (12, 26, 29, 30, 45, 66, 68, 69, 71, 83 are unused): 80 things, 91 stuff.
_SUPERCATEGORY_IDS: dict[str, tuple[int, ...]] = {
    'person': (1,),
    'vehicle': (2, 3, 4, 5, 6, 7, 8, 9),
    'outdoor': (10, 11, 13, 14, 15),
    'animal': (16, 17, 18, 19, 20, 21, 22, 23, 24, 25),
    'accessory': (27, 28, 31, 32, 33),
    'sports': (34, 35, 36, 37, 38, 39, 40, 41, 42, 43),
    'kitchen': (44, 46, 47, 48, 49, 50, 51),
    'food': (52, 53, 54, 55, 56, 57, 58, 59, 60, 61),
    'furniture': (62, 63, 64, 65, 67, 70),
    'electronic': (72, 73, 74, 75, 76, 77),
    'appliance': (78, 79, 80, 81, 82),
    'indoor': (84, 85, 86, 87, 88, 89, 90),
    'textile': (92, 93, 104, 105, 109, 131, 137, 141, 152, 167, 168),
    'plant': (94, 97, 119, 124, 129, 134, 142, 163, 169),
    'building': (95, 96, 128, 151, 158, 166),
    'furniture-stuff': (98, 107, 108, 110, 112, 123, 130, 133, 156, 161, 165),
    'structural': (99, 113, 138, 146, 164),
    'raw-material': (100, 132, 139, 143),
    'floor': (101, 114, 115, 116, 117, 118),
    'ceiling': (102, 103),
    'sky': (106, 157),
    'ground': (111, 125, 126, 136, 140, 144, 145, 147, 149, 154, 159),
    'water': (120, 148, 155, 178, 179),
    'food-stuff': (121, 122, 153, 170),
    'solid': (127, 135, 150, 160, 162, 182),
    'wall': (171, 172, 173, 174, 175, 176, 177),
    'window': (180, 181),
}

#: Fine label value in the ``stuffthingmaps`` PNGs (category id - 1, 0..181) -> coarse index.
FINE_TO_COARSE: dict[int, int] = {
    cat_id - 1: COARSE_CLASSES.index(name)
    for name, ids in _SUPERCATEGORY_IDS.items()
    for cat_id in ids
}

#: Label values the PNGs may hold besides 255: fine ids 0..181, and 182 ("other", id 183).
_NUM_FINE_LABELS = 183


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

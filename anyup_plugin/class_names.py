"""Class names and label maps of the segmentation benchmarks, free of any framework.

The MMSegmentation and Detectron2 dataset adapters read the benchmarks' classes from here, so
that both score the same classes in the same order. Only what no framework provides lives here:
COCO-Stuff's 27 coarse classes and their fine-to-coarse map (ADE20K and PASCAL VOC names come
with both frameworks).
"""

from __future__ import annotations

__all__ = ['COCO_STUFF27_CLASSES', 'COCO_STUFF27_FINE_TO_COARSE', 'COCO_STUFF_NUM_FINE_LABELS']

#: The 27 coarse classes: the 12 COCO thing super-categories, then the 15 COCO-Stuff stuff
#: super-categories, in the index order of the IIC/STEGO evaluation. The thing and stuff
#: "food" and "furniture" super-categories are distinct classes, hence the suffixes.
COCO_STUFF27_CLASSES: tuple[str, ...] = (
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
#: Values not in the map (unused ids, 182 "other", 255) are ignored.
COCO_STUFF27_FINE_TO_COARSE: dict[int, int] = {
    cat_id - 1: COCO_STUFF27_CLASSES.index(name)
    for name, ids in _SUPERCATEGORY_IDS.items()
    for cat_id in ids
}

#: Label values the PNGs may hold besides 255: fine ids 0..181, and 182 ("other", id 183).
COCO_STUFF_NUM_FINE_LABELS = 183

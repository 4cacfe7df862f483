"""Generated data for the demos and tests: one scene generator and the datasets drawn with it.

Nothing here is needed to use AnyUp; it lets every demo, test and tiny config run offline on
data the package makes itself.
"""

from .datasets import (
    COCO_STUFF_DEMO_FINE_LABELS,
    VOC_DEMO_LABELS,
    write_ade20k_layout_dataset,
    write_coco_stuff27_layout_dataset,
    write_image_folder,
    write_voc2012_layout_dataset,
)
from .scenes import DEMO_CLASSES, make_scene

__all__ = [
    'COCO_STUFF_DEMO_FINE_LABELS',
    'DEMO_CLASSES',
    'VOC_DEMO_LABELS',
    'make_scene',
    'write_ade20k_layout_dataset',
    'write_coco_stuff27_layout_dataset',
    'write_image_folder',
    'write_voc2012_layout_dataset',
]

"""Generated data for the demos and tests: one scene generator and the datasets drawn with it.

Nothing here is needed to use AnyUp; it lets every demo, test and tiny config run offline on
data the package makes itself.
"""

from .datasets import write_ade20k_layout_dataset, write_image_folder
from .scenes import DEMO_CLASSES, make_scene

__all__ = ['DEMO_CLASSES', 'make_scene', 'write_ade20k_layout_dataset', 'write_image_folder']

"""Registration of an ADE20K-layout folder with 151 classes (label 0 is a class)."""

from __future__ import annotations

import logging
import os
from functools import partial

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES

__all__ = ['ADE20K151_CLASSES', 'ADE20K151_SPLITS', 'register_ade20k151']

logger = logging.getLogger(__name__)

#: The 151 class names: "other" (label 0, pixels of no benchmark class) then ADE20K's 150.
ADE20K151_CLASSES: tuple[str, ...] = ('other', *ADE20K_SEM_SEG_CATEGORIES)
#: Dataset name suffix -> split folder of ADEChallengeData2016.
ADE20K151_SPLITS: dict[str, str] = {'train': 'training', 'val': 'validation'}


def register_ade20k151(
    root: str | os.PathLike[str],
    prefix: str = 'ade20k151_sem_seg',
    image_ext: str = 'jpg',
    gt_ext: str = 'png',
) -> list[str]:
    """Registers ``<prefix>_train`` and ``<prefix>_val`` in ``DatasetCatalog``/``MetadataCatalog``.

    Unlike Detectron2's builtin ``ade20k_sem_seg_*`` (150 classes, read from
    ``annotations_detectron2`` where "other" became 255), the raw annotations are used: values
    0..150 are the classes, as in the AnyUp/JAFAR probes, and 255 (absent from ADE20K) is the
    ignore value. The metadata sets ``evaluator_type='sem_seg'`` and ``ignore_label=255`` for
    ``SemSegEvaluator``. Names registered before are replaced.

    Layout::

        root/images/{training,validation}/*.jpg
        root/annotations/{training,validation}/*.png   (uint8, mode L, values 0..150)

    Args:
        root: The ADEChallengeData2016 folder (or a folder in the same layout).
        prefix: Dataset name prefix.
        image_ext: Image file extension.
        gt_ext: Annotation file extension.

    Returns:
        The registered dataset names.

    Raises:
        FileNotFoundError: ``root`` has no ``images``/``annotations`` folder for a split.
    """
    root = os.fspath(root)
    names = []
    for split, folder in ADE20K151_SPLITS.items():
        image_root = os.path.join(root, 'images', folder)
        gt_root = os.path.join(root, 'annotations', folder)
        for path in (image_root, gt_root):
            if not os.path.isdir(path):
                raise FileNotFoundError(
                    f'{path!r} does not exist: expected the ADEChallengeData2016 layout '
                    '(images/ and annotations/, each with training/ and validation/) under '
                    f'{root!r}'
                )
        name = f'{prefix}_{split}'
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(
            name, partial(load_sem_seg, gt_root, image_root, gt_ext=gt_ext, image_ext=image_ext)
        )
        MetadataCatalog.get(name).set(
            stuff_classes=list(ADE20K151_CLASSES),
            image_root=image_root,
            sem_seg_root=gt_root,
            evaluator_type='sem_seg',
            ignore_label=255,
        )
        names.append(name)
    logger.info('Registered %s from %s (%d classes)', names, root, len(ADE20K151_CLASSES))
    return names

"""The three linear-probe benchmarks in ``DatasetCatalog``/``MetadataCatalog``.

* ADE20K with 151 classes (label 0 "other" is a class), ``ade20k151_sem_seg_{train,val}``.
* COCO-Stuff with the 27 coarse classes on the curated lists,
  ``coco_stuff27_sem_seg_{train,val}``.
* PASCAL VOC 2012, official train (1,464) / val (1,449), no SBD, ``voc2012_sem_seg_{train,val}``.

Each dataset's metadata has ``stuff_classes``, ``ignore_label=255`` and
``evaluator_type='sem_seg'`` for ``SemSegEvaluator``. COCO-Stuff's metadata also has
``label_map`` (fine label -> coarse class; values not in it are ignored), which
:class:`~anyup_plugin.detectron2.data.ProbeDatasetMapper` and the evaluator's label loader
apply, so the fine ``stuffthingmaps`` PNGs are read as they are downloaded, as the
MMSegmentation adapter reads them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from functools import partial

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as VOC_OBJECT_CLASSES

from anyup_plugin.class_names import COCO_STUFF27_CLASSES, COCO_STUFF27_FINE_TO_COARSE

__all__ = [
    'ADE20K151_CLASSES',
    'COCO_STUFF27_CLASSES',
    'DATASET_ROOT_KEYS',
    'VOC2012_CLASSES',
    'load_listed_sem_seg',
    'register_ade20k151',
    'register_coco_stuff27',
    'register_datasets_from_cfg',
    'register_voc2012',
    'root_key_of',
]

logger = logging.getLogger(__name__)

#: The 151 class names: "other" (label 0, pixels of no benchmark class) then ADE20K's 150.
ADE20K151_CLASSES: tuple[str, ...] = ('other', *ADE20K_SEM_SEG_CATEGORIES)
#: The 21 VOC classes: background (label 0) then Detectron2's 20 PASCAL VOC object classes.
VOC2012_CLASSES: tuple[str, ...] = ('background', *VOC_OBJECT_CLASSES)
IGNORE_LABEL = 255


def _check_dir(path: str, root: str, layout: str, ext: str | None = None) -> None:
    """Raises ``FileNotFoundError`` when ``path`` is missing, ``ValueError`` when it is empty."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f'{path!r} does not exist: expected {layout} under {root!r}')
    if ext is not None:
        with os.scandir(path) as entries:
            if not any(e.name.endswith(f'.{ext}') for e in entries):
                raise ValueError(f'{path!r} holds no .{ext} file: expected {layout} under {root!r}')


def load_listed_sem_seg(
    list_file: str, image_root: str, gt_root: str, image_ext: str = 'jpg', gt_ext: str = 'png'
) -> list[dict]:
    """Dataset dicts of the images named in ``list_file`` (one id a line, no extension).

    Args:
        list_file: The split list.
        image_root: Folder of ``<id>.<image_ext>``.
        gt_root: Folder of ``<id>.<gt_ext>``.
        image_ext: Image file extension.
        gt_ext: Label file extension.

    Returns:
        ``[{'file_name': ..., 'sem_seg_file_name': ...}, ...]`` in the list's order.

    Raises:
        ValueError: The list is empty, or names files that do not exist (the first are named).
    """
    with open(list_file) as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise ValueError(f'split list {list_file!r} is empty')
    records, missing = [], []
    for image_id in ids:
        image = os.path.join(image_root, f'{image_id}.{image_ext}')
        label = os.path.join(gt_root, f'{image_id}.{gt_ext}')
        missing.extend(p for p in (image, label) if not os.path.isfile(p))
        records.append({'file_name': image, 'sem_seg_file_name': label})
    if missing:
        raise ValueError(
            f'{len(missing)} file(s) listed in {list_file!r} do not exist, e.g. {missing[:3]}'
        )
    return records


def _register(
    name: str,
    loader: Callable[[], list[dict]],
    classes: tuple[str, ...],
    image_root: str,
    gt_root: str,
    label_map: Mapping[int, int] | None = None,
) -> None:
    """Registers (or replaces) ``name`` with sem-seg metadata."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    meta = {
        'stuff_classes': list(classes),
        'image_root': image_root,
        'sem_seg_root': gt_root,
        'evaluator_type': 'sem_seg',
        'ignore_label': IGNORE_LABEL,
    }
    if label_map is not None:
        meta['label_map'] = dict(label_map)
    MetadataCatalog.get(name).set(**meta)


def register_ade20k151(
    root: str | os.PathLike[str],
    prefix: str = 'ade20k151_sem_seg',
    image_ext: str = 'jpg',
    gt_ext: str = 'png',
) -> list[str]:
    """Registers ``<prefix>_train`` and ``<prefix>_val``, ADE20K with 151 classes.

    Unlike Detectron2's builtin ``ade20k_sem_seg_*`` (150 classes, read from
    ``annotations_detectron2`` where "other" became 255), the raw annotations are used: values
    0..150 are the classes, as in the AnyUp/JAFAR probes, and 255 (absent from ADE20K) is the
    ignore value. Names registered before are replaced.

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
        FileNotFoundError: A split folder is missing.
        ValueError: A split folder holds no file of its extension.
    """
    root = os.fspath(root)
    layout = 'the ADEChallengeData2016 layout (images/ and annotations/, each with training/ '
    layout += 'and validation/)'
    names = []
    for split, folder in (('train', 'training'), ('val', 'validation')):
        image_root = os.path.join(root, 'images', folder)
        gt_root = os.path.join(root, 'annotations', folder)
        _check_dir(image_root, root, layout, image_ext)
        _check_dir(gt_root, root, layout, gt_ext)
        loader = partial(load_sem_seg, gt_root, image_root, gt_ext=gt_ext, image_ext=image_ext)
        name = f'{prefix}_{split}'
        _register(name, loader, ADE20K151_CLASSES, image_root, gt_root)
        names.append(name)
    logger.info('Registered %s from %s (%d classes)', names, root, len(ADE20K151_CLASSES))
    return names


def _register_listed(
    root: str,
    prefix: str,
    splits: dict[str, tuple[str, str, str]],
    classes: tuple[str, ...],
    layout: str,
    label_map: Mapping[int, int] | None = None,
) -> list[str]:
    """Registers one dataset per split: ``split -> (list file, image folder, label folder)``."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f'dataset root {root!r} does not exist: expected {layout}')
    names = []
    for split, (list_rel, image_rel, gt_rel) in splits.items():
        list_file = os.path.join(root, list_rel)
        image_root, gt_root = os.path.join(root, image_rel), os.path.join(root, gt_rel)
        if not os.path.isfile(list_file):
            raise FileNotFoundError(
                f'split list {list_file!r} does not exist: expected {layout} under {root!r}'
            )
        if os.path.getsize(list_file) == 0:
            raise ValueError(f'split list {list_file!r} under {root!r} is empty')
        _check_dir(image_root, root, layout)
        _check_dir(gt_root, root, layout)
        loader = partial(load_listed_sem_seg, list_file, image_root, gt_root)
        name = f'{prefix}_{split}'
        _register(name, loader, classes, image_root, gt_root, label_map)
        names.append(name)
    logger.info('Registered %s from %s (%d classes)', names, root, len(classes))
    return names


def register_coco_stuff27(
    root: str | os.PathLike[str], prefix: str = 'coco_stuff27_sem_seg'
) -> list[str]:
    """Registers ``<prefix>_train`` and ``<prefix>_val``: COCO-Stuff, 27 coarse classes.

    The images of the curated lists ``curated/{train2017,val2017}/Coco164kFull_Stuff_Coarse.txt``
    (IIC/STEGO, also FeatUp, LoftUp, JAFAR, AnyUp) with the fine ``stuffthingmaps`` labels;
    the metadata's ``label_map``
    (:data:`~anyup_plugin.class_names.COCO_STUFF27_FINE_TO_COARSE`) maps them to the 27
    super-categories when they are read, fine labels without a coarse class (and 255) to 255.
    Not Detectron2's or MMSeg's 171-class COCO-Stuff.

    Layout (the one STEGO's download script produces)::

        root/images/{train2017,val2017}/000000XXXXXX.jpg
        root/annotations/{train2017,val2017}/000000XXXXXX.png   (fine ids 0..181, 255)
        root/curated/{train2017,val2017}/Coco164kFull_Stuff_Coarse.txt   (one image id a line)

    Args:
        root: The COCO-Stuff folder.
        prefix: Dataset name prefix.

    Returns:
        The registered dataset names.

    Raises:
        FileNotFoundError: ``root``, a list or a folder is missing.
        ValueError: A list is empty.
    """
    root = os.fspath(root)
    splits = {
        split: (
            f'curated/{folder}/Coco164kFull_Stuff_Coarse.txt',
            f'images/{folder}',
            f'annotations/{folder}',
        )
        for split, folder in (('train', 'train2017'), ('val', 'val2017'))
    }
    layout = 'the COCO-Stuff layout (images/, annotations/ and curated/, each with train2017/ '
    layout += 'and val2017/)'
    return _register_listed(
        root, prefix, splits, COCO_STUFF27_CLASSES, layout, COCO_STUFF27_FINE_TO_COARSE
    )


def register_voc2012(root: str | os.PathLike[str], prefix: str = 'voc2012_sem_seg') -> list[str]:
    """Registers ``<prefix>_train`` and ``<prefix>_val``: PASCAL VOC 2012, 21 classes.

    The official ``ImageSets/Segmentation/train.txt`` (1,464 images) and ``val.txt`` (1,449)
    with the ``SegmentationClass`` palette PNGs (read as palette indices: 0..20, 255 on
    object borders, ignored); not the SBD-augmented train set.

    Layout::

        root/JPEGImages/*.jpg
        root/SegmentationClass/*.png
        root/ImageSets/Segmentation/{train,val}.txt

    Args:
        root: The ``VOCdevkit/VOC2012`` folder.
        prefix: Dataset name prefix.

    Returns:
        The registered dataset names.

    Raises:
        FileNotFoundError: ``root``, a list or a folder is missing.
        ValueError: A list is empty.
    """
    root = os.fspath(root)
    splits = {
        split: (f'ImageSets/Segmentation/{split}.txt', 'JPEGImages', 'SegmentationClass')
        for split in ('train', 'val')
    }
    layout = 'the VOC2012 layout (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)'
    return _register_listed(root, prefix, splits, VOC2012_CLASSES, layout)


#: Dataset name prefix -> (``DATASETS`` key of its root, registration function).
DATASET_ROOT_KEYS: dict[str, tuple[str, Callable[..., list[str]]]] = {
    'ade20k151_sem_seg': ('ADE20K151_ROOT', register_ade20k151),
    'coco_stuff27_sem_seg': ('COCO_STUFF27_ROOT', register_coco_stuff27),
    'voc2012_sem_seg': ('VOC2012_ROOT', register_voc2012),
}


def root_key_of(dataset_name: str) -> str | None:
    """The ``DATASETS`` key holding the root of ``dataset_name`` (``None`` for other datasets)."""
    for prefix, (key, _) in DATASET_ROOT_KEYS.items():
        if dataset_name.startswith(f'{prefix}_'):
            return key
    return None


def register_datasets_from_cfg(cfg: CfgNode) -> list[str]:
    """Registers every benchmark whose root key (``DATASETS.<X>_ROOT``) is set.

    Args:
        cfg: Config with :func:`~anyup_plugin.detectron2.add_anyup_config`'s keys.

    Returns:
        The registered dataset names.
    """
    names = []
    for key, register in DATASET_ROOT_KEYS.values():
        root = cfg.DATASETS.get(key, '')
        if root:
            names += register(root)
    return names

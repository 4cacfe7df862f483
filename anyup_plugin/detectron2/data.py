"""The probe protocol's data pipeline (short-side resize, centre crop, flip) in Detectron2 terms."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.evaluation.sem_seg_evaluation import load_image_into_numpy_array

__all__ = [
    'CenterCrop',
    'CroppedGroundTruthLoader',
    'LabelReader',
    'ProbeDatasetMapper',
    'build_probe_augmentations',
    'label_reader_for',
]


class CenterCrop(T.Augmentation):
    """Crops the centre ``size x size`` square (or less, where the image is smaller).

    Args:
        size: Side of the crop in pixels.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f'crop size must be >= 1, got {size}')
        self.size = int(size)

    def get_transform(self, image: np.ndarray) -> T.Transform:
        """(H, W[, C]) array -> the crop of its centre."""
        height, width = image.shape[:2]
        crop_h, crop_w = min(self.size, height), min(self.size, width)
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        return T.CropTransform(left, top, crop_w, crop_h)


def build_probe_augmentations(cfg: CfgNode, is_train: bool) -> list[T.Augmentation]:
    """Short side to ``MIN_SIZE_TRAIN``/``MIN_SIZE_TEST``, centre crop, (train) random flip.

    Images resize bilinearly (PIL, antialiased when shrinking), labels with nearest.
    ``INPUT.CENTER_CROP_SIZE`` 0 skips the crop; ``INPUT.RANDOM_FLIP`` 'none' the flip.

    Args:
        cfg: Config with :func:`add_anyup_config`'s keys.
        is_train: Training (random flip) or test (deterministic) pipeline.

    Returns:
        The augmentations, for ``DatasetMapper(cfg, is_train, augmentations=...)``.
    """
    if is_train:
        augs: list[T.Augmentation] = [
            T.ResizeShortestEdge(
                cfg.INPUT.MIN_SIZE_TRAIN,
                cfg.INPUT.MAX_SIZE_TRAIN,
                cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
            )
        ]
    else:
        augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, 'choice')]
    if cfg.INPUT.CENTER_CROP_SIZE > 0:
        augs.append(CenterCrop(cfg.INPUT.CENTER_CROP_SIZE))
    if is_train and cfg.INPUT.RANDOM_FLIP != 'none':
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == 'horizontal',
                vertical=cfg.INPUT.RANDOM_FLIP == 'vertical',
            )
        )
    return augs


class LabelReader:
    """Reads a label file as stored (palette indices for palette PNGs), mapped to train ids.

    Detectron2's ``DatasetMapper`` converts label files to greyscale (``"L"``), which turns
    palette PNGs such as VOC's ``SegmentationClass`` into luminance values; this reads the
    stored values, as ``SemSegEvaluator`` does, so training and evaluation see the same labels.
    With a ``label_map`` (a dataset's metadata, e.g. COCO-Stuff's fine-to-coarse map), values
    in it become their train id and all others ``ignore_label``.

    Args:
        label_map: Stored value -> train id; ``None`` keeps the values.
        ignore_label: Train id of the values ``label_map`` does not list.
    """

    def __init__(self, label_map: Mapping[int, int] | None = None, ignore_label: int = 255) -> None:
        self.label_map = (
            None if label_map is None else {int(k): int(v) for k, v in label_map.items()}
        )
        self.ignore_label = int(ignore_label)
        self._lut: np.ndarray | None = None
        if self.label_map is not None:
            size = max(256, max(self.label_map, default=0) + 1)
            self._lut = np.full(size, self.ignore_label, dtype=np.int64)
            for value, train_id in self.label_map.items():
                self._lut[value] = train_id

    def __call__(self, filename: str) -> np.ndarray:
        """Label file -> (H, W) uint8 train ids."""
        labels = load_image_into_numpy_array(filename, dtype=np.int64)
        if self._lut is not None:
            inside = (labels >= 0) & (labels < len(self._lut))
            labels = np.where(inside, self._lut[np.clip(labels, 0, len(self._lut) - 1)],
                              self.ignore_label)  # fmt: skip
        return labels.astype(np.uint8)


def label_reader_for(dataset_names: Sequence[str]) -> LabelReader:
    """The :class:`LabelReader` of datasets' metadata (``label_map``, ``ignore_label``).

    Raises:
        ValueError: The datasets read their labels differently (they cannot share a loader).
    """
    readers = []
    for name in dataset_names:
        meta = MetadataCatalog.get(name)
        readers.append(LabelReader(meta.get('label_map'), meta.get('ignore_label', 255)))
    if not readers:
        return LabelReader()
    if any((r.label_map, r.ignore_label) != (readers[0].label_map, readers[0].ignore_label)
           for r in readers[1:]):  # fmt: skip
        raise ValueError(
            f'datasets {list(dataset_names)} have different label_map/ignore_label metadata and '
            'cannot share one loader: train on one of them, or on datasets that agree'
        )
    return readers[0]


class CroppedGroundTruthLoader:
    """``SemSegEvaluator``'s ``sem_seg_loading_fn``: labels as training reads them, test pipeline.

    ``SemSegEvaluator`` compares predictions (at the size the model was given, when the
    dataset dicts carry no ``height``/``width``) with the label file. Reading it with the
    dataset's :class:`LabelReader` and applying the same deterministic resize and centre crop
    (nearest) scores exactly the protocol's single centre crop, in train ids.

    Args:
        augmentations: Deterministic test augmentations (:func:`build_probe_augmentations`);
            empty to score at the label file's size.
        reader: How the dataset's labels are read (default: as stored).
    """

    def __init__(
        self, augmentations: Sequence[T.Augmentation], reader: LabelReader | None = None
    ) -> None:
        self.augmentations = list(augmentations)
        self.reader = reader or LabelReader()

    def __call__(self, filename: str, dtype: object = None) -> np.ndarray:
        """Label file -> (h, w) labels after the test pipeline."""
        labels = self.reader(filename)
        for aug in self.augmentations:
            labels = aug.get_transform(labels).apply_segmentation(labels)
        return np.asarray(labels, dtype=dtype)


class ProbeDatasetMapper(DatasetMapper):
    """``DatasetMapper`` with the probe's pipeline, labels read by :class:`LabelReader`.

    Labels are read as stored (palette indices) and mapped with the dataset's ``label_map``.
    Detectron2 records the original image size as ``height``/``width``, and the
    meta-architecture resizes predictions back to it. With a centre crop the prediction
    covers only part of the original, so in test mode this records the transformed size
    instead; :class:`CroppedGroundTruthLoader` crops the labels to match.

    Args:
        cfg: Config with :func:`add_anyup_config`'s keys.
        is_train: Training or test mapping.
        dataset_names: Datasets whose metadata says how to read labels; default
            ``DATASETS.TRAIN`` (training) or ``DATASETS.TEST`` (test).
    """

    def __init__(
        self, cfg: CfgNode, is_train: bool = True, dataset_names: Sequence[str] | None = None
    ) -> None:
        super().__init__(
            cfg, is_train=is_train, augmentations=build_probe_augmentations(cfg, is_train)
        )
        if dataset_names is None:
            dataset_names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
        self.read_labels = label_reader_for(list(dataset_names))
        self.score_at_input_size = not is_train and cfg.INPUT.CENTER_CROP_SIZE > 0

    def __call__(self, dataset_dict: dict) -> dict:
        """Dataset dict -> model input dict (``image`` (3, H, W) uint8, ``sem_seg`` (H, W))."""
        record = copy.deepcopy(dataset_dict)
        image = utils.read_image(record['file_name'], format=self.image_format)
        utils.check_image_size(record, image)
        sem_seg = None
        if 'sem_seg_file_name' in record:
            sem_seg = self.read_labels(record.pop('sem_seg_file_name'))
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        self.augmentations(aug_input)
        image = aug_input.image
        record['image'] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if aug_input.sem_seg is not None:
            record['sem_seg'] = torch.as_tensor(aug_input.sem_seg.astype('long'))
        if self.score_at_input_size:
            record['height'], record['width'] = (int(v) for v in image.shape[:2])
        record.pop('annotations', None)
        return record

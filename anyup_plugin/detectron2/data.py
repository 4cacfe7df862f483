"""The probe protocol's data pipeline (short-side resize, centre crop, flip) in Detectron2 terms."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from detectron2.evaluation.sem_seg_evaluation import load_image_into_numpy_array

__all__ = [
    'CenterCrop',
    'CroppedGroundTruthLoader',
    'ProbeDatasetMapper',
    'build_probe_augmentations',
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


class CroppedGroundTruthLoader:
    """``SemSegEvaluator``'s ``sem_seg_loading_fn`` applying the test pipeline to the labels.

    ``SemSegEvaluator`` compares predictions (at the size the model was given, when the
    dataset dicts carry no ``height``/``width``) with the label file. Applying the same
    deterministic resize and centre crop (nearest) to the labels scores exactly the
    protocol's single centre crop.

    Args:
        augmentations: Deterministic test augmentations (:func:`build_probe_augmentations`).
    """

    def __init__(self, augmentations: Sequence[T.Augmentation]) -> None:
        self.augmentations = list(augmentations)

    def __call__(self, filename: str, dtype: object = None) -> np.ndarray:
        """Label file -> (h, w) labels after the test pipeline."""
        labels = load_image_into_numpy_array(filename, dtype=np.uint8)
        for aug in self.augmentations:
            labels = aug.get_transform(labels).apply_segmentation(labels)
        return np.asarray(labels, dtype=dtype)


class ProbeDatasetMapper(DatasetMapper):
    """``DatasetMapper`` whose test outputs are scored at the size the model sees.

    Detectron2 records the original image size as ``height``/``width``, and the
    meta-architecture resizes predictions back to it. With a centre crop the prediction
    covers only part of the original, so in test mode this records the transformed size
    instead; :class:`CroppedGroundTruthLoader` crops the labels to match.

    Args:
        cfg: Config with :func:`add_anyup_config`'s keys.
        is_train: Training or test mapping.
    """

    def __init__(self, cfg: CfgNode, is_train: bool = True) -> None:
        super().__init__(
            cfg, is_train=is_train, augmentations=build_probe_augmentations(cfg, is_train)
        )
        self.score_at_input_size = not is_train and cfg.INPUT.CENTER_CROP_SIZE > 0

    def __call__(self, dataset_dict: dict) -> dict:
        """Dataset dict -> model input dict (``image`` (3, H, W) uint8, ``sem_seg`` (H, W))."""
        out = super().__call__(dataset_dict)
        if self.score_at_input_size:
            out['height'], out['width'] = (int(v) for v in out['image'].shape[-2:])
        return out

"""A segmentation dataset that checks its files before any training starts."""

from __future__ import annotations

import os
import os.path as osp
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from mmengine.logging import print_log
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS
from PIL import Image

__all__ = ['DATA_SOURCES', 'CheckedSegDataset', 'DatasetCheckError', 'how_to_get']

#: How to obtain each segmentation dataset the configs read, by the end of its default data
#: root (first match wins, so the generated demo comes before the real ADE20K). The NYUv2
#: datasets name their converter command themselves (``nyu_dataset.py``).
DATA_SOURCES: tuple[tuple[str, str], ...] = (
    (
        'demo_ade20k/ADEChallengeData2016',
        'run `python tools/make_demo_dataset.py` (it writes data/demo_ade20k)',
    ),
    (
        'ADEChallengeData2016',
        'download http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip and '
        'unzip it into data/ade/',
    ),
    (
        'VOCdevkit/VOC2012',
        'download VOCtrainval_11-May-2012.tar from http://host.robots.ox.ac.uk/pascal/VOC/'
        'voc2012/ and extract it into data/',
    ),
    (
        'cocostuff',
        "run STEGO's src/download_datasets.py (https://github.com/mhamilton723/STEGO) and "
        'place the cocostuff folder it writes (images/, annotations/, curated/) at '
        'data/cocostuff',
    ),
)


def how_to_get(data_root: str) -> str | None:
    """What makes or downloads the dataset at ``data_root`` (see :data:`DATA_SOURCES`).

    Args:
        data_root: A dataset root as a config names it (relative or absolute).

    Returns:
        The instruction, or None for a root no config uses by default.
    """
    root = osp.normpath(data_root).replace(os.sep, '/')
    for tail, instruction in DATA_SOURCES:
        if root == tail or root.endswith('/' + tail):
            return instruction
    return None


class DatasetCheckError(ValueError):
    """A dataset root that cannot be trained on: empty, unpaired files, bad label values."""


@DATASETS.register_module()
class CheckedSegDataset(BaseSegDataset):
    """``BaseSegDataset`` that validates its root and files when it is built.

    MMEngine builds datasets when ``runner.train()``/``runner.test()`` start, before the
    first iteration, so a bad root fails within seconds instead of hours into a run (or,
    for label values, silently: MMSeg's loss ignores nothing it does not know about and
    CUDA reports an out-of-range class as a device-side assert). Checked, in order, each
    failure naming the first offending path:

    1. the data root, the image folder, the label folder and the split list exist;
    2. the dataset is not empty;
    3. every listed image exists and has its label map;
    4. every label map is single-channel and holds only values in
       ``[0, num_raw_labels)`` or ``ignore_index`` (``check_labels``).

    The checks apply to the samples actually used (after ``indices``). Remote storage
    (``backend_args``) skips the file checks.

    Args:
        check_labels: Read label maps to check their values: ``True`` all of them (the
            default; about 1-3 ms per map, in threads), an int ``n`` the first ``n``,
            ``False`` none.
        num_raw_labels: Number of valid label values stored in the files (before any
            ``label_map``); defaults to the number of classes.
        **kwargs: Passed to ``BaseSegDataset``.
    """

    def __init__(
        self, *args, check_labels: bool | int = True, num_raw_labels: int | None = None, **kwargs
    ) -> None:
        if isinstance(check_labels, bool):
            self.check_labels = -1 if check_labels else 0
        elif isinstance(check_labels, int) and check_labels >= 0:
            self.check_labels = check_labels
        else:
            raise ValueError(f'check_labels must be a bool or an int >= 0, got {check_labels!r}')
        self._num_raw_labels = num_raw_labels
        super().__init__(*args, **kwargs)

    @property
    def num_raw_labels(self) -> int:
        """How many label values (0..n-1) the label files may hold, besides ``ignore_index``."""
        if self._num_raw_labels is not None:
            return self._num_raw_labels
        return len(self.metainfo['classes'])

    # ------------------------------------------------------------------ checks
    def full_init(self) -> None:
        """Checks the root, loads the sample list, then checks every sample's files."""
        if self._fully_initialized:
            return
        if self.backend_args is None:
            self._check_paths_exist()
        super().full_init()
        if self.backend_args is None:
            infos = [self.get_data_info(i) for i in range(len(self))]
            self._check_pairs(infos)
            if self.check_labels:
                limit = len(infos) if self.check_labels < 0 else self.check_labels
                self._check_label_values([info['seg_map_path'] for info in infos[:limit]])

    def load_data_list(self) -> list[dict]:
        """Loads the sample list; raises :class:`DatasetCheckError` if it is empty."""
        data_list = super().load_data_list()
        if not data_list:
            img_dir = self.data_prefix.get('img_path', '')
            source = self.ann_file if osp.isfile(self.ann_file) else img_dir
            raise DatasetCheckError(
                f'{type(self).__name__}: no samples found in {source!r} '
                f'(images are expected as *{self.img_suffix} under {img_dir!r})'
            )
        return data_list

    def _check_paths_exist(self) -> None:
        name = type(self).__name__
        if self.data_root is not None and not osp.isdir(self.data_root):
            source = how_to_get(self.data_root)
            get = f' To get it, {source}; or point' if source else ' Point'
            raise FileNotFoundError(
                f'{name}: dataset root {self.data_root!r} does not exist or is not a folder.'
                f'{get} data_root (in the config, or with --cfg-options '
                'train_dataloader.dataset.data_root=... val_dataloader.dataset.data_root=...) '
                'at the dataset.'
            )
        for key in ('img_path', 'seg_map_path'):
            folder = self.data_prefix.get(key)
            if folder and not osp.isdir(folder):
                raise FileNotFoundError(f'{name}: {key} folder {folder!r} does not exist')
        if self.ann_file and not osp.isdir(self.ann_file) and not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'{name}: split list (ann_file) {self.ann_file!r} not found')

    def _check_pairs(self, infos: Iterable[dict]) -> None:
        name = type(self).__name__
        for info in infos:
            if not osp.isfile(info['img_path']):
                raise FileNotFoundError(f'{name}: image {info["img_path"]!r} not found')
            seg = info.get('seg_map_path')
            if seg is None:
                raise DatasetCheckError(
                    f'{name}: image {info["img_path"]!r} has no label map '
                    '(data_prefix has no seg_map_path)'
                )
            if not osp.isfile(seg):
                raise DatasetCheckError(
                    f'{name}: image {info["img_path"]!r} has no label map: {seg!r} not found'
                )

    def _check_label_values(self, paths: list[str]) -> None:
        num, ignore = self.num_raw_labels, self.ignore_index
        start = time.perf_counter()
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            problems = pool.map(lambda p: _label_problem(p, num, ignore), paths)
            for path, problem in zip(paths, problems):
                if problem is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise DatasetCheckError(f'{type(self).__name__}: label map {path!r} {problem}')
        print_log(
            f'{type(self).__name__}: checked {len(paths)} label maps '
            f'(values in [0, {num}) or {ignore}) in {time.perf_counter() - start:.1f} s',
            logger='current',
        )


def _label_problem(path: str, num_labels: int, ignore_index: int) -> str | None:
    """Returns what is wrong with a label map file, or None if it is fine."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            labels = np.asarray(img)
    except Exception as err:
        return f'cannot be read ({type(err).__name__}: {err})'
    if labels.ndim != 2:
        return (
            f'must be a single-channel image of class indices, got mode {mode!r} '
            f'with shape {labels.shape}'
        )
    if labels.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    else:
        values = np.unique(labels)
    bad = values[((values < 0) | (values >= num_labels)) & (values != ignore_index)]
    if bad.size:
        shown = ', '.join(str(int(v)) for v in bad[:10])
        return (
            f'holds label values outside the class range [0, {num_labels - 1}] '
            f'(and ignore index {ignore_index}): {shown}'
        )
    return None

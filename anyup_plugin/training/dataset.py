"""An image-folder dataset for training AnyUp: any folder tree of images, no labels.

It keeps the images whose short side is at least ``min_size`` (448 in the published recipe,
so the centre crop never upsamples). Reading a million image headers takes a while, so the
image sizes are kept in an index file (JSON): the next start lists the folder, reads headers
only of files it has not seen before and reuses the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import os.path as osp
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mmengine.dataset import BaseDataset
from mmengine.logging import print_log
from PIL import Image

from anyup_plugin.utils.io import atomic_write

from .registry import DATASETS

__all__ = ['IMAGE_EXTENSIONS', 'ImageFolderDataset', 'build_size_index', 'default_index_file']

#: File extensions treated as images (case-insensitive).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.ppm', '.pgm')

_INDEX_FORMAT = 'anyup-image-size-index'
_INDEX_VERSION = 1
_MAX_NAMED = 10


def default_index_file(data_root: str) -> str:
    """Where the size index of ``data_root`` is cached unless a path is given.

    ``$XDG_CACHE_HOME/anyup_plugin/size_index/<hash of the absolute folder path>.json``
    (``~/.cache`` when ``XDG_CACHE_HOME`` is unset), so read-only dataset folders work.
    """
    cache = os.environ.get('XDG_CACHE_HOME') or osp.join(osp.expanduser('~'), '.cache')
    digest = hashlib.sha1(osp.abspath(data_root).encode('utf-8')).hexdigest()[:16]
    return osp.join(cache, 'anyup_plugin', 'size_index', f'{digest}.json')


def _list_images(root: str, extensions: Sequence[str]) -> list[str]:
    """Relative paths of the image files under ``root`` (hidden folders skipped), sorted."""
    exts = tuple(e.lower() for e in extensions)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        for name in filenames:
            if not name.startswith('.') and name.lower().endswith(exts):
                found.append(osp.relpath(osp.join(dirpath, name), root))
    found.sort()
    return found


def _read_size(path: str) -> tuple[int, int] | str:
    """(width, height) from the image header, or an error description."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception as exc:
        return f'{type(exc).__name__}: {exc}'
    if width < 1 or height < 1:
        return f'empty image ({width}x{height})'
    return int(width), int(height)


def _load_index(index_file: str, root: str) -> tuple[dict[str, list[int]], dict[str, str]]:
    if not osp.isfile(index_file):
        return {}, {}
    try:
        with open(index_file, encoding='utf-8') as f:
            index = json.load(f)
        if index.get('format') != _INDEX_FORMAT or index.get('version') != _INDEX_VERSION:
            raise ValueError('unknown format')
        if index.get('root') != osp.abspath(root):
            raise ValueError(f'it indexes {index.get("root")!r}')
        return dict(index['sizes']), dict(index['unreadable'])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print_log(
            f'ignoring the size index {index_file} ({exc}); rebuilding it',
            logger='current',
            level=logging.WARNING,
        )
        return {}, {}


def _write_index(
    index_file: str, root: str, sizes: dict[str, list[int]], unreadable: dict[str, str]
) -> None:
    """Writes the index atomically (a temporary file renamed into place)."""
    try:
        with atomic_write(index_file) as tmp, open(tmp, 'w', encoding='utf-8') as f:
            json.dump(
                {
                    'format': _INDEX_FORMAT,
                    'version': _INDEX_VERSION,
                    'root': osp.abspath(root),
                    'sizes': sizes,
                    'unreadable': unreadable,
                },
                f,
            )
    except OSError as exc:
        print_log(
            f'could not write the size index {index_file} ({exc}); the next start will read '
            'the image headers again',
            logger='current',
            level=logging.WARNING,
        )


def build_size_index(
    data_root: str,
    index_file: str | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    num_workers: int = 8,
) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Lists the images under ``data_root`` with their sizes, using and updating the cache.

    Files already in the index are not opened again (an image replaced in place keeps its
    recorded size: delete the index file after editing a dataset). Files whose header cannot
    be read are recorded as unreadable and named in a warning the first time they are seen.

    Args:
        data_root: Folder to index (searched recursively, symbolic links followed).
        index_file: JSON cache path; default :func:`default_index_file`.
        extensions: File extensions treated as images.
        num_workers: Threads reading headers of new files.

    Returns:
        ``sizes`` (relative path -> (width, height)) and ``unreadable`` (relative path ->
        reason), both for the files present now.
    """
    index_file = index_file or default_index_file(data_root)
    files = _list_images(data_root, extensions)
    cached_sizes, cached_bad = _load_index(index_file, data_root)
    present = set(files)
    new = [f for f in files if f not in cached_sizes and f not in cached_bad]
    sizes = {k: v for k, v in cached_sizes.items() if k in present}
    unreadable = {k: v for k, v in cached_bad.items() if k in present}
    changed = len(sizes) != len(cached_sizes) or len(unreadable) != len(cached_bad)
    if new:
        print_log(
            f'reading the headers of {len(new)} new image file(s) under {data_root} '
            f'({len(files) - len(new)} known from {index_file})',
            logger='current',
            level=logging.INFO,
        )
        paths = [osp.join(data_root, f) for f in new]
        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
            results = list(pool.map(_read_size, paths, chunksize=64))
        for rel, result in zip(new, results):
            if isinstance(result, str):
                unreadable[rel] = result
                print_log(
                    f'skipping unreadable image {osp.join(data_root, rel)} ({result})',
                    logger='current',
                    level=logging.WARNING,
                )
            else:
                sizes[rel] = list(result)
        changed = True
    if changed:
        _write_index(index_file, data_root, sizes, unreadable)
    return {k: (v[0], v[1]) for k, v in sizes.items()}, unreadable


def _in_holdout(rel_path: str, fraction: float) -> bool:
    """A stable pseudo-random split by file name: the same file always lands on the same side."""
    digest = hashlib.md5(rel_path.replace(os.sep, '/').encode('utf-8')).hexdigest()
    return int(digest[:8], 16) / 0x100000000 < fraction


@DATASETS.register_module()
class ImageFolderDataset(BaseDataset):
    """All images under a folder whose short side is at least ``min_size``.

    Any folder tree works (ImageNet's ``train/<class>/<image>.JPEG`` included); labels are not
    used. Samples are dicts ``{'img_path', 'width', 'height'}`` passed through ``pipeline``.

    Args:
        data_root: The image folder.
        min_size: Keep only images with ``min(width, height) >= min_size``.
        pipeline: Transforms (configs or callables), see :mod:`anyup_plugin.training.transforms`.
        split: ``None`` (all images), ``'train'`` or ``'val'``: with ``holdout_fraction`` > 0,
            a stable hash of each file's relative path puts about that fraction of the images
            in ``'val'`` and the rest in ``'train'``, so held-out images are never trained on.
        holdout_fraction: Fraction of the images held out for ``split='val'``.
        max_images: Keep at most this many images (the first ones in sorted path order).
        index_file: Size index cache; default :func:`default_index_file`.
        extensions: File extensions treated as images.
        num_index_workers: Threads reading image headers for the index.
        lazy_init: Defer indexing until first use (MMEngine convention).
        max_refetch: How many times to draw another image when a file fails to load.
        test_mode: MMEngine's test mode (a failed load then raises instead of re-drawing).
        data_hint: How to get the images, named when ``data_root`` is missing (e.g. the
            command that makes them); the configs set it.

    Raises:
        FileNotFoundError: ``data_root`` is not a folder (the message says how to get it).
        ValueError: No usable image (the message names the folder and the size threshold) or
            an inconsistent split.
    """

    def __init__(
        self,
        data_root: str,
        min_size: int = 448,
        pipeline: Sequence[Any] = (),
        split: str | None = None,
        holdout_fraction: float = 0.0,
        max_images: int | None = None,
        index_file: str | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        num_index_workers: int = 8,
        lazy_init: bool = False,
        max_refetch: int = 1000,
        test_mode: bool = False,
        data_hint: str | None = None,
    ) -> None:
        if split not in (None, 'train', 'val'):
            raise ValueError(f"split must be None, 'train' or 'val', got {split!r}")
        if split == 'val' and not 0 < holdout_fraction < 1:
            raise ValueError(f"split='val' needs 0 < holdout_fraction < 1, got {holdout_fraction}")
        if not osp.isdir(data_root):
            get = f'To get the images, {data_hint}; or point' if data_hint else 'Point'
            raise FileNotFoundError(
                f'data_root {data_root!r} is not a folder. {get} data_root at a folder of '
                'images (in the config, or with --cfg-options '
                'train_dataloader.dataset.data_root=... val_dataloader.dataset.data_root=...)'
            )
        self.min_size = int(min_size)
        self.split = split
        self.holdout_fraction = float(holdout_fraction)
        self.max_images = max_images
        self.index_file = index_file or default_index_file(data_root)
        self.extensions = tuple(extensions)
        self.num_index_workers = num_index_workers
        super().__init__(
            data_root=data_root,
            pipeline=list(pipeline),
            lazy_init=lazy_init,
            max_refetch=max_refetch,
            test_mode=test_mode,
            serialize_data=True,
        )

    def load_data_list(self) -> list[dict[str, Any]]:
        """Indexes the folder and returns the usable images (see the class docstring)."""
        root = self.data_root
        sizes, unreadable = build_size_index(
            root, self.index_file, self.extensions, self.num_index_workers
        )
        if unreadable:
            named = ', '.join(sorted(unreadable)[:_MAX_NAMED])
            more = (
                f' and {len(unreadable) - _MAX_NAMED} more' if len(unreadable) > _MAX_NAMED else ''
            )
            print_log(
                f'{len(unreadable)} unreadable image file(s) under {root} skipped: {named}{more} '
                f'(all listed in {self.index_file})',
                logger='current',
                level=logging.WARNING,
            )
        total = len(sizes) + len(unreadable)
        large = sorted(rel for rel, (w, h) in sizes.items() if min(w, h) >= self.min_size)
        small = len(sizes) - len(large)
        if not large:
            raise ValueError(
                f'no usable image in {root!r}: none of its {total} image file(s) has a short '
                f'side of at least min_size={self.min_size} px ({small} smaller, '
                f'{len(unreadable)} unreadable)'
            )
        if self.split is not None and self.holdout_fraction > 0:
            want_val = self.split == 'val'
            large = [rel for rel in large if _in_holdout(rel, self.holdout_fraction) == want_val]
            if not large:
                raise ValueError(
                    f'the {self.split!r} split of {root!r} (holdout_fraction='
                    f'{self.holdout_fraction}) holds no image with a short side of at least '
                    f'{self.min_size} px; add images or change holdout_fraction'
                )
        if self.max_images is not None:
            large = large[: self.max_images]
        print_log(
            f'{type(self).__name__}: {len(large)} image(s) from {root} '
            f'(split={self.split}; of {total} files, {small} with a short side below '
            f'{self.min_size} px and {len(unreadable)} unreadable were skipped)',
            logger='current',
            level=logging.INFO,
        )
        return [
            {'img_path': osp.join(root, rel), 'width': sizes[rel][0], 'height': sizes[rel][1]}
            for rel in large
        ]

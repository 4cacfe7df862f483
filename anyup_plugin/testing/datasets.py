"""Small generated datasets on disk, drawn with :func:`~anyup_plugin.testing.scenes.make_scene`.

* :func:`write_ade20k_layout_dataset`: images and labels in the ADE20K on-disk layout, which
  :class:`ADE20K151Dataset` and the ADE20K configs read unchanged (the segmentation demo and
  the MMSeg tests).
* :func:`write_image_folder`: a folder of unlabelled images for the upsampler trainer's tiny
  CPU config and its tests, with optional too-small and corrupt files for the filter tests.

Images are JPEG-compressed (some PNG), so nothing is pixel-exact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from .scenes import make_scene

__all__ = ['write_ade20k_layout_dataset', 'write_image_folder']

_MARKER = 'anyup_demo_dataset.json'
#: JPEG quality of the generated images: high enough that the scenes' edges stay sharp.
_JPEG_QUALITY = 90
#: Smallest short side of the deliberately too-small images of :func:`write_image_folder`.
_MIN_SMALL_SIDE = 8
#: Default largest side of :func:`write_image_folder`, relative to the short side.
_MAX_ASPECT = 1.4


def write_ade20k_layout_dataset(
    root: str | os.PathLike[str],
    num_train: int = 40,
    num_val: int = 12,
    height: int = 256,
    width: int = 320,
    seed: int = 0,
) -> Path:
    """Writes the generated dataset in the ADE20K layout (skipped when already there).

    A marker file records the arguments: a second call with the same arguments returns at
    once, with other arguments it rewrites the dataset. A folder without the marker (e.g. a
    real ADE20K copy) is never touched.

    Layout::

        root/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_XXXXXXXX.jpg
        root/ADEChallengeData2016/annotations/{training,validation}/ADE_..._XXXXXXXX.png

    Args:
        root: Output folder.
        num_train: Training images.
        num_val: Validation images.
        height: Image height.
        width: Image width.
        seed: Random seed (same seed, same files).

    Returns:
        The ``ADEChallengeData2016`` folder (use it as ``data_root``).

    Raises:
        FileExistsError: The folder exists and was not written by this function.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f'need at least one image per split, got {num_train=} {num_val=}')
    data_root = Path(root) / 'ADEChallengeData2016'
    marker = data_root / _MARKER
    params = dict(num_train=num_train, num_val=num_val, height=height, width=width, seed=seed)
    if data_root.exists():
        if not marker.is_file():
            raise FileExistsError(
                f'{data_root} exists and is not a generated demo dataset; choose another folder'
            )
        if json.loads(marker.read_text()) == params:
            return data_root
        for sub in ('images', 'annotations'):
            shutil.rmtree(data_root / sub, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for split, prefix, count in (
        ('training', 'ADE_train', num_train),
        ('validation', 'ADE_val', num_val),
    ):
        img_dir = data_root / 'images' / split
        ann_dir = data_root / 'annotations' / split
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            img, label = make_scene(rng, height, width)
            name = f'{prefix}_{i:08d}'
            Image.fromarray(img).save(img_dir / f'{name}.jpg', quality=_JPEG_QUALITY)
            Image.fromarray(label).save(ann_dir / f'{name}.png')
    marker.write_text(json.dumps(params))
    return data_root


def write_image_folder(
    out_dir: str | os.PathLike[str],
    num_images: int = 48,
    min_size: int = 112,
    max_size: int | None = None,
    seed: int = 0,
    num_small: int = 0,
    num_corrupt: int = 0,
) -> list[str]:
    """Writes generated images (JPEG, every fourth PNG) into ``out_dir/shapes``.

    Args:
        out_dir: Output folder (created; a ``shapes/`` subfolder holds the images).
        num_images: Images with a short side of exactly ``min_size``.
        min_size: Smallest short side.
        max_size: Largest side; default ``1.4 * min_size``.
        seed: Random seed (the same seed gives the same files).
        num_small: Extra images with a short side below ``min_size`` (for filter tests).
        num_corrupt: Extra files with an image extension that are not images.

    Returns:
        Paths of the files written.
    """
    rng = np.random.default_rng(seed)
    max_size = max_size or int(round(min_size * _MAX_ASPECT))
    folder = os.path.join(os.fspath(out_dir), 'shapes')
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(num_images + num_small):
        small = i >= num_images
        if small:
            short = int(rng.integers(max(_MIN_SMALL_SIDE, min_size // 3), min_size))
        else:
            short = min_size
        long = int(rng.integers(short, max(short, max_size) + 1))
        width, height = (long, short) if rng.random() < 0.5 else (short, long)
        img = Image.fromarray(make_scene(rng, height, width)[0])
        ext = '.png' if i % 4 == 3 else '.jpg'
        path = os.path.join(folder, f'{"small" if small else "img"}_{i:05d}{ext}')
        if ext == '.jpg':
            img.save(path, quality=_JPEG_QUALITY)
        else:
            img.save(path)
        paths.append(path)
    for i in range(num_corrupt):
        path = os.path.join(folder, f'corrupt_{i:03d}.jpg')
        with open(path, 'wb') as f:
            f.write(b'this is not an image' * (i + 1))
        paths.append(path)
    return paths

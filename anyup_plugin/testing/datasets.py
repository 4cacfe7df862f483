"""Small generated datasets on disk, drawn with :func:`~anyup_plugin.testing.scenes.make_scene`.

* :func:`write_ade20k_layout_dataset`: images and labels in the ADE20K on-disk layout, which
  :class:`ADE20K151Dataset` and the ADE20K configs read unchanged (the segmentation demo and
  the MMSeg tests).
* :func:`write_coco_stuff27_layout_dataset` and :func:`write_voc2012_layout_dataset`: the same
  scenes in the COCO-Stuff (curated lists, fine labels) and PASCAL VOC 2012 (palette PNGs,
  255 object borders) layouts, which :class:`CocoStuff27Dataset`, :class:`VOC2012Dataset` and
  their configs read unchanged (the comparison's ``--demo``).
* :func:`write_image_folder`: a folder of unlabelled images for the upsampler trainer's tiny
  CPU config and its tests, with optional too-small and corrupt files for the filter tests.

Images are JPEG-compressed (some PNG), so nothing is pixel-exact.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .scenes import make_scene

__all__ = [
    'COCO_STUFF_DEMO_FINE_LABELS',
    'VOC_DEMO_LABELS',
    'write_ade20k_layout_dataset',
    'write_coco_stuff27_layout_dataset',
    'write_image_folder',
    'write_voc2012_layout_dataset',
]

_MARKER = 'anyup_demo_dataset.json'
#: JPEG quality of the generated images: high enough that the scenes' edges stay sharp.
_JPEG_QUALITY = 90
#: Smallest short side of the deliberately too-small images of :func:`write_image_folder`.
_MIN_SMALL_SIDE = 8
#: Default largest side of :func:`write_image_folder`, relative to the short side.
_MAX_ASPECT = 1.4

#: Scene class (ADE20K151 index) -> COCO-Stuff fine label (category id - 1) in the PNGs:
#: building-other, sky-other, tree, road, grass, car. The loader maps them to the coarse
#: classes building, sky, plant, ground, plant, vehicle.
COCO_STUFF_DEMO_FINE_LABELS: dict[int, int] = {2: 95, 3: 156, 5: 168, 7: 148, 10: 123, 21: 2}
#: Scene class -> VOC 2012 label: cars are ``car`` (7), everything else background (0).
VOC_DEMO_LABELS: dict[int, int] = {2: 0, 3: 0, 5: 0, 7: 0, 10: 0, 21: 7}
#: VOC's ignored label, drawn along object outlines as in ``SegmentationClass``.
_VOC_IGNORE = 255

#: A scene's (H, W) label map (ADE20K151 indices) -> the label image as it is stored.
_LabelWriter = Callable[[np.ndarray], Image.Image]


def _relabel(label: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """Maps the scene's ADE20K indices through ``table``; values not in it become 255."""
    lut = np.full(256, 255, np.uint8)
    for ade, value in table.items():
        lut[ade] = value
    return lut[label]


def _write_scenes(
    data_root: Path,
    params: dict,
    generated: tuple[str, ...],
    splits: tuple[tuple[Path, Path, list[str]], ...],
    write_label: _LabelWriter,
) -> bool:
    """Draws the scenes of every split into ``data_root`` unless the marker says they are there.

    A marker file records ``params``: with the same ones nothing is written; with others the
    ``generated`` subfolders are removed first. A folder without the marker (a real dataset)
    is never touched.

    Args:
        data_root: The dataset root.
        params: The writer's arguments (``height``, ``width``, ``seed`` are used here).
        generated: Subfolders of ``data_root`` this writer owns.
        splits: (image folder, label folder, image names) per split, drawn in this order.
        write_label: Turns a (H, W) scene label map into the image to save as PNG.

    Returns:
        True when the files were written, False when they were already there.

    Raises:
        FileExistsError: ``data_root`` exists and was not written by these writers.
    """
    marker = data_root / _MARKER
    if data_root.exists():
        if not marker.is_file():
            raise FileExistsError(
                f'{data_root} exists and is not a generated demo dataset; choose another folder'
            )
        if json.loads(marker.read_text()) == params:
            return False
        for sub in generated:
            shutil.rmtree(data_root / sub, ignore_errors=True)
    rng = np.random.default_rng(params['seed'])
    for img_dir, ann_dir, names in splits:
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            img, label = make_scene(rng, params['height'], params['width'])
            Image.fromarray(img).save(img_dir / f'{name}.jpg', quality=_JPEG_QUALITY)
            write_label(label).save(ann_dir / f'{name}.png')
    marker.write_text(json.dumps(params))
    return True


def _check_counts(num_train: int, num_val: int) -> None:
    if num_train < 1 or num_val < 1:
        raise ValueError(f'need at least one image per split, got {num_train=} {num_val=}')


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
    _check_counts(num_train, num_val)
    data_root = Path(root) / 'ADEChallengeData2016'
    params = dict(num_train=num_train, num_val=num_val, height=height, width=width, seed=seed)
    _write_scenes(
        data_root,
        params,
        ('images', 'annotations'),
        tuple(
            (
                data_root / 'images' / split,
                data_root / 'annotations' / split,
                [f'{prefix}_{i:08d}' for i in range(1, count + 1)],
            )
            for split, prefix, count in (
                ('training', 'ADE_train', num_train),
                ('validation', 'ADE_val', num_val),
            )
        ),
        Image.fromarray,
    )
    return data_root


def write_coco_stuff27_layout_dataset(
    root: str | os.PathLike[str],
    num_train: int = 40,
    num_val: int = 12,
    height: int = 256,
    width: int = 320,
    seed: int = 0,
) -> Path:
    """Writes the generated dataset in the COCO-Stuff layout (skipped when already there).

    The label PNGs hold COCO-Stuff fine labels (:data:`COCO_STUFF_DEMO_FINE_LABELS`), which
    ``CocoStuff27Dataset`` maps to the 27 coarse classes; the curated lists name every image.
    Rewriting follows :func:`write_ade20k_layout_dataset`.

    Layout::

        root/cocostuff/images/{train2017,val2017}/000000XXXXXX.jpg
        root/cocostuff/annotations/{train2017,val2017}/000000XXXXXX.png
        root/cocostuff/curated/{train2017,val2017}/Coco164kFull_Stuff_Coarse.txt

    Args:
        root: Output folder.
        num_train: Training images.
        num_val: Validation images.
        height: Image height.
        width: Image width.
        seed: Random seed (same seed, same files).

    Returns:
        The ``cocostuff`` folder (use it as ``data_root``).

    Raises:
        FileExistsError: The folder exists and was not written by this function.
    """
    _check_counts(num_train, num_val)
    data_root = Path(root) / 'cocostuff'
    params = dict(num_train=num_train, num_val=num_val, height=height, width=width, seed=seed)
    # Image ids run on across the splits, as COCO's do.
    names = {
        'train2017': [f'{i:012d}' for i in range(1, num_train + 1)],
        'val2017': [f'{i:012d}' for i in range(num_train + 1, num_train + num_val + 1)],
    }
    written = _write_scenes(
        data_root,
        params,
        ('images', 'annotations', 'curated'),
        tuple(
            (data_root / 'images' / split, data_root / 'annotations' / split, ids)
            for split, ids in names.items()
        ),
        lambda label: Image.fromarray(_relabel(label, COCO_STUFF_DEMO_FINE_LABELS)),
    )
    if written:
        for split, ids in names.items():
            curated = data_root / 'curated' / split
            curated.mkdir(parents=True, exist_ok=True)
            (curated / 'Coco164kFull_Stuff_Coarse.txt').write_text(''.join(f'{n}\n' for n in ids))
    return data_root


def _voc_palette() -> list[int]:
    """PASCAL VOC's 256-colour PNG palette (flat RGB): class bits spread over the colour bits."""
    palette = []
    for index in range(256):
        rgb = [0, 0, 0]
        value = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette.extend(rgb)
    return palette


def _voc_label(label: np.ndarray, border: int) -> Image.Image:
    """VOC labels of a scene as a palette PNG, with ``border``-pixel 255 bands along outlines."""
    voc = _relabel(label, VOC_DEMO_LABELS)
    height, width = voc.shape
    padded = np.pad(voc, border, mode='edge')
    outline = np.zeros(voc.shape, bool)
    for dy in range(2 * border + 1):
        for dx in range(2 * border + 1):
            outline |= padded[dy : dy + height, dx : dx + width] != voc
    voc[outline] = _VOC_IGNORE
    png = Image.fromarray(voc, mode='P')
    png.putpalette(_voc_palette())
    return png


def write_voc2012_layout_dataset(
    root: str | os.PathLike[str],
    num_train: int = 40,
    num_val: int = 12,
    height: int = 256,
    width: int = 320,
    seed: int = 0,
) -> Path:
    """Writes the generated dataset in the PASCAL VOC 2012 layout (skipped when already there).

    The labels are palette PNGs like VOC's ``SegmentationClass``: the scenes' cars are class
    ``car`` (7), everything else background (0), and a band of 255 (ignored) runs along every
    car outline (about 1% of the short side wide on each side, at least one pixel). Rewriting
    follows :func:`write_ade20k_layout_dataset`.

    Layout::

        root/VOCdevkit/VOC2012/JPEGImages/2012_XXXXXX.jpg
        root/VOCdevkit/VOC2012/SegmentationClass/2012_XXXXXX.png
        root/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt

    Args:
        root: Output folder.
        num_train: Training images.
        num_val: Validation images.
        height: Image height.
        width: Image width.
        seed: Random seed (same seed, same files).

    Returns:
        The ``VOCdevkit/VOC2012`` folder (use it as ``data_root``).

    Raises:
        FileExistsError: The folder exists and was not written by this function.
    """
    _check_counts(num_train, num_val)
    data_root = Path(root) / 'VOCdevkit' / 'VOC2012'
    params = dict(num_train=num_train, num_val=num_val, height=height, width=width, seed=seed)
    names = {
        'train': [f'2012_{i:06d}' for i in range(1, num_train + 1)],
        'val': [f'2012_{i:06d}' for i in range(num_train + 1, num_train + num_val + 1)],
    }
    border = max(1, round(min(height, width) / 100))
    written = _write_scenes(
        data_root,
        params,
        ('JPEGImages', 'SegmentationClass', 'ImageSets'),
        tuple(
            (data_root / 'JPEGImages', data_root / 'SegmentationClass', ids)
            for ids in names.values()
        ),
        lambda label: _voc_label(label, border),
    )
    if written:
        lists = data_root / 'ImageSets' / 'Segmentation'
        lists.mkdir(parents=True, exist_ok=True)
        for split, ids in names.items():
            (lists / f'{split}.txt').write_text(''.join(f'{n}\n' for n in ids))
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

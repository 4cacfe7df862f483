"""The file layout of converted NYUv2 data: what ``tools/convert_nyuv2.py`` writes and the
NYU datasets read (numpy and PIL only, no framework).

One file per sample and modality, at the source resolution (480x640), so that a dataset loads
a sample in a few milliseconds and a conversion can stop and resume anywhere::

    ROOT/
        images/<name>.png     RGB, uint8
        depth/<name>.npy      float32 (H, W), metres, 0 = no measurement (raw, not capped)
        normals/<name>.npy    float32 (H, W, 3), unit normals (Ladicky / Bansal et al.)
        splits/<split>.txt    sample names, one per line

Sample names: ``nyu_<index>`` for the labelled set (``index`` 1-based, 4 digits, as in
``train_SN40.json``/``test_SN40.json``) and ``geonet_<file stem>`` for GeoNet frames. Splits:
``test`` (654 labelled), ``train`` (795 labelled), ``geonet_trainval`` (Probe3D's training set),
``geonet_train`` / ``geonet_valid`` (every 20th GeoNet frame in ``valid``). A split file is
written only after all its samples, so a listed sample is always complete.
"""

from __future__ import annotations

import os
import os.path as osp
from collections.abc import Sequence

import numpy as np
from PIL import Image

from anyup_plugin.utils.io import atomic_write

__all__ = [
    'FOLDERS',
    'check_sample',
    'read_split',
    'sample_done',
    'sample_paths',
    'write_sample',
    'write_split',
]

#: Modality -> (folder, file suffix).
FOLDERS: dict[str, tuple[str, str]] = {
    'image': ('images', '.png'),
    'depth': ('depth', '.npy'),
    'normals': ('normals', '.npy'),
}


def sample_paths(root: str | os.PathLike, name: str) -> dict[str, str]:
    """Paths of one sample's files, by modality."""
    return {key: osp.join(os.fspath(root), d, name + s) for key, (d, s) in FOLDERS.items()}


def sample_done(root: str | os.PathLike, name: str) -> bool:
    """Whether every file of the sample exists (each is written atomically, so complete)."""
    return all(osp.isfile(p) for p in sample_paths(root, name).values())


def check_sample(
    image: np.ndarray,
    depth: np.ndarray,
    normals: np.ndarray,
    source: str,
    allow_zero_normals: bool = False,
) -> None:
    """Raises ``ValueError`` naming ``source`` if a sample is not what the probes expect.

    Checked: image (H, W, 3) uint8; depth (H, W), finite and >= 0; normals (H, W, 3) finite;
    the same H, W everywhere; no zero-length normal where the depth is valid (unless
    ``allow_zero_normals``: the normal datasets then need ``zero_normals='invalid'``).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f'{source}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}'
        )
    if depth.ndim != 2:
        raise ValueError(f'{source}: depth must be (H, W), got {depth.shape}')
    if normals.ndim != 3 or normals.shape[2] != 3:
        raise ValueError(f'{source}: normals must be (H, W, 3), got {normals.shape}')
    if not image.shape[:2] == depth.shape == normals.shape[:2]:
        raise ValueError(
            f'{source}: sizes differ: image {image.shape[:2]}, depth {depth.shape}, '
            f'normals {normals.shape[:2]}'
        )
    if not np.isfinite(depth).all():
        raise ValueError(f'{source}: depth holds {int((~np.isfinite(depth)).sum())} NaN/inf')
    if (depth < 0).any():
        raise ValueError(f'{source}: depth holds {int((depth < 0).sum())} negative values')
    if not np.isfinite(normals).all():
        raise ValueError(f'{source}: normals hold {int((~np.isfinite(normals)).sum())} NaN/inf')
    zero = (np.linalg.norm(normals, axis=2) < 1e-6) & (depth > 0)
    if zero.any() and not allow_zero_normals:
        raise ValueError(
            f'{source}: {int(zero.sum())} pixels with valid depth have a zero-length normal '
            '(convert with --allow-zero-normals and use zero_normals="invalid" in the normal '
            'dataset to score them as invalid)'
        )


def write_sample(
    root: str | os.PathLike,
    name: str,
    image: np.ndarray,
    depth: np.ndarray,
    normals: np.ndarray,
) -> None:
    """Writes one sample's three files atomically (a killed run leaves no partial file).

    Args:
        root: Dataset root.
        name: Sample name.
        image: (H, W, 3) uint8 RGB.
        depth: (H, W) metres (stored as float32).
        normals: (H, W, 3) (stored as float32).
    """
    paths = sample_paths(root, name)
    with atomic_write(paths['image'], suffix='.png') as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format='PNG')
    for key, array in (('depth', depth), ('normals', normals)):
        with atomic_write(paths[key], suffix='.npy') as tmp:
            np.save(tmp, np.ascontiguousarray(array, dtype=np.float32))


def write_split(root: str | os.PathLike, split: str, names: Sequence[str]) -> str:
    """Writes ``splits/<split>.txt`` atomically; returns its path."""
    path = osp.join(os.fspath(root), 'splits', f'{split}.txt')
    with atomic_write(path, suffix='.txt') as tmp, open(tmp, 'w') as f:
        f.write(''.join(f'{n}\n' for n in names))
    return path


def read_split(path: str | os.PathLike) -> list[str]:
    """The sample names listed in a split file (blank lines skipped)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]

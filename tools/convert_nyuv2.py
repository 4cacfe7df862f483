#!/usr/bin/env python
"""Converts NYUv2 as users download it into the layout the NYU depth/normal datasets read.

Output layout (one PNG / depth .npy / normals .npy per sample, 480x640, plus split lists): see
:mod:`anyup_plugin.evaluation.nyu_layout`. Each sample is written atomically and skipped when
already there, so an interrupted run resumes where it stopped; split files come last.

Labelled set (test: 654 images, train: 795), from NYU's ``nyu_depth_v2_labeled.mat`` (MATLAB
v7.3 / HDF5, read with h5py; a v5 file is read with scipy) with **rawDepths** (as Probe3D:
the in-painted ``depths`` are not ground truth) and FAIR's ``nyuv2_surfacenormal_metadata.zip``
(``all_normals.pklz``, ``train_SN40.json``, ``test_SN40.json``)::

    python tools/convert_nyuv2.py labeled --mat data/nyuv2/nyu_depth_v2_labeled.mat \\
        --normals data/nyuv2/all_normals.pklz --out data/nyuv2_probe3d

(the json files are looked for beside ``--normals`` unless ``--train-json``/``--test-json``
say otherwise), or from Probe3D's combined pickle::

    python tools/convert_nyuv2.py labeled --snorm-pkl data/nyuv2/nyuv2_snorm_all.pkl \\
        --out data/nyuv2_probe3d

GeoNet training frames (Probe3D's training set: one MATLAB v5 ``.mat`` per frame with
``img``, ``depth``, ``norm``; files sorted by name, sorted indices 6919 and 21181 dropped as
Probe3D does; splits ``geonet_trainval``, ``geonet_train``, ``geonet_valid``)::

    python tools/convert_nyuv2.py geonet --geonet-dir data/nyu_geonet --out data/nyuv2_probe3d

Memory: ``all_normals.pklz`` is one pickle (about 5 GB once loaded); the .mat is read one
image at a time. Disk: about 5.5 MB per sample (30 k GeoNet frames: ~165 GB).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import os.path as osp
import pickle
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from anyup_plugin.evaluation.nyu_layout import (
    check_sample,
    sample_done,
    write_sample,
    write_split,
)

logger = logging.getLogger('convert_nyuv2')

#: Probe3D adds this back (twice the mean, RGB) to GeoNet's stored images.
GEONET_MEAN_X2 = (2 * 122.175, 2 * 116.169, 2 * 103.508)
#: Sorted GeoNet file indices Probe3D drops as bad (``del insts[21181]; del insts[6919]``).
GEONET_BAD_INDICES = (6919, 21181)


class ConversionError(ValueError):
    """An input file that is not what NYUv2's releases contain."""


# ---------------------------------------------------------------------- progress
def _progress(items: Sequence, desc: str) -> Iterator:
    """Yields ``items`` with a one-line progress bar on stderr."""
    total, start = len(items), time.perf_counter()
    for i, item in enumerate(items, 1):
        yield item
        if i == total or i % 10 == 0:
            rate = i / max(time.perf_counter() - start, 1e-9)
            bar = '#' * int(30 * i / total)
            sys.stderr.write(f'\r{desc} [{bar:<30}] {i}/{total} ({rate:.1f}/s)')
            if i == total:
                sys.stderr.write('\n')
            sys.stderr.flush()


# ---------------------------------------------------------------------- labelled set
class _LabeledMat:
    """Reads one image / raw depth map at a time from ``nyu_depth_v2_labeled.mat``."""

    def __init__(self, path: str) -> None:
        self.path = path
        if not osp.isfile(path):
            raise FileNotFoundError(f'{path}: not found (nyu_depth_v2_labeled.mat from NYU)')
        import h5py

        if h5py.is_hdf5(path):  # MATLAB v7.3: axes reversed, images (N, 3, W, H)
            self._file = h5py.File(path, 'r')
            self._hdf5 = True
        else:
            from scipy.io import loadmat

            self._file = loadmat(path, variable_names=['images', 'rawDepths'])
            self._hdf5 = False
        for key in ('images', 'rawDepths'):
            if key not in self._file:
                raise ConversionError(f'{path}: no field {key!r} (is this nyu_depth_v2_labeled?)')
        images, depths = self._file['images'], self._file['rawDepths']
        if self._hdf5:
            ok = images.ndim == 4 and images.shape[1] == 3 and depths.ndim == 3
            self.count = images.shape[0]
        else:
            ok = images.ndim == 4 and images.shape[2] == 3 and depths.ndim == 3
            self.count = images.shape[3]
        if not ok:
            raise ConversionError(
                f'{path}: field shapes images {images.shape}, rawDepths {depths.shape} are not '
                "NYUv2's (480x640x3xN and 480x640xN in MATLAB order)"
            )

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """0-based index -> (H, W, 3) uint8 image, (H, W) float depth."""
        if self._hdf5:
            image = np.asarray(self._file['images'][index]).transpose(2, 1, 0)
            depth = np.asarray(self._file['rawDepths'][index]).T
        else:
            image = self._file['images'][..., index]
            depth = self._file['rawDepths'][..., index]
        return np.ascontiguousarray(image, dtype=np.uint8), np.asarray(depth, dtype=np.float32)


def _load_pickle(path: str) -> dict:
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: not found')
    opener = gzip.open if path.endswith('.pklz') or _is_gzip(path) else open
    try:
        with opener(path, 'rb') as f:
            # latin1: FAIR's pickle was written by Python 2 (numpy arrays inside).
            data = pickle.load(f, encoding='latin1')
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise ConversionError(f'{path}: cannot be unpickled ({err})') from err
    if not isinstance(data, dict):
        raise ConversionError(f'{path}: expected a dict, got {type(data).__name__}')
    return data


def _is_gzip(path: str) -> bool:
    with open(path, 'rb') as f:
        return f.read(2) == b'\x1f\x8b'


def _field(data: dict, key: str, path: str) -> np.ndarray:
    if key not in data:
        raise ConversionError(f'{path}: no field {key!r} (fields: {sorted(data)})')
    return data[key]


def _split_indices(path: str) -> list[int]:
    """0-based indices from a ``*_SN40.json`` list of ``{"img": "<1-based index>_..."}``."""
    if not osp.isfile(path):
        raise FileNotFoundError(
            f"{path}: split file not found (train_SN40.json / test_SN40.json from FAIR's "
            'nyuv2_surfacenormal_metadata.zip)'
        )
    with open(path) as f:
        entries = json.load(f)
    try:
        return [int(str(e['img']).split('_')[0]) - 1 for e in entries]
    except (TypeError, KeyError, ValueError) as err:
        raise ConversionError(f'{path}: entries must look like {{"img": "1_..."}} ({err})') from err


def labeled_sources(args: argparse.Namespace) -> tuple[Callable, dict[str, list[int]]]:
    """(index -> (image, depth, normals), {'train': [...], 'test': [...]}) for the labelled set."""
    if args.snorm_pkl:
        data = _load_pickle(args.snorm_pkl)
        images, depths = (
            _field(data, 'images', args.snorm_pkl),
            _field(data, 'depths', args.snorm_pkl),
        )
        snorms = _field(data, 'snorms', args.snorm_pkl)
        splits = {
            'train': [int(i) for i in _field(data, 'train_indices', args.snorm_pkl)],
            'test': [int(i) for i in _field(data, 'test_indices', args.snorm_pkl)],
        }

        def read(i: int):  # Probe3D stores (N, 3, H, W) images and normals
            return images[i].transpose(1, 2, 0), depths[i], snorms[i].transpose(1, 2, 0)

        count, source = len(images), args.snorm_pkl
    else:
        if not (args.mat and args.normals):
            raise SystemExit('labeled: give --mat and --normals, or --snorm-pkl')
        mat = _LabeledMat(args.mat)
        normals = _field(_load_pickle(args.normals), 'all_normals', args.normals)
        if normals.ndim != 4 or normals.shape[3] != 3 or len(normals) != mat.count:
            raise ConversionError(
                f'{args.normals}: all_normals is {normals.shape}, expected ({mat.count}, H, W, 3)'
            )
        folder = osp.dirname(args.normals)
        splits = {
            'train': _split_indices(args.train_json or osp.join(folder, 'train_SN40.json')),
            'test': _split_indices(args.test_json or osp.join(folder, 'test_SN40.json')),
        }

        def read(i: int):
            image, depth = mat[i]
            return image, depth, normals[i]

        count, source = mat.count, args.mat
    for split, indices in splits.items():
        bad = [i for i in indices if not 0 <= i < count]
        if bad:
            raise ConversionError(f'{split} split lists indices {bad[:5]} outside {source}')
    return read, splits


def convert_labeled(args: argparse.Namespace) -> dict[str, int]:
    read, splits = labeled_sources(args)
    out, counts = args.out, {}
    for split, indices in splits.items():
        names = [f'nyu_{i + 1:04d}' for i in indices]
        todo = [(i, n) for i, n in zip(indices, names) if not sample_done(out, n)]
        logger.info('%s: %d samples, %d to convert', split, len(names), len(todo))
        for i, name in _progress(todo, f'labeled {split}') if todo else ():
            image, depth, normals = read(i)
            image = np.asarray(image, dtype=np.uint8)
            depth, normals = np.asarray(depth, np.float32), np.asarray(normals, np.float32)
            check_sample(image, depth, normals, f'labeled index {i + 1} ({name})',
                         allow_zero_normals=args.allow_zero_normals)  # fmt: skip
            write_sample(out, name, image, depth, normals)
        write_split(out, split, names)
        counts[split] = len(names)
    return counts


# ---------------------------------------------------------------------- GeoNet frames
def _geonet_frame(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path, variable_names=['img', 'depth', 'norm'])
    except Exception as err:
        raise ConversionError(f'{path}: cannot be read as a MATLAB v5 .mat ({err})') from err
    for key in ('img', 'depth', 'norm'):
        if key not in mat:
            raise ConversionError(f'{path}: no field {key!r} (GeoNet frames hold img, depth, norm)')
    img = np.asarray(mat['img'], np.float64)[:480, :640]
    if img.ndim != 3 or img.shape[2] != 3:
        raise ConversionError(f'{path}: img is {img.shape}, expected (480, 640, 3)')
    # Probe3D: add back twice the mean, then cast to uint8 (truncation); the clip only stops
    # out-of-range values from wrapping around.
    image = np.clip(img + np.asarray(GEONET_MEAN_X2), 0, 255).astype(np.uint8)
    depth = np.asarray(mat['depth'], np.float32)[:480, :640]
    normals = np.asarray(mat['norm'], np.float32)[:480, :640]
    return image, depth, normals


def geonet_files(folder: str, drop: Sequence[int]) -> list[str]:
    """Probe3D's GeoNet list: the .mat files sorted by name, bad indices removed."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'{folder}: GeoNet folder not found (unzip data1.zip, data2.zip)')
    files = sorted(f for f in os.listdir(folder) if f.endswith('.mat'))
    if not files:
        raise ConversionError(f'{folder}: no .mat files')
    bad = [i for i in drop if not 0 <= i < len(files)]
    if bad:
        raise ConversionError(
            f'{folder}: {len(files)} .mat files, but the bad indices {bad} to drop are out of '
            'range (the full GeoNet set has more than 21181; pass --drop-indices for a subset)'
        )
    return [f for i, f in enumerate(files) if i not in set(drop)]


def convert_geonet(args: argparse.Namespace) -> dict[str, int]:
    files = geonet_files(args.geonet_dir, args.drop_indices)
    names = ['geonet_' + osp.splitext(f)[0] for f in files]
    todo = [(f, n) for f, n in zip(files, names) if not sample_done(args.out, n)]
    logger.info('geonet: %d frames, %d to convert', len(names), len(todo))
    for file, name in _progress(todo, 'geonet') if todo else ():
        path = osp.join(args.geonet_dir, file)
        image, depth, normals = _geonet_frame(path)
        check_sample(image, depth, normals, path, allow_zero_normals=args.allow_zero_normals)
        write_sample(args.out, name, image, depth, normals)
    splits = {
        'geonet_trainval': names,
        'geonet_train': [n for i, n in enumerate(names) if i % 20 != 0],
        'geonet_valid': [n for i, n in enumerate(names) if i % 20 == 0],
    }
    for split, split_names in splits.items():
        write_split(args.out, split, split_names)
    return {split: len(v) for split, v in splits.items()}


# ---------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='source', required=True)
    lab = sub.add_parser('labeled', help='the labelled set: test (654) and train (795) splits')
    lab.add_argument('--mat', help='nyu_depth_v2_labeled.mat')
    lab.add_argument('--normals', help='all_normals.pklz (gzip pickle)')
    lab.add_argument('--train-json', help='train_SN40.json (default: beside --normals)')
    lab.add_argument('--test-json', help='test_SN40.json (default: beside --normals)')
    lab.add_argument('--snorm-pkl', help="Probe3D's nyuv2_snorm_all.pkl instead of the above")
    geo = sub.add_parser('geonet', help="GeoNet's training frames (Probe3D's training set)")
    geo.add_argument('--geonet-dir', required=True, help='folder of per-frame .mat files')
    geo.add_argument(
        '--drop-indices',
        type=lambda s: [int(v) for v in s.split(',') if v.strip()],
        default=list(GEONET_BAD_INDICES),
        help="comma-separated sorted-file indices to drop (default: Probe3D's 6919,21181)",
    )
    for p in (lab, geo):
        p.add_argument('--out', default='data/nyuv2_probe3d', help='output dataset root')
        p.add_argument(
            '--allow-zero-normals',
            action='store_true',
            help='keep zero-length normals at pixels with valid depth (else an error)',
        )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='[convert_nyuv2] %(message)s')
    args = parse_args(argv)
    try:
        counts = convert_labeled(args) if args.source == 'labeled' else convert_geonet(args)
    except (ValueError, FileNotFoundError) as err:  # ConversionError and bad samples
        logger.error('%s', err)
        return 1
    for split, count in counts.items():
        logger.info('split %s: %d samples -> %s', split, count,
                    osp.join(args.out, 'splits', f'{split}.txt'))  # fmt: skip
    return 0


if __name__ == '__main__':
    sys.exit(main())

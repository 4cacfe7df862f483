"""NYUv2 in the converted layout of tools/convert_nyuv2.py, checked when it is built."""

from __future__ import annotations

import os.path as osp

from mmengine.dataset import BaseDataset

from anyup_plugin.evaluation.nyu_layout import FOLDERS, read_split

__all__ = ['NYUv2Dataset']

_CONVERT = (
    'python tools/convert_nyuv2.py labeled --mat nyu_depth_v2_labeled.mat '
    '--normals all_normals.pklz --out {root}   (test/train splits), or '
    'python tools/convert_nyuv2.py geonet --geonet-dir nyu_geonet --out {root}   (GeoNet frames)'
)


class NYUv2Dataset(BaseDataset):
    """Samples listed in ``splits/<split>.txt`` of a converted NYUv2 root.

    Each sample is ``dict(img_path, depth_path, normal_path, sample_name)``; the pipeline loads
    them (``LoadImageFromFile``, ``LoadNYUAnnotations``). When the dataset is built (before
    the first iteration) it checks that the root exists (else the error gives the converter
    command that makes it), that the split file exists and is not empty, and that every
    listed sample has its files.

    Args:
        ann_file: Split file, relative to ``data_root`` (e.g. ``'splits/test.txt'``).
        data_root: Converted dataset root.
        data_prefix: Folders of the modalities, relative to ``data_root``.
        **kwargs: Passed to MMEngine's ``BaseDataset`` (``pipeline``, ``test_mode``, ...).
    """

    #: Modalities the task needs (the normal dataset adds ``'normals'``).
    required: tuple[str, ...] = ('image', 'depth')

    def __init__(
        self,
        ann_file: str = 'splits/test.txt',
        data_root: str = 'data/nyuv2_probe3d',
        data_prefix: dict | None = None,
        **kwargs,
    ) -> None:
        if data_prefix is None:
            data_prefix = dict(img_path='images', depth_path='depth', normal_path='normals')
        super().__init__(ann_file=ann_file, data_root=data_root, data_prefix=data_prefix, **kwargs)

    def full_init(self) -> None:
        """Checks the root and split, loads the list, then checks every sample's files."""
        if self._fully_initialized:
            return
        name = type(self).__name__
        if not osp.isdir(self.data_root):
            raise FileNotFoundError(
                f'{name}: dataset root {self.data_root!r} does not exist. Make it from the NYUv2 '
                f'downloads with: {_CONVERT.format(root=self.data_root)}'
            )
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(
                f'{name}: split file {self.ann_file!r} not found (the converter writes '
                f'splits/test.txt, train.txt, geonet_trainval.txt, ...: '
                f'{_CONVERT.format(root=self.data_root)})'
            )
        super().full_init()

    def load_data_list(self) -> list[dict]:
        """One dict per name in the split file, its files checked to exist."""
        name = type(self).__name__
        names = read_split(self.ann_file)
        if not names:
            raise ValueError(f'{name}: split file {self.ann_file!r} lists no sample')
        keys = {'image': 'img_path', 'depth': 'depth_path', 'normals': 'normal_path'}
        data_list = []
        for sample in names:
            info = {'sample_name': sample}
            for modality, key in keys.items():
                info[key] = osp.join(self.data_prefix[key], sample + FOLDERS[modality][1])
            for modality in self.required:
                if not osp.isfile(info[keys[modality]]):
                    raise FileNotFoundError(
                        f'{name}: sample {sample!r} of {self.ann_file!r} has no {modality} file '
                        f'{info[keys[modality]]!r} (re-run the converter: it resumes)'
                    )
            data_list.append(info)
        return data_list

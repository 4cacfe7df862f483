"""The image-folder dataset, its size index cache, bad input, and the per-image transforms."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
import torch

pytest.importorskip('mmengine', reason='the AnyUp trainer is built on MMEngine')

from mmengine.logging import MMLogger

from anyup_plugin.testing import write_image_folder
from anyup_plugin.training import (
    GuidanceAugmentation,
    ImageFolderDataset,
    LoadImage,
    PackAnyUpInputs,
    ResizeCenterCrop,
    resize_square,
)
from anyup_plugin.training import dataset as dataset_module


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[int, str]] = []

    def emit(self, record):
        self.messages.append((record.levelno, record.getMessage()))

    def text(self, level=logging.WARNING):
        return '\n'.join(m for lv, m in self.messages if lv >= level)


@pytest.fixture
def log_records():
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def folder(tmp_path, demo_folder):
    root = tmp_path / 'images'
    shutil.copytree(demo_folder, root)
    return root


def test_keeps_large_images_and_skips_bad_files_with_a_warning(folder, tmp_path, log_records):
    index = tmp_path / 'index.json'
    ds = ImageFolderDataset(str(folder), min_size=64, index_file=str(index))
    paths = [ds.get_data_info(i)['img_path'] for i in range(len(ds))]
    assert len(ds) == 48
    assert all(os.path.basename(p).startswith('img_') for p in paths)
    assert all(
        min(ds.get_data_info(i)['width'], ds.get_data_info(i)['height']) >= 64 for i in range(48)
    )
    warnings = log_records.text()
    # Each unreadable file is named, and the count is logged.
    assert 'corrupt_000.jpg' in warnings and 'corrupt_001.jpg' in warnings
    assert '2 unreadable image file(s)' in warnings
    info = log_records.text(logging.INFO)
    assert '48 image(s)' in info and '4 with a short side below 64 px' in info


def test_size_index_is_reused_and_updated(folder, tmp_path, monkeypatch, log_records):
    index = tmp_path / 'index.json'
    first = ImageFolderDataset(str(folder), min_size=64, index_file=str(index))
    assert index.is_file()

    # A second start must not open any image header.
    def no_headers(path):
        raise AssertionError(f'header of {path} read again')

    monkeypatch.setattr(dataset_module, '_read_size', no_headers)
    second = ImageFolderDataset(str(folder), min_size=64, index_file=str(index))
    assert len(second) == len(first)

    # A new file is the only header read; a removed file disappears.
    monkeypatch.undo()
    read = []
    real = dataset_module._read_size
    monkeypatch.setattr(dataset_module, '_read_size', lambda p: read.append(p) or real(p))
    write_image_folder(str(tmp_path / 'extra'), num_images=1, min_size=80, seed=7)
    shutil.copy(tmp_path / 'extra' / 'shapes' / 'img_00000.jpg', folder / 'shapes' / 'new.jpg')
    os.remove(folder / 'shapes' / 'img_00001.jpg')
    third = ImageFolderDataset(str(folder), min_size=64, index_file=str(index))
    assert [os.path.basename(p) for p in read] == ['new.jpg']
    assert len(third) == len(first)


def test_folder_without_usable_images_fails_naming_folder_and_threshold(folder, tmp_path):
    with pytest.raises(ValueError, match=rf"no usable image in '{folder}'.*min_size=448 px"):
        ImageFolderDataset(str(folder), min_size=448, index_file=str(tmp_path / 'i.json'))
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match='none of its 0 image file'):
        ImageFolderDataset(str(empty), min_size=64, index_file=str(tmp_path / 'e.json'))


def test_holdout_split_is_disjoint_and_complete(folder, tmp_path):
    kw = dict(min_size=64, index_file=str(tmp_path / 'i.json'), holdout_fraction=0.2)
    train = ImageFolderDataset(str(folder), split='train', **kw)
    val = ImageFolderDataset(str(folder), split='val', **kw)
    names = lambda d: {d.get_data_info(i)['img_path'] for i in range(len(d))}  # noqa: E731
    assert not names(train) & names(val)
    assert len(train) + len(val) == 48
    assert 3 <= len(val) <= 18


def test_truncated_image_is_skipped_while_training(folder, tmp_path, log_records):
    victim = folder / 'shapes' / 'img_00000.jpg'
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # header intact, pixels cut short
    pipeline = [LoadImage(), ResizeCenterCrop(64), PackAnyUpInputs()]
    ds = ImageFolderDataset(
        str(folder), min_size=64, index_file=str(tmp_path / 'i.json'), pipeline=pipeline
    )
    index = next(i for i in range(len(ds)) if ds.get_data_info(i)['img_path'] == str(victim))
    sample = ds[index]  # another image instead of a crash
    assert sample['data_samples']['img_path'] != str(victim)
    assert sample['inputs'].shape == (3, 64, 64)
    warnings = log_records.text()
    assert f'skipping unreadable image {victim}' in warnings
    assert 'skipped so far' in warnings


def test_transforms_resize_crop_and_augment(folder):
    path = str(folder / 'shapes' / 'img_00002.jpg')
    results = ResizeCenterCrop(64)(LoadImage()({'img_path': path}))
    img = results['img']
    assert img.shape == (3, 64, 64) and img.dtype == torch.uint8

    # With every step switched off, the augmented guidance is the clean resized image.
    off = GuidanceAugmentation(
        size=32, color_jitter_prob=0, grayscale_prob=0, blur_prob=0, jpeg_prob=0, noise_prob=0
    )
    clean = off(dict(results))['guidance_aug']
    assert torch.equal(clean, resize_square(img, 32))

    torch.manual_seed(0)
    always = GuidanceAugmentation(
        size=32, color_jitter_prob=1, grayscale_prob=1, blur_prob=1, jpeg_prob=1, noise_prob=1
    )
    aug = always(dict(results))['guidance_aug']
    assert aug.shape == (3, 32, 32) and aug.dtype == torch.uint8
    assert not torch.equal(aug, clean)
    assert torch.equal(aug[0], aug[1]) or (aug[0].float() - aug[1].float()).abs().mean() < 8

    packed = PackAnyUpInputs(keys=['guidance_aug'])({**results, 'guidance_aug': aug})
    assert set(packed) == {'inputs', 'data_samples'}
    assert set(packed['data_samples']) == {'img_path', 'guidance_aug'}


# ------------------------------------------------------------------ a missing data root
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
    ('config', 'instruction'),
    [
        (
            'configs/anyup/anyup_tiny_cpu_demo.py',
            'To get the images, run `python tools/make_demo_images.py` (it writes data/anyup_demo)',
        ),
        (
            'configs/anyup/anyup_dinov2_vits14_in1k_100k.py',
            'To get the images, download ImageNet-1k (ILSVRC2012_img_train.tar',
        ),
    ],
)
def test_missing_data_root_of_a_config_says_how_to_get_it(tmp_path, config, instruction):
    from mmengine.config import Config

    from anyup_plugin.training import DATASETS
    from anyup_plugin.training.registry import SCOPE

    for name in ('train_dataloader', 'val_dataloader'):
        dataset = Config.fromfile(os.path.join(REPO, config))[name]['dataset']
        dataset['data_root'] = str(tmp_path / 'missing')
        with pytest.raises(FileNotFoundError) as info:
            # Named scope: whatever an earlier test's runner left as the default scope.
            DATASETS.build({'_scope_': SCOPE, **dataset})
        message = str(info.value)
        assert f'data_root {str(tmp_path / "missing")!r} is not a folder.' in message
        assert instruction in message
        assert 'train_dataloader.dataset.data_root=' in message

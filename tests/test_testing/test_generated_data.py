"""The scene generator and the generated datasets: deterministic, labelled, in their layouts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from anyup_plugin.testing import (
    DEMO_CLASSES,
    make_scene,
    write_ade20k_layout_dataset,
    write_image_folder,
)


def test_scene_is_deterministic_and_uses_only_the_demo_classes():
    img_a, label_a = make_scene(np.random.default_rng(3), 48, 64)
    img_b, label_b = make_scene(np.random.default_rng(3), 48, 64)
    assert img_a.shape == (48, 64, 3) and img_a.dtype == np.uint8
    assert label_a.shape == (48, 64) and label_a.dtype == np.uint8
    assert np.array_equal(img_a, img_b) and np.array_equal(label_a, label_b)
    assert set(np.unique(label_a).tolist()) <= set(DEMO_CLASSES)
    assert 3 in label_a  # the sky is always there, above the horizon
    assert label_a[0].tolist() == [3] * 64


def test_ade20k_layout_dataset(tmp_path):
    root = write_ade20k_layout_dataset(tmp_path, num_train=2, num_val=1, height=32, width=40)
    assert root.name == 'ADEChallengeData2016'
    images = sorted((root / 'images' / 'training').iterdir())
    labels = sorted((root / 'annotations' / 'training').iterdir())
    assert [p.name for p in images] == ['ADE_train_00000001.jpg', 'ADE_train_00000002.jpg']
    assert [p.stem for p in labels] == [p.stem for p in images]
    assert len(list((root / 'annotations' / 'validation').glob('*.png'))) == 1
    label = np.array(Image.open(labels[0]))
    assert label.shape == (32, 40) and set(np.unique(label).tolist()) <= set(DEMO_CLASSES)
    assert json.loads((root / 'anyup_demo_dataset.json').read_text())['num_val'] == 1
    # The same arguments again: the files are kept as they are (an old time stamp, so that a
    # rewrite shows whatever the file system's time resolution).
    os.utime(images[0], (1, 1))
    write_ade20k_layout_dataset(tmp_path, num_train=2, num_val=1, height=32, width=40)
    assert images[0].stat().st_mtime == 1
    # A folder it did not write (a real ADE20K copy) is refused.
    (tmp_path / 'real' / 'ADEChallengeData2016').mkdir(parents=True)
    with pytest.raises(FileExistsError, match='not a generated demo dataset'):
        write_ade20k_layout_dataset(tmp_path / 'real')


def test_image_folder_with_small_and_corrupt_files(tmp_path):
    paths = write_image_folder(tmp_path, num_images=3, min_size=40, num_small=2, num_corrupt=1)
    assert len(paths) == 6
    for path in paths[:3]:
        with Image.open(path) as img:
            assert min(img.size) == 40 and max(img.size) <= 56
    for path in paths[3:5]:
        with Image.open(path) as img:
            assert min(img.size) < 40
    with pytest.raises(OSError):
        Image.open(paths[5])
    again = write_image_folder(tmp_path / 'again', num_images=3, min_size=40, num_small=2)
    with Image.open(paths[0]) as a, Image.open(again[0]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))

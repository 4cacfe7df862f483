"""tools/convert_nyuv2.py on tiny files in each real format NYUv2's downloads come in."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

h5py = pytest.importorskip('h5py', reason='the converter needs h5py (pip install h5py)')
scipy_io = pytest.importorskip('scipy.io', reason='the converter needs scipy')

from anyup_plugin.evaluation.nyu_layout import read_split, sample_paths  # noqa: E402

N, H, W = 5, 6, 8  # 5 labelled images of 6x8 (NYU: 1449 of 480x640)


@pytest.fixture(scope='module')
def tool(load_tool):
    return load_tool('convert_nyuv2')


def _labelled_arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(N, H, W, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 12.0, size=(N, H, W)).astype(np.float32)
    depths[:, 0, 0] = 0.0  # missing readings
    normals = rng.normal(size=(N, H, W, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=3, keepdims=True)
    return images, depths, normals


def _write_labelled(folder: Path, images, depths, normals, fields=('images', 'rawDepths')):
    """nyu_depth_v2_labeled.mat as h5py sees MATLAB v7.3 (axes reversed), pklz, SN40 jsons."""
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / 'nyu_depth_v2_labeled.mat', 'w') as f:
        if 'images' in fields:  # MATLAB 480x640x3xN -> h5py (N, 3, 640, 480)
            f['images'] = images.transpose(0, 3, 2, 1)
        if 'rawDepths' in fields:  # MATLAB 480x640xN -> h5py (N, 640, 480)
            f['rawDepths'] = depths.transpose(0, 2, 1)
        f['depths'] = np.full((N, W, H), 3.0, np.float32)  # in-painted: must not be used
    with gzip.open(folder / 'all_normals.pklz', 'wb') as f:
        pickle.dump({'all_normals': normals}, f, protocol=2)
    # 1-based indices in "<index>_..." names: train = images 1, 2, 4; test = 3, 5
    (folder / 'train_SN40.json').write_text(
        json.dumps([{'img': f'{i}_rgb.png'} for i in (1, 2, 4)])
    )
    (folder / 'test_SN40.json').write_text(json.dumps([{'img': f'{i}_rgb.png'} for i in (3, 5)]))


def _labelled_args(folder: Path, out: Path) -> list[str]:
    return ['labeled', '--mat', str(folder / 'nyu_depth_v2_labeled.mat'),
            '--normals', str(folder / 'all_normals.pklz'), '--out', str(out)]  # fmt: skip


def _check_sample(out: Path, name: str, image, depth, normals):
    paths = sample_paths(out, name)
    np.testing.assert_array_equal(np.asarray(Image.open(paths['image'])), image)
    np.testing.assert_array_equal(np.load(paths['depth']), depth)
    np.testing.assert_allclose(np.load(paths['normals']), normals, atol=1e-7)


def test_labelled_set_from_the_mat_pklz_and_json_files(tool, tmp_path):
    images, depths, normals = _labelled_arrays()
    _write_labelled(tmp_path / 'nyuv2', images, depths, normals)
    out = tmp_path / 'converted'
    assert tool.main(_labelled_args(tmp_path / 'nyuv2', out)) == 0
    assert read_split(out / 'splits' / 'train.txt') == ['nyu_0001', 'nyu_0002', 'nyu_0004']
    assert read_split(out / 'splits' / 'test.txt') == ['nyu_0003', 'nyu_0005']
    for index in range(1, N + 1):  # rawDepths, uncapped (the datasets cap at 10 m)
        i = index - 1
        _check_sample(out, f'nyu_{index:04d}', images[i], depths[i], normals[i])


def test_a_second_run_skips_finished_samples_and_completes_missing_ones(tool, tmp_path):
    images, depths, normals = _labelled_arrays()
    _write_labelled(tmp_path / 'nyuv2', images, depths, normals)
    out = tmp_path / 'converted'
    assert tool.main(_labelled_args(tmp_path / 'nyuv2', out)) == 0
    done = sample_paths(out, 'nyu_0001')['image']
    os.utime(done, (1, 1))
    os.remove(sample_paths(out, 'nyu_0003')['normals'])  # as if killed mid-sample
    assert tool.main(_labelled_args(tmp_path / 'nyuv2', out)) == 0
    assert os.stat(done).st_mtime == 1  # not rewritten
    _check_sample(out, 'nyu_0003', images[2], depths[2], normals[2])


def test_labelled_set_from_probe3ds_combined_pickle(tool, tmp_path):
    images, depths, normals = _labelled_arrays(1)
    data = {
        'images': images.transpose(0, 3, 1, 2),  # Probe3D: (N, 3, H, W)
        'depths': depths,
        'snorms': normals.transpose(0, 3, 1, 2),
        'scene_types': [['kitchen']] * N,
        'train_indices': np.array([0, 1]),  # 0-based
        'test_indices': np.array([4]),
    }
    pkl = tmp_path / 'nyuv2_snorm_all.pkl'
    pkl.write_bytes(pickle.dumps(data))
    out = tmp_path / 'converted'
    assert tool.main(['labeled', '--snorm-pkl', str(pkl), '--out', str(out)]) == 0
    assert read_split(out / 'splits' / 'test.txt') == ['nyu_0005']
    _check_sample(out, 'nyu_0005', images[4], depths[4], normals[4])


def _write_geonet(folder: Path, count: int, rng) -> list[tuple]:
    """GeoNet frames: MATLAB v5 .mat with img (mean-subtracted twice), depth, norm."""
    folder.mkdir(parents=True)
    frames = []
    for i in range(count):
        image = rng.integers(0, 256, size=(H, W, 3)).astype(np.uint8)
        depth = rng.uniform(0.5, 9.0, size=(H, W))
        norm = rng.normal(size=(H, W, 3))
        norm /= np.linalg.norm(norm, axis=2, keepdims=True)
        stored = image.astype(np.float64) - np.array([2 * 122.175, 2 * 116.169, 2 * 103.508])
        scipy_io.savemat(folder / f'{i:05d}_kitchen.mat', {'img': stored + 1e-6, 'depth': depth,
                                                           'norm': norm})  # fmt: skip
        frames.append((image, depth.astype(np.float32), norm.astype(np.float32)))
    return frames


def test_geonet_frames_sorted_bad_indices_dropped_every_20th_in_valid(tool, tmp_path):
    frames = _write_geonet(tmp_path / 'nyu_geonet', 23, np.random.default_rng(2))
    out = tmp_path / 'converted'
    args = ['geonet', '--geonet-dir', str(tmp_path / 'nyu_geonet'), '--out', str(out)]
    assert tool.main([*args, '--drop-indices', '3,7']) == 0
    kept = [i for i in range(23) if i not in (3, 7)]
    trainval = read_split(out / 'splits' / 'geonet_trainval.txt')
    assert trainval == [f'geonet_{i:05d}_kitchen' for i in kept]
    valid = read_split(out / 'splits' / 'geonet_valid.txt')
    assert valid == [trainval[0], trainval[20]]
    assert len(read_split(out / 'splits' / 'geonet_train.txt')) == 21 - 2 + 0
    image, depth, normals = frames[5]
    _check_sample(out, 'geonet_00005_kitchen', image, depth, normals)
    # Probe3D's default bad indices (6919, 21181) do not exist in a small folder: say so.
    assert tool.main(args) == 1


def test_a_mat_without_the_expected_field_names_the_file_and_field(tool, tmp_path, caplog):
    images, depths, normals = _labelled_arrays()
    _write_labelled(tmp_path / 'nyuv2', images, depths, normals, fields=('images',))
    assert tool.main(_labelled_args(tmp_path / 'nyuv2', tmp_path / 'out')) == 1
    assert 'nyu_depth_v2_labeled.mat' in caplog.text and "'rawDepths'" in caplog.text

    folder = tmp_path / 'geo'
    folder.mkdir()
    scipy_io.savemat(folder / 'a.mat', {'img': np.zeros((H, W, 3)), 'depth': np.ones((H, W))})
    caplog.clear()
    assert tool.main(['geonet', '--geonet-dir', str(folder), '--drop-indices', '',
                      '--out', str(tmp_path / 'out2')]) == 1  # fmt: skip
    assert 'a.mat' in caplog.text and "'norm'" in caplog.text


def test_missing_split_file_and_bad_depth_are_reported_with_file_and_index(tool, tmp_path, caplog):
    images, depths, normals = _labelled_arrays()
    _write_labelled(tmp_path / 'nyuv2', images, depths, normals)
    (tmp_path / 'nyuv2' / 'test_SN40.json').unlink()
    assert tool.main(_labelled_args(tmp_path / 'nyuv2', tmp_path / 'out')) == 1
    assert 'test_SN40.json' in caplog.text

    depths[3, 2, 2] = np.nan
    _write_labelled(tmp_path / 'bad', images, depths, normals)
    caplog.clear()
    assert tool.main(_labelled_args(tmp_path / 'bad', tmp_path / 'out3')) == 1
    assert 'labeled index 4' in caplog.text and 'NaN' in caplog.text
    # Nothing is listed for a split that could not be converted completely.
    assert not (tmp_path / 'out3' / 'splits' / 'train.txt').exists()


def test_zero_length_normals_at_valid_depth_are_an_error_unless_allowed(tool, tmp_path, caplog):
    images, depths, normals = _labelled_arrays()
    normals[0, 3, 3] = 0.0
    _write_labelled(tmp_path / 'nyuv2', images, depths, normals)
    assert tool.main(_labelled_args(tmp_path / 'nyuv2', tmp_path / 'out')) == 1
    assert 'zero-length normal' in caplog.text and 'labeled index 1' in caplog.text
    args = [*_labelled_args(tmp_path / 'nyuv2', tmp_path / 'out'), '--allow-zero-normals']
    assert tool.main(args) == 0

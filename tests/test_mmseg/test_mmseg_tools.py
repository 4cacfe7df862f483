"""tools/make_demo_dataset.py, tools/demo.py and tools/benchmark_segmentor.py run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

from PIL import Image

from anyup_plugin.testing import DEMO_CLASSES, write_ade20k_layout_dataset


def test_demo_dataset_layout_and_labels(tmp_path):
    root = write_ade20k_layout_dataset(tmp_path, num_train=3, num_val=2, height=48, width=64)
    assert root.name == 'ADEChallengeData2016'
    train = sorted((root / 'images/training').glob('*.jpg'))
    assert [p.name for p in train] == [f'ADE_train_{i:08d}.jpg' for i in (1, 2, 3)]
    assert len(list((root / 'annotations/validation').glob('*.png'))) == 2
    label = np.array(Image.open(root / 'annotations/training/ADE_train_00000001.png'))
    assert label.shape == (48, 64) and set(np.unique(label)) <= set(DEMO_CLASSES)
    # same arguments: kept as is; a folder it did not write: refused
    stamp = train[0].stat().st_mtime_ns
    write_ade20k_layout_dataset(tmp_path, num_train=3, num_val=2, height=48, width=64)
    assert train[0].stat().st_mtime_ns == stamp
    assert json.loads((root / 'anyup_demo_dataset.json').read_text())['num_train'] == 3
    foreign = tmp_path / 'real' / 'ADEChallengeData2016'
    foreign.mkdir(parents=True)
    with pytest.raises(FileExistsError):
        write_ade20k_layout_dataset(tmp_path / 'real')


def test_make_demo_dataset_cli(tmp_path, capsys, load_tool):
    load_tool('make_demo_dataset').main([str(tmp_path), '--num-train', '2', '--num-val', '1'])
    assert 'ADEChallengeData2016' in capsys.readouterr().out
    assert len(list(tmp_path.glob('ADEChallengeData2016/images/training/*.jpg'))) == 2


def test_demo_runs_end_to_end(tmp_path, capsys, load_tool):
    demo = load_tool('demo')
    rc = demo.main([
        '--demo-dir', str(tmp_path / 'data'),
        '--work-dir', str(tmp_path / 'work'),
        '--num-train', '2', '--num-val', '1', '--epochs', '1',
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and 'final val mIoU' in out


def test_benchmark_reports_every_stage(capsys, load_tool):
    bench = load_tool('benchmark_segmentor')
    bench.main(['--size', '28', '--warmup', '0', '--repeats', '1'])
    out = capsys.readouterr().out
    assert '| ade20k_dinov2.py | AnyUpNeck |' in out
    assert '| ade20k_dinov2_bilinear.py | BilinearNeck |' in out

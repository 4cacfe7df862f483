"""tools/make_demo_dataset.py, tools/demo.py and tools/benchmark_segmentor.py run end to end.

The generated dataset itself is checked in tests/test_testing/test_generated_data.py.
"""

from __future__ import annotations

import pytest

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')


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

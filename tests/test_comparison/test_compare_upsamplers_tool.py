"""tools/compare_upsamplers.py end to end with --demo: files, columns, resuming, refusals."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip('mmseg.models', reason='MMSegmentation (with mmcv ops) is not installed')

from mmengine.runner import Runner

ROOT = Path(__file__).resolve().parents[2]
# The smallest demo: 2 train / 2 test images at 56 px (4x4 tokens), one epoch, 2-block ViT.
DEMO = ['--demo', '--demo-train', '2', '--demo-val', '2', '--demo-size', '56',
        '--demo-epochs', '1', '--demo-backbone-depth', '2', '--figure-images', '2']  # fmt: skip


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'compare_upsamplers', ROOT / 'tools' / 'compare_upsamplers.py'
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline='') as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def count_runners(monkeypatch):
    """Counts the MMEngine runners built (one per method that trains or evaluates)."""
    built = []
    original = Runner.from_cfg

    def counting(cfg):
        built.append(Path(cfg.work_dir).name)
        return original(cfg)

    monkeypatch.setattr(Runner, 'from_cfg', staticmethod(counting))
    return built


@pytest.fixture(scope='module')
def ade_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('compare') / 'ade'
    args = ['--benchmark', 'ade20k', '--methods', 'anyup,bilinear', '--out', str(out)]
    assert tool.main([*args, '--with-paper', *DEMO]) == 0
    return out


def test_demo_writes_tables_and_figure(ade_run):
    rows = _csv(ade_run / 'comparison.csv')
    assert list(rows[0]) == ['method', 'mIoU', 'paper_mIoU', 'aAcc', 'paper_aAcc',
                             'time_ms_per_image', 'peak_memory_mb_per_image']  # fmt: skip
    assert [r['method'] for r in rows] == ['anyup', 'bilinear', 'featup', 'loftup', 'jafar']
    for row in rows[:2]:
        assert 0 <= float(row['mIoU']) <= 100 and 0 <= float(row['aAcc']) <= 100
        assert float(row['time_ms_per_image']) > 0
        assert float(row['peak_memory_mb_per_image']) >= 0
    assert float(rows[0]['paper_mIoU']) == 42.43 and float(rows[1]['paper_aAcc']) == 74.12
    assert rows[2]['mIoU'] == '' and float(rows[2]['paper_mIoU']) == 42.19

    markdown = (ade_run / 'comparison.md').read_text()
    assert '| AnyUp |' in markdown and '| bilinear |' in markdown and 'DEMO' in markdown
    assert 'AnyUp Tab. 2' in markdown and 'memory:' in markdown

    for method in ('anyup', 'bilinear'):
        result = json.loads((ade_run / method / 'results.json').read_text())
        assert result['method'] == method and result['profiled_images'] == 2
        assert math.isclose(
            result['metrics']['mIoU'], float(rows[0 if method == 'anyup' else 1]['mIoU'])
        )
        with np.load(ade_run / method / 'figure_samples.npz') as samples:
            assert samples['image_1'].shape == (56, 56, 3) and samples['pca_0'].shape == (56, 56, 3)
            assert samples['gt_0'].shape == samples['pred_0'].shape == (56, 56)
    with Image.open(ade_run / 'comparison.png') as figure:
        width, height = figure.size
    assert width > 2 * height  # 2 rows of 6 panels: image, truth, 2 x (prediction, PCA)


def test_second_run_reads_back_and_a_missing_result_is_rerun(ade_run, count_runners, capsys):
    stamps = {p: p.stat().st_mtime_ns for p in ade_run.glob('*/results.json')}
    stamps[ade_run / 'anyup' / 'epoch_1.pth'] = (
        (ade_run / 'anyup' / 'epoch_1.pth').stat().st_mtime_ns
    )
    args = ['--benchmark', 'ade20k', '--methods', 'bilinear,anyup', '--out', str(ade_run), *DEMO]
    assert tool.main(args) == 0
    assert count_runners == []  # nothing trained or evaluated again
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    out = capsys.readouterr().out
    assert 'bilinear: read back' in out and 'anyup: read back' in out
    assert [r['method'] for r in _csv(ade_run / 'comparison.csv')] == ['bilinear', 'anyup']

    # An unfinished method (no results.json) runs again; the finished one is still read back.
    (ade_run / 'bilinear' / 'results.json').unlink()
    assert tool.main(args) == 0
    assert count_runners == ['bilinear']
    assert (ade_run / 'bilinear' / 'results.json').is_file()


def test_results_of_other_settings_are_not_mixed_in(ade_run, tmp_path, capsys):
    demo = list(DEMO)
    demo[demo.index('--demo-size') + 1] = '42'
    args = ['--benchmark', 'ade20k', '--methods', 'anyup', '--out', str(tmp_path / 'other'),
            '--work-dir', str(ade_run), *demo]  # fmt: skip
    assert tool.main(args) == 2
    assert 'holds results of another setting' in capsys.readouterr().err


@pytest.mark.parametrize(
    ('methods', 'extra', 'message'),
    [
        ('anyup,upsample9', [], 'known methods: anyup, bicubic, bilinear'),
        ('anyup,anyup', ['--demo'], 'more than once'),
        ('jafar', [], 'releases/download/Weights'),
        ('anyup', ['--demo', '--checkpoint', 'naf=x.pth'], 'not compared'),
    ],
)
def test_refusals_happen_before_anything_runs(tmp_path, capsys, methods, extra, message):
    out = tmp_path / 'out'
    args = ['--benchmark', 'voc2012', '--methods', methods, '--out', str(out), *extra]
    assert tool.main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_demo_voc_on_generated_voc_layout_data(tmp_path):
    args = ['--benchmark', 'voc2012', '--methods', 'bilinear,anyup', '--out', str(tmp_path),
            *DEMO]  # fmt: skip
    assert tool.main(args) == 0
    rows = _csv(tmp_path / 'comparison.csv')
    assert [r['method'] for r in rows] == ['bilinear', 'anyup']
    for row in rows:
        assert 0 <= float(row['mIoU']) <= 100 and 0 <= float(row['aAcc']) <= 100
    # The data the probes read: VOC palette PNGs (background, car, 255 outlines).
    (labels,) = tmp_path.glob('**/VOCdevkit/VOC2012/SegmentationClass')
    assert len(list(labels.glob('*.png'))) == 4
    with np.load(tmp_path / 'anyup' / 'figure_samples.npz') as samples:
        assert set(np.unique(samples['gt_0']).tolist()) <= {0, 7, 255}
        assert set(np.unique(samples['pred_0']).tolist()) <= set(range(21))


def test_demo_refuses_a_benchmark_without_generated_data(tmp_path, capsys, monkeypatch):
    from anyup_plugin.comparison.benchmarks import BENCHMARKS

    monkeypatch.setitem(BENCHMARKS, 'voc2012', replace(BENCHMARKS['voc2012'], demo_config=None))
    args = ['--benchmark', 'voc2012', '--methods', 'bilinear', '--out', str(tmp_path), '--demo']
    assert tool.main(args) == 2
    err = capsys.readouterr().err
    assert "demo benchmarks: ['ade20k', 'coco_stuff27', 'nyu_depth', 'nyu_normals']" in err


def test_demo_normals_with_a_per_backbone_method(tmp_path):
    # JAFAR's weights belong to one backbone: the demo builds it for the demo backbone's
    # channels and patch size, with random weights.
    args = ['--benchmark', 'nyu_normals', '--methods', 'jafar,bilinear', '--out', str(tmp_path),
            *DEMO]  # fmt: skip
    assert tool.main(args) == 0
    rows = _csv(tmp_path / 'comparison.csv')
    assert list(rows[0]) == ['method', 'rmse', 'within_11_25', 'within_22_5', 'within_30',
                             'time_ms_per_image', 'peak_memory_mb_per_image']  # fmt: skip
    assert [r['method'] for r in rows] == ['jafar', 'bilinear']
    for row in rows:
        assert 0 < float(row['rmse']) <= 180
        shares = [float(row[k]) for k in ('within_11_25', 'within_22_5', 'within_30')]
        assert 0 <= shares[0] <= shares[1] <= shares[2] <= 1
    with np.load(tmp_path / 'jafar' / 'figure_samples.npz') as samples:
        assert samples['pred_0'].shape[-1] == 3 and samples['pca_0'].shape == (56, 56, 3)
    assert (tmp_path / 'comparison.png').is_file()

"""The comparison tables from hand-made results, and the paper's numbers they can show."""

from __future__ import annotations

import csv
import math

import pytest

from anyup_plugin.comparison import BENCHMARKS, PAPER_RESULTS, paper_result, table_rows
from anyup_plugin.comparison.report import write_tables


def _result(method, metrics, time_ms=None, memory=None):
    return {
        'method': method,
        'metrics': metrics,
        'time_ms_per_image': time_ms,
        'peak_memory_mb_per_image': memory,
    }


def test_markdown_and_csv_hold_the_measured_values(tmp_path):
    results = [
        _result('anyup', {'mIoU': 42.4321, 'aAcc': 75.851, 'mAcc': 50.0}, 92.44, 3300.0),
        _result('bilinear', {'mIoU': 40.5, 'aAcc': float('nan')}, 1.25, None),
    ]
    md, csv_path = write_tables(BENCHMARKS['ade20k'], results, tmp_path, notes=['device: cpu'])
    assert (md, csv_path) == (tmp_path / 'comparison.md', tmp_path / 'comparison.csv')
    lines = md.read_text().splitlines()
    assert '- device: cpu' in lines
    header = lines.index(next(line for line in lines if line.startswith('| method')))
    assert lines[header] == (
        '| method | mIoU ↑ | pixel acc. ↑ | time / image (ms) | peak memory / image (MiB) |'
    )
    # Two decimals (the paper's), '-' for a NaN or missing value; mAcc is not a column.
    assert lines[header + 2] == '| AnyUp | 42.43 | 75.85 | 92.4 | 3300.0 |'
    assert lines[header + 3] == '| bilinear | 40.50 | - | 1.2 | - |'
    assert len(lines) == header + 4
    with open(csv_path, newline='') as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        'method', 'mIoU', 'aAcc', 'time_ms_per_image', 'peak_memory_mb_per_image'
    ]  # fmt: skip
    assert rows[0]['method'] == 'anyup' and float(rows[0]['mIoU']) == 42.4321
    assert rows[1]['aAcc'] == '' and rows[1]['peak_memory_mb_per_image'] == ''


def test_with_paper_adds_a_column_per_metric_and_the_unmeasured_paper_rows():
    results = [_result('naf', {'rmse': 0.5}), _result('anyup', {'rmse': 0.48, 'delta1': 0.8})]
    columns, rows = table_rows(BENCHMARKS['nyu_depth'], results, with_paper=True)
    assert columns == [
        'method',
        'rmse', 'paper_rmse', 'delta1', 'paper_delta1',
        'rel_rmse', 'paper_rel_rmse', 'rel_delta1', 'paper_rel_delta1',
        'time_ms_per_image', 'peak_memory_mb_per_image',
    ]  # fmt: skip
    # Measured methods first, in their order; then the paper's other rows.
    assert [r['method'] for r in rows] == ['naf', 'anyup', 'bilinear', 'featup', 'loftup', 'jafar']
    naf, anyup, bilinear = rows[:3]
    assert naf['rmse'] == 0.5 and naf['paper_rmse'] is None  # NAF is not in the paper
    assert anyup['paper_rmse'] == 0.4755 and anyup['paper_delta1'] == 0.8216
    assert anyup['paper_rel_rmse'] is None  # not reported for AnyUp
    assert bilinear['rmse'] is None and bilinear['paper_rel_delta1'] == 0.9112


def test_with_paper_markdown_names_the_table(tmp_path):
    md, _ = write_tables(
        BENCHMARKS['voc2012'], [_result('jafar', {'mIoU': 1.0, 'aAcc': 2.0})], tmp_path, True
    )
    text = md.read_text()
    assert 'AnyUp Tab. 2' in text
    assert '| JAFAR | 1.00 | 84.36 | 2.00 | 96.22 | - | - |' in text
    assert '| FeatUp (JBU) | - | 83.37 | - | 96.04 | - | - |' in text


@pytest.mark.parametrize(
    ('benchmark', 'method', 'expected'),
    [
        ('ade20k', 'anyup', {'mIoU': 42.43, 'aAcc': 75.85}),
        ('coco_stuff27', 'loftup', {'mIoU': 62.15, 'aAcc': 81.32}),
        ('voc2012', 'bilinear', {'mIoU': 81.43, 'aAcc': 95.38}),
        ('nyu_normals', 'jafar', {'rmse': 31.54, 'within_11_25': 0.28, 'within_22_5': 0.56,
                                  'within_30': 0.68}),
        ('nyu_depth', 'featup', {'rmse': 0.4816, 'delta1': 0.8156, 'rel_rmse': 0.3413,
                                 'rel_delta1': 0.9193}),
    ],
)  # fmt: skip
def test_paper_numbers_match_the_protocol_tables(benchmark, method, expected):
    assert paper_result(benchmark, method) == expected


def test_every_benchmark_has_the_papers_five_rows_on_its_own_metrics():
    assert set(PAPER_RESULTS) == set(BENCHMARKS)
    for name, rows in PAPER_RESULTS.items():
        assert set(rows) == {'bilinear', 'featup', 'loftup', 'jafar', 'anyup'}
        for values in rows.values():
            assert set(values) == set(BENCHMARKS[name].metric_keys)
            assert all(v is None or math.isfinite(v) for v in values.values())
    assert paper_result('ade20k', 'naf') is None

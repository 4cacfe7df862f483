"""tools/benchmark.py: every method measured in its own process, a table and a JSON report."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_small_run_reports_every_method(tmp_path):
    report = tmp_path / 'bench.json'
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / 'tools' / 'benchmark.py'),
            '--sizes',
            '28',
            '--channels',
            '8',
            '--repeats',
            '1',
            '--markdown',
            '--json',
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith('| 28x28')]
    assert [row.split('|')[3].strip() for row in table] == [
        'anyup',
        'bilinear',
        'dense_reference',
    ]
    results = json.loads(report.read_text())['results']
    assert {r['method'] for r in results} == {'anyup', 'bilinear', 'dense_reference'}
    for r in results:
        assert r['features'] == 2 and r['channels'] == 8
        assert r['median_s'] > 0
        assert r['peak_rss_mb'] >= r['rss_before_forward_mb'] > 0
        # Each row's floor uses the matrix-multiply rate measured next to its own forwards.
        assert r['matmul_gflops'] > 0


def _benchmark_module():
    sys.path.insert(0, str(REPO / 'tools'))
    try:
        import benchmark
    finally:
        sys.path.pop(0)
    return benchmark


def test_rows_name_the_attention_kernel_and_have_no_floor_under_autocast(capsys):
    benchmark = _benchmark_module()
    row = {'size': 28, 'median_s': 0.5, 'peak_rss_mb': 2048.0, 'rss_before_forward_mb': 1024.0}
    results = [
        {**row, 'method': 'anyup', 'attention_kernel': 'sdpa', 'matmul_gflops': 100.0},
        {**row, 'method': 'anyup', 'attention_kernel': 'sdpa', 'autocast': 'bf16'},
        {**row, 'method': 'bilinear', 'attention_kernel': 'sdpa'},
    ]
    args = argparse.Namespace(device='cpu', channels=8, markdown=True)
    benchmark._print_table(results, 100.0, args)
    rows = [line.split('|') for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[3].strip() for r in rows] == [
        'anyup, sdpa attention',
        'anyup, sdpa attention, bf16 autocast',
        'bilinear',
    ]
    gflop = benchmark.anyup_gflop(28, 8)
    assert rows[0][9].strip() == f'{0.5 / (gflop / 100.0):.2f}'  # time / floor
    assert [r[8].strip() + r[9].strip() for r in rows[1:]] == ['', '']
    assert rows[0][6].strip() == '1.00 GB'  # added by the forward


def test_stage_rows_have_a_floor_only_without_autocast(capsys):
    benchmark = _benchmark_module()
    stage = {'seconds': 0.1, 'peak_mb': 1024.0, 'added_mb': 0.0}
    row = {'size': 28, 'median_s': 0.5, 'peak_rss_mb': 2048.0, 'rss_before_forward_mb': 1024.0}
    row.update(method='anyup', matmul_gflops=100.0, stages={'encoders': stage})
    args = argparse.Namespace(device='cpu', channels=8, markdown=True)
    floors = []
    for result in (row, {**row, 'autocast': 'bf16'}):
        benchmark._print_table([result], 100.0, args)
        stage_row = capsys.readouterr().out.splitlines()[-1].split('|')
        assert stage_row[1].strip() == 'encoders'
        floors.append(stage_row[5].strip())
    macs = benchmark.stage_multiply_adds(28, 8)['encoders']
    assert floors == [f'{0.1 / (2 * macs / 1e9 / 100.0):.2f}', '']


def test_dense_reference_is_skipped_where_it_would_not_fit():
    benchmark = _benchmark_module()
    # logits, mask and softmax of 4 heads over 448^2 queries x 32^2 tokens, float32
    assert benchmark._estimated_dense_gb(448) == pytest.approx(3 * 4 * 448**2 * 32**2 * 4 / 2**30)
    assert benchmark._estimated_dense_gb(1024) > 16
    # The published code's q_chunk_size: one chunk's copies plus the whole boolean mask.
    chunked = benchmark._estimated_dense_gb(1024, query_chunk=4096)
    assert chunked == pytest.approx((3 * 4 * 4096 * 73**2 * 4 + 1024**2 * 73**2) / 2**30)


_STUB_HUBCONF = '''
dependencies = ['torch']

from anyup_plugin import AnyUp


class ShiftedAnyUp(AnyUp):
    """Stands in for the published model: AnyUp's output plus q_chunk_size * 1e-6 of its
    largest value, so the benchmark's difference shows that weights and arguments got through."""

    def forward(self, image, features, output_size=None, q_chunk_size=None):
        out = super().forward(image, features, output_size)
        return out + q_chunk_size * 1e-6 * out.abs().amax()


def anyup(use_natten=False, pretrained=True, device='cpu'):
    assert not pretrained and not use_natten
    return ShiftedAnyUp().to(device)
'''


@pytest.mark.slow
def test_published_code_gets_the_same_weights_and_its_difference_is_reported(tmp_path):
    repo = tmp_path / 'published'
    repo.mkdir()
    (repo / 'hubconf.py').write_text(_STUB_HUBCONF)
    report = tmp_path / 'bench.json'
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / 'tools' / 'benchmark.py'),
            *('--sizes', '28', '--channels', '8', '--repeats', '1', '--markdown'),
            *('--methods', 'anyup', 'published', '--published-repo', str(repo)),
            *('--published-q-chunk', '1000', '--autocast', 'bf16', '--json', str(report)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    anyup, published = json.loads(report.read_text())['results']
    assert anyup['autocast'] == published['autocast'] == 'bf16'
    assert published['published_q_chunk'] == 1000
    # Freshly initialised weights of its own would differ by far more than the shift.
    assert published['relative_difference_to_anyup'] == pytest.approx(1e-3, rel=1e-3)
    rows = [line.split('|') for line in proc.stdout.splitlines() if line.startswith('| 28x28')]
    assert rows[0][3].strip() == 'anyup, bf16 autocast'
    assert rows[1][3].strip() == (
        'published code, q_chunk_size 1000 (differs from anyup by 1.0e-03 of its largest '
        'value), bf16 autocast'
    )
    # No float32 floor for a forward under autocast.
    assert [row[8].strip() for row in rows] == ['', '']


def test_published_method_needs_a_checkout_with_a_hubconf(tmp_path):
    for extra, message in (
        ([], '--methods published needs --published-repo DIR'),
        (['--published-repo', str(tmp_path)], 'no hubconf.py there'),
    ):
        proc = subprocess.run(
            [sys.executable, str(REPO / 'tools' / 'benchmark.py'), '--methods', 'published']
            + extra,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and message in proc.stderr

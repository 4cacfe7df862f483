"""tools/benchmark.py: every method measured in its own process, a table and a JSON report."""

from __future__ import annotations

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


def test_dense_reference_is_skipped_where_it_would_not_fit():
    sys.path.insert(0, str(REPO / 'tools'))
    try:
        import benchmark
    finally:
        sys.path.pop(0)
    # logits, mask and softmax of 4 heads over 448^2 queries x 32^2 tokens, float32
    assert benchmark._estimated_dense_gb(448) == pytest.approx(3 * 4 * 448**2 * 32**2 * 4 / 2**30)
    assert benchmark._estimated_dense_gb(1024) > 16

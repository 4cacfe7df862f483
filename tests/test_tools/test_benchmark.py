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


# Multiply-adds per stage that stand in for AnyUp's count (checked in test_layers.py), so that
# the table's floors can be worked out by hand: 25e9 multiply-adds are 50 GFLOP, at 100 GFLOP/s
# a floor of 0.5 s; the encoders' 10e9 are 20 GFLOP, a floor of 0.2 s.
_STAGE_MACS = {'encoders': 10e9, 'query conv': 5e9, 'attention': 10e9}


def test_rows_name_the_attention_kernel_and_have_no_floor_under_autocast(capsys, monkeypatch):
    benchmark = _benchmark_module()
    monkeypatch.setattr(benchmark, 'stage_multiply_adds', lambda size, channels: _STAGE_MACS)
    row = {'size': 28, 'median_s': 0.5, 'peak_rss_mb': 2048.0, 'rss_before_forward_mb': 1024.0}
    results = [
        # Its own rate, 200 GFLOP/s, wins over the run's 100: floor 0.25 s, time / floor 2.
        {**row, 'method': 'anyup', 'attention_kernel': 'sdpa', 'matmul_gflops': 200.0},
        {**row, 'method': 'anyup', 'attention_kernel': 'sdpa', 'autocast': 'bf16'},
        {**row, 'method': 'bilinear', 'attention_kernel': 'sdpa'},
        {**row, 'method': 'anyup'},  # the run's rate: floor 0.5 s, time / floor 1
    ]
    args = argparse.Namespace(device='cpu', channels=8, markdown=True)
    benchmark._print_table(results, 100.0, args)
    rows = [line.split('|') for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[3].strip() for r in rows] == [
        'anyup, sdpa attention',
        'anyup, sdpa attention, bf16 autocast',
        'bilinear',
        'anyup',
    ]
    assert [r[7].strip() for r in rows] == ['50', '50', '', '50']  # AnyUp GFLOP
    assert [(r[8].strip(), r[9].strip()) for r in rows] == [
        ('0.25 s', '2.00'),
        ('', ''),  # no float32 floor under autocast
        ('', ''),  # bilinear has no AnyUp floor
        ('0.50 s', '1.00'),
    ]
    assert rows[0][6].strip() == '1.00 GB'  # added by the forward


def test_stage_rows_have_a_floor_only_without_autocast(capsys, monkeypatch):
    benchmark = _benchmark_module()
    monkeypatch.setattr(benchmark, 'stage_multiply_adds', lambda size, channels: _STAGE_MACS)
    stage = {'seconds': 0.1, 'peak_mb': 1024.0, 'added_mb': 0.0}
    row = {'size': 28, 'median_s': 0.5, 'peak_rss_mb': 2048.0, 'rss_before_forward_mb': 1024.0}
    row.update(method='anyup', matmul_gflops=100.0, stages={'encoders': stage})
    args = argparse.Namespace(device='cpu', channels=8, markdown=True)
    floors = []
    for result in (row, {**row, 'autocast': 'bf16'}):
        benchmark._print_table([result], 100.0, args)
        stage_row = capsys.readouterr().out.splitlines()[-1].split('|')
        assert stage_row[1].strip() == 'encoders'
        assert stage_row[4].strip() == '20.0'  # GFLOP
        floors.append(stage_row[5].strip())
    # 0.1 s against the encoders' floor of 0.2 s.
    assert floors == ['0.50', '']


def test_dense_reference_is_skipped_where_it_would_not_fit(monkeypatch, capsys):
    """Estimates worked by hand; a method over --dense-limit-gb is reported, never run."""
    benchmark = _benchmark_module()
    # 448 px: 32x32 tokens; 3 copies x 4 heads x 448^2 queries x 32^2 keys x 4 bytes
    # = 3 * 4 * 4 * 2^12 * 49 * 2^10 B = 147 * 2^26 B = 147 / 16 GiB.
    assert benchmark._estimated_dense_gb(448) == pytest.approx(9.1875)
    # 224 px: 16x16 tokens, a quarter of the queries and a quarter of the keys.
    assert benchmark._estimated_dense_gb(224) == pytest.approx(9.1875 / 16)
    # 1024 px, 73x73 tokens, in chunks of 4096 queries: 3 * 4 * 4096 * 73^2 * 4 B for one
    # chunk and 1024^2 * 73^2 B of mask = 73^2 * (3 * 2^16 + 2^20) B = 73^2 * 19 / 2^14 GiB.
    chunked = benchmark._estimated_dense_gb(1024, query_chunk=4096)
    assert chunked == pytest.approx(73**2 * 19 / 2**14)

    runs = []

    def fake_worker(cmd, **kwargs):
        runs.append(cmd)
        result = {'method': 'dense_reference', 'size': 224, 'median_s': 0.1,
                  'peak_rss_mb': 2.0, 'rss_before_forward_mb': 1.0}  # fmt: skip
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(result) + '\n', stderr='')

    monkeypatch.setattr(benchmark.subprocess, 'run', fake_worker)
    monkeypatch.setattr(benchmark, 'matmul_gflops', lambda threads=None: 100.0)
    monkeypatch.setattr(benchmark, 'stage_multiply_adds', lambda size, channels: _STAGE_MACS)
    argv = ['benchmark.py', '--methods', 'dense_reference', '--sizes', '224', '448', '--markdown']
    monkeypatch.setattr(sys, 'argv', [*argv, '--dense-limit-gb', '9'])
    benchmark.main()
    assert len(runs) == 1 and '--size=224' in runs[0]  # 0.57 GiB runs, 9.19 GiB does not
    assert '| 448x448 | 32x32 | dense_reference | needs ~9 GB for attention |' in (
        capsys.readouterr().out
    )


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


@pytest.mark.slow
def test_weightless_methods_are_timed_each_in_its_own_process(tmp_path):
    report = tmp_path / 'bench.json'
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / 'tools' / 'benchmark.py'),
            *('--sizes', '28', '--channels', '8', '--repeats', '1', '--markdown'),
            *('--methods', 'bicubic', 'guided_filter', '--json', str(report)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(report.read_text())['results']
    assert [r['method'] for r in results] == ['bicubic', 'guided_filter']
    for r in results:
        # Methods that take any features get --channels on the 1/14 grid.
        assert (r['features'], r['channels'], r['output']) == (2, 8, [28, 28])
        assert r['median_s'] > 0
        assert r['peak_rss_mb'] >= r['rss_before_forward_mb'] > 0
    rows = [line.split('|') for line in proc.stdout.splitlines() if line.startswith('| 28x28')]
    assert [(row[2].strip(), row[3].strip()) for row in rows] == [
        ('2x2x8', 'bicubic'),
        ('2x2x8', 'guided_filter'),
    ]
    assert [row[7].strip() for row in rows] == ['', '']  # AnyUp's arithmetic is not theirs


def test_all_is_anyup_bilinear_and_every_registered_method():
    benchmark = _benchmark_module()
    from anyup_plugin.core.methods import METHOD_CLASSES

    methods = benchmark.expand_methods(['bicubic', 'all', 'jbu'])
    assert methods == [
        'bicubic',
        'anyup',
        'bilinear',
        *[m for m in METHOD_CLASSES if m != 'bicubic'],
        'jbu',
    ]
    assert {'guided_filter', 'joint_bilateral', 'featup', 'jafar', 'loftup', 'naf'} <= set(methods)


def test_registered_methods_get_features_they_accept():
    benchmark = _benchmark_module()
    method, features, output = benchmark._build_registered('guided_filter', 224, 8, 'cpu')
    assert type(method).__name__ == 'GuidedFilterUpsampler'
    assert features.shape == (1, 8, 16, 16) and output == (224, 224)


def test_a_fixed_factor_method_is_timed_at_its_own_output_size():
    benchmark = _benchmark_module()
    if benchmark.unavailable_reason('featup') is not None:
        pytest.skip('FeatUp JBU is not importable here')
    method, features, output = benchmark._build_registered('jbu', 224, 8, 'cpu')
    # Its published width (384 for DINOv2 ViT-S/14), not --channels; 16 x 16 cells -> 256.
    assert features.shape == (1, method.feature_channels, 224 // method.patch_size, 16)
    assert output == (256, 256)


def test_a_method_that_does_not_import_is_reported_and_never_run(monkeypatch, capsys):
    benchmark = _benchmark_module()
    monkeypatch.setitem(benchmark.METHOD_CLASSES, 'unwritten', 'no_such_module:Upsampler')
    assert benchmark.unavailable_reason('bicubic') is None
    assert 'not importable: ModuleNotFoundError' in benchmark.unavailable_reason('unwritten')

    runs = []

    def fake_worker(cmd, **kwargs):
        runs.append(cmd)
        result = {'method': 'bicubic', 'size': 28, 'features': 2, 'channels': 8,
                  'output': [28, 28], 'median_s': 0.25, 'peak_rss_mb': 3072.0,
                  'rss_before_forward_mb': 1024.0}  # fmt: skip
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(result) + '\n', stderr='')

    monkeypatch.setattr(benchmark.subprocess, 'run', fake_worker)
    monkeypatch.setattr(benchmark, 'matmul_gflops', lambda threads=None: 100.0)
    argv = ['benchmark.py', '--methods', 'unwritten', 'bicubic', '--sizes', '28', '--markdown']
    # argparse's choices were fixed at import; the registry entry added above is a new method.
    monkeypatch.setattr(benchmark, 'METHODS', (*benchmark.METHODS, 'unwritten'))
    monkeypatch.setattr(sys, 'argv', argv)
    benchmark.main()
    assert len(runs) == 1 and '--method=bicubic' in runs[0]
    out = capsys.readouterr().out
    assert '| 28x28 | 2x2 | unwritten | not importable: ModuleNotFoundError' in out
    assert '| 28x28 | 2x2x8 | bicubic | 0.250 s | 3.00 GB | 2.00 GB |  |  |  |' in out

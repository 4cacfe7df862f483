"""The fused Triton attention kernel: its tables, block shapes, precision and errors here;
its results (against the dense reference, the golden cases and autograd) in a subprocess
under Triton's interpreter (``triton_interpreted_cases.py``).

The interpreter must be switched on (``TRITON_INTERPRET=1``) before triton is first
imported, which a test in a shared process cannot promise; a subprocess also keeps the
variable away from every other test.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anyup_plugin.core.attention import dense_window_attention_reference, window_bounds
from anyup_plugin.core.attention import triton as twa

HAS_TRITON = importlib.util.find_spec('triton') is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason='the Triton kernel needs triton')
INTERPRETED_CASES = Path(__file__).with_name('triton_interpreted_cases.py')
REPO = Path(__file__).resolve().parents[3]

# (batch, output (H', W'), features (h, w), window ratio, heads, D, C), as in the
# interpreted cases.
SHAPES = {
    'batch-non-square': (2, (16, 20), (4, 5), 0.1, 4, 16, 5),
    'padded-windows': (1, (30, 50), (9, 23), 0.1, 2, 8, 4),
    'global': (1, (12, 12), (12, 12), 0.0, 4, 16, 3),
    'output-smaller-than-features': (1, (5, 3), (9, 11), 0.1, 1, 16, 7),
    'anyup-heads': (1, (8, 12), (4, 6), 0.1, 4, 128, 9),
    '1024-channels': (1, (4, 3), (2, 2), 0.1, 2, 16, 1024),
    'large': (1, (448, 448), (32, 32), 0.1, 4, 128, 384),
}


@needs_triton
@pytest.mark.slow
def test_kernels_under_the_interpreter(tmp_path):
    """Runs every interpreted case in a fresh process with TRITON_INTERPRET=1."""
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'pytest',
            str(INTERPRETED_CASES),
            '-q',
            '-p',
            'no:cacheprovider',
            f'--basetemp={tmp_path}',
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ''
    assert proc.returncode == 0, f'{summary}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}'
    assert ' passed' in summary and 'skipped' not in summary, summary


@pytest.mark.parametrize(
    ('out_size', 'in_size', 'ratio'),
    [(64, 8, 0.1), (3, 15, 0.1), (50, 23, 0.1), (13, 3, 0.25), (9, 7, 0.0), (2, 40, 0.05)],
)
def test_window_tables_invert_the_bounds(out_size, in_size, ratio):
    """The key-centric passes visit, for every feature index, exactly the outputs whose
    window holds it (an empty range when none does)."""
    tables = twa._axis_tables(out_size, in_size, ratio, torch.device('cpu'))
    start, end = window_bounds(out_size, in_size, ratio)
    assert tables.start.tolist() == start.tolist() and tables.end.tolist() == end.tolist()
    assert tables.start.dtype == torch.int32
    for r in range(in_size):
        holders = [i for i in range(out_size) if start[i] <= r < end[i]]
        first, last = int(tables.first[r]), int(tables.last[r])
        assert holders == list(range(first, last)), r
    assert tables.max_keys == int((end - start).max())


def test_window_tables_are_built_once():
    """Tables are cached per shape, ratio and device: no host-to-device copy per call."""
    a = twa._Geometry.build((40, 60), (4, 6), 22, 4, 32, 0.1, torch.device('cpu'))
    b = twa._Geometry.build((40, 60), (4, 6), 384, 4, 32, 0.1, torch.device('cpu'))
    assert a.rows.start is b.rows.start and a.cols.first is b.cols.first


@pytest.mark.parametrize('shape', SHAPES.values(), ids=SHAPES.keys())
def test_block_shapes_suit_the_compiler(shape):
    """Powers of two, at least 16 in every tl.dot dimension (the interpreter accepts any)."""
    _, out_hw, feat_hw, ratio, heads, d, c = shape
    geo = twa._Geometry.build(out_hw, feat_hw, c, heads, d // heads, ratio, torch.device('cpu'))
    for name in ('head_dim_padded', 'query_block', 'key_block', 'key_column_block'):
        value = getattr(geo, name)
        assert value >= 16 and value & (value - 1) == 0, name
    assert geo.channel_block & (geo.channel_block - 1) == 0 and geo.channel_block <= 128
    assert geo.channel_block >= 16
    assert geo.heads_padded >= heads and geo.head_dim_padded >= d // heads


def test_bad_block_shape_is_caught():
    geo = twa._Geometry.build((8, 8), (4, 4), 3, 2, 8, 0.1, torch.device('cpu'))
    bad = twa._Geometry(**{**geo.__dict__, 'key_block': 8})
    with pytest.raises(AssertionError, match='key_block must be a power of two >= 16'):
        bad.check_block_shapes()


def _dot_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == 'dot'
    ]


def test_every_product_uses_the_requested_precision():
    """No tl.dot falls back to Triton's default (TF32 for float32 on NVIDIA GPUs): each passes
    the kernel's PRECISION, which is 'ieee' unless the caller opts in."""
    # Read, not imported: the kernels are built only through twa.kernels().
    source = Path(importlib.util.find_spec(twa._KERNEL_MODULE).origin).read_text()
    calls = _dot_calls(ast.parse(source))
    assert len(calls) >= 6
    for call in calls:
        keywords = {kw.arg: kw.value for kw in call.keywords}
        assert isinstance(keywords.get('input_precision'), ast.Name), ast.unparse(call)
        assert keywords['input_precision'].id == 'PRECISION', ast.unparse(call)
    default = inspect.signature(twa.triton_windowed_attention).parameters['input_precision']
    assert default.default == 'ieee'


def _small_qkv():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(1, 4, 4, 16, generator=g),
        torch.randn(1, 2, 2, 16, generator=g),
        torch.randn(1, 2, 2, 2, generator=g),
    )


def test_unknown_precision_is_rejected():
    with pytest.raises(ValueError, match=r"input_precision must be one of \('ieee'"):
        twa.triton_windowed_attention(*_small_qkv(), 0.1, 2, input_precision='tf16')


@needs_triton
def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    with pytest.raises(RuntimeError, match=r"cannot run on cpu tensors.*'matmul', 'sdpa' or"):
        twa.triton_windowed_attention(*_small_qkv(), 0.1, 2)


def test_missing_triton_is_reported(monkeypatch):
    monkeypatch.setattr(twa, 'triton_is_available', lambda: False)
    with pytest.raises(ImportError, match=r"needs the triton package.*'matmul', 'sdpa'"):
        twa.check_triton_can_run(torch.device('cuda'))


def test_mismatched_shapes_are_reported():
    q, k, v = _small_qkv()
    with pytest.raises(ValueError, match='disagree'):
        twa.triton_windowed_attention(q, k[..., :8], v, 0.1, 2)
    with pytest.raises(ValueError, match='num_heads must divide'):
        twa.triton_windowed_attention(q, k, v, 0.1, 3)


needs_cuda = pytest.mark.skipif(
    not (HAS_TRITON and torch.cuda.is_available()), reason='needs triton and a CUDA device'
)


@needs_cuda
@pytest.mark.parametrize(
    'shape',
    [*SHAPES.values(), (2, (224, 160), (16, 12), 0.0, 4, 128, 384)],
    ids=[*SHAPES.keys(), 'global-224'],
)
def test_cuda_kernel_matches_dense_reference(shape):
    """The compiled kernels on the GPU: forward and all three gradients against autograd
    through the dense reference, in float32 (IEEE products: TF32 would miss these
    tolerances)."""
    batch, out_hw, feat_hw, ratio, heads, d, c = shape
    if out_hw[0] * out_hw[1] * feat_hw[0] * feat_hw[1] > 2**27:
        out_hw = (224, 224)  # the dense reference's logits must fit
    g = torch.Generator(device='cuda').manual_seed(0)
    q, k, v = (
        torch.randn(batch, *hw, n, device='cuda', generator=g)
        for hw, n in ((out_hw, d), (feat_hw, d), (feat_hw, c))
    )
    grad_out = torch.randn(batch, *out_hw, c, device='cuda', generator=g)
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_inputs = [t.double().requires_grad_() for t in (q, k, v)]
    out = twa.triton_windowed_attention(*inputs, ratio, heads)
    ref = dense_window_attention_reference(*ref_inputs, ratio, heads)
    torch.testing.assert_close(out, ref.float(), rtol=1e-5, atol=1e-5)
    out.backward(grad_out)
    ref.backward(grad_out.double())
    for name, a, b in zip('qkv', inputs, ref_inputs):
        torch.testing.assert_close(
            a.grad, b.grad.float(), rtol=1e-4, atol=1e-5, msg=f'grad of {name}'
        )


@needs_cuda
def test_cuda_kernel_forward_never_waits_for_the_device():
    """No .item(), no tensor truth value, no host copy in the forward (after the first call,
    which compiles the kernels and builds the tables)."""
    g = torch.Generator(device='cuda').manual_seed(0)
    q = torch.randn(1, 64, 48, 128, device='cuda', generator=g)
    k = torch.randn(1, 8, 6, 128, device='cuda', generator=g)
    v = torch.randn(1, 8, 6, 384, device='cuda', generator=g)
    with torch.no_grad():
        twa.triton_windowed_attention(q, k, v, 0.1, 4)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            twa.triton_windowed_attention(q, k, v, 0.1, 4)
        finally:
            torch.cuda.set_sync_debug_mode('default')


@needs_cuda
def test_cuda_kernel_bf16_is_close():
    """bf16 queries and keys (autocast's fast mode) stay within bf16 rounding."""
    g = torch.Generator(device='cuda').manual_seed(0)
    q = torch.randn(1, 64, 48, 128, device='cuda', generator=g) / 4
    k = torch.randn(1, 8, 6, 128, device='cuda', generator=g) / 4
    v = torch.randn(1, 8, 6, 384, device='cuda', generator=g)
    ref = dense_window_attention_reference(q, k, v, 0.1, 4)
    out = twa.triton_windowed_attention(q.bfloat16(), k.bfloat16(), v, 0.1, 4)
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05)

"""Forward time and peak memory of AnyUp, bilinear interpolation and the dense reference.

Each measurement runs in a fresh subprocess so that its peak resident memory (CPU) or peak
allocated memory (CUDA) belongs to that configuration alone. Time is the median of several
forward passes after one warm-up; features are random (B=1, C channels at 1/14 of the output
size), weights are random (speed does not depend on them).

    python tools/benchmark.py                       # 224, 448, 896, 1024 on the CPU
    python tools/benchmark.py --sizes 448 --methods anyup --breakdown
    python tools/benchmark.py --device cuda --markdown

Also prints the arithmetic floor of AnyUp at each size (the multiply-adds of its matrix
products and convolutions) against this machine's measured matrix-multiply rate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

METHODS = ('anyup', 'bilinear', 'dense_reference')


def _features_size(size: int) -> int:
    return max(1, round(size / 14))


def anyup_gflop(size: int, channels: int, d: int = 128, window_ratio: float = 0.1) -> float:
    """Multiply-add count (as 2 FLOP) of AnyUp's products at a square output = image size."""
    from anyup_plugin.core.window_attention import window_groups

    pixels = size * size
    h = _features_size(size)
    encoders = pixels * (3 * d + 4 * d * d) + 2 * pixels * 5 * d * d  # image, query, key
    conv3x3 = pixels * 9 * d * d
    q_proj = pixels * d * d
    rows = window_groups(size, h, window_ratio)
    cols = window_groups(size, h, window_ratio)
    keys_per_query = (
        sum(
            (qe - qs) * (ke - ks)
            for qs, qe, ks, ke in zip(
                rows.query_start, rows.query_end, rows.key_start, rows.key_end
            )
        )
        / size
        * sum(
            (qe - qs) * (ke - ks)
            for qs, qe, ks, ke in zip(
                cols.query_start, cols.query_end, cols.key_start, cols.key_end
            )
        )
        / size
    )
    attention = pixels * keys_per_query * (d + channels)
    lfu = h * h * channels * d * 25
    return 2 * (encoders + conv3x3 + q_proj + attention + lfu) / 1e9


def matmul_gflops(threads: int | None = None) -> float:
    """Measured float32 matrix-multiply rate of this machine (GFLOP/s), 2048^3 products."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    times = []
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * 2048**3 / min(times) / 1e9


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    On Linux from ``VmHWM``: ``getrusage``'s ``ru_maxrss`` survives ``exec`` and would report
    the parent's resident memory at ``fork`` time (the whole benchmark driver, torch included).
    """
    try:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    from anyup_plugin import AnyUp

    device = torch.device(args.device)
    size, channels = args.size, args.channels
    h = _features_size(size)
    torch.manual_seed(0)
    image = torch.randn(1, 3, size, size, device=device)
    features = torch.randn(1, channels, h, h, device=device)
    model = AnyUp().to(device).eval()

    if args.method == 'anyup':
        run = lambda: model(image, features)  # noqa: E731
    elif args.method == 'dense_reference':
        run = lambda: model.reference_forward(image, features)  # noqa: E731
    else:
        run = lambda: F.interpolate(  # noqa: E731
            features, size=(size, size), mode='bilinear', align_corners=False
        )

    def sync() -> None:
        if device.type == 'cuda':
            torch.cuda.synchronize()

    base_rss = _peak_rss_mb()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated() / 2**20
    times = []
    stages: dict[str, float] = {}
    with torch.no_grad():
        for i in range(args.repeats + 1):
            sync()
            start = time.perf_counter()
            out = run()
            sync()
            if i:
                times.append(time.perf_counter() - start)
            del out
        # Peaks of the forward passes themselves: the stage-by-stage run below keeps every
        # stage's output alive at once.
        result = {
            'method': args.method,
            'size': size,
            'features': h,
            'channels': channels,
            'median_s': statistics.median(times),
            'peak_rss_mb': _peak_rss_mb(),
            'rss_before_forward_mb': base_rss,
        }
        if device.type == 'cuda':
            result['peak_cuda_mb'] = torch.cuda.max_memory_allocated() / 2**20
            result['cuda_before_forward_mb'] = base_cuda
        if args.breakdown and args.method == 'anyup':
            stages = _stage_times(model, image, features, sync)
    result['stages'] = stages
    print(json.dumps(result))


def _stage_times(model, image, features, sync) -> dict[str, float]:
    """Seconds per stage of one AnyUp forward, run stage by stage."""
    import torch
    import torch.nn.functional as F

    from anyup_plugin.core.fused_encoder import fused_encoder_forward
    from anyup_plugin.core.window_attention import windowed_attention

    size = image.shape[-2:]
    stages = {}

    def timed(name, fn):
        sync()
        start = time.perf_counter()
        value = fn()
        sync()
        stages[name] = time.perf_counter() - start
        return value

    q, k = timed(
        'image/query/key encoders',
        lambda: fused_encoder_forward(model, image, tuple(size), tuple(features.shape[-2:])),
    )
    lfu = timed(
        'feature unification + aggregation',
        lambda: model.aggregation(
            torch.cat([k, model.key_features_encoder(F.normalize(features, dim=1))], dim=1)
        ),
    )
    qc = timed(
        'query conv3x3',
        lambda: model.cross_decode.conv2d(q.contiguous(memory_format=torch.channels_last)),
    )
    attn = model.cross_decode.cross_attn
    qw, qb, kw, kb = model._query_key_projections()
    keys = F.linear(model._rms_norm(lfu.permute(0, 2, 3, 1), attn.norm_k), kw, kb)
    values = features.permute(0, 2, 3, 1).contiguous()
    timed(
        'window attention (incl. query projection)',
        lambda: windowed_attention(
            qc.permute(0, 2, 3, 1),
            keys,
            values,
            model.window_ratio,
            model.num_heads,
            query_transform=lambda x: F.linear(model._rms_norm(x, attn.norm_q), qw, qb),
        ),
    )
    return stages


def _estimated_dense_gb(size: int, heads: int = 4) -> float:
    h = _features_size(size)
    # logits, mask and softmax over (heads, H'W', hw) in float32, roughly three copies.
    return 3 * heads * size**4 * h * h / size**2 * 4 / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 448, 896, 1024])
    parser.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS))
    parser.add_argument('--channels', type=int, default=384)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: all)')
    parser.add_argument(
        '--dense-limit-gb',
        type=float,
        default=16.0,
        help='skip the dense reference where its attention alone would exceed this',
    )
    parser.add_argument('--breakdown', action='store_true', help='time AnyUp stage by stage')
    parser.add_argument('--markdown', action='store_true', help='print a Markdown table')
    parser.add_argument('--json', default=None, help='also write the results to this file')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--method', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--size', type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker:
        _worker(args)
        return

    rate = matmul_gflops(args.threads) if args.device == 'cpu' else float('nan')
    print(f'device {args.device}, {os.cpu_count()} CPU cores, matmul rate {rate:.0f} GFLOP/s')
    results = []
    for size in args.sizes:
        for method in args.methods:
            if method == 'dense_reference' and _estimated_dense_gb(size) > args.dense_limit_gb:
                results.append(
                    {
                        'method': method,
                        'size': size,
                        'skipped': f'needs ~{_estimated_dense_gb(size):.0f} GB for attention',
                    }
                )
                print(json.dumps(results[-1]), flush=True)
                continue
            cmd = (
                [
                    sys.executable,
                    __file__,
                    '--worker',
                    f'--method={method}',
                    f'--size={size}',
                    f'--channels={args.channels}',
                    f'--repeats={args.repeats}',
                    f'--device={args.device}',
                ]
                + (['--breakdown'] if args.breakdown else [])
                + ([f'--threads={args.threads}'] if args.threads else [])
            )
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = proc.stderr.strip().splitlines()[-1:] or ['killed']
                results.append({'method': method, 'size': size, 'skipped': f'failed: {tail[0]}'})
            else:
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    _print_table(results, rate, args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'matmul_gflops': rate, 'results': results}, f, indent=1)


def _print_table(results: list[dict], rate: float, args: argparse.Namespace) -> None:
    mem_key = 'peak_cuda_mb' if args.device.startswith('cuda') else 'peak_rss_mb'
    mem_name = 'peak CUDA memory' if args.device.startswith('cuda') else 'peak RSS'
    before_key = (
        'cuda_before_forward_mb' if args.device.startswith('cuda') else 'rss_before_forward_mb'
    )
    header = [
        'output',
        'features',
        'method',
        'time (median)',
        mem_name,
        'added by forward',
        'AnyUp GFLOP',
        'floor',
    ]
    rows = []
    for r in results:
        size = r['size']
        h = _features_size(size)
        gflop = anyup_gflop(size, args.channels)
        floor = gflop / rate if math.isfinite(rate) else float('nan')
        if 'skipped' in r:
            rows.append([f'{size}x{size}', f'{h}x{h}', r['method'], r['skipped'], '-', '-', '', ''])
            continue
        is_anyup = r['method'] != 'bilinear'
        rows.append(
            [
                f'{size}x{size}',
                f'{h}x{h}x{args.channels}',
                r['method'],
                f'{r["median_s"]:.3f} s',
                f'{r[mem_key] / 1024:.2f} GB',
                f'{(r[mem_key] - r[before_key]) / 1024:.2f} GB',
                f'{gflop:.0f}' if is_anyup else '',
                f'{floor:.2f} s' if is_anyup and math.isfinite(floor) else '',
            ]
        )
    if args.markdown:
        print('| ' + ' | '.join(header) + ' |')
        print('|' + '---|' * len(header))
        for row in rows:
            print('| ' + ' | '.join(row) + ' |')
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        for row in [header, *rows]:
            print('  '.join(str(x).ljust(w) for x, w in zip(row, widths)))
    for r in results:
        if r.get('stages'):
            total = sum(r['stages'].values())
            print(f'\nAnyUp at {r["size"]}x{r["size"]}, stage by stage ({total:.2f} s):')
            for name, sec in r['stages'].items():
                print(f'  {name:45s} {sec:.3f} s ({100 * sec / total:.0f}%)')


if __name__ == '__main__':
    main()

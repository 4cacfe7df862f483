"""Forward time and peak memory of AnyUp, bilinear interpolation, the dense reference and
every other upsampling method of :mod:`anyup_plugin.core.methods`.

Each measurement runs in a fresh subprocess so that its peak resident memory (CPU) or peak
allocated memory (CUDA) belongs to that configuration alone. Time is the median of several
forward passes after one warm-up; features are random (B=1, C channels at 1/14 of the output
size), weights are random (speed does not depend on them).

    python tools/benchmark.py                       # 224, 448, 896, 1024 on the CPU
    python tools/benchmark.py --sizes 448 --methods anyup --breakdown
    python tools/benchmark.py --sizes 448 --methods multi_map --maps 4
    python tools/benchmark.py --device cuda --markdown
    python tools/benchmark.py --sizes 224 448 1024 --methods all --threads 2
    python tools/benchmark.py --sizes 448 --methods bicubic guided_filter joint_bilateral jafar
    python tools/benchmark.py --device cuda --autocast bf16 --sizes 448 1024 \
        --methods anyup published --published-repo /path/to/anyup

Also prints the arithmetic floor of AnyUp at each size: the multiply-adds of its
convolutions, projections and windowed-attention products (``AnyUp.multiply_adds``, from the
model's own sizes) at this machine's float32 matrix-multiply rate, measured on the CPU in each
row's own process before each of its forwards (the median is used: a shared machine's speed
drifts within a run). The first line gives the rate once, at the start.
``--breakdown`` times the model's own stages (``AnyUp.upsample_maps`` with a timing stage
runner), each against its floor, with the peak and added resident memory of each stage.
``multi_map`` times one call with ``--maps`` maps against that many single calls.
``published`` times the published AnyUp code (a local checkout of github.com/wimmerth/anyup,
loaded through its ``hubconf.py`` with ``pretrained=False``) with this model's weights, and
reports the largest difference of its output from this model's, relative to the output's
largest value. ``--autocast bf16`` runs every method under autocast (rows get no floor: it
is a float32 rate).

The methods of :data:`~anyup_plugin.core.methods.METHOD_CLASSES` (and their aliases; ``all``
is AnyUp, bilinear and every one of them) are built with random weights at their published
sizes: a per-backbone method gets features of its own ``feature_channels`` (``--channels``
for methods that take any) on its own ``patch_size`` grid (1/14 of the output otherwise).
A method whose module cannot be imported is reported as skipped, with the reason. These rows
have no floor (it is AnyUp's arithmetic).
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
from typing import Any

from anyup_plugin.core import ATTENTION_KERNELS
from anyup_plugin.core.methods import METHOD_ALIASES, METHOD_CLASSES, method_class
from anyup_plugin.utils.process_memory import reset_peak_resident, status_bytes

#: Rows of AnyUp itself (each has AnyUp's arithmetic floor) and its bilinear baseline.
ANYUP_METHODS = ('anyup', 'dense_reference', 'multi_map', 'published')
METHODS = (
    'anyup',
    'bilinear',
    'dense_reference',
    'multi_map',
    'published',
    *METHOD_CLASSES,
    *METHOD_ALIASES,
)
AUTOCAST_DTYPES = {'none': None, 'bf16': 'bfloat16', 'fp16': 'float16'}
DEFAULT_METHODS = ('anyup', 'bilinear', 'dense_reference')


def _features_size(size: int) -> int:
    return max(1, round(size / 14))


def expand_methods(methods: list[str]) -> list[str]:
    """``all`` -> AnyUp, bilinear and every registered method; repeats dropped, order kept."""
    out: list[str] = []
    for method in methods:
        for m in ['anyup', 'bilinear', *METHOD_CLASSES] if method == 'all' else [method]:
            if m not in out:
                out.append(m)
    return out


def unavailable_reason(method: str) -> str | None:
    """Why a registered method cannot run here (its module does not import), else None."""
    if method in ('bilinear', *ANYUP_METHODS):
        return None
    try:
        method_class(method)
    except (ImportError, AttributeError) as error:
        return f'not importable: {type(error).__name__}: {error}'
    return None


def _build_registered(
    method: str, size: int, channels: int, device: Any
) -> tuple[Any, Any, tuple[int, int]]:
    """A registered method with random weights, random features it accepts (its own channel
    count and patch grid where it has them, ``channels`` and 1/14 otherwise) and the output
    size: ``size`` square, or the one size a fixed-factor method makes (``output_size_for``,
    FeatUp's JBU stack: 16 times the features)."""
    import torch

    from anyup_plugin.core.methods import build_method

    upsampler = build_method(method).to(device).eval()
    channels = upsampler.feature_channels or channels
    h = size // upsampler.patch_size if upsampler.patch_size else _features_size(size)
    fixed = upsampler.output_size_for((h, h))
    output = (size, size) if fixed is None else tuple(fixed)
    return upsampler, torch.randn(1, channels, h, h, device=device), output


def stage_multiply_adds(size: int, channels: int) -> dict[str, int]:
    """Multiply-adds per stage of AnyUp (published sizes) at a square output = image size."""
    from anyup_plugin import AnyUp

    h = _features_size(size)
    return AnyUp().multiply_adds((size, size), [(channels, h, h)], [(size, size)])


def anyup_gflop(size: int, channels: int) -> float:
    """Multiply-adds (as 2 FLOP each) of one AnyUp forward at a square output = image size."""
    return 2 * sum(stage_multiply_adds(size, channels).values()) / 1e9


class MatmulRate:
    """The float32 matrix-multiply rate (GFLOP/s, 2048^3 products), measured as often as asked.

    A shared machine changes speed within minutes, so each row measures the rate next to its
    own forwards and its time / floor compares like with like. The operands are allocated
    once, up front, so that measuring adds nothing to a forward's memory.
    """

    def __init__(self, n: int = 2048) -> None:
        import torch

        self.a, self.b = torch.randn(n, n), torch.randn(n, n)
        self.out = torch.empty(n, n)
        self.samples: list[float] = []
        torch.mm(self.a, self.b, out=self.out)

    def measure(self, tries: int = 3) -> float:
        """Best of ``tries`` products; the sample is kept in :attr:`samples`."""
        import torch

        best = math.inf
        for _ in range(tries):
            start = time.perf_counter()
            torch.mm(self.a, self.b, out=self.out)
            best = min(best, time.perf_counter() - start)
        self.samples.append(2 * self.a.shape[0] ** 3 / best / 1e9)
        return self.samples[-1]

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan


def matmul_gflops(threads: int | None = None) -> float:
    """Measured float32 matrix-multiply rate of this machine (GFLOP/s), best of 5 products."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return MatmulRate().measure(tries=5)


def _rss_mb(field: str = 'VmRSS') -> float | None:
    """A memory field of ``/proc/self/status`` in MiB (VmRSS now, VmHWM peak); None off Linux."""
    value = status_bytes(field)
    return None if value is None else value / 2**20


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    On Linux from ``VmHWM``: ``getrusage``'s ``ru_maxrss`` survives ``exec`` and would report
    the parent's resident memory at ``fork`` time (the whole benchmark driver, torch included).
    """
    peak = _rss_mb('VmHWM')
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    from anyup_plugin import AnyUp
    from anyup_plugin.core.reference import reference_upsample

    device = torch.device(args.device)
    size, channels = args.size, args.channels
    h = _features_size(size)
    torch.manual_seed(0)
    image = torch.randn(1, 3, size, size, device=device)
    registered = args.method not in ('bilinear', *ANYUP_METHODS)
    if registered:
        # No AnyUp in these processes: its weights would count in the method's memory.
        upsampler, features, output = _build_registered(args.method, size, channels, device)
        h, channels = features.shape[-1], features.shape[1]
    else:
        features = torch.randn(1, channels, h, h, device=device)
        maps = [torch.randn_like(features) for _ in range(args.maps)]
        model = AnyUp(attention_kernel=args.attention_kernel).to(device).eval()

    published = None
    if registered:
        run = lambda: upsampler(image, features, output)  # noqa: E731
    elif args.method == 'anyup':
        run = lambda: model(image, features)  # noqa: E731
    elif args.method == 'dense_reference':
        run = lambda: reference_upsample(model, image, features)  # noqa: E731
    elif args.method == 'multi_map':
        run = lambda: model(image, maps)  # noqa: E731
    elif args.method == 'published':
        published = _published_model(args.published_repo, model, args.published_natten)
        run = lambda: published(image, features, q_chunk_size=args.published_q_chunk)  # noqa: E731
    else:
        run = lambda: F.interpolate(  # noqa: E731
            features, size=(size, size), mode='bilinear', align_corners=False
        )
    autocast_dtype = AUTOCAST_DTYPES[args.autocast]

    def autocast(fn):
        if autocast_dtype is None:
            return fn

        def under_autocast():
            with torch.autocast(device.type, dtype=getattr(torch, autocast_dtype)):
                return fn()

        return under_autocast

    run = autocast(run)

    def sync() -> None:
        if device.type == 'cuda':
            torch.cuda.synchronize()

    rate = MatmulRate() if device.type == 'cpu' else None

    def median_time(fn) -> float:
        times = []
        for i in range(args.repeats + 1):
            if rate is not None:
                rate.measure()
            sync()
            start = time.perf_counter()
            out = fn()
            sync()
            if i:
                times.append(time.perf_counter() - start)
            del out
        return statistics.median(times)

    base_rss = _peak_rss_mb()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated() / 2**20
    with torch.no_grad():
        result = {
            'method': args.method,
            'size': size,
            'features': h,
            'channels': channels,
            'output': list(output) if registered else [size, size],
            'median_s': median_time(run),
            # Peaks of the timed forwards themselves, before any breakdown run below.
            'peak_rss_mb': _peak_rss_mb(),
            'rss_before_forward_mb': base_rss,
        }
        if rate is not None:
            result['matmul_gflops'] = rate.median
        if device.type == 'cuda':
            result['peak_cuda_mb'] = torch.cuda.max_memory_allocated() / 2**20
            result['cuda_before_forward_mb'] = base_cuda
        result['attention_kernel'] = args.attention_kernel
        if args.autocast != 'none':
            result['autocast'] = args.autocast
        if published is not None:
            result['published_natten'] = args.published_natten
            result['published_q_chunk'] = args.published_q_chunk
            theirs, ours = run(), autocast(lambda: model(image, features))()
            scale = ours.float().abs().max().clamp_min(torch.finfo(torch.float32).tiny)
            result['relative_difference_to_anyup'] = float(
                (theirs.float() - ours.float()).abs().max() / scale
            )
            del theirs, ours
        if args.method == 'multi_map':
            result['maps'] = args.maps
            result['single_calls_s'] = median_time(
                autocast(lambda: [model(image, f) for f in maps])
            )
            result['multi_map_ratio'] = result['median_s'] / result['single_calls_s']
        result['stages'] = {}
        if args.breakdown and args.method == 'anyup':
            result['stages'] = _stage_profile(model, image, features, sync, device)
    print(json.dumps(result))


def _published_model(repo: str, weights_from: Any, use_natten: bool) -> Any:
    """The published AnyUp built by its own ``hubconf.py`` from a local checkout, with the weights
    of ``weights_from`` (its parameter names are the published ones).

    With ``use_natten`` the attention is then swapped for the published NATTEN block, the way
    its ``hubconf.py`` does it, so that it takes over the loaded projections.
    """
    import importlib

    import torch

    device = next(weights_from.parameters()).device
    model = torch.hub.load(
        repo, 'anyup', source='local', trust_repo=True, pretrained=False, device=str(device)
    )
    model.load_state_dict(weights_from.state_dict())
    if use_natten:
        layers = importlib.import_module('anyup.layers')  # imported by the hubconf above
        model.cross_decode = layers.setup_cross_attention_block(
            use_natten=True,
            qk_dim=model.cross_decode.cross_attn.attention.embed_dim,
            num_heads=model.cross_decode.cross_attn.attention.num_heads,
            window_ratio=model.cross_decode.window_ratio,
            use_params_from=model.cross_decode,
        ).to(device)
    return model.eval()


def _stage_profile(model, image, features, sync, device) -> dict[str, dict[str, float]]:
    """Seconds, peak and added memory (MiB) of every stage of one forward, as the model runs it.

    Peak memory is CPU resident memory (``VmHWM`` reset before each stage) or CUDA allocated
    memory; ``added`` is the peak minus the memory in use when the stage started.
    """
    import torch

    stages: dict[str, dict[str, float]] = {}
    cuda = device.type == 'cuda'

    def timed(name, fn, *args):
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() / 2**20
        else:
            before = _rss_mb() if reset_peak_resident() else None
        start = time.perf_counter()
        value = fn(*args)
        sync()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb('VmHWM')
        entry = stages.setdefault(name, {'seconds': 0.0, 'peak_mb': 0.0, 'added_mb': 0.0})
        entry['seconds'] += seconds
        if before is not None and peak is not None:
            entry['peak_mb'] = max(entry['peak_mb'], peak)
            entry['added_mb'] = max(entry['added_mb'], peak - before)
        return value

    out = model.upsample_maps(image, [features], run_stage=timed)
    del out
    return stages


def _estimated_dense_gb(size: int, heads: int = 4, query_chunk: int | None = None) -> float:
    """Memory of a dense masked attention at a square output = image size, in GiB.

    Unchunked: logits, mask and softmax over (heads, H'W', hw) in float32, roughly three
    copies. With ``query_chunk`` queries at a time (the published code's ``q_chunk_size``):
    those copies for one chunk, plus the boolean mask over every query, built up front.
    """
    h = _features_size(size)
    queries = size**2
    if query_chunk is None:
        return 3 * heads * queries * h * h * 4 / 2**30
    return (3 * heads * min(query_chunk, queries) * h * h * 4 + queries * h * h) / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 448, 896, 1024])
    parser.add_argument(
        '--methods',
        nargs='+',
        choices=[*METHODS, 'all'],
        default=list(DEFAULT_METHODS),
        help='all: AnyUp, bilinear and every method of anyup_plugin.core.methods',
    )
    parser.add_argument('--maps', type=int, default=4, help='maps per call of multi_map')
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
    parser.add_argument(
        '--autocast',
        choices=sorted(AUTOCAST_DTYPES),
        default='none',
        help='run every method under autocast to this dtype',
    )
    parser.add_argument(
        '--attention-kernel',
        choices=ATTENTION_KERNELS,
        default='matmul',
        help="AnyUp's attention_kernel (see anyup_plugin.core.attention)",
    )
    parser.add_argument(
        '--published-repo',
        default=None,
        metavar='DIR',
        help='local checkout of github.com/wimmerth/anyup, for --methods published',
    )
    parser.add_argument(
        '--published-natten',
        action='store_true',
        help='time the published NATTEN attention (needs natten installed)',
    )
    parser.add_argument(
        '--published-q-chunk',
        type=int,
        default=None,
        metavar='N',
        help="the published code's q_chunk_size: its dense attention N queries at a time",
    )
    parser.add_argument('--breakdown', action='store_true', help='time AnyUp stage by stage')
    parser.add_argument('--markdown', action='store_true', help='print a Markdown table')
    parser.add_argument('--json', default=None, help='also write the results to this file')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--method', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--size', type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.methods = expand_methods(args.methods)
    if 'published' in args.methods and not args.worker:
        if args.published_repo is None:
            parser.error('--methods published needs --published-repo DIR')
        if not os.path.isfile(os.path.join(args.published_repo, 'hubconf.py')):
            parser.error(f'--published-repo {args.published_repo}: no hubconf.py there')
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
            reason = unavailable_reason(method)
            if reason is not None:
                results.append({'method': method, 'size': size, 'skipped': reason})
                print(json.dumps(results[-1]), flush=True)
                continue
            dense_gb = _estimated_dense_gb(
                size, query_chunk=args.published_q_chunk if method == 'published' else None
            )
            dense = method == 'dense_reference' or (
                method == 'published' and not args.published_natten
            )
            if dense and dense_gb > args.dense_limit_gb:
                results.append(
                    {
                        'method': method,
                        'size': size,
                        'skipped': f'needs ~{dense_gb:.0f} GB for attention',
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
                    f'--maps={args.maps}',
                ]
                + [f'--autocast={args.autocast}', f'--attention-kernel={args.attention_kernel}']
                + ([f'--published-repo={args.published_repo}'] if method == 'published' else [])
                + (['--published-natten'] if args.published_natten else [])
                + (
                    [f'--published-q-chunk={args.published_q_chunk}']
                    if args.published_q_chunk
                    else []
                )
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
        'time / floor',
    ]
    rows = []
    for r in results:
        size = r['size']
        h = r.get('features', _features_size(size))
        if 'skipped' in r:
            rows.append(
                [f'{size}x{size}', f'{h}x{h}', r['method'], r['skipped'], '-', '-', '', '', '']
            )
            continue
        method = r['method']
        # multi_map (maps of one size): encoders and query conv once, the rest per map.
        maps = r.get('maps', 1)
        is_anyup = method in ANYUP_METHODS
        gflop = floor = math.nan
        if is_anyup:
            stages = stage_multiply_adds(size, args.channels)
            shared = stages['encoders'] + stages['query conv']
            macs = shared + maps * (sum(stages.values()) - shared)
            gflop = 2 * macs / 1e9
            row_rate = _floor_rate(r, rate)
            floor = gflop / row_rate if math.isfinite(row_rate) else math.nan
        if method == 'multi_map':
            method = (
                f'{maps} maps in one call ({r["multi_map_ratio"]:.2f}x of '
                f'{maps} calls, {r["single_calls_s"]:.3f} s)'
            )
        elif method == 'published':
            variant = ', NATTEN' if r['published_natten'] else ''
            if r['published_q_chunk']:
                variant += f', q_chunk_size {r["published_q_chunk"]}'
            method = (
                f'published code{variant} (differs from anyup by '
                f'{r["relative_difference_to_anyup"]:.1e} of its largest value)'
            )
        kernel = r.get('attention_kernel', 'matmul')
        if kernel != 'matmul' and r['method'] in ('anyup', 'multi_map'):
            method += f', {kernel} attention'
        if 'autocast' in r:
            method += f', {r["autocast"]} autocast'
        rows.append(
            [
                'x'.join(map(str, r.get('output', (size, size)))),
                f'{h}x{h}x{r.get("channels", args.channels)}',
                method,
                f'{r["median_s"]:.3f} s',
                f'{r[mem_key] / 1024:.2f} GB',
                f'{(r[mem_key] - r[before_key]) / 1024:.2f} GB',
                f'{gflop:.0f}' if is_anyup else '',
                f'{floor:.2f} s' if is_anyup and math.isfinite(floor) else '',
                f'{r["median_s"] / floor:.2f}' if is_anyup and math.isfinite(floor) else '',
            ]
        )
    _print_rows(header, rows, args.markdown)
    for r in results:
        if not r.get('stages'):
            continue
        macs = stage_multiply_adds(r['size'], args.channels)
        row_rate = _floor_rate(r, rate)
        total = sum(st['seconds'] for st in r['stages'].values())
        print(f'\nAnyUp at {r["size"]}x{r["size"]}, stage by stage ({total:.2f} s):')
        stage_rows = []
        for name, st in r['stages'].items():
            floor = 2 * macs[name] / 1e9 / row_rate if math.isfinite(row_rate) else float('nan')
            stage_rows.append(
                [
                    name,
                    f'{st["seconds"]:.3f} s',
                    f'{100 * st["seconds"] / total:.0f} %',
                    f'{2 * macs[name] / 1e9:.1f}',
                    f'{st["seconds"] / floor:.2f}' if math.isfinite(floor) and floor else '',
                    f'{st["peak_mb"] / 1024:.2f} GB',
                    f'{st["added_mb"] / 1024:.2f} GB',
                ]
            )
        stage_header = ['stage', 'time', 'share', 'GFLOP', 'time / floor', 'peak', 'added']
        _print_rows(stage_header, stage_rows, args.markdown)


def _floor_rate(result: dict, rate: float) -> float:
    """The GFLOP/s a row's floor is taken at: its own measured rate, else the run's; NaN
    (no floor) under autocast, which a float32 rate says nothing about."""
    if 'autocast' in result:
        return math.nan
    return result.get('matmul_gflops', rate)


def _print_rows(header: list[str], rows: list[list[str]], markdown: bool) -> None:
    if markdown:
        print('| ' + ' | '.join(header) + ' |')
        print('|' + '---|' * len(header))
        for row in rows:
            print('| ' + ' | '.join(row) + ' |')
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        for row in [header, *rows]:
            print('  '.join(str(x).ljust(w) for x, w in zip(row, widths)))


if __name__ == '__main__':
    main()

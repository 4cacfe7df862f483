"""Count the kernels one AnyUp forward launches on a GPU, on any machine.

Example:
    python tools/count_kernels.py                       # 448 px from 32x32, 1024 from 73x73
    python tools/count_kernels.py --sizes 448:32 --first-call --attention-kernel triton

Runs :func:`anyup_plugin.core.kernel_count.count_forward_kernels`: a no-grad forward with the
CUDA sizing forced on CPU tensors, every kernel-launching PyTorch operation counted by stage,
the Triton attention's launches recorded rather than run (under Triton's interpreter, set
here), the second call for the shapes unless --first-call. Random weights, batch 1; the
count does not depend on the weights. Prints a Markdown table.

With --device cuda it also runs the forward for real: the first call for each shape under
``torch.cuda.set_sync_debug_mode('error')`` (any host synchronisation fails it), then a
second call under ``torch.profiler``, whose CUDA kernels it counts ("profiled" column).
"""

from __future__ import annotations

import argparse
import os
import sys


def _size_pair(text: str) -> tuple[int, int]:
    try:
        image, features = (int(part) for part in text.split(':'))
    except ValueError:
        message = f'expected IMAGE:FEATURES like 448:32, got {text!r}'
        raise argparse.ArgumentTypeError(message) from None
    return image, features


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--sizes',
        type=_size_pair,
        nargs='+',
        default=[(448, 32), (1024, 73)],
        help='IMAGE:FEATURES side lengths (output = image size); default 448:32 1024:73',
    )
    parser.add_argument('--channels', type=int, default=384, help='feature channels C')
    parser.add_argument(
        '--attention-kernel', default='triton', help="AnyUp's attention_kernel (default triton)"
    )
    parser.add_argument(
        '--first-call', action='store_true', help='count the first call (caches empty)'
    )
    parser.add_argument(
        '--device', default='cpu', help='cpu (counted only) or cuda (also run and profiled)'
    )
    args = parser.parse_args(argv)

    # Triton's device check accepts CPU tensors under its interpreter; nothing is run by it.
    os.environ.setdefault('TRITON_INTERPRET', '1')
    import torch

    from anyup_plugin.core import AnyUp
    from anyup_plugin.core.anyup import STAGES
    from anyup_plugin.core.kernel_count import count_forward_kernels

    columns = ['checks', *STAGES]
    header = ['output', 'features', *columns, 'Triton', 'total', 'host reads', 'host copies']
    if args.device != 'cpu':
        header.append('profiled')
    print(f'| {" | ".join(header)} |')
    print('|' + '---|' * len(header))
    for image_size, feature_size in args.sizes:
        torch.manual_seed(0)
        model = AnyUp(attention_kernel=args.attention_kernel).eval().to(args.device)
        image = torch.randn(1, 3, image_size, image_size, device=args.device)
        features = torch.randn(1, args.channels, feature_size, feature_size, device=args.device)
        profiled = '' if args.device == 'cpu' else f' {_profiled_kernels(model, image, features)} |'
        count = count_forward_kernels(model, image, features, warm=not args.first_call)
        stages = ' | '.join(str(count.stages.get(name, 0)) for name in columns)
        print(
            f'| {image_size}x{image_size} | {feature_size}x{feature_size}x{args.channels} | '
            f'{stages} | {sum(count.triton.values())} | **{count.total}** | '
            f'{count.host_reads} | {count.host_copies} |{profiled}',
            flush=True,
        )
    return 0


def _profiled_kernels(model: object, image: object, features: object) -> int:
    """Runs a first call under sync-debug 'error', then counts a second call's CUDA kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            model(image, features)
        finally:
            torch.cuda.set_sync_debug_mode('default')
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(image, features)
            torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


if __name__ == '__main__':
    sys.exit(main())

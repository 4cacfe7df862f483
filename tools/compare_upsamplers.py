#!/usr/bin/env python
"""Compare upsamplers on one of the paper's probes: a Markdown and CSV table and a figure.

Trains and evaluates the benchmark's probe once per method (work dirs ``OUT/<method>/``; a
method already evaluated is read back, an interrupted one continues from its last epoch),
then writes ``OUT/comparison.md``, ``OUT/comparison.csv`` (the protocol's metrics, time and
peak memory of the upsampler per test image) and ``OUT/comparison.png`` (test images, ground
truth, each method's prediction and PCA of its upsampled features)::

    python tools/compare_upsamplers.py --benchmark ade20k --methods anyup,jafar,bilinear \\
        --checkpoint jafar=checkpoints/jafar_vits14.pth --with-paper --out work_dirs/cmp_ade

On generated data with random weights, on a CPU in minutes (the pipeline, not the quality)::

    python tools/compare_upsamplers.py --demo --benchmark ade20k --methods anyup,bilinear \\
        --out work_dirs/cmp_demo
"""

from __future__ import annotations

import argparse
import sys

from mmengine.config import DictAction

from anyup_plugin.comparison import (
    BENCHMARKS,
    DemoSettings,
    parse_checkpoints,
    run_comparison,
)
from anyup_plugin.core.methods.registry import METHOD_ALIASES, METHOD_CLASSES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[2:]),
    )
    parser.add_argument('--benchmark', required=True, choices=list(BENCHMARKS))
    parser.add_argument(
        '--methods',
        required=True,
        help='comma-separated, of: '
        + ', '.join(['anyup', 'bilinear', *METHOD_CLASSES])
        + ' (aliases: '
        + ', '.join(f'{a}={k}' for a, k in METHOD_ALIASES.items())
        + ')',
    )
    parser.add_argument('--out', required=True, help='folder for the tables and the figure')
    parser.add_argument(
        '--checkpoint',
        action='append',
        metavar='METHOD=PATH',
        help='weights of a method (repeatable); learned methods need one outside --demo',
    )
    parser.add_argument(
        '--with-paper', action='store_true', help="the paper's numbers beside the measured ones"
    )
    parser.add_argument(
        '--demo', action='store_true', help='generated data, random weights, CPU-sized'
    )
    parser.add_argument('--work-dir', help='parent of the per-method work dirs (default: --out)')
    parser.add_argument('--data-root', help="every loader's data root (default: the config's)")
    parser.add_argument('--figure-images', type=int, default=3, help='test images in the figure')
    demo = parser.add_argument_group('--demo sizes')
    defaults = DemoSettings()
    demo.add_argument('--demo-train', type=int, default=defaults.num_train)
    demo.add_argument('--demo-val', type=int, default=defaults.num_val)
    demo.add_argument('--demo-size', type=int, default=defaults.image_size, help='input px')
    demo.add_argument('--demo-epochs', type=int, default=defaults.epochs)
    demo.add_argument('--demo-backbone-depth', type=int, help='ViT blocks (default: all)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='config overrides for every method, key=value (as tools/train.py)',
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    demo = None
    if args.demo:
        demo = DemoSettings(
            num_train=args.demo_train,
            num_val=args.demo_val,
            image_size=args.demo_size,
            epochs=args.demo_epochs,
            backbone_depth=args.demo_backbone_depth,
        )
    try:
        methods = [m for m in args.methods.split(',') if m.strip()]
        outputs = run_comparison(
            args.benchmark,
            methods,
            args.out,
            checkpoints=parse_checkpoints(args.checkpoint),
            demo=demo,
            data_root=args.data_root,
            cfg_options=args.cfg_options,
            with_paper=args.with_paper,
            work_dir=args.work_dir,
            figure_images=args.figure_images,
        )
    except ValueError as err:
        print(f'compare_upsamplers: error: {err}', file=sys.stderr)
        return 2
    print(outputs.markdown.read_text(encoding='utf-8'))
    for result in outputs.results:
        state = 'read back' if result['reused'] else 'trained and evaluated'
        print(f'{result["method"]}: {state}')
    print(
        f'wrote {outputs.markdown}, {outputs.csv}'
        + (f', {outputs.figure}' if outputs.figure else '')
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())

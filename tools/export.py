"""Exports AnyUp at fixed sizes to ONNX (.onnx) or a torch.export program (.pt2).

    python tools/export.py anyup.onnx --checkpoint anyup_multi_backbone \\
        --image-size 448 448 --features 384 32 32
    python tools/export.py anyup.pt2 --random-weights --image-size 224 224 \\
        --features 384 16 16 --features 768 16 16 --output-size 112 112
"""

from __future__ import annotations

import argparse
import logging

from anyup_plugin import AnyUp
from anyup_plugin.core.export import EXPORT_FORMATS, save_export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out', help=f'output file ({", ".join(EXPORT_FORMATS)})')
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument('--checkpoint', help='AnyUp weights: a local file or a published name')
    weights.add_argument('--random-weights', action='store_true', help='randomly initialised')
    parser.add_argument('--image-size', type=int, nargs=2, required=True, metavar=('H', 'W'))
    parser.add_argument(
        '--features',
        type=int,
        nargs=3,
        action='append',
        required=True,
        metavar=('C', 'h', 'w'),
        help='one feature map (repeat for several; the encoders then run once for all)',
    )
    parser.add_argument('--output-size', type=int, nargs=2, default=None, metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument(
        '--no-optimize', action='store_true', help="ONNX: skip the exporter's graph optimisation"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(message)s')

    model = AnyUp() if args.random_weights else AnyUp.from_pretrained(args.checkpoint)
    save_export(
        model.eval(),
        args.out,
        (args.batch, 3, *args.image_size),
        [(args.batch, *shape) for shape in args.features],
        tuple(args.output_size) if args.output_size else None,
        optimize=not args.no_optimize,
    )


if __name__ == '__main__':
    main()

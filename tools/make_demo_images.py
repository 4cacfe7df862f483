#!/usr/bin/env python
"""Writes the synthetic image folder of the tiny CPU config (configs/anyup/anyup_tiny_cpu_demo.py).

Examples::

    python tools/make_demo_images.py                     # -> data/anyup_demo/shapes/*.jpg|png
    python tools/make_demo_images.py --out /tmp/imgs --num 200 --min-size 448
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from anyup_plugin.testing import write_image_folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/anyup_demo', help='output folder')
    parser.add_argument('--num', type=int, default=96, help='number of images')
    parser.add_argument('--min-size', type=int, default=64, help='smallest short side')
    parser.add_argument('--max-size', type=int, default=None, help='largest side')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_image_folder(args.out, args.num, args.min_size, args.max_size, args.seed)
    print(f'wrote {len(paths)} images under {os.path.join(args.out, "shapes")}')


if __name__ == '__main__':
    main()

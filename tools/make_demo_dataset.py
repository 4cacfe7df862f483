#!/usr/bin/env python
"""Writes a small generated dataset in the ADE20K layout (ADEChallengeData2016/...).

Example::

    python tools/make_demo_dataset.py data/demo_ade20k --num-train 40 --num-val 12

The printed folder is the ``data_root`` for ``configs/mmseg/demo_ade20k_layout.py`` (its
default) or any ADE20K config. See :mod:`anyup_plugin.testing` for what the scenes
contain.
"""

from __future__ import annotations

import argparse

from anyup_plugin.testing import DEMO_CLASSES, write_ade20k_layout_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out', nargs='?', default='data/demo_ade20k', help='output folder')
    parser.add_argument('--num-train', type=int, default=40, help='training images')
    parser.add_argument('--num-val', type=int, default=12, help='validation images')
    parser.add_argument('--height', type=int, default=256, help='image height')
    parser.add_argument('--width', type=int, default=320, help='image width')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    root = write_ade20k_layout_dataset(
        args.out,
        num_train=args.num_train,
        num_val=args.num_val,
        height=args.height,
        width=args.width,
        seed=args.seed,
    )
    classes = ', '.join(f'{i} {name}' for i, name in sorted(DEMO_CLASSES.items()))
    print(f'{args.num_train} training and {args.num_val} validation images ready in {root}')
    print(f'classes (ADE20K151 indices): {classes}')


if __name__ == '__main__':
    main()

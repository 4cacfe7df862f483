"""Generates the bundled sample picture ``anyup_plugin/assets/sample.png``.

One scene of the package's scene generator (:func:`anyup_plugin.testing.make_scene`: sky,
grass or road, buildings with windows, trees, cars) with sharp edges, thin structures and
textures, the kind of detail feature upsampling should follow. No photograph is shipped, so
there is no licence to track.

Usage:
    python tools/make_sample_image.py [--output anyup_plugin/assets/sample.png] [--size 448]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from anyup_plugin.testing import make_scene
from anyup_plugin.utils.io import atomic_write

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / 'anyup_plugin' / 'assets' / 'sample.png'
#: The smallest side at which the scene's objects are still recognisable.
MIN_SIZE = 16


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--output', type=Path, default=DEFAULT_OUTPUT, help='PNG to write')
    parser.add_argument('--size', type=int, default=448, help='side length in pixels')
    parser.add_argument('--seed', type=int, default=0, help='seed of the scene')
    args = parser.parse_args(argv)
    if args.size < MIN_SIZE:
        parser.error(f'--size must be at least {MIN_SIZE}, got {args.size}')
    image, _ = make_scene(np.random.default_rng(args.seed), args.size, args.size)
    with atomic_write(args.output, suffix='.png') as tmp:
        # A 256-colour palette keeps the packaged file small (the scene's texture noise does
        # not compress as RGB); readers convert it to RGB.
        palette = Image.fromarray(image).quantize(256, dither=Image.Dither.NONE)
        palette.save(tmp, format='PNG', optimize=True)
    print(f'wrote {args.output} ({args.size}x{args.size}, {args.output.stat().st_size} B)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

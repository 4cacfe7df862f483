"""Generates the bundled sample picture ``anyup_plugin/assets/sample.png``.

A synthetic, deterministic scene (sky, sun, hills, a house, a checkerboard, striped and dotted
objects) with sharp edges, thin structures and textures: the kind of detail feature upsampling
should follow. No photograph is shipped, so there is no licence to track.

Usage:
    python tools/make_sample_image.py [--output anyup_plugin/assets/sample.png] [--size 448]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / 'anyup_plugin' / 'assets' / 'sample.png'


def _lerp(a: tuple[int, ...], b: tuple[int, ...], t: float) -> tuple[int, ...]:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def make_scene(size: int = 448, seed: int = 0) -> Image.Image:
    """Draws the scene at ``size x size`` (all coordinates scale with ``size``)."""
    rng = random.Random(seed)
    s = size / 448.0
    img = Image.new('RGB', (size, size))
    draw = ImageDraw.Draw(img)

    # Sky: vertical gradient.
    horizon = int(250 * s)
    for y in range(horizon):
        draw.line([(0, y), (size, y)], fill=_lerp((40, 90, 200), (170, 215, 250), y / horizon))
    # Sun with rays.
    cx, cy, r = 360 * s, 70 * s, 34 * s
    for k in range(12):
        a = 2 * math.pi * k / 12
        draw.line(
            [
                (cx + 1.3 * r * math.cos(a), cy + 1.3 * r * math.sin(a)),
                (cx + 1.9 * r * math.cos(a), cy + 1.9 * r * math.sin(a)),
            ],
            fill=(255, 220, 60),
            width=max(1, round(4 * s)),
        )
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 200, 40), outline=(240, 140, 20))
    # Clouds.
    for x0, y0 in ((60, 50), (170, 95)):
        for dx, dy, rr in ((0, 0, 22), (25, -10, 26), (52, 0, 20), (26, 8, 22)):
            x, y, rr = (x0 + dx) * s, (y0 + dy) * s, rr * s
            draw.ellipse([x - rr, y - rr, x + rr, y + rr], fill=(250, 250, 252))

    # Hills (two layers) and a meadow.
    for base, amp, freq, phase, colour in (
        (215, 30, 1.6, 0.3, (70, 140, 70)),
        (250, 22, 2.7, 1.9, (40, 110, 50)),
    ):
        points = [(0, size)]
        for x in range(0, size + 1, 4):
            points.append((x, (base + amp * math.sin(freq * 2 * math.pi * x / size + phase)) * s))
        points.append((size, size))
        draw.polygon(points, fill=colour)
    draw.rectangle([0, 300 * s, size, size], fill=(95, 160, 60))
    # Grass texture: short strokes.
    for _ in range(900):
        x, y = rng.uniform(0, size), rng.uniform(300 * s, size)
        h = rng.uniform(4, 10) * s
        shade = rng.randint(-25, 25)
        draw.line([(x, y), (x + rng.uniform(-2, 2) * s, y - h)], fill=(70 + shade, 140 + shade, 45))

    # House: walls, striped roof, door, windows with crossbars.
    hx, hy, hw, hh = 40 * s, 250 * s, 130 * s, 95 * s
    draw.rectangle([hx, hy, hx + hw, hy + hh], fill=(205, 85, 60), outline=(90, 30, 20), width=2)
    for i in range(0, int(hh), max(2, int(8 * s))):
        draw.line([(hx, hy + i), (hx + hw, hy + i)], fill=(185, 70, 50), width=1)
    roof = [(hx - 12 * s, hy), (hx + hw / 2, hy - 65 * s), (hx + hw + 12 * s, hy)]
    draw.polygon(roof, fill=(60, 60, 75))
    for k in range(1, 9):
        t = k / 9
        draw.line([_lerp(roof[0], roof[1], t), _lerp(roof[2], roof[1], t)], fill=(110, 110, 125))
    draw.rectangle([hx + 55 * s, hy + 40 * s, hx + 80 * s, hy + hh], fill=(110, 60, 30))
    for wx in (hx + 15 * s, hx + 95 * s):
        draw.rectangle([wx, hy + 20 * s, wx + 24 * s, hy + 44 * s], fill=(200, 230, 250), outline=0)
        draw.line([(wx + 12 * s, hy + 20 * s), (wx + 12 * s, hy + 44 * s)], fill=0, width=2)
        draw.line([(wx, hy + 32 * s), (wx + 24 * s, hy + 32 * s)], fill=0, width=2)

    # Checkerboard on the ground.
    cell = max(2, round(14 * s))
    bx, by = int(250 * s), int(330 * s)
    for i in range(8):
        for j in range(6):
            colour = (240, 240, 240) if (i + j) % 2 == 0 else (30, 30, 30)
            x0, y0 = bx + i * cell, by + j * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour)

    # Striped ball and a dotted box.
    bcx, bcy, br = 205 * s, 390 * s, 34 * s
    ball = Image.new('L', (size, size), 0)
    ImageDraw.Draw(ball).ellipse([bcx - br, bcy - br, bcx + br, bcy + br], fill=255)
    stripes = Image.new('RGB', (size, size))
    sd = ImageDraw.Draw(stripes)
    colours = ((230, 40, 40), (250, 230, 40), (40, 90, 220))
    for k, x in enumerate(range(-size, 2 * size, max(3, int(10 * s)))):
        sd.line([(x, 0), (x + size, size)], fill=colours[k % 3], width=max(2, int(10 * s)))
    img.paste(stripes, (0, 0), ball)
    draw.ellipse([bcx - br, bcy - br, bcx + br, bcy + br], outline=(20, 20, 20), width=2)
    dx0, dy0, dw = 370 * s, 300 * s, 60 * s
    draw.rectangle([dx0, dy0, dx0 + dw, dy0 + dw], fill=(150, 60, 170), outline=(60, 20, 70))
    step = 12 * s
    for i in range(5):
        for j in range(5):
            x, y, rr = dx0 + step * (i + 0.5), dy0 + step * (j + 0.5), 3 * s
            draw.ellipse([x - rr, y - rr, x + rr, y + rr], fill=(250, 200, 240))

    # A thin fence: one-pixel-ish posts, a hard case for coarse features.
    for k in range(14):
        x = 180 * s + k * 10 * s
        draw.line([(x, 268 * s), (x, 298 * s)], fill=(240, 235, 220), width=max(1, int(2 * s)))
    draw.line([(180 * s, 276 * s), (315 * s, 276 * s)], fill=(240, 235, 220), width=2)
    draw.line([(180 * s, 290 * s), (315 * s, 290 * s)], fill=(240, 235, 220), width=2)

    return img.filter(ImageFilter.SMOOTH)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--output', type=Path, default=DEFAULT_OUTPUT, help='PNG to write')
    parser.add_argument('--size', type=int, default=448, help='side length in pixels')
    parser.add_argument('--seed', type=int, default=0, help='seed of the grass texture')
    args = parser.parse_args(argv)
    if args.size < 16:
        parser.error(f'--size must be at least 16, got {args.size}')
    image = make_scene(args.size, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.png', dir=args.output.parent)
    try:
        with os.fdopen(fd, 'wb') as fh:
            image.save(fh, format='PNG', optimize=True)
        os.replace(tmp, args.output)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    print(f'wrote {args.output} ({image.size[0]}x{image.size[1]}, {args.output.stat().st_size} B)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

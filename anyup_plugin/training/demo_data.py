"""Synthetic images for the tiny CPU training config and the tests.

Each image is a smooth two-colour gradient with a few flat-coloured shapes (rectangles,
ellipses, polygons) and stripes on top: sharp edges where learned, image-guided upsampling
visibly beats bilinear interpolation.
"""

from __future__ import annotations

import os
import os.path as osp

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['make_demo_image', 'make_demo_images']


def make_demo_image(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """One synthetic RGB image of the given size."""
    c0, c1 = rng.integers(0, 256, size=(2, 3))
    t = np.linspace(0.0, 1.0, width)[None, :, None]
    if rng.random() < 0.5:
        t = np.linspace(0.0, 1.0, height)[:, None, None].repeat(width, axis=1)
    else:
        t = t.repeat(height, axis=0)
    base = (c0 * (1 - t) + c1 * t).astype(np.uint8)
    img = Image.fromarray(base, 'RGB')
    draw = ImageDraw.Draw(img)
    scale = min(width, height)
    for _ in range(int(rng.integers(3, 9))):
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(0.08, 0.35, size=2) * scale
        kind = rng.integers(0, 4)
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        if kind == 0:
            draw.rectangle(box, fill=color)
        elif kind == 1:
            draw.ellipse(box, fill=color)
        elif kind == 2:
            angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(3, 7))))
            points = [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]
            draw.polygon(points, fill=color)
        else:
            period = max(4, int(rng.uniform(0.03, 0.1) * scale))
            for x in range(int(box[0]), int(box[2]), period):
                draw.rectangle([x, box[1], x + period // 2, box[3]], fill=color)
    return img


def make_demo_images(
    out_dir: str,
    num_images: int = 48,
    min_size: int = 112,
    max_size: int | None = None,
    seed: int = 0,
    num_small: int = 0,
    num_corrupt: int = 0,
) -> list[str]:
    """Writes synthetic images (JPEG and PNG) into ``out_dir``.

    Args:
        out_dir: Output folder (created; a ``shapes/`` subfolder holds the images).
        num_images: Images with a short side of at least ``min_size``.
        min_size: Smallest short side.
        max_size: Largest side; default ``1.4 * min_size``.
        seed: Random seed (the same seed gives the same files).
        num_small: Extra images with a short side below ``min_size`` (for filter tests).
        num_corrupt: Extra files with an image extension that are not images.

    Returns:
        Paths of the files written.
    """
    rng = np.random.default_rng(seed)
    max_size = max_size or int(round(min_size * 1.4))
    folder = osp.join(out_dir, 'shapes')
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(num_images + num_small):
        small = i >= num_images
        short = int(rng.integers(max(8, min_size // 3), min_size)) if small else min_size
        long = int(rng.integers(short, max(short, max_size) + 1))
        width, height = (long, short) if rng.random() < 0.5 else (short, long)
        img = make_demo_image(width, height, rng)
        ext = '.png' if i % 4 == 3 else '.jpg'
        path = osp.join(folder, f'{"small" if small else "img"}_{i:05d}{ext}')
        if ext == '.jpg':
            img.save(path, quality=95)
        else:
            img.save(path)
        paths.append(path)
    for i in range(num_corrupt):
        path = osp.join(folder, f'corrupt_{i:03d}.jpg')
        with open(path, 'wb') as f:
            f.write(b'this is not an image' * (i + 1))
        paths.append(path)
    return paths

"""The one scene generator behind every generated image of the demos and tests.

Each scene is an outdoor-like picture drawn with numpy: sky above a horizon, grass or road
below, and a few buildings, trees and cars, each class with its own colours and texture, and
sharp edges between them (where image-guided upsampling visibly beats bilinear). Its label
map uses the ADE20K 151-class indices of those classes, so the ADE20K configs read the
generated datasets unchanged.
"""

from __future__ import annotations

import numpy as np

__all__ = ['DEMO_CLASSES', 'make_scene']

#: ADE20K151 label index -> class name of the classes the scenes contain.
DEMO_CLASSES: dict[int, str] = {
    2: 'building',
    3: 'sky',
    5: 'tree',
    7: 'road',
    10: 'grass',
    21: 'car',
}
_SKY, _GRASS, _ROAD, _BUILDING, _TREE, _CAR = 3, 10, 7, 2, 5, 21


def _noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    return rng.normal(0.0, scale, size=shape)


def _paint(
    img: np.ndarray,
    label: np.ndarray,
    mask: np.ndarray,
    colour: np.ndarray,
    cls: int,
) -> None:
    img[mask] = colour[mask] if colour.ndim == 3 else colour
    label[mask] = cls


def make_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws one scene.

    Args:
        rng: Random generator.
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        (H, W, 3) uint8 RGB image and (H, W) uint8 label map (ADE20K151 indices).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    label = np.zeros((height, width), np.uint8)
    horizon = int(height * rng.uniform(0.35, 0.55))

    # Sky: a vertical blue gradient with soft noise.
    t = (yy / max(horizon, 1))[..., None]
    sky = (1 - t) * np.array([70, 130, 225]) + t * np.array([175, 205, 240])
    _paint(img, label, yy < horizon, sky + _noise(rng, sky.shape, 4), _SKY)

    # Ground: grass (green, vertical stripes) and/or road (grey, fine grain, dashed line).
    ground = yy >= horizon
    split = rng.uniform(0.2, 0.8) * width if rng.random() < 0.5 else None
    grass_first = rng.random() < 0.5
    stripes = 18 * np.sin(xx * rng.uniform(0.5, 0.9))[..., None]
    grass = np.array([55, 145, 45]) + stripes * np.array([0.3, 1.0, 0.2])
    grass = grass + _noise(rng, grass.shape, 10)
    road = np.array([112, 112, 118]) + _noise(rng, (height, width, 1), 14)
    lane_y = horizon + (height - horizon) * 0.6
    lane = (np.abs(yy - lane_y) < max(1.5, height / 120)) & ((xx // max(width / 16, 1)) % 2 == 0)
    road[lane] = 235
    if split is None:
        left_is_grass = right_is_grass = grass_first
    else:
        left_is_grass, right_is_grass = grass_first, not grass_first
    boundary = width if split is None else split
    for is_grass, side in ((left_is_grass, xx < boundary), (right_is_grass, xx >= boundary)):
        area = ground & side
        _paint(img, label, area, grass if is_grass else road, _GRASS if is_grass else _ROAD)

    # Buildings on the horizon: brown-grey blocks with a grid of dark windows.
    for _ in range(rng.integers(0, 3)):
        bw, bh = width * rng.uniform(0.12, 0.3), height * rng.uniform(0.15, 0.35)
        x0 = rng.uniform(0, width - bw)
        body = (xx >= x0) & (xx < x0 + bw) & (yy >= horizon - bh) & (yy < horizon + 2)
        base = np.array([150, 112, 92]) + rng.uniform(-20, 20, 3)
        facade = np.broadcast_to(base, img.shape) + _noise(rng, img.shape, 6)
        cell = max(height / 24, 3)
        windows = ((xx - x0) % cell < cell * 0.5) & ((yy - horizon + bh) % cell < cell * 0.5)
        facade = np.where(windows[..., None], np.array([40, 50, 80]), facade)
        _paint(img, label, body, facade, _BUILDING)

    # Trees: a brown trunk under a dark, blotchy green crown.
    for _ in range(rng.integers(0, 3)):
        cx, r = rng.uniform(0.05, 0.95) * width, height * rng.uniform(0.07, 0.14)
        cy = horizon - rng.uniform(0.2, 1.0) * r
        trunk = (np.abs(xx - cx) < r * 0.18) & (yy >= cy) & (yy < horizon + r * 0.6)
        _paint(img, label, trunk, np.array([100, 65, 30]) + _noise(rng, img.shape, 8), _TREE)
        crown = (xx - cx) ** 2 + ((yy - cy) * 1.2) ** 2 < r**2
        blotch = 25 * np.sin(xx * 0.9 + rng.uniform(0, 6)) * np.cos(yy * 0.8)
        leaves = np.array([30, 90, 35]) + blotch[..., None] * np.array([0.2, 0.6, 0.2])
        _paint(img, label, crown, leaves + _noise(rng, img.shape, 12), _TREE)

    # Cars on the ground: a saturated body with two black wheels.
    palette = np.array([[205, 30, 30], [30, 60, 200], [230, 200, 30], [240, 240, 240]])
    for _ in range(rng.integers(0, 3)):
        cw = width * rng.uniform(0.1, 0.2)
        ch = cw * 0.4
        x0 = rng.uniform(0, width - cw)
        y1 = rng.uniform(horizon + ch + 2, height)
        body = (xx >= x0) & (xx < x0 + cw) & (yy >= y1 - ch) & (yy < y1 - ch * 0.25)
        colour = palette[rng.integers(len(palette))] + _noise(rng, img.shape, 6)
        _paint(img, label, body, colour, _CAR)
        for wx in (x0 + cw * 0.22, x0 + cw * 0.78):
            wheel = (xx - wx) ** 2 + (yy - (y1 - ch * 0.25)) ** 2 < (ch * 0.25) ** 2
            _paint(img, label, wheel, np.array([20, 20, 20]) + _noise(rng, img.shape, 4), _CAR)

    return np.clip(img, 0, 255).astype(np.uint8), label

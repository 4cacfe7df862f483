"""Indoor scenes with exactly known depth and surface normals, in the converted NYUv2 layout.

Each scene is a ray-cast room seen by a pinhole camera (NYU's Kinect focal length, scaled to
the image size): floor, ceiling and walls (the inside of a box turned by a random yaw and
pitch), plus a few boxes standing on the floor. Every pixel's depth (camera z, metres) and
unit normal (camera frame, facing the camera) are those of the surface its ray hits, so the
ground truth is exact. Surfaces have their own colours, world-anchored stripes or checks and
Lambertian shading, which give a probe cues for both depth and orientation; a few pixels per
image have no depth (0), as Kinect holes do.

:func:`write_nyu_scenes_dataset` writes such scenes where ``tools/convert_nyuv2.py`` would put
NYUv2 (``splits/train.txt``, ``splits/test.txt``), so the NYU configs read them unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from anyup_plugin.evaluation.nyu_layout import write_sample, write_split

__all__ = ['make_nyu_scene', 'write_nyu_scenes_dataset']

_NYU_FOCAL, _NYU_WIDTH = 518.8579, 640  # Kinect focal length (px) at 640 columns


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """Room-from-camera rotation: yaw about the vertical (y) axis, then pitch about x."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return r_yaw @ r_pitch


def _box_hit(origin, dirs, lo, hi, inside: bool):
    """Ray/axis-aligned box intersection for (N, 3) ``dirs`` from ``origin``.

    Returns (t, axis, sign): the distance along each ray (inf where it misses), the axis of the
    face hit and the sign of that face's outward normal. ``inside``: the rays start inside the
    box and the exit face is wanted (room walls), else the entry face (a box on the floor).
    """
    with np.errstate(divide='ignore', invalid='ignore'):
        t_lo = (lo - origin) / dirs
        t_hi = (hi - origin) / dirs
    t_near, t_far = np.minimum(t_lo, t_hi), np.maximum(t_lo, t_hi)
    t_near = np.where(np.isnan(t_near), -np.inf, t_near)
    t_far = np.where(np.isnan(t_far), np.inf, t_far)
    if inside:
        axis = np.argmin(t_far, axis=1)
        t = t_far[np.arange(len(dirs)), axis]
        # Exit face: its outward normal points along the ray.
        sign = np.sign(dirs[np.arange(len(dirs)), axis])
        return t, axis, sign
    axis = np.argmax(t_near, axis=1)
    t = t_near[np.arange(len(dirs)), axis]
    hit = (t <= t_far.min(axis=1)) & (t > 1e-6)
    sign = -np.sign(dirs[np.arange(len(dirs)), axis])
    return np.where(hit, t, np.inf), axis, sign


def make_nyu_scene(
    rng: np.random.Generator, height: int = 240, width: int = 320
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renders one room.

    Args:
        rng: Random generator.
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        (H, W, 3) uint8 RGB image, (H, W) float32 depth in metres (0 = missing), and (H, W, 3)
        float32 unit normals in the camera frame (x right, y down, z forward).
    """
    focal = _NYU_FOCAL * width / _NYU_WIDTH
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    dirs_cam = np.stack([(u + 0.5 - width / 2) / focal, (v + 0.5 - height / 2) / focal,
                         np.ones_like(u)], axis=-1).reshape(-1, 3)  # fmt: skip
    rot = _rotation(rng.uniform(-0.5, 0.5), rng.uniform(-0.25, 0.1))
    dirs = dirs_cam @ rot.T  # room frame, camera at the origin
    cam_height = rng.uniform(1.0, 1.6)  # y points down: the floor is at y = +cam_height
    room_lo = np.array([-rng.uniform(1.5, 3.0), cam_height - rng.uniform(2.4, 3.0), -0.5])
    room_hi = np.array([rng.uniform(1.5, 3.0), cam_height, rng.uniform(4.0, 8.0)])

    t, axis, sign = _box_hit(np.zeros(3), dirs, room_lo, room_hi, inside=True)
    # Outward normal of the exit face; the surface normal seen from inside is its opposite.
    surface = axis * 2 + (sign > 0)  # 0..5: the six room faces
    normal_sign = -sign
    for k in range(int(rng.integers(1, 4))):
        size = rng.uniform([0.4, 0.3, 0.4], [1.2, 1.4, 1.2])
        centre_x = rng.uniform(room_lo[0] + size[0], room_hi[0] - size[0])
        centre_z = rng.uniform(1.5, room_hi[2] - size[2])
        lo = np.array([centre_x - size[0] / 2, cam_height - size[1], centre_z - size[2] / 2])
        hi = np.array([centre_x + size[0] / 2, cam_height, centre_z + size[2] / 2])
        tb, axb, sb = _box_hit(np.zeros(3), dirs, lo, hi, inside=False)
        closer = tb < t
        t = np.where(closer, tb, t)
        axis = np.where(closer, axb, axis)
        normal_sign = np.where(closer, sb, normal_sign)
        surface = np.where(closer, 6 + 6 * k + axb * 2 + (sb > 0), surface)

    normals_room = np.zeros_like(dirs)
    normals_room[np.arange(len(dirs)), axis] = normal_sign
    points = dirs * t[:, None]
    normals = (normals_room @ rot).reshape(height, width, 3)  # back to the camera frame
    depth = t.reshape(height, width) * 1.0  # dirs_cam has z = 1: t is the camera z depth

    # Colour: per-surface base colour, world-anchored pattern, Lambertian shading.
    palette = rng.uniform(40, 230, size=(int(surface.max()) + 1, 3))
    base = palette[surface]
    idx = np.arange(len(dirs))
    plane_u, plane_v = points[idx, (axis + 1) % 3], points[idx, (axis + 2) % 3]
    period = 0.25 + 0.25 * (surface % 3)
    pattern = (np.floor(plane_u / period) + np.floor(plane_v / period) * (surface % 2)) % 2
    light = np.array([0.3, -0.8, -0.5]) / np.linalg.norm([0.3, -0.8, -0.5])
    shade = 0.35 + 0.65 * np.clip(normals_room @ light, 0, 1)
    colour = base * (0.8 + 0.2 * pattern[:, None]) * shade[:, None]
    colour += rng.normal(0, 3.0, size=colour.shape)
    image = np.clip(colour, 0, 255).astype(np.uint8).reshape(height, width, 3)

    # Kinect-like holes: a few small blobs without depth (normals stay defined there).
    for _ in range(int(rng.integers(1, 4))):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(2, 6)
        depth[max(cy - r, 0) : cy + r, max(cx - r, 0) : cx + r] = 0.0
    return image, depth.astype(np.float32), normals.astype(np.float32)


def write_nyu_scenes_dataset(
    root: str | os.PathLike,
    num_train: int = 24,
    num_test: int = 8,
    height: int = 240,
    width: int = 320,
    seed: int = 0,
) -> Path:
    """Writes ``num_train`` + ``num_test`` scenes in the converted NYUv2 layout.

    Args:
        root: Dataset root (created).
        num_train: Scenes in ``splits/train.txt``.
        num_test: Scenes in ``splits/test.txt``.
        height: Image height (NYUv2: 480).
        width: Image width (NYUv2: 640).
        seed: Random seed; the same arguments always write the same files.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = {'train': [], 'test': []}
    for i in range(num_train + num_test):
        split = 'train' if i < num_train else 'test'
        name = f'nyu_{i + 1:04d}'
        write_sample(root, name, *make_nyu_scene(rng, height, width))
        names[split].append(name)
    for split, split_names in names.items():
        write_split(root, split, split_names)
    return root

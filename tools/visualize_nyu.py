#!/usr/bin/env python
"""Writes PNG panels of an NYU depth or normal probe's predictions on its test split.

Depth: image | ground-truth depth | predicted depth | absolute error, the two depth maps on one
colour scale (turbo, from the image's valid ground truth; the error on its own scale),
pixels without ground truth in grey. Normals: image | ground-truth normals | predicted normals
| angular error (0-90 degrees), normals shown as RGB = (n + 1) / 2, invalid pixels in grey.
The panel's title line gives the image's scores (``depth_metrics`` / ``normal_metrics``)::

    python tools/visualize_nyu.py configs/mmseg/nyu_depth_dinov2.py work_dirs/.../epoch_10.pth \\
        --out-dir vis/nyu_depth --num 16
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import pickle
import sys

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from PIL import Image, ImageDraw

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from anyup_plugin.evaluation import depth_metrics, normal_metrics
from anyup_plugin.evaluation.normal_metrics import angular_error

GREY = np.array([128, 128, 128], np.uint8)


def colorize(values: np.ndarray, valid: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 turbo colours on [vmin, vmax], grey where not valid."""
    from matplotlib import colormaps  # matplotlib comes with MMEngine

    scaled = np.clip((values - vmin) / max(vmax - vmin, 1e-6), 0, 1)
    rgb = (colormaps['turbo'](scaled)[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = GREY
    return rgb


def normals_rgb(normals: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(3, H, W) normals -> (H, W, 3) uint8 RGB = (n + 1) / 2, grey where not valid."""
    rgb = ((np.clip(normals.transpose(1, 2, 0), -1, 1) + 1) * 127.5).astype(np.uint8)
    rgb[~valid] = GREY
    return rgb


def panel(tiles: list[np.ndarray], title: str) -> Image.Image:
    """Tiles side by side under a one-line title."""
    h, w = tiles[0].shape[:2]
    out = Image.new('RGB', (w * len(tiles), h + 14), (255, 255, 255))
    for i, tile in enumerate(tiles):
        out.paste(Image.fromarray(tile), (i * w, 14))
    ImageDraw.Draw(out).text((2, 1), title, fill=(0, 0, 0))
    return out


def depth_panel(image: np.ndarray, sample, max_depth: float) -> Image.Image:
    gt = sample.gt_depth_map.data[0].cpu()
    pred = sample.pred_depth_map.data[0].cpu()
    valid = ((gt > 0) & (gt <= max_depth)).numpy()
    scores = depth_metrics(pred[None], gt[None], max_depth=max_depth)
    gt, pred = gt.numpy(), pred.numpy()
    vmin, vmax = (gt[valid].min(), gt[valid].max()) if valid.any() else (0.0, max_depth)
    err = np.abs(pred - gt)
    tiles = [
        image,
        colorize(gt, valid, vmin, vmax),
        colorize(pred, np.ones_like(valid), vmin, vmax),
        colorize(err, valid, 0.0, float(err[valid].max()) if valid.any() else 1.0),
    ]
    title = (f'depth {vmin:.2f}-{vmax:.2f} m | rmse {float(scores["rmse"][0]):.3f} '
             f'delta1 {float(scores["delta1"][0]):.3f}')  # fmt: skip
    return panel(tiles, title)


def normal_panel(image: np.ndarray, sample, max_depth: float) -> Image.Image:
    gt = sample.gt_normal_map.data.cpu()
    pred = sample.pred_normal_map.data.cpu()
    depth = sample.gt_depth_map.data[0].cpu()
    valid = (depth > 0) & (depth <= max_depth)
    scores = normal_metrics(pred[None], gt[None], valid[None])
    err = angular_error(pred[None, :3], gt[None])[0].numpy()
    valid = valid.numpy()
    tiles = [
        image,
        normals_rgb(gt.numpy(), valid),
        normals_rgb(pred[:3].numpy(), np.ones_like(valid)),
        colorize(err, valid, 0.0, 90.0),
    ]
    title = (f'angular rmse {float(scores["rmse"][0]):.1f} deg | within 30 '
             f'{float(scores["within_30"][0]):.2f}')  # fmt: skip
    return panel(tiles, title)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='an NYU depth or normals config')
    parser.add_argument('checkpoint', help='trained weights (.pth)')
    parser.add_argument('--out-dir', default='vis/nyu', help='where the PNG panels go')
    parser.add_argument('--num', type=int, default=8, help='how many test images')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='config overrides')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    from mmseg.registry import DATASETS, MODELS

    import anyup_plugin.mmseg  # noqa: F401  (registers the NYU modules)

    cfg.model.backbone.pretrained = False  # the checkpoint holds the weights
    model = MODELS.build(cfg.model)
    try:
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    except pickle.UnpicklingError as err:  # torch.load(weights_only=True) refused it
        raise SystemExit(
            f'{args.checkpoint}: not a weights-only checkpoint ({err}). Use one written by '
            "tools/train.py (its checkpoints load with torch's safe default), or save "
            "{'state_dict': model.state_dict()} with torch.save."
        ) from err
    model.to(args.device).eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    max_depth = float(cfg.model.decode_head.get('max_depth', 10.0))
    normals = 'Normal' in cfg.model.decode_head.type
    os.makedirs(args.out_dir, exist_ok=True)
    for i in range(min(args.num, len(dataset))):
        item = dataset[i]
        with torch.no_grad():
            (sample,) = model.test_step(dict(inputs=[item['inputs']],
                                             data_samples=[item['data_samples']]))  # fmt: skip
        image = item['inputs'].numpy().transpose(1, 2, 0)[..., ::-1].copy()  # BGR -> RGB
        make = normal_panel if normals else depth_panel
        name = osp.splitext(osp.basename(sample.metainfo.get('img_path', f'{i:04d}')))[0]
        path = osp.join(args.out_dir, f'{name}.png')
        make(image, sample, max_depth).save(path)
        print(f'[visualize_nyu] {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python
"""Per-image time of backbone, neck and head of MMSeg configs, AnyUp and bilinear side by side.

Builds each config's model with random weights (no download), feeds one normalised random
image of ``--size`` pixels (batch 1, inference, no gradients) and reports the median over
``--repeats`` runs after ``--warmup`` runs, per stage and in total::

    python tools/benchmark_segmentor.py                       # ADE20K, AnyUp vs bilinear, 448
    python tools/benchmark_segmentor.py --device cuda --repeats 50
"""

from __future__ import annotations

import argparse
import os.path as osp
import platform
import statistics
import time
from collections.abc import Callable

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import anyup_plugin.mmseg  # noqa: F401  (registers the modules)

_CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'mmseg')
DEFAULT_CONFIGS = [
    osp.join(_CONFIG_DIR, 'ade20k_dinov2.py'),
    osp.join(_CONFIG_DIR, 'ade20k_dinov2_bilinear.py'),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='*', default=DEFAULT_CONFIGS, help='MMSeg configs')
    parser.add_argument('--size', type=int, default=448, help='square input size in pixels')
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs first')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch default)')
    return parser.parse_args(argv)


def build_model(config: str, device: str) -> torch.nn.Module:
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = cfg.model
    model_cfg.backbone.checkpoint = None
    model_cfg.backbone.pretrained = False
    if model_cfg.get('neck') is not None and 'checkpoint' in model_cfg.neck:
        model_cfg.neck.checkpoint = None
    return MODELS.build(model_cfg).to(device).eval()


def _timed(fn: Callable[[], object], device: str) -> tuple[float, object]:
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


@torch.no_grad()
def benchmark(model: torch.nn.Module, size: int, warmup: int, repeats: int, device: str) -> dict:
    """Median seconds of each stage on one (1, 3, size, size) image."""
    image = torch.randn(1, 3, size, size, device=device)
    times: dict[str, list[float]] = {'backbone': [], 'neck': [], 'head': []}
    for i in range(warmup + repeats):
        t_backbone, feats = _timed(lambda: model.backbone(image), device)
        if model.with_neck:
            t_neck, feats = _timed(lambda f=feats: model.neck(f, image), device)
        else:
            t_neck = 0.0
        t_head, logits = _timed(lambda f=feats: model.decode_head(f), device)
        if i >= warmup:
            times['backbone'].append(t_backbone)
            times['neck'].append(t_neck)
            times['head'].append(t_head)
    result = {k: statistics.median(v) for k, v in times.items()}
    result['total'] = sum(result.values())
    result['feature_shape'] = tuple(feats[-1].shape)
    result['logit_shape'] = tuple(logits.shape)
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = (
        torch.cuda.get_device_name(0) if args.device.startswith('cuda') else platform.processor()
    )
    print(
        f'device {args.device} ({device_name or platform.machine()}), '
        f'{torch.get_num_threads()} threads, torch {torch.__version__}, '
        f'input {args.size}x{args.size}, batch 1, random weights, '
        f'median of {args.repeats} runs after {args.warmup} warm-up'
    )
    rows = []
    for config in args.configs:
        model = build_model(config, args.device)
        res = benchmark(model, args.size, args.warmup, args.repeats, args.device)
        neck = type(model.neck).__name__ if model.with_neck else '-'
        rows.append((osp.basename(config), neck, res))
    print()
    print('| config | neck | backbone (ms) | neck (ms) | head (ms) | total (ms) | features |')
    print('| --- | --- | ---: | ---: | ---: | ---: | --- |')
    for name, neck, res in rows:
        print(
            f'| {name} | {neck} | {res["backbone"] * 1e3:.1f} | {res["neck"] * 1e3:.1f} | '
            f'{res["head"] * 1e3:.1f} | {res["total"] * 1e3:.1f} | '
            f'{"x".join(map(str, res["feature_shape"][1:]))} |'
        )


if __name__ == '__main__':
    main()

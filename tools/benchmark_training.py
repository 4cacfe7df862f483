#!/usr/bin/env python
"""Measures the AnyUp training step (forward + backward) of a trainer config on this machine.

Builds the config's training model with random-weight teachers (``pretrained=False``, no
download) and times full training steps on synthetic images of the config's image size::

    python tools/benchmark_training.py configs/anyup/anyup_dinov2_vits14_in1k_100k.py
    python tools/benchmark_training.py configs/anyup/anyup_tiny_cpu_demo.py --iters 10

Reported per step and per image: forward + backward (all three loss terms), and the AdamW
update separately. Data loading is not included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _random_weight_teachers(teachers):
    def fix(cfg):
        cfg = dict(cfg)
        if cfg.get('type') == 'Teacher':
            cfg['encoder'] = fix(cfg['encoder'])
        else:
            cfg['pretrained'] = False
            cfg.pop('checkpoint', None)
        return cfg

    if isinstance(teachers, dict) and 'type' not in teachers:
        return {k: fix(v) for k, v in teachers.items()}
    if isinstance(teachers, (list, tuple)):
        return [fix(t) for t in teachers]
    return fix(teachers)


def main(argv: list[str] | None = None) -> None:
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import anyup_plugin.training  # noqa: F401
    from anyup_plugin.training import MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--batch-size', type=int, default=None, help='default: the config')
    parser.add_argument('--iters', type=int, default=5, help='timed steps')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--bf16', action='store_true', help='bf16 autocast')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'anyup_plugin'))
    model_cfg = cfg.model.to_dict()
    model_cfg['teachers'] = _random_weight_teachers(model_cfg['teachers'])
    torch.manual_seed(0)
    model = MODELS.build(model_cfg).to(args.device).train()
    image_size = model.image_size or model.multi_crop.crop_size
    input_size = model.multi_crop.input_size
    batch = args.batch_size or cfg.train_dataloader.batch_size
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cfg = cfg.optim_wrapper.optimizer
    optimizer = torch.optim.AdamW(
        params, lr=opt_cfg.lr, betas=tuple(opt_cfg.betas), weight_decay=opt_cfg.weight_decay
    )
    data = {
        'inputs': torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8),
        'data_samples': {
            'guidance_aug': torch.randint(
                0, 256, (batch, 3, input_size, input_size), dtype=torch.uint8
            ),
            'img_path': [f'synthetic_{i}' for i in range(batch)],
        },
    }

    def sync():
        if args.device.startswith('cuda'):
            torch.cuda.synchronize()

    fwd_bwd, opt_times = [], []
    for step in range(args.warmup + args.iters):
        batch_data = model.data_preprocessor(data, True)
        sync()
        start = time.perf_counter()
        with torch.autocast(args.device.split(':')[0], dtype=torch.bfloat16, enabled=args.bf16):
            losses = model(**batch_data, mode='loss')
            loss = sum(v for k, v in losses.items() if k.startswith('loss'))
        loss.backward()
        sync()
        mid = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        end = time.perf_counter()
        if step >= args.warmup:
            fwd_bwd.append(mid - start)
            opt_times.append(end - mid)

    teachers = ', '.join(f'{t.name} (patch {t.patch_size})' for t in model.teachers)
    median = statistics.median(fwd_bwd)
    print(f'config: {args.config}')
    print(
        f'device: {args.device}, threads: {torch.get_num_threads()}, bf16: {args.bf16}, '
        f'teachers: {teachers} (random weights)'
    )
    print(
        f'batch {batch}, image {image_size}, input {input_size}, '
        f'{model.multi_crop.num_crops} crops of {model.multi_crop.crop_size}'
    )
    print(
        f'forward+backward: {median:.3f} s/step (median of {len(fwd_bwd)}; '
        f'min {min(fwd_bwd):.3f}, max {max(fwd_bwd):.3f}), {median / batch:.3f} s/image'
    )
    print(f'AdamW update: {statistics.median(opt_times) * 1000:.1f} ms/step')


if __name__ == '__main__':
    main()

"""Trains and evaluates the probe once per method, resumably, and writes the comparison."""

from __future__ import annotations

import copy
import datetime
import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from anyup_plugin.engine import (
    add_random_state_tracking,
    add_weights_only_hook,
    find_resume_checkpoint,
)
from anyup_plugin.utils.io import atomic_write

from .benchmarks import Benchmark, default_config_dir, get_benchmark
from .methods import PER_BACKBONE_METHODS, canonical_method, check_weights, neck_for_method

__all__ = [
    'RESULTS_FILE',
    'ComparisonOutputs',
    'DemoSettings',
    'ResultsMismatchError',
    'build_method_config',
    'comparison_notes',
    'run_comparison',
    'run_method',
]

logger = logging.getLogger(__name__)

#: Written last into each method's work dir: its presence means the method is done.
RESULTS_FILE = 'results.json'
FIGURE_SAMPLES_FILE = 'figure_samples.npz'

# FrozenTimmMMSegBackbone's own arguments; the rest of its config goes to timm.
_BACKBONE_ARGUMENTS = (
    'type', 'model_name', 'layers', 'apply_norm', 'pretrained', 'checkpoint',
    'trainable_blocks', 'input_mean', 'input_std', 'init_cfg',
)  # fmt: skip


class ResultsMismatchError(ValueError):
    """A method's work dir holds the results of another setting (benchmark, weights, ...)."""


@dataclass
class DemoSettings:
    """How ``--demo`` shrinks a benchmark to run on a CPU in minutes (random weights).

    Attributes:
        num_train: Generated training images (scenes).
        num_val: Generated validation (test) images.
        image_size: Side of the square network input in pixels (a multiple of the patch size
            keeps every pixel covered by a token).
        epochs: Training epochs.
        backbone_depth: Transformer blocks of the random backbone (``None``: the config's
            architecture, 12 blocks for ViT-S/14).
        seed: Seed of the generated data.
    """

    num_train: int = 8
    num_val: int = 4
    image_size: int = 112
    epochs: int = 2
    backbone_depth: int | None = None
    seed: int = 0


@dataclass
class ComparisonOutputs:
    """What :func:`run_comparison` wrote.

    Attributes:
        results: One result dict per method, in the order asked (see :func:`run_method`).
        markdown: The Markdown table.
        csv: The CSV table.
        figure: The PNG figure (``None`` when no method had figure samples).
        work_dirs: Method -> its work dir (checkpoints, logs, ``results.json``).
    """

    results: list[dict[str, Any]]
    markdown: Path
    csv: Path
    figure: Path | None = None
    work_dirs: dict[str, Path] = field(default_factory=dict)


def set_epochs(cfg, epochs: int) -> None:
    """Sets the epochs of a probe config and stretches its schedule to match.

    The segmentation probes' per-epoch cosine ends at the last epoch; the NYU probes' warm-up
    is kept to whole epochs, at most half of the run (none in a one-epoch run, where it could
    round to zero iterations), and their cosine follows it to the end.

    Args:
        cfg: An MMEngine config of this project's probes (changed in place).
        epochs: The new number of epochs.
    """
    cfg.train_cfg.max_epochs = epochs
    warmup = 0
    schedulers = []
    for scheduler in cfg.param_scheduler:
        if scheduler.get('by_epoch', True) and 'T_max' in scheduler:
            scheduler.T_max = epochs
            scheduler.end = epochs
        elif scheduler.type == 'LinearLR':
            warmup = min(int(scheduler.end), epochs // 2)
            if warmup == 0:
                continue
            scheduler.end = warmup
        elif scheduler.type == 'CosineAnnealingLR':
            scheduler.begin, scheduler.end = warmup, epochs
        schedulers.append(scheduler)
    cfg.param_scheduler = schedulers


def _loaders(cfg) -> list:
    names = ('train_dataloader', 'val_dataloader', 'test_dataloader')
    return [cfg[name] for name in names if cfg.get(name) is not None]


def _shrink_for_demo(cfg, benchmark: Benchmark, demo: DemoSettings, data_root: str) -> None:
    """Demo sizes: input side, epochs, no workers, the generated data, optional shallow ViT."""
    # Segmentation crops the resized image; NYU crops the frame, then resizes the crop.
    crop = demo.image_size if benchmark.task == 'segmentation' else _nyu_frame(demo)[0]
    for loader in _loaders(cfg):
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.data_root = data_root
        for step in loader.dataset.pipeline:
            if step['type'] in ('ResizeShortSide', 'NYUResize', 'NYURandomResizedCrop'):
                step['size'] = demo.image_size
            elif step['type'] == 'SegCenterCrop':
                step['size'] = crop
    set_epochs(cfg, demo.epochs)
    # No validation while training: the test pass after it gives the numbers.
    cfg.train_cfg.val_begin = demo.epochs + 1
    if demo.backbone_depth is not None:
        cfg.model.backbone.depth = demo.backbone_depth
    cfg.model.backbone.checkpoint = None
    cfg.model.backbone.pretrained = False
    cfg.default_hooks.logger.interval = 10


def _nyu_frame(demo: DemoSettings) -> tuple[int, int]:
    """Generated NYU frames: twice the input side, NYUv2's 3:4 aspect."""
    height = 2 * demo.image_size
    return height, round(height * 4 / 3)


def _demo_data(benchmark: Benchmark, root: Path, demo: DemoSettings) -> str:
    """Writes (or finds) the generated dataset of ``benchmark`` and returns its data root."""
    if benchmark.task == 'segmentation':
        from anyup_plugin import testing

        # The same scenes in each benchmark's on-disk layout, read by its own dataset class.
        writer = {
            'ade20k': testing.write_ade20k_layout_dataset,
            'coco_stuff27': testing.write_coco_stuff27_layout_dataset,
            'voc2012': testing.write_voc2012_layout_dataset,
        }[benchmark.name]
        return str(
            writer(
                root / benchmark.name, demo.num_train, demo.num_val,
                height=demo.image_size + demo.image_size // 4,
                width=demo.image_size + demo.image_size // 2, seed=demo.seed,
            )
        )  # fmt: skip
    from anyup_plugin.testing.nyu_scenes import write_nyu_scenes_dataset

    height, width = _nyu_frame(demo)
    folder = root / f'nyu_{demo.num_train}_{demo.num_val}_{height}_{demo.seed}'
    if not (folder / 'splits' / 'test.txt').is_file():
        write_nyu_scenes_dataset(folder, demo.num_train, demo.num_val, height, width, demo.seed)
    return str(folder)


def backbone_geometry(backbone_cfg: Mapping[str, Any]) -> tuple[int, int]:
    """(channels, patch size) of a ``FrozenTimmMMSegBackbone`` config, built on the meta device.

    What a per-backbone method must be built for (e.g. JAFAR on a shrunk demo backbone).
    """
    import timm

    kwargs = {k: v for k, v in backbone_cfg.items() if k not in _BACKBONE_ARGUMENTS}
    with torch.device('meta'):
        model = timm.create_model(backbone_cfg['model_name'], pretrained=False, **kwargs)
    info = model.feature_info[-1]
    return int(info['num_chs']), int(info['reduction'])


def build_method_config(
    benchmark: str | Benchmark,
    method: str,
    work_dir: str | os.PathLike,
    checkpoint: str | None = None,
    demo: DemoSettings | None = None,
    data_root: str | os.PathLike | None = None,
    cfg_options: Mapping[str, Any] | None = None,
    config_dir: str | os.PathLike | None = None,
):
    """The benchmark's config with ``method`` as the neck's upsampler.

    Args:
        benchmark: A benchmark name or :class:`Benchmark`.
        method: A method name (checked against the registry).
        work_dir: The run's MMEngine work dir.
        checkpoint: The method's weights (``None``: the config's for AnyUp; refused for a
            learned method outside the demo).
        demo: Shrink to the demo (random weights; ``data_root`` must then hold the generated
            data); ``None``: the paper's protocol.
        data_root: Every loader's ``data_root`` (``None``: the config's).
        cfg_options: Overrides applied last (``--cfg-options``).
        config_dir: Where the configs are (default: the checkout's ``configs/mmseg``).

    Returns:
        The MMEngine ``Config``.
    """
    from mmengine.config import Config

    bench = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    method = canonical_method(method)
    check_weights(method, checkpoint, demo is not None)
    folder = Path(config_dir) if config_dir is not None else default_config_dir()
    name = bench.config
    if demo is not None:
        if bench.demo_config is None:
            demos = [b.name for b in _demo_benchmarks()]
            raise ValueError(
                f'--demo has no generated data for {bench.name}; demo benchmarks: {demos}'
            )
        name = bench.demo_config
    cfg = Config.fromfile(str(folder / name))
    if demo is not None:
        if data_root is None:
            raise ValueError('the demo needs the generated data root')
        _shrink_for_demo(cfg, bench, demo, os.fspath(data_root))
    elif data_root is not None:
        for loader in _loaders(cfg):
            loader.dataset.data_root = os.fspath(data_root)
    kwargs = {}
    if method in PER_BACKBONE_METHODS:
        channels, patch = backbone_geometry(cfg.model.backbone)
        kwargs = {'feature_channels': channels, 'patch_size': patch}
    cfg.model.neck = neck_for_method(
        cfg.model.neck, method, checkpoint, random_weights=demo is not None, method_kwargs=kwargs
    )
    cfg.work_dir = os.fspath(work_dir)
    # A distinct name per run: MMEngine's logger and visualizer are looked up by it.
    stamp = datetime.datetime.now().strftime('%Y%m%d_%H%M%S')
    cfg.experiment_name = f'{bench.name}_{method}_{stamp}_{uuid.uuid4().hex[:6]}'
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    # Checkpoints torch >= 2.6 loads with weights_only=True, random states in them, and an
    # interrupted run continuing from its newest complete checkpoint (as tools/train.py).
    add_weights_only_hook(cfg)
    add_random_state_tracking(cfg)
    found = find_resume_checkpoint(cfg.work_dir)
    cfg.resume = found is not None
    cfg.load_from = found
    return cfg


def _demo_benchmarks() -> list[Benchmark]:
    from .benchmarks import BENCHMARKS

    return [b for b in BENCHMARKS.values() if b.demo_config is not None]


def _check_neck_takes_method(neck_type: str, method: str) -> None:
    """A clear error, before anything trains, when the neck cannot switch to ``method``."""
    if method in ('anyup', 'bilinear'):
        return
    import inspect

    from mmseg.registry import MODELS

    import anyup_plugin.mmseg  # noqa: F401  (registers the necks)

    neck_cls = MODELS.get(neck_type)
    if neck_cls is not None and 'method' not in inspect.signature(neck_cls).parameters:
        raise ValueError(
            f'{neck_type} has no `method` argument in this checkout, so {method!r} cannot be '
            "put in the probe's neck: compare 'anyup' and 'bilinear', or update to a version "
            'whose neck takes model.neck.method'
        )


def _fingerprint(
    benchmark: Benchmark,
    method: str,
    checkpoint: str | None,
    demo: DemoSettings | None,
    cfg_options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return {
        'benchmark': benchmark.name,
        'method': method,
        'checkpoint': checkpoint,
        'demo': None if demo is None else asdict(demo),
        'cfg_options': {str(k): repr(v) for k, v in sorted((cfg_options or {}).items())},
    }


def read_results(path: Path, fingerprint: Mapping[str, Any]) -> dict[str, Any] | None:
    """A finished method's results, or ``None`` when it has not finished.

    Raises:
        ResultsMismatchError: The file is from another setting.
    """
    if not path.is_file():
        return None
    result = json.loads(path.read_text(encoding='utf-8'))
    stored = result.get('settings', {})
    if stored != dict(fingerprint):
        changed = sorted(k for k in set(stored) | set(fingerprint)
                         if stored.get(k) != fingerprint.get(k))  # fmt: skip
        raise ResultsMismatchError(
            f'{path} holds results of another setting (differs in {changed}): use another '
            '--out (or --work-dir), or delete that folder to re-run it'
        )
    return result


def run_method(
    benchmark: str | Benchmark,
    method: str,
    work_dir: str | os.PathLike,
    checkpoint: str | None = None,
    demo: DemoSettings | None = None,
    data_root: str | os.PathLike | None = None,
    cfg_options: Mapping[str, Any] | None = None,
    figure_images: int = 3,
    config_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Trains the benchmark's probe with ``method`` and evaluates it, or reads it back.

    A finished method (``work_dir/results.json`` from the same settings) is read back without
    training. Otherwise the probe trains (resuming from the last epoch checkpoint in
    ``work_dir`` if a run was interrupted), then the test loop evaluates it with the neck
    profiled (:class:`~.profiling.UpsamplerProfiler`: per-image time and peak memory), a few
    test images are kept for the figure (``figure_samples.npz``), and ``results.json`` is
    written last.

    Args:
        benchmark: A benchmark name or :class:`Benchmark`.
        method: A method name (checked against the registry).
        work_dir: This method's work dir.
        checkpoint: The method's weights (see :func:`build_method_config`).
        demo: Demo settings, or ``None`` for the protocol.
        data_root: Every loader's data root (the generated one in the demo).
        cfg_options: Config overrides.
        figure_images: Test images kept for the figure.
        config_dir: Where the configs are.

    Returns:
        ``method``, ``benchmark``, ``metrics`` (the test evaluator's), ``time_ms_per_image``,
        ``peak_memory_mb_per_image``, ``memory_kind``, ``profiled_images``, ``device``,
        ``settings``, ``finished``, and ``reused`` (True when read back; not stored).
    """
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from .figure import FigureSampleCollector, save_figure_samples
    from .profiling import UpsamplerProfiler

    bench = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    method = canonical_method(method)
    work = Path(work_dir)
    fingerprint = _fingerprint(bench, method, checkpoint, demo, cfg_options)
    done = read_results(work / RESULTS_FILE, fingerprint)
    if done is not None:
        logger.info('%s: %s already evaluated, read back from %s', bench.name, method, work)
        return {**done, 'reused': True}
    cfg = build_method_config(
        bench, method, work, checkpoint, demo, data_root, cfg_options, config_dir
    )
    _check_neck_takes_method(cfg.model.neck['type'], method)
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model
    device = next(model.parameters()).device
    profiler = UpsamplerProfiler(model.neck, device)
    collector = FigureSampleCollector(model, bench.task, figure_images)

    class _KeepFigureSamples(Hook):
        def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            collector.add(outputs or [])

    runner.register_hook(_KeepFigureSamples(), priority='LOWEST')
    collector.attach()
    try:
        with profiler:
            metrics = runner.test()
    finally:
        collector.detach()
    if collector.samples:
        save_figure_samples(work / FIGURE_SAMPLES_FILE, collector.samples)
    result = {
        'method': method,
        'benchmark': bench.name,
        'metrics': {k: float(v) for k, v in (metrics or {}).items() if _is_number(v)},
        **profiler.summary(),
        'device': _device_name(device),
        'settings': fingerprint,
        'finished': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    with atomic_write(work / RESULTS_FILE, suffix='.json') as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2) + '\n', encoding='utf-8')
    return {**result, 'reused': False}


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return f'cuda ({torch.cuda.get_device_name(device)})'
    return f'cpu ({torch.get_num_threads()} threads)'


def comparison_notes(results: Sequence[Mapping[str, Any]], demo: DemoSettings | None) -> list[str]:
    """The lines above the table: where each row ran, how time and memory were taken, demo."""
    machines = {(r['device'], r['memory_kind']) for r in results}
    if len(machines) == 1:
        notes = [f'device: {results[0]["device"]}; memory: {results[0]["memory_kind"]}']
    else:  # read-back results from another machine: say which row ran where
        notes = [f'{r["method"]} ran on {r["device"]}; memory: {r["memory_kind"]}' for r in results]
    notes.append(
        'time and memory: the upsampling neck per test image, measured during the evaluation '
        'that gave the metrics (median time, largest peak)'
    )
    if demo is not None:
        notes.append(
            f'DEMO: generated data ({demo.num_train} train / {demo.num_val} test images, '
            f'{demo.image_size} px, {demo.epochs} epochs), random backbone and upsampler '
            "weights: the numbers show the pipeline runs, not the methods' quality"
        )
    return notes


def run_comparison(
    benchmark: str,
    methods: Sequence[str],
    out_dir: str | os.PathLike,
    checkpoints: Mapping[str, str] | None = None,
    demo: DemoSettings | None = None,
    data_root: str | os.PathLike | None = None,
    cfg_options: Mapping[str, Any] | None = None,
    with_paper: bool = False,
    work_dir: str | os.PathLike | None = None,
    figure_images: int = 3,
    config_dir: str | os.PathLike | None = None,
) -> ComparisonOutputs:
    """Runs (or reads back) every method and writes the tables and the figure into ``out_dir``.

    Every name and weight is checked before anything trains: unknown methods (the error lists
    the known ones), a learned method without weights outside the demo, or a method given
    twice fail at once.

    Args:
        benchmark: ``'ade20k'``, ``'coco_stuff27'``, ``'voc2012'``, ``'nyu_depth'`` or
            ``'nyu_normals'``.
        methods: Method names (registry keys or aliases, e.g. ``'jbu'``).
        out_dir: Where ``comparison.md``, ``comparison.csv`` and ``comparison.png`` go.
        checkpoints: Method -> weights file.
        demo: Run on generated data with random weights (written to ``out_dir/data``).
        data_root: Every loader's data root (outside the demo; default: the config's).
        cfg_options: Config overrides for every method.
        with_paper: Put the paper's numbers beside the measured ones.
        work_dir: Parent of the per-method work dirs (default: ``out_dir``).
        figure_images: Test images in the figure.
        config_dir: Where the configs are.

    Returns:
        :class:`ComparisonOutputs`.
    """
    from .figure import load_figure_samples, write_figure
    from .report import METHOD_LABELS, write_tables

    bench = get_benchmark(benchmark)
    keys = [canonical_method(m) for m in methods]
    if not keys:
        raise ValueError('no method to compare')
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f'methods named more than once: {repeated}')
    weights = {canonical_method(k): v for k, v in (checkpoints or {}).items()}
    unused = sorted(set(weights) - set(keys))
    if unused:
        raise ValueError(f'--checkpoint given for methods not compared: {unused}')
    for key in keys:
        check_weights(key, weights.get(key), demo is not None)
    if demo is not None and bench.demo_config is None:
        demos = [b.name for b in _demo_benchmarks()]
        raise ValueError(f'--demo has no generated data for {bench.name}; demo benchmarks: {demos}')
    from mmengine.config import Config

    folder = Path(config_dir) if config_dir is not None else default_config_dir()
    base_cfg = Config.fromfile(str(folder / (bench.config if demo is None else bench.demo_config)))
    for key in keys:
        _check_neck_takes_method(base_cfg.model.neck['type'], key)
    out = Path(out_dir)
    base = Path(work_dir) if work_dir is not None else out
    if demo is not None and data_root is None:
        data_root = _demo_data(bench, out / 'data', demo)
    results, work_dirs = [], {}
    for key in keys:
        work_dirs[key] = base / key
        results.append(
            run_method(
                bench, key, work_dirs[key], weights.get(key), demo, data_root,
                copy.deepcopy(dict(cfg_options or {})), figure_images, config_dir,
            )
        )  # fmt: skip
    notes = comparison_notes(results, demo)
    markdown, csv_path = write_tables(bench, results, out, with_paper, notes)
    samples = {
        r['method']: load_figure_samples(work_dirs[r['method']] / FIGURE_SAMPLES_FILE)
        for r in results
        if (work_dirs[r['method']] / FIGURE_SAMPLES_FILE).is_file()
    }
    figure = None
    if samples:
        figure = write_figure(
            out / 'comparison.png', bench.task, samples, METHOD_LABELS,
            title=f'{bench.name}: test images, each method\'s prediction and upsampled features',
        )  # fmt: skip
    return ComparisonOutputs(results, markdown, csv_path, figure, work_dirs)

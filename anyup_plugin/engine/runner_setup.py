"""Config preparation shared by ``tools/train.py`` and ``tools/test.py``.

Works for any MMEngine config (the AnyUp trainer configs and MMSegmentation configs alike):
work directory, ``--cfg-options``, ``--amp``, ``--resume``, the launcher (with the CPU/gloo
path of :mod:`anyup_plugin.engine.dist`), the :class:`WeightsOnlyCheckpointHook` that makes
the run's checkpoints resumable under torch's ``weights_only=True`` loading, and the
:class:`~anyup_plugin.engine.RandomStateHook` that makes a resumed run continue exactly.
"""

from __future__ import annotations

import logging
import os
import os.path as osp
from typing import Any

import torch
from mmengine.config import Config

from .checkpoint import find_resume_checkpoint
from .dist import cpu_model_wrapper_cfg, init_distributed
from .random_state import add_random_state_tracking

__all__ = ['add_weights_only_hook', 'build_runner', 'prepare_config']

logger = logging.getLogger(__name__)

_HOOK_TYPE = 'WeightsOnlyCheckpointHook'


def add_weights_only_hook(cfg: Config) -> None:
    """Appends :class:`WeightsOnlyCheckpointHook` to ``cfg.custom_hooks`` unless present."""
    hooks = list(cfg.get('custom_hooks', None) or [])
    for hook in hooks:
        hook_type = hook.get('type') if isinstance(hook, dict) else type(hook).__name__
        name = hook_type if isinstance(hook_type, str) else getattr(hook_type, '__name__', '')
        if name.split('.')[-1] == _HOOK_TYPE:
            return
    hooks.append(dict(type=_HOOK_TYPE))
    cfg.custom_hooks = hooks


def _enable_amp(cfg: Config) -> None:
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is None:
        raise ValueError('--amp needs an optim_wrapper in the config')
    wrapper_type = optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type == 'AmpOptimWrapper':
        return
    if wrapper_type != 'OptimWrapper':
        raise ValueError(f'--amp works with type=OptimWrapper, the config has {wrapper_type!r}')
    optim_wrapper.type = 'AmpOptimWrapper'
    optim_wrapper.setdefault('loss_scale', 'dynamic')


def _cpu_amp_fallback(cfg: Config) -> None:
    """MMEngine's AmpOptimWrapper refuses to run without a GPU: train in float32 instead."""
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is None or optim_wrapper.get('type') != 'AmpOptimWrapper':
        return
    if torch.cuda.is_available():
        return
    logger.warning(
        "No GPU: MMEngine's AmpOptimWrapper needs one, so this run uses OptimWrapper "
        '(float32) instead of mixed precision'
    )
    optim_wrapper.type = 'OptimWrapper'
    for key in ('loss_scale', 'dtype', 'use_fsdp'):
        optim_wrapper.pop(key, None)


def prepare_config(
    config: str,
    *,
    work_dir: str | None = None,
    cfg_options: dict[str, Any] | None = None,
    launcher: str = 'none',
    amp: bool = False,
    resume: str | None = None,
    load_from: str | None = None,
) -> Config:
    """Reads ``config`` and applies the tools' command-line choices.

    Adds the weights-only checkpoint hook and the random-state tracking
    (:func:`~anyup_plugin.engine.add_random_state_tracking`). Also initialises the process
    group for ``launcher`` (on CPU with gloo, before the runner exists) and, when distributed
    without CUDA, sets a CPU-compatible DDP wrapper.

    Args:
        config: Path of the config file.
        work_dir: Overrides ``cfg.work_dir``; default ``./work_dirs/<config name>`` when the
            config sets none.
        cfg_options: ``--cfg-options`` overrides (``key.sub=value``).
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
        amp: Switch an ``OptimWrapper`` to ``AmpOptimWrapper`` (ignored, with a warning,
            without a GPU).
        resume: None (no resume), ``'auto'`` (the newest complete checkpoint in the work
            directory, if any) or a checkpoint path.
        load_from: Checkpoint whose weights to load (tools/test.py).

    Returns:
        The prepared config.
    """
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])

    if amp:
        _enable_amp(cfg)
    _cpu_amp_fallback(cfg)

    if resume is not None:
        cfg.resume = True
        if resume == 'auto':
            found = find_resume_checkpoint(cfg.work_dir)
            if found is None:
                logger.warning('--resume: no checkpoint in %s, starting from scratch', cfg.work_dir)
                cfg.resume = False
            else:
                cfg.load_from = found
        else:
            if not osp.isfile(resume):
                raise FileNotFoundError(f'--resume {resume}: no such checkpoint file')
            cfg.load_from = resume
    if load_from is not None:
        cfg.load_from = load_from

    add_weights_only_hook(cfg)
    add_random_state_tracking(cfg)

    distributed = init_distributed(launcher)
    if distributed and not torch.cuda.is_available():
        cfg.model_wrapper_cfg = cpu_model_wrapper_cfg(cfg.get('model_wrapper_cfg', None))
    return cfg


def build_runner(cfg: Config) -> Any:
    """Builds the runner (``cfg.runner_type`` if set, else MMEngine's ``Runner``)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    os.makedirs(osp.abspath(cfg.work_dir), exist_ok=True)
    return Runner.from_cfg(cfg)

"""Distributed start-up that also works on machines without a GPU (gloo on CPU).

MMEngine 0.10.7's launchers call ``torch.cuda.set_device`` unconditionally and its default DDP
wrapper passes ``device_ids=[local_rank]``, which DDP refuses for CPU modules. On a machine
without CUDA, :func:`init_distributed` therefore initialises a gloo process group itself,
*before* the runner is built (the runner then skips its own initialisation), and
:func:`cpu_model_wrapper_cfg` gives the DDP wrapper ``device_ids=None``. With CUDA, MMEngine's
own :func:`mmengine.dist.init_dist` runs unchanged.
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
from typing import Any

import torch
import torch.distributed as torch_dist

__all__ = ['LAUNCHERS', 'cpu_model_wrapper_cfg', 'init_distributed']

logger = logging.getLogger(__name__)

#: Launchers the tools accept (MMEngine's names).
LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def _env_from_slurm(port: int) -> None:
    """Fills torch's env:// variables from SLURM's."""
    os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
    os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
    os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
    os.environ.setdefault('MASTER_PORT', str(port))
    if 'MASTER_ADDR' not in os.environ:
        node_list = os.environ['SLURM_NODELIST']
        first = subprocess.run(
            ['scontrol', 'show', 'hostnames', node_list],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[0]
        os.environ['MASTER_ADDR'] = first


def _env_from_mpi(port: int) -> None:
    """Fills torch's env:// variables from Open MPI's."""
    os.environ.setdefault('RANK', os.environ['OMPI_COMM_WORLD_RANK'])
    os.environ.setdefault('WORLD_SIZE', os.environ['OMPI_COMM_WORLD_SIZE'])
    os.environ.setdefault('LOCAL_RANK', os.environ.get('OMPI_COMM_WORLD_LOCAL_RANK', '0'))
    os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
    os.environ.setdefault('MASTER_PORT', str(port))


def init_distributed(
    launcher: str, backend: str | None = None, port: int = 29500, timeout_s: int = 1800
) -> bool:
    """Initialises the default process group for ``launcher`` unless it already exists.

    Args:
        launcher: ``'none'`` (does nothing), ``'pytorch'`` (torchrun's environment),
            ``'slurm'`` or ``'mpi'``.
        backend: Process group backend; default ``'nccl'`` with CUDA, ``'gloo'`` without.
        port: ``MASTER_PORT`` for the slurm and mpi launchers when not set.
        timeout_s: Collective timeout in seconds.

    Returns:
        True if the process runs distributed after the call.

    Raises:
        ValueError: An unknown launcher.
        KeyError: The launcher's environment variables are missing (e.g. ``--launcher pytorch``
            without torchrun).
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')
    if launcher == 'none':
        return False
    if torch_dist.is_available() and torch_dist.is_initialized():
        return True
    if torch.cuda.is_available() and backend in (None, 'nccl'):
        from mmengine.dist import init_dist

        init_dist(
            launcher, backend=backend or 'nccl', timeout=datetime.timedelta(seconds=timeout_s)
        )
        return True

    if launcher == 'slurm':
        _env_from_slurm(port)
    elif launcher == 'mpi':
        _env_from_mpi(port)
    missing = [
        k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ
    ]
    if missing:
        raise KeyError(
            f'--launcher {launcher} needs the environment variables {missing}; start the '
            'processes with torchrun (tools/dist_train.sh), srun or mpirun'
        )
    backend = backend or 'gloo'
    torch_dist.init_process_group(
        backend=backend,
        init_method='env://',
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']),
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    logger.info(
        'initialised the %s process group on CPU: rank %s of %s',
        backend,
        os.environ['RANK'],
        os.environ['WORLD_SIZE'],
    )
    return True


def cpu_model_wrapper_cfg(model_wrapper_cfg: dict[str, Any] | None) -> dict[str, Any]:
    """A DDP wrapper config that works for CPU modules (``device_ids=None``).

    Args:
        model_wrapper_cfg: The config's ``model_wrapper_cfg`` (None for MMEngine's default).

    Returns:
        A copy with ``type`` defaulting to ``'MMDistributedDataParallel'`` and
        ``device_ids=None``; other keys (e.g. ``find_unused_parameters``) are kept.
    """
    cfg = dict(model_wrapper_cfg or {})
    cfg.setdefault('type', 'MMDistributedDataParallel')
    cfg['device_ids'] = None
    return cfg

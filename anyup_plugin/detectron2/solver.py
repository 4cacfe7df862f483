"""AdamW and a per-epoch cosine schedule, the probe protocol's optimiser, for Detectron2."""

from __future__ import annotations

import math

import torch
from detectron2.config import CfgNode
from detectron2.solver import LRMultiplier, build_lr_scheduler, build_optimizer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from fvcore.common.param_scheduler import ParamScheduler

__all__ = ['EpochCosineParamScheduler', 'build_probe_lr_scheduler', 'build_probe_optimizer']


class EpochCosineParamScheduler(ParamScheduler):
    """Cosine annealing from 1 to ``end_value`` in ``num_epochs`` constant steps.

    Equals ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=num_epochs)`` stepped once per
    epoch, with training progress ``where`` in [0, 1) split into ``num_epochs`` equal parts:
    during epoch ``e`` the multiplier is ``end + (1 - end) * (1 + cos(pi * e / n)) / 2``.

    Args:
        num_epochs: Number of epochs n (>= 1).
        end_value: Multiplier the cosine would reach after the last epoch.
    """

    def __init__(self, num_epochs: int, end_value: float = 0.0) -> None:
        if num_epochs < 1:
            raise ValueError(f'SOLVER.LR_EPOCHS must be >= 1, got {num_epochs}')
        self.num_epochs = int(num_epochs)
        self.end_value = float(end_value)

    def __call__(self, where: float) -> float:
        """Multiplier at training progress ``where`` in [0, 1]."""
        epoch = min(math.floor(where * self.num_epochs + 1e-9), self.num_epochs - 1)
        cosine = (1.0 + math.cos(math.pi * epoch / self.num_epochs)) / 2.0
        return self.end_value + (1.0 - self.end_value) * cosine


def build_probe_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` 'AdamW' over the trainable parameters; else Detectron2's SGD.

    Frozen parameters (encoder, frozen AnyUp) are left out. Learning rate, weight decay and
    gradient clipping come from the usual ``SOLVER`` keys, betas from ``SOLVER.BETAS``.

    Args:
        cfg: Config with :func:`add_anyup_config`'s keys.
        model: The model.

    Returns:
        The optimiser.
    """
    name = cfg.SOLVER.OPTIMIZER
    if name == 'SGD':
        return build_optimizer(cfg, model)
    if name != 'AdamW':
        raise ValueError(f"SOLVER.OPTIMIZER must be 'AdamW' or 'SGD', got {name!r}")
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    optimizer = torch.optim.AdamW(
        params,
        lr=cfg.SOLVER.BASE_LR,
        betas=tuple(cfg.SOLVER.BETAS),
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )
    return maybe_add_gradient_clipping(cfg, optimizer)


def build_probe_lr_scheduler(
    cfg: CfgNode, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """``LR_SCHEDULER_NAME`` 'EpochCosineLR': :class:`EpochCosineParamScheduler`; else Detectron2's.

    The schedule is stepped every iteration but constant within each of ``SOLVER.LR_EPOCHS``
    equal parts of ``SOLVER.MAX_ITER``; it ends at ``BASE_LR_END``. No warmup.

    Args:
        cfg: Config with :func:`add_anyup_config`'s keys.
        optimizer: The optimiser.

    Returns:
        The scheduler.
    """
    if cfg.SOLVER.LR_SCHEDULER_NAME != 'EpochCosineLR':
        return build_lr_scheduler(cfg, optimizer)
    end_value = cfg.SOLVER.BASE_LR_END / cfg.SOLVER.BASE_LR
    sched = EpochCosineParamScheduler(cfg.SOLVER.LR_EPOCHS, end_value)
    return LRMultiplier(optimizer, multiplier=sched, max_iter=cfg.SOLVER.MAX_ITER)

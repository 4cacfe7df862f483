"""Framework-free metrics and losses of the Probe3D depth and surface-normal probes (plain torch).

Nothing here imports MMSegmentation or Detectron2: any training loop or user script can call
these functions, and the MMEngine metrics in :mod:`anyup_plugin.mmseg` wrap them.
"""

from .depth_metrics import DEPTH_METRIC_KEYS, depth_metrics, fit_scale_shift
from .losses import (
    depth_loss,
    log_depth_gradient_loss,
    normal_angular_loss,
    scale_invariant_log_loss,
)
from .normal_metrics import NORMAL_METRIC_KEYS, normal_metrics

__all__ = [
    'DEPTH_METRIC_KEYS',
    'NORMAL_METRIC_KEYS',
    'depth_loss',
    'depth_metrics',
    'fit_scale_shift',
    'log_depth_gradient_loss',
    'normal_angular_loss',
    'normal_metrics',
    'scale_invariant_log_loss',
]
